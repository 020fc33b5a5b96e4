//! Snapshot bodies, version 2: per-client deltas with interest management (SPEC.md §4.3).
//!
//! A snapshot tells one client what changed among the entities it is interested in since
//! a *baseline*: a snapshot tick the client reported having applied completely (its input
//! datagrams carry that tick as `ack_tick`). Entities new to the client come as full
//! [`EntityState`]s (`spawns`), known ones as small changes ([`EntityMove`],
//! [`EntityHp`]), and ones that left its interest as `despawns`. Baseline 0 means a full
//! state against nothing. The body is an rkyv archive read in place
//! ([`decode_snapshot`]); the client rebuilds the state with [`SnapshotView`].
//!
//! The server computes the changes with [`diff`] and packs them with
//! [`encode_snapshot`]: most important first, in one datagram whenever they fit, else in
//! up to 16 parts that all carry the same acks. Clients that share a baseline and an
//! interest set share the same encoded bytes.

use bytes::{BufMut, Bytes, BytesMut};
use rkyv::rancor;
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

use crate::datagram::{
    split_snapshot, SnapshotHeader, KIND_SNAPSHOT, MAX_SNAPSHOT_PARTS, SNAPSHOT_HEADER_LEN,
};
use crate::{DecodeError, MAX_DATAGRAM_LEN, PROTOCOL_VERSION};

mod body;
mod delta;
mod view;

pub use body::{
    kind, ArchivedEntityHp, ArchivedEntityMove, ArchivedEntityState, ArchivedPlayerAck,
    ArchivedSnapshotBody, EntityHp, EntityMove, EntityState, PlayerAck, SnapshotBody, ACK_LEN,
    BODY_FIXED_LEN, DESPAWN_LEN, ENTITY_LEN, HP_LEN, MOVE_LEN,
};
pub use delta::{diff, Change, Changes};
pub use view::{Applied, SnapshotView, ViewError, BASELINE_HISTORY};

/// Why a snapshot could not be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// More parts than [`MAX_SNAPSHOT_PARTS`] would be needed.
    #[error("snapshot needs more than {MAX_SNAPSHOT_PARTS} parts")]
    TooManyParts,
    /// The acks leave no room in a datagram for one of the changes.
    #[error("too many player acks for one datagram")]
    TooManyAcks,
    /// A part came out larger than [`MAX_DATAGRAM_LEN`] (a layout constant is wrong).
    #[error("snapshot part of {0} bytes exceeds the datagram limit")]
    TooLarge(usize),
    /// rkyv serialization failed.
    #[error("rkyv: {0}")]
    Rkyv(String),
}

/// Bytes left for changes in one part next to `acks` player acks.
pub fn change_room(acks: usize) -> usize {
    MAX_DATAGRAM_LEN.saturating_sub(SNAPSHOT_HEADER_LEN + BODY_FIXED_LEN + acks * ACK_LEN)
}

/// Largest number of full entity states one part carries next to `acks` player acks.
pub fn entities_per_part(acks: usize) -> usize {
    change_room(acks) / ENTITY_LEN
}

/// Where a snapshot's datagrams go: tick, baseline and instance of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Simulation tick the snapshot describes.
    pub tick: u32,
    /// Tick the changes are against; 0 for a full state.
    pub baseline: u32,
    /// Zone instance id.
    pub instance: u32,
    /// Zone template id.
    pub zone: u16,
}

/// Encodes one snapshot for one client (or every client sharing its baseline and
/// interest) into one or more datagrams.
///
/// Changes are taken in the order given (most important first) and packed greedily: a
/// part holds changes until the next one would push it over [`MAX_DATAGRAM_LEN`]. Every
/// part carries all `acks`. `out` is cleared and receives one `Bytes` per part; a
/// snapshot without changes is one part with the acks alone. A server encoding many
/// snapshots per tick keeps a [`SnapshotEncoder`] instead (same bytes, buffers reused).
pub fn encode_snapshot(
    meta: SnapshotMeta,
    acks: &[PlayerAck],
    changes: &Changes,
    out: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    out.clear();
    SnapshotEncoder::default().encode(meta, acks, changes, out)
}

/// [`encode_snapshot`] with its working buffers kept from one call to the next: the body
/// lists, the part boundaries and the rkyv output. Only each datagram's own `Bytes` is
/// allocated per call.
#[derive(Debug, Default)]
pub struct SnapshotEncoder {
    body: SnapshotBody,
    ends: Vec<usize>,
    archive: rkyv::util::AlignedVec,
}

impl SnapshotEncoder {
    /// Encodes like [`encode_snapshot`], but *appends* the parts to `out` (callers that
    /// keep every client's datagrams in one list record where each snapshot's parts are).
    /// On an error, parts of this snapshot already appended stay in `out`.
    pub fn encode(
        &mut self,
        meta: SnapshotMeta,
        acks: &[PlayerAck],
        changes: &Changes,
        out: &mut Vec<Bytes>,
    ) -> Result<(), EncodeError> {
        if SNAPSHOT_HEADER_LEN + BODY_FIXED_LEN + acks.len() * ACK_LEN > MAX_DATAGRAM_LEN {
            return Err(EncodeError::TooManyAcks);
        }
        let room = change_room(acks.len());
        let body = &mut self.body;
        body.zone = meta.zone;
        body.acks.clear();
        body.acks.extend_from_slice(acks);
        // First pass: where each part ends, so the header can say how many there are.
        self.ends.clear();
        let mut used = 0;
        for (i, c) in changes.iter().enumerate() {
            let len = c.archived_len();
            if len > room {
                return Err(EncodeError::TooManyAcks);
            }
            if used + len > room {
                self.ends.push(i);
                used = 0;
            }
            used += len;
        }
        self.ends.push(changes.len());
        if self.ends.len() > usize::from(MAX_SNAPSHOT_PARTS) {
            return Err(EncodeError::TooManyParts);
        }
        let parts = self.ends.len();
        let mut start = 0;
        for (part, &end) in self.ends.iter().enumerate() {
            body.spawns.clear();
            body.moves.clear();
            body.hps.clear();
            body.despawns.clear();
            for c in &changes.as_slice()[start..end] {
                match *c {
                    Change::Spawn(e) => body.spawns.push(e),
                    Change::Move(m) => body.moves.push(m),
                    Change::Hp(h) => body.hps.push(h),
                    Change::Despawn(id) => body.despawns.push(id),
                }
            }
            start = end;
            let mut writer = std::mem::take(&mut self.archive);
            writer.clear();
            self.archive = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&*body, writer)
                .map_err(|e| EncodeError::Rkyv(e.to_string()))?;
            let archived = &self.archive[..];
            let header = SnapshotHeader {
                version: PROTOCOL_VERSION,
                kind: KIND_SNAPSHOT,
                part: part as u8,
                parts: parts as u8,
                tick: U32::new(meta.tick),
                baseline: U32::new(meta.baseline),
                instance: U32::new(meta.instance),
                body_len: U16::new(archived.len() as u16),
                flags: U16::new(0),
            };
            let len = SNAPSHOT_HEADER_LEN + archived.len();
            if len > MAX_DATAGRAM_LEN {
                return Err(EncodeError::TooLarge(len));
            }
            let mut buf = BytesMut::with_capacity(len);
            buf.put_slice(header.as_bytes());
            buf.put_slice(archived);
            out.push(buf.freeze());
        }
        Ok(())
    }
}

/// Decodes a snapshot datagram into its header and a validated, zero-copy view of its body.
///
/// Besides the header rules, a snapshot must not be a delta against a newer or equal
/// tick (`baseline < tick` unless `baseline` is 0).
pub fn decode_snapshot(
    bytes: &[u8],
) -> Result<(&SnapshotHeader, &ArchivedSnapshotBody), DecodeError> {
    let (header, body) = split_snapshot(bytes)?;
    let baseline = header.baseline.get();
    if baseline != 0 && baseline >= header.tick.get() {
        return Err(DecodeError::Field {
            field: "baseline",
            reason: "must be 0 or older than tick",
        });
    }
    let archived = rkyv::access::<ArchivedSnapshotBody, rancor::Error>(body)
        .map_err(|e| DecodeError::Snapshot(e.to_string()))?;
    Ok((header, archived))
}

#[cfg(test)]
mod tests;
