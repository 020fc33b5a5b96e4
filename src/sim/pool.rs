//! The running simulation: the worker threads, started together, each with its inbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use zonehost_game::{Content, Parties};

use super::persist::PersistSettings;
use super::ports::{HandoffSink, InstancePlacement, PartyHandle};
use super::worker::{Worker, WorkerSettings};
use super::{pick_worker, Control, Inbox, Route};
use crate::config::Config;
use crate::session::{Registry, ResumeMinter};
use crate::store::writer::StoreWorker;
use crate::telemetry::Stats;

/// The running simulation: worker threads and their inboxes.
#[derive(Debug)]
pub struct Sim {
    inboxes: Arc<[Arc<Inbox>]>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
    /// One flag per worker with a store: its drain barrier was answered.
    flushed: Vec<Arc<AtomicBool>>,
    /// Tick costs closer than this are taken as equal by [`Sim::least_loaded`]
    /// (a tenth of the tick period).
    cost_tolerance_us: u64,
}

/// Why the simulation could not start.
#[derive(Debug, thiserror::Error)]
#[error("spawning sim worker thread: {0}")]
pub struct SpawnError(#[from] std::io::Error);

impl Sim {
    /// Starts `config.sim_workers` worker threads; with `store`, each worker persists its
    /// players through a handle of the store worker (see [`Worker::with_store`]).
    /// `parties` is the party registry the workers share; with a `directory` (cluster
    /// mode) it mirrors the store and party requests go to the directory. With a `placer`
    /// (cluster mode with peers and `place_instances`) new dungeon instances of zone
    /// changes are placed by load (see [`crate::placement`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: &Config,
        stats: Arc<Stats>,
        registry: Arc<Registry>,
        resume: Arc<ResumeMinter>,
        content: Arc<Content>,
        store: Option<(&StoreWorker, PersistSettings)>,
        parties: Arc<Mutex<Parties>>,
        directory: Option<PartyHandle>,
        placer: Option<Arc<dyn InstancePlacement>>,
    ) -> Result<Self, SpawnError> {
        let mut salt = [0u8; 8];
        if getrandom::fill(&mut salt).is_err() {
            // Time is a weaker but still per-start salt.
            salt = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0))
            .to_le_bytes();
        }
        let seed_salt = u64::from_le_bytes(salt);
        let stop = Arc::new(AtomicBool::new(false));
        let inboxes: Arc<[Arc<Inbox>]> = (0..config.sim_workers)
            .map(|_| Arc::new(Inbox::new(config.inbox_capacity)))
            .collect();
        let mut threads = Vec::new();
        let mut flushed = Vec::new();
        for (index, inbox) in inboxes.iter().enumerate() {
            let inbox = inbox.clone();
            let settings = WorkerSettings::from_config(
                index,
                config,
                content.clone(),
                resume.clone(),
                parties.clone(),
                seed_salt,
            );
            let mut w = Worker::new(
                settings,
                inbox.clone(),
                stats.clone(),
                registry.clone(),
                stop.clone(),
            )
            .with_peers(inboxes.clone());
            if let Some(d) = &directory {
                w = w.with_directory(d.clone());
            }
            if let Some(p) = &placer {
                w = w.with_placer(p.clone());
            }
            if let Some((store, persist)) = &store {
                let mine = persist.for_worker();
                flushed.push(mine.flushed.clone());
                w = w.with_store(store.handle(), mine);
            }
            threads.push(
                std::thread::Builder::new()
                    .name(format!("zh-sim-{index}"))
                    .spawn(move || w.run())?,
            );
        }
        let tick_us = 1_000_000 / u64::from(config.tick_rate_hz.max(1));
        Ok(Self {
            inboxes,
            threads: Mutex::new(threads),
            stop,
            flushed,
            cost_tolerance_us: tick_us / 10,
        })
    }

    /// A route to the least-loaded worker (where a new session goes): by measured tick
    /// cost, the player count deciding between workers whose costs differ by less than a
    /// tenth of the tick period (see [`pick_worker`]).
    pub fn least_loaded(&self) -> Arc<Route> {
        let best = pick_worker(&self.inboxes, self.cost_tolerance_us);
        Route::new(self.inboxes.clone(), best)
    }

    /// A route to worker `index` (clamped to the workers there are).
    pub fn route_to(&self, index: usize) -> Arc<Route> {
        Route::new(
            self.inboxes.clone(),
            index.min(self.inboxes.len().saturating_sub(1)),
        )
    }

    /// Asks every worker to drain.
    pub fn drain(&self) {
        for inbox in self.inboxes.iter() {
            inbox.control(Control::Drain);
        }
    }

    /// Asks every worker to drain by migration: each session is handed to `handoffs` once
    /// its final checkpoint is answered (see [`Control::DrainToPeers`]).
    pub fn drain_to_peers(&self, handoffs: &Arc<dyn HandoffSink>) {
        for inbox in self.inboxes.iter() {
            inbox.control(Control::DrainToPeers(handoffs.clone()));
        }
    }

    /// Whether every worker has drained to the store: its final checkpoints are durable
    /// (always true without a store).
    pub fn store_flushed(&self) -> bool {
        self.flushed.iter().all(|f| f.load(Ordering::Acquire))
    }

    /// Stops the workers and waits for their threads (blocking).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a sim worker thread panicked");
            }
        }
    }
}
