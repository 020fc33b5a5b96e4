//! zonehost load generator: N bots over real QUIC with realistic behaviours (movers,
//! fighters, looters, zone hoppers, party groups, churners, idlers; see [`Behaviour`]),
//! honest latency per action kind, optional network impairment, and reports that merge.
//!
//! **Latency** is recorded per action kind in hdrhistograms (µs, 3 significant digits,
//! [`Metric`]): a movement input is timed from its slot on the fixed input schedule (not
//! from when it left, so the load generator's own lateness counts: coordinated omission)
//! to the first snapshot reporting it applied, and slots the generator skipped are
//! back-filled; requests are timed to their response, attacks also to their first combat
//! log line, portal steps to `ZoneEntered`, logins to `Welcome`. Refused requests are
//! counted by reason (the `RequestError` variant), not timed.
//!
//! All bots share one tokio runtime and a few UDP sockets ([`Config::sockets`]); the
//! binary uses a current-thread runtime by default (one worker for the network measured
//! best when the load generator shares the machine with the server). Bots batch their
//! samples and take the shared lock a few times per second, not per packet.
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

mod behaviour;
mod bot;
mod brain;
mod config;
mod error;
mod hist;
pub mod html;
mod nav;
mod opslog;
mod report;
pub mod scenario;
pub mod server_metrics;
pub mod slo;
mod stats;
mod tokens;
mod wander;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use zonehost_client::{EndpointBuilder, Impairment};

pub use behaviour::{Behaviour, Mix, MAX_PARTY};
pub use config::{parse_duration, parse_range, Config, TokenSource};
pub use error::Error;
pub use hist::{decode_hist, encode_hist, encode_hist_compact};
pub use report::{
    compare, merge, Bandwidth, BotCounts, FailureCount, GameCounts, InputCounts, OpsLogCounts,
    Percentiles, RecoveryCounts, Report, RequestCounts, RunInfo, SnapshotCounts,
};
pub use stats::{Metric, Second};
pub use tokens::{bot_name, mint};

use behaviour::PartyRole;
use bot::{run_bot, BotPlan, BotSettings, BotSummary};
use opslog::OpsLog;
use stats::{progress_line, sample_second, Counters, Live};

/// How long the endpoints get to deliver the bots' last packets after the run.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Describes an impairment for the report (`up 50ms±10ms loss 2%; down ...`).
pub fn describe_impairment(i: &Impairment) -> String {
    let dir = |name: &str, d: &zonehost_client::Direction| {
        if d.is_none() {
            return None;
        }
        Some(format!(
            "{name} {}ms±{}ms loss {:.1}% reorder {:.1}%",
            d.latency.as_millis(),
            d.jitter.as_millis(),
            d.loss * 100.0,
            d.reorder * 100.0
        ))
    };
    [dir("up", &i.up), dir("down", &i.down)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
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
        .map(|i| {
            let mut imp = config.impair;
            imp.seed = config.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
            EndpointBuilder::new(config.trust.clone())
                .bind(bind)
                .socket_buffers(config.socket_buffer, config.socket_buffer)
                .transport(config.transport.clone())
                .impair(imp)
                .build()
                .map(|e| e.endpoint)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let atlas = match &config.content_dir {
        Some(dir) => {
            nav::Atlas::from_dir(dir).map_err(|e| Error::Config(format!("content: {e}")))?
        }
        None => nav::Atlas::builtin(),
    };
    let (behaviours, roles) = behaviour::assign(&config.mix, config.players, config.seed);
    let live = Arc::new(Live::new());
    let start = Instant::now();
    let servers = config.servers();
    let ops_log = match &config.ops_log {
        Some(path) => Some(Arc::new(OpsLog::create(path, start).map_err(|source| {
            Error::File {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    let settings = Arc::new(BotSettings {
        ops_log,
        server_name: config.server_name.clone(),
        input_hz: config.input_hz,
        input_phase: config.input_phase,
        snapshot_rate_hz: config.snapshot_rate_hz,
        connect_timeout: config.connect_timeout,
        recover_deadline: config.recover_deadline,
        seed: config.seed,
        end_at: start + config.duration,
        atlas: Arc::new(atlas),
        think: config.think,
        view_hz: config.view_hz,
        churn_session: config.churn_session,
        churn_pause: config.churn_pause,
        party_stay: config.party_stay,
        party_trade_every: config.party_trade_every,
        tokens: config.tokens.clone(),
        servers: servers.clone(),
    });
    let server_cost = config.server_metrics.map(|addr| {
        // The window closes a second before the end, while every bot still plays (at
        // the end they all say `Bye`).
        let close = settings.end_at - Duration::from_secs(1).min(config.duration / 10);
        tokio::spawn(server_metrics::measure(
            addr,
            start + config.ramp_up.min(config.duration / 2),
            close,
        ))
    });
    let mut bots = JoinSet::new();
    let n = config.players as u32;
    for (index, token) in tokens.into_iter().enumerate() {
        let offset = config
            .ramp_up
            .mul_f64(f64::from(index as u32) / f64::from(n));
        let name = |i: usize| bot_name(config.seed, i);
        let (party_leader_of, party_member_of) = match &roles[index] {
            Some(PartyRole::Leader { members }) => {
                (members.iter().map(|m| name(*m)).collect(), None)
            }
            Some(PartyRole::Member { leader }) => (Vec::new(), Some(name(*leader))),
            None => (Vec::new(), None),
        };
        let plan = BotPlan {
            index,
            behaviour: behaviours[index],
            token,
            server: servers
                [behaviour::server_of(index, &roles, servers.len(), config.spread_parties)],
            party_leader_of,
            party_member_of,
        };
        bots.spawn(run_bot(
            plan,
            endpoints[index % endpoints.len()].clone(),
            start + offset,
            settings.clone(),
            live.clone(),
        ));
    }
    // One task closes every second: the time series, and the progress line if wanted.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let live = live.clone();
        let players = config.players;
        let end_at = settings.end_at;
        let progress = config.progress;
        tokio::spawn(async move {
            let mut series = Vec::new();
            let mut prev = Counters::default();
            let mut prev_progress = Counters::default();
            let mut ticker =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = start;
            let mut t = 0u32;
            loop {
                tokio::select! {
                    now = ticker.tick() => {
                        t += 1;
                        if progress && now < end_at {
                            eprintln!(
                                "{}",
                                progress_line(&live, &mut prev_progress, now - start, now - last, players)
                            );
                        }
                        series.push(sample_second(&live, &mut prev, t));
                        last = now;
                    }
                    _ = &mut stop_rx => {
                        // The last, partial second.
                        t += 1;
                        series.push(sample_second(&live, &mut prev, t));
                        break;
                    }
                }
            }
            series
        })
    };

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
    let _ = stop_tx.send(());
    let series = sampler.await.unwrap_or_default();
    // The connections are already closing in the background; give them one shared bound.
    let drain = async {
        for e in &endpoints {
            e.wait_idle().await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_BOUND, drain).await;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for b in &behaviours {
        *counts.entry(b.name().to_string()).or_insert(0) += 1;
    }
    let server_cost = match server_cost {
        Some(task) => Some(match task.await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }),
        None => None,
    };
    let ops_log = settings.ops_log.as_deref();
    if let Some(log) = ops_log {
        log.flush().map_err(|source| Error::File {
            path: config.ops_log.clone().unwrap_or_default(),
            source,
        })?;
    }
    let mut report = build_report(&config, &live, &summaries, elapsed, series, counts, ops_log);
    match server_cost {
        Some(Ok(c)) => report.server_cost = Some(c),
        Some(Err(e)) => report.server_cost_error = Some(e),
        None => {}
    }
    Ok(report)
}

fn build_report(
    config: &Config,
    live: &Live,
    bots: &[BotSummary],
    elapsed: Duration,
    timeseries: Vec<Second>,
    behaviours: BTreeMap<String, u64>,
    ops_log: Option<&OpsLog>,
) -> Report {
    let latency: BTreeMap<String, Percentiles> = {
        let mut h = live.hists();
        // Samples of a second the sampler did not close (it always closes the last one;
        // this is for a sampler that died).
        let _ = h.close_window();
        Metric::ALL
            .iter()
            .zip(h.total.iter())
            .map(|(m, h)| (m.name().to_string(), Percentiles::of(h)))
            .collect()
    };
    let get = |m: Metric| latency[m.name()].clone();
    let received: u64 = bots.iter().map(|b| b.snapshots).sum();
    let expected: f64 = bots.iter().map(|b| b.expected_snapshots).sum();
    let bot_seconds: f64 = bots.iter().map(|b| b.connected_secs).sum();
    let ratio = if expected > 0.0 {
        received as f64 / expected
    } else {
        1.0
    };
    let mut slo = config.slo.clone();
    if let Some(max) = config.max_p99 {
        if let Ok(mut s) = slo::parse(&format!("p99<={}us", max.as_micros())) {
            slo.append(&mut s);
        }
    }
    if let Some(min) = config.min_snapshot_ratio {
        if let Ok(mut s) = slo::parse(&format!("snapshot_ratio>={min}")) {
            slo.append(&mut s);
        }
    }
    let up = Live::get(&live.bytes_up);
    let down = Live::get(&live.bytes_down);
    let mut report = Report {
        run: RunInfo {
            server: config
                .servers()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            players: config.players,
            duration_s: config.duration.as_secs_f64(),
            ramp_up_s: config.ramp_up.as_secs_f64(),
            input_hz: config.input_hz,
            sockets: config.sockets,
            seed: config.seed,
            elapsed_s: elapsed.as_secs_f64(),
            scenario: config.scenario.clone(),
            mix: config.mix.describe(),
            behaviours,
            impairment: describe_impairment(&config.impair),
            slo,
            merged_from: Vec::new(),
            asked_snapshot_rate_hz: config.snapshot_rate_hz,
        },
        action_latency: get(Metric::Move),
        connect_time: get(Metric::Connect),
        send_lag: get(Metric::SendLag),
        latency,
        bots: BotCounts {
            planned: config.players as u64,
            connected: bots.iter().filter(|b| b.connected).count() as u64,
            failed: bots.iter().filter(|b| b.failed).count() as u64,
            cut_at_end: Live::get(&live.cut_at_end),
        },
        inputs: InputCounts {
            sent: Live::get(&live.inputs),
            acked: Live::get(&live.acks),
            skipped_ticks: Live::get(&live.skipped_ticks),
            send_errors: Live::get(&live.send_errors),
            backfilled: Live::get(&live.backfilled),
        },
        snapshots: SnapshotCounts {
            received,
            expected,
            ratio,
            datagrams: Live::get(&live.snapshot_datagrams),
            bytes: Live::get(&live.snapshot_bytes),
            bad_datagrams: Live::get(&live.bad_datagrams),
            late: Live::get(&live.late_snapshots),
        },
        requests: RequestCounts {
            sent: Live::get(&live.requests),
            answered: Live::get(&live.responses),
            rejected: Live::get(&live.rejected),
            rejected_by: live.rejections(),
        },
        bandwidth: Bandwidth::new(up, down, bot_seconds)
            .with_packets(Live::get(&live.packets_up), Live::get(&live.packets_down))
            .with_ack_only(Live::get(&live.ack_only_up), Live::get(&live.ack_only_down)),
        game: GameCounts {
            logins: Live::get(&live.connects),
            kills: Live::get(&live.kills),
            deaths: Live::get(&live.deaths),
            zone_changes: Live::get(&live.zone_changes),
            loot_picked_up: Live::get(&live.loot_picked_up),
            events: Live::get(&live.events),
        },
        recovery: RecoveryCounts {
            disconnections: Live::get(&live.disconnections),
            attempts: Live::get(&live.reconnect_attempts),
            resumed: Live::get(&live.resumed),
            rejoined: Live::get(&live.rejoined),
        },
        server_cost: None,
        server_cost_error: None,
        ops_log: ops_log.map_or_else(OpsLogCounts::default, |l| OpsLogCounts {
            records: l.records(),
            write_errors: l.write_errors(),
        }),
        actions: Live::get(&live.actions),
        events: Live::get(&live.events),
        responses: Live::get(&live.responses),
        failures: live.failures(),
        timeseries,
        passed: false,
        violations: Vec::new(),
    };
    report.evaluate();
    report
}
