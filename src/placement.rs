//! Where players go in a cluster: placement by measured load.
//!
//! Every server of a cluster publishes its load to the store's `servers` table
//! ([`crate::store::ServerLoad`]: the sim's busy fraction, its player count, whether it
//! drains) every `[cluster] load_report_interval_ms`, with a lifetime of
//! [`LOAD_TTL_INTERVALS`] intervals, and reads the other servers' rows back. A row that was
//! not refreshed in time has expired: that server is taken for dead.
//!
//! # Choosing a peer
//! [`Placement::least_loaded_peer`] picks, among the configured `[cluster.peers]` with a
//! live row that are not draining, the one with the lowest *estimated* load: its published
//! busy fraction plus, for every player sent to it since its row was read, its measured
//! cost of one player (its busy fraction divided by its players; [`DEFAULT_PLAYER_COST`]
//! when it has none). Players sent within one interval therefore spread over the peers
//! instead of all going to the one that was idlest at the last read. Before the first read
//! of the table (or when it cannot be read) peers are taken in turn.
//!
//! # Redirecting new logins
//! A login (with an account token, not a ticket: a ticket-bearing login was placed
//! already and is always admitted, so a player is never bounced twice by load) is
//! redirected to the least-loaded peer while this server is *overloaded*:
//! it turns overloaded when its own busy fraction is at least `redirect_above_permille`
//! **and** at least `redirect_margin_permille` above the best peer's estimate; it stops
//! being overloaded (hysteresis) when its busy fraction falls below
//! `redirect_above_permille - redirect_margin_permille / 2` or the gap to the best peer
//! below `redirect_margin_permille / 2`. The state is re-evaluated at every read of the
//! table, so a burst of redirects within one interval raises the target's estimate and
//! can end the state early. Drain by migration uses the same choice.
//!
//! # Placing new instances
//! With `[cluster] place_instances = true` (the default) the same overloaded state also
//! places new *dungeon instances* ([`Placement::instance_target`]): when a solo player or a
//! party leader changes zone (portal, `EnterZone`) and its instance of the target zone does
//! not exist yet on this server, an overloaded server sends the player to the least-loaded
//! peer instead of opening the instance here. Its sim worker saves the player in the new
//! zone at the zone's spawn (the final checkpoint, queued after the player's item
//! operations), the lease is released once the store answered it, and the client gets a
//! `Redirect{address, ticket}` ([`InstancePlacer`], SPEC §2.4); the peer admits the ticket
//! and opens a fresh instance of that zone for it. The party's other members follow their
//! leader's server as always (the party directory sends them there). Not placed: towns
//! (no monsters, so nothing to balance; and where dead players respawn), a party
//! member's instance (it is its leader's), an instance that exists already (rejoining
//! it), a detached player. One set of thresholds for logins and instances: "clearly
//! busier" is one judgement of this server against its peers, and a second pair of
//! knobs could only make the two disagree; `place_instances` turns the instance part off
//! (clients built before SPEC §2.4 allowed a `Redirect` after `Welcome` cannot follow one).
//!
//! Counted in `zonehost_cluster_instance_placements_total{where="local|peer"}` (only the
//! zone changes the rule applies to).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cluster::Handoffs;
use crate::config::ClusterConfig;
use crate::sim::ports::{HandoffSink, InstancePlacement};
use crate::store::{ServerLoad, Store};
use crate::telemetry::Stats;

/// Rows live this many report intervals: a server missing two reports in a row is
/// still live, one missing five is taken for dead.
pub const LOAD_TTL_INTERVALS: u32 = 5;

/// Estimated cost of one player, per mille of busy time, on a server with no player to
/// measure it.
pub const DEFAULT_PLAYER_COST: u32 = 2;

/// Thresholds of [`Placement`] (from `[cluster]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Own busy fraction (per mille) from which new logins may be redirected.
    pub above_permille: u32,
    /// How much more loaded (per mille) than the best peer this server must be.
    pub margin_permille: u32,
}

impl Thresholds {
    /// The thresholds `[cluster]` sets (`redirect_above_permille`,
    /// `redirect_margin_permille`).
    pub fn of(config: &ClusterConfig) -> Self {
        Self {
            above_permille: config.redirect_above_permille,
            margin_permille: config.redirect_margin_permille,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Live peers' last rows, by `server_id` (configured peers and those that advertise an
    /// address; this server excluded).
    loads: HashMap<String, ServerLoad>,
    /// Whether the table was read at least once.
    read: bool,
    /// This server's last measured load.
    own: Option<ServerLoad>,
    /// Players sent to each peer since its row was read.
    sent: HashMap<String, u32>,
    /// Whether new logins are being redirected (see the module docs).
    overloaded: bool,
    /// Next peer in turn when the table was never read.
    turn: usize,
    /// A busy fraction to report instead of the measured one (see [`Placement::pin_busy`]).
    pinned: Option<u32>,
}

/// Counters of placement.
#[derive(Debug, Default)]
pub struct PlacementCounters {
    /// New logins redirected to a less loaded peer.
    pub login_redirects: AtomicU64,
    /// Load rows published.
    pub published: AtomicU64,
    /// Failures to publish or read the `servers` table.
    pub store_errors: AtomicU64,
    /// New instances opened here by a zone change the instance rule applies to.
    pub instances_local: AtomicU64,
    /// New instances placed on a peer (the player was redirected there).
    pub instances_peer: AtomicU64,
}

/// This server's view of the cluster's load (see the module docs).
#[derive(Debug)]
pub struct Placement {
    own_id: String,
    /// The configured `[cluster.peers]` (this server excluded).
    peers: BTreeMap<String, SocketAddr>,
    /// The address this server publishes with its load (see
    /// [`crate::cluster::ClusterConfig::advertise`]).
    advertise: Option<SocketAddr>,
    thresholds: Thresholds,
    state: Mutex<State>,
    /// Counters.
    pub counters: PlacementCounters,
}

impl Placement {
    /// Placement for server `own_id` among `peers` (the configured map; `own_id` itself
    /// is skipped).
    pub fn new(
        own_id: String,
        peers: &BTreeMap<String, SocketAddr>,
        thresholds: Thresholds,
    ) -> Self {
        let peers = peers
            .iter()
            .filter(|(id, _)| **id != own_id)
            .map(|(id, a)| (id.clone(), *a))
            .collect();
        Self {
            own_id,
            peers,
            advertise: None,
            thresholds,
            state: Mutex::new(State::default()),
            counters: PlacementCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Field updates only: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `address` with this server's load from the next report on, so that peers
    /// which do not list this server find it.
    pub fn with_advertise(mut self, address: Option<SocketAddr>) -> Self {
        self.advertise = address;
        self
    }

    /// The address this server publishes with its load.
    pub fn advertise(&self) -> Option<SocketAddr> {
        self.advertise
    }

    /// The address clients reach server `id` at: its `[cluster.peers]` entry, else the
    /// address its live load row advertised at the last reading. `None` for this server
    /// and for servers known neither way (or whose row expired).
    pub fn peer_address(&self, id: &str) -> Option<SocketAddr> {
        if id == self.own_id {
            return None;
        }
        self.address_in(&self.lock(), id)
    }

    fn address_in(&self, st: &State, id: &str) -> Option<SocketAddr> {
        self.peers
            .get(id)
            .copied()
            .or_else(|| st.loads.get(id).and_then(|l| l.address))
    }

    /// This server's `server_id`.
    pub fn own_id(&self) -> &str {
        &self.own_id
    }

    fn estimate(load: &ServerLoad, sent: u32) -> u64 {
        let cost = match load.players {
            0 => DEFAULT_PLAYER_COST,
            n => (load.busy_permille / n).max(1),
        };
        u64::from(load.busy_permille) + u64::from(sent) * u64::from(cost)
    }

    /// The best peer and its estimated load, without counting a player sent.
    fn best(&self, st: &State) -> Option<(String, u64)> {
        st.loads
            .values()
            .filter(|l| !l.draining && self.address_in(st, &l.server_id).is_some())
            .map(|l| {
                let sent = st.sent.get(&l.server_id).copied().unwrap_or(0);
                (
                    l.server_id.clone(),
                    Self::estimate(l, sent),
                    l.players + sent,
                )
            })
            .min_by(|a, b| (a.1, a.2, &a.0).cmp(&(b.1, b.2, &b.0)))
            .map(|(id, est, _)| (id, est))
    }

    /// The least-loaded live peer (see the module docs), counted as one more player sent
    /// there. `None` when no peer is live (or none is configured).
    pub fn least_loaded_peer(&self) -> Option<(String, SocketAddr)> {
        let mut st = self.lock();
        let id = if st.read {
            self.best(&st)?.0
        } else {
            let n = self.peers.len();
            if n == 0 {
                return None;
            }
            let i = st.turn % n;
            st.turn = st.turn.wrapping_add(1);
            self.peers.keys().nth(i)?.clone()
        };
        let address = self.address_in(&st, &id)?;
        *st.sent.entry(id.clone()).or_insert(0) += 1;
        Some((id, address))
    }

    /// Where a new login (account token) should go instead of here, if this server is
    /// overloaded (see the module docs); counted as a player sent there.
    pub fn login_target(&self) -> Option<(String, SocketAddr)> {
        if !self.lock().overloaded {
            return None;
        }
        let target = self.least_loaded_peer()?;
        self.counters
            .login_redirects
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("zonehost_cluster_login_redirects_total").increment(1);
        Some(target)
    }

    /// Where the new instance of a zone change should open (see "Placing new instances"
    /// in the module docs): `Some(peer)` (counted as a player sent there) while this server
    /// is overloaded and a live peer exists, else `None` (open it here). The outcome is
    /// counted by [`Placement::count_instance`] once it is known (a placement may still
    /// fall back to a local instance). Call it only for zone changes the rule applies to.
    pub fn instance_target(&self) -> Option<(String, SocketAddr)> {
        if self.lock().overloaded {
            self.least_loaded_peer()
        } else {
            None
        }
    }

    /// Counts where a new instance the rule applies to ended: on a peer (the player was
    /// saved in the new zone and queued for its `Redirect`) or here (not placed, or a
    /// placement that fell back). `zonehost_cluster_instance_placements_total{where}`.
    pub fn count_instance(&self, on_peer: bool) {
        let (counter, place) = if on_peer {
            (&self.counters.instances_peer, "peer")
        } else {
            (&self.counters.instances_local, "local")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("zonehost_cluster_instance_placements_total", "where" => place)
            .increment(1);
    }

    /// Whether new logins are currently redirected.
    pub fn is_overloaded(&self) -> bool {
        self.lock().overloaded
    }

    /// Reports `busy_permille` (at most 1000) instead of the measured busy fraction from
    /// the next reading on, or the measurement again with `None`: for tests and load
    /// experiments that need a server to look busy or idle whatever its CPU does. The
    /// pinned value is what this server publishes and what its own overload state uses.
    pub fn pin_busy(&self, busy_permille: Option<u32>) {
        self.lock().pinned = busy_permille.map(|b| b.min(1000));
    }

    /// The pinned busy fraction, if any (see [`Placement::pin_busy`]).
    pub fn pinned_busy(&self) -> Option<u32> {
        self.lock().pinned
    }

    /// Takes a fresh reading: this server's load `own` and the live rows of the table
    /// (any server; this one and unknown ones, neither configured nor advertising an
    /// address, are ignored). Resets the players counted as sent and re-evaluates the
    /// overload state.
    pub fn update(&self, own: ServerLoad, rows: Vec<ServerLoad>) {
        let mut st = self.lock();
        st.loads = rows
            .into_iter()
            .filter(|l| {
                l.server_id != self.own_id
                    && (self.peers.contains_key(&l.server_id) || l.address.is_some())
            })
            .map(|l| (l.server_id.clone(), l))
            .collect();
        st.read = true;
        st.sent.clear();
        let busy = u64::from(own.busy_permille);
        st.own = Some(own);
        let above = u64::from(self.thresholds.above_permille);
        let margin = u64::from(self.thresholds.margin_permille);
        st.overloaded = match self.best(&st) {
            None => false,
            Some((_, best)) => {
                let gap = busy.saturating_sub(best);
                if st.overloaded {
                    busy + margin / 2 >= above && gap >= margin / 2
                } else {
                    busy >= above && gap >= margin
                }
            }
        };
    }

    /// The live peers' rows of the last reading, ordered by server id.
    pub fn peer_loads(&self) -> Vec<ServerLoad> {
        let mut rows: Vec<ServerLoad> = self.lock().loads.values().cloned().collect();
        rows.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        rows
    }

    /// This server's last measured load.
    pub fn own_load(&self) -> Option<ServerLoad> {
        self.lock().own.clone()
    }
}

/// What a sim worker needs to place new instances on peers (cluster mode with
/// `place_instances`): the cluster's load view and the queue of players to redirect once
/// their final checkpoint is answered (its relay task releases their leases, then sends
/// each its `Redirect`, see [`crate::cluster::Handoffs::redirect`]).
#[derive(Debug, Clone)]
pub struct InstancePlacer {
    /// The load view ([`Placement::instance_target`]).
    pub placement: Arc<Placement>,
    /// Players saved in their new zone, waiting for their lease release and `Redirect`.
    pub handoffs: Arc<Handoffs>,
}

impl InstancePlacement for InstancePlacer {
    fn instance_target(&self) -> Option<(String, SocketAddr)> {
        self.placement.instance_target()
    }

    fn count_instance(&self, on_peer: bool) {
        self.placement.count_instance(on_peer);
    }

    fn relay(&self) -> &dyn HandoffSink {
        self.handoffs.as_ref()
    }
}

/// Measures this server's load from its counters: the mean busy fraction of the sim
/// workers since the previous call, and the players they own.
#[derive(Debug)]
pub struct LoadMeter {
    stats: Arc<Stats>,
    last_busy_us: u64,
    last_at: std::time::Instant,
}

impl LoadMeter {
    /// A meter starting now.
    pub fn new(stats: Arc<Stats>) -> Self {
        let last_busy_us = stats.tick_busy_us.load(Ordering::Relaxed);
        Self {
            stats,
            last_busy_us,
            last_at: std::time::Instant::now(),
        }
    }

    /// The load since the last sample, as the row of server `server_id` at `now_ms`.
    pub fn sample(&mut self, server_id: &str, draining: bool, now_ms: u64) -> ServerLoad {
        let busy = self.stats.tick_busy_us.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let wall_us = now.duration_since(self.last_at).as_micros() as u64;
        let workers = self.stats.workers.len().max(1) as u64;
        let busy_permille = busy
            .saturating_sub(self.last_busy_us)
            .saturating_mul(1000)
            .checked_div(wall_us.saturating_mul(workers))
            .unwrap_or(0)
            .min(1000) as u32;
        self.last_busy_us = busy;
        self.last_at = now;
        let players: i64 = self
            .stats
            .workers
            .iter()
            .map(|w| w.players.load(Ordering::Relaxed))
            .sum();
        ServerLoad {
            server_id: server_id.to_owned(),
            players: players.max(0) as u32,
            busy_permille,
            draining,
            updated_at_ms: now_ms,
            address: None,
        }
    }
}

/// One round of load reporting at `now_ms`: publishes `own` (with a lifetime of
/// [`LOAD_TTL_INTERVALS`] × `interval`) and reads the table into `placement`. Blocking
/// (store calls); failures are counted and logged, and leave the previous reading.
pub fn report(
    store: &dyn Store,
    placement: &Placement,
    own: ServerLoad,
    interval: Duration,
    now_ms: u64,
) {
    let mut own = own;
    if let Some(busy) = placement.pinned_busy() {
        own.busy_permille = busy;
    }
    own.address = placement.advertise();
    let ttl = interval * LOAD_TTL_INTERVALS;
    metrics::gauge!("zonehost_cluster_load_permille").set(f64::from(own.busy_permille));
    match store.publish_load(&own, ttl, now_ms) {
        Ok(()) => {
            placement.counters.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            placement
                .counters
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "publishing this server's load failed");
        }
    }
    match store.server_loads(now_ms) {
        Ok(rows) => placement.update(own, rows),
        Err(e) => {
            placement
                .counters
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "reading the servers' loads failed");
        }
    }
}

/// Publishes this server's load every `interval` (and at once when it starts draining)
/// and reads the others' into `placement`, until `stop` turns true.
pub async fn report_loads(
    store: Arc<dyn Store>,
    placement: Arc<Placement>,
    stats: Arc<Stats>,
    interval: Duration,
    mut draining: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut meter = LoadMeter::new(stats);
    let mut draining_seen = false;
    loop {
        let is_draining = *draining.borrow();
        let own = meter.sample(placement.own_id(), is_draining, crate::clock::unix_millis());
        let (store2, placement2) = (store.clone(), placement.clone());
        let reported = tokio::task::spawn_blocking(move || {
            report(
                store2.as_ref(),
                &placement2,
                own,
                interval,
                crate::clock::unix_millis(),
            )
        })
        .await;
        if let Err(e) = reported {
            tracing::error!(error = %e, "load report task failed");
        }
        draining_seen |= is_draining;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = draining.wait_for(|d| *d), if !draining_seen => if r.is_err() { return },
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseStore;

    fn load(id: &str, busy: u32, players: u32) -> ServerLoad {
        ServerLoad {
            server_id: id.into(),
            players,
            busy_permille: busy,
            draining: false,
            updated_at_ms: 0,
            address: None,
        }
    }

    fn placement() -> Placement {
        let peers = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    id.to_string(),
                    SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16)),
                )
            })
            .collect();
        Placement::new(
            "a".into(),
            &peers,
            Thresholds {
                above_permille: 600,
                margin_permille: 200,
            },
        )
    }

    #[test]
    fn peers_not_configured_are_found_by_the_address_they_publish() {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let with = |id: &str, busy, port: Option<u16>| ServerLoad {
            address: port.map(at),
            ..load(id, busy, 10)
        };
        // a lists only b (at 4001); c and d are not configured.
        let configured = [("b".to_string(), at(4001))].into_iter().collect();
        let p = Placement::new(
            "a".into(),
            &configured,
            Thresholds {
                above_permille: 600,
                margin_permille: 200,
            },
        )
        .with_advertise(Some(at(4000)));
        assert_eq!(p.advertise(), Some(at(4000)));
        assert_eq!(p.peer_address("c"), None, "unknown before a reading");
        // b publishes another address (the configured one wins), c publishes one, d none.
        p.update(
            with("a", 900, Some(4000)),
            vec![
                with("b", 500, Some(4999)),
                with("c", 100, Some(4002)),
                with("d", 0, None),
            ],
        );
        assert_eq!(p.peer_address("b"), Some(at(4001)));
        assert_eq!(p.peer_address("c"), Some(at(4002)));
        assert_eq!(
            p.peer_address("d"),
            None,
            "neither configured nor published"
        );
        assert_eq!(p.peer_address("a"), None, "not its own peer");
        assert_eq!(
            p.peer_loads()
                .iter()
                .map(|l| l.server_id.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        // The idlest reachable peer is c, found only through the table; a is overloaded.
        assert!(p.is_overloaded());
        assert_eq!(p.least_loaded_peer(), Some(("c".into(), at(4002))));
        // c's row expired (not in the next reading): it is unknown again.
        p.update(with("a", 900, Some(4000)), vec![with("b", 500, None)]);
        assert_eq!(p.peer_address("c"), None);
        assert_eq!(p.least_loaded_peer().map(|t| t.0).as_deref(), Some("b"));
        // A server with no configured peers knows some once it has read the table.
        let alone = Placement::new(
            "a".into(),
            &BTreeMap::new(),
            Thresholds {
                above_permille: 600,
                margin_permille: 200,
            },
        );
        assert!(alone.peer_loads().is_empty());
        assert_eq!(alone.least_loaded_peer(), None);
        alone.update(with("a", 0, None), vec![with("c", 0, Some(4002))]);
        assert_eq!(alone.peer_loads().len(), 1);
        assert_eq!(alone.least_loaded_peer(), Some(("c".into(), at(4002))));
    }

    #[test]
    fn peers_are_taken_in_turn_before_the_table_is_read() {
        let p = placement();
        let ids: Vec<String> = (0..4)
            .filter_map(|_| p.least_loaded_peer())
            .map(|t| t.0)
            .collect();
        assert_eq!(ids, ["b", "c", "b", "c"]);
        assert_eq!(p.login_target(), None, "never overloaded before a reading");
    }

    #[test]
    fn the_least_loaded_live_peer_wins_and_sent_players_spread() {
        let p = placement();
        // b is busier but holds few players; c is idle; a dead or draining server is
        // never chosen (d is not configured, a is this server).
        let mut draining = load("d", 0, 0);
        draining.draining = true;
        p.update(
            load("a", 100, 10),
            vec![
                load("b", 300, 30),
                load("c", 100, 50),
                load("a", 0, 0),
                draining,
            ],
        );
        assert_eq!(p.least_loaded_peer().map(|t| t.0).as_deref(), Some("c"));
        // c costs 2 per mille a player: after 100 players sent it estimates 300 and b
        // (10 a player) takes the next one.
        let mut to_c = 1;
        while p.least_loaded_peer().map(|t| t.0).as_deref() == Some("c") {
            to_c += 1;
            assert!(to_c < 1000, "c never filled up");
        }
        assert_eq!(to_c, 100);
        let mut b_draining = load("b", 0, 0);
        b_draining.draining = true;
        p.update(load("a", 0, 0), vec![b_draining]);
        assert_eq!(p.least_loaded_peer(), None, "no live peer: nowhere to go");
    }

    #[test]
    fn logins_are_redirected_only_when_clearly_more_loaded_with_hysteresis() {
        let p = placement();
        let peers = || vec![load("b", 200, 20), load("c", 300, 30)];
        p.update(load("a", 550, 50), peers());
        assert!(!p.is_overloaded(), "below redirect_above_permille");
        p.update(
            load("a", 650, 60),
            vec![load("b", 500, 20), load("c", 500, 30)],
        );
        assert!(
            !p.is_overloaded(),
            "over the threshold but not 200 above the best"
        );
        p.update(load("a", 650, 60), peers());
        assert!(p.is_overloaded());
        let (to, _) = p.login_target().expect("redirected");
        assert_eq!(to, "b");
        assert_eq!(p.counters.login_redirects.load(Ordering::Relaxed), 1);
        // Hysteresis: 520 is below the threshold but not by half the margin.
        p.update(load("a", 520, 60), peers());
        assert!(p.is_overloaded(), "stays on until 500");
        p.update(load("a", 490, 60), peers());
        assert!(!p.is_overloaded());
        assert_eq!(p.login_target(), None);
        // The gap closing ends it too.
        p.update(load("a", 700, 60), peers());
        assert!(p.is_overloaded());
        p.update(
            load("a", 700, 60),
            vec![load("b", 620, 20), load("c", 650, 30)],
        );
        assert!(!p.is_overloaded(), "gap 80 < margin / 2");
    }

    #[test]
    fn new_instances_go_to_the_best_peer_only_while_overloaded() {
        let p = placement();
        // What a worker does: ask, then count where the instance ended.
        let place = || {
            let target = p.instance_target();
            p.count_instance(target.is_some());
            target
        };
        assert_eq!(place(), None, "never before a reading");
        let peers = || vec![load("b", 100, 10), load("c", 300, 30)];
        p.update(load("a", 500, 50), peers());
        assert_eq!(place(), None, "not busy enough: opened here");
        p.update(load("a", 900, 90), peers());
        let (to, addr) = place().expect("placed on a peer");
        assert_eq!(to, "b");
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 4001)));
        // Hysteresis as for logins: 550 is still on, 450 is off.
        p.update(load("a", 550, 90), peers());
        assert_eq!(place().map(|t| t.0).as_deref(), Some("b"));
        p.update(load("a", 450, 90), peers());
        assert_eq!(place(), None);
        assert_eq!(p.counters.instances_peer.load(Ordering::Relaxed), 2);
        assert_eq!(p.counters.instances_local.load(Ordering::Relaxed), 3);
        assert_eq!(
            p.counters.login_redirects.load(Ordering::Relaxed),
            0,
            "instances are not logins"
        );
        // Overloaded with no live peer: here.
        let mut b = load("b", 0, 0);
        b.draining = true;
        p.update(load("a", 900, 90), vec![b]);
        assert_eq!(p.instance_target(), None);
    }

    #[test]
    fn instance_placements_spread_like_logins() {
        let p = placement();
        p.update(
            load("a", 900, 90),
            vec![load("b", 100, 10), load("c", 110, 11)],
        );
        // b costs 10 a player: after one placement there it estimates 110 with 11
        // players, level with c, and the id decides (b); then b estimates 120 and c
        // takes one; then both are level again.
        let to: Vec<String> = (0..4)
            .filter_map(|_| p.instance_target())
            .map(|t| t.0)
            .collect();
        assert_eq!(to, ["b", "b", "c", "b"]);
    }

    #[test]
    fn a_pinned_busy_fraction_is_published_and_decides() {
        let (store, dir) = {
            let dir = std::env::temp_dir().join(format!(
                "zonehost-placement-unit-{}-{}",
                std::process::id(),
                crate::clock::unix_millis()
            ));
            let s = crate::store::redb::RedbStore::open(&dir.join("s.redb")).expect("open");
            (s, dir)
        };
        let p = placement();
        let now = crate::clock::unix_millis();
        store
            .publish_load(&load("b", 50, 5), Duration::from_secs(60), now)
            .expect("b's row");
        p.pin_busy(Some(2000));
        assert_eq!(p.pinned_busy(), Some(1000), "clamped to 1000");
        report(&store, &p, load("a", 0, 0), Duration::from_secs(1), now);
        assert_eq!(p.own_load().map(|l| l.busy_permille), Some(1000));
        assert!(
            p.is_overloaded(),
            "the pinned value decides, not the measured 0"
        );
        let rows = store.server_loads(now).expect("rows");
        let a = rows
            .iter()
            .find(|r| r.server_id == "a")
            .expect("a published");
        assert_eq!(a.busy_permille, 1000, "and is what peers read");
        p.pin_busy(None);
        report(&store, &p, load("a", 0, 0), Duration::from_secs(1), now);
        assert!(!p.is_overloaded(), "measured again");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_meter_reports_the_mean_busy_fraction_and_players() {
        let stats = Arc::new(Stats::new(2));
        let mut m = LoadMeter::new(stats.clone());
        std::thread::sleep(Duration::from_millis(50));
        stats.workers[0].players.store(3, Ordering::Relaxed);
        stats.workers[1].players.store(4, Ordering::Relaxed);
        // 50 ms busy in total over at least 2 × 50 ms of worker time: at most half.
        stats.tick_busy_us.fetch_add(50_000, Ordering::Relaxed);
        let l = m.sample("a", false, 7);
        assert_eq!(l.players, 7);
        assert!(l.busy_permille > 0 && l.busy_permille <= 500, "{l:?}");
        assert_eq!(l.updated_at_ms, 7);
        let again = m.sample("a", true, 8);
        assert_eq!(again.busy_permille, 0, "nothing since the last sample");
        assert!(again.draining);
    }
}
