//! A sim worker's side of persistence: what it has asked the store worker and is waiting
//! for, and the conversions between live game state and durable records.
//!
//! Nothing here blocks: commands are [`StoreHandle::submit`]ted (a full queue keeps them
//! in a local backlog, retried in order every tick) and replies are drained at the start
//! of each tick. The worker (`worker.rs`) decides *when* to load, checkpoint and commit
//! item operations; this module keeps the bookkeeping:
//! - logins waiting for their record and their items ([`PendingLoad`]);
//! - item operations in flight, with the client response held until the commit
//!   ([`PendingItem`], [`HeldResponse`]);
//! - checkpoints in flight ([`PendingSave`]), the dirty set, the drain barrier.
//!
//! Durable encodings: [`PlayerRecord::state`] holds a version byte ([`STATE_VERSION`])
//! followed by the postcard encoding of [`PlayerState`]; an item row's data is the
//! postcard encoding of the game [`Item`]. The item table is the truth of ownership: on
//! load, [`reconcile`] makes the inventory agree with `items_of(Player(id))`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zonehost_game::{Item, PlayerState, RequestKind, BAG_SLOTS};

use super::ports::LeaseFence;
use super::{Join, SessionId};
use crate::store::writer::{DirtySet, StoreCommand, StoreHandle, StoreReply, SubmitError};
use crate::store::{ItemOp, ItemRecord, Owner, PlayerRecord, StoreError, TradeRecord};

/// Version byte in front of the encoded [`PlayerState`] in [`PlayerRecord::state`].
pub const STATE_VERSION: u8 = 1;

/// How many times an item operation that failed (I/O, unknown outcome) is resubmitted
/// with the same op id before the client is answered `Internal`.
pub const ITEM_OP_ATTEMPTS: u8 = 3;

/// Encodes a player's game state for [`PlayerRecord::state`].
pub fn encode_state(state: &PlayerState) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![STATE_VERSION];
    let body = postcard::to_allocvec(state).map_err(|e| StoreError::Invalid {
        reason: format!("encoding the state of player {}: {e}", state.player_id),
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes [`PlayerRecord::state`]; anything unreadable is [`StoreError::Corrupt`] with
/// the player id.
pub fn decode_state(player_id: u64, bytes: &[u8]) -> Result<PlayerState, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { player_id, reason };
    match bytes.split_first() {
        None => Err(corrupt("empty game state".into())),
        Some((&STATE_VERSION, body)) => {
            let state: PlayerState = postcard::from_bytes(body)
                .map_err(|e| corrupt(format!("game state does not decode: {e}")))?;
            if state.player_id != player_id {
                return Err(corrupt(format!(
                    "game state belongs to player {}",
                    state.player_id
                )));
            }
            Ok(state)
        }
        Some((v, _)) => Err(corrupt(format!("unknown game state version {v}"))),
    }
}

/// Encodes an item for its row's data.
pub fn encode_item(item: &Item) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(item).map_err(|e| StoreError::Invalid {
        reason: format!("encoding item {:032x}: {e}", item.id.0),
    })
}

/// Decodes an item row's data (`None`: unreadable or not this item).
pub fn decode_item(record: &ItemRecord) -> Option<Item> {
    let item: Item = postcard::from_bytes(&record.data).ok()?;
    (item.id.0 == record.item_id).then_some(item)
}

/// What [`reconcile`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Items in the saved state the store says the player does not own (removed).
    pub removed: usize,
    /// Items the store says the player owns that the saved state lacked (added to the bag).
    pub added: usize,
    /// Owned items that could not be placed (bag full or unreadable data); they stay in
    /// the store, owned by the player, and are retried at the next login.
    pub unplaced: usize,
}

/// Makes `state`'s inventory agree with the item table: `owned` (the player's live items,
/// the truth of ownership) decides which items the player has.
pub fn reconcile(state: &mut PlayerState, owned: &[ItemRecord]) -> Reconciled {
    let mut r = Reconciled::default();
    let owns = |id: u128| owned.iter().any(|o| o.item_id == id);
    let before = state.inventory.bag.len();
    state.inventory.bag.retain(|i| owns(i.id.0));
    r.removed += before - state.inventory.bag.len();
    let worn: Vec<_> = state
        .inventory
        .equipment
        .iter()
        .filter(|(_, i)| !owns(i.id.0))
        .map(|(s, _)| s)
        .collect();
    for slot in worn {
        state.inventory.equipment.set(slot, None);
        r.removed += 1;
    }
    for rec in owned {
        let have = state.inventory.item_ids().any(|id| id.0 == rec.item_id);
        if have {
            continue;
        }
        match decode_item(rec) {
            Some(item) if state.inventory.bag.len() < BAG_SLOTS => {
                state.inventory.bag.push(item);
                r.added += 1;
            }
            _ => r.unplaced += 1,
        }
    }
    r
}

/// Unix time, milliseconds (kept here for existing callers; it lives in [`crate::clock`]).
pub use crate::clock::unix_millis;

/// Builds a checkpoint record. `state` is authoritative; level, XP and gold are copied
/// into the queryable columns.
pub fn record_of(
    name: &str,
    fence: (u64, u64),
    zone: u16,
    pos_mm: (i32, i32),
    state: &PlayerState,
) -> Result<PlayerRecord, StoreError> {
    Ok(PlayerRecord {
        player_id: state.player_id,
        name: name.to_owned(),
        schema_version: u32::from(crate::store::record::RECORD_VERSION),
        epoch: fence.0,
        seq: fence.1,
        zone,
        x_mm: pos_mm.0,
        y_mm: pos_mm.1,
        level: u32::from(state.level),
        xp: state.xp,
        gold: state.inventory.gold,
        state: encode_state(state)?,
        saved_at_ms: unix_millis(),
    })
}

/// The game state a record describes: its state blob, or (a record written by a tool,
/// without one) its columns.
pub fn state_of(record: &PlayerRecord) -> Result<PlayerState, StoreError> {
    if record.state.is_empty() {
        let mut s = PlayerState::new(record.player_id);
        s.level = u8::try_from(record.level.clamp(1, 50)).unwrap_or(1);
        s.xp = record.xp;
        s.inventory.gold = record.gold;
        return Ok(s);
    }
    decode_state(record.player_id, &record.state)
}

/// What a worker needs to persist, shared by the workers of one server.
#[derive(Debug, Clone)]
pub struct PersistSettings {
    /// Fence epoch: the epoch of the server's store lease.
    pub epoch: u64,
    /// Checkpoint sequence, shared by every worker (monotonic within the epoch).
    pub seq: Arc<AtomicU64>,
    /// Dirty players are checkpointed at least this often.
    pub checkpoint_interval: Duration,
    /// Set when this worker's drain barrier has been answered and no checkpoint is in
    /// flight any more (its final checkpoints are durable).
    pub flushed: Arc<AtomicBool>,
    /// Item operations refused by the store or failed for good (answered `Internal`).
    pub item_failures: Arc<AtomicU64>,
    /// Player ownership leases (cluster mode): each player's checkpoints are fenced by
    /// its lease, and a player whose lease is lost is not written any more. `None`: every
    /// checkpoint takes the run's `epoch`.
    pub leases: Option<Arc<dyn LeaseFence>>,
}

impl PersistSettings {
    /// Settings for one server: fresh shared sequence and counters.
    pub fn new(epoch: u64, checkpoint_interval: Duration) -> Self {
        Self {
            epoch,
            seq: Arc::new(AtomicU64::new(0)),
            checkpoint_interval,
            flushed: Arc::new(AtomicBool::new(false)),
            item_failures: Arc::new(AtomicU64::new(0)),
            leases: None,
        }
    }

    /// The same settings fencing each player's checkpoints with its ownership lease.
    pub fn with_leases(mut self, leases: Arc<dyn LeaseFence>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// The same server-wide sequence and counters with a flag of its own (one per
    /// worker).
    pub fn for_worker(&self) -> Self {
        Self {
            flushed: Arc::new(AtomicBool::new(false)),
            ..self.clone()
        }
    }

    /// The next fence `(epoch, seq)`.
    pub fn next_fence(&self) -> (u64, u64) {
        (self.epoch, self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The next fence for a checkpoint of `player_id`'s `session`: with player leases, the
    /// lease's fence epoch, or `None` when the lease is lost (nothing may be written);
    /// without, [`PersistSettings::next_fence`].
    pub fn fence_for(&self, player_id: u64, session: SessionId) -> Option<(u64, u64)> {
        match &self.leases {
            None => Some(self.next_fence()),
            Some(l) => {
                let epoch = l.fence_epoch(player_id, session)?;
                Some((epoch, self.seq.fetch_add(1, Ordering::Relaxed) + 1))
            }
        }
    }

    /// The session ended and its final checkpoint (if any) was answered: its lease, if
    /// any, may be released (a lost one is forgotten).
    pub fn session_done(&self, player_id: u64, session: SessionId) {
        if let Some(l) = &self.leases {
            l.session_ended(player_id, session);
        }
    }

    /// The store's id of a zone instance of this process (instance ids restart with the
    /// process; the epoch does not repeat).
    pub fn store_instance(&self, instance: u32) -> u64 {
        (self.epoch << 32) | u64::from(instance)
    }
}

/// A client response held until the store answers.
#[derive(Debug, Clone, Copy)]
pub struct HeldResponse {
    /// Session to answer.
    pub session: SessionId,
    /// Request id.
    pub request_id: u32,
    /// Request kind (its name is the metrics label).
    pub kind: RequestKind,
    /// When the request was received.
    pub received: Instant,
}

/// A login waiting for its record and items.
#[derive(Debug)]
pub struct PendingLoad {
    /// The session.
    pub join: Box<Join>,
    /// The record, once loaded.
    pub record: Option<Result<Option<PlayerRecord>, StoreError>>,
    /// The player's items, once loaded.
    pub items: Option<Result<Vec<ItemRecord>, StoreError>>,
}

/// An item operation in flight.
#[derive(Debug)]
pub struct PendingItem {
    /// The operation (resubmitted unchanged on failure).
    pub op: ItemOp,
    /// The session whose action it is (`None`: a sweep).
    pub session: Option<SessionId>,
    /// The instance it happened in.
    pub instance: u32,
    /// The response to send once committed.
    pub held: Option<HeldResponse>,
    /// Submissions so far.
    pub attempts: u8,
}

/// A trade being made durable.
#[derive(Debug)]
pub struct PendingTrade {
    /// The manifest (resubmitted unchanged on failure: every step replays).
    pub manifest: TradeRecord,
    /// The instance it happens in.
    pub instance: u32,
    /// The world's id of the trade.
    pub world_trade: u32,
    /// The response to the acceptance that completed the pair.
    pub held: Option<HeldResponse>,
    /// Submissions so far.
    pub attempts: u8,
    /// When it was submitted first.
    pub started: Instant,
}

/// How many times a checkpoint that failed (I/O, unknown outcome) is resubmitted unchanged
/// (same fences: a copy that landed is recognised) before it is given up. A session's
/// last checkpoint (disconnect, drain) has no later one to fall back on.
pub const SAVE_ATTEMPTS: u8 = 3;

/// A checkpoint in flight.
#[derive(Debug, Default)]
pub struct PendingSave {
    /// Sessions saved (marked dirty again if the save fails).
    pub sessions: Vec<SessionId>,
    /// Player ids saved, in record order.
    pub players: Vec<u64>,
    /// The records, kept to resubmit them unchanged after a failure.
    pub records: Vec<PlayerRecord>,
    /// Submissions so far.
    pub attempts: u8,
    /// Responses to send once committed (equip, unequip).
    pub held: Vec<HeldResponse>,
    /// The ended session `(player id, session)` whose final checkpoint this is: its lease
    /// is released once it is answered (boxed: rare, and keeps this small).
    pub ended: Option<Box<(u64, SessionId)>>,
}

/// A worker's persistence state: the commands in flight and what waits on them, kept
/// behind methods (the worker never edits the maps itself).
#[derive(Debug)]
pub struct Persist {
    /// Connection to the store worker.
    handle: StoreHandle,
    /// Shared settings.
    pub settings: PersistSettings,
    next_token: u64,
    backlog: VecDeque<StoreCommand>,
    /// Logins waiting for the store, by token.
    loads: HashMap<u64, PendingLoad>,
    /// Item operations in flight, by token.
    items: HashMap<u64, PendingItem>,
    /// Checkpoints in flight, by token.
    saves: HashMap<u64, PendingSave>,
    /// Trades in flight, by token.
    trades: HashMap<u64, PendingTrade>,
    /// Sessions whose durable state changed since their last checkpoint.
    dirty: DirtySet,
    /// Token of the drain barrier, once submitted.
    barrier: Option<u64>,
    /// The drain barrier was answered; the worker reports itself flushed once no
    /// checkpoint is left in flight either (a failed final checkpoint is resubmitted after
    /// the barrier, see [`Persist::resave`]).
    barrier_answered: bool,
    /// Reply buffer, reused.
    replies: Vec<StoreReply>,
}

impl Persist {
    /// A worker's persistence over `handle`.
    pub fn new(handle: StoreHandle, settings: PersistSettings) -> Self {
        Self {
            handle,
            settings,
            next_token: 1,
            backlog: VecDeque::new(),
            loads: HashMap::new(),
            items: HashMap::new(),
            saves: HashMap::new(),
            trades: HashMap::new(),
            dirty: DirtySet::new(),
            barrier: None,
            barrier_answered: false,
            replies: Vec::new(),
        }
    }

    /// A fresh token.
    pub fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// A fresh random operation id.
    pub fn op_id(&mut self) -> u128 {
        let mut b = [0u8; 16];
        if getrandom::fill(&mut b).is_err() {
            // Still unique per server: epoch and a token never repeat.
            return (u128::from(self.settings.epoch) << 64) | u128::from(self.token());
        }
        u128::from_le_bytes(b)
    }

    /// Queues a command without blocking; behind a backlog, or when the store's queue is
    /// full, it waits in the backlog (order kept).
    pub fn submit(&mut self, cmd: StoreCommand) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(cmd);
            return;
        }
        match self.handle.submit(cmd) {
            Ok(()) => {}
            Err(SubmitError::Full(cmd)) => self.backlog.push_back(*cmd),
            Err(SubmitError::Closed(cmd)) => {
                tracing::error!(command = ?cmd_kind(&cmd), "store worker stopped: command lost");
            }
        }
    }

    /// Resubmits the backlog in order, as far as the store takes it.
    pub fn flush_backlog(&mut self) {
        while let Some(cmd) = self.backlog.pop_front() {
            match self.handle.submit(cmd) {
                Ok(()) => {}
                Err(SubmitError::Full(cmd)) => {
                    self.backlog.push_front(*cmd);
                    return;
                }
                Err(SubmitError::Closed(cmd)) => {
                    tracing::error!(command = ?cmd_kind(&cmd), "store worker stopped: command lost");
                }
            }
        }
    }

    /// Commands waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Submits an item operation; returns its token.
    pub fn item_op(&mut self, op: ItemOp, session: Option<SessionId>, instance: u32) -> u64 {
        let token = self.token();
        self.submit(StoreCommand::ItemOp {
            token,
            op: op.clone(),
        });
        self.items.insert(
            token,
            PendingItem {
                op,
                session,
                instance,
                held: None,
                attempts: 1,
            },
        );
        token
    }

    /// Submits a trade; returns its token.
    pub fn trade(&mut self, manifest: TradeRecord, instance: u32, world_trade: u32) -> u64 {
        let token = self.token();
        self.submit(StoreCommand::Trade {
            token,
            manifest: manifest.clone(),
        });
        self.trades.insert(
            token,
            PendingTrade {
                manifest,
                instance,
                world_trade,
                held: None,
                attempts: 1,
                started: Instant::now(),
            },
        );
        token
    }

    /// A fresh trade id: random, or (no randomness) unique per server run.
    pub fn trade_id(&mut self) -> u64 {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            return (self.settings.epoch << 32) | (self.token() & 0xffff_ffff);
        }
        u64::from_le_bytes(b)
    }

    /// Submits checkpoints; returns the token.
    pub fn save(&mut self, records: Vec<PlayerRecord>, sessions: Vec<SessionId>) -> u64 {
        let token = self.token();
        let players = records.iter().map(|r| r.player_id).collect();
        self.submit(StoreCommand::SavePlayers {
            token,
            records: records.clone(),
        });
        self.saves.insert(
            token,
            PendingSave {
                sessions,
                players,
                records,
                attempts: 1,
                held: Vec::new(),
                ended: None,
            },
        );
        token
    }

    /// Resubmits a failed checkpoint unchanged under its token; hands it back once it has
    /// had its [`SAVE_ATTEMPTS`].
    pub fn resave(&mut self, token: u64, mut pending: PendingSave) -> Result<(), PendingSave> {
        if pending.attempts >= SAVE_ATTEMPTS {
            return Err(pending);
        }
        pending.attempts += 1;
        self.submit(StoreCommand::SavePlayers {
            token,
            records: pending.records.clone(),
        });
        self.saves.insert(token, pending);
        Ok(())
    }

    /// Loads `join`'s player: its record and its items, under one token (the player
    /// enters once both have arrived, [`Persist::take_loaded`]).
    pub fn load(&mut self, join: Box<Join>) {
        let token = self.token();
        let player_id = join.player_id;
        self.submit(StoreCommand::LoadPlayer { token, player_id });
        self.submit(StoreCommand::LoadItems {
            token,
            owner: Owner::Player(player_id),
        });
        self.loads.insert(
            token,
            PendingLoad {
                join,
                record: None,
                items: None,
            },
        );
    }

    /// The record of load `token` arrived.
    pub fn loaded_record(&mut self, token: u64, result: Result<Option<PlayerRecord>, StoreError>) {
        if let Some(l) = self.loads.get_mut(&token) {
            l.record = Some(result);
        }
    }

    /// The items of load `token` arrived.
    pub fn loaded_items(&mut self, token: u64, result: Result<Vec<ItemRecord>, StoreError>) {
        if let Some(l) = self.loads.get_mut(&token) {
            l.items = Some(result);
        }
    }

    /// Takes load `token` once both its record and its items have arrived.
    pub fn take_loaded(&mut self, token: u64) -> Option<PendingLoad> {
        let ready = self
            .loads
            .get(&token)
            .is_some_and(|l| l.record.is_some() && l.items.is_some());
        if !ready {
            return None;
        }
        self.loads.remove(&token)
    }

    /// Forgets the load of `session` (its connection ended first); its join, if it was
    /// loading.
    pub fn cancel_load(&mut self, session: SessionId) -> Option<Box<Join>> {
        let token = self
            .loads
            .iter()
            .find(|(_, l)| l.join.session == session)
            .map(|(t, _)| *t)?;
        self.loads.remove(&token).map(|l| l.join)
    }

    /// Forgets every load in flight (a drain); their joins.
    pub fn take_loads(&mut self) -> Vec<Box<Join>> {
        self.loads.drain().map(|(_, l)| l.join).collect()
    }

    /// Whether `session` waits for its player to load.
    pub fn is_loading(&self, session: SessionId) -> bool {
        self.loads.values().any(|l| l.join.session == session)
    }

    /// Takes the item operation `token` (answered by the store).
    pub fn take_item(&mut self, token: u64) -> Option<PendingItem> {
        self.items.remove(&token)
    }

    /// Resubmits a failed item operation under its token, with the same op id (one
    /// attempt more).
    pub fn retry_item(&mut self, token: u64, mut pending: PendingItem) {
        pending.attempts += 1;
        self.submit(StoreCommand::ItemOp {
            token,
            op: pending.op.clone(),
        });
        self.items.insert(token, pending);
    }

    /// Item operations in flight for `session`.
    pub fn item_ops_of(&self, session: SessionId) -> usize {
        self.items
            .values()
            .filter(|i| i.session == Some(session))
            .count()
    }

    /// Takes the trade `token` (answered by the store).
    pub fn take_trade(&mut self, token: u64) -> Option<PendingTrade> {
        self.trades.remove(&token)
    }

    /// Resubmits a failed trade unchanged under its token (one attempt more).
    pub fn retry_trade(&mut self, token: u64, mut pending: PendingTrade) {
        pending.attempts += 1;
        self.submit(StoreCommand::Trade {
            token,
            manifest: pending.manifest.clone(),
        });
        self.trades.insert(token, pending);
    }

    /// Takes the checkpoint `token` (answered by the store).
    pub fn take_save(&mut self, token: u64) -> Option<PendingSave> {
        self.saves.remove(&token)
    }

    /// Marks checkpoint `token` as the final one of `player_id`'s ended `session`: its
    /// lease is released once it is answered.
    pub fn mark_final(&mut self, token: u64, player_id: u64, session: SessionId) {
        if let Some(pending) = self.saves.get_mut(&token) {
            pending.ended = Some(Box::new((player_id, session)));
        }
    }

    /// Whether the final checkpoint of ended `session` is in flight.
    pub fn final_save_pending(&self, session: SessionId) -> bool {
        self.saves
            .values()
            .any(|s| s.ended.as_ref().is_some_and(|e| e.1 == session))
    }

    /// Whether a response to `session` waits for a checkpoint.
    pub fn holds_for(&self, session: SessionId) -> bool {
        self.saves
            .values()
            .any(|s| s.held.iter().any(|h| h.session == session))
    }

    /// `session`'s durable state changed at `now`.
    pub fn mark_dirty(&mut self, session: SessionId, now: Instant) {
        self.dirty.mark(session, now);
    }

    /// `session` needs no checkpoint (one is being built, or it left).
    pub fn clear_dirty(&mut self, session: SessionId) {
        self.dirty.clear(session);
    }

    /// Moves the sessions dirty for at least the checkpoint interval at `now` into `due`.
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<SessionId>) {
        self.dirty
            .take_due(now, self.settings.checkpoint_interval, due);
    }

    /// Submits the drain barrier: everything submitted before it is durable once it is
    /// answered.
    pub fn submit_barrier(&mut self) {
        let token = self.token();
        self.submit(StoreCommand::Barrier { token });
        self.barrier = Some(token);
    }

    /// The barrier `token` was answered.
    pub fn barrier_answered(&mut self, token: u64) {
        if self.barrier == Some(token) {
            self.barrier_answered = true;
        }
    }

    /// Reports this worker flushed once its drain barrier was answered and no checkpoint
    /// or command is left in flight or waiting.
    pub fn update_flushed(&self) {
        if self.barrier_answered && self.saves.is_empty() && self.backlog.is_empty() {
            self.settings.flushed.store(true, Ordering::Release);
        }
    }

    /// The store's replies since the last call (never blocks), in the reused buffer: give
    /// it back with [`Persist::reuse_replies`].
    pub fn take_replies(&mut self) -> Vec<StoreReply> {
        let mut replies = std::mem::take(&mut self.replies);
        self.handle.drain_replies(&mut replies);
        replies
    }

    /// Keeps the (emptied) reply buffer for the next [`Persist::take_replies`].
    pub fn reuse_replies(&mut self, replies: Vec<StoreReply>) {
        self.replies = replies;
    }

    /// Holds a response until the command `token` is answered; false if no such command
    /// is in flight (answer at once).
    pub fn hold(&mut self, token: u64, held: HeldResponse) -> bool {
        if let Some(p) = self.items.get_mut(&token) {
            p.held = Some(held);
            return true;
        }
        if let Some(p) = self.saves.get_mut(&token) {
            p.held.push(held);
            return true;
        }
        if let Some(p) = self.trades.get_mut(&token) {
            p.held = Some(held);
            return true;
        }
        false
    }
}

fn cmd_kind(cmd: &StoreCommand) -> &'static str {
    match cmd {
        StoreCommand::SavePlayers { .. } => "save",
        StoreCommand::ItemOp { .. } => "item",
        StoreCommand::LoadPlayer { .. } => "load",
        StoreCommand::LoadItems { .. } => "items",
        StoreCommand::Barrier { .. } => "barrier",
        StoreCommand::Trade { .. } => "trade",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Owner;
    use zonehost_game::{EquipSlot, ItemId};

    fn item(id: u128, base: u16) -> Item {
        Item::common(ItemId(id), base, 1)
    }

    fn row(i: &Item, owner: u64) -> ItemRecord {
        ItemRecord {
            item_id: i.id.0,
            owner: Some(Owner::Player(owner)),
            data: encode_item(i).expect("encode"),
            last_op: 1,
        }
    }

    #[test]
    fn state_round_trips_and_damage_is_corrupt() {
        let mut s = PlayerState::new(9);
        s.level = 7;
        s.inventory.bag.push(item(u128::MAX - 3, 40));
        let bytes = encode_state(&s).expect("encode");
        assert_eq!(decode_state(9, &bytes).expect("decode"), s);
        assert!(matches!(
            decode_state(8, &bytes),
            Err(StoreError::Corrupt { player_id: 8, .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert!(matches!(
            decode_state(9, &bad),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode_state(9, &bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn reconcile_follows_the_item_table() {
        let kept = item(1, 40);
        let gone = item(2, 40);
        let sword = item(3, 1);
        let missing = item(4, 40);
        let mut s = PlayerState::new(5);
        s.inventory.bag = vec![kept.clone(), gone];
        s.inventory.equipment.set(EquipSlot::Weapon, Some(sword));
        let owned = vec![row(&kept, 5), row(&missing, 5)];
        let r = reconcile(&mut s, &owned);
        assert_eq!(
            r,
            Reconciled {
                removed: 2,
                added: 1,
                unplaced: 0
            }
        );
        let ids: Vec<u128> = s.inventory.item_ids().map(|i| i.0).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&1) && ids.contains(&4));
        assert!(s.inventory.equipment.weapon().is_none());
    }
}
