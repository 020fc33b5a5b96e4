//! Unreliable datagrams: client inputs and server snapshots (SPEC.md §4).
//!
//! Headers are fixed-layout little-endian structs read in place with `zerocopy`.

use bytes::{BufMut, Bytes, BytesMut};
use zerocopy::little_endian::{I16, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::{DecodeError, MAX_DATAGRAM_LEN, PROTOCOL_VERSION};

/// Datagram kind byte of a client input datagram.
pub const KIND_INPUT: u8 = 1;
/// Datagram kind byte of a server snapshot datagram.
pub const KIND_SNAPSHOT: u8 = 2;

/// Most input commands one input datagram may carry (the newest plus up to 7 repeats).
pub const MAX_INPUTS_PER_DATAGRAM: usize = 8;

/// Largest magnitude of a movement axis in an [`InputCmd`] (full speed).
pub const MOVE_AXIS_MAX: i16 = 1000;

/// Button bit: attack in the movement direction (reserved for the combat rules).
pub const BUTTON_ATTACK: u16 = 1 << 0;
/// Every button bit defined in protocol v1; other bits must be zero.
pub const BUTTONS_KNOWN: u16 = BUTTON_ATTACK;

/// Fixed 12-byte header of a client input datagram.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct InputHeader {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Datagram kind, [`KIND_INPUT`].
    pub kind: u8,
    /// Number of [`InputCmd`]s that follow, 1..=[`MAX_INPUTS_PER_DATAGRAM`].
    pub count: u8,
    /// Reserved, must be 0.
    pub flags: u8,
    /// Sequence number of the first (newest) command; command `i` has sequence `seq - i`.
    pub seq: U32,
    /// Newest snapshot tick the client has completely applied (every part), the baseline
    /// the server may encode deltas against; 0 before the first.
    pub ack_tick: U32,
}

/// One tick's worth of player intent, 8 bytes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct InputCmd {
    /// Movement along x, in thousandths of full speed, -1000..=1000.
    pub move_x: I16,
    /// Movement along y, in thousandths of full speed, -1000..=1000.
    pub move_y: I16,
    /// Button bits ([`BUTTON_ATTACK`], ...); unknown bits must be zero.
    pub buttons: U16,
    /// Reserved, must be 0.
    pub reserved: U16,
}

impl InputCmd {
    /// Builds a command from axis values (clamped to ±[`MOVE_AXIS_MAX`]) and buttons.
    pub fn new(move_x: i16, move_y: i16, buttons: u16) -> Self {
        Self {
            move_x: I16::new(move_x.clamp(-MOVE_AXIS_MAX, MOVE_AXIS_MAX)),
            move_y: I16::new(move_y.clamp(-MOVE_AXIS_MAX, MOVE_AXIS_MAX)),
            buttons: U16::new(buttons & BUTTONS_KNOWN),
            reserved: U16::new(0),
        }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let range = -MOVE_AXIS_MAX..=MOVE_AXIS_MAX;
        if !range.contains(&self.move_x.get()) || !range.contains(&self.move_y.get()) {
            return Err(DecodeError::Field {
                field: "move",
                reason: "axis outside -1000..=1000",
            });
        }
        if self.buttons.get() & !BUTTONS_KNOWN != 0 {
            return Err(DecodeError::Field {
                field: "buttons",
                reason: "unknown button bit",
            });
        }
        if self.reserved.get() != 0 {
            return Err(DecodeError::Field {
                field: "reserved",
                reason: "must be zero",
            });
        }
        Ok(())
    }
}

/// A decoded, validated input datagram borrowing the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDatagram<'a> {
    /// The header.
    pub header: &'a InputHeader,
    /// Commands, newest first.
    pub cmds: &'a [InputCmd],
}

impl<'a> InputDatagram<'a> {
    /// Decodes and validates an input datagram.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (header, rest) =
            InputHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
                needed: size_of::<InputHeader>(),
                got: bytes.len(),
            })?;
        check_version_kind(header.version, header.kind, KIND_INPUT)?;
        let count = usize::from(header.count);
        if count == 0 || count > MAX_INPUTS_PER_DATAGRAM {
            return Err(DecodeError::Field {
                field: "count",
                reason: "must be 1..=8",
            });
        }
        if header.flags != 0 {
            return Err(DecodeError::Field {
                field: "flags",
                reason: "must be zero",
            });
        }
        let needed = count * size_of::<InputCmd>();
        if rest.len() < needed {
            return Err(DecodeError::Truncated {
                needed: bytes.len() - rest.len() + needed,
                got: bytes.len(),
            });
        }
        if rest.len() > needed {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                limit: bytes.len() - rest.len() + needed,
            });
        }
        let cmds = <[InputCmd]>::ref_from_bytes(rest).map_err(|_| DecodeError::Truncated {
            needed,
            got: rest.len(),
        })?;
        if header.seq.get() < u32::from(header.count) - 1 {
            return Err(DecodeError::Field {
                field: "seq",
                reason: "smaller than count - 1",
            });
        }
        cmds.iter().try_for_each(InputCmd::validate)?;
        Ok(Self { header, cmds })
    }

    /// Iterates `(sequence, command)` pairs, newest first.
    pub fn iter(&self) -> impl Iterator<Item = (u32, InputCmd)> + 'a {
        let newest = self.header.seq.get();
        self.cmds
            .iter()
            .enumerate()
            .map(move |(i, c)| (newest - i as u32, *c))
    }
}

/// Encodes an input datagram. `cmds` is newest first, `seq` the sequence of `cmds[0]`.
///
/// At most [`MAX_INPUTS_PER_DATAGRAM`] commands are written; extra ones are ignored.
pub fn encode_input(seq: u32, ack_tick: u32, cmds: &[InputCmd]) -> Bytes {
    let count = cmds
        .len()
        .min(MAX_INPUTS_PER_DATAGRAM)
        .min(seq as usize + 1);
    let header = InputHeader {
        version: PROTOCOL_VERSION,
        kind: KIND_INPUT,
        count: count as u8,
        flags: 0,
        seq: U32::new(seq),
        ack_tick: U32::new(ack_tick),
    };
    let mut buf = BytesMut::with_capacity(size_of::<InputHeader>() + count * size_of::<InputCmd>());
    buf.put_slice(header.as_bytes());
    buf.put_slice(cmds[..count].as_bytes());
    buf.freeze()
}

/// Fixed 20-byte header of a server snapshot datagram; an rkyv body of `body_len` bytes follows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SnapshotHeader {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Datagram kind, [`KIND_SNAPSHOT`].
    pub kind: u8,
    /// Index of this part, `0..parts`.
    pub part: u8,
    /// Number of parts the tick's snapshot was split into, 1..=16.
    pub parts: u8,
    /// Simulation tick the snapshot describes.
    pub tick: U32,
    /// Tick of the snapshot this one is a delta against (one the client reported having
    /// completely, in an input's `ack_tick`); 0: a full state against nothing.
    pub baseline: U32,
    /// Zone instance id.
    pub instance: U32,
    /// Length of the rkyv body that follows.
    pub body_len: U16,
    /// Reserved, must be 0.
    pub flags: U16,
}

/// Most parts one tick's snapshot may be split into.
pub const MAX_SNAPSHOT_PARTS: u8 = 16;

/// Size of [`SnapshotHeader`] in bytes.
pub const SNAPSHOT_HEADER_LEN: usize = size_of::<SnapshotHeader>();

/// Splits a snapshot datagram into its validated header and body bytes.
pub fn split_snapshot(bytes: &[u8]) -> Result<(&SnapshotHeader, &[u8]), DecodeError> {
    if bytes.len() > MAX_DATAGRAM_LEN {
        return Err(DecodeError::TooLong {
            len: bytes.len(),
            limit: MAX_DATAGRAM_LEN,
        });
    }
    let (header, rest) =
        SnapshotHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
            needed: SNAPSHOT_HEADER_LEN,
            got: bytes.len(),
        })?;
    check_version_kind(header.version, header.kind, KIND_SNAPSHOT)?;
    if header.parts == 0 || header.parts > MAX_SNAPSHOT_PARTS || header.part >= header.parts {
        return Err(DecodeError::Field {
            field: "part",
            reason: "part must be < parts <= 16",
        });
    }
    if header.flags.get() != 0 {
        return Err(DecodeError::Field {
            field: "flags",
            reason: "must be zero",
        });
    }
    let body_len = usize::from(header.body_len.get());
    if rest.len() != body_len {
        return Err(if rest.len() < body_len {
            DecodeError::Truncated {
                needed: SNAPSHOT_HEADER_LEN + body_len,
                got: bytes.len(),
            }
        } else {
            DecodeError::TooLong {
                len: bytes.len(),
                limit: SNAPSHOT_HEADER_LEN + body_len,
            }
        });
    }
    Ok((header, rest))
}

/// Reads the kind byte of any datagram after checking its version.
pub fn peek_kind(bytes: &[u8]) -> Result<u8, DecodeError> {
    match bytes {
        [version, kind, ..] if *version == PROTOCOL_VERSION => Ok(*kind),
        [version, _, ..] => Err(DecodeError::Version(*version)),
        _ => Err(DecodeError::Truncated {
            needed: 2,
            got: bytes.len(),
        }),
    }
}

fn check_version_kind(version: u8, kind: u8, expected: u8) -> Result<(), DecodeError> {
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    if kind != expected {
        return Err(DecodeError::Kind(kind));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_sizes_match_spec() {
        assert_eq!(size_of::<InputHeader>(), 12);
        assert_eq!(size_of::<InputCmd>(), 8);
        assert_eq!(SNAPSHOT_HEADER_LEN, 20);
    }

    #[test]
    fn input_bytes_are_exact() {
        let bytes = encode_input(0x0102_0304, 7, &[InputCmd::new(1000, -1, BUTTON_ATTACK)]);
        assert_eq!(
            &bytes[..],
            &[2, 1, 1, 0, 4, 3, 2, 1, 7, 0, 0, 0, 0xe8, 0x03, 0xff, 0xff, 1, 0, 0, 0]
        );
    }

    #[test]
    fn rejects_bad_inputs() {
        let good = encode_input(5, 1, &[InputCmd::new(1, 2, 0), InputCmd::new(3, 4, 0)]).to_vec();
        assert!(InputDatagram::decode(&good).is_ok());
        assert!(matches!(
            InputDatagram::decode(&good[..5]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            InputDatagram::decode(&good[..good.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            InputDatagram::decode(&long),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = good.clone();
        v[0] = 9;
        assert_eq!(InputDatagram::decode(&v), Err(DecodeError::Version(9)));
        let mut k = good.clone();
        k[1] = 2;
        assert_eq!(InputDatagram::decode(&k), Err(DecodeError::Kind(2)));
        let mut c = good.clone();
        c[2] = 0;
        assert!(matches!(
            InputDatagram::decode(&c),
            Err(DecodeError::Field { field: "count", .. })
        ));
        let mut axis = good.clone();
        axis[12] = 0xff;
        axis[13] = 0x7f;
        assert!(matches!(
            InputDatagram::decode(&axis),
            Err(DecodeError::Field { field: "move", .. })
        ));
        let seq0 = encode_input(0, 0, &[InputCmd::default(), InputCmd::default()]);
        assert_eq!(InputDatagram::decode(&seq0).map(|d| d.cmds.len()), Ok(1));
    }

    fn cmd() -> impl Strategy<Value = InputCmd> {
        (-1000i16..=1000, -1000i16..=1000, 0u16..=BUTTONS_KNOWN)
            .prop_map(|(x, y, b)| InputCmd::new(x, y, b))
    }

    proptest! {
        #[test]
        fn input_round_trip(seq in 7u32.., ack in any::<u32>(), cmds in prop::collection::vec(cmd(), 1..=8)) {
            let bytes = encode_input(seq, ack, &cmds);
            prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
            let d = InputDatagram::decode(&bytes).expect("round trip");
            prop_assert_eq!(d.header.seq.get(), seq);
            prop_assert_eq!(d.header.ack_tick.get(), ack);
            prop_assert_eq!(d.cmds, &cmds[..]);
            let seqs: Vec<u32> = d.iter().map(|(s, _)| s).collect();
            prop_assert_eq!(seqs[0], seq);
        }

        #[test]
        fn input_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = InputDatagram::decode(&bytes);
            let _ = split_snapshot(&bytes);
            let _ = peek_kind(&bytes);
        }
    }
}
