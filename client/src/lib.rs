//! Thin quinn wiring of the zonehost sans-IO [`ClientSession`](zonehost_protocol::ClientSession),
//! for native clients and the load generator.
//!
//! * [`Trust`]: which server certificate is accepted (an exact certificate, a pinned
//!   SHA-256 fingerprint, or WebPKI roots).
//! * [`EndpointBuilder`]: a quinn client endpoint on a UDP socket with chosen buffer sizes
//!   and client [`TransportOptions`] (keep-alive, idle timeout, small datagram buffers,
//!   [`AckOptions`]: ACKs that ride on datagrams);
//!   many connections can share one endpoint.
//! * [`Impairment`]: added latency, jitter, loss and reordering per direction on the
//!   endpoint's socket ([`EndpointBuilder::impair`]), to try a poor network without root.
//! * [`Client`]: connect and authenticate (`Hello` → `Welcome` or [`ClientError::Rejected`]),
//!   send inputs and requests, receive [`Incoming`] events and snapshots, say `Bye`.
//!
//! * [`PacketCounts`]: UDP packets each way and the share that carried only ACKs, from a
//!   connection's quinn statistics.
//!
//! * [`ReconnectingClient`]: a [`Client`] that reconnects by itself after a lost
//!   connection (resume first, then a fresh login through a [`TokenProvider`]), under a
//!   [`ReconnectPolicy`] (backoff, jitter, deadline, off switch).
//!
//! ```no_run
//! # async fn f() -> Result<(), zonehost_client::ClientError> {
//! use zonehost_client::{Client, EndpointBuilder, Incoming, Trust};
//! use zonehost_protocol::datagram::InputCmd;
//!
//! let ep = EndpointBuilder::new(Trust::certificate_file("data/cert.der")?).build()?;
//! let addr = "127.0.0.1:4433".parse().expect("address");
//! let mut client = Client::connect(&ep.endpoint, addr, "localhost", "TOKEN", "doc").await?;
//! client.send_input(InputCmd::new(1000, 0, 0))?;
//! if let Incoming::Snapshot(info, _bytes) = client.next_event().await? {
//!     println!("tick {}", info.tick);
//! }
//! client.close().await?;
//! # Ok(()) }
//! ```

pub mod acks;
mod client;
mod endpoint;
pub mod impair;
pub mod reconnect;
pub mod trust;

pub use acks::{AckOptions, PacketCounts};
pub use client::{
    Client, ClientError, ClientStats, Incoming, CLOSE_GRACE, DEFAULT_CONNECT_TIMEOUT, MAX_REDIRECTS,
};
pub use endpoint::{
    client_config, ClientEndpoint, EndpointBuilder, SocketBuffers, TransportOptions,
    DEFAULT_DATAGRAM_RECEIVE_BUFFER, DEFAULT_DATAGRAM_SEND_BUFFER, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEP_ALIVE, DEFAULT_SOCKET_BUFFER,
};
pub use impair::{Direction, Impairment};
pub use reconnect::{
    recover, Loss, ReconnectError, ReconnectPolicy, ReconnectStats, ReconnectingClient, Recovered,
    Target, TokenProvider, Update,
};
pub use trust::Trust;
pub use zonehost_protocol::session::SnapshotInfo;
