//! Live counters and histograms shared by the bots, and the progress line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest value a histogram records exactly, in microseconds (one hour); larger values
/// are recorded as this.
pub(crate) const HIST_MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds with 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds are valid")
}

/// Records a duration in microseconds (at least 1, at most [`HIST_MAX_US`]).
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, HIST_MAX_US));
}

/// The histograms of a run.
#[derive(Debug)]
pub(crate) struct Hists {
    /// Input sent → first snapshot reporting it applied.
    pub(crate) action: Histogram<u64>,
    /// Same, since the last progress line.
    pub(crate) action_window: Histogram<u64>,
    /// Connect start → `Welcome`.
    pub(crate) connect: Histogram<u64>,
    /// How late inputs left against their fixed schedule (load generator health).
    pub(crate) send_lag: Histogram<u64>,
}

/// One failure reason: how often, and the first full message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureCount {
    /// Bots that failed this way.
    pub count: u64,
    /// The first error message seen.
    pub example: String,
}

/// What every bot updates while it runs.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) connected_now: AtomicU64,
    pub(crate) connected_total: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) inputs: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) responses: AtomicU64,
    pub(crate) bad_datagrams: AtomicU64,
    pub(crate) snapshot_datagrams: AtomicU64,
    pub(crate) snapshot_bytes: AtomicU64,
    pub(crate) skipped_ticks: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    hists: Mutex<Hists>,
    failures: Mutex<BTreeMap<String, FailureCount>>,
}

impl Live {
    pub(crate) fn new() -> Self {
        Self {
            connected_now: AtomicU64::new(0),
            connected_total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            inputs: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            events: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            bad_datagrams: AtomicU64::new(0),
            snapshot_datagrams: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            skipped_ticks: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            hists: Mutex::new(Hists {
                action: histogram(),
                action_window: histogram(),
                connect: histogram(),
                send_lag: histogram(),
            }),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// The histograms (a poisoned lock is still usable: histograms stay consistent).
    pub(crate) fn hists(&self) -> MutexGuard<'_, Hists> {
        self.hists.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn fail(&self, kind: String, message: String) {
        Self::add(&self.failed, 1);
        tracing::debug!(%kind, %message, "bot failed");
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.entry(kind)
            .or_insert_with(|| FailureCount {
                count: 0,
                example: message,
            })
            .count += 1;
    }

    pub(crate) fn failures(&self) -> BTreeMap<String, FailureCount> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Counter values at the previous progress line.
#[derive(Debug, Default)]
pub(crate) struct ProgressState {
    inputs: u64,
    acks: u64,
    snapshots: u64,
}

/// One progress line: totals, rates since the previous line, and the window p99.
pub(crate) fn progress_line(
    live: &Live,
    prev: &mut ProgressState,
    elapsed: Duration,
    interval: Duration,
    players: usize,
) -> String {
    let inputs = Live::get(&live.inputs);
    let acks = Live::get(&live.acks);
    let snapshots = Live::get(&live.snapshots);
    let secs = interval.as_secs_f64().max(1e-3);
    let rate = |now: u64, before: u64| (now.saturating_sub(before)) as f64 / secs;
    let window_p99 = {
        let mut h = live.hists();
        let p = (!h.action_window.is_empty()).then(|| h.action_window.value_at_quantile(0.99));
        h.action_window.reset();
        p
    };
    let line = format!(
        "[{:>4.0}s] connected {}/{} failed {} | inputs/s {:.0} acks/s {:.0} snapshots/s {:.0} | action p99 {}",
        elapsed.as_secs_f64(),
        Live::get(&live.connected_now),
        players,
        Live::get(&live.failed),
        rate(inputs, prev.inputs),
        rate(acks, prev.acks),
        rate(snapshots, prev.snapshots),
        window_p99.map_or_else(|| "-".to_string(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
    );
    *prev = ProgressState {
        inputs,
        acks,
        snapshots,
    };
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_clamp_and_progress_resets_window() {
        let live = Live::new();
        {
            let mut h = live.hists();
            record(&mut h.action_window, Duration::ZERO);
            record(&mut h.action_window, Duration::from_millis(12));
            record(&mut h.action, Duration::from_secs(10_000));
            assert_eq!(h.action_window.min(), 1);
            assert!(h.action.max() >= HIST_MAX_US);
        }
        Live::add(&live.inputs, 120);
        let mut prev = ProgressState::default();
        let line = progress_line(
            &live,
            &mut prev,
            Duration::from_secs(3),
            Duration::from_secs(2),
            5,
        );
        assert!(line.contains("inputs/s 60"), "{line}");
        assert!(line.contains("p99 12.0 ms"), "{line}");
        assert!(live.hists().action_window.is_empty());
        let line = progress_line(
            &live,
            &mut prev,
            Duration::from_secs(4),
            Duration::from_secs(1),
            5,
        );
        assert!(
            line.contains("inputs/s 0") && line.ends_with("p99 -"),
            "{line}"
        );
    }

    #[test]
    fn failures_are_grouped() {
        let live = Live::new();
        live.fail("connect: timeout".into(), "first".into());
        live.fail("connect: timeout".into(), "second".into());
        live.fail("run: goaway".into(), "bye".into());
        let f = live.failures();
        assert_eq!(f["connect: timeout"].count, 2);
        assert_eq!(f["connect: timeout"].example, "first");
        assert_eq!(Live::get(&live.failed), 3);
    }
}
