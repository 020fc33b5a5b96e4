//! The result of a run: JSON-serializable [`Report`] and its text table.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

pub use crate::stats::FailureCount;

/// Percentiles of one histogram, in microseconds, plus the histogram itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        let mut bytes = Vec::new();
        let hdr_v2_base64 = match V2Serializer::new().serialize(h, &mut bytes) {
            Ok(_) => STANDARD.encode(&bytes),
            Err(e) => {
                tracing::warn!(error = %e, "histogram serialization failed");
                String::new()
            }
        };
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
            hdr_v2_base64,
        }
    }
}

/// Bot outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BotCounts {
    /// Bots planned.
    pub planned: u64,
    /// Bots that got a `Welcome`.
    pub connected: u64,
    /// Bots that failed (connect error, reject, disconnect before the end).
    pub failed: u64,
}

/// Input counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputCounts {
    /// Input datagrams sent.
    pub sent: u64,
    /// Inputs reported applied by a snapshot.
    pub acked: u64,
    /// Schedule slots skipped because a bot was not polled in time (load generator overload).
    pub skipped_ticks: u64,
    /// Inputs that could not be sent.
    pub send_errors: u64,
}

/// Snapshot counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotCounts {
    /// Distinct snapshot ticks received, summed over bots.
    pub received: u64,
    /// `snapshot_rate_hz` × seconds each bot was welcomed, summed over bots.
    pub expected: f64,
    /// `received / expected` (1 when nothing was expected).
    pub ratio: f64,
    /// Snapshot datagrams accepted (a tick may come in several parts).
    pub datagrams: u64,
    /// Bytes of the accepted snapshot datagrams.
    pub bytes: u64,
    /// Datagrams the client session refused.
    pub bad_datagrams: u64,
}

/// The run parameters echoed into the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

/// Everything a run measured, and whether it passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Parameters.
    pub run: RunInfo,
    /// Input sent → first snapshot reporting it applied.
    pub action_latency: Percentiles,
    /// Connect start → `Welcome` (QUIC + TLS handshake + authentication).
    pub connect_time: Percentiles,
    /// How late inputs were sent against their fixed schedule (high values mean the load
    /// generator itself was overloaded and latencies are suspect).
    pub send_lag: Percentiles,
    /// Bot outcomes.
    pub bots: BotCounts,
    /// Inputs.
    pub inputs: InputCounts,
    /// Snapshots.
    pub snapshots: SnapshotCounts,
    /// Reliable events received (other than responses).
    pub events: u64,
    /// Responses received.
    pub responses: u64,
    /// Failure reasons with counts.
    pub failures: BTreeMap<String, FailureCount>,
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

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
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
        let _ = writeln!(
            s,
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "p50", "p90", "p99", "p99.9", "max", "count"
        );
        for (name, p) in [
            ("action latency", &self.action_latency),
            ("connect+auth", &self.connect_time),
            ("send lag", &self.send_lag),
        ] {
            let _ = writeln!(
                s,
                "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                ms(p.p50_us),
                ms(p.p90_us),
                ms(p.p99_us),
                ms(p.p999_us),
                ms(p.max_us),
                p.count
            );
        }
        let b = &self.bots;
        let _ = writeln!(
            s,
            "bots: {} planned, {} connected, {} failed",
            b.planned, b.connected, b.failed
        );
        let i = &self.inputs;
        let _ = writeln!(
            s,
            "inputs: {} sent, {} acked ({:.2}%), {} skipped schedule slots, {} send errors",
            i.sent,
            i.acked,
            if i.sent == 0 {
                0.0
            } else {
                100.0 * i.acked as f64 / i.sent as f64
            },
            i.skipped_ticks,
            i.send_errors
        );
        let sn = &self.snapshots;
        let _ = writeln!(
            s,
            "snapshots: {} ticks received / {:.0} expected ({:.2}%); {} datagrams ({:.2} per tick, {:.0} B avg), {} bad; events {}, responses {}",
            sn.received,
            sn.expected,
            100.0 * sn.ratio,
            sn.datagrams,
            if sn.received == 0 { 0.0 } else { sn.datagrams as f64 / sn.received as f64 },
            if sn.datagrams == 0 { 0.0 } else { sn.bytes as f64 / sn.datagrams as f64 },
            sn.bad_datagrams,
            self.events,
            self.responses
        );
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
        if self.passed() {
            let _ = write!(s, "result: PASS");
        } else {
            let _ = write!(s, "result: FAIL: {}", self.violations.join("; "));
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn percentiles_round_trip_through_base64() {
        let mut h = crate::stats::histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).expect("record");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((4990..=5010).contains(&p.p50_us), "{}", p.p50_us);
        assert!((9890..=9910).contains(&p.p99_us), "{}", p.p99_us);
        let bytes = STANDARD.decode(&p.hdr_v2_base64).expect("base64");
        let back: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .expect("deserialize");
        assert_eq!(back, h);
        let empty = Percentiles::of(&crate::stats::histogram());
        assert_eq!((empty.count, empty.p99_us, empty.max_us), (0, 0, 0));
    }
}
