//! How a started server stops: a drain when its shutdown future completes (`Goaway` or
//! drain by migration, final checkpoints made durable, leases released), or a stop like a
//! crash's for the tests of what survives one ([`crate::Server::crash`]).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::cluster::PlayerLeases;
use crate::handoff::DrainMigration;
use crate::parties::Directory;
use crate::sim::ports::HandoffSink;
use crate::sim::Sim;
use crate::store::writer::StoreWorker;
use crate::telemetry::Stats;

/// What a running server's stop takes down, in order.
pub(crate) struct Stopping {
    /// The simulation workers.
    pub(crate) sim: Arc<Sim>,
    /// The party directory (cluster mode).
    pub(crate) directory: Option<Arc<Directory>>,
    /// The QUIC endpoint.
    pub(crate) endpoint: quinn::Endpoint,
    /// The store worker, stopped last.
    pub(crate) store_worker: StoreWorker,
    /// Live counters (open connections).
    pub(crate) stats: Arc<Stats>,
    /// Drain by migration (cluster mode with peers).
    pub(crate) migration: Option<DrainMigration>,
    /// Player leases, released once the final checkpoints are answered (cluster mode).
    pub(crate) leases: Option<Arc<PlayerLeases>>,
    /// Stops the lease keeper and the cluster's background tasks.
    pub(crate) keeper_stop: watch::Sender<bool>,
    /// Tells the acceptor, `/readyz` and the load reports that the server is draining.
    pub(crate) drain_tx: watch::Sender<bool>,
    /// Longest the drain waits for connections to close and checkpoints to land.
    pub(crate) drain_timeout: Duration,
    /// How long `/metrics` keeps answering after the drain.
    pub(crate) drain_linger: Duration,
}

impl Stopping {
    /// Waits for `shutdown` (drain) or `crash` (stop without drain), then stops.
    pub(crate) async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        crash: oneshot::Receiver<()>,
    ) {
        let Stopping {
            sim,
            directory,
            endpoint,
            store_worker,
            stats,
            migration,
            leases,
            keeper_stop,
            drain_tx,
            drain_timeout,
            drain_linger,
        } = self;
        let crashed = tokio::select! {
            () = shutdown => false,
            r = crash => r.is_ok(),
        };
        if crashed {
            tracing::warn!("crash: stopping without drain");
            let _ = keeper_stop.send(true);
            let _ = drain_tx.send(true);
            // The workers stop first, so that no session leaves (and checkpoints); the
            // party directory is told first, so that the sessions the stopping workers
            // end stay in their parties, as after a real crash.
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(d) = &directory {
                    d.crash();
                }
                sim.stop();
                if let Some(d) = directory {
                    d.stop();
                }
            })
            .await;
            endpoint.close(
                zonehost_protocol::message::close_code::SHUTDOWN.into(),
                b"crash",
            );
            let _ = tokio::task::spawn_blocking(move || store_worker.stop()).await;
            return;
        }
        let started = Instant::now();
        tracing::info!(migrate = migration.is_some(), "draining");
        let _ = drain_tx.send(true);
        match &migration {
            Some(m) => sim.drain_to_peers(&(m.handoffs.clone() as Arc<dyn HandoffSink>)),
            None => sim.drain(),
        }
        while (stats.connections_open.load(Ordering::Relaxed) > 0 || !sim.store_flushed())
            && started.elapsed() < drain_timeout
        {
            if let Some(m) = &migration {
                m.round().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(m) = &migration {
            // Sessions whose final checkpoint was answered at the very end.
            m.round().await;
        }
        let flushed = sim.store_flushed();
        if !flushed {
            tracing::error!("drain timed out before the store confirmed the final checkpoints");
        }
        let left = stats.connections_open.load(Ordering::Relaxed);
        // The final checkpoints are answered: release the leases of ended sessions.
        let _ = keeper_stop.send(true);
        if let Some(l) = leases {
            // The instances (and the items on their grounds) are gone with the sessions.
            let _ = tokio::task::spawn_blocking(move || {
                l.release_ended();
                l.release_run();
            })
            .await;
        }
        endpoint.close(
            zonehost_protocol::message::close_code::SHUTDOWN.into(),
            b"shutdown",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        // Stop the workers (their last checkpoints are queued), then the store worker,
        // which executes everything queued before it stops.
        let _ = tokio::task::spawn_blocking(move || {
            sim.stop();
            if let Some(d) = directory {
                d.stop();
            }
            store_worker.stop();
        })
        .await;
        tracing::info!(
            secs = started.elapsed().as_secs_f32(),
            connections_left = left,
            store_flushed = flushed,
            "drained"
        );
        if !drain_linger.is_zero() {
            // /metrics keeps answering `zonehost_draining 1` so that Prometheus records the
            // planned stop before the target disappears (see ZonehostDown in deploy/alerts.yml).
            tracing::info!(
                ms = drain_linger.as_millis() as u64,
                "drained; serving /metrics until the linger ends"
            );
            tokio::time::sleep(drain_linger).await;
        }
    }
}
