//! The load generator in-process against the fake server (real QUIC on 127.0.0.1).

#[path = "../../client/tests/support/fake_server.rs"]
mod fake_server;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use fake_server::FakeServer;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use zonehost_client::Trust;
use zonehost_loadgen::{run, Config, TokenSource};

fn config(server: &FakeServer, players: usize, tokens: TokenSource) -> Config {
    let mut c = Config::new(server.addr, Trust::Certificate(server.cert.clone()), tokens);
    c.players = players;
    c.duration = Duration::from_millis(2500);
    c.ramp_up = Duration::from_millis(500);
    c.sockets = 2;
    c.socket_buffer = 1 << 20;
    c.max_p99 = Some(Duration::from_secs(1));
    c
}

#[tokio::test]
async fn bots_measure_latency_and_pass() {
    let server = FakeServer::start();
    let tokens = TokenSource::SigningKey {
        key: Box::new(SigningKey::from_bytes(&[5; 32])),
        key_id: 0,
        audience: "dev".into(),
        ttl: Duration::from_secs(3600),
    };
    let mut cfg = config(&server, 6, tokens);
    cfg.min_snapshot_ratio = Some(0.5);
    let report = run(cfg).await.expect("run");
    assert!(report.passed(), "{report}");
    assert_eq!(report.bots.connected, 6);
    assert_eq!(report.bots.failed, 0);
    assert!(report.inputs.sent > 6 * 60, "{report}");
    assert!(
        report.inputs.acked * 10 >= report.inputs.sent * 8,
        "{report}"
    );
    assert_eq!(
        report.action_latency.count,
        report.inputs.acked + report.inputs.backfilled
    );
    assert!(report.action_latency.p99_us > 0);
    assert_eq!(report.connect_time.count, 6);
    assert!(
        report.snapshots.ratio > 0.5 && report.snapshots.ratio <= 1.05,
        "{report}"
    );
    let bytes = base64_decode(&report.action_latency.hdr_v2_base64);
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("histogram");
    assert_eq!(h.len(), report.inputs.acked + report.inputs.backfilled);
    let json = report.to_json().expect("json");
    assert!(json.contains("\"p99_us\""));
    // The per-second series covers the run and carries that second's histograms; they add
    // up to the totals.
    assert!(
        report.timeseries.len() >= 2,
        "{:?}",
        report.timeseries.len()
    );
    let mut sum = zonehost_loadgen::decode_hist("").expect("empty");
    for sec in &report.timeseries {
        if let Some(h) = sec.hists.get("move") {
            sum.add(zonehost_loadgen::decode_hist(h).expect("second"))
                .expect("add");
        }
    }
    assert_eq!(sum.len(), report.action_latency.count);
    assert_eq!(
        report.timeseries.iter().map(|s| s.inputs).sum::<u64>(),
        report.inputs.sent
    );
    assert!(report.bandwidth.up_bytes > 0 && report.bandwidth.down_bytes > 0);
    // Floats may differ in the last digit through JSON; everything else comes back as is.
    let back = zonehost_loadgen::Report::from_json(&json).expect("parse back");
    assert!(
        back.timeseries == report.timeseries,
        "time series round-trips"
    );
    assert!(back.inputs == report.inputs && back.bots == report.bots);
    assert_eq!(
        back.action_latency.hdr_v2_base64,
        report.action_latency.hdr_v2_base64
    );
    let page = zonehost_loadgen::html::render(&report);
    assert!(page.contains("<polyline"), "charts have data");
    assert_eq!(
        server.stats.byes.load(std::sync::atomic::Ordering::Relaxed),
        6,
        "every bot said Bye"
    );
    server.stop();
}

#[tokio::test]
async fn rejected_bots_fail_the_run() {
    let server = FakeServer::start();
    let tokens = TokenSource::Fixed(vec!["ok".into(), "reject".into(), "ok2".into()]);
    let mut cfg = config(&server, 3, tokens);
    cfg.duration = Duration::from_millis(1200);
    let report = run(cfg).await.expect("run");
    assert!(!report.passed());
    assert_eq!(report.bots.connected, 2);
    assert_eq!(report.bots.failed, 1);
    let f = &report.failures["connect: rejected invalid_token"];
    assert_eq!(f.count, 1);
    assert!(f.example.contains("test says no"), "{}", f.example);
    assert!(report.to_string().contains("FAIL"));
    server.stop();
}

#[tokio::test]
async fn unreachable_server_is_a_connect_failure() {
    let silent = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut cfg = Config::new(
        addr,
        Trust::Fingerprint([0; 32]),
        TokenSource::Fixed(vec!["t".into()]),
    );
    cfg.players = 1;
    cfg.duration = Duration::from_millis(800);
    cfg.ramp_up = Duration::ZERO;
    cfg.connect_timeout = Duration::from_millis(300);
    let report = run(cfg).await.expect("run");
    assert_eq!(report.bots.failed, 1);
    assert!(report.failures.contains_key("connect: timeout"), "{report}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[tokio::test]
async fn impairment_shifts_latency_by_the_added_delay() {
    let server = FakeServer::start();
    let tokens = TokenSource::SigningKey {
        key: Box::new(SigningKey::from_bytes(&[6; 32])),
        key_id: 0,
        audience: "dev".into(),
        ttl: Duration::from_secs(3600),
    };
    let mut plain = config(&server, 2, tokens);
    plain.duration = Duration::from_millis(2000);
    plain.ramp_up = Duration::from_millis(200);
    plain.max_p99 = None;
    let mut impaired = plain.clone();
    impaired.seed = 2;
    impaired.impair.up.latency = Duration::from_millis(30);
    impaired.impair.down.latency = Duration::from_millis(30);
    impaired.impair.down.loss = 0.02;
    let a = run(plain).await.expect("plain run");
    let b = run(impaired).await.expect("impaired run");
    assert_eq!(b.bots.failed, 0, "{b}");
    assert!(b.run.impairment.contains("up 30ms"), "{}", b.run.impairment);
    // 2 x 30 ms more, give or take one snapshot period (the input now meets another
    // phase of the server's 60 Hz snapshot clock).
    let (pa, pb) = (a.action_latency.p50_us, b.action_latency.p50_us);
    assert!(
        pb >= pa + 60_000 - 17_000 - 3_000 && pb <= pa + 60_000 + 17_000 + 40_000,
        "p50 {pa} µs -> {pb} µs with 2 x 30 ms added"
    );
    // Loss rates themselves are tested in zonehost-client (`up_latency_delays_and_loss_drops`);
    // here ~220 snapshots at 2 % loss against a time-based expectation: only a sanity range.
    assert!(b.snapshots.ratio > 0.8 && b.snapshots.ratio <= 1.05, "{b}");
    server.stop();
}
