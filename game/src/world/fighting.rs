//! Stage 4 of a step: players holding the attack button swing at monsters; kills drop
//! loot and award XP (shared within a party).

use super::{
    xp_for_level_gap, Ai, Ground, World, GROUND_ITEM_TICKS, LOOT_OWNER_TICKS, MAX_GROUND_ITEMS,
    PARTY_XP_BONUS_PCT, RANGED_THRESHOLD_MM, XP_SHARE_RANGE_MM,
};
use crate::character::{xp_to_next, MAX_LEVEL};
use crate::combat::{self, Outcome};
use crate::events::Event;
use crate::geom::{dist_sq, in_cone, in_wall, line_of_sight, within_range};
use crate::items::{generate, roll_categories};
use crate::movement::TICK_HZ;

impl World {
    pub(super) fn step_button_attacks(&mut self) {
        let tick = self.tick;
        for pi in 0..self.players.len() {
            let p = &self.players[pi];
            if !p.alive() || !p.attack_held || tick < p.next_attack {
                continue;
            }
            let ranged = p.stats.range_mm > RANGED_THRESHOLD_MM;
            let mut best: Option<(i64, usize)> = None;
            for (mi, m) in self.monsters.iter().enumerate() {
                if !m.alive
                    || !within_range(p.pos, m.pos, p.stats.range_mm)
                    || !in_cone(p.pos, p.facing, m.pos)
                {
                    continue;
                }
                let d = dist_sq(p.pos, m.pos);
                if best.is_some_and(|(bd, _)| bd <= d) {
                    continue;
                }
                if ranged && !line_of_sight(p.pos, m.pos, &self.template.walls) {
                    continue;
                }
                best = Some((d, mi));
            }
            if let Some((_, mi)) = best {
                self.player_attack(pi, mi);
            }
        }
    }

    pub(super) fn player_attack(&mut self, pi: usize, mi: usize) {
        let tick = self.tick;
        let p = &mut self.players[pi];
        p.next_attack = tick.saturating_add(p.stats.attack_ticks);
        let (attacker, pid) = (p.attacker(), p.id);
        let m = &mut self.monsters[mi];
        match combat::resolve(&mut self.rng, &attacker, &m.defender()) {
            Outcome::Miss => self.events.push(Event::Miss {
                attacker: pid,
                target: m.id,
            }),
            Outcome::Hit {
                physical,
                fire,
                crit,
            } => {
                m.hp = m.hp.saturating_sub(physical.saturating_add(fire));
                if m.ai == Ai::Idle {
                    m.ai = Ai::Chase(pid);
                }
                self.events.push(Event::Hit {
                    attacker: pid,
                    target: m.id,
                    physical,
                    fire,
                    crit,
                    target_hp: m.hp,
                });
                if m.hp == 0 {
                    self.kill_monster(mi, pi);
                }
            }
        }
    }

    fn kill_monster(&mut self, mi: usize, killer: usize) {
        let tick = self.tick;
        let m = &mut self.monsters[mi];
        m.alive = false;
        m.vel = (0, 0);
        let respawn_secs = self
            .template
            .spawns
            .get(m.group)
            .map_or(0, |g| g.respawn_secs);
        m.respawn_at =
            (respawn_secs > 0).then(|| tick.saturating_add(respawn_secs.saturating_mul(TICK_HZ)));
        let (mpos, mlevel, kind, mid) = (m.pos, m.level, m.kind, m.id);
        let def = kind.def();
        let k = &self.players[killer];
        let (kid, kpid, kparty) = (k.id, k.player_id, k.party);
        self.events.push(Event::Killed {
            killer: kid,
            victim: mid,
            kind,
        });

        // XP: the killer plus party members in range share it, with a bonus.
        let sharers: Vec<usize> = self
            .players
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                *i == killer
                    || (p.alive()
                        && kparty.is_some()
                        && p.party == kparty
                        && within_range(p.pos, mpos, XP_SHARE_RANGE_MM))
            })
            .map(|(i, _)| i)
            .collect();
        let n = sharers.len().max(1) as u64;
        let total =
            u64::from(def.xp) * u64::from(mlevel) * (100 + PARTY_XP_BONUS_PCT * (n - 1)) / 100;
        for &i in &sharers {
            let amount = xp_for_level_gap(total / n, self.players[i].level, mlevel);
            self.award_xp(i, amount);
        }

        // Gold straight to the killer.
        if self.rng.percent(def.loot.gold_chance) {
            let l = u32::from(mlevel);
            let amount = u64::from(self.rng.range(
                def.loot.gold_per_level.0.saturating_mul(l),
                def.loot.gold_per_level.1.saturating_mul(l),
            ));
            if amount > 0 {
                let k = &mut self.players[killer];
                k.inv.gold = k.inv.gold.saturating_add(amount);
                k.dirty = true;
                self.events.push(Event::GoldChanged {
                    entity: kid,
                    player_id: kpid,
                    delta: amount as i64,
                    gold: k.inv.gold,
                });
            }
        }

        // Items on the ground, owned by the killer for a while.
        let mut cats = std::mem::take(&mut self.scratch);
        cats.clear();
        roll_categories(&mut self.rng, &def.loot, &mut cats);
        for &cat in &cats {
            if self.ground.len() >= MAX_GROUND_ITEMS {
                self.loot_lost += 1;
                continue;
            }
            let id = self.mint_item();
            let Some(item) = generate(&mut self.rng, id, cat, mlevel, &def.loot.rarity) else {
                continue;
            };
            let scatter = (
                mpos.0.saturating_add(self.rng.range_i32(-600, 600)),
                mpos.1.saturating_add(self.rng.range_i32(-600, 600)),
            );
            let pos = if in_wall(scatter, &self.template.walls)
                || !(0..=self.zone.width_mm).contains(&scatter.0)
                || !(0..=self.zone.height_mm).contains(&scatter.1)
            {
                mpos
            } else {
                scatter
            };
            let ground = self.alloc_entity();
            self.events.push(Event::ItemDropped {
                ground,
                item: item.clone(),
                owner: Some(kpid),
                pos_mm: pos,
            });
            self.ground.push(Ground {
                id: ground,
                item,
                pos,
                owner: Some(kpid),
                free_at: tick.saturating_add(LOOT_OWNER_TICKS),
                expire_at: tick.saturating_add(GROUND_ITEM_TICKS),
            });
        }
        self.scratch = cats;
    }

    fn award_xp(&mut self, pi: usize, amount: u64) {
        let p = &mut self.players[pi];
        if amount == 0 || p.level >= MAX_LEVEL {
            return;
        }
        p.xp = p.xp.saturating_add(amount);
        p.dirty = true;
        self.events.push(Event::XpGained {
            entity: p.id,
            player_id: p.player_id,
            amount,
        });
        let mut leveled = false;
        while p.level < MAX_LEVEL && p.xp >= xp_to_next(p.level) {
            p.xp -= xp_to_next(p.level);
            p.level += 1;
            leveled = true;
            self.events.push(Event::LevelUp {
                entity: p.id,
                player_id: p.player_id,
                level: p.level,
            });
        }
        if p.level >= MAX_LEVEL {
            p.xp = 0;
        }
        if leveled {
            p.refresh_stats();
            p.hp = p.stats.max_hp;
        }
    }
}
