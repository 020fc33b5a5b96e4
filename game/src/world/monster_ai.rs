//! Stage 5 of a step: monster AI (idle, chase, attack, leash back), boss novas, and what
//! happens when a monster hits a player: damage, death and the death penalty.

use super::{
    Ai, Life, World, DEATH_GOLD_LOSS_PCT, DEATH_XP_LOSS_PCT, PLAYER_RESPAWN_TICKS,
    RETURN_TIMEOUT_TICKS,
};
use crate::character::xp_to_next;
use crate::combat::{self, apply_resist, Outcome};
use crate::entity::EntityId;
use crate::events::{Event, TransferCause};
use crate::geom::{dist_sq, line_of_sight, step_toward, sweep, within_range};
use crate::monsters::{Behaviour, NOVA_RADIUS_MM, NOVA_TICKS};
use crate::movement::TICK_HZ;
use crate::trade::TradeEnd;

impl World {
    pub(super) fn step_monsters(&mut self) {
        let tick = self.tick;
        let (w, h) = (self.zone.width_mm, self.zone.height_mm);
        for mi in 0..self.monsters.len() {
            if !self.monsters[mi].alive {
                continue;
            }
            let def = self.monsters[mi].kind.def();
            let start = self.monsters[mi].pos;
            // Pick or validate the target.
            let m = &self.monsters[mi];
            let mut target = match m.ai {
                Ai::Chase(t) => self.players.iter().position(|p| p.id == t && p.alive()),
                _ => None,
            };
            let leashed = dist_sq(m.pos, m.home) > i64::from(def.leash_mm).pow(2);
            if matches!(m.ai, Ai::Chase(_)) && leashed {
                target = None;
            } else if target.is_none() && !matches!(m.ai, Ai::Return { .. }) {
                target = self.nearest_player(m.pos, def.aggro_mm);
            }
            let m = &mut self.monsters[mi];
            match target {
                Some(pi) => m.ai = Ai::Chase(self.players[pi].id),
                None => {
                    if matches!(m.ai, Ai::Chase(_)) {
                        m.ai = Ai::Return { since: tick };
                    }
                }
            }
            match (m.ai, target) {
                (Ai::Chase(_), Some(pi)) => {
                    let tp = self.players[pi].pos;
                    let in_range = within_range(m.pos, tp, def.range_mm)
                        && (def.behaviour != Behaviour::Ranged
                            || line_of_sight(m.pos, tp, &self.template.walls));
                    if def.behaviour == Behaviour::Boss
                        && tick >= m.next_nova
                        && within_range(m.pos, tp, NOVA_RADIUS_MM)
                    {
                        m.next_nova = tick.saturating_add(NOVA_TICKS);
                        self.boss_nova(mi);
                    }
                    let m = &mut self.monsters[mi];
                    if in_range {
                        if tick >= m.next_attack {
                            m.next_attack = tick.saturating_add(def.attack_ticks);
                            self.monster_attack(mi, pi);
                        }
                    } else {
                        let d = step_toward(m.pos, tp, def.speed_mms / TICK_HZ as i32);
                        m.pos = sweep(m.pos, d, &self.template.walls, w, h);
                    }
                }
                (Ai::Return { since }, _) => {
                    let d = step_toward(m.pos, m.home, def.speed_mms * 3 / 2 / TICK_HZ as i32);
                    m.pos = sweep(m.pos, d, &self.template.walls, w, h);
                    if m.pos == m.home || tick.wrapping_sub(since) > RETURN_TIMEOUT_TICKS {
                        m.pos = m.home;
                        m.hp = m.stats.max_hp;
                        m.ai = Ai::Idle;
                    }
                }
                _ => {}
            }
            let m = &mut self.monsters[mi];
            m.vel = (
                (m.pos.0 - start.0) * TICK_HZ as i32,
                (m.pos.1 - start.1) * TICK_HZ as i32,
            );
        }
    }

    fn nearest_player(&self, pos: (i32, i32), radius: i32) -> Option<usize> {
        let mut best: Option<(i64, usize)> = None;
        for (i, p) in self.players.iter().enumerate() {
            if !p.alive() || !within_range(pos, p.pos, radius) {
                continue;
            }
            let d = dist_sq(pos, p.pos);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, i));
            }
        }
        best.map(|(_, i)| i)
    }

    fn monster_attack(&mut self, mi: usize, pi: usize) {
        let m = &self.monsters[mi];
        let (attacker, mid) = (m.attacker(), m.id);
        let p = &self.players[pi];
        match combat::resolve(&mut self.rng, &attacker, &p.defender()) {
            Outcome::Miss => self.events.push(Event::Miss {
                attacker: mid,
                target: p.id,
            }),
            Outcome::Hit {
                physical,
                fire,
                crit,
            } => self.damage_player(pi, mid, physical, fire, crit),
        }
    }

    fn boss_nova(&mut self, mi: usize) {
        let m = &self.monsters[mi];
        let raw = (m.stats.damage.0 + m.stats.damage.1) * 3 / 4;
        let (mid, mpos) = (m.id, m.pos);
        for pi in 0..self.players.len() {
            let p = &self.players[pi];
            if p.alive() && within_range(mpos, p.pos, NOVA_RADIUS_MM) {
                let fire = apply_resist(raw, p.stats.fire_resist).max(1);
                self.damage_player(pi, mid, 0, fire, false);
            }
        }
    }

    fn damage_player(
        &mut self,
        pi: usize,
        attacker: EntityId,
        physical: u32,
        fire: u32,
        crit: bool,
    ) {
        let p = &mut self.players[pi];
        p.hp = p.hp.saturating_sub(physical.saturating_add(fire));
        self.events.push(Event::Hit {
            attacker,
            target: p.id,
            physical,
            fire,
            crit,
            target_hp: p.hp,
        });
        if p.hp == 0 {
            self.player_died(pi, attacker);
        }
    }

    pub(super) fn player_died(&mut self, pi: usize, killer: EntityId) {
        let entity = self.players[pi].id;
        self.cancel_trade_of(entity, TradeEnd::Died);
        let tick = self.tick;
        let p = &mut self.players[pi];
        let gold_lost = p.inv.gold * DEATH_GOLD_LOSS_PCT / 100;
        let xp_lost = (xp_to_next(p.level) * DEATH_XP_LOSS_PCT / 100).min(p.xp);
        p.inv.gold -= gold_lost;
        p.xp -= xp_lost;
        p.dirty = true;
        p.vel = (0, 0);
        p.life = Life::Dead {
            respawn_at: tick.saturating_add(PLAYER_RESPAWN_TICKS),
        };
        self.events.push(Event::PlayerDied {
            entity: p.id,
            player_id: p.player_id,
            killer,
            gold_lost,
            xp_lost,
        });
        if gold_lost > 0 {
            self.events.push(Event::GoldChanged {
                entity: p.id,
                player_id: p.player_id,
                delta: -(gold_lost as i64),
                gold: p.inv.gold,
            });
        }
        if self.template.respawn_zone != self.zone.id {
            let to = self.template.respawn_zone;
            self.begin_transfer(pi, to, TransferCause::Death);
        }
    }
}
