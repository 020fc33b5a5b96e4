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
use rkyv::{Archive, Deserialize, Serialize};
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

use crate::datagram::{
    split_snapshot, SnapshotHeader, KIND_SNAPSHOT, MAX_SNAPSHOT_PARTS, SNAPSHOT_HEADER_LEN,
};
use crate::{DecodeError, MAX_DATAGRAM_LEN, PROTOCOL_VERSION};

mod delta;
mod view;

pub use delta::{diff, Change, Changes};
pub use view::{Applied, SnapshotView, ViewError, BASELINE_HISTORY};

/// Entity kind codes carried in [`EntityState::kind`].
pub mod kind {
    /// A player character.
    pub const PLAYER: u8 = 1;
    /// A monster.
    pub const MONSTER: u8 = 2;
    /// An item lying on the ground.
    pub const ITEM: u8 = 3;
}

/// One entity as a client sees it, in full. Archived size: 22 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct EntityState {
    /// Entity id, unique within the instance.
    pub id: u32,
    /// Position x in millimetres.
    pub x_mm: i32,
    /// Position y in millimetres.
    pub y_mm: i32,
    /// Velocity x in centimetres per second.
    pub vx_cms: i16,
    /// Velocity y in centimetres per second.
    pub vy_cms: i16,
    /// Current hit points.
    pub hp: u16,
    /// Maximum hit points.
    pub max_hp: u16,
    /// Entity kind, see [`kind`].
    pub kind: u8,
    /// Kind-specific flags (SPEC.md §4.3.2).
    pub flags: u8,
}

/// A known entity moved or changed velocity since the baseline. Archived size: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct EntityMove {
    /// Entity id.
    pub id: u32,
    /// Position x now minus position x in the baseline, millimetres.
    pub dx_mm: i16,
    /// Position y now minus position y in the baseline, millimetres.
    pub dy_mm: i16,
    /// Velocity x now, centimetres per second.
    pub vx_cms: i16,
    /// Velocity y now, centimetres per second.
    pub vy_cms: i16,
}

/// A known entity's hit points changed since the baseline. Archived size: 6 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct EntityHp {
    /// Entity id.
    pub id: u32,
    /// Current hit points.
    pub hp: u16,
}

/// The last input sequence the server applied for one player's entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct PlayerAck {
    /// The player's entity id.
    pub entity: u32,
    /// Highest input sequence applied (0 before any).
    pub last_input: u32,
}

/// The rkyv-archived body of one snapshot part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct SnapshotBody {
    /// Zone template id of the instance.
    pub zone: u16,
    /// Input acknowledgements of the players the recipient is interested in (itself
    /// always among them), the same in every part.
    pub acks: Vec<PlayerAck>,
    /// Entities new to the recipient since the baseline, or changed in more than position,
    /// velocity and hit points: their full state.
    pub spawns: Vec<EntityState>,
    /// Known entities that moved or changed velocity.
    pub moves: Vec<EntityMove>,
    /// Known entities whose hit points changed.
    pub hps: Vec<EntityHp>,
    /// Ids of entities in the baseline that the recipient no longer sees.
    pub despawns: Vec<u32>,
}

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

/// Archived bytes of the body's root: `zone` and five (pointer, length) pairs.
pub const BODY_FIXED_LEN: usize = 42;
/// Archived bytes of one [`PlayerAck`].
pub const ACK_LEN: usize = 8;
/// Archived bytes of one [`EntityState`].
pub const ENTITY_LEN: usize = 22;
/// Archived bytes of one [`EntityMove`].
pub const MOVE_LEN: usize = 12;
/// Archived bytes of one [`EntityHp`].
pub const HP_LEN: usize = 6;
/// Archived bytes of one despawned id.
pub const DESPAWN_LEN: usize = 4;

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
/// snapshot without changes is one part with the acks alone.
pub fn encode_snapshot(
    meta: SnapshotMeta,
    acks: &[PlayerAck],
    changes: &Changes,
    out: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    out.clear();
    if SNAPSHOT_HEADER_LEN + BODY_FIXED_LEN + acks.len() * ACK_LEN > MAX_DATAGRAM_LEN {
        return Err(EncodeError::TooManyAcks);
    }
    let room = change_room(acks.len());
    let mut body = SnapshotBody {
        zone: meta.zone,
        acks: acks.to_vec(),
        ..SnapshotBody::default()
    };
    // First pass: where each part ends, so the header can say how many there are.
    let mut ends = Vec::new();
    let mut used = 0;
    for (i, c) in changes.iter().enumerate() {
        let len = c.archived_len();
        if len > room {
            return Err(EncodeError::TooManyAcks);
        }
        if used + len > room {
            ends.push(i);
            used = 0;
        }
        used += len;
    }
    ends.push(changes.len());
    if ends.len() > usize::from(MAX_SNAPSHOT_PARTS) {
        return Err(EncodeError::TooManyParts);
    }
    let parts = ends.len();
    let mut start = 0;
    for (part, &end) in ends.iter().enumerate() {
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
        let archived =
            rkyv::to_bytes::<rancor::Error>(&body).map_err(|e| EncodeError::Rkyv(e.to_string()))?;
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
        let mut buf = BytesMut::with_capacity(SNAPSHOT_HEADER_LEN + archived.len());
        buf.put_slice(header.as_bytes());
        buf.put_slice(&archived);
        if buf.len() > MAX_DATAGRAM_LEN {
            return Err(EncodeError::TooLarge(buf.len()));
        }
        out.push(buf.freeze());
    }
    Ok(())
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

impl ArchivedSnapshotBody {
    /// The last input sequence applied for `entity`, if the body carries its ack.
    pub fn ack_for(&self, entity: u32) -> Option<u32> {
        self.acks
            .iter()
            .find(|a| a.entity == entity)
            .map(|a| a.last_input.to_native())
    }

    /// Number of changes the body carries.
    pub fn change_count(&self) -> usize {
        self.spawns.len() + self.moves.len() + self.hps.len() + self.despawns.len()
    }
}

impl From<&ArchivedEntityState> for EntityState {
    fn from(a: &ArchivedEntityState) -> Self {
        Self {
            id: a.id.to_native(),
            x_mm: a.x_mm.to_native(),
            y_mm: a.y_mm.to_native(),
            vx_cms: a.vx_cms.to_native(),
            vy_cms: a.vy_cms.to_native(),
            hp: a.hp.to_native(),
            max_hp: a.max_hp.to_native(),
            kind: a.kind,
            flags: a.flags,
        }
    }
}

#[cfg(test)]
mod tests;
