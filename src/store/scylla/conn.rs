//! The connection: errors and their kinds, CQL value conversions, LWT results, execution
//! profiles, statement preparation, the shared [`Inner`] with its request helpers, and the
//! store's own tokio runtime.

use std::collections::HashMap;
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
use tokio::sync::Semaphore;

use super::config::ScyllaConfig;
use crate::store::{DbFailure, ErrorSource, StoreError};

/// Seconds a lease's holder cell outlives its `expires_at_ms` before ScyllaDB drops it.
pub(super) const LEASE_TTL_GRACE_SECS: u64 = 60;
/// Rounds of read-decide-write before a contended conditional write gives up.
pub(super) const MAX_ROUNDS: usize = 6;

/// A plain message as an error source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Message(pub(super) String);

pub(super) fn msg(context: &'static str, text: impl Into<String>) -> StoreError {
    StoreError::Scylla {
        context,
        kind: DbFailure::Other,
        source: Arc::new(Message(text.into())),
    }
}

pub(super) fn err<E: std::error::Error + Send + Sync + 'static>(
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

pub(super) fn i64_of(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        reason: format!("{what} {v} does not fit a CQL bigint"),
    })
}

/// Bit-cast for ids (only compared for equality).
pub(super) fn id_to_cql(v: u64) -> i64 {
    v as i64
}

pub(super) fn id_from_cql(v: i64) -> u64 {
    v as u64
}

pub(super) fn blob16(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub(super) fn from_blob16(b: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(b).ok().map(u128::from_be_bytes)
}

/// A CQL bigint for a value that is only displayed (saturates instead of failing).
pub(super) fn display_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An LWT's result: `[applied]` and the current values the server returned.
#[derive(Debug)]
pub(super) struct Lwt {
    pub(super) applied: bool,
    pub(super) columns: HashMap<String, CqlValue>,
}

impl Lwt {
    pub(super) fn parse(result: QueryResult) -> Result<Self, StoreError> {
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

    pub(super) fn bigint(&self, name: &str) -> Option<i64> {
        self.columns.get(name).and_then(CqlValue::as_bigint)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Profiles {
    pub(super) state: ExecutionProfileHandle,
    pub(super) lwt: ExecutionProfileHandle,
    pub(super) serial_read: ExecutionProfileHandle,
}

impl Profiles {
    pub(super) fn new(config: &ScyllaConfig) -> Self {
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
pub(super) enum Kind {
    Idempotent,
    Lwt,
    SerialRead,
}

pub(super) async fn prepare(
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

pub(super) async fn prepare_lwt_batch(
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

/// The driver session, the prepared statements `S` (one struct per domain, see the
/// `Has*` traits of the domain modules) and the in-flight limit: what every request of the
/// store runs on. Each domain module adds its methods in an `impl` bounded by its trait.
#[derive(Debug)]
pub(super) struct Inner<S> {
    /// The driver session.
    pub(super) session: Session,
    /// The prepared statements.
    pub(super) st: S,
    /// Requests in flight at most (`max_in_flight`).
    pub(super) limit: Arc<Semaphore>,
}

impl<S> Inner<S> {
    pub(super) async fn execute(
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
    pub(super) async fn first_row<R>(
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
    pub(super) async fn scan<R>(
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
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, StoreError> {
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
pub(super) fn run_on<T: Send + 'static>(
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

pub(super) async fn session(
    config: &ScyllaConfig,
    keyspace: Option<&str>,
) -> Result<Session, StoreError> {
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
