//! The write-behind store worker.
//!
//! The simulation never waits on a disk or a database: a sim worker [`StoreHandle::submit`]s
//! commands (never blocks: a full queue is refused with [`SubmitError::Full`] and counted)
//! and, at the start of each tick, [`StoreHandle::drain_replies`] collects the answers that
//! arrived since (never blocks either). The store worker is one thread that owns the
//! [`Store`]; it takes everything queued (up to `max_batch` commands), executes runs of
//! consecutive saves as one `save_players` call and runs of consecutive item operations as
//! one `apply_item_ops` call (one transaction, one fsync: group commit), keeping the
//! submission order between runs so a load sees every save submitted before it.
//!
//! Every command gets exactly one reply, on the queue of the handle that submitted it.
//! Each handle bounds its commands in flight (`replies_capacity`), so its reply queue is
//! bounded too and can never overflow.
//!
//! Metrics (names are declared in `telemetry.rs`): `zonehost_store_op_seconds{op}` is
//! recorded here per command, from submission to reply (queueing included: what the sim
//! sees); [`StoreStats`] holds the counters and the queue depth gauge published at scrape.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::trade::TradeOutcome;
use super::{
    ItemOp, ItemOutcome, ItemRecord, Owner, PlayerRecord, SaveOutcome, Store, StoreConfig,
    StoreError, TradeRecord,
};

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
    queue: ArrayQueue<StoreReply>,
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
    tx: SyncSender<Msg>,
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
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        let env = Envelope {
            cmd,
            replies: self.replies.clone(),
            submitted: Instant::now(),
        };
        match self.tx.try_send(Msg::Cmd(env)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.replies.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                let (full, msg) = match e {
                    TrySendError::Full(m) => (true, m),
                    TrySendError::Disconnected(m) => (false, m),
                };
                let Msg::Cmd(env) = msg else {
                    return Ok(());
                };
                if full {
                    self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                    Err(SubmitError::Full(Box::new(env.cmd)))
                } else {
                    Err(SubmitError::Closed(Box::new(env.cmd)))
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
    tx: SyncSender<Msg>,
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
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let stats = Arc::new(StoreStats::default());
        let worker_stats = stats.clone();
        let max_batch = config.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("zonehost-store".into())
            .spawn(move || run(store, rx, worker_stats, max_batch))?;
        Ok(Self {
            tx,
            stats,
            replies_capacity: config.replies_capacity.max(1),
            thread: Some(thread),
        })
    }

    /// A new handle with its own reply queue (one per sim worker).
    pub fn handle(&self) -> StoreHandle {
        StoreHandle {
            tx: self.tx.clone(),
            replies: Arc::new(ReplyQueue {
                queue: ArrayQueue::new(self.replies_capacity),
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

fn run(store: Box<dyn Store>, rx: Receiver<Msg>, stats: Arc<StoreStats>, max_batch: usize) {
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
            execute(store.as_ref(), &mut batch, &stats, &meters);
        }
        if stop {
            break;
        }
    }
    tracing::debug!("store worker stopped");
}

/// Most reads (player loads, item loads) of one run executed at once. A burst of logins
/// queues a run of them; one after another they cost a database round trip each (on a
/// ScyllaDB or Cassandra node loaded by a login burst, tens of milliseconds), which made
/// logins time out behind each other. Reads are independent of each other, and every write
/// submitted before them has completed when their run starts.
const READ_PARALLELISM: usize = 8;

fn kind_of(cmd: &StoreCommand) -> u8 {
    match cmd {
        StoreCommand::SavePlayers { .. } => 0,
        StoreCommand::ItemOp { .. } => 1,
        StoreCommand::LoadPlayer { .. } | StoreCommand::LoadItems { .. } => 3,
        _ => 2,
    }
}

/// A run of reads, up to [`READ_PARALLELISM`] at once (scoped threads: the store's calls
/// block their thread).
fn execute_reads(store: &dyn Store, run: &mut [Envelope], stats: &StoreStats, meters: &Meters) {
    if run.len() == 1 {
        for env in run.iter_mut() {
            execute_one(store, env, stats, meters);
        }
        return;
    }
    let per_thread = run.len().div_ceil(READ_PARALLELISM);
    std::thread::scope(|scope| {
        for chunk in run.chunks_mut(per_thread) {
            scope.spawn(move || {
                for env in chunk.iter_mut() {
                    execute_one(store, env, stats, meters);
                }
            });
        }
    });
}

fn execute(store: &dyn Store, batch: &mut Vec<Envelope>, stats: &StoreStats, meters: &Meters) {
    let mut rest: &mut [Envelope] = batch.as_mut_slice();
    while let Some(first) = rest.first() {
        let kind = kind_of(&first.cmd);
        let run_len = if kind == 2 {
            1
        } else {
            rest.iter().take_while(|e| kind_of(&e.cmd) == kind).count()
        };
        let (run, tail) = rest.split_at_mut(run_len);
        match kind {
            0 => execute_saves(store, run, stats, meters),
            1 => execute_items(store, run, stats, meters),
            3 => execute_reads(store, run, stats, meters),
            _ => {
                for env in run.iter_mut() {
                    execute_one(store, env, stats, meters);
                }
            }
        }
        rest = tail;
    }
    batch.clear();
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
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;
    use crate::store::ItemOpKind;

    fn temp_path(tag: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::env::temp_dir()
            .join(format!(
                "zonehost-writer-{tag}-{}-{nanos:x}",
                std::process::id()
            ))
            .join("store.redb")
    }

    fn wait_for(handle: &StoreHandle, n: usize) -> Vec<StoreReply> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.len() < n && Instant::now() < deadline {
            handle.drain_replies(&mut out);
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    }

    #[test]
    fn replies_come_back_in_order_to_the_submitting_handle() {
        let path = temp_path("order");
        let store = RedbStore::open(&path).expect("open");
        let worker = StoreWorker::spawn(Box::new(store), &StoreConfig::default()).expect("spawn");
        let a = worker.handle();
        let b = worker.handle();
        let mut rec = PlayerRecord::new("writer");
        rec.epoch = 1;
        rec.seq = 1;
        a.submit(StoreCommand::SavePlayers {
            token: 1,
            records: vec![rec.clone()],
        })
        .expect("submit");
        a.submit(StoreCommand::LoadPlayer {
            token: 2,
            player_id: rec.player_id,
        })
        .expect("submit");
        b.submit(StoreCommand::ItemOp {
            token: 3,
            op: ItemOp {
                op_id: 9,
                item_id: 9,
                kind: ItemOpKind::Create {
                    owner: Owner::Player(rec.player_id),
                    data: vec![1],
                },
            },
        })
        .expect("submit");
        b.submit(StoreCommand::Barrier { token: 4 })
            .expect("submit");
        let ra = wait_for(&a, 2);
        let rb = wait_for(&b, 2);
        assert!(matches!(ra[0], StoreReply::Saved { token: 1, result: Ok(ref o) } if o.len() == 1));
        match &ra[1] {
            StoreReply::Loaded {
                token: 2,
                result: Ok(Some(r)),
                ..
            } => assert_eq!(r.fence(), rec.fence()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            rb[0],
            StoreReply::Item {
                token: 3,
                result: Ok(ItemOutcome::Created { .. }),
                ..
            }
        ));
        assert!(matches!(rb[1], StoreReply::Barrier { token: 4 }));
        assert_eq!(a.in_flight(), 0);
        assert_eq!(worker.stats().ops(StoreOp::Save), 1);
        assert_eq!(worker.stats().queue_depth(), 0);
        worker.stop();
        assert!(matches!(
            a.submit(StoreCommand::Barrier { token: 5 }),
            Err(SubmitError::Closed(_))
        ));
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_handle_refuses_beyond_its_in_flight_limit() {
        let path = temp_path("full");
        let store = RedbStore::open(&path).expect("open");
        let config = StoreConfig {
            replies_capacity: 2,
            ..StoreConfig::default()
        };
        let worker = StoreWorker::spawn(Box::new(store), &config).expect("spawn");
        let h = worker.handle();
        h.submit(StoreCommand::Barrier { token: 1 }).expect("1");
        h.submit(StoreCommand::Barrier { token: 2 }).expect("2");
        assert!(matches!(
            h.submit(StoreCommand::Barrier { token: 3 }),
            Err(SubmitError::Full(_))
        ));
        let got = wait_for(&h, 2);
        assert_eq!(got.len(), 2);
        h.submit(StoreCommand::Barrier { token: 3 })
            .expect("room again");
        assert_eq!(worker.stats().refused_full.load(Ordering::Relaxed), 1);
        drop(worker);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn dirty_set_takes_due_players_only() {
        let t0 = Instant::now();
        let mut d = DirtySet::new();
        d.mark(1, t0);
        d.mark(2, t0 + Duration::from_secs(5));
        d.mark(1, t0 + Duration::from_secs(6));
        let mut out = Vec::new();
        d.take_due(
            t0 + Duration::from_secs(10),
            Duration::from_secs(10),
            &mut out,
        );
        assert_eq!(out, vec![1]);
        assert_eq!(d.len(), 1);
        out.clear();
        d.take_all(&mut out);
        assert_eq!(out, vec![2]);
        assert!(d.is_empty());
    }
}
