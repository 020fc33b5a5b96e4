//! Fighting: the attack request, the worn weapon's interval and reach, and combat log
//! lines (attack latency, fighting back).

use std::time::Duration;

use tokio::time::Instant;
use zonehost_game::items::base;
use zonehost_protocol::message::{Combat, Request};

use super::{Brain, Measured, Target};
use crate::nav::dist;
use crate::stats::Metric;

impl Brain {
    pub(super) fn attack_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if self.dead || now < self.attack_ready_at {
            return None;
        }
        let t = self.target?;
        let me = self.predicted()?;
        if dist(me, t.pos) > i64::from(self.reach) {
            return None;
        }
        self.attack_log = Some((t.id, now));
        Some((
            Metric::Attack,
            Request::Attack { target: t.id },
            u128::from(t.id),
        ))
    }

    /// Attack interval and reach of the worn weapon (fists without one), as the game
    /// computes them: `max(10, ticks * 100 / (100 + min(75, attack speed %)))` ticks, the
    /// attack speed summed over everything worn. A wrong guess costs an `OnCooldown` or
    /// `TooFar` refusal per swing (a Hand Axe swings every 33 ticks, not 30).
    pub(super) fn weapon_changed(&mut self) {
        use zonehost_game::character::{MAX_ATTACK_SPEED_PCT, MIN_ATTACK_TICKS};
        use zonehost_game::items::{AffixKind, EquipSlot, FISTS};
        let weapon = self
            .equipment
            .iter()
            .find_map(|(_, i)| base(i.base).filter(|b| b.slot == Some(EquipSlot::Weapon)));
        let (ticks, reach) = weapon.map_or((FISTS.1, FISTS.2), |b| (b.attack_ticks, b.range_mm));
        let ias: i32 = self
            .equipment
            .iter()
            .flat_map(|(_, i)| i.affixes.iter())
            .filter(|(k, _)| *k == AffixKind::AttackSpeed as u8)
            .map(|(_, v)| *v)
            .sum();
        let ias = (ias.max(0) as u32).min(MAX_ATTACK_SPEED_PCT);
        let ticks = (ticks * 100 / (100 + ias)).max(MIN_ATTACK_TICKS);
        self.attack_interval = Duration::from_secs(u64::from(ticks)) / zonehost_game::TICK_HZ;
        self.reach = reach;
    }

    pub(super) fn on_combat(&mut self, c: &Combat, now: Instant) -> Measured {
        match c {
            Combat::Hit {
                attacker, target, ..
            }
            | Combat::Miss { attacker, target } => {
                if *attacker == self.me {
                    if let Some((t, at)) = self.attack_log {
                        if t == *target {
                            self.attack_log = None;
                            return Some((Metric::AttackLog, now.saturating_duration_since(at)));
                        }
                    }
                } else if *target == self.me && self.fights() && !self.dead {
                    if let Combat::Hit { target_hp, .. } = c {
                        // Fresher than the sampled snapshots: decides the next potion.
                        self.hp = (*target_hp).min(u32::from(u16::MAX)) as u16;
                    }
                    // Fight back when the attacker is closer than the current target.
                    let keep = self.target.is_some_and(|t| {
                        self.predicted()
                            .is_some_and(|me| dist(me, t.pos) <= i64::from(self.reach))
                    });
                    if !keep {
                        let pos = self.predicted().unwrap_or((0, 0));
                        self.target = Some(Target {
                            id: *attacker,
                            pos,
                            seen: now,
                            coming: false,
                        });
                    }
                }
            }
            Combat::Killed { victim, .. } => {
                if self.target.is_some_and(|t| t.id == *victim) {
                    self.target = None;
                }
            }
        }
        None
    }
}
