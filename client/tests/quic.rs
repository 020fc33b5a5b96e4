//! The client against an in-process fake server over real QUIC on 127.0.0.1.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::fake_server::FakeServer;
use zonehost_client::{Client, ClientError, EndpointBuilder, Incoming, Trust};
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{Event, RejectCode, Request, Response};
use zonehost_protocol::snapshot::decode_snapshot;
use zonehost_protocol::ClientEvent;

fn endpoint(trust: Trust) -> quinn::Endpoint {
    EndpointBuilder::new(trust)
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .socket_buffers(1 << 20, 1 << 20)
        .build()
        .expect("endpoint")
        .endpoint
}

#[tokio::test]
async fn session_end_to_end() {
    let server = FakeServer::start();
    let ep = endpoint(Trust::Certificate(server.cert.clone()));
    let mut client = Client::connect(&ep, server.addr, "localhost", "tok", "test")
        .await
        .expect("connect");
    let entity = client.welcome().entity_id;
    assert_eq!(entity, 100);

    // The event sent with Welcome comes first.
    match client.next_event().await.expect("event") {
        Incoming::Event(ClientEvent::Event(Event::Notice { text })) => {
            assert!(text.contains("fake"))
        }
        other => panic!("expected the notice, got {other:?}"),
    }

    let ping = client
        .request(Request::Ping { client_time_us: 42 })
        .await
        .expect("ping");
    let mut ticker = tokio::time::interval(Duration::from_millis(16));
    let (mut sent, mut acked, mut snapshots, mut pong) = (0u32, Vec::new(), 0, false);
    let mut last_x = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (acked.len() < 30 || !pong) && Instant::now() < deadline {
        tokio::select! {
            _ = ticker.tick() => {
                let seq = client.send_input(InputCmd::new(1000, 0, 0)).expect("input");
                sent += 1;
                assert_eq!(seq, sent);
            }
            incoming = client.next_event() => match incoming.expect("incoming") {
                Incoming::Snapshot(info, bytes) => {
                    snapshots += 1;
                    let (_, body) = decode_snapshot(&bytes).expect("decode");
                    assert_eq!(body.ack_for(entity), info.last_input);
                    if let Some(me) = client.view().iter().find(|e| e.id == entity) {
                        last_x = me.x_mm;
                    }
                }
                Incoming::Event(ClientEvent::InputAcked { seq, latency }) => {
                    assert!(latency < Duration::from_secs(5));
                    acked.push(seq);
                }
                Incoming::Event(ClientEvent::Response { id, body, .. }) => {
                    assert_eq!(id, ping);
                    assert!(matches!(body, Ok(Response::Pong { client_time_us: 42, .. })));
                    pong = true;
                }
                Incoming::Event(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(pong, "ping answered");
    assert!(acked.len() >= 30, "acks: {}", acked.len());
    assert!(
        acked.windows(2).all(|w| w[1] == w[0] + 1),
        "every input acked once, in order"
    );
    assert!(snapshots > 0 && last_x > 0, "moved: x = {last_x}");
    assert_eq!(client.stats().inputs_sent, u64::from(sent));
    assert_eq!(client.stats().bad_datagrams, 0);

    client.close().await.expect("bye");
    let byes = &server.stats.byes;
    let t = Instant::now();
    while byes.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(byes.load(Ordering::Relaxed), 1, "server saw Bye");
    server.stop();
}

#[tokio::test]
async fn rejection_is_typed() {
    let server = FakeServer::start();
    let ep = endpoint(Trust::Certificate(server.cert.clone()));
    match Client::connect(&ep, server.addr, "localhost", "reject", "test").await {
        Err(ClientError::Rejected(r)) => {
            assert_eq!(r.code, RejectCode::InvalidToken);
            assert_eq!(r.reason, "test says no");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    server.stop();
}

#[tokio::test]
async fn pins_decide_trust() {
    let server = FakeServer::start();
    let fp = zonehost_client::trust::fingerprint(&server.cert);
    let good = endpoint(Trust::Fingerprint(fp));
    let client = Client::connect(&good, server.addr, "any-name.example", "tok", "test")
        .await
        .expect("pinned fingerprint connects whatever the name");
    drop(client);

    let wrong = endpoint(Trust::Fingerprint([9; 32]));
    match Client::connect(&wrong, server.addr, "localhost", "tok", "test").await {
        Err(ClientError::Connection(quinn::ConnectionError::TransportError(e))) => {
            assert!(e.to_string().contains("certificate"), "{e}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    server.stop();
}

#[tokio::test]
async fn connect_times_out_against_silence() {
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = silent.local_addr().expect("addr");
    let ep = endpoint(Trust::Fingerprint([0; 32]));
    let t = Instant::now();
    let r = Client::connect_timeout(
        &ep,
        addr,
        "localhost",
        "tok",
        "test",
        Duration::from_millis(300),
    )
    .await;
    assert!(matches!(r, Err(ClientError::Timeout(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
}
