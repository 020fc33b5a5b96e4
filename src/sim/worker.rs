//! One simulation worker: a fixed-timestep loop over the zone instances it owns.
//!
//! Tick stages, in order:
//! 1. drain lifecycle messages (join → `Welcome`, leave, detach/attach, drain → `Goaway`);
//! 2. drain inputs and requests queued since the last tick (bounded by what was queued
//!    when the stage began, so a flood cannot starve the tick); game requests are queued
//!    into their world, server requests (ping, inventory, parties) answered at once;
//! 3. step every instance's world, then deliver its events: private ones to their player,
//!    combat log and drops to the whole instance, request completions as responses;
//! 4. move players whose world asked for a transfer (portal, death) to their instance of
//!    the target zone (their party's, if any); in a cluster, an overloaded server instead
//!    hands a player whose new dungeon instance goes to a peer to the placer, once its
//!    item operations are settled (see "Placing new instances" in [`crate::placement`]);
//! 5. hand over to another worker the players that follow their party there (see
//!    [`Migrant`]), once their in-flight requests and item operations are settled;
//! 6. on snapshot ticks, encode each instance's snapshot once and hand the same `Bytes`
//!    to every member's connection.
//!
//! The worker's rooms: this file holds its state, the tick loop and its construction;
//! `events` the event fan-out and what it makes durable, `sessions` joining, transfers
//! and leaving, `persistence` checkpoints and store replies, `migration` work routing,
//! migration between workers and handoff to peers, `requests` game and party requests
//! and snapshots. Each is an `impl Worker` block.

mod events;
mod migration;
mod persistence;
mod phase;
mod requests;
mod sessions;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use zonehost_game::{
    Content, Event as GameEvent, InventoryChange, ItemId, Parties, PartyChange, PartyId,
    PlayerState, RequestKind, World, MAX_SPEED_MMS,
};
use zonehost_protocol::frame::encode_frame;
use zonehost_protocol::message::{
    close_code, snapshot_divisor, Event, Goaway, PartyEvent, Reject, RejectCode, Request,
    RequestError, Response, ServerMsg, Welcome,
};
use zonehost_protocol::snapshot::{EntityState, PlayerAck};
use zonehost_protocol::token::player_id;

use self::phase::{best_phase, snapshot_due, snapshot_period, InputArrivals, PHASE_REVIEW_TICKS};
use super::persist::{self, HeldResponse, Persist, PersistSettings};
use super::ports::{Handoff, HandoffSink, InstancePlacement, PartyCall, PartyHandle};
use super::snapshots::{ClientBaselines, InstanceSnapshots, SnapshotScratch};
use super::wire;
use super::{Control, Handover, Inbox, Join, Outgoing, SessionId, Work};
use crate::config::Config;
use crate::session::{Registry, ResumeMinter};
use crate::store::trade::TradeOutcome;
use crate::store::writer::{StoreHandle, StoreReply};
use crate::store::{
    ItemOp, ItemOpKind, ItemOutcome, ItemRecord, Owner, PlayerRecord, SaveOutcome, StoreError,
    TradeLeg, TradeRecord, TradeState,
};
use crate::telemetry::DropCause;
use crate::telemetry::{DisconnectCause, Stats};

/// Instance ids are unique per process.
static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(1);

/// A worker's fixed parameters.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Worker index (thread name, logs).
    pub index: usize,
    /// Tick period.
    pub tick: Duration,
    /// Ticks per second.
    pub tick_rate_hz: u16,
    /// Snapshots per second.
    pub snapshot_rate_hz: u16,
    /// Snapshot every this many ticks.
    pub ticks_per_snapshot: u32,
    /// Catch-up limit.
    pub max_catchup_ticks: u32,
    /// Reconnect delay announced in `Goaway`.
    pub reconnect_after_ms: u32,
    /// Zone templates; new players start in its town.
    pub content: Arc<Content>,
    /// Mixed into every instance seed so item ids never repeat across restarts.
    pub seed_salt: u64,
    /// How long a session whose connection was lost waits for a resume.
    pub resume_grace: Duration,
    /// Mints the resume token of each `Welcome`.
    pub resume: Arc<ResumeMinter>,
    /// Parties, shared by all workers (touched only by party requests and leaves).
    pub parties: Arc<Mutex<Parties>>,
    /// Radius around a player within which it is sent monsters and items (its party's
    /// players are always sent), millimetres.
    pub interest_radius_mm: u32,
}

impl WorkerSettings {
    /// Settings of worker `index` from the validated config.
    pub fn from_config(
        index: usize,
        config: &Config,
        content: Arc<Content>,
        resume: Arc<ResumeMinter>,
        parties: Arc<Mutex<Parties>>,
        seed_salt: u64,
    ) -> Self {
        Self {
            index,
            tick: Duration::from_secs(1) / u32::from(config.tick_rate_hz),
            tick_rate_hz: config.tick_rate_hz,
            snapshot_rate_hz: config.snapshot_rate_hz,
            ticks_per_snapshot: config.ticks_per_snapshot(),
            max_catchup_ticks: config.max_catchup_ticks.max(1),
            reconnect_after_ms: config.reconnect_after_ms,
            content,
            seed_salt,
            resume_grace: Duration::from_millis(config.resume_grace_ms),
            resume,
            parties,
            interest_radius_mm: config.interest_radius_mm,
        }
    }
}

/// Receive times of inputs not yet applied, kept for the action-latency stage metrics.
const PENDING_INPUT_TIMES: usize = 16;
/// Game requests awaiting their completion event, per member (the world queues at most 8).
const PENDING_REQUESTS: usize = 16;
/// Due checkpoints are looked for every this many ticks.
const CHECKPOINT_POLL_TICKS: u64 = 6;
/// Whether the response to a request of this kind waits for the store (item operations,
/// equipment).
fn waits_for_store(kind: RequestKind) -> bool {
    matches!(
        kind,
        RequestKind::PickUp
            | RequestKind::Drop
            | RequestKind::UseItem
            | RequestKind::Equip
            | RequestKind::Unequip
    )
}
/// A migrating player's game requests that arrive during its handover travel with it, at
/// most this many (beyond: answered `RateLimited`).
const PARKED_REQUESTS: usize = 16;
/// A migrating player's requests still awaiting their completion event delay its
/// handover at most this long (item operations in flight always settle first).
const MIGRATION_SETTLE: Duration = Duration::from_secs(2);

/// Longest a party handoff waits for the member to settle before its session ends anyway
/// (the party directory waits 5 s for the final checkpoint).
const HANDOFF_SETTLE_MAX: Duration = Duration::from_secs(3);
/// How many times a migrant may be passed on to the worker its leader moved to.
const MIGRATION_HOPS: u8 = 2;
/// A worker forwards messages for a session it handed over for this long (messages the
/// connection tasks queued before they saw the new route).
const FORWARD_FOR: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Member {
    session: SessionId,
    entity: u32,
    /// The session's join, held in place (not boxed): the connection and the outbox are
    /// read for every member on every snapshot tick, and a box was one more cache miss
    /// per member in perf annotate of the 1000-bot server.
    join: Join,
    /// `(newest sequence of a datagram, when it was received)`, oldest first.
    pending: VecDeque<(u32, Instant)>,
    /// Receive time of the oldest input applied since the last snapshot.
    applied_since_snapshot: Option<Instant>,
    /// Newest snapshot tick (of this worker) whose round trip was recorded; snapshots of
    /// ticks up to here are not measured again (set to the worker's tick on arrival, so
    /// ticks of another worker are never looked up here).
    acked_tick: u32,
    /// Newest snapshot tick the client reported having completely (its last input's
    /// `ack_tick`): the baseline of its next delta.
    reported_tick: u32,
    /// The interests this client was sent at recent snapshot ticks.
    baselines: ClientBaselines,
    /// When the connection was lost; the member waits for a resume until the grace ends.
    detached_at: Option<Instant>,
    /// Game requests queued in the world: `(request id, received at)` (the kind comes
    /// back with the world's `RequestDone`).
    requests: VecDeque<(u32, Instant)>,
    /// Position at the last checkpoint (a move makes the player dirty).
    saved_pos: (i32, i32),
    /// A handover to another worker is pending: `(worker, goal, since)`.
    migrating: Option<(usize, Goal, Instant)>,
    /// Game requests that arrived while the handover was pending (applied by the new
    /// worker).
    parked: Vec<Work>,
    /// On which tick of its snapshot period the client's inputs are applied.
    arrivals: InputArrivals,
    /// The connection's snapshot divisor (`Request::SnapshotRate`), kept here because it
    /// is read for every member on every snapshot tick; `join.shared` holds it for the
    /// connection across workers and is written alongside.
    snapshot_divisor: u16,
}

impl Member {
    fn new(session: SessionId, entity: u32, join: Join) -> Self {
        Self {
            snapshot_divisor: join.shared.snapshot_divisor(),
            session,
            entity,
            join,
            // Both queues are bounded by their `len` checks and hold a few entries in play:
            // they grow on demand instead of reserving their bounds (768 bytes a member).
            pending: VecDeque::new(),
            applied_since_snapshot: None,
            acked_tick: 0,
            reported_tick: 0,
            baselines: ClientBaselines::default(),
            detached_at: None,
            requests: VecDeque::new(),
            saved_pos: (i32::MIN, i32::MIN),
            migrating: None,
            parked: Vec::new(),
            arrivals: InputArrivals::default(),
        }
    }

    /// Gives the member a resuming connection's join, and that connection's divisor.
    fn rejoin(&mut self, join: Join) {
        self.snapshot_divisor = join.shared.snapshot_divisor();
        self.join = join;
    }

    /// Sends this connection every `k`-th snapshot: the shared record, which follows the
    /// connection to other workers, and the member's copy, written together.
    fn set_snapshot_divisor(&mut self, k: u16) {
        self.join.shared.set_snapshot_divisor(k);
        self.snapshot_divisor = self.join.shared.snapshot_divisor();
    }
}

/// Metric handles resolved once per worker (no registry lookup per sample).
#[derive(Debug)]
struct Meters {
    tick_duration: metrics::Histogram,
    tick_lateness: metrics::Histogram,
    input_apply: metrics::Histogram,
    input_to_snapshot: metrics::Histogram,
    snapshot_bytes: metrics::Histogram,
    input_age: metrics::Histogram,
    snapshot_round_trip: metrics::Histogram,
}

impl Meters {
    fn new() -> Self {
        Self {
            tick_duration: metrics::histogram!("zonehost_tick_duration_seconds"),
            tick_lateness: metrics::histogram!("zonehost_tick_lateness_seconds"),
            input_apply: metrics::histogram!("zonehost_input_apply_seconds"),
            input_to_snapshot: metrics::histogram!("zonehost_input_to_snapshot_seconds"),
            snapshot_bytes: metrics::histogram!("zonehost_snapshot_bytes"),
            input_age: metrics::histogram!("zonehost_input_age_seconds"),
            snapshot_round_trip: metrics::histogram!("zonehost_snapshot_round_trip_seconds"),
        }
    }
}

/// How many snapshot ticks [`SnapshotTimes`] remembers: 1024 ticks are 17 s at 60 Hz, far
/// beyond any round trip a player would sit through.
const SNAPSHOT_TIMES: usize = 1024;

/// When this worker sent the snapshots of its recent ticks: a fixed ring indexed by tick,
/// so the round trip of an acknowledged snapshot is a lookup, not an allocation.
#[derive(Debug)]
struct SnapshotTimes {
    ring: Box<[(u32, Option<Instant>)]>,
}

impl SnapshotTimes {
    fn new() -> Self {
        Self {
            ring: vec![(0, None); SNAPSHOT_TIMES].into_boxed_slice(),
        }
    }

    /// Remembers that the snapshots of `tick` were sent at `at`.
    fn sent(&mut self, tick: u32, at: Instant) {
        self.ring[tick as usize % SNAPSHOT_TIMES] = (tick, Some(at));
    }

    /// When the snapshots of `tick` were sent, if still remembered.
    fn sent_at(&self, tick: u32) -> Option<Instant> {
        match self.ring[tick as usize % SNAPSHOT_TIMES] {
            (t, Some(at)) if t == tick => Some(at),
            _ => None,
        }
    }
}

/// Who an instance belongs to: a solo player or a party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum InstanceOwner {
    Player(u64),
    Party(PartyId),
}

#[derive(Debug)]
struct Instance {
    id: u32,
    key: (u16, InstanceOwner),
    world: World,
    members: Vec<Member>,
    /// Snapshot history and this tick's encodings.
    snaps: InstanceSnapshots,
    /// Where in the snapshot period this instance's snapshots go (`phase::snapshot_due`):
    /// its id at first, then the tick its members' inputs arrive on.
    snapshot_phase: u32,
    acks: Vec<PlayerAck>,
    /// Items on this instance's ground that the store knows as `Ground { instance }`
    /// (dropped by a player). Loot the monsters drop is never stored until picked up.
    ground_stored: HashSet<u128>,
}

impl Instance {
    /// Adds a member. The first gets room for exactly one (most instances are solo
    /// play; a pushed empty Vec reserves four members).
    fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.members.reserve_exact(1);
        }
        self.members.push(member);
    }

    /// Takes `session`'s member out of the member list (its entity stays in the world).
    fn take_member(&mut self, session: SessionId) -> Option<Member> {
        let pos = self.members.iter().position(|m| m.session == session)?;
        Some(self.members.swap_remove(pos))
    }
}

/// Where a loaded player starts.
#[derive(Debug)]
struct Loaded {
    state: PlayerState,
    zone: Option<u16>,
    pos: Option<(i32, i32)>,
}

/// Where a migrating player goes on its new worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Into the instance of its party's leader (it joined the party); `zone` is where it
    /// stands, used if the leader is not found.
    Leader {
        leader: u64,
        party: PartyId,
        zone: u16,
    },
    /// Into its party's instance of this zone (it took a portal or died).
    Zone(u16),
}

/// A live player handed from one sim worker of a server to another (its party lives
/// there): the session, its world state (exported from the old worker's world, imported
/// into the new one) and the requests that arrived during the handover. It travels in
/// [`Control::Migrate`] through the lock-free control queue; nothing is shared. A
/// migrant leaves only once its item operations are committed or resolved, so the old
/// worker has nothing left to answer or undo for it.
#[derive(Debug)]
pub struct Migrant {
    member: Member,
    state: PlayerState,
    last_input: u32,
    goal: Goal,
    hops: u8,
}

/// A player leaving an instance for another zone.
#[derive(Debug)]
struct Transfer {
    session: SessionId,
    to_zone: u16,
}

/// A player whose new instance goes to a peer ([`crate::placement::InstancePlacer`]),
/// waiting until its requests and item operations are settled (as a migrant does) before
/// it is saved in the new zone and handed off.
#[derive(Debug)]
struct Placing {
    session: SessionId,
    to_zone: u16,
    /// The peer (`server_id`, address).
    to: (String, std::net::SocketAddr),
    since: Instant,
}

/// The worker's state; lives on its own thread ([`Worker::run`]) or is stepped by a test
/// ([`Worker::tick`]).
#[derive(Debug)]
pub struct Worker {
    settings: WorkerSettings,
    inbox: Arc<Inbox>,
    stats: Arc<Stats>,
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    /// Boxed: the table keeps a pointer per slot, not a 640-byte instance (its unused
    /// slots are up to half the table after it doubles).
    instances: HashMap<u32, Box<Instance>>,
    by_key: HashMap<(u16, InstanceOwner), u32>,
    sessions: HashMap<SessionId, u32>,
    draining: bool,
    ticks: u64,
    meters: Meters,
    /// When the snapshots of recent ticks were sent, by tick (see [`SnapshotTimes`]).
    snapshot_times: SnapshotTimes,
    /// Buffers of the per-client snapshot encoding, reused every tick.
    snapshot_scratch: SnapshotScratch,
    transfers: Vec<Transfer>,
    /// Persistence; `None` runs without a store (tests that step a worker).
    persist: Option<Persist>,
    /// Drain by migration: where handed-off sessions go, once set.
    handoffs: Option<Arc<dyn HandoffSink>>,
    /// Handed-off sessions whose final checkpoint is in flight.
    handoffs_waiting: HashMap<SessionId, Handoff>,
    /// The inboxes of every worker of this server, by index (`None`: a worker alone).
    peers: Option<Arc<[Arc<Inbox>]>>,
    /// Sessions handed to another worker: `(worker, when)`; their stray messages are
    /// forwarded there.
    forwarded: HashMap<SessionId, (usize, Instant)>,
    /// Work for sessions unknown here, retried once after the next lifecycle stage (a
    /// migrant's work can overtake its `Migrate`), and for as long as its session loads
    /// (requests pipelined behind a `Hello`).
    deferred: Vec<Work>,
    /// Sessions with a handover pending (stage 5).
    migrating: Vec<SessionId>,
    /// The party directory (cluster mode): party requests and session ends go there.
    directory: Option<PartyHandle>,
    /// Placement of new instances on peers (cluster mode with `place_instances`).
    placer: Option<Arc<dyn InstancePlacement>>,
    /// Players whose new instance goes to a peer, until they are settled (stage 4).
    placing: Vec<Placing>,
    /// Party members to hand to their leader's server, with when it was asked, until they
    /// are settled (stage 4; see [`Worker::hand_off_settled`]).
    party_handoffs: Vec<(SessionId, Instant)>,
    /// The time of the current tick ([`Worker::tick_at`]): what the tick's stages stamp
    /// their waits with.
    now: Instant,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn frame(msg: &ServerMsg) -> Option<Bytes> {
    match encode_frame(msg) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "encoding a server message failed");
            None
        }
    }
}

/// Queues a frame on a session's outbox; a full outbox closes the connection (slow reader).
fn send(join: &Join, frame: Bytes) {
    match join.outbox.try_send(Outgoing::Frame(frame)) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(_)) => {
            join.shared.set_cause(DisconnectCause::SlowReader);
            join.conn.close(close_code::SLOW_READER, b"slow reader");
        }
    }
}

fn respond(join: &Join, id: u32, body: Result<Response, RequestError>) {
    if let Some(f) = frame(&ServerMsg::Response { id, body }) {
        send(join, f);
    }
}

impl Worker {
    /// A worker draining `inbox`; `stop` ends [`Worker::run`].
    pub fn new(
        settings: WorkerSettings,
        inbox: Arc<Inbox>,
        stats: Arc<Stats>,
        registry: Arc<Registry>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            settings,
            inbox,
            stats,
            registry,
            stop,
            instances: HashMap::new(),
            by_key: HashMap::new(),
            sessions: HashMap::new(),
            draining: false,
            ticks: 0,
            meters: Meters::new(),
            snapshot_times: SnapshotTimes::new(),
            snapshot_scratch: SnapshotScratch::default(),
            transfers: Vec::new(),
            persist: None,
            handoffs: None,
            handoffs_waiting: HashMap::new(),
            peers: None,
            forwarded: HashMap::new(),
            deferred: Vec::new(),
            migrating: Vec::new(),
            directory: None,
            placer: None,
            placing: Vec::new(),
            party_handoffs: Vec::new(),
            now: Instant::now(),
        }
    }

    /// Places the new dungeon instances of zone changes by load (see "Placing new
    /// instances" in [`crate::placement`]): while the server is overloaded such a player is
    /// saved in the new zone and handed to `placer`'s queue for its `Redirect` to a peer.
    pub fn with_placer(mut self, placer: Arc<dyn InstancePlacement>) -> Self {
        self.placer = Some(placer);
        self
    }

    /// Sends party requests and session ends to the party directory (cluster mode)
    /// instead of deciding them on the shared registry, which then only mirrors it.
    pub fn with_directory(mut self, directory: PartyHandle) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Lets this worker hand players over to the other workers of its server: `inboxes`
    /// are every worker's, by index (this worker's own at its `index`).
    pub fn with_peers(mut self, inboxes: Arc<[Arc<Inbox>]>) -> Self {
        self.peers = Some(inboxes);
        self
    }

    /// Persists this worker's players through `handle`: logins load the player, dirty
    /// players are checkpointed, item operations are committed before they are answered.
    pub fn with_store(mut self, handle: StoreHandle, settings: PersistSettings) -> Self {
        self.persist = Some(Persist::new(handle, settings));
        self
    }

    /// The fixed-timestep loop: ticks at `start + k * period`; when late it runs up to
    /// `max_catchup_ticks` back to back, and beyond that skips ahead (counted) instead of
    /// drifting.
    pub fn run(mut self) {
        let period = self.settings.tick;
        let mut next = Instant::now() + period;
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            let mut ran = 0;
            while next <= Instant::now() && ran < self.settings.max_catchup_ticks {
                let late = Instant::now().saturating_duration_since(next);
                if late > period {
                    Stats::inc(&self.stats.ticks_late);
                }
                let started = Instant::now();
                self.tick_at(started);
                let busy = started.elapsed();
                let busy_us = busy.as_micros() as u64;
                self.stats
                    .tick_busy_us
                    .fetch_add(busy_us, Ordering::Relaxed);
                if let Some(w) = self.stats.workers.get(self.settings.index) {
                    w.busy_us.fetch_add(busy_us, Ordering::Relaxed);
                }
                // Where new sessions go (`Sim::least_loaded`) follows this average.
                self.inbox.record_tick(busy_us);
                self.meters.tick_duration.record(busy.as_secs_f64());
                self.meters.tick_lateness.record(late.as_secs_f64());
                next += period;
                ran += 1;
            }
            let now = Instant::now();
            if next <= now {
                let behind = (now - next).as_nanos() / period.as_nanos().max(1) + 1;
                self.stats
                    .ticks_skipped
                    .fetch_add(behind as u64, Ordering::Relaxed);
                next += period * behind as u32;
            }
        }
        // Connections are closing; release what is left.
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for s in sessions {
            self.leave(s);
        }
        // Hand the last checkpoints to the store worker (it executes everything queued
        // before it stops); a full queue gets a bounded wait.
        if let Some(p) = self.persist.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(5);
            p.flush_backlog();
            while p.backlog_len() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                p.flush_backlog();
            }
            if p.backlog_len() > 0 {
                tracing::error!(
                    commands = p.backlog_len(),
                    "store queue still full at stop: last checkpoints lost"
                );
            }
        }
    }

    /// Runs one tick now (see [`Worker::tick_at`]).
    pub fn tick(&mut self) {
        self.tick_at(Instant::now());
    }

    /// Runs one tick at `now`: lifecycle messages, queued work, world steps and events,
    /// zone transfers, snapshots. `now` decides the tick's timeouts (resume grace, settle
    /// limits, checkpoint intervals, forwarding), so a test can step time; the latency
    /// metrics still read the clock.
    pub fn tick_at(&mut self, now: Instant) {
        self.now = now;
        self.ticks += 1;
        Stats::inc(&self.stats.ticks);
        self.poll_store();
        while let Some(msg) = self.inbox.control.pop() {
            let msg = match self.forward_control(msg) {
                Some(msg) => msg,
                None => continue,
            };
            match msg {
                Control::Join(join) => self.join(join),
                Control::Leave { session } => self.leave(session),
                Control::Detach { session } => self.detach(session, now),
                Control::Attach(join) => self.attach(join),
                Control::Drain => self.drain(),
                Control::DrainToPeers(handoffs) => self.drain_to_peers(handoffs),
                Control::Migrate(h) => match h.open::<Migrant>() {
                    Some(m) => self.migrate_in(m),
                    None => tracing::error!("a handover that holds no migrant"),
                },
                Control::PartyJoined { party, player } => {
                    self.set_party_in_worlds(player, Some(party));
                    self.join_leader_instance(party, player);
                }
                Control::PartyLeft { player } => self.set_party_in_worlds(player, None),
                // Handed off once settled (stage 4), like a placement: the final checkpoint
                // then carries the outcome of every item operation.
                Control::Handoff { session } => {
                    self.party_handoffs.push((session, now));
                }
            }
        }
        for work in std::mem::take(&mut self.deferred) {
            self.route_work(work, false);
        }
        for _ in 0..self.inbox.work.len() {
            let Some(work) = self.inbox.work.pop() else {
                break;
            };
            self.route_work(work, true);
        }
        // The input-apply latency reads the clock: receive times are real.
        let applied_at = Instant::now();
        let mut expired = Vec::new();
        for inst in self.instances.values_mut() {
            inst.world.step();
            Self::deliver_events(inst, &mut self.transfers, self.persist.as_mut());
            if let Some(p) = self.persist.as_mut() {
                Self::mark_dirty(inst, p, now);
            }
            for m in &mut inst.members {
                if let Some(at) = m.detached_at {
                    if now.saturating_duration_since(at) >= self.settings.resume_grace {
                        expired.push(m.session);
                    }
                    continue;
                }
                let applied = inst.world.last_input(m.entity).unwrap_or(0);
                while let Some(&(seq, received)) = m.pending.front() {
                    if seq > applied {
                        break;
                    }
                    m.pending.pop_front();
                    self.meters
                        .input_apply
                        .record(applied_at.saturating_duration_since(received).as_secs_f64());
                    m.applied_since_snapshot.get_or_insert(received);
                }
            }
        }
        for session in expired {
            tracing::debug!(session, "resume grace over; session closed");
            self.leave(session);
        }
        for t in std::mem::take(&mut self.transfers) {
            self.transfer(t.session, t.to_zone);
        }
        if !self.placing.is_empty() {
            self.place_settled(now);
        }
        if !self.party_handoffs.is_empty() {
            self.hand_off_settled(now);
        }
        if !self.migrating.is_empty() {
            self.migrate_settled(now);
        }
        if self.ticks % 64 == 0 && !self.forwarded.is_empty() {
            self.forwarded
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < FORWARD_FOR);
        }
        if self.ticks % CHECKPOINT_POLL_TICKS == 0 {
            self.checkpoint_due(now);
        }
        if self.ticks % PHASE_REVIEW_TICKS == 0 {
            self.review_snapshot_phases();
        }
        self.send_snapshots();
    }
}

#[cfg(test)]
mod tests;
