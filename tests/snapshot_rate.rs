//! A client that asks for fewer snapshots (`Request::SnapshotRate`, SPEC.md §6.2) gets a
//! whole fraction of the server's rate, from the snapshots of every k-th snapshot tick,
//! each still a delta it can rebuild; asking for 0 restores the server's rate. Real QUIC
//! on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::bot::Bot;
use common::{client_endpoint, TestServer};
use zonehost_client::Incoming;
use zonehost_protocol::message::{Request, Response};

/// Simulation ticks of the snapshots `bot` receives for `window`, skipping the first
/// `settle` (datagrams already in flight when the rate changed). Rebuilt ticks only
/// (`Applied::Complete`), so each one also proves the delta chain held.
async fn snapshot_ticks(bot: &mut Bot, settle: Duration, window: Duration) -> Vec<u32> {
    let start = Instant::now();
    let mut ticks = Vec::new();
    while start.elapsed() < settle + window {
        let next = tokio::time::timeout(Duration::from_secs(5), bot.client.next_event())
            .await
            .expect("something within 5 s")
            .expect("connection alive");
        if let Incoming::Snapshot(info, _) = &next {
            if start.elapsed() >= settle
                && info.applied == zonehost_protocol::snapshot::Applied::Complete
            {
                ticks.push(info.tick);
            }
        }
        bot.handle(next);
    }
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_the_fraction_of_snapshots_it_asked_for() {
    // 60 simulation ticks and 30 snapshots per second: every other tick, at the
    // instance's phase (even or odd).
    let server = TestServer::start(|c| c.snapshot_rate_hz = 30).await;
    let endpoint = client_endpoint(&server);
    let mut bot = Bot::connect(&endpoint, server.addr(), &server.token("sparse"), "sparse")
        .await
        .expect("joins");
    assert_eq!(bot.client.welcome().snapshot_rate_hz, 30);
    let all = snapshot_ticks(&mut bot, Duration::ZERO, Duration::from_millis(600)).await;
    assert!(all.len() >= 10, "30 Hz for 0.6 s: {all:?}");
    assert!(
        all.windows(2).all(|w| (w[1] - w[0]) % 2 == 0),
        "snapshot ticks: {all:?}"
    );

    // 12 Hz is not a whole fraction of 30: the server grants 10 (every third).
    let granted = bot.request(Request::SnapshotRate { hz: 12 }).await;
    assert_eq!(granted, Ok(Response::SnapshotRate { hz: 10 }));
    let sparse = snapshot_ticks(
        &mut bot,
        Duration::from_millis(200),
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        (8..=20).contains(&sparse.len()),
        "10 Hz for 1.5 s: {sparse:?}"
    );
    // Ticks 2 (ticks per snapshot) × 3 (the divisor) apart, at the same phase as before.
    assert!(
        sparse.windows(2).all(|w| (w[1] - w[0]) % 6 == 0),
        "every third: {sparse:?}"
    );
    assert!(
        sparse.iter().all(|t| t % 2 == all[0] % 2),
        "the instance's phase: {sparse:?} after {all:?}"
    );

    // Asking above the server's rate, or 0, gives the server's rate back.
    let granted = bot.request(Request::SnapshotRate { hz: 0 }).await;
    assert_eq!(granted, Ok(Response::SnapshotRate { hz: 30 }));
    let again = snapshot_ticks(
        &mut bot,
        Duration::from_millis(200),
        Duration::from_millis(600),
    )
    .await;
    assert!(again.len() >= 10, "30 Hz again: {again:?}");
    assert!(
        again.windows(2).any(|w| w[1] - w[0] == 2),
        "every snapshot tick again: {again:?}"
    );
    assert_eq!(
        bot.request(Request::SnapshotRate { hz: 500 }).await,
        Ok(Response::SnapshotRate { hz: 30 })
    );
    server.stop().await;
}
