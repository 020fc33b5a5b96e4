//! The ScyllaDB backend (`scylla` driver 1.x, plain CQL without TLS).
//!
//! Schema: `deploy/scylla/schema.cql` (applied by [`migrate`]). Statements are prepared
//! once at [`ScyllaStore::connect`]; rows are typed with `SerializeRow`/`DeserializeRow`
//! derives, except LWT results whose columns vary (`[applied]` plus the current values),
//! which are read by column name.
//!
//! Execution profiles:
//! - **state**: LOCAL_QUORUM, `request_timeout_ms`, the default retry policy (reads and
//!   idempotent writes only);
//! - **lwt**: LOCAL_SERIAL Paxos phase, LOCAL_QUORUM commit, `lwt_timeout_ms`, *no* driver
//!   retries;
//! - **serial read**: LOCAL_SERIAL reads (linearizable: they also finish any Paxos round
//!   left in flight, so what they return is final), `lwt_timeout_ms`.
//!
//! Unknown outcomes: a conditional write that fails in a way that may have applied
//! (timeout, write timeout of type CAS, broken connection...) is never retried blindly. The
//! row is re-read at LOCAL_SERIAL: if it carries our change (`last_op == op_id`, fence equal
//! to ours, lease holder and epoch ours) the write applied; if the condition still holds it
//! did not, and retrying is safe; otherwise the refusal is reported. If the re-read fails
//! too the caller gets [`StoreError::UnknownOutcome`] and must retry later with the same op
//! id / fence.
//!
//! Parties: one row per party in `parties`, written only by LWTs conditional on its
//! `version` (compare-and-set, see [`Store::write_party`]); the `party_of` index is written
//! for added members *before* that LWT and cleared (conditionally) for removed members
//! after it, and every read of it is checked against the party row, so a failure between
//! the two never makes a player a member of a party that does not list it. The invitation
//! index `party_invites` (invitee -> party, expiry) follows the same discipline: written
//! `USING TTL` before the party's LWT, cleared `IF party_id = ..` after it, read against
//! the party row and the expiry. Mail between
//! servers is one partition per server in `mailbox`, ordered by mail id, with a 5 minute
//! table TTL as a backstop for mail nobody deletes.
//!
//! Exactly-once items: `item_ops` records every outcome; a retry first reads it. If the
//! process died between the item LWT and the op-log write, the retry's LWT is refused and
//! the row's `last_op` shows it was ours.
//!
//! The store is synchronous (see the module docs of `store`): it owns a small tokio runtime
//! (one worker thread) where the driver runs; each call spawns its requests there (a
//! checkpoint batch runs up to `max_in_flight` LWTs concurrently) and waits for the result
//! on the calling thread, so it works from any thread, inside another runtime or not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::{ExecutionProfile, ExecutionProfileHandle};
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use ::scylla::policies::load_balancing::DefaultPolicy;
use ::scylla::policies::retry::FallthroughRetryPolicy;
use ::scylla::response::query_result::QueryResult;
use ::scylla::response::{PagingState, PagingStateResponse};
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::{Consistency, SerialConsistency};
use ::scylla::value::{CqlValue, Row};
use ::scylla::{DeserializeRow, SerializeRow};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::record::{self, decode_row, encode_row};
use super::{
    Anomaly, DbFailure, ErrorSource, Fence, IntegrityReport, Invitation, ItemOp, ItemOpKind,
    ItemOutcome, ItemRecord, Lease, LeaseError, Mail, Owner, PartyRecord, PlayerRecord,
    SaveOutcome, ServerLoad, Store, StoreError, TradeRecord, TradeState,
};

/// The schema version `deploy/scylla/schema.cql` creates (2: the `trades` table; 3: the
/// cluster tables `servers`, `server_addresses`, `parties`, `party_of`, `party_invites`,
/// `mailbox`; every
/// statement is `IF NOT EXISTS`, so `store migrate` upgrades an older keyspace, and every
/// server of a cluster prepares statements on all of them at start).
pub const SCHEMA_VERSION: i32 = 3;

/// The schema, embedded for [`migrate`].
pub const SCHEMA_CQL: &str = include_str!("../../deploy/scylla/schema.cql");

/// Seconds a lease's holder cell outlives its `expires_at_ms` before ScyllaDB drops it.
const LEASE_TTL_GRACE_SECS: u64 = 60;
/// Rounds of read-decide-write before a contended conditional write gives up.
const MAX_ROUNDS: usize = 6;

/// ScyllaDB connection options (`[store.backend]` with `kind = "scylla"`). Field docs
/// state the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, comma-separated `host:port` (an optional `scylla://` prefix is
    /// ignored). Default `127.0.0.1:9042`.
    pub uri: String,
    /// Keyspace. Default `zonehost`.
    pub keyspace: String,
    /// Replication factor per datacenter, used by `migrate` when it creates the keyspace.
    /// Default 3 (use 1 for a single-node dev cluster).
    pub replication_factor: u32,
    /// Local datacenter: LOCAL_* consistency and routing prefer it. Default unset (any).
    pub datacenter: Option<String>,
    /// User name for password authentication. Default unset.
    pub username: Option<String>,
    /// Password. Default unset.
    pub password: Option<String>,
    /// Connection set-up timeout, milliseconds. Default 5000.
    pub connect_timeout_ms: u64,
    /// Client timeout of a state read or write, milliseconds. Default 2000.
    pub request_timeout_ms: u64,
    /// Client timeout of a conditional write (LWT) or serial read, milliseconds. Default 5000.
    pub lwt_timeout_ms: u64,
    /// Most concurrent requests one call issues (a checkpoint batch). Default 256.
    pub max_in_flight: usize,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            uri: "127.0.0.1:9042".into(),
            keyspace: "zonehost".into(),
            replication_factor: 3,
            datacenter: None,
            username: None,
            password: None,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 2_000,
            lwt_timeout_ms: 5_000,
            max_in_flight: 256,
        }
    }
}

impl ScyllaConfig {
    /// The config for `uri` with every other option at its default.
    pub fn with_uri(uri: &str) -> Self {
        Self {
            uri: uri.into(),
            ..Self::default()
        }
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: String| Err(StoreError::Invalid { reason });
        if self.nodes().is_empty() {
            return bad("[store.backend] uri names no node".into());
        }
        let ks = &self.keyspace;
        if ks.is_empty()
            || ks.len() > 48
            || !ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(format!(
                "[store.backend] keyspace {ks:?} must be 1-48 letters, digits or _"
            ));
        }
        if self.replication_factor == 0 || self.max_in_flight == 0 {
            return bad("[store.backend] replication_factor and max_in_flight must be >= 1".into());
        }
        if self.request_timeout_ms == 0 || self.lwt_timeout_ms == 0 {
            return bad("[store.backend] timeouts must be > 0".into());
        }
        Ok(())
    }

    fn nodes(&self) -> Vec<String> {
        let uri = self.uri.trim();
        let uri = uri.strip_prefix("scylla://").unwrap_or(uri);
        uri.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A plain message as an error source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn msg(context: &'static str, text: impl Into<String>) -> StoreError {
    StoreError::Scylla {
        context,
        kind: DbFailure::Other,
        source: Arc::new(Message(text.into())),
    }
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| {
        let any: &dyn std::any::Any = &e;
        let kind = any
            .downcast_ref::<ExecutionError>()
            .map_or(DbFailure::Other, classify);
        StoreError::Scylla {
            context,
            kind,
            source: Arc::new(e) as ErrorSource,
        }
    }
}

/// The [`DbFailure`] kind of a driver error.
pub fn classify(e: &ExecutionError) -> DbFailure {
    match e {
        ExecutionError::RequestTimeout(_) => DbFailure::ClientTimeout,
        ExecutionError::BadQuery(_) | ExecutionError::PrepareError(_) => DbFailure::Refused,
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::UseKeyspaceError(_) => DbFailure::Connection,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::DbError(db, _) => match db {
                DbError::Unavailable { .. } => DbFailure::Unavailable,
                DbError::Overloaded | DbError::RateLimitReached { .. } => DbFailure::Overloaded,
                DbError::ReadTimeout { .. } => DbFailure::ReadTimeout,
                DbError::WriteTimeout { .. } => DbFailure::WriteTimeout,
                DbError::SyntaxError
                | DbError::Invalid
                | DbError::Unauthorized
                | DbError::AuthenticationError
                | DbError::ConfigError
                | DbError::AlreadyExists { .. } => DbFailure::Refused,
                _ => DbFailure::Other,
            },
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => DbFailure::Connection,
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_) => DbFailure::Refused,
            _ => DbFailure::Other,
        },
        _ => DbFailure::Other,
    }
}

/// Whether a failed write may nevertheless have been applied (so its outcome is unknown
/// and must be resolved by re-reading). Only errors that prove the request was refused
/// before any replica applied it count as "not applied".
pub fn may_have_applied(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(_)
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::UseKeyspaceError(_) => false,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::UnableToAllocStreamId => false,
            RequestAttemptError::DbError(db, _) => !matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::SyntaxError
                    | DbError::Invalid
                    | DbError::Unauthorized
                    | DbError::AuthenticationError
                    | DbError::ConfigError
                    | DbError::AlreadyExists { .. }
                    | DbError::Unprepared { .. }
                    | DbError::RateLimitReached { .. }
                    | DbError::TruncateError
            ),
            _ => true,
        },
        _ => true,
    }
}

fn i64_of(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        reason: format!("{what} {v} does not fit a CQL bigint"),
    })
}

/// Bit-cast for ids (only compared for equality).
fn id_to_cql(v: u64) -> i64 {
    v as i64
}

fn id_from_cql(v: i64) -> u64 {
    v as u64
}

fn blob16(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn from_blob16(b: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(b).ok().map(u128::from_be_bytes)
}

/// A CQL bigint for a value that is only displayed (saturates instead of failing).
fn display_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, SerializeRow)]
struct PlayerValues {
    player_id: i64,
    name: String,
    epoch: i64,
    seq: i64,
    schema_version: i32,
    zone: i32,
    x_mm: i32,
    y_mm: i32,
    level: i64,
    xp: i64,
    gold: i64,
    saved_at_ms: i64,
    record: Vec<u8>,
}

#[derive(Debug, SerializeRow)]
struct PlayerIfSameEpoch {
    #[scylla(flatten)]
    values: PlayerValues,
    if_epoch: i64,
    if_seq: i64,
}

#[derive(Debug, SerializeRow)]
struct PlayerIfOlderEpoch {
    #[scylla(flatten)]
    values: PlayerValues,
    if_epoch: i64,
}

#[derive(Debug, DeserializeRow)]
struct PlayerBlob {
    record: Option<Vec<u8>>,
}

#[derive(Debug, DeserializeRow)]
struct FenceRow {
    epoch: Option<i64>,
    seq: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
struct PlayerScanRow {
    player_id: i64,
    record: Option<Vec<u8>>,
}

#[derive(Debug, SerializeRow)]
struct ItemInsert {
    item_id: Vec<u8>,
    owner: String,
    data: Vec<u8>,
    last_op: Vec<u8>,
}

#[derive(Debug, SerializeRow)]
struct ItemTransfer {
    owner: String,
    last_op: Vec<u8>,
    item_id: Vec<u8>,
    if_owner: String,
}

#[derive(Debug, SerializeRow)]
struct ItemDestroy {
    last_op: Vec<u8>,
    item_id: Vec<u8>,
    if_owner: String,
}

#[derive(Debug, DeserializeRow)]
struct ItemRowCql {
    owner: Option<String>,
    data: Option<Vec<u8>>,
    last_op: Option<Vec<u8>>,
}

#[derive(Debug, DeserializeRow)]
struct ItemScanRow {
    item_id: Vec<u8>,
    owner: Option<String>,
}

#[derive(Debug, DeserializeRow)]
struct IndexRow {
    owner: String,
    item_id: Vec<u8>,
}

#[derive(Debug, DeserializeRow)]
struct IndexItemRow {
    item_id: Vec<u8>,
}

#[derive(Debug, SerializeRow)]
struct OpInsert {
    op_id: Vec<u8>,
    item_id: Vec<u8>,
    op: Vec<u8>,
    outcome: Vec<u8>,
}

#[derive(Debug, DeserializeRow)]
struct OpRowCql {
    op: Option<Vec<u8>>,
    outcome: Option<Vec<u8>>,
}

#[derive(Debug, Clone, DeserializeRow)]
struct LeaseRowCql {
    holder: Option<String>,
    epoch: Option<i64>,
    expires_at_ms: Option<i64>,
}

#[derive(Debug, SerializeRow)]
struct LeaseExtend {
    ttl: i32,
    expires_at_ms: i64,
    holder: String,
    resource: String,
    if_holder: String,
    if_epoch: i64,
    now_ms: i64,
}

#[derive(Debug, SerializeRow)]
struct LeaseRelease {
    resource: String,
    if_holder: String,
    if_epoch: i64,
}

#[derive(Debug, Clone, DeserializeRow)]
struct PartyRowCql {
    leader: Option<i64>,
    members: Option<Vec<i64>>,
    invites: Option<Vec<i64>>,
    version: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
struct PartyOfCql {
    party_id: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
struct PartyInviteCql {
    party_id: Option<i64>,
    expires_at_ms: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
struct MailCql {
    mail_id: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
}

#[derive(Debug, SerializeRow, DeserializeRow)]
struct ServerRowCql {
    server_id: String,
    players: i32,
    busy_permille: i32,
    draining: bool,
    updated_at_ms: i64,
    expires_at_ms: i64,
}

#[derive(Debug, DeserializeRow)]
struct ServerAddressCql {
    server_id: String,
    address: Option<String>,
}

#[derive(Debug, SerializeRow)]
struct ServerPublish {
    server_id: String,
    players: i32,
    busy_permille: i32,
    draining: bool,
    updated_at_ms: i64,
    expires_at_ms: i64,
    ttl: i32,
}

#[derive(Debug, SerializeRow)]
struct TradeInsert {
    trade_id: i64,
    manifest: Vec<u8>,
    opened_at_ms: i64,
}

#[derive(Debug, DeserializeRow)]
struct TradeRowCql {
    state: Option<String>,
    settled: Option<bool>,
    manifest: Option<Vec<u8>>,
}

#[derive(Debug, DeserializeRow)]
struct TradeScanRow {
    trade_id: i64,
    state: Option<String>,
    settled: Option<bool>,
    manifest: Option<Vec<u8>>,
}

/// A trade row as read: the manifest blob, with the `state` and `settled` columns (the
/// truth for those two) laid over it.
fn trade_from_cql(
    trade_id: u64,
    state: Option<&str>,
    settled: Option<bool>,
    manifest: Option<&[u8]>,
) -> Result<TradeRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Trade {
        trade_id,
        reason: format!("corrupt row: {reason}"),
    };
    let mut row: TradeRecord =
        decode_row(manifest.ok_or_else(|| corrupt("no manifest".into()))?).map_err(corrupt)?;
    if row.trade_id != trade_id {
        return Err(corrupt(format!("manifest of trade {}", row.trade_id)));
    }
    row.state = state
        .and_then(TradeState::parse)
        .ok_or_else(|| corrupt(format!("state {state:?}")))?;
    row.settled = settled.unwrap_or(false);
    Ok(row)
}

#[derive(Debug, DeserializeRow)]
struct KeyOnly {
    #[allow(dead_code)]
    k: Option<Vec<u8>>,
}

/// An LWT's result: `[applied]` and the current values the server returned.
#[derive(Debug)]
struct Lwt {
    applied: bool,
    columns: HashMap<String, CqlValue>,
}

impl Lwt {
    fn parse(result: QueryResult) -> Result<Self, StoreError> {
        let rows = result
            .into_rows_result()
            .map_err(err("reading an LWT result"))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        let row: Option<Row> = rows
            .maybe_first_row::<Row>()
            .map_err(err("reading an LWT result"))?;
        let mut columns = HashMap::new();
        if let Some(row) = row {
            for (name, value) in names.into_iter().zip(row.columns) {
                if let Some(v) = value {
                    columns.insert(name, v);
                }
            }
        }
        let applied = columns
            .get("[applied]")
            .and_then(CqlValue::as_boolean)
            .ok_or_else(|| msg("reading an LWT result", "no [applied] column"))?;
        Ok(Self { applied, columns })
    }

    fn bigint(&self, name: &str) -> Option<i64> {
        self.columns.get(name).and_then(CqlValue::as_bigint)
    }
}

struct Statements {
    load_player: PreparedStatement,
    read_fence: PreparedStatement,
    insert_player: PreparedStatement,
    update_player_same_epoch: PreparedStatement,
    update_player_older_epoch: PreparedStatement,
    put_raw_player: PreparedStatement,
    scan_players: PreparedStatement,
    read_item: PreparedStatement,
    read_item_serial: PreparedStatement,
    create_item: PreparedStatement,
    transfer_item: PreparedStatement,
    destroy_item: PreparedStatement,
    scan_items: PreparedStatement,
    index_insert: PreparedStatement,
    index_delete: PreparedStatement,
    index_of_owner: PreparedStatement,
    scan_index: PreparedStatement,
    read_op: PreparedStatement,
    write_op: PreparedStatement,
    scan_ops: PreparedStatement,
    read_lease: PreparedStatement,
    lease_first: Batch,
    lease_takeover_expired: Batch,
    lease_takeover_free: Batch,
    lease_extend: PreparedStatement,
    lease_release: PreparedStatement,
    scan_leases: PreparedStatement,
    put_trade: PreparedStatement,
    read_trade: PreparedStatement,
    read_trade_serial: PreparedStatement,
    decide_trade: PreparedStatement,
    settle_trade: PreparedStatement,
    scan_trades: PreparedStatement,
    publish_load: PreparedStatement,
    scan_servers: PreparedStatement,
    publish_address: PreparedStatement,
    scan_addresses: PreparedStatement,
    read_party: PreparedStatement,
    insert_party: PreparedStatement,
    update_party: PreparedStatement,
    delete_party: PreparedStatement,
    read_party_of: PreparedStatement,
    set_party_of: PreparedStatement,
    clear_party_of: PreparedStatement,
    read_party_invite: PreparedStatement,
    set_party_invite: PreparedStatement,
    clear_party_invite: PreparedStatement,
    post_mail: PreparedStatement,
    read_mail: PreparedStatement,
    delete_mail: PreparedStatement,
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Profiles {
    state: ExecutionProfileHandle,
    lwt: ExecutionProfileHandle,
    serial_read: ExecutionProfileHandle,
}

impl Profiles {
    fn new(config: &ScyllaConfig) -> Self {
        let lb = match &config.datacenter {
            Some(dc) => DefaultPolicy::builder()
                .prefer_datacenter(dc.clone())
                .token_aware(true)
                .permit_dc_failover(false)
                .build(),
            None => DefaultPolicy::builder().token_aware(true).build(),
        };
        let state = ExecutionProfile::builder()
            .consistency(Consistency::LocalQuorum)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
            .load_balancing_policy(lb.clone())
            .build()
            .into_handle();
        let lwt = ExecutionProfile::builder()
            .consistency(Consistency::LocalQuorum)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(Duration::from_millis(config.lwt_timeout_ms)))
            .retry_policy(Arc::new(FallthroughRetryPolicy::new()))
            .load_balancing_policy(lb.clone())
            .build()
            .into_handle();
        let serial_read = ExecutionProfile::builder()
            .consistency(Consistency::LocalSerial)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(Duration::from_millis(config.lwt_timeout_ms)))
            .load_balancing_policy(lb)
            .build()
            .into_handle();
        Self {
            state,
            lwt,
            serial_read,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Idempotent,
    Lwt,
    SerialRead,
}

async fn prepare(
    session: &Session,
    profiles: &Profiles,
    cql: &str,
    kind: Kind,
) -> Result<PreparedStatement, StoreError> {
    let mut st = session.prepare(cql).await.map_err(|e| StoreError::Scylla {
        context: "preparing a statement",
        kind: DbFailure::Refused,
        source: Arc::new(Message(format!("{cql}: {e}"))),
    })?;
    let (profile, idempotent) = match kind {
        Kind::Idempotent => (&profiles.state, true),
        Kind::Lwt => (&profiles.lwt, false),
        Kind::SerialRead => (&profiles.serial_read, true),
    };
    st.set_execution_profile_handle(Some(profile.clone()));
    st.set_is_idempotent(idempotent);
    if matches!(kind, Kind::Idempotent) {
        st.set_page_size(1000);
    }
    Ok(st)
}

async fn prepare_lwt_batch(
    session: &Session,
    profiles: &Profiles,
    statements: &[&str],
) -> Result<Batch, StoreError> {
    let mut batch = Batch::new(BatchType::Logged);
    for s in statements {
        batch.append_statement(*s);
    }
    let mut batch = session
        .prepare_batch(&batch)
        .await
        .map_err(err("preparing a batch"))?;
    batch.set_execution_profile_handle(Some(profiles.lwt.clone()));
    batch.set_is_idempotent(false);
    Ok(batch)
}

const PLAYER_COLUMNS: &str = "name = :name, epoch = :epoch, seq = :seq, \
    schema_version = :schema_version, zone = :zone, x_mm = :x_mm, y_mm = :y_mm, \
    level = :level, xp = :xp, gold = :gold, saved_at_ms = :saved_at_ms, record = :record";

impl Statements {
    async fn prepare_all(session: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        let s = session;
        Ok(Self {
            load_player: prepare(s, p, "SELECT record FROM players WHERE player_id = ?", Idempotent)
                .await?,
            read_fence: prepare(
                s,
                p,
                "SELECT epoch, seq FROM players WHERE player_id = ?",
                SerialRead,
            )
            .await?,
            insert_player: prepare(
                s,
                p,
                "INSERT INTO players (player_id, name, epoch, seq, schema_version, zone, x_mm, \
                 y_mm, level, xp, gold, saved_at_ms, record) VALUES (:player_id, :name, :epoch, \
                 :seq, :schema_version, :zone, :x_mm, :y_mm, :level, :xp, :gold, :saved_at_ms, \
                 :record) IF NOT EXISTS",
                Lwt,
            )
            .await?,
            update_player_same_epoch: prepare(
                s,
                p,
                &format!(
                    "UPDATE players SET {PLAYER_COLUMNS} WHERE player_id = :player_id \
                     IF epoch = :if_epoch AND seq < :if_seq"
                ),
                Lwt,
            )
            .await?,
            update_player_older_epoch: prepare(
                s,
                p,
                &format!(
                    "UPDATE players SET {PLAYER_COLUMNS} WHERE player_id = :player_id \
                     IF epoch < :if_epoch"
                ),
                Lwt,
            )
            .await?,
            put_raw_player: prepare(
                s,
                p,
                "INSERT INTO players (player_id, epoch, seq, record) VALUES (?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            scan_players: prepare(s, p, "SELECT player_id, record FROM players", Idempotent)
                .await?,
            read_item: prepare(
                s,
                p,
                "SELECT owner, data, last_op FROM items WHERE item_id = ?",
                Idempotent,
            )
            .await?,
            read_item_serial: prepare(
                s,
                p,
                "SELECT owner, data, last_op FROM items WHERE item_id = ?",
                SerialRead,
            )
            .await?,
            create_item: prepare(
                s,
                p,
                "INSERT INTO items (item_id, owner, data, last_op) \
                 VALUES (:item_id, :owner, :data, :last_op) IF NOT EXISTS",
                Lwt,
            )
            .await?,
            transfer_item: prepare(
                s,
                p,
                "UPDATE items SET owner = :owner, last_op = :last_op WHERE item_id = :item_id \
                 IF owner = :if_owner",
                Lwt,
            )
            .await?,
            destroy_item: prepare(
                s,
                p,
                "UPDATE items SET owner = null, last_op = :last_op WHERE item_id = :item_id \
                 IF owner = :if_owner",
                Lwt,
            )
            .await?,
            scan_items: prepare(s, p, "SELECT item_id, owner FROM items", Idempotent).await?,
            index_insert: prepare(
                s,
                p,
                "INSERT INTO items_by_owner (owner, item_id) VALUES (?, ?)",
                Idempotent,
            )
            .await?,
            index_delete: prepare(
                s,
                p,
                "DELETE FROM items_by_owner WHERE owner = ? AND item_id = ?",
                Idempotent,
            )
            .await?,
            index_of_owner: prepare(
                s,
                p,
                "SELECT item_id FROM items_by_owner WHERE owner = ?",
                Idempotent,
            )
            .await?,
            scan_index: prepare(s, p, "SELECT owner, item_id FROM items_by_owner", Idempotent)
                .await?,
            read_op: prepare(
                s,
                p,
                "SELECT op, outcome FROM item_ops WHERE op_id = ?",
                Idempotent,
            )
            .await?,
            write_op: prepare(
                s,
                p,
                "INSERT INTO item_ops (op_id, item_id, op, outcome) \
                 VALUES (:op_id, :item_id, :op, :outcome)",
                Idempotent,
            )
            .await?,
            scan_ops: prepare(s, p, "SELECT op_id AS k FROM item_ops", Idempotent).await?,
            read_lease: prepare(
                s,
                p,
                "SELECT holder, epoch, expires_at_ms FROM leases WHERE resource = ?",
                SerialRead,
            )
            .await?,
            lease_first: prepare_lwt_batch(
                s,
                p,
                &[
                    "INSERT INTO leases (resource, epoch) VALUES (?, ?) IF NOT EXISTS",
                    "UPDATE leases USING TTL ? SET holder = ?, expires_at_ms = ? WHERE resource = ?",
                ],
            )
            .await?,
            lease_takeover_expired: prepare_lwt_batch(
                s,
                p,
                &[
                    "UPDATE leases SET epoch = ? WHERE resource = ? IF epoch = ? AND expires_at_ms = ?",
                    "UPDATE leases USING TTL ? SET holder = ?, expires_at_ms = ? WHERE resource = ?",
                ],
            )
            .await?,
            lease_takeover_free: prepare_lwt_batch(
                s,
                p,
                &[
                    "UPDATE leases SET epoch = ? WHERE resource = ? IF epoch = ? AND holder = null",
                    "UPDATE leases USING TTL ? SET holder = ?, expires_at_ms = ? WHERE resource = ?",
                ],
            )
            .await?,
            lease_extend: prepare(
                s,
                p,
                "UPDATE leases USING TTL :ttl SET expires_at_ms = :expires_at_ms, holder = :holder \
                 WHERE resource = :resource \
                 IF holder = :if_holder AND epoch = :if_epoch AND expires_at_ms > :now_ms",
                Lwt,
            )
            .await?,
            lease_release: prepare(
                s,
                p,
                "DELETE holder, expires_at_ms FROM leases WHERE resource = :resource \
                 IF holder = :if_holder AND epoch = :if_epoch",
                Lwt,
            )
            .await?,
            scan_leases: prepare(
                s,
                p,
                "SELECT holder, epoch, expires_at_ms FROM leases",
                Idempotent,
            )
            .await?,
            read_party: prepare(
                s,
                p,
                "SELECT leader, members, invites, version FROM parties WHERE party_id = ?",
                SerialRead,
            )
            .await?,
            insert_party: prepare(
                s,
                p,
                "INSERT INTO parties (party_id, leader, members, invites, version) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
                Lwt,
            )
            .await?,
            update_party: prepare(
                s,
                p,
                "UPDATE parties SET leader = ?, members = ?, invites = ?, version = ? \
                 WHERE party_id = ? IF version = ?",
                Lwt,
            )
            .await?,
            delete_party: prepare(
                s,
                p,
                "DELETE FROM parties WHERE party_id = ? IF version = ?",
                Lwt,
            )
            .await?,
            read_party_of: prepare(
                s,
                p,
                "SELECT party_id FROM party_of WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            set_party_of: prepare(
                s,
                p,
                "INSERT INTO party_of (player_id, party_id) VALUES (?, ?)",
                Idempotent,
            )
            .await?,
            clear_party_of: prepare(
                s,
                p,
                "DELETE FROM party_of WHERE player_id = ? IF party_id = ?",
                Lwt,
            )
            .await?,
            read_party_invite: prepare(
                s,
                p,
                "SELECT party_id, expires_at_ms FROM party_invites WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            set_party_invite: prepare(
                s,
                p,
                "UPDATE party_invites USING TTL ? SET party_id = ?, expires_at_ms = ? \
                 WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            clear_party_invite: prepare(
                s,
                p,
                "DELETE FROM party_invites WHERE player_id = ? IF party_id = ?",
                Lwt,
            )
            .await?,
            post_mail: prepare(
                s,
                p,
                "INSERT INTO mailbox (server, mail_id, body) VALUES (?, ?, ?)",
                Idempotent,
            )
            .await?,
            read_mail: prepare(
                s,
                p,
                "SELECT mail_id, body FROM mailbox WHERE server = ? LIMIT ?",
                Idempotent,
            )
            .await?,
            delete_mail: prepare(
                s,
                p,
                "DELETE FROM mailbox WHERE server = ? AND mail_id = ?",
                Idempotent,
            )
            .await?,
            publish_load: prepare(
                s,
                p,
                "INSERT INTO servers (server_id, players, busy_permille, draining, \
                 updated_at_ms, expires_at_ms) VALUES (:server_id, :players, :busy_permille, \
                 :draining, :updated_at_ms, :expires_at_ms) USING TTL :ttl",
                Idempotent,
            )
            .await?,
            scan_servers: prepare(
                s,
                p,
                "SELECT server_id, players, busy_permille, draining, updated_at_ms, \
                 expires_at_ms FROM servers",
                Idempotent,
            )
            .await?,
            publish_address: prepare(
                s,
                p,
                "UPDATE server_addresses USING TTL ? SET address = ? WHERE server_id = ?",
                Idempotent,
            )
            .await?,
            scan_addresses: prepare(
                s,
                p,
                "SELECT server_id, address FROM server_addresses",
                Idempotent,
            )
            .await?,
            put_trade: prepare(
                s,
                p,
                "INSERT INTO trades (trade_id, state, settled, manifest, opened_at_ms) \
                 VALUES (:trade_id, 'open', false, :manifest, :opened_at_ms) IF NOT EXISTS",
                Lwt,
            )
            .await?,
            read_trade: prepare(
                s,
                p,
                "SELECT state, settled, manifest FROM trades WHERE trade_id = ?",
                Idempotent,
            )
            .await?,
            read_trade_serial: prepare(
                s,
                p,
                "SELECT state, settled, manifest FROM trades WHERE trade_id = ?",
                SerialRead,
            )
            .await?,
            decide_trade: prepare(
                s,
                p,
                "UPDATE trades SET state = ? WHERE trade_id = ? IF state = 'open'",
                Lwt,
            )
            .await?,
            settle_trade: prepare(
                s,
                p,
                "UPDATE trades SET settled = true WHERE trade_id = ? \
                 IF state IN ('committed', 'aborted')",
                Lwt,
            )
            .await?,
            scan_trades: prepare(
                s,
                p,
                "SELECT trade_id, state, settled, manifest FROM trades",
                Idempotent,
            )
            .await?,
        })
    }
}

#[derive(Debug)]
struct Inner {
    session: Session,
    st: Statements,
    limit: Arc<Semaphore>,
}

/// The ScyllaDB store.
#[derive(Debug)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("zonehost-scylla")
        .enable_all()
        .build()
        .map_err(|e| StoreError::Open {
            target: "scylla runtime".into(),
            reason: e.to_string(),
        })
}

/// Runs `fut` on `rt` and waits for it on this thread (works inside another runtime too).
fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| msg("runtime", "the driver task ended without an answer"))?
}

async fn session(config: &ScyllaConfig, keyspace: Option<&str>) -> Result<Session, StoreError> {
    let mut builder = SessionBuilder::new()
        .known_nodes(config.nodes())
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms));
    if let (Some(user), Some(pass)) = (&config.username, &config.password) {
        builder = builder.user(user.clone(), pass.clone());
    }
    if let Some(ks) = keyspace {
        builder = builder.use_keyspace(ks, false);
    }
    builder.build().await.map_err(|e| {
        let text = e.to_string();
        // The hint only where the server was reached and the keyspace is what failed, not
        // for an unreachable node (refused, timed out).
        let hint = keyspace.is_some() && text.to_ascii_lowercase().contains("keyspace");
        StoreError::Open {
            target: config.uri.clone(),
            reason: format!(
                "{text}{}",
                if hint {
                    " (has the keyspace been created with `zonehost store migrate`?)"
                } else {
                    ""
                }
            ),
        }
    })
}

/// The statements of [`SCHEMA_CQL`] that `migrate` runs inside the keyspace (everything
/// but `CREATE KEYSPACE` and `USE`), comments stripped.
pub fn schema_statements() -> Vec<String> {
    let text: String = SCHEMA_CQL
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .filter(|s| {
            let upper = s.to_ascii_uppercase();
            !upper.starts_with("CREATE KEYSPACE") && !upper.starts_with("USE ")
        })
        .collect()
}

/// Whether `e` is a server's refusal of the `tablets` keyspace option (a server without
/// tablets: Apache Cassandra answers a syntax error "Unknown property 'tablets'", older
/// ScyllaDB a configuration error naming it).
fn refuses_tablets_option(e: &ExecutionError) -> bool {
    matches!(classify(e), DbFailure::Refused)
        && e.to_string().to_ascii_lowercase().contains("tablets")
}

/// Creates the keyspace (replication from the config) and every table of the schema,
/// records the schema version and waits for schema agreement. Idempotent.
pub fn migrate(config: &ScyllaConfig) -> Result<String, StoreError> {
    config.validate()?;
    let rt = runtime()?;
    let config = config.clone();
    let result = run_on(&rt, async move {
        let s = session(&config, None).await?;
        let ks = &config.keyspace;
        let replication = format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
            config.replication_factor
        );
        // ScyllaDB 6+ makes new keyspaces tablet-based, where LWT needs a recent release:
        // ask for vnodes. Servers that have no tablets (Apache Cassandra, ScyllaDB before
        // 6.0) refuse the unknown option; they use vnodes anyway, so create it without.
        let keyspace_kind = match s
            .query_unpaged(
                format!("{replication} AND tablets = {{'enabled': false}}"),
                (),
            )
            .await
        {
            Ok(_) => "vnodes, tablets disabled",
            Err(e) if refuses_tablets_option(&e) => {
                s.query_unpaged(replication, ())
                    .await
                    .map_err(err("creating the keyspace"))?;
                "vnodes, the server has no tablets option"
            }
            Err(e) => return Err(err("creating the keyspace")(e)),
        };
        s.use_keyspace(ks.as_str(), false)
            .await
            .map_err(err("using the keyspace"))?;
        let statements = schema_statements();
        for cql in &statements {
            s.query_unpaged(cql.as_str(), ())
                .await
                .map_err(|e| StoreError::Scylla {
                    context: "applying the schema",
                    kind: classify(&e),
                    source: Arc::new(Message(format!("{cql}: {e}"))),
                })?;
        }
        s.query_unpaged(
            "INSERT INTO schema_meta (name, version) VALUES ('schema', ?)",
            (SCHEMA_VERSION,),
        )
        .await
        .map_err(err("recording the schema version"))?;
        s.await_schema_agreement()
            .await
            .map_err(err("awaiting schema agreement"))?;
        Ok(format!(
            "scylla keyspace {ks} ({keyspace_kind}) at {} at schema version {SCHEMA_VERSION} \
             ({} statements)",
            config.uri,
            statements.len()
        ))
    });
    rt.shutdown_background();
    result
}

impl ScyllaStore {
    /// Connects to the cluster and prepares every statement. The keyspace must exist
    /// ([`migrate`]).
    pub fn connect(config: &ScyllaConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let rt = runtime()?;
        let config = config.clone();
        let inner = run_on(&rt, async move {
            let session = session(&config, Some(&config.keyspace)).await?;
            let profiles = Profiles::new(&config);
            let st = Statements::prepare_all(&session, &profiles).await?;
            Ok(Inner {
                session,
                st,
                limit: Arc::new(Semaphore::new(config.max_in_flight)),
            })
        });
        match inner {
            Ok(inner) => Ok(Self {
                inner: Arc::new(inner),
                runtime: Some(rt),
            }),
            Err(e) => {
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    fn run<T, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let rt = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        run_on(rt, f(self.inner.clone()))
    }

    /// Operator and test tool: writes `bytes` as the record of `player_id` with `fence`,
    /// as is (no encoding, no fencing).
    pub fn put_raw_player(
        &self,
        player_id: u64,
        fence: Fence,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let bytes = bytes.to_vec();
        self.run(move |i| async move {
            let values = (
                id_to_cql(player_id),
                i64_of(fence.epoch, "epoch")?,
                i64_of(fence.seq, "seq")?,
                bytes,
            );
            i.session
                .execute_unpaged(&i.st.put_raw_player, values)
                .await
                .map_err(err("writing a raw record"))?;
            Ok(())
        })
    }

    /// Operator and test tool: adds an owner-index entry without touching the item row
    /// (plants the anomaly [`Store::check`] must find).
    pub fn insert_raw_index_entry(&self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        self.run(move |i| async move {
            i.session
                .execute_unpaged(&i.st.index_insert, (owner.to_key(), blob16(item_id)))
                .await
                .map_err(err("writing an index entry"))?;
            Ok(())
        })
    }
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn player_values(r: &PlayerRecord, bytes: Vec<u8>) -> Result<PlayerValues, StoreError> {
    Ok(PlayerValues {
        player_id: id_to_cql(r.player_id),
        name: r.name.clone(),
        epoch: i64_of(r.epoch, "epoch")?,
        seq: i64_of(r.seq, "seq")?,
        schema_version: i32::from(record::RECORD_VERSION),
        zone: i32::from(r.zone),
        x_mm: r.x_mm,
        y_mm: r.y_mm,
        level: i64::from(r.level),
        xp: display_i64(r.xp),
        gold: display_i64(r.gold),
        saved_at_ms: display_i64(r.saved_at_ms),
        record: bytes,
    })
}

fn parse_owner(item_id: u128, owner: Option<&str>) -> Result<Option<Owner>, StoreError> {
    match owner {
        None => Ok(None),
        Some(s) => Owner::from_key(s)
            .map(Some)
            .ok_or_else(|| StoreError::CorruptItem {
                item_id,
                reason: format!("owner {s:?} does not parse"),
            }),
    }
}

enum SaveStep {
    SameEpoch,
    Insert,
    OlderEpoch,
}

impl Inner {
    async fn execute(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        context: &'static str,
    ) -> Result<QueryResult, StoreError> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(err(context))
    }

    /// Runs a single-row read: its first row, if any.
    async fn first_row<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        context: &'static str,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'a> ::scylla::deserialize::row::DeserializeRow<'a, 'a>,
    {
        self.execute(st, values, context)
            .await?
            .into_rows_result()
            .map_err(err(context))?
            .maybe_first_row::<R>()
            .map_err(err(context))
    }

    /// Pages through a full-table (or partition) read, calling `f` per row.
    async fn scan<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow + Clone,
        context: &'static str,
        mut f: impl FnMut(R) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>
    where
        R: for<'a> ::scylla::deserialize::row::DeserializeRow<'a, 'a>,
    {
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(st, values.clone(), paging)
                .await
                .map_err(err(context))?;
            let rows = result.into_rows_result().map_err(err(context))?;
            for row in rows.rows::<R>().map_err(err(context))? {
                f(row.map_err(err(context))?)?;
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(()),
            }
        }
    }

    async fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        let row: Option<PlayerBlob> = self
            .first_row::<PlayerBlob>(
                &self.st.load_player,
                (id_to_cql(player_id),),
                "loading a player",
            )
            .await?;
        match row {
            None => Ok(None),
            Some(PlayerBlob { record: None }) => Err(StoreError::Corrupt {
                player_id,
                reason: "row has no record blob".into(),
            }),
            Some(PlayerBlob { record: Some(b) }) => record::decode(player_id, &b).map(Some),
        }
    }

    async fn read_fence(&self, player_id: u64) -> Result<Option<Fence>, StoreError> {
        let row: Option<FenceRow> = self
            .first_row::<FenceRow>(
                &self.st.read_fence,
                (id_to_cql(player_id),),
                "re-reading a fence",
            )
            .await?;
        Ok(row.and_then(|r| match (r.epoch, r.seq) {
            (Some(e), Some(s)) => Some(Fence {
                epoch: id_from_cql(e),
                seq: id_from_cql(s),
            }),
            _ => None,
        }))
    }

    async fn save_one(&self, r: PlayerRecord) -> Result<SaveOutcome, StoreError> {
        let player_id = r.player_id;
        let fence = r.fence();
        let values = player_values(&r, record::encode(&r)?)?;
        let mut step = SaveStep::SameEpoch;
        for _ in 0..MAX_ROUNDS {
            let sent = match step {
                SaveStep::SameEpoch => {
                    self.session
                        .execute_unpaged(
                            &self.st.update_player_same_epoch,
                            PlayerIfSameEpoch {
                                values: values.clone(),
                                if_epoch: values.epoch,
                                if_seq: values.seq,
                            },
                        )
                        .await
                }
                SaveStep::Insert => {
                    self.session
                        .execute_unpaged(&self.st.insert_player, values.clone())
                        .await
                }
                SaveStep::OlderEpoch => {
                    self.session
                        .execute_unpaged(
                            &self.st.update_player_older_epoch,
                            PlayerIfOlderEpoch {
                                values: values.clone(),
                                if_epoch: values.epoch,
                            },
                        )
                        .await
                }
            };
            let stored = match sent {
                Ok(result) => {
                    let lwt = Lwt::parse(result)?;
                    if lwt.applied {
                        return Ok(SaveOutcome::Saved { player_id });
                    }
                    match (lwt.bigint("epoch"), lwt.bigint("seq")) {
                        (Some(e), Some(s)) => Some(Fence {
                            epoch: id_from_cql(e),
                            seq: id_from_cql(s),
                        }),
                        // No row (or a server that returns only [applied]): ask.
                        _ => match step {
                            SaveStep::Insert => self.read_fence(player_id).await?,
                            _ => None,
                        },
                    }
                }
                Err(e) if may_have_applied(&e) => {
                    // Unknown outcome: the serial read completes any Paxos round in flight.
                    match self.read_fence(player_id).await {
                        Ok(Some(f)) if f == fence => return Ok(SaveOutcome::Saved { player_id }),
                        Ok(found) => found,
                        Err(read) => {
                            return Err(StoreError::UnknownOutcome {
                                context: "checkpoint",
                                detail: format!("write: {e}; re-read: {read}"),
                            })
                        }
                    }
                }
                Err(e) => return Err(err("checkpoint")(e)),
            };
            step = match stored {
                None => SaveStep::Insert,
                Some(s) if s >= fence => {
                    return Ok(SaveOutcome::Stale {
                        player_id,
                        stored: s,
                    })
                }
                Some(s) if s.epoch < fence.epoch => SaveStep::OlderEpoch,
                Some(_) => SaveStep::SameEpoch,
            };
        }
        Err(msg(
            "checkpoint",
            format!("player {player_id}: still contended after {MAX_ROUNDS} rounds"),
        ))
    }

    async fn read_item(
        &self,
        item_id: u128,
        serial: bool,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let st = if serial {
            &self.st.read_item_serial
        } else {
            &self.st.read_item
        };
        let row: Option<ItemRowCql> = self
            .first_row::<ItemRowCql>(st, (blob16(item_id),), "reading an item")
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let last_op = match row.last_op.as_deref().map(from_blob16) {
            Some(Some(op)) => op,
            _ => {
                return Err(StoreError::CorruptItem {
                    item_id,
                    reason: "last_op is missing or not 16 bytes".into(),
                })
            }
        };
        Ok(Some(ItemRecord {
            item_id,
            owner: parse_owner(item_id, row.owner.as_deref())?,
            data: row.data.unwrap_or_default(),
            last_op,
        }))
    }

    /// The outcome `op` has if it applied.
    fn applied_outcome(op: &ItemOp) -> ItemOutcome {
        let item_id = op.item_id;
        match op.kind {
            ItemOpKind::Create { owner, .. } => ItemOutcome::Created { item_id, owner },
            ItemOpKind::Transfer { from, to } => ItemOutcome::Transferred { item_id, from, to },
            ItemOpKind::Destroy { from } => ItemOutcome::Destroyed { item_id, from },
        }
    }

    /// Judges `op` against a freshly read row: `Some(outcome)` if decided, `None` if the
    /// op has not applied and its condition still holds (safe to send again).
    fn judge(op: &ItemOp, row: Option<&ItemRecord>) -> Option<ItemOutcome> {
        let item_id = op.item_id;
        if let Some(row) = row {
            if row.last_op == op.op_id {
                return Some(Self::applied_outcome(op));
            }
        }
        match (&op.kind, row) {
            (ItemOpKind::Create { .. }, None) => None,
            (ItemOpKind::Create { .. }, Some(_)) => Some(ItemOutcome::AlreadyExists { item_id }),
            (ItemOpKind::Transfer { from, .. } | ItemOpKind::Destroy { from }, Some(r))
                if r.owner == Some(*from) =>
            {
                None
            }
            (ItemOpKind::Transfer { .. } | ItemOpKind::Destroy { .. }, r) => {
                Some(ItemOutcome::OwnerMismatch {
                    item_id,
                    actual: r.and_then(|r| r.owner),
                })
            }
        }
    }

    async fn item_lwt(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        let item_id = op.item_id;
        for _ in 0..MAX_ROUNDS {
            let sent = match &op.kind {
                ItemOpKind::Create { owner, data } => {
                    self.session
                        .execute_unpaged(
                            &self.st.create_item,
                            ItemInsert {
                                item_id: blob16(item_id),
                                owner: owner.to_key(),
                                data: data.clone(),
                                last_op: blob16(op.op_id),
                            },
                        )
                        .await
                }
                ItemOpKind::Transfer { from, to } => {
                    self.session
                        .execute_unpaged(
                            &self.st.transfer_item,
                            ItemTransfer {
                                owner: to.to_key(),
                                last_op: blob16(op.op_id),
                                item_id: blob16(item_id),
                                if_owner: from.to_key(),
                            },
                        )
                        .await
                }
                ItemOpKind::Destroy { from } => {
                    self.session
                        .execute_unpaged(
                            &self.st.destroy_item,
                            ItemDestroy {
                                last_op: blob16(op.op_id),
                                item_id: blob16(item_id),
                                if_owner: from.to_key(),
                            },
                        )
                        .await
                }
            };
            match sent {
                Ok(result) => {
                    if Lwt::parse(result)?.applied {
                        return Ok(Self::applied_outcome(op));
                    }
                    // Refused: read the row to tell "someone else" from "our own earlier
                    // attempt" (last_op).
                    let row = self.read_item(item_id, true).await?;
                    if let Some(outcome) = Self::judge(op, row.as_ref()) {
                        return Ok(outcome);
                    }
                }
                Err(e) if may_have_applied(&e) => match self.read_item(item_id, true).await {
                    Ok(row) => {
                        if let Some(outcome) = Self::judge(op, row.as_ref()) {
                            return Ok(outcome);
                        }
                        // Not applied and the condition still holds: sending again is safe.
                    }
                    Err(read) => {
                        return Err(StoreError::UnknownOutcome {
                            context: "item operation",
                            detail: format!("write: {e}; re-read: {read}"),
                        })
                    }
                },
                Err(e) => return Err(err("item operation")(e)),
            }
        }
        Err(msg(
            "item operation",
            format!("item {item_id:032x}: still contended after {MAX_ROUNDS} rounds"),
        ))
    }

    async fn index(&self, insert: bool, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        let st = if insert {
            &self.st.index_insert
        } else {
            &self.st.index_delete
        };
        self.execute(
            st,
            (owner.to_key(), blob16(item_id)),
            "updating the owner index",
        )
        .await?;
        Ok(())
    }

    /// After an item LWT failed for certain (it did not apply in this attempt), takes back
    /// the index entry written ahead of it for the new owner, unless the row says the item
    /// is that owner's after all (an earlier attempt of the same op applied). Best effort:
    /// if the row cannot be read the entry stays, which `check` reports but which never
    /// changes an outcome (`items_of` trusts the item row). Without this, every definite
    /// refusal (Unavailable, Overloaded...) would leave the item listed under two owners.
    async fn withdraw_index_entry(&self, new_owner: Owner, item_id: u128) {
        match self.read_item(item_id, false).await {
            Ok(row) if row.as_ref().and_then(|r| r.owner) != Some(new_owner) => {
                if let Err(e) = self.index(false, new_owner, item_id).await {
                    tracing::warn!(item = format_args!("{item_id:032x}"), error = %e, "stray owner-index entry left after a failed item operation");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(item = format_args!("{item_id:032x}"), error = %e, "stray owner-index entry left after a failed item operation");
            }
        }
    }

    async fn apply_item_op(&self, op: ItemOp) -> Result<ItemOutcome, StoreError> {
        if let Some(prev) = self
            .first_row::<OpRowCql>(&self.st.read_op, (blob16(op.op_id),), "reading the op log")
            .await?
        {
            let corrupt = |reason: String| StoreError::CorruptItem {
                item_id: op.item_id,
                reason: format!("op log entry {:032x}: {reason}", op.op_id),
            };
            let logged: ItemOp =
                decode_row(prev.op.as_deref().unwrap_or_default()).map_err(corrupt)?;
            if logged != op {
                return Err(StoreError::OpConflict { op_id: op.op_id });
            }
            return decode_row(prev.outcome.as_deref().unwrap_or_default()).map_err(corrupt);
        }
        // The index always contains the truth: add the new owner's entry first.
        let new_owner = match op.kind {
            ItemOpKind::Create { owner, .. } => Some(owner),
            ItemOpKind::Transfer { to, .. } => Some(to),
            ItemOpKind::Destroy { .. } => None,
        };
        if let Some(o) = new_owner {
            self.index(true, o, op.item_id).await?;
        }
        let outcome = match self.item_lwt(&op).await {
            Ok(outcome) => outcome,
            Err(e) => {
                if let (Some(o), false) =
                    (new_owner, matches!(e, StoreError::UnknownOutcome { .. }))
                {
                    self.withdraw_index_entry(o, op.item_id).await;
                }
                return Err(e);
            }
        };
        match outcome {
            ItemOutcome::Transferred { from, to, .. } if from != to => {
                self.index(false, from, op.item_id).await?
            }
            ItemOutcome::Destroyed { from, .. } => self.index(false, from, op.item_id).await?,
            ItemOutcome::OwnerMismatch { actual, .. } => {
                if let Some(o) = new_owner.filter(|o| Some(*o) != actual) {
                    self.index(false, o, op.item_id).await?;
                }
            }
            ItemOutcome::AlreadyExists { .. } => {
                let actual = self
                    .read_item(op.item_id, false)
                    .await?
                    .and_then(|r| r.owner);
                if let Some(o) = new_owner.filter(|o| Some(*o) != actual) {
                    self.index(false, o, op.item_id).await?;
                }
            }
            _ => {}
        }
        self.execute(
            &self.st.write_op,
            OpInsert {
                op_id: blob16(op.op_id),
                item_id: blob16(op.item_id),
                op: encode_row(&op)?,
                outcome: encode_row(&outcome)?,
            },
            "writing the op log",
        )
        .await?;
        Ok(outcome)
    }

    async fn items_of(self: Arc<Self>, owner: Owner) -> Result<Vec<ItemRecord>, StoreError> {
        let mut ids = Vec::new();
        self.scan::<IndexItemRow>(
            &self.st.index_of_owner,
            (owner.to_key(),),
            "reading the owner index",
            |row| {
                if let Some(id) = from_blob16(&row.item_id) {
                    ids.push(id);
                }
                Ok(())
            },
        )
        .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let me = self.clone();
            let permit = self.limit.clone().acquire_owned().await;
            tasks.spawn(async move {
                let _permit = permit;
                me.read_item(id, false).await
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let item = joined.map_err(err("reading items"))??;
            // The item row is the truth: stale index entries are not this owner's items.
            if let Some(item) = item.filter(|i| i.owner == Some(owner)) {
                out.push(item);
            }
        }
        out.sort_by_key(|i| i.item_id);
        Ok(out)
    }

    async fn ground_items(self: Arc<Self>) -> Result<Vec<ItemRecord>, StoreError> {
        let mut ids = Vec::new();
        self.scan::<IndexRow>(&self.st.scan_index, (), "scanning the owner index", |row| {
            if let (Some(Owner::Ground { instance }), Some(id)) =
                (Owner::from_key(&row.owner), from_blob16(&row.item_id))
            {
                ids.push((instance, id));
            }
            Ok(())
        })
        .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (instance, id) in ids {
            let me = self.clone();
            let permit = self.limit.clone().acquire_owned().await;
            tasks.spawn(async move {
                let _permit = permit;
                me.read_item(id, false)
                    .await
                    .map(|i| i.filter(|i| i.owner == Some(Owner::Ground { instance })))
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            // The item row is the truth: stale index entries are skipped.
            if let Some(item) = joined.map_err(err("reading items"))?? {
                out.push(item);
            }
        }
        out.sort_by_key(|i| i.item_id);
        Ok(out)
    }

    async fn check(&self) -> Result<IntegrityReport, StoreError> {
        let mut report = IntegrityReport {
            backend: "scylla".into(),
            index_written_apart: true,
            ..Default::default()
        };
        let mut anomalies = Vec::new();
        self.scan::<PlayerScanRow>(&self.st.scan_players, (), "scanning players", |row| {
            report.players += 1;
            let player_id = id_from_cql(row.player_id);
            let decoded = match row.record {
                Some(b) => record::decode(player_id, &b).map(|_| ()),
                None => Err(StoreError::Corrupt {
                    player_id,
                    reason: "row has no record blob".into(),
                }),
            };
            if let Err(StoreError::Corrupt { reason, .. }) = decoded {
                anomalies.push(Anomaly::CorruptPlayer { player_id, reason });
            }
            Ok(())
        })
        .await?;
        let mut owner_of: HashMap<u128, Owner> = HashMap::new();
        let mut destroyed = 0u64;
        self.scan::<ItemScanRow>(&self.st.scan_items, (), "scanning items", |row| {
            let Some(item_id) = from_blob16(&row.item_id) else {
                anomalies.push(Anomaly::CorruptItem {
                    item_id: 0,
                    reason: format!("item id of {} bytes", row.item_id.len()),
                });
                return Ok(());
            };
            match parse_owner(item_id, row.owner.as_deref()) {
                Ok(Some(o)) => {
                    owner_of.insert(item_id, o);
                }
                Ok(None) => destroyed += 1,
                Err(e) => anomalies.push(Anomaly::CorruptItem {
                    item_id,
                    reason: e.to_string(),
                }),
            }
            Ok(())
        })
        .await?;
        let mut listed: BTreeMap<u128, Vec<Owner>> = BTreeMap::new();
        let mut entries = 0u64;
        self.scan::<IndexRow>(&self.st.scan_index, (), "scanning the owner index", |row| {
            entries += 1;
            match (Owner::from_key(&row.owner), from_blob16(&row.item_id)) {
                (Some(o), Some(id)) => listed.entry(id).or_default().push(o),
                _ => anomalies.push(Anomaly::CorruptItem {
                    item_id: from_blob16(&row.item_id).unwrap_or(0),
                    reason: format!("index entry under {:?} does not parse", row.owner),
                }),
            }
            Ok(())
        })
        .await?;
        let mut ops = 0u64;
        self.scan::<KeyOnly>(&self.st.scan_ops, (), "scanning the op log", |_| {
            ops += 1;
            Ok(())
        })
        .await?;
        let mut leases = 0u64;
        self.scan::<LeaseRowCql>(&self.st.scan_leases, (), "scanning leases", |_| {
            leases += 1;
            Ok(())
        })
        .await?;
        let mut owners = HashSet::new();
        for (&item_id, &owner) in &owner_of {
            owners.insert(owner);
            report.items += 1;
            match owner {
                Owner::Player(_) => report.items_on_players += 1,
                Owner::Ground { .. } => report.items_on_ground += 1,
                Owner::Trade { .. } => report.items_in_escrow += 1,
            }
            let l = listed.get(&item_id);
            if !l.is_some_and(|l| l.contains(&owner)) {
                anomalies.push(Anomaly::MissingIndexEntry { item_id, owner });
            }
            let also: Vec<Owner> = l
                .map(|l| l.iter().copied().filter(|o| *o != owner).collect())
                .unwrap_or_default();
            if !also.is_empty() {
                anomalies.push(Anomaly::DuplicateOwner {
                    item_id,
                    owner,
                    also,
                });
            }
        }
        for (item_id, l) in &listed {
            if !owner_of.contains_key(item_id) {
                for &owner in l {
                    anomalies.push(Anomaly::DanglingIndexEntry {
                        item_id: *item_id,
                        owner,
                    });
                }
            }
        }
        let mut unsettled = HashSet::new();
        let mut corrupt = HashSet::new();
        for t in self.scan_trades().await? {
            report.trades += 1;
            match t {
                Ok(t) if !t.settled => {
                    report.trades_unsettled += 1;
                    unsettled.insert(t.trade_id);
                }
                Ok(_) => {}
                Err((trade_id, reason)) => {
                    corrupt.insert(trade_id);
                    anomalies.push(Anomaly::CorruptTrade { trade_id, reason });
                }
            }
        }
        for (&item_id, &owner) in &owner_of {
            if let Owner::Trade { trade } = owner {
                if !unsettled.contains(&trade) && !corrupt.contains(&trade) {
                    anomalies.push(Anomaly::StrandedEscrow { item_id, trade });
                }
            }
        }
        report.destroyed_items = destroyed;
        report.index_entries = entries;
        report.owners = owners.len() as u64;
        report.ops = ops;
        report.leases = leases;
        anomalies.sort_by_key(|a| format!("{a}"));
        report.anomalies = anomalies;
        Ok(report)
    }

    async fn read_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError> {
        let row = self
            .first_row::<PartyRowCql>(
                &self.st.read_party,
                (id_to_cql(party_id),),
                "reading a party",
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (Some(leader), Some(version)) = (row.leader, row.version) else {
            return Err(StoreError::Invalid {
                reason: format!("party {party_id:016x}: row without leader or version"),
            });
        };
        let ids =
            |v: Option<Vec<i64>>| v.unwrap_or_default().into_iter().map(id_from_cql).collect();
        Ok(Some(PartyRecord {
            party_id,
            leader: id_from_cql(leader),
            members: ids(row.members),
            invites: ids(row.invites),
            version: u64::try_from(version).unwrap_or(0),
        }))
    }

    async fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        let row = self
            .first_row::<PartyOfCql>(
                &self.st.read_party_of,
                (id_to_cql(player_id),),
                "reading a membership",
            )
            .await?;
        let Some(party_id) = row.and_then(|r| r.party_id).map(id_from_cql) else {
            return Ok(None);
        };
        let party = self.read_party(party_id).await?;
        Ok(party
            .filter(|p| p.members.contains(&player_id))
            .map(|p| p.party_id))
    }

    async fn write_party(
        &self,
        party: PartyRecord,
        expected: Option<u64>,
        invitation: Option<(Invitation, i32)>,
    ) -> Result<bool, StoreError> {
        let current = self.read_party(party.party_id).await?;
        if current.as_ref().map(|c| c.version) != expected {
            return Ok(false);
        }
        let id = id_to_cql(party.party_id);
        // The invitee points to the party first (checked against the row when read).
        if let Some((inv, cell_ttl)) = invitation {
            self.execute(
                &self.st.set_party_invite,
                (
                    cell_ttl,
                    id,
                    i64_of(inv.expires_at_ms, "invitation expiry")?,
                    id_to_cql(inv.invitee),
                ),
                "writing an invitation",
            )
            .await?;
        }
        // Added members point to the party first (checked against the row when read).
        for m in &party.members {
            self.execute(
                &self.st.set_party_of,
                (id_to_cql(*m), id),
                "writing a membership",
            )
            .await?;
        }
        let cql_ids = |v: &[u64]| v.iter().map(|x| id_to_cql(*x)).collect::<Vec<i64>>();
        let version = i64_of(party.version, "party version")?;
        let sent = match (expected, party.members.is_empty()) {
            (None, true) => return Ok(true),
            (None, false) => {
                self.session
                    .execute_unpaged(
                        &self.st.insert_party,
                        (
                            id,
                            id_to_cql(party.leader),
                            cql_ids(&party.members),
                            cql_ids(&party.invites),
                            version,
                        ),
                    )
                    .await
            }
            (Some(v), true) => {
                self.session
                    .execute_unpaged(&self.st.delete_party, (id, i64_of(v, "party version")?))
                    .await
            }
            (Some(v), false) => {
                self.session
                    .execute_unpaged(
                        &self.st.update_party,
                        (
                            id_to_cql(party.leader),
                            cql_ids(&party.members),
                            cql_ids(&party.invites),
                            version,
                            id,
                            i64_of(v, "party version")?,
                        ),
                    )
                    .await
            }
        };
        let applied = match sent {
            Ok(result) => Lwt::parse(result)?.applied,
            Err(e) if may_have_applied(&e) => {
                // Unknown outcome: the serial read finishes the round and tells.
                let now = self.read_party(party.party_id).await.map_err(|re| {
                    StoreError::UnknownOutcome {
                        context: "writing a party",
                        detail: format!("write: {e}; re-read: {re}"),
                    }
                })?;
                match now {
                    None => party.members.is_empty(),
                    Some(p) => p == party,
                }
            }
            Err(e) => return Err(err("writing a party")(e)),
        };
        if !applied {
            return Ok(false);
        }
        // The party row is written: that is the outcome. The index clean-up below is
        // advisory (every index read is checked against the party row, and invitations
        // also expire), so a failure is logged rather than turning a done write into an
        // error the caller would report (and retry into a refusal).
        // Removed members no longer point to it (unless they joined another since).
        for old in current.iter().flat_map(|c| c.members.iter()) {
            if !party.members.contains(old) {
                if let Err(e) = self
                    .execute(
                        &self.st.clear_party_of,
                        (id_to_cql(*old), id),
                        "clearing a membership",
                    )
                    .await
                {
                    tracing::warn!(player = *old, party = party.party_id, error = %e, "stale party_of entry left (checked against the party row on read)");
                }
            }
        }
        // Invitees it no longer lists lose their invitation to it (unless invited elsewhere
        // since).
        for old in current.iter().flat_map(|c| c.invites.iter()) {
            if party.members.is_empty() || !party.invites.contains(old) {
                if let Err(e) = self
                    .execute(
                        &self.st.clear_party_invite,
                        (id_to_cql(*old), id),
                        "clearing an invitation",
                    )
                    .await
                {
                    tracing::warn!(player = *old, party = party.party_id, error = %e, "stale invitation entry left (checked against the party row on read, and it expires)");
                }
            }
        }
        Ok(true)
    }

    async fn invitation_of(
        &self,
        player_id: u64,
        now_ms: u64,
    ) -> Result<Option<Invitation>, StoreError> {
        let row = self
            .first_row::<PartyInviteCql>(
                &self.st.read_party_invite,
                (id_to_cql(player_id),),
                "reading an invitation",
            )
            .await?;
        let Some((party_id, expires)) = row.and_then(|r| r.party_id.zip(r.expires_at_ms)) else {
            return Ok(None);
        };
        let entry = Invitation {
            party_id: id_from_cql(party_id),
            invitee: player_id,
            expires_at_ms: u64::try_from(expires).unwrap_or(0),
        };
        if entry.expires_at_ms <= now_ms {
            return Ok(None);
        }
        let party = self.read_party(entry.party_id).await?;
        Ok(super::pending_invitation(entry, party.as_ref(), now_ms))
    }

    async fn read_trade(
        &self,
        trade_id: u64,
        serial: bool,
    ) -> Result<Option<TradeRecord>, StoreError> {
        let st = if serial {
            &self.st.read_trade_serial
        } else {
            &self.st.read_trade
        };
        let Some(row) = self
            .first_row::<TradeRowCql>(st, (id_to_cql(trade_id),), "reading a trade")
            .await?
        else {
            return Ok(None);
        };
        trade_from_cql(
            trade_id,
            row.state.as_deref(),
            row.settled,
            row.manifest.as_deref(),
        )
        .map(Some)
    }

    /// Re-reads a trade (serial) after an LWT whose outcome is unknown.
    async fn reread_trade(
        &self,
        trade_id: u64,
        write: &ExecutionError,
    ) -> Result<Option<TradeRecord>, StoreError> {
        self.read_trade(trade_id, true)
            .await
            .map_err(|read| StoreError::UnknownOutcome {
                context: "trade",
                detail: format!("write: {write}; re-read: {read}"),
            })
    }

    async fn put_trade(&self, trade: TradeRecord) -> Result<TradeRecord, StoreError> {
        super::trade::validate(&trade)?;
        let trade_id = trade.trade_id;
        let fresh = TradeRecord {
            state: TradeState::Open,
            settled: false,
            ..trade
        };
        let values = TradeInsert {
            trade_id: id_to_cql(trade_id),
            manifest: encode_row(&fresh)?,
            opened_at_ms: i64_of(fresh.opened_at_ms, "opened_at_ms")?,
        };
        let judge = |stored: TradeRecord| {
            if stored.same_manifest(&fresh) {
                Ok(stored)
            } else {
                Err(StoreError::Trade {
                    trade_id,
                    reason: "the id is taken by a different trade".into(),
                })
            }
        };
        for _ in 0..MAX_ROUNDS {
            match self
                .session
                .execute_unpaged(&self.st.put_trade, &values)
                .await
            {
                Ok(result) => {
                    if Lwt::parse(result)?.applied {
                        return Ok(fresh);
                    }
                    if let Some(stored) = self.read_trade(trade_id, true).await? {
                        return judge(stored);
                    }
                }
                Err(e) if may_have_applied(&e) => {
                    if let Some(stored) = self.reread_trade(trade_id, &e).await? {
                        return judge(stored);
                    }
                }
                Err(e) => return Err(err("writing a trade")(e)),
            }
        }
        Err(msg(
            "writing a trade",
            format!("trade {trade_id}: still contended after {MAX_ROUNDS} rounds"),
        ))
    }

    async fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        if decision == TradeState::Open {
            return Err(StoreError::Trade {
                trade_id,
                reason: "a decision is committed or aborted".into(),
            });
        }
        for _ in 0..MAX_ROUNDS {
            let sent = self
                .session
                .execute_unpaged(
                    &self.st.decide_trade,
                    (decision.as_str(), id_to_cql(trade_id)),
                )
                .await;
            let row = match sent {
                Ok(result) => {
                    if Lwt::parse(result)?.applied {
                        return Ok(Some(decision));
                    }
                    self.read_trade(trade_id, true).await?
                }
                Err(e) if may_have_applied(&e) => self.reread_trade(trade_id, &e).await?,
                Err(e) => return Err(err("deciding a trade")(e)),
            };
            match row {
                None => return Ok(None),
                // Decided, by this write or another: either way it is the decision.
                Some(r) if r.state != TradeState::Open => return Ok(Some(r.state)),
                // Still open: the write did not apply; sending it again is safe.
                Some(_) => {}
            }
        }
        Err(msg(
            "deciding a trade",
            format!("trade {trade_id}: still open after {MAX_ROUNDS} rounds"),
        ))
    }

    async fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        for _ in 0..MAX_ROUNDS {
            let sent = self
                .session
                .execute_unpaged(&self.st.settle_trade, (id_to_cql(trade_id),))
                .await;
            let row = match sent {
                Ok(result) => {
                    if Lwt::parse(result)?.applied {
                        return Ok(());
                    }
                    self.read_trade(trade_id, true).await?
                }
                Err(e) if may_have_applied(&e) => self.reread_trade(trade_id, &e).await?,
                Err(e) => return Err(err("settling a trade")(e)),
            };
            match row {
                None => {
                    return Err(StoreError::Trade {
                        trade_id,
                        reason: "no such trade".into(),
                    })
                }
                Some(r) if r.state == TradeState::Open => {
                    return Err(StoreError::Trade {
                        trade_id,
                        reason: "an open trade cannot be settled".into(),
                    })
                }
                Some(r) if r.settled => return Ok(()),
                Some(_) => {}
            }
        }
        Err(msg(
            "settling a trade",
            format!("trade {trade_id}: not settled after {MAX_ROUNDS} rounds"),
        ))
    }

    /// Every trade row, parsed; unreadable ones as `Err((trade_id, reason))`.
    async fn scan_trades(&self) -> Result<Vec<Result<TradeRecord, (u64, String)>>, StoreError> {
        let mut out = Vec::new();
        self.scan::<TradeScanRow>(&self.st.scan_trades, (), "scanning trades", |row| {
            let trade_id = id_from_cql(row.trade_id);
            out.push(
                trade_from_cql(
                    trade_id,
                    row.state.as_deref(),
                    row.settled,
                    row.manifest.as_deref(),
                )
                .map_err(|e| (trade_id, e.to_string())),
            );
            Ok(())
        })
        .await?;
        Ok(out)
    }

    async fn read_lease(&self, resource: &str) -> Result<Option<LeaseRowCql>, StoreError> {
        self.first_row::<LeaseRowCql>(&self.st.read_lease, (resource,), "reading a lease")
            .await
    }

    async fn acquire_lease(
        &self,
        resource: String,
        holder: String,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now_ms.saturating_add(ttl_ms);
        let expires_cql = i64_of(expires, "lease expiry")?;
        let now_cql = i64_of(now_ms, "now")?;
        let cell_ttl = i32::try_from(ttl.as_secs().saturating_add(LEASE_TTL_GRACE_SECS + 1))
            .unwrap_or(i32::MAX);
        for _ in 0..MAX_ROUNDS {
            let row = self.read_lease(&resource).await?;
            let current_epoch = row.as_ref().and_then(|r| r.epoch).map(id_from_cql);
            let held = row
                .as_ref()
                .and_then(|r| match (&r.holder, r.expires_at_ms) {
                    (Some(h), Some(until)) if until > now_cql => Some((h.clone(), until)),
                    _ => None,
                });
            let (sent, epoch) = match (&row, held) {
                (_, Some((h, until))) if h != holder => {
                    return Err(LeaseError::Held {
                        resource,
                        holder: h,
                        epoch: current_epoch.unwrap_or(0),
                        expires_at_ms: id_from_cql(until),
                    })
                }
                (_, Some(_)) => {
                    // Ours already: extend, same epoch.
                    let epoch = current_epoch.unwrap_or(0);
                    let sent = self
                        .session
                        .execute_unpaged(
                            &self.st.lease_extend,
                            LeaseExtend {
                                ttl: cell_ttl,
                                expires_at_ms: expires_cql,
                                holder: holder.clone(),
                                resource: resource.clone(),
                                if_holder: holder.clone(),
                                if_epoch: i64_of(epoch, "epoch")?,
                                now_ms: now_cql,
                            },
                        )
                        .await;
                    (sent, epoch)
                }
                (None, None) | (Some(LeaseRowCql { epoch: None, .. }), None) => {
                    let sent = self
                        .session
                        .batch(
                            &self.st.lease_first,
                            (
                                (resource.clone(), 1i64),
                                (cell_ttl, holder.clone(), expires_cql, resource.clone()),
                            ),
                        )
                        .await;
                    (sent, 1)
                }
                (Some(r), None) => {
                    let seen = r.epoch.unwrap_or(0);
                    let epoch = id_from_cql(seen) + 1;
                    let new_epoch = i64_of(epoch, "epoch")?;
                    let second = (cell_ttl, holder.clone(), expires_cql, resource.clone());
                    let sent = match (&r.holder, r.expires_at_ms) {
                        (Some(_), Some(until)) => {
                            self.session
                                .batch(
                                    &self.st.lease_takeover_expired,
                                    ((new_epoch, resource.clone(), seen, until), second),
                                )
                                .await
                        }
                        _ => {
                            self.session
                                .batch(
                                    &self.st.lease_takeover_free,
                                    ((new_epoch, resource.clone(), seen), second),
                                )
                                .await
                        }
                    };
                    (sent, epoch)
                }
            };
            let lease = Lease {
                resource: resource.clone(),
                holder: holder.clone(),
                epoch,
                expires_at_ms: expires,
            };
            match sent {
                Ok(result) => {
                    if Lwt::parse(result)?.applied {
                        return Ok(lease);
                    }
                    // Someone moved first: look again.
                }
                Err(e) if may_have_applied(&e) => match self.read_lease(&resource).await {
                    Ok(Some(r))
                        if r.holder.as_deref() == Some(holder.as_str())
                            && r.epoch.map(id_from_cql) == Some(epoch)
                            && r.expires_at_ms == Some(expires_cql) =>
                    {
                        return Ok(lease)
                    }
                    Ok(_) => {}
                    Err(read) => {
                        return Err(StoreError::UnknownOutcome {
                            context: "lease acquisition",
                            detail: format!("write: {e}; re-read: {read}"),
                        }
                        .into())
                    }
                },
                Err(e) => return Err(err("lease acquisition")(e).into()),
            }
        }
        Err(msg("lease acquisition", format!("{resource}: still contended")).into())
    }

    async fn renew_lease(
        &self,
        lease: Lease,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now_ms.saturating_add(ttl_ms);
        let expires_cql = i64_of(expires, "lease expiry")?;
        let cell_ttl = i32::try_from(ttl.as_secs().saturating_add(LEASE_TTL_GRACE_SECS + 1))
            .unwrap_or(i32::MAX);
        let lost = || LeaseError::Lost {
            resource: lease.resource.clone(),
            epoch: lease.epoch,
        };
        let renewed = Lease {
            expires_at_ms: expires,
            ..lease.clone()
        };
        for _ in 0..MAX_ROUNDS {
            let sent = self
                .session
                .execute_unpaged(
                    &self.st.lease_extend,
                    LeaseExtend {
                        ttl: cell_ttl,
                        expires_at_ms: expires_cql,
                        holder: lease.holder.clone(),
                        resource: lease.resource.clone(),
                        if_holder: lease.holder.clone(),
                        if_epoch: i64_of(lease.epoch, "epoch")?,
                        now_ms: i64_of(now_ms, "now")?,
                    },
                )
                .await;
            match sent {
                Ok(result) => {
                    return if Lwt::parse(result)?.applied {
                        Ok(renewed)
                    } else {
                        Err(lost())
                    }
                }
                Err(e) if may_have_applied(&e) => match self.read_lease(&lease.resource).await {
                    Ok(Some(r))
                        if r.holder.as_deref() == Some(lease.holder.as_str())
                            && r.epoch.map(id_from_cql) == Some(lease.epoch) =>
                    {
                        if r.expires_at_ms == Some(expires_cql) {
                            return Ok(renewed);
                        }
                        // Still ours and not renewed: sending again is safe.
                    }
                    Ok(_) => return Err(lost()),
                    Err(read) => {
                        return Err(StoreError::UnknownOutcome {
                            context: "lease renewal",
                            detail: format!("write: {e}; re-read: {read}"),
                        }
                        .into())
                    }
                },
                Err(e) => return Err(err("lease renewal")(e).into()),
            }
        }
        Err(msg(
            "lease renewal",
            format!("{}: still contended", lease.resource),
        )
        .into())
    }

    async fn release_lease(&self, lease: Lease) -> Result<(), LeaseError> {
        let sent = self
            .session
            .execute_unpaged(
                &self.st.lease_release,
                LeaseRelease {
                    resource: lease.resource.clone(),
                    if_holder: lease.holder.clone(),
                    if_epoch: i64_of(lease.epoch, "epoch")?,
                },
            )
            .await;
        let lost = || LeaseError::Lost {
            resource: lease.resource.clone(),
            epoch: lease.epoch,
        };
        match sent {
            Ok(result) => {
                if Lwt::parse(result)?.applied {
                    Ok(())
                } else {
                    Err(lost())
                }
            }
            Err(e) if may_have_applied(&e) => match self.read_lease(&lease.resource).await {
                // Whether our delete or someone else's takeover did it, we hold nothing.
                Ok(Some(r))
                    if r.holder.as_deref() == Some(lease.holder.as_str())
                        && r.epoch.map(id_from_cql) == Some(lease.epoch) =>
                {
                    Err(StoreError::UnknownOutcome {
                        context: "lease release",
                        detail: format!("write: {e}; the lease is still held"),
                    }
                    .into())
                }
                Ok(_) => Ok(()),
                Err(read) => Err(StoreError::UnknownOutcome {
                    context: "lease release",
                    detail: format!("write: {e}; re-read: {read}"),
                }
                .into()),
            },
            Err(e) => Err(err("lease release")(e).into()),
        }
    }
}

impl Store for ScyllaStore {
    fn backend(&self) -> &'static str {
        "scylla"
    }

    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        self.run(move |i| async move { i.load_player(player_id).await })
    }

    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        // Records of one player keep their batch order (each sees the one before it, as in
        // the embedded store's transaction); different players are saved concurrently.
        // Concurrent saves of one player made a stale record's outcome name whichever newer
        // fence won the race (found on Cassandra by `fencing_refuses_stale_checkpoints`).
        let records = records.to_vec();
        self.run(move |i| async move {
            let n = records.len();
            let mut by_player: BTreeMap<u64, Vec<(usize, PlayerRecord)>> = BTreeMap::new();
            for (index, r) in records.into_iter().enumerate() {
                by_player.entry(r.player_id).or_default().push((index, r));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, chain) in by_player {
                let me = i.clone();
                let permit = i.limit.clone().acquire_owned().await;
                tasks.spawn(async move {
                    let _permit = permit;
                    let mut out = Vec::with_capacity(chain.len());
                    for (index, r) in chain {
                        out.push((index, me.save_one(r).await));
                    }
                    out
                });
            }
            let mut outcomes: Vec<Option<SaveOutcome>> = vec![None; n];
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                for (index, result) in joined.map_err(err("checkpoint"))? {
                    match result {
                        Ok(o) => outcomes[index] = Some(o),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            outcomes
                .into_iter()
                .map(|o| o.ok_or_else(|| msg("checkpoint", "a save task vanished")))
                .collect()
        })
    }

    fn apply_item_op(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        let op = op.clone();
        self.run(move |i| async move { i.apply_item_op(op).await })
    }

    fn apply_item_ops(
        &self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        // Ops on one item must keep their order; ops on different items run concurrently.
        let ops = ops.to_vec();
        self.run(move |i| async move {
            let mut by_item: BTreeMap<u128, Vec<(usize, ItemOp)>> = BTreeMap::new();
            let n = ops.len();
            for (index, op) in ops.into_iter().enumerate() {
                by_item.entry(op.item_id).or_default().push((index, op));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, chain) in by_item {
                let me = i.clone();
                let permit = i.limit.clone().acquire_owned().await;
                tasks.spawn(async move {
                    let _permit = permit;
                    let mut out = Vec::with_capacity(chain.len());
                    for (index, op) in chain {
                        out.push((index, me.apply_item_op(op).await));
                    }
                    out
                });
            }
            let mut results: Vec<Option<Result<ItemOutcome, StoreError>>> = vec![None; n];
            while let Some(joined) = tasks.join_next().await {
                for (index, r) in joined.map_err(err("item operations"))? {
                    results[index] = Some(r);
                }
            }
            Ok(results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(msg("item operations", "a task vanished"))))
                .collect())
        })
    }

    fn item(&self, item_id: u128) -> Result<Option<ItemRecord>, StoreError> {
        self.run(move |i| async move { i.read_item(item_id, false).await })
    }

    fn items_of(&self, owner: Owner) -> Result<Vec<ItemRecord>, StoreError> {
        self.run(move |i| i.items_of(owner))
    }

    fn dead_ground_items(&self, epoch: u64) -> Result<Vec<ItemRecord>, StoreError> {
        // Called only by a server that is alone on the keyspace (not in cluster mode; in a
        // cluster, grounds of other epochs may be other servers' live instances, and the
        // cluster sweeps those whose run lease expired instead: `sweep_dead_runs`). A full
        // scan of the owner index, once at start.
        Ok(self
            .ground_items()?
            .into_iter()
            .filter(
                |r| matches!(r.owner, Some(Owner::Ground { instance }) if instance >> 32 < epoch),
            )
            .collect())
    }

    fn put_trade(&self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        let trade = trade.clone();
        self.run(move |i| async move { i.put_trade(trade).await })
    }

    fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        self.run(move |i| async move { i.decide_trade(trade_id, decision).await })
    }

    fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        self.run(move |i| async move { i.settle_trade(trade_id).await })
    }

    fn trade(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError> {
        self.run(move |i| async move { i.read_trade(trade_id, false).await })
    }

    fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError> {
        self.run(move |i| async move {
            let mut out = Vec::new();
            for t in i.scan_trades().await? {
                match t {
                    Ok(t) if !t.settled => out.push(t),
                    Ok(_) => {}
                    Err((trade_id, reason)) => return Err(StoreError::Trade { trade_id, reason }),
                }
            }
            Ok(out)
        })
    }

    fn run_trade(&self, manifest: &TradeRecord) -> Result<super::TradeOutcome, StoreError> {
        // No multi-row transactions: one conditional write per step (see `trade`).
        super::trade::run(self, manifest)
    }

    fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError> {
        self.run(move |i| async move { i.ground_items().await })
    }

    fn check(&self) -> Result<IntegrityReport, StoreError> {
        self.run(move |i| async move { i.check().await })
    }

    fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let (resource, holder) = (resource.to_owned(), holder.to_owned());
        lease_result(
            self.run(
                move |i| async move { Ok(i.acquire_lease(resource, holder, ttl, now_ms).await) },
            ),
        )
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration, now_ms: u64) -> Result<Lease, LeaseError> {
        let lease = lease.clone();
        lease_result(self.run(move |i| async move { Ok(i.renew_lease(lease, ttl, now_ms).await) }))
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        let lease = lease.clone();
        lease_result(self.run(move |i| async move { Ok(i.release_lease(lease).await) }))
    }

    fn lease_of(&self, resource: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let resource = resource.to_owned();
        self.run(move |i| async move {
            let row = i.read_lease(&resource).await?;
            Ok(
                row.and_then(|r| match (r.holder, r.epoch, r.expires_at_ms) {
                    (Some(holder), Some(epoch), Some(until))
                        if u64::try_from(until).unwrap_or(0) > now_ms =>
                    {
                        Some(Lease {
                            resource,
                            holder,
                            epoch: id_from_cql(epoch),
                            expires_at_ms: u64::try_from(until).unwrap_or(0),
                        })
                    }
                    _ => None,
                }),
            )
        })
    }

    fn load_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError> {
        self.run(move |i| async move { i.read_party(party_id).await })
    }

    fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        self.run(move |i| async move { i.party_of(player_id).await })
    }

    fn write_party(&self, party: &PartyRecord, expected: Option<u64>) -> Result<bool, StoreError> {
        super::check_party_version(party, expected)?;
        let party = party.clone();
        self.run(move |i| async move { i.write_party(party, expected, None).await })
    }

    fn write_party_invite(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: &Invitation,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        super::check_party_version(party, expected)?;
        super::check_invitation(party, invitation, now_ms)?;
        // The cell outlives the invitation (rounded up) by the leases' grace: readers
        // check `expires_at_ms`, the TTL only reclaims the row.
        let life_secs = invitation
            .expires_at_ms
            .saturating_sub(now_ms)
            .div_ceil(1000);
        let cell_ttl = life_secs.saturating_add(1 + LEASE_TTL_GRACE_SECS);
        let cell_ttl = i32::try_from(cell_ttl).map_err(|_| StoreError::Invalid {
            reason: format!("invitation ttl {cell_ttl} s out of range"),
        })?;
        let party = party.clone();
        let invitation = *invitation;
        self.run(move |i| async move {
            i.write_party(party, expected, Some((invitation, cell_ttl)))
                .await
        })
    }

    fn invitation_of(&self, player_id: u64, now_ms: u64) -> Result<Option<Invitation>, StoreError> {
        self.run(move |i| async move { i.invitation_of(player_id, now_ms).await })
    }

    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError> {
        let id = super::mail_id(now_ms);
        let (server, body) = (server.to_owned(), body.to_vec());
        self.run(move |i| async move {
            i.execute(&i.st.post_mail, (server, blob16(id), body), "posting mail")
                .await?;
            Ok(id)
        })
    }

    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError> {
        let server = server.to_owned();
        let limit = i32::try_from(max).unwrap_or(i32::MAX);
        self.run(move |i| async move {
            let result = i
                .execute(&i.st.read_mail, (server, limit), "reading mail")
                .await?;
            let rows = result.into_rows_result().map_err(err("reading mail"))?;
            let mut out = Vec::new();
            for row in rows.rows::<MailCql>().map_err(err("reading mail"))? {
                let row = row.map_err(err("reading mail"))?;
                let Some(id) = row.mail_id.as_deref().and_then(from_blob16) else {
                    continue;
                };
                out.push(Mail {
                    id,
                    body: row.body.unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }

    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError> {
        let (server, ids) = (server.to_owned(), ids.to_vec());
        self.run(move |i| async move {
            for id in ids {
                i.execute(
                    &i.st.delete_mail,
                    (server.clone(), blob16(id)),
                    "deleting mail",
                )
                .await?;
            }
            Ok(())
        })
    }

    fn publish_load(
        &self,
        load: &ServerLoad,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let expires = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let cell_ttl = ttl.as_secs().saturating_add(1 + LEASE_TTL_GRACE_SECS);
        let row = ServerPublish {
            server_id: load.server_id.clone(),
            players: i32::try_from(load.players).unwrap_or(i32::MAX),
            busy_permille: i32::try_from(load.busy_permille).unwrap_or(i32::MAX),
            draining: load.draining,
            updated_at_ms: i64_of(load.updated_at_ms, "updated_at_ms")?,
            expires_at_ms: i64_of(expires, "expires_at_ms")?,
            ttl: i32::try_from(cell_ttl).map_err(|_| StoreError::Invalid {
                reason: format!("servers row ttl {cell_ttl} s out of range"),
            })?,
        };
        let address = load
            .address
            .map(|a| (row.ttl, a.to_string(), row.server_id.clone()));
        self.run(move |i| async move {
            i.execute(&i.st.publish_load, row, "publishing a server's load")
                .await?;
            if let Some(values) = address {
                i.execute(
                    &i.st.publish_address,
                    values,
                    "publishing a server's address",
                )
                .await?;
            }
            Ok(())
        })
    }

    fn server_loads(&self, now_ms: u64) -> Result<Vec<ServerLoad>, StoreError> {
        self.run(move |i| async move {
            let mut out = Vec::new();
            i.scan::<ServerRowCql>(&i.st.scan_servers, (), "reading the servers' loads", |r| {
                if u64::try_from(r.expires_at_ms).is_ok_and(|e| e > now_ms) {
                    out.push(ServerLoad {
                        server_id: r.server_id,
                        players: u32::try_from(r.players).unwrap_or(0),
                        busy_permille: u32::try_from(r.busy_permille).unwrap_or(0),
                        draining: r.draining,
                        updated_at_ms: u64::try_from(r.updated_at_ms).unwrap_or(0),
                        address: None,
                    });
                }
                Ok(())
            })
            .await?;
            let mut addresses = std::collections::HashMap::new();
            i.scan::<ServerAddressCql>(
                &i.st.scan_addresses,
                (),
                "reading the servers' addresses",
                |r| {
                    match r.address.as_deref().map(str::parse::<std::net::SocketAddr>) {
                        Some(Ok(a)) => {
                            addresses.insert(r.server_id, a);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(server = %r.server_id, error = %e, "server address does not parse; ignored")
                        }
                        None => {}
                    }
                    Ok(())
                },
            )
            .await?;
            for load in &mut out {
                load.address = addresses.get(&load.server_id).copied();
            }
            out.sort_by(|a, b| a.server_id.cmp(&b.server_id));
            Ok(out)
        })
    }
}

fn lease_result<T>(r: Result<Result<T, LeaseError>, StoreError>) -> Result<T, LeaseError> {
    r.map_err(LeaseError::Store).and_then(|inner| inner)
}

#[cfg(test)]
mod tests {
    use ::scylla::errors::WriteType;

    use super::*;

    #[test]
    fn schema_statements_skip_keyspace_and_use() {
        let st = schema_statements();
        assert!(st.iter().all(|s| s.starts_with("CREATE TABLE")), "{st:?}");
        for table in [
            "schema_meta",
            "players",
            "items",
            "items_by_owner",
            "item_ops",
            "leases",
            "servers",
            "server_addresses",
            "parties",
            "party_of",
            "party_invites",
            "mailbox",
            "trades",
        ] {
            assert!(
                st.iter()
                    .any(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} ("))),
                "{table}"
            );
        }
        assert!(st.iter().all(|s| !s.contains("--")));
    }

    #[test]
    fn timeouts_are_unknown_outcomes_and_refusals_are_not() {
        let timeout = ExecutionError::RequestTimeout(Duration::from_secs(5));
        assert!(may_have_applied(&timeout));
        let cas = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::WriteTimeout {
                consistency: Consistency::LocalSerial,
                received: 1,
                required: 2,
                write_type: WriteType::Cas,
            },
            "timeout".into(),
        ));
        assert!(may_have_applied(&cas));
        let unavailable = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unavailable {
                consistency: Consistency::LocalQuorum,
                required: 2,
                alive: 1,
            },
            "down".into(),
        ));
        assert!(!may_have_applied(&unavailable));
        let overloaded = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Overloaded,
            "busy".into(),
        ));
        assert!(!may_have_applied(&overloaded));
        assert!(!may_have_applied(&ExecutionError::EmptyPlan));
    }

    #[test]
    fn config_validation_and_nodes() {
        let c = ScyllaConfig::with_uri("scylla://10.0.0.1:9042, 10.0.0.2:9042");
        assert_eq!(c.nodes(), vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
        c.validate().expect("valid");
        let bad = ScyllaConfig {
            keyspace: "drop table;".into(),
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        assert!(ScyllaConfig::with_uri(" , ").validate().is_err());
    }

    #[test]
    fn ids_round_trip_through_cql_types() {
        for v in [0u64, 1, i64::MAX as u64, u64::MAX] {
            assert_eq!(id_from_cql(id_to_cql(v)), v);
        }
        for v in [0u128, 1, u128::MAX] {
            assert_eq!(from_blob16(&blob16(v)), Some(v));
        }
        assert_eq!(from_blob16(&[1, 2, 3]), None);
        assert!(i64_of(u64::MAX, "x").is_err());
    }

    #[test]
    fn judging_a_re_read_row() {
        let op = ItemOp {
            op_id: 5,
            item_id: 1,
            kind: ItemOpKind::Transfer {
                from: Owner::Player(1),
                to: Owner::Player(2),
            },
        };
        let row = |owner, last_op| ItemRecord {
            item_id: 1,
            owner: Some(owner),
            data: vec![],
            last_op,
        };
        // Our change is there.
        assert!(matches!(
            Inner::judge(&op, Some(&row(Owner::Player(2), 5))),
            Some(ItemOutcome::Transferred { .. })
        ));
        // Not applied, condition holds: safe to resend.
        assert_eq!(Inner::judge(&op, Some(&row(Owner::Player(1), 4))), None);
        // Someone else moved it.
        assert!(matches!(
            Inner::judge(&op, Some(&row(Owner::Player(3), 6))),
            Some(ItemOutcome::OwnerMismatch {
                actual: Some(Owner::Player(3)),
                ..
            })
        ));
        assert!(matches!(
            Inner::judge(&op, None),
            Some(ItemOutcome::OwnerMismatch { actual: None, .. })
        ));
    }
}
