//! The 60 Hz simulation driver.
//!
//! Each worker is a dedicated OS thread that owns a set of zone instances outright: no
//! other thread touches them, so the tick needs no lock. Network tasks reach a worker only
//! through its [`Inbox`]: a lock-free unbounded queue for session lifecycle messages (at
//! most two per session, so bounded by the connection cap) and a lock-free bounded queue
//! for inputs and requests (overflow is dropped and counted). Replies leave through each
//! session's bounded outbox; snapshots are per-client deltas with interest management
//! (`snapshots.rs`), encoded once for the clients that share a baseline and an interest and
//! handed to quinn as refcounted `Bytes` straight from the worker.

pub mod persist;
mod pool;
pub mod ports;
mod snapshots;
mod wire;
mod worker;

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::SegQueue;
use zonehost_game::PlayerInput;
use zonehost_protocol::datagram::{InputDatagram, MAX_INPUTS_PER_DATAGRAM};
use zonehost_protocol::message::Request;

pub use crate::link::{
    outbox, ConnShared, Link, LinkError, Outbox, OutboxReceiver, Outgoing, SessionId,
};
pub use persist::PersistSettings;
pub use pool::{Sim, SpawnError};
pub use worker::{Migrant, Worker, WorkerSettings};

use crate::queue::BoundedQueue;
use ports::HandoffSink;

/// A welcomed-to-be session handed to a worker.
#[derive(Debug)]
pub struct Join {
    /// Session id.
    pub session: SessionId,
    /// Stable player id.
    pub player_id: u64,
    /// Player name, for logs.
    pub player_name: String,
    /// The connection (snapshots are sent on it directly).
    pub conn: Arc<dyn Link>,
    /// The session's reliable outbox.
    pub outbox: Outbox,
    /// Shared close bookkeeping.
    pub shared: Arc<ConnShared>,
}

/// Session lifecycle messages; never dropped.
#[derive(Debug)]
pub enum Control {
    /// Add a session to a zone instance and send its `Welcome`.
    Join(Box<Join>),
    /// Remove a session (its connection ended).
    Leave {
        /// Session id.
        session: SessionId,
    },
    /// The session's connection was lost: keep it for the resume grace period.
    Detach {
        /// Session id.
        session: SessionId,
    },
    /// A new connection resumes a detached session (`Join::session` is the old id).
    Attach(Box<Join>),
    /// Send `Goaway` to every session and stop accepting joins.
    Drain,
    /// Drain by migration (cluster mode): stop accepting joins, take every session out
    /// of the simulation with a final checkpoint and hand it to the drain task once that
    /// checkpoint is answered (it is redirected to a peer after its lease is released).
    DrainToPeers(Arc<dyn HandoffSink>),
    /// The party directory (cluster mode) mirrored a party `player` is a member of: mark
    /// it in the world and move the player into its leader's instance.
    PartyJoined {
        /// Party (sim id).
        party: zonehost_game::PartyId,
        /// The member.
        player: u64,
    },
    /// The party directory (cluster mode): `player` is in no party any more.
    PartyLeft {
        /// The player.
        player: u64,
    },
    /// The party directory moves the session's player to its leader's server: end the
    /// session here with its final checkpoint, without leaving the party and without
    /// closing the connection (the directory sends the `Redirect`).
    Handoff {
        /// Session id.
        session: SessionId,
    },
    /// A live player handed over by another worker of this server (party convergence):
    /// its session, world state and requests that arrived during the handover.
    Migrate(Handover),
}

/// A live player on its way from one worker of this server to another: a [`Migrant`],
/// carried by the control queue without its shape being known here, which keeps this
/// mailbox below the worker that defines it. Only workers pack and open one.
pub struct Handover(Box<dyn Any + Send>);

impl Handover {
    /// Packs a worker's migrant.
    pub(crate) fn pack<T: Any + Send>(migrant: Box<T>) -> Self {
        Self(migrant)
    }

    /// Opens a handover packed from a `T`; `None` if it holds something else.
    pub(crate) fn open<T: Any>(self) -> Option<Box<T>> {
        self.0.downcast().ok()
    }
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handover")
    }
}

/// Inputs and requests; dropped and counted when the inbox is full.
#[derive(Debug)]
pub enum Work {
    /// Commands from one input datagram, oldest first.
    Input {
        /// Session id.
        session: SessionId,
        /// Number of valid entries in `inputs`.
        count: u8,
        /// Commands, oldest first.
        inputs: [PlayerInput; MAX_INPUTS_PER_DATAGRAM],
        /// When the connection task received the datagram.
        received_at: Instant,
        /// Newest snapshot tick the client reported having (`InputHeader::ack_tick`).
        ack_tick: u32,
    },
    /// A reliable request.
    Request {
        /// Session id.
        session: SessionId,
        /// Request id to echo.
        id: u32,
        /// The request.
        body: Request,
        /// When the connection task received it.
        received_at: Instant,
    },
}

impl Work {
    /// The work item for a decoded input datagram: its commands oldest first.
    pub fn input(session: SessionId, datagram: &InputDatagram<'_>, received_at: Instant) -> Self {
        let mut inputs = [PlayerInput::default(); MAX_INPUTS_PER_DATAGRAM];
        let n = datagram.cmds.len().min(MAX_INPUTS_PER_DATAGRAM);
        for (i, (seq, cmd)) in datagram.iter().take(n).enumerate() {
            inputs[n - 1 - i] = PlayerInput {
                seq,
                move_x: cmd.move_x.get(),
                move_y: cmd.move_y.get(),
                buttons: cmd.buttons.get(),
            };
        }
        Work::Input {
            session,
            count: n as u8,
            inputs,
            received_at,
            ack_tick: datagram.header.ack_tick.get(),
        }
    }
}

/// Weight of the newest tick in a worker's tick cost average: 1/32, so at 60 Hz the
/// average follows a change of load within about half a second and one slow tick moves it
/// by 3 %.
const TICK_COST_WEIGHT: u64 = 32;

/// A worker's inbox.
#[derive(Debug)]
pub struct Inbox {
    control: SegQueue<Control>,
    work: BoundedQueue<Work>,
    players: AtomicUsize,
    /// Exponentially weighted moving average of the owning worker's tick busy time,
    /// microseconds (written only by that worker, read by [`Sim::least_loaded`]).
    tick_cost_us: AtomicU64,
}

impl Inbox {
    /// An inbox holding at most `capacity` work items.
    pub fn new(capacity: usize) -> Self {
        Self {
            control: SegQueue::new(),
            work: BoundedQueue::new(capacity),
            players: AtomicUsize::new(0),
            tick_cost_us: AtomicU64::new(0),
        }
    }

    /// Queues a lifecycle message (never fails).
    pub fn control(&self, msg: Control) {
        self.control.push(msg);
    }

    /// Queues work; returns it back when the inbox is full.
    pub fn work(&self, msg: Work) -> Result<(), Work> {
        self.work.push(msg)
    }

    /// Players currently assigned to this worker.
    pub fn players(&self) -> usize {
        self.players.load(Ordering::Relaxed)
    }

    /// Adds one tick's busy time (microseconds) to the worker's tick cost average. Called
    /// by the owning worker after each tick (one writer; the first tick sets the average).
    pub fn record_tick(&self, busy_us: u64) {
        let old = self.tick_cost_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            busy_us.max(1)
        } else {
            // old + (busy - old) / weight, in integers, never below 1 µs once measured.
            ((old * (TICK_COST_WEIGHT - 1) + busy_us) / TICK_COST_WEIGHT).max(1)
        };
        self.tick_cost_us.store(new, Ordering::Relaxed);
    }

    /// The worker's measured tick cost: the moving average of its tick busy time,
    /// microseconds; 0 before its first tick.
    pub fn tick_cost_us(&self) -> u64 {
        self.tick_cost_us.load(Ordering::Relaxed)
    }
}

/// The worker a new session goes to, by measured load: among the workers whose tick cost
/// ([`Inbox::tick_cost_us`]) is within `tolerance_us` of the cheapest one, the one with the
/// fewest players (then the lowest index). The tolerance keeps measurement noise between
/// similar workers from deciding, so the player count still spreads a burst of logins (and
/// decides alone before any tick was measured, when every cost is 0); a worker that is
/// measurably more expensive (crowded instances, heavy fights) gets no new session while a
/// cheaper one exists, however few players it has. 0 when there are no inboxes.
pub fn pick_worker(inboxes: &[Arc<Inbox>], tolerance_us: u64) -> usize {
    let Some(cheapest) = inboxes.iter().map(|b| b.tick_cost_us()).min() else {
        return 0;
    };
    inboxes
        .iter()
        .enumerate()
        .filter(|(_, b)| b.tick_cost_us() <= cheapest.saturating_add(tolerance_us))
        .min_by_key(|(i, b)| (b.players(), *i))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Which worker owns a session now. A session's connection tasks read it for every
/// message they queue; the sim moves it when the player migrates to another worker
/// (party convergence). One atomic, no lock: a message queued on the old worker in the
/// instant of the move is forwarded by that worker.
#[derive(Debug)]
pub struct Route {
    inboxes: Arc<[Arc<Inbox>]>,
    worker: AtomicUsize,
}

impl Route {
    /// A route over the inboxes of every worker, starting at `worker`.
    pub fn new(inboxes: Arc<[Arc<Inbox>]>, worker: usize) -> Arc<Self> {
        Arc::new(Self {
            inboxes,
            worker: AtomicUsize::new(worker),
        })
    }

    /// A route that always leads to `inbox` (a single worker, e.g. a test stepping one).
    pub fn fixed(inbox: Arc<Inbox>) -> Arc<Self> {
        Self::new(Arc::from(vec![inbox]), 0)
    }

    /// Index of the worker owning the session.
    pub fn worker(&self) -> usize {
        self.worker.load(Ordering::Acquire)
    }

    /// The inbox of the worker owning the session.
    pub fn inbox(&self) -> &Arc<Inbox> {
        let i = self.worker().min(self.inboxes.len().saturating_sub(1));
        &self.inboxes[i]
    }

    /// Queues a lifecycle message on the owning worker (never fails).
    pub fn control(&self, msg: Control) {
        self.inbox().control(msg);
    }

    /// Queues work on the owning worker; returns it back when its inbox is full.
    pub fn work(&self, msg: Work) -> Result<(), Work> {
        self.inbox().work(msg)
    }

    /// Points the session at another worker (called by the sim after handing the
    /// player over; out-of-range indices are ignored).
    pub(crate) fn set(&self, worker: usize) {
        if worker < self.inboxes.len() {
            self.worker.store(worker, Ordering::Release);
        }
    }
}

/// What a session's route can be made from: a [`Route`] itself, or a single worker's
/// inbox (a fixed route).
pub trait IntoRoute {
    /// The route.
    fn into_route(self) -> Arc<Route>;
}

impl IntoRoute for &Arc<Route> {
    fn into_route(self) -> Arc<Route> {
        self.clone()
    }
}

impl IntoRoute for &Arc<Inbox> {
    fn into_route(self) -> Arc<Route> {
        Route::fixed(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inboxes(n: usize) -> Vec<Arc<Inbox>> {
        (0..n).map(|_| Arc::new(Inbox::new(4))).collect()
    }

    #[test]
    fn the_tick_cost_is_a_moving_average_of_busy_time() {
        let b = Inbox::new(4);
        assert_eq!(b.tick_cost_us(), 0, "nothing measured yet");
        b.record_tick(1000);
        assert_eq!(b.tick_cost_us(), 1000, "the first tick sets it");
        b.record_tick(33_000);
        assert_eq!(
            b.tick_cost_us(),
            2000,
            "one slow tick moves it by 1/32 of the gap"
        );
        for _ in 0..400 {
            b.record_tick(100);
        }
        assert!(b.tick_cost_us() < 150, "{}", b.tick_cost_us());
        for _ in 0..400 {
            b.record_tick(0);
        }
        assert_eq!(b.tick_cost_us(), 1, "an idle worker stays measured");
    }

    #[test]
    fn before_any_measurement_the_fewest_players_win() {
        let b = inboxes(3);
        assert_eq!(pick_worker(&b, 1666), 0, "all equal: the first");
        b[0].players.store(2, Ordering::Relaxed);
        b[1].players.store(1, Ordering::Relaxed);
        b[2].players.store(1, Ordering::Relaxed);
        assert_eq!(pick_worker(&b, 1666), 1);
        assert_eq!(pick_worker(&[], 1666), 0);
    }

    #[test]
    fn a_measurably_busier_worker_gets_no_new_session_however_few_players_it_has() {
        let b = inboxes(2);
        // Worker 0: 3 players in a crowded fight, 6 ms a tick; worker 1: 10 idle players
        // in town, 1 ms a tick.
        b[0].players.store(3, Ordering::Relaxed);
        b[0].record_tick(6000);
        b[1].players.store(10, Ordering::Relaxed);
        b[1].record_tick(1000);
        assert_eq!(pick_worker(&b, 1666), 1, "by cost, not count");
        // Within the tolerance the costs count as equal: the player count decides.
        b[0].tick_cost_us.store(2500, Ordering::Relaxed);
        assert_eq!(pick_worker(&b, 1666), 0);
        // The route of the Sim uses the same choice.
        let shared: Arc<[Arc<Inbox>]> = Arc::from(b.clone());
        let r = Route::new(shared.clone(), pick_worker(&shared, 1666));
        assert_eq!(r.worker(), 0);
    }
}
