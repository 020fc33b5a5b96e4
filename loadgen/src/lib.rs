//! zonehost load generator: N bots over real QUIC, each authenticating, sending movement
//! inputs on a fixed schedule and reading snapshots, with honest latency measurement.
//!
//! **Action latency** is the time from sending input `k` to receiving the first snapshot
//! that reports an applied input sequence `>= k` (measured by the protocol's
//! [`ClientSession`](zonehost_protocol::ClientSession)). It is recorded in an hdrhistogram
//! (µs, 3 significant digits), next to the connect+authentication time and the
//! *send lag* (how late each input left against its schedule: when it grows, the load
//! generator itself is the bottleneck and the latencies overstate the server's).
//!
//! All bots share one tokio runtime and a few UDP sockets ([`Config::sockets`]); the
//! binary uses a current-thread runtime by default (one worker for the network measured
//! best when the load generator shares the machine with the server).
//!
//! ```no_run
//! # async fn f() -> Result<(), zonehost_loadgen::Error> {
//! use zonehost_client::Trust;
//! use zonehost_loadgen::{run, Config, TokenSource};
//! let tokens = TokenSource::signing_key_file("data/dev-signing.key", 0, "dev")?;
//! let trust = Trust::certificate_file("data/cert.der").map_err(zonehost_loadgen::Error::Client)?;
//! let mut config = Config::new("127.0.0.1:4433".parse().expect("addr"), trust, tokens);
//! config.players = 100;
//! let report = run(config).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod bot;
mod config;
mod report;
mod stats;
mod tokens;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use zonehost_client::{ClientError, EndpointBuilder};

pub use config::{parse_duration, Config, TokenSource};
pub use report::{
    BotCounts, FailureCount, InputCounts, Percentiles, Report, RunInfo, SnapshotCounts,
};
pub use tokens::{bot_name, mint};

use bot::{run_bot, BotSettings, BotSummary};
use stats::{progress_line, Live, ProgressState};

/// How long the endpoints get to deliver the bots' last packets after the run.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Tokens could not be obtained.
    #[error("tokens: {0}")]
    Token(String),
    /// The client library failed (TLS configuration, socket).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Runs the load test described by `config` to its end and reports what it measured.
///
/// Bot failures are not errors: they are counted in the report, which then does not pass.
/// Errors are for what prevents the run from starting (settings, tokens, sockets).
pub async fn run(config: Config) -> Result<Report, Error> {
    config.validate()?;
    let tokens = {
        let (source, seed, players) = (config.tokens.clone(), config.seed, config.players);
        tokio::task::spawn_blocking(move || tokens::tokens_for(&source, seed, players))
            .await
            .map_err(|e| Error::Token(format!("token task: {e}")))??
    };
    let bind = match config.server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let endpoints = (0..config.sockets.min(config.players))
        .map(|_| {
            EndpointBuilder::new(config.trust.clone())
                .bind(bind)
                .socket_buffers(config.socket_buffer, config.socket_buffer)
                .transport(config.transport.clone())
                .build()
                .map(|e| e.endpoint)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let live = Arc::new(Live::new());
    let start = Instant::now();
    let settings = Arc::new(BotSettings {
        server: config.server,
        server_name: config.server_name.clone(),
        input_hz: config.input_hz,
        connect_timeout: config.connect_timeout,
        seed: config.seed,
        end_at: start + config.duration,
    });
    let mut bots = JoinSet::new();
    let n = config.players as u32;
    for (index, token) in tokens.into_iter().enumerate() {
        let offset = config
            .ramp_up
            .mul_f64(f64::from(index as u32) / f64::from(n));
        bots.spawn(run_bot(
            index,
            token,
            endpoints[index % endpoints.len()].clone(),
            start + offset,
            settings.clone(),
            live.clone(),
        ));
    }
    let progress = config.progress.then(|| {
        let live = live.clone();
        let players = config.players;
        let end_at = settings.end_at;
        tokio::spawn(async move {
            let mut prev = ProgressState::default();
            let mut ticker =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = start;
            loop {
                let now = ticker.tick().await;
                if now >= end_at {
                    break;
                }
                eprintln!(
                    "{}",
                    progress_line(&live, &mut prev, now - start, now - last, players)
                );
                last = now;
            }
        })
    });

    let mut summaries = Vec::with_capacity(config.players);
    while let Some(joined) = bots.join_next().await {
        match joined {
            Ok(s) => summaries.push(s),
            Err(e) => {
                live.fail("bot task panicked".into(), e.to_string());
                summaries.push(BotSummary {
                    failed: true,
                    ..BotSummary::default()
                });
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    // The connections are already closing in the background; give them one shared bound.
    let drain = async {
        for e in &endpoints {
            e.wait_idle().await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_BOUND, drain).await;
    Ok(build_report(&config, &live, &summaries, elapsed))
}

fn build_report(config: &Config, live: &Live, bots: &[BotSummary], elapsed: Duration) -> Report {
    let hists = live.hists();
    let action_latency = Percentiles::of(&hists.action);
    let connect_time = Percentiles::of(&hists.connect);
    let send_lag = Percentiles::of(&hists.send_lag);
    drop(hists);
    let received: u64 = bots.iter().map(|b| b.snapshots).sum();
    let expected: f64 = bots.iter().map(|b| b.expected_snapshots).sum();
    let ratio = if expected > 0.0 {
        received as f64 / expected
    } else {
        1.0
    };
    let report = Report {
        run: RunInfo {
            server: config.server.to_string(),
            players: config.players,
            duration_s: config.duration.as_secs_f64(),
            ramp_up_s: config.ramp_up.as_secs_f64(),
            input_hz: config.input_hz,
            sockets: config.sockets,
            seed: config.seed,
            elapsed_s: elapsed.as_secs_f64(),
        },
        action_latency,
        connect_time,
        send_lag,
        bots: BotCounts {
            planned: config.players as u64,
            connected: bots.iter().filter(|b| b.connected).count() as u64,
            failed: bots.iter().filter(|b| b.failed).count() as u64,
        },
        inputs: InputCounts {
            sent: Live::get(&live.inputs),
            acked: Live::get(&live.acks),
            skipped_ticks: Live::get(&live.skipped_ticks),
            send_errors: Live::get(&live.send_errors),
        },
        snapshots: SnapshotCounts {
            received,
            expected,
            ratio,
            datagrams: Live::get(&live.snapshot_datagrams),
            bytes: Live::get(&live.snapshot_bytes),
            bad_datagrams: Live::get(&live.bad_datagrams),
        },
        events: Live::get(&live.events),
        responses: Live::get(&live.responses),
        failures: live.failures(),
        passed: false,
        violations: Vec::new(),
    };
    let violations = violations(config, &report);
    Report {
        passed: violations.is_empty(),
        violations,
        ..report
    }
}

/// The criteria a run must meet.
fn violations(config: &Config, r: &Report) -> Vec<String> {
    let mut v = Vec::new();
    if r.bots.failed > 0 {
        v.push(format!(
            "{} of {} bots failed",
            r.bots.failed, r.bots.planned
        ));
    }
    if r.inputs.sent > 0 && r.inputs.acked == 0 {
        v.push("no input was acknowledged".into());
    }
    if let Some(max) = config.max_p99 {
        let p99 = Duration::from_micros(r.action_latency.p99_us);
        if p99 > max {
            v.push(format!(
                "action latency p99 {:.2} ms exceeds {:.2} ms",
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            ));
        }
    }
    if let Some(min) = config.min_snapshot_ratio {
        if r.snapshots.ratio < min {
            v.push(format!(
                "snapshot ratio {:.3} below {min:.3}",
                r.snapshots.ratio
            ));
        }
    }
    v
}
