//! Forwarding a store's domains to an inner store.
//!
//! A wrapper (the player cache, a test's fault injector, `Box`/`Arc` of a store) implements
//! [`Forward`] to name its inner store, implements by hand the domain traits it changes,
//! and marks each other domain with its `Forward*` trait: that domain then forwards every
//! call to the inner store, through the one copy of the forwarding code below.

use std::time::Duration;

use super::{
    CheckStore, IntegrityReport, Invitation, ItemOp, ItemOutcome, ItemRecord, ItemStore, Lease,
    LeaseError, LeaseStore, Mail, MailStore, Owner, PartyRecord, PartyStore, PlayerRecord,
    PlayerStore, SaveOutcome, ServerLoad, Store, StoreError, TradeOutcome, TradeRecord, TradeState,
    TradeStore,
};

/// A store that wraps another one: what its `Forward*` domains forward to.
pub trait Forward {
    /// The wrapped store.
    type Inner: Store + ?Sized;
    /// The wrapped store.
    fn inner(&self) -> &Self::Inner;
}

/// Forwards [`PlayerStore`] to [`Forward::inner`] unchanged.
pub trait ForwardPlayers: Forward {}

impl<T: ForwardPlayers + ?Sized> PlayerStore for T {
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        self.inner().load_player(player_id)
    }
    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        self.inner().save_players(records)
    }
}

/// Forwards [`ItemStore`] to [`Forward::inner`] unchanged.
pub trait ForwardItems: Forward {}

impl<T: ForwardItems + ?Sized> ItemStore for T {
    fn apply_item_op(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        self.inner().apply_item_op(op)
    }
    fn apply_item_ops(
        &self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        self.inner().apply_item_ops(ops)
    }
    fn item(&self, item_id: u128) -> Result<Option<ItemRecord>, StoreError> {
        self.inner().item(item_id)
    }
    fn items_of(&self, owner: Owner) -> Result<Vec<ItemRecord>, StoreError> {
        self.inner().items_of(owner)
    }
    fn dead_ground_items(&self, epoch: u64) -> Result<Vec<ItemRecord>, StoreError> {
        self.inner().dead_ground_items(epoch)
    }
    fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError> {
        self.inner().ground_items()
    }
}

/// Forwards [`TradeStore`] to [`Forward::inner`] unchanged.
pub trait ForwardTrades: Forward {}

impl<T: ForwardTrades + ?Sized> TradeStore for T {
    fn put_trade(&self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        self.inner().put_trade(trade)
    }
    fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        self.inner().decide_trade(trade_id, decision)
    }
    fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        self.inner().settle_trade(trade_id)
    }
    fn trade(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError> {
        self.inner().trade(trade_id)
    }
    fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError> {
        self.inner().unsettled_trades()
    }
    fn run_trade(&self, manifest: &TradeRecord) -> Result<TradeOutcome, StoreError> {
        self.inner().run_trade(manifest)
    }
}

/// Forwards [`LeaseStore`] to [`Forward::inner`] unchanged.
pub trait ForwardLeases: Forward {}

impl<T: ForwardLeases + ?Sized> LeaseStore for T {
    fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        self.inner().acquire_lease(resource, holder, ttl, now_ms)
    }
    fn renew_lease(&self, lease: &Lease, ttl: Duration, now_ms: u64) -> Result<Lease, LeaseError> {
        self.inner().renew_lease(lease, ttl, now_ms)
    }
    fn release_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.inner().release_lease(lease)
    }
    fn lease_of(&self, resource: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.inner().lease_of(resource, now_ms)
    }
    fn publish_load(
        &self,
        load: &ServerLoad,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.inner().publish_load(load, ttl, now_ms)
    }
    fn server_loads(&self, now_ms: u64) -> Result<Vec<ServerLoad>, StoreError> {
        self.inner().server_loads(now_ms)
    }
}

/// Forwards [`PartyStore`] to [`Forward::inner`] unchanged.
pub trait ForwardParties: Forward {}

impl<T: ForwardParties + ?Sized> PartyStore for T {
    fn load_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError> {
        self.inner().load_party(party_id)
    }
    fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        self.inner().party_of(player_id)
    }
    fn write_party(&self, party: &PartyRecord, expected: Option<u64>) -> Result<bool, StoreError> {
        self.inner().write_party(party, expected)
    }
    fn write_party_invite(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: &Invitation,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner()
            .write_party_invite(party, expected, invitation, now_ms)
    }
    fn invitation_of(&self, player_id: u64, now_ms: u64) -> Result<Option<Invitation>, StoreError> {
        self.inner().invitation_of(player_id, now_ms)
    }
}

/// Forwards [`MailStore`] to [`Forward::inner`] unchanged.
pub trait ForwardMail: Forward {}

impl<T: ForwardMail + ?Sized> MailStore for T {
    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError> {
        self.inner().post_mail(server, body, now_ms)
    }
    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError> {
        self.inner().read_mail(server, max)
    }
    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError> {
        self.inner().delete_mail(server, ids)
    }
}

/// Forwards [`CheckStore`] to [`Forward::inner`] unchanged.
pub trait ForwardCheck: Forward {}

impl<T: ForwardCheck + ?Sized> CheckStore for T {
    fn backend(&self) -> &'static str {
        self.inner().backend()
    }
    fn check(&self) -> Result<IntegrityReport, StoreError> {
        self.inner().check()
    }
}
