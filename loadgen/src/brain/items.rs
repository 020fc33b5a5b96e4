//! Items: staying alive (reading the bag, drinking potions), looting (wearing better gear,
//! dropping junk, picking up loot, the potion drop-and-pick-up exercise) and the bag kept in
//! step with inventory events.

use std::time::Duration;

use tokio::time::Instant;
use zonehost_game::items::base;
use zonehost_protocol::message::{InventoryEvent, ItemInfo, Request};

use super::{Brain, Loot, BAG_KEEP, PICKUP_RANGE, REQUEST_GAP};
use crate::nav::dist;
use crate::stats::Metric;

impl Brain {
    pub(super) fn is_potion(item: &ItemInfo) -> bool {
        base(item.base).is_some_and(|b| b.heal > 0)
    }

    fn slot_of(item: &ItemInfo) -> Option<u8> {
        base(item.base)
            .and_then(|b| b.slot)
            .map(|s| s.index() as u8)
    }

    /// A rough worth of an equippable item: base value plus affixes plus rarity.
    fn score(item: &ItemInfo) -> i64 {
        let Some(b) = base(item.base) else { return 0 };
        let base_value = i64::from(b.damage.0 + b.damage.1) * 5 + i64::from(b.armour) * 10;
        let affixes: i64 = item.affixes.iter().map(|(_, v)| i64::from(*v)).sum();
        base_value + affixes + i64::from(item.rarity) * 10 + i64::from(item.level)
    }

    fn can_wear(&self, item: &ItemInfo) -> bool {
        base(item.base).is_some_and(|b| b.slot.is_some() && b.req_level <= self.level)
            && !self.unusable.contains(&item.id)
    }

    fn worn_score(&self, slot: u8) -> i64 {
        self.equipment
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(-1, |(_, i)| Self::score(i))
    }

    /// What every fighting bot does to stay alive: learn its bag after each login (a new
    /// character's starter kit has two potions) and drink a potion below half HP.
    pub(super) fn survive_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if self.dead {
            return None;
        }
        if !self.inventory_asked {
            self.inventory_asked = true;
            return Some((Metric::Inventory, Request::GetInventory, 0));
        }
        if !self.inventory_known || self.dead {
            return None;
        }
        if self.max_hp > 0
            && u32::from(self.hp) * 2 < u32::from(self.max_hp)
            && now >= self.potion_ready_at
        {
            if let Some(p) = self
                .bag
                .iter()
                .find(|i| Self::is_potion(i) && !self.unusable.contains(&i.id))
            {
                return Some((Metric::UseItem, Request::UseItem { item: p.id }, p.id));
            }
        }
        None
    }

    pub(super) fn loot_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if !self.inventory_known || self.dead {
            return None;
        }
        // Better gear: wear it.
        let better = self.bag.iter().find(|i| {
            self.can_wear(i)
                && Self::slot_of(i).is_some_and(|s| Self::score(i) > self.worn_score(s))
        });
        if let Some(i) = better {
            return Some((Metric::Equip, Request::Equip { item: i.id }, i.id));
        }
        // Junk (gear no better than what is worn), or the worst when the bag fills up.
        let junk = self.bag.iter().find(|i| {
            !Self::is_potion(i)
                && !self.unusable.contains(&i.id)
                && Self::slot_of(i).is_some_and(|s| Self::score(i) <= self.worn_score(s))
        });
        let junk = junk.or_else(|| {
            (self.bag.len() >= BAG_KEEP)
                .then(|| {
                    self.bag
                        .iter()
                        .filter(|i| !self.unusable.contains(&i.id))
                        .min_by_key(|i| Self::score(i))
                })
                .flatten()
        });
        if let Some(i) = junk {
            return Some((Metric::Drop, Request::Drop { item: i.id }, i.id));
        }
        // Loot in reach.
        if let Some(me) = self.predicted() {
            if let Some(l) = self.loot.iter().find(|l| dist(me, l.pos) <= PICKUP_RANGE) {
                return Some((
                    Metric::PickUp,
                    Request::PickUp { ground: l.ground },
                    u128::from(l.ground),
                ));
            }
        }
        // Now and then, while nothing attacks: drop a potion to pick it up again.
        let calm = self
            .target
            .is_none_or(|t| self.predicted().is_none_or(|me| dist(me, t.pos) > 6000));
        if calm && now >= self.exercise_at && self.exercise_item.is_none() && self.loot.is_empty() {
            if let Some(p) = self.bag.iter().find(|i| Self::is_potion(i)) {
                let id = p.id;
                self.exercise_item = Some(id);
                self.exercise_at = now + Duration::from_secs(20) + self.think();
                return Some((Metric::Drop, Request::Drop { item: id }, id));
            }
        }
        None
    }

    pub(super) fn on_inventory(&mut self, i: &InventoryEvent, now: Instant) {
        match i {
            InventoryEvent::PickedUp { item, ground } => {
                self.loot.retain(|l| l.ground != *ground);
                if !self.bag.iter().any(|b| b.id == item.id) {
                    self.bag.push(item.clone());
                }
                if self.exercise_item == Some(item.id) {
                    self.exercise_item = None;
                }
            }
            InventoryEvent::Equipped {
                item,
                slot,
                swapped_out,
            } => {
                if let Some(pos) = self.bag.iter().position(|b| b.id == *item) {
                    let info = self.bag.remove(pos);
                    if let Some(old) = swapped_out {
                        if let Some(w) = self
                            .equipment
                            .iter()
                            .position(|(s, e)| *s == *slot && e.id == *old)
                        {
                            let (_, o) = self.equipment.remove(w);
                            self.bag.push(o);
                        }
                    }
                    self.equipment.retain(|(s, _)| *s != *slot);
                    self.equipment.push((*slot, info));
                    self.weapon_changed();
                }
            }
            InventoryEvent::Unequipped { item, slot } => {
                if let Some(w) = self
                    .equipment
                    .iter()
                    .position(|(s, e)| *s == *slot && e.id == *item)
                {
                    let (_, o) = self.equipment.remove(w);
                    self.bag.push(o);
                    self.weapon_changed();
                }
            }
            InventoryEvent::Dropped { item, ground } => {
                self.bag.retain(|b| b.id != *item);
                if self.exercise_item == Some(*item) {
                    // Our own potion at our feet: pick it up again (public ground item).
                    let pos = self.predicted().unwrap_or((0, 0));
                    self.loot.insert(
                        0,
                        Loot {
                            ground: *ground,
                            pos,
                            too_far: 0,
                            from_kill: false,
                        },
                    );
                    self.next_request_at = self.next_request_at.min(now + REQUEST_GAP);
                }
            }
            InventoryEvent::Consumed { item, .. } => {
                self.bag.retain(|b| b.id != *item);
                self.potion_ready_at = now + Duration::from_millis(1100);
            }
            InventoryEvent::Granted { .. } => {
                self.inventory_asked = false;
                self.inventory_known = false;
            }
            InventoryEvent::Returned { item } => {
                if !self.bag.iter().any(|b| b.id == item.id) {
                    self.bag.push(item.clone());
                }
            }
            InventoryEvent::Traded {
                given, received, ..
            } => {
                self.bag.retain(|b| !given.contains(&b.id));
                for item in received {
                    if !self.bag.iter().any(|b| b.id == item.id) {
                        self.bag.push(item.clone());
                    }
                }
            }
        }
    }
}
