//! Tests of the brain: bots stepped through scripted snapshots and events, and fighters
//! against the real game rules.

use super::tests_support::{settings, welcome};
use super::*;
use zonehost_protocol::message::{Combat, InventoryEvent, PartyEvent};
use zonehost_protocol::snapshot::{Applied, EntityState};

/// As if the bag had been read already (an empty bag), so the next request is about
/// something else.
fn bag_known(b: &mut Brain) {
    b.inventory_asked = true;
    b.inventory_known = true;
}

fn player(id: u32, p: (i32, i32), hp: u16) -> EntityState {
    EntityState {
        id,
        x_mm: p.0,
        y_mm: p.1,
        hp,
        max_hp: 124,
        kind: kind::PLAYER,
        ..EntityState::default()
    }
}

fn monster(id: u32, p: (i32, i32)) -> EntityState {
    EntityState {
        id,
        x_mm: p.0,
        y_mm: p.1,
        hp: 40,
        max_hp: 40,
        kind: kind::MONSTER,
        ..EntityState::default()
    }
}

fn view(b: &mut Brain, tick: u32, ack: u32, entities: &[EntityState], now: Instant) {
    let info = SnapshotInfo {
        tick,
        part: 0,
        parts: 1,
        last_input: Some(ack),
        stale: false,
        other_instance: false,
        applied: Applied::Complete,
    };
    b.on_view(&info, entities, now);
}

/// Plays the server for one bot: applies each input with the game's movement rules
/// and answers with a snapshot (no latency).
fn walk(
    b: &mut Brain,
    pos: &mut (i32, i32),
    seq: &mut u32,
    ticks: u32,
    t: &mut Instant,
    extra: &[EntityState],
) {
    let map = b.atlas.zone(b.zone).cloned().expect("zone");
    for _ in 0..ticks {
        *seq += 1;
        *t += Duration::from_micros(16_667);
        let cmd = b.next_input(*seq, *t);
        *pos = map.step(*pos, cmd.move_x.get(), cmd.move_y.get());
        let mut ents = vec![player(b.me, *pos, 124)];
        ents.extend_from_slice(extra);
        view(b, *seq, *seq, &ents, *t);
    }
}

#[test]
fn fighter_walks_from_town_toward_the_crypt_portal() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Fighter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(1, 5), t0);
    let mut pos = (20_000, 20_000);
    let (mut seq, mut t) = (0, t0);
    view(&mut b, 1, 0, &[player(5, pos, 124)], t);
    walk(&mut b, &mut pos, &mut seq, 60 * 8, &mut t, &[]);
    let portal = Rect::new(38000, 18000, 40000, 22000);
    assert!(
        portal.contains(pos) || dist(pos, portal.center()) < 200,
        "ended at {pos:?}"
    );
}

#[test]
fn fighter_approaches_attacks_and_handles_refusals() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Fighter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(2, 5), t0);
    bag_known(&mut b);
    let mut pos = (3000, 30000);
    let m = monster(900, (8000, 30000));
    let (mut seq, mut t) = (0, t0);
    view(&mut b, 1, 0, &[player(5, pos, 124), m], t);
    assert!(b.next_request(t).is_none(), "out of reach: no attack");
    walk(&mut b, &mut pos, &mut seq, 120, &mut t, &[m]);
    assert!(
        dist(pos, (8000, 30000)) <= 1800,
        "walked into reach: {pos:?}"
    );
    let (metric, req, _) = b.next_request(t).expect("attack");
    assert_eq!(metric, Metric::Attack);
    assert_eq!(req, Request::Attack { target: 900 });
    b.request_sent(1, metric, 900, t);
    assert!(
        b.next_request(t + Duration::from_secs(1)).is_none(),
        "one in flight"
    );
    // The combat log line completes the attack -> log measurement.
    let hit = Event::Combat(Combat::Miss {
        attacker: 5,
        target: 900,
    });
    let m2 = b.on_event(&hit, t + Duration::from_millis(20));
    assert_eq!(m2, Some((Metric::AttackLog, Duration::from_millis(20))));
    assert_eq!(
        b.on_response(1, &Ok(Response::Done), t + Duration::from_millis(21)),
        Some(Metric::Attack)
    );
    assert!(
        b.next_request(t + Duration::from_millis(100)).is_none(),
        "cooldown respected"
    );
    // TooFar: shorter assumed reach, no immediate retry.
    let t2 = t + Duration::from_secs(1);
    let (metric, _, _) = b.next_request(t2).expect("attack again");
    b.request_sent(2, metric, 900, t2);
    assert_eq!(
        b.on_response(2, &Err(RequestError::TooFar), t2),
        Some(Metric::Attack)
    );
    assert!(b.reach < DEFAULT_REACH);
    assert!(b.next_request(t2 + Duration::from_millis(100)).is_none());
    // NoSuchTarget: the target is forgotten.
    let t3 = t2 + Duration::from_secs(1);
    if let Some((metric, _, _)) = b.next_request(t3) {
        b.request_sent(3, metric, 900, t3);
        b.on_response(3, &Err(RequestError::NoSuchTarget), t3);
        assert!(b.target.is_none());
    }
    // A response for another id is not ours.
    assert_eq!(b.on_response(99, &Ok(Response::Done), t3), None);
}

#[test]
fn rate_limits_back_off_exponentially() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Party),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.s.party_leader_of = vec!["bot-1-1".into()];
    b.on_welcome(&welcome(1, 5), t0);
    bag_known(&mut b);
    let mut t = t0 + Duration::from_secs(2);
    let mut gaps = Vec::new();
    for id in 1..6 {
        let mut k = 0;
        let (metric, req, item) = loop {
            if let Some(r) = b.next_request(t) {
                break r;
            }
            t += Duration::from_millis(100);
            k += 1;
            assert!(k < 1000, "bounded");
        };
        assert!(matches!(req, Request::PartyInvite { .. }));
        b.request_sent(id, metric, item, t);
        b.on_response(id, &Err(RequestError::RateLimited), t);
        gaps.push(b.next_request_at - t);
    }
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
    assert!(gaps[4] >= Duration::from_secs(4));
}

#[test]
fn looter_drops_and_picks_up_a_potion_and_drinks_when_hurt() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Looter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(2, 5), t0);
    view(&mut b, 1, 0, &[player(5, (3000, 30000), 124)], t0);
    let (m, req, _) = b
        .next_request(t0 + Duration::from_secs(1))
        .expect("inventory");
    assert_eq!((m, req), (Metric::Inventory, Request::GetInventory));
    b.request_sent(1, m, 0, t0);
    let sword = ItemInfo {
        id: 10,
        base: 1,
        rarity: 0,
        level: 1,
        unique: None,
        affixes: vec![],
    };
    let potion = |id| ItemInfo {
        id,
        base: 40,
        rarity: 0,
        level: 1,
        unique: None,
        affixes: vec![],
    };
    let inv = zonehost_protocol::message::InventoryView {
        bag: vec![potion(11), potion(12)],
        equipment: vec![(0, sword)],
        gold: 0,
        level: 1,
        xp: 0,
    };
    b.on_response(
        1,
        &Ok(Response::Inventory(inv)),
        t0 + Duration::from_secs(1),
    );
    let t = t0 + Duration::from_secs(3);
    let (m, req, item) = b.next_request(t).expect("exercise drop");
    assert_eq!(m, Metric::Drop);
    assert_eq!(req, Request::Drop { item: 11 });
    b.request_sent(2, m, item, t);
    b.on_event(
        &Event::Inventory(InventoryEvent::Dropped {
            item: 11,
            ground: 300,
        }),
        t,
    );
    b.on_response(2, &Ok(Response::Done), t);
    let t = t + Duration::from_secs(1);
    let (m, req, item) = b.next_request(t).expect("pick up");
    assert_eq!((m, req), (Metric::PickUp, Request::PickUp { ground: 300 }));
    b.request_sent(3, m, item, t);
    b.on_event(
        &Event::Inventory(InventoryEvent::PickedUp {
            item: potion(11),
            ground: 300,
        }),
        t,
    );
    b.on_response(3, &Ok(Response::Done), t);
    // Hurt: a potion is used.
    view(&mut b, 2, 0, &[player(5, (3000, 30000), 40)], t);
    let t = t + Duration::from_secs(1);
    let (m, req, _) = b.next_request(t).expect("potion");
    assert_eq!(m, Metric::UseItem);
    assert!(matches!(req, Request::UseItem { item: 11 | 12 }));
    // A better weapon is worn; the old one is then junk and dropped.
    b.request_sent(4, m, 11, t);
    b.on_response(4, &Err(RequestError::NoEffect), t);
    let axe = ItemInfo {
        id: 20,
        base: 2,
        rarity: 1,
        level: 3,
        unique: None,
        affixes: vec![(4, 20)],
    };
    b.bag.push(axe);
    b.level = 2;
    let t = t + Duration::from_secs(1);
    let (m, req, item) = b.next_request(t).expect("equip");
    assert_eq!((m, req), (Metric::Equip, Request::Equip { item: 20 }));
    b.request_sent(5, m, item, t);
    b.on_event(
        &Event::Inventory(InventoryEvent::Equipped {
            item: 20,
            slot: 0,
            swapped_out: Some(10),
        }),
        t,
    );
    b.on_response(5, &Ok(Response::Done), t);
    // The axe swings every 33 ticks: the next attack waits 550 ms, not the sword's 500.
    assert_eq!(b.attack_interval, Duration::from_millis(550));
    assert_eq!(b.reach, 1800);
    let t = t + Duration::from_secs(1);
    let (m, req, _) = b.next_request(t).expect("drop junk");
    assert_eq!((m, req), (Metric::Drop, Request::Drop { item: 10 }));
}

#[test]
fn a_zone_change_ending_in_a_redirect_is_measured_until_the_welcome_in_the_new_zone() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Hopper),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    assert_eq!(
        b.on_welcome(&welcome(1, 5), t0),
        None,
        "a login is no zone change"
    );
    // Stepped into the crypt's portal; the server placed the new instance on a peer:
    // Redirect, reconnect, Welcome there in the crypt 90 ms later.
    b.zone_timer = Some(t0);
    b.hop = Hop::Wait {
        until: t0 + HOP_TIMEOUT,
    };
    let got = b.on_welcome(&welcome(2, 7), t0 + Duration::from_millis(90));
    assert_eq!(got, Some((Metric::EnterZone, Duration::from_millis(90))));
    assert!(
        matches!(b.hop_state(), Hop::Dwell { .. }),
        "{:?}",
        b.hop_state()
    );
    assert_eq!((b.zone, b.me, b.zone_timer), (2, 7, None));
    // A redirect that does not change the zone (a drain, a party move) while waiting
    // is not a zone change: nothing measured, the timer is gone.
    b.zone_timer = Some(t0);
    assert_eq!(
        b.on_welcome(&welcome(2, 8), t0 + Duration::from_millis(50)),
        None
    );
    assert_eq!(b.zone_timer, None);
}

#[test]
fn hopper_steps_into_a_portal_and_measures_the_zone_change() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Hopper),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(1, 5), t0);
    let mut pos = (20_000, 20_000);
    let (mut seq, mut t) = (0, t0);
    view(&mut b, 1, 0, &[player(5, pos, 124)], t);
    let mut entered = None;
    let map = b.atlas.zone(1).cloned().expect("town");
    // Snapshots lag one input behind (the next input always leaves before the
    // snapshot acknowledging the previous one arrives).
    for _ in 0..60 * 20 {
        seq += 1;
        t += Duration::from_micros(16_667);
        let cmd = b.next_input(seq, t);
        view(&mut b, seq, seq - 1, &[player(5, pos, 124)], t);
        pos = map.step(pos, cmd.move_x.get(), cmd.move_y.get());
        if let Some((portal, _)) = map.portals.iter().find(|(r, _)| r.contains(pos)) {
            entered = Some((t, *portal));
            break;
        }
    }
    let (at, _) = entered.expect("walked into a portal");
    assert!(
        matches!(b.hop_state(), Hop::Wait { .. }),
        "{:?}",
        b.hop_state()
    );
    assert_eq!(b.zone_timer, Some(at), "timed from the input that entered");
    let got = b.on_event(
        &Event::ZoneEntered {
            zone: 2,
            instance: 9,
            entity_id: 6,
        },
        at + Duration::from_millis(40),
    );
    assert_eq!(got, Some((Metric::EnterZone, Duration::from_millis(40))));
    assert!(matches!(b.hop_state(), Hop::Dwell { .. }));
    assert_eq!(b.me, 6);
}

#[test]
fn party_leader_trades_a_potion_with_the_nearest_member() {
    use zonehost_protocol::message::{TradeEndReason, TradeOffer};
    let t0 = Instant::now();
    let mut s = settings(Behaviour::Party);
    s.party_leader_of = vec!["bot-1-1".into()];
    s.party_trade_every = Some(Duration::from_secs(5));
    let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-0".into(), t0);
    b.on_welcome(&welcome(1, 5), t0);
    bag_known(&mut b);
    let potion = ItemInfo {
        id: 99,
        base: zonehost_game::items::MINOR_HEALING_POTION,
        rarity: 0,
        level: 1,
        unique: None,
        affixes: Vec::new(),
    };
    b.bag.push(potion);
    b.on_event(
        &Event::Party(PartyEvent::Members {
            party: 1,
            leader: "bot-1-0".into(),
            members: vec!["bot-1-0".into(), "bot-1-1".into()],
        }),
        t0,
    );
    b.pos = Some((1000, 1000));
    b.nearest_player = Some((6, 2000));
    // Not before the interval.
    assert!(b.trade_request(t0 + Duration::from_secs(1)).is_none());
    let t = t0 + Duration::from_secs(6);
    let (m, req, _) = b.trade_request(t).expect("open");
    assert_eq!(
        (m, req),
        (Metric::TradeOpen, Request::TradeOpen { with: 6 })
    );
    let view = |items: Vec<u128>, accepted: bool, committing: bool| {
        Event::Trade(TradeEvent::Updated {
            trade: 1,
            partner: 2,
            partner_entity: 6,
            mine: TradeOffer {
                items,
                gold: 0,
                accepted,
            },
            theirs: TradeOffer {
                items: vec![7],
                gold: 0,
                accepted: false,
            },
            committing,
        })
    };
    b.on_event(&view(vec![], false, false), t);
    let (m, req, _) = b.trade_request(t).expect("offer");
    assert_eq!(
        (m, req),
        (Metric::TradeOffer, Request::TradeOffer { item: 99 })
    );
    b.on_event(&view(vec![99], false, false), t);
    let (m, req, _) = b.trade_request(t).expect("accept");
    assert_eq!((m, req), (Metric::TradeAccept, Request::TradeAccept));
    assert!(b.trade_request(t).is_none(), "accepted: waits");
    // The partner changed its offer: acceptance voided, accept again.
    b.on_event(&view(vec![99], false, false), t);
    assert_eq!(
        b.trade_request(t).map(|(m, ..)| m),
        Some(Metric::TradeAccept)
    );
    b.on_event(&view(vec![99], true, true), t);
    assert!(
        b.trade_request(t + Duration::from_secs(60)).is_none(),
        "committing"
    );
    b.on_event(
        &Event::Trade(TradeEvent::Ended {
            trade: 1,
            reason: TradeEndReason::Completed,
        }),
        t,
    );
    assert!(b.trade.is_none());
    // A stuck trade is cancelled after the patience.
    let t2 = t + Duration::from_secs(6);
    assert!(b.trade_request(t2).is_some(), "next trade opens");
    b.on_event(&view(vec![], false, false), t2);
    let _ = b.trade_request(t2);
    let _ = b.trade_request(t2);
    let (m, req, _) = b
        .trade_request(t2 + TRADE_PATIENCE + Duration::from_secs(1))
        .expect("cancel");
    assert_eq!((m, req), (Metric::TradeCancel, Request::TradeCancel));
}

#[test]
fn party_member_accepts_then_leaves() {
    let t0 = Instant::now();
    let mut s = settings(Behaviour::Party);
    s.party_member_of = Some("bot-1-0".into());
    let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-1".into(), t0);
    b.on_welcome(&welcome(1, 5), t0);
    bag_known(&mut b);
    b.on_event(
        &Event::Party(PartyEvent::Invited {
            by: "bot-1-0".into(),
        }),
        t0,
    );
    let t = t0 + Duration::from_secs(1);
    let (m, req, _) = b.next_request(t).expect("accept");
    assert_eq!((m, req), (Metric::Party, Request::PartyAccept));
    b.request_sent(1, m, 0, t);
    b.on_event(
        &Event::Party(PartyEvent::Members {
            party: 1,
            leader: "bot-1-0".into(),
            members: vec!["bot-1-0".into(), "bot-1-1".into()],
        }),
        t,
    );
    b.on_response(1, &Ok(Response::Done), t);
    assert!(b.in_party);
    assert!(b.next_request(t + Duration::from_secs(1)).is_none());
    let (m, req, _) = b.next_request(t + Duration::from_secs(7)).expect("leave");
    assert_eq!((m, req), (Metric::Party, Request::PartyLeave));
}

#[test]
fn own_kills_follow_the_entity_id_across_zone_changes() {
    // A fresh character logs in in town (entity 1 there) and walks into the crypt,
    // where it is entity 33: its kills there carry 33, and entity 1 is a monster.
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Fighter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(1, 1), t0);
    assert!(b.is_me(1));
    b.on_event(
        &Event::ZoneEntered {
            zone: 2,
            instance: 7,
            entity_id: 33,
        },
        t0,
    );
    assert!(b.is_me(33), "the crypt entity is this bot");
    assert!(
        !b.is_me(1),
        "the town entity id is someone else in the crypt"
    );
    assert!(!b.is_me(0));
}

#[test]
fn fighter_reads_its_bag_and_drinks_a_potion_when_hurt() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Fighter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(2, 5), t0);
    let m = monster(900, (3500, 30000));
    view(&mut b, 1, 0, &[player(5, (3000, 30000), 124), m], t0);
    let t = t0 + Duration::from_secs(1);
    let (metric, req, _) = b.next_request(t).expect("inventory");
    assert_eq!((metric, req), (Metric::Inventory, Request::GetInventory));
    b.request_sent(1, metric, 0, t);
    let potion = ItemInfo {
        id: 11,
        base: 40,
        rarity: 0,
        level: 1,
        unique: None,
        affixes: vec![],
    };
    let inv = zonehost_protocol::message::InventoryView {
        bag: vec![potion],
        equipment: vec![],
        gold: 0,
        level: 1,
        xp: 0,
    };
    b.on_response(1, &Ok(Response::Inventory(inv)), t);
    // Nothing worn: fists, 30 ticks at 1500 mm.
    assert_eq!(
        (b.attack_interval, b.reach),
        (Duration::from_millis(500), 1500)
    );
    // Healthy: it attacks.
    let t = t + Duration::from_secs(1);
    let (metric, req, _) = b.next_request(t).expect("attack");
    assert_eq!(
        (metric, req),
        (Metric::Attack, Request::Attack { target: 900 })
    );
    b.request_sent(2, metric, 900, t);
    b.on_response(2, &Ok(Response::Done), t);
    // A hit takes it below half: the combat log alone (no snapshot yet) makes it drink.
    b.on_event(
        &Event::Combat(Combat::Hit {
            attacker: 900,
            target: 5,
            physical: 70,
            fire: 0,
            crit: false,
            target_hp: 54,
        }),
        t,
    );
    let t = t + Duration::from_secs(1);
    let (metric, req, _) = b.next_request(t).expect("potion");
    assert_eq!(
        (metric, req),
        (Metric::UseItem, Request::UseItem { item: 11 })
    );
    b.request_sent(3, metric, 11, t);
    b.on_event(
        &Event::Inventory(InventoryEvent::Consumed {
            item: 11,
            healed: 60,
        }),
        t,
    );
    b.on_response(3, &Ok(Response::Done), t);
    // No potion left: it fights on.
    let t = t + Duration::from_secs(2);
    let (metric, _, _) = b.next_request(t).expect("attack again");
    assert_eq!(metric, Metric::Attack);
}

#[test]
fn only_drops_of_own_kills_count_as_loot() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Looter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(2, 5), t0);
    let sword = ItemInfo {
        id: 50,
        base: 1,
        rarity: 0,
        level: 1,
        unique: None,
        affixes: vec![],
    };
    for (ground, owner) in [(300, Some(77)), (301, Some(78)), (302, None)] {
        b.on_event(
            &Event::ItemDropped {
                ground,
                item: sword.clone(),
                owner,
                x_mm: 3000,
                y_mm: 30000,
            },
            t0,
        );
    }
    assert!(b.is_kill_loot(300), "owned by this player (77)");
    assert!(!b.is_kill_loot(301) && !b.is_kill_loot(302));
    b.on_event(
        &Event::Inventory(InventoryEvent::PickedUp {
            item: sword,
            ground: 300,
        }),
        t0,
    );
    assert!(!b.is_kill_loot(300), "taken");
}

/// What a fighter achieved against the real rules.
#[derive(Debug, Default)]
struct Played {
    kills: u32,
    deaths: u32,
    attacks: u32,
    refused: u32,
    potions: u32,
}

fn wire_item(i: &zonehost_game::Item) -> ItemInfo {
    ItemInfo {
        id: i.id.0,
        base: i.base,
        rarity: i.rarity.code(),
        level: i.level,
        unique: i.unique,
        affixes: i.affixes.iter().map(|a| (a.kind as u8, a.value)).collect(),
    }
}

fn wire_reject(r: zonehost_game::Reject) -> RequestError {
    use zonehost_game::Reject as G;
    match r {
        G::NoSuchTarget => RequestError::NoSuchTarget,
        G::TooFar => RequestError::TooFar,
        G::NoLineOfSight => RequestError::NoLineOfSight,
        G::OnCooldown => RequestError::OnCooldown,
        G::NoEffect => RequestError::NoEffect,
        G::NoSuchItem => RequestError::NoSuchItem,
        G::NotUsable => RequestError::NotUsable,
        G::Dead => RequestError::Dead,
        G::Leaving => RequestError::Leaving,
        _ => RequestError::Internal,
    }
}

/// A fresh character's fighter brain playing the built-in crypt (a real
/// `zonehost_game::World`, seeded) in virtual time, as the server would run it: one
/// input per tick, requests resolved by the next step, a snapshot and the events of
/// each step fed back. A death (a transfer to town on the server) brings the character
/// back at the crypt entrance under a new entity id, as a walk back from town would.
fn play_crypt(seed: u64, secs: u32) -> Played {
    use zonehost_game::{Content, EntityKind, World};
    let content = Content::builtin().expect("builtin content");
    let mut w = World::from_template(content.zone(2).expect("crypt"), seed);
    let mut me = w.add_player(77);
    let t0 = Instant::now();
    let mut s = settings(Behaviour::Fighter);
    s.seed = seed;
    let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-0".into(), t0);
    b.on_welcome(&welcome(2, me), t0);
    let mut played = Played::default();
    let (mut t, mut req_id) = (t0, 0u32);
    for seq in 1..=secs * 60 {
        t += Duration::from_micros(16_667);
        let cmd = b.next_input(seq, t);
        w.queue_input(
            me,
            zonehost_game::PlayerInput {
                seq,
                move_x: cmd.move_x.get(),
                move_y: cmd.move_y.get(),
                buttons: cmd.buttons.get(),
            },
        );
        if let Some((metric, req, item)) = b.next_request(t) {
            req_id += 1;
            b.request_sent(req_id, metric, item, t);
            let game_req = match req {
                Request::Attack { target } => {
                    played.attacks += 1;
                    Some(zonehost_game::Request::Attack { target })
                }
                Request::UseItem { item } => Some(zonehost_game::Request::UseItem {
                    item: zonehost_game::ItemId(item),
                }),
                _ => None,
            };
            match game_req {
                Some(r) => {
                    let queued = w.queue_request(me, req_id, r);
                    assert!(queued.is_ok(), "one request in flight: {queued:?}");
                }
                None => {
                    // Server requests are answered at once.
                    let state = w.export_player(me).expect("present");
                    let inv = zonehost_protocol::message::InventoryView {
                        bag: state.inventory.bag.iter().map(wire_item).collect(),
                        equipment: state
                            .inventory
                            .equipment
                            .items()
                            .map(|i| (0, wire_item(i)))
                            .collect(),
                        gold: state.inventory.gold,
                        level: state.level,
                        xp: state.xp,
                    };
                    let body = match req {
                        Request::GetInventory => Ok(Response::Inventory(inv)),
                        _ => Err(RequestError::NotAllowed),
                    };
                    b.on_response(req_id, &body, t);
                }
            }
        }
        w.step();
        let mut died = false;
        let events: Vec<zonehost_game::Event> = w.events().to_vec();
        for ev in &events {
            use zonehost_game::Event as G;
            let wire = match ev {
                G::RequestDone {
                    entity,
                    request_id,
                    result,
                    ..
                } if *entity == me => {
                    let body = result.map(|()| Response::Done).map_err(wire_reject);
                    if body.is_err() {
                        played.refused += 1;
                    }
                    b.on_response(*request_id, &body, t);
                    None
                }
                G::Hit {
                    attacker,
                    target,
                    physical,
                    fire,
                    crit,
                    target_hp,
                } => Some(Event::Combat(Combat::Hit {
                    attacker: *attacker,
                    target: *target,
                    physical: *physical,
                    fire: *fire,
                    crit: *crit,
                    target_hp: *target_hp,
                })),
                G::Miss { attacker, target } => Some(Event::Combat(Combat::Miss {
                    attacker: *attacker,
                    target: *target,
                })),
                G::Killed {
                    killer,
                    victim,
                    kind,
                } => {
                    if b.is_me(*killer) {
                        played.kills += 1;
                    }
                    Some(Event::Combat(Combat::Killed {
                        killer: *killer,
                        victim: *victim,
                        monster_kind: *kind as u8,
                    }))
                }
                G::PlayerDied { entity, killer, .. } if *entity == me => {
                    died = true;
                    played.deaths += 1;
                    Some(Event::Died {
                        killer: *killer,
                        gold_lost: 0,
                        xp_lost: 0,
                    })
                }
                G::Inventory {
                    entity,
                    change: zonehost_game::InventoryChange::Consumed { item, healed },
                    ..
                } if *entity == me => {
                    played.potions += 1;
                    Some(Event::Inventory(InventoryEvent::Consumed {
                        item: item.0,
                        healed: *healed,
                    }))
                }
                G::LevelUp { entity, level, .. } if *entity == me => {
                    Some(Event::LevelUp { level: *level })
                }
                _ => None,
            };
            if let Some(e) = wire {
                b.on_event(&e, t);
            }
        }
        if died {
            let state = w.take_player(me).expect("present");
            me = w.add_player_with_state(state).expect("back");
            b.on_event(
                &Event::ZoneEntered {
                    zone: 2,
                    instance: 1,
                    entity_id: me,
                },
                t,
            );
            continue;
        }
        let ents: Vec<EntityState> = w
            .entities()
            .filter(|e| e.kind != EntityKind::GroundItem)
            .map(|e| EntityState {
                id: e.id,
                x_mm: e.pos_mm.0,
                y_mm: e.pos_mm.1,
                // As the server encodes it (cm/s).
                vx_cms: (e.vel_mms.0 / 10).clamp(-32_768, 32_767) as i16,
                vy_cms: (e.vel_mms.1 / 10).clamp(-32_768, 32_767) as i16,
                hp: e.hp,
                max_hp: e.max_hp,
                kind: if e.kind == EntityKind::Player {
                    kind::PLAYER
                } else {
                    kind::MONSTER
                },
                ..EntityState::default()
            })
            .collect();
        let ack = w.last_input(me).unwrap_or(0);
        view(&mut b, w.tick(), ack, &ents, t);
    }
    played
}

#[test]
fn a_fresh_fighter_kills_crypt_monsters_under_the_real_rules() {
    let mut total = Played::default();
    for seed in 1..=3 {
        let p = play_crypt(seed, 90);
        assert!(p.kills >= 3, "seed {seed}: {p:?}");
        assert!(p.potions >= 2, "drank its starter potions: {p:?}");
        assert!(
            p.refused * 10 <= p.attacks,
            "seed {seed}: few refusals: {p:?}"
        );
        total.kills += p.kills;
        total.deaths += p.deaths;
        total.attacks += p.attacks;
        total.potions += p.potions;
    }
    // A kill takes 11..=24 swings at 70..=89 % (game/tests/balance.rs); wasted swings
    // (targets switched, monsters leashing home and healing) stay a minority.
    assert!(
        total.attacks <= total.kills * 30,
        "attacks per kill: {total:?}"
    );
    // The crypt's zombies come in packs of up to seven that a new character cannot
    // survive (game/tests/balance.rs: 1 win in 50 against four): deaths happen, but
    // fewer than kills.
    assert!(total.kills > total.deaths, "{total:?}");
}

#[test]
fn dead_bots_stand_still_and_ask_nothing() {
    let t0 = Instant::now();
    let mut b = Brain::new(
        settings(Behaviour::Fighter),
        Arc::new(Atlas::builtin()),
        "bot-1-0".into(),
        t0,
    );
    b.on_welcome(&welcome(2, 5), t0);
    view(
        &mut b,
        1,
        0,
        &[player(5, (5000, 30000), 124), monster(9, (5500, 30000))],
        t0,
    );
    b.on_event(
        &Event::Died {
            killer: 9,
            gold_lost: 0,
            xp_lost: 0,
        },
        t0,
    );
    assert!(b.next_request(t0 + Duration::from_secs(5)).is_none());
    assert_eq!(b.next_input(1, t0), InputCmd::default());
    b.on_event(
        &Event::ZoneEntered {
            zone: 1,
            instance: 3,
            entity_id: 8,
        },
        t0,
    );
    assert!(!b.dead);
}
