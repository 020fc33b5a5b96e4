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
//! - `trades`: `trade_id -> encoded TradeRecord` (manifest, state, settled); see
//!   [`super::trade`]. A whole trade runs in one write transaction.
//! - `servers`: `server_id -> { load, expires_at_ms }`: each server's published load
//!   ([`super::ServerLoad`]); expired rows are skipped on read and dropped at the next
//!   publish.
//! - `parties`: `party_id -> encoded` [`PartyRecord`] (compare-and-set on its version);
//!   `party_of`: `player_id -> party_id`, the membership index, written in the same
//!   transaction; `party_invites`: `invitee -> (party_id, expires_at_ms)`, the invitation
//!   index, written in the same transaction too (expired entries are ignored on read and
//!   replaced by the invitee's next invitation).
//! - `mailbox`: `(server, mail id) -> body`: messages between servers.

mod tables;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    WriteTransaction,
};

use super::record::{self, decode_row, encode_row};
use super::trade::{self, TradeOutcome};
use super::{
    check_invitation, check_party_version, mail_id, pending_invitation, Anomaly, CheckStore, Fence,
    IntegrityReport, Invitation, ItemOp, ItemOutcome, ItemRecord, ItemStore, Lease, LeaseError,
    LeaseStore, Mail, MailStore, Owner, PartyRecord, PartyStore, PlayerRecord, PlayerStore,
    SaveOutcome, ServerLoad, StoreError, TradeRecord, TradeState, TradeStore,
};
use tables::*;

/// Schema version of the embedded file written by this build.
pub const SCHEMA_VERSION: u64 = 1;

/// The embedded store.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// One transaction: compare-and-set of `party` on its version, the membership index
    /// and the invitation index (`invitation` added; invitees the party no longer lists
    /// lose theirs to it).
    fn write_party_txn(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: Option<&Invitation>,
    ) -> Result<bool, StoreError> {
        let txn = self.begin()?;
        let written = {
            let mut parties = txn.open_table(PARTIES)?;
            let current = {
                let found = parties.get(party.party_id)?;
                found
                    .map(|g| decode_party(party.party_id, g.value()))
                    .transpose()?
            };
            if current.as_ref().map(|c| c.version) != expected {
                false
            } else {
                let mut index = txn.open_table(PARTY_OF)?;
                for old in current.iter().flat_map(|c| c.members.iter()) {
                    let ours = index.get(*old)?.map(|g| g.value()) == Some(party.party_id);
                    if ours && !party.members.contains(old) {
                        index.remove(*old)?;
                    }
                }
                for m in &party.members {
                    index.insert(*m, party.party_id)?;
                }
                let mut invites = txn.open_table(PARTY_INVITES)?;
                for old in current.iter().flat_map(|c| c.invites.iter()) {
                    let ours = invites.get(*old)?.map(|g| g.value().0) == Some(party.party_id);
                    let kept = !party.members.is_empty() && party.invites.contains(old);
                    if ours && !kept {
                        invites.remove(*old)?;
                    }
                }
                if let Some(inv) = invitation {
                    invites.insert(inv.invitee, (inv.party_id, inv.expires_at_ms))?;
                }
                if party.members.is_empty() {
                    parties.remove(party.party_id)?;
                } else {
                    parties.insert(party.party_id, encode_row(party)?.as_slice())?;
                }
                true
            }
        };
        if written {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(written)
    }

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
            txn.open_table(SERVERS)?;
            txn.open_table(PLAYERS)?;
            txn.open_table(FENCES)?;
            txn.open_table(ITEMS)?;
            txn.open_table(OWNER_INDEX)?;
            txn.open_table(ITEM_OPS)?;
            txn.open_table(TRADES)?;
            txn.open_table(LEASES)?;
            txn.open_table(PARTIES)?;
            txn.open_table(PARTY_OF)?;
            txn.open_table(PARTY_INVITES)?;
            txn.open_table(MAILBOX)?;
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
    /// (plants the anomaly [`Store::check`](crate::store::CheckStore::check) must find).
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

impl PlayerStore for RedbStore {
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
}

impl ItemStore for RedbStore {
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
}

impl TradeStore for RedbStore {
    fn put_trade(&self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        trade::validate(trade)?;
        let txn = self.begin()?;
        let stored = TradeTable::open(&txn)?.put(trade)?;
        txn.commit()?;
        Ok(stored)
    }

    fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        let txn = self.begin()?;
        let state = TradeTable::open(&txn)?.decide(trade_id, decision)?;
        txn.commit()?;
        Ok(state)
    }

    fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        let txn = self.begin()?;
        TradeTable::open(&txn)?.settle(trade_id)?;
        txn.commit()?;
        Ok(())
    }

    fn trade(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TRADES)?;
        let found = table.get(trade_id)?;
        match found {
            None => Ok(None),
            Some(g) => decode_row(g.value())
                .map(Some)
                .map_err(|reason| StoreError::Trade {
                    trade_id,
                    reason: format!("corrupt row: {reason}"),
                }),
        }
    }

    fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TRADES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let trade_id = k.value();
            let row: TradeRecord = decode_row(v.value()).map_err(|reason| StoreError::Trade {
                trade_id,
                reason: format!("corrupt row: {reason}"),
            })?;
            if !row.settled {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// One write transaction for the whole trade: escrow, decision, delivery or return and
    /// settle commit together or not at all.
    fn run_trade(&self, manifest: &TradeRecord) -> Result<TradeOutcome, StoreError> {
        let txn = self.begin()?;
        let outcome = {
            let mut steps = TxnSteps {
                items: ItemTables::open(&txn)?,
                trades: TradeTable::open(&txn)?,
            };
            // An error drops the transaction: nothing of the trade is written.
            trade::run_steps(&mut steps, manifest)?
        };
        txn.commit()?;
        Ok(outcome)
    }
}

impl LeaseStore for RedbStore {
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

    fn lease_of(&self, resource: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASES)?;
        let row: Option<LeaseRow> = match table.get(resource)? {
            None => None,
            Some(g) => Some(decode_row(g.value()).map_err(|reason| StoreError::Invalid {
                reason: format!("lease {resource}: {reason}"),
            })?),
        };
        Ok(row.and_then(|r| match r.holder {
            Some(holder) if r.expires_at_ms > now_ms => Some(Lease {
                resource: resource.into(),
                holder,
                epoch: r.epoch,
                expires_at_ms: r.expires_at_ms,
            }),
            _ => None,
        }))
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

impl PartyStore for RedbStore {
    fn load_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PARTIES)?;
        let found = table.get(party_id)?;
        found.map(|g| decode_party(party_id, g.value())).transpose()
    }

    fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(PARTY_OF)?;
        let Some(party_id) = index.get(player_id)?.map(|g| g.value()) else {
            return Ok(None);
        };
        let parties = txn.open_table(PARTIES)?;
        let found = parties.get(party_id)?;
        let party = found
            .map(|g| decode_party(party_id, g.value()))
            .transpose()?;
        Ok(party
            .filter(|p| p.members.contains(&player_id))
            .map(|p| p.party_id))
    }

    fn write_party(&self, party: &PartyRecord, expected: Option<u64>) -> Result<bool, StoreError> {
        check_party_version(party, expected)?;
        self.write_party_txn(party, expected, None)
    }

    fn write_party_invite(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: &Invitation,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        check_party_version(party, expected)?;
        check_invitation(party, invitation, now_ms)?;
        self.write_party_txn(party, expected, Some(invitation))
    }

    fn invitation_of(&self, player_id: u64, now_ms: u64) -> Result<Option<Invitation>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(PARTY_INVITES)?;
        let Some((party_id, expires_at_ms)) = index.get(player_id)?.map(|g| g.value()) else {
            return Ok(None);
        };
        let entry = Invitation {
            party_id,
            invitee: player_id,
            expires_at_ms,
        };
        if expires_at_ms <= now_ms {
            return Ok(None);
        }
        let parties = txn.open_table(PARTIES)?;
        let found = parties.get(party_id)?;
        let party = found
            .map(|g| decode_party(party_id, g.value()))
            .transpose()?;
        Ok(pending_invitation(entry, party.as_ref(), now_ms))
    }
}

impl MailStore for RedbStore {
    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError> {
        let id = mail_id(now_ms);
        let txn = self.begin()?;
        txn.open_table(MAILBOX)?.insert((server, id), body)?;
        txn.commit()?;
        Ok(id)
    }

    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MAILBOX)?;
        let mut out = Vec::new();
        for entry in table
            .range((server, 0u128)..=(server, u128::MAX))?
            .take(max)
        {
            let (k, v) = entry?;
            out.push(Mail {
                id: k.value().1,
                body: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(MAILBOX)?;
            for id in ids {
                table.remove((server, *id))?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl CheckStore for RedbStore {
    fn backend(&self) -> &'static str {
        "embedded"
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
                            Owner::Trade { .. } => report.items_in_escrow += 1,
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
        // Escrow: an item held by a trade must belong to an unsettled trade.
        let mut unsettled = std::collections::HashSet::new();
        let mut corrupt = std::collections::HashSet::new();
        for entry in txn.open_table(TRADES)?.iter()? {
            let (k, v) = entry?;
            let trade_id = k.value();
            report.trades += 1;
            match decode_row::<TradeRecord>(v.value()) {
                Ok(row) if !row.settled => {
                    report.trades_unsettled += 1;
                    unsettled.insert(trade_id);
                }
                Ok(_) => {}
                Err(reason) => {
                    corrupt.insert(trade_id);
                    report
                        .anomalies
                        .push(Anomaly::CorruptTrade { trade_id, reason });
                }
            }
        }
        for (&item_id, &owner) in &owner_of {
            if let Owner::Trade { trade } = owner {
                // A corrupt row is reported as such, not as stranded escrow too.
                if !unsettled.contains(&trade) && !corrupt.contains(&trade) {
                    report
                        .anomalies
                        .push(Anomaly::StrandedEscrow { item_id, trade });
                }
            }
        }
        report.owners = owners.len() as u64;
        report.ops = txn.open_table(ITEM_OPS)?.len()?;
        report.leases = txn.open_table(LEASES)?.len()?;
        report.anomalies.sort_by_key(|a| format!("{a}"));
        Ok(report)
    }
}
