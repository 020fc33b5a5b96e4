//! Durable state: player checkpoints, exactly-once item operations, leases.
//!
//! # Shape
//! - [`Store`] is the one storage interface. Backends: [`redb::RedbStore`] (embedded, the
//!   zero-setup default: one file in the data directory) and [`scylla::ScyllaStore`]
//!   (ScyllaDB, for a fleet). Both pass the same conformance suite
//!   (`tests/store_conformance.rs`).
//! - [`cache::CachedStore`] puts a moka cache of recently active player records in front of
//!   any store (fast reconnect, fewer reads).
//! - [`writer::StoreWorker`] is the write-behind worker: it owns the store on its own
//!   thread, takes [`writer::StoreCommand`]s from a bounded queue, batches them (one
//!   transaction / one round of LWTs per batch) and posts [`writer::StoreReply`]s that each sim
//!   worker drains at the start of its tick with [`writer::StoreHandle::drain_replies`],
//!   which never blocks.
//!
//! # Why the trait is synchronous
//! The sim threads never call a store: only the store worker does, on a thread of its own.
//! redb is synchronous (a write transaction blocks on `fsync`), so a synchronous trait is
//! the natural shape for the default, the conformance suite and the operator CLI. The
//! ScyllaDB backend owns a small tokio runtime; each call spawns its (internally
//! concurrent) requests there and waits for them, so it can be called from any thread,
//! including from inside another runtime, without `block_on` panics. A boxed-future trait
//! would buy nothing here (one caller, on its own thread) and would make redb pay for
//! `spawn_blocking` hops.
//!
//! # Semantics every backend implements
//! - **Checkpoint fencing.** A [`PlayerRecord`] carries a fence `(epoch, seq)`, compared
//!   lexicographically. A save is written only if its fence is greater than the stored
//!   one; otherwise it is refused as [`SaveOutcome::Stale`] and nothing changes. A server
//!   takes `epoch` from a lease it holds (a new holder gets a greater epoch, see
//!   [`Store::acquire_lease`]) and bumps `seq` per checkpoint, so a stale server can never
//!   overwrite newer state. A refusal whose `stored` fence equals the record's own fence
//!   is a retry of a save that already landed.
//! - **Items.** The item row is the single source of truth of its owner. Operations are
//!   conditional on the current owner (`Transfer { from, to }` applies only if the owner is
//!   `from`) and exactly-once: every op has a unique 128-bit `op_id`, its outcome is
//!   recorded with it, and re-applying the same `op_id` returns the recorded outcome
//!   without applying anything. Refusals are outcomes too (and are replayed as such).
//!   Destroyed items keep a tombstone: an item id is never reused.
//! - **Leases** (multi-server, later): `acquire` gives a [`Lease`] with an epoch that is
//!   greater than every earlier holder's; time is an argument (`now_ms`) so tests control
//!   it.
//! - **Bad data** (corrupt record, unknown layout version) is [`StoreError::Corrupt`] with
//!   the player id; it never panics and never affects other players. Old layouts are
//!   migrated on load (see [`record`]).

pub mod cache;
pub mod confirmed;
pub mod record;
pub mod redb;
pub mod scylla;
pub mod trade;
pub mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A checkpoint fence: `(epoch, seq)`, ordered lexicographically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// Epoch of the writer (from its lease); a new writer has a greater epoch.
    pub epoch: u64,
    /// Checkpoint sequence within the epoch.
    pub seq: u64,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.epoch, self.seq)
    }
}

/// A player's durable record: what a checkpoint saves and a login loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerRecord {
    /// Stable id, `zonehost_protocol::token::player_id(name)`.
    pub player_id: u64,
    /// Player name.
    pub name: String,
    /// Record layout version. Saves always write the current layout
    /// ([`record::RECORD_VERSION`]) whatever this says; a loaded record reports the layout
    /// it was found in (older ones are migrated on load).
    pub schema_version: u32,
    /// Fence epoch (see [`Fence`]).
    pub epoch: u64,
    /// Fence sequence (see [`Fence`]).
    pub seq: u64,
    /// Zone template id.
    pub zone: u16,
    /// Position, millimetres.
    pub x_mm: i32,
    /// Position, millimetres.
    pub y_mm: i32,
    /// Character level.
    pub level: u32,
    /// Experience points.
    pub xp: u64,
    /// Gold (a plain value, never a counter: it is saved with the rest of the checkpoint).
    pub gold: u64,
    /// Opaque, versioned game state owned by the game crate (equipment slots, quests...).
    pub state: Vec<u8>,
    /// Wall-clock time of the checkpoint, Unix milliseconds.
    pub saved_at_ms: u64,
}

impl PlayerRecord {
    /// A fresh level-1 record at fence `(0, 0)` (any first save is greater).
    pub fn new(name: &str) -> Self {
        Self {
            player_id: zonehost_protocol::token::player_id(name),
            name: name.to_owned(),
            schema_version: u32::from(record::RECORD_VERSION),
            epoch: 0,
            seq: 0,
            zone: 1,
            x_mm: 0,
            y_mm: 0,
            level: 1,
            xp: 0,
            gold: 0,
            state: Vec::new(),
            saved_at_ms: 0,
        }
    }

    /// The record's fence.
    pub fn fence(&self) -> Fence {
        Fence {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// The result of saving one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaveOutcome {
    /// Written (durable when `save_players` returns).
    Saved {
        /// Player id.
        player_id: u64,
    },
    /// Refused: the stored fence is not smaller than the record's. Nothing was written.
    Stale {
        /// Player id.
        player_id: u64,
        /// The fence stored now (equal to the record's own fence when a retried save had
        /// already landed).
        stored: Fence,
    },
}

impl SaveOutcome {
    /// The player this outcome is about.
    pub fn player_id(&self) -> u64 {
        match *self {
            SaveOutcome::Saved { player_id } | SaveOutcome::Stale { player_id, .. } => player_id,
        }
    }
}

/// Who holds an item. Exactly one owner at a time; the item row says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Owner {
    /// A player's inventory (equipped or not: slots live in the player's game state).
    Player(u64),
    /// Lying on the ground of a zone instance. Ground items of an instance that no longer
    /// exists are swept with `Destroy { from: Ground { .. } }` (see [`Store::items_of`]).
    Ground {
        /// Zone instance id.
        instance: u64,
    },
    /// In escrow of a trade in progress (see [`trade`]): the trade's row decides whether
    /// it goes on to its recipient or back to its giver.
    Trade {
        /// Trade id.
        trade: u64,
    },
}

impl Owner {
    /// Text form used as a CQL column value and in dumps: `player:<id>`, `ground:<id>`,
    /// `trade:<id>`.
    pub fn to_key(&self) -> String {
        match self {
            Owner::Player(id) => format!("player:{id}"),
            Owner::Ground { instance } => format!("ground:{instance}"),
            Owner::Trade { trade } => format!("trade:{trade}"),
        }
    }

    /// Parses [`Owner::to_key`]'s form.
    pub fn from_key(key: &str) -> Option<Owner> {
        let (kind, id) = key.split_once(':')?;
        let id: u64 = id.parse().ok()?;
        match kind {
            "player" => Some(Owner::Player(id)),
            "ground" => Some(Owner::Ground { instance: id }),
            "trade" => Some(Owner::Trade { trade: id }),
            _ => None,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_key())
    }
}

/// What an item operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemOpKind {
    /// Creates the item (loot, quest reward). Refused if the id exists or ever existed.
    Create {
        /// First owner.
        owner: Owner,
        /// Opaque item data from the game crate (base type, affixes, ...).
        data: Vec<u8>,
    },
    /// Moves the item, only if its current owner is `from` (pick up, drop, trade).
    Transfer {
        /// Expected current owner.
        from: Owner,
        /// New owner.
        to: Owner,
    },
    /// Destroys the item, only if its current owner is `from` (use, sell, sweep).
    Destroy {
        /// Expected current owner.
        from: Owner,
    },
}

/// One exactly-once item operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOp {
    /// Unique id of the operation (random 128 bits); retries reuse it.
    pub op_id: u128,
    /// The item.
    pub item_id: u128,
    /// What to do.
    pub kind: ItemOpKind,
}

/// The outcome of an item operation. Refusals are outcomes, recorded and replayed like
/// successes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemOutcome {
    /// The item now exists, owned by `owner`.
    Created {
        /// Item id.
        item_id: u128,
        /// Owner.
        owner: Owner,
    },
    /// The item moved.
    Transferred {
        /// Item id.
        item_id: u128,
        /// Previous owner.
        from: Owner,
        /// New owner.
        to: Owner,
    },
    /// The item is gone.
    Destroyed {
        /// Item id.
        item_id: u128,
        /// Its last owner.
        from: Owner,
    },
    /// Refused: the item's owner is not the expected one (`None`: no such item, or destroyed).
    OwnerMismatch {
        /// Item id.
        item_id: u128,
        /// The owner at the time of the operation.
        actual: Option<Owner>,
    },
    /// Refused: `Create` of an id that exists or existed.
    AlreadyExists {
        /// Item id.
        item_id: u128,
    },
}

impl ItemOutcome {
    /// Whether the operation changed the item (not a refusal).
    pub fn applied(&self) -> bool {
        matches!(
            self,
            ItemOutcome::Created { .. }
                | ItemOutcome::Transferred { .. }
                | ItemOutcome::Destroyed { .. }
        )
    }
}

/// A live item as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Item id.
    pub item_id: u128,
    /// Current owner (`None` once destroyed: the tombstone keeps the id from being reused).
    pub owner: Option<Owner>,
    /// Opaque item data.
    pub data: Vec<u8>,
    /// The last operation that changed the item.
    pub last_op: u128,
}

/// A held lease on a named resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Resource name, e.g. `player:<id>` or `instance:<id>`.
    pub resource: String,
    /// Holder name (server id).
    pub holder: String,
    /// Fencing epoch: greater than every earlier holder's epoch of this resource.
    pub epoch: u64,
    /// Expiry, Unix milliseconds (exclusive: at `now_ms >= expires_at_ms` it is free).
    pub expires_at_ms: u64,
}

/// A party as the store keeps it: the truth of membership whichever servers its members
/// play on. Every write goes through [`Store::write_party`], a compare-and-set on
/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyRecord {
    /// Party id (random, never reused).
    pub party_id: u64,
    /// The leader's player id (also in `members`).
    pub leader: u64,
    /// Members' player ids, in joining order. Empty: the party is disbanded (the write
    /// deletes it).
    pub members: Vec<u64>,
    /// Players invited and not yet answered.
    pub invites: Vec<u64>,
    /// Bumped by every write: the compare-and-set token.
    pub version: u64,
}

/// A pending party invitation (cluster mode): `invitee` is invited to `party_id` until
/// `expires_at_ms`. Kept in the store's invitation index, one per invitee (a newer
/// invitation replaces an older one), written by [`Store::write_party_invite`] with the
/// party itself; valid only while the party lists the invitee in
/// [`PartyRecord::invites`] and not in its members, and until it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The party the invitee is invited to.
    pub party_id: u64,
    /// The invited player.
    pub invitee: u64,
    /// Expiry, Unix milliseconds (exclusive: at `now_ms >= expires_at_ms` it is gone).
    pub expires_at_ms: u64,
}

/// A message to a server, queued in the store (its mailbox). Servers post to the server
/// whose lease holds a player, and poll their own mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Id: posting time (Unix ms) in the high 64 bits, random low bits: mail sorts by
    /// posting time.
    pub id: u128,
    /// Opaque body.
    pub body: Vec<u8>,
}

/// Where a trade stands in the store. Only `Open` may change, once, by a conditional
/// write ([`Store::decide_trade`]): that single write is the trade's commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TradeState {
    /// Manifest written; items may be (partly) in escrow; nothing decided.
    Open,
    /// Decided: every escrowed item goes to its recipient, and the gold moves.
    Committed,
    /// Decided: every escrowed item goes back to its giver; no gold moves.
    Aborted,
}

impl TradeState {
    /// Text form (CQL column value): `open`, `committed`, `aborted`.
    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::Open => "open",
            TradeState::Committed => "committed",
            TradeState::Aborted => "aborted",
        }
    }

    /// Parses [`TradeState::as_str`]'s form.
    pub fn parse(text: &str) -> Option<TradeState> {
        match text {
            "open" => Some(TradeState::Open),
            "committed" => Some(TradeState::Committed),
            "aborted" => Some(TradeState::Aborted),
            _ => None,
        }
    }
}

/// One item changing hands in a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TradeLeg {
    /// Item id.
    pub item_id: u128,
    /// Giver (player id): the item's owner before the trade, and after an abort.
    pub from: u64,
    /// Recipient (player id): the item's owner after a commit.
    pub to: u64,
}

/// A trade's row: its manifest (written once, before any item moves) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    /// Unique trade id (also the escrow owner, [`Owner::Trade`]).
    pub trade_id: u64,
    /// The two players.
    pub players: [u64; 2],
    /// Items changing hands.
    pub legs: Vec<TradeLeg>,
    /// Gold given by `players[0]` and by `players[1]` (recorded for audit and recovery;
    /// the amounts themselves live in the players' checkpoints, see `trade` module docs).
    pub gold: [u64; 2],
    /// State (see [`TradeState`]).
    pub state: TradeState,
    /// Settled: every escrowed item has been delivered or returned.
    pub settled: bool,
    /// When the trade was opened, Unix milliseconds (recovery leaves young trades to
    /// their server).
    pub opened_at_ms: u64,
}

impl TradeRecord {
    /// Whether `other` describes the same trade (same manifest, whatever its state).
    pub fn same_manifest(&self, other: &TradeRecord) -> bool {
        self.trade_id == other.trade_id
            && self.players == other.players
            && self.legs == other.legs
            && self.gold == other.gold
            && self.opened_at_ms == other.opened_at_ms
    }
}

/// Why a lease operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// Another holder has an unexpired lease.
    #[error("lease {resource} is held by {holder} (epoch {epoch}) until {expires_at_ms} ms")]
    Held {
        /// Resource.
        resource: String,
        /// Current holder.
        holder: String,
        /// Current epoch.
        epoch: u64,
        /// Current expiry.
        expires_at_ms: u64,
    },
    /// The lease is no longer ours: it expired, was released, or was taken over.
    #[error("lease {resource} (epoch {epoch}) is no longer held")]
    Lost {
        /// Resource.
        resource: String,
        /// The epoch we held.
        epoch: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared error source (cheap to clone so one failure can answer a whole batch).
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A player record is unreadable (damaged, unknown layout version, wrong key).
    #[error("player {player_id}: corrupt record: {reason}")]
    Corrupt {
        /// Player id.
        player_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// An item row or an op-log entry is unreadable.
    #[error("item {item_id:032x}: corrupt row: {reason}")]
    CorruptItem {
        /// Item id.
        item_id: u128,
        /// What is wrong.
        reason: String,
    },
    /// An `op_id` was reused for a different operation.
    #[error("op {op_id:032x} was already used for a different operation")]
    OpConflict {
        /// Operation id.
        op_id: u128,
    },
    /// A trade id was reused for a different manifest, or a trade step named a trade
    /// that does not exist or is in the wrong state.
    #[error("trade {trade_id}: {reason}")]
    Trade {
        /// Trade id.
        trade_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// A value cannot be stored (out of the backend's range, too large, ...).
    #[error("invalid value: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The embedded database failed (I/O, full disk, damaged file).
    #[error("embedded store: {context}: {source}")]
    Embedded {
        /// What was being done.
        context: &'static str,
        /// Underlying error.
        #[source]
        source: ErrorSource,
    },
    /// ScyllaDB failed and the operation definitely did not apply (or was a read).
    #[error("scylla: {context}: {kind}: {source}")]
    Scylla {
        /// What was being done.
        context: &'static str,
        /// What kind of failure the driver reported.
        kind: DbFailure,
        /// Underlying error.
        #[source]
        source: ErrorSource,
    },
    /// A conditional write may or may not have applied and re-reading could not tell. The
    /// caller must retry later with the same op id / fence (never with a new one).
    #[error("unknown outcome of {context}: {detail}")]
    UnknownOutcome {
        /// What was being done.
        context: &'static str,
        /// The write error and the re-read error.
        detail: String,
    },
    /// The store's files or cluster could not be opened.
    #[error("opening the store at {target}: {reason}")]
    Open {
        /// Path or URI.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The store worker has stopped.
    #[error("the store worker has stopped")]
    Closed,
}

/// The kind of a database failure ([`StoreError::Scylla`]), from the driver's error: what
/// callers decide retries on and operators read in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbFailure {
    /// Not enough live replicas for the consistency level (CQL `Unavailable`): the
    /// coordinator refused before any replica applied anything.
    Unavailable,
    /// The coordinator is overloaded or rate-limited the request: nothing was applied.
    Overloaded,
    /// Replicas did not answer a read in time (CQL `ReadTimeout`).
    ReadTimeout,
    /// Replicas did not acknowledge a write in time (CQL `WriteTimeout`): it may have
    /// applied.
    WriteTimeout,
    /// The driver's own request timeout expired: the request may have applied.
    ClientTimeout,
    /// No connection could be used, or it broke while the request was in flight.
    Connection,
    /// The request itself was refused (syntax, schema, authorization, bad values).
    Refused,
    /// Anything else (server error, protocol error, unexpected response, decoding).
    Other,
}

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbFailure::Unavailable => "unavailable",
            DbFailure::Overloaded => "overloaded",
            DbFailure::ReadTimeout => "read timeout",
            DbFailure::WriteTimeout => "write timeout",
            DbFailure::ClientTimeout => "client timeout",
            DbFailure::Connection => "connection",
            DbFailure::Refused => "refused",
            DbFailure::Other => "error",
        })
    }
}

impl StoreError {
    /// The database failure kind, for [`StoreError::Scylla`].
    pub fn db_failure(&self) -> Option<DbFailure> {
        match self {
            StoreError::Scylla { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// One integrity problem found by [`Store::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anomaly {
    /// The owner index lists a live item under an owner other than its row's owner as
    /// well. The item row is the single owner, and every read of the index checks it, so
    /// the item is not given twice: this is a stale entry (see [`Anomaly::is_leftover`]).
    DuplicateOwner {
        /// Item id.
        item_id: u128,
        /// The owner in the item row (the truth).
        owner: Owner,
        /// The other owner(s) the index lists it under.
        also: Vec<Owner>,
    },
    /// A live item is missing from its owner's index.
    MissingIndexEntry {
        /// Item id.
        item_id: u128,
        /// Its owner.
        owner: Owner,
    },
    /// The index lists an item that does not exist or was destroyed: a stale entry (see
    /// [`Anomaly::is_leftover`]).
    DanglingIndexEntry {
        /// Item id.
        item_id: u128,
        /// The owner the index lists it under.
        owner: Owner,
    },
    /// An item row does not decode.
    CorruptItem {
        /// Item id.
        item_id: u128,
        /// What is wrong.
        reason: String,
    },
    /// A player record does not decode.
    CorruptPlayer {
        /// Player id.
        player_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// An item is held in escrow by a trade that is settled or has no row: nothing will
    /// ever deliver or return it.
    StrandedEscrow {
        /// Item id.
        item_id: u128,
        /// Trade id.
        trade: u64,
    },
    /// A trade row does not decode.
    CorruptTrade {
        /// Trade id.
        trade_id: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Anomaly {
    /// Whether this is an extra owner-index entry ([`Anomaly::DuplicateOwner`],
    /// [`Anomaly::DanglingIndexEntry`]): what a process killed between an item's write and
    /// its index update leaves behind on a backend that writes them apart (see
    /// [`IntegrityReport::index_written_apart`]). Every reader of the index checks the item
    /// row, so such an entry neither gives an item to a second owner nor hides it. A
    /// *missing* entry (an item its owner's index does not list) is always a fault: that
    /// item would be invisible to its owner.
    pub fn is_leftover(&self) -> bool {
        matches!(
            self,
            Anomaly::DuplicateOwner { .. } | Anomaly::DanglingIndexEntry { .. }
        )
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::DuplicateOwner {
                item_id,
                owner,
                also,
            } => {
                write!(
                    f,
                    "item {item_id:032x} owned by {owner} is also listed under"
                )?;
                for o in also {
                    write!(f, " {o}")?;
                }
                Ok(())
            }
            Anomaly::MissingIndexEntry { item_id, owner } => {
                write!(
                    f,
                    "item {item_id:032x} owned by {owner} is missing from its owner's index"
                )
            }
            Anomaly::DanglingIndexEntry { item_id, owner } => write!(
                f,
                "index of {owner} lists item {item_id:032x}, which does not exist or was destroyed"
            ),
            Anomaly::CorruptItem { item_id, reason } => {
                write!(f, "item {item_id:032x}: corrupt row: {reason}")
            }
            Anomaly::CorruptPlayer { player_id, reason } => {
                write!(f, "player {player_id}: corrupt record: {reason}")
            }
            Anomaly::StrandedEscrow { item_id, trade } => write!(
                f,
                "item {item_id:032x} is in escrow of trade {trade}, which is settled or unknown"
            ),
            Anomaly::CorruptTrade { trade_id, reason } => {
                write!(f, "trade {trade_id}: corrupt row: {reason}")
            }
        }
    }
}

/// Result of an integrity check: counts and every anomaly found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// Backend name.
    pub backend: String,
    /// Player records.
    pub players: u64,
    /// Live items (each must have exactly one owner).
    pub items: u64,
    /// Destroyed items (tombstones).
    pub destroyed_items: u64,
    /// Live items on players.
    pub items_on_players: u64,
    /// Live items on the ground.
    pub items_on_ground: u64,
    /// Live items in escrow of an unsettled trade (in flight: each is owned once, by the
    /// trade, which will deliver or return it).
    pub items_in_escrow: u64,
    /// Trade rows.
    pub trades: u64,
    /// Trades not settled yet (recovery resolves them).
    pub trades_unsettled: u64,
    /// Distinct owners holding at least one item.
    pub owners: u64,
    /// Owner-index entries.
    pub index_entries: u64,
    /// Recorded item operations (op log).
    pub ops: u64,
    /// Lease rows.
    pub leases: u64,
    /// Problems found; empty when the store is consistent.
    pub anomalies: Vec<Anomaly>,
    /// The backend writes an item's row and its owner-index entries apart (ScyllaDB: the
    /// new owner's entry before the row's conditional write, the old owner's removed after
    /// it), so a killed process leaves extra entries ([`Anomaly::is_leftover`]): they are
    /// listed and do not fail the check. The embedded store writes both in one
    /// transaction, where an extra entry is a fault.
    pub index_written_apart: bool,
}

impl IntegrityReport {
    /// Whether no fault was found (see [`IntegrityReport::faults`]).
    pub fn is_clean(&self) -> bool {
        self.faults().next().is_none()
    }

    /// Whether `a` is a stale entry this backend's write model explains, not a fault.
    fn is_stale(&self, a: &Anomaly) -> bool {
        self.index_written_apart && a.is_leftover()
    }

    /// The anomalies that are faults: all of them, except the extra index entries of a
    /// backend that writes its index apart ([`IntegrityReport::index_written_apart`]).
    pub fn faults(&self) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(|a| !self.is_stale(a))
    }
}

impl fmt::Display for IntegrityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store check ({})", self.backend)?;
        writeln!(f, "  players          {}", self.players)?;
        writeln!(
            f,
            "  items            {} live ({} on players, {} on the ground), {} destroyed",
            self.items, self.items_on_players, self.items_on_ground, self.destroyed_items
        )?;
        writeln!(
            f,
            "  trades           {} ({} unsettled, {} items in escrow)",
            self.trades, self.trades_unsettled, self.items_in_escrow
        )?;
        writeln!(f, "  owners           {}", self.owners)?;
        writeln!(f, "  index entries    {}", self.index_entries)?;
        writeln!(f, "  item ops logged  {}", self.ops)?;
        writeln!(f, "  leases           {}", self.leases)?;
        let leftovers: Vec<&Anomaly> = self.anomalies.iter().filter(|a| self.is_stale(a)).collect();
        if !leftovers.is_empty() {
            writeln!(
                f,
                "  stale index entries {} (left by a process killed between an item write and \
                 its index update; every read checks the item row and skips them)",
                leftovers.len()
            )?;
            for a in &leftovers {
                writeln!(f, "    - {a}")?;
            }
        }
        let faults: Vec<&Anomaly> = self.faults().collect();
        if faults.is_empty() {
            write!(f, "OK: every item is owned exactly once")
        } else {
            writeln!(f, "FAILED: {} anomalies", faults.len())?;
            for (i, a) in faults.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "  - {a}")?;
            }
            Ok(())
        }
    }
}

/// The storage interface every backend implements. All methods are blocking; they are
/// called from the store worker's thread and from operator tools, never from a tick.
pub trait Store: Send + Sync + fmt::Debug {
    /// Backend name for logs and reports (`embedded`, `scylla`).
    fn backend(&self) -> &'static str;

    /// Loads a player's record, migrating an older layout. `Ok(None)`: never saved.
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError>;

    /// Saves a batch of checkpoints, each fenced (see [`SaveOutcome`]); one outcome per
    /// record, in order. Durable when it returns `Ok`. On `Err` some records may have been
    /// saved; retrying the batch is safe (fencing refuses what already landed).
    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError>;

    /// Applies one item operation exactly once (see [`ItemOp`]); durable when it returns.
    fn apply_item_op(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError>;

    /// Applies several item operations in order, as if one by one (backends group-commit
    /// them). The outer error means nothing of the batch is known to be durable; retrying
    /// with the same op ids is safe.
    #[allow(clippy::type_complexity)]
    fn apply_item_ops(
        &self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        Ok(ops.iter().map(|op| self.apply_item_op(op)).collect())
    }

    /// One item (live or tombstone).
    fn item(&self, item_id: u128) -> Result<Option<ItemRecord>, StoreError>;

    /// The live items of an owner, ordered by item id.
    fn items_of(&self, owner: Owner) -> Result<Vec<ItemRecord>, StoreError>;

    /// Live items left on the ground of zone instances of earlier server runs:
    /// `Ground { instance }` with `instance >> 32` (the run's fence epoch) below `epoch`.
    /// A crash leaves them behind (a drain or an instance that empties destroys its own).
    /// Only a server alone on the store may treat such a ground as dead: the server calls
    /// this at start when it is not in cluster mode (the embedded file is locked by the
    /// server that opens it; a ScyllaDB keyspace has one non-cluster server). In a cluster,
    /// grounds of other epochs may be other servers' live instances, and the cluster
    /// sweeps those whose run lease expired instead (`crate::cluster::sweep_dead_runs`).
    /// ScyllaDB answers it with a full scan of the owner index.
    fn dead_ground_items(&self, epoch: u64) -> Result<Vec<ItemRecord>, StoreError>;

    /// Every live item on the ground of any zone instance, of any run: what the cluster's
    /// sweep of dead runs' grounds looks at (see [`crate::cluster::sweep_dead_runs`]). A
    /// full index scan on ScyllaDB: call it rarely.
    fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError>;

    /// Checks integrity: every live item owned exactly once, index consistent with the
    /// item rows, every record decodable, no item in the escrow of a settled or unknown
    /// trade. Reads everything: an operator tool.
    fn check(&self) -> Result<IntegrityReport, StoreError>;

    /// Writes a trade's row (manifest, state [`TradeState::Open`], not settled) unless a
    /// row with its id exists (conditional). Returns the stored row: the new one, or the
    /// existing one when it has the same manifest (a retry). A different manifest under
    /// the same id is [`StoreError::Trade`].
    fn put_trade(&self, trade: &TradeRecord) -> Result<TradeRecord, StoreError>;

    /// Decides an open trade with one conditional write (`IF state = open`): the trade's
    /// commit point. Returns the state stored afterwards: `decision` if this write won,
    /// the earlier decision if another (a retry, or recovery) decided first. `decision`
    /// must be `Committed` or `Aborted`; `Ok(None)` if there is no such trade.
    fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError>;

    /// Marks a decided trade settled (its escrow is empty). Refused with
    /// [`StoreError::Trade`] if the trade is missing or still open. Idempotent.
    fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError>;

    /// One trade's row.
    fn trade(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError>;

    /// Every trade not settled yet, for recovery ([`trade::recover`]). Reads the trade
    /// table (rows of settled trades are kept for audit; an operator may delete old ones).
    fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError>;

    /// Runs a whole trade (see [`trade::run`]): escrow, commit point, delivery or
    /// return, settle. A backend with multi-row transactions does it in one.
    fn run_trade(&self, manifest: &TradeRecord) -> Result<trade::TradeOutcome, StoreError> {
        trade::run(self, manifest)
    }

    /// Acquires `resource` for `holder` for `ttl` from `now_ms`. Free (never held,
    /// released or expired): a new lease with an epoch greater than any before. Held by
    /// `holder` already: extended, same epoch. Held by another: [`LeaseError::Held`].
    fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError>;

    /// Extends a held lease. [`LeaseError::Lost`] if it expired, was released or taken over.
    fn renew_lease(&self, lease: &Lease, ttl: Duration, now_ms: u64) -> Result<Lease, LeaseError>;

    /// Releases a held lease (its epoch is kept: the next holder gets a greater one).
    /// [`LeaseError::Lost`] if it is not held by this lease any more.
    fn release_lease(&self, lease: &Lease) -> Result<(), LeaseError>;

    /// Publishes `load` as its server's row of the `servers` table (replacing the
    /// previous one), live until `now_ms + ttl` (see [`crate::placement`]).
    fn publish_load(&self, load: &ServerLoad, ttl: Duration, now_ms: u64)
        -> Result<(), StoreError>;

    /// The rows of the `servers` table live at `now_ms` (a row whose lifetime ran out is
    /// skipped: its server is taken for dead), ordered by server id.
    fn server_loads(&self, now_ms: u64) -> Result<Vec<ServerLoad>, StoreError>;

    /// The unexpired lease on `resource` at `now_ms`, if any (who holds a player).
    fn lease_of(&self, resource: &str, now_ms: u64) -> Result<Option<Lease>, StoreError>;

    /// A party, if it exists.
    fn load_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError>;

    /// The party `player_id` is a member of, if any (the membership index, checked
    /// against the party itself).
    fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError>;

    /// Writes `party` if the stored version is `expected` (`None`: the party must not
    /// exist). `party.version` must be `expected + 1` (1 for a new party), else
    /// [`StoreError::Invalid`]. A party without members is deleted. The membership index
    /// follows: added members point to it, removed members no longer do. `Ok(false)`: the
    /// stored version differs (reload and decide again).
    /// Invitees dropped from `invites` (answered, or the party disbanded) lose their
    /// invitation to it, in the same write.
    fn write_party(&self, party: &PartyRecord, expected: Option<u64>) -> Result<bool, StoreError>;

    /// [`Store::write_party`] that also records `invitation` (its invitee listed in
    /// `party.invites`, not in `party.members`, expiring after `now_ms`; else
    /// [`StoreError::Invalid`]) in the invitation index, replacing the invitee's earlier
    /// invitation: on the embedded store in the same transaction; on ScyllaDB before the
    /// party's LWT, with a TTL (a reader checks it against the party row, so a lost
    /// compare-and-set leaves no invitation the party does not list).
    fn write_party_invite(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: &Invitation,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The invitation of `player_id` pending at `now_ms`: unexpired, and its party still
    /// lists the player as invited (not as a member).
    fn invitation_of(&self, player_id: u64, now_ms: u64) -> Result<Option<Invitation>, StoreError>;

    /// Queues `body` for `server`; returns the mail's id.
    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError>;

    /// Up to `max` of `server`'s mails, oldest first (they stay until deleted).
    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError>;

    /// Deletes mails of `server` (read and handled). Unknown ids are ignored.
    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError>;
}

/// Checks the version rule of [`Store::write_party`].
pub fn check_party_version(party: &PartyRecord, expected: Option<u64>) -> Result<(), StoreError> {
    let want = expected.map_or(Some(1), |v| v.checked_add(1));
    if Some(party.version) != want {
        return Err(StoreError::Invalid {
            reason: format!(
                "party {:016x}: version {} written over {:?}",
                party.party_id, party.version, expected
            ),
        });
    }
    if !party.members.is_empty() && !party.members.contains(&party.leader) {
        return Err(StoreError::Invalid {
            reason: format!("party {:016x}: leader is not a member", party.party_id),
        });
    }
    Ok(())
}

/// Checks the rules of [`Store::write_party_invite`] besides the version.
pub fn check_invitation(
    party: &PartyRecord,
    invitation: &Invitation,
    now_ms: u64,
) -> Result<(), StoreError> {
    let reason = if party.members.is_empty() {
        "a disbanded party invites nobody"
    } else if invitation.party_id != party.party_id {
        "the invitation is for another party"
    } else if !party.invites.contains(&invitation.invitee) {
        "the invitee is not listed in invites"
    } else if party.members.contains(&invitation.invitee) {
        "the invitee is a member"
    } else if invitation.expires_at_ms <= now_ms {
        "the invitation has expired already"
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid {
        reason: format!(
            "party {:016x}, invitee {:016x}: {reason}",
            party.party_id, invitation.invitee
        ),
    })
}

/// The invitation `index` (the invitation index entry of its invitee) as valid at
/// `now_ms` against `party` (the party it names, as stored now).
pub fn pending_invitation(
    index: Invitation,
    party: Option<&PartyRecord>,
    now_ms: u64,
) -> Option<Invitation> {
    let party = party?;
    (index.expires_at_ms > now_ms
        && party.party_id == index.party_id
        && party.invites.contains(&index.invitee)
        && !party.members.contains(&index.invitee))
    .then_some(index)
}

/// A fresh mail id: `now_ms` in the high 64 bits, random low bits.
pub fn mail_id(now_ms: u64) -> u128 {
    let mut b = [0u8; 8];
    let low = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        }
    };
    (u128::from(now_ms) << 64) | u128::from(low)
}

/// A server's published load: one row of the `servers` table (cluster mode, see
/// [`crate::placement`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLoad {
    /// The server (`[store] server_id`).
    pub server_id: String,
    /// Players it owns (sessions in its sim workers).
    pub players: u32,
    /// Mean busy fraction of its sim workers over the last report interval, per mille.
    pub busy_permille: u32,
    /// It drains: send nobody there.
    pub draining: bool,
    /// When it measured this, Unix milliseconds.
    pub updated_at_ms: u64,
    /// The address clients reach it at (`[cluster] advertise`): how peers that do not list
    /// it in `[cluster.peers]` find it. `None`: it advertises none.
    pub address: Option<std::net::SocketAddr>,
}

/// Which backend to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    /// redb file. Default, with `path = "store.redb"`.
    Embedded {
        /// Database file; a relative path is inside the server's `data_dir`.
        path: PathBuf,
    },
    /// ScyllaDB cluster.
    Scylla(scylla::ScyllaConfig),
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Embedded {
            path: PathBuf::from("store.redb"),
        }
    }
}

/// Persistence options (`[store]` in the server config). Field docs state the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Backend. Default `{ kind = "embedded", path = "store.redb" }`.
    pub backend: BackendConfig,
    /// Player records kept in the cache. Default 10000 (about 1-2 KB each: ~20 MB).
    pub cache_capacity: u64,
    /// A cached record unused for this long is evicted, seconds; 0 disables the cache.
    /// Default 600.
    pub cache_ttl_secs: u64,
    /// Dirty players are checkpointed at least this often, seconds (also on zone change,
    /// disconnect and drain). Default 10.
    pub checkpoint_interval_secs: u64,
    /// Commands the store worker's queue holds; a full queue refuses with `Full`.
    /// Default 8192.
    pub queue_capacity: usize,
    /// Commands one sim worker may have in flight (its reply queue's capacity).
    /// Default 8192.
    pub replies_capacity: usize,
    /// Most commands the worker takes into one batch (one transaction). Default 512.
    pub max_batch: usize,
    /// Holder name of this server in the store's leases. At start-up the server takes
    /// the `epoch` lease for a moment (acquire, release, twice) to get a checkpoint fence
    /// epoch greater than every earlier run's. Default `zonehost`.
    pub server_id: String,
    /// Lifetime of that momentary lease, seconds: if a server dies while holding it,
    /// servers with another `server_id` wait this long (its own restart does not).
    /// Default 30.
    pub lease_ttl_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: BackendConfig::default(),
            cache_capacity: 10_000,
            cache_ttl_secs: 600,
            checkpoint_interval_secs: 10,
            queue_capacity: 8192,
            replies_capacity: 8192,
            max_batch: 512,
            server_id: "zonehost".into(),
            lease_ttl_secs: 30,
        }
    }
}

impl StoreConfig {
    /// Checks ranges; call once at startup.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: &str| {
            Err(StoreError::Invalid {
                reason: format!("[store] {reason}"),
            })
        };
        if self.queue_capacity == 0 || self.replies_capacity == 0 || self.max_batch == 0 {
            return bad("queue_capacity, replies_capacity and max_batch must be at least 1");
        }
        if self.checkpoint_interval_secs == 0 {
            return bad("checkpoint_interval_secs must be at least 1");
        }
        if self.server_id.is_empty() || self.lease_ttl_secs < 3 {
            return bad("server_id must not be empty and lease_ttl_secs must be at least 3");
        }
        if let BackendConfig::Scylla(s) = &self.backend {
            s.validate()?;
        }
        Ok(())
    }

    /// The embedded database file, resolved against `data_dir` (`None` for other backends).
    pub fn embedded_path(&self, data_dir: &Path) -> Option<PathBuf> {
        match &self.backend {
            BackendConfig::Embedded { path } if path.is_absolute() => Some(path.clone()),
            BackendConfig::Embedded { path } => Some(data_dir.join(path)),
            BackendConfig::Scylla(_) => None,
        }
    }

    /// The check-point interval.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_interval_secs)
    }
}

/// Opens the configured backend (creating the embedded file and its tables if needed; a
/// ScyllaDB keyspace must have been created with [`migrate`]). No cache: wrap it in
/// [`cache::CachedStore`] for serving.
pub fn open(config: &StoreConfig, data_dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    match &config.backend {
        BackendConfig::Embedded { .. } => {
            let path = config
                .embedded_path(data_dir)
                .ok_or_else(|| StoreError::Invalid {
                    reason: "no embedded path".into(),
                })?;
            Ok(Box::new(redb::RedbStore::open(&path)?))
        }
        BackendConfig::Scylla(s) => Ok(Box::new(scylla::ScyllaStore::connect(s)?)),
    }
}

/// Opens the configured backend behind the player cache (what the server serves from).
pub fn open_cached(
    config: &StoreConfig,
    data_dir: &Path,
) -> Result<cache::CachedStore<Box<dyn Store>>, StoreError> {
    Ok(cache::CachedStore::new(
        open(config, data_dir)?,
        config.cache_capacity,
        Duration::from_secs(config.cache_ttl_secs),
    ))
}

/// Creates or upgrades the schema (`zonehost store migrate`): the embedded file and its
/// tables, or the ScyllaDB keyspace and tables of `deploy/scylla/schema.cql`. Idempotent.
/// Returns a one-line summary.
pub fn migrate(config: &StoreConfig, data_dir: &Path) -> Result<String, StoreError> {
    match &config.backend {
        BackendConfig::Embedded { .. } => {
            let path = config
                .embedded_path(data_dir)
                .ok_or_else(|| StoreError::Invalid {
                    reason: "no embedded path".into(),
                })?;
            let store = redb::RedbStore::open(&path)?;
            Ok(format!(
                "embedded store {} at schema version {}",
                path.display(),
                store.schema_version()?
            ))
        }
        BackendConfig::Scylla(s) => scylla::migrate(s),
    }
}

/// Runs the integrity check (`zonehost store check`); print the report with `{}`.
pub fn check(store: &dyn Store) -> Result<IntegrityReport, StoreError> {
    store.check()
}

/// A readable dump of a player and their items (`zonehost player show NAME`).
pub fn show_player(store: &dyn Store, name: &str) -> Result<String, StoreError> {
    use std::fmt::Write as _;
    let player_id = zonehost_protocol::token::player_id(name);
    let mut out = String::new();
    let _ = writeln!(out, "player {name:?} (id {player_id})");
    match store.load_player(player_id) {
        Ok(None) => {
            let _ = writeln!(out, "  no saved record");
        }
        Ok(Some(r)) => {
            let _ = writeln!(
                out,
                "  record layout  v{}{}",
                r.schema_version,
                if r.schema_version < u32::from(record::RECORD_VERSION) {
                    format!(" (migrated to v{} on load)", record::RECORD_VERSION)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(out, "  fence          {}", r.fence());
            let _ = writeln!(out, "  saved at       {} ms (Unix)", r.saved_at_ms);
            let _ = writeln!(out, "  zone           {}", r.zone);
            let _ = writeln!(out, "  position       ({}, {}) mm", r.x_mm, r.y_mm);
            let _ = writeln!(out, "  level          {} ({} xp)", r.level, r.xp);
            let _ = writeln!(out, "  gold           {}", r.gold);
            let _ = writeln!(out, "  game state     {} bytes", r.state.len());
            if r.name != name {
                let _ = writeln!(out, "  WARNING: record name is {:?}", r.name);
            }
        }
        Err(e @ StoreError::Corrupt { .. }) => {
            let _ = writeln!(out, "  UNREADABLE: {e}");
        }
        Err(e) => return Err(e),
    }
    let items = store.items_of(Owner::Player(player_id))?;
    let _ = writeln!(out, "  items          {}", items.len());
    for item in items {
        let _ = writeln!(
            out,
            "    {:032x}  {} bytes  last op {:032x}",
            item.item_id,
            item.data.len(),
            item.last_op
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_order_lexicographically() {
        let f = |epoch, seq| Fence { epoch, seq };
        assert!(f(1, 9) < f(2, 0));
        assert!(f(2, 1) > f(2, 0));
        assert_eq!(f(3, 3), f(3, 3));
    }

    #[test]
    fn owner_keys_round_trip() {
        for o in [
            Owner::Player(0),
            Owner::Player(u64::MAX),
            Owner::Ground { instance: 7 },
            Owner::Trade { trade: u64::MAX },
        ] {
            assert_eq!(Owner::from_key(&o.to_key()), Some(o));
        }
        for bad in ["", "player", "player:", "player:-1", "x:1", "ground:1:2"] {
            assert_eq!(Owner::from_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_config_is_valid_and_round_trips_through_toml() {
        let c = StoreConfig::default();
        c.validate().expect("valid");
        let text = toml::to_string(&c).expect("serialize");
        let back: StoreConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
        let scylla: StoreConfig = toml::from_str(
            "cache_capacity = 5\n[backend]\nkind = \"scylla\"\nuri = \"10.0.0.1:9042\"\n",
        )
        .expect("parse scylla");
        assert!(matches!(scylla.backend, BackendConfig::Scylla(_)));
        assert_eq!(scylla.cache_capacity, 5);
        assert_eq!(
            c.embedded_path(Path::new("/data")),
            Some(PathBuf::from("/data/store.redb"))
        );
    }

    #[test]
    fn report_display_names_anomalies() {
        let mut r = IntegrityReport {
            backend: "embedded".into(),
            items: 2,
            ..Default::default()
        };
        assert!(r.to_string().contains("OK"));
        r.anomalies.push(Anomaly::DuplicateOwner {
            item_id: 1,
            owner: Owner::Player(1),
            also: vec![Owner::Player(2)],
        });
        // The embedded store writes its index in the item's transaction: a fault.
        let text = r.to_string();
        assert!(!r.is_clean(), "{text}");
        assert!(text.contains("FAILED: 1"), "{text}");
        // A backend that writes it apart (ScyllaDB): a stale entry, listed, not a fault.
        r.index_written_apart = true;
        let text = r.to_string();
        assert!(r.is_clean(), "a stale index entry is not a fault");
        assert!(text.contains("stale index entries 1"), "{text}");
        assert!(text.contains("player:2"), "{text}");
        assert!(text.contains("OK"), "{text}");
        r.anomalies.push(Anomaly::MissingIndexEntry {
            item_id: 2,
            owner: Owner::Player(3),
        });
        let text = r.to_string();
        assert!(!r.is_clean());
        assert!(text.contains("FAILED: 1"), "{text}");
        assert!(text.contains("player:3"), "{text}");
    }

    #[test]
    fn invitations_are_checked_against_their_party_and_clock() {
        let party = PartyRecord {
            party_id: 9,
            leader: 1,
            members: vec![1],
            invites: vec![2],
            version: 1,
        };
        let inv = Invitation {
            party_id: 9,
            invitee: 2,
            expires_at_ms: 1000,
        };
        assert!(check_invitation(&party, &inv, 999).is_ok());
        assert!(check_invitation(&party, &inv, 1000).is_err(), "expired");
        for bad in [
            Invitation { party_id: 8, ..inv },
            Invitation { invitee: 3, ..inv },
            Invitation { invitee: 1, ..inv },
        ] {
            let mut p = party.clone();
            p.invites.push(1);
            assert!(check_invitation(&p, &bad, 0).is_err(), "{bad:?}");
        }
        assert_eq!(pending_invitation(inv, Some(&party), 999), Some(inv));
        assert_eq!(pending_invitation(inv, Some(&party), 1000), None);
        assert_eq!(pending_invitation(inv, None, 0), None);
        let answered = PartyRecord {
            members: vec![1, 2],
            invites: vec![],
            ..party.clone()
        };
        assert_eq!(pending_invitation(inv, Some(&answered), 0), None);
        let other = PartyRecord {
            party_id: 10,
            ..party
        };
        assert_eq!(pending_invitation(inv, Some(&other), 0), None);
    }
}
