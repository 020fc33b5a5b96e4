//! `World::step` cost for typical instance sizes, with every monster near the players
//! (aggroed, chasing and fighting) and players moving and holding attack.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use zonehost_game::{
    EntityId, MonsterKind, PlayerInput, Rect, SpawnGroup, World, ZoneTemplate, BUTTON_ATTACK,
};

fn template(monsters: u16) -> ZoneTemplate {
    let per = monsters / 4;
    let group = |kind, count, area| SpawnGroup {
        kind,
        level_min: 3,
        level_max: 6,
        count,
        area,
        respawn_secs: 5,
    };
    ZoneTemplate {
        id: 9,
        name: "bench".into(),
        width_mm: 60_000,
        height_mm: 60_000,
        spawn_mm: (30_000, 30_000),
        town: false,
        respawn_zone: 9,
        walls: vec![
            Rect::new(20_000, 10_000, 21_000, 25_000),
            Rect::new(39_000, 35_000, 40_000, 50_000),
            Rect::new(25_000, 40_000, 35_000, 41_000),
            Rect::new(25_000, 19_000, 35_000, 20_000),
        ],
        portals: Vec::new(),
        spawns: vec![
            group(
                MonsterKind::Zombie,
                per,
                Rect::new(22_000, 22_000, 38_000, 38_000),
            ),
            group(
                MonsterKind::Skeleton,
                per,
                Rect::new(22_000, 22_000, 38_000, 38_000),
            ),
            group(
                MonsterKind::SkeletonArcher,
                per,
                Rect::new(15_000, 15_000, 45_000, 45_000),
            ),
            group(
                MonsterKind::FireImp,
                monsters - 3 * per,
                Rect::new(15_000, 15_000, 45_000, 45_000),
            ),
        ],
    }
}

fn bench_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("world_step");
    for (players, monsters) in [(1u64, 50u16), (4, 60)] {
        let mut w = World::from_template(&template(monsters), 0xfeed);
        let ids: Vec<EntityId> = (0..players).map(|p| w.add_player(p + 1)).collect();
        let mut seq = 0u32;
        // Warm into a steady state: everything aggroed.
        for _ in 0..120 {
            w.step();
        }
        g.bench_function(
            BenchmarkId::from_parameter(format!("{players}p_{monsters}m")),
            |b| {
                b.iter(|| {
                    seq += 1;
                    for (i, &e) in ids.iter().enumerate() {
                        let phase = (seq / 60 + i as u32) % 4;
                        let (x, y) = [(1000, 0), (0, 1000), (-1000, 0), (0, -1000)][phase as usize];
                        w.queue_input(
                            e,
                            PlayerInput {
                                seq,
                                move_x: x,
                                move_y: y,
                                buttons: BUTTON_ATTACK,
                            },
                        );
                    }
                    w.step();
                    w.events().len()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench_step);
criterion_main!(benches);
