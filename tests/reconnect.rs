//! A server crash costs players seconds, not their session (issue 18):
//! - a restarted server answers the packets of its predecessor's connections with a QUIC
//!   stateless reset (its reset key lives in the data directory), so a client learns of
//!   the crash within a round trip of the restart, not after its idle timeout;
//! - `ReconnectingClient` resumes a session whose path was lost, re-logs in when the
//!   server refuses the resume (a restart after a crash or a drain), and gives up with a
//!   clear error when the server never returns.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve::ServeProcess;
use common::{mint_token, temp_data_dir, TestServer};
use zonehost_client::{
    Client, ClientError, EndpointBuilder, Incoming, ReconnectError, ReconnectPolicy,
    ReconnectingClient, TokenProvider, TransportOptions, Trust, Update,
};
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{Request, Response};
use zonehost_protocol::ClientEvent;

/// Bound of each phase.
const PHASE: Duration = Duration::from_secs(20);

fn endpoint(data_dir: &Path, idle_timeout: Duration) -> quinn::Endpoint {
    EndpointBuilder::new(Trust::certificate_file(data_dir.join("cert.der")).expect("cert"))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .transport(TransportOptions {
            idle_timeout,
            keep_alive: Some(Duration::from_millis(200)),
            ..TransportOptions::default()
        })
        .build()
        .expect("client endpoint")
        .endpoint
}

fn start_serve(name: &str, dir: &Path, listen: &str) -> (ServeProcess, SocketAddr) {
    let proc = ServeProcess::start(
        name,
        [
            "--listen".as_ref(),
            listen.as_ref(),
            "--metrics-listen".as_ref(),
            "off".as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
        ],
        PHASE,
    );
    let addr = proc
        .listening
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {}", proc.listening));
    (proc, addr)
}

/// Tokens minted with the data directory's dev key.
fn dev_tokens(dir: &Path, player: &str) -> Arc<dyn TokenProvider> {
    let key = zonehost::keys::load_or_create_signing_key(dir).expect("dev key");
    let player = player.to_owned();
    Arc::new(move || Ok(mint_token(&key, &player)))
}

/// Drives `client` (an input every 20 ms) until `until` returns true for an update or
/// `bound` passes; returns every update seen.
async fn drive(
    client: &mut ReconnectingClient,
    bound: Duration,
    mut until: impl FnMut(&Update) -> bool,
) -> Result<Vec<Update>, ReconnectError> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("bounded wait passed; seen {seen:?}"),
            _ = ticker.tick() => { client.send_input(InputCmd::new(0, 0, 0))?; }
            update = client.next_event() => {
                let update = update?;
                let done = until(&update);
                if !matches!(update, Update::Incoming(Incoming::Snapshot(..))) {
                    seen.push(update);
                }
                if done {
                    return Ok(seen);
                }
            }
        }
    }
}

fn is_snapshot(u: &Update) -> bool {
    matches!(u, Update::Incoming(Incoming::Snapshot(..)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_restarted_server_resets_old_connections_and_clients_rejoin() {
    let dir = temp_data_dir("reset");
    std::fs::create_dir_all(&dir).expect("data dir");
    let (mut first, addr) = start_serve("the first server", &dir, "127.0.0.1:0");
    let reset_key = std::fs::read(dir.join(zonehost::keys::RESET_KEY_FILE)).expect("reset key");
    assert_eq!(reset_key.len(), zonehost::keys::RESET_KEY_LEN);
    // A long idle timeout: only a reset can end these connections quickly.
    let ep = endpoint(&dir, Duration::from_secs(30));
    let key = zonehost::keys::load_or_create_signing_key(&dir).expect("dev key");
    let mut plain = Client::connect(&ep, addr, "localhost", &mint_token(&key, "plain"), "t")
        .await
        .expect("plain client connects");
    let mut resilient = ReconnectingClient::connect(
        &ep,
        addr,
        "localhost",
        "t",
        dev_tokens(&dir, "resilient"),
        ReconnectPolicy::default(),
    )
    .await
    .expect("resilient client connects");
    drive(&mut resilient, PHASE, is_snapshot)
        .await
        .expect("plays");

    first.kill_9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (second, _) = start_serve("the restarted server", &dir, &addr.to_string());
    let restarted = Instant::now();
    assert_eq!(
        std::fs::read(dir.join(zonehost::keys::RESET_KEY_FILE)).expect("reset key"),
        reset_key,
        "the reset key survives the restart"
    );

    // The plain client keeps sending inputs; its next packet draws a stateless reset.
    let plain_end = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = plain.send_input(InputCmd::new(0, 0, 0)) {
                        return e;
                    }
                }
                r = plain.next_event() => if let Err(e) = r { return e; },
            }
        }
    };
    let error = tokio::time::timeout(PHASE, plain_end)
        .await
        .expect("the dead connection ends");
    let detected = restarted.elapsed();
    eprintln!("stateless reset noticed {detected:?} after the restart");
    assert!(
        matches!(
            &error,
            ClientError::Connection(quinn::ConnectionError::Reset)
                | ClientError::Read(quinn::ReadError::ConnectionLost(
                    quinn::ConnectionError::Reset
                ))
                | ClientError::Datagram(quinn::SendDatagramError::ConnectionLost(
                    quinn::ConnectionError::Reset
                ))
        ),
        "ended by a stateless reset, not {error:?}"
    );
    assert!(
        detected < Duration::from_secs(1),
        "reset noticed {detected:?} after the restart"
    );

    // The reconnecting client: reset, resume refused by the new run, fresh login, play.
    let mut rejoined = None;
    let updates = drive(&mut resilient, PHASE, |u| {
        if let Update::Rejoined { .. } = u {
            rejoined = Some(Instant::now());
        }
        rejoined.is_some() && is_snapshot(u)
    })
    .await
    .expect("comes back");
    let back_in_play = restarted.elapsed();
    eprintln!("rejoined and in play {back_in_play:?} after the restart");
    assert!(
        updates
            .iter()
            .any(|u| matches!(u, Update::Reconnecting { attempt: 1, .. })),
        "{updates:?}"
    );
    assert!(
        !updates.iter().any(|u| matches!(u, Update::Resumed { .. })),
        "a restarted server cannot resume: {updates:?}"
    );
    assert!(
        back_in_play < Duration::from_secs(3),
        "in play again {back_in_play:?} after the restart"
    );
    let stats = resilient.stats();
    assert_eq!((stats.losses, stats.rejoined, stats.resumed), (1, 1, 0));
    let _ = resilient.close().await;
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP relay that can be paused (packets dropped both ways) and resumed.
struct PausableRelay {
    addr: SocketAddr,
    paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PausableRelay {
    async fn start(server: SocketAddr) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        back.connect(server).await.expect("connect");
        let addr = front.local_addr().expect("addr");
        let paused = Arc::new(AtomicBool::new(false));
        let p = paused.clone();
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => if let Ok((n, from)) = r {
                        client = Some(from);
                        if !p.load(Ordering::Relaxed) { let _ = back.send(&a[..n]).await; }
                    },
                    r = back.recv(&mut b) => if let (Ok(n), Some(to)) = (r, client) {
                        if !p.load(Ordering::Relaxed) { let _ = front.send_to(&b[..n], to).await; }
                    },
                }
            }
        });
        Self { addr, paused, task }
    }
}

impl Drop for PausableRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_path_resumes_the_same_session() {
    let server = TestServer::start(|c| c.idle_timeout_ms = 1000).await;
    let relay = PausableRelay::start(server.addr()).await;
    let ep = endpoint(&server.data_dir, Duration::from_secs(1));
    let mut client = ReconnectingClient::connect(
        &ep,
        relay.addr,
        "localhost",
        "t",
        dev_tokens(&server.data_dir, "roamer"),
        ReconnectPolicy::default(),
    )
    .await
    .expect("connects");
    let first = client.client().expect("connected").welcome().clone();
    drive(&mut client, PHASE, is_snapshot).await.expect("plays");
    // A snapshot rate is granted per connection: the client asks again after the resume.
    let rate = |u: &Update| {
        matches!(
            u,
            Update::Incoming(Incoming::Event(ClientEvent::Response {
                body: Ok(Response::SnapshotRate { hz: 10 }),
                ..
            }))
        )
    };
    client
        .request(Request::SnapshotRate { hz: 10 })
        .await
        .expect("asked");
    drive(&mut client, PHASE, rate).await.expect("granted");

    relay.paused.store(true, Ordering::Relaxed);
    let paused_at = Instant::now();
    let mut resumed = None;
    let updates = drive(&mut client, PHASE, |u| {
        if let Update::Reconnecting { attempt: 2, .. } = u {
            // Lost and one attempt failed: give the path back.
            relay.paused.store(false, Ordering::Relaxed);
        }
        if let Update::Resumed { welcome, .. } = u {
            resumed = Some(welcome.clone());
        }
        resumed.is_some() && is_snapshot(u)
    })
    .await
    .expect("resumes");
    let welcome = resumed.expect("resumed");
    assert_eq!(
        (welcome.player_id, welcome.entity_id, welcome.instance),
        (first.player_id, first.entity_id, first.instance),
        "the same session: {updates:?}"
    );
    assert!(paused_at.elapsed() < PHASE);
    // The resync request was answered with the inventory (perhaps before that snapshot).
    let inventory = |u: &Update| {
        matches!(
            u,
            Update::Incoming(Incoming::Event(ClientEvent::Response {
                body: Ok(Response::Inventory(_)),
                ..
            }))
        )
    };
    if !updates.iter().any(inventory) {
        drive(&mut client, PHASE, inventory)
            .await
            .expect("inventory answered");
    }
    let after = updates
        .iter()
        .position(|u| matches!(u, Update::Resumed { .. }));
    if !updates.iter().skip(after.unwrap_or(0)).any(rate) {
        drive(&mut client, PHASE, rate)
            .await
            .expect("the snapshot rate asked again on the new connection");
    }
    let stats = client.stats();
    assert_eq!((stats.losses, stats.resumed, stats.rejoined), (1, 1, 0));
    let _ = client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_and_restarted_server_is_rejoined_after_its_goaway() {
    let server = TestServer::start(|c| c.reconnect_after_ms = 300).await;
    let addr = server.addr();
    let dir = server.data_dir.clone();
    let ep = endpoint(&dir, Duration::from_secs(30));
    let mut client = ReconnectingClient::connect(
        &ep,
        addr,
        "localhost",
        "t",
        dev_tokens(&dir, "drained"),
        ReconnectPolicy::default(),
    )
    .await
    .expect("connects");
    drive(&mut client, PHASE, is_snapshot).await.expect("plays");

    let (client, dir) = {
        let stopping = tokio::spawn(server.stop_keeping_data());
        let mut client = client;
        let updates = drive(&mut client, PHASE, |u| {
            matches!(u, Update::Reconnecting { .. })
        })
        .await
        .expect("reconnecting");
        assert!(
            updates
                .iter()
                .any(|u| matches!(u, Update::Incoming(Incoming::Event(ClientEvent::Goaway(_))))),
            "{updates:?}"
        );
        (client, stopping.await.expect("stopped"))
    };
    let restarted = TestServer::start_in(dir, |c| c.listen = addr).await;
    let mut client = client;
    let updates = drive(&mut client, PHASE, |u| matches!(u, Update::Rejoined { .. }))
        .await
        .expect("rejoins");
    assert!(
        !updates.iter().any(|u| matches!(u, Update::Resumed { .. })),
        "{updates:?}"
    );
    drive(&mut client, PHASE, is_snapshot)
        .await
        .expect("plays again");
    let _ = client.close().await;
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_returns_is_given_up_after_the_deadline() {
    let server = TestServer::start(|c| c.reconnect_after_ms = 0).await;
    let ep = endpoint(&server.data_dir, Duration::from_secs(30));
    let policy = ReconnectPolicy {
        deadline: Duration::from_secs(2),
        ..ReconnectPolicy::default()
    };
    let connect = |name: &'static str, policy: ReconnectPolicy| {
        ReconnectingClient::connect(
            &ep,
            server.addr(),
            "localhost",
            "t",
            dev_tokens(&server.data_dir, name),
            policy,
        )
    };
    let mut giving_up = connect("patient", policy).await.expect("connects");
    let mut tool = connect("tool", ReconnectPolicy::off())
        .await
        .expect("connects");
    drive(&mut giving_up, PHASE, is_snapshot)
        .await
        .expect("plays");
    server.stop().await;

    // Off: the loss itself is final.
    let error = drive(&mut tool, PHASE, |_| false)
        .await
        .expect_err("the loss ends a client with reconnection off");
    assert!(matches!(error, ReconnectError::Lost(_)), "{error}");

    let started = Instant::now();
    let mut attempts = 0;
    let error = drive(&mut giving_up, PHASE, |u| {
        if let Update::Reconnecting { attempt, .. } = u {
            attempts = *attempt;
        }
        false
    })
    .await
    .expect_err("gives up");
    let waited = started.elapsed();
    match &error {
        ReconnectError::GaveUp {
            elapsed,
            attempts: n,
            ..
        } => {
            assert!(*elapsed >= Duration::from_secs(2), "{error}");
            assert_eq!(*n, attempts);
            assert!(attempts >= 2, "retried with backoff: {error}");
        }
        other => panic!("expected GaveUp, got {other}"),
    }
    assert!(waited < Duration::from_secs(4), "gave up after {waited:?}");
    assert!(
        error.to_string().contains("gave up reconnecting"),
        "{error}"
    );
}
