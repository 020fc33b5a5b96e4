//! Recovery at start: this run's fence epoch, and what a crash of an earlier run left
//! behind (items on the ground of its instances, unsettled trades). Each step logs its
//! failures and leaves the rest to the next start.

use std::time::Duration;

use super::trade;
use super::{ItemOp, ItemOpKind, LeaseError, Store, StoreConfig};
use crate::clock::unix_millis;

/// Resource of the lease that hands out fence epochs.
pub const EPOCH_LEASE: &str = "epoch";

/// Takes a fence epoch greater than every earlier run's (of any server on this store):
/// the epoch lease is acquired and released twice, and a release guarantees the next
/// holder a greater epoch. Retries a few times while another server holds it for its own
/// start-up.
pub fn take_epoch(store: &dyn Store, config: &StoreConfig) -> Result<u64, LeaseError> {
    let ttl = Duration::from_secs(config.lease_ttl_secs);
    let mut attempt = 0;
    loop {
        let now_ms = unix_millis();
        let result = store
            .acquire_lease(EPOCH_LEASE, &config.server_id, ttl, now_ms)
            .and_then(|l| store.release_lease(&l))
            .and_then(|()| store.acquire_lease(EPOCH_LEASE, &config.server_id, ttl, now_ms))
            .and_then(|l| store.release_lease(&l).map(|()| l.epoch));
        match result {
            Err(LeaseError::Held { .. }) if attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Destroys the items a crash left on the ground of earlier runs' instances (see
/// [`Store::dead_ground_items`](super::ItemStore::dead_ground_items)), as the end of those instances would have. Failures are
/// logged, never fatal: the items stay where they are and the next start tries again.
pub fn sweep_dead_grounds(store: &dyn Store, epoch: u64) -> usize {
    let items = match store.dead_ground_items(epoch) {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(error = %e, "listing ground items of earlier runs failed");
            return 0;
        }
    };
    let ops: Vec<ItemOp> = items
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let mut b = [0u8; 16];
            let op_id = match getrandom::fill(&mut b) {
                Ok(()) => u128::from_le_bytes(b),
                // Unique anyway: this run's epoch never repeats.
                Err(_) => (u128::from(epoch) << 64) | (1 << 63) | i as u128,
            };
            r.owner.map(|from| ItemOp {
                op_id,
                item_id: r.item_id,
                kind: ItemOpKind::Destroy { from },
            })
        })
        .collect();
    if ops.is_empty() {
        return 0;
    }
    match store.apply_item_ops(&ops) {
        Ok(results) => {
            let swept = results
                .iter()
                .filter(|r| matches!(r, Ok(o) if o.applied()))
                .count();
            tracing::info!(
                swept,
                found = ops.len(),
                "destroyed items left on the ground of instances of earlier runs"
            );
            swept
        }
        Err(e) => {
            tracing::warn!(error = %e, items = ops.len(), "sweeping ground items of earlier runs failed");
            0
        }
    }
}

/// In cluster mode, open trades younger than this are left to the server running them
/// (see [`recover_trades`]).
pub const TRADE_RECOVERY_GRACE_MS: u64 = 60_000;

/// Resolves the trades a crash left unsettled (see [`trade::recover`]): committed
/// ones are delivered, the others' escrowed items go back to their givers. `shared`: other
/// live servers may be running trades on this store, so young open trades are left
/// alone; otherwise every unsettled trade is an earlier run's. Failures are logged, never
/// fatal: the trades stay unsettled and the next start tries again.
pub fn recover_trades(store: &dyn Store, shared: bool) -> Option<trade::Recovery> {
    let grace = if shared { TRADE_RECOVERY_GRACE_MS } else { 0 };
    match trade::recover(store, unix_millis(), grace) {
        Ok(r) => {
            if r != trade::Recovery::default() {
                tracing::info!(
                    delivered = r.delivered,
                    returned = r.returned,
                    left_young = r.left_young,
                    "resolved trades left unsettled by an earlier run"
                );
            }
            Some(r)
        }
        Err(e) => {
            tracing::warn!(error = %e, "recovering unsettled trades failed");
            None
        }
    }
}
