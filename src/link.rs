//! The link between a connection and the simulation: the transport as the sim sees it
//! ([`Link`]), a session's id, what its writer task sends ([`Outgoing`], through its
//! [`Outbox`]) and the close
//! bookkeeping both sides share ([`ConnShared`]). A leaf: net, session, sim and cluster
//! code all use these, and it uses none of them.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

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

/// A session's reliable outbox, created by [`outbox`]: the sending half (the sim, the
/// party directory, the connection's own request pump).
///
/// Messages travel boxed: tokio's channel allocates its slots 32 at a time, and a slot
/// holds a pointer (8 bytes) instead of an [`Outgoing`] (40), which keeps the block every
/// connection holds (two after the first 32 messages) at 0.3 instead of 1.3 KB.
#[derive(Debug, Clone)]
pub struct Outbox(mpsc::Sender<Box<Outgoing>>);

/// The receiving half of a session's reliable outbox (the connection's writer task).
#[derive(Debug)]
pub struct OutboxReceiver(mpsc::Receiver<Box<Outgoing>>);

/// A session's reliable outbox holding at most `capacity` messages.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    (Outbox(tx), OutboxReceiver(rx))
}

impl Outbox {
    /// Queues `msg` unless the outbox is full or its receiver is gone.
    pub fn try_send(&self, msg: Outgoing) -> Result<(), TrySendError<Outgoing>> {
        self.0.try_send(Box::new(msg)).map_err(|e| match e {
            TrySendError::Full(m) => TrySendError::Full(*m),
            TrySendError::Closed(m) => TrySendError::Closed(*m),
        })
    }
}

impl OutboxReceiver {
    /// The next message; `None` once every sender is gone and the outbox is empty.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.0.recv().await.map(|m| *m)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<Outgoing, TryRecvError> {
        self.0.try_recv().map(|m| *m)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Outgoing {
        Outgoing::Frame(Bytes::from(vec![n; 3]))
    }

    fn bytes_of(o: Outgoing) -> Bytes {
        match o {
            Outgoing::Frame(b) | Outgoing::CloseAfter { frame: b, .. } => b,
        }
    }

    /// The outbox keeps order, refuses past its capacity (handing the message back), and
    /// reports a gone receiver.
    #[test]
    fn an_outbox_is_bounded_ordered_and_hands_back_what_it_refuses() {
        let (tx, mut rx) = outbox(2);
        tx.try_send(frame(1)).expect("room");
        tx.try_send(frame(2)).expect("room");
        match tx.try_send(frame(3)) {
            Err(TrySendError::Full(o)) => assert_eq!(bytes_of(o), Bytes::from(vec![3u8; 3])),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(
            bytes_of(rx.try_recv().expect("first")),
            Bytes::from(vec![1u8; 3])
        );
        assert_eq!(
            bytes_of(rx.try_recv().expect("second")),
            Bytes::from(vec![2u8; 3])
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(rx);
        assert!(matches!(
            tx.try_send(frame(4)),
            Err(TrySendError::Closed(_))
        ));
    }

    /// The writer task's side: `recv` waits for a message and ends when the senders do.
    #[test]
    fn an_outbox_receiver_ends_with_its_senders() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (tx, mut rx) = outbox(4);
            let sender = tokio::spawn(async move {
                tx.try_send(frame(9)).expect("room");
            });
            let got = rx.recv().await.expect("a message");
            assert_eq!(bytes_of(got), Bytes::from(vec![9u8; 3]));
            sender.await.expect("sender");
            assert!(rx.recv().await.is_none());
        });
    }
}
