//! The write-behind store worker.
//!
//! The simulation never waits on a disk or a database: a sim worker [`StoreHandle::submit`]s
//! commands (never blocks: a full queue is refused with [`SubmitError::Full`] and counted)
//! and, at the start of each tick, [`StoreHandle::drain_replies`] collects the answers that
//! arrived since (never blocks either). The store worker is one thread that owns the
//! [`Store`]; it takes everything queued (up to `max_batch` commands) and executes it in
//! waves (see `plan_waves`): commands that concern the same player, item or owner keep
//! their submission order (a load sees every save of its player submitted before it),
//! independent ones share a wave. A wave's saves go as one `save_players` call and its item
//! operations as one `apply_item_ops` call (one transaction, one fsync: group commit), its
//! reads several at once; on a database backend the three groups run side by side.
//!
//! Every command gets exactly one reply, on the queue of the handle that submitted it.
//! Each handle bounds its commands in flight (`replies_capacity`), so its reply queue is
//! bounded too and can never overflow.
//!
//! Metrics (names are declared in `telemetry.rs`): `zonehost_store_op_seconds{op}` is
//! recorded here per command, from submission to reply (queueing included: what the sim
//! sees); [`StoreStats`] holds the counters and the queue depth gauge published at scrape.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::trade::TradeOutcome;
use super::{
    ItemOp, ItemOutcome, ItemRecord, Owner, PlayerRecord, SaveOutcome, Store, StoreConfig,
    StoreError, TradeRecord,
};
use crate::queue::BoundedQueue;

/// Store operation kinds: the `op` label of the store metrics (part of the metrics API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    /// Loading a player record.
    Load,
    /// Saving checkpoints (one command, any number of records).
    Save,
    /// One item operation.
    Item,
    /// Loading an owner's items.
    Items,
    /// A whole trade (escrow, commit point, delivery or return).
    Trade,
}

impl StoreOp {
    /// Every value, in declaration order (index of the [`StoreStats`] arrays).
    pub const ALL: [StoreOp; 5] = [
        StoreOp::Load,
        StoreOp::Save,
        StoreOp::Item,
        StoreOp::Items,
        StoreOp::Trade,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Load => "load",
            StoreOp::Save => "save",
            StoreOp::Item => "item",
            StoreOp::Items => "items",
            StoreOp::Trade => "trade",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of the store worker (relaxed atomics, published at scrape).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Commands queued and not yet taken by the worker (gauge:
    /// `zonehost_store_queue_depth`).
    pub queue_depth: AtomicI64,
    /// Commands completed, by [`StoreOp`].
    pub ops: [AtomicU64; 5],
    /// Commands that failed, by [`StoreOp`] (`zonehost_store_errors_total{op}`). Refusals
    /// (stale checkpoint, owner mismatch) are outcomes, not errors.
    pub errors: [AtomicU64; 5],
    /// Total submit-to-reply time, microseconds, by [`StoreOp`] (for averages in tests).
    pub latency_us: [AtomicU64; 5],
    /// Submissions refused because the queue or the handle's in-flight limit was full.
    pub refused_full: AtomicU64,
    /// Batches executed (transactions, roughly).
    pub batches: AtomicU64,
    /// Checkpoints refused as stale.
    pub saves_stale: AtomicU64,
}

impl StoreStats {
    /// Publishes the counters and the queue depth to the installed `metrics` recorder
    /// (called at scrape time, like `telemetry::Stats::publish`).
    pub fn publish(&self) {
        for op in StoreOp::ALL {
            metrics::counter!("zonehost_store_errors_total", "op" => op.as_str())
                .absolute(self.errors(op));
        }
        metrics::gauge!("zonehost_store_queue_depth").set(self.queue_depth().max(0) as f64);
        metrics::counter!("zonehost_store_saves_stale_total")
            .absolute(self.saves_stale.load(Ordering::Relaxed));
    }

    /// Completed commands of `op`.
    pub fn ops(&self, op: StoreOp) -> u64 {
        self.ops[op.index()].load(Ordering::Relaxed)
    }

    /// Failed commands of `op`.
    pub fn errors(&self, op: StoreOp) -> u64 {
        self.errors[op.index()].load(Ordering::Relaxed)
    }

    /// Current queue depth.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Ordering::Relaxed)
    }
}

/// A request to the store worker. `token` is the caller's: it comes back in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCommand {
    /// Save checkpoints (fenced). Reply: [`StoreReply::Saved`].
    SavePlayers {
        /// Caller's token.
        token: u64,
        /// Records to save.
        records: Vec<PlayerRecord>,
    },
    /// Commit one item operation (phase two of a reserved pick-up, drop, trade...).
    /// Reply: [`StoreReply::Item`], sent only once the outcome is durable.
    ItemOp {
        /// Caller's token.
        token: u64,
        /// The operation.
        op: ItemOp,
    },
    /// Load a player (cache first). Reply: [`StoreReply::Loaded`].
    LoadPlayer {
        /// Caller's token.
        token: u64,
        /// Player id.
        player_id: u64,
    },
    /// Load an owner's live items. Reply: [`StoreReply::Items`].
    LoadItems {
        /// Caller's token.
        token: u64,
        /// Owner.
        owner: Owner,
    },
    /// Run a whole trade (see [`super::trade`]); the manifest is resubmitted unchanged
    /// after an error (every step replays). Reply: [`StoreReply::Trade`], sent only once
    /// the outcome is durable.
    Trade {
        /// Caller's token.
        token: u64,
        /// The trade's manifest.
        manifest: TradeRecord,
    },
    /// Answered once everything this handle submitted before it is done (drain: submit the
    /// final checkpoints, then a barrier, and wait for it). Reply: [`StoreReply::Barrier`].
    Barrier {
        /// Caller's token.
        token: u64,
    },
}

impl StoreCommand {
    fn op(&self) -> Option<StoreOp> {
        match self {
            StoreCommand::SavePlayers { .. } => Some(StoreOp::Save),
            StoreCommand::ItemOp { .. } => Some(StoreOp::Item),
            StoreCommand::LoadPlayer { .. } => Some(StoreOp::Load),
            StoreCommand::LoadItems { .. } => Some(StoreOp::Items),
            StoreCommand::Trade { .. } => Some(StoreOp::Trade),
            StoreCommand::Barrier { .. } => None,
        }
    }
}

/// The answer to one [`StoreCommand`].
#[derive(Debug, Clone)]
pub enum StoreReply {
    /// Checkpoints: one outcome per record, in order.
    Saved {
        /// Caller's token.
        token: u64,
        /// Outcomes, or the batch's error (some records may have landed; resubmitting is
        /// safe thanks to fencing).
        result: Result<Vec<SaveOutcome>, StoreError>,
    },
    /// A trade's durable outcome.
    Trade {
        /// Caller's token.
        token: u64,
        /// Trade id.
        trade_id: u64,
        /// Outcome, or an error: then the trade may be anywhere between open and settled,
        /// and must be resubmitted unchanged (or left to recovery).
        result: Result<TradeOutcome, StoreError>,
    },
    /// An item operation's durable outcome.
    Item {
        /// Caller's token.
        token: u64,
        /// The operation id.
        op_id: u128,
        /// Outcome, or an error: then nothing is known to be durable and the op must be
        /// resubmitted with the same `op_id` (exactly-once).
        result: Result<ItemOutcome, StoreError>,
    },
    /// A loaded player.
    Loaded {
        /// Caller's token.
        token: u64,
        /// Player id.
        player_id: u64,
        /// The record (`None`: new player), or why it could not be read (`Corrupt`: refuse
        /// this player, keep serving others).
        result: Result<Option<PlayerRecord>, StoreError>,
    },
    /// An owner's live items.
    Items {
        /// Caller's token.
        token: u64,
        /// Owner.
        owner: Owner,
        /// Items.
        result: Result<Vec<ItemRecord>, StoreError>,
    },
    /// Everything submitted before the barrier is done.
    Barrier {
        /// Caller's token.
        token: u64,
    },
}

/// Why a command was not queued. The command is handed back for a later retry.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The worker's queue or this handle's in-flight limit is full.
    #[error("store queue full")]
    Full(Box<StoreCommand>),
    /// The worker has stopped.
    #[error("store worker stopped")]
    Closed(Box<StoreCommand>),
}

#[derive(Debug)]
struct ReplyQueue {
    queue: BoundedQueue<StoreReply>,
    in_flight: AtomicUsize,
}

#[derive(Debug)]
struct Envelope {
    cmd: StoreCommand,
    replies: Arc<ReplyQueue>,
    submitted: Instant,
}

#[derive(Debug)]
enum Msg {
    Cmd(Envelope),
    Stop,
}

/// A sim worker's connection to the store worker: its own bounded reply queue.
#[derive(Debug)]
pub struct StoreHandle {
    tx: Sender<Msg>,
    /// Most commands queued for the worker (`StoreConfig::queue_capacity`).
    queue_capacity: i64,
    replies: Arc<ReplyQueue>,
    stats: Arc<StoreStats>,
}

impl StoreHandle {
    /// Queues a command without blocking.
    pub fn submit(&self, cmd: StoreCommand) -> Result<(), SubmitError> {
        let cap = self.replies.queue.capacity();
        if self.replies.in_flight.fetch_add(1, Ordering::AcqRel) >= cap {
            self.replies.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Full(Box::new(cmd)));
        }
        // The queue is an unbounded channel held to its capacity by this count (the
        // worker takes commands off it as it batches them): memory follows the load,
        // where a `sync_channel` reserved every slot up front (1.2 MB at 8192).
        if self.stats.queue_depth.fetch_add(1, Ordering::AcqRel) >= self.queue_capacity {
            self.stats.queue_depth.fetch_sub(1, Ordering::AcqRel);
            self.replies.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Full(Box::new(cmd)));
        }
        let env = Envelope {
            cmd,
            replies: self.replies.clone(),
            submitted: Instant::now(),
        };
        match self.tx.send(Msg::Cmd(env)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.replies.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.stats.queue_depth.fetch_sub(1, Ordering::AcqRel);
                match e.0 {
                    Msg::Cmd(env) => Err(SubmitError::Closed(Box::new(env.cmd))),
                    Msg::Stop => Ok(()),
                }
            }
        }
    }

    /// Moves every reply that has arrived into `out` (never blocks); returns how many.
    pub fn drain_replies(&self, out: &mut Vec<StoreReply>) -> usize {
        let mut n = 0;
        while let Some(r) = self.replies.queue.pop() {
            out.push(r);
            n += 1;
        }
        if n > 0 {
            self.replies.in_flight.fetch_sub(n, Ordering::AcqRel);
        }
        n
    }

    /// Commands submitted whose replies have not been drained yet.
    pub fn in_flight(&self) -> usize {
        self.replies.in_flight.load(Ordering::Acquire)
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }
}

/// The running store worker. Stopping it (or dropping it) executes everything queued
/// before, then joins the thread.
#[derive(Debug)]
pub struct StoreWorker {
    tx: Sender<Msg>,
    queue_capacity: i64,
    stats: Arc<StoreStats>,
    replies_capacity: usize,
    thread: Option<JoinHandle<()>>,
}

struct Meters {
    op_seconds: [metrics::Histogram; 5],
}

impl Meters {
    fn new() -> Self {
        Self {
            op_seconds: StoreOp::ALL
                .map(|op| metrics::histogram!("zonehost_store_op_seconds", "op" => op.as_str())),
        }
    }
}

impl StoreWorker {
    /// Starts the worker thread `zonehost-store` owning `store`, with the queue sizes of
    /// `config`.
    pub fn spawn(store: Box<dyn Store>, config: &StoreConfig) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let stats = Arc::new(StoreStats::default());
        let worker_stats = stats.clone();
        let max_batch = config.max_batch.max(1);
        // The embedded store commits one write transaction at a time: overlapping its
        // calls would only add threads.
        let overlap = !matches!(config.backend, super::BackendConfig::Embedded { .. });
        let thread = std::thread::Builder::new()
            .name("zonehost-store".into())
            .spawn(move || run(store, rx, worker_stats, max_batch, overlap))?;
        Ok(Self {
            tx,
            queue_capacity: i64::try_from(config.queue_capacity.max(1)).unwrap_or(i64::MAX),
            stats,
            replies_capacity: config.replies_capacity.max(1),
            thread: Some(thread),
        })
    }

    /// A new handle with its own reply queue (one per sim worker).
    pub fn handle(&self) -> StoreHandle {
        StoreHandle {
            tx: self.tx.clone(),
            queue_capacity: self.queue_capacity,
            replies: Arc::new(ReplyQueue {
                queue: BoundedQueue::new(self.replies_capacity),
                in_flight: AtomicUsize::new(0),
            }),
            stats: self.stats.clone(),
        }
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Executes everything queued so far, then stops the thread and waits for it. Blocks:
    /// call it from the shutdown path (e.g. `spawn_blocking`), after the final checkpoints.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Msg::Stop);
            if thread.join().is_err() {
                tracing::error!("store worker panicked");
            }
        }
    }
}

impl Drop for StoreWorker {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn run(
    store: Box<dyn Store>,
    rx: Receiver<Msg>,
    stats: Arc<StoreStats>,
    max_batch: usize,
    overlap: bool,
) {
    let meters = Meters::new();
    let mut batch: Vec<Envelope> = Vec::with_capacity(max_batch);
    loop {
        let mut stop = false;
        match rx.recv() {
            Ok(Msg::Cmd(env)) => batch.push(env),
            Ok(Msg::Stop) | Err(_) => stop = true,
        }
        while !stop && batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Cmd(env)) => batch.push(env),
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            stats
                .queue_depth
                .fetch_sub(batch.len() as i64, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            execute(store.as_ref(), &mut batch, &stats, &meters, overlap);
        }
        if stop {
            break;
        }
    }
    tracing::debug!("store worker stopped");
}

/// Most reads (player loads, item loads) of one group executed at once. A burst of logins
/// queues many of them; one after another they cost a database round trip each (on a
/// ScyllaDB or Cassandra node loaded by a login burst, tens of milliseconds), which made
/// logins time out behind each other.
const READ_PARALLELISM: usize = 8;

/// What a command must stay ordered with: commands that share a key run in submission
/// order; commands that share none are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// A player: its checkpoints, its loads, and the item operations on its inventory.
    Player(u64),
    /// An item.
    Item(u128),
    /// Any other owner (a zone instance's ground, a trade's escrow).
    Owner(Owner),
}

fn owner_key(o: Owner) -> Key {
    match o {
        Owner::Player(p) => Key::Player(p),
        other => Key::Owner(other),
    }
}

/// The keys of a command; `None`: it is ordered with everything (a trade touches two
/// players and their items through several steps; a barrier waits for all before it).
fn keys_of(cmd: &StoreCommand, out: &mut Vec<Key>) -> bool {
    out.clear();
    match cmd {
        StoreCommand::SavePlayers { records, .. } => {
            out.extend(records.iter().map(|r| Key::Player(r.player_id)));
        }
        StoreCommand::ItemOp { op, .. } => {
            out.push(Key::Item(op.item_id));
            match op.kind {
                super::ItemOpKind::Create { owner, .. } => out.push(owner_key(owner)),
                super::ItemOpKind::Transfer { from, to } => {
                    out.push(owner_key(from));
                    out.push(owner_key(to));
                }
                super::ItemOpKind::Destroy { from } => out.push(owner_key(from)),
            }
        }
        StoreCommand::LoadPlayer { player_id, .. } => out.push(Key::Player(*player_id)),
        StoreCommand::LoadItems { owner, .. } => out.push(owner_key(*owner)),
        StoreCommand::Trade { .. } | StoreCommand::Barrier { .. } => return false,
    }
    true
}

/// Assigns each command of a batch to a wave: a command goes one wave after the latest
/// earlier command it shares a key with (so those stay in submission order), a trade or a
/// barrier one wave after everything before it and before everything after it. Waves run
/// one after another; within a wave nothing depends on anything else, so its saves go as
/// one `save_players` call, its item operations as one `apply_item_ops` call, its reads up
/// to [`READ_PARALLELISM`] at once, all of them side by side.
fn plan_waves(cmds: &[&StoreCommand]) -> Vec<usize> {
    let mut last: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    let mut keys = Vec::new();
    // Every command from here on comes after this wave (set by a trade or a barrier).
    let mut floor = 0usize;
    let mut top = 0usize;
    let mut waves = Vec::with_capacity(cmds.len());
    for (i, cmd) in cmds.iter().enumerate() {
        let wave = if keys_of(cmd, &mut keys) {
            let after = keys.iter().filter_map(|k| last.get(k)).max();
            let w = after.map_or(floor, |&w| (w + 1).max(floor));
            for k in &keys {
                last.insert(*k, w);
            }
            w
        } else {
            let w = if i == 0 { 0 } else { top + 1 };
            floor = w + 1;
            w
        };
        top = top.max(wave);
        waves.push(wave);
    }
    waves
}

/// The commands of one wave, grouped by how they execute.
#[derive(Default)]
struct Wave {
    saves: Vec<Envelope>,
    items: Vec<Envelope>,
    reads: Vec<Envelope>,
    others: Vec<Envelope>,
}

/// A group of reads, up to [`READ_PARALLELISM`] at once (scoped threads: the store's calls
/// block their thread).
fn execute_reads(store: &dyn Store, run: &mut [Envelope], stats: &StoreStats, meters: &Meters) {
    crate::par::for_each_chunked(run, READ_PARALLELISM, |env| {
        execute_one(store, env, stats, meters)
    });
}

fn execute_wave(
    store: &dyn Store,
    w: &mut Wave,
    stats: &StoreStats,
    meters: &Meters,
    overlap: bool,
) {
    for env in w.others.iter_mut() {
        execute_one(store, env, stats, meters);
    }
    let groups = [
        !w.saves.is_empty(),
        !w.items.is_empty(),
        !w.reads.is_empty(),
    ];
    if overlap && groups.iter().filter(|g| **g).count() > 1 {
        // A database serves independent statements side by side; one round trip each
        // instead of one after another.
        let Wave {
            saves,
            items,
            reads,
            ..
        } = w;
        std::thread::scope(|scope| {
            if !saves.is_empty() {
                scope.spawn(|| execute_saves(store, saves, stats, meters));
            }
            if !items.is_empty() {
                scope.spawn(|| execute_items(store, items, stats, meters));
            }
            execute_reads(store, reads, stats, meters);
        });
        return;
    }
    if !w.saves.is_empty() {
        execute_saves(store, &mut w.saves, stats, meters);
    }
    if !w.items.is_empty() {
        execute_items(store, &mut w.items, stats, meters);
    }
    execute_reads(store, &mut w.reads, stats, meters);
}

fn execute(
    store: &dyn Store,
    batch: &mut Vec<Envelope>,
    stats: &StoreStats,
    meters: &Meters,
    overlap: bool,
) {
    let plan = plan_waves(&batch.iter().map(|e| &e.cmd).collect::<Vec<_>>());
    let count = plan.iter().max().map_or(0, |m| m + 1);
    let mut waves: Vec<Wave> = (0..count).map(|_| Wave::default()).collect();
    for (env, w) in batch.drain(..).zip(plan) {
        let wave = &mut waves[w];
        match env.cmd {
            StoreCommand::SavePlayers { .. } => wave.saves.push(env),
            StoreCommand::ItemOp { .. } => wave.items.push(env),
            StoreCommand::LoadPlayer { .. } | StoreCommand::LoadItems { .. } => {
                wave.reads.push(env)
            }
            StoreCommand::Trade { .. } | StoreCommand::Barrier { .. } => wave.others.push(env),
        }
    }
    for wave in &mut waves {
        execute_wave(store, wave, stats, meters, overlap);
    }
}

fn finish(env: &Envelope, reply: StoreReply, failed: bool, stats: &StoreStats, meters: &Meters) {
    let elapsed = env.submitted.elapsed();
    if let Some(op) = env.cmd.op() {
        let i = op.index();
        stats.ops[i].fetch_add(1, Ordering::Relaxed);
        if failed {
            stats.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        stats.latency_us[i].fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        meters.op_seconds[i].record(elapsed.as_secs_f64());
    }
    if env.replies.queue.push(reply).is_err() {
        // Unreachable by construction (in-flight is bounded by the queue's capacity).
        tracing::error!("store reply queue overflow: reply dropped");
    }
}

fn execute_saves(store: &dyn Store, run: &mut [Envelope], stats: &StoreStats, meters: &Meters) {
    let mut all: Vec<PlayerRecord> = Vec::new();
    let mut lens = Vec::with_capacity(run.len());
    for env in run.iter_mut() {
        if let StoreCommand::SavePlayers { records, .. } = &mut env.cmd {
            lens.push(records.len());
            all.append(records);
        }
    }
    let result = store.save_players(&all);
    if let Err(e) = &result {
        tracing::warn!(error = %e, records = all.len(), "checkpoint batch failed");
    }
    let mut offset = 0;
    for (env, len) in run.iter().zip(lens) {
        let StoreCommand::SavePlayers { token, .. } = env.cmd else {
            continue;
        };
        let mine = match &result {
            Ok(outcomes) => {
                let slice = outcomes.get(offset..offset + len).map(<[_]>::to_vec);
                slice.ok_or_else(|| StoreError::Invalid {
                    reason: "backend returned fewer outcomes than records".into(),
                })
            }
            Err(e) => Err(e.clone()),
        };
        offset += len;
        if let Ok(o) = &mine {
            let stale = o
                .iter()
                .filter(|s| matches!(s, SaveOutcome::Stale { .. }))
                .count();
            stats.saves_stale.fetch_add(stale as u64, Ordering::Relaxed);
        }
        let failed = mine.is_err();
        finish(
            env,
            StoreReply::Saved {
                token,
                result: mine,
            },
            failed,
            stats,
            meters,
        );
    }
}

fn execute_items(store: &dyn Store, run: &mut [Envelope], stats: &StoreStats, meters: &Meters) {
    let ops: Vec<ItemOp> = run
        .iter()
        .filter_map(|e| match &e.cmd {
            StoreCommand::ItemOp { op, .. } => Some(op.clone()),
            _ => None,
        })
        .collect();
    let results = store.apply_item_ops(&ops);
    if let Err(e) = &results {
        tracing::warn!(error = %e, ops = ops.len(), "item operation batch failed");
    }
    for (i, env) in run.iter().enumerate() {
        let StoreCommand::ItemOp { token, ref op } = env.cmd else {
            continue;
        };
        let result = match &results {
            Ok(r) => r.get(i).cloned().unwrap_or(Err(StoreError::Invalid {
                reason: "backend returned fewer outcomes than ops".into(),
            })),
            Err(e) => Err(e.clone()),
        };
        let failed = result.is_err();
        finish(
            env,
            StoreReply::Item {
                token,
                op_id: op.op_id,
                result,
            },
            failed,
            stats,
            meters,
        );
    }
}

fn execute_one(store: &dyn Store, env: &mut Envelope, stats: &StoreStats, meters: &Meters) {
    let (reply, failed) = match env.cmd {
        StoreCommand::LoadPlayer { token, player_id } => {
            let result = store.load_player(player_id);
            if let Err(e) = &result {
                tracing::warn!(player_id, error = %e, "loading a player failed");
            }
            let failed = result.is_err();
            (
                StoreReply::Loaded {
                    token,
                    player_id,
                    result,
                },
                failed,
            )
        }
        StoreCommand::LoadItems { token, owner } => {
            let result = store.items_of(owner);
            let failed = result.is_err();
            (
                StoreReply::Items {
                    token,
                    owner,
                    result,
                },
                failed,
            )
        }
        StoreCommand::Trade {
            token,
            ref manifest,
        } => {
            let result = store.run_trade(manifest);
            if let Err(e) = &result {
                tracing::warn!(trade = manifest.trade_id, error = %e, "trade failed");
            }
            let failed = result.is_err();
            (
                StoreReply::Trade {
                    token,
                    trade_id: manifest.trade_id,
                    result,
                },
                failed,
            )
        }
        StoreCommand::Barrier { token } => (StoreReply::Barrier { token }, false),
        // Grouped elsewhere; never reached.
        StoreCommand::SavePlayers { token, .. } => (
            StoreReply::Saved {
                token,
                result: Err(StoreError::Closed),
            },
            true,
        ),
        StoreCommand::ItemOp { token, ref op } => (
            StoreReply::Item {
                token,
                op_id: op.op_id,
                result: Err(StoreError::Closed),
            },
            true,
        ),
    };
    finish(env, reply, failed, stats, meters);
}

/// Which players are due for a checkpoint: a small helper for the sim (time is an
/// argument). Mark a player dirty when its durable state changes; take the due ones every
/// tick (or every second); take everyone on drain.
#[derive(Debug, Default)]
pub struct DirtySet {
    /// player id -> when it first became dirty since its last checkpoint.
    dirty: std::collections::HashMap<u64, Instant>,
}

impl DirtySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `player_id` dirty at `now` (keeps the earlier time if already dirty).
    pub fn mark(&mut self, player_id: u64, now: Instant) {
        self.dirty.entry(player_id).or_insert(now);
    }

    /// Forgets `player_id` (checkpointed for another reason: zone change, disconnect).
    pub fn clear(&mut self, player_id: u64) {
        self.dirty.remove(&player_id);
    }

    /// Moves the players dirty for at least `interval` into `out` and forgets them.
    pub fn take_due(&mut self, now: Instant, interval: Duration, out: &mut Vec<u64>) {
        self.dirty.retain(|&id, since| {
            let due = now.saturating_duration_since(*since) >= interval;
            if due {
                out.push(id);
            }
            !due
        });
    }

    /// Moves every dirty player into `out` (drain).
    pub fn take_all(&mut self, out: &mut Vec<u64>) {
        out.extend(self.dirty.drain().map(|(id, _)| id));
    }

    /// Number of dirty players.
    pub fn len(&self) -> usize {
        self.dirty.len()
    }

    /// Whether no player is dirty.
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }
}

#[cfg(test)]
mod tests;
