//! Codec benchmarks of `zonehost-protocol`: input datagrams, snapshots, control frames.
//!
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use zonehost_protocol::datagram::{encode_input, InputCmd, InputDatagram, BUTTON_ATTACK};
use zonehost_protocol::frame::{encode_frame, FrameDecoder};
use zonehost_protocol::message::{ClientMsg, Hello, Request};
use zonehost_protocol::snapshot::{
    decode_snapshot, diff, encode_snapshot, kind, Changes, EntityState, PlayerAck, SnapshotEncoder,
    SnapshotMeta, SnapshotView,
};

/// Eight commands: a full input datagram (the newest plus seven repeats).
fn commands() -> Vec<InputCmd> {
    (0..8)
        .map(|i| InputCmd::new(1000 - i * 150, -300 + i * 90, (i as u16) & BUTTON_ATTACK))
        .collect()
}

fn input_datagram(c: &mut Criterion) {
    let cmds = commands();
    let bytes = encode_input(1_000, 990, &cmds);
    let mut g = c.benchmark_group("input_datagram");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode_8_cmds", |b| {
        b.iter(|| encode_input(black_box(1_000), black_box(990), black_box(&cmds)))
    });
    g.bench_function("decode_8_cmds", |b| {
        b.iter(|| {
            let d = InputDatagram::decode(black_box(&bytes)).expect("valid datagram");
            d.iter()
                .map(|(seq, cmd)| seq.wrapping_add(cmd.move_x.get() as u32))
                .fold(0u32, u32::wrapping_add)
        })
    });
    g.finish();
}

/// An instance of 4 players and 60 monsters (64 entities), the party scene.
fn instance() -> (Vec<PlayerAck>, Vec<EntityState>) {
    let acks = (0..4)
        .map(|i| PlayerAck {
            entity: i,
            last_input: 5_000 + i,
        })
        .collect();
    let entities = (0..64u32)
        .map(|i| EntityState {
            id: i,
            x_mm: 50_000 + i as i32 * 731,
            y_mm: 50_000 - i as i32 * 577,
            vx_cms: (i as i16 % 7) * 100 - 300,
            vy_cms: (i as i16 % 5) * 120 - 240,
            hp: 40 + i as u16,
            max_hp: 100,
            kind: if i < 4 { kind::PLAYER } else { kind::MONSTER },
            flags: 0,
        })
        .collect();
    (acks, entities)
}

/// The same scene one snapshot later: the 4 players and 16 monsters moved, 5 were hurt.
fn next(entities: &[EntityState]) -> Vec<EntityState> {
    let mut now = entities.to_vec();
    for e in &mut now[..20] {
        e.x_mm += 150;
        e.vy_cms = -e.vy_cms;
    }
    for e in &mut now[30..35] {
        e.hp -= 9;
    }
    now
}

fn snapshot(c: &mut Criterion) {
    let (acks, entities) = instance();
    let now = next(&entities);
    let meta = |tick, baseline| SnapshotMeta {
        tick,
        baseline,
        instance: 1,
        zone: 1,
    };
    let mut changes = Changes::default();
    let mut out: Vec<Bytes> = Vec::new();
    let mut g = c.benchmark_group("snapshot_v2");
    g.bench_function("full_encode_4p_60m", |b| {
        b.iter(|| {
            diff(&[], black_box(&entities), &mut changes);
            encode_snapshot(meta(60, 0), black_box(&acks), &changes, &mut out).expect("encode")
        })
    });
    let full: Vec<Bytes> = out.clone();
    g.bench_function("delta_encode_4p_60m", |b| {
        b.iter(|| {
            diff(black_box(&entities), black_box(&now), &mut changes);
            encode_snapshot(meta(63, 60), black_box(&acks), &changes, &mut out).expect("encode")
        })
    });
    let delta: Vec<Bytes> = out.clone();
    // What the server does per client: the same delta with the encoder's buffers reused.
    let mut encoder = SnapshotEncoder::default();
    g.bench_function("delta_encode_reused_4p_60m", |b| {
        b.iter(|| {
            out.clear();
            diff(black_box(&entities), black_box(&now), &mut changes);
            encoder
                .encode(meta(63, 60), black_box(&acks), &changes, &mut out)
                .expect("encode")
        })
    });
    assert_eq!(out, delta, "the reused encoder writes the same bytes");
    g.bench_function("delta_decode_access_4p_60m", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for d in black_box(&delta) {
                let (header, body) = decode_snapshot(d).expect("decode");
                sum += i64::from(header.tick.get());
                sum += i64::from(body.ack_for(2).unwrap_or(0));
                for m in body.moves.iter() {
                    sum += i64::from(m.dx_mm.to_native());
                }
            }
            sum
        })
    });
    // The client's whole job per snapshot: decode, and rebuild the state from the baseline.
    let mut base = SnapshotView::new();
    for d in &full {
        let (h, body) = decode_snapshot(d).expect("decode");
        base.apply(h, body).expect("apply");
    }
    g.bench_function("delta_decode_apply_4p_60m", |b| {
        b.iter_batched(
            || base.clone(),
            |mut view| {
                for d in black_box(&delta) {
                    let (h, body) = decode_snapshot(d).expect("decode");
                    view.apply(h, body).expect("apply");
                }
                view
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let hello = ClientMsg::Hello(Hello {
        version: 2,
        // A realistic token length (a 32-byte claim set is 131 characters).
        token: "A".repeat(131),
        client: "zonehost-bench/0.1".into(),
    });
    let request = ClientMsg::Request {
        id: 12_345,
        body: Request::Ping {
            client_time_us: 1_700_000_000_000_000,
        },
    };
    let mut g = c.benchmark_group("frame");
    for (name, msg) in [("hello", &hello), ("request", &request)] {
        let bytes = encode_frame(msg).expect("encode");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| encode_frame(black_box(msg)).expect("encode"))
        });
        let mut decoder = FrameDecoder::default();
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                decoder.extend(black_box(&bytes));
                decoder
                    .next_message::<ClientMsg>()
                    .expect("valid frame")
                    .expect("complete frame")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, input_datagram, snapshot, frames);
criterion_main!(benches);
