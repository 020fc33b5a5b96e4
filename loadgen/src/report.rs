//! The result of a run: JSON-serializable [`Report`] (histograms included, so reports of
//! several load generators merge exactly), its text table, [`merge`] and [`compare`].

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::hist::{decode_hist, encode_hist, encode_hist_compact};
use crate::slo::Slo;
pub use crate::stats::FailureCount;
use crate::stats::{Metric, Second};

/// Percentiles of one histogram, in microseconds, plus the histogram itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// The hdrhistogram in V2 serialization, base64 (standard alphabet, padded); decode with
    /// `hdrhistogram::serialization::Deserializer`.
    pub hdr_v2_base64: String,
}

impl Percentiles {
    /// Summarizes `h` (microseconds). An empty histogram gives zeros.
    pub fn of(h: &Histogram<u64>) -> Self {
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        Self {
            count: h.len(),
            min_us: if empty { 0 } else { h.min() },
            mean_us: if empty { 0.0 } else { h.mean() },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0 } else { h.max() },
            hdr_v2_base64: encode_hist(h),
        }
    }

    /// The histogram back.
    pub fn histogram(&self) -> Result<Histogram<u64>, String> {
        decode_hist(&self.hdr_v2_base64)
    }
}

/// Bot outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotCounts {
    /// Bots planned.
    pub planned: u64,
    /// Bots that got a `Welcome` at least once.
    pub connected: u64,
    /// Bots that failed (connect error, reject, disconnect before the end).
    pub failed: u64,
    /// Reconnects (a churner's next session) still in progress when the run ended: not
    /// failures.
    #[serde(default)]
    pub cut_at_end: u64,
}

/// Input counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputCounts {
    /// Input datagrams sent.
    pub sent: u64,
    /// Inputs reported applied by a snapshot.
    pub acked: u64,
    /// Schedule slots skipped because a bot was not polled in time (load generator overload).
    pub skipped_ticks: u64,
    /// Inputs that could not be sent.
    pub send_errors: u64,
    /// Move-latency samples added for skipped schedule slots (coordinated-omission
    /// correction): the move histogram holds `acked + backfilled` samples.
    #[serde(default)]
    pub backfilled: u64,
}

/// Snapshot counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCounts {
    /// Distinct snapshot ticks received, summed over bots.
    pub received: u64,
    /// `snapshot_rate_hz` × seconds each bot was welcomed, summed over bots.
    pub expected: f64,
    /// `received / expected` (1 when nothing was expected); `1 - ratio` is the loss.
    pub ratio: f64,
    /// Snapshot datagrams accepted (a tick may come in several parts).
    pub datagrams: u64,
    /// Bytes of the accepted snapshot datagrams.
    pub bytes: u64,
    /// Datagrams the client session refused.
    pub bad_datagrams: u64,
    /// Snapshot datagrams that arrived after a newer tick (reordered or delayed; counted as
    /// lost in `ratio`).
    #[serde(default)]
    pub late: u64,
}

/// UDP traffic of the bots (quinn connection statistics: QUIC overhead included).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Bytes sent by all bots.
    pub up_bytes: u64,
    /// Bytes received by all bots.
    pub down_bytes: u64,
    /// Seconds bots were connected, summed.
    pub bot_seconds: f64,
    /// `up_bytes × 8 / bot_seconds`: bits per second sent per connected bot.
    pub up_bps_per_bot: f64,
    /// `down_bytes × 8 / bot_seconds`: bits per second received per connected bot.
    pub down_bps_per_bot: f64,
    /// UDP packets sent by all bots (QUIC packets coalesced in one datagram count once).
    #[serde(default)]
    pub up_packets: u64,
    /// UDP packets received by all bots.
    #[serde(default)]
    pub down_packets: u64,
    /// `up_packets / bot_seconds`: packets per second sent per connected bot.
    #[serde(default)]
    pub up_pps_per_bot: f64,
    /// `down_packets / bot_seconds`: packets per second received per connected bot.
    #[serde(default)]
    pub down_pps_per_bot: f64,
    /// Of `up_packets`, those that carried nothing but ACK frames (estimated from quinn's
    /// frame counts, see `zonehost_client::acks::ack_only_estimate`).
    #[serde(default)]
    pub up_ack_only: u64,
    /// Of `down_packets`, those that carried nothing but ACK frames (estimated).
    #[serde(default)]
    pub down_ack_only: u64,
    /// `up_ack_only / up_packets` (0 without packets).
    #[serde(default)]
    pub up_ack_only_share: f64,
    /// `down_ack_only / down_packets` (0 without packets).
    #[serde(default)]
    pub down_ack_only_share: f64,
}

impl Bandwidth {
    /// With UDP packet counts: `(up, down)`.
    pub(crate) fn with_packets(mut self, up: u64, down: u64) -> Self {
        let per = |n: u64| {
            if self.bot_seconds > 0.0 {
                n as f64 / self.bot_seconds
            } else {
                0.0
            }
        };
        (self.up_pps_per_bot, self.down_pps_per_bot) = (per(up), per(down));
        (self.up_packets, self.down_packets) = (up, down);
        self
    }

    /// With ACK-only packet counts `(up, down)`, after [`Bandwidth::with_packets`].
    pub(crate) fn with_ack_only(mut self, up: u64, down: u64) -> Self {
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        self.up_ack_only_share = share(up, self.up_packets);
        self.down_ack_only_share = share(down, self.down_packets);
        (self.up_ack_only, self.down_ack_only) = (up, down);
        self
    }

    /// Both directions' ACK-only packets over all packets (0 without packets).
    pub fn ack_only_share(&self) -> f64 {
        let packets = self.up_packets + self.down_packets;
        if packets == 0 {
            0.0
        } else {
            (self.up_ack_only + self.down_ack_only) as f64 / packets as f64
        }
    }

    pub(crate) fn new(up_bytes: u64, down_bytes: u64, bot_seconds: f64) -> Self {
        let per = |b: u64| {
            if bot_seconds > 0.0 {
                b as f64 * 8.0 / bot_seconds
            } else {
                0.0
            }
        };
        Self {
            up_bytes,
            down_bytes,
            bot_seconds,
            up_bps_per_bot: per(up_bytes),
            down_bps_per_bot: per(down_bytes),
            ..Self::default()
        }
    }
}

/// Request counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Requests sent.
    pub sent: u64,
    /// Responses received.
    pub answered: u64,
    /// Requests refused.
    pub rejected: u64,
    /// Refusals by `<action>:<RequestError variant>` (e.g. `attack:TooFar`).
    pub rejected_by: BTreeMap<String, u64>,
}

/// What happened in the game.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GameCounts {
    /// Logins completed (first connects and churners' reconnects).
    pub logins: u64,
    /// Monsters killed by bots.
    pub kills: u64,
    /// Bot deaths.
    pub deaths: u64,
    /// Zone changes (portals, deaths, party moves).
    pub zone_changes: u64,
    /// Items looters picked up from their own kills' drops (not their own dropped potions).
    #[serde(default)]
    pub loot_picked_up: u64,
    /// Reliable events received (other than responses).
    pub events: u64,
}

/// Connections lost during the run and how the bots got back (time to recover is the
/// `recover` latency histogram).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecoveryCounts {
    /// Connections lost (reset, idle timeout, server close after `Goaway`...).
    pub disconnections: u64,
    /// Reconnection attempts.
    pub attempts: u64,
    /// Sessions got back by their resume token.
    pub resumed: u64,
    /// Sessions got back by a fresh login (the server refused the resume).
    pub rejoined: u64,
}

impl RecoveryCounts {
    /// Sessions got back, either way.
    pub fn reconnections(&self) -> u64 {
        self.resumed + self.rejoined
    }
}

/// The confirmed-operations log (`--ops-log`), when one was written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpsLogCounts {
    /// Records written.
    pub records: u64,
    /// Records that could not be written (the run then fails: a drill cannot be checked
    /// against an incomplete log).
    pub write_errors: u64,
}

/// The run parameters echoed into the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Server address.
    pub server: String,
    /// Bots.
    pub players: usize,
    /// Planned duration, seconds.
    pub duration_s: f64,
    /// Ramp-up, seconds.
    pub ramp_up_s: f64,
    /// Inputs per second per bot.
    pub input_hz: u32,
    /// Client sockets.
    pub sockets: usize,
    /// Seed.
    pub seed: u64,
    /// Wall time from the start until the last bot finished (its `Bye` included), seconds.
    pub elapsed_s: f64,
    /// Scenario name, if one was used.
    #[serde(default)]
    pub scenario: Option<String>,
    /// Behaviour weights (`mover=40,fighter=30`).
    #[serde(default)]
    pub mix: String,
    /// Bots per behaviour.
    #[serde(default)]
    pub behaviours: BTreeMap<String, u64>,
    /// Impairment in effect (empty: none).
    #[serde(default)]
    pub impairment: String,
    /// Objectives the run was checked against.
    #[serde(default)]
    pub slo: Vec<Slo>,
    /// Reports merged into this one (empty for a single run).
    #[serde(default)]
    pub merged_from: Vec<String>,
    /// Snapshots per second each bot asked for (`Request::SnapshotRate`); `None`: the
    /// server's rate.
    #[serde(default)]
    pub asked_snapshot_rate_hz: Option<u16>,
}

/// Everything a run measured, and whether it passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Parameters.
    pub run: RunInfo,
    /// Movement latency (same as `latency.move`; kept for older tooling).
    pub action_latency: Percentiles,
    /// Connect + authentication (same as `latency.connect`).
    pub connect_time: Percentiles,
    /// How late inputs were sent against their fixed schedule (same as `latency.send_lag`).
    pub send_lag: Percentiles,
    /// Every latency histogram by metric name ([`Metric::name`]).
    #[serde(default)]
    pub latency: BTreeMap<String, Percentiles>,
    /// Bot outcomes.
    pub bots: BotCounts,
    /// Inputs.
    pub inputs: InputCounts,
    /// Snapshots.
    pub snapshots: SnapshotCounts,
    /// Requests.
    #[serde(default)]
    pub requests: RequestCounts,
    /// UDP traffic.
    #[serde(default)]
    pub bandwidth: Bandwidth,
    /// Game outcomes.
    #[serde(default)]
    pub game: GameCounts,
    /// Lost connections and recoveries.
    #[serde(default)]
    pub recovery: RecoveryCounts,
    /// The confirmed-operations log.
    #[serde(default)]
    pub ops_log: OpsLogCounts,
    /// The server's CPU and memory over the window (`--server-metrics`).
    #[serde(default)]
    pub server_cost: Option<crate::server_metrics::ServerCost>,
    /// Why the server's cost could not be read, when asked for.
    #[serde(default)]
    pub server_cost_error: Option<String>,
    /// Actions completed (moves acknowledged, requests answered successfully).
    #[serde(default)]
    pub actions: u64,
    /// Reliable events received (other than responses).
    pub events: u64,
    /// Responses received.
    pub responses: u64,
    /// Failure reasons with counts.
    pub failures: BTreeMap<String, FailureCount>,
    /// Per-second time series.
    #[serde(default)]
    pub timeseries: Vec<Second>,
    /// Whether every criterion held (`violations` is empty).
    pub passed: bool,
    /// Why the run failed its criteria; empty when it passed.
    pub violations: Vec<String>,
}

impl Report {
    /// Whether every criterion held.
    pub fn passed(&self) -> bool {
        self.passed && self.violations.is_empty()
    }

    /// The verdict in one word: `FAIL` when a criterion failed, `PASS` when objectives were
    /// given and all held, `NO OBJECTIVES` when none were given (only the built-in checks
    /// ran: no bot failed, inputs were acknowledged): a run without objectives proves
    /// nothing about latency and must not read as a pass.
    pub fn verdict(&self) -> &'static str {
        if !self.passed() {
            "FAIL"
        } else if self.run.slo.is_empty() {
            "NO OBJECTIVES"
        } else {
            "PASS"
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Reads a report written by [`Report::to_json`].
    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Checks the built-in criteria (no bot failed, inputs were acknowledged) and the
    /// run's objectives; sets `passed` and `violations`.
    pub fn evaluate(&mut self) {
        let mut v = Vec::new();
        if self.bots.failed > 0 {
            v.push(format!(
                "{} of {} bots failed",
                self.bots.failed, self.bots.planned
            ));
        }
        if self.inputs.sent > 0 && self.inputs.acked == 0 {
            v.push("no input was acknowledged".into());
        }
        if self.ops_log.write_errors > 0 {
            v.push(format!(
                "{} confirmed-operation records could not be written",
                self.ops_log.write_errors
            ));
        }
        for slo in &self.run.slo {
            if let Some(why) = slo.check(self) {
                v.push(why);
            }
        }
        self.passed = v.is_empty();
        self.violations = v;
    }

    /// Actions per second over the run.
    pub fn actions_per_second(&self) -> f64 {
        if self.run.elapsed_s > 0.0 {
            self.actions as f64 / self.run.elapsed_s
        } else {
            0.0
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

/// A human-readable size.
pub(crate) fn human_bits(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else {
        format!("{:.1} kbit/s", bps / 1e3)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.run;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "zonehost loadgen: {} players against {}, {:.0}s (ramp-up {:.0}s), inputs at {} Hz, {} sockets, seed {}; ran {:.1}s",
            r.players, r.server, r.duration_s, r.ramp_up_s, r.input_hz, r.sockets, r.seed, r.elapsed_s
        );
        if let Some(hz) = r.asked_snapshot_rate_hz {
            let _ = writeln!(s, "bots asked for at most {hz} snapshots per second");
        }
        if let Some(name) = &r.scenario {
            let _ = writeln!(s, "scenario: {name}");
        }
        if !r.behaviours.is_empty() {
            let b: Vec<String> = r
                .behaviours
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            let _ = writeln!(s, "bots: {}", b.join(", "));
        }
        if !r.impairment.is_empty() {
            let _ = writeln!(s, "impairment: {}", r.impairment);
        }
        if !r.merged_from.is_empty() {
            let _ = writeln!(s, "merged from: {}", r.merged_from.join(", "));
        }
        let _ = writeln!(
            s,
            "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "latency", "p50", "p90", "p99", "p99.9", "max", "count", "refused"
        );
        for m in Metric::ALL {
            let Some(p) = self.latency.get(m.name()) else {
                continue;
            };
            let refused: u64 = self
                .requests
                .rejected_by
                .iter()
                .filter(|(k, _)| k.split(':').next() == Some(m.name()))
                .map(|(_, n)| n)
                .sum();
            if p.count == 0 && refused == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                m.name(),
                ms(p.p50_us),
                ms(p.p90_us),
                ms(p.p99_us),
                ms(p.p999_us),
                ms(p.max_us),
                p.count,
                refused
            );
        }
        let b = &self.bots;
        let _ = writeln!(
            s,
            "bots: {} planned, {} connected, {} failed; {} logins, {} kills, {} deaths, {} zone changes, {} loot picked up",
            b.planned, b.connected, b.failed, self.game.logins, self.game.kills, self.game.deaths, self.game.zone_changes, self.game.loot_picked_up
        );
        if b.cut_at_end > 0 {
            let _ = writeln!(
                s,
                "bots: {} reconnects still in progress at the end of the run (not failures)",
                b.cut_at_end
            );
        }
        let rc = &self.recovery;
        if rc.disconnections > 0 {
            let _ = writeln!(
                s,
                "recovery: {} disconnections, {} reconnections ({} resumed, {} rejoined), {} attempts",
                rc.disconnections,
                rc.reconnections(),
                rc.resumed,
                rc.rejoined,
                rc.attempts
            );
        }
        if let Some(c) = &self.server_cost {
            let _ = writeln!(
                s,
                "server (http://{}/metrics, over {:.0} s): CPU {:.1} % of a core, RSS {:.1} MiB with {} players: {:.3} % of a core and {:.1} KiB per player",
                c.metrics,
                c.window_s,
                c.cpu_percent,
                c.rss_bytes as f64 / (1024.0 * 1024.0),
                c.players,
                c.cpu_percent_per_player,
                c.rss_kib_per_player
            );
        }
        if let Some(e) = &self.server_cost_error {
            let _ = writeln!(s, "server cost: not measured ({e})");
        }
        if self.ops_log.records + self.ops_log.write_errors > 0 {
            let _ = writeln!(
                s,
                "ops log: {} confirmed-operation records, {} write errors",
                self.ops_log.records, self.ops_log.write_errors
            );
        }
        let i = &self.inputs;
        let _ = writeln!(
            s,
            "inputs: {} sent, {} acked ({:.2}%), {} skipped schedule slots, {} send errors; {:.0} actions/s",
            i.sent,
            i.acked,
            if i.sent == 0 {
                0.0
            } else {
                100.0 * i.acked as f64 / i.sent as f64
            },
            i.skipped_ticks,
            i.send_errors,
            self.actions_per_second()
        );
        let q = &self.requests;
        let _ = writeln!(
            s,
            "requests: {} sent, {} answered, {} refused",
            q.sent, q.answered, q.rejected
        );
        if !q.rejected_by.is_empty() {
            let by: Vec<String> = q
                .rejected_by
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "  refused by reason: {}", by.join(", "));
        }
        let sn = &self.snapshots;
        let _ = writeln!(
            s,
            "snapshots: {} ticks received / {:.0} expected ({:.2}%, loss {:.2}%); {} datagrams ({:.2} per tick, {:.0} B avg), {} late, {} bad; events {}, responses {}",
            sn.received,
            sn.expected,
            100.0 * sn.ratio,
            100.0 * (1.0 - sn.ratio).max(0.0),
            sn.datagrams,
            if sn.received == 0 { 0.0 } else { sn.datagrams as f64 / sn.received as f64 },
            if sn.datagrams == 0 { 0.0 } else { sn.bytes as f64 / sn.datagrams as f64 },
            sn.late,
            sn.bad_datagrams,
            self.events,
            self.responses
        );
        let bw = &self.bandwidth;
        let _ = writeln!(
            s,
            "bandwidth per bot: up {}, down {} ({} B sent, {} B received in total)",
            human_bits(bw.up_bps_per_bot),
            human_bits(bw.down_bps_per_bot),
            bw.up_bytes,
            bw.down_bytes
        );
        if bw.up_packets + bw.down_packets > 0 {
            let _ = writeln!(
                s,
                "UDP packets per bot: up {:.1}/s, down {:.1}/s ({} sent, {} received in total); \
                 ACK-only up {:.1} %, down {:.1} %, both {:.1} %",
                bw.up_pps_per_bot,
                bw.down_pps_per_bot,
                bw.up_packets,
                bw.down_packets,
                bw.up_ack_only_share * 100.0,
                bw.down_ack_only_share * 100.0,
                bw.ack_only_share() * 100.0
            );
        }
        let period_us = 1e6 / f64::from(r.input_hz.max(1));
        if self.send_lag.p99_us as f64 > period_us || i.skipped_ticks * 100 > i.sent {
            let _ = writeln!(
                s,
                "warning: the load generator fell behind its input schedule (send lag p99 {}, {} slots skipped); \
                 its own CPU starvation is part of the latencies above",
                ms(self.send_lag.p99_us),
                i.skipped_ticks
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "failures:");
            for (kind, c) in &self.failures {
                let _ = writeln!(s, "  {:>6}  {kind}  (e.g. {})", c.count, c.example);
            }
        }
        match self.verdict() {
            "FAIL" => {
                let _ = write!(s, "result: FAIL: {}", self.violations.join("; "));
            }
            "PASS" => {
                let _ = write!(s, "result: PASS ({} objectives)", self.run.slo.len());
            }
            v => {
                let _ = write!(
                    s,
                    "result: {v}: none given (--scenario or --slo), so no latency was judged; \
                     no bot failed"
                );
            }
        }
        f.write_str(&s)
    }
}

fn merge_hist_text(a: &str, b: &str) -> Result<String, String> {
    let mut h = decode_hist(a)?;
    h.add(decode_hist(b)?)
        .map_err(|e| format!("histogram merge: {e}"))?;
    Ok(encode_hist_compact(&h))
}

fn merge_percentiles(a: &Percentiles, b: &Percentiles) -> Result<Percentiles, String> {
    let mut h = a.histogram()?;
    h.add(b.histogram()?)
        .map_err(|e| format!("histogram merge: {e}"))?;
    Ok(Percentiles::of(&h))
}

/// Merges reports of load generators that ran at the same time against the same server:
/// histograms are added (so percentiles are exact over the union of samples), counters
/// summed, time series aligned by second since each generator's start, and the result
/// re-evaluated against the union of their objectives.
pub fn merge(reports: &[(String, Report)]) -> Result<Report, String> {
    let Some(((_, first), rest)) = reports.split_first() else {
        return Err("nothing to merge".into());
    };
    let mut m = first.clone();
    m.run.merged_from = vec![reports[0].0.clone()];
    for (name, r) in rest {
        m.run.merged_from.push(name.clone());
        if m.run.server != r.run.server {
            m.run.server = format!("{}, {}", m.run.server, r.run.server);
        }
        m.run.players += r.run.players;
        m.run.sockets += r.run.sockets;
        m.run.duration_s = m.run.duration_s.max(r.run.duration_s);
        m.run.ramp_up_s = m.run.ramp_up_s.max(r.run.ramp_up_s);
        m.run.elapsed_s = m.run.elapsed_s.max(r.run.elapsed_s);
        for (k, v) in &r.run.behaviours {
            *m.run.behaviours.entry(k.clone()).or_insert(0) += v;
        }
        for s in &r.run.slo {
            if !m.run.slo.contains(s) {
                m.run.slo.push(s.clone());
            }
        }
        for (k, p) in &r.latency {
            let merged = match m.latency.get(k) {
                Some(mine) => merge_percentiles(mine, p)?,
                None => p.clone(),
            };
            m.latency.insert(k.clone(), merged);
        }
        m.bots.planned += r.bots.planned;
        m.bots.connected += r.bots.connected;
        m.bots.failed += r.bots.failed;
        m.bots.cut_at_end += r.bots.cut_at_end;
        m.inputs.sent += r.inputs.sent;
        m.inputs.acked += r.inputs.acked;
        m.inputs.skipped_ticks += r.inputs.skipped_ticks;
        m.inputs.send_errors += r.inputs.send_errors;
        m.inputs.backfilled += r.inputs.backfilled;
        let (a, b) = (&mut m.snapshots, &r.snapshots);
        a.received += b.received;
        a.expected += b.expected;
        a.ratio = if a.expected > 0.0 {
            a.received as f64 / a.expected
        } else {
            1.0
        };
        a.datagrams += b.datagrams;
        a.bytes += b.bytes;
        a.bad_datagrams += b.bad_datagrams;
        a.late += b.late;
        m.requests.sent += r.requests.sent;
        m.requests.answered += r.requests.answered;
        m.requests.rejected += r.requests.rejected;
        for (k, v) in &r.requests.rejected_by {
            *m.requests.rejected_by.entry(k.clone()).or_insert(0) += v;
        }
        m.bandwidth = Bandwidth::new(
            m.bandwidth.up_bytes + r.bandwidth.up_bytes,
            m.bandwidth.down_bytes + r.bandwidth.down_bytes,
            m.bandwidth.bot_seconds + r.bandwidth.bot_seconds,
        )
        .with_packets(
            m.bandwidth.up_packets + r.bandwidth.up_packets,
            m.bandwidth.down_packets + r.bandwidth.down_packets,
        )
        .with_ack_only(
            m.bandwidth.up_ack_only + r.bandwidth.up_ack_only,
            m.bandwidth.down_ack_only + r.bandwidth.down_ack_only,
        );
        m.game.logins += r.game.logins;
        m.game.kills += r.game.kills;
        m.game.deaths += r.game.deaths;
        m.game.zone_changes += r.game.zone_changes;
        m.game.loot_picked_up += r.game.loot_picked_up;
        m.game.events += r.game.events;
        m.recovery.disconnections += r.recovery.disconnections;
        m.recovery.attempts += r.recovery.attempts;
        m.recovery.resumed += r.recovery.resumed;
        m.recovery.rejoined += r.recovery.rejoined;
        m.ops_log.records += r.ops_log.records;
        m.ops_log.write_errors += r.ops_log.write_errors;
        m.actions += r.actions;
        m.events += r.events;
        m.responses += r.responses;
        for (k, f) in &r.failures {
            m.failures
                .entry(k.clone())
                .and_modify(|c| c.count += f.count)
                .or_insert_with(|| f.clone());
        }
        let mut by_t: BTreeMap<u32, Second> = m.timeseries.drain(..).map(|s| (s.t, s)).collect();
        for s in &r.timeseries {
            match by_t.get_mut(&s.t) {
                Some(x) => {
                    x.connected += s.connected;
                    x.connects += s.connects;
                    x.inputs += s.inputs;
                    x.acks += s.acks;
                    x.actions += s.actions;
                    x.rejected += s.rejected;
                    x.snapshots += s.snapshots;
                    x.bytes_up += s.bytes_up;
                    x.bytes_down += s.bytes_down;
                    for (k, h) in &s.hists {
                        let merged = match x.hists.get(k) {
                            Some(mine) => merge_hist_text(mine, h)?,
                            None => h.clone(),
                        };
                        x.hists.insert(k.clone(), merged);
                    }
                }
                None => {
                    by_t.insert(s.t, s.clone());
                }
            }
        }
        m.timeseries = by_t.into_values().collect();
    }
    let get = |k: Metric| m.latency.get(k.name()).cloned();
    if let Some(p) = get(Metric::Move) {
        m.action_latency = p;
    }
    if let Some(p) = get(Metric::Connect) {
        m.connect_time = p;
    }
    if let Some(p) = get(Metric::SendLag) {
        m.send_lag = p;
    }
    m.evaluate();
    Ok(m)
}

/// The differences between two runs `a` (baseline) and `b`, as a text table.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    let pct = |x: f64, y: f64| {
        if x == 0.0 {
            if y == 0.0 {
                "=".to_string()
            } else {
                "new".to_string()
            }
        } else {
            format!("{:+.1}%", (y - x) / x * 100.0)
        }
    };
    let _ = writeln!(
        s,
        "A: {} players, {:.0}s, {} | B: {} players, {:.0}s, {}",
        a.run.players,
        a.run.elapsed_s,
        a.run.scenario.as_deref().unwrap_or("flags"),
        b.run.players,
        b.run.elapsed_s,
        b.run.scenario.as_deref().unwrap_or("flags"),
    );
    let _ = writeln!(s, "{:<24} {:>12} {:>12} {:>9}", "", "A", "B", "change");
    let mut row = |name: String, x: f64, y: f64, unit: &str| {
        let fmtv = |v: f64| match unit {
            "ms" => format!("{:.2}ms", v / 1000.0),
            "%" => format!("{:.2}%", v * 100.0),
            "bps" => human_bits(v),
            _ => format!("{v:.0}"),
        };
        let _ = writeln!(
            s,
            "{:<24} {:>12} {:>12} {:>9}",
            name,
            fmtv(x),
            fmtv(y),
            pct(x, y)
        );
    };
    for m in Metric::ALL {
        let (pa, pb) = (a.latency.get(m.name()), b.latency.get(m.name()));
        if pa.is_none_or(|p| p.count == 0) && pb.is_none_or(|p| p.count == 0) {
            continue;
        }
        let v = |p: Option<&Percentiles>, f: fn(&Percentiles) -> f64| p.map_or(0.0, f);
        row(
            format!("{} p50", m.name()),
            v(pa, |p| p.p50_us as f64),
            v(pb, |p| p.p50_us as f64),
            "ms",
        );
        row(
            format!("{} p99", m.name()),
            v(pa, |p| p.p99_us as f64),
            v(pb, |p| p.p99_us as f64),
            "ms",
        );
        row(
            format!("{} max", m.name()),
            v(pa, |p| p.max_us as f64),
            v(pb, |p| p.max_us as f64),
            "ms",
        );
        row(
            format!("{} count", m.name()),
            v(pa, |p| p.count as f64),
            v(pb, |p| p.count as f64),
            "",
        );
    }
    row(
        "actions/s".into(),
        a.actions_per_second(),
        b.actions_per_second(),
        "",
    );
    row(
        "bots connected".into(),
        a.bots.connected as f64,
        b.bots.connected as f64,
        "",
    );
    row(
        "bots failed".into(),
        a.bots.failed as f64,
        b.bots.failed as f64,
        "",
    );
    row(
        "requests refused".into(),
        a.requests.rejected as f64,
        b.requests.rejected as f64,
        "",
    );
    row(
        "snapshot ratio".into(),
        a.snapshots.ratio,
        b.snapshots.ratio,
        "%",
    );
    row(
        "up per bot".into(),
        a.bandwidth.up_bps_per_bot,
        b.bandwidth.up_bps_per_bot,
        "bps",
    );
    row(
        "down per bot".into(),
        a.bandwidth.down_bps_per_bot,
        b.bandwidth.down_bps_per_bot,
        "bps",
    );
    let _ = write!(s, "result: A {} | B {}", a.verdict(), b.verdict());
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compact_form_round_trips_and_is_smaller() {
        let mut h = crate::hist::histogram();
        for v in 1..=3000u64 {
            h.record(15_000 + (v * 7919) % 5000).expect("record");
        }
        let compact = encode_hist_compact(&h);
        assert_eq!(decode_hist(&compact).expect("decode"), h);
        assert!(
            compact.len() < encode_hist(&h).len(),
            "{} bytes",
            compact.len()
        );
    }

    #[test]
    fn percentiles_round_trip_through_base64() {
        let mut h = crate::hist::histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).expect("record");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((4990..=5010).contains(&p.p50_us), "{}", p.p50_us);
        assert!((9890..=9910).contains(&p.p99_us), "{}", p.p99_us);
        assert_eq!(p.histogram().expect("decode"), h);
        let empty = Percentiles::of(&crate::hist::histogram());
        assert_eq!((empty.count, empty.p99_us, empty.max_us), (0, 0, 0));
        assert!(decode_hist("not base64!").is_err());
    }

    pub(crate) fn report_of(samples: &[u64], seconds: &[(u32, &[u64])]) -> Report {
        let mut h = crate::hist::histogram();
        for s in samples {
            h.record(*s).expect("record");
        }
        let p = Percentiles::of(&h);
        let timeseries = seconds
            .iter()
            .map(|(t, v)| {
                let mut w = crate::hist::histogram();
                for s in *v {
                    w.record(*s).expect("record");
                }
                Second {
                    t: *t,
                    connected: 1,
                    connects: 0,
                    inputs: v.len() as u64,
                    acks: v.len() as u64,
                    actions: v.len() as u64,
                    rejected: 0,
                    snapshots: 0,
                    bytes_up: 10,
                    bytes_down: 20,
                    hists: BTreeMap::from([("move".to_string(), encode_hist(&w))]),
                }
            })
            .collect();
        Report {
            run: RunInfo {
                server: "127.0.0.1:25000".into(),
                players: 1,
                duration_s: 10.0,
                ramp_up_s: 1.0,
                input_hz: 60,
                sockets: 1,
                seed: 1,
                elapsed_s: 10.0,
                scenario: None,
                mix: "mover=1".into(),
                behaviours: BTreeMap::from([("mover".to_string(), 1)]),
                impairment: String::new(),
                slo: Vec::new(),
                merged_from: Vec::new(),
                asked_snapshot_rate_hz: None,
            },
            action_latency: p.clone(),
            connect_time: Percentiles::of(&crate::hist::histogram()),
            send_lag: Percentiles::of(&crate::hist::histogram()),
            latency: BTreeMap::from([("move".to_string(), p)]),
            bots: BotCounts {
                planned: 1,
                connected: 1,
                failed: 0,
                cut_at_end: 0,
            },
            inputs: InputCounts {
                sent: samples.len() as u64,
                acked: samples.len() as u64,
                skipped_ticks: 0,
                send_errors: 0,
                backfilled: 0,
            },
            snapshots: SnapshotCounts {
                received: 600,
                expected: 600.0,
                ratio: 1.0,
                datagrams: 600,
                bytes: 6000,
                bad_datagrams: 0,
                late: 0,
            },
            requests: RequestCounts::default(),
            bandwidth: Bandwidth::new(1000, 2000, 10.0),
            game: GameCounts::default(),
            recovery: RecoveryCounts::default(),
            ops_log: OpsLogCounts::default(),
            server_cost: None,
            server_cost_error: None,
            actions: samples.len() as u64,
            events: 0,
            responses: 0,
            failures: BTreeMap::new(),
            timeseries,
            passed: true,
            violations: Vec::new(),
        }
    }

    proptest! {
        /// Merging two reports gives exactly the percentiles of one histogram over the
        /// union of their samples, overall and per second.
        #[test]
        fn merge_is_exact(a in prop::collection::vec(1u64..5_000_000, 1..400), b in prop::collection::vec(1u64..5_000_000, 1..400)) {
            let ra = report_of(&a, &[(1, &a[..a.len() / 2]), (2, &a[a.len() / 2..])]);
            let rb = report_of(&b, &[(2, &b[..b.len() / 2]), (3, &b[b.len() / 2..])]);
            let m = merge(&[("a".into(), ra), ("b".into(), rb)]).expect("merge");
            let mut union = crate::hist::histogram();
            for s in a.iter().chain(&b) {
                union.record(*s).expect("record");
            }
            let want = Percentiles::of(&union);
            let got = &m.latency["move"];
            prop_assert_eq!(got.count, want.count);
            prop_assert_eq!((got.p50_us, got.p90_us, got.p99_us, got.p999_us, got.max_us, got.min_us),
                (want.p50_us, want.p90_us, want.p99_us, want.p999_us, want.max_us, want.min_us));
            prop_assert_eq!(&m.action_latency, got);
            prop_assert_eq!(m.inputs.sent, (a.len() + b.len()) as u64);
            prop_assert_eq!(m.timeseries.len(), 3);
            let second2 = decode_hist(&m.timeseries[1].hists["move"]).expect("decode");
            prop_assert_eq!(second2.len(), (a.len() - a.len() / 2 + b.len() / 2) as u64);
            prop_assert_eq!(m.bandwidth.up_bytes, 2000);
            prop_assert!((m.bandwidth.up_bps_per_bot - 800.0).abs() < 1e-9);
        }
    }

    #[test]
    fn merge_reevaluates_objectives_and_json_round_trips() {
        let mut a = report_of(&[1000, 2000], &[]);
        a.run.slo = crate::slo::parse("p99<1500us").expect("slo");
        a.evaluate();
        assert!(!a.passed(), "p99 2 ms is above 1.5 ms");
        let b = report_of(&[100; 200], &[]);
        let m = merge(&[("a".into(), a.clone()), ("b".into(), b)]).expect("merge");
        assert!(m.passed(), "{:?}", m.violations);
        assert_eq!(m.run.merged_from, vec!["a", "b"]);
        let back = Report::from_json(&a.to_json().expect("json")).expect("parse");
        assert_eq!(back, a);
        assert!(merge(&[]).is_err());
    }

    #[test]
    fn packets_per_bot_second_and_merge_adds_them() {
        let mut a = report_of(&[1000; 10], &[]);
        a.bandwidth = Bandwidth::new(1000, 2000, 10.0)
            .with_packets(100, 300)
            .with_ack_only(10, 60);
        assert_eq!(
            (a.bandwidth.up_pps_per_bot, a.bandwidth.down_pps_per_bot),
            (10.0, 30.0)
        );
        assert!(
            a.to_string()
                .contains("UDP packets per bot: up 10.0/s, down 30.0/s"),
            "{a}"
        );
        let m = merge(&[("a".into(), a.clone()), ("b".into(), a)]).expect("merge");
        assert_eq!(
            (m.bandwidth.up_packets, m.bandwidth.down_packets),
            (200, 600)
        );
        assert_eq!(m.bandwidth.up_pps_per_bot, 10.0);
        assert_eq!(
            (m.bandwidth.up_ack_only, m.bandwidth.down_ack_only),
            (20, 120)
        );
        assert_eq!(
            (
                m.bandwidth.up_ack_only_share,
                m.bandwidth.down_ack_only_share
            ),
            (0.1, 0.2)
        );
        assert!((m.bandwidth.ack_only_share() - 0.175).abs() < 1e-12);
        assert!(
            m.to_string()
                .contains("ACK-only up 10.0 %, down 20.0 %, both 17.5 %"),
            "{m}"
        );
        let back = Report::from_json(&m.to_json().expect("json")).expect("parse");
        assert_eq!(back.bandwidth, m.bandwidth);
    }

    #[test]
    fn compare_shows_changes() {
        let a = report_of(&[1000; 10], &[]);
        let b = report_of(&[2000; 10], &[]);
        let text = compare(&a, &b);
        assert!(text.contains("move p99"), "{text}");
        assert!(text.contains("+100.0%"), "{text}");
        assert!(
            text.contains("result: A NO OBJECTIVES | B NO OBJECTIVES"),
            "{text}"
        );
    }

    #[test]
    fn a_run_without_objectives_is_no_pass() {
        let mut r = report_of(&[1000; 10], &[]);
        r.evaluate();
        assert!(r.passed(), "nothing failed");
        assert_eq!(r.verdict(), "NO OBJECTIVES");
        assert!(r.to_string().contains("result: NO OBJECTIVES"), "{r}");
        r.run.slo = crate::slo::parse("p99<100ms").expect("slo");
        r.evaluate();
        assert_eq!(r.verdict(), "PASS");
        assert!(r.to_string().contains("result: PASS (1 objectives)"), "{r}");
        r.run.slo = crate::slo::parse("p99<100us").expect("slo");
        r.evaluate();
        assert_eq!(r.verdict(), "FAIL");
    }
}
