//! Trades: the `trades` table, its rows and statements, and the conditional writes of
//! the trade protocol (see [`crate::store::trade`]).

use ::scylla::client::session::Session;
use ::scylla::errors::ExecutionError;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::{DeserializeRow, SerializeRow};

use super::conn::{
    err, i64_of, id_from_cql, id_to_cql, may_have_applied, msg, prepare, Inner, Kind, Lwt,
    Profiles, MAX_ROUNDS,
};
use crate::store::record::{decode_row, encode_row};
use crate::store::{StoreError, TradeRecord, TradeState};

#[derive(Debug, SerializeRow)]
pub(super) struct TradeInsert {
    pub(super) trade_id: i64,
    pub(super) manifest: Vec<u8>,
    pub(super) opened_at_ms: i64,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct TradeRowCql {
    pub(super) state: Option<String>,
    pub(super) settled: Option<bool>,
    pub(super) manifest: Option<Vec<u8>>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct TradeScanRow {
    pub(super) trade_id: i64,
    pub(super) state: Option<String>,
    pub(super) settled: Option<bool>,
    pub(super) manifest: Option<Vec<u8>>,
}

/// A trade row as read: the manifest blob, with the `state` and `settled` columns (the
/// truth for those two) laid over it.
pub(super) fn trade_from_cql(
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

/// The prepared statements of this domain (see [`HasTrades`]).
pub(super) struct TradeStatements {
    pub(super) put_trade: PreparedStatement,
    pub(super) read_trade: PreparedStatement,
    pub(super) read_trade_serial: PreparedStatement,
    pub(super) decide_trade: PreparedStatement,
    pub(super) settle_trade: PreparedStatement,
    pub(super) scan_trades: PreparedStatement,
}

impl std::fmt::Debug for TradeStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TradeStatements").finish_non_exhaustive()
    }
}

impl TradeStatements {
    /// Prepares every statement of this domain on `s` with the profiles `p`.
    pub(super) async fn prepare(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        Ok(Self {
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

/// Statements that include this domain's: what its methods on [`Inner`] need.
pub(super) trait HasTrades: Send + Sync + 'static {
    /// This domain's prepared statements.
    fn trades(&self) -> &TradeStatements;
}

impl<S: HasTrades> Inner<S> {
    pub(super) async fn read_trade(
        &self,
        trade_id: u64,
        serial: bool,
    ) -> Result<Option<TradeRecord>, StoreError> {
        let st = if serial {
            &self.st.trades().read_trade_serial
        } else {
            &self.st.trades().read_trade
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
    pub(super) async fn reread_trade(
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

    pub(super) async fn put_trade(&self, trade: TradeRecord) -> Result<TradeRecord, StoreError> {
        crate::store::trade::validate(&trade)?;
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
                .execute_unpaged(&self.st.trades().put_trade, &values)
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

    pub(super) async fn decide_trade(
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
                    &self.st.trades().decide_trade,
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

    pub(super) async fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        for _ in 0..MAX_ROUNDS {
            let sent = self
                .session
                .execute_unpaged(&self.st.trades().settle_trade, (id_to_cql(trade_id),))
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
    pub(super) async fn scan_trades(
        &self,
    ) -> Result<Vec<Result<TradeRecord, (u64, String)>>, StoreError> {
        let mut out = Vec::new();
        self.scan::<TradeScanRow>(
            &self.st.trades().scan_trades,
            (),
            "scanning trades",
            |row| {
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
            },
        )
        .await?;
        Ok(out)
    }
}
