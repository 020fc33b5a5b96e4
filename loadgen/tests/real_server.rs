//! The load generator against the real server, in-process on 127.0.0.1 (UDP port in
//! 25000-25999): every behaviour does what it is for, and nothing is refused for a
//! reason a well-behaved client should never see.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use zonehost_client::Trust;
use zonehost_loadgen::{run, Config, Mix, TokenSource};

struct Running {
    server: zonehost::Server,
    stop: oneshot::Sender<()>,
    dir: std::path::PathBuf,
}

async fn start_server() -> Running {
    start_server_tagged("real").await
}

/// A server in its own data directory (`tag` keeps concurrent tests apart).
async fn start_server_tagged(tag: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("zonehost-loadgen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = 25_000 + (std::process::id() % 900) as u16;
    for port in base..base + 50 {
        let config = zonehost::config::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir: dir.clone(),
            metrics_listen: None,
            ..zonehost::config::Config::default()
        };
        let (stop, rx) = oneshot::channel::<()>();
        match zonehost::start(config, async move {
            let _ = rx.await;
        })
        .await
        {
            Ok(server) => return Running { server, stop, dir },
            Err(e) => eprintln!("port {port}: {e}"),
        }
    }
    panic!("no free UDP port in 25000-25999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_behaviour_against_the_real_server() {
    let s = start_server().await;
    let key = s.server.dev_signing_key.clone().expect("dev key");
    let tokens = TokenSource::SigningKey {
        key: Box::new(key),
        key_id: 0,
        audience: "dev".into(),
        ttl: Duration::from_secs(600),
    };
    let mut c = Config::new(
        s.server.local_addr,
        Trust::Certificate(s.server.certificate.clone()),
        tokens,
    );
    c.players = 16;
    c.duration = Duration::from_secs(12);
    c.ramp_up = Duration::from_secs(1);
    c.input_hz = 60;
    c.sockets = 2;
    c.socket_buffer = 1 << 20;
    c.seed = 3;
    c.mix =
        Mix::parse("mover=1,fighter=3,looter=3,hopper=2,party=4,churner=2,idler=1").expect("mix");
    c.think = (Duration::from_millis(200), Duration::from_millis(500));
    c.churn_session = (Duration::from_secs(3), Duration::from_secs(4));
    c.churn_pause = (Duration::from_millis(300), Duration::from_millis(500));
    c.party_stay = (Duration::from_secs(3), Duration::from_secs(4));
    c.slo = zonehost_loadgen::slo::parse("failures=0,rejected:Internal=0,rejected:RateLimited=0")
        .expect("slo");
    let report = tokio::time::timeout(Duration::from_secs(60), run(c))
        .await
        .expect("bounded")
        .expect("run");
    println!("{report}");
    let count = |k: &str| report.latency.get(k).map_or(0, |p| p.count);
    assert!(report.passed(), "{report}");
    assert_eq!(report.bots.connected, 16);
    assert!(
        report.game.logins > 16,
        "churners logged in again: {report}"
    );
    assert_eq!(count("connect"), report.game.logins);
    assert!(count("inventory") >= 3, "looters read their bags: {report}");
    assert!(
        count("drop") >= 1 && count("pick_up") >= 1,
        "potion dropped and picked up: {report}"
    );
    assert!(count("party") >= 3, "invites and accepts: {report}");
    assert!(count("enter_zone") >= 1, "a hopper changed zones: {report}");
    assert!(
        count("attack") >= 1 && count("attack_log") >= 1,
        "fighters fought: {report}"
    );
    assert!(count("move") > 1000);
    // Bots never hammer a refusal: far fewer refusals than requests.
    assert!(
        report.requests.rejected * 4 <= report.requests.sent.max(4),
        "{:?}",
        report.requests.rejected_by
    );
    let _ = s.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), s.server.wait()).await;
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Issue 18: the server drains (SIGTERM's path: `Goaway`, close) and starts again on the
/// same port and data directory; every bot comes back (a fresh login: the new run does not
/// know the old resume tokens), the report counts the losses and recoveries and has a
/// time-to-recover histogram, and no bot fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_come_back_after_a_drain_and_restart() {
    let s = start_server_tagged("comeback").await;
    let addr = s.server.local_addr;
    let key = s.server.dev_signing_key.clone().expect("dev key");
    let tokens = TokenSource::SigningKey {
        key: Box::new(key),
        key_id: 0,
        audience: "dev".into(),
        ttl: Duration::from_secs(600),
    };
    let mut c = Config::new(
        addr,
        Trust::Certificate(s.server.certificate.clone()),
        tokens,
    );
    const BOTS: u64 = 12;
    c.players = BOTS as usize;
    c.duration = Duration::from_secs(12);
    c.ramp_up = Duration::from_secs(1);
    c.input_hz = 30;
    c.sockets = 2;
    c.socket_buffer = 1 << 20;
    c.seed = 5;
    c.mix = Mix::parse("mover=1,looter=1").expect("mix");
    c.recover_deadline = Some(Duration::from_secs(8));
    let run = tokio::spawn(tokio::time::timeout(Duration::from_secs(60), run(c)));

    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = s.stop.send(());
    tokio::time::timeout(Duration::from_secs(15), s.server.wait())
        .await
        .expect("drained");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = zonehost::config::Config {
        listen: addr,
        data_dir: s.dir.clone(),
        metrics_listen: None,
        ..zonehost::config::Config::default()
    };
    let (stop, rx) = oneshot::channel::<()>();
    let restarted = zonehost::start(config, async move {
        let _ = rx.await;
    })
    .await
    .expect("restarts on the same port");

    let report = run.await.expect("task").expect("bounded").expect("run");
    println!("{report}");
    let recovered = report.latency.get("recover").map_or(0, |p| p.count);
    assert_eq!(report.bots.failed, 0, "{report}");
    assert_eq!(report.recovery.disconnections, BOTS, "{report}");
    assert_eq!(report.recovery.reconnections(), BOTS, "{report}");
    assert_eq!(report.recovery.rejoined, BOTS, "{report}");
    assert_eq!(recovered, BOTS, "a time to recover per bot: {report}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), restarted.wait()).await;
    let _ = std::fs::remove_dir_all(&s.dir);
}
