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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use zonehost_client::{EndpointBuilder, Trust};

    use super::*;
    use crate::config::Config;

    #[test]
    fn a_quinn_link_foresees_which_datagrams_displace_older_ones() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = std::env::temp_dir().join(format!("zh-link-{}", std::process::id()));
            let identity = crate::keys::load_or_create_dev_identity(&dir).expect("identity");
            let config = Config {
                datagram_send_buffer: 2048,
                ..Config::default()
            };
            let server_config = crate::net::server_config(&config, &identity).expect("config");
            let server =
                quinn::Endpoint::server(server_config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .expect("server endpoint");
            let addr = server.local_addr().expect("address");
            let client = EndpointBuilder::new(Trust::Certificate(identity.certs[0].clone()))
                .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .build()
                .expect("client endpoint");
            let accept = tokio::spawn(async move {
                let conn = server
                    .accept()
                    .await
                    .expect("incoming")
                    .await
                    .expect("accepted");
                (server, conn)
            });
            let to_server = client
                .endpoint
                .connect(addr, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            let (_server, conn) = accept.await.expect("accept task");
            // No await between the sends: the connection is not driven, nothing leaves the
            // 2048-byte buffer, and a third datagram of 900 bytes does not fit.
            let d = Bytes::from(vec![7u8; 900]);
            let mut foreseen = Vec::new();
            for _ in 0..3 {
                foreseen.push(conn.displaces_on_send(d.len()));
                Link::send_datagram(&conn, d.clone()).expect("queued");
            }
            assert_eq!(foreseen, [false, false, true]);
            // Once the connection has sent them, there is room again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!conn.displaces_on_send(d.len()));
            conn.close(0u32.into(), b"");
            assert_eq!(
                Link::send_datagram(&conn, d),
                Err(LinkError::Lost),
                "a closed connection"
            );
            drop(to_server);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
