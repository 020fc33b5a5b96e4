//! Several servers on one shared store (embedded mode of the cluster test): three servers
//! hosted in this process on 127.0.0.1 share ONE redb store through
//! `zonehost::start_with`. Player ownership leases, their fencing, a crash and a lost
//! lease.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_endpoint, Raw, TestServer, WAIT};
use tokio::sync::oneshot;
use zonehost::config::{Config, SecondLogin};
use zonehost::store::redb::RedbStore;
use zonehost::store::{ItemOp, ItemOpKind, ItemRecord, Owner, Store};
use zonehost::telemetry::{DisconnectCause, Stats};
use zonehost_client::{
    Client, Incoming, ReconnectPolicy, ReconnectingClient, TokenProvider, Update,
};
use zonehost_protocol::message::{close_code, Event, PartyEvent, RejectCode, Request, ServerMsg};
use zonehost_protocol::ClientEvent;

/// Player lease lifetime in these tests.
const LEASE_TTL: Duration = Duration::from_secs(2);

/// Three servers `a`, `b`, `c` sharing one store and one data directory (so one dev
/// certificate and one dev signing key: a token is valid on each).
struct Cluster {
    servers: Vec<Option<TestServer>>,
    store: Arc<dyn Store>,
    dir: std::path::PathBuf,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with(no_load_redirects).await
    }

    /// Three servers, each config changed by `tweak(index, config)` before it starts.
    async fn start_with(tweak: impl Fn(usize, &mut Config)) -> Self {
        let dir = common::temp_data_dir("cluster");
        std::fs::create_dir_all(&dir).expect("data dir");
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.join("shared.redb")).expect("open shared store"));
        // Fixed ports, so that every server knows the others' addresses (`peers`).
        let ids = ["a", "b", "c"];
        let addrs: Vec<SocketAddr> = ids
            .iter()
            .map(|_| {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .and_then(|s| s.local_addr())
                    .expect("a free port")
            })
            .collect();
        let peers: std::collections::BTreeMap<String, SocketAddr> = ids
            .iter()
            .zip(&addrs)
            .map(|(id, a)| (id.to_string(), *a))
            .collect();
        let mut servers = Vec::new();
        for (i, (id, addr)) in ids.into_iter().zip(addrs).enumerate() {
            let mut config = Config {
                listen: addr,
                data_dir: dir.clone(),
                metrics_listen: None,
                second_login: SecondLogin::TakeOver,
                ..Config::default()
            };
            config.store.server_id = id.into();
            config.cluster.enabled = true;
            config.cluster.player_lease_ttl_secs = LEASE_TTL.as_secs();
            config.cluster.peers = peers.clone();
            config.cluster.load_report_interval_ms = 200;
            tweak(i, &mut config);
            let (tx, rx) = oneshot::channel::<()>();
            let server = zonehost::start_with(
                config,
                async move {
                    let _ = rx.await;
                },
                zonehost::StartOptions {
                    store: Some(store.clone()),
                },
            )
            .await
            .expect("server starts");
            servers.push(Some(TestServer {
                server,
                shutdown: Some(tx),
                data_dir: dir.clone(),
            }));
        }
        Self {
            servers,
            store,
            dir,
        }
    }

    fn server(&self, i: usize) -> &TestServer {
        self.servers[i].as_ref().expect("server running")
    }

    /// Drains every running server and removes the data directory.
    async fn stop(mut self) {
        for s in self.servers.iter_mut().filter_map(Option::take) {
            let _ = s.stop_keeping_data().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `Hello` with a fresh token for `player` and returns the first answer.
async fn hello(endpoint: &quinn::Endpoint, cluster: &Cluster, i: usize, player: &str) -> Raw {
    let server = cluster.server(i);
    let mut raw = Raw::connect(endpoint, server).await;
    raw.hello(&server.token(player)).await;
    raw
}

async fn expect_welcome(raw: &mut Raw) {
    match raw.next().await {
        Some(ServerMsg::Welcome(_)) => {}
        other => panic!("expected Welcome, got {other:?}"),
    }
}

async fn expect_reject(raw: &mut Raw) -> (RejectCode, String) {
    match raw.next().await {
        Some(ServerMsg::Reject(r)) => (r.code, r.reason),
        other => panic!("expected Reject, got {other:?}"),
    }
}

/// Waits until `cond` holds, polling; panics after `limit`.
async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn items(store: &dyn Store, player: &str) -> Vec<ItemRecord> {
    store
        .items_of(Owner::Player(zonehost_protocol::token::player_id(player)))
        .expect("items")
}

fn fence(store: &dyn Store, player: &str) -> Option<zonehost::store::Fence> {
    store
        .load_player(zonehost_protocol::token::player_id(player))
        .expect("load")
        .map(|r| r.fence())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_is_owned_by_one_server_and_resumes_elsewhere_after_a_crash() {
    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));

    // p logs in on a: a takes the lease, and the new character's first checkpoint (with
    // its starter kit) is durable.
    let mut on_a = hello(&endpoint, &cluster, 0, "p").await;
    expect_welcome(&mut on_a).await;
    eventually("the first checkpoint", WAIT, || {
        fence(cluster.store.as_ref(), "p").is_some()
    })
    .await;
    let kit = items(cluster.store.as_ref(), "p");
    assert!(!kit.is_empty(), "a new character owns its starter kit");
    let fence_a = fence(cluster.store.as_ref(), "p").expect("saved");
    assert!(
        fence_a.epoch > 0xFFFF_FFFF,
        "a leased fence carries the lease epoch in its high bits: {fence_a}"
    );

    // b sends p to a while a owns them.
    let mut on_b = hello(&endpoint, &cluster, 1, "p").await;
    match on_b.next().await {
        Some(ServerMsg::Redirect(r)) => assert_eq!(r.address, cluster.server(0).addr().to_string()),
        other => panic!("expected Redirect, got {other:?}"),
    }

    // a crashes: no drain, no final checkpoint, its lease is neither released nor renewed.
    let mut cluster = cluster;
    let a = cluster.servers[0].take().expect("a runs");
    let a_addr = a.addr();
    let crashed_at = Instant::now();
    tokio::time::timeout(WAIT, a.server.crash())
        .await
        .expect("a stops in time");
    assert_eq!(
        on_a.closed_code().await,
        Some(u64::from(close_code::SHUTDOWN))
    );

    // p retries on c until a's lease has expired (c would redirect to a, which is down);
    // then c owns them.
    let mut attempts = 0;
    let on_c = loop {
        assert!(
            crashed_at.elapsed() < LEASE_TTL + WAIT,
            "p never got in on c"
        );
        attempts += 1;
        let mut on_c = hello(&endpoint, &cluster, 2, "p").await;
        match on_c.next().await {
            Some(ServerMsg::Welcome(_)) => break on_c,
            Some(ServerMsg::Redirect(r)) => {
                assert_eq!(r.address, a_addr.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("expected Welcome or Redirect, got {other:?}"),
        }
    };
    assert!(attempts > 1, "c redirected p while a's lease was alive");
    assert!(
        crashed_at.elapsed() >= LEASE_TTL / 2,
        "p got in on c before a's lease could have expired"
    );

    // p leaves c; c's final checkpoint is fenced above everything a wrote.
    on_c.conn.close(0u32.into(), b"bye");
    // Nothing lost or duplicated: the same items, a clean store, and c's fence is newer.
    eventually("c's final checkpoint", WAIT, || {
        fence(cluster.store.as_ref(), "p").is_some_and(|f| f > fence_a)
    })
    .await;
    assert_eq!(items(cluster.store.as_ref(), "p"), kit);
    let report = cluster.store.check().expect("check");
    assert!(report.is_clean(), "{report}");

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_loses_a_lease_closes_the_session_and_writes_no_more() {
    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut on_a = hello(&endpoint, &cluster, 0, "q").await;
    expect_welcome(&mut on_a).await;
    eventually("the first checkpoint", WAIT, || {
        fence(cluster.store.as_ref(), "q").is_some()
    })
    .await;

    // Another holder takes q's lease as if a had stalled past the TTL (time is an
    // argument of the store's lease operations).
    let later = zonehost::sim::persist::unix_millis() + 10 * LEASE_TTL.as_millis() as u64;
    let resource = zonehost::cluster::player_resource(zonehost_protocol::token::player_id("q"));
    let intruder = cluster
        .store
        .acquire_lease(&resource, "intruder", Duration::from_secs(600), later)
        .expect("taken over in the future");

    // a's next renewal finds the lease lost: the session is closed with a named cause.
    assert_eq!(
        on_a.closed_code().await,
        Some(u64::from(close_code::TAKEN_OVER))
    );
    let a = cluster.server(0);
    eventually("the lease_lost disconnect", WAIT, || {
        a.server.stats.disconnect_count(DisconnectCause::LeaseLost) == 1
    })
    .await;
    let leases = a.server.player_leases.as_ref().expect("cluster mode");
    assert_eq!(leases.counters.lost.load(Ordering::Relaxed), 1);
    eventually("the lost lease forgotten", WAIT, || leases.is_empty()).await;
    // No final checkpoint: the stored fence is still the one from before the loss.
    let before = fence(cluster.store.as_ref(), "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fence(cluster.store.as_ref(), "q"), before);

    // q cannot log in anywhere while the intruder holds the lease.
    let mut on_b = hello(&endpoint, &cluster, 1, "q").await;
    let (code, reason) = expect_reject(&mut on_b).await;
    assert_eq!(code, RejectCode::AlreadyConnected);
    assert!(reason.contains("intruder"), "{reason}");
    cluster.store.release_lease(&intruder).expect("release");
    let mut on_b = hello(&endpoint, &cluster, 1, "q").await;
    expect_welcome(&mut on_b).await;

    let report = cluster.store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_released_when_the_session_is_saved_and_closed() {
    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut on_a = hello(&endpoint, &cluster, 0, "r").await;
    expect_welcome(&mut on_a).await;
    on_a.conn.close(0u32.into(), b"bye");
    let a = cluster.server(0);
    let leases = a.server.player_leases.as_ref().expect("cluster mode");
    eventually("the lease released", WAIT, || {
        leases.is_empty() && leases.counters.released.load(Ordering::Relaxed) == 1
    })
    .await;
    // Released (not expired): b takes r at once.
    let mut on_b = hello(&endpoint, &cluster, 1, "r").await;
    expect_welcome(&mut on_b).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_a_redirect_to_the_owner_with_a_single_use_ticket() {
    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let (a, b, c) = (cluster.server(0), cluster.server(1), cluster.server(2));
    let connect = |addr: SocketAddr, token: String| {
        let endpoint = endpoint.clone();
        async move { Client::connect(&endpoint, addr, "localhost", &token, "test").await }
    };

    let first = connect(a.addr(), a.token("s")).await.expect("s on a");
    assert!(first.redirected_via().is_empty());

    // s connects to b: b redirects to a, the client follows with the ticket and a takes
    // the new connection over (second_login = take_over).
    let second = connect(b.addr(), b.token("s")).await.expect("s via b on a");
    assert_eq!(second.redirected_via(), &[a.addr()]);
    assert_eq!(
        b.server.stats.disconnect_count(DisconnectCause::Redirected),
        1
    );
    eventually("the first connection taken over", WAIT, || {
        a.server.stats.disconnect_count(DisconnectCause::TakenOver) == 1
    })
    .await;

    // The ticket itself: for a only, once only.
    let mut raw = hello(&endpoint, &cluster, 2, "s").await;
    let ticket = match raw.next().await {
        Some(ServerMsg::Redirect(r)) => {
            assert_eq!(r.address, a.addr().to_string());
            r.ticket
        }
        other => panic!("expected Redirect, got {other:?}"),
    };
    let mut on_c = Raw::connect(&endpoint, c).await;
    on_c.hello(&ticket).await;
    assert_eq!(expect_reject(&mut on_c).await.0, RejectCode::WrongAudience);
    let mut on_a = Raw::connect(&endpoint, a).await;
    on_a.hello(&ticket).await;
    expect_welcome(&mut on_a).await;
    let mut again = Raw::connect(&endpoint, a).await;
    again.hello(&ticket).await;
    assert_eq!(expect_reject(&mut again).await.0, RejectCode::TokenReplayed);
    // An account token is no ticket: a forged ticket signed by the account key fails.
    let forged = a.token_with("s", |claims| {
        claims.audience = zonehost::cluster::ticket_audience("a");
        claims.key_id = zonehost::cluster::TICKET_KEY_ID;
    });
    let mut on_a = Raw::connect(&endpoint, a).await;
    on_a.hello(&forged).await;
    assert_eq!(expect_reject(&mut on_a).await.0, RejectCode::InvalidToken);

    drop((first, second));
    cluster.stop().await;
}

/// No login is redirected by load: a busy debug build on a loaded CI machine must not
/// move players in tests about something else.
fn no_load_redirects(_: usize, config: &mut Config) {
    config.cluster.redirect_above_permille = 1000;
    config.cluster.redirect_margin_permille = 1000;
}

/// Waits for an event on `c` that `pred` accepts (others are skipped).
async fn wait_event(c: &mut Client, what: &str, pred: impl Fn(&Event) -> bool) {
    tokio::time::timeout(WAIT, async {
        loop {
            match c.next_event().await {
                Ok(Incoming::Event(ClientEvent::Event(e))) if pred(&e) => return,
                Ok(_) => {}
                Err(e) => panic!("{what}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// `names[leader]` invites `names[m]` for each member `m`, who accepts.
async fn form_party(clients: &mut [Client], names: &[String], leader: usize, members: &[usize]) {
    for &m in members {
        clients[leader]
            .request(Request::PartyInvite {
                player: names[m].clone(),
            })
            .await
            .expect("invite");
        wait_event(&mut clients[m], "the invite", |e| {
            matches!(e, Event::Party(PartyEvent::Invited { .. }))
        })
        .await;
        clients[m]
            .request(Request::PartyAccept)
            .await
            .expect("accept");
        let me = names[m].clone();
        wait_event(&mut clients[m], "membership", move |e| {
            matches!(e, Event::Party(PartyEvent::Members { members, .. }) if members.contains(&me))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_everyone_to_the_peers_with_their_items() {
    // Longer leases than the other tests: the drain must beat their expiry to prove they
    // were released, and on a loaded 2-core CI machine (19 cluster tests at once) six
    // handoffs took longer than the usual 2 s.
    const DRAIN_LEASE_TTL: Duration = Duration::from_secs(10);
    // a runs two sim workers: a party's members may be on either when it drains.
    let mut cluster = Cluster::start_with(|i, config| {
        no_load_redirects(i, config);
        config.cluster.player_lease_ttl_secs = DRAIN_LEASE_TTL.as_secs();
        if i == 0 {
            config.sim_workers = 2;
        }
    })
    .await;
    let endpoint = client_endpoint(cluster.server(0));
    let (a_addr, peers) = (
        cluster.server(0).addr(),
        [cluster.server(1).addr(), cluster.server(2).addr()],
    );
    // Every server's load row is in the table, so a knows its peers are live.
    eventually("three live load rows", WAIT, || {
        cluster
            .store
            .server_loads(zonehost::sim::persist::unix_millis())
            .is_ok_and(|rows| rows.len() == 3)
    })
    .await;
    let names: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let mut clients = Vec::new();
    for name in &names {
        let token = cluster.server(0).token(name);
        let c = Client::connect(&endpoint, a_addr, "localhost", &token, "test")
            .await
            .expect("joins a");
        assert!(c.redirected_via().is_empty());
        clients.push(c);
    }
    eventually("every first checkpoint", WAIT, || {
        names
            .iter()
            .all(|n| fence(cluster.store.as_ref(), n).is_some())
    })
    .await;
    // Two parties (m0 m1 m2, m3 m4) and a loner (m5): each party lands on one peer.
    form_party(&mut clients, &names, 0, &[1, 2]).await;
    form_party(&mut clients, &names, 3, &[4]).await;
    let kits: Vec<Vec<ItemRecord>> = names
        .iter()
        .map(|n| items(cluster.store.as_ref(), n))
        .collect();
    assert!(kits.iter().all(|k| !k.is_empty()));
    let fences: Vec<_> = names
        .iter()
        .map(|n| fence(cluster.store.as_ref(), n).expect("saved"))
        .collect();

    // a drains: every player gets a Redirect (not a Goaway) after its final checkpoint
    // and lease release, and resumes on b or c at once (not after the lease TTL).
    let a = cluster.servers[0].take().expect("a runs");
    let handoffs = a.server.handoffs.clone().expect("drain by migration");
    let drained_at = Instant::now();
    let drain = tokio::spawn(a.stop_keeping_data());
    let mut moved = Vec::new();
    for (name, mut c) in names.iter().zip(clients) {
        let redirect = tokio::time::timeout(WAIT, async {
            loop {
                match c.next_event().await {
                    Ok(Incoming::Event(ClientEvent::Redirected(r))) => break r,
                    Ok(Incoming::Event(ClientEvent::Goaway(g))) => panic!("{name}: Goaway {g:?}"),
                    Ok(_) => {}
                    Err(e) => panic!("{name}: session ended without a Redirect: {e}"),
                }
            }
        })
        .await
        .expect("a Redirect in time");
        let there = Client::follow(&endpoint, &redirect, "localhost", "test")
            .await
            .expect("resumes on a peer");
        assert_eq!(
            there.redirected_via().len(),
            1,
            "{name}: straight to the peer"
        );
        assert!(
            peers.contains(&there.redirected_via()[0]),
            "{name} went to {:?}",
            there.redirected_via()
        );
        moved.push(there);
    }
    assert!(
        drained_at.elapsed() < DRAIN_LEASE_TTL,
        "everyone moved before a lease could have expired: they were released ({:?})",
        drained_at.elapsed()
    );
    let to = |i: usize| moved[i].redirected_via()[0];
    assert!(to(0) == to(1) && to(1) == to(2), "party m0 m1 m2 split");
    assert_eq!(to(3), to(4), "party m3 m4 split");
    tokio::time::timeout(WAIT, drain)
        .await
        .expect("a drains in time")
        .expect("drain task");
    assert_eq!(handoffs.counters.redirected.load(Ordering::Relaxed), 6);
    assert_eq!(handoffs.counters.closed.load(Ordering::Relaxed), 0);
    let on_peers: usize = (1..3)
        .map(|i| {
            let leases = cluster
                .server(i)
                .server
                .player_leases
                .as_ref()
                .expect("cluster");
            leases.len()
        })
        .sum();
    assert_eq!(on_peers, 6, "every player is leased by b or c");
    // The parties live in the store and survive the move: same members, same leader.
    {
        use zonehost_protocol::token::player_id;
        let party_of = |i: usize| {
            cluster
                .store
                .party_of(player_id(&names[i]))
                .expect("party index")
        };
        let first = party_of(0).expect("m0's party survives the drain");
        assert!([1, 2].iter().all(|&i| party_of(i) == Some(first)));
        let second = party_of(3).expect("m3's party survives the drain");
        assert_ne!(first, second);
        assert_eq!(party_of(4), Some(second));
        assert_eq!(party_of(5), None, "the loner stays alone");
        let party = cluster
            .store
            .load_party(first)
            .expect("load")
            .expect("party");
        assert_eq!(party.leader, player_id(&names[0]));
        assert_eq!(party.members.len(), 3);
    }

    // Nothing lost or duplicated: the same items, newer fences once the peers save, and a
    // clean store.
    for (name, kit) in names.iter().zip(&kits) {
        assert_eq!(&items(cluster.store.as_ref(), name), kit, "{name}");
    }
    for c in moved {
        let _ = c.close().await;
    }
    eventually("the peers' final checkpoints", WAIT, || {
        names
            .iter()
            .zip(&fences)
            .all(|(n, f)| fence(cluster.store.as_ref(), n).is_some_and(|now| now > *f))
    })
    .await;
    for (name, kit) in names.iter().zip(&kits) {
        assert_eq!(&items(cluster.store.as_ref(), name), kit, "{name}");
    }
    let report = cluster.store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_follows_a_drain_redirect_and_resumes_on_the_peer() {
    let mut cluster = Cluster::start_with(|i, config| {
        no_load_redirects(i, config);
        config.cluster.player_lease_ttl_secs = 10;
    })
    .await;
    let endpoint = client_endpoint(cluster.server(0));
    let (a_addr, peers) = (
        cluster.server(0).addr(),
        [cluster.server(1).addr(), cluster.server(2).addr()],
    );
    eventually("three live load rows", WAIT, || {
        cluster
            .store
            .server_loads(zonehost::sim::persist::unix_millis())
            .is_ok_and(|rows| rows.len() == 3)
    })
    .await;
    let token = cluster.server(0).token("follower");
    let tokens: Arc<dyn TokenProvider> = Arc::new(move || Ok(token.clone()));
    let mut client = ReconnectingClient::connect(
        &endpoint,
        a_addr,
        "localhost",
        "test",
        tokens,
        ReconnectPolicy::default(),
    )
    .await
    .expect("joins a");
    let first = client
        .client()
        .map(|c| c.welcome().player_id)
        .expect("connected");
    eventually("the first checkpoint", WAIT, || {
        fence(cluster.store.as_ref(), "follower").is_some()
    })
    .await;

    let a = cluster.servers[0].take().expect("a runs");
    let drain = tokio::spawn(a.stop_keeping_data());
    let mut seen = Vec::new();
    let resumed = tokio::time::timeout(WAIT, async {
        loop {
            match client.next_event().await {
                Ok(Update::Resumed { welcome, .. }) => break welcome,
                Ok(Update::Rejoined { .. }) => panic!("rejoined instead of resuming: {seen:?}"),
                Ok(Update::Incoming(Incoming::Snapshot(..))) => {}
                Ok(other) => seen.push(format!("{other:?}")),
                Err(e) => panic!("gave up: {e}; seen {seen:?}"),
            }
        }
    })
    .await
    .expect("resumed on a peer in time");
    assert_eq!(resumed.player_id, first, "the same player");
    assert!(
        seen.iter().any(|u| u.contains("Redirected")),
        "the application saw the redirect: {seen:?}"
    );
    assert!(
        !seen.iter().any(|u| u.contains("Goaway")),
        "a drain by migration sends no Goaway: {seen:?}"
    );
    let now_at = client.target().addr;
    assert!(peers.contains(&now_at), "plays on a peer, not {now_at}");
    assert_eq!(
        client.target().fallbacks.first(),
        Some(&a_addr),
        "the drained server is a fallback"
    );
    let stats = client.stats();
    assert_eq!((stats.redirects, stats.resumed, stats.rejoined), (1, 1, 0));
    tokio::time::timeout(WAIT, drain)
        .await
        .expect("a drains in time")
        .expect("drain task");
    let _ = client.close().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busier_server_sends_new_logins_to_the_least_loaded_peer_once() {
    // a balances on any difference; b and c report once at start (and when they drain),
    // so the rows this test writes for them stay what a reads.
    let cluster = Cluster::start_with(|i, config| {
        if i == 0 {
            config.cluster.redirect_above_permille = 0;
            config.cluster.redirect_margin_permille = 0;
        } else {
            config.cluster.load_report_interval_ms = 60_000;
            no_load_redirects(i, config);
        }
    })
    .await;
    let endpoint = client_endpoint(cluster.server(0));
    let (a, b) = (cluster.server(0), cluster.server(1));
    let now = zonehost::sim::persist::unix_millis;
    eventually("b and c report", WAIT, || {
        cluster
            .store
            .server_loads(now())
            .is_ok_and(|rows| rows.len() == 3)
    })
    .await;
    // c is measured busy, b idle.
    for (id, busy) in [("b", 0), ("c", 900)] {
        let row = zonehost::store::ServerLoad {
            server_id: id.into(),
            players: 0,
            busy_permille: busy,
            draining: false,
            updated_at_ms: now(),
            address: None,
        };
        cluster
            .store
            .publish_load(&row, Duration::from_secs(60), now())
            .expect("publish");
    }
    let placement = a.server.placement.as_ref().expect("cluster mode");
    eventually("a reads c's load", WAIT, || {
        placement
            .peer_loads()
            .iter()
            .any(|l| l.server_id == "c" && l.busy_permille == 900)
            && placement.is_overloaded()
    })
    .await;

    // An account-token login on a goes to b, and stays there: b admits the ticket.
    let token = a.token("lb");
    let on_b = Client::connect(&endpoint, a.addr(), "localhost", &token, "test")
        .await
        .expect("lb via a on b");
    assert_eq!(on_b.redirected_via(), &[b.addr()]);
    assert_eq!(
        placement.counters.login_redirects.load(Ordering::Relaxed),
        1
    );
    let b_leases = b.server.player_leases.as_ref().expect("cluster mode");
    eventually("b leases lb", WAIT, || b_leases.len() == 1).await;

    // A ticket-bearing login is admitted where it lands, however loaded: no bouncing.
    let key = zonehost::cluster::load_ticket_key(&Config::default().cluster, &cluster.dir)
        .expect("the cluster's ticket key");
    let ticket = zonehost::cluster::Tickets::new(key).mint("lt", "a", common::unix_now());
    let mut raw = Raw::connect(&endpoint, a).await;
    raw.hello(&ticket).await;
    expect_welcome(&mut raw).await;
    assert_eq!(
        placement.counters.login_redirects.load(Ordering::Relaxed),
        1
    );

    drop(on_b);
    cluster.stop().await;
}

/// Pumps `bot` until `f` picks something out of what it receives (events are kept in
/// `bot.events` otherwise); panics after [`WAIT`].
async fn pump_until<T>(
    bot: &mut common::bot::Bot,
    what: &str,
    mut f: impl FnMut(&zonehost_client::Incoming) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{}: timed out waiting for {what}",
            bot.name
        );
        let next = tokio::time::timeout(left, bot.client.next_event())
            .await
            .unwrap_or_else(|_| panic!("{}: timed out waiting for {what}", bot.name))
            .unwrap_or_else(|e| panic!("{}: connection ended waiting for {what}: {e}", bot.name));
        if let Some(t) = f(&next) {
            return t;
        }
        bot.handle(next);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_spread_over_servers_converges() {
    use common::bot::Bot;
    use zonehost_client::Incoming;
    use zonehost_protocol::message::{Event, PartyEvent, Request, Response};
    use zonehost_protocol::token::player_id;
    use zonehost_protocol::ClientEvent;

    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let join = |i: usize, name: &'static str| {
        let addr = cluster.server(i).addr();
        let token = cluster.server(i).token(name);
        let endpoint = endpoint.clone();
        async move {
            Bot::connect(&endpoint, addr, &token, name)
                .await
                .unwrap_or_else(|e| panic!("{name} joins: {e:?}"))
        }
    };
    // The leader on a, one member on b, one on c.
    let mut lead = join(0, "plead").await;
    let mut members = vec![join(1, "pmem1").await, join(2, "pmem2").await];
    // Each member's starter kit is committed (its inventory and the store agree).
    let mut items_before = Vec::new();
    for m in members.iter_mut() {
        let inv = m.inventory().await;
        let count = inv.bag.len() + inv.equipment.len();
        assert!(count > 0, "a starter kit");
        let store = cluster.store.clone();
        let name = m.name.clone();
        eventually("the starter kit is stored", WAIT, || {
            items(&*store, &name).len() == count
        })
        .await;
        items_before.push(count);
    }
    for (i, m) in members.iter_mut().enumerate() {
        let name = m.name.clone();
        assert_eq!(
            lead.request(Request::PartyInvite {
                player: name.clone()
            })
            .await,
            Ok(Response::Done),
            "invite {name}"
        );
        // The invitation crosses servers through the store's mailbox of the member's server.
        pump_until(m, "the invitation", |inc| match inc {
            Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Invited { by })))
                if by == "plead" =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
        let id = m
            .client
            .request(Request::PartyAccept)
            .await
            .expect("accept sent");
        // The member's server answers, saves it, releases its lease and redirects it to
        // the leader's server with a ticket.
        let mut accepted = false;
        let redirect = pump_until(m, "the redirect", |inc| match inc {
            Incoming::Event(ClientEvent::Response { id: rid, body, .. }) if *rid == id => {
                assert_eq!(body, &Ok(Response::Done), "accept");
                accepted = true;
                None
            }
            Incoming::Event(ClientEvent::Redirected(r)) => Some(r.clone()),
            _ => None,
        })
        .await;
        assert!(accepted, "the accept was answered before the redirect");
        assert_eq!(
            redirect.address,
            cluster.server(0).addr().to_string(),
            "sent to the leader's server"
        );
        let addr: SocketAddr = redirect.address.parse().expect("address");
        let mut moved = Bot::connect(&endpoint, addr, &redirect.ticket, &name)
            .await
            .unwrap_or_else(|e| panic!("{name} follows the redirect: {e:?}"));
        let deadline = Instant::now() + WAIT;
        while moved.instance != lead.instance {
            assert!(
                Instant::now() < deadline,
                "{name} never entered the leader's instance {} (is in {})",
                lead.instance,
                moved.instance
            );
            moved.pump().await.expect("connection alive");
        }
        assert_eq!(
            Stats::get(&cluster.server(i + 1).server.stats.party_handoffs),
            1
        );
        *m = moved;
    }
    // Everyone is on a, in one instance, in one party the store knows.
    let party = cluster
        .store
        .party_of(player_id("plead"))
        .expect("party_of")
        .expect("the leader has a party");
    for n in ["pmem1", "pmem2"] {
        assert_eq!(
            cluster.store.party_of(player_id(n)).expect("party_of"),
            Some(party),
            "{n}"
        );
        let lease = cluster
            .store
            .lease_of(
                &format!("player:{}", player_id(n)),
                common::unix_now() * 1000,
            )
            .expect("lease_of")
            .expect("leased");
        assert_eq!(lease.holder, "a", "{n} is owned by the leader's server");
    }
    let record = cluster
        .store
        .load_party(party)
        .expect("load")
        .expect("party");
    assert_eq!(record.members.len(), 3);
    assert_eq!(record.leader, player_id("plead"));
    // The leader hears of the full party.
    pump_until(&mut lead, "the full party", |inc| match inc {
        Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Members {
            members, ..
        }))) if members.len() == 3 => Some(()),
        _ => None,
    })
    .await;
    // Nothing was lost or duplicated on the way.
    for (m, before) in members.iter_mut().zip(items_before) {
        let inv = m.inventory().await;
        assert_eq!(
            inv.bag.len() + inv.equipment.len(),
            before,
            "{}'s inventory",
            m.name
        );
        assert_eq!(
            items(&*cluster.store, &m.name).len(),
            before,
            "{}'s items",
            m.name
        );
    }
    let report = cluster.store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    drop(members);
    drop(lead);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_requests_across_servers_follow_the_rules() {
    use common::bot::Bot;
    use zonehost_client::Incoming;
    use zonehost_protocol::message::{Event, PartyEvent, Request, RequestError, Response};
    use zonehost_protocol::token::player_id;
    use zonehost_protocol::ClientEvent;

    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut lead = bot_on(&cluster, &endpoint, 0, "rlead").await;
    let mut m = bot_on(&cluster, &endpoint, 1, "rmem").await;
    let invite = |name: &str| Request::PartyInvite {
        player: name.into(),
    };
    assert_eq!(
        lead.request(invite("nobody-online")).await,
        Err(RequestError::NoSuchPlayer)
    );
    assert_eq!(
        lead.request(invite("rlead")).await,
        Err(RequestError::SelfInvite)
    );
    assert_eq!(
        m.request(Request::PartyAccept).await,
        Err(RequestError::NoInvite)
    );
    assert_eq!(
        m.request(Request::PartyLeave).await,
        Err(RequestError::NotInParty)
    );
    // An invitation declined on b reaches the leader on a.
    assert_eq!(lead.request(invite("rmem")).await, Ok(Response::Done));
    pump_until(&mut m, "the invitation", |inc| {
        matches!(
            inc,
            Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Invited { .. })))
        )
        .then_some(())
    })
    .await;
    assert_eq!(m.request(Request::PartyDecline).await, Ok(Response::Done));
    wait_declined(&mut lead, "the decline", "rmem").await;
    assert_eq!(
        cluster
            .store
            .party_of(player_id("rlead"))
            .expect("party_of"),
        None,
        "an unanswered invitation leaves no party behind"
    );
    assert_eq!(
        m.request(Request::PartyDecline).await,
        Err(RequestError::NoInvite),
        "declined once"
    );
    // Invited again and accepted: the member moves to a; then it leaves the game and the
    // party of two disbands in the store.
    assert_eq!(lead.request(invite("rmem")).await, Ok(Response::Done));
    pump_until(&mut m, "the second invitation", |inc| {
        matches!(
            inc,
            Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Invited { .. })))
        )
        .then_some(())
    })
    .await;
    let _ = m.client.request(Request::PartyAccept).await.expect("sent");
    let redirect = pump_until(&mut m, "the redirect", |inc| match inc {
        Incoming::Event(ClientEvent::Redirected(r)) => Some(r.clone()),
        _ => None,
    })
    .await;
    let addr: SocketAddr = redirect.address.parse().expect("address");
    let mut m = Bot::connect(&endpoint, addr, &redirect.ticket, "rmem")
        .await
        .expect("follows the redirect");
    assert_eq!(
        lead.request(Request::PartyKick {
            player: "rlead".into()
        })
        .await,
        Err(RequestError::NotMember),
        "the leader cannot kick itself"
    );
    assert_eq!(
        m.request(Request::PartyKick {
            player: "rlead".into()
        })
        .await,
        Err(RequestError::NotLeader)
    );
    let party = cluster
        .store
        .party_of(player_id("rmem"))
        .expect("party_of")
        .expect("in the party");
    m.client.close().await.expect("bye");
    let store = cluster.store.clone();
    eventually("the party disbands in the store", WAIT, || {
        store.load_party(party).ok().flatten().is_none()
    })
    .await;
    assert_eq!(
        lead.request(Request::PartyLeave).await,
        Err(RequestError::NotInParty)
    );
    drop(lead);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_servers_grounds_are_swept_by_a_peer_once_its_run_lease_expired() {
    let mut cluster = Cluster::start().await;
    let store = cluster.store.clone();
    let ground = |epoch: u64| Owner::Ground {
        instance: (epoch << 32) | 1,
    };
    let (a_ground, b_ground) = (
        ground(cluster.server(0).server.store_epoch),
        ground(cluster.server(1).server.store_epoch),
    );
    // An item on the ground of an instance of a, one on b's (as a player's drop would
    // leave them; a crash leaves them behind).
    let create = |item_id: u128, owner: Owner| ItemOp {
        op_id: u128::from(common::unix_now()) << 64 | item_id,
        item_id,
        kind: ItemOpKind::Create {
            owner,
            data: vec![1],
        },
    };
    let (on_a, on_b) = (0xA11CE_u128 << 64 | 1, 0xB0B_u128 << 64 | 2);
    for (id, owner) in [(on_a, a_ground), (on_b, b_ground)] {
        assert!(store
            .apply_item_op(&create(id, owner))
            .expect("create")
            .applied());
    }
    let a = cluster.servers[0].take().expect("a runs");
    let crashed_at = Instant::now();
    tokio::time::timeout(WAIT, a.server.crash())
        .await
        .expect("a stops in time");
    // A peer sweeps a's ground once a's run lease has expired, never before; b is alive.
    eventually("a's ground swept", LEASE_TTL + WAIT, || {
        store.items_of(a_ground).is_ok_and(|i| i.is_empty())
    })
    .await;
    assert!(
        crashed_at.elapsed() >= LEASE_TTL / 2,
        "swept before a's run lease could have expired"
    );
    let destroyed = store.item(on_a).expect("item").expect("tombstone");
    assert_eq!(destroyed.owner, None, "destroyed, not moved");
    // Two more sweep rounds: b's ground stays.
    tokio::time::sleep(2 * LEASE_TTL).await;
    assert_eq!(
        store
            .items_of(b_ground)
            .expect("items")
            .iter()
            .map(|i| i.item_id)
            .collect::<Vec<_>>(),
        vec![on_b]
    );
    let report = store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_logging_in_elsewhere_is_sent_to_its_leaders_server() {
    use common::bot::Bot;
    use zonehost::store::PartyRecord;
    use zonehost_client::Incoming;
    use zonehost_protocol::token::player_id;
    use zonehost_protocol::ClientEvent;

    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut lead = bot_on(&cluster, &endpoint, 0, "alead").await;
    // The store says both are in one party (e.g. the member's server crashed after it
    // joined); the member logs in on c.
    let party = PartyRecord {
        party_id: 0x5eed_0000_0000_0001,
        leader: player_id("alead"),
        members: vec![player_id("alead"), player_id("amem")],
        invites: Vec::new(),
        version: 1,
    };
    assert!(cluster
        .store
        .write_party(&party, None)
        .expect("write party"));
    let mut m = bot_on(&cluster, &endpoint, 2, "amem").await;
    let redirect = pump_until(&mut m, "the redirect", |inc| match inc {
        Incoming::Event(ClientEvent::Redirected(r)) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(redirect.address, cluster.server(0).addr().to_string());
    let addr: SocketAddr = redirect.address.parse().expect("address");
    let mut m = Bot::connect(&endpoint, addr, &redirect.ticket, "amem")
        .await
        .expect("follows the redirect");
    let deadline = Instant::now() + WAIT;
    while m.instance != lead.instance {
        assert!(
            Instant::now() < deadline,
            "never entered the leader's instance"
        );
        m.pump().await.expect("connection alive");
    }
    // The leader's server mirrors the party: the leader is told of it.
    pump_until(&mut lead, "the party", |inc| match inc {
        Incoming::Event(ClientEvent::Event(zonehost_protocol::message::Event::Party(
            zonehost_protocol::message::PartyEvent::Members { members, .. },
        ))) if members.len() == 2 => Some(()),
        _ => None,
    })
    .await;
    drop(m);
    drop(lead);
    cluster.stop().await;
}

/// Server `i`'s placement (cluster mode).
fn placement_of(cluster: &Cluster, i: usize) -> &zonehost::placement::Placement {
    cluster
        .server(i)
        .server
        .placement
        .as_deref()
        .expect("cluster mode")
}

/// Pins the busy fraction each server publishes (`busy[i]` for server `i`, per mille):
/// the test decides which server is busy instead of the CPU. Waits until a has read
/// every pinned value.
async fn pin_loads(cluster: &Cluster, busy: [u32; 3]) {
    for (i, b) in busy.iter().enumerate() {
        placement_of(cluster, i).pin_busy(Some(*b));
    }
    let a = placement_of(cluster, 0);
    eventually("a reads the pinned loads", WAIT, || {
        a.own_load().is_some_and(|l| l.busy_permille == busy[0])
            && a.peer_loads()
                .iter()
                .map(|l| l.busy_permille)
                .eq([busy[1], busy[2]])
    })
    .await;
}

/// The crypt (zone 2) as the content defines it.
fn crypt() -> zonehost_game::ZoneTemplate {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("content/zones/crypt.toml"),
    )
    .expect("crypt.toml");
    zonehost_game::ZoneTemplate::from_toml(&text).expect("crypt parses")
}

/// Walks `bot` east from the town's spawn into the portal to the crypt (zone 2): `Ok`
/// with the zone entered on this server (`ZoneEntered`), or `Err` with the `Redirect` the
/// server sent instead.
async fn walk_into_the_crypt(
    bot: &mut common::bot::Bot,
) -> Result<u16, zonehost_protocol::message::Redirect> {
    use zonehost_protocol::datagram::InputCmd;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "{}: never reached the portal",
            bot.name
        );
        // Once the server has answered with a Redirect and closed, inputs fail: the
        // Redirect is still read below.
        let _ = bot.client.send_input(InputCmd::new(1000, 0, 0));
        let pace = tokio::time::sleep(Duration::from_millis(17));
        tokio::pin!(pace);
        loop {
            tokio::select! {
                _ = &mut pace => break,
                next = bot.client.next_event() => {
                    let next = next.unwrap_or_else(|e| panic!("{}: connection ended: {e}", bot.name));
                    match &next {
                        Incoming::Event(ClientEvent::Redirected(r)) => return Err(r.clone()),
                        Incoming::Event(ClientEvent::Event(Event::ZoneEntered { zone, .. })) => {
                            let zone = *zone;
                            bot.handle(next);
                            return Ok(zone);
                        }
                        _ => bot.handle(next),
                    }
                }
            }
        }
    }
}

/// The server holding `player`'s lease.
fn lease_holder(cluster: &Cluster, player: &str) -> Option<String> {
    cluster
        .store
        .lease_of(
            &format!("player:{}", zonehost_protocol::token::player_id(player)),
            common::unix_now() * 1000,
        )
        .expect("lease_of")
        .map(|l| l.holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_places_a_new_dungeon_instance_on_the_idle_peer() {
    use common::bot::Bot;
    // Default thresholds (600 / 250); the loads are pinned, not measured.
    let cluster = Cluster::start_with(|_, _| {}).await;
    pin_loads(&cluster, [100, 50, 700]).await;
    let endpoint = client_endpoint(cluster.server(0));
    let (a, b) = (cluster.server(0), cluster.server(1));
    let mut p = Bot::connect(&endpoint, a.addr(), &a.token("dz"), "dz")
        .await
        .expect("dz joins a");
    assert!(p.client.redirected_via().is_empty(), "a is not busy yet");
    let inv = p.inventory().await;
    let count = inv.bag.len() + inv.equipment.len();
    assert!(count > 0, "a starter kit");
    eventually("the starter kit is stored", WAIT, || {
        items(&*cluster.store, "dz").len() == count
    })
    .await;
    let before = items(&*cluster.store, "dz");

    // a turns busy: 900 against b's 50 (c, at 700, is live but busier than b).
    pin_loads(&cluster, [900, 50, 700]).await;
    let placement = placement_of(&cluster, 0);
    assert!(placement.is_overloaded());
    let b_instances = b.server.stats.instances_live.load(Ordering::Relaxed);
    let redirect = walk_into_the_crypt(&mut p)
        .await
        .expect_err("the crypt's new instance goes to a peer");
    assert_eq!(
        redirect.address,
        b.addr().to_string(),
        "to the idle peer, not to c"
    );
    assert_eq!(placement.counters.instances_peer.load(Ordering::Relaxed), 1);
    assert_eq!(
        placement.counters.instances_local.load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        placement.counters.login_redirects.load(Ordering::Relaxed),
        0
    );
    // Before the Redirect, a saved dz in the crypt at its spawn and released the lease.
    let record = cluster
        .store
        .load_player(zonehost_protocol::token::player_id("dz"))
        .expect("load")
        .expect("saved");
    assert_eq!(record.zone, 2);
    assert_eq!((record.x_mm, record.y_mm), crypt().spawn_mm);
    assert_eq!(lease_holder(&cluster, "dz"), None, "released, not expired");
    assert_eq!(
        a.server.stats.disconnect_count(DisconnectCause::Redirected),
        0,
        "counted when the connection ends"
    );

    // b admits the ticket into a fresh instance of the crypt, with the same items.
    let mut there = Bot::connect(&endpoint, b.addr(), &redirect.ticket, "dz")
        .await
        .expect("dz follows the redirect to b");
    assert_eq!(there.client.welcome().zone, 2, "welcomed in the crypt");
    assert_eq!(
        b.server.stats.instances_live.load(Ordering::Relaxed),
        b_instances + 1,
        "a new instance on b"
    );
    assert_eq!(there.inventory().await, inv, "the same inventory");
    assert_eq!(lease_holder(&cluster, "dz").as_deref(), Some("b"));
    assert_eq!(items(&*cluster.store, "dz"), before, "the same items, once");
    eventually("a counts the redirect", WAIT, || {
        a.server.stats.disconnect_count(DisconnectCause::Redirected) == 1
    })
    .await;
    let report = cluster.store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    drop(there);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_busy_keeps_its_new_dungeon_instance() {
    use common::bot::Bot;
    let cluster = Cluster::start_with(|_, _| {}).await;
    // a is busier than b, but not busy: below redirect_above_permille.
    pin_loads(&cluster, [500, 0, 0]).await;
    let endpoint = client_endpoint(cluster.server(0));
    let a = cluster.server(0);
    let mut p = Bot::connect(&endpoint, a.addr(), &a.token("dl"), "dl")
        .await
        .expect("dl joins a");
    let town_instance = p.instance;
    let placement = placement_of(&cluster, 0);
    assert!(!placement.is_overloaded());
    let entered = walk_into_the_crypt(&mut p)
        .await
        .expect("entered on a, no redirect");
    assert_eq!(entered, 2);
    assert_ne!(p.instance, town_instance);
    assert_eq!(
        placement.counters.instances_local.load(Ordering::Relaxed),
        1
    );
    assert_eq!(placement.counters.instances_peer.load(Ordering::Relaxed), 0);
    assert_eq!(lease_holder(&cluster, "dl").as_deref(), Some("a"));
    // Still playing on a.
    let inv = p.inventory().await;
    assert!(!inv.bag.is_empty() || !inv.equipment.is_empty());
    drop(p);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_leader_placed_on_a_peer_brings_its_members() {
    use common::bot::Bot;
    use zonehost_protocol::message::Response;
    use zonehost_protocol::token::player_id;
    let cluster = Cluster::start_with(|_, _| {}).await;
    pin_loads(&cluster, [100, 50, 700]).await;
    let endpoint = client_endpoint(cluster.server(0));
    let (a, b) = (cluster.server(0), cluster.server(1));
    let mut lead = Bot::connect(&endpoint, a.addr(), &a.token("ql"), "ql")
        .await
        .expect("ql joins a");
    let mut member = Bot::connect(&endpoint, a.addr(), &a.token("qm"), "qm")
        .await
        .expect("qm joins a");
    let mut kits = Vec::new();
    for bot in [&mut lead, &mut member] {
        let inv = bot.inventory().await;
        let count = inv.bag.len() + inv.equipment.len();
        let name = bot.name.clone();
        eventually("the starter kit is stored", WAIT, || {
            items(&*cluster.store, &name).len() == count
        })
        .await;
        kits.push((inv, items(&*cluster.store, &name)));
    }
    assert_eq!(
        lead.request(Request::PartyInvite {
            player: "qm".into()
        })
        .await,
        Ok(Response::Done)
    );
    pump_until(&mut member, "the invitation", |inc| match inc {
        Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Invited { .. }))) => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        member.request(Request::PartyAccept).await,
        Ok(Response::Done)
    );
    eventually("the party of two in the store", WAIT, || {
        cluster
            .store
            .party_of(player_id("qm"))
            .ok()
            .flatten()
            .and_then(|p| cluster.store.load_party(p).ok().flatten())
            .is_some_and(|p| p.members.len() == 2 && p.leader == player_id("ql"))
    })
    .await;

    // a turns busy; the leader takes the portal: its new instance goes to b.
    pin_loads(&cluster, [900, 50, 700]).await;
    let redirect = walk_into_the_crypt(&mut lead)
        .await
        .expect_err("the leader's new instance goes to a peer");
    assert_eq!(redirect.address, b.addr().to_string());
    let mut lead = Bot::connect(&endpoint, b.addr(), &redirect.ticket, "ql")
        .await
        .expect("ql follows to b");
    assert_eq!(lead.client.welcome().zone, 2);

    // The member follows its leader's server (party convergence: b tells a, a hands it
    // off) and enters the leader's instance there.
    let redirect = pump_until(&mut member, "the member's redirect", |inc| match inc {
        Incoming::Event(ClientEvent::Redirected(r)) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        redirect.address,
        b.addr().to_string(),
        "to the leader's server"
    );
    let mut member = Bot::connect(&endpoint, b.addr(), &redirect.ticket, "qm")
        .await
        .expect("qm follows to b");
    let deadline = Instant::now() + WAIT;
    while member.instance != lead.instance {
        assert!(
            Instant::now() < deadline,
            "qm never entered the leader's instance {} (is in {})",
            lead.instance,
            member.instance
        );
        member.pump().await.expect("connection alive");
    }
    assert_eq!(Stats::get(&a.server.stats.party_handoffs), 1);
    assert_eq!(
        placement_of(&cluster, 0)
            .counters
            .instances_peer
            .load(Ordering::Relaxed),
        1,
        "one placement: the member joined an existing instance"
    );
    for n in ["ql", "qm"] {
        assert_eq!(lease_holder(&cluster, n).as_deref(), Some("b"), "{n}");
    }
    let party = cluster
        .store
        .party_of(player_id("ql"))
        .expect("party_of")
        .expect("still a party");
    let record = cluster
        .store
        .load_party(party)
        .expect("load")
        .expect("party");
    assert_eq!(record.members.len(), 2);
    assert_eq!(record.leader, player_id("ql"));
    for (bot, (inv, stored)) in [&mut lead, &mut member].into_iter().zip(kits) {
        assert_eq!(bot.inventory().await, inv, "{}'s inventory", bot.name);
        assert_eq!(
            items(&*cluster.store, &bot.name),
            stored,
            "{}'s items",
            bot.name
        );
    }
    let report = cluster.store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    drop((lead, member));
    cluster.stop().await;
}

/// Connects `name` to server `i` as a bot (an account token).
async fn bot_on(
    cluster: &Cluster,
    endpoint: &quinn::Endpoint,
    i: usize,
    name: &str,
) -> common::bot::Bot {
    common::bot::Bot::connect(
        endpoint,
        cluster.server(i).addr(),
        &cluster.server(i).token(name),
        name,
    )
    .await
    .unwrap_or_else(|e| panic!("{name} joins server {i}: {e:?}"))
}

/// Pumps `bot` until it is told it was invited by `by`.
async fn wait_invited(bot: &mut common::bot::Bot, what: &str, by: &str) {
    pump_until(bot, what, |inc| match inc {
        Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Invited { by: who })))
            if who == by =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
}

/// Pumps `bot` until it is told that `by` declined its invitation.
async fn wait_declined(bot: &mut common::bot::Bot, what: &str, by: &str) {
    pump_until(bot, what, |inc| match inc {
        Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Declined { by: who })))
            if who == by =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
}

/// Pumps `bot` until the server redirects it, and connects where it was sent.
async fn follow_redirect(
    bot: &mut common::bot::Bot,
    endpoint: &quinn::Endpoint,
    what: &str,
) -> (common::bot::Bot, SocketAddr) {
    let redirect = pump_until(bot, what, |inc| match inc {
        Incoming::Event(ClientEvent::Redirected(r)) => Some(r.clone()),
        _ => None,
    })
    .await;
    let addr: SocketAddr = redirect.address.parse().expect("address");
    let name = bot.name.clone();
    let moved = common::bot::Bot::connect(endpoint, addr, &redirect.ticket, &name)
        .await
        .unwrap_or_else(|e| panic!("{name} follows the redirect: {e:?}"));
    (moved, addr)
}

fn lease_free(store: &dyn Store, name: &str) -> bool {
    let resource = zonehost::cluster::player_resource(zonehost_protocol::token::player_id(name));
    store
        .lease_of(&resource, zonehost::sim::persist::unix_millis())
        .is_ok_and(|l| l.is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitee_moved_by_a_drain_before_answering_still_joins_the_party() {
    use zonehost_protocol::message::Response;
    use zonehost_protocol::token::player_id;

    let mut cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let a_addr = cluster.server(0).addr();
    eventually("three live load rows", WAIT, || {
        cluster
            .store
            .server_loads(zonehost::sim::persist::unix_millis())
            .is_ok_and(|rows| rows.len() == 3)
    })
    .await;
    let mut lead = bot_on(&cluster, &endpoint, 0, "dlead").await;
    let mut inv = bot_on(&cluster, &endpoint, 1, "dinv").await;
    assert_eq!(
        lead.request(Request::PartyInvite {
            player: "dinv".into()
        })
        .await,
        Ok(Response::Done)
    );
    wait_invited(&mut inv, "the invitation on b", "dlead").await;
    let pending = cluster
        .store
        .invitation_of(player_id("dinv"), zonehost::sim::persist::unix_millis())
        .expect("invitation_of")
        .expect("the invitation is in the store");

    // b drains before dinv answers: dinv is sent to a peer, where it is told again.
    let b = cluster.servers[1].take().expect("b runs");
    let b_addr = b.addr();
    let drain = tokio::spawn(b.stop_keeping_data());
    let (mut inv, at) = follow_redirect(&mut inv, &endpoint, "the drain's redirect").await;
    drain.await.expect("b drained");
    assert_ne!(at, b_addr, "sent to a peer");
    wait_invited(
        &mut inv,
        "the invitation told again after the move",
        "dlead",
    )
    .await;
    assert_eq!(inv.request(Request::PartyAccept).await, Ok(Response::Done));
    // On c it is then sent to its leader's server; on a it is there already.
    let mut inv = if at == a_addr {
        inv
    } else {
        follow_redirect(&mut inv, &endpoint, "the redirect to the leader's server")
            .await
            .0
    };
    let deadline = Instant::now() + WAIT;
    while inv.instance != lead.instance {
        assert!(
            Instant::now() < deadline,
            "never entered the leader's instance"
        );
        inv.pump().await.expect("connection alive");
    }
    let party = cluster
        .store
        .party_of(player_id("dlead"))
        .expect("party_of")
        .expect("a party");
    assert_eq!(party, pending.party_id, "the party it was invited to");
    assert_eq!(
        cluster.store.party_of(player_id("dinv")).expect("party_of"),
        Some(party)
    );
    let record = cluster
        .store
        .load_party(party)
        .expect("load")
        .expect("party");
    assert_eq!(record.members, vec![player_id("dlead"), player_id("dinv")]);
    assert!(record.invites.is_empty());
    assert_eq!(
        cluster
            .store
            .invitation_of(player_id("dinv"), zonehost::sim::persist::unix_millis())
            .expect("invitation_of"),
        None,
        "answered"
    );
    drop((inv, lead));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_told_again_when_the_invitee_logs_in_elsewhere() {
    use zonehost_protocol::message::Response;
    use zonehost_protocol::token::player_id;

    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut lead = bot_on(&cluster, &endpoint, 0, "llead").await;
    let mut inv = bot_on(&cluster, &endpoint, 1, "linv").await;
    assert_eq!(
        lead.request(Request::PartyInvite {
            player: "linv".into()
        })
        .await,
        Ok(Response::Done)
    );
    wait_invited(&mut inv, "the invitation on b", "llead").await;
    // linv logs out of b without answering (a logout does not drop the invitation) and
    // logs in on c once b has released it.
    inv.client.close().await.expect("bye");
    let store = cluster.store.clone();
    eventually("b releases linv", WAIT, || lease_free(&*store, "linv")).await;
    let mut inv = bot_on(&cluster, &endpoint, 2, "linv").await;
    wait_invited(&mut inv, "the invitation told again on c", "llead").await;
    // Declined on c: the leader on a hears it, and the unanswered party is gone.
    assert_eq!(inv.request(Request::PartyDecline).await, Ok(Response::Done));
    wait_declined(&mut lead, "the decline", "linv").await;
    assert_eq!(
        cluster
            .store
            .invitation_of(player_id("linv"), zonehost::sim::persist::unix_millis())
            .expect("invitation_of"),
        None
    );
    assert_eq!(
        cluster
            .store
            .party_of(player_id("llead"))
            .expect("party_of"),
        None
    );
    // Logging in again now announces nothing: the next party event it sees is a new
    // invitation's.
    inv.client.close().await.expect("bye");
    eventually("c releases linv", WAIT, || lease_free(&*store, "linv")).await;
    let mut inv = bot_on(&cluster, &endpoint, 1, "linv").await;
    let quiet_until = Instant::now() + Duration::from_millis(800);
    while let Ok(next) = tokio::time::timeout_at(quiet_until.into(), inv.client.next_event()).await
    {
        inv.handle(next.expect("connection alive"));
    }
    assert!(
        !inv.events.iter().any(|e| matches!(e, Event::Party(_))),
        "a declined invitation is not told again: {:?}",
        inv.events
    );
    assert_eq!(
        lead.request(Request::PartyInvite {
            player: "linv".into()
        })
        .await,
        Ok(Response::Done)
    );
    wait_invited(&mut inv, "a new invitation", "llead").await;
    assert_eq!(inv.request(Request::PartyAccept).await, Ok(Response::Done));
    let party = cluster
        .store
        .party_of(player_id("llead"))
        .expect("party_of")
        .expect("a party");
    assert_eq!(
        cluster.store.party_of(player_id("linv")).expect("party_of"),
        Some(party)
    );
    drop((inv, lead));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invitation_is_refused() {
    use zonehost_protocol::message::{RequestError, Response};
    use zonehost_protocol::token::player_id;

    const INVITE_TTL: Duration = Duration::from_secs(1);
    let cluster = Cluster::start_with(|i, config| {
        no_load_redirects(i, config);
        config.cluster.party_invite_ttl_secs = INVITE_TTL.as_secs();
    })
    .await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut lead = bot_on(&cluster, &endpoint, 0, "elead").await;
    let mut inv = bot_on(&cluster, &endpoint, 1, "einv").await;
    assert_eq!(
        lead.request(Request::PartyInvite {
            player: "einv".into()
        })
        .await,
        Ok(Response::Done)
    );
    // The expiry was set before the answer was sent: it has passed a TTL from now.
    let answered_at = Instant::now();
    wait_invited(&mut inv, "the invitation", "elead").await;
    let left = (answered_at + INVITE_TTL + Duration::from_millis(100))
        .saturating_duration_since(Instant::now());
    tokio::time::sleep(left).await;
    assert_eq!(
        inv.request(Request::PartyAccept).await,
        Err(RequestError::NoInvite)
    );
    assert_eq!(
        inv.request(Request::PartyDecline).await,
        Err(RequestError::NoInvite)
    );
    assert_eq!(
        cluster
            .store
            .invitation_of(player_id("einv"), zonehost::sim::persist::unix_millis())
            .expect("invitation_of"),
        None
    );
    assert_eq!(
        cluster.store.party_of(player_id("einv")).expect("party_of"),
        None,
        "not a member"
    );
    assert_eq!(
        lead.request(Request::PartyLeave).await,
        Err(RequestError::NotInParty),
        "no party was formed"
    );
    drop((inv, lead));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_servers_members_leave_their_party_after_the_grace_and_resumed_ones_stay() {
    use zonehost_protocol::message::Response;
    use zonehost_protocol::token::player_id;

    const RESUME_GRACE: Duration = Duration::from_secs(1);
    let grace = LEASE_TTL + RESUME_GRACE;
    let mut cluster = Cluster::start_with(|i, config| {
        no_load_redirects(i, config);
        config.resume_grace_ms = RESUME_GRACE.as_millis() as u64;
    })
    .await;
    let endpoint = client_endpoint(cluster.server(0));
    // A party of four on b.
    let names = ["xlead", "xm1", "xm2", "xm3"];
    let mut bots = Vec::new();
    for n in names {
        bots.push(bot_on(&cluster, &endpoint, 1, n).await);
    }
    for i in 1..names.len() {
        assert_eq!(
            bots[0]
                .request(Request::PartyInvite {
                    player: names[i].into()
                })
                .await,
            Ok(Response::Done)
        );
        wait_invited(&mut bots[i], "the invitation", "xlead").await;
        assert_eq!(
            bots[i].request(Request::PartyAccept).await,
            Ok(Response::Done)
        );
    }
    let party = cluster
        .store
        .party_of(player_id("xlead"))
        .expect("party_of")
        .expect("a party");
    let ids: Vec<u64> = names.iter().map(|n| player_id(n)).collect();
    let members = |store: &dyn Store| {
        store
            .load_party(party)
            .expect("load")
            .map(|p| (p.leader, p.members))
    };
    assert_eq!(members(&*cluster.store), Some((ids[0], ids.clone())));

    // b crashes: no session end is seen, every lease stays until it expires.
    let b = cluster.servers[1].take().expect("b runs");
    tokio::time::timeout(WAIT, b.server.crash())
        .await
        .expect("b stops in time");
    drop(bots);
    let store = cluster.store.clone();
    eventually("b's leases expire", LEASE_TTL + WAIT, || {
        names.iter().all(|n| lease_free(&*store, n))
    })
    .await;
    assert_eq!(
        members(&*store),
        Some((ids[0], ids.clone())),
        "nobody is removed while no server watches the party"
    );
    // xm1 and xm2 come back on c: c serves the party now and watches the two others.
    let back_at = Instant::now();
    let mut xm1 = bot_on(&cluster, &endpoint, 2, "xm1").await;
    let _xm2 = bot_on(&cluster, &endpoint, 2, "xm2").await;
    eventually("the absent members removed", grace + WAIT, || {
        members(&*store).is_some_and(|(_, m)| m.len() == 2)
    })
    .await;
    assert!(
        back_at.elapsed() >= grace,
        "removed before the absence grace ({:?} after c started watching)",
        back_at.elapsed()
    );
    assert_eq!(
        members(&*store),
        Some((ids[1], vec![ids[1], ids[2]])),
        "the members that came back stay, the oldest of them leads"
    );
    assert_eq!(
        Stats::get(&cluster.server(2).server.stats.party_members_pruned),
        2
    );
    for gone in [ids[0], ids[3]] {
        assert_eq!(cluster.store.party_of(gone).expect("party_of"), None);
    }
    // The live members are told.
    pump_until(&mut xm1, "the party of two", |inc| match inc {
        Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Members {
            leader,
            members,
            ..
        }))) if members.len() == 2 && leader == "xm1" => Some(()),
        _ => None,
    })
    .await;
    drop(xm1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_configured_peers_find_each_other_through_the_store() {
    // No `[cluster.peers]` anywhere: each server publishes its listen address with its load.
    let cluster = Cluster::start_with(|i, c| {
        no_load_redirects(i, c);
        c.cluster.peers.clear();
    })
    .await;
    let (a, b, c) = (cluster.server(0), cluster.server(1), cluster.server(2));
    let pa = placement_of(&cluster, 0);
    assert_eq!(pa.advertise(), Some(a.addr()));
    eventually("a reads its peers' published addresses", WAIT, || {
        pa.peer_address("b") == Some(b.addr()) && pa.peer_address("c") == Some(c.addr())
    })
    .await;
    let endpoint = client_endpoint(a);
    let connect = |addr: SocketAddr, token: String| {
        let endpoint = endpoint.clone();
        async move { Client::connect(&endpoint, addr, "localhost", &token, "test").await }
    };
    let first = connect(b.addr(), b.token("dsc")).await.expect("dsc on b");
    assert!(first.redirected_via().is_empty());
    // dsc logs in on a, which lists no peer: it is sent to b at b's published address.
    let second = connect(a.addr(), a.token("dsc"))
        .await
        .expect("dsc via a on b");
    assert_eq!(second.redirected_via(), &[b.addr()]);
    assert_eq!(lease_holder(&cluster, "dsc").as_deref(), Some("b"));
    drop((first, second));
    cluster.stop().await;
}

/// Pumps `bot` until it is told that its party dissolved (`Members` with no members).
async fn wait_dissolved(bot: &mut common::bot::Bot, what: &str) {
    pump_until(bot, what, |inc| match inc {
        Incoming::Event(ClientEvent::Event(Event::Party(PartyEvent::Members {
            members, ..
        }))) if members.is_empty() => Some(()),
        _ => None,
    })
    .await;
}

/// Issue 16 (4), cluster mode: when a party of two ends, the member left alone is told
/// (`Members` with no members, SPEC §6.4), whoever leaves, through the party directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_of_a_dissolved_party_is_told_in_cluster_mode() {
    use zonehost_protocol::message::Response;

    let cluster = Cluster::start().await;
    let endpoint = client_endpoint(cluster.server(0));
    let mut lead = bot_on(&cluster, &endpoint, 0, "dlead").await;
    let mut m = bot_on(&cluster, &endpoint, 1, "dmem").await;
    let invite = || Request::PartyInvite {
        player: "dmem".into(),
    };
    // Formed across servers: the member is sent to the leader's server.
    assert_eq!(lead.request(invite()).await, Ok(Response::Done));
    wait_invited(&mut m, "the invitation", "dlead").await;
    let _ = m.client.request(Request::PartyAccept).await.expect("sent");
    let (mut m, _) = follow_redirect(&mut m, &endpoint, "the redirect to the leader").await;
    // The member leaves: the leader is told.
    assert_eq!(m.request(Request::PartyLeave).await, Ok(Response::Done));
    wait_dissolved(&mut lead, "the party dissolving after the member left").await;
    // Formed again; the leader leaves: the member is told.
    assert_eq!(lead.request(invite()).await, Ok(Response::Done));
    wait_invited(&mut m, "the second invitation", "dlead").await;
    assert_eq!(m.request(Request::PartyAccept).await, Ok(Response::Done));
    assert_eq!(lead.request(Request::PartyLeave).await, Ok(Response::Done));
    wait_dissolved(&mut m, "the party dissolving after the leader left").await;
    drop((lead, m));
    cluster.stop().await;
}
