//! Where a navigating bot goes and how it walks there: the steering of each input slot
//! (paths, getting unstuck), the hopper's portal goals and the fighter's goals (loot, the
//! way to a combat zone or back to town, the target, roaming).

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use zonehost_protocol::datagram::InputCmd;

use super::{Brain, Hop};
use crate::behaviour::Behaviour;
use crate::nav::{axes_toward, dist};

impl Brain {
    pub(super) fn steer(&mut self, now: Instant) -> InputCmd {
        if self.dead || self.leaving {
            return InputCmd::default();
        }
        let Some(pred) = self.predicted() else {
            return InputCmd::default();
        };
        if let Hop::Step { axis, .. } = self.hop {
            return InputCmd::new(axis.0, axis.1, 0);
        }
        if self.unstick_left > 0 {
            self.unstick_left -= 1;
            return self.unstick_cmd;
        }
        let Some((goal, stop)) = self.goal(pred, now) else {
            self.stuck_ticks = 0;
            return InputCmd::default();
        };
        let d = dist(pred, goal);
        if d <= stop {
            self.stuck_ticks = 0;
            if let Hop::Approach {
                portal,
                stand,
                axis,
            } = self.hop
            {
                self.hop = Hop::Settle {
                    portal,
                    stand,
                    axis,
                };
            }
            return InputCmd::default();
        }
        // Path upkeep: a new goal far from the planned one, or an old plan.
        let replan = self.path.is_empty()
            || self.path_goal.is_none_or(|g| dist(g, goal) > 1500)
            || self
                .path_at
                .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(3));
        if replan {
            self.path = self
                .map()
                .and_then(|m| m.path(pred, goal))
                .unwrap_or_else(|| vec![goal]);
            self.path_goal = Some(goal);
            self.path_at = Some(now);
        } else if let Some(last) = self.path.last_mut() {
            *last = goal;
        }
        while self.path.len() > 1 && dist(pred, self.path[0]) < 200 {
            self.path.remove(0);
        }
        let wp = self.path.first().copied().unwrap_or(goal);
        let max = if self.path.len() <= 1 {
            (d - stop).clamp(1, 100) as i32
        } else {
            100
        };
        let (x, y) = axes_toward(pred, wp, max);
        // Stuck: the prediction did not move for half a second although we push.
        if pred == self.last_pred && (x, y) != (0, 0) {
            self.stuck_ticks += 1;
            if self.stuck_ticks > self.s.input_hz / 2 + 10 {
                self.stuck_ticks = 0;
                self.path.clear();
                self.unstick_left = self.s.input_hz / 2;
                self.unstick_cmd = self.wander.random_cmd();
            }
        } else {
            self.stuck_ticks = 0;
        }
        self.last_pred = pred;
        InputCmd::new(x, y, 0)
    }

    /// Where to go and how close to get.
    fn goal(&mut self, pred: (i32, i32), now: Instant) -> Option<((i32, i32), i64)> {
        match self.s.behaviour {
            Behaviour::Hopper => self.hop_goal(now),
            Behaviour::Fighter | Behaviour::Looter | Behaviour::Party => self.fight_goal(pred, now),
            _ => None,
        }
    }

    fn hop_goal(&mut self, now: Instant) -> Option<((i32, i32), i64)> {
        match self.hop {
            Hop::Pick => {
                let atlas = self.atlas.clone();
                let map = atlas.zone(self.zone)?;
                if map.portals.is_empty() {
                    return None;
                }
                let i = self.rng.random_range(0..map.portals.len());
                let portal = map.portals[i].0;
                let gap = 250 + self.rng.random_range(0..100);
                let (stand, axis) = map.portal_approach(portal, gap);
                self.hop = Hop::Approach {
                    portal,
                    stand,
                    axis,
                };
                self.path.clear();
                Some((stand, 2))
            }
            Hop::Approach { stand, .. } => Some((stand, 2)),
            Hop::Dwell { until } => {
                if now >= until {
                    self.hop = Hop::Pick;
                }
                None
            }
            Hop::Settle { .. } | Hop::Step { .. } | Hop::Ask => None,
            Hop::Wait { until } => {
                if now >= until {
                    // No transfer: stepped short (a wall, a lost input) or already inside.
                    let inside = self
                        .pos
                        .zip(self.map())
                        .is_some_and(|(p, m)| m.portals.iter().any(|(r, _)| r.contains(p)));
                    self.zone_timer = None;
                    self.hop = if inside { Hop::Ask } else { Hop::Pick };
                }
                None
            }
        }
    }

    fn fight_goal(&mut self, pred: (i32, i32), now: Instant) -> Option<((i32, i32), i64)> {
        // Own loot first (before leaving a zone, where it would be lost), unless a monster
        // is close.
        if self.s.behaviour == Behaviour::Looter {
            let engaged = self.target.is_some_and(|t| dist(pred, t.pos) < 4000);
            if !engaged {
                if let Some(l) = self.loot.first() {
                    return Some((l.pos, 800));
                }
            }
        }
        let map = self.map()?;
        // Towns have no monsters: go to the easiest combat zone.
        if map.town || map.min_monster_level.is_none() {
            let to = self.atlas.easiest_combat_zone()?;
            let portal = map
                .portal_to(to)
                .or_else(|| map.portals.first().map(|(r, _)| *r))?;
            return Some((portal.center(), 0));
        }
        // Far too dangerous here: back to town.
        if map
            .min_monster_level
            .is_some_and(|l| u16::from(l) > u16::from(self.level) + 6)
        {
            let town = map
                .portals
                .iter()
                .find(|(_, t)| self.atlas.zone(*t).is_some_and(|z| z.town))
                .map(|(r, _)| *r)?;
            return Some((town.center(), 0));
        }
        if let Some(t) = self.target {
            if t.coming && self.close_in_until.is_none_or(|u| now >= u) {
                // Pulling: the target walks at us, so wait for it where we are instead of
                // walking on into its pack (every monster within its aggro radius of us
                // would join).
                return Some((pred, 0));
            }
            let stop = if self.close_in_until.is_some_and(|u| now < u) {
                600
            } else {
                i64::from(self.reach - 500).max(500)
            };
            return Some((t.pos, stop));
        }
        // Nothing in sight: roam to random walkable points.
        let (w, h) = (map.width, map.height);
        let fresh = self
            .roam
            .is_some_and(|(p, until)| now < until && dist(pred, p) > 500);
        if !fresh {
            let mut pick = None;
            for _ in 0..16 {
                let p = (self.rng.random_range(0..w), self.rng.random_range(0..h));
                if self.map().is_some_and(|m| m.is_walkable(p)) {
                    pick = Some(p);
                    break;
                }
            }
            self.roam = pick.map(|p| (p, now + Duration::from_secs(15)));
        }
        self.roam.map(|(p, _)| (p, 300))
    }
}
