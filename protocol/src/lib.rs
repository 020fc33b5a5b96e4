//! The zonehost wire protocol, version 2 (byte-exact description in `SPEC.md`).
//!
//! This crate does no I/O: it turns bytes into typed messages and back, and offers a
//! sans-IO [`ClientSession`] that a client drives with the bytes it received and the
//! current time. Every decoder rejects malformed input with a typed [`DecodeError`].
//!
//! * [`datagram`]: unreliable datagrams — client inputs ([`datagram::InputDatagram`]) and
//!   server snapshots ([`datagram::SnapshotHeader`] followed by an rkyv [`snapshot::SnapshotBody`]).
//! * [`frame`]: length-prefixed frames on reliable streams; [`message`]: what they carry.
//! * [`token`]: signed, expiring authentication tokens.
//! * [`channel`]: which message kind rides which channel.
//! * [`session`]: the sans-IO client session.

pub mod channel;
pub mod datagram;
pub mod error;
pub mod frame;
mod limits;
pub mod message;
pub mod session;
pub mod snapshot;
pub mod token;

pub use error::DecodeError;
pub use session::{ClientEvent, ClientSession, SessionError};

/// ALPN protocol identifier negotiated in the TLS handshake.
pub const ALPN: &[u8] = b"zonehost/2";

/// ALPN of protocol version 1. A server offers it beside [`ALPN`] so that a version-1
/// client completes the handshake and is told `Reject{UnsupportedVersion}` on its
/// `Hello` (the control stream's framing and `Hello`/`Reject` are the same in both
/// versions) instead of failing TLS with no reason (SPEC.md §1.3).
pub const ALPN_V1: &[u8] = b"zonehost/1";

/// Protocol version carried in `Hello` and in every datagram header.
pub const PROTOCOL_VERSION: u8 = 2;

/// Largest datagram payload either side sends or accepts, in bytes.
///
/// quinn allows about 1162 bytes of datagram payload right after the handshake, before
/// path-MTU discovery, and no QUIC stack fragments datagrams; 1100 leaves headroom.
pub const MAX_DATAGRAM_LEN: usize = 1100;

/// Hard cap on the payload of one reliable frame, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
