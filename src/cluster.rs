//! Several servers on one shared store: player ownership leases.
//!
//! # Ownership
//! With `[cluster] enabled = true`, a server takes the store lease `player:<id>` (holder:
//! its `[store] server_id`, lifetime `[cluster] player_lease_ttl_secs`) before it admits a
//! player, renews it while the session lives (attached or detached, every third of the
//! TTL) and releases it once the session's final checkpoint has been answered by the
//! store. A player is therefore live on at most one server at a time.
//!
//! # Fencing
//! Checkpoints are already fenced by `(epoch, seq)` (see [`crate::store`]). In cluster
//! mode a player's checkpoints carry the fence epoch [`player_fence_epoch`]: the lease
//! epoch in the high 32 bits and the server run's epoch in the low 32 bits. A new holder of
//! the lease has a greater lease epoch, so whatever a server that lost the lease still
//! tries to write is refused as stale; a restarted server that re-takes its own lease
//! (same lease epoch) has a greater run epoch. Records written before cluster mode carry a
//! bare run epoch (below 2^32) and are older than any leased fence.
//!
//! # Losing a lease
//! A renewal that fails with [`LeaseError::Lost`] (the lease expired, for example after a
//! long stall, and another server took the player) marks the lease lost at once: the
//! worker builds no further checkpoint for the player, and the session is closed with
//! `close_code::TAKEN_OVER` and the disconnect cause `lease_lost`.
//!
//! # The record cache
//! The per-server record cache would serve a record another server has overwritten since,
//! so cluster mode opens the configured store without it (see [`crate::start`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use zonehost_protocol::frame::encode_frame;
use zonehost_protocol::message::{close_code, Goaway, Redirect, ServerMsg};
use zonehost_protocol::token::{sign, Claims, KeySet, CLAIMS_VERSION};

pub use crate::config::ClusterConfig;
use crate::link::{ConnShared, Link, Outbox, Outgoing, SessionId};
use crate::session::Registry;
pub use crate::session::{ticket_audience, TICKET_AUDIENCE_PREFIX, TICKET_KEY_ID, TICKET_TTL_SECS};
pub use crate::sim::ports::Handoff;
use crate::sim::ports::{HandoffSink, LeaseFence};
use crate::store::{Lease, LeaseError, Store};
use crate::telemetry::DisconnectCause;

/// Loads the ticket key of `config` (creating `data_dir/cluster-ticket.key` when no file is
/// configured and it does not exist yet).
pub fn load_ticket_key(
    config: &ClusterConfig,
    data_dir: &Path,
) -> Result<SigningKey, crate::keys::KeyError> {
    match &config.ticket_key_file {
        Some(path) => crate::keys::read_signing_key(path),
        None => crate::keys::load_or_create_key_file(&data_dir.join("cluster-ticket.key")),
    }
}

/// Mints redirect tickets for the servers of the cluster (SPEC.md §3.7).
#[derive(Debug)]
pub struct Tickets {
    key: SigningKey,
}

impl Tickets {
    /// Tickets signed with the cluster's ticket key.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// The key set that verifies tickets.
    pub fn keys(&self) -> KeySet {
        let mut keys = KeySet::new();
        keys.insert(TICKET_KEY_ID, self.key.verifying_key());
        keys
    }

    /// A ticket for `player` to log in on server `target` (its `server_id`), issued at
    /// `now` (Unix seconds).
    pub fn mint(&self, player: &str, target: &str, now: u64) -> String {
        let mut nonce = [0u8; 16];
        if getrandom::fill(&mut nonce).is_err() {
            // Still single-use through the replay guard; only guessability suffers.
            nonce[..8].copy_from_slice(&now.to_le_bytes());
        }
        let claims = Claims {
            version: CLAIMS_VERSION,
            player: player.into(),
            audience: ticket_audience(target),
            issued_at: now,
            expires_at: now + TICKET_TTL_SECS,
            nonce,
            key_id: TICKET_KEY_ID,
        };
        sign(&claims, &self.key)
    }
}

/// The store resource of a player's ownership lease.
pub fn player_resource(player_id: u64) -> String {
    format!("player:{player_id}")
}

/// The store resource of a server run's lease: held while the run's zone instances may
/// have items on their ground (see [`sweep_dead_runs`]).
pub fn run_resource(run_epoch: u64) -> String {
    format!("run:{run_epoch}")
}

/// Destroys the items left on the grounds of dead runs' instances, as the end of those
/// instances would have (the cluster form of [`crate::sweep_dead_grounds`], which only a
/// server alone on its store may use).
///
/// An instance's store id is `run epoch << 32 | n`, and its run holds the lease
/// `run:<epoch>` while it lives ([`PlayerLeases::take_run_lease`]): a crashed server's
/// lease expires after the player lease TTL, a drained one's is released. For each run
/// other than `own_epoch` with items on the ground, this server (`holder`) tries to take
/// that lease at `now_ms`: held by someone means alive (or being swept by another
/// server): skipped; taken means dead: its ground items are destroyed (exactly-once item
/// operations, so a concurrent sweep cannot double anything) and the lease released.
/// Returns how many items were destroyed; failures are logged and retried next time.
/// Blocking (a full ground scan and store writes): call it every few lease TTLs.
pub fn sweep_dead_runs(
    store: &dyn Store,
    holder: &str,
    own_epoch: u64,
    ttl: Duration,
    now_ms: u64,
) -> usize {
    let items = match store.ground_items() {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(error = %e, "listing ground items failed");
            return 0;
        }
    };
    let mut by_run: BTreeMap<u64, Vec<crate::store::ItemRecord>> = BTreeMap::new();
    for item in items {
        if let Some(crate::store::Owner::Ground { instance }) = item.owner {
            let run = instance >> 32;
            if run != own_epoch {
                by_run.entry(run).or_default().push(item);
            }
        }
    }
    let mut swept = 0;
    for (run, items) in by_run {
        let lease = match store.acquire_lease(&run_resource(run), holder, ttl, now_ms) {
            Ok(l) => l,
            Err(LeaseError::Held { .. }) => continue,
            Err(e) => {
                tracing::warn!(run, error = %e, "taking a dead run's lease failed");
                continue;
            }
        };
        let ops: Vec<crate::store::ItemOp> = items
            .iter()
            .filter_map(|r| {
                let mut b = [0u8; 16];
                getrandom::fill(&mut b).ok()?;
                r.owner.map(|from| crate::store::ItemOp {
                    op_id: u128::from_le_bytes(b),
                    item_id: r.item_id,
                    kind: crate::store::ItemOpKind::Destroy { from },
                })
            })
            .collect();
        match store.apply_item_ops(&ops) {
            Ok(results) => {
                let n = results
                    .iter()
                    .filter(|r| matches!(r, Ok(o) if o.applied()))
                    .count();
                swept += n;
                tracing::info!(
                    run,
                    swept = n,
                    found = items.len(),
                    "destroyed items left on the ground of a dead run's instances"
                );
            }
            Err(e) => tracing::warn!(run, error = %e, "sweeping a dead run's grounds failed"),
        }
        if let Err(e) = store.release_lease(&lease) {
            tracing::warn!(run, error = %e, "releasing a dead run's lease failed");
        }
    }
    swept
}

/// Lease epochs at or above this cannot be packed into a fence epoch (which must stay
/// below 2^63 for ScyllaDB's `bigint`).
pub const MAX_LEASE_EPOCH: u64 = 1 << 31;

/// Most player-lease renewals of one round in flight at once (blocking store calls, one
/// scoped thread each).
const RENEW_PARALLELISM: usize = 16;

/// The checkpoint fence epoch of a player leased at `lease_epoch` by a server run with
/// run epoch `run_epoch`: `lease_epoch << 32 | (run_epoch mod 2^32)`. `None` when the lease
/// epoch does not fit (see [`MAX_LEASE_EPOCH`]).
pub fn player_fence_epoch(lease_epoch: u64, run_epoch: u64) -> Option<u64> {
    (lease_epoch < MAX_LEASE_EPOCH).then_some((lease_epoch << 32) | (run_epoch & 0xFFFF_FFFF))
}

/// Why a player could not be leased at login.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Another server owns the player now.
    #[error("player is owned by server {holder} until {expires_at_ms} ms")]
    HeldElsewhere {
        /// The owner's `server_id`.
        holder: String,
        /// When its lease expires unless renewed, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// The lease epoch is too large to fence with (see [`MAX_LEASE_EPOCH`]).
    #[error("lease epoch {0} is too large for a fence")]
    EpochOverflow(u64),
    /// The store failed.
    #[error("player lease: {0}")]
    Store(#[source] LeaseError),
}

/// A player lease this server holds, and the sessions using it.
#[derive(Debug)]
struct HeldLease {
    lease: Lease,
    fence_epoch: u64,
    /// Sessions of this server using the lease (a second login of a player on the same
    /// server shares it until the first session has ended).
    sessions: Vec<SessionId>,
    lost: bool,
}

/// Counters of the lease keeper.
#[derive(Debug, Default)]
pub struct LeaseCounters {
    /// Leases taken (or joined) at login.
    pub acquired: AtomicU64,
    /// Renewals that succeeded.
    pub renewed: AtomicU64,
    /// Leases released after their last session ended.
    pub released: AtomicU64,
    /// Leases found lost (their sessions were closed).
    pub lost: AtomicU64,
}

/// The player leases this server holds: acquired by connection tasks, renewed and
/// released by [`PlayerLeases::run`], consulted by sim workers when they checkpoint.
#[derive(Debug)]
pub struct PlayerLeases {
    store: Arc<dyn Store>,
    holder: String,
    ttl: Duration,
    run_epoch: u64,
    held: Mutex<HashMap<u64, HeldLease>>,
    /// Serializes [`PlayerLeases::release_ended`] (the keeper and a drain both call it).
    releasing: Mutex<()>,
    /// This run's lease `run:<epoch>` (see [`sweep_dead_runs`]), once taken.
    run_lease: Mutex<Option<Lease>>,
    /// Counters.
    pub counters: LeaseCounters,
}

impl LeaseFence for PlayerLeases {
    fn fence_epoch(&self, player_id: u64, session: SessionId) -> Option<u64> {
        PlayerLeases::fence_epoch(self, player_id, session)
    }

    fn session_ended(&self, player_id: u64, session: SessionId) {
        PlayerLeases::session_ended(self, player_id, session);
    }
}

impl PlayerLeases {
    /// Leases for server `holder` (its `server_id`) of run epoch `run_epoch`.
    pub fn new(store: Arc<dyn Store>, holder: String, ttl: Duration, run_epoch: u64) -> Self {
        Self {
            store,
            holder,
            ttl,
            run_epoch,
            held: Mutex::new(HashMap::new()),
            releasing: Mutex::new(()),
            run_lease: Mutex::new(None),
            counters: LeaseCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, HeldLease>> {
        // Single inserts and field updates cannot leave the map inconsistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This server's holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes (or extends, if this server holds it already) the lease of `player_id` for
    /// `session`, at `now_ms`; returns the fence epoch. Blocking: call it off the async
    /// threads.
    pub fn acquire(
        &self,
        player_id: u64,
        session: SessionId,
        now_ms: u64,
    ) -> Result<u64, AcquireError> {
        let resource = player_resource(player_id);
        let lease = match self
            .store
            .acquire_lease(&resource, &self.holder, self.ttl, now_ms)
        {
            Ok(l) => l,
            Err(LeaseError::Held {
                holder,
                expires_at_ms,
                ..
            }) => {
                return Err(AcquireError::HeldElsewhere {
                    holder,
                    expires_at_ms,
                })
            }
            Err(e) => return Err(AcquireError::Store(e)),
        };
        let fence_epoch = player_fence_epoch(lease.epoch, self.run_epoch)
            .ok_or(AcquireError::EpochOverflow(lease.epoch))?;
        self.counters.acquired.fetch_add(1, Ordering::Relaxed);
        let mut held = self.lock();
        match held.get_mut(&player_id) {
            Some(h) if !h.lost && h.lease.epoch == lease.epoch => {
                h.lease = lease;
                h.sessions.push(session);
            }
            _ => {
                held.insert(
                    player_id,
                    HeldLease {
                        lease,
                        fence_epoch,
                        sessions: vec![session],
                        lost: false,
                    },
                );
            }
        }
        Ok(fence_epoch)
    }

    /// The fence epoch for a checkpoint of `player_id`'s `session`; `None` when the lease
    /// was lost or is not held for that session (then nothing may be written).
    pub fn fence_epoch(&self, player_id: u64, session: SessionId) -> Option<u64> {
        self.lock()
            .get(&player_id)
            .filter(|h| !h.lost && h.sessions.contains(&session))
            .map(|h| h.fence_epoch)
    }

    /// Whether the lease of `player_id` is held (not lost) for `session`.
    pub fn holds(&self, player_id: u64, session: SessionId) -> bool {
        self.fence_epoch(player_id, session).is_some()
    }

    /// `session` of `player_id` ended (its final checkpoint answered, or lost): once no
    /// session uses the lease any more it is released at the next round (a lost one is
    /// just forgotten). Never blocks on the store.
    pub fn session_ended(&self, player_id: u64, session: SessionId) {
        let mut held = self.lock();
        if let Some(h) = held.get_mut(&player_id) {
            h.sessions.retain(|&s| s != session);
            if h.sessions.is_empty() && h.lost {
                held.remove(&player_id);
            }
        }
    }

    /// Takes this run's lease `run:<run epoch>` at `now_ms` (at start-up, before any
    /// instance exists): while it is held no other server sweeps this run's grounds.
    /// Renewed by [`PlayerLeases::round`], released by [`PlayerLeases::release_run`].
    /// Blocking.
    pub fn take_run_lease(&self, now_ms: u64) -> Result<(), LeaseError> {
        let lease = self.store.acquire_lease(
            &run_resource(self.run_epoch),
            &self.holder,
            self.ttl,
            now_ms,
        )?;
        *self.run_lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
        Ok(())
    }

    /// Releases this run's lease (the end of a drain: its instances, and their grounds,
    /// are gone). Blocking.
    pub fn release_run(&self) {
        let lease = self
            .run_lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(l) = lease {
            if let Err(e) = self.store.release_lease(&l) {
                tracing::warn!(error = %e, "releasing the run lease failed; it expires by itself");
            }
        }
    }

    fn renew_run(&self, now_ms: u64) {
        let held = self
            .run_lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(lease) = held else { return };
        match self.store.renew_lease(&lease, self.ttl, now_ms) {
            Ok(renewed) => {
                *self.run_lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(renewed);
            }
            Err(LeaseError::Lost { .. }) => {
                // Stalled past the TTL: another server may have swept this run's grounds
                // (a pick-up of such an item is then refused by the store: nothing is
                // duplicated). Take it again so that no further sweep happens.
                tracing::error!("run lease lost: this run's ground items may have been swept");
                *self.run_lease.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if let Err(e) = self.take_run_lease(now_ms) {
                    tracing::error!(error = %e, "re-taking the run lease failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing the run lease failed"),
        }
    }

    /// One round at `now_ms`: releases the leases no session uses any more and renews the
    /// others (and the run lease); a lost lease closes its sessions through `registry`.
    /// Blocking (store calls).
    pub fn round(&self, registry: &Registry, now_ms: u64) {
        self.release_ended();
        self.renew_run(now_ms);
        let work: Vec<(u64, Lease)> = self
            .lock()
            .iter()
            .filter(|(_, h)| !h.lost && !h.sessions.is_empty())
            .map(|(&id, h)| (id, h.lease.clone()))
            .collect();
        for (player_id, lease, renewal) in self.renew_all(work, now_ms) {
            match renewal {
                Ok(renewed) => {
                    self.counters.renewed.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = self.lock().get_mut(&player_id) {
                        if h.lease.epoch == renewed.epoch {
                            h.lease = renewed;
                        }
                    }
                }
                Err(LeaseError::Lost { .. }) => self.lose(registry, player_id, lease.epoch),
                Err(e) => {
                    // Retried at the next round; if it never succeeds the lease expires
                    // and the next renewal reports it lost.
                    tracing::warn!(player_id, error = %e, "renewing a player lease failed");
                }
            }
        }
    }

    /// Renews `work`, up to [`RENEW_PARALLELISM`] at once: one after another, a few hundred
    /// renewals (a conditional write each, a Paxos round on a CQL store) outlasted the
    /// renewal interval on a busy database, and leases expired under their players.
    fn renew_all(
        &self,
        work: Vec<(u64, Lease)>,
        now_ms: u64,
    ) -> Vec<(u64, Lease, Result<Lease, LeaseError>)> {
        type Renewal = (u64, Lease, Option<Result<Lease, LeaseError>>);
        let mut renewals: Vec<Renewal> = work
            .into_iter()
            .map(|(id, lease)| (id, lease, None))
            .collect();
        crate::par::for_each_chunked(&mut renewals, RENEW_PARALLELISM, |(_, lease, out)| {
            *out = Some(self.store.renew_lease(lease, self.ttl, now_ms));
        });
        renewals
            .into_iter()
            .filter_map(|(id, lease, r)| Some((id, lease, r?)))
            .collect()
    }

    /// Marks the lease of `player_id` (at `epoch`) lost and closes its sessions.
    pub fn lose(&self, registry: &Registry, player_id: u64, epoch: u64) {
        let sessions = {
            let mut held = self.lock();
            match held.get_mut(&player_id) {
                Some(h) if h.lease.epoch == epoch && !h.lost => {
                    h.lost = true;
                    h.sessions.clone()
                }
                _ => return,
            }
        };
        self.counters.lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            player_id,
            ?sessions,
            "player lease lost: another server owns the player; sessions closed, no more checkpoints"
        );
        for session in sessions {
            registry.evict(
                player_id,
                session,
                DisconnectCause::LeaseLost,
                close_code::TAKEN_OVER,
            );
        }
    }

    /// Exports the counters and the number held (`zonehost_player_leases_total{event}`,
    /// `zonehost_player_leases_held`); run at every scrape.
    pub fn publish(&self) {
        for (event, v) in [
            ("acquired", &self.counters.acquired),
            ("renewed", &self.counters.renewed),
            ("released", &self.counters.released),
            ("lost", &self.counters.lost),
        ] {
            metrics::counter!("zonehost_player_leases_total", "event" => event)
                .absolute(v.load(Ordering::Relaxed));
        }
        metrics::gauge!("zonehost_player_leases_held").set(self.len() as f64);
    }

    /// Number of leases held (lost ones included until their sessions end).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renews every third of the TTL and releases unused leases every 250 ms at most,
    /// until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        registry: Arc<Registry>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let renew_every = self.ttl / 3;
        let tick = renew_every.min(Duration::from_millis(250));
        let mut since_renew = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
            since_renew += tick;
            let renew = since_renew >= renew_every;
            if renew {
                since_renew = Duration::ZERO;
            }
            let this = self.clone();
            let registry = registry.clone();
            let result = tokio::task::spawn_blocking(move || {
                if renew {
                    this.round(&registry, crate::clock::unix_millis());
                } else {
                    this.release_ended();
                }
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "player lease round failed");
            }
        }
    }

    /// Releases the leases no session uses any more (between renewal rounds, and at the
    /// end of a drain). Blocking (store calls).
    pub fn release_ended(&self) {
        let _one_at_a_time = self.releasing.lock().unwrap_or_else(|p| p.into_inner());
        let work: Vec<(u64, Lease)> = self
            .lock()
            .iter()
            .filter(|(_, h)| h.sessions.is_empty() && !h.lost)
            .map(|(&id, h)| (id, h.lease.clone()))
            .collect();
        for (player_id, lease) in work {
            if let Err(e) = self.store.release_lease(&lease) {
                tracing::warn!(player_id, error = %e, "releasing a player lease failed; it expires by itself");
            }
            let mut held = self.lock();
            // A login that joined the lease meanwhile keeps the entry; its next renewal
            // finds the lease released (lost) and closes it.
            if held
                .get(&player_id)
                .is_some_and(|h| h.sessions.is_empty() && h.lease.epoch == lease.epoch)
            {
                held.remove(&player_id);
            }
            self.counters.released.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters of drain by migration (and of instance placements' redirects).
#[derive(Debug, Default)]
pub struct HandoffCounters {
    /// Players sent a `Redirect` to a peer.
    pub redirected: AtomicU64,
    /// Players closed without one (no live peer, or their connection was gone).
    pub closed: AtomicU64,
}

/// Players handed off by the sim workers, waiting for their `Redirect`: those of a
/// draining server (drain by migration, see [`crate::start`]) or, in a second queue,
/// those whose new instance was placed on a peer ([`crate::placement::InstancePlacer`]).
/// Workers push without blocking; a task takes them after releasing their leases.
#[derive(Debug, Default)]
pub struct Handoffs {
    queue: Mutex<Vec<Handoff>>,
    /// Wakes the task that waits for pushes ([`Handoffs::pushed`]).
    ready: tokio::sync::Notify,
    /// Counters.
    pub counters: HandoffCounters,
}

/// A signed `Redirect` to server `to` (`server_id`) at `address` for `player_name`, with a
/// ticket minted at `now` (Unix seconds).
pub fn redirect_to(
    tickets: &Tickets,
    player_name: &str,
    to: &str,
    address: SocketAddr,
    now: u64,
) -> ServerMsg {
    ServerMsg::Redirect(Redirect {
        address: address.to_string(),
        ticket: tickets.mint(player_name, to, now),
    })
}

/// Sends a session its last frame `msg`; its connection closes after it with `code`
/// (disconnect cause `cause`), or at once when the frame cannot be queued (outbox full or
/// gone). Returns whether the frame was queued.
pub fn send_last_frame(
    outbox: &Outbox,
    shared: &ConnShared,
    conn: &dyn Link,
    msg: &ServerMsg,
    code: u32,
    cause: DisconnectCause,
) -> bool {
    let queued = encode_frame(msg).ok().is_some_and(|frame| {
        outbox
            .try_send(Outgoing::CloseAfter { frame, code, cause })
            .is_ok()
    });
    if !queued {
        shared.set_cause(cause);
        conn.close(code, cause.as_str().as_bytes());
    }
    queued
}

impl HandoffSink for Handoffs {
    fn push(&self, handoff: Handoff) {
        Handoffs::push(self, handoff);
    }
}

impl Handoffs {
    /// Queues a handed-off player (never blocks; wakes [`Handoffs::pushed`]).
    pub fn push(&self, handoff: Handoff) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handoff);
        self.ready.notify_one();
    }

    /// Completes after a push (at once if one happened since the last wait).
    pub async fn pushed(&self) {
        self.ready.notified().await;
    }

    /// Sends a player whose new instance was placed on a peer its last frame: a
    /// `Redirect` to `handoff.to` with a ticket minted at `now` (Unix seconds), as for a
    /// party member moving to its leader's server (close code `REJECTED`, reason
    /// `redirect`, SPEC §2.4); the connection closes after it. Without a target (never
    /// pushed so) the connection is closed. Returns whether the `Redirect` was queued.
    pub fn redirect(&self, handoff: &Handoff, tickets: &Tickets, now: u64) -> bool {
        let queued = match &handoff.to {
            Some((id, address)) => send_last_frame(
                &handoff.outbox,
                &handoff.shared,
                handoff.conn.as_ref(),
                &redirect_to(tickets, &handoff.player_name, id, *address, now),
                close_code::REJECTED,
                DisconnectCause::Redirected,
            ),
            None => {
                handoff.shared.set_cause(DisconnectCause::Redirected);
                handoff.conn.close(
                    close_code::REJECTED,
                    DisconnectCause::Redirected.as_str().as_bytes(),
                );
                false
            }
        };
        let counter = if queued {
            &self.counters.redirected
        } else {
            &self.counters.closed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            player = %handoff.player_name,
            session = handoff.session,
            to = ?handoff.to.as_ref().map(|t| &t.0),
            queued,
            "new instance placed on a peer: player redirected"
        );
        queued
    }

    /// Takes every queued player.
    pub fn take(&self) -> Vec<Handoff> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends `handoff` its last frame: a `Redirect` to `target` (`server_id`, address)
    /// with a ticket minted at `now` (Unix seconds), or a `Goaway` when there is no
    /// target; the connection closes after it with `SHUTDOWN`.
    pub fn send(
        &self,
        handoff: &Handoff,
        target: Option<(&str, SocketAddr)>,
        tickets: &Tickets,
        goaway: &Goaway,
        now: u64,
    ) {
        let (msg, cause) = match target {
            Some((id, address)) => (
                redirect_to(tickets, &handoff.player_name, id, address, now),
                DisconnectCause::Migrated,
            ),
            None => (ServerMsg::Goaway(goaway.clone()), DisconnectCause::Shutdown),
        };
        let queued = send_last_frame(
            &handoff.outbox,
            &handoff.shared,
            handoff.conn.as_ref(),
            &msg,
            close_code::SHUTDOWN,
            cause,
        );
        let (counter, outcome) = match (queued, target) {
            (true, Some(_)) => (&self.counters.redirected, "redirected"),
            _ => (&self.counters.closed, "closed"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("zonehost_cluster_handoffs_total", "outcome" => outcome).increment(1);
        tracing::info!(
            player = %handoff.player_name,
            session = handoff.session,
            to = ?target.map(|t| t.0),
            queued,
            "drain: player handed off"
        );
    }
}

/// Sweeps dead runs' grounds ([`sweep_dead_runs`]) every lease TTL (at least
/// every second), until `stop` turns true.
pub async fn sweep_dead_runs_every(
    store: Arc<dyn Store>,
    holder: String,
    own_epoch: u64,
    ttl: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = ttl.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        let (store, holder) = (store.clone(), holder.clone());
        let swept = tokio::task::spawn_blocking(move || {
            sweep_dead_runs(
                store.as_ref(),
                &holder,
                own_epoch,
                ttl,
                crate::clock::unix_millis(),
            )
        })
        .await;
        if let Err(e) = swept {
            tracing::error!(error = %e, "sweeping dead runs' grounds failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecondLogin;
    use crate::store::redb::RedbStore;

    fn store() -> (Arc<dyn Store>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "zonehost-cluster-unit-{}-{}",
            std::process::id(),
            crate::clock::unix_millis()
        ));
        let s = RedbStore::open(&dir.join("s.redb")).expect("open");
        (Arc::new(s), dir)
    }

    #[test]
    fn config_defaults_are_off_and_the_section_parses() {
        let d = ClusterConfig::default();
        assert!(!d.enabled);
        assert!(d.peers.is_empty());
        d.validate().expect("valid");
        let c: crate::config::Config = toml::from_str(
            "[cluster]\nenabled = true\nplayer_lease_ttl_secs = 5\n[cluster.peers]\na = \"127.0.0.1:4433\"\n",
        )
        .expect("parse");
        assert!(c.cluster.enabled);
        assert_eq!(c.cluster.player_lease_ttl(), Duration::from_secs(5));
        assert_eq!(
            c.cluster.peers.get("a"),
            Some(&SocketAddr::from(([127, 0, 0, 1], 4433)))
        );
        let zero = ClusterConfig {
            player_lease_ttl_secs: 0,
            ..ClusterConfig::default()
        };
        assert!(zero.validate().is_err());
        assert_eq!(d.party_invite_ttl(), Duration::from_secs(120));
        let c: crate::config::Config =
            toml::from_str("[cluster]\nparty_invite_ttl_secs = 7\n").expect("parse");
        assert_eq!(c.cluster.party_invite_ttl(), Duration::from_secs(7));
        for bad in [0, 3601] {
            let c = ClusterConfig {
                party_invite_ttl_secs: bad,
                ..ClusterConfig::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_advertised_address_is_the_configured_one_or_a_specific_listen_address() {
        let specific = SocketAddr::from(([127, 0, 0, 1], 4433));
        let any = SocketAddr::from(([0, 0, 0, 0], 4433));
        let mut c = ClusterConfig::default();
        assert_eq!(c.advertised(specific), Some(specific));
        assert_eq!(c.advertised(any), None, "0.0.0.0 reaches nobody");
        assert_eq!(
            c.advertised(SocketAddr::from(([127, 0, 0, 1], 0))),
            None,
            "no port yet"
        );
        let public = SocketAddr::from(([127, 0, 0, 2], 5000));
        c.advertise = Some(public);
        assert_eq!(c.advertised(any), Some(public));
        assert!(c.validate().is_ok());
        c.advertise = Some(any);
        assert!(c.validate().is_err(), "an unspecified advertise is refused");
    }

    #[test]
    fn the_deploy_cluster_configs_parse_and_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (file, peers) in [
            ("deploy/cluster/zonehost-cluster.toml", ["a", "b", "c"]),
            (
                "deploy/k8s/cluster/zonehost.toml",
                ["zonehost-0", "zonehost-1", "zonehost-2"],
            ),
        ] {
            let mut c = crate::config::Config::from_file(&root.join(file)).expect(file);
            if c.verifying_keys.is_empty() && !c.dev_signing_key {
                // The k8s template leaves the account service's key to the operator: the
                // server refuses to start without it, and starts with it.
                let e = c.validate().expect_err(file).to_string();
                assert!(e.contains("verifying_keys"), "{file}: {e}");
                c.verifying_keys.push(crate::config::VerifyingKeyConfig {
                    id: 1,
                    public_key_hex:
                        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".into(),
                });
            }
            c.validate().expect(file);
            assert!(c.cluster.enabled, "{file}");
            let ids: Vec<&str> = c.cluster.peers.keys().map(String::as_str).collect();
            assert_eq!(ids, peers, "{file}");
        }
    }

    #[test]
    fn tickets_verify_only_for_their_server() {
        let tickets = Tickets::new(SigningKey::from_bytes(&[9; 32]));
        let t = tickets.mint("p", "a", 1000);
        let keys = tickets.keys();
        let claims = keys
            .verify(&t, &ticket_audience("a"), 1001, 0)
            .expect("valid on a");
        assert_eq!(claims.player, "p");
        assert_eq!(claims.key_id, TICKET_KEY_ID);
        assert!(keys.verify(&t, &ticket_audience("b"), 1001, 0).is_err());
        assert!(keys
            .verify(&t, &ticket_audience("a"), 1000 + TICKET_TTL_SECS + 1, 0)
            .is_err());
    }

    #[test]
    fn fence_epochs_order_by_lease_then_run() {
        let f = |l, r| player_fence_epoch(l, r).expect("fits");
        assert!(f(2, 1) > f(1, 999), "a new holder wins over any run");
        assert!(f(1, 6) > f(1, 5), "a restart of the holder wins");
        assert!(
            f(1, 0) > 0xFFFF_FFFF,
            "older than any leased fence: bare run epochs"
        );
        assert_eq!(player_fence_epoch(MAX_LEASE_EPOCH, 1), None);
    }

    #[test]
    fn a_second_server_cannot_take_a_held_player_and_a_lost_lease_stops_writes() {
        let (s, dir) = store();
        let ttl = Duration::from_secs(3);
        let a = PlayerLeases::new(s.clone(), "a".into(), ttl, 7);
        let b = PlayerLeases::new(s.clone(), "b".into(), ttl, 9);
        let registry = Registry::new(SecondLogin::Refuse);
        let t0 = crate::clock::unix_millis();
        let ea = a.acquire(42, 1, t0).expect("a takes it");
        assert_eq!(a.fence_epoch(42, 1), Some(ea));
        assert_eq!(a.fence_epoch(42, 2), None, "another session of a");
        match b.acquire(42, 5, t0 + 1000) {
            Err(AcquireError::HeldElsewhere { holder, .. }) => assert_eq!(holder, "a"),
            other => panic!("expected HeldElsewhere, got {other:?}"),
        }
        // a stalls past the TTL; b takes the player with a greater fence epoch.
        let eb = b.acquire(42, 5, t0 + 4000).expect("expired: b takes it");
        assert!(eb > ea);
        // a's next renewal finds the lease lost: no fence any more.
        a.round(&registry, t0 + 4001);
        assert_eq!(a.fence_epoch(42, 1), None);
        assert_eq!(a.counters.lost.load(Ordering::Relaxed), 1);
        a.session_ended(42, 1);
        assert!(a.is_empty());
        // b releases after the session ended; a can take it again, with a greater epoch.
        b.session_ended(42, 5);
        b.round(&registry, t0 + 4002);
        assert!(b.is_empty());
        let ea2 = a.acquire(42, 3, t0 + 4003).expect("free again");
        assert!(ea2 > eb);
        let _ = std::fs::remove_dir_all(dir);
    }
}
