//! A tiny in-process zonehost server for tests of the client and the load generator:
//! real QUIC on 127.0.0.1, the real protocol codecs, no game. Shared by
//! `client/tests` and `loadgen/tests` (included with `#[path]`).
//!
//! Behaviour: token `reject` is refused with `InvalidToken`; any other token is welcomed
//! (entity ids 100, 101, ...) and immediately sent a `Notice` event; inputs move the
//! entity by `move / 10` mm per applied input; a 60 Hz snapshot carries the last applied
//! input and the entity; `Ping` is answered; `Bye` closes the connection.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zonehost_protocol::datagram::InputDatagram;
use zonehost_protocol::frame::{encode_frame, FrameDecoder};
use zonehost_protocol::message::{
    close_code, ClientMsg, Event, Reject, RejectCode, Request, RequestError, Response, ServerMsg,
    Welcome,
};
use zonehost_protocol::snapshot::{
    diff, encode_snapshot, kind, Changes, EntityState, PlayerAck, SnapshotMeta,
};

/// Snapshot rate the fake server announces and sends.
pub const SNAPSHOT_HZ: u16 = 60;

/// A running fake server.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub cert: CertificateDer<'static>,
    pub stats: Arc<FakeStats>,
    endpoint: quinn::Endpoint,
}

/// What the fake server saw.
#[derive(Default)]
pub struct FakeStats {
    pub welcomed: AtomicU64,
    pub rejected: AtomicU64,
    pub byes: AtomicU64,
    pub inputs: AtomicU64,
}

impl FakeServer {
    /// Starts listening on 127.0.0.1 with a fresh self-signed certificate.
    pub fn start() -> FakeServer {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
        let cert = key.cert.der().clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
            )
            .expect("server tls");
        tls.alpn_protocols = vec![zonehost_protocol::ALPN.to_vec()];
        let quic =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic server config");
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.datagram_receive_buffer_size(Some(64 * 1024));
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("server endpoint");
        let addr = endpoint.local_addr().expect("addr");
        let stats = Arc::new(FakeStats::default());
        let next_entity = Arc::new(AtomicU32::new(100));
        let ep = endpoint.clone();
        let st = stats.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let st = st.clone();
                let entity = next_entity.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        serve(conn, entity, st).await;
                    }
                });
            }
        });
        FakeServer {
            addr,
            cert,
            stats,
            endpoint,
        }
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"test over");
    }
}

async fn serve(conn: quinn::Connection, entity: u32, stats: Arc<FakeStats>) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut decoder = FrameDecoder::default();
    let hello = loop {
        match decoder.next_message::<ClientMsg>() {
            Ok(Some(ClientMsg::Hello(h))) => break h,
            Ok(Some(_)) | Err(_) => return conn.close(close_code::PROTOCOL_VIOLATION.into(), b""),
            Ok(None) => {}
        }
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(c)) => decoder.extend(&c.bytes),
            _ => return,
        }
    };
    if hello.token == "reject" {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&ServerMsg::Reject(Reject {
            code: RejectCode::InvalidToken,
            reason: "test says no".into(),
        }))
        .expect("encode");
        if send.write_chunk(frame).await.is_ok() && send.finish().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        }
        return conn.close(close_code::REJECTED.into(), b"invalid_token");
    }
    stats.welcomed.fetch_add(1, Ordering::Relaxed);
    let welcome = encode_frame(&ServerMsg::Welcome(Welcome {
        player_id: u64::from(entity),
        entity_id: entity,
        zone: 1,
        instance: 1,
        tick_rate_hz: 60,
        snapshot_rate_hz: SNAPSHOT_HZ,
        server_tick: 0,
        server_time_us: 0,
        max_speed_mms: 6000,
        last_input: 0,
        resume_token: format!("resume-{entity}"),
    }))
    .expect("encode");
    let notice = encode_frame(&ServerMsg::Event(Event::Notice {
        text: "hello from the fake server".into(),
    }))
    .expect("encode");
    // One write, so Welcome and the event may arrive in one chunk.
    let mut both = welcome.to_vec();
    both.extend_from_slice(&notice);
    if send.write_chunk(Bytes::from(both)).await.is_err() {
        return;
    }
    let mut tick = 0u32;
    let mut last_input = 0u32;
    let (mut x, mut y) = (0i32, 0i32);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / u32::from(SNAPSHOT_HZ));
    let mut out = Vec::new();
    let mut changes = Changes::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                tick += 1;
                let acks = [PlayerAck { entity, last_input }];
                let me = EntityState { id: entity, x_mm: x, y_mm: y, hp: 100, max_hp: 100, kind: kind::PLAYER, ..EntityState::default() };
                // Full states only (baseline 0): a fake server need not keep history.
                diff(&[], &[me], &mut changes);
                let meta = SnapshotMeta { tick, baseline: 0, instance: 1, zone: 1 };
                encode_snapshot(meta, &acks, &changes, &mut out).expect("snapshot");
                for d in out.drain(..) {
                    if conn.send_datagram(d).is_err() {
                        return;
                    }
                }
            }
            dg = conn.read_datagram() => {
                let Ok(dg) = dg else { return };
                let Ok(input) = InputDatagram::decode(&dg) else { continue };
                // Apply the commands newer than the last applied, oldest first.
                let mut fresh: Vec<_> = input.iter().filter(|(s, _)| *s > last_input).collect();
                fresh.reverse();
                for (seq, cmd) in fresh {
                    x += i32::from(cmd.move_x.get()) / 10;
                    y += i32::from(cmd.move_y.get()) / 10;
                    last_input = seq;
                    stats.inputs.fetch_add(1, Ordering::Relaxed);
                }
            }
            chunk = recv.read_chunk(usize::MAX, true) => {
                match chunk {
                    Ok(Some(c)) => decoder.extend(&c.bytes),
                    _ => return conn.close(close_code::NORMAL.into(), b"stream finished"),
                }
                while let Ok(Some(msg)) = decoder.next_message::<ClientMsg>() {
                    match msg {
                        ClientMsg::Request { id, body: Request::Ping { client_time_us } } => {
                            let resp = encode_frame(&ServerMsg::Response {
                                id,
                                body: Ok(Response::Pong { client_time_us, server_tick: tick }),
                            })
                            .expect("encode");
                            if send.write_chunk(resp).await.is_err() {
                                return;
                            }
                        }
                        ClientMsg::Request { id, .. } => {
                            let resp = encode_frame(&ServerMsg::Response {
                                id,
                                body: Err(RequestError::NotAllowed),
                            })
                            .expect("encode");
                            if send.write_chunk(resp).await.is_err() {
                                return;
                            }
                        }
                        ClientMsg::Bye => {
                            stats.byes.fetch_add(1, Ordering::Relaxed);
                            return conn.close(close_code::NORMAL.into(), b"bye");
                        }
                        ClientMsg::Hello(_) => {
                            return conn.close(close_code::PROTOCOL_VIOLATION.into(), b"hello twice");
                        }
                    }
                }
            }
        }
    }
}
