//! Stage 3 of a step: a player's queued requests (items, gold, potions, portals, parties
//! and trades), each resolved into `Ok` or a typed [`Reject`].

use super::{
    Ground, Life, World, GROUND_ITEM_TICKS, MAX_GROUND_ITEMS, PICKUP_RANGE_MM,
    POTION_COOLDOWN_TICKS, RANGED_THRESHOLD_MM,
};
use crate::events::{Event, InventoryChange, Reject, Request, TransferCause};
use crate::geom::{line_of_sight, within_range};

impl World {
    pub(super) fn apply_request(&mut self, pi: usize, request: Request) -> Result<(), Reject> {
        match self.players[pi].life {
            Life::Alive => {}
            Life::Dead { .. } => return Err(Reject::Dead),
            Life::Leaving => return Err(Reject::Leaving),
        }
        let tick = self.tick;
        let entity = self.players[pi].id;
        // A reserved trade holds bag room for what it brings and keeps its players here;
        // an item on offer stays in the bag until the trade ends.
        match request {
            Request::PickUp { .. } | Request::Unequip { .. } | Request::EnterZone
                if self.trade_committing(entity) =>
            {
                return Err(Reject::TradeBusy);
            }
            Request::Drop { item } | Request::UseItem { item } | Request::Equip { item }
                if self.trade_index(entity).is_some_and(|ti| {
                    self.trades[ti]
                        .sides
                        .iter()
                        .any(|s| s.entity == entity && s.offer.items.contains(&item))
                }) =>
            {
                return Err(Reject::TradeBusy);
            }
            _ => {}
        }
        match request {
            Request::TradeOpen { .. }
            | Request::TradeOffer { .. }
            | Request::TradeWithdraw { .. }
            | Request::TradeGold { .. }
            | Request::TradeAccept
            | Request::TradeCancel => self.trade_request(pi, request),
            Request::Attack { target } => {
                let mi = self
                    .monsters
                    .iter()
                    .position(|m| m.alive && m.id == target)
                    .ok_or(Reject::NoSuchTarget)?;
                let p = &self.players[pi];
                let m = &self.monsters[mi];
                if tick < p.next_attack {
                    return Err(Reject::OnCooldown);
                }
                if !within_range(p.pos, m.pos, p.stats.range_mm) {
                    return Err(Reject::TooFar);
                }
                if p.stats.range_mm > RANGED_THRESHOLD_MM
                    && !line_of_sight(p.pos, m.pos, &self.template.walls)
                {
                    return Err(Reject::NoLineOfSight);
                }
                self.player_attack(pi, mi);
                Ok(())
            }
            Request::PickUp { ground } => {
                let gi = self
                    .ground
                    .iter()
                    .position(|g| g.id == ground)
                    .ok_or(Reject::NoSuchItem)?;
                let p = &self.players[pi];
                let g = &self.ground[gi];
                if !within_range(p.pos, g.pos, PICKUP_RANGE_MM) {
                    return Err(Reject::TooFar);
                }
                if g.owner.is_some_and(|o| o != p.player_id) && tick < g.free_at {
                    return Err(Reject::NotYours);
                }
                if !p.inv.has_room() {
                    return Err(Reject::BagFull);
                }
                let g = self.ground.remove(gi);
                let item = g.item.clone();
                let p = &mut self.players[pi];
                if let Err(back) = p.inv.add(g.item) {
                    // Unreachable (room was checked), but never lose an item.
                    self.ground.insert(gi, Ground { item: back, ..g });
                    return Err(Reject::BagFull);
                }
                p.dirty = true;
                self.events.push(Event::Inventory {
                    entity: p.id,
                    player_id: p.player_id,
                    change: InventoryChange::PickedUp { item, ground },
                });
                Ok(())
            }
            Request::Equip { item } => {
                let p = &mut self.players[pi];
                let (slot, swapped_out) = p.inv.equip(item, p.level)?;
                p.refresh_stats();
                p.dirty = true;
                self.events.push(Event::Inventory {
                    entity: p.id,
                    player_id: p.player_id,
                    change: InventoryChange::Equipped {
                        item,
                        slot,
                        swapped_out,
                    },
                });
                Ok(())
            }
            Request::Unequip { slot } => {
                let p = &mut self.players[pi];
                let item = p.inv.unequip(slot)?;
                p.refresh_stats();
                p.dirty = true;
                self.events.push(Event::Inventory {
                    entity: p.id,
                    player_id: p.player_id,
                    change: InventoryChange::Unequipped { item, slot },
                });
                Ok(())
            }
            Request::Drop { item } => {
                if self.ground.len() >= MAX_GROUND_ITEMS {
                    return Err(Reject::GroundFull);
                }
                let taken = self.players[pi].inv.take(item)?;
                let ground = self.alloc_entity();
                let p = &mut self.players[pi];
                p.dirty = true;
                let (entity, player_id, pos) = (p.id, p.player_id, p.pos);
                self.events.push(Event::Inventory {
                    entity,
                    player_id,
                    change: InventoryChange::Dropped { item, ground },
                });
                self.events.push(Event::ItemDropped {
                    ground,
                    item: taken.clone(),
                    owner: None,
                    pos_mm: pos,
                });
                self.ground.push(Ground {
                    id: ground,
                    item: taken,
                    pos,
                    owner: None,
                    free_at: tick,
                    expire_at: tick.saturating_add(GROUND_ITEM_TICKS),
                });
                Ok(())
            }
            Request::UseItem { item } => {
                let p = &mut self.players[pi];
                let heal = p
                    .inv
                    .bag_item(item)
                    .ok_or(Reject::NoSuchItem)?
                    .base_def()
                    .map_or(0, |b| b.heal);
                if heal == 0 {
                    return Err(Reject::NotUsable);
                }
                if tick < p.next_potion {
                    return Err(Reject::OnCooldown);
                }
                if p.hp >= p.stats.max_hp {
                    return Err(Reject::NoEffect);
                }
                p.inv.take(item)?;
                let before = p.hp;
                p.hp = p.hp.saturating_add(heal).min(p.stats.max_hp);
                p.next_potion = tick.saturating_add(POTION_COOLDOWN_TICKS);
                p.dirty = true;
                self.events.push(Event::Inventory {
                    entity: p.id,
                    player_id: p.player_id,
                    change: InventoryChange::Consumed {
                        item,
                        healed: p.hp - before,
                    },
                });
                Ok(())
            }
            Request::EnterZone => {
                let pos = self.players[pi].pos;
                let target = self
                    .template
                    .portals
                    .iter()
                    .find(|q| q.area.contains(pos))
                    .map(|q| q.target)
                    .ok_or(Reject::NotAtPortal)?;
                self.begin_transfer(pi, target, TransferCause::Portal);
                Ok(())
            }
        }
    }
}
