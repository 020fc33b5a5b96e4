//! The tables of the embedded file, their rows and codecs, and the in-transaction helpers
//! every write uses: item operations with their owner index and op log ([`ItemTables`]),
//! trade rows ([`TradeTable`]) and a whole trade in one transaction ([`TxnSteps`]).

use std::sync::Arc;
use std::time::Duration;

use ::redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::store::record::{decode_row, encode_row};
use crate::store::trade::TradeSteps;
use crate::store::{
    ItemOp, ItemOpKind, ItemOutcome, Owner, PartyRecord, ServerLoad, StoreError, TradeRecord,
    TradeState,
};

pub(super) const TRADES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("trades");
pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(super) const PLAYERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("players");
pub(super) const FENCES: TableDefinition<'_, u64, (u64, u64)> =
    TableDefinition::new("player_fences");
pub(super) const SERVERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("servers");
pub(super) const ITEMS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("items");
pub(super) const OWNER_INDEX: TableDefinition<'_, (u8, u64, u128), ()> =
    TableDefinition::new("items_by_owner");
pub(super) const ITEM_OPS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("item_ops");
pub(super) const LEASES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases");
pub(super) const PARTIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("parties");
pub(super) const PARTY_OF: TableDefinition<'_, u64, u64> = TableDefinition::new("party_of");
pub(super) const PARTY_INVITES: TableDefinition<'_, u64, (u64, u64)> =
    TableDefinition::new("party_invites");
pub(super) const MAILBOX: TableDefinition<'_, (&str, u128), &[u8]> =
    TableDefinition::new("mailbox");

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
pub(super) struct ServerRow {
    pub(super) load: ServerLoad,
    pub(super) expires_at_ms: u64,
}

/// A lease row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LeaseRow {
    pub(super) holder: Option<String>,
    pub(super) epoch: u64,
    pub(super) expires_at_ms: u64,
}

pub(super) fn decode_party(party_id: u64, bytes: &[u8]) -> Result<PartyRecord, StoreError> {
    decode_row(bytes).map_err(|reason| StoreError::Invalid {
        reason: format!("party {party_id:016x}: {reason}"),
    })
}

pub(super) fn owner_key(owner: Owner) -> (u8, u64) {
    match owner {
        Owner::Player(id) => (1, id),
        Owner::Ground { instance } => (2, instance),
        Owner::Trade { trade } => (3, trade),
    }
}

pub(super) fn owner_from_key(kind: u8, id: u64) -> Option<Owner> {
    match kind {
        1 => Some(Owner::Player(id)),
        2 => Some(Owner::Ground { instance: id }),
        3 => Some(Owner::Trade { trade: id }),
        _ => None,
    }
}

pub(super) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// The item tables (rows, owner index, op log) opened in one write transaction.
pub(super) struct ItemTables<'t> {
    pub(super) items: Table<'t, u128, &'static [u8]>,
    pub(super) index: Table<'t, (u8, u64, u128), ()>,
    pub(super) ops: Table<'t, u128, &'static [u8]>,
}

impl ItemTables<'_> {
    pub(super) fn open(txn: &WriteTransaction) -> Result<ItemTables<'_>, StoreError> {
        Ok(ItemTables {
            items: txn.open_table(ITEMS)?,
            index: txn.open_table(OWNER_INDEX)?,
            ops: txn.open_table(ITEM_OPS)?,
        })
    }

    pub(super) fn read_item(&self, item_id: u128) -> Result<Option<ItemRow>, StoreError> {
        match self.items.get(item_id)? {
            None => Ok(None),
            Some(g) => decode_row(g.value())
                .map(Some)
                .map_err(|reason| StoreError::CorruptItem { item_id, reason }),
        }
    }

    pub(super) fn write_item(&mut self, item_id: u128, row: &ItemRow) -> Result<(), StoreError> {
        self.items.insert(item_id, encode_row(row)?.as_slice())?;
        Ok(())
    }

    pub(super) fn index_insert(&mut self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        let (k, id) = owner_key(owner);
        self.index.insert((k, id, item_id), ())?;
        Ok(())
    }

    pub(super) fn index_remove(&mut self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        let (k, id) = owner_key(owner);
        self.index.remove((k, id, item_id))?;
        Ok(())
    }

    /// Applies one op inside the open transaction. A per-op error leaves no write behind.
    pub(super) fn apply(&mut self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
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

/// Trade rows inside an open write transaction.
pub(super) struct TradeTable<'t> {
    pub(super) table: Table<'t, u64, &'static [u8]>,
}

impl TradeTable<'_> {
    pub(super) fn open(txn: &WriteTransaction) -> Result<TradeTable<'_>, StoreError> {
        Ok(TradeTable {
            table: txn.open_table(TRADES)?,
        })
    }

    pub(super) fn read(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError> {
        match self.table.get(trade_id)? {
            None => Ok(None),
            Some(g) => decode_row(g.value())
                .map(Some)
                .map_err(|reason| StoreError::Trade {
                    trade_id,
                    reason: format!("corrupt row: {reason}"),
                }),
        }
    }

    pub(super) fn write(&mut self, trade: &TradeRecord) -> Result<(), StoreError> {
        self.table
            .insert(trade.trade_id, encode_row(trade)?.as_slice())?;
        Ok(())
    }

    pub(super) fn put(&mut self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        match self.read(trade.trade_id)? {
            Some(stored) if stored.same_manifest(trade) => Ok(stored),
            Some(_) => Err(StoreError::Trade {
                trade_id: trade.trade_id,
                reason: "the id is taken by a different trade".into(),
            }),
            None => {
                let fresh = TradeRecord {
                    state: TradeState::Open,
                    settled: false,
                    ..trade.clone()
                };
                self.write(&fresh)?;
                Ok(fresh)
            }
        }
    }

    pub(super) fn decide(
        &mut self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        if decision == TradeState::Open {
            return Err(StoreError::Trade {
                trade_id,
                reason: "a decision is committed or aborted".into(),
            });
        }
        let Some(mut row) = self.read(trade_id)? else {
            return Ok(None);
        };
        if row.state == TradeState::Open {
            row.state = decision;
            self.write(&row)?;
        }
        Ok(Some(row.state))
    }

    pub(super) fn settle(&mut self, trade_id: u64) -> Result<(), StoreError> {
        match self.read(trade_id)? {
            Some(row) if row.state != TradeState::Open => {
                if !row.settled {
                    self.write(&TradeRecord {
                        settled: true,
                        ..row
                    })?;
                }
                Ok(())
            }
            Some(_) => Err(StoreError::Trade {
                trade_id,
                reason: "an open trade cannot be settled".into(),
            }),
            None => Err(StoreError::Trade {
                trade_id,
                reason: "no such trade".into(),
            }),
        }
    }
}

/// A whole trade inside one write transaction.
pub(super) struct TxnSteps<'t> {
    pub(super) items: ItemTables<'t>,
    pub(super) trades: TradeTable<'t>,
}

impl TradeSteps for TxnSteps<'_> {
    fn put(&mut self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        self.trades.put(trade)
    }
    fn apply(
        &mut self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            match self.items.apply(op) {
                Err(e @ StoreError::Embedded { .. }) => return Err(e),
                r => out.push(r),
            }
        }
        Ok(out)
    }
    fn decide(
        &mut self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        self.trades.decide(trade_id, decision)
    }
    fn settle(&mut self, trade_id: u64) -> Result<(), StoreError> {
        self.trades.settle(trade_id)
    }
}
