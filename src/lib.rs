//! zonehost: a QUIC game server for an instanced action-RPG.
//!
//! The server is an I/O shell around two pure crates: `zonehost-protocol` (the wire
//! format) and `zonehost-game` (the rules). [`start`] binds the endpoint and starts the
//! simulation workers and returns a [`Server`] handle; [`run`] is the same but waits for
//! the end. Shutdown is a future passed in: when it completes the server drains.

pub mod clock;
pub mod cluster;
pub mod config;
pub mod handoff;
pub mod keys;
pub mod limits;
pub mod link;
pub mod net;
pub mod ops;
pub mod par;
pub mod parties;
pub mod placement;
pub mod process_stats;
pub mod queue;
pub mod session;
mod shutdown;
pub mod sim;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Semaphore};
use zonehost_protocol::token::KeySet;

use crate::config::{Config, ConfigError};
use crate::keys::KeyError;
use crate::net::{NetError, SocketBuffers};
use crate::session::{Authenticator, Registry, ResumeMinter};
use crate::sim::{PersistSettings, Sim, SpawnError};
use crate::store::writer::StoreWorker;
use crate::store::{LeaseError, Store, StoreError};
use crate::telemetry::Stats;

pub use crate::store::recovery::{
    recover_trades, sweep_dead_grounds, take_epoch, EPOCH_LEASE, TRADE_RECOVERY_GRACE_MS,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates or keys could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The endpoint could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Sim workers could not be started.
    #[error(transparent)]
    Sim(#[from] SpawnError),
    /// The operations HTTP endpoint could not be bound.
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The store's epoch lease could not be taken.
    #[error("store lease: {0}")]
    Lease(#[from] LeaseError),
    /// The store worker thread could not be started.
    #[error("starting the store worker: {0}")]
    StoreWorker(#[source] std::io::Error),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound UDP address.
    pub local_addr: SocketAddr,
    /// The leaf certificate clients must trust.
    pub certificate: CertificateDer<'static>,
    /// SHA-256 fingerprint (hex) of the certificate.
    pub fingerprint: String,
    /// The dev signing key, when enabled (for minting tokens in tests and dev).
    pub dev_signing_key: Option<SigningKey>,
    /// Bound address of `/metrics`, `/healthz`, `/readyz`, when enabled.
    pub ops_addr: Option<SocketAddr>,
    /// UDP buffer sizes granted by the kernel.
    pub socket_buffers: SocketBuffers,
    /// Live counters.
    pub stats: Arc<Stats>,
    /// The store the server persists to (shared with the store worker; for tools and
    /// tests that read what was committed).
    pub store: Arc<dyn Store>,
    /// The checkpoint fence epoch of this run (greater than every earlier run's).
    pub store_epoch: u64,
    /// Player ownership leases held by this server (cluster mode only).
    pub player_leases: Option<Arc<cluster::PlayerLeases>>,
    /// This server's view of the cluster's load (cluster mode only).
    pub placement: Option<Arc<placement::Placement>>,
    /// Players handed to peers by a drain (cluster mode only).
    pub handoffs: Option<Arc<cluster::Handoffs>>,
    draining: watch::Receiver<bool>,
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Whether the server is draining (no longer ready for players).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Stops the server the way a crash would, for tests of what survives one: no drain,
    /// no `Goaway`, no final checkpoints, no lease released or renewed any more. Only the
    /// store commands already queued are executed (as a killed process's last writes may
    /// or may not land). Unlike a killed process, the endpoint is closed, so clients learn
    /// at once instead of after their idle timeout. Returns when everything has stopped.
    pub async fn crash(mut self) {
        if let Some(tx) = self.crash.take() {
            let _ = tx.send(());
        }
        self.wait().await;
    }

    /// Waits until the server has drained and stopped.
    pub async fn wait(self) {
        if let Err(e) = self.done.await {
            tracing::error!(error = %e, "server task failed");
        }
    }
}

fn build_keys(config: &Config) -> Result<(KeySet, Option<SigningKey>), ServerError> {
    let mut keys = KeySet::new();
    let mut dev = None;
    if config.dev_signing_key {
        let key = keys::load_or_create_signing_key(&config.data_dir)?;
        keys.insert(keys::DEV_KEY_ID, key.verifying_key());
        dev = Some(key);
    }
    for k in &config.verifying_keys {
        let key =
            keys::parse_verifying_key(&k.public_key_hex).ok_or_else(|| ConfigError::Invalid {
                option: "verifying_keys",
                reason: format!("key {} is not a valid Ed25519 public key", k.id),
            })?;
        keys.insert(k.id, key);
    }
    Ok((keys, dev))
}

/// Loads zone templates: `content_dir/zones/*.toml` when configured, else the built-in set.
pub fn load_content(config: &Config) -> Result<zonehost_game::Content, ServerError> {
    let invalid = |reason: String| ConfigError::Invalid {
        option: "content_dir",
        reason,
    };
    let Some(dir) = &config.content_dir else {
        return zonehost_game::Content::builtin().map_err(|e| invalid(e.to_string()).into());
    };
    let zones = dir.join("zones");
    let mut files: Vec<_> = std::fs::read_dir(&zones)
        .map_err(|e| invalid(format!("{}: {e}", zones.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for f in &files {
        sources.push(
            std::fs::read_to_string(f).map_err(|e| invalid(format!("{}: {e}", f.display())))?,
        );
    }
    zonehost_game::Content::from_sources(&sources)
        .map_err(|e| invalid(format!("{}: {e}", zones.display())).into())
}

/// Opens the configured store behind its cache (the embedded file is created in the
/// data directory on first use), takes this run's epoch and starts the store worker.
/// An `injected` store is used as it is. In cluster mode the configured store is opened
/// without the record cache (another server may have written a cached player since) and
/// grounds of earlier epochs are not swept (they may be other live servers' instances).
fn open_store(
    config: &Config,
    stats: &Stats,
    injected: Option<Arc<dyn Store>>,
) -> Result<(Arc<dyn Store>, u64, StoreWorker), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Open {
        target: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let (store, cache_stats): (Arc<dyn Store>, _) = match injected {
        Some(store) => (store, None),
        None if config.cluster.enabled => (
            Arc::from(store::open(&config.store, &config.data_dir)?),
            None,
        ),
        None => {
            let cached = store::open_cached(&config.store, &config.data_dir)?;
            let cache_stats = cached.cache().stats().clone();
            (Arc::new(cached), Some(cache_stats))
        }
    };
    let epoch = take_epoch(store.as_ref(), &config.store)?;
    recover_trades(store.as_ref(), config.cluster.enabled);
    if !config.cluster.enabled {
        sweep_dead_grounds(store.as_ref(), epoch);
    }
    let worker = StoreWorker::spawn(Box::new(store.clone()), &config.store)
        .map_err(ServerError::StoreWorker)?;
    let store_stats = worker.stats().clone();
    stats.add_publisher(move || {
        store_stats.publish();
        if let Some(c) = &cache_stats {
            c.publish();
        }
    });
    tracing::info!(
        backend = store.backend(),
        epoch,
        checkpoint_interval_secs = config.store.checkpoint_interval_secs,
        "store open"
    );
    Ok((store, epoch, worker))
}

/// Binds the QUIC endpoint on `config.listen`: TLS with `identity`, the UDP socket with
/// the configured buffers (every datagram counted into `stats`, junk by reason) and
/// stateless resets keyed by the reset secret. Returns the endpoint, the buffer sizes the kernel
/// granted and the bound address.
fn bind_endpoint(
    config: &Config,
    identity: &keys::ServerIdentity,
    stats: &Arc<Stats>,
) -> Result<(quinn::Endpoint, SocketBuffers, SocketAddr), ServerError> {
    let server_config = net::server_config(config, identity)?;
    let (socket, socket_buffers) = net::bind_udp(
        config.listen,
        config.udp_recv_buffer,
        config.udp_send_buffer,
    )?;
    let reset_secret = keys::load_reset_secret(config.reset_key_file.as_deref(), &config.data_dir)?;
    let bind_err = |source| NetError::Bind {
        addr: config.listen,
        source,
    };
    let socket = net::counting_socket(socket, &reset_secret, stats.clone()).map_err(bind_err)?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        net::endpoint_config(
            &reset_secret,
            Duration::from_micros(config.reset_min_interval_us),
        ),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| NetError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = endpoint.local_addr().map_err(|source| NetError::Bind {
        addr: config.listen,
        source,
    })?;
    Ok((endpoint, socket_buffers, local_addr))
}

/// What [`start_with`] takes beyond the config. The default is what [`start`] does.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Serve from this store instead of opening `[store]`'s backend: several servers
    /// hosted in one process share one store this way (the cluster tests). Default unset.
    pub store: Option<Arc<dyn Store>>,
}

/// Binds the endpoint, starts the sim workers and returns a handle. When `shutdown`
/// completes the server drains: it stops accepting, sends `Goaway` to every session,
/// waits for connections to close (at most `drain_timeout_ms`) and stops.
///
/// Must be called inside a tokio runtime.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, ServerError> {
    start_with(config, shutdown, StartOptions::default()).await
}

/// [`start`] with [`StartOptions`].
pub async fn start_with(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: StartOptions,
) -> Result<Server, ServerError> {
    config.validate()?;
    let identity = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => keys::load_pem_identity(cert, key)?,
        _ => keys::load_or_create_dev_identity(&config.data_dir)?,
    };
    let (keyset, dev_signing_key) = build_keys(&config)?;
    if config.metrics_listen.is_some() {
        // Install the recorder before the workers take their metric handles.
        ops::prometheus();
    }
    let stats = Arc::new(Stats::new(config.sim_workers));
    let registry = Arc::new(Registry::new(config.second_login));
    let (endpoint, socket_buffers, local_addr) = bind_endpoint(&config, &identity, &stats)?;
    let resume = Arc::new(ResumeMinter::random().map_err(|e| KeyError::Generate(e.to_string()))?);
    let content = Arc::new(load_content(&config)?);
    let (store, store_epoch, store_worker) = open_store(&config, &stats, options.store)?;
    let mut persist = PersistSettings::new(store_epoch, config.store.checkpoint_interval());
    let player_leases = config.cluster.enabled.then(|| {
        Arc::new(cluster::PlayerLeases::new(
            store.clone(),
            config.store.server_id.clone(),
            config.cluster.player_lease_ttl(),
            store_epoch,
        ))
    });
    if let Some(l) = &player_leases {
        persist = persist.with_leases(l.clone());
        let leases = l.clone();
        stats.add_publisher(move || leases.publish());
    }
    let tickets = if config.cluster.enabled {
        Some(Arc::new(cluster::Tickets::new(cluster::load_ticket_key(
            &config.cluster,
            &config.data_dir,
        )?)))
    } else {
        None
    };
    // The cluster's load view; it also knows the peers' addresses (configured, or published
    // with their loads).
    let placement = config.cluster.enabled.then(|| {
        Arc::new(
            placement::Placement::new(
                config.store.server_id.clone(),
                &config.cluster.peers,
                placement::Thresholds::of(&config.cluster),
            )
            .with_advertise(config.cluster.advertised(local_addr)),
        )
    });
    // Parties: one registry shared by the workers; in cluster mode it mirrors the store,
    // kept by the party directory (see `parties`).
    let party_mirror = Arc::new(std::sync::Mutex::new(zonehost_game::Parties::new()));
    let directory = match (&player_leases, &tickets, &placement) {
        (Some(leases), Some(tickets), Some(placement)) => Some(Arc::new(
            parties::Directory::spawn(
                parties::DirectorySettings {
                    store: store.clone(),
                    server_id: config.store.server_id.clone(),
                    registry: registry.clone(),
                    mirror: party_mirror.clone(),
                    leases: leases.clone(),
                    tickets: tickets.clone(),
                    placement: placement.clone(),
                    stats: stats.clone(),
                    invite_ttl: config.cluster.party_invite_ttl(),
                    absence_grace: config.cluster.player_lease_ttl()
                        + Duration::from_millis(config.resume_grace_ms),
                },
                config.inbox_capacity,
            )
            .map_err(ServerError::StoreWorker)?,
        )),
        _ => None,
    };
    // New dungeon instances are placed by load (on a live peer, when there is one).
    let placer = match (&placement, &player_leases, &tickets) {
        (Some(p), Some(_), Some(_)) if config.cluster.place_instances => {
            Some(placement::InstancePlacer {
                placement: p.clone(),
                handoffs: Arc::new(cluster::Handoffs::default()),
            })
        }
        _ => None,
    };
    let sim = Arc::new(Sim::start(
        &config,
        stats.clone(),
        registry.clone(),
        resume.clone(),
        content,
        Some((&store_worker, persist)),
        party_mirror,
        directory.as_ref().map(|d| d.handle()),
        placer
            .clone()
            .map(|p| Arc::new(p) as Arc<dyn sim::ports::InstancePlacement>),
    )?);
    let (keeper_stop, keeper_stopped) = watch::channel(false);
    if let Some(l) = &player_leases {
        l.take_run_lease(clock::unix_millis())?;
        tokio::spawn(l.clone().run(registry.clone(), keeper_stopped.clone()));
        tokio::spawn(cluster::sweep_dead_runs_every(
            store.clone(),
            config.store.server_id.clone(),
            store_epoch,
            config.cluster.player_lease_ttl(),
            keeper_stopped.clone(),
        ));
    }
    if let (Some(p), Some(l), Some(t)) = (&placer, &player_leases, &tickets) {
        tokio::spawn(handoff::relay_placed(
            p.handoffs.clone(),
            l.clone(),
            t.clone(),
            keeper_stopped.clone(),
        ));
    }
    let (drain_tx, draining) = watch::channel(false);
    let ops_addr = match config.metrics_listen {
        Some(addr) => Some(ops::serve(addr, stats.clone(), draining.clone()).await?),
        None => None,
    };
    let mut auth = Authenticator::new(
        keyset,
        config.audience.clone(),
        config.token_skew_secs,
        resume.keys(),
    );
    if let Some(t) = &tickets {
        auth = auth.with_tickets(t.keys(), cluster::ticket_audience(&config.store.server_id));
    }
    if let Some(p) = &placement {
        tokio::spawn(placement::report_loads(
            store.clone(),
            p.clone(),
            stats.clone(),
            config.cluster.load_report_interval(),
            draining.clone(),
            keeper_stopped.clone(),
        ));
    }
    // Drain by migration: each player goes to the least loaded live peer found then
    // (configured or published), or gets a Goaway when there is none.
    let migration = match (&placement, &player_leases, &tickets) {
        (Some(p), Some(l), Some(t)) => Some(handoff::DrainMigration::new(
            p.clone(),
            l.clone(),
            t.clone(),
            zonehost_protocol::message::Goaway {
                reason: "server is shutting down".into(),
                reconnect_after_ms: config.reconnect_after_ms,
            },
        )),
        _ => None,
    };
    let handoffs = migration.as_ref().map(|m| m.handoffs.clone());
    let ctx = net::context(
        &config,
        stats.clone(),
        auth,
        registry,
        sim.clone(),
        draining.clone(),
        net::ClusterContext {
            leases: player_leases.clone(),
            tickets,
            placement: placement.clone(),
        },
    );
    let acceptor = net::Acceptor {
        endpoint: endpoint.clone(),
        ctx,
        permits: Arc::new(Semaphore::new(config.max_connections)),
        handshakes: limits::HandshakeLimiter::new(
            config.handshakes_per_ip_rate,
            config.handshakes_per_ip_burst,
            65_536,
        ),
        retry_above_per_sec: config.retry_above_handshakes_per_sec,
    };
    tokio::spawn(acceptor.run(draining.clone()));
    tracing::info!(
        addr = %local_addr,
        fingerprint = %identity.fingerprint(),
        cert = ?identity.dev_cert_path,
        recv_buffer = socket_buffers.recv,
        send_buffer = socket_buffers.send,
        metrics = ?ops_addr,
        sim_workers = config.sim_workers,
        tick_rate_hz = config.tick_rate_hz,
        "zonehost listening"
    );
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    // Without a metrics listener nobody can see the drain: no reason to linger.
    let drain_linger = match ops_addr {
        Some(_) => Duration::from_millis(config.drain_linger_ms),
        None => Duration::ZERO,
    };
    let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = shutdown::Stopping {
        sim,
        directory,
        endpoint,
        store_worker,
        stats: stats.clone(),
        migration,
        leases: player_leases.clone(),
        keeper_stop,
        drain_tx,
        drain_timeout,
        drain_linger,
    };
    let done = tokio::spawn(stopping.run(shutdown, crash_rx));
    Ok(Server {
        local_addr,
        certificate: identity.certs[0].clone(),
        ops_addr,
        fingerprint: identity.fingerprint(),
        dev_signing_key,
        socket_buffers,
        stats,
        store,
        store_epoch,
        player_leases,
        placement,
        handoffs,
        draining,
        crash: Some(crash_tx),
        done,
    })
}

/// Most servers [`start_dev_cluster`] hosts.
pub const MAX_DEV_CLUSTER: usize = 9;

/// Development only: `n` servers of one cluster in this process sharing one store (the
/// embedded file cannot be shared across processes), the way `tests/cluster.rs` runs
/// them, so that loadgen can be pointed at a cluster on one machine. Server `i` listens on
/// `config.listen` with the port plus `i` (and serves metrics on `metrics_listen`'s port
/// plus `i`); its `server_id` is `config.store.server_id` followed by `i`; every server
/// lists the others as `[cluster.peers]`, and `[cluster] enabled` is forced on. They share
/// `data_dir` (one dev certificate, token key and ticket key). When `shutdown` completes
/// they all drain at once (players may be redirected to a peer that is draining too and
/// be refused there: this is a test rig, not a deployment).
pub async fn start_dev_cluster(
    config: Config,
    n: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Vec<Server>, ServerError> {
    let invalid = |option: &'static str, reason: String| ConfigError::Invalid { option, reason };
    if !(1..=MAX_DEV_CLUSTER).contains(&n) {
        return Err(invalid("dev_cluster", format!("1..={MAX_DEV_CLUSTER} servers")).into());
    }
    let base = config.listen.port();
    if base == 0 || usize::from(u16::MAX - base) < n {
        return Err(invalid(
            "listen",
            "a dev cluster needs a fixed port (and n - 1 free ones after it)".into(),
        )
        .into());
    }
    let at = |addr: SocketAddr, i: usize| SocketAddr::new(addr.ip(), addr.port() + i as u16);
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{}{i}", config.store.server_id))
        .collect();
    let peers: std::collections::BTreeMap<String, SocketAddr> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), at(config.listen, i)))
        .collect();
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Open {
        target: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let store: Arc<dyn Store> = Arc::from(store::open(&config.store, &config.data_dir)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut servers = Vec::with_capacity(n);
    for (i, id) in ids.into_iter().enumerate() {
        let mut c = config.clone();
        c.listen = at(config.listen, i);
        c.metrics_listen = config.metrics_listen.map(|m| at(m, i));
        c.store.server_id = id;
        c.cluster.enabled = true;
        c.cluster.peers = peers.clone();
        let mut stop = stop_rx.clone();
        let server = start_with(
            c,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
            StartOptions {
                store: Some(store.clone()),
            },
        )
        .await?;
        servers.push(server);
    }
    Ok(servers)
}

/// Starts the server and waits until it has drained after `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
