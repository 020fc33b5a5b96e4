//! Checking objectives against a report: [`Slo::measure`] and [`Slo::check`]. A child of
//! `slo` so that the objectives themselves (parsed from the command line, kept in the
//! report's run information) do not depend on the report.

use super::{Slo, Subject};
use crate::report::Report;

impl Slo {
    /// The measured value, in the objective's unit.
    pub fn measure(&self, r: &Report) -> Option<f64> {
        Some(match &self.subject {
            Subject::Latency { metric, stat } => {
                let p = r.latency.get(metric.name())?;
                if p.count == 0 {
                    return None;
                }
                match stat.as_str() {
                    "p50" => p.p50_us as f64,
                    "p90" => p.p90_us as f64,
                    "p99" => p.p99_us as f64,
                    "p99.9" | "p999" => p.p999_us as f64,
                    "max" => p.max_us as f64,
                    _ => p.mean_us,
                }
            }
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
                _ => format!("SLO {} not met: measured {v}", self.text),
            }),
            None => Some(format!("SLO {} not met: no samples", self.text)),
        }
    }
}
