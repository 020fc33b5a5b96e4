//! One zone instance: its entities and the fixed-timestep [`World::step`].

use std::collections::VecDeque;

use crate::movement::{step_mm, velocity_mms, PlayerInput, MAX_BANKED_INPUTS, MAX_QUEUED_INPUTS};

/// Entity id, unique within one instance.
pub type EntityId = u32;

/// What an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// A player character.
    Player,
}

/// Static description of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Zone template id.
    pub id: u16,
    /// Width in millimetres (x runs 0..width).
    pub width_mm: i32,
    /// Height in millimetres (y runs 0..height).
    pub height_mm: i32,
    /// Where players appear, in millimetres.
    pub spawn_mm: (i32, i32),
}

/// Read-only view of an entity for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityView {
    /// Entity id.
    pub id: EntityId,
    /// Kind.
    pub kind: EntityKind,
    /// Position in millimetres.
    pub pos_mm: (i32, i32),
    /// Velocity in millimetres per second during the last tick.
    pub vel_mms: (i32, i32),
    /// Current hit points.
    pub hp: u16,
    /// Maximum hit points.
    pub max_hp: u16,
}

#[derive(Debug, Clone)]
struct Player {
    id: EntityId,
    player_id: u64,
    pos: (i32, i32),
    vel: (i32, i32),
    hp: u16,
    max_hp: u16,
    queue: VecDeque<PlayerInput>,
    last_applied: u32,
    budget: u32,
    inputs_dropped: u64,
}

/// One zone instance's live state.
#[derive(Debug, Clone)]
pub struct World {
    zone: ZoneSpec,
    tick: u32,
    next_entity: EntityId,
    players: Vec<Player>,
}

impl World {
    /// An empty instance of `zone`.
    pub fn new(zone: ZoneSpec) -> Self {
        Self {
            zone,
            tick: 0,
            next_entity: 1,
            players: Vec::new(),
        }
    }

    /// The zone.
    pub fn zone(&self) -> &ZoneSpec {
        &self.zone
    }

    /// Ticks stepped so far.
    pub fn tick(&self) -> u32 {
        self.tick
    }

    /// Number of players.
    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// Adds a player at the zone spawn and returns its entity id.
    pub fn add_player(&mut self, player_id: u64) -> EntityId {
        let id = self.next_entity;
        self.next_entity += 1;
        self.players.push(Player {
            id,
            player_id,
            pos: self.zone.spawn_mm,
            vel: (0, 0),
            hp: 100,
            max_hp: 100,
            queue: VecDeque::with_capacity(MAX_QUEUED_INPUTS),
            last_applied: 0,
            budget: 0,
            inputs_dropped: 0,
        });
        id
    }

    /// Removes a player; returns its player id if it was here.
    pub fn remove_player(&mut self, entity: EntityId) -> Option<u64> {
        let i = self.players.iter().position(|p| p.id == entity)?;
        Some(self.players.swap_remove(i).player_id)
    }

    /// Queues an input for a player. Inputs at or below the last applied or already
    /// queued sequence are ignored (redundant copies); returns whether it was queued.
    pub fn queue_input(&mut self, entity: EntityId, input: PlayerInput) -> bool {
        let Some(p) = self.players.iter_mut().find(|p| p.id == entity) else {
            return false;
        };
        let newest = p.queue.back().map_or(p.last_applied, |i| i.seq);
        if input.seq <= newest {
            // Out of order but still unapplied: insert in place.
            if input.seq > p.last_applied && !p.queue.iter().any(|i| i.seq == input.seq) {
                let at = p
                    .queue
                    .iter()
                    .position(|i| i.seq > input.seq)
                    .unwrap_or(p.queue.len());
                p.queue.insert(at, input);
            } else {
                return false;
            }
        } else {
            p.queue.push_back(input);
        }
        while p.queue.len() > MAX_QUEUED_INPUTS {
            p.queue.pop_front();
            p.inputs_dropped += 1;
        }
        true
    }

    /// Advances the world by one fixed tick.
    pub fn step(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        let (w, h) = (self.zone.width_mm, self.zone.height_mm);
        for p in &mut self.players {
            p.budget = (p.budget + 1).min(MAX_BANKED_INPUTS);
            let (mut dx, mut dy, mut applied) = (0, 0, 0);
            while p.budget > 0 {
                let Some(input) = p.queue.pop_front() else {
                    break;
                };
                p.budget -= 1;
                let v = velocity_mms(&input);
                dx += step_mm(v.0);
                dy += step_mm(v.1);
                p.last_applied = input.seq;
                applied += 1;
            }
            p.pos = ((p.pos.0 + dx).clamp(0, w), (p.pos.1 + dy).clamp(0, h));
            p.vel = if applied == 0 {
                (0, 0)
            } else {
                (dx * 60 / applied, dy * 60 / applied)
            };
        }
    }

    /// Last input sequence applied for a player's entity.
    pub fn last_input(&self, entity: EntityId) -> Option<u32> {
        self.players
            .iter()
            .find(|p| p.id == entity)
            .map(|p| p.last_applied)
    }

    /// Every entity, players first.
    pub fn entities(&self) -> impl Iterator<Item = EntityView> + '_ {
        self.players.iter().map(|p| EntityView {
            id: p.id,
            kind: EntityKind::Player,
            pos_mm: p.pos,
            vel_mms: p.vel,
            hp: p.hp,
            max_hp: p.max_hp,
        })
    }

    /// `(entity, last applied input)` of every player.
    pub fn player_acks(&self) -> impl Iterator<Item = (EntityId, u32)> + '_ {
        self.players.iter().map(|p| (p.id, p.last_applied))
    }

    /// Inputs dropped because a player's queue overflowed, summed over players.
    pub fn inputs_dropped(&self) -> u64 {
        self.players.iter().map(|p| p.inputs_dropped).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::movement::MAX_SPEED_MMS;
    use proptest::prelude::*;

    fn zone() -> ZoneSpec {
        ZoneSpec {
            id: 1,
            width_mm: 100_000,
            height_mm: 100_000,
            spawn_mm: (50_000, 50_000),
        }
    }

    fn right(seq: u32) -> PlayerInput {
        PlayerInput {
            seq,
            move_x: 1000,
            move_y: 0,
            buttons: 0,
        }
    }

    #[test]
    fn inputs_apply_in_sequence_once() {
        let mut w = World::new(zone());
        let e = w.add_player(7);
        assert!(w.queue_input(e, right(2)));
        assert!(w.queue_input(e, right(1)));
        assert!(!w.queue_input(e, right(1)));
        w.step();
        assert_eq!(w.last_input(e), Some(1));
        w.step();
        assert_eq!(w.last_input(e), Some(2));
        assert!(!w.queue_input(e, right(2)));
        let pos = w.entities().next().map(|v| v.pos_mm);
        assert_eq!(pos, Some((50_200, 50_000)));
    }

    #[test]
    fn bounds_clamp() {
        let mut w = World::new(ZoneSpec {
            spawn_mm: (99_950, 0),
            ..zone()
        });
        let e = w.add_player(1);
        w.queue_input(e, right(1));
        w.step();
        assert_eq!(w.entities().next().map(|v| v.pos_mm), Some((100_000, 0)));
    }

    proptest! {
        /// Whatever a client sends, displacement over n ticks never exceeds
        /// (n + MAX_BANKED_INPUTS) ticks at full speed.
        #[test]
        fn never_faster_than_limit(batches in prop::collection::vec(0usize..10, 1..100)) {
            let mut w = World::new(zone());
            let e = w.add_player(1);
            let mut seq = 0;
            for n in &batches {
                for _ in 0..*n {
                    seq += 1;
                    w.queue_input(e, right(seq));
                }
                w.step();
            }
            let x = w.entities().next().map(|v| v.pos_mm.0).unwrap_or(0);
            let max = (batches.len() as i32 + MAX_BANKED_INPUTS as i32) * step_mm(MAX_SPEED_MMS as i32);
            prop_assert!(x - 50_000 <= max, "moved {} > {}", x - 50_000, max);
        }
    }
}
