//! Codec benchmarks of `zonehost-protocol`: input datagrams, snapshots, control frames.
//!
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zonehost_protocol::datagram::{encode_input, InputCmd, InputDatagram, BUTTON_ATTACK};
use zonehost_protocol::frame::{encode_frame, FrameDecoder};
use zonehost_protocol::message::{ClientMsg, Hello, Request};
use zonehost_protocol::snapshot::{decode_snapshot, encode_snapshot, kind, EntityState, PlayerAck};

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

/// An instance of 4 players and 46 monsters: 50 entities, 2 datagrams per snapshot.
fn instance() -> (Vec<PlayerAck>, Vec<EntityState>) {
    let acks = (0..4)
        .map(|i| PlayerAck {
            entity: i,
            last_input: 5_000 + i,
        })
        .collect();
    let entities = (0..50u32)
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

fn snapshot(c: &mut Criterion) {
    let (acks, entities) = instance();
    let mut out: Vec<Bytes> = Vec::new();
    encode_snapshot(60, 1, 1, &acks, &entities, &mut out).expect("encode");
    let total: usize = out.iter().map(Bytes::len).sum();
    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("encode_4p_50e", |b| {
        b.iter(|| {
            encode_snapshot(
                black_box(60),
                1,
                1,
                black_box(&acks),
                black_box(&entities),
                &mut out,
            )
            .expect("encode")
        })
    });
    let datagrams = out.clone();
    g.bench_function("decode_access_4p_50e", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for d in black_box(&datagrams) {
                let (header, body) = decode_snapshot(d).expect("decode");
                sum += i64::from(header.tick.get());
                sum += i64::from(body.ack_for(2).unwrap_or(0));
                for e in body.entities.iter() {
                    sum += i64::from(e.x_mm.to_native()) + i64::from(e.hp.to_native());
                }
            }
            sum
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let hello = ClientMsg::Hello(Hello {
        version: 1,
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
