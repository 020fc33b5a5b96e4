//! A store that forwards every call to an embedded store, except the failures a test asks
//! for: checkpoint batches, drops (item transfers to the ground) and trades.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use zonehost::store::redb::RedbStore;
use zonehost::store::trade::TradeOutcome;
use zonehost::store::{
    Forward, ForwardCheck, ForwardLeases, ForwardMail, ForwardParties, ItemOp, ItemOpKind,
    ItemOutcome, ItemRecord, ItemStore, Owner, PlayerRecord, PlayerStore, SaveOutcome, StoreError,
    TradeRecord, TradeState, TradeStore,
};

/// Forwards to `inner`; fails what its fields say with an injected I/O error.
#[derive(Debug)]
pub struct FaultyStore {
    /// The embedded store everything is forwarded to.
    pub inner: RedbStore,
    /// The next this many `save_players` batches fail (counted down).
    pub fail_saves: AtomicU32,
    /// Every drop (a `Transfer` to a ground) fails.
    pub fail_drops: bool,
    /// Every trade fails (`run_trade`).
    pub fail_trades: bool,
}

impl FaultyStore {
    /// Forwards everything to `inner` until told otherwise.
    pub fn new(inner: RedbStore) -> Self {
        Self {
            inner,
            fail_saves: AtomicU32::new(0),
            fail_drops: false,
            fail_trades: false,
        }
    }
}

/// The injected failure: what a disk hiccup at commit looks like.
pub fn injected() -> StoreError {
    StoreError::Embedded {
        context: "commit",
        source: Arc::new(std::io::Error::other("injected: disk hiccup")),
    }
}

fn is_drop(op: &ItemOp) -> bool {
    matches!(
        op.kind,
        ItemOpKind::Transfer {
            to: Owner::Ground { .. },
            ..
        }
    )
}

impl PlayerStore for FaultyStore {
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        self.inner.load_player(player_id)
    }

    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        let failing = self
            .fail_saves
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(injected());
        }
        self.inner.save_players(records)
    }
}

impl ItemStore for FaultyStore {
    fn apply_item_op(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        if self.fail_drops && is_drop(op) {
            return Err(injected());
        }
        self.inner.apply_item_op(op)
    }

    #[allow(clippy::type_complexity)]
    fn apply_item_ops(
        &self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        if self.fail_drops {
            return Ok(ops.iter().map(|op| self.apply_item_op(op)).collect());
        }
        self.inner.apply_item_ops(ops)
    }

    fn item(&self, item_id: u128) -> Result<Option<ItemRecord>, StoreError> {
        self.inner.item(item_id)
    }

    fn items_of(&self, owner: Owner) -> Result<Vec<ItemRecord>, StoreError> {
        self.inner.items_of(owner)
    }

    fn dead_ground_items(&self, epoch: u64) -> Result<Vec<ItemRecord>, StoreError> {
        self.inner.dead_ground_items(epoch)
    }

    fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError> {
        self.inner.ground_items()
    }
}

impl TradeStore for FaultyStore {
    fn put_trade(&self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        self.inner.put_trade(trade)
    }

    fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        self.inner.decide_trade(trade_id, decision)
    }

    fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        self.inner.settle_trade(trade_id)
    }

    fn trade(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError> {
        self.inner.trade(trade_id)
    }

    fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError> {
        self.inner.unsettled_trades()
    }

    fn run_trade(&self, manifest: &TradeRecord) -> Result<TradeOutcome, StoreError> {
        if self.fail_trades {
            return Err(injected());
        }
        self.inner.run_trade(manifest)
    }
}

impl Forward for FaultyStore {
    type Inner = RedbStore;
    fn inner(&self) -> &RedbStore {
        &self.inner
    }
}

impl ForwardLeases for FaultyStore {}
impl ForwardParties for FaultyStore {}
impl ForwardMail for FaultyStore {}
impl ForwardCheck for FaultyStore {}
