//! Conversions between game types and wire messages. The game crate knows nothing of the
//! protocol and the protocol nothing of the game; this is the one place they meet.

use zonehost_game as game;
use zonehost_protocol::message as wire;

/// The wire form of an item.
pub(crate) fn item(i: &game::Item) -> wire::ItemInfo {
    wire::ItemInfo {
        id: i.id.0,
        base: i.base,
        rarity: i.rarity.code(),
        level: i.level,
        unique: i.unique,
        affixes: i.affixes.iter().map(|a| (a.kind as u8, a.value)).collect(),
    }
}

/// The slot code of an equipment slot.
pub(crate) fn slot_code(s: game::EquipSlot) -> u8 {
    s.index() as u8
}

/// The equipment slot of a wire code.
pub(crate) fn slot(code: u8) -> Option<game::EquipSlot> {
    game::EquipSlot::ALL.get(usize::from(code)).copied()
}

/// A player's inventory and progress.
pub(crate) fn inventory(state: &game::PlayerState) -> wire::InventoryView {
    wire::InventoryView {
        bag: state.inventory.bag.iter().map(item).collect(),
        equipment: state
            .inventory
            .equipment
            .iter()
            .map(|(s, i)| (slot_code(s), item(i)))
            .collect(),
        gold: state.inventory.gold,
        level: state.level,
        xp: state.xp,
    }
}

/// The wire request a game request comes from, or `None` for requests the server
/// answers itself (ping, inventory, parties).
pub(crate) fn game_request(r: &wire::Request) -> Option<Result<game::Request, wire::RequestError>> {
    use wire::Request as W;
    Some(Ok(match r {
        W::Attack { target } => game::Request::Attack { target: *target },
        W::PickUp { ground } => game::Request::PickUp { ground: *ground },
        W::Equip { item } => game::Request::Equip {
            item: game::ItemId(*item),
        },
        W::Unequip { slot: code } => match slot(*code) {
            Some(s) => game::Request::Unequip { slot: s },
            None => return Some(Err(wire::RequestError::WrongSlot)),
        },
        W::Drop { item } => game::Request::Drop {
            item: game::ItemId(*item),
        },
        W::UseItem { item } => game::Request::UseItem {
            item: game::ItemId(*item),
        },
        W::EnterZone => game::Request::EnterZone,
        W::TradeOpen { with } => game::Request::TradeOpen { with: *with },
        W::TradeOffer { item } => game::Request::TradeOffer {
            item: game::ItemId(*item),
        },
        W::TradeWithdraw { item } => game::Request::TradeWithdraw {
            item: game::ItemId(*item),
        },
        W::TradeGold { gold } => game::Request::TradeGold { gold: *gold },
        W::TradeAccept => game::Request::TradeAccept,
        W::TradeCancel => game::Request::TradeCancel,
        W::Ping { .. }
        | W::GetInventory
        | W::GetZone
        | W::SnapshotRate { .. }
        | W::PartyInvite { .. }
        | W::PartyAccept
        | W::PartyDecline
        | W::PartyLeave
        | W::PartyKick { .. } => return None,
    }))
}

/// The layout of a zone as the client sees it (`Response::Zone`, SPEC §6.3).
pub(crate) fn zone(t: &game::ZoneTemplate) -> wire::ZoneView {
    let rect = |r: &game::Rect| wire::ZoneRect {
        x0: r.x0,
        y0: r.y0,
        x1: r.x1,
        y1: r.y1,
    };
    wire::ZoneView {
        zone: t.id,
        name: wire::bounded_text(t.name.clone()),
        width_mm: t.width_mm,
        height_mm: t.height_mm,
        spawn_mm: t.spawn_mm,
        town: t.town,
        walls: t.walls.iter().map(rect).collect(),
        portals: t
            .portals
            .iter()
            .map(|p| wire::ZonePortal {
                area: rect(&p.area),
                target: p.target,
            })
            .collect(),
    }
}

/// The wire error of a game rejection.
pub(crate) fn reject(r: game::Reject) -> wire::RequestError {
    use game::Reject as G;
    use wire::RequestError as W;
    match r {
        G::NoSuchTarget => W::NoSuchTarget,
        G::NoSuchItem => W::NoSuchItem,
        G::TooFar => W::TooFar,
        G::NoLineOfSight => W::NoLineOfSight,
        G::BagFull => W::BagFull,
        G::NotYours => W::NotYours,
        G::WrongSlot => W::WrongSlot,
        G::LevelTooLow => W::LevelTooLow,
        G::SlotEmpty => W::SlotEmpty,
        G::NotUsable => W::NotUsable,
        G::OnCooldown => W::OnCooldown,
        G::NoEffect => W::NoEffect,
        G::GroundFull => W::GroundFull,
        G::NotAtPortal => W::NotAtPortal,
        G::Dead => W::Dead,
        G::Leaving => W::Leaving,
        G::NotInParty => W::NotInParty,
        G::TradeBusy => W::TradeBusy,
        G::NoTrade => W::NoTrade,
        G::ItemEquipped => W::ItemEquipped,
        G::NotEnoughGold => W::NotEnoughGold,
        G::PartnerBagFull => W::PartnerBagFull,
        G::OfferFull => W::OfferFull,
    }
}

/// The wire error of a party error.
pub(crate) fn party_error(e: game::PartyError) -> wire::RequestError {
    use game::PartyError as G;
    use wire::RequestError as W;
    match e {
        G::SelfInvite => W::SelfInvite,
        G::AlreadyInParty => W::AlreadyInParty,
        G::NotLeader => W::NotLeader,
        G::PartyFull => W::PartyFull,
        G::NoInvite => W::NoInvite,
        G::NotInParty => W::NotInParty,
        G::NotMember => W::NotMember,
    }
}

fn offer(o: &game::Offer) -> wire::TradeOffer {
    wire::TradeOffer {
        items: o.items.iter().map(|i| i.0).collect(),
        gold: o.gold,
        accepted: o.accepted,
    }
}

/// The wire reason a trade ended.
pub(crate) fn trade_end(r: game::TradeEnd) -> wire::TradeEndReason {
    use game::TradeEnd as G;
    use wire::TradeEndReason as W;
    match r {
        G::Completed => W::Completed,
        G::Cancelled => W::Cancelled,
        G::PartnerLeft => W::PartnerLeft,
        G::Died => W::Died,
        G::ZoneChange => W::ZoneChange,
        G::PartyChanged => W::PartyChanged,
        G::Failed => W::Failed,
    }
}

/// The wire event of a game event, for its recipients; `None` for events the server
/// turns into something else (request completions, transfers).
pub(crate) fn event(e: &game::Event) -> Option<wire::Event> {
    use game::Event as G;
    use wire::Event as W;
    Some(match e {
        G::Hit {
            attacker,
            target,
            physical,
            fire,
            crit,
            target_hp,
        } => W::Combat(wire::Combat::Hit {
            attacker: *attacker,
            target: *target,
            physical: *physical,
            fire: *fire,
            crit: *crit,
            target_hp: *target_hp,
        }),
        G::Miss { attacker, target } => W::Combat(wire::Combat::Miss {
            attacker: *attacker,
            target: *target,
        }),
        G::Killed {
            killer,
            victim,
            kind,
        } => W::Combat(wire::Combat::Killed {
            killer: *killer,
            victim: *victim,
            monster_kind: *kind as u8,
        }),
        G::XpGained { amount, .. } => W::XpGained { amount: *amount },
        G::LevelUp { level, .. } => W::LevelUp { level: *level },
        G::PlayerDied {
            killer,
            gold_lost,
            xp_lost,
            ..
        } => W::Died {
            killer: *killer,
            gold_lost: *gold_lost,
            xp_lost: *xp_lost,
        },
        G::PlayerRespawned { .. } => W::Respawned,
        G::GoldChanged { delta, gold, .. } => W::Gold {
            delta: *delta,
            gold: *gold,
        },
        G::ItemDropped {
            ground,
            item: i,
            owner,
            pos_mm,
        } => W::ItemDropped {
            ground: *ground,
            item: item(i),
            owner: *owner,
            x_mm: pos_mm.0,
            y_mm: pos_mm.1,
        },
        G::ItemExpired { ground, .. } => W::ItemExpired { ground: *ground },
        G::Inventory { change, .. } => W::Inventory(match change {
            game::InventoryChange::PickedUp { item: i, ground } => wire::InventoryEvent::PickedUp {
                item: item(i),
                ground: *ground,
            },
            game::InventoryChange::Equipped {
                item,
                slot,
                swapped_out,
            } => wire::InventoryEvent::Equipped {
                item: item.0,
                slot: slot_code(*slot),
                swapped_out: swapped_out.map(|i| i.0),
            },
            game::InventoryChange::Unequipped { item, slot } => wire::InventoryEvent::Unequipped {
                item: item.0,
                slot: slot_code(*slot),
            },
            game::InventoryChange::Dropped { item, ground } => wire::InventoryEvent::Dropped {
                item: item.0,
                ground: *ground,
            },
            game::InventoryChange::Consumed { item, healed } => wire::InventoryEvent::Consumed {
                item: item.0,
                healed: *healed,
            },
            game::InventoryChange::Granted { items } => wire::InventoryEvent::Granted {
                items: items.iter().map(|i| i.0).collect(),
            },
            game::InventoryChange::Returned { item: i } => {
                wire::InventoryEvent::Returned { item: item(i) }
            }
            game::InventoryChange::Traded {
                trade,
                given,
                received,
            } => wire::InventoryEvent::Traded {
                trade: *trade,
                given: given.iter().map(|i| i.0).collect(),
                received: received.iter().map(item).collect(),
            },
        }),
        G::TradeUpdated { view, .. } => W::Trade(wire::TradeEvent::Updated {
            trade: view.trade,
            partner: view.partner,
            partner_entity: view.partner_entity,
            mine: offer(&view.mine),
            theirs: offer(&view.theirs),
            committing: view.committing,
        }),
        G::TradeEnded { trade, reason, .. } => W::Trade(wire::TradeEvent::Ended {
            trade: *trade,
            reason: trade_end(*reason),
        }),
        G::RequestDone { .. } | G::Transfer { .. } | G::TradeReady { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_codes_round_trip_and_match_the_protocol() {
        for s in game::EquipSlot::ALL {
            assert_eq!(slot(slot_code(s)), Some(s));
        }
        assert_eq!(slot_code(game::EquipSlot::Weapon), wire::slot::WEAPON);
        assert_eq!(slot_code(game::EquipSlot::Ring), wire::slot::RING);
        assert_eq!(slot(6), None);
    }

    #[test]
    fn every_game_request_maps() {
        let cases = [
            wire::Request::Attack { target: 1 },
            wire::Request::PickUp { ground: 1 },
            wire::Request::Equip { item: 1 },
            wire::Request::Unequip { slot: 0 },
            wire::Request::Drop { item: 1 },
            wire::Request::UseItem { item: 1 },
            wire::Request::EnterZone,
            wire::Request::TradeOpen { with: 3 },
            wire::Request::TradeOffer { item: 1 },
            wire::Request::TradeWithdraw { item: 1 },
            wire::Request::TradeGold { gold: 5 },
            wire::Request::TradeAccept,
            wire::Request::TradeCancel,
        ];
        for c in cases {
            let g = game_request(&c).and_then(Result::ok).expect("maps");
            assert_eq!(g.kind().as_str(), c.kind());
        }
        assert_eq!(
            game_request(&wire::Request::Unequip { slot: 9 }),
            Some(Err(wire::RequestError::WrongSlot))
        );
        assert_eq!(game_request(&wire::Request::GetInventory), None);
    }
}
