//! Items: the `items` rows, the owner index `items_by_owner` and the op log `item_ops`,
//! their statements, and exactly-once item operations.

use std::sync::Arc;

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::{DeserializeRow, SerializeRow};

use super::conn::{
    blob16, err, from_blob16, may_have_applied, msg, prepare, Inner, Kind, Lwt, Profiles,
    MAX_ROUNDS,
};
use crate::store::record::{decode_row, encode_row};
use crate::store::{ItemOp, ItemOpKind, ItemOutcome, ItemRecord, Owner, StoreError};

#[derive(Debug, SerializeRow)]
pub(super) struct ItemInsert {
    pub(super) item_id: Vec<u8>,
    pub(super) owner: String,
    pub(super) data: Vec<u8>,
    pub(super) last_op: Vec<u8>,
}

#[derive(Debug, SerializeRow)]
pub(super) struct ItemTransfer {
    pub(super) owner: String,
    pub(super) last_op: Vec<u8>,
    pub(super) item_id: Vec<u8>,
    pub(super) if_owner: String,
}

#[derive(Debug, SerializeRow)]
pub(super) struct ItemDestroy {
    pub(super) last_op: Vec<u8>,
    pub(super) item_id: Vec<u8>,
    pub(super) if_owner: String,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct ItemRowCql {
    pub(super) owner: Option<String>,
    pub(super) data: Option<Vec<u8>>,
    pub(super) last_op: Option<Vec<u8>>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct ItemScanRow {
    pub(super) item_id: Vec<u8>,
    pub(super) owner: Option<String>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct IndexRow {
    pub(super) owner: String,
    pub(super) item_id: Vec<u8>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct IndexItemRow {
    pub(super) item_id: Vec<u8>,
}

#[derive(Debug, SerializeRow)]
pub(super) struct OpInsert {
    pub(super) op_id: Vec<u8>,
    pub(super) item_id: Vec<u8>,
    pub(super) op: Vec<u8>,
    pub(super) outcome: Vec<u8>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct OpRowCql {
    pub(super) op: Option<Vec<u8>>,
    pub(super) outcome: Option<Vec<u8>>,
}

pub(super) fn parse_owner(item_id: u128, owner: Option<&str>) -> Result<Option<Owner>, StoreError> {
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

/// The prepared statements of this domain (see [`HasItems`]).
pub(super) struct ItemStatements {
    pub(super) read_item: PreparedStatement,
    pub(super) read_item_serial: PreparedStatement,
    pub(super) create_item: PreparedStatement,
    pub(super) transfer_item: PreparedStatement,
    pub(super) destroy_item: PreparedStatement,
    pub(super) scan_items: PreparedStatement,
    pub(super) index_insert: PreparedStatement,
    pub(super) index_delete: PreparedStatement,
    pub(super) index_of_owner: PreparedStatement,
    pub(super) scan_index: PreparedStatement,
    pub(super) read_op: PreparedStatement,
    pub(super) write_op: PreparedStatement,
    pub(super) scan_ops: PreparedStatement,
}

impl std::fmt::Debug for ItemStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStatements").finish_non_exhaustive()
    }
}

impl ItemStatements {
    /// Prepares every statement of this domain on `s` with the profiles `p`.
    pub(super) async fn prepare(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        Ok(Self {
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
            scan_index: prepare(
                s,
                p,
                "SELECT owner, item_id FROM items_by_owner",
                Idempotent,
            )
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
        })
    }
}

/// Statements that include this domain's: what its methods on [`Inner`] need.
pub(super) trait HasItems: Send + Sync + 'static {
    /// This domain's prepared statements.
    fn items(&self) -> &ItemStatements;
}

impl<S: HasItems> Inner<S> {
    pub(super) async fn read_item(
        &self,
        item_id: u128,
        serial: bool,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let st = if serial {
            &self.st.items().read_item_serial
        } else {
            &self.st.items().read_item
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
    pub(super) fn applied_outcome(op: &ItemOp) -> ItemOutcome {
        let item_id = op.item_id;
        match op.kind {
            ItemOpKind::Create { owner, .. } => ItemOutcome::Created { item_id, owner },
            ItemOpKind::Transfer { from, to } => ItemOutcome::Transferred { item_id, from, to },
            ItemOpKind::Destroy { from } => ItemOutcome::Destroyed { item_id, from },
        }
    }

    /// Judges `op` against a freshly read row: `Some(outcome)` if decided, `None` if the
    /// op has not applied and its condition still holds (safe to send again).
    pub(super) fn judge(op: &ItemOp, row: Option<&ItemRecord>) -> Option<ItemOutcome> {
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

    pub(super) async fn item_lwt(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        let item_id = op.item_id;
        for _ in 0..MAX_ROUNDS {
            let sent = match &op.kind {
                ItemOpKind::Create { owner, data } => {
                    self.session
                        .execute_unpaged(
                            &self.st.items().create_item,
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
                            &self.st.items().transfer_item,
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
                            &self.st.items().destroy_item,
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

    pub(super) async fn index(
        &self,
        insert: bool,
        owner: Owner,
        item_id: u128,
    ) -> Result<(), StoreError> {
        let st = if insert {
            &self.st.items().index_insert
        } else {
            &self.st.items().index_delete
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
    pub(super) async fn withdraw_index_entry(&self, new_owner: Owner, item_id: u128) {
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

    pub(super) async fn apply_item_op(&self, op: ItemOp) -> Result<ItemOutcome, StoreError> {
        if let Some(prev) = self
            .first_row::<OpRowCql>(
                &self.st.items().read_op,
                (blob16(op.op_id),),
                "reading the op log",
            )
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
            &self.st.items().write_op,
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

    pub(super) async fn items_of(
        self: Arc<Self>,
        owner: Owner,
    ) -> Result<Vec<ItemRecord>, StoreError> {
        let mut ids = Vec::new();
        self.scan::<IndexItemRow>(
            &self.st.items().index_of_owner,
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

    pub(super) async fn ground_items(self: Arc<Self>) -> Result<Vec<ItemRecord>, StoreError> {
        let mut ids = Vec::new();
        self.scan::<IndexRow>(
            &self.st.items().scan_index,
            (),
            "scanning the owner index",
            |row| {
                if let (Some(Owner::Ground { instance }), Some(id)) =
                    (Owner::from_key(&row.owner), from_blob16(&row.item_id))
                {
                    ids.push((instance, id));
                }
                Ok(())
            },
        )
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
}
