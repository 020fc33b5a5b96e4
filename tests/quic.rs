//! Real QUIC on 127.0.0.1: handshake, every reject path, movement in snapshots, malformed
//! datagrams, requests, second logins and drain.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client_endpoint, client_endpoint_alpn, Player, Raw, Relay, TestServer, WAIT};
use zonehost::config::SecondLogin;
use zonehost::telemetry::{DisconnectCause, DropCause, HandshakeFailure, JunkReason, Stats};
use zonehost_protocol::datagram::{encode_input, InputCmd};
use zonehost_protocol::message::{
    close_code, ClientMsg, Hello, RejectCode, Request, Response, ServerMsg,
};
use zonehost_protocol::{ClientEvent, ClientSession};

async fn expect_reject(raw: &mut Raw) -> RejectCode {
    match raw.next().await {
        Some(ServerMsg::Reject(r)) => {
            assert!(!r.reason.is_empty(), "a reject explains itself");
            assert_eq!(
                raw.closed_code().await,
                Some(u64::from(close_code::REJECTED))
            );
            r.code
        }
        other => panic!("expected Reject, got {other:?}"),
    }
}

/// Waits until `cond` holds, polling; panics after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Player {
    fn send_input(&mut self, cmd: InputCmd) {
        let d = self.session.send_input(cmd, Instant::now()).expect("input");
        self.last_input = Some(d.clone());
        self.raw.send_datagram(d);
    }

    /// Reads snapshots until one satisfies `f` (at most [`WAIT`]); returns its own-entity
    /// x. The last input datagram is sent again every 250 ms meanwhile, as a real client
    /// keeps sending: one lost datagram must not stall the test.
    async fn snapshot_until(&mut self, mut f: impl FnMut(&ClientSession, i32) -> bool) -> i32 {
        let entity = self
            .session
            .welcome()
            .map(|w| w.entity_id)
            .expect("welcomed");
        let deadline = Instant::now() + WAIT;
        let mut resend_at = Instant::now() + Duration::from_millis(250);
        loop {
            let now = Instant::now();
            assert!(
                now < deadline,
                "no snapshot met the condition within {WAIT:?}"
            );
            if now >= resend_at {
                if let Some(d) = self.last_input.clone() {
                    self.raw.send_datagram(d);
                }
                resend_at = now + Duration::from_millis(250);
            }
            let d = self.raw.read_datagram().await;
            self.session
                .handle_datagram(&d, Instant::now())
                .expect("valid snapshot");
            let Some(x) = self.session.view().get(entity).map(|e| e.x_mm) else {
                continue;
            };
            if f(&self.session, x) {
                return x;
            }
        }
    }
}

#[tokio::test]
async fn welcome_and_movement_visible_in_snapshots() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "walker").await;
    let w = p.session.welcome().cloned().expect("welcome");
    assert_eq!(
        (w.tick_rate_hz, w.snapshot_rate_hz, w.max_speed_mms),
        (60, 30, 6000)
    );
    let start_x = p.snapshot_until(|_, _| true).await;
    let mut x = start_x;
    for seq in 1..=30 {
        p.send_input(InputCmd::new(1000, 0, 0));
        x = p.snapshot_until(|s, _| s.highest_acked() >= seq).await;
    }
    assert_eq!(x - start_x, 30 * 100, "30 full-speed inputs move 3000 mm");
    let mut acked = 0;
    while let Some(ev) = p.session.poll_event() {
        if let ClientEvent::InputAcked { latency, .. } = ev {
            assert!(
                latency < Duration::from_millis(250),
                "input acked after {latency:?}"
            );
            acked += 1;
        }
    }
    assert_eq!(acked, 30);
    assert_eq!(
        server.server.stats.sessions_active.load(Ordering::Relaxed),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn ping_request_is_answered() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "pinger").await;
    let (id, frame) = p
        .session
        .request(Request::Ping { client_time_us: 7 }, Instant::now())
        .expect("request");
    p.raw.send_raw(&frame).await;
    // Events (the new character's starter-kit `Granted`) may come before the answer.
    let mut answer = p.raw.next().await;
    while let Some(ServerMsg::Event(_)) = answer {
        answer = p.raw.next().await;
    }
    match answer {
        Some(ServerMsg::Response {
            id: rid,
            body: Ok(Response::Pong {
                client_time_us: 7, ..
            }),
        }) => assert_eq!(rid, id),
        other => panic!("expected Pong, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn every_reject_path() {
    let server = TestServer::start(|c| c.hello_timeout_ms = 500).await;
    let endpoint = client_endpoint(&server);

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.hello("not-a-token").await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::InvalidToken);

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.hello(&server.token_with("old", |c| {
        c.issued_at -= 7200;
        c.expires_at = c.issued_at + 60;
    }))
    .await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::TokenExpired);

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.hello(&server.token_with("elsewhere", |c| c.audience = "prod".into()))
        .await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::WrongAudience);

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.hello(&server.token_with("rotated", |c| c.key_id = 77))
        .await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::InvalidToken);

    let forged = {
        let other = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let now = common::unix_now();
        zonehost_protocol::token::sign(
            &zonehost_protocol::token::Claims {
                version: 1,
                player: "mallory".into(),
                audience: "dev".into(),
                issued_at: now,
                expires_at: now + 60,
                nonce: [1; 16],
                key_id: 0,
            },
            &other,
        )
    };
    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.hello(&forged).await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::InvalidToken);

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.send_msg(&ClientMsg::Hello(Hello {
        version: 9,
        token: server.token("future"),
        client: "t".into(),
    }))
    .await;
    assert_eq!(
        expect_reject(&mut raw).await,
        RejectCode::UnsupportedVersion
    );

    // A protocol-1 client (ALPN zonehost/1, Hello version 1) completes the handshake and
    // is told why it cannot play, instead of failing TLS (SPEC §1.3).
    let v1 = client_endpoint_alpn(&server, zonehost_protocol::ALPN_V1);
    let mut raw = Raw::connect(&v1, &server).await;
    raw.send_msg(&ClientMsg::Hello(Hello {
        version: 1,
        token: server.token("old-client"),
        client: "v1".into(),
    }))
    .await;
    assert_eq!(
        expect_reject(&mut raw).await,
        RejectCode::UnsupportedVersion
    );

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.send_msg(&ClientMsg::Request {
        id: 1,
        body: Request::Ping { client_time_us: 0 },
    })
    .await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::ProtocolViolation);

    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.send_raw(&u32::MAX.to_le_bytes()).await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::ProtocolViolation);

    // No control stream at all: closed after the hello timeout.
    let conn = endpoint
        .connect(server.addr(), "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(close_code::REJECTED))
        }
        other => panic!("expected an application close, got {other}"),
    }

    // Second login of a live player.
    let _first = Player::join(&endpoint, &server, "twice").await;
    let mut raw = Raw::connect(&endpoint, &server).await;
    raw.hello(&server.token("twice")).await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::AlreadyConnected);

    let stats = &server.server.stats;
    assert_eq!(stats.reject_count(RejectCode::InvalidToken), 3);
    assert_eq!(stats.reject_count(RejectCode::TokenExpired), 1);
    assert_eq!(stats.reject_count(RejectCode::WrongAudience), 1);
    assert_eq!(stats.reject_count(RejectCode::UnsupportedVersion), 2);
    assert_eq!(stats.reject_count(RejectCode::ProtocolViolation), 2);
    assert_eq!(stats.reject_count(RejectCode::AlreadyConnected), 1);
    eventually("hello timeout counted", || {
        stats.reject_count(RejectCode::HelloTimeout) == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_alpn_fails_the_handshake() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint_alpn(&server, b"h3");
    let result = endpoint
        .connect(server.addr(), "localhost")
        .expect("connect")
        .await;
    assert!(
        result.is_err(),
        "a client without the zonehost ALPN must not connect"
    );
    server.stop().await;
}

/// A client that cannot finish the handshake (wrong ALPN) is counted as a failed handshake.
#[tokio::test]
async fn failed_handshakes_are_counted() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint_alpn(&server, b"h3");
    for _ in 0..2 {
        let result = endpoint
            .connect(server.addr(), "localhost")
            .expect("connect")
            .await;
        assert!(result.is_err());
    }
    let stats = &server.server.stats;
    eventually("two failed handshakes counted", || {
        Stats::get(&stats.handshakes_failed[HandshakeFailure::Error as usize]) == 2
    })
    .await;
    assert_eq!(
        Stats::get(&stats.handshakes_failed[HandshakeFailure::Timeout as usize]),
        0
    );
    server.stop().await;
}

/// UDP datagrams that are not QUIC for this server are counted by reason; a real session's
/// datagrams (handshake, streams, inputs) are counted as received and never as junk.
#[tokio::test]
async fn junk_udp_is_counted_by_reason_and_quic_is_not() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "honest").await;
    for _ in 0..5 {
        p.send_input(InputCmd::new(0, 1000, 0));
    }
    p.snapshot_until(|s, _| s.highest_acked() >= 5).await;
    let stats = &server.server.stats;
    let junk = |r: JunkReason| Stats::get(&stats.udp_junk[r as usize]);
    assert!(Stats::get(&stats.udp_datagrams_in) > 5);
    for r in JunkReason::ALL {
        assert_eq!(
            junk(*r),
            0,
            "a real session's datagrams are not junk ({r:?})"
        );
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Too short to be QUIC.
    socket.send_to(&[0x40, 1, 2], server.addr()).expect("send");
    // A long header with a version nobody speaks (1200 B, like an Initial).
    let mut vn = vec![0xc0, 0x0a, 0x1a, 0x2a, 0x3a, 8];
    vn.resize(1200, 7);
    socket.send_to(&vn, server.addr()).expect("send");
    // Short headers with connection ids this server never issued.
    for i in 0..3u8 {
        socket
            .send_to(
                &[0x41, i, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0],
                server.addr(),
            )
            .expect("send");
    }
    eventually("junk counted by reason", || {
        junk(JunkReason::NotQuic) == 1
            && junk(JunkReason::UnsupportedVersion) == 1
            && junk(JunkReason::UnknownConnection) == 3
    })
    .await;
    // The session still plays.
    p.send_input(InputCmd::new(0, 1000, 0));
    p.snapshot_until(|s, _| s.highest_acked() >= 6).await;
    server.stop().await;
}

#[tokio::test]
async fn second_login_takes_over_when_configured() {
    let server = TestServer::start(|c| c.second_login = SecondLogin::TakeOver).await;
    let endpoint = client_endpoint(&server);
    let first = Player::join(&endpoint, &server, "mover").await;
    let _second = Player::join(&endpoint, &server, "mover").await;
    assert_eq!(
        first.raw.closed_code().await,
        Some(u64::from(close_code::TAKEN_OVER))
    );
    let stats = &server.server.stats;
    eventually("take-over counted", || {
        stats.disconnect_count(DisconnectCause::TakenOver) == 1
    })
    .await;
    eventually("one live session", || {
        stats.sessions_active.load(Ordering::Relaxed) == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_datagrams_are_dropped_counted_and_harmless() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "fuzzy").await;
    let mut bad: Vec<Bytes> = vec![
        Bytes::from_static(&[]),
        Bytes::from_static(&[1]),
        Bytes::from_static(&[9, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Bytes::from_static(&[1, 2, 0, 0]),
        Bytes::from(vec![0xff; 1000]),
    ];
    let mut truncated = encode_input(5, 0, &[InputCmd::new(1, 1, 0)]).to_vec();
    truncated.pop();
    bad.push(Bytes::from(truncated));
    let mut lying = encode_input(5, 0, &[InputCmd::new(1, 1, 0)]).to_vec();
    lying[2] = 8;
    bad.push(Bytes::from(lying));
    let n = bad.len() as u64;
    for b in bad {
        p.raw.send_datagram(b);
    }
    let stats = &server.server.stats;
    eventually("malformed datagrams counted", || {
        stats.dropped_count(DropCause::Malformed) == n
    })
    .await;
    for _ in 0..5 {
        p.send_input(InputCmd::new(0, 1000, 0));
    }
    p.snapshot_until(|s, _| s.highest_acked() >= 5).await;
    assert_eq!(Stats::get(&stats.inputs_queued), 5);
    assert_eq!(
        stats.sessions_active.load(Ordering::Relaxed),
        1,
        "the session survived"
    );
    server.stop().await;
}

#[tokio::test]
async fn drain_sends_goaway_and_stops() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "leaver").await;
    let mut server = server;
    if let Some(tx) = server.shutdown.take() {
        let _ = tx.send(());
    }
    // Events queued before the drain (the starter kit's `Granted`, sent once the store
    // committed it) may still come first.
    loop {
        match p.raw.next().await {
            Some(ServerMsg::Goaway(g)) => {
                assert_eq!(g.reconnect_after_ms, 2000);
                break;
            }
            Some(ServerMsg::Event(_)) => {}
            other => panic!("expected Goaway, got {other:?}"),
        }
    }
    assert_eq!(
        p.raw.closed_code().await,
        Some(u64::from(close_code::SHUTDOWN))
    );
    assert!(server.server.is_draining());
    let stats = server.server.stats.clone();
    tokio::time::timeout(WAIT, server.server.wait())
        .await
        .expect("drained in time");
    assert_eq!(stats.disconnect_count(DisconnectCause::Shutdown), 1);
    assert_eq!(stats.sessions_active.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn replayed_token_is_refused() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let token = server.token("once");
    let mut first = Raw::connect(&endpoint, &server).await;
    first.hello(&token).await;
    assert!(matches!(first.next().await, Some(ServerMsg::Welcome(_))));
    first.conn.close(0u32.into(), b"bye");
    let stats = server.server.stats.clone();
    eventually("first session ended", || {
        stats.sessions_active.load(Ordering::Relaxed) == 0
    })
    .await;
    let mut again = Raw::connect(&endpoint, &server).await;
    again.hello(&token).await;
    assert_eq!(expect_reject(&mut again).await, RejectCode::TokenReplayed);
    server.stop().await;
}

#[tokio::test]
async fn datagram_flood_is_rate_limited_then_closed_for_abuse() {
    let server = TestServer::start(|c| {
        c.datagram_rate = 60;
        c.datagram_burst = 60;
        c.max_violations = 50;
    })
    .await;
    let endpoint = client_endpoint(&server);
    let flooder = Player::join(&endpoint, &server, "flooder").await;
    let mut bystander = Player::join(&endpoint, &server, "bystander").await;
    for i in 0..400u32 {
        let _ = flooder
            .raw
            .conn
            .send_datagram(encode_input(i + 1, 0, &[InputCmd::new(0, 0, 0)]));
    }
    assert_eq!(
        flooder.raw.closed_code().await,
        Some(u64::from(close_code::ABUSE))
    );
    let stats = &server.server.stats;
    assert!(stats.dropped_count(DropCause::RateLimited) > 50);
    eventually("abuse counted", || {
        stats.disconnect_count(DisconnectCause::Abuse) == 1
    })
    .await;
    bystander.send_input(InputCmd::new(1000, 0, 0));
    bystander
        .snapshot_until(|s, _| s.highest_acked() >= 1)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn lost_connection_resumes_with_its_resume_token() {
    let server = TestServer::start(|c| c.idle_timeout_ms = 1000).await;
    let endpoint = client_endpoint(&server);
    let relay = Relay::start(server.addr()).await;
    let mut p = Player::join_with(&endpoint, relay.addr, server.token("roamer")).await;
    let welcome = p.session.welcome().cloned().expect("welcome");
    for seq in 1..=10 {
        p.send_input(InputCmd::new(1000, 0, 0));
        p.snapshot_until(|s, _| s.highest_acked() >= seq).await;
    }
    relay.cut();
    let stats = server.server.stats.clone();
    eventually("session detached", || {
        stats.sessions_detached.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(stats.sessions_active.load(Ordering::Relaxed), 0);

    let mut back = Player::join_with(&endpoint, server.addr(), welcome.resume_token.clone()).await;
    let resumed = back.session.welcome().cloned().expect("welcome");
    assert_eq!(
        (resumed.entity_id, resumed.instance, resumed.player_id),
        (welcome.entity_id, welcome.instance, welcome.player_id)
    );
    assert_ne!(
        resumed.resume_token, welcome.resume_token,
        "each welcome carries a fresh resume token"
    );
    let x = back.snapshot_until(|_, _| true).await;
    assert_eq!(x, 20_000 + 10 * 100, "position kept across the resume");
    assert_eq!(
        resumed.last_input, 10,
        "the server tells where the input sequence stands"
    );
    assert_eq!(
        back.session.next_input_seq(),
        11,
        "the resumed client continues after it"
    );
    back.send_input(InputCmd::new(1000, 0, 0));
    let x = back.snapshot_until(|s, _| s.highest_acked() >= 11).await;
    assert_eq!(x, 20_000 + 11 * 100, "inputs after the resume are applied");
    assert_eq!(stats.sessions_detached.load(Ordering::Relaxed), 0);
    assert_eq!(stats.sessions_active.load(Ordering::Relaxed), 1);

    // A resume token is single use.
    let mut again = Raw::connect(&endpoint, &server).await;
    again.hello(&welcome.resume_token).await;
    assert_eq!(expect_reject(&mut again).await, RejectCode::TokenReplayed);
    server.stop().await;
}

#[tokio::test]
async fn detached_session_closes_after_the_grace_period() {
    let server = TestServer::start(|c| {
        c.idle_timeout_ms = 1000;
        c.resume_grace_ms = 300;
    })
    .await;
    let endpoint = client_endpoint(&server);
    let relay = Relay::start(server.addr()).await;
    let p = Player::join_with(&endpoint, relay.addr, server.token("gone")).await;
    let token = p
        .session
        .welcome()
        .map(|w| w.resume_token.clone())
        .expect("welcome");
    relay.cut();
    let stats = server.server.stats.clone();
    eventually("session detached", || {
        stats.sessions_detached.load(Ordering::Relaxed) == 1
    })
    .await;
    eventually("session closed", || {
        stats.sessions_detached.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(stats.instances_live.load(Ordering::Relaxed), 0);
    let mut late = Raw::connect(&endpoint, &server).await;
    late.hello(&token).await;
    assert_eq!(expect_reject(&mut late).await, RejectCode::SessionExpired);
    // The player may log in afresh.
    let _fresh = Player::join(&endpoint, &server, "gone").await;
    server.stop().await;
}

#[tokio::test]
async fn connection_survives_a_client_address_change() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "migrant").await;
    p.send_input(InputCmd::new(1000, 0, 0));
    p.snapshot_until(|s, _| s.highest_acked() >= 1).await;
    let before = endpoint.local_addr().expect("addr");
    endpoint
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").expect("new socket"))
        .expect("rebind");
    assert_ne!(endpoint.local_addr().expect("addr"), before);
    for seq in 2..=10 {
        p.send_input(InputCmd::new(1000, 0, 0));
        p.snapshot_until(|s, _| s.highest_acked() >= seq).await;
    }
    let stats = &server.server.stats;
    assert_eq!(stats.sessions_active.load(Ordering::Relaxed), 1);
    assert_eq!(
        DisconnectCause::ALL
            .iter()
            .map(|c| stats.disconnect_count(*c))
            .sum::<u64>(),
        0
    );
    server.stop().await;
}

/// Waits (pumping `bot`) until it has received a party event matching `f`.
async fn party_event(
    bot: &mut common::bot::Bot,
    mut f: impl FnMut(&zonehost_protocol::message::PartyEvent) -> bool,
) {
    use zonehost_protocol::message::Event;
    let deadline = Instant::now() + WAIT;
    loop {
        let found = bot
            .events
            .iter()
            .position(|e| matches!(e, Event::Party(p) if f(p)));
        if let Some(i) = found {
            bot.events.remove(i);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no such party event",
            bot.name
        );
        bot.pump().await.expect("connection alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_members_on_different_sim_workers_share_the_leaders_instance() {
    use common::bot::Bot;
    use zonehost_protocol::message::{Event, PartyEvent};

    let server = TestServer::start(|c| c.sim_workers = 2).await;
    let endpoint = client_endpoint(&server);
    let workers = &server.server.stats.workers;
    let players = |i: usize| workers[i].players.load(Ordering::Relaxed);
    // One after the other: each login goes to the least-loaded worker.
    let mut leader = Bot::connect(&endpoint, server.addr(), &server.token("lead"), "lead")
        .await
        .expect("leader joins");
    eventually("the leader is counted on a worker", || {
        players(0) + players(1) == 1
    })
    .await;
    let mut member = Bot::connect(&endpoint, server.addr(), &server.token("memb"), "memb")
        .await
        .expect("member joins");
    eventually("one player on each worker", || {
        players(0) == 1 && players(1) == 1
    })
    .await;
    assert_ne!(
        leader.instance, member.instance,
        "solo players: own instances"
    );
    let bag_before = member.inventory().await;

    let invite = Request::PartyInvite {
        player: "memb".into(),
    };
    assert_eq!(leader.request(invite).await, Ok(Response::Done));
    party_event(
        &mut member,
        |e| matches!(e, PartyEvent::Invited { by } if by == "lead"),
    )
    .await;
    assert_eq!(
        member.request(Request::PartyAccept).await,
        Ok(Response::Done)
    );
    // The member is handed to the leader's worker and enters the leader's instance.
    let deadline = Instant::now() + WAIT;
    while member.instance != leader.instance {
        assert!(
            Instant::now() < deadline,
            "member never entered the leader's instance {} (is in {})",
            leader.instance,
            member.instance
        );
        member.pump().await.expect("connection alive");
    }
    assert!(member.events.iter().any(|e| matches!(
        e,
        Event::ZoneEntered { instance, .. } if *instance == leader.instance
    )));
    assert_eq!(Stats::get(&server.server.stats.sim_migrations), 1);
    eventually("both players on one worker", || {
        (players(0), players(1)) == (2, 0) || (players(0), players(1)) == (0, 2)
    })
    .await;
    // Requests reach the member on its new worker; its inventory came along unchanged.
    assert_eq!(member.inventory().await, bag_before);
    // Both see each other in the shared instance's snapshots.
    let (leader_entity, member_entity) = (leader.entity, member.entity);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no snapshot shows both players");
        let next = tokio::time::timeout(WAIT, leader.client.next_event())
            .await
            .expect("traffic in time")
            .expect("connection alive");
        if let zonehost_client::Incoming::Snapshot(info, datagram) = &next {
            if !info.stale && !info.other_instance {
                let _ = datagram;
                let ids: Vec<u32> = leader.client.view().iter().map(|e| e.id).collect();
                if ids.contains(&leader_entity) && ids.contains(&member_entity) {
                    break;
                }
            }
        }
        leader.handle(next);
    }
    server.stop().await;
}

// ---- Issue 16: SPEC.md and the server agree on every edge ----

/// Reads server messages until `f` has seen what it wants (returns true); panics when
/// `within` runs out first (a server that waits for more client data fails here).
async fn read_until(raw: &mut Raw, within: Duration, mut f: impl FnMut(&ServerMsg) -> bool) {
    let done = tokio::time::timeout(within, async {
        loop {
            match raw.next().await {
                Some(m) if f(&m) => return,
                Some(_) => {}
                None => panic!("the control stream ended"),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no answer within {within:?}");
}

fn ping_frame(id: u32) -> Vec<u8> {
    zonehost_protocol::frame::encode_frame(&ClientMsg::Request {
        id,
        body: Request::Ping {
            client_time_us: u64::from(id),
        },
    })
    .expect("encode")
    .to_vec()
}

/// Issue 16 (1): frames that arrive in one chunk are all handled at once: requests
/// pipelined behind `Hello` in the same write, and several requests in one write after
/// `Welcome`, each get their `Response` without the client sending anything else.
#[tokio::test]
async fn frames_packed_in_one_chunk_are_all_answered_at_once() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut raw = Raw::connect(&endpoint, &server).await;
    let mut wire = zonehost_protocol::frame::encode_frame(&ClientMsg::Hello(Hello {
        version: u16::from(zonehost_protocol::PROTOCOL_VERSION),
        token: server.token("piper"),
        client: "test".into(),
    }))
    .expect("encode")
    .to_vec();
    wire.extend(ping_frame(1));
    wire.extend(ping_frame(2));
    raw.send_raw(&wire).await;
    let mut welcomed = false;
    let mut answered = Vec::new();
    read_until(&mut raw, Duration::from_secs(2), |m| {
        match m {
            ServerMsg::Welcome(_) => welcomed = true,
            ServerMsg::Response { id, body } => {
                assert!(welcomed, "a response before the Welcome");
                assert!(matches!(body, Ok(Response::Pong { .. })), "{body:?}");
                answered.push(*id);
            }
            _ => {}
        }
        answered.len() == 2
    })
    .await;
    assert_eq!(answered, [1, 2]);
    let mut wire = Vec::new();
    for id in 3..=5 {
        wire.extend(ping_frame(id));
    }
    raw.send_raw(&wire).await;
    let mut answered = Vec::new();
    read_until(&mut raw, Duration::from_secs(2), |m| {
        if let ServerMsg::Response { id, .. } = m {
            answered.push(*id);
        }
        answered.len() == 3
    })
    .await;
    assert_eq!(answered, [3, 4, 5]);
    server.stop().await;
}

/// Issue 16 (2): the server does not read datagrams before `Welcome` (SPEC §2.1): inputs
/// sent before it never move the player and are counted as `not_welcomed`.
#[tokio::test]
async fn inputs_sent_before_welcome_are_dropped_and_counted() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut raw = Raw::connect(&endpoint, &server).await;
    let mut session = ClientSession::new(server.token("eager"), "test");
    raw.send_raw(&session.hello().expect("hello")).await;
    for seq in 1..=6u32 {
        let cmds = vec![InputCmd::new(1000, 0, 0); seq.min(8) as usize];
        raw.send_datagram(encode_input(seq, 0, &cmds));
    }
    while session.welcome().is_none() {
        let chunk = tokio::time::timeout(WAIT, raw.recv.read_chunk(4096, true))
            .await
            .expect("welcome in time")
            .expect("read")
            .expect("stream open");
        session
            .handle_stream_data(&chunk.bytes, Instant::now())
            .expect("valid frames");
    }
    let stats = &server.server.stats;
    eventually("six datagrams dropped as not welcomed", || {
        stats.dropped_count(DropCause::NotWelcomed) == 6
    })
    .await;
    let mut p = Player {
        raw,
        session,
        last_input: None,
    };
    // A few snapshots later nothing was applied: the ack is 0 and the player stands still.
    let start_x = p.snapshot_until(|_, _| true).await;
    let mut seen = 0;
    let x = p
        .snapshot_until(|_, _| {
            seen += 1;
            seen == 20
        })
        .await;
    assert_eq!(x, start_x, "an input sent before Welcome moved the player");
    assert_eq!(Stats::get(&stats.inputs_queued), 0);
    // Sequence 1 is still free: the client's first input after Welcome moves it.
    p.send_input(InputCmd::new(1000, 0, 0));
    let x = p.snapshot_until(|s, _| s.highest_acked() >= 1).await;
    assert_eq!(x - start_x, 100);
    server.stop().await;
}

/// Issue 16 (3): a sequence far ahead of what the server applied (here `u32::MAX`) is
/// ignored (SPEC §4.2), so it cannot make every later input count as already applied.
#[tokio::test]
async fn an_input_sequence_far_ahead_is_ignored() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "wrapper").await;
    let start_x = p.snapshot_until(|_, _| true).await;
    p.raw
        .send_datagram(encode_input(u32::MAX, 0, &[InputCmd::new(-1000, 0, 0)]));
    let mut seen = 0;
    let x = p
        .snapshot_until(|_, _| {
            seen += 1;
            seen == 10
        })
        .await;
    assert_eq!(x, start_x, "the out-of-window input moved the player");
    let mut x = start_x;
    for seq in 1..=5 {
        p.send_input(InputCmd::new(1000, 0, 0));
        x = tokio::time::timeout(
            Duration::from_secs(3),
            p.snapshot_until(|s, _| s.highest_acked() >= seq),
        )
        .await
        .expect("inputs after the u32::MAX one are applied");
    }
    assert_eq!(x - start_x, 500);
    server.stop().await;
}

/// Issue 16 (4): when a two-member party ends (leave, kick, the leader leaving), the
/// remaining player is told: `Members` with no members (SPEC §6.4).
#[tokio::test]
async fn the_last_member_of_a_dissolved_party_is_told() {
    use common::bot::Bot;
    use zonehost_protocol::message::PartyEvent;

    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut a = Bot::connect(&endpoint, server.addr(), &server.token("alba"), "alba")
        .await
        .expect("alba joins");
    let mut b = Bot::connect(&endpoint, server.addr(), &server.token("bram"), "bram")
        .await
        .expect("bram joins");
    async fn form(leader: &mut Bot, member: &mut Bot) {
        let invite = Request::PartyInvite {
            player: member.name.clone(),
        };
        assert_eq!(leader.request(invite).await, Ok(Response::Done));
        party_event(member, |e| matches!(e, PartyEvent::Invited { .. })).await;
        assert_eq!(
            member.request(Request::PartyAccept).await,
            Ok(Response::Done)
        );
        for bot in [leader, member] {
            party_event(
                bot,
                |e| matches!(e, PartyEvent::Members { members, .. } if members.len() == 2),
            )
            .await;
        }
    }
    let dissolved =
        |e: &PartyEvent| matches!(e, PartyEvent::Members { members, .. } if members.is_empty());
    // The member leaves: the leader is told.
    form(&mut a, &mut b).await;
    assert_eq!(b.request(Request::PartyLeave).await, Ok(Response::Done));
    party_event(&mut b, |e| matches!(e, PartyEvent::Left { kicked: false })).await;
    party_event(&mut a, dissolved).await;
    // The leader kicks the member: the leader is told.
    form(&mut a, &mut b).await;
    let kick = Request::PartyKick {
        player: "bram".into(),
    };
    assert_eq!(a.request(kick).await, Ok(Response::Done));
    party_event(&mut b, |e| matches!(e, PartyEvent::Left { kicked: true })).await;
    party_event(&mut a, dissolved).await;
    // The leader leaves: the member is told.
    form(&mut a, &mut b).await;
    assert_eq!(a.request(Request::PartyLeave).await, Ok(Response::Done));
    party_event(&mut a, |e| matches!(e, PartyEvent::Left { kicked: false })).await;
    party_event(&mut b, dissolved).await;
    server.stop().await;
}

/// Issue 16 (5): a token over `MAX_TOKEN_LEN` is refused as `InvalidToken`, as SPEC §3.4
/// rule 1 says (not as a protocol violation).
#[tokio::test]
async fn an_oversized_token_is_an_invalid_token() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut raw = Raw::connect(&endpoint, &server).await;
    // Encoded by hand: `encode_frame` itself refuses the over-long token.
    let hello = ClientMsg::Hello(Hello {
        version: 1,
        token: "A".repeat(zonehost_protocol::message::MAX_TOKEN_LEN + 1),
        client: "test".into(),
    });
    let payload = postcard::to_allocvec(&hello).expect("postcard");
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&payload);
    raw.send_raw(&frame).await;
    assert_eq!(expect_reject(&mut raw).await, RejectCode::InvalidToken);
    server.stop().await;
}

/// Issue 16 (5): a frame cut short by the client's FIN ends the session as a protocol
/// violation (SPEC §2.4), not as a normal goodbye.
#[tokio::test]
async fn a_truncated_frame_before_fin_is_a_protocol_violation() {
    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut p = Player::join(&endpoint, &server, "cutter").await;
    let frame = ping_frame(1);
    p.raw.send_raw(&frame[..frame.len() - 1]).await;
    p.raw.send.finish().expect("finish");
    assert_eq!(
        p.raw.closed_code().await,
        Some(u64::from(close_code::PROTOCOL_VIOLATION))
    );
    let stats = &server.server.stats;
    eventually("the violation counted", || {
        stats.disconnect_count(DisconnectCause::ProtocolViolation) == 1
    })
    .await;
    server.stop().await;
}

/// Issue 16 (5): the zone's layout reaches the client: `GetZone` answers the bounds,
/// walls and portals of the zone the player is in (SPEC §6.2), so a client can walk into
/// a portal (portals move a player on contact, game/RULES.md) without guessing.
#[tokio::test]
async fn get_zone_tells_where_the_portals_are() {
    use common::bot::Bot;
    use zonehost_protocol::message::ZoneRect;

    let server = TestServer::start(|_| {}).await;
    let endpoint = client_endpoint(&server);
    let mut bot = Bot::connect(&endpoint, server.addr(), &server.token("mapper"), "mapper")
        .await
        .expect("joins");
    let zone = match bot.request(Request::GetZone).await {
        Ok(Response::Zone(z)) => z,
        other => panic!("expected Zone, got {other:?}"),
    };
    assert_eq!(zone.zone, bot.client.welcome().zone);
    assert_eq!(
        (zone.name.as_str(), zone.width_mm, zone.town),
        ("Emberhold", 40_000, true)
    );
    let east = zone
        .portals
        .iter()
        .find(|p| p.target == 2)
        .expect("the town's portal to zone 2");
    assert_eq!(
        east.area,
        ZoneRect {
            x0: 38_000,
            y0: 18_000,
            x1: 40_000,
            y1: 22_000
        }
    );
    server.stop().await;
}
