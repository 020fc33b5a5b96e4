//! Party trades made durable: escrow, one commit point, delivery, recovery.
//!
//! A trade moves several items between two players. ScyllaDB's lightweight transactions
//! are per partition (per item row), so no single write can move them all; instead:
//!
//! 1. **Manifest.** The trade's row ([`TradeRecord`]: players, legs, gold) is written in
//!    state `open` (`IF NOT EXISTS`) before any item moves, so recovery always knows each
//!    escrowed item's giver and recipient.
//! 2. **Escrow.** Each item moves by conditional `Transfer { from: Player(giver), to:
//!    Trade { id } }`. A refusal (the giver no longer owns it) means the trade must abort.
//! 3. **Commit point.** One conditional write on the trade row, `IF state = open`, sets
//!    `committed` (every item escrowed) or `aborted`. Whoever writes it first decides;
//!    recovery racing a live trade can only abort it *before* its commit, never after.
//! 4. **Resolve.** Committed: each item `Trade { id } -> Player(recipient)`; aborted:
//!    `Trade { id } -> Player(giver)` (conditional on the escrow owner, so items never
//!    escrowed are left alone). Then the row is marked settled.
//!
//! Every item op of a trade has a deterministic op id ([`op_id`]: trade, item, step), so
//! re-running a trade or its recovery replays recorded outcomes (exactly-once) instead of
//! moving anything twice. The embedded store runs all four steps in one redb write
//! transaction ([`super::Store::run_trade`](crate::store::TradeStore::run_trade)), so there escrow is never seen half done.
//!
//! **Recovery** ([`recover`]): every unsettled trade is resolved by its row: committed ->
//! deliver, open (older than a grace period, so a live server's trade is not raced) ->
//! abort, then return; aborted -> return. The embedded server runs it at start; a
//! ScyllaDB fleet runs it at each server's start too (the conditional decision makes
//! concurrent runs safe). `zonehost store check` reports an item in the escrow of a settled
//! or unknown trade ([`super::Anomaly::StrandedEscrow`]); items in the escrow of an
//! unsettled trade are counted as in flight.
//!
//! **Gold** is a plain value in each player's checkpoint, not an item row. The row records
//! the amounts; the sim applies them to both players after the commit and saves both
//! checkpoints in one batch (one redb transaction: atomic on the embedded store). On
//! ScyllaDB the two checkpoints are two LWTs: a crash between them can leave one side's
//! gold change without the other's (documented gap, see docs/persistence.md).

use serde::{Deserialize, Serialize};

use super::{ItemOp, ItemOpKind, ItemOutcome, Owner, Store, StoreError, TradeRecord, TradeState};

/// A step of a trade an item op belongs to (part of its deterministic op id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Giver -> escrow.
    Escrow,
    /// Escrow -> recipient (committed).
    Deliver,
    /// Escrow -> giver (aborted).
    Return,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The op id of `step` for `item_id` in trade `trade_id`: the same on every attempt, so a
/// retried trade or a recovery replays recorded outcomes.
pub fn op_id(trade_id: u64, item_id: u128, step: Step) -> u128 {
    let tag: u64 = match step {
        Step::Escrow => 0x7472_6164_6531,
        Step::Deliver => 0x7472_6164_6532,
        Step::Return => 0x7472_6164_6533,
    };
    let hi = splitmix(trade_id ^ splitmix(tag));
    let item_hi = (item_id >> 64) as u64;
    let item_lo = item_id as u64;
    let lo = splitmix(item_lo ^ splitmix(item_hi ^ hi));
    (u128::from(hi) << 64) | u128::from(lo)
}

pub use super::types::TradeOutcome;

/// The writes a trade needs, so the same protocol runs over any [`Store`] (one write per
/// step) or inside one embedded transaction.
pub trait TradeSteps {
    /// [`Store::put_trade`](crate::store::TradeStore::put_trade).
    fn put(&mut self, trade: &TradeRecord) -> Result<TradeRecord, StoreError>;
    /// [`Store::apply_item_ops`](crate::store::ItemStore::apply_item_ops).
    #[allow(clippy::type_complexity)]
    fn apply(&mut self, ops: &[ItemOp])
        -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError>;
    /// [`Store::decide_trade`](crate::store::TradeStore::decide_trade).
    fn decide(
        &mut self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError>;
    /// [`Store::settle_trade`](crate::store::TradeStore::settle_trade).
    fn settle(&mut self, trade_id: u64) -> Result<(), StoreError>;
}

/// [`TradeSteps`] over a [`Store`]'s methods.
#[derive(Debug)]
pub struct StoreSteps<'a, S: Store + ?Sized>(pub &'a S);

impl<S: Store + ?Sized> TradeSteps for StoreSteps<'_, S> {
    fn put(&mut self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        self.0.put_trade(trade)
    }
    fn apply(
        &mut self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        self.0.apply_item_ops(ops)
    }
    fn decide(
        &mut self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        self.0.decide_trade(trade_id, decision)
    }
    fn settle(&mut self, trade_id: u64) -> Result<(), StoreError> {
        self.0.settle_trade(trade_id)
    }
}

/// Checks a manifest before anything is written: open, two distinct players, each leg
/// between them, no item twice.
pub fn validate(manifest: &TradeRecord) -> Result<(), StoreError> {
    let bad = |reason: &str| {
        Err(StoreError::Trade {
            trade_id: manifest.trade_id,
            reason: reason.into(),
        })
    };
    let [a, b] = manifest.players;
    if manifest.state != TradeState::Open || manifest.settled {
        return bad("a new trade must be open and unsettled");
    }
    if a == b {
        return bad("a player cannot trade with themself");
    }
    for (i, leg) in manifest.legs.iter().enumerate() {
        let between = (leg.from == a && leg.to == b) || (leg.from == b && leg.to == a);
        if !between {
            return bad("a leg is not between the trade's two players");
        }
        if manifest.legs[..i].iter().any(|l| l.item_id == leg.item_id) {
            return bad("an item is offered twice");
        }
    }
    Ok(())
}

/// Runs a whole trade over `store`, one write per step (see the module docs). Safe to
/// call again with the same manifest after an error: finished steps replay.
pub fn run<S: Store + ?Sized>(
    store: &S,
    manifest: &TradeRecord,
) -> Result<TradeOutcome, StoreError> {
    run_steps(&mut StoreSteps(store), manifest)
}

/// Runs a whole trade through `steps`.
pub fn run_steps(
    steps: &mut impl TradeSteps,
    manifest: &TradeRecord,
) -> Result<TradeOutcome, StoreError> {
    validate(manifest)?;
    let trade_id = manifest.trade_id;
    let stored = steps.put(manifest)?;
    let mut refused = Vec::new();
    let state = match stored.state {
        TradeState::Open => {
            let escrow = Owner::Trade { trade: trade_id };
            let ops: Vec<ItemOp> = manifest
                .legs
                .iter()
                .map(|leg| ItemOp {
                    op_id: op_id(trade_id, leg.item_id, Step::Escrow),
                    item_id: leg.item_id,
                    kind: ItemOpKind::Transfer {
                        from: Owner::Player(leg.from),
                        to: escrow,
                    },
                })
                .collect();
            for result in steps.apply(&ops)? {
                match result? {
                    o if o.applied() => {}
                    ItemOutcome::OwnerMismatch { item_id, actual } => {
                        refused.push((item_id, actual))
                    }
                    ItemOutcome::AlreadyExists { item_id }
                    | ItemOutcome::Created { item_id, .. }
                    | ItemOutcome::Transferred { item_id, .. }
                    | ItemOutcome::Destroyed { item_id, .. } => refused.push((item_id, None)),
                }
            }
            let decision = if refused.is_empty() {
                TradeState::Committed
            } else {
                TradeState::Aborted
            };
            steps
                .decide(trade_id, decision)?
                .ok_or_else(|| StoreError::Trade {
                    trade_id,
                    reason: "the trade row vanished before its decision".into(),
                })?
        }
        decided => decided,
    };
    resolve_steps(steps, &stored, state)?;
    Ok(match state {
        TradeState::Committed => TradeOutcome::Committed,
        TradeState::Open | TradeState::Aborted => TradeOutcome::Aborted { refused },
    })
}

/// Moves every escrowed item of a decided trade to where its decision sends it, then
/// marks the trade settled. Items not in escrow are left alone.
pub fn resolve_steps(
    steps: &mut impl TradeSteps,
    trade: &TradeRecord,
    state: TradeState,
) -> Result<(), StoreError> {
    let trade_id = trade.trade_id;
    let escrow = Owner::Trade { trade: trade_id };
    let (step, deliver) = match state {
        TradeState::Committed => (Step::Deliver, true),
        TradeState::Aborted => (Step::Return, false),
        TradeState::Open => {
            return Err(StoreError::Trade {
                trade_id,
                reason: "an open trade cannot be resolved".into(),
            })
        }
    };
    let ops: Vec<ItemOp> = trade
        .legs
        .iter()
        .map(|leg| ItemOp {
            op_id: op_id(trade_id, leg.item_id, step),
            item_id: leg.item_id,
            kind: ItemOpKind::Transfer {
                from: escrow,
                to: Owner::Player(if deliver { leg.to } else { leg.from }),
            },
        })
        .collect();
    for result in steps.apply(&ops)? {
        // Applied, or refused because the item is not in escrow (never escrowed, or
        // already moved on): both leave nothing for this trade to do.
        if let ItemOutcome::OwnerMismatch {
            item_id,
            actual: Some(actual),
        } = result?
        {
            if actual == escrow {
                return Err(StoreError::Trade {
                    trade_id,
                    reason: format!("item {item_id:032x} is still in escrow after resolving"),
                });
            }
        }
    }
    steps.settle(trade_id)
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// Committed trades whose items were delivered.
    pub delivered: u64,
    /// Trades (aborted, or open and aborted now) whose escrowed items went back.
    pub returned: u64,
    /// Open trades younger than the grace period, left to their server.
    pub left_young: u64,
}

/// Resolves every unsettled trade by its row (see the module docs): open trades opened
/// at least `grace_ms` before `now_ms` are aborted first. Idempotent.
pub fn recover<S: Store + ?Sized>(
    store: &S,
    now_ms: u64,
    grace_ms: u64,
) -> Result<Recovery, StoreError> {
    let mut report = Recovery::default();
    let mut steps = StoreSteps(store);
    for trade in store.unsettled_trades()? {
        let state = match trade.state {
            TradeState::Open if now_ms < trade.opened_at_ms.saturating_add(grace_ms) => {
                report.left_young += 1;
                continue;
            }
            TradeState::Open => store
                .decide_trade(trade.trade_id, TradeState::Aborted)?
                .unwrap_or(TradeState::Aborted),
            decided => decided,
        };
        resolve_steps(&mut steps, &trade, state)?;
        match state {
            TradeState::Committed => report.delivered += 1,
            TradeState::Open | TradeState::Aborted => report.returned += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TradeLeg;

    fn manifest(legs: Vec<TradeLeg>) -> TradeRecord {
        TradeRecord {
            trade_id: 9,
            players: [1, 2],
            legs,
            gold: [0, 0],
            state: TradeState::Open,
            settled: false,
            opened_at_ms: 0,
        }
    }

    #[test]
    fn op_ids_differ_by_trade_item_and_step() {
        let mut seen = std::collections::HashSet::new();
        for trade in 0..20u64 {
            for item in [0u128, 1, u128::MAX, 1 << 64, (1 << 64) | 1] {
                for step in [Step::Escrow, Step::Deliver, Step::Return] {
                    assert!(seen.insert(op_id(trade, item, step)));
                }
            }
        }
        assert_eq!(op_id(3, 4, Step::Escrow), op_id(3, 4, Step::Escrow));
    }

    #[test]
    fn manifests_are_validated() {
        let leg = |item_id, from, to| TradeLeg { item_id, from, to };
        assert!(validate(&manifest(vec![leg(1, 1, 2), leg(2, 2, 1)])).is_ok());
        assert!(validate(&manifest(vec![])).is_ok());
        for bad in [
            manifest(vec![leg(1, 1, 3)]),
            manifest(vec![leg(1, 1, 1)]),
            manifest(vec![leg(1, 1, 2), leg(1, 2, 1)]),
            TradeRecord {
                players: [1, 1],
                ..manifest(vec![])
            },
            TradeRecord {
                state: TradeState::Committed,
                ..manifest(vec![])
            },
        ] {
            assert!(
                matches!(validate(&bad), Err(StoreError::Trade { trade_id: 9, .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn states_round_trip_as_text() {
        for s in [TradeState::Open, TradeState::Committed, TradeState::Aborted] {
            assert_eq!(TradeState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TradeState::parse("settled"), None);
    }
}
