use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::*;

fn entity(id: u32) -> EntityState {
    EntityState {
        id,
        x_mm: -5,
        y_mm: 70_000,
        vx_cms: -600,
        vy_cms: 3,
        hp: 90,
        max_hp: 100,
        kind: kind::MONSTER,
        flags: 0,
    }
}

fn meta(tick: u32, baseline: u32) -> SnapshotMeta {
    SnapshotMeta {
        tick,
        baseline,
        instance: 1,
        zone: 2,
    }
}

fn full(cur: &[EntityState]) -> Changes {
    let mut c = Changes::default();
    diff(&[], cur, &mut c);
    c
}

#[test]
fn layout_constants_match_rkyv() {
    assert_eq!(
        std::mem::align_of::<ArchivedSnapshotBody>(),
        1,
        "archives must be readable at any offset"
    );
    let empty = rkyv::to_bytes::<rancor::Error>(&SnapshotBody::default()).expect("encode");
    assert_eq!(empty.len(), BODY_FIXED_LEN);
    // SPEC.md §9.5: an empty body's pointers each point at their own position.
    let mut expected = vec![0u8, 0];
    for at in [2i32, 10, 18, 26, 34] {
        expected.extend_from_slice(&(-at).to_le_bytes());
        expected.extend_from_slice(&0u32.to_le_bytes());
    }
    assert_eq!(&empty[..], &expected[..]);
    let one = SnapshotBody {
        zone: 1,
        acks: vec![PlayerAck::default()],
        spawns: vec![entity(1)],
        moves: vec![EntityMove::default()],
        hps: vec![EntityHp::default()],
        despawns: vec![7],
    };
    let one = rkyv::to_bytes::<rancor::Error>(&one).expect("encode");
    assert_eq!(
        one.len(),
        BODY_FIXED_LEN + ACK_LEN + ENTITY_LEN + MOVE_LEN + HP_LEN + DESPAWN_LEN
    );
}

#[test]
fn canonical_layout_is_the_spec_example() {
    // SPEC.md §9.5: one ack, one spawn, one move, one hit-point change, one despawn.
    let body = SnapshotBody {
        zone: 3,
        acks: vec![PlayerAck {
            entity: 5,
            last_input: 3,
        }],
        spawns: vec![EntityState {
            id: 9,
            x_mm: 1000,
            y_mm: -2,
            vx_cms: 0,
            vy_cms: 0,
            hp: 50,
            max_hp: 50,
            kind: kind::MONSTER,
            flags: 1,
        }],
        moves: vec![EntityMove {
            id: 5,
            dx_mm: 100,
            dy_mm: -100,
            vx_cms: 600,
            vy_cms: -600,
        }],
        hps: vec![EntityHp { id: 5, hp: 80 }],
        despawns: vec![4],
    };
    let bytes = rkyv::to_bytes::<rancor::Error>(&body).expect("encode");
    let expected: Vec<u8> = [
        // acks at 0
        &[5, 0, 0, 0, 3, 0, 0, 0][..],
        // spawns at 8
        &[
            9, 0, 0, 0, 0xe8, 3, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0, 0, 0, 0, 50, 0, 50, 0, 2, 1,
        ],
        // moves at 30
        &[5, 0, 0, 0, 100, 0, 0x9c, 0xff, 0x58, 2, 0xa8, 0xfd],
        // hps at 42
        &[5, 0, 0, 0, 80, 0],
        // despawns at 48
        &[4, 0, 0, 0],
        // root at 52: zone, then (offset, len) pairs relative to each offset field
        &[3, 0],
        &(-54i32).to_le_bytes(), // acks: 0 - 54
        &1u32.to_le_bytes(),
        &(-54i32).to_le_bytes(), // spawns: 8 - 62
        &1u32.to_le_bytes(),
        &(-40i32).to_le_bytes(), // moves: 30 - 70
        &1u32.to_le_bytes(),
        &(-36i32).to_le_bytes(), // hps: 42 - 78
        &1u32.to_le_bytes(),
        &(-38i32).to_le_bytes(), // despawns: 48 - 86
        &1u32.to_le_bytes(),
    ]
    .concat();
    assert_eq!(&bytes[..], &expected[..]);
}

#[test]
fn four_players_sixty_monsters_full_state_fits_in_parts() {
    let acks: Vec<PlayerAck> = (0..4)
        .map(|i| PlayerAck {
            entity: i,
            last_input: 9,
        })
        .collect();
    let ents: Vec<EntityState> = (0..64).map(entity).collect();
    let mut out = Vec::new();
    encode_snapshot(meta(3, 0), &acks, &full(&ents), &mut out).expect("encode");
    assert_eq!(out.len(), 2);
    let mut view = SnapshotView::new();
    for d in &out {
        assert!(d.len() <= MAX_DATAGRAM_LEN, "{} bytes", d.len());
        let (h, b) = decode_snapshot(d).expect("decode");
        assert_eq!(usize::from(h.parts), out.len());
        assert_eq!(b.ack_for(2), Some(9));
        view.apply(h, b).expect("apply");
    }
    assert_eq!(view.tick(), 3);
    assert_eq!(view.entities(), &ents[..]);
}

#[test]
fn an_unchanged_world_costs_one_small_datagram() {
    let ents: Vec<EntityState> = (0..60).map(entity).collect();
    let mut changes = Changes::default();
    diff(&ents, &ents, &mut changes);
    assert!(changes.is_empty());
    let acks = [PlayerAck {
        entity: 1,
        last_input: 4,
    }];
    let mut out = Vec::new();
    encode_snapshot(meta(9, 6), &acks, &changes, &mut out).expect("encode");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), SNAPSHOT_HEADER_LEN + BODY_FIXED_LEN + ACK_LEN);
}

#[test]
fn diff_picks_the_smallest_change() {
    let base = vec![entity(1), entity(2), entity(3), entity(4)];
    let mut cur = base.clone();
    cur[0].x_mm += 100; // move
    cur[1].hp = 1; // hit points
    cur[2].flags = 1; // full state
    cur.remove(3); // despawn
    cur.push(entity(8)); // spawn
    cur[0].x_mm += 0;
    let mut c = Changes::default();
    diff(&base, &cur, &mut c);
    assert_eq!(
        c.as_slice(),
        &[
            Change::Despawn(4),
            Change::Move(EntityMove {
                id: 1,
                dx_mm: 100,
                dy_mm: 0,
                vx_cms: -600,
                vy_cms: 3
            }),
            Change::Hp(EntityHp { id: 2, hp: 1 }),
            Change::Spawn(cur[2]),
            Change::Spawn(entity(8)),
        ]
    );
    // A jump beyond ±32 767 mm cannot be a move.
    let mut far = base.clone();
    far[0].x_mm += 40_000;
    diff(&base, &far, &mut c);
    assert_eq!(c.as_slice(), &[Change::Spawn(far[0])]);
}

#[test]
fn corrupt_body_is_rejected() {
    let mut out = Vec::new();
    encode_snapshot(meta(1, 0), &[], &full(&[entity(1)]), &mut out).expect("encode");
    let mut bytes = out[0].to_vec();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert!(matches!(
        decode_snapshot(&bytes),
        Err(DecodeError::Snapshot(_))
    ));
}

#[test]
fn a_baseline_not_older_than_the_tick_is_rejected() {
    let mut out = Vec::new();
    encode_snapshot(meta(5, 5), &[], &Changes::default(), &mut out).expect("encode");
    assert!(matches!(
        decode_snapshot(&out[0]),
        Err(DecodeError::Field {
            field: "baseline",
            ..
        })
    ));
}

#[test]
fn a_view_refuses_contradictions_and_unknown_baselines() {
    let mut view = SnapshotView::new();
    let mut out = Vec::new();
    let apply = |view: &mut SnapshotView, d: &Bytes| {
        let (h, b) = decode_snapshot(d).expect("decode");
        view.apply(h, b)
    };
    // A delta before any full state: nothing to apply it to.
    let mut c = Changes::default();
    diff(&[entity(1)], &[entity(1), entity(2)], &mut c);
    encode_snapshot(meta(4, 2), &[], &c, &mut out).expect("encode");
    assert_eq!(apply(&mut view, &out[0]), Ok(Applied::MissingBaseline));
    // A full state, then a delta that moves an entity the baseline lacks.
    encode_snapshot(meta(5, 0), &[], &full(&[entity(1)]), &mut out).expect("encode");
    assert_eq!(apply(&mut view, &out[0]), Ok(Applied::Complete));
    let mut moved = entity(3);
    moved.x_mm += 1;
    diff(&[entity(3)], &[moved], &mut c);
    encode_snapshot(meta(6, 5), &[], &c, &mut out).expect("encode");
    assert_eq!(apply(&mut view, &out[0]), Err(ViewError::UnknownEntity(3)));
    assert_eq!(view.tick(), 5);
    // A repeat of an applied tick is stale.
    encode_snapshot(meta(5, 0), &[], &full(&[entity(1)]), &mut out).expect("encode");
    assert_eq!(apply(&mut view, &out[0]), Ok(Applied::Stale));
}

/// One step of the model world.
#[derive(Debug, Clone)]
enum Op {
    Spawn { kind: u8 },
    Despawn(usize),
    Walk(usize, i16, i16),
    Teleport(usize),
    Hurt(usize, u16),
    Flag(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u8..=3).prop_map(|kind| Op::Spawn { kind }),
        1 => any::<usize>().prop_map(Op::Despawn),
        6 => (any::<usize>(), -700i16..=700, -700i16..=700).prop_map(|(i, x, y)| Op::Walk(i, x, y)),
        1 => any::<usize>().prop_map(Op::Teleport),
        3 => (any::<usize>(), any::<u16>()).prop_map(|(i, h)| Op::Hurt(i, h)),
        1 => any::<usize>().prop_map(Op::Flag),
    ]
}

/// The model world: entities by id.
fn step(world: &mut BTreeMap<u32, EntityState>, next_id: &mut u32, op: &Op) {
    let pick = |world: &BTreeMap<u32, EntityState>, i: usize| {
        (!world.is_empty()).then(|| *world.keys().nth(i % world.len()).expect("in range"))
    };
    match *op {
        Op::Spawn { kind } => {
            *next_id += 1;
            let id = *next_id;
            world.insert(
                id,
                EntityState {
                    id,
                    x_mm: (id as i32 * 977) % 50_000,
                    y_mm: (id as i32 * 331) % 50_000,
                    hp: 100,
                    max_hp: 100,
                    kind,
                    ..EntityState::default()
                },
            );
        }
        Op::Despawn(i) => {
            if let Some(id) = pick(world, i) {
                world.remove(&id);
            }
        }
        Op::Walk(i, dx, dy) => {
            if let Some(e) = pick(world, i).and_then(|id| world.get_mut(&id)) {
                e.x_mm += i32::from(dx);
                e.y_mm += i32::from(dy);
                e.vx_cms = dx.saturating_mul(6) / 10;
                e.vy_cms = dy.saturating_mul(6) / 10;
            }
        }
        Op::Teleport(i) => {
            if let Some(e) = pick(world, i).and_then(|id| world.get_mut(&id)) {
                e.x_mm = e.x_mm.wrapping_add(60_000);
            }
        }
        Op::Hurt(i, hp) => {
            if let Some(e) = pick(world, i).and_then(|id| world.get_mut(&id)) {
                e.hp = hp % (e.max_hp + 1);
            }
        }
        Op::Flag(i) => {
            if let Some(e) = pick(world, i).and_then(|id| world.get_mut(&id)) {
                e.flags ^= 1;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn full_state_round_trip(tick in 1u32.., n in 0usize..300, players in 1usize..=4) {
        let acks: Vec<PlayerAck> = (0..players as u32).map(|i| PlayerAck { entity: i, last_input: tick ^ i }).collect();
        let ents: Vec<EntityState> = (0..n as u32).map(|i| EntityState { x_mm: i as i32 * 7, ..entity(i) }).collect();
        let mut out = Vec::new();
        encode_snapshot(meta(tick, 0), &acks, &full(&ents), &mut out).expect("encode");
        let mut view = SnapshotView::new();
        for d in &out {
            prop_assert!(d.len() <= MAX_DATAGRAM_LEN);
            let (h, b) = decode_snapshot(d).expect("decode");
            prop_assert_eq!(h.tick.get(), tick);
            let part: SnapshotBody = rkyv::deserialize::<SnapshotBody, rancor::Error>(b).expect("deser");
            prop_assert_eq!(&part.acks, &acks);
            view.apply(h, b).expect("apply");
        }
        prop_assert_eq!(view.tick(), tick);
        prop_assert_eq!(view.entities(), &ents[..]);
    }

    /// A reused encoder writes exactly what a fresh `encode_snapshot` writes, whatever
    /// it encoded before (nothing of an earlier snapshot leaks into a later one).
    #[test]
    fn a_reused_encoder_matches_a_fresh_one(
        sizes in prop::collection::vec((0usize..120, 1usize..=5), 1..6),
    ) {
        let mut encoder = SnapshotEncoder::default();
        let mut appended = Vec::new();
        let mut fresh_all = Vec::new();
        for (k, &(n, players)) in sizes.iter().enumerate() {
            let tick = k as u32 + 1;
            let acks: Vec<PlayerAck> = (0..players as u32).map(|i| PlayerAck { entity: i, last_input: tick }).collect();
            let ents: Vec<EntityState> = (0..n as u32).map(|i| EntityState { x_mm: (i * tick) as i32, ..entity(i) }).collect();
            let mut fresh = Vec::new();
            encode_snapshot(meta(tick, 0), &acks, &full(&ents), &mut fresh).expect("encode");
            encoder.encode(meta(tick, 0), &acks, &full(&ents), &mut appended).expect("encode");
            fresh_all.extend(fresh);
        }
        prop_assert_eq!(appended, fresh_all);
    }

    /// The model: for any sequence of world states, any interest per tick and any
    /// pattern of lost snapshot datagrams and lost acks, every tick the client completes
    /// is exactly what the server meant it to see at that tick, and a tick whose
    /// datagrams all arrive completes.
    #[test]
    fn the_client_rebuilds_what_the_server_sent(
        start in 0usize..80,
        ticks in prop::collection::vec((prop::collection::vec(op(), 0..12), 0u32..5, any::<u64>(), any::<u16>()), 1..60),
    ) {
        let mut world = BTreeMap::new();
        let mut next_id = 0;
        for _ in 0..start {
            step(&mut world, &mut next_id, &Op::Spawn { kind: kind::MONSTER });
        }
        // Server side: what each sent tick showed this client, newest last.
        let mut sent: VecDeque<(u32, Vec<EntityState>)> = VecDeque::new();
        let mut server_ack = 0u32;
        let mut view = SnapshotView::new();
        let mut changes = Changes::default();
        let mut out = Vec::new();
        let last = ticks.len();
        for (n, (ops, interest_mod, loss, ack_loss)) in ticks.iter().enumerate() {
            let tick = n as u32 + 1;
            for o in ops {
                step(&mut world, &mut next_id, o);
            }
            // Interest: every entity unless its id falls in this tick's excluded class,
            // listed in a shuffled (importance) order.
            let mut cur: Vec<EntityState> = world
                .values()
                .filter(|e| *interest_mod == 0 || e.id % 5 != *interest_mod)
                .copied()
                .collect();
            cur.sort_by_key(|e| (e.id.wrapping_mul(2_654_435_761) ^ tick, e.id));
            let mut shown = cur.clone();
            shown.sort_by_key(|e| e.id);
            let base = sent.iter().rev().find(|(t, _)| *t == server_ack && server_ack != 0);
            let (baseline, base_state) = match base {
                Some((t, s)) => (*t, s.as_slice()),
                None => (0, &[][..]),
            };
            diff(base_state, &cur, &mut changes);
            let acks = [PlayerAck { entity: 1, last_input: tick }];
            if encode_snapshot(meta(tick, baseline), &acks, &changes, &mut out).is_err() {
                // Too many changes for 16 parts: the server sends nothing this tick.
                continue;
            }
            if sent.len() == BASELINE_HISTORY {
                sent.pop_front();
            }
            sent.push_back((tick, shown.clone()));
            let lossless = n + 1 == last;
            let mut completed = false;
            // Parts arrive in reverse order when the loss bits say so.
            let order: Vec<usize> = if loss & 1 == 1 { (0..out.len()).rev().collect() } else { (0..out.len()).collect() };
            for (k, &i) in order.iter().enumerate() {
                if !lossless && (loss >> (1 + k % 60)) & 1 == 1 && loss % 3 == 0 {
                    continue;
                }
                let (h, b) = decode_snapshot(&out[i]).expect("decode");
                match view.apply(h, b) {
                    Ok(Applied::Complete) => {
                        completed = true;
                        prop_assert_eq!(view.tick(), tick);
                        prop_assert_eq!(view.entities(), &shown[..], "tick {}", tick);
                    }
                    Ok(_) => {}
                    Err(e) => prop_assert!(false, "tick {tick}: {e}"),
                }
            }
            if lossless {
                prop_assert!(completed, "the last tick arrived whole but did not complete");
            }
            // The client's input reports its newest complete tick, unless it is lost.
            if ack_loss % 4 != 0 {
                server_ack = view.tick();
            }
        }
    }

    #[test]
    fn decode_snapshot_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok((h, b)) = decode_snapshot(&bytes) {
            let _ = SnapshotView::new().apply(h, b);
        }
    }
}

#[test]
fn spec_sizes_of_a_party_scene() {
    // SPEC.md §4.3.4: a party of 4 with 60 monsters in reach.
    let acks: Vec<PlayerAck> = (1..=4)
        .map(|i| PlayerAck {
            entity: i,
            last_input: 0,
        })
        .collect();
    let scene: Vec<EntityState> = (1..=64).map(entity).collect();
    let mut out = Vec::new();
    encode_snapshot(meta(2, 0), &acks, &full(&scene), &mut out).expect("encode");
    assert_eq!(
        out.iter().map(Bytes::len).collect::<Vec<_>>(),
        vec![1084, 512]
    );
    assert_eq!(entities_per_part(1), 46);
    assert_eq!(entities_per_part(4), 45);
    let mut now = scene.clone();
    for e in &mut now[4..24] {
        e.x_mm += 250;
    }
    for e in &mut now[30..35] {
        e.hp -= 7;
    }
    let mut c = Changes::default();
    diff(&scene, &now, &mut c);
    encode_snapshot(meta(5, 2), &acks, &c, &mut out).expect("encode");
    assert_eq!(out.iter().map(Bytes::len).collect::<Vec<_>>(), vec![364]);
}

#[test]
fn spec_example_datagram() {
    // SPEC.md §9.5.
    let base = [EntityState {
        id: 0x1122_3344,
        x_mm: -5,
        y_mm: 70_000,
        vx_cms: 0,
        vy_cms: 0,
        hp: 90,
        max_hp: 100,
        kind: kind::MONSTER,
        flags: 2,
    }];
    let mut now = base;
    now[0].x_mm += 10;
    now[0].vx_cms = 600;
    now[0].hp = 80;
    let mut c = Changes::default();
    diff(&base, &now, &mut c);
    let mut out = Vec::new();
    let m = SnapshotMeta {
        tick: 7,
        baseline: 4,
        instance: 9,
        zone: 1,
    };
    let acks = [PlayerAck {
        entity: 5,
        last_input: 3,
    }];
    encode_snapshot(m, &acks, &c, &mut out).expect("encode");
    let hex: Vec<String> = out[0].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "02 02 00 01 07 00 00 00 04 00 00 00 09 00 00 00 44 00 00 00 \
         05 00 00 00 03 00 00 00 \
         44 33 22 11 0a 00 00 00 58 02 00 00 \
         44 33 22 11 50 00 \
         01 00 e4 ff ff ff 01 00 00 00 e4 ff ff ff 00 00 00 00 \
         dc ff ff ff 01 00 00 00 e0 ff ff ff 01 00 00 00 de ff ff ff 00 00 00 00"
    );
}
