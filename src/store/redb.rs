//! The embedded backend: one redb file in the data directory.
//!
//! Every write is a serializable redb write transaction committed with
//! [`Durability::Immediate`]: the commit is on disk (fsync) before it is acknowledged, and
//! redb's copy-on-write B-trees with checksummed commit slots make a crash at any point
//! recover to the last acknowledged commit. Writers are serialized by redb; readers see
//! snapshots and never block writers. A batch (several checkpoints, several item ops) is
//! one transaction: one fsync for the whole batch (group commit).
//!
//! Tables:
//! - `meta`: `&str -> u64` (`schema_version`).
//! - `players`: `player_id -> encoded record` (see [`super::record`]).
//! - `player_fences`: `player_id -> (epoch, seq)`, kept apart from the blob so a damaged
//!   blob can still be overwritten by a newer checkpoint.
//! - `items`: `item_id -> row { owner (None = destroyed), data, last_op }`: the truth.
//! - `items_by_owner`: `(owner kind, owner id, item_id) -> ()`: the owner index, updated in
//!   the same transaction as the item row.
//! - `item_ops`: `op_id -> { op, outcome }`: the exactly-once log.
//! - `leases`: `resource -> { holder, epoch, expires_at_ms }`.
//! - `servers`: `server_id -> { load, expires_at_ms }`: each server's published load
//!   ([`super::ServerLoad`]); expired rows are skipped on read and dropped at the next
//!   publish.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::record::{self, decode_row, encode_row};
use super::{
    Anomaly, Fence, IntegrityReport, ItemOp, ItemOpKind, ItemOutcome, ItemRecord, Lease,
    LeaseError, Owner, PlayerRecord, SaveOutcome, ServerLoad, Store, StoreError,
};

/// Schema version of the embedded file written by this build.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const PLAYERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("players");
const FENCES: TableDefinition<'_, u64, (u64, u64)> = TableDefinition::new("player_fences");
const ITEMS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("items");
const OWNER_INDEX: TableDefinition<'_, (u8, u64, u128), ()> =
    TableDefinition::new("items_by_owner");
const ITEM_OPS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("item_ops");
const LEASES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases");
const SERVERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("servers");

macro_rules! from_redb {
    ($($ty:ident => $ctx:literal,)*) => {$(
        impl From<::redb::$ty> for StoreError {
            fn from(e: ::redb::$ty) -> Self {
                StoreError::Embedded { context: $ctx, source: Arc::new(::redb::Error::from(e)) }
            }
        }
    )*};
}

from_redb! {
    StorageError => "storage",
    TableError => "table",
    TransactionError => "transaction",
    CommitError => "commit",
    DatabaseError => "database",
    SetDurabilityError => "durability",
}

/// An item row as stored (the item id is the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ItemRow {
    pub(crate) owner: Option<Owner>,
    pub(crate) data: Vec<u8>,
    pub(crate) last_op: u128,
}

/// An op-log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OpRow {
    pub(crate) op: ItemOp,
    pub(crate) outcome: ItemOutcome,
}

/// A `servers` row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServerRow {
    load: ServerLoad,
    expires_at_ms: u64,
}

/// A lease row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRow {
    holder: Option<String>,
    epoch: u64,
    expires_at_ms: u64,
}

fn owner_key(owner: Owner) -> (u8, u64) {
    match owner {
        Owner::Player(id) => (1, id),
        Owner::Ground { instance } => (2, instance),
    }
}

fn owner_from_key(kind: u8, id: u64) -> Option<Owner> {
    match kind {
        1 => Some(Owner::Player(id)),
        2 => Some(Owner::Ground { instance: id }),
        _ => None,
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// The embedded store.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

struct ItemTables<'t> {
    items: Table<'t, u128, &'static [u8]>,
    index: Table<'t, (u8, u64, u128), ()>,
    ops: Table<'t, u128, &'static [u8]>,
}

impl ItemTables<'_> {
    fn open(txn: &WriteTransaction) -> Result<ItemTables<'_>, StoreError> {
        Ok(ItemTables {
            items: txn.open_table(ITEMS)?,
            index: txn.open_table(OWNER_INDEX)?,
            ops: txn.open_table(ITEM_OPS)?,
        })
    }

    fn read_item(&self, item_id: u128) -> Result<Option<ItemRow>, StoreError> {
        match self.items.get(item_id)? {
            None => Ok(None),
            Some(g) => decode_row(g.value())
                .map(Some)
                .map_err(|reason| StoreError::CorruptItem { item_id, reason }),
        }
    }

    fn write_item(&mut self, item_id: u128, row: &ItemRow) -> Result<(), StoreError> {
        self.items.insert(item_id, encode_row(row)?.as_slice())?;
        Ok(())
    }

    fn index_insert(&mut self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        let (k, id) = owner_key(owner);
        self.index.insert((k, id, item_id), ())?;
        Ok(())
    }

    fn index_remove(&mut self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        let (k, id) = owner_key(owner);
        self.index.remove((k, id, item_id))?;
        Ok(())
    }

    /// Applies one op inside the open transaction. A per-op error leaves no write behind.
    fn apply(&mut self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        if let Some(prev) = self.ops.get(op.op_id)? {
            let prev: OpRow =
                decode_row(prev.value()).map_err(|reason| StoreError::CorruptItem {
                    item_id: op.item_id,
                    reason: format!("op log entry {:032x}: {reason}", op.op_id),
                })?;
            if prev.op != *op {
                return Err(StoreError::OpConflict { op_id: op.op_id });
            }
            return Ok(prev.outcome);
        }
        let item_id = op.item_id;
        let current = self.read_item(item_id)?;
        let outcome = match (&op.kind, current) {
            (ItemOpKind::Create { .. }, Some(_)) => ItemOutcome::AlreadyExists { item_id },
            (ItemOpKind::Create { owner, data }, None) => {
                let row = ItemRow {
                    owner: Some(*owner),
                    data: data.clone(),
                    last_op: op.op_id,
                };
                self.write_item(item_id, &row)?;
                self.index_insert(*owner, item_id)?;
                ItemOutcome::Created {
                    item_id,
                    owner: *owner,
                }
            }
            (ItemOpKind::Transfer { from, to }, Some(mut row)) if row.owner == Some(*from) => {
                row.owner = Some(*to);
                row.last_op = op.op_id;
                self.write_item(item_id, &row)?;
                self.index_remove(*from, item_id)?;
                self.index_insert(*to, item_id)?;
                ItemOutcome::Transferred {
                    item_id,
                    from: *from,
                    to: *to,
                }
            }
            (ItemOpKind::Destroy { from }, Some(mut row)) if row.owner == Some(*from) => {
                row.owner = None;
                row.last_op = op.op_id;
                self.write_item(item_id, &row)?;
                self.index_remove(*from, item_id)?;
                ItemOutcome::Destroyed {
                    item_id,
                    from: *from,
                }
            }
            (ItemOpKind::Transfer { .. } | ItemOpKind::Destroy { .. }, row) => {
                ItemOutcome::OwnerMismatch {
                    item_id,
                    actual: row.and_then(|r| r.owner),
                }
            }
        };
        let entry = OpRow {
            op: op.clone(),
            outcome,
        };
        self.ops.insert(op.op_id, encode_row(&entry)?.as_slice())?;
        Ok(outcome)
    }
}

impl RedbStore {
    /// Opens (or creates) the database file, creating missing tables. Refuses a file
    /// written by a newer build.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                    target: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        let db = Database::create(path).map_err(|e| StoreError::Open {
            target: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        store.init()?;
        Ok(store)
    }

    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    fn init(&self) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|g| g.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Open {
                        target: self.path.display().to_string(),
                        reason: format!(
                            "schema version {v} was written by a newer build (this one knows {SCHEMA_VERSION})"
                        ),
                    })
                }
                Some(v) if v == SCHEMA_VERSION => {}
                // Older or absent: upgrade steps go here; v1 is the first.
                _ => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            txn.open_table(PLAYERS)?;
            txn.open_table(FENCES)?;
            txn.open_table(ITEMS)?;
            txn.open_table(OWNER_INDEX)?;
            txn.open_table(ITEM_OPS)?;
            txn.open_table(LEASES)?;
            txn.open_table(SERVERS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("schema_version")?.map(|g| g.value()).unwrap_or(0))
    }

    /// Operator and test tool: stores `bytes` as the record of `player_id` with `fence`,
    /// as is (no encoding, no fencing). Used to exercise migration and corruption handling.
    pub fn put_raw_player(
        &self,
        player_id: u64,
        fence: Fence,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            txn.open_table(PLAYERS)?.insert(player_id, bytes)?;
            txn.open_table(FENCES)?
                .insert(player_id, (fence.epoch, fence.seq))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Operator and test tool: adds an owner-index entry without touching the item row
    /// (plants the anomaly [`Store::check`] must find).
    pub fn insert_raw_index_entry(&self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let (k, id) = owner_key(owner);
            txn.open_table(OWNER_INDEX)?.insert((k, id, item_id), ())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Live items on grounds `(kind, instance, _)` with `instance < below`.
    fn ground_items_below(&self, below: u64) -> Result<Vec<ItemRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(OWNER_INDEX)?;
        let items = txn.open_table(ITEMS)?;
        let (kind, _) = owner_key(Owner::Ground { instance: 0 });
        let mut out = Vec::new();
        for entry in index.range((kind, 0u64, 0u128)..(kind, below, 0u128))? {
            let (key, _) = entry?;
            let (_, instance, item_id) = key.value();
            let Some(g) = items.get(item_id)? else {
                continue;
            };
            // An unreadable row is left alone (`check` reports it).
            let Ok(row) = decode_row::<ItemRow>(g.value()) else {
                continue;
            };
            if row.owner == Some(Owner::Ground { instance }) {
                out.push(ItemRecord {
                    item_id,
                    owner: row.owner,
                    data: row.data,
                    last_op: row.last_op,
                });
            }
        }
        Ok(out)
    }

    fn read_lease(
        table: &Table<'_, &'static str, &'static [u8]>,
        resource: &str,
    ) -> Result<Option<LeaseRow>, StoreError> {
        match table.get(resource)? {
            None => Ok(None),
            Some(g) => decode_row(g.value())
                .map(Some)
                .map_err(|reason| StoreError::Invalid {
                    reason: format!("lease {resource}: {reason}"),
                }),
        }
    }
}

impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let players = txn.open_table(PLAYERS)?;
        let found = players.get(player_id)?;
        match found {
            None => Ok(None),
            Some(g) => record::decode(player_id, g.value()).map(Some),
        }
    }

    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = records
            .iter()
            .map(record::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let txn = self.begin()?;
        let mut outcomes = Vec::with_capacity(records.len());
        {
            let mut players = txn.open_table(PLAYERS)?;
            let mut fences = txn.open_table(FENCES)?;
            for (r, bytes) in records.iter().zip(&encoded) {
                let stored = fences.get(r.player_id)?.map(|g| {
                    let (epoch, seq) = g.value();
                    Fence { epoch, seq }
                });
                match stored {
                    Some(stored) if r.fence() <= stored => outcomes.push(SaveOutcome::Stale {
                        player_id: r.player_id,
                        stored,
                    }),
                    _ => {
                        players.insert(r.player_id, bytes.as_slice())?;
                        fences.insert(r.player_id, (r.epoch, r.seq))?;
                        outcomes.push(SaveOutcome::Saved {
                            player_id: r.player_id,
                        });
                    }
                }
            }
        }
        txn.commit()?;
        Ok(outcomes)
    }

    fn apply_item_op(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        let mut results = self.apply_item_ops(std::slice::from_ref(op))?;
        results.pop().unwrap_or(Err(StoreError::Closed))
    }

    fn apply_item_ops(
        &self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.begin()?;
        let results = {
            let mut tables = ItemTables::open(&txn)?;
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                match tables.apply(op) {
                    // A storage failure poisons the transaction: fail the whole batch.
                    Err(e @ StoreError::Embedded { .. }) => return Err(e),
                    r => results.push(r),
                }
            }
            results
        };
        txn.commit()?;
        Ok(results)
    }

    fn item(&self, item_id: u128) -> Result<Option<ItemRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let items = txn.open_table(ITEMS)?;
        let found = items.get(item_id)?;
        match found {
            None => Ok(None),
            Some(g) => {
                let row: ItemRow = decode_row(g.value())
                    .map_err(|reason| StoreError::CorruptItem { item_id, reason })?;
                Ok(Some(ItemRecord {
                    item_id,
                    owner: row.owner,
                    data: row.data,
                    last_op: row.last_op,
                }))
            }
        }
    }

    fn items_of(&self, owner: Owner) -> Result<Vec<ItemRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(OWNER_INDEX)?;
        let items = txn.open_table(ITEMS)?;
        let (k, id) = owner_key(owner);
        let mut out = Vec::new();
        for entry in index.range((k, id, 0u128)..=(k, id, u128::MAX))? {
            let (key, _) = entry?;
            let (_, _, item_id) = key.value();
            let Some(g) = items.get(item_id)? else {
                continue;
            };
            let row: ItemRow = decode_row(g.value())
                .map_err(|reason| StoreError::CorruptItem { item_id, reason })?;
            // The item row is the truth: an index entry that disagrees is not an item of
            // this owner (`check` reports it).
            if row.owner == Some(owner) {
                out.push(ItemRecord {
                    item_id,
                    owner: row.owner,
                    data: row.data,
                    last_op: row.last_op,
                });
            }
        }
        Ok(out)
    }

    fn dead_ground_items(&self, epoch: u64) -> Result<Vec<ItemRecord>, StoreError> {
        // Grounds of a run are `(epoch << 32) | instance`: everything below `epoch << 32`.
        let below = u64::try_from(u128::from(epoch) << 32).unwrap_or(u64::MAX);
        self.ground_items_below(below)
    }

    fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError> {
        let mut out = self.ground_items_below(u64::MAX)?;
        // The range above is exclusive: the last possible instance id too.
        out.extend(self.items_of(Owner::Ground { instance: u64::MAX })?);
        Ok(out)
    }

    fn check(&self) -> Result<IntegrityReport, StoreError> {
        let txn = self.db.begin_read()?;
        let mut report = IntegrityReport {
            backend: self.backend().into(),
            ..Default::default()
        };
        let players = txn.open_table(PLAYERS)?;
        for entry in players.iter()? {
            let (k, v) = entry?;
            report.players += 1;
            let player_id = k.value();
            if let Err(StoreError::Corrupt { reason, .. }) = record::decode(player_id, v.value()) {
                report
                    .anomalies
                    .push(Anomaly::CorruptPlayer { player_id, reason });
            }
        }
        let items = txn.open_table(ITEMS)?;
        let mut owner_of: HashMap<u128, Owner> = HashMap::new();
        for entry in items.iter()? {
            let (k, v) = entry?;
            let item_id = k.value();
            match decode_row::<ItemRow>(v.value()) {
                Err(reason) => report
                    .anomalies
                    .push(Anomaly::CorruptItem { item_id, reason }),
                Ok(row) => match row.owner {
                    None => report.destroyed_items += 1,
                    Some(owner) => {
                        report.items += 1;
                        match owner {
                            Owner::Player(_) => report.items_on_players += 1,
                            Owner::Ground { .. } => report.items_on_ground += 1,
                        }
                        owner_of.insert(item_id, owner);
                    }
                },
            }
        }
        let index = txn.open_table(OWNER_INDEX)?;
        let mut listed: BTreeMap<u128, Vec<Owner>> = BTreeMap::new();
        let mut owners = std::collections::HashSet::new();
        for entry in index.iter()? {
            let (k, _) = entry?;
            let (kind, id, item_id) = k.value();
            report.index_entries += 1;
            let Some(owner) = owner_from_key(kind, id) else {
                report.anomalies.push(Anomaly::CorruptItem {
                    item_id,
                    reason: format!("index entry with unknown owner kind {kind}"),
                });
                continue;
            };
            listed.entry(item_id).or_default().push(owner);
        }
        for (&item_id, &owner) in &owner_of {
            owners.insert(owner);
            let others: Vec<Owner> = listed
                .get(&item_id)
                .map(|l| l.iter().copied().filter(|o| *o != owner).collect())
                .unwrap_or_default();
            let present = listed.get(&item_id).is_some_and(|l| l.contains(&owner));
            if !present {
                report
                    .anomalies
                    .push(Anomaly::MissingIndexEntry { item_id, owner });
            }
            if !others.is_empty() {
                report.anomalies.push(Anomaly::DuplicateOwner {
                    item_id,
                    owner,
                    also: others,
                });
            }
        }
        for (item_id, owners_listed) in &listed {
            if !owner_of.contains_key(item_id) {
                for &owner in owners_listed {
                    report.anomalies.push(Anomaly::DanglingIndexEntry {
                        item_id: *item_id,
                        owner,
                    });
                }
            }
        }
        report.owners = owners.len() as u64;
        report.ops = txn.open_table(ITEM_OPS)?.len()?;
        report.leases = txn.open_table(LEASES)?.len()?;
        report.anomalies.sort_by_key(|a| format!("{a}"));
        Ok(report)
    }

    fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let txn = self.begin()?;
        let lease = {
            let mut table = txn.open_table(LEASES).map_err(StoreError::from)?;
            let row = Self::read_lease(&table, resource)?;
            let expires_at_ms = now_ms.saturating_add(ttl_ms(ttl));
            let epoch = match row {
                Some(LeaseRow {
                    holder: Some(current),
                    epoch,
                    expires_at_ms: until,
                }) if until > now_ms => {
                    if current != holder {
                        return Err(LeaseError::Held {
                            resource: resource.into(),
                            holder: current,
                            epoch,
                            expires_at_ms: until,
                        });
                    }
                    epoch
                }
                Some(r) => r.epoch + 1,
                None => 1,
            };
            let new = LeaseRow {
                holder: Some(holder.into()),
                epoch,
                expires_at_ms,
            };
            table
                .insert(resource, encode_row(&new)?.as_slice())
                .map_err(StoreError::from)?;
            Lease {
                resource: resource.into(),
                holder: holder.into(),
                epoch,
                expires_at_ms,
            }
        };
        txn.commit().map_err(StoreError::from)?;
        Ok(lease)
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration, now_ms: u64) -> Result<Lease, LeaseError> {
        let txn = self.begin()?;
        let renewed = {
            let mut table = txn.open_table(LEASES).map_err(StoreError::from)?;
            let row = Self::read_lease(&table, &lease.resource)?;
            match row {
                Some(r)
                    if r.holder.as_deref() == Some(lease.holder.as_str())
                        && r.epoch == lease.epoch
                        && r.expires_at_ms > now_ms =>
                {
                    let new = LeaseRow {
                        expires_at_ms: now_ms.saturating_add(ttl_ms(ttl)),
                        ..r
                    };
                    table
                        .insert(lease.resource.as_str(), encode_row(&new)?.as_slice())
                        .map_err(StoreError::from)?;
                    Lease {
                        expires_at_ms: new.expires_at_ms,
                        ..lease.clone()
                    }
                }
                _ => {
                    return Err(LeaseError::Lost {
                        resource: lease.resource.clone(),
                        epoch: lease.epoch,
                    })
                }
            }
        };
        txn.commit().map_err(StoreError::from)?;
        Ok(renewed)
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(LEASES).map_err(StoreError::from)?;
            let row = Self::read_lease(&table, &lease.resource)?;
            match row {
                Some(r)
                    if r.holder.as_deref() == Some(lease.holder.as_str())
                        && r.epoch == lease.epoch =>
                {
                    let new = LeaseRow {
                        holder: None,
                        epoch: r.epoch,
                        expires_at_ms: 0,
                    };
                    table
                        .insert(lease.resource.as_str(), encode_row(&new)?.as_slice())
                        .map_err(StoreError::from)?;
                }
                _ => {
                    return Err(LeaseError::Lost {
                        resource: lease.resource.clone(),
                        epoch: lease.epoch,
                    })
                }
            }
        }
        txn.commit().map_err(StoreError::from)?;
        Ok(())
    }

    fn publish_load(
        &self,
        load: &ServerLoad,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(SERVERS)?;
            let mut expired = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                // An undecodable row is dropped too: it would be skipped on read anyway.
                let dead =
                    decode_row::<ServerRow>(v.value()).map_or(true, |r| r.expires_at_ms <= now_ms);
                if dead && k.value() != load.server_id {
                    expired.push(k.value().to_owned());
                }
            }
            for k in expired {
                table.remove(k.as_str())?;
            }
            let row = ServerRow {
                load: load.clone(),
                expires_at_ms: now_ms.saturating_add(ttl_ms(ttl)),
            };
            table.insert(load.server_id.as_str(), encode_row(&row)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn server_loads(&self, now_ms: u64) -> Result<Vec<ServerLoad>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SERVERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match decode_row::<ServerRow>(v.value()) {
                Ok(r) if r.expires_at_ms > now_ms => out.push(r.load),
                Ok(_) => {}
                Err(reason) => {
                    tracing::warn!(server = k.value(), %reason, "servers row does not decode; skipped")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> (RedbStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "zonehost-redb-unit-{tag}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        let path = dir.join("store.redb");
        (RedbStore::open(&path).expect("open"), dir)
    }

    fn rand_suffix() -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    #[test]
    fn reopen_keeps_schema_version_and_refuses_newer_files() {
        let (store, dir) = temp_store("schema");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        let path = store.path().to_owned();
        {
            let txn = store.begin().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema_version", SCHEMA_VERSION + 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        drop(store);
        match RedbStore::open(&path) {
            Err(StoreError::Open { reason, .. }) => assert!(reason.contains("newer"), "{reason}"),
            other => panic!("expected Open error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_corrupt_item_row_fails_only_its_own_op_in_a_batch() {
        let (store, dir) = temp_store("corrupt-item");
        {
            let txn = store.begin().expect("txn");
            txn.open_table(ITEMS)
                .expect("items")
                .insert(7u128, &[9u8, 9, 9][..])
                .expect("insert");
            txn.commit().expect("commit");
        }
        let ops = [
            ItemOp {
                op_id: 1,
                item_id: 7,
                kind: ItemOpKind::Destroy {
                    from: Owner::Player(1),
                },
            },
            ItemOp {
                op_id: 2,
                item_id: 8,
                kind: ItemOpKind::Create {
                    owner: Owner::Player(1),
                    data: vec![],
                },
            },
        ];
        let results = store.apply_item_ops(&ops).expect("batch");
        assert!(matches!(
            results[0],
            Err(StoreError::CorruptItem { item_id: 7, .. })
        ));
        assert!(matches!(results[1], Ok(ItemOutcome::Created { .. })));
        let report = store.check().expect("check");
        assert!(report
            .anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::CorruptItem { item_id: 7, .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dead_grounds_are_those_of_earlier_epochs() {
        let (store, dir) = temp_store("dead-grounds");
        let old_ground = Owner::Ground {
            instance: (2 << 32) | 5,
        };
        let live_ground = Owner::Ground {
            instance: (3 << 32) | 1,
        };
        for (id, owner) in [
            (1u128, old_ground),
            (2, live_ground),
            (3, Owner::Player(2 << 32)),
            (4, old_ground),
        ] {
            let op = ItemOp {
                op_id: id | (1 << 100),
                item_id: id,
                kind: ItemOpKind::Create {
                    owner,
                    data: vec![],
                },
            };
            store.apply_item_op(&op).expect("create");
        }
        // Item 4 was picked up since: its old index entry is gone with the transfer.
        store
            .apply_item_op(&ItemOp {
                op_id: 99,
                item_id: 4,
                kind: ItemOpKind::Transfer {
                    from: old_ground,
                    to: Owner::Player(7),
                },
            })
            .expect("transfer");
        let dead: Vec<u128> = store
            .dead_ground_items(3)
            .expect("dead grounds")
            .iter()
            .map(|r| r.item_id)
            .collect();
        assert_eq!(dead, vec![1]);
        assert!(store.dead_ground_items(2).expect("none").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn owner_keys_round_trip() {
        for o in [Owner::Player(5), Owner::Ground { instance: 9 }] {
            let (k, id) = owner_key(o);
            assert_eq!(owner_from_key(k, id), Some(o));
        }
        assert_eq!(owner_from_key(0, 1), None);
    }
}
