//! A raw QUIC test client: it can send anything, valid or not, so tests can play both a
//! well-behaved client and a hostile one against a real server on 127.0.0.1.

#![allow(dead_code, unreachable_pub)]

pub mod bot;
pub mod cql;
pub mod faulty;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::oneshot;
use zonehost::config::Config;
use zonehost::Server;
use zonehost_protocol::frame::{encode_frame, FrameDecoder};
use zonehost_protocol::message::{ClientMsg, Hello, ServerMsg};
use zonehost_protocol::token::{sign, Claims, CLAIMS_VERSION};

/// Bound for every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 with a fresh data directory, and the trigger that drains it.
pub struct TestServer {
    pub server: Server,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub data_dir: std::path::PathBuf,
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(temp_data_dir("test"), tweak).await
    }

    /// A server on an existing (or new) data directory: a restart keeps its store.
    pub async fn start_in(data_dir: std::path::PathBuf, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.clone(),
            metrics_listen: None,
            ..Config::default()
        };
        tweak(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let server = zonehost::start(config, async move {
            let _ = rx.await;
        })
        .await
        .expect("server starts");
        Self {
            server,
            shutdown: Some(tx),
            data_dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    /// A token for `player`, valid now, signed with the server's dev key.
    pub fn token(&self, player: &str) -> String {
        self.token_with(player, |_| {})
    }

    pub fn token_with(&self, player: &str, tweak: impl FnOnce(&mut Claims)) -> String {
        let now = unix_now();
        let mut claims = Claims {
            version: CLAIMS_VERSION,
            player: player.into(),
            audience: "dev".into(),
            issued_at: now,
            expires_at: now + 600,
            nonce: unique_nonce(),
            key_id: 0,
        };
        tweak(&mut claims);
        sign(
            &claims,
            self.server
                .dev_signing_key
                .as_ref()
                .expect("dev key enabled"),
        )
    }

    /// Drains the server and waits for it to stop.
    pub async fn stop(self) {
        let dir = self.stop_keeping_data().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Drains the server, waits for it to stop (its store closed) and returns its data
    /// directory, kept for a restart.
    pub async fn stop_keeping_data(mut self) -> std::path::PathBuf {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(WAIT, self.server.wait())
            .await
            .expect("server drains in time");
        self.data_dir
    }
}

/// A fresh, not yet existing directory under the system temp dir.
pub fn temp_data_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "zonehost-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ))
}

/// A token for `player`, valid for 10 minutes, signed with `key` (the dev key id).
pub fn mint_token(key: &ed25519_dalek::SigningKey, player: &str) -> String {
    let now = unix_now();
    sign(
        &Claims {
            version: CLAIMS_VERSION,
            player: player.into(),
            audience: "dev".into(),
            issued_at: now,
            expires_at: now + 600,
            nonce: unique_nonce(),
            key_id: 0,
        },
        key,
    )
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A nonce no other token of this process has.
pub fn unique_nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&rand_suffix().to_le_bytes());
    n[8..].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
    n
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

/// A client endpoint trusting the test server's certificate.
pub fn client_endpoint(server: &TestServer) -> quinn::Endpoint {
    client_endpoint_alpn(server, zonehost_protocol::ALPN)
}

pub fn client_endpoint_alpn(server: &TestServer, alpn: &[u8]) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server.server.certificate.clone())
        .expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("quic tls");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.datagram_receive_buffer_size(Some(256 << 10));
    config.transport_config(Arc::new(transport));
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

/// A raw connection with its control stream.
pub struct Raw {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub decoder: FrameDecoder,
}

impl Raw {
    pub async fn connect(endpoint: &quinn::Endpoint, server: &TestServer) -> Self {
        Self::connect_to(endpoint, server.addr()).await
    }

    pub async fn connect_to(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Self {
        let conn = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("open control stream");
        Self {
            conn,
            send,
            recv,
            decoder: FrameDecoder::default(),
        }
    }

    pub async fn send_msg(&mut self, msg: &ClientMsg) {
        let frame = encode_frame(msg).expect("encode");
        self.send.write_all(&frame).await.expect("write");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    pub async fn hello(&mut self, token: &str) {
        self.send_msg(&ClientMsg::Hello(Hello {
            version: u16::from(zonehost_protocol::PROTOCOL_VERSION),
            token: token.into(),
            client: "test".into(),
        }))
        .await;
    }

    /// Next server message, or `None` when the stream or connection ended first.
    pub async fn next(&mut self) -> Option<ServerMsg> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.decoder.next_message::<ServerMsg>() {
                    Ok(Some(m)) => return Some(m),
                    Ok(None) => {}
                    Err(_) => return None,
                }
                match self.recv.read_chunk(64 << 10, true).await {
                    Ok(Some(c)) => self.decoder.extend(&c.bytes),
                    _ => return None,
                }
            }
        })
        .await
        .expect("server answered in time")
    }

    pub fn send_datagram(&self, bytes: Bytes) {
        self.conn.send_datagram(bytes).expect("send datagram");
    }

    pub async fn read_datagram(&self) -> Bytes {
        tokio::time::timeout(WAIT, self.conn.read_datagram())
            .await
            .expect("datagram in time")
            .expect("connection alive")
    }

    /// Waits for the connection to close and returns the application close code.
    pub async fn closed_code(&self) -> Option<u64> {
        match tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("closed in time")
        {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

/// A UDP relay between clients and the server on 127.0.0.1, which a test can cut to
/// simulate a lost network path (both ends then see silence, not a close).
pub struct Relay {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(server: SocketAddr) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        back.connect(server).await.expect("connect relay");
        let addr = front.local_addr().expect("relay addr");
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut a = vec![0u8; 65536];
            let mut b = vec![0u8; 65536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => if let Ok((n, from)) = r {
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                    },
                    r = back.recv(&mut b) => if let (Ok(n), Some(to)) = (r, client) {
                        let _ = front.send_to(&b[..n], to).await;
                    },
                }
            }
        });
        Self { addr, task }
    }

    /// Stops relaying: packets in both directions vanish.
    pub fn cut(&self) {
        self.task.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-behaved client: `ClientSession` over a raw connection, welcomed.
pub struct Player {
    pub raw: Raw,
    pub session: zonehost_protocol::ClientSession,
    /// The last input datagram sent (sent again while a test waits for its effect: a
    /// datagram may be lost, and the server ignores a sequence number it has seen).
    pub last_input: Option<Bytes>,
}

impl Player {
    /// Joins as `name` with a fresh dev token.
    pub async fn join(endpoint: &quinn::Endpoint, server: &TestServer, name: &str) -> Self {
        Self::join_with(endpoint, server.addr(), server.token(name)).await
    }

    /// Joins `addr` with `token`; panics unless a `Welcome` arrives within [`WAIT`]
    /// (the `Welcome` event is consumed).
    pub async fn join_with(endpoint: &quinn::Endpoint, addr: SocketAddr, token: String) -> Self {
        use zonehost_protocol::{ClientEvent, ClientSession};
        let mut raw = Raw::connect_to(endpoint, addr).await;
        let mut session = ClientSession::new(token, "test");
        let hello = session.hello().expect("hello");
        raw.send_raw(&hello).await;
        let deadline = std::time::Instant::now() + WAIT;
        while session.welcome().is_none() {
            assert!(std::time::Instant::now() < deadline, "no welcome");
            let chunk = tokio::time::timeout(WAIT, raw.recv.read_chunk(4096, true))
                .await
                .expect("welcome in time")
                .expect("read")
                .expect("stream open");
            session
                .handle_stream_data(&chunk.bytes, std::time::Instant::now())
                .expect("valid frames");
        }
        assert!(matches!(
            session.poll_event(),
            Some(ClientEvent::Welcome(_))
        ));
        Self {
            raw,
            session,
            last_input: None,
        }
    }
}
