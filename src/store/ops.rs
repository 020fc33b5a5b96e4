//! Opening the configured backend, and the operator commands (`zonehost store migrate`,
//! `zonehost store check`, `zonehost player show`).

use std::path::Path;
use std::time::Duration;

use super::config::{BackendConfig, StoreConfig};
use super::error::StoreError;
use super::integrity::IntegrityReport;
use super::types::Owner;
use super::{cache, record, redb, scylla, Store};

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
