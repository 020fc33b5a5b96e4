//! Persistence options: `[store]` in the server config ([`StoreConfig`]) and the backend it
//! names ([`BackendConfig`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::scylla;

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
