//! Service-level objectives: `--slo "p99<100ms,failures=0"` decides the exit code.
//!
//! Grammar (terms separated by commas, whitespace ignored):
//!
//! ```text
//! slo     = term *("," term)
//! term    = lhs op value
//! lhs     = [metric "."] stat | "actions." stat | counter
//! stat    = "p50" | "p90" | "p99" | "p99.9" | "p999" | "max" | "mean"
//! metric  = move | connect | attack | attack_log | pick_up | use_item | equip | drop
//!         | enter_zone | party | inventory | snapshot_gap | send_lag        (default: move)
//! actions = every player action with samples (move and the requests; not connect): the
//!           worst of them must hold
//! counter = "failures"          bots that failed (connect errors, lost connections)
//!         | "rejections"        requests the server refused, any reason
//!         | "rejected:" Reason  requests refused with that RequestError variant (e.g. rejected:Internal)
//!         | "snapshot_ratio"    snapshots received / expected (0..1, or a percentage)
//!         | "connected"         bots that connected at least once
//!         | "skipped"           input schedule slots the load generator skipped
//! op      = "<" | "<=" | ">" | ">=" | "=" | "=="
//! value   = number [unit]       latency units: us, ms (default), s; "%" for ratios
//! ```
//!
//! Examples: `p99<100ms`, `actions.p99<100ms`, `attack_log.p99<=250ms`, `failures=0`, `rejected:Internal=0`,
//! `snapshot_ratio>=0.95`, `enter_zone.max<2s`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stats::Metric;

mod check;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => (a - b).abs() < 1e-9,
        }
    }
}

/// What an objective looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Subject {
    /// A latency statistic of a metric, microseconds: quantile 0..1, or `max`/`mean`.
    Latency {
        /// Which histogram.
        metric: Metric,
        /// `p50` ... `p99.9`, `max`, `mean`.
        stat: String,
    },
    /// A latency statistic of every player action with samples (move and the requests,
    /// not connect), microseconds: the worst one is compared.
    EveryAction {
        /// `p50` ... `p99.9`, `max`, `mean`.
        stat: String,
    },
    /// Bots that failed.
    Failures,
    /// Requests refused.
    Rejections,
    /// Requests refused with this reason.
    Rejected(String),
    /// Snapshots received / expected.
    SnapshotRatio,
    /// Bots that connected.
    Connected,
    /// Schedule slots skipped.
    Skipped,
}

/// One objective, e.g. `p99<100ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// As written.
    pub text: String,
    /// What is compared.
    pub subject: Subject,
    /// How.
    pub op: Op,
    /// Against this (microseconds for latencies).
    pub value: f64,
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a comma-separated list of objectives (see the module documentation).
pub fn parse(text: &str) -> Result<Vec<Slo>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_term)
        .collect()
}

fn parse_term(term: &str) -> Result<Slo, String> {
    let t: String = term.chars().filter(|c| !c.is_whitespace()).collect();
    let at = t
        .find(['<', '>', '='])
        .ok_or_else(|| format!("{term:?}: expected a comparison (<, <=, >, >=, =)"))?;
    let (lhs, rest) = t.split_at(at);
    let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
        (Op::Le, v)
    } else if let Some(v) = rest.strip_prefix(">=") {
        (Op::Ge, v)
    } else if let Some(v) = rest.strip_prefix("==") {
        (Op::Eq, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (Op::Lt, v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (Op::Gt, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (Op::Eq, v)
    } else {
        return Err(format!("{term:?}: bad comparison"));
    };
    let subject = parse_subject(lhs).map_err(|e| format!("{term:?}: {e}"))?;
    let value = match &subject {
        Subject::Latency { .. } | Subject::EveryAction { .. } => parse_latency_us(value),
        Subject::SnapshotRatio => match value.strip_suffix('%') {
            Some(p) => p
                .parse::<f64>()
                .map(|v| v / 100.0)
                .map_err(|e| e.to_string()),
            None => value.parse::<f64>().map_err(|e| e.to_string()),
        },
        _ => value.parse::<f64>().map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("{term:?}: value {value:?}: {e}"))?;
    Ok(Slo {
        text: t.clone(),
        subject,
        op,
        value,
    })
}

const STATS: [&str; 7] = ["p50", "p90", "p99", "p99.9", "p999", "max", "mean"];

fn parse_subject(lhs: &str) -> Result<Subject, String> {
    match lhs {
        "failures" => return Ok(Subject::Failures),
        "rejections" => return Ok(Subject::Rejections),
        "snapshot_ratio" => return Ok(Subject::SnapshotRatio),
        "connected" => return Ok(Subject::Connected),
        "skipped" => return Ok(Subject::Skipped),
        _ => {}
    }
    if let Some(reason) = lhs.strip_prefix("rejected:") {
        if reason.is_empty() {
            return Err("rejected: needs a reason (a RequestError variant name)".into());
        }
        return Ok(Subject::Rejected(reason.to_string()));
    }
    if let Some(stat) = lhs.strip_prefix("actions.") {
        if !STATS.contains(&stat) {
            return Err(format!(
                "unknown statistic {stat:?} (stats: {})",
                STATS.join(", ")
            ));
        }
        return Ok(Subject::EveryAction {
            stat: stat.to_string(),
        });
    }
    let (metric, stat) = match lhs.split_once('.') {
        Some((m, s)) if Metric::from_name(m).is_some() => (Metric::from_name(m), s),
        _ => (Some(Metric::Move), lhs),
    };
    let metric = metric.ok_or("unknown metric")?;
    if !STATS.contains(&stat) {
        return Err(format!(
            "unknown statistic or counter {lhs:?} (stats: {}; counters: failures, rejections, rejected:<Reason>, snapshot_ratio, connected, skipped)",
            STATS.join(", ")
        ));
    }
    Ok(Subject::Latency {
        metric,
        stat: stat.to_string(),
    })
}

fn parse_latency_us(v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().map_err(|_| "not a number".to_string())?;
    let scale = match unit {
        "" | "ms" => 1e3,
        "us" | "µs" => 1.0,
        "s" => 1e6,
        other => return Err(format!("unknown unit {other:?}")),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let s = parse("p99<100ms, failures=0,attack_log.p99.9<=0.25s,rejected:Internal==0,snapshot_ratio>=95%,connect.max<2000")
            .expect("parse");
        assert_eq!(s.len(), 6);
        assert_eq!(
            s[0].subject,
            Subject::Latency {
                metric: Metric::Move,
                stat: "p99".into()
            }
        );
        assert_eq!((s[0].op, s[0].value), (Op::Lt, 100_000.0));
        assert_eq!(
            (s[1].subject.clone(), s[1].op, s[1].value),
            (Subject::Failures, Op::Eq, 0.0)
        );
        assert_eq!(
            s[2].subject,
            Subject::Latency {
                metric: Metric::AttackLog,
                stat: "p99.9".into()
            }
        );
        assert_eq!(s[2].value, 250_000.0);
        assert_eq!(s[3].subject, Subject::Rejected("Internal".into()));
        assert!((s[4].value - 0.95).abs() < 1e-12);
        assert_eq!(s[5].value, 2_000_000.0);
        let every = parse("actions.p99<100ms").expect("every action");
        assert_eq!(
            every[0].subject,
            Subject::EveryAction { stat: "p99".into() }
        );
        assert_eq!(every[0].value, 100_000.0);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "p98<1ms",
            "p99",
            "dance.p99<1ms",
            "p99<fast",
            "p99<1h",
            "rejected:<1",
            "failures<x",
            "actions.p98<1ms",
            "actions<1ms",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("").expect("empty"), vec![]);
    }

    #[test]
    fn ops() {
        assert!(Op::Lt.holds(1.0, 2.0) && !Op::Lt.holds(2.0, 2.0));
        assert!(Op::Le.holds(2.0, 2.0) && Op::Ge.holds(2.0, 2.0));
        assert!(Op::Gt.holds(3.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
        assert!(Op::Eq.holds(0.0, 0.0) && !Op::Eq.holds(1.0, 0.0));
    }
}
