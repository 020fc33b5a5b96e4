//! Delta snapshots with interest management, per zone instance (SPEC.md §4.3).
//!
//! Each snapshot tick an instance records the state of all its entities once
//! ([`InstanceSnapshots::begin`]); then every client gets the entities of its *interest*
//! (itself, the instance's other players, which are its party, and everything within
//! the interest radius), most important first, as changes against the newest tick the
//! client reported having completely ([`InstanceSnapshots::for_client`]). A client whose
//! baseline is unknown or too old gets a full state. Clients that share a baseline and
//! an interest get the same encoded `Bytes`.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use zonehost_protocol::snapshot::{
    diff, kind, Changes, EncodeError, EntityState, PlayerAck, SnapshotEncoder, SnapshotMeta,
    BASELINE_HISTORY,
};

/// An interest: the ids (sorted) a client was sent at one tick, shared by the clients that
/// had the same one.
type Interest = Arc<Vec<u32>>;

/// Interests kept for reuse per worker at most (a tick's worth for a thousand clients).
const SPARE_INTERESTS: usize = 1024;

/// What one client was sent: the interest of each recent snapshot tick.
#[derive(Debug, Default)]
pub(crate) struct ClientBaselines {
    sent: VecDeque<(u32, Interest)>,
}

impl ClientBaselines {
    /// Forgets what was sent (the client starts over: a resume, a new connection).
    pub(crate) fn clear(&mut self) {
        self.sent.clear();
    }

    /// Snapshot ticks remembered (bounded by [`BASELINE_HISTORY`]).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sent.len()
    }
}

/// Key of an encoding shared by clients: same baseline tick, same interest then and now.
type ShareKey = (u32, usize, usize);

/// Scratch buffers of one worker's snapshot encoding, reused every tick: nothing in
/// `for_client` allocates but the datagrams themselves (and an interest when none is
/// spare).
#[derive(Debug, Default)]
pub(crate) struct SnapshotScratch {
    order: Vec<(u64, usize)>,
    cur: Vec<EntityState>,
    ids: Vec<u32>,
    base: Vec<EntityState>,
    changes: Changes,
    encoder: SnapshotEncoder,
    /// Interests no client refers to any more, to be refilled.
    spare: Vec<Interest>,
}

impl SnapshotScratch {
    /// Keeps `interest` for reuse if nobody else holds it.
    fn recycle(&mut self, mut interest: Interest) {
        if self.spare.len() < SPARE_INTERESTS && Arc::get_mut(&mut interest).is_some() {
            self.spare.push(interest);
        }
    }

    /// An interest holding `self.ids`, from a spare one when there is one.
    fn new_interest(&mut self) -> Interest {
        let mut interest = self.spare.pop().unwrap_or_default();
        match Arc::get_mut(&mut interest) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(&self.ids);
                interest
            }
            None => Arc::new(self.ids.clone()),
        }
    }
}

/// Counters of one client's snapshot, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// The snapshot is a full state (no usable baseline).
    pub(crate) full: bool,
    /// The bytes were encoded for an earlier client of this tick and shared.
    pub(crate) shared: bool,
}

/// One instance's snapshot history and this tick's encodings.
#[derive(Debug, Default)]
pub(crate) struct InstanceSnapshots {
    tick: u32,
    /// Every entity of the instance at recent snapshot ticks, sorted by id, newest last.
    history: VecDeque<(u32, Vec<EntityState>)>,
    /// A dropped history entry, refilled by the next [`InstanceSnapshots::begin`].
    spare: Vec<EntityState>,
    /// Interests handed out this tick (clients with equal interests share one).
    interests: Vec<Interest>,
    /// Encodings of this tick by [`ShareKey`]: their datagrams in `parts`.
    encoded: Vec<(ShareKey, Range<usize>)>,
    /// The datagrams of this tick's encodings.
    parts: Vec<Bytes>,
}

impl InstanceSnapshots {
    /// Starts snapshot `tick` with the instance's entities (any order).
    pub(crate) fn begin(&mut self, tick: u32, entities: impl Iterator<Item = EntityState>) {
        self.tick = tick;
        let mut all = std::mem::take(&mut self.spare);
        all.clear();
        // Exactly as much room as the world can list (not the doubling of a growing Vec:
        // a few ticks of history per instance are kept).
        if let Some(most) = entities.size_hint().1 {
            all.reserve_exact(most);
        }
        all.extend(entities);
        all.sort_unstable_by_key(|e| e.id);
        if self.history.len() == BASELINE_HISTORY {
            self.drop_oldest();
        }
        self.history.push_back((tick, all));
        self.interests.clear();
        self.encoded.clear();
        self.parts.clear();
    }

    fn drop_oldest(&mut self) {
        if let Some((_, state)) = self.history.pop_front() {
            self.spare = state;
        }
    }

    /// Drops history no client can use any more: ticks older than `oldest_baseline`, the
    /// oldest tick a client of the instance reported (the newest state always stays).
    pub(crate) fn prune(&mut self, oldest_baseline: u32) {
        while self.history.len() > 1
            && self
                .history
                .front()
                .is_some_and(|(t, _)| *t < oldest_baseline)
        {
            self.drop_oldest();
        }
    }

    /// Ticks of history kept.
    #[cfg(test)]
    pub(crate) fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The datagrams of this tick's snapshot for the client of entity `me`, which
    /// reported `reported` as its newest complete tick. `radius_mm` bounds its interest
    /// (players of the instance are always in it); `acks` are the instance's players'.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn for_client<'a>(
        &'a mut self,
        scratch: &mut SnapshotScratch,
        client: &mut ClientBaselines,
        me: u32,
        reported: u32,
        radius_mm: u32,
        instance: u32,
        zone: u16,
        acks: &[PlayerAck],
    ) -> Result<(&'a [Bytes], Encoded), EncodeError> {
        let Some((tick, now)) = self.history.back().map(|(t, s)| (*t, s)) else {
            return Ok((
                &[],
                Encoded {
                    full: true,
                    shared: false,
                },
            ));
        };
        // Interest, most important first: me, the other players, then by distance.
        let origin = now
            .binary_search_by_key(&me, |e| e.id)
            .ok()
            .map(|i| (i64::from(now[i].x_mm), i64::from(now[i].y_mm)));
        let r2 = i64::from(radius_mm).pow(2);
        scratch.order.clear();
        // `now` is sorted by id, so the interest's ids come out sorted as they are chosen.
        scratch.ids.clear();
        for (i, e) in now.iter().enumerate() {
            let d2 = origin.map_or(0, |(x, y)| {
                (i64::from(e.x_mm) - x).pow(2) + (i64::from(e.y_mm) - y).pow(2)
            });
            let rank = if e.id == me {
                0
            } else if e.kind == kind::PLAYER {
                1
            } else if d2 <= r2 {
                2 + d2 as u64
            } else {
                continue;
            };
            scratch.order.push((rank, i));
            scratch.ids.push(e.id);
        }
        debug_assert!(scratch.ids.is_sorted());
        scratch.order.sort_unstable();
        scratch.cur.clear();
        scratch
            .cur
            .extend(scratch.order.iter().map(|&(_, i)| now[i]));
        let interest = match self.interests.iter().find(|i| i[..] == scratch.ids[..]) {
            Some(i) => i.clone(),
            None => {
                let i = scratch.new_interest();
                self.interests.push(i.clone());
                i
            }
        };
        // Baseline: the reported tick, if this client was sent it and its state is kept.
        while client.sent.front().is_some_and(|(t, _)| *t < reported) {
            if let Some((_, old)) = client.sent.pop_front() {
                scratch.recycle(old);
            }
        }
        // (tick, its place in `client.sent`, its place in `self.history`): indices, not a
        // clone of the interest, so that no reference count is touched.
        let base = client
            .sent
            .iter()
            .position(|(t, _)| *t == reported && reported != 0)
            .and_then(|at| {
                let t = client.sent[at].0;
                let kept = self.history.iter().position(|(h, _)| *h == t)?;
                Some((t, at, kept))
            });
        let (baseline, base_key) = match base {
            Some((t, at, _)) => (t, Arc::as_ptr(&client.sent[at].1) as usize),
            None => (0, 0),
        };
        let key = (baseline, base_key, Arc::as_ptr(&interest) as usize);
        let full = baseline == 0;
        if let Some((_, parts)) = self.encoded.iter().find(|(k, _)| *k == key) {
            let parts = parts.clone();
            Self::remember(client, scratch, tick, interest);
            return Ok((&self.parts[parts], Encoded { full, shared: true }));
        }
        scratch.base.clear();
        if let Some((_, at, kept)) = base {
            // The client's state at the baseline: that tick's entities of its interest then.
            let ids = &client.sent[at].1;
            scratch.base.extend(
                self.history[kept]
                    .1
                    .iter()
                    .filter(|e| ids.binary_search(&e.id).is_ok())
                    .copied(),
            );
        }
        Self::remember(client, scratch, tick, interest);
        diff(&scratch.base, &scratch.cur, &mut scratch.changes);
        let meta = SnapshotMeta {
            tick,
            baseline,
            instance,
            zone,
        };
        let first = self.parts.len();
        if let Err(e) = scratch
            .encoder
            .encode(meta, acks, &scratch.changes, &mut self.parts)
        {
            self.parts.truncate(first);
            return Err(e);
        }
        self.encoded.push((key, first..self.parts.len()));
        Ok((
            &self.parts[first..],
            Encoded {
                full,
                shared: false,
            },
        ))
    }

    /// Records that `client` was sent `interest` at `tick`.
    fn remember(
        client: &mut ClientBaselines,
        scratch: &mut SnapshotScratch,
        tick: u32,
        interest: Interest,
    ) {
        if client.sent.len() == BASELINE_HISTORY {
            if let Some((_, old)) = client.sent.pop_front() {
                scratch.recycle(old);
            }
        }
        client.sent.push_back((tick, interest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonehost_protocol::snapshot::{decode_snapshot, Applied, SnapshotView};

    fn monster(id: u32, x_mm: i32) -> EntityState {
        EntityState {
            id,
            x_mm,
            y_mm: 0,
            hp: 50,
            max_hp: 50,
            kind: kind::MONSTER,
            ..EntityState::default()
        }
    }

    fn player(id: u32, x_mm: i32) -> EntityState {
        EntityState {
            kind: kind::PLAYER,
            ..monster(id, x_mm)
        }
    }

    fn deliver(view: &mut SnapshotView, datagrams: &[Bytes]) -> Applied {
        let mut last = Applied::Stale;
        for d in datagrams {
            let (h, b) = decode_snapshot(d).expect("decode");
            last = view.apply(h, b).expect("apply");
        }
        last
    }

    #[test]
    fn interest_deltas_sharing_and_fallback() {
        let mut inst = InstanceSnapshots::default();
        let mut scratch = SnapshotScratch::default();
        let (mut a, mut b) = (ClientBaselines::default(), ClientBaselines::default());
        let (mut va, mut vb) = (SnapshotView::new(), SnapshotView::new());
        let acks = [PlayerAck {
            entity: 1,
            last_input: 0,
        }];
        let mut world = [
            player(1, 0),
            player(2, 100),
            monster(10, 5_000),
            monster(11, 90_000),
        ];
        // Tick 3: both players are new: full states, the same interest (both players
        // and the near monster; the far one is out of reach of either) shared.
        inst.begin(3, world.iter().copied());
        let (d, e) = inst
            .for_client(&mut scratch, &mut a, 1, 0, 30_000, 7, 1, &acks)
            .expect("encode");
        assert_eq!(
            e,
            Encoded {
                full: true,
                shared: false
            }
        );
        assert_eq!(deliver(&mut va, d), Applied::Complete);
        assert_eq!(
            va.entities().iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![1, 2, 10]
        );
        let (d, e) = inst
            .for_client(&mut scratch, &mut b, 2, 0, 30_000, 7, 1, &acks)
            .expect("encode");
        assert_eq!(
            e,
            Encoded {
                full: true,
                shared: true
            }
        );
        assert_eq!(deliver(&mut vb, d), Applied::Complete);
        // Tick 6: the monster moves; `a` reported tick 3, `b` reported nothing yet.
        world[2].x_mm += 300;
        world[2].vx_cms = 600;
        inst.begin(6, world.iter().copied());
        let (d, e) = inst
            .for_client(&mut scratch, &mut a, 1, va.tick(), 30_000, 7, 1, &acks)
            .expect("encode");
        assert!(!e.full);
        assert_eq!(d.len(), 1);
        assert!(d[0].len() < 100, "a move is small: {} bytes", d[0].len());
        assert_eq!(deliver(&mut va, d), Applied::Complete);
        assert_eq!(va.get(10), Some(&world[2]));
        let (d, e) = inst
            .for_client(&mut scratch, &mut b, 2, 0, 30_000, 7, 1, &acks)
            .expect("encode");
        assert!(e.full);
        assert_eq!(deliver(&mut vb, d), Applied::Complete);
        assert_eq!(vb.get(10), Some(&world[2]));
        // Tick 9: player 1 walks off toward the far monster: it enters, the near one leaves.
        world[0].x_mm = 70_000;
        inst.begin(9, world.iter().copied());
        let (d, _) = inst
            .for_client(&mut scratch, &mut a, 1, va.tick(), 30_000, 7, 1, &acks)
            .expect("encode");
        assert_eq!(deliver(&mut va, d), Applied::Complete);
        assert_eq!(
            va.entities().iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![1, 2, 11]
        );
        assert_eq!(va.get(1), Some(&world[0]));
        // History: pruned to what clients still report.
        inst.prune(va.tick());
        assert_eq!(inst.history_len(), 1);
        assert!(a.len() <= BASELINE_HISTORY);
    }

    #[test]
    fn a_client_that_never_reports_gets_full_states_and_bounded_memory() {
        let mut inst = InstanceSnapshots::default();
        let mut scratch = SnapshotScratch::default();
        let mut c = ClientBaselines::default();
        let acks = [PlayerAck::default()];
        for tick in 1..200u32 {
            inst.begin(tick, [player(1, tick as i32)].into_iter());
            let (_, e) = inst
                .for_client(&mut scratch, &mut c, 1, 0, 30_000, 1, 1, &acks)
                .expect("encode");
            assert!(e.full);
            inst.prune(0);
        }
        assert!(inst.history_len() <= BASELINE_HISTORY);
        assert!(c.len() <= BASELINE_HISTORY);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Over many ticks, with clients that report late, never or start over, and
        /// interests recycled between them: every snapshot a client receives rebuilds
        /// exactly its interest of that tick (itself, the players, the monsters in reach).
        #[test]
        fn every_client_rebuilds_its_interest_through_recycling(
            steps in proptest::collection::vec(
                (proptest::collection::vec(-3_000i32..3_000, 6), proptest::collection::vec(0u8..4, 3)),
                1..50,
            ),
        ) {
            let mut inst = InstanceSnapshots::default();
            let mut scratch = SnapshotScratch::default();
            let mut clients: Vec<(ClientBaselines, SnapshotView, u32)> = (0..3)
                .map(|_| (ClientBaselines::default(), SnapshotView::new(), 0))
                .collect();
            let acks = [PlayerAck::default()];
            let mut world = vec![player(1, 0), player(2, 20_000), player(3, -20_000)];
            world.extend((0..6).map(|i| monster(10 + i, i as i32 * 9_000 - 25_000)));
            for (t, (moves, reports)) in steps.iter().enumerate() {
                let tick = t as u32 + 1;
                for (m, dx) in world[3..].iter_mut().zip(moves) {
                    m.x_mm += dx;
                }
                inst.begin(tick, world.iter().copied());
                let mut oldest = u32::MAX;
                for (c, (baselines, view, reported)) in clients.iter_mut().enumerate() {
                    // 0: report the view's tick; 1: report nothing new; 2: report 0
                    // (start over); 3: the datagrams of this tick are lost.
                    match reports[c] {
                        0 => *reported = view.tick(),
                        2 => {
                            *reported = 0;
                            baselines.clear();
                            *view = SnapshotView::new();
                        }
                        _ => {}
                    }
                    if *reported != 0 {
                        oldest = oldest.min(*reported);
                    }
                    let me = c as u32 + 1;
                    let (d, _) = inst
                        .for_client(&mut scratch, baselines, me, *reported, 30_000, 7, 1, &acks)
                        .expect("encode");
                    if reports[c] == 3 {
                        continue;
                    }
                    let applied = deliver(view, d);
                    proptest::prop_assert_eq!(applied, Applied::Complete);
                    let origin = world[c].x_mm;
                    let want: Vec<EntityState> = world
                        .iter()
                        .filter(|e| e.kind == kind::PLAYER || (e.x_mm - origin).abs() <= 30_000)
                        .copied()
                        .collect();
                    let mut want = want;
                    want.sort_by_key(|e| e.id);
                    proptest::prop_assert_eq!(view.entities(), &want[..]);
                }
                inst.prune(oldest);
            }
        }
    }
}
