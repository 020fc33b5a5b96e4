//! Embedded store (redb in a temp dir) benchmarks:
//! - `checkpoint/save_100`: one fenced `save_players` of 100 records (players/s);
//! - `item_op/single`: one exactly-once item op, one transaction (fsync) each;
//! - `item_op/batch_32`: 32 item ops group-committed in one transaction;
//! - then (only under `cargo bench`) a load report through the write-behind worker:
//!   1000 simulated bots at 60 Hz doing a pick-up or drop every 2 s each (500 ops/s) while
//!   every player is checkpointed every 10 s (100 records/s): submit-to-reply latency p50/p99
//!   (replies polled every 200 µs; a sim that drains once per tick adds up to one tick).
//!
//! Run: `cargo bench --bench store -- --warm-up-time 1 --measurement-time 5`

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use zonehost::store::redb::RedbStore;
use zonehost::store::writer::{StoreCommand, StoreReply, StoreWorker};
use zonehost::store::{ItemOp, ItemOpKind, Owner, PlayerRecord, StoreConfig};
use zonehost::store::{ItemStore, PlayerStore};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "zonehost-bench-{tag}-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn store(&self) -> RedbStore {
        RedbStore::open(&self.0.join("store.redb")).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(player_id: u64, seq: u64) -> PlayerRecord {
    PlayerRecord {
        player_id,
        epoch: 1,
        seq,
        zone: 2,
        x_mm: 10_000,
        y_mm: 20_000,
        level: 30,
        xp: 1_000_000,
        gold: 50_000,
        // A realistic game-state blob: equipment, quests, skills.
        state: vec![0xA5; 1024],
        saved_at_ms: 1_800_000_000_000,
        ..PlayerRecord::new("bench")
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u128 {
    u128::from(NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

fn create_op(owner: u64) -> ItemOp {
    ItemOp {
        op_id: next_id() | (1 << 127),
        item_id: next_id(),
        kind: ItemOpKind::Create {
            owner: Owner::Player(owner),
            data: vec![7; 48],
        },
    }
}

fn checkpoint(c: &mut Criterion) {
    let dir = TempDir::new("checkpoint");
    let store = dir.store();
    let mut seq = 0u64;
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(100));
    group.bench_function("save_100", |b| {
        b.iter_batched(
            || {
                seq += 1;
                (0..100).map(|p| record(p, seq)).collect::<Vec<_>>()
            },
            |records| store.save_players(&records).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn item_ops(c: &mut Criterion) {
    let dir = TempDir::new("items");
    let store = dir.store();
    let mut group = c.benchmark_group("item_op");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter_batched(
            || create_op(1),
            |op| store.apply_item_op(&op).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("batch_32", |b| {
        b.iter_batched(
            || (0..32).map(create_op).collect::<Vec<_>>(),
            |ops| store.apply_item_ops(&ops).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// 1000 bots through the write-behind worker for 10 s of simulated play.
fn load_report() {
    const BOTS: u64 = 1000;
    const SECONDS: u64 = 10;
    const TICK: Duration = Duration::from_micros(16_667);
    let dir = TempDir::new("load");
    let store = dir.store();
    // Every bot starts with one item on itself.
    let mut items: Vec<(u128, Owner)> = Vec::new();
    let seed: Vec<ItemOp> = (0..BOTS)
        .map(|b| {
            let op = create_op(b);
            items.push((op.item_id, Owner::Player(b)));
            op
        })
        .collect();
    store.apply_item_ops(&seed).unwrap();
    let config = StoreConfig::default();
    let worker = StoreWorker::spawn(Box::new(store), &config).unwrap();
    let handle = worker.handle();
    let mut submitted_at: std::collections::HashMap<u64, Instant> = Default::default();
    let mut item_lat: Vec<Duration> = Vec::new();
    let mut save_lat: Vec<Duration> = Vec::new();
    let mut replies: Vec<StoreReply> = Vec::new();
    let mut token = 0u64;
    let mut seq = 0u64;
    let start = Instant::now();
    let ticks = SECONDS * 60;
    let mut refused = 0u64;
    for tick in 0..ticks {
        let due = start + TICK * tick as u32;
        // The sim drains once per tick; to measure the store's own latency (not the wait
        // for the next tick) this loop also polls every 200 µs while it idles.
        loop {
            handle.drain_replies(&mut replies);
            for r in replies.drain(..) {
                let (t, is_item) = match r {
                    StoreReply::Item { token, result, .. } => {
                        result.unwrap();
                        (token, true)
                    }
                    StoreReply::Saved { token, result } => {
                        result.unwrap();
                        (token, false)
                    }
                    _ => continue,
                };
                if let Some(at) = submitted_at.remove(&t) {
                    if is_item {
                        item_lat.push(at.elapsed());
                    } else {
                        save_lat.push(at.elapsed());
                    }
                }
            }
            match due.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait.min(Duration::from_micros(200))),
                None => break,
            }
        }
        // 500 item ops/s: ~8 per tick, each a pick-up or drop flipping owner.
        for k in 0..9u64 {
            if (tick * 9 + k) % 54 >= 50 {
                continue; // 50 of every 54 slots: 500/s at 60 Hz
            }
            let slot = ((tick * 9 + k) * 7919 % BOTS) as usize;
            let (item_id, from) = items[slot];
            let to = match from {
                Owner::Player(p) => Owner::Ground { instance: p },
                Owner::Ground { instance } | Owner::Trade { trade: instance } => {
                    Owner::Player(instance)
                }
            };
            items[slot].1 = to;
            token += 1;
            let cmd = StoreCommand::ItemOp {
                token,
                op: ItemOp {
                    op_id: next_id() | (1 << 127),
                    item_id,
                    kind: ItemOpKind::Transfer { from, to },
                },
            };
            submitted_at.insert(token, Instant::now());
            if handle.submit(cmd).is_err() {
                refused += 1;
            }
        }
        // Checkpoint every bot every 10 s, spread over the ticks: ~1.7 records per tick,
        // submitted as one batch per 6 ticks (10 records).
        if tick % 6 == 0 {
            seq += 1;
            let base = (tick / 6 * 10) % BOTS;
            let records = (base..base + 10).map(|p| record(p, seq)).collect();
            token += 1;
            submitted_at.insert(token, Instant::now());
            if handle
                .submit(StoreCommand::SavePlayers { token, records })
                .is_err()
            {
                refused += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !submitted_at.is_empty() && Instant::now() < deadline {
        handle.drain_replies(&mut replies);
        for r in replies.drain(..) {
            match r {
                StoreReply::Item { token, .. } => {
                    if let Some(at) = submitted_at.remove(&token) {
                        item_lat.push(at.elapsed());
                    }
                }
                StoreReply::Saved { token, .. } => {
                    if let Some(at) = submitted_at.remove(&token) {
                        save_lat.push(at.elapsed());
                    }
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let batches = worker.stats().batches.load(Ordering::Relaxed);
    worker.stop();
    item_lat.sort_unstable();
    save_lat.sort_unstable();
    println!();
    println!(
        "write-behind load: {BOTS} bots, {SECONDS} s, {} item ops, {} checkpoint batches, {batches} transactions, {refused} refused",
        item_lat.len(),
        save_lat.len()
    );
    for (name, lat) in [("item op", &item_lat), ("checkpoint", &save_lat)] {
        println!(
            "  {name:<10} submit->reply ready  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
            percentile(lat, 0.50).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
}

/// Direct (no worker) single-op latency distribution.
fn single_op_report() {
    let dir = TempDir::new("single");
    let store = dir.store();
    let mut lat: Vec<Duration> = (0..2000)
        .map(|_| {
            let op = create_op(1);
            let t = Instant::now();
            store.apply_item_op(&op).unwrap();
            t.elapsed()
        })
        .collect();
    lat.sort_unstable();
    println!(
        "direct item op (1 txn + fsync each, 2000 ops): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    checkpoint(&mut c);
    item_ops(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        single_op_report();
        load_report();
    }
}
