//! A moka cache of recently active player records in front of any [`Store`].
//!
//! Reconnects and zone changes load the same few records again and again; the cache
//! answers them from memory. Sizing: [`StoreConfig::cache_capacity`] records (default
//! 10 000; a record is about 1-2 KB with its game state, so ~20 MB), each evicted after
//! [`StoreConfig::cache_ttl_secs`] without use (time-to-idle, default 10 min); a TTL of
//! 0 or a capacity of 0 disables the cache. Coherence: a record enters the cache only
//! when it was loaded from the store or saved successfully (it is then the newest durable
//! record); a save refused as stale evicts it (someone else wrote a newer one). With one
//! server per player (leases) the cache can never serve a record older than what is
//! durable.
//!
//! Hits and misses are counted in [`CacheStats`] (exported as
//! `zonehost_store_cache_hits_total` / `zonehost_store_cache_misses_total`).
//!
//! [`StoreConfig::cache_capacity`]: super::StoreConfig::cache_capacity
//! [`StoreConfig::cache_ttl_secs`]: super::StoreConfig::cache_ttl_secs

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{
    record, Forward, ForwardCheck, ForwardItems, ForwardLeases, ForwardMail, ForwardParties,
    ForwardPlayers, ForwardTrades, PlayerRecord, PlayerStore, SaveOutcome, Store, StoreError,
};

/// Hit and miss counters of the player cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Loads answered from the cache.
    pub hits: AtomicU64,
    /// Loads that went to the store.
    pub misses: AtomicU64,
}

impl CacheStats {
    /// Publishes hits and misses to the installed `metrics` recorder (at scrape time).
    pub fn publish(&self) {
        metrics::counter!("zonehost_store_cache_hits_total").absolute(self.hits());
        metrics::counter!("zonehost_store_cache_misses_total").absolute(self.misses());
    }

    /// Hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Misses so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// The cache itself: cheap to clone (shared), usable from any thread without blocking on
/// I/O (a sim thread may peek at it; the store worker fills it).
#[derive(Clone)]
pub struct PlayerCache {
    cache: Option<moka::sync::Cache<u64, Arc<PlayerRecord>>>,
    stats: Arc<CacheStats>,
}

impl fmt::Debug for PlayerCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlayerCache")
            .field("enabled", &self.cache.is_some())
            .field("entries", &self.entry_count())
            .field("stats", &self.stats)
            .finish()
    }
}

impl PlayerCache {
    /// A cache of at most `capacity` records, each evicted after `time_to_idle` unused.
    /// Zero capacity or zero time disables it (every lookup misses, nothing is kept).
    pub fn new(capacity: u64, time_to_idle: Duration) -> Self {
        let cache = (capacity > 0 && !time_to_idle.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .name("zonehost-players")
                .max_capacity(capacity)
                .time_to_idle(time_to_idle)
                .build()
        });
        Self {
            cache,
            stats: Arc::new(CacheStats::default()),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// A cached record, counting a hit or a miss.
    pub fn get(&self, player_id: u64) -> Option<Arc<PlayerRecord>> {
        let found = self.cache.as_ref().and_then(|c| c.get(&player_id));
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a record that is known to be the newest durable one.
    pub fn insert(&self, record: PlayerRecord) {
        if let Some(c) = &self.cache {
            c.insert(record.player_id, Arc::new(record));
        }
    }

    /// Forgets a player.
    pub fn invalidate(&self, player_id: u64) {
        if let Some(c) = &self.cache {
            c.invalidate(&player_id);
        }
    }

    /// Approximate number of cached records.
    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

/// A [`Store`] with the player cache in front of its loads and saves.
#[derive(Debug)]
pub struct CachedStore<S> {
    inner: S,
    cache: PlayerCache,
}

impl<S: Store> CachedStore<S> {
    /// Wraps `inner` with a cache of `capacity` records and the given time-to-idle.
    pub fn new(inner: S, capacity: u64, time_to_idle: Duration) -> Self {
        Self {
            inner,
            cache: PlayerCache::new(capacity, time_to_idle),
        }
    }

    /// The cache (clone it to share).
    pub fn cache(&self) -> &PlayerCache {
        &self.cache
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> PlayerStore for CachedStore<S> {
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        if let Some(hit) = self.cache.get(player_id) {
            return Ok(Some(PlayerRecord::clone(&hit)));
        }
        let loaded = self.inner.load_player(player_id)?;
        if let Some(r) = &loaded {
            self.cache.insert(r.clone());
        }
        Ok(loaded)
    }

    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        let outcomes = match self.inner.save_players(records) {
            Ok(o) => o,
            Err(e) => {
                // Some may have landed: the cache must not serve what it cannot vouch for.
                for r in records {
                    self.cache.invalidate(r.player_id);
                }
                return Err(e);
            }
        };
        for (r, outcome) in records.iter().zip(&outcomes) {
            match outcome {
                SaveOutcome::Saved { .. } => {
                    let mut saved = r.clone();
                    saved.schema_version = u32::from(record::RECORD_VERSION);
                    self.cache.insert(saved);
                }
                SaveOutcome::Stale { stored, .. } if *stored != r.fence() => {
                    self.cache.invalidate(r.player_id)
                }
                SaveOutcome::Stale { .. } => {}
            }
        }
        Ok(outcomes)
    }
}

impl<S: Store> Forward for CachedStore<S> {
    type Inner = S;
    fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> ForwardItems for CachedStore<S> {}
impl<S: Store> ForwardTrades for CachedStore<S> {}
impl<S: Store> ForwardLeases for CachedStore<S> {}
impl<S: Store> ForwardParties for CachedStore<S> {}
impl<S: Store> ForwardMail for CachedStore<S> {}
impl<S: Store> ForwardCheck for CachedStore<S> {}

macro_rules! forward_store {
    ($ptr:ident) => {
        impl<T: Store + ?Sized> Forward for $ptr<T> {
            type Inner = T;
            fn inner(&self) -> &T {
                self
            }
        }
        impl<T: Store + ?Sized> ForwardPlayers for $ptr<T> {}
        impl<T: Store + ?Sized> ForwardItems for $ptr<T> {}
        impl<T: Store + ?Sized> ForwardTrades for $ptr<T> {}
        impl<T: Store + ?Sized> ForwardLeases for $ptr<T> {}
        impl<T: Store + ?Sized> ForwardParties for $ptr<T> {}
        impl<T: Store + ?Sized> ForwardMail for $ptr<T> {}
        impl<T: Store + ?Sized> ForwardCheck for $ptr<T> {}
    };
}

forward_store!(Box);
forward_store!(Arc);

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::{CheckStore, ItemStore, LeaseStore, MailStore, PartyStore, TradeStore};
    use crate::store::{
        Fence, IntegrityReport, Invitation, ItemOp, ItemOutcome, ItemRecord, Lease, LeaseError,
        Mail, Owner, PartyRecord, ServerLoad, TradeOutcome, TradeRecord, TradeState,
    };

    /// A store that counts loads and answers from a map, to observe the cache.
    #[derive(Debug, Default)]
    struct Counting {
        loads: AtomicU64,
        saved: Mutex<std::collections::HashMap<u64, PlayerRecord>>,
    }

    impl PlayerStore for Counting {
        fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
            self.loads.fetch_add(1, Ordering::Relaxed);
            Ok(self
                .saved
                .lock()
                .map_err(|_| StoreError::Closed)?
                .get(&player_id)
                .cloned())
        }
        fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
            let mut saved = self.saved.lock().map_err(|_| StoreError::Closed)?;
            Ok(records
                .iter()
                .map(|r| match saved.get(&r.player_id) {
                    Some(s) if s.fence() >= r.fence() => SaveOutcome::Stale {
                        player_id: r.player_id,
                        stored: s.fence(),
                    },
                    _ => {
                        saved.insert(r.player_id, r.clone());
                        SaveOutcome::Saved {
                            player_id: r.player_id,
                        }
                    }
                })
                .collect())
        }
    }
    impl ItemStore for Counting {
        fn apply_item_op(&self, _: &ItemOp) -> Result<ItemOutcome, StoreError> {
            Err(StoreError::Closed)
        }
        fn item(&self, _: u128) -> Result<Option<ItemRecord>, StoreError> {
            Ok(None)
        }
        fn items_of(&self, _: Owner) -> Result<Vec<ItemRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn dead_ground_items(&self, _epoch: u64) -> Result<Vec<ItemRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError> {
            Ok(Vec::new())
        }
    }
    impl TradeStore for Counting {
        fn put_trade(&self, _: &TradeRecord) -> Result<TradeRecord, StoreError> {
            Err(StoreError::Closed)
        }
        fn decide_trade(&self, _: u64, _: TradeState) -> Result<Option<TradeState>, StoreError> {
            Err(StoreError::Closed)
        }
        fn settle_trade(&self, _: u64) -> Result<(), StoreError> {
            Err(StoreError::Closed)
        }
        fn trade(&self, _: u64) -> Result<Option<TradeRecord>, StoreError> {
            Ok(None)
        }
        fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn run_trade(&self, manifest: &TradeRecord) -> Result<TradeOutcome, StoreError> {
            crate::store::trade::run(self, manifest)
        }
    }
    impl LeaseStore for Counting {
        fn acquire_lease(
            &self,
            _: &str,
            _: &str,
            _: Duration,
            _: u64,
        ) -> Result<Lease, LeaseError> {
            Err(StoreError::Closed.into())
        }
        fn renew_lease(&self, _: &Lease, _: Duration, _: u64) -> Result<Lease, LeaseError> {
            Err(StoreError::Closed.into())
        }
        fn release_lease(&self, _: &Lease) -> Result<(), LeaseError> {
            Err(StoreError::Closed.into())
        }
        fn lease_of(&self, _: &str, _: u64) -> Result<Option<Lease>, StoreError> {
            Err(StoreError::Closed)
        }
        fn publish_load(&self, _: &ServerLoad, _: Duration, _: u64) -> Result<(), StoreError> {
            Err(StoreError::Closed)
        }
        fn server_loads(&self, _: u64) -> Result<Vec<ServerLoad>, StoreError> {
            Err(StoreError::Closed)
        }
    }
    impl PartyStore for Counting {
        fn load_party(&self, _: u64) -> Result<Option<PartyRecord>, StoreError> {
            Err(StoreError::Closed)
        }
        fn party_of(&self, _: u64) -> Result<Option<u64>, StoreError> {
            Err(StoreError::Closed)
        }
        fn write_party(&self, _: &PartyRecord, _: Option<u64>) -> Result<bool, StoreError> {
            Err(StoreError::Closed)
        }
        fn write_party_invite(
            &self,
            _: &PartyRecord,
            _: Option<u64>,
            _: &Invitation,
            _: u64,
        ) -> Result<bool, StoreError> {
            Err(StoreError::Closed)
        }
        fn invitation_of(&self, _: u64, _: u64) -> Result<Option<Invitation>, StoreError> {
            Err(StoreError::Closed)
        }
    }
    impl MailStore for Counting {
        fn post_mail(&self, _: &str, _: &[u8], _: u64) -> Result<u128, StoreError> {
            Err(StoreError::Closed)
        }
        fn read_mail(&self, _: &str, _: usize) -> Result<Vec<Mail>, StoreError> {
            Err(StoreError::Closed)
        }
        fn delete_mail(&self, _: &str, _: &[u128]) -> Result<(), StoreError> {
            Err(StoreError::Closed)
        }
    }
    impl CheckStore for Counting {
        fn backend(&self) -> &'static str {
            "counting"
        }
        fn check(&self) -> Result<IntegrityReport, StoreError> {
            Ok(IntegrityReport::default())
        }
    }

    fn rec(id: u64, epoch: u64, seq: u64) -> PlayerRecord {
        PlayerRecord {
            player_id: id,
            epoch,
            seq,
            ..PlayerRecord::new("cached")
        }
    }

    #[test]
    fn hits_and_misses_are_counted_and_saves_fill_the_cache() {
        let store = CachedStore::new(Counting::default(), 100, Duration::from_secs(60));
        assert_eq!(store.load_player(1).expect("load"), None);
        assert_eq!(store.cache().stats().misses(), 1);
        store.save_players(&[rec(1, 1, 1)]).expect("save");
        let got = store.load_player(1).expect("load").expect("some");
        assert_eq!(got.fence(), Fence { epoch: 1, seq: 1 });
        assert_eq!(store.cache().stats().hits(), 1);
        assert_eq!(store.inner().loads.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_stale_save_evicts_and_the_next_load_reads_the_store() {
        let store = CachedStore::new(Counting::default(), 100, Duration::from_secs(60));
        store.save_players(&[rec(1, 1, 5)]).expect("save");
        // Another writer got further behind our back.
        store
            .inner()
            .save_players(&[rec(1, 2, 0)])
            .expect("inner save");
        let outcomes = store.save_players(&[rec(1, 1, 6)]).expect("save");
        assert!(matches!(outcomes[0], SaveOutcome::Stale { .. }));
        let got = store.load_player(1).expect("load").expect("some");
        assert_eq!(got.fence(), Fence { epoch: 2, seq: 0 });
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let store = CachedStore::new(Counting::default(), 0, Duration::from_secs(60));
        store.save_players(&[rec(1, 1, 1)]).expect("save");
        store.load_player(1).expect("load");
        store.load_player(1).expect("load");
        assert_eq!(store.inner().loads.load(Ordering::Relaxed), 2);
        assert_eq!(store.cache().stats().hits(), 0);
    }
}
