//! Which ticks carry an instance's snapshots: its phase within the snapshot period.
//!
//! At 60 ticks and 30 snapshots per second an instance sends on every other tick, either
//! the even or the odd ones. An input applied on a tick without a snapshot waits one more
//! tick before its player sees it: a whole tick (16.7 ms) of latency, for half of the
//! inputs of a client whose inputs arrive at random ticks. A client sends its inputs at a
//! steady rate, so they arrive at a steady place in the period; the worker counts, per
//! member, on which tick of the period each input datagram is applied
//! ([`InputArrivals`]), and now and then moves the instance's snapshots onto the tick
//! where most of its members' inputs land ([`best_phase`]). A leaf: it uses nothing of
//! the crate.

/// Longest snapshot period (ticks) whose phase follows the inputs: 60 ticks per second
/// down to 7.5 snapshots per second. Longer periods keep the phase they have.
pub(super) const MAX_PHASE_PERIOD: usize = 8;

/// How often (ticks) the worker reviews the instances' phases: once a second at 60 Hz.
pub(super) const PHASE_REVIEW_TICKS: u64 = 60;

/// Input datagrams a review needs before it moves a phase.
const MIN_ARRIVALS: u32 = 8;

/// Whether a client of an instance at phase `phase`, with snapshot divisor `divisor`, is
/// due a snapshot on worker tick `ticks`, with `per_snapshot` ticks between the server's
/// snapshots: every `per_snapshot × divisor` ticks, shifted by the instance's phase. The
/// phase is one per instance, so that a party shares its encodings; the due ticks of a
/// divisor that divides another's include the other's. Instances start at their id as
/// phase, which spreads the snapshots of a worker over the ticks of a period (one burst
/// of every snapshot every other tick would be twice as large).
pub(super) fn snapshot_due(ticks: u64, phase: u32, per_snapshot: u32, divisor: u16) -> bool {
    (ticks + u64::from(phase)) % snapshot_period(per_snapshot, divisor) == 0
}

/// Ticks between two snapshots of a client with `divisor` when the server sends every
/// `per_snapshot` ticks (zeros count as ones).
pub(super) fn snapshot_period(per_snapshot: u32, divisor: u16) -> u64 {
    u64::from(per_snapshot.max(1)) * u64::from(divisor.max(1))
}

/// On which tick of its snapshot period a client's input datagrams were applied, counted
/// with a decay (halved at every review), for periods up to [`MAX_PHASE_PERIOD`].
#[derive(Debug, Default, Clone)]
pub(super) struct InputArrivals {
    /// The period the counts are for; 0 before the first input or when it is too long.
    period: u8,
    counts: [u16; MAX_PHASE_PERIOD],
}

impl InputArrivals {
    /// Counts an input datagram applied on worker tick `tick` by a client whose snapshot
    /// period is `period` ticks. A new period starts the counts over.
    pub(super) fn record(&mut self, tick: u64, period: u64) {
        if period == 0 || period > MAX_PHASE_PERIOD as u64 {
            self.period = 0;
            return;
        }
        if u64::from(self.period) != period {
            *self = Self {
                period: period as u8,
                counts: [0; MAX_PHASE_PERIOD],
            };
        }
        let slot = &mut self.counts[(tick % period) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Halves the counts: the phase follows what the client does now.
    pub(super) fn decay(&mut self) {
        for c in &mut self.counts {
            *c /= 2;
        }
    }
}

/// The phase for an instance now at `current` whose attached members have `arrivals`:
/// `Some(phase)` puts its snapshots on the tick of the period where most of their inputs
/// are applied, when that tick has a clear lead (a quarter of the inputs more) over the
/// instance's current snapshot tick; `None` keeps the current phase (too few inputs,
/// members with different periods, a long period, or no clear lead).
pub(super) fn best_phase<'a>(
    current: u32,
    arrivals: impl IntoIterator<Item = &'a InputArrivals>,
) -> Option<u32> {
    let mut period = 0u8;
    let mut sums = [0u32; MAX_PHASE_PERIOD];
    for a in arrivals {
        if a.period == 0 || (period != 0 && a.period != period) {
            return None;
        }
        period = a.period;
        for (sum, &c) in sums.iter_mut().zip(&a.counts) {
            *sum += u32::from(c);
        }
    }
    if period < 2 {
        return None;
    }
    let p = u64::from(period);
    let sums = &sums[..usize::from(period)];
    let total: u32 = sums.iter().sum();
    if total < MIN_ARRIVALS {
        return None;
    }
    // The tick of the period on which the instance sends now: (tick + phase) % p == 0.
    let now_at = ((p - u64::from(current) % p) % p) as usize;
    let (best_at, &best) = sums
        .iter()
        .enumerate()
        .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))?;
    if best_at == now_at || best <= sums[now_at] + total / 4 {
        return None;
    }
    Some(((p - best_at as u64) % p) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_only_due_on_its_instance_s_snapshot_ticks() {
        // `send_snapshots` skips an instance without looking at its members when the tick
        // is not due at divisor 1: that is right only if no divisor is due there either.
        for per in 0..=4 {
            for k in 0..=16 {
                for phase in 0..40 {
                    for t in 0..200 {
                        if snapshot_due(t, phase, per, k) {
                            assert!(snapshot_due(t, phase, per, 1), "{t} {phase} {per} {k}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn instances_take_turns_at_snapshots() {
        let due = |phase: u32, per: u32, k: u16| -> Vec<u64> {
            (0..12)
                .filter(|&t| snapshot_due(t, phase, per, k))
                .collect()
        };
        // 60 ticks, 60 snapshots: every tick, whatever the phase.
        assert_eq!(due(7, 1, 1), (0..12).collect::<Vec<_>>());
        // 30 snapshots: even instances on even ticks, odd ones on odd ticks.
        assert_eq!(due(0, 2, 1), [0, 2, 4, 6, 8, 10]);
        assert_eq!(due(1, 2, 1), [1, 3, 5, 7, 9, 11]);
        // A client at half of that, in the odd instance: every fourth tick, among the
        // instance's own.
        assert_eq!(due(1, 2, 2), [3, 7, 11]);
        assert!(due(1, 2, 2).iter().all(|t| due(1, 2, 1).contains(t)));
        // Zero never divides (treated as one).
        assert_eq!(due(0, 0, 0).len(), 12);
        // Over a period, the instances spread evenly over its ticks.
        let mut per_tick = [0u32; 4];
        for phase in 0..1000u32 {
            for t in 0..4u64 {
                if snapshot_due(t, phase, 2, 2) {
                    per_tick[t as usize] += 1;
                }
            }
        }
        assert_eq!(per_tick, [250; 4]);
    }

    fn arrivals(period: u64, ticks: impl IntoIterator<Item = u64>) -> InputArrivals {
        let mut a = InputArrivals::default();
        for t in ticks {
            a.record(t, period);
        }
        a
    }

    #[test]
    fn snapshots_move_onto_the_tick_the_inputs_arrive_on() {
        // Inputs every other tick, on the odd ticks; the instance sends on even ones.
        let odd = arrivals(2, (0..30).map(|i| 2 * i + 1));
        let phase = best_phase(0, [&odd]).expect("moves");
        assert!(
            snapshot_due(31, phase, 2, 1),
            "now on the odd ticks: {phase}"
        );
        // Already there: stays.
        assert_eq!(best_phase(phase, [&odd]), None);
        // Period 3 (20 snapshots per second), inputs on ticks ≡ 2: phase 1.
        let twos = arrivals(3, (0..20).map(|i| 3 * i + 2));
        assert_eq!(best_phase(0, [&twos]), Some(1));
        assert!(snapshot_due(2, 1, 3, 1));
    }

    #[test]
    fn a_phase_needs_enough_inputs_and_a_clear_lead() {
        let few = arrivals(2, [1, 3, 5]);
        assert_eq!(best_phase(0, [&few]), None, "three inputs");
        // Split evenly (a client sending near a tick boundary): no reason to move.
        let split = arrivals(2, (0..40).map(|i| i % 2));
        assert_eq!(best_phase(0, [&split]), None);
        // 60 snapshots per second: nothing to choose.
        let every = arrivals(1, 0..40);
        assert_eq!(best_phase(0, [&every]), None);
        // A period longer than the longest followed: no counts at all.
        let long = arrivals(16, (0..40).map(|i| i * 16 + 3));
        assert_eq!(best_phase(0, [&long]), None);
    }

    #[test]
    fn a_party_follows_most_of_its_inputs() {
        let a = arrivals(2, (0..30).map(|i| 2 * i + 1));
        let b = arrivals(2, (0..30).map(|i| 2 * i + 1));
        let c = arrivals(2, (0..30).map(|i| 2 * i));
        let phase = best_phase(0, [&a, &b, &c]).expect("two of three on odd ticks");
        assert!(snapshot_due(1, phase, 2, 1));
        // Members at different periods: the phase stays.
        let d = arrivals(4, (0..30).map(|i| 4 * i + 1));
        assert_eq!(best_phase(0, [&a, &d]), None);
    }

    #[test]
    fn counts_decay_and_restart_with_a_new_period() {
        let mut a = arrivals(2, (0..40).map(|i| 2 * i + 1));
        a.decay();
        assert_eq!(a.counts[1], 20);
        a.record(5, 4);
        assert_eq!(a.period, 4);
        assert_eq!(a.counts[..4], [0, 1, 0, 0]);
        // Saturates, never wraps.
        let mut b = InputArrivals::default();
        for t in 0..70_000u64 {
            b.record(t * 2, 2);
        }
        assert_eq!(b.counts[0], u16::MAX);
    }
}
