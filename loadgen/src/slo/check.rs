//! Checking objectives against a report: [`Slo::measure`] and [`Slo::check`]. A child of
//! `slo` so that the objectives themselves (parsed from the command line, kept in the
//! report's run information) do not depend on the report.

use super::{Slo, Subject};
use crate::report::{Percentiles, Report};
use crate::stats::Metric;

/// One statistic of a histogram's percentiles, microseconds.
fn stat_of(p: &Percentiles, stat: &str) -> f64 {
    match stat {
        "p50" => p.p50_us as f64,
        "p90" => p.p90_us as f64,
        "p99" => p.p99_us as f64,
        "p99.9" | "p999" => p.p999_us as f64,
        "max" => p.max_us as f64,
        _ => p.mean_us,
    }
}

/// The player actions with samples, for `actions.<stat>`.
fn actions(r: &Report) -> impl Iterator<Item = (Metric, &Percentiles)> {
    Metric::ALL
        .into_iter()
        .filter(|m| m.is_action() && *m != Metric::Connect)
        .filter_map(|m| Some((m, r.latency.get(m.name())?)))
        .filter(|(_, p)| p.count > 0)
}

impl Slo {
    /// For `actions.<stat>`: the action with the worst value, and that value.
    fn worst_action(&self, r: &Report) -> Option<(Metric, f64)> {
        let Subject::EveryAction { stat } = &self.subject else {
            return None;
        };
        actions(r)
            .map(|(m, p)| (m, stat_of(p, stat)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

impl Slo {
    /// The measured value, in the objective's unit.
    pub fn measure(&self, r: &Report) -> Option<f64> {
        Some(match &self.subject {
            Subject::Latency { metric, stat } => {
                let p = r.latency.get(metric.name())?;
                if p.count == 0 {
                    return None;
                }
                stat_of(p, stat)
            }
            Subject::EveryAction { .. } => self.worst_action(r)?.1,
            Subject::Failures => r.bots.failed as f64,
            Subject::Rejections => r.requests.rejected as f64,
            Subject::Rejected(reason) => r
                .requests
                .rejected_by
                .iter()
                .filter(|(k, _)| k.rsplit(':').next() == Some(reason.as_str()))
                .map(|(_, n)| *n as f64)
                .sum(),
            Subject::SnapshotRatio => r.snapshots.ratio,
            Subject::Connected => r.bots.connected as f64,
            Subject::Skipped => r.inputs.skipped_ticks as f64,
        })
    }

    /// `None` when the objective holds, else why not. A latency objective on a metric
    /// without samples fails (nothing was shown to meet it).
    pub fn check(&self, r: &Report) -> Option<String> {
        match self.measure(r) {
            Some(v) if self.op.holds(v, self.value) => None,
            Some(v) => Some(match self.subject {
                Subject::Latency { .. } => {
                    format!("SLO {} not met: measured {:.2} ms", self.text, v / 1e3)
                }
                Subject::EveryAction { .. } => {
                    let worst = self.worst_action(r).map_or("?", |(m, _)| m.name());
                    format!(
                        "SLO {} not met: {worst} measured {:.2} ms",
                        self.text,
                        v / 1e3
                    )
                }
                _ => format!("SLO {} not met: measured {v}", self.text),
            }),
            None => Some(format!("SLO {} not met: no samples", self.text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::report::Percentiles;
    use crate::slo::parse;

    #[test]
    fn every_action_is_judged_by_its_worst_and_connect_is_not_an_action() {
        let mut r = crate::report::tests::report_of(&[10_000; 100], &[]);
        let hist = |us: u64| {
            let mut h = crate::hist::histogram();
            for _ in 0..100 {
                let _ = h.record(us);
            }
            Percentiles::of(&h)
        };
        r.latency.insert("pick_up".into(), hist(150_000));
        r.latency.insert("connect".into(), hist(3_000_000));
        let slo = &parse("actions.p99<100ms").expect("slo")[0];
        let measured = slo.measure(&r).expect("samples");
        assert!((150_000.0..160_000.0).contains(&measured), "{measured}");
        let why = slo.check(&r).expect("pick-up is too slow");
        assert!(why.contains("pick_up measured"), "{why}");
        r.latency.insert("pick_up".into(), hist(50_000));
        assert_eq!(slo.check(&r), None, "connect's 3 s does not count");
    }
}
