//! The QUIC endpoint: TLS 1.3 with the zonehost ALPN, tuned UDP socket buffers, transport
//! limits, and the accept loop with a connection cap.

mod acks;
mod conn;
mod gro;
mod junk;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::keys::ServerIdentity;
use crate::session::{Authenticator, Registry};
use crate::sim::Sim;
use crate::telemetry::Stats;

pub use acks::AckConfig;
pub(crate) use conn::{ClusterContext, ConnContext};

/// Why the endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Creating or binding the UDP socket failed.
    #[error("binding UDP {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused (bad certificate or key).
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Socket buffer sizes actually granted by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// Receive buffer, bytes.
    pub recv: usize,
    /// Send buffer, bytes.
    pub send: usize,
}

/// Binds a UDP socket with the requested buffer sizes; warns when the kernel caps them
/// (a 60 Hz burst to hundreds of clients loses datagrams with the 208 KiB default).
pub fn bind_udp(
    addr: SocketAddr,
    recv: usize,
    send: usize,
) -> Result<(UdpSocket, SocketBuffers), NetError> {
    let bind = |source| NetError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).map_err(bind)?;
    }
    // Failing to enlarge buffers is not fatal: report what we got.
    let _ = socket.set_recv_buffer_size(recv);
    let _ = socket.set_send_buffer_size(send);
    socket.bind(&addr.into()).map_err(bind)?;
    socket.set_nonblocking(true).map_err(bind)?;
    // Linux reports twice the usable size it granted.
    let granted = SocketBuffers {
        recv: socket.recv_buffer_size().unwrap_or(0) / 2,
        send: socket.send_buffer_size().unwrap_or(0) / 2,
    };
    if granted.recv < recv || granted.send < send {
        tracing::warn!(
            requested_recv = recv,
            granted_recv = granted.recv,
            requested_send = send,
            granted_send = granted.send,
            "the kernel capped the UDP socket buffers; raise net.core.rmem_max / net.core.wmem_max \
             (sysctl -w net.core.rmem_max=8388608 net.core.wmem_max=8388608) or expect datagram loss under load"
        );
    }
    Ok((socket.into(), granted))
}

/// The endpoint configuration of a server whose stateless-reset secret is `secret`
/// (see [`crate::keys::load_reset_secret`]): reset tokens are an HMAC of the connection
/// id under it, and connection ids are generated (and recognised) with a key derived
/// from it. Both survive a restart, so a restarted server recognises the connection ids
/// of its previous run as its own and answers their packets with a stateless reset
/// (quinn drops packets whose connection id it does not recognise, without a reset).
pub fn endpoint_config(
    secret: &[u8; crate::keys::RESET_KEY_LEN],
    min_reset_interval: Duration,
) -> quinn::EndpointConfig {
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let cid_key = cid_key(secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset));
    config
        .cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        })
        .min_reset_interval(min_reset_interval);
    config
}

/// The key of the endpoint's connection id generator, derived from the stateless-reset
/// secret (a separate key, so the reset key is never used for two purposes).
fn cid_key(secret: &[u8; crate::keys::RESET_KEY_LEN]) -> u64 {
    use ring::hmac;
    let reset = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&reset, b"zonehost connection id key");
    let mut key = [0u8; 8];
    key.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_le_bytes(key)
}

/// The endpoint's UDP socket for quinn, wrapped so that every datagram is counted and
/// datagrams that are not QUIC for this endpoint are counted by reason (see `junk.rs`).
/// `secret` is the one given to [`endpoint_config`]. The socket reads one datagram per
/// buffer (UDP GRO off, see `gro.rs`).
pub fn counting_socket(
    socket: UdpSocket,
    secret: &[u8; crate::keys::RESET_KEY_LEN],
    stats: Arc<Stats>,
) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
    let (inner, receive_segments) = gro::one_datagram_per_buffer(socket)?;
    Ok(Arc::new(junk::CountingSocket::new(
        inner,
        cid_key(secret),
        stats,
        receive_segments,
    )))
}

/// Builds the quinn server configuration.
pub fn server_config(
    config: &Config,
    identity: &ServerIdentity,
) -> Result<quinn::ServerConfig, NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| NetError::Tls(e.to_string()))?;
    // Version 1 clients complete the handshake to be told `UnsupportedVersion` (SPEC §1.3).
    tls.alpn_protocols = vec![
        zonehost_protocol::ALPN.to_vec(),
        zonehost_protocol::ALPN_V1.to_vec(),
    ];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .map_err(|e| NetError::Tls(format!("idle timeout: {e}")))?;
    transport
        .max_idle_timeout(Some(idle))
        // One control stream per connection; clients may not open anything else.
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((config.max_frame_len as u32 * 4).into())
        .receive_window((config.max_frame_len as u32 * 8).into())
        .send_window(1 << 20)
        .datagram_receive_buffer_size(Some(config.datagram_recv_buffer))
        .datagram_send_buffer_size(config.datagram_send_buffer);
    config.ack.apply(&mut transport);
    server.transport_config(Arc::new(transport));
    server.max_incoming(config.max_connections.max(1));
    Ok(server)
}

/// Everything the accept loop needs.
#[derive(Debug)]
pub(crate) struct Acceptor {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) ctx: Arc<ConnContext>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) handshakes: crate::limits::HandshakeLimiter,
    pub(crate) retry_above_per_sec: u32,
}

impl Acceptor {
    /// Accepts connections until `draining` becomes true.
    pub(crate) async fn run(self, mut draining: watch::Receiver<bool>) {
        let mut window_start = std::time::Instant::now();
        let mut window_count = 0u32;
        loop {
            let incoming = tokio::select! {
                i = self.endpoint.accept() => i,
                _ = draining.wait_for(|d| *d) => break,
            };
            let Some(incoming) = incoming else { break };
            let now = std::time::Instant::now();
            if now.duration_since(window_start) >= Duration::from_secs(1) {
                window_start = now;
                window_count = 0;
            }
            window_count += 1;
            if !incoming.remote_address_validated()
                && window_count > self.retry_above_per_sec
                && incoming.may_retry()
            {
                Stats::inc(&self.ctx.stats.handshake_retries);
                let _ = incoming.retry();
                continue;
            }
            if !self.handshakes.admit(incoming.remote_address().ip(), now) {
                Stats::inc(&self.ctx.stats.handshakes_refused_rate);
                incoming.refuse();
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                Stats::inc(&self.ctx.stats.connections_refused_full);
                incoming.refuse();
                continue;
            };
            Stats::inc(&self.ctx.stats.connections_accepted);
            let ctx = self.ctx.clone();
            tokio::spawn(async move {
                Stats::gauge_add(&ctx.stats.connections_open, 1);
                conn::handle(incoming, ctx.clone()).await;
                Stats::gauge_add(&ctx.stats.connections_open, -1);
                drop(permit);
            });
        }
        // Refuse new handshakes from here on; established connections are drained by the sim.
        self.endpoint.set_server_config(None);
        tracing::info!("stopped accepting connections");
    }
}

/// Builds the shared per-connection context.
pub(crate) fn context(
    config: &Config,
    stats: Arc<Stats>,
    auth: Authenticator,
    registry: Arc<Registry>,
    sim: Arc<Sim>,
    draining: watch::Receiver<bool>,
    cluster: ClusterContext,
) -> Arc<ConnContext> {
    Arc::new(ConnContext {
        cluster,
        stats,
        auth,
        registry,
        sim,
        draining,
        hello_timeout: Duration::from_millis(config.hello_timeout_ms),
        max_frame_len: config.max_frame_len,
        outbox_capacity: config.outbox_capacity,
        replay: crate::limits::ReplayGuard::new(config.replay_cache_capacity),
        datagram_rate: (config.datagram_rate, config.datagram_burst),
        request_rate: (config.request_rate, config.request_burst),
        max_violations: config.max_violations,
        resume_grace: config.resume_grace_ms > 0,
        next_session: std::sync::atomic::AtomicU64::new(1),
    })
}

impl ConnContext {
    pub(crate) fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    //! The quinn side of [`Link`]: what the sim's counters rely on.

    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use zonehost_client::{EndpointBuilder, Trust};

    use bytes::Bytes;

    use super::server_config;
    use crate::config::Config;
    use crate::link::{Link, LinkError};

    /// The endpoint's socket tells quinn one datagram fits a receive buffer (GRO off,
    /// `gro.rs`), so quinn sizes its buffer for one, not 64.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_counting_socket_reports_one_receive_segment() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let socket = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .expect("bound");
            socket.set_nonblocking(true).expect("nonblocking");
            let stats = std::sync::Arc::new(crate::telemetry::Stats::new(1));
            let counting = super::counting_socket(socket, &[3; crate::keys::RESET_KEY_LEN], stats)
                .expect("counting socket");
            assert_eq!(counting.max_receive_segments(), 1);
        });
    }

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
            let server_config = server_config(&config, &identity).expect("config");
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
