//! The link between a connection and the simulation: the transport as the sim sees it
//! ([`Link`]), a session's id, what its writer task sends ([`Outgoing`]) and the close
//! bookkeeping both sides share ([`ConnShared`]). A leaf: net, session, sim and cluster
//! code all use these, and it uses none of them.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};

use bytes::Bytes;

use crate::telemetry::DisconnectCause;

/// Why a datagram could not be handed to the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The connection is gone.
    #[error("connection lost")]
    Lost,
    /// The peer does not accept datagrams of this size or at all.
    #[error("datagram refused")]
    Refused,
}

/// The transport side of a session as the simulation sees it: quinn in production, an
/// in-memory queue in tests that step the server without sockets.
pub trait Link: Send + Sync + std::fmt::Debug + 'static {
    /// Sends an unreliable datagram (never blocks; quinn drops the oldest when its buffer is full).
    fn send_datagram(&self, data: Bytes) -> Result<(), LinkError>;
    /// Whether sending `len` bytes now would make the transport discard older unsent
    /// datagrams (counted as displaced). In-memory links never do.
    fn displaces_on_send(&self, len: usize) -> bool {
        let _ = len;
        false
    }
    /// Closes the connection with an application error code.
    fn close(&self, code: u32, reason: &[u8]);
}

impl Link for quinn::Connection {
    fn send_datagram(&self, data: Bytes) -> Result<(), LinkError> {
        quinn::Connection::send_datagram(self, data).map_err(|e| match e {
            quinn::SendDatagramError::ConnectionLost(_) => LinkError::Lost,
            _ => LinkError::Refused,
        })
    }

    fn displaces_on_send(&self, len: usize) -> bool {
        // quinn: a datagram of at most this many bytes never causes older ones to be dropped.
        self.datagram_send_buffer_space() < len
    }

    fn close(&self, code: u32, reason: &[u8]) {
        quinn::Connection::close(self, code.into(), reason);
    }
}

/// Process-unique id of a session (one authenticated connection).
pub type SessionId = u64;

/// What a session's writer task sends on the control stream.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame to write.
    Frame(Bytes),
    /// A last frame to write, after which the connection is closed with `code`.
    CloseAfter {
        /// Final frame (`Goaway` or `Reject`).
        frame: Bytes,
        /// QUIC application close code.
        code: u32,
        /// Why, for the disconnect counter.
        cause: DisconnectCause,
    },
}

/// State shared between a connection task and the worker that owns its session.
#[derive(Debug, Default)]
pub struct ConnShared {
    cause: AtomicU8,
    welcomed: AtomicBool,
    /// The client gets every k-th snapshot (`Request::SnapshotRate`); 0 and 1 mean all.
    snapshot_divisor: AtomicU16,
}

impl ConnShared {
    /// Records that this connection's `Welcome` is queued: from now on other frames
    /// (events about the player) may follow it. Nothing may precede the `Welcome`.
    pub fn mark_welcomed(&self) {
        self.welcomed.store(true, Ordering::Release);
    }

    /// Whether the `Welcome` was queued.
    pub fn is_welcomed(&self) -> bool {
        self.welcomed.load(Ordering::Acquire)
    }

    /// Sends this connection every `k`-th snapshot from now on (`Request::SnapshotRate`;
    /// SPEC.md §6.2). Holds for the connection, across zone changes and workers.
    pub fn set_snapshot_divisor(&self, k: u16) {
        self.snapshot_divisor.store(k.max(1), Ordering::Relaxed);
    }

    /// The connection gets the snapshots of snapshot ticks divisible by this (≥ 1).
    pub fn snapshot_divisor(&self) -> u16 {
        self.snapshot_divisor.load(Ordering::Relaxed).max(1)
    }

    /// Records why the connection is closing; the first recorded cause wins.
    pub fn set_cause(&self, cause: DisconnectCause) {
        let _ =
            self.cause
                .compare_exchange(0, cause as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The recorded cause, if any.
    pub fn cause(&self) -> Option<DisconnectCause> {
        match self.cause.load(Ordering::Acquire) {
            0 => None,
            n => DisconnectCause::ALL.get(usize::from(n - 1)).copied(),
        }
    }
}
