//! Snapshot bodies: an rkyv archive of one zone instance's visible state (SPEC.md §4.3).
//!
//! A tick's snapshot is built once per zone instance and the same bytes go to every
//! player of that instance: the body lists each player's last applied input sequence
//! in [`SnapshotBody::acks`], so no per-client header is needed. When the entities do not
//! fit in one datagram the snapshot is split into self-contained parts
//! ([`encode_snapshot`]); every part carries all acks.

use bytes::{BufMut, Bytes, BytesMut};
use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

use crate::datagram::{
    split_snapshot, SnapshotHeader, KIND_SNAPSHOT, MAX_SNAPSHOT_PARTS, SNAPSHOT_HEADER_LEN,
};
use crate::{DecodeError, MAX_DATAGRAM_LEN, PROTOCOL_VERSION};

/// Entity kind codes carried in [`EntityState::kind`].
pub mod kind {
    /// A player character.
    pub const PLAYER: u8 = 1;
    /// A monster.
    pub const MONSTER: u8 = 2;
    /// An item lying on the ground.
    pub const ITEM: u8 = 3;
}

/// One entity as a client sees it. Archived size: 22 bytes.
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
    /// Kind-specific flags (0 in v1 for players).
    pub flags: u8,
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
    /// Per-player input acknowledgements, one per player in the instance.
    pub acks: Vec<PlayerAck>,
    /// Entities in this part.
    pub entities: Vec<EntityState>,
}

/// Why a snapshot could not be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// More parts than [`MAX_SNAPSHOT_PARTS`] would be needed.
    #[error("snapshot needs more than {MAX_SNAPSHOT_PARTS} parts")]
    TooManyParts,
    /// The acks alone do not fit one datagram.
    #[error("too many player acks for one datagram")]
    TooManyAcks,
    /// A part came out larger than [`MAX_DATAGRAM_LEN`] (a layout constant is wrong).
    #[error("snapshot part of {0} bytes exceeds the datagram limit")]
    TooLarge(usize),
    /// rkyv serialization failed.
    #[error("rkyv: {0}")]
    Rkyv(String),
}

/// Archived bytes of the body overhead plus one ack or entity (measured by tests).
const BODY_FIXED_LEN: usize = 18;
const ACK_LEN: usize = 8;
const ENTITY_LEN: usize = 22;

/// Largest number of entities one part carries next to `acks` player acks.
pub fn entities_per_part(acks: usize) -> usize {
    MAX_DATAGRAM_LEN.saturating_sub(SNAPSHOT_HEADER_LEN + BODY_FIXED_LEN + acks * ACK_LEN)
        / ENTITY_LEN
}

/// Encodes one tick's snapshot of an instance into one or more datagrams.
///
/// Entities are taken in the given order (put the most important first) and split into
/// parts of at most [`entities_per_part`] entities, so every datagram is at most
/// [`MAX_DATAGRAM_LEN`] bytes. `out` is cleared and receives one `Bytes` per part.
pub fn encode_snapshot(
    tick: u32,
    instance: u32,
    zone: u16,
    acks: &[PlayerAck],
    entities: &[EntityState],
    out: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    out.clear();
    let per_part = entities_per_part(acks.len());
    if per_part == 0 {
        return Err(EncodeError::TooManyAcks);
    }
    let parts = entities.len().div_ceil(per_part).max(1);
    if parts > usize::from(MAX_SNAPSHOT_PARTS) {
        return Err(EncodeError::TooManyParts);
    }
    let mut body = SnapshotBody {
        zone,
        acks: acks.to_vec(),
        entities: Vec::with_capacity(per_part),
    };
    for part in 0..parts {
        body.entities.clear();
        let start = part * per_part;
        body.entities.extend_from_slice(
            &entities[start.min(entities.len())..(start + per_part).min(entities.len())],
        );
        let archived =
            rkyv::to_bytes::<rancor::Error>(&body).map_err(|e| EncodeError::Rkyv(e.to_string()))?;
        let header = SnapshotHeader {
            version: PROTOCOL_VERSION,
            kind: KIND_SNAPSHOT,
            part: part as u8,
            parts: parts as u8,
            tick: U32::new(tick),
            instance: U32::new(instance),
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
pub fn decode_snapshot(
    bytes: &[u8],
) -> Result<(&SnapshotHeader, &ArchivedSnapshotBody), DecodeError> {
    let (header, body) = split_snapshot(bytes)?;
    let archived = rkyv::access::<ArchivedSnapshotBody, rancor::Error>(body)
        .map_err(|e| DecodeError::Snapshot(e.to_string()))?;
    Ok((header, archived))
}

impl ArchivedSnapshotBody {
    /// The last input sequence applied for `entity`, if it is a player of this instance.
    pub fn ack_for(&self, entity: u32) -> Option<u32> {
        self.acks
            .iter()
            .find(|a| a.entity == entity)
            .map(|a| a.last_input.to_native())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entity(id: u32) -> EntityState {
        EntityState {
            id,
            x_mm: -5,
            y_mm: 70_000,
            vx_cms: -600,
            vy_cms: 3,
            hp: 90,
            max_hp: 100,
            kind: kind::MONSTER,
            flags: 0,
        }
    }

    #[test]
    fn layout_constants_match_rkyv() {
        assert_eq!(
            std::mem::align_of::<ArchivedSnapshotBody>(),
            1,
            "archives must be readable at any offset"
        );
        let empty = rkyv::to_bytes::<rancor::Error>(&SnapshotBody::default()).expect("encode");
        assert_eq!(empty.len(), BODY_FIXED_LEN);
        let one = SnapshotBody {
            zone: 1,
            acks: vec![PlayerAck::default()],
            entities: vec![entity(1)],
        };
        let one = rkyv::to_bytes::<rancor::Error>(&one).expect("encode");
        assert_eq!(one.len(), BODY_FIXED_LEN + ACK_LEN + ENTITY_LEN);
    }

    #[test]
    fn four_players_sixty_monsters_fit_in_datagrams() {
        let acks: Vec<PlayerAck> = (0..4)
            .map(|i| PlayerAck {
                entity: i,
                last_input: 9,
            })
            .collect();
        let ents: Vec<EntityState> = (0..64).map(entity).collect();
        let mut out = Vec::new();
        encode_snapshot(3, 1, 2, &acks, &ents, &mut out).expect("encode");
        assert!(out.len() >= 2);
        let mut seen = 0;
        for d in &out {
            assert!(d.len() <= MAX_DATAGRAM_LEN, "{} bytes", d.len());
            let (h, b) = decode_snapshot(d).expect("decode");
            assert_eq!(usize::from(h.parts), out.len());
            assert_eq!(b.ack_for(2), Some(9));
            seen += b.entities.len();
        }
        assert_eq!(seen, 64);
    }

    #[test]
    fn corrupt_body_is_rejected() {
        let mut out = Vec::new();
        encode_snapshot(1, 1, 1, &[], &[entity(1)], &mut out).expect("encode");
        let mut bytes = out[0].to_vec();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        assert!(matches!(
            decode_snapshot(&bytes),
            Err(DecodeError::Snapshot(_))
        ));
    }

    proptest! {
        #[test]
        fn snapshot_round_trip(tick in any::<u32>(), n in 0usize..200, players in 1usize..=4) {
            let acks: Vec<PlayerAck> = (0..players as u32).map(|i| PlayerAck { entity: i, last_input: tick ^ i }).collect();
            let ents: Vec<EntityState> = (0..n as u32).map(|i| EntityState { id: i, x_mm: i as i32 * 7, ..entity(i) }).collect();
            let mut out = Vec::new();
            encode_snapshot(tick, 9, 3, &acks, &ents, &mut out).expect("encode");
            let mut back = Vec::new();
            for d in &out {
                prop_assert!(d.len() <= MAX_DATAGRAM_LEN);
                let (h, b) = decode_snapshot(d).expect("decode");
                prop_assert_eq!(h.tick.get(), tick);
                let full: SnapshotBody = rkyv::deserialize::<SnapshotBody, rancor::Error>(b).expect("deser");
                prop_assert_eq!(&full.acks, &acks);
                back.extend(full.entities);
            }
            prop_assert_eq!(back, ents);
        }

        #[test]
        fn decode_snapshot_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
            let _ = decode_snapshot(&bytes);
        }
    }
}
