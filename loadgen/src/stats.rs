//! Live counters and histograms shared by the bots, per-bot sample batches, the per-second
//! time series and the progress line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::hist::{encode_hist_compact, histogram, HIST_MAX_US};

/// Microseconds of `d`, at least 1, at most [`HIST_MAX_US`].
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, HIST_MAX_US)
}

/// What a latency sample measures. The names are the report's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Movement input `k` due (its fixed schedule slot) → first snapshot reporting an
    /// applied input `>= k`.
    Move,
    /// Connect start → `Welcome` (QUIC + TLS handshake + authentication).
    Connect,
    /// `Attack` request → its response.
    Attack,
    /// `Attack` request → the first combat-log line (hit or miss) of that attack.
    AttackLog,
    /// `PickUp` request → its response.
    PickUp,
    /// `UseItem` request → its response.
    UseItem,
    /// `Equip` request → its response.
    Equip,
    /// `Drop` request → its response.
    Drop,
    /// The input that steps into a portal (or an `EnterZone` request) → `ZoneEntered`.
    EnterZone,
    /// Party requests (invite, accept, leave) → their responses.
    Party,
    /// `GetInventory` → its response.
    Inventory,
    /// Time between consecutive new snapshot ticks at one bot (jitter and loss show here).
    SnapshotGap,
    /// How late inputs left against their schedule (load generator health).
    SendLag,
    /// `TradeOpen` → its response.
    TradeOpen,
    /// `TradeOffer` → its response.
    TradeOffer,
    /// `TradeAccept` → its response (the acceptance completing a pair is answered after
    /// the store committed the trade).
    TradeAccept,
    /// `TradeCancel` → its response.
    TradeCancel,
    /// Time to recover: a bot's connection lost → the first snapshot of the session it
    /// got back (resume or fresh login).
    Recover,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 18] = [
        Metric::Move,
        Metric::Connect,
        Metric::Attack,
        Metric::AttackLog,
        Metric::PickUp,
        Metric::UseItem,
        Metric::Equip,
        Metric::Drop,
        Metric::EnterZone,
        Metric::Party,
        Metric::Inventory,
        Metric::SnapshotGap,
        Metric::SendLag,
        Metric::TradeOpen,
        Metric::TradeOffer,
        Metric::TradeAccept,
        Metric::TradeCancel,
        Metric::Recover,
    ];

    /// The report key.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Move => "move",
            Metric::Connect => "connect",
            Metric::Attack => "attack",
            Metric::AttackLog => "attack_log",
            Metric::PickUp => "pick_up",
            Metric::UseItem => "use_item",
            Metric::Equip => "equip",
            Metric::Drop => "drop",
            Metric::EnterZone => "enter_zone",
            Metric::Party => "party",
            Metric::Inventory => "inventory",
            Metric::SnapshotGap => "snapshot_gap",
            Metric::SendLag => "send_lag",
            Metric::TradeOpen => "trade_open",
            Metric::TradeOffer => "trade_offer",
            Metric::TradeAccept => "trade_accept",
            Metric::TradeCancel => "trade_cancel",
            Metric::Recover => "recover",
        }
    }

    /// The metric named `name` (as in [`Metric::name`]).
    pub fn from_name(name: &str) -> Option<Metric> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a player action (counted in actions per second).
    pub fn is_action(self) -> bool {
        !matches!(
            self,
            Metric::SnapshotGap | Metric::SendLag | Metric::AttackLog | Metric::Recover
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

const METRICS: usize = Metric::ALL.len();

/// Samples a bot collects before taking the shared lock once for all of them.
const BATCH: usize = 128;

/// A bot's pending samples: no lock and no allocation per sample.
#[derive(Debug)]
pub(crate) struct Samples {
    buf: [(u8, u32); BATCH],
    len: usize,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            buf: [(0, 0); BATCH],
            len: 0,
        }
    }
}

impl Samples {
    /// Adds one sample; flushes into `live` when the batch is full.
    pub(crate) fn add(&mut self, live: &Live, metric: Metric, d: Duration) {
        self.add_us(live, metric, micros(d));
    }

    fn add_us(&mut self, live: &Live, metric: Metric, us: u64) {
        if self.len == BATCH {
            self.flush(live);
        }
        self.buf[self.len] = (metric as u8, u32::try_from(us).unwrap_or(u32::MAX));
        self.len += 1;
    }

    /// Moves the pending samples into the shared histograms.
    pub(crate) fn flush(&mut self, live: &Live) {
        if self.len == 0 {
            return;
        }
        let mut actions = 0u64;
        let mut h = live.hists();
        for &(m, us) in &self.buf[..self.len] {
            let i = usize::from(m).min(METRICS - 1);
            h.window[i].saturating_record(u64::from(us).clamp(1, HIST_MAX_US));
            actions += u64::from(Metric::ALL[i].is_action());
        }
        drop(h);
        Live::add(&live.actions, actions);
        self.len = 0;
    }
}

/// The histograms of a run: the current second (samples land here, one record each) and
/// the totals (each closed second is added in).
#[derive(Debug)]
pub(crate) struct Hists {
    pub(crate) total: Vec<Histogram<u64>>,
    pub(crate) window: Vec<Histogram<u64>>,
}

impl Hists {
    /// Adds the open second into the totals and starts a new one; returns the closed
    /// second's histograms (serialized) by metric name.
    pub(crate) fn close_window(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for m in Metric::ALL {
            let i = m.index();
            if self.window[i].is_empty() {
                continue;
            }
            if let Err(e) = self.total[i].add(&self.window[i]) {
                tracing::warn!(error = %e, metric = m.name(), "histogram add failed");
            }
            out.insert(m.name().to_string(), encode_hist_compact(&self.window[i]));
            self.window[i].reset();
        }
        out
    }
}

/// One failure reason: how often, and the first full message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Reconnects still in progress when the run ended.
    pub(crate) cut_at_end: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) inputs: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) actions: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) responses: AtomicU64,
    pub(crate) bad_datagrams: AtomicU64,
    pub(crate) late_snapshots: AtomicU64,
    pub(crate) snapshot_datagrams: AtomicU64,
    pub(crate) snapshot_bytes: AtomicU64,
    pub(crate) skipped_ticks: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) backfilled: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    /// UDP packets sent and received (quinn's connection stats).
    pub(crate) packets_up: AtomicU64,
    pub(crate) packets_down: AtomicU64,
    /// Of those, packets that carried only ACK frames (estimated, see
    /// [`zonehost_client::acks::ack_only_estimate`]).
    pub(crate) ack_only_up: AtomicU64,
    pub(crate) ack_only_down: AtomicU64,
    pub(crate) kills: AtomicU64,
    pub(crate) deaths: AtomicU64,
    pub(crate) zone_changes: AtomicU64,
    pub(crate) loot_picked_up: AtomicU64,
    pub(crate) disconnections: AtomicU64,
    pub(crate) reconnect_attempts: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) rejoined: AtomicU64,
    hists: Mutex<Hists>,
    failures: Mutex<BTreeMap<String, FailureCount>>,
    rejections: Mutex<BTreeMap<String, u64>>,
}

impl Live {
    /// Adds a connection's packets since `seen` (sent, received) and moves `seen` on.
    pub(crate) fn add_packets(
        &self,
        s: &quinn::ConnectionStats,
        seen: &mut (zonehost_client::PacketCounts, zonehost_client::PacketCounts),
    ) {
        use zonehost_client::PacketCounts;
        let now = (PacketCounts::sent(s), PacketCounts::received(s));
        let (up, down) = (now.0.since(&seen.0), now.1.since(&seen.1));
        Self::add(&self.packets_up, up.packets);
        Self::add(&self.packets_down, down.packets);
        Self::add(&self.ack_only_up, up.ack_only);
        Self::add(&self.ack_only_down, down.ack_only);
        *seen = now;
    }

    pub(crate) fn new() -> Self {
        let set = || (0..METRICS).map(|_| histogram()).collect::<Vec<_>>();
        let z = || AtomicU64::new(0);
        Self {
            connected_now: z(),
            connected_total: z(),
            cut_at_end: z(),
            connects: z(),
            failed: z(),
            inputs: z(),
            acks: z(),
            actions: z(),
            requests: z(),
            rejected: z(),
            snapshots: z(),
            events: z(),
            responses: z(),
            bad_datagrams: z(),
            late_snapshots: z(),
            snapshot_datagrams: z(),
            snapshot_bytes: z(),
            skipped_ticks: z(),
            send_errors: z(),
            backfilled: z(),
            bytes_up: z(),
            bytes_down: z(),
            packets_up: z(),
            packets_down: z(),
            ack_only_up: z(),
            ack_only_down: z(),
            kills: z(),
            deaths: z(),
            zone_changes: z(),
            loot_picked_up: z(),
            disconnections: z(),
            reconnect_attempts: z(),
            resumed: z(),
            rejoined: z(),
            hists: Mutex::new(Hists {
                total: set(),
                window: set(),
            }),
            failures: Mutex::new(BTreeMap::new()),
            rejections: Mutex::new(BTreeMap::new()),
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

    /// A bot failed (connection-level): counted by `kind`, the first message kept.
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

    /// A request was refused: counted as `<action>:<RequestError variant>`.
    pub(crate) fn rejected(&self, action: Metric, reason: &str) {
        Self::add(&self.rejected, 1);
        let mut r = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{}:{reason}", action.name());
        *r.entry(key).or_insert(0) += 1;
    }

    pub(crate) fn failures(&self) -> BTreeMap<String, FailureCount> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn rejections(&self) -> BTreeMap<String, u64> {
        self.rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Counter values at the previous sample.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    inputs: u64,
    acks: u64,
    actions: u64,
    snapshots: u64,
    rejected: u64,
    bytes_up: u64,
    bytes_down: u64,
    connects: u64,
}

impl Counters {
    pub(crate) fn read(live: &Live) -> Self {
        Self {
            inputs: Live::get(&live.inputs),
            acks: Live::get(&live.acks),
            actions: Live::get(&live.actions),
            snapshots: Live::get(&live.snapshots),
            rejected: Live::get(&live.rejected),
            bytes_up: Live::get(&live.bytes_up),
            bytes_down: Live::get(&live.bytes_down),
            connects: Live::get(&live.connects),
        }
    }
}

/// One second of a run (the per-second time series of the report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start of the run (this entry covers `[t-1, t)`).
    pub t: u32,
    /// Bots connected at the end of the second.
    pub connected: u64,
    /// Connects (first logins and reconnects) completed.
    pub connects: u64,
    /// Inputs sent.
    pub inputs: u64,
    /// Inputs acknowledged.
    pub acks: u64,
    /// Actions completed (moves acknowledged and requests answered).
    pub actions: u64,
    /// Requests refused.
    pub rejected: u64,
    /// New snapshot ticks received.
    pub snapshots: u64,
    /// UDP bytes sent by all bots.
    pub bytes_up: u64,
    /// UDP bytes received by all bots.
    pub bytes_down: u64,
    /// This second's latency histograms by metric name (V2 serialization with deflate,
    /// base64; read with [`crate::decode_hist`]); only metrics with samples appear.
    pub hists: BTreeMap<String, String>,
}

/// Closes the current second: counters since `prev` and the window histograms (reset).
pub(crate) fn sample_second(live: &Live, prev: &mut Counters, t: u32) -> Second {
    let now = Counters::read(live);
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let hists = live.hists().close_window();
    let s = Second {
        t,
        connected: Live::get(&live.connected_now),
        connects: d(now.connects, prev.connects),
        inputs: d(now.inputs, prev.inputs),
        acks: d(now.acks, prev.acks),
        actions: d(now.actions, prev.actions),
        rejected: d(now.rejected, prev.rejected),
        snapshots: d(now.snapshots, prev.snapshots),
        bytes_up: d(now.bytes_up, prev.bytes_up),
        bytes_down: d(now.bytes_down, prev.bytes_down),
        hists,
    };
    *prev = now;
    s
}

/// One progress line: totals, rates since the previous line, and the p99 of moves and of
/// requests in the open second (call it before [`sample_second`] closes the second).
pub(crate) fn progress_line(
    live: &Live,
    prev: &mut Counters,
    elapsed: Duration,
    interval: Duration,
    players: usize,
) -> String {
    let now = Counters::read(live);
    let secs = interval.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    let (move_p99, req_p99) = {
        let h = live.hists();
        let mv = &h.window[Metric::Move.index()];
        let move_p99 = (!mv.is_empty()).then(|| mv.value_at_quantile(0.99));
        let mut req = histogram();
        for m in Metric::ALL {
            if m.is_action() && !matches!(m, Metric::Move | Metric::Connect) {
                let _ = req.add(&h.window[m.index()]);
            }
        }
        let req_p99 = (!req.is_empty()).then(|| req.value_at_quantile(0.99));
        (move_p99, req_p99)
    };
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || "-".to_string(),
            |us| format!("{:.1} ms", us as f64 / 1000.0),
        )
    };
    let line = format!(
        "[{:>4.0}s] connected {}/{} failed {} | actions/s {:.0} inputs/s {:.0} acks/s {:.0} snapshots/s {:.0} rejects/s {:.0} | move p99 {} req p99 {}",
        elapsed.as_secs_f64(),
        Live::get(&live.connected_now),
        players,
        Live::get(&live.failed),
        rate(now.actions, prev.actions),
        rate(now.inputs, prev.inputs),
        rate(now.acks, prev.acks),
        rate(now.snapshots, prev.snapshots),
        rate(now.rejected, prev.rejected),
        ms(move_p99),
        ms(req_p99),
    );
    *prev = now;
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_batch_and_progress_resets_interval() {
        let live = Live::new();
        let mut s = Samples::default();
        s.add(&live, Metric::Move, Duration::ZERO);
        s.add(&live, Metric::Move, Duration::from_millis(12));
        assert!(live.hists().window[0].is_empty(), "nothing before a flush");
        s.flush(&live);
        assert_eq!(live.hists().window[0].len(), 2);
        assert_eq!(live.hists().window[0].min(), 1);
        assert_eq!(Live::get(&live.actions), 2);
        for _ in 0..(BATCH + 3) {
            s.add(&live, Metric::Attack, Duration::from_millis(3));
        }
        assert_eq!(
            live.hists().window[Metric::Attack.index()].len(),
            BATCH as u64,
            "a full batch flushes by itself"
        );
        s.flush(&live);
        Live::add(&live.inputs, 120);
        let mut prev = Counters::default();
        let line = progress_line(
            &live,
            &mut prev,
            Duration::from_secs(3),
            Duration::from_secs(2),
            5,
        );
        assert!(line.contains("inputs/s 60"), "{line}");
        assert!(line.contains("move p99 12.0 ms"), "{line}");
        assert!(line.contains("req p99 3.0 ms"), "{line}");
        let mut c = Counters::default();
        let _ = sample_second(&live, &mut c, 1);
        assert!(live.hists().window[0].is_empty());
        assert_eq!(
            live.hists().total[0].len(),
            2,
            "the closed second is in the totals"
        );
        let line = progress_line(
            &live,
            &mut prev,
            Duration::from_secs(4),
            Duration::from_secs(1),
            5,
        );
        assert!(
            line.contains("inputs/s 0") && line.ends_with("req p99 -"),
            "{line}"
        );
    }

    #[test]
    fn seconds_carry_window_histograms() {
        let live = Live::new();
        let mut s = Samples::default();
        s.add(&live, Metric::PickUp, Duration::from_millis(5));
        s.flush(&live);
        Live::add(&live.inputs, 7);
        let mut prev = Counters::default();
        let sec = sample_second(&live, &mut prev, 1);
        assert_eq!(sec.inputs, 7);
        assert_eq!(sec.actions, 1);
        assert!(sec.hists.contains_key("pick_up"));
        let sec = sample_second(&live, &mut prev, 2);
        assert_eq!(sec.inputs, 0);
        assert!(sec.hists.is_empty());
    }

    #[test]
    fn failures_and_rejections_are_grouped() {
        let live = Live::new();
        live.fail("connect: timeout".into(), "first".into());
        live.fail("connect: timeout".into(), "second".into());
        live.fail("run: goaway".into(), "bye".into());
        let f = live.failures();
        assert_eq!(f["connect: timeout"].count, 2);
        assert_eq!(f["connect: timeout"].example, "first");
        assert_eq!(Live::get(&live.failed), 3);
        live.rejected(Metric::Attack, "TooFar");
        live.rejected(Metric::Attack, "TooFar");
        assert_eq!(live.rejections()["attack:TooFar"], 2);
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
            assert_eq!(Metric::ALL[m.index()], m);
        }
    }
}
