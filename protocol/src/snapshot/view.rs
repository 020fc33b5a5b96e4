//! The client's side of delta snapshots: rebuilding each tick's state from its baseline
//! and the parts that arrived (SPEC.md §4.3.5).

use std::collections::VecDeque;

use super::body::{ArchivedSnapshotBody, EntityState};
use crate::datagram::SnapshotHeader;

/// Complete ticks a [`SnapshotView`] keeps as possible baselines. The server encodes
/// against the newest tick the client reported, which the client still has as long as
/// fewer than this many newer ticks completed while the report travelled.
pub const BASELINE_HISTORY: usize = 32;

/// What applying one snapshot part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The part completed its tick: [`SnapshotView::entities`] is that tick's state now,
    /// and [`SnapshotView::tick`] the tick to report as `ack_tick`.
    Complete,
    /// A part of a tick whose other parts have not all arrived yet.
    Partial,
    /// A tick no newer than the newest complete one, or a part already applied: ignored.
    Stale,
    /// A delta against a baseline this view does not have (older than its history, or of
    /// another instance): ignored. The server moves to a newer baseline once the
    /// client's next input reports its newest complete tick.
    MissingBaseline,
}

/// A snapshot part contradicts the state it is a delta against: it was not applied and
/// its tick is abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// A move, hit-point change or despawn names an entity the baseline does not have.
    #[error("change for entity {0} that the baseline does not have")]
    UnknownEntity(u32),
    /// Two parts of one tick disagree about its part count or baseline.
    #[error("parts of tick {0} disagree about parts or baseline")]
    Inconsistent(u32),
}

#[derive(Debug, Clone)]
struct Assembly {
    tick: u32,
    baseline: u32,
    parts: u8,
    seen: u16,
    state: Vec<EntityState>,
}

/// The entities a client sees, rebuilt from delta snapshots of one zone instance.
///
/// Feed every snapshot part of the current instance to [`SnapshotView::apply`]; read the
/// newest complete state with [`SnapshotView::entities`], and report
/// [`SnapshotView::tick`] to the server as the input datagrams' `ack_tick`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotView {
    instance: Option<u32>,
    complete: VecDeque<(u32, Vec<EntityState>)>,
    assembly: Option<Assembly>,
}

impl SnapshotView {
    /// An empty view (no instance yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (after a zone change, a resume or a reconnect).
    pub fn reset(&mut self) {
        self.instance = None;
        self.complete.clear();
        self.assembly = None;
    }

    /// Newest completely applied tick, 0 before the first.
    pub fn tick(&self) -> u32 {
        self.complete.back().map_or(0, |(t, _)| *t)
    }

    /// Instance of the state, once a full snapshot was applied.
    pub fn instance(&self) -> Option<u32> {
        self.instance
    }

    /// The newest complete state, sorted by entity id.
    pub fn entities(&self) -> &[EntityState] {
        self.complete.back().map_or(&[], |(_, s)| s.as_slice())
    }

    /// The entity `id` in the newest complete state.
    pub fn get(&self, id: u32) -> Option<&EntityState> {
        let s = self.entities();
        s.binary_search_by_key(&id, |e| e.id).ok().map(|i| &s[i])
    }

    /// Applies one decoded snapshot part.
    pub fn apply(
        &mut self,
        header: &SnapshotHeader,
        body: &ArchivedSnapshotBody,
    ) -> Result<Applied, ViewError> {
        let (tick, baseline, instance) = (
            header.tick.get(),
            header.baseline.get(),
            header.instance.get(),
        );
        if self.instance != Some(instance) {
            if baseline != 0 {
                return Ok(Applied::MissingBaseline);
            }
            // The first full state of a new instance: what was known is of no use.
            self.reset();
            self.instance = Some(instance);
        }
        if self.complete.back().is_some_and(|(t, _)| tick <= *t) {
            return Ok(Applied::Stale);
        }
        let bit = 1u16 << header.part;
        match &self.assembly {
            Some(a) if a.tick == tick => {
                if a.parts != header.parts || a.baseline != baseline {
                    self.assembly = None;
                    return Err(ViewError::Inconsistent(tick));
                }
                if a.seen & bit != 0 {
                    return Ok(Applied::Stale);
                }
            }
            Some(a) if a.tick > tick => return Ok(Applied::Stale),
            _ => {
                let state = if baseline == 0 {
                    Vec::new()
                } else {
                    match self.complete.iter().rev().find(|(t, _)| *t == baseline) {
                        Some((_, s)) => s.clone(),
                        None => return Ok(Applied::MissingBaseline),
                    }
                };
                self.assembly = Some(Assembly {
                    tick,
                    baseline,
                    parts: header.parts,
                    seen: 0,
                    state,
                });
            }
        }
        let Some(a) = self.assembly.as_mut() else {
            return Ok(Applied::Stale);
        };
        if let Err(e) = apply_changes(&mut a.state, body) {
            self.assembly = None;
            return Err(e);
        }
        a.seen |= bit;
        if a.seen.count_ones() < u32::from(a.parts) {
            return Ok(Applied::Partial);
        }
        let Some(done) = self.assembly.take() else {
            return Ok(Applied::Stale);
        };
        if self.complete.len() == BASELINE_HISTORY {
            self.complete.pop_front();
        }
        self.complete.push_back((done.tick, done.state));
        Ok(Applied::Complete)
    }
}

fn apply_changes(
    state: &mut Vec<EntityState>,
    body: &ArchivedSnapshotBody,
) -> Result<(), ViewError> {
    let find = |state: &[EntityState], id: u32| state.binary_search_by_key(&id, |e| e.id);
    for id in body.despawns.iter() {
        let id = id.to_native();
        match find(state, id) {
            Ok(i) => {
                state.remove(i);
            }
            Err(_) => return Err(ViewError::UnknownEntity(id)),
        }
    }
    for s in body.spawns.iter() {
        let e = EntityState::from(s);
        match find(state, e.id) {
            Ok(i) => state[i] = e,
            Err(i) => state.insert(i, e),
        }
    }
    for m in body.moves.iter() {
        let id = m.id.to_native();
        let i = find(state, id).map_err(|_| ViewError::UnknownEntity(id))?;
        let e = &mut state[i];
        e.x_mm = e.x_mm.wrapping_add(i32::from(m.dx_mm.to_native()));
        e.y_mm = e.y_mm.wrapping_add(i32::from(m.dy_mm.to_native()));
        e.vx_cms = m.vx_cms.to_native();
        e.vy_cms = m.vy_cms.to_native();
    }
    for h in body.hps.iter() {
        let id = h.id.to_native();
        let i = find(state, id).map_err(|_| ViewError::UnknownEntity(id))?;
        state[i].hp = h.hp.to_native();
    }
    Ok(())
}
