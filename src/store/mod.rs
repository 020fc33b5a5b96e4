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
//! # Files
//! - This file: the per-domain traits ([`PlayerStore`], [`ItemStore`], [`TradeStore`],
//!   [`LeaseStore`], [`PartyStore`], [`MailStore`], [`CheckStore`]), their union [`Store`],
//!   and re-exports of everything below at `store::Name`.
//! - [`types`] (domain types), [`error`] (errors), [`config`] (`[store]`), [`integrity`]
//!   (the check's report), [`rules`] (party and mail rules every backend applies),
//!   [`ops`] (opening a backend and the operator commands), [`forward`] (wrappers forward
//!   the domains they leave alone).
//! - Backends [`redb`] and [`scylla`] (one file per domain), the [`cache`], the write-behind
//!   [`writer`], the [`trade`] protocol, the [`record`] codec, [`confirmed`] (`store verify-ops`).
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
//!   [`Store::acquire_lease`](crate::store::LeaseStore::acquire_lease)) and bumps `seq` per checkpoint, so a stale server can never
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
pub mod config;
pub mod confirmed;
pub mod error;
pub mod forward;
pub mod integrity;
pub mod ops;
pub mod record;
pub mod recovery;
pub mod redb;
pub mod rules;
pub mod scylla;
pub mod trade;
pub mod types;
pub mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use config::{BackendConfig, StoreConfig};
pub use error::{DbFailure, ErrorSource, LeaseError, StoreError};
pub use forward::{
    Forward, ForwardCheck, ForwardItems, ForwardLeases, ForwardMail, ForwardParties,
    ForwardPlayers, ForwardTrades,
};
pub use integrity::{Anomaly, IntegrityReport};
pub use ops::{check, migrate, open, open_cached, show_player};
pub use rules::{check_invitation, check_party_version, mail_id, pending_invitation};
pub use types::{
    Fence, Invitation, ItemOp, ItemOpKind, ItemOutcome, ItemRecord, Lease, Mail, Owner,
    PartyRecord, PlayerRecord, SaveOutcome, ServerLoad, TradeLeg, TradeOutcome, TradeRecord,
    TradeState,
};

/// Player checkpoints: load and fenced save. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardPlayers`].
pub trait PlayerStore {
    /// Loads a player's record, migrating an older layout. `Ok(None)`: never saved.
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError>;

    /// Saves a batch of checkpoints, each fenced (see [`SaveOutcome`]); one outcome per
    /// record, in order. Durable when it returns `Ok`. On `Err` some records may have been
    /// saved; retrying the batch is safe (fencing refuses what already landed).
    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError>;
}

/// Items: exactly-once operations and reads by id, owner or ground. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardItems`].
pub trait ItemStore {
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
}

/// Trades: the rows of the trade protocol and whole trades. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardTrades`].
pub trait TradeStore {
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

    /// Runs a whole trade: escrow, commit point, delivery or return, settle. A backend
    /// with multi-row transactions does it in one; others call [`trade::run`] (one write
    /// per step). Required, not a default calling [`trade::run`], so that this trait and
    /// the trade protocol do not import each other.
    fn run_trade(&self, manifest: &TradeRecord) -> Result<TradeOutcome, StoreError>;
}

/// Leases and the servers' published loads. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardLeases`].
pub trait LeaseStore {
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
}

/// Parties, their membership index and invitations. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardParties`].
pub trait PartyStore {
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

    /// [`Store::write_party`](crate::store::PartyStore::write_party) that also records `invitation` (its invitee listed in
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
}

/// Mailboxes between servers. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardMail`].
pub trait MailStore {
    /// Queues `body` for `server`; returns the mail's id.
    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError>;

    /// Up to `max` of `server`'s mails, oldest first (they stay until deleted).
    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError>;

    /// Deletes mails of `server` (read and handled). Unknown ids are ignored.
    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError>;
}

/// What operator tools read: the backend's name and the integrity check. Part of [`Store`]; a wrapper that changes nothing here forwards it with
/// [`ForwardCheck`].
pub trait CheckStore {
    /// Backend name for logs and reports (`embedded`, `scylla`).
    fn backend(&self) -> &'static str;

    /// Checks integrity: every live item owned exactly once, index consistent with the
    /// item rows, every record decodable, no item in the escrow of a settled or unknown
    /// trade. Reads everything: an operator tool.
    fn check(&self) -> Result<IntegrityReport, StoreError>;
}

/// The storage interface every backend implements. All methods are blocking; they are
/// called from the store worker's thread and from operator tools, never from a tick.
///
/// It is the union of the per-domain traits, implemented for every type that implements
/// them all: a backend implements each; a wrapper implements the domains it changes and
/// forwards the others to its inner store (see [`forward`]).
pub trait Store:
    PlayerStore
    + ItemStore
    + TradeStore
    + LeaseStore
    + PartyStore
    + MailStore
    + CheckStore
    + Send
    + Sync
    + fmt::Debug
{
}

impl<T> Store for T where
    T: PlayerStore
        + ItemStore
        + TradeStore
        + LeaseStore
        + PartyStore
        + MailStore
        + CheckStore
        + Send
        + Sync
        + fmt::Debug
        + ?Sized
{
}
