//! ScyllaDB connection options (`[store.backend]` with `kind = "scylla"`).

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

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

    pub(super) fn nodes(&self) -> Vec<String> {
        let uri = self.uri.trim();
        let uri = uri.strip_prefix("scylla://").unwrap_or(uri);
        uri.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}
