//! A store that forwards every call to an embedded store, except the failures a test asks
//! for: checkpoint batches, drops (item transfers to the ground) and trades.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zonehost::store::redb::RedbStore;
use zonehost::store::trade::TradeOutcome;
use zonehost::store::{
    IntegrityReport, Invitation, ItemOp, ItemOpKind, ItemOutcome, ItemRecord, Lease, LeaseError,
    Mail, Owner, PartyRecord, PlayerRecord, SaveOutcome, ServerLoad, Store, StoreError,
    TradeRecord, TradeState,
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

impl Store for FaultyStore {
    fn backend(&self) -> &'static str {
        "faulty"
    }
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
    fn check(&self) -> Result<IntegrityReport, StoreError> {
        self.inner.check()
    }
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
    fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        self.inner.acquire_lease(resource, holder, ttl, now_ms)
    }
    fn renew_lease(&self, lease: &Lease, ttl: Duration, now_ms: u64) -> Result<Lease, LeaseError> {
        self.inner.renew_lease(lease, ttl, now_ms)
    }
    fn release_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.inner.release_lease(lease)
    }
    fn publish_load(
        &self,
        load: &ServerLoad,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.inner.publish_load(load, ttl, now_ms)
    }
    fn server_loads(&self, now_ms: u64) -> Result<Vec<ServerLoad>, StoreError> {
        self.inner.server_loads(now_ms)
    }
    fn lease_of(&self, resource: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.inner.lease_of(resource, now_ms)
    }
    fn load_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError> {
        self.inner.load_party(party_id)
    }
    fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        self.inner.party_of(player_id)
    }
    fn write_party(&self, party: &PartyRecord, expected: Option<u64>) -> Result<bool, StoreError> {
        self.inner.write_party(party, expected)
    }
    fn write_party_invite(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: &Invitation,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner
            .write_party_invite(party, expected, invitation, now_ms)
    }
    fn invitation_of(&self, player_id: u64, now_ms: u64) -> Result<Option<Invitation>, StoreError> {
        self.inner.invitation_of(player_id, now_ms)
    }
    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError> {
        self.inner.post_mail(server, body, now_ms)
    }
    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError> {
        self.inner.read_mail(server, max)
    }
    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError> {
        self.inner.delete_mail(server, ids)
    }
}
