//! Unit tests of [`World`](super::World): movement, combat, loot, requests, transfers,
//! determinism and the input window.

use super::*;
use crate::content::tests::MINI;
use crate::content::{Content, Portal, SpawnGroup};
use crate::geom::{dist_sq, Rect};
use crate::items::{EquipSlot, Rarity};
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

fn arena(kind: MonsterKind, level: u8, count: u16, at: (i32, i32)) -> ZoneTemplate {
    let mut t = ZoneTemplate::open(&zone());
    t.id = 2;
    t.spawn_mm = (50_000, 50_000);
    t.respawn_zone = 2;
    t.spawns.push(SpawnGroup {
        kind,
        level_min: level,
        level_max: level,
        count,
        area: Rect::new(at.0, at.1, at.0 + 1, at.1 + 1),
        respawn_secs: 5,
    });
    t
}

fn events_of<'a>(w: &'a World) -> impl Iterator<Item = &'a Event> + 'a {
    w.events().iter()
}

fn request_result(w: &World, id: u32) -> Option<Result<(), Reject>> {
    w.events().iter().find_map(|e| match e {
        Event::RequestDone {
            request_id, result, ..
        } if *request_id == id => Some(*result),
        _ => None,
    })
}

#[test]
fn inputs_apply_in_sequence_once() {
    let mut w = World::new(zone());
    let e = w.add_player(7);
    assert!(w.queue_input(e, right(2)));
    assert!(w.queue_input(e, right(1)));
    assert!(!w.queue_input(e, right(1)));
    w.step();
    assert_eq!(
        w.last_input(e),
        Some(2),
        "both apply in order from the initial bank"
    );
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

#[test]
fn walls_block_and_slide() {
    let mut t = ZoneTemplate::open(&zone());
    t.walls.push(Rect::new(50_500, 0, 51_000, 100_000));
    let mut w = World::from_template(&t, 1);
    let e = w.add_player(1);
    for seq in 1..=20 {
        w.queue_input(
            e,
            PlayerInput {
                seq,
                move_x: 1000,
                move_y: 1000,
                buttons: 0,
            },
        );
        w.step();
    }
    let pos = w.entities().next().map(|v| v.pos_mm).unwrap_or_default();
    assert_eq!(pos.0, 50_499);
    assert!(pos.1 > 51_000, "slid along the wall: {pos:?}");
}

#[test]
fn fight_kill_loot_and_xp() {
    // A level-1 character against one level-1 zombie standing next to it.
    let mut w = World::from_template(&arena(MonsterKind::Zombie, 1, 1, (51_000, 50_000)), 42);
    let e = w.add_player(9);
    let (mut kills, mut hits, mut misses, mut drops, mut monster_hits) = (0, 0, 0, 0, 0);
    let mut xp = 0;
    for seq in 1..=3000 {
        w.queue_input(
            e,
            PlayerInput {
                seq,
                move_x: 0,
                move_y: 0,
                buttons: BUTTON_ATTACK,
            },
        );
        w.step();
        for ev in events_of(&w) {
            match ev {
                Event::Killed { killer, .. } => {
                    assert_eq!(*killer, e);
                    kills += 1;
                }
                Event::Hit { attacker, .. } if *attacker == e => hits += 1,
                Event::Hit { target, .. } if *target == e => monster_hits += 1,
                Event::Miss { .. } => misses += 1,
                Event::ItemDropped { owner, .. } => {
                    assert_eq!(*owner, Some(9));
                    drops += 1;
                }
                Event::XpGained { amount, .. } => xp += amount,
                _ => {}
            }
        }
    }
    assert!(kills >= 3, "kills {kills}");
    assert!(hits > 0 && misses > 0 && monster_hits > 0);
    assert!(xp >= 3 * 10, "xp {xp}");
    assert!(drops > 0, "drops {drops}");
    assert_eq!(w.ground_items().count(), drops);
}

#[test]
fn pick_up_rules_and_inventory_requests() {
    let mut w = World::new(zone());
    let a = w.add_player(1);
    let b = w.add_player(2);
    let potion = w
        .export_player(a)
        .and_then(|s| s.inventory.bag.first().map(|i| i.id))
        .unwrap_or_default();
    // a drops a potion; b may pick it up (dropped items are public), but is too far first.
    assert!(w
        .queue_request(a, 1, Request::Drop { item: potion })
        .is_ok());
    w.step();
    assert_eq!(request_result(&w, 1), Some(Ok(())));
    let ground = w.ground_items().next().map(|g| g.id).unwrap_or_default();
    assert!(w
        .queue_request(a, 2, Request::UseItem { item: potion })
        .is_ok());
    w.step();
    assert_eq!(request_result(&w, 2), Some(Err(Reject::NoSuchItem)));
    for seq in 1..=40 {
        w.queue_input(b, right(seq));
        w.step();
    }
    assert!(w.queue_request(b, 3, Request::PickUp { ground }).is_ok());
    w.step();
    assert_eq!(request_result(&w, 3), Some(Err(Reject::TooFar)));
    // a picks it back up.
    assert!(w.queue_request(a, 4, Request::PickUp { ground }).is_ok());
    w.step();
    assert_eq!(request_result(&w, 4), Some(Ok(())));
    // potions at full health have no effect; equip rules.
    assert!(w
        .queue_request(a, 5, Request::UseItem { item: potion })
        .is_ok());
    assert!(w
        .queue_request(a, 6, Request::Equip { item: potion })
        .is_ok());
    assert!(w
        .queue_request(
            a,
            7,
            Request::Unequip {
                slot: EquipSlot::Helm
            }
        )
        .is_ok());
    assert!(w
        .queue_request(
            a,
            8,
            Request::Unequip {
                slot: EquipSlot::Weapon
            }
        )
        .is_ok());
    assert!(w.queue_request(a, 9, Request::EnterZone).is_ok());
    w.step();
    assert_eq!(request_result(&w, 5), Some(Err(Reject::NoEffect)));
    assert_eq!(request_result(&w, 6), Some(Err(Reject::WrongSlot)));
    assert_eq!(request_result(&w, 7), Some(Err(Reject::SlotEmpty)));
    assert_eq!(request_result(&w, 8), Some(Ok(())));
    assert_eq!(request_result(&w, 9), Some(Err(Reject::NotAtPortal)));
    for i in 0..MAX_QUEUED_REQUESTS as u32 {
        assert!(w.queue_request(a, 100 + i, Request::EnterZone).is_ok());
    }
    assert_eq!(
        w.queue_request(a, 200, Request::EnterZone),
        Err(QueueError::QueueFull)
    );
    assert_eq!(
        w.queue_request(999, 1, Request::EnterZone),
        Err(QueueError::UnknownEntity)
    );
}

#[test]
fn loot_belongs_to_its_killer_for_a_while() {
    let mut w = World::from_template(&arena(MonsterKind::Zombie, 1, 1, (51_000, 50_000)), 7);
    let a = w.add_player(1);
    let b = w.add_player(2);
    let mut seq = 0;
    while w.ground_items().next().is_none() && seq < 20_000 {
        seq += 1;
        w.queue_input(
            a,
            PlayerInput {
                seq,
                buttons: BUTTON_ATTACK,
                ..Default::default()
            },
        );
        w.step();
    }
    let g = w.ground_items().next().map(|g| (g.id, g.owner));
    let Some((ground, owner)) = g else {
        panic!("no loot in {seq} ticks");
    };
    assert_eq!(owner, Some(1));
    // b must walk up to it first: it lies within 600 mm of the zombie.
    assert!(w.queue_request(b, 1, Request::PickUp { ground }).is_ok());
    w.step();
    let r = request_result(&w, 1);
    assert!(
        r == Some(Err(Reject::NotYours)) || r == Some(Err(Reject::TooFar)),
        "{r:?}"
    );
    assert!(w.queue_request(a, 2, Request::PickUp { ground }).is_ok());
    w.step();
    assert_eq!(request_result(&w, 2), Some(Ok(())));
}

#[test]
fn portal_transfer_export_import() {
    let content = Content::builtin().expect("content");
    let town = content.zone(1).expect("town");
    let mut w = World::from_template(town, 1);
    let e = w.add_player(5);
    // Town spawn (20000, 20000); portal to zone 2 at x >= 38000, y 18000..22000.
    let mut transfer = None;
    for seq in 1..=400 {
        w.queue_input(e, right(seq));
        w.step();
        for ev in w.events() {
            if let Event::Transfer { to_zone, cause, .. } = ev {
                transfer = Some((*to_zone, *cause));
            }
        }
        if transfer.is_some() {
            break;
        }
    }
    assert_eq!(transfer, Some((2, TransferCause::Portal)));
    assert_eq!(w.entities().next().map(|v| v.flags), Some(FLAG_LEAVING));
    let state = w.take_player(e).expect("player");
    assert_eq!(w.player_count(), 0);
    let crypt = content.zone(2).expect("crypt");
    let mut w2 = World::from_template(crypt, 2);
    let e2 = w2.add_player_with_state(state.clone()).expect("import");
    assert_eq!(w2.export_player(e2), Some(state.clone()));
    assert_eq!(
        w2.add_player_with_state(state.clone()),
        Err(ImportError::AlreadyPresent(5))
    );
    let mut bad = state;
    bad.player_id = 6;
    bad.level = 0;
    assert_eq!(w2.add_player_with_state(bad), Err(ImportError::BadLevel(0)));
}

#[test]
fn death_penalty_and_transfer_to_town() {
    let mut t = arena(MonsterKind::AshenKing, 30, 1, (51_000, 50_000));
    t.respawn_zone = 1;
    let mut w = World::from_template(&t, 3);
    let mut state = PlayerState::new(4);
    state.inventory.gold = 1000;
    state.xp = 50;
    let e = w.add_player_with_state(state).expect("import");
    let mut died = None;
    for _ in 0..2000 {
        w.step();
        for ev in w.events() {
            match ev {
                Event::PlayerDied {
                    gold_lost, xp_lost, ..
                } => died = Some((*gold_lost, *xp_lost)),
                Event::Transfer { to_zone, cause, .. } => {
                    assert_eq!((*to_zone, *cause), (1, TransferCause::Death));
                }
                _ => {}
            }
        }
        if died.is_some() {
            break;
        }
    }
    assert_eq!(died, Some((100, 10)));
    let s = w.export_player(e).expect("state");
    assert_eq!((s.inventory.gold, s.xp, s.hp), (900, 40, 0));
    assert!(w.queue_request(e, 1, Request::EnterZone).is_ok());
    w.step();
    assert_eq!(request_result(&w, 1), Some(Err(Reject::Leaving)));
    // The boss loses interest and walks home.
    for _ in 0..RETURN_TIMEOUT_TICKS + 10 {
        w.step();
    }
    let m = w.entities().nth(1).expect("boss");
    assert_eq!(m.hp, m.max_hp);
}

#[test]
fn in_place_respawn() {
    let mut w = World::from_template(&arena(MonsterKind::AshenKing, 30, 1, (51_000, 50_000)), 3);
    let e = w.add_player(4);
    let mut respawned = false;
    for _ in 0..3000 {
        w.step();
        respawned |= w
            .events()
            .iter()
            .any(|ev| matches!(ev, Event::PlayerRespawned { entity, .. } if *entity == e));
    }
    assert!(respawned);
}

#[test]
fn leash_returns_monster_home() {
    let mut w = World::from_template(&arena(MonsterKind::Skeleton, 1, 1, (60_000, 50_000)), 3);
    let e = w.add_player(1);
    // Run away to the west; the skeleton follows, then gives up beyond its leash.
    for seq in 1..=600 {
        w.queue_input(
            e,
            PlayerInput {
                seq,
                move_x: -1000,
                ..Default::default()
            },
        );
        w.step();
    }
    for _ in 0..RETURN_TIMEOUT_TICKS + 60 {
        w.step();
    }
    let m = w.entities().nth(1).expect("monster");
    assert_eq!(m.pos_mm, (60_000, 50_000));
}

#[test]
fn party_members_share_xp() {
    let mut w = World::from_template(&arena(MonsterKind::Zombie, 1, 1, (51_000, 50_000)), 11);
    let a = w.add_player(1);
    let _b = w.add_player(2);
    let _c = w.add_player(3);
    assert!(w.set_party(1, Some(7)) && w.set_party(2, Some(7)));
    assert!(!w.set_party(99, Some(7)));
    let mut got = [0u64; 4];
    for seq in 1..=2000 {
        w.queue_input(
            a,
            PlayerInput {
                seq,
                buttons: BUTTON_ATTACK,
                ..Default::default()
            },
        );
        w.step();
        for ev in w.events() {
            if let Event::XpGained {
                player_id, amount, ..
            } = ev
            {
                got[*player_id as usize] += amount;
            }
        }
    }
    assert!(got[1] > 0 && got[1] == got[2], "{got:?}");
    assert_eq!(got[3], 0);
}

fn lcg(s: &mut u64) -> u32 {
    *s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (*s >> 33) as u32
}

/// Drives the builtin crypt with 4 scripted players for `ticks`; returns the hash.
fn scripted_run(seed: u64, ticks: u32) -> u64 {
    let content = Content::builtin().expect("content");
    let mut w = World::from_template(content.zone(2).expect("crypt"), seed);
    let players: Vec<EntityId> = (0..4).map(|i| w.add_player(100 + i)).collect();
    let mut s = 12345u64;
    for t in 1..=ticks {
        for &p in &players {
            let r = lcg(&mut s);
            w.queue_input(
                p,
                PlayerInput {
                    seq: t,
                    move_x: (r % 2001) as i16 - 1000,
                    move_y: ((r >> 11) % 2001) as i16 - 1000,
                    buttons: (r >> 30) as u16 & 1,
                },
            );
            if r % 50 == 0 {
                let g = w.ground_items().next().map(|g| g.id).unwrap_or(0);
                let _ = w.queue_request(p, t, Request::PickUp { ground: g });
            }
            if r % 97 == 0 {
                let item = w
                    .export_player(p)
                    .and_then(|s| s.inventory.bag.last().map(|i| i.id))
                    .unwrap_or_default();
                let _ = w.queue_request(p, t, Request::Equip { item });
                let _ = w.queue_request(p, t, Request::UseItem { item });
            }
        }
        w.step();
        let transfers: Vec<EntityId> = w
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Transfer { entity, .. } => Some(*entity),
                _ => None,
            })
            .collect();
        // Bounce transferring players back in, as a server moving them would.
        for e in transfers {
            if let Some(state) = w.take_player(e) {
                let _ = w.add_player_with_state(state);
            }
        }
    }
    w.state_hash()
}

#[test]
fn determinism_same_seed_same_hash() {
    let a = scripted_run(77, 5000);
    let b = scripted_run(77, 5000);
    assert_eq!(a, b);
    assert_ne!(a, scripted_run(78, 5000));
}

#[test]
fn entity_views_are_ordered_and_flagged() {
    let content = Content::builtin().expect("content");
    let mut w = World::from_template(content.zone(4).expect("keep"), 1);
    w.add_player(1);
    w.step();
    let kinds: Vec<EntityKind> = w.entities().map(|v| v.kind).collect();
    assert_eq!(kinds[0], EntityKind::Player);
    assert!(kinds[1..].iter().all(|k| *k == EntityKind::Monster));
    assert!(w
        .entities()
        .any(|v| v.flags == MonsterKind::AshenKing as u8));
    let _ = Rarity::Common;
    let _ = Portal {
        area: Rect::new(0, 0, 1, 1),
        target: 1,
    };
}

#[derive(Debug, Clone)]
enum Op {
    Step(u8),
    Move(i16, i16, bool),
    PickUp(u8),
    Drop(u8),
    Equip(u8),
    Unequip(u8),
    Use(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..30).prop_map(Op::Step),
        (any::<i16>(), any::<i16>(), any::<bool>()).prop_map(|(x, y, a)| Op::Move(x, y, a)),
        any::<u8>().prop_map(Op::PickUp),
        any::<u8>().prop_map(Op::Drop),
        any::<u8>().prop_map(Op::Equip),
        any::<u8>().prop_map(Op::Unequip),
        any::<u8>().prop_map(Op::Use),
    ]
}

fn all_item_ids(w: &World) -> Vec<ItemId> {
    let mut ids: Vec<ItemId> = w
        .players
        .iter()
        .flat_map(|p| p.inv.item_ids().collect::<Vec<_>>())
        .chain(w.ground.iter().map(|g| g.item.id))
        .collect();
    ids.sort_unstable();
    ids
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Items are neither duplicated nor lost: after every step the ids held in bags,
    /// equipment and on the ground are exactly the previous ones plus new loot minus
    /// consumed and expired ones. HP stays within 0..=max throughout.
    #[test]
    fn items_conserved_and_hp_bounded(ops in prop::collection::vec(op(), 1..120), seed in any::<u64>()) {
        let mut w = World::from_template(&arena(MonsterKind::Zombie, 1, 3, (50_800, 50_000)), seed);
        let players = [w.add_player(1), w.add_player(2)];
        let mut expected = all_item_ids(&w);
        let mut seq = [0u32; 2];
        for (n, op) in ops.iter().enumerate() {
            let who = n % 2;
            let e = players[who];
            let st = w.export_player(e).expect("player");
            let bag_item = |k: u8| st.inventory.bag.get(usize::from(k) % st.inventory.bag.len().max(1)).map(|i| i.id).unwrap_or(ItemId(u128::from(k)));
            let steps = match op {
                Op::Step(k) => *k,
                Op::Move(x, y, a) => {
                    seq[who] += 1;
                    w.queue_input(e, PlayerInput { seq: seq[who], move_x: *x, move_y: *y, buttons: u16::from(*a) });
                    1
                }
                Op::PickUp(k) => {
                    let g = w.ground_items().nth(usize::from(*k) % 4).map(|g| g.id).unwrap_or(u32::from(*k));
                    let _ = w.queue_request(e, 0, Request::PickUp { ground: g });
                    1
                }
                Op::Drop(k) => { let _ = w.queue_request(e, 0, Request::Drop { item: bag_item(*k) }); 1 }
                Op::Equip(k) => { let _ = w.queue_request(e, 0, Request::Equip { item: bag_item(*k) }); 1 }
                Op::Unequip(k) => {
                    let slot = EquipSlot::ALL[usize::from(*k) % EquipSlot::ALL.len()];
                    let _ = w.queue_request(e, 0, Request::Unequip { slot });
                    1
                }
                Op::Use(k) => { let _ = w.queue_request(e, 0, Request::UseItem { item: bag_item(*k) }); 1 }
            };
            for _ in 0..steps {
                w.step();
                for ev in w.events() {
                    match ev {
                        Event::ItemDropped { item, owner: Some(_), .. } => expected.push(item.id),
                        Event::Inventory { change: InventoryChange::Consumed { item, .. }, .. }
                        | Event::ItemExpired { item, .. } => {
                            let i = expected.iter().position(|x| x == item);
                            prop_assert!(i.is_some(), "consumed unknown item");
                            if let Some(i) = i { expected.remove(i); }
                        }
                        _ => {}
                    }
                }
                expected.sort_unstable();
                let now = all_item_ids(&w);
                let mut dedup = now.clone();
                dedup.dedup();
                prop_assert_eq!(dedup.len(), now.len(), "duplicated item");
                prop_assert_eq!(&now, &expected);
                for p in &w.players {
                    prop_assert!(p.hp <= p.stats.max_hp);
                    prop_assert!(p.inv.is_valid());
                }
                for m in w.monsters.iter().filter(|m| m.alive) {
                    prop_assert!(m.hp <= m.stats.max_hp && m.hp > 0);
                }
            }
        }
    }

    /// Whatever a client sends, displacement over n ticks never exceeds
    /// (n + MAX_BANKED_INPUTS) ticks at full speed, nor in one tick more than
    /// MAX_INPUTS_PER_TICK full-speed steps, walls or not.
    #[test]
    fn never_faster_than_limit(batches in prop::collection::vec((0usize..10, any::<i16>(), any::<i16>()), 1..100), walls in any::<bool>()) {
        let mut t = ZoneTemplate::open(&zone());
        if walls {
            t.walls.push(Rect::new(50_300, 40_000, 50_600, 60_000));
            t.walls.push(Rect::new(45_000, 49_000, 49_000, 49_500));
        }
        let mut w = World::from_template(&t, 1);
        let e = w.add_player(1);
        let mut seq = 0;
        let step = i64::from(step_mm(MAX_SPEED_MMS as i32));
        for (n, x, y) in &batches {
            for _ in 0..*n {
                seq += 1;
                w.queue_input(e, PlayerInput { seq, move_x: *x, move_y: *y, buttons: 0 });
            }
            let before = w.entities().next().map(|v| v.pos_mm).unwrap_or_default();
            w.step();
            let after = w.entities().next().map(|v| v.pos_mm).unwrap_or_default();
            // Per tick: at most MAX_INPUTS_PER_TICK inputs, each at most one full-speed step.
            let max = step * MAX_INPUTS_PER_TICK as i64 + 2;
            prop_assert!(dist_sq(before, after) <= max * max);
            prop_assert!(!in_wall(after, &t.walls));
        }
        let x = w.entities().next().map(|v| v.pos_mm.0).unwrap_or(0);
        let max = (batches.len() as i32 + MAX_BANKED_INPUTS as i32) * step_mm(MAX_SPEED_MMS as i32);
        prop_assert!((x - 50_000).abs() <= max, "moved {} > {}", x - 50_000, max);
    }
}

#[test]
fn a_fast_client_never_builds_a_standing_input_queue() {
    let mut w = World::new(ZoneSpec {
        id: 1,
        width_mm: 1_000_000,
        height_mm: 1_000_000,
        spawn_mm: (500_000, 500_000),
    });
    let e = w.add_player(1);
    let mut seq = 0;
    // A client clock 10% fast: 11 inputs per 10 ticks.
    for tick in 0..600u32 {
        let n = if tick % 10 == 0 { 2 } else { 1 };
        for _ in 0..n {
            seq += 1;
            w.queue_input(
                e,
                PlayerInput {
                    seq,
                    move_x: 1000,
                    move_y: 0,
                    buttons: 0,
                },
            );
        }
        w.step();
        let behind = seq - w.last_input(e).unwrap_or(0);
        assert!(
            behind as usize <= QUEUE_SLACK,
            "tick {tick}: {behind} inputs wait"
        );
    }
}

fn walker() -> (World, EntityId) {
    let mut w = World::new(ZoneSpec {
        id: 1,
        width_mm: 1_000_000,
        height_mm: 1_000_000,
        spawn_mm: (500_000, 500_000),
    });
    let e = w.add_player(1);
    (w, e)
}

fn east(seq: u32) -> PlayerInput {
    PlayerInput {
        seq,
        move_x: 1000,
        move_y: 0,
        buttons: 0,
    }
}

/// Issue 16 (3): a sequence more than `MAX_INPUT_SEQ_AHEAD` past the last applied one
/// is ignored; before, `u32::MAX` made every later input count as already applied.
#[test]
fn an_input_sequence_out_of_the_window_is_ignored() {
    let (mut w, e) = walker();
    assert!(
        !w.queue_input(e, east(u32::MAX)),
        "u32::MAX is out of the window"
    );
    assert!(!w.queue_input(e, east(MAX_INPUT_SEQ_AHEAD + 1)));
    assert!(w.queue_input(e, east(1)));
    w.step();
    assert_eq!(w.last_input(e), Some(1));
    assert!(
        w.queue_input(e, east(1 + MAX_INPUT_SEQ_AHEAD)),
        "the window's edge"
    );
    w.step();
    assert_eq!(w.last_input(e), Some(1 + MAX_INPUT_SEQ_AHEAD));
    assert!(w.queue_input(e, east(2 + MAX_INPUT_SEQ_AHEAD)));
    assert_eq!(
        w.entities().next().map(|v| v.pos_mm),
        Some((500_200, 500_000))
    );
}

/// Issue 16 (6): a full bank is spent over several ticks, never more than
/// `MAX_INPUTS_PER_TICK` inputs (2 full-speed steps, 200 mm) in one tick.
#[test]
fn a_full_bank_moves_at_most_two_steps_in_one_tick() {
    let (mut w, e) = walker();
    for _ in 0..10 {
        w.step();
    }
    for seq in 1..=4 {
        assert!(w.queue_input(e, east(seq)));
    }
    let x = |w: &World| w.entities().next().map(|v| v.pos_mm.0).unwrap_or(0);
    let mut moved = Vec::new();
    for _ in 0..3 {
        let before = x(&w);
        w.step();
        moved.push(x(&w) - before);
    }
    assert_eq!(moved, [200, 200, 0], "the bank is spent two steps a tick");
    assert_eq!(w.last_input(e), Some(4));
}

/// The table of SPEC §4.2: `k` new inputs arriving every `k` ticks move at full speed
/// up to `k = 4` (15 datagrams a second), at half speed with `k = 8` (7.5 a second).
#[test]
fn inputs_arriving_k_at_a_time_every_k_ticks_move_as_the_spec_table_says() {
    for (k, applied_per_second) in [(1, 60), (2, 60), (3, 60), (4, 60), (8, 30)] {
        let (mut w, e) = walker();
        let mut seq = 0;
        let x = |w: &World| w.entities().next().map(|v| v.pos_mm.0).unwrap_or(0);
        // Settle for two seconds, then measure two more (a whole number of periods).
        let mut start = 0;
        for tick in 0..240u32 {
            if tick == 120 {
                start = x(&w);
            }
            if tick % k == 0 {
                for _ in 0..k {
                    seq += 1;
                    w.queue_input(e, east(seq));
                }
            }
            w.step();
        }
        assert_eq!(
            (x(&w) - start) / 100 / 2,
            applied_per_second,
            "{k} inputs every {k} ticks"
        );
    }
}

#[test]
fn an_arriving_player_skips_inputs_already_applied_elsewhere() {
    let mut w = World::new(ZoneSpec {
        id: 1,
        width_mm: 100_000,
        height_mm: 100_000,
        spawn_mm: (50_000, 50_000),
    });
    let e = w.add_player(1);
    assert!(w.set_last_input(e, 100));
    for seq in 93..=101 {
        w.queue_input(
            e,
            PlayerInput {
                seq,
                move_x: 1000,
                move_y: 0,
                buttons: 0,
            },
        );
    }
    w.step();
    assert_eq!(w.last_input(e), Some(101));
    assert_eq!(
        w.entities().next().map(|v| v.pos_mm),
        Some((50_100, 50_000)),
        "only input 101 moves"
    );
}

// Content templates build working worlds (here rather than in content.rs, which sits
// beneath the world).

#[test]
fn builtin_monsters_spawn_outside_walls() {
    let c = Content::builtin().expect("builtin content");
    for z in c.zones() {
        let w = World::from_template(z, 1);
        let expected: u32 = z.spawns.iter().map(|g| u32::from(g.count)).sum();
        assert_eq!(w.monster_count() as u32, expected);
        for e in w.entities() {
            assert!(!in_wall(e.pos_mm, &z.walls), "zone {} {:?}", z.id, e);
        }
    }
}

/// Every instance keeps its monster and player lists for its lifetime: they hold exactly
/// the template's monsters and, in solo play, room for one player (not a doubled Vec).
#[test]
fn instance_lists_hold_no_spare_room() {
    let c = Content::builtin().expect("builtin content");
    for z in c.zones() {
        let mut w = World::from_template(z, 1);
        assert_eq!(w.monsters.capacity(), w.monsters.len(), "zone {}", z.id);
        w.add_player(7);
        assert_eq!(w.players.capacity(), 1, "zone {}", z.id);
        w.add_player(8);
        assert!(w.players.capacity() >= 2);
    }
}

proptest::proptest! {
    #[test]
    fn mutated_zone_never_panics(cut in 0usize..400, junk in "[\\[\\]=0-9a-z\"\n ,-]{0,12}") {
        let at = MINI.char_indices().map(|(i, _)| i).nth(cut % MINI.len()).unwrap_or(0);
        let text = format!("{}{}{}", &MINI[..at], junk, &MINI[at..]);
        if let Ok(z) = ZoneTemplate::from_toml(&text) {
            let mut w = World::from_template(&z, 3);
            w.add_player(1);
            for _ in 0..30 {
                w.step();
            }
        }
    }
}
