//! The store's errors: [`StoreError`] for every operation, [`LeaseError`] for leases, and the
//! kind of a database failure ([`DbFailure`]).

use std::fmt;
use std::sync::Arc;

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
