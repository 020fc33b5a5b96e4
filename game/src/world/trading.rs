//! The trade rules of a [`World`] (see `RULES.md`, *Trade*, and [`crate::trade`]).

use super::{Life, World};
use crate::events::{Event, InventoryChange, Reject, Request};
use crate::geom::within_range;
use crate::inventory::BAG_SLOTS;
use crate::trade::{
    Side, Trade, TradeEnd, TradeId, TradeManifest, TradeSide, TradeView, Undelivered,
    TRADE_MAX_ITEMS, TRADE_RANGE_MM,
};

impl World {
    /// The trade `entity` takes part in, by index.
    pub(super) fn trade_index(&self, entity: super::EntityId) -> Option<usize> {
        self.trades.iter().position(|t| t.side_of(entity).is_some())
    }

    /// Whether `entity`'s trade is reserved (being made durable): its bag must not gain
    /// items and it must not leave on request.
    pub(super) fn trade_committing(&self, entity: super::EntityId) -> bool {
        self.trade_index(entity)
            .is_some_and(|ti| self.trades[ti].committing)
    }

    /// The trade `player_id` takes part in, as that player sees it.
    pub fn trade_of(&self, player_id: u64) -> Option<TradeView> {
        self.trades.iter().find_map(|t| {
            t.sides
                .iter()
                .position(|s| s.player_id == player_id)
                .map(|i| t.view(i))
        })
    }

    fn emit_trade_views(&mut self, ti: usize) {
        let t = &self.trades[ti];
        for (i, s) in t.sides.iter().enumerate() {
            self.events.push(Event::TradeUpdated {
                entity: s.entity,
                player_id: s.player_id,
                view: t.view(i),
            });
        }
    }

    /// Ends a trade; its `TradeEnded` events go out with this step's events, or with the
    /// next step's when called between steps (a player leaving, a party change).
    fn end_trade(&mut self, ti: usize, reason: TradeEnd) {
        let t = self.trades.remove(ti);
        let out = if self.stepping {
            &mut self.events
        } else {
            &mut self.deferred
        };
        for s in &t.sides {
            out.push(Event::TradeEnded {
                entity: s.entity,
                player_id: s.player_id,
                trade: t.id,
                reason,
            });
        }
    }

    /// Cancels the trade of `entity` if it is still being negotiated (a reserved trade
    /// waits for the store whatever happens). Used on death, zone change, leaving and
    /// party changes.
    pub(super) fn cancel_trade_of(&mut self, entity: super::EntityId, reason: TradeEnd) {
        if let Some(ti) = self.trade_index(entity) {
            if !self.trades[ti].committing {
                self.end_trade(ti, reason);
            }
        }
    }

    /// Resolves a trade request of player `pi` (alive, not leaving).
    pub(super) fn trade_request(&mut self, pi: usize, request: Request) -> Result<(), Reject> {
        let me = self.players[pi].id;
        if let Request::TradeOpen { with } = request {
            if self.trade_index(me).is_some() || self.trade_index(with).is_some() {
                return Err(Reject::TradeBusy);
            }
            let other = self
                .players
                .iter()
                .position(|q| q.id == with && q.id != me)
                .ok_or(Reject::NoSuchTarget)?;
            let (p, q) = (&self.players[pi], &self.players[other]);
            match q.life {
                Life::Alive => {}
                Life::Dead { .. } => return Err(Reject::Dead),
                Life::Leaving => return Err(Reject::Leaving),
            }
            if p.party.is_none() || p.party != q.party {
                return Err(Reject::NotInParty);
            }
            if !within_range(p.pos, q.pos, TRADE_RANGE_MM) {
                return Err(Reject::TooFar);
            }
            let id = self.next_trade;
            self.next_trade = self.next_trade.wrapping_add(1);
            self.trades.push(Trade {
                id,
                sides: [Side::new(me, p.player_id), Side::new(q.id, q.player_id)],
                committing: false,
            });
            self.emit_trade_views(self.trades.len() - 1);
            return Ok(());
        }
        let ti = self.trade_index(me).ok_or(Reject::NoTrade)?;
        if self.trades[ti].committing {
            return Err(Reject::TradeBusy);
        }
        let si = self.trades[ti].side_of(me).ok_or(Reject::NoTrade)?;
        match request {
            Request::TradeOffer { item } => {
                let inv = &self.players[pi].inv;
                if inv.bag_item(item).is_none() {
                    return Err(if inv.equipment.items().any(|i| i.id == item) {
                        Reject::ItemEquipped
                    } else {
                        Reject::NoSuchItem
                    });
                }
                let offer = &mut self.trades[ti].sides[si].offer;
                if offer.items.contains(&item) {
                    return Ok(());
                }
                if offer.items.len() >= TRADE_MAX_ITEMS {
                    return Err(Reject::OfferFull);
                }
                offer.items.push(item);
            }
            Request::TradeWithdraw { item } => {
                let offer = &mut self.trades[ti].sides[si].offer;
                let at = offer
                    .items
                    .iter()
                    .position(|i| *i == item)
                    .ok_or(Reject::NoSuchItem)?;
                offer.items.remove(at);
            }
            Request::TradeGold { gold } => {
                if gold > self.players[pi].inv.gold {
                    return Err(Reject::NotEnoughGold);
                }
                let offer = &mut self.trades[ti].sides[si].offer;
                if offer.gold == gold {
                    return Ok(());
                }
                offer.gold = gold;
            }
            Request::TradeAccept => {
                self.trades[ti].sides[si].offer.accepted = true;
                if self.trades[ti].sides.iter().all(|s| s.offer.accepted) {
                    if let Err(reject) = self.reserve_trade(ti, si) {
                        // Nothing reserved; the acceptance is not kept.
                        self.trades[ti].sides[si].offer.accepted = false;
                        return Err(reject);
                    }
                    return Ok(());
                }
                self.emit_trade_views(ti);
                return Ok(());
            }
            Request::TradeCancel => {
                self.end_trade(ti, TradeEnd::Cancelled);
                return Ok(());
            }
            _ => return Err(Reject::NoTrade),
        }
        // The offers changed: every acceptance is void.
        for s in &mut self.trades[ti].sides {
            s.offer.accepted = false;
        }
        self.emit_trade_views(ti);
        Ok(())
    }

    /// Both accepted: checks everything once more, then moves the offers out of the bags
    /// and purses into the trade and emits [`Event::TradeReady`]. `requester`: the side
    /// whose acceptance completed the pair (rejections are worded for it).
    fn reserve_trade(&mut self, ti: usize, requester: usize) -> Result<(), Reject> {
        let t = &self.trades[ti];
        let mut idx = [0usize; 2];
        for (i, s) in t.sides.iter().enumerate() {
            idx[i] = self
                .players
                .iter()
                .position(|p| p.id == s.entity)
                .ok_or(Reject::NoSuchTarget)?;
        }
        let (a, b) = (&self.players[idx[0]], &self.players[idx[1]]);
        if a.party.is_none() || a.party != b.party {
            return Err(Reject::NotInParty);
        }
        if !within_range(a.pos, b.pos, TRADE_RANGE_MM) {
            return Err(Reject::TooFar);
        }
        for (i, s) in t.sides.iter().enumerate() {
            let p = &self.players[idx[i]];
            if s.offer.gold > p.inv.gold {
                return Err(Reject::NotEnoughGold);
            }
            if s.offer.items.iter().any(|id| p.inv.bag_item(*id).is_none()) {
                return Err(Reject::NoSuchItem);
            }
            // The receiving side: its bag after the exchange.
            let other = &t.sides[1 - i];
            let after = p.inv.bag.len() - s.offer.items.len() + other.offer.items.len();
            if after > BAG_SLOTS {
                return Err(if i == requester {
                    Reject::BagFull
                } else {
                    Reject::PartnerBagFull
                });
            }
        }
        let t = &mut self.trades[ti];
        for (i, s) in t.sides.iter_mut().enumerate() {
            let p = &mut self.players[idx[i]];
            for id in &s.offer.items {
                if let Ok(item) = p.inv.take(*id) {
                    s.held.push(item);
                }
            }
            p.inv.gold -= s.offer.gold;
            s.held_gold = s.offer.gold;
            p.dirty = true;
        }
        t.committing = true;
        let manifest = TradeManifest {
            trade: t.id,
            sides: [0, 1].map(|i| TradeSide {
                entity: t.sides[i].entity,
                player_id: t.sides[i].player_id,
                items: t.sides[i].held.clone(),
                gold: t.sides[i].held_gold,
            }),
        };
        self.emit_trade_views(ti);
        self.events.push(Event::TradeReady { manifest });
        Ok(())
    }

    /// Gold a player has reserved in a trade being made durable: still theirs until the
    /// store decides, so exports (checkpoints) count it.
    pub(super) fn held_gold(&self, entity: super::EntityId) -> u64 {
        self.trades
            .iter()
            .filter(|t| t.committing)
            .flat_map(|t| t.sides.iter())
            .filter(|s| s.entity == entity)
            .map(|s| s.held_gold)
            .sum()
    }

    /// Ends a reserved trade once the store decided: `committed`, each side receives the
    /// other's reserved items and gold; otherwise each side gets its own back. Gold moves
    /// only if both sides are still here (a side that left was saved with its reserved
    /// gold, see [`World::take_player`]): otherwise the present side gets its own gold
    /// back. Items that cannot be placed are reported in [`Undelivered`] (the store
    /// already says who owns them). `None` if no reserved trade has that id. Emits
    /// [`InventoryChange::Traded`], [`Event::GoldChanged`] and [`Event::TradeEnded`]
    /// (`Completed` or `Failed`) to each present side, with the next step's events.
    pub fn complete_trade(&mut self, trade: TradeId, committed: bool) -> Option<Undelivered> {
        let ti = self
            .trades
            .iter()
            .position(|t| t.id == trade && t.committing)?;
        let t = self.trades.remove(ti);
        let present = t
            .sides
            .clone()
            .map(|s| self.players.iter().any(|p| p.id == s.entity));
        let gold_moves = committed && present[0] && present[1];
        let mut undelivered = Undelivered {
            gold_kept: committed && !gold_moves,
            ..Undelivered::default()
        };
        for i in 0..2 {
            let me = &t.sides[i];
            let other = &t.sides[1 - i];
            let items_from = if committed { other } else { me };
            let gold_back = if gold_moves {
                other.held_gold
            } else {
                me.held_gold
            };
            let Some(p) = self.players.iter_mut().find(|p| p.id == me.entity) else {
                undelivered
                    .items
                    .extend(items_from.held.iter().map(|it| (me.player_id, it.clone())));
                continue;
            };
            let given: Vec<_> = if committed {
                me.held.iter().map(|it| it.id).collect()
            } else {
                Vec::new()
            };
            let mut received = Vec::with_capacity(items_from.held.len());
            for item in &items_from.held {
                match p.inv.add(item.clone()) {
                    Ok(()) => received.push(item.clone()),
                    Err(back) => undelivered.items.push((me.player_id, back)),
                }
            }
            p.inv.gold = p.inv.gold.saturating_add(gold_back);
            p.dirty = true;
            let (entity, player_id, gold) = (p.id, p.player_id, p.inv.gold);
            self.deferred.push(Event::Inventory {
                entity,
                player_id,
                change: InventoryChange::Traded {
                    trade,
                    given,
                    received,
                },
            });
            // Against the purse the player was last told of (before the reservation).
            let delta = i128::from(gold_back) - i128::from(me.held_gold);
            if delta != 0 {
                self.deferred.push(Event::GoldChanged {
                    entity,
                    player_id,
                    delta: i64::try_from(delta).unwrap_or(0),
                    gold,
                });
            }
            self.deferred.push(Event::TradeEnded {
                entity,
                player_id,
                trade,
                reason: if committed {
                    TradeEnd::Completed
                } else {
                    TradeEnd::Failed
                },
            });
        }
        Some(undelivered)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{World, ZoneSpec};
    use crate::events::{Event, InventoryChange, Reject, Request};
    use crate::inventory::BAG_SLOTS;
    use crate::items::{Item, ItemId};
    use crate::movement::PlayerInput;
    use crate::trade::{TradeEnd, TradeManifest, TRADE_MAX_ITEMS};
    use crate::world::EntityId;

    fn world() -> World {
        World::new(ZoneSpec {
            id: 1,
            width_mm: 100_000,
            height_mm: 100_000,
            spawn_mm: (50_000, 50_000),
        })
    }

    /// Players 1 and 2 in party 7, player 3 alone; each with gold and two extra bag items.
    fn setup() -> (World, [EntityId; 3]) {
        let mut w = world();
        let e = [w.add_player(1), w.add_player(2), w.add_player(3)];
        assert!(w.set_party(1, Some(7)) && w.set_party(2, Some(7)));
        for (k, p) in w.players.iter_mut().enumerate() {
            p.inv.gold = 1000;
            for n in 0..2u128 {
                p.inv
                    .bag
                    .push(Item::common(ItemId(1000 + (k as u128) * 10 + n), 40, 1));
            }
        }
        (w, e)
    }

    /// Queues a request and steps; returns its result.
    fn ask(w: &mut World, e: EntityId, req: Request) -> Result<(), Reject> {
        w.queue_request(e, 77, req).expect("queued");
        w.step();
        w.events()
            .iter()
            .find_map(|ev| match ev {
                Event::RequestDone {
                    entity,
                    request_id: 77,
                    result,
                    ..
                } if *entity == e => Some(*result),
                _ => None,
            })
            .expect("answered")
    }

    fn ready(w: &World) -> Option<TradeManifest> {
        w.events().iter().find_map(|ev| match ev {
            Event::TradeReady { manifest } => Some(manifest.clone()),
            _ => None,
        })
    }

    fn bag_ids(w: &World, e: EntityId) -> Vec<ItemId> {
        let mut ids: Vec<ItemId> = w
            .export_player(e)
            .expect("player")
            .inventory
            .bag
            .iter()
            .map(|i| i.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn gold(w: &World, e: EntityId) -> u64 {
        w.players
            .iter()
            .find(|p| p.id == e)
            .map(|p| p.inv.gold)
            .expect("player")
    }

    #[test]
    fn a_trade_completes_after_both_accept_and_the_store_commits() {
        let (mut w, [a, b, _]) = setup();
        assert_eq!(ask(&mut w, a, Request::TradeOpen { with: b }), Ok(()));
        let view = w.trade_of(2).expect("b sees the trade");
        assert_eq!((view.partner, view.partner_entity), (1, a));
        assert_eq!(
            ask(&mut w, a, Request::TradeOffer { item: ItemId(1000) }),
            Ok(())
        );
        assert_eq!(ask(&mut w, a, Request::TradeGold { gold: 300 }), Ok(()));
        assert_eq!(
            ask(&mut w, b, Request::TradeOffer { item: ItemId(1011) }),
            Ok(())
        );
        assert_eq!(ask(&mut w, a, Request::TradeAccept), Ok(()));
        assert!(ready(&w).is_none());
        assert!(w.trade_of(2).expect("trade").theirs.accepted);
        assert_eq!(ask(&mut w, b, Request::TradeAccept), Ok(()));
        let m = ready(&w).expect("reserved");
        assert_eq!(m.sides[0].player_id, 1);
        assert_eq!(m.sides[0].items[0].id, ItemId(1000));
        assert_eq!((m.sides[0].gold, m.sides[1].gold), (300, 0));
        assert_eq!(m.sides[1].items[0].id, ItemId(1011));
        // Reserved: out of the bags, nothing can change, gold still counted in exports.
        assert!(!bag_ids(&w, a).contains(&ItemId(1000)));
        assert_eq!(gold(&w, a), 700);
        assert_eq!(w.export_player(a).expect("a").inventory.gold, 1000);
        assert_eq!(ask(&mut w, a, Request::TradeCancel), Err(Reject::TradeBusy));
        assert_eq!(ask(&mut w, b, Request::EnterZone), Err(Reject::TradeBusy));
        let undelivered = w.complete_trade(m.trade, true).expect("reserved trade");
        assert_eq!(undelivered, Default::default());
        assert!(w.complete_trade(m.trade, true).is_none(), "only once");
        assert!(bag_ids(&w, b).contains(&ItemId(1000)));
        assert!(bag_ids(&w, a).contains(&ItemId(1011)));
        assert!(!bag_ids(&w, b).contains(&ItemId(1011)));
        assert_eq!((gold(&w, a), gold(&w, b)), (700, 1300));
        w.step();
        let mut ended = 0;
        let mut traded = 0;
        for ev in w.events() {
            match ev {
                Event::TradeEnded { reason, .. } => {
                    assert_eq!(*reason, TradeEnd::Completed);
                    ended += 1;
                }
                Event::Inventory {
                    change: InventoryChange::Traded { .. },
                    ..
                } => traded += 1,
                Event::GoldChanged {
                    player_id: 1,
                    delta,
                    gold,
                    ..
                } => assert_eq!((*delta, *gold), (-300, 700)),
                _ => {}
            }
        }
        assert_eq!((ended, traded), (2, 2));
        assert!(w.trade_of(1).is_none());
    }

    #[test]
    fn an_aborted_trade_gives_every_offer_back() {
        let (mut w, [a, b, _]) = setup();
        let before = (bag_ids(&w, a), bag_ids(&w, b));
        ask(&mut w, b, Request::TradeOpen { with: a }).expect("open");
        ask(&mut w, a, Request::TradeOffer { item: ItemId(1001) }).expect("offer");
        ask(&mut w, b, Request::TradeGold { gold: 1000 }).expect("gold");
        ask(&mut w, a, Request::TradeAccept).expect("accept");
        ask(&mut w, b, Request::TradeAccept).expect("accept");
        let m = ready(&w).expect("reserved");
        assert_eq!(gold(&w, b), 0);
        w.complete_trade(m.trade, false).expect("reserved");
        assert_eq!((bag_ids(&w, a), bag_ids(&w, b)), before);
        assert_eq!((gold(&w, a), gold(&w, b)), (1000, 1000));
        w.step();
        assert!(w.events().iter().any(|ev| matches!(
            ev,
            Event::TradeEnded {
                reason: TradeEnd::Failed,
                ..
            }
        )));
    }

    #[test]
    fn changing_an_offer_voids_both_acceptances() {
        let (mut w, [a, b, _]) = setup();
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        ask(&mut w, a, Request::TradeAccept).expect("accept");
        ask(&mut w, b, Request::TradeGold { gold: 5 }).expect("gold");
        let v = w.trade_of(1).expect("trade");
        assert!(!v.mine.accepted && !v.theirs.accepted);
        ask(&mut w, b, Request::TradeAccept).expect("accept");
        assert!(ready(&w).is_none(), "a's acceptance was voided");
        ask(&mut w, a, Request::TradeWithdraw { item: ItemId(1000) }).expect_err("not on offer");
        ask(&mut w, a, Request::TradeOffer { item: ItemId(1000) }).expect("offer");
        ask(&mut w, a, Request::TradeWithdraw { item: ItemId(1000) }).expect("withdraw");
        assert!(!w.trade_of(2).expect("trade").mine.accepted);
    }

    #[test]
    fn typed_rejections() {
        let (mut w, [a, b, c]) = setup();
        assert_eq!(ask(&mut w, a, Request::TradeAccept), Err(Reject::NoTrade));
        assert_eq!(
            ask(&mut w, a, Request::TradeOpen { with: c }),
            Err(Reject::NotInParty)
        );
        assert_eq!(
            ask(&mut w, a, Request::TradeOpen { with: a }),
            Err(Reject::NoSuchTarget)
        );
        w.players[1].pos.0 += 6000;
        assert_eq!(
            ask(&mut w, a, Request::TradeOpen { with: b }),
            Err(Reject::TooFar)
        );
        w.players[1].pos.0 -= 6000;
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        assert_eq!(
            ask(&mut w, b, Request::TradeOpen { with: a }),
            Err(Reject::TradeBusy)
        );
        let sword = w.players[0]
            .inv
            .equipment
            .weapon()
            .map(|i| i.id)
            .expect("starter sword");
        assert_eq!(
            ask(&mut w, a, Request::TradeOffer { item: sword }),
            Err(Reject::ItemEquipped)
        );
        assert_eq!(
            ask(&mut w, a, Request::TradeOffer { item: ItemId(1010) }),
            Err(Reject::NoSuchItem)
        );
        assert_eq!(
            ask(&mut w, a, Request::TradeGold { gold: 1001 }),
            Err(Reject::NotEnoughGold)
        );
        // An item on offer stays in the bag: it cannot be dropped meanwhile.
        ask(&mut w, a, Request::TradeOffer { item: ItemId(1000) }).expect("offer");
        assert_eq!(
            ask(&mut w, a, Request::Drop { item: ItemId(1000) }),
            Err(Reject::TradeBusy)
        );
        // b's bag is full: a gives one item, b gives none.
        while w.players[1].inv.bag.len() < BAG_SLOTS {
            let n = w.players[1].inv.bag.len() as u128;
            w.players[1]
                .inv
                .bag
                .push(Item::common(ItemId(5000 + n), 40, 1));
        }
        ask(&mut w, b, Request::TradeAccept).expect("first accept");
        assert_eq!(
            ask(&mut w, a, Request::TradeAccept),
            Err(Reject::PartnerBagFull)
        );
        assert!(ready(&w).is_none());
        // Offers are bounded.
        for n in 0..TRADE_MAX_ITEMS as u128 {
            w.players[0]
                .inv
                .bag
                .push(Item::common(ItemId(7000 + n), 40, 1));
        }
        let mut last = Ok(());
        for n in 0..TRADE_MAX_ITEMS as u128 {
            last = ask(
                &mut w,
                a,
                Request::TradeOffer {
                    item: ItemId(7000 + n),
                },
            );
        }
        assert_eq!(last, Err(Reject::OfferFull));
    }

    #[test]
    fn death_zone_change_leaving_and_party_changes_cancel() {
        let ended = |w: &World| {
            w.events().iter().find_map(|ev| match ev {
                Event::TradeEnded { reason, .. } => Some(*reason),
                _ => None,
            })
        };
        let (mut w, [a, b, _]) = setup();
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        w.player_died(1, 0);
        w.step();
        assert_eq!(ended(&w), Some(TradeEnd::Died));
        assert!(w.trade_of(1).is_none());

        let (mut w, [a, b, _]) = setup();
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        w.begin_transfer(0, 2, crate::events::TransferCause::Portal);
        w.step();
        assert_eq!(ended(&w), Some(TradeEnd::ZoneChange));

        let (mut w, [a, b, _]) = setup();
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        assert!(w.set_party(2, None));
        w.step();
        assert_eq!(ended(&w), Some(TradeEnd::PartyChanged));

        let (mut w, [a, b, _]) = setup();
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        w.step();
        w.take_player(b).expect("left");
        // Between steps: the partner hears of it with the next step's events.
        assert_eq!(ended(&w), None);
        w.step();
        assert_eq!(ended(&w), Some(TradeEnd::PartnerLeft));
        assert!(w.trade_of(1).is_none());
    }

    #[test]
    fn a_side_leaving_while_committing_keeps_its_gold_and_gets_its_items_later() {
        let (mut w, [a, b, _]) = setup();
        ask(&mut w, a, Request::TradeOpen { with: b }).expect("open");
        ask(&mut w, a, Request::TradeGold { gold: 400 }).expect("gold");
        ask(&mut w, b, Request::TradeOffer { item: ItemId(1010) }).expect("offer");
        ask(&mut w, a, Request::TradeAccept).expect("accept");
        ask(&mut w, b, Request::TradeAccept).expect("accept");
        let m = ready(&w).expect("reserved");
        // a disconnects mid-commit: its saved state keeps the reserved gold.
        let saved = w.take_player(a).expect("a");
        assert_eq!(saved.inventory.gold, 1000);
        let u = w.complete_trade(m.trade, true).expect("reserved");
        // The store gave a the item: a gets it at its next login.
        assert_eq!(u.items.len(), 1);
        assert_eq!((u.items[0].0, u.items[0].1.id), (1, ItemId(1010)));
        // b does not get gold a kept.
        assert!(u.gold_kept);
        assert_eq!(gold(&w, b), 1000);
    }

    #[test]
    fn return_to_bag_undoes_a_drop() {
        let (mut w, [a, _, _]) = setup();
        let before = bag_ids(&w, a);
        ask(&mut w, a, Request::Drop { item: ItemId(1000) }).expect("drop");
        assert_eq!(w.ground_items().count(), 1);
        assert_eq!(w.return_to_bag(a, ItemId(1000)), Ok(()));
        assert_eq!(bag_ids(&w, a), before);
        assert_eq!(w.ground_items().count(), 0);
        assert_eq!(w.return_to_bag(a, ItemId(1000)), Err(Reject::NoSuchItem));
        w.step();
        assert!(w.events().iter().any(|ev| matches!(
            ev,
            Event::Inventory {
                change: InventoryChange::Returned { item },
                ..
            } if item.id == ItemId(1000)
        )));
        // A full bag refuses and leaves the item where it is.
        ask(&mut w, a, Request::Drop { item: ItemId(1000) }).expect("drop");
        while w.players[0].inv.bag.len() < BAG_SLOTS {
            let n = w.players[0].inv.bag.len() as u128;
            w.players[0]
                .inv
                .bag
                .push(Item::common(ItemId(9000 + n), 40, 1));
        }
        assert_eq!(w.return_to_bag(a, ItemId(1000)), Err(Reject::BagFull));
        assert_eq!(w.ground_items().count(), 1);
    }

    /// Every item id held anywhere (bags, equipment, ground, reserved in trades), sorted,
    /// and the gold held anywhere (purses, reserved).
    fn holdings(w: &World) -> (Vec<ItemId>, u64) {
        let mut ids: Vec<ItemId> = w
            .players
            .iter()
            .flat_map(|p| p.inv.item_ids().collect::<Vec<_>>())
            .chain(w.ground.iter().map(|g| g.item.id))
            .chain(
                w.trades
                    .iter()
                    .flat_map(|t| t.sides.iter().flat_map(|s| s.held.iter().map(|i| i.id))),
            )
            .collect();
        ids.sort_unstable();
        let gold = w.players.iter().map(|p| p.inv.gold).sum::<u64>()
            + w.trades
                .iter()
                .flat_map(|t| t.sides.iter().map(|s| s.held_gold))
                .sum::<u64>();
        (ids, gold)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(u8, u8),
        Offer(u8, u8),
        Withdraw(u8, u8),
        Gold(u8, u16),
        Accept(u8),
        Cancel(u8),
        Drop(u8, u8),
        PickUp(u8),
        Move(u8, i16),
        Party(u8, bool),
        Complete(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..3u8, 0..3u8).prop_map(|(a, b)| Op::Open(a, b)),
            1 => (0..3u8, any::<u8>()).prop_map(|(a, k)| Op::Offer(a, k)),
            1 => (0..3u8, any::<u8>()).prop_map(|(a, k)| Op::Withdraw(a, k)),
            1 => (0..3u8, 0..1500u16).prop_map(|(a, g)| Op::Gold(a, g)),
            6 => (0..3u8).prop_map(Op::Accept),
            1 => (0..3u8).prop_map(Op::Cancel),
            1 => (0..3u8, any::<u8>()).prop_map(|(a, k)| Op::Drop(a, k)),
            1 => (0..3u8).prop_map(Op::PickUp),
            1 => (0..3u8, -1000..1000i16).prop_map(|(a, x)| Op::Move(a, x)),
            1 => (0..3u8, any::<bool>()).prop_map(|(a, p)| Op::Party(a, p)),
            2 => any::<bool>().prop_map(Op::Complete),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// No item is duplicated or lost and no gold appears or vanishes across random
        /// trade sequences (with drops, pick-ups, moves, party changes, commits and aborts
        /// in between): everything is in exactly one bag, slot, ground spot or trade.
        #[test]
        fn trades_conserve_items_and_gold(ops in prop::collection::vec(op(), 1..150)) {
            let (mut w, e) = setup();
            assert!(w.set_party(3, Some(7)));
            let start = holdings(&w);
            let mut seq = [0u32; 3];
            for op in &ops {
                let bag_item = |w: &World, who: u8, k: u8| {
                    let st = w.export_player(e[usize::from(who)]).expect("player");
                    st.inventory
                        .bag
                        .get(usize::from(k) % st.inventory.bag.len().max(1))
                        .map_or(ItemId(u128::from(k)), |i| i.id)
                };
                match *op {
                    Op::Open(a, b) => {
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::TradeOpen { with: e[usize::from(b)] });
                    }
                    Op::Offer(a, k) => {
                        let item = bag_item(&w, a, k);
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::TradeOffer { item });
                    }
                    Op::Withdraw(a, k) => {
                        let item = bag_item(&w, a, k);
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::TradeWithdraw { item });
                    }
                    Op::Gold(a, g) => {
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::TradeGold { gold: u64::from(g) });
                    }
                    Op::Accept(a) => {
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::TradeAccept);
                    }
                    Op::Cancel(a) => {
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::TradeCancel);
                    }
                    Op::Drop(a, k) => {
                        let item = bag_item(&w, a, k);
                        let _ = w.queue_request(e[usize::from(a)], 0, Request::Drop { item });
                    }
                    Op::PickUp(a) => {
                        let first = w.ground_items().next().map(|g| g.id);
                        if let Some(g) = first {
                            let _ = w.queue_request(e[usize::from(a)], 0, Request::PickUp { ground: g });
                        }
                    }
                    Op::Move(a, x) => {
                        let i = usize::from(a);
                        seq[i] += 1;
                        w.queue_input(e[i], PlayerInput { seq: seq[i], move_x: x, move_y: 0, buttons: 0 });
                    }
                    Op::Party(a, on) => {
                        w.set_party(u64::from(a) + 1, on.then_some(7));
                    }
                    Op::Complete(committed) => {
                        let reserved: Vec<u32> = w.trades.iter().filter(|t| t.committing).map(|t| t.id).collect();
                        for t in reserved {
                            prop_assert!(w.complete_trade(t, committed).is_some());
                        }
                    }
                }
                w.step();
                let now = holdings(&w);
                prop_assert_eq!(&now.0, &start.0, "items");
                prop_assert_eq!(now.1, start.1, "gold");
                let mut dedup = now.0.clone();
                dedup.dedup();
                prop_assert_eq!(dedup.len(), now.0.len(), "an item is held twice");
            }
        }
    }
}
