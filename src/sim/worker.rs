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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use zonehost_game::{
    Content, Event as GameEvent, InventoryChange, ItemId, Parties, PartyChange, PartyId,
    PlayerState, World, MAX_SPEED_MMS,
};
use zonehost_protocol::frame::encode_frame;
use zonehost_protocol::message::{
    close_code, Event, Goaway, PartyEvent, Reject, RejectCode, Request, RequestError, Response,
    ServerMsg, Welcome,
};
use zonehost_protocol::snapshot::{encode_snapshot, EntityState, PlayerAck};
use zonehost_protocol::token::player_id;

use super::persist::{self, Held, PendingLoad, Persist, PersistSettings};
use super::wire;
use super::{Control, Inbox, Join, Outgoing, SessionId, Work};
use crate::cluster::{Handoff, Handoffs};
use crate::config::Config;
use crate::session::{Registry, ResumeMinter};
use crate::store::trade::TradeOutcome;
use crate::store::writer::{StoreCommand, StoreHandle, StoreReply};
use crate::store::{
    ItemOp, ItemOpKind, ItemOutcome, ItemRecord, Owner as StoreOwner, PlayerRecord, SaveOutcome,
    StoreError, TradeLeg, TradeRecord, TradeState,
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
        }
    }
}

/// Receive times of inputs not yet applied, kept for the action-latency stage metrics.
const PENDING_INPUT_TIMES: usize = 16;
/// Game requests awaiting their completion event, per member (the world queues at most 8).
const PENDING_REQUESTS: usize = 16;
/// Due checkpoints are looked for every this many ticks.
const CHECKPOINT_POLL_TICKS: u64 = 6;
/// Request kinds whose response waits for the store (item operations, equipment).
const DURABLE_KINDS: [&str; 5] = ["pick_up", "drop", "use_item", "equip", "unequip"];
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
    join: Box<Join>,
    /// `(newest sequence of a datagram, when it was received)`, oldest first.
    pending: VecDeque<(u32, Instant)>,
    /// Receive time of the oldest input applied since the last snapshot.
    applied_since_snapshot: Option<Instant>,
    /// Newest snapshot tick (of this worker) whose round trip was recorded; snapshots of
    /// ticks up to here are not measured again (set to the worker's tick on arrival, so
    /// ticks of another worker are never looked up here).
    acked_tick: u32,
    /// When the connection was lost; the member waits for a resume until the grace ends.
    detached_at: Option<Instant>,
    /// Game requests queued in the world: `(request id, kind, received at)`.
    requests: VecDeque<(u32, &'static str, Instant)>,
    /// Position at the last checkpoint (a move makes the player dirty).
    saved_pos: (i32, i32),
    /// A handover to another worker is pending: `(worker, goal, since)`.
    migrating: Option<(usize, Goal, Instant)>,
    /// Game requests that arrived while the handover was pending (applied by the new
    /// worker).
    parked: Vec<Work>,
}

impl Member {
    fn new(session: SessionId, entity: u32, join: Box<Join>) -> Self {
        Self {
            session,
            entity,
            join,
            pending: VecDeque::with_capacity(PENDING_INPUT_TIMES),
            applied_since_snapshot: None,
            acked_tick: 0,
            detached_at: None,
            requests: VecDeque::with_capacity(PENDING_REQUESTS),
            saved_pos: (i32::MIN, i32::MIN),
            migrating: None,
            parked: Vec::new(),
        }
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
enum Owner {
    Player(u64),
    Party(PartyId),
}

#[derive(Debug)]
struct Instance {
    id: u32,
    key: (u16, Owner),
    world: World,
    members: Vec<Member>,
    entities: Vec<EntityState>,
    acks: Vec<PlayerAck>,
    datagrams: Vec<Bytes>,
    /// Items on this instance's ground that the store knows as `Ground { instance }`
    /// (dropped by a player). Loot the monsters drop is never stored until picked up.
    ground_stored: HashSet<u128>,
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
    instances: HashMap<u32, Instance>,
    by_key: HashMap<(u16, Owner), u32>,
    sessions: HashMap<SessionId, u32>,
    draining: bool,
    ticks: u64,
    meters: Meters,
    /// When the snapshots of recent ticks were sent, by tick (see [`SnapshotTimes`]).
    snapshot_times: SnapshotTimes,
    transfers: Vec<Transfer>,
    /// Persistence; `None` runs without a store (tests that step a worker).
    persist: Option<Persist>,
    /// Drain by migration: where handed-off sessions go, once set.
    handoffs: Option<Arc<Handoffs>>,
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
    directory: Option<crate::parties::PartyHandle>,
    /// Placement of new instances on peers (cluster mode with `place_instances`).
    placer: Option<crate::placement::InstancePlacer>,
    /// Players whose new instance goes to a peer, until they are settled (stage 4).
    placing: Vec<Placing>,
    /// Party members to hand to their leader's server, with when it was asked, until they
    /// are settled (stage 4; see [`Worker::hand_off_settled`]).
    party_handoffs: Vec<(SessionId, Instant)>,
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
        }
    }

    /// Places the new dungeon instances of zone changes by load (see "Placing new
    /// instances" in [`crate::placement`]): while the server is overloaded such a player is
    /// saved in the new zone and handed to `placer`'s queue for its `Redirect` to a peer.
    pub fn with_placer(mut self, placer: crate::placement::InstancePlacer) -> Self {
        self.placer = Some(placer);
        self
    }

    /// Sends party requests and session ends to the party directory (cluster mode)
    /// instead of deciding them on the shared registry, which then only mirrors it.
    pub fn with_directory(mut self, directory: crate::parties::PartyHandle) -> Self {
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
                self.tick();
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

    /// Runs one tick: lifecycle messages, queued work, world steps and events, zone
    /// transfers, snapshots.
    pub fn tick(&mut self) {
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
                Control::Detach { session } => self.detach(session),
                Control::Attach(join) => self.attach(join),
                Control::Drain => self.drain(),
                Control::DrainToPeers(handoffs) => self.drain_to_peers(handoffs),
                Control::Migrate(m) => self.migrate_in(m),
                Control::PartyJoined { party, player } => {
                    self.set_party_in_worlds(player, Some(party));
                    self.join_leader_instance(party, player);
                }
                Control::PartyLeft { player } => self.set_party_in_worlds(player, None),
                // Handed off once settled (stage 4), like a placement: the final checkpoint
                // then carries the outcome of every item operation.
                Control::Handoff { session } => {
                    self.party_handoffs.push((session, Instant::now()));
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
        let now = Instant::now();
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
                        .record(now.saturating_duration_since(received).as_secs_f64());
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
        if self.ticks % u64::from(self.settings.ticks_per_snapshot) == 0 {
            self.send_snapshots();
        }
    }

    /// Sends one step's events: private ones to their player, instance-wide ones to every
    /// member, request completions as responses; collects transfers. With a store, item
    /// changes become item operations (pick-up: `Create` for loot, `Transfer` for an item a
    /// player dropped; drop: `Transfer` to the ground; use: `Destroy`), equipment changes
    /// a checkpoint, and the response to such a request is held until the store commits.
    fn deliver_events(
        inst: &mut Instance,
        transfers: &mut Vec<Transfer>,
        mut persist: Option<&mut Persist>,
    ) {
        // (player id, token) of the durable command submitted for the latest inventory
        // change of this step; the request that caused it completes right after it.
        let mut last_durable: Option<(u64, u64)> = None;
        // (both sides' player ids, token) of the trade reserved by the latest acceptance:
        // the acceptance's response waits for the store's trade.
        let mut last_trade: Option<([u64; 2], u64)> = None;
        // Without a store a reserved trade completes at once.
        let mut undurable_trades = Vec::new();
        for ev in inst.world.events() {
            if let GameEvent::TradeReady { manifest } = ev {
                match persist.as_deref_mut() {
                    Some(p) => {
                        let record = Self::trade_record(p, manifest);
                        let players = record.players;
                        let token = p.trade(record, inst.id, manifest.trade);
                        last_trade = Some((players, token));
                    }
                    None => undurable_trades.push(manifest.trade),
                }
                continue;
            }
            if let Some(p) = persist.as_deref_mut() {
                match ev {
                    GameEvent::Inventory {
                        entity,
                        player_id,
                        change,
                    } => {
                        let token = Self::persist_change(
                            p,
                            &inst.world,
                            &inst.members,
                            &mut inst.ground_stored,
                            inst.id,
                            *entity,
                            *player_id,
                            change,
                        );
                        if let Some(t) = token {
                            last_durable = Some((*player_id, t));
                        }
                    }
                    GameEvent::ItemExpired { item, .. } if inst.ground_stored.remove(&item.0) => {
                        let op = ItemOp {
                            op_id: p.op_id(),
                            item_id: item.0,
                            kind: ItemOpKind::Destroy {
                                from: StoreOwner::Ground {
                                    instance: p.settings.store_instance(inst.id),
                                },
                            },
                        };
                        p.item_op(op, None, inst.id);
                    }
                    _ => {}
                }
            }
            match ev {
                GameEvent::RequestDone {
                    player_id,
                    request_id,
                    result,
                    kind,
                    ..
                } => {
                    let Some(m) = inst
                        .members
                        .iter_mut()
                        .find(|m| m.join.player_id == *player_id)
                    else {
                        continue;
                    };
                    let received = m
                        .requests
                        .iter()
                        .position(|(id, _, _)| id == request_id)
                        .and_then(|i| m.requests.remove(i))
                        .map(|(_, _, at)| at);
                    if let (Ok(()), Some((players, token)), Some(p), "trade_accept") =
                        (result, last_trade, persist.as_deref_mut(), *kind)
                    {
                        if players.contains(player_id) {
                            last_trade = None;
                            let held = Held {
                                session: m.session,
                                request_id: *request_id,
                                kind,
                                received: received.unwrap_or_else(Instant::now),
                            };
                            if p.hold(token, held) {
                                continue;
                            }
                        }
                    }
                    if let (Ok(()), Some((pid, token)), Some(p)) =
                        (result, last_durable, persist.as_deref_mut())
                    {
                        if pid == *player_id && DURABLE_KINDS.contains(kind) {
                            let held = Held {
                                session: m.session,
                                request_id: *request_id,
                                kind,
                                received: received.unwrap_or_else(Instant::now),
                            };
                            last_durable = None;
                            if p.hold(token, held) {
                                continue;
                            }
                        }
                    }
                    if let Some(at) = received {
                        metrics::histogram!("zonehost_request_duration_seconds", "kind" => *kind)
                            .record(at.elapsed().as_secs_f64());
                    }
                    let body = result.map(|()| Response::Done).map_err(wire::reject);
                    respond(&m.join, *request_id, body);
                }
                GameEvent::Transfer {
                    player_id, to_zone, ..
                } => {
                    if let Some(m) = inst.members.iter().find(|m| m.join.player_id == *player_id) {
                        transfers.push(Transfer {
                            session: m.session,
                            to_zone: *to_zone,
                        });
                    }
                }
                other => {
                    let Some(wire_event) = wire::event(other) else {
                        continue;
                    };
                    let Some(f) = frame(&ServerMsg::Event(wire_event)) else {
                        continue;
                    };
                    match other.player_id() {
                        Some(pid) => {
                            if let Some(m) = inst.members.iter().find(|m| m.join.player_id == pid) {
                                if m.detached_at.is_none() {
                                    send(&m.join, f);
                                }
                            }
                        }
                        None => {
                            for m in inst.members.iter().filter(|m| m.detached_at.is_none()) {
                                send(&m.join, f.clone());
                            }
                        }
                    }
                }
            }
        }
        for t in undurable_trades {
            inst.world.complete_trade(t, true);
        }
    }

    /// The store's manifest of a trade the world reserved: every item with its giver and
    /// recipient, the gold each side gives, a fresh trade id.
    fn trade_record(p: &mut Persist, m: &zonehost_game::TradeManifest) -> TradeRecord {
        let players = [m.sides[0].player_id, m.sides[1].player_id];
        let legs = m
            .sides
            .iter()
            .enumerate()
            .flat_map(|(i, side)| {
                side.items.iter().map(move |item| TradeLeg {
                    item_id: item.id.0,
                    from: players[i],
                    to: players[1 - i],
                })
            })
            .collect();
        TradeRecord {
            trade_id: p.trade_id(),
            players,
            legs,
            gold: [m.sides[0].gold, m.sides[1].gold],
            state: TradeState::Open,
            settled: false,
            opened_at_ms: persist::unix_millis(),
        }
    }

    /// Phase three of a trade: the store decided; the world hands every reserved offer to
    /// where the decision sends it, both players are checkpointed in one batch (their gold
    /// changes land together), and the acceptance is answered.
    fn trade_committed(&mut self, token: u64, result: Result<TradeOutcome, StoreError>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(mut pending) = p.trades.remove(&token) else {
            return;
        };
        let trade_id = pending.manifest.trade_id;
        let committed = match result {
            Ok(TradeOutcome::Committed) => Some(true),
            Ok(TradeOutcome::Aborted { refused }) => {
                tracing::warn!(
                    trade = trade_id,
                    ?refused,
                    "the store aborted a trade: an offered item had changed owner"
                );
                Some(false)
            }
            Err(e) if pending.attempts < persist::ITEM_OP_ATTEMPTS => {
                tracing::warn!(trade = trade_id, attempt = pending.attempts, error = %e, "trade failed; resubmitting it unchanged");
                pending.attempts += 1;
                p.submit(StoreCommand::Trade {
                    token,
                    manifest: pending.manifest.clone(),
                });
                p.trades.insert(token, pending);
                return;
            }
            Err(e) => {
                // The store's row decides what happened; recovery at the next start
                // resolves it, and logins reconcile inventories with the item table.
                tracing::error!(trade = trade_id, error = %e, "trade failed for good; offers given back in the world");
                p.settings.item_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let outcome = match committed {
            Some(true) => "committed",
            Some(false) => "aborted",
            None => "failed",
        };
        metrics::counter!("zonehost_trades_total", "outcome" => outcome).increment(1);
        let mut sessions = Vec::new();
        if let Some(inst) = self.instances.get_mut(&pending.instance) {
            match inst
                .world
                .complete_trade(pending.world_trade, committed == Some(true))
            {
                Some(u) if u.items.is_empty() && !u.gold_kept => {}
                Some(u) => tracing::info!(
                    trade = trade_id,
                    undelivered_items = u.items.len(),
                    gold_kept = u.gold_kept,
                    "a side left during the trade: its items come with its next login"
                ),
                None => tracing::error!(
                    trade = trade_id,
                    "no reserved trade in the world to complete"
                ),
            }
            sessions.extend(
                inst.members
                    .iter()
                    .filter(|m| pending.manifest.players.contains(&m.join.player_id))
                    .map(|m| m.session),
            );
        }
        self.checkpoint(&sessions);
        let body = match committed {
            Some(true) => Ok(Response::Done),
            _ => Err(RequestError::Internal),
        };
        self.answer(pending.held, body);
    }

    /// Submits what makes one inventory change durable; returns the command's token.
    #[allow(clippy::too_many_arguments)]
    fn persist_change(
        p: &mut Persist,
        world: &World,
        members: &[Member],
        ground_stored: &mut HashSet<u128>,
        instance: u32,
        entity: u32,
        player_id: u64,
        change: &InventoryChange,
    ) -> Option<u64> {
        let member = members.iter().find(|m| m.join.player_id == player_id)?;
        let me = StoreOwner::Player(player_id);
        let ground = StoreOwner::Ground {
            instance: p.settings.store_instance(instance),
        };
        let kind = match change {
            InventoryChange::PickedUp { item, .. } => {
                if ground_stored.remove(&item.id.0) {
                    ItemOpKind::Transfer {
                        from: ground,
                        to: me,
                    }
                } else {
                    match persist::encode_item(item) {
                        Ok(data) => ItemOpKind::Create { owner: me, data },
                        Err(e) => {
                            tracing::error!(player_id, error = %e, "item not persisted");
                            return None;
                        }
                    }
                }
            }
            InventoryChange::Dropped { item, .. } => {
                ground_stored.insert(item.0);
                ItemOpKind::Transfer {
                    from: me,
                    to: ground,
                }
            }
            InventoryChange::Consumed { .. } => ItemOpKind::Destroy { from: me },
            InventoryChange::Equipped { .. } | InventoryChange::Unequipped { .. } => {
                let state = world.export_player(entity)?;
                let pos = world.player_pos(entity).unwrap_or_default();
                // No fence: the player's lease is lost, nothing more is written.
                let fence = p.settings.fence_for(player_id, member.session)?;
                let record = match persist::record_of(
                    &member.join.player_name,
                    fence,
                    world.zone().id,
                    pos,
                    &state,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(player_id, error = %e, "checkpoint not built");
                        return None;
                    }
                };
                return Some(p.save(vec![record], vec![member.session]));
            }
            // The starter kit is created by the login itself; a returned drop never left
            // the player in the store; a trade was made durable by the store's trade.
            InventoryChange::Granted { .. }
            | InventoryChange::Returned { .. }
            | InventoryChange::Traded { .. } => return None,
        };
        let item_id = match change {
            InventoryChange::PickedUp { item, .. } => item.id.0,
            InventoryChange::Dropped { item, .. } | InventoryChange::Consumed { item, .. } => {
                item.0
            }
            _ => return None,
        };
        let op = ItemOp {
            op_id: p.op_id(),
            item_id,
            kind,
        };
        Some(p.item_op(op, Some(member.session), instance))
    }

    /// Marks dirty the members whose durable state or position changed this step.
    fn mark_dirty(inst: &mut Instance, p: &mut Persist, now: Instant) {
        let mut changed = Vec::new();
        inst.world.take_dirty(&mut changed);
        for m in &inst.members {
            let moved = inst
                .world
                .player_pos(m.entity)
                .is_some_and(|pos| pos != m.saved_pos);
            if moved || changed.contains(&m.join.player_id) {
                p.dirty.mark(m.session, now);
            }
        }
    }

    fn owner_of(&self, player_id: u64) -> Owner {
        let parties = self
            .settings
            .parties
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match parties.party_of(player_id) {
            Some(p) => Owner::Party(p.id),
            None => Owner::Player(player_id),
        }
    }

    /// The instance of `zone` for `owner`, created if needed.
    fn instance_for(&mut self, zone: u16, owner: Owner) -> Option<u32> {
        if let Some(id) = self.by_key.get(&(zone, owner)) {
            return Some(*id);
        }
        let template = self.settings.content.zone(zone)?;
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let seed = self.settings.seed_salt ^ (u64::from(id) << 20) ^ u64::from(zone);
        let world = World::from_template(template, seed);
        self.instances.insert(
            id,
            Instance {
                id,
                key: (zone, owner),
                world,
                members: Vec::new(),
                entities: Vec::new(),
                acks: Vec::new(),
                datagrams: Vec::new(),
                ground_stored: HashSet::new(),
            },
        );
        self.by_key.insert((zone, owner), id);
        Stats::gauge_add(&self.stats.instances_live, 1);
        Some(id)
    }

    fn remove_instance_if_empty(&mut self, id: u32) {
        if self
            .instances
            .get(&id)
            .is_some_and(|i| i.members.is_empty())
        {
            if let Some(inst) = self.instances.remove(&id) {
                if self.by_key.get(&inst.key) == Some(&id) {
                    self.by_key.remove(&inst.key);
                }
                Stats::gauge_add(&self.stats.instances_live, -1);
                // Sweep: items players dropped here go with the instance.
                if let Some(p) = self.persist.as_mut() {
                    let from = StoreOwner::Ground {
                        instance: p.settings.store_instance(id),
                    };
                    for item_id in inst.ground_stored {
                        let op = ItemOp {
                            op_id: p.op_id(),
                            item_id,
                            kind: ItemOpKind::Destroy { from },
                        };
                        p.item_op(op, None, id);
                    }
                }
            }
        }
    }

    /// Refuses a session that was never welcomed: `Reject` then close, claim released.
    fn reject_join(&self, join: &Join, code: RejectCode, reason: &str, cause: DisconnectCause) {
        let reject = ServerMsg::Reject(Reject {
            code,
            reason: reason.into(),
        });
        if let Some(frame) = frame(&reject) {
            let msg = Outgoing::CloseAfter {
                frame,
                code: close_code::REJECTED,
                cause,
            };
            let _ = join.outbox.try_send(msg);
        }
        if code != RejectCode::Draining {
            self.stats.rejected(code);
        }
        self.registry.release(join.player_id, join.session);
        self.end_lease(join.player_id, join.session);
    }

    /// A session that ends without a final checkpoint (never admitted, or its lease is
    /// lost): its ownership lease, if any, is released now.
    fn end_lease(&self, player_id: u64, session: SessionId) {
        if let Some(p) = self.persist.as_ref() {
            p.settings.session_done(player_id, session);
        }
    }

    /// A new session: with a store, load the player first (the tick never waits: the
    /// player enters when both replies have arrived, see [`Worker::finish_load`]).
    fn join(&mut self, join: Box<Join>) {
        if self.draining {
            self.reject_join(
                &join,
                RejectCode::Draining,
                "server is draining",
                DisconnectCause::Shutdown,
            );
            return;
        }
        if let Some(p) = self.persist.as_mut() {
            let token = p.token();
            let player_id = join.player_id;
            p.submit(StoreCommand::LoadPlayer { token, player_id });
            p.submit(StoreCommand::LoadItems {
                token,
                owner: StoreOwner::Player(player_id),
            });
            p.loads.insert(
                token,
                PendingLoad {
                    join,
                    record: None,
                    items: None,
                },
            );
            return;
        }
        self.admit(join, None);
    }

    /// Forgets a session still waiting for its load (its connection ended first).
    fn cancel_load(&mut self, session: SessionId) -> bool {
        let Some(p) = self.persist.as_mut() else {
            return false;
        };
        let Some(token) = p
            .loads
            .iter()
            .find(|(_, l)| l.join.session == session)
            .map(|(t, _)| *t)
        else {
            return false;
        };
        if let Some(l) = p.loads.remove(&token) {
            self.registry.release(l.join.player_id, session);
            p.settings.session_done(l.join.player_id, session);
        }
        true
    }

    /// Admits a loaded player once its record and items have both arrived.
    fn finish_load(&mut self, token: u64) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let ready = p
            .loads
            .get(&token)
            .is_some_and(|l| l.record.is_some() && l.items.is_some());
        if !ready {
            return;
        }
        let Some(l) = p.loads.remove(&token) else {
            return;
        };
        let join = l.join;
        if self.draining {
            self.reject_join(
                &join,
                RejectCode::Draining,
                "server is draining",
                DisconnectCause::Shutdown,
            );
            return;
        }
        let loaded = match (l.record, l.items) {
            (Some(Ok(record)), Some(Ok(items))) => Self::loaded_state(&join, record, &items),
            (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
            _ => return,
        };
        match loaded {
            Ok(loaded) => self.admit(join, loaded),
            Err(e) => {
                tracing::error!(
                    player = %join.player_name,
                    player_id = join.player_id,
                    error = %e,
                    "player could not be loaded; session refused"
                );
                self.reject_join(
                    &join,
                    RejectCode::Internal,
                    "your character could not be loaded",
                    DisconnectCause::Rejected,
                );
            }
        }
    }

    /// The state a login starts from: `None` for a brand-new player (starter kit), else
    /// the saved state with its inventory reconciled against the item table.
    fn loaded_state(
        join: &Join,
        record: Option<PlayerRecord>,
        items: &[ItemRecord],
    ) -> Result<Option<Loaded>, StoreError> {
        let (mut state, zone, pos) = match record {
            None if items.is_empty() => return Ok(None),
            None => (PlayerState::new(join.player_id), None, None),
            Some(r) => {
                let state = persist::state_of(&r)?;
                (state, Some(r.zone), Some((r.x_mm, r.y_mm)))
            }
        };
        let r = persist::reconcile(&mut state, items);
        if r != persist::Reconciled::default() {
            tracing::info!(
                player = %join.player_name,
                player_id = join.player_id,
                removed = r.removed,
                added = r.added,
                unplaced = r.unplaced,
                "inventory reconciled with the item table"
            );
        }
        Ok(Some(Loaded { state, zone, pos }))
    }

    /// Puts a player in the world and welcomes it: a new character (starter kit, created
    /// in the store) or a loaded one (zone and position restored when the zone exists,
    /// else the town).
    fn admit(&mut self, join: Box<Join>, loaded: Option<Loaded>) {
        let session = join.session;
        let pid = join.player_id;
        let town = self.settings.content.town().map(|t| t.id);
        let saved_zone = loaded
            .as_ref()
            .and_then(|l| l.zone)
            .filter(|z| self.settings.content.zone(*z).is_some());
        let Some(id) = saved_zone
            .or(town)
            .and_then(|zone| self.instance_for(zone, Owner::Player(join.player_id)))
        else {
            tracing::error!("content has no town zone; refusing the session");
            join.conn.close(close_code::INTERNAL, b"no start zone");
            self.registry.release(join.player_id, session);
            self.end_lease(join.player_id, session);
            return;
        };
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        let fresh = loaded.is_none();
        let entity = match loaded {
            None => Ok(inst.world.add_player(join.player_id)),
            Some(l) => {
                let restore = saved_zone.and(l.pos);
                inst.world.add_player_with_state(l.state).inspect(|&e| {
                    if let Some(pos) = restore {
                        inst.world.place_player(e, pos);
                    }
                })
            }
        };
        let entity = match entity {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    player = %join.player_name,
                    player_id = join.player_id,
                    error = %e,
                    "saved state refused by the world; session refused"
                );
                self.remove_instance_if_empty(id);
                self.reject_join(
                    &join,
                    RejectCode::Internal,
                    "your character could not be loaded",
                    DisconnectCause::Rejected,
                );
                return;
            }
        };
        if !Self::send_welcome(
            &self.settings,
            &join,
            &inst.world,
            id,
            entity,
            self.ticks as u32,
        ) {
            inst.world.remove_player(entity);
            self.registry.release(join.player_id, session);
            self.end_lease(join.player_id, session);
            self.remove_instance_if_empty(id);
            return;
        }
        if let Some(party) = self.party_id_of(join.player_id) {
            self.announce_members(party);
        }
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        // The starter kit granted by `add_player` is reported at once.
        for ev in inst.world.events() {
            if let Some(f) = wire::event(ev).and_then(|e| frame(&ServerMsg::Event(e))) {
                send(&join, f);
            }
        }
        if let (true, Some(p), Some(state)) = (
            fresh,
            self.persist.as_mut(),
            inst.world.export_player(entity),
        ) {
            let kit = state
                .inventory
                .bag
                .iter()
                .chain(state.inventory.equipment.items());
            for item in kit {
                match persist::encode_item(item) {
                    Ok(data) => {
                        let op = ItemOp {
                            op_id: p.op_id(),
                            item_id: item.id.0,
                            kind: ItemOpKind::Create {
                                owner: StoreOwner::Player(join.player_id),
                                data,
                            },
                        };
                        p.item_op(op, Some(session), id);
                    }
                    Err(e) => tracing::error!(error = %e, "starter item not persisted"),
                }
            }
        }
        tracing::debug!(session, player = %join.player_name, instance = id, "joined");
        let mut member = Member::new(session, entity, join);
        member.acked_tick = self.ticks as u32;
        member.saved_pos = inst.world.player_pos(entity).unwrap_or_default();
        inst.members.push(member);
        self.sessions.insert(session, id);
        self.inbox.players.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, 1);
        }
        Stats::gauge_add(&self.stats.sessions_active, 1);
        if fresh {
            // A new character exists from its first second on.
            self.checkpoint(&[session]);
        }
        // A party member arriving (e.g. redirected to its leader's server) joins its
        // leader's instance.
        if let Some(party) = self.party_id_of(pid) {
            self.join_leader_instance(party, pid);
        }
        self.tell_directory_arrived(pid);
    }

    /// Checkpoints `sessions` now, in one command; returns its token.
    fn checkpoint(&mut self, sessions: &[SessionId]) -> Option<u64> {
        let p = self.persist.as_mut()?;
        let mut records = Vec::with_capacity(sessions.len());
        let mut saved = Vec::with_capacity(sessions.len());
        for &s in sessions {
            p.dirty.clear(s);
            let Some(inst) = self
                .sessions
                .get(&s)
                .and_then(|i| self.instances.get_mut(i))
            else {
                continue;
            };
            let zone = inst.world.zone().id;
            let Some(m) = inst.members.iter_mut().find(|m| m.session == s) else {
                continue;
            };
            let Some(state) = inst.world.export_player(m.entity) else {
                continue;
            };
            let pos = inst.world.player_pos(m.entity).unwrap_or_default();
            let Some(fence) = p.settings.fence_for(m.join.player_id, s) else {
                // The player's lease is lost: nothing more is written.
                continue;
            };
            match persist::record_of(&m.join.player_name, fence, zone, pos, &state) {
                Ok(r) => {
                    m.saved_pos = pos;
                    records.push(r);
                    saved.push(s);
                }
                Err(e) => {
                    tracing::error!(player_id = state.player_id, error = %e, "checkpoint not built")
                }
            }
        }
        if records.is_empty() {
            return None;
        }
        Some(p.save(records, saved))
    }

    /// Checkpoints the players dirty for at least the checkpoint interval.
    fn checkpoint_due(&mut self, now: Instant) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let mut due = Vec::new();
        p.dirty
            .take_due(now, p.settings.checkpoint_interval, &mut due);
        if !due.is_empty() {
            self.checkpoint(&due);
        }
    }

    /// Drains the store's replies (never blocks) and acts on them.
    fn poll_store(&mut self) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        p.flush_backlog();
        let mut replies = std::mem::take(&mut p.replies);
        p.handle.drain_replies(&mut replies);
        for reply in replies.drain(..) {
            self.on_store_reply(reply);
        }
        if let Some(p) = self.persist.as_mut() {
            p.replies = replies;
            if p.barrier_answered && p.saves.is_empty() && p.backlog_len() == 0 {
                p.settings.flushed.store(true, Ordering::Release);
            }
        }
    }

    fn on_store_reply(&mut self, reply: StoreReply) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        match reply {
            StoreReply::Loaded { token, result, .. } => {
                if let Some(l) = p.loads.get_mut(&token) {
                    l.record = Some(result);
                }
                self.finish_load(token);
            }
            StoreReply::Items { token, result, .. } => {
                if let Some(l) = p.loads.get_mut(&token) {
                    l.items = Some(result);
                }
                self.finish_load(token);
            }
            StoreReply::Item { token, result, .. } => self.item_committed(token, result),
            StoreReply::Saved { token, result } => self.saved(token, result),
            StoreReply::Trade { token, result, .. } => self.trade_committed(token, result),
            StoreReply::Barrier { token } => {
                if p.barrier == Some(token) {
                    p.barrier_answered = true;
                }
            }
        }
    }

    /// Phase three of an item operation: answer the held request (or undo it in the world
    /// when the store refused it).
    fn item_committed(&mut self, token: u64, result: Result<ItemOutcome, StoreError>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(mut pending) = p.items.remove(&token) else {
            return;
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                if pending.attempts < persist::ITEM_OP_ATTEMPTS {
                    tracing::warn!(
                        item = format_args!("{:032x}", pending.op.item_id),
                        attempt = pending.attempts,
                        error = %e,
                        "item operation failed; resubmitting it with the same op id"
                    );
                    pending.attempts += 1;
                    p.submit(StoreCommand::ItemOp {
                        token,
                        op: pending.op.clone(),
                    });
                    p.items.insert(token, pending);
                    return;
                }
                tracing::error!(
                    item = format_args!("{:032x}", pending.op.item_id),
                    error = %e,
                    "item operation failed for good; answered Internal"
                );
                p.settings.item_failures.fetch_add(1, Ordering::Relaxed);
                // A drop that definitely did not apply leaves the item the player's in
                // the store: it goes back to the bag (an unknown outcome stays where the
                // world put it; the next login reconciles with the store).
                if let ItemOpKind::Transfer {
                    from: from @ StoreOwner::Player(_),
                    to: StoreOwner::Ground { .. },
                } = pending.op.kind
                {
                    if !matches!(e, StoreError::UnknownOutcome { .. }) {
                        self.undo_item_op(
                            &pending.op,
                            pending.session,
                            pending.instance,
                            Some(from),
                        );
                    }
                }
                self.answer(pending.held, Err(RequestError::Internal));
                return;
            }
        };
        if outcome.applied() {
            self.answer(pending.held, Ok(Response::Done));
            return;
        }
        tracing::warn!(
            item = format_args!("{:032x}", pending.op.item_id),
            outcome = ?outcome,
            "the store refused an item operation; undone in the world"
        );
        p.settings.item_failures.fetch_add(1, Ordering::Relaxed);
        let actual = match outcome {
            ItemOutcome::OwnerMismatch { actual, .. } => actual,
            _ => None,
        };
        self.undo_item_op(&pending.op, pending.session, pending.instance, actual);
        self.answer(pending.held, Err(RequestError::Internal));
    }

    /// Takes back from the world what a refused item operation gave. A refused drop of an
    /// item the store still gives to the player (`actual`) goes back to the bag.
    fn undo_item_op(
        &mut self,
        op: &ItemOp,
        session: Option<SessionId>,
        instance: u32,
        actual: Option<StoreOwner>,
    ) {
        let item = ItemId(op.item_id);
        match &op.kind {
            ItemOpKind::Create {
                owner: StoreOwner::Player(_),
                ..
            }
            | ItemOpKind::Transfer {
                to: StoreOwner::Player(_),
                ..
            } => {
                let Some(session) = session else { return };
                let Some(inst) = self
                    .sessions
                    .get(&session)
                    .and_then(|i| self.instances.get_mut(i))
                else {
                    return;
                };
                if let Some(m) = inst.members.iter().find(|m| m.session == session) {
                    inst.world.remove_item(m.entity, item);
                }
            }
            ItemOpKind::Transfer {
                from,
                to: StoreOwner::Ground { .. },
            } => {
                if let Some(inst) = self.instances.get_mut(&instance) {
                    inst.ground_stored.remove(&op.item_id);
                    let entity = session
                        .and_then(|s| inst.members.iter().find(|m| m.session == s))
                        .map(|m| m.entity);
                    let returned = match entity {
                        Some(e) if actual == Some(*from) => inst.world.return_to_bag(e, item),
                        _ => Err(zonehost_game::Reject::NoSuchTarget),
                    };
                    if let Err(why) = returned {
                        // Not the player's any more, the player is gone, or the bag filled
                        // up: the ground copy is not durable, remove it (a player-owned
                        // item comes back with the next login's reconciliation).
                        tracing::debug!(item = format_args!("{:032x}", op.item_id), %why, "refused drop not returned to the bag");
                        inst.world.remove_ground_item(item);
                    }
                }
            }
            _ => {}
        }
    }

    /// A checkpoint's outcome: stale ones are reported, failed ones retried later.
    fn saved(&mut self, token: u64, result: Result<Vec<SaveOutcome>, StoreError>) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(mut pending) = p.saves.remove(&token) else {
            return;
        };
        let ok = match result {
            Ok(outcomes) => {
                let mut ok = true;
                for (o, r) in outcomes.iter().zip(&pending.records) {
                    match *o {
                        // A resubmitted copy of a save that had landed.
                        SaveOutcome::Stale { stored, .. } if stored == r.fence() => {}
                        SaveOutcome::Stale { player_id, stored } => {
                            ok = false;
                            tracing::warn!(
                                player_id,
                                stored = %stored,
                                epoch = p.settings.epoch,
                                "checkpoint refused as stale: a newer one is stored (another server?)"
                            );
                        }
                        SaveOutcome::Saved { .. } => {}
                    }
                }
                ok
            }
            Err(e) => {
                let (attempt, players) = (pending.attempts, pending.players.len());
                match p.resave(token, pending) {
                    Ok(()) => {
                        tracing::warn!(error = %e, attempt, players, "checkpoint failed; resubmitted unchanged");
                        return;
                    }
                    Err(given_up) => pending = given_up,
                }
                // Live sessions get a new checkpoint at the next interval; a session that
                // has ended has none: its progress since the last checkpoint is lost.
                tracing::error!(
                    error = %e,
                    players = ?pending.players,
                    live_sessions = pending.sessions.len(),
                    "checkpoint failed after {} attempts",
                    persist::SAVE_ATTEMPTS
                );
                let now = Instant::now();
                for s in &pending.sessions {
                    p.dirty.mark(*s, now);
                }
                false
            }
        };
        if let Some(ended) = pending.ended.take() {
            let (player, session) = *ended;
            p.settings.session_done(player, session);
            if let Some(h) = self.handoffs_waiting.remove(&session) {
                // A placed instance's player goes to the placer's relay, a drained one to
                // the drain task.
                let queue = match (&h.to, &self.placer) {
                    (Some(_), Some(placer)) => Some(&placer.handoffs),
                    _ => self.handoffs.as_ref(),
                };
                if let Some(q) = queue {
                    q.push(h);
                }
            }
        }
        for h in pending.held {
            let body = if ok {
                Ok(Response::Done)
            } else {
                Err(RequestError::Internal)
            };
            self.answer(Some(h), body);
        }
    }

    /// Sends a held response.
    fn answer(&self, held: Option<Held>, body: Result<Response, RequestError>) {
        let Some(h) = held else { return };
        metrics::histogram!("zonehost_request_duration_seconds", "kind" => h.kind)
            .record(h.received.elapsed().as_secs_f64());
        if let Some(m) = self.member(h.session) {
            respond(&m.join, h.request_id, body);
        }
    }

    /// Sends `Welcome` (with a fresh resume token) to a joining or resuming session;
    /// false if the session could not take it (and its connection was closed).
    fn send_welcome(
        settings: &WorkerSettings,
        join: &Join,
        world: &World,
        instance: u32,
        entity: u32,
        tick: u32,
    ) -> bool {
        let last_input = world.last_input(entity).unwrap_or(0);
        let welcome = ServerMsg::Welcome(Welcome {
            player_id: join.player_id,
            entity_id: entity,
            zone: world.zone().id,
            instance,
            tick_rate_hz: settings.tick_rate_hz,
            snapshot_rate_hz: settings.snapshot_rate_hz,
            server_tick: tick,
            server_time_us: unix_micros(),
            max_speed_mms: MAX_SPEED_MMS,
            last_input,
            resume_token: settings
                .resume
                .mint(&join.player_name, unix_micros() / 1_000_000),
        });
        let Some(welcome) = frame(&welcome) else {
            join.conn.close(close_code::INTERNAL, b"internal");
            return false;
        };
        if join.outbox.try_send(Outgoing::Frame(welcome)).is_err() {
            join.shared.set_cause(DisconnectCause::SlowReader);
            join.conn.close(close_code::SLOW_READER, b"slow reader");
            return false;
        }
        join.shared.mark_welcomed();
        true
    }

    /// Moves a player to its instance of `to_zone` (its party's, if any) and tells it: on
    /// its leader's worker, on a peer server (a new dungeon instance placed by load), or
    /// here.
    fn transfer(&mut self, session: SessionId, to_zone: u16) {
        let Some(player) = self.member(session).map(|m| m.join.player_id) else {
            return;
        };
        // A newer zone change (a respawn in town, another portal) supersedes a placement
        // still waiting for the player's item operations: decide again for this one.
        self.placing.retain(|p| p.session != session);
        // A party member whose leader lives on another worker goes there.
        let leader = self.party_id_of(player).and_then(|p| self.leader_of(p));
        if let Some(w) = leader
            .filter(|l| *l != player)
            .and_then(|l| self.worker_of(l))
            .filter(|w| *w != self.settings.index)
        {
            if self.request_migration(session, w, Goal::Zone(to_zone)) {
                return;
            }
        }
        let owner = self.owner_of(player);
        if !self.by_key.contains_key(&(to_zone, owner)) && self.place_on_peer(session, to_zone) {
            return;
        }
        self.transfer_here(session, to_zone);
    }

    /// Moves a player to its instance of `to_zone` on this worker (created if needed).
    fn transfer_here(&mut self, session: SessionId, to_zone: u16) {
        let Some(&from) = self.sessions.get(&session) else {
            return;
        };
        let Some(player) = self.member(session).map(|m| m.join.player_id) else {
            return;
        };
        let owner = self.owner_of(player);
        let Some(to) = self.instance_for(to_zone, owner) else {
            tracing::warn!(zone = to_zone, "transfer to an unknown zone ignored");
            return;
        };
        if to == from {
            return;
        }
        let Some(src) = self.instances.get_mut(&from) else {
            return;
        };
        let Some(pos) = src.members.iter().position(|m| m.session == session) else {
            return;
        };
        let member = src.members.swap_remove(pos);
        let last_input = src.world.last_input(member.entity).unwrap_or(0);
        let Some(state) = src.world.take_player(member.entity) else {
            return;
        };
        self.remove_instance_if_empty(from);
        self.place(member, state, last_input, to);
        // Zone change: checkpoint the new zone and position at once.
        self.checkpoint(&[session]);
    }

    /// Adds a member (with its exported state) to instance `to` and announces the zone.
    fn place(&mut self, mut member: Member, state: PlayerState, last_input: u32, to: u32) {
        let party = self.party_id_of(member.join.player_id);
        let Some(dst) = self.instances.get_mut(&to) else {
            return;
        };
        let entity = match dst.world.add_player_with_state(state) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "player state refused by the target world; closing the session");
                member
                    .join
                    .conn
                    .close(close_code::INTERNAL, b"transfer failed");
                return;
            }
        };
        dst.world.set_last_input(entity, last_input);
        member.entity = entity;
        member.pending.clear();
        member.requests.clear();
        if party.is_some() {
            dst.world.set_party(member.join.player_id, party);
        }
        let entered = Event::ZoneEntered {
            zone: dst.world.zone().id,
            instance: dst.id,
            entity_id: entity,
        };
        if let Some(f) = frame(&ServerMsg::Event(entered)) {
            send(&member.join, f);
        }
        self.sessions.insert(member.session, to);
        dst.members.push(member);
    }

    fn party_id_of(&self, player_id: u64) -> Option<PartyId> {
        let parties = self
            .settings
            .parties
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        parties.party_of(player_id).map(|p| p.id)
    }

    /// The connection of `session` was lost: keep its player in the world for the grace
    /// period, sending it nothing.
    fn detach(&mut self, session: SessionId) {
        if self.cancel_load(session) {
            return;
        }
        let Some(m) = self.member_mut(session) else {
            return;
        };
        if m.detached_at.is_none() {
            m.detached_at = Some(Instant::now());
            Stats::gauge_add(&self.stats.sessions_active, -1);
            Stats::gauge_add(&self.stats.sessions_detached, 1);
        }
    }

    /// A resumed connection takes over a detached session.
    fn attach(&mut self, join: Box<Join>) {
        let session = join.session;
        let found = self
            .sessions
            .get(&session)
            .and_then(|id| self.instances.get(id))
            .and_then(|inst| {
                let m = inst.members.iter().find(|m| m.session == session)?;
                Some((inst.id, m.entity, m.detached_at.is_some()))
            });
        let Some((instance, entity, true)) = found else {
            let reject = ServerMsg::Reject(Reject {
                code: RejectCode::SessionExpired,
                reason: "the session ended before it was resumed".into(),
            });
            if let Some(frame) = frame(&reject) {
                let msg = Outgoing::CloseAfter {
                    frame,
                    code: close_code::REJECTED,
                    cause: DisconnectCause::Rejected,
                };
                let _ = join.outbox.try_send(msg);
            }
            return;
        };
        let welcomed = match self.instances.get(&instance) {
            Some(inst) => Self::send_welcome(
                &self.settings,
                &join,
                &inst.world,
                instance,
                entity,
                self.ticks as u32,
            ),
            None => false,
        };
        if !welcomed {
            return;
        }
        let player_id = join.player_id;
        if let Some(m) = self.member_mut(session) {
            m.join = join;
            m.detached_at = None;
            m.pending.clear();
            Stats::gauge_add(&self.stats.sessions_active, 1);
            Stats::gauge_add(&self.stats.sessions_detached, -1);
        }
        // Party changes while it was away were not sent to the lost connection.
        if self.tell_directory_arrived(player_id) {
            return;
        }
        if let Some(party) = self.party_id_of(player_id) {
            self.announce_members(party);
        }
    }

    /// Cluster mode: asks the party directory to sync the party of a player that arrived
    /// (login, resume): it is mirrored, told and sent to its leader. False without one.
    fn tell_directory_arrived(&self, player: u64) -> bool {
        let Some(d) = &self.directory else {
            return false;
        };
        if d.call(crate::parties::PartyCall::Arrived { player })
            .is_err()
        {
            tracing::debug!(player, "party directory queue full: arrival not synced");
        }
        true
    }

    fn member(&self, session: SessionId) -> Option<&Member> {
        let inst = self.instances.get(self.sessions.get(&session)?)?;
        inst.members.iter().find(|m| m.session == session)
    }

    fn member_mut(&mut self, session: SessionId) -> Option<&mut Member> {
        let inst = self.instances.get_mut(self.sessions.get(&session)?)?;
        inst.members.iter_mut().find(|m| m.session == session)
    }

    fn leave(&mut self, session: SessionId) {
        self.leave_inner(session, false);
    }

    /// Ends a session with its final checkpoint. `handoff`: the player moves to another
    /// server (party convergence): it stays in its party and its connection stays open.
    fn leave_inner(&mut self, session: SessionId, handoff: bool) {
        self.leave_inner_to(session, handoff, None);
    }

    /// [`Worker::leave_inner`], the final checkpoint saving the player at `dest` (zone,
    /// position) instead of where it stands: the new zone of an instance placed on a peer.
    fn leave_inner_to(
        &mut self,
        session: SessionId,
        handoff: bool,
        dest: Option<(u16, (i32, i32))>,
    ) {
        if self.cancel_load(session) {
            return;
        }
        let Some(instance_id) = self.sessions.remove(&session) else {
            return;
        };
        let Some(inst) = self.instances.get_mut(&instance_id) else {
            return;
        };
        let Some(pos) = inst.members.iter().position(|m| m.session == session) else {
            return;
        };
        let member = inst.members.swap_remove(pos);
        let pos_mm = inst.world.player_pos(member.entity).unwrap_or_default();
        let state = inst.world.take_player(member.entity);
        let player = member.join.player_id;
        let mut final_save = None;
        if let (Some(p), Some(state)) = (self.persist.as_mut(), state) {
            // The last checkpoint of a session: on disconnect, expiry and drain (none
            // when the player's lease is lost).
            p.dirty.clear(session);
            let (zone, pos_mm) = dest.unwrap_or((inst.world.zone().id, pos_mm));
            let built = p.settings.fence_for(player, session).map(|fence| {
                persist::record_of(&member.join.player_name, fence, zone, pos_mm, &state)
            });
            match built {
                Some(Ok(r)) => final_save = Some(p.save(vec![r], Vec::new())),
                Some(Err(e)) => {
                    tracing::error!(player_id = state.player_id, error = %e, "final checkpoint not built")
                }
                None => {}
            }
        }
        // The lease is released once the final checkpoint is answered (see `saved`).
        match (final_save, self.persist.as_mut()) {
            (Some(token), Some(p)) => {
                if let Some(pending) = p.saves.get_mut(&token) {
                    pending.ended = Some(Box::new((player, session)));
                }
            }
            _ => self.end_lease(player, session),
        }
        self.registry.release(player, session);
        self.inbox.players.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, -1);
        }
        if member.detached_at.is_some() {
            Stats::gauge_add(&self.stats.sessions_detached, -1);
        } else {
            Stats::gauge_add(&self.stats.sessions_active, -1);
        }
        self.remove_instance_if_empty(instance_id);
        if self.handoffs.is_some() {
            // Drain by migration: parties stay as they are, so that every worker still
            // sees who is with whom and a party's members go to the same peer.
            return;
        }
        if let Some(d) = &self.directory {
            if !handoff
                && d.call(crate::parties::PartyCall::Forget { player })
                    .is_err()
            {
                tracing::warn!(player, "party directory queue full: the player stays in its party until it is cleaned up");
            }
            return;
        }
        let change = {
            let mut parties = self
                .settings
                .parties
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            parties.forget(player)
        };
        if let Some(change) = change {
            self.announce_party(change);
        }
    }

    fn drain(&mut self) {
        self.draining = true;
        let goaway = ServerMsg::Goaway(Goaway {
            reason: "server is shutting down".into(),
            reconnect_after_ms: self.settings.reconnect_after_ms,
        });
        let Some(frame) = frame(&goaway) else { return };
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for session in sessions {
            self.goaway_and_leave(session, &frame);
        }
        self.drain_loads();
    }

    /// Drain by migration: every session leaves the simulation with a final checkpoint
    /// (as at a disconnect) but keeps its connection; once that checkpoint is answered
    /// (and the lease ended) it is pushed to `handoffs`, whose drain task releases the
    /// lease and sends the `Redirect`. Loads in progress are refused as in [`Worker::drain`].
    fn drain_to_peers(&mut self, handoffs: Arc<Handoffs>) {
        self.draining = true;
        self.handoffs = Some(handoffs.clone());
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        // Parties are not changed by the leaves of a migration (see `leave`).
        let handoffs_of: Vec<(SessionId, Option<Handoff>)> = sessions
            .iter()
            .map(|&session| {
                let handoff = self.member(session).map(|m| Handoff {
                    player_id: m.join.player_id,
                    player_name: m.join.player_name.clone(),
                    session,
                    conn: m.join.conn.clone(),
                    outbox: m.join.outbox.clone(),
                    shared: m.join.shared.clone(),
                    party: self.party_id_of(m.join.player_id),
                    to: None,
                });
                (session, handoff)
            })
            .collect();
        for (session, handoff) in handoffs_of {
            self.leave_inner(session, true);
            let Some(handoff) = handoff else { continue };
            if self.final_save_pending(session) {
                self.handoffs_waiting.insert(session, handoff);
            } else {
                handoffs.push(handoff);
            }
        }
        self.drain_loads();
    }

    /// Whether the final checkpoint of ended `session` is in flight.
    fn final_save_pending(&self, session: SessionId) -> bool {
        self.persist.as_ref().is_some_and(|p| {
            p.saves
                .values()
                .any(|s| s.ended.as_ref().is_some_and(|e| e.1 == session))
        })
    }

    /// Refuses the logins still loading and submits the drain barrier.
    fn drain_loads(&mut self) {
        if let Some(p) = self.persist.as_mut() {
            let waiting: Vec<u64> = p.loads.keys().copied().collect();
            let joins: Vec<Box<Join>> = waiting
                .iter()
                .filter_map(|t| p.loads.remove(t))
                .map(|l| l.join)
                .collect();
            // Everything submitted so far (the final checkpoints above) is durable when
            // this barrier is answered; the server waits for it before exiting.
            let token = p.token();
            p.submit(StoreCommand::Barrier { token });
            p.barrier = Some(token);
            for join in joins {
                self.reject_join(
                    &join,
                    RejectCode::Draining,
                    "server is draining",
                    DisconnectCause::Shutdown,
                );
            }
        }
    }

    /// Sends `Goaway` (then close) to `session` and ends it with its final checkpoint.
    fn goaway_and_leave(&mut self, session: SessionId, goaway: &Bytes) {
        if let Some(m) = self.member(session) {
            let msg = Outgoing::CloseAfter {
                frame: goaway.clone(),
                code: close_code::SHUTDOWN,
                cause: DisconnectCause::Shutdown,
            };
            if m.join.outbox.try_send(msg).is_err() {
                m.join.shared.set_cause(DisconnectCause::Shutdown);
                m.join.conn.close(close_code::SHUTDOWN, b"shutdown");
            }
        }
        self.leave(session);
    }

    /// Applies work for a session of this worker; forwards work for a session handed to
    /// another worker; defers (once, `first`) work for a session not known yet.
    fn route_work(&mut self, work: Work, first: bool) {
        let session = match &work {
            Work::Input { session, .. } | Work::Request { session, .. } => *session,
        };
        if self.sessions.contains_key(&session) {
            self.apply(work);
            return;
        }
        if let Some(&(to, _)) = self.forwarded.get(&session) {
            let inbox = self.peers.as_ref().and_then(|p| p.get(to));
            match inbox {
                Some(inbox) => {
                    Stats::inc(&self.stats.sim_forwarded);
                    if inbox.work(work).is_err() {
                        self.stats.dropped(DropCause::InboxFull);
                    }
                }
                None => self.stats.dropped(DropCause::InboxFull),
            }
            return;
        }
        // Work queued right behind the `Join` (a client pipelining requests after its
        // `Hello`) waits while the session loads: it is applied right after the `Welcome`.
        if (first || self.loading(session)) && self.deferred.len() < self.inbox.work.capacity() {
            self.deferred.push(work);
        }
        // Otherwise: the session ended; its work is dropped.
    }

    /// Whether `session` is waiting for its player to load from the store.
    fn loading(&self, session: SessionId) -> bool {
        self.persist
            .as_ref()
            .is_some_and(|p| p.loads.values().any(|l| l.join.session == session))
    }

    /// Passes a lifecycle message for a session handed to another worker on to it;
    /// returns the message to handle here otherwise.
    fn forward_control(&mut self, msg: Control) -> Option<Control> {
        let session = match &msg {
            Control::Leave { session }
            | Control::Detach { session }
            | Control::Handoff { session } => *session,
            Control::Attach(join) => join.session,
            _ => return Some(msg),
        };
        if self.sessions.contains_key(&session) {
            return Some(msg);
        }
        let Some(&(to, _)) = self.forwarded.get(&session) else {
            return Some(msg);
        };
        match self.peers.as_ref().and_then(|p| p.get(to)) {
            Some(inbox) => {
                Stats::inc(&self.stats.sim_forwarded);
                inbox.control(msg);
                None
            }
            None => Some(msg),
        }
    }

    /// Index of the worker that owns `player`'s session, if it is live on this server.
    fn worker_of(&self, player: u64) -> Option<usize> {
        self.registry.route(player).map(|(_, r)| r.worker())
    }

    /// Asks for `session` to be handed to worker `to` once settled (stage 5); false when
    /// there is no such peer or no such member.
    fn request_migration(&mut self, session: SessionId, to: usize, goal: Goal) -> bool {
        let peer = self.peers.as_ref().is_some_and(|p| to < p.len());
        if !peer || to == self.settings.index {
            return false;
        }
        let Some(m) = self.member_mut(session) else {
            return false;
        };
        let fresh = m.migrating.is_none();
        m.migrating = Some((to, goal, Instant::now()));
        if fresh {
            self.migrating.push(session);
        }
        true
    }

    /// Hands over the pending migrants whose requests and item operations are settled: a
    /// response still held for the store, an item operation in flight (which the store
    /// may refuse, and the world must then undo) keep the player here until answered.
    fn migrate_settled(&mut self, now: Instant) {
        for session in std::mem::take(&mut self.migrating) {
            let Some(m) = self.member(session) else {
                continue;
            };
            let Some((to, goal, since)) = m.migrating else {
                continue;
            };
            if !self.settled(session, since, now) {
                self.migrating.push(session);
                continue;
            }
            self.migrate_out(session, to, goal);
        }
    }

    /// Whether `session`, waiting since `since` to leave this worker, has nothing left
    /// here: no item operation in flight (the store may refuse it, and the world must then
    /// undo it), no response held for the store, and no request awaiting its completion
    /// event (those delay it at most [`MIGRATION_SETTLE`]).
    fn settled(&self, session: SessionId, since: Instant, now: Instant) -> bool {
        let Some(m) = self.member(session) else {
            return false;
        };
        let requests_open =
            !m.requests.is_empty() && now.saturating_duration_since(since) < MIGRATION_SETTLE;
        let store_open = self.persist.as_ref().is_some_and(|p| {
            p.items.values().any(|i| i.session == Some(session))
                || p.saves
                    .values()
                    .any(|s| s.held.iter().any(|h| h.session == session))
        });
        !(requests_open || store_open)
    }

    /// Ends the sessions of the party members the directory hands to their leader's server
    /// ([`Control::Handoff`]) once they are settled ([`Worker::settled`]: no item operation
    /// or held response open, so their final checkpoint carries every outcome and no
    /// answer is lost), or after [`HANDOFF_SETTLE_MAX`] at the latest (the directory waits
    /// for the checkpoint a little longer). A member handed to another worker meanwhile is
    /// followed there.
    fn hand_off_settled(&mut self, now: Instant) {
        for (session, since) in std::mem::take(&mut self.party_handoffs) {
            if !self.sessions.contains_key(&session) {
                // Moved to another worker (forwarded there) or already gone.
                let _ = self.forward_control(Control::Handoff { session });
                continue;
            }
            if self.settled(session, since, now)
                || now.saturating_duration_since(since) >= HANDOFF_SETTLE_MAX
            {
                self.leave_inner(session, true);
            } else {
                self.party_handoffs.push((session, since));
            }
        }
    }

    /// Decides where the new instance of `session`'s zone change to `to_zone` opens (see
    /// "Placing new instances" in [`crate::placement`]); true when it goes to a peer (the
    /// player is queued for its handoff, [`Worker::place_settled`]). Only for a dungeon
    /// whose instance does not exist here yet, entered by a solo player or a party leader
    /// that is attached and not moving to another worker; never while draining.
    fn place_on_peer(&mut self, session: SessionId, to_zone: u16) -> bool {
        if self.draining {
            return false;
        }
        let Some(placer) = self.placer.clone() else {
            return false;
        };
        // Towns are not placed (an unknown zone is refused by `transfer_here`).
        if self.settings.content.zone(to_zone).is_none_or(|z| z.town) {
            return false;
        }
        let Some(m) = self.member(session) else {
            return false;
        };
        if m.detached_at.is_some() || m.migrating.is_some() {
            return false;
        }
        let player = m.join.player_id;
        if let Some(party) = self.party_id_of(player) {
            if self.leader_of(party) != Some(player) {
                // A party's instances are its leader's to place.
                return false;
            }
        }
        let Some(to) = placer.placement.instance_target() else {
            placer.placement.count_instance(false);
            return false;
        };
        tracing::debug!(session, zone = to_zone, peer = %to.0, "new instance placed on a peer");
        self.placing.push(Placing {
            session,
            to_zone,
            to,
            since: Instant::now(),
        });
        true
    }

    /// Hands off the players whose new instance goes to a peer once they are settled
    /// ([`Worker::settled`]): each is saved in the new zone at its spawn (the final
    /// checkpoint, queued after its item operations), leaves the simulation keeping its
    /// party and connection, and once the checkpoint is answered goes to the placer's
    /// queue (lease release, then `Redirect`). A player whose connection was lost
    /// meanwhile (no `Redirect` can reach it) enters the zone here after all.
    fn place_settled(&mut self, now: Instant) {
        for p in std::mem::take(&mut self.placing) {
            let Some(m) = self.member(p.session) else {
                continue;
            };
            // Its instance opened here meanwhile (a party member entered it first): join it.
            let opened_here = self
                .by_key
                .contains_key(&(p.to_zone, self.owner_of(m.join.player_id)));
            if m.detached_at.is_some() || self.draining || opened_here {
                if let Some(placer) = &self.placer {
                    placer.placement.count_instance(false);
                }
                self.transfer_here(p.session, p.to_zone);
                continue;
            }
            if !self.settled(p.session, p.since, now) {
                self.placing.push(p);
                continue;
            }
            let handoff = Handoff {
                player_id: m.join.player_id,
                player_name: m.join.player_name.clone(),
                session: p.session,
                conn: m.join.conn.clone(),
                outbox: m.join.outbox.clone(),
                shared: m.join.shared.clone(),
                party: self.party_id_of(m.join.player_id),
                to: Some(p.to),
            };
            let dest = self
                .settings
                .content
                .zone(p.to_zone)
                .map(|z| (p.to_zone, z.spawn_mm));
            if let Some(placer) = &self.placer {
                placer.placement.count_instance(true);
            }
            self.leave_inner_to(p.session, true, dest);
            if self.final_save_pending(p.session) {
                self.handoffs_waiting.insert(p.session, handoff);
            } else if let Some(placer) = &self.placer {
                // Nothing was saved (the lease is lost): the owner's server answers the
                // ticket login with a redirect of its own, or the session closes.
                placer.handoffs.push(handoff);
            }
        }
    }

    /// Exports `session`'s player from its world and hands it to worker `to`.
    fn migrate_out(&mut self, session: SessionId, to: usize, goal: Goal) {
        let Some(&instance_id) = self.sessions.get(&session) else {
            return;
        };
        let Some(inst) = self.instances.get_mut(&instance_id) else {
            return;
        };
        let Some(pos) = inst.members.iter().position(|m| m.session == session) else {
            return;
        };
        let entity = inst.members[pos].entity;
        let last_input = inst.world.last_input(entity).unwrap_or(0);
        let Some(state) = inst.world.take_player(entity) else {
            inst.members[pos].migrating = None;
            return;
        };
        let mut member = inst.members.swap_remove(pos);
        member.migrating = None;
        self.sessions.remove(&session);
        if let Some(p) = self.persist.as_mut() {
            // The new worker checkpoints the player on arrival.
            p.dirty.clear(session);
        }
        self.inbox.players.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, -1);
        }
        self.remove_instance_if_empty(instance_id);
        tracing::debug!(
            session,
            player = %member.join.player_name,
            from = self.settings.index,
            to,
            "player handed to another sim worker"
        );
        Stats::inc(&self.stats.sim_migrations);
        self.hand_over(
            Box::new(Migrant {
                member,
                state,
                last_input,
                goal,
                hops: 0,
            }),
            to,
        );
    }

    /// Queues a migrant on worker `to`, then points its session's route there (messages
    /// queued here in between are forwarded).
    fn hand_over(&mut self, migrant: Box<Migrant>, to: usize) {
        let session = migrant.member.session;
        let player = migrant.member.join.player_id;
        let Some(inbox) = self.peers.as_ref().and_then(|p| p.get(to)).cloned() else {
            // Validated by `request_migration`; a worker alone has no one to hand to.
            self.migrate_in_here(migrant);
            return;
        };
        self.forwarded.insert(session, (to, Instant::now()));
        inbox.control(Control::Migrate(migrant));
        if let Some((s, route)) = self.registry.route(player) {
            if s == session {
                route.set(to);
            }
        }
    }

    /// A migrant arrives: into its leader's instance (passed on, a bounded number of
    /// times, if the leader has moved on meanwhile), else its party's or its own
    /// instance of the zone.
    fn migrate_in(&mut self, mut m: Box<Migrant>) {
        self.forwarded.remove(&m.member.session);
        if let Goal::Leader { leader, party, .. } = m.goal {
            if self.leader_instance(party, leader).is_none() && m.hops < MIGRATION_HOPS {
                if let Some(w) = self.worker_of(leader).filter(|w| *w != self.settings.index) {
                    m.hops += 1;
                    self.hand_over(m, w);
                    return;
                }
            }
        }
        self.migrate_in_here(m);
    }

    fn migrate_in_here(&mut self, m: Box<Migrant>) {
        let Migrant {
            mut member,
            state,
            last_input,
            goal,
            ..
        } = *m;
        let session = member.session;
        member.acked_tick = self.ticks as u32;
        let player = member.join.player_id;
        let owner = self.owner_of(player);
        let town = self.settings.content.town().map(|t| t.id);
        let to = match goal {
            Goal::Leader {
                leader,
                party,
                zone,
            } => self
                .leader_instance(party, leader)
                .or_else(|| self.instance_for(zone, owner)),
            Goal::Zone(zone) => self.instance_for(zone, owner),
        }
        .or_else(|| town.and_then(|z| self.instance_for(z, owner)));
        let parked = std::mem::take(&mut member.parked);
        self.inbox.players.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, 1);
        }
        match to {
            Some(to) => self.place(member, state, last_input, to),
            None => {
                tracing::error!("content has no town zone; migrant closed");
                member
                    .join
                    .conn
                    .close(close_code::INTERNAL, b"transfer failed");
            }
        }
        let Some(&to) = self.sessions.get(&session) else {
            // Not placed (its connection was closed): the session ends here, unsaved.
            self.inbox.players.fetch_sub(1, Ordering::Relaxed);
            if let Some(w) = self.stats.workers.get(self.settings.index) {
                Stats::gauge_add(&w.players, -1);
            }
            Stats::gauge_add(&self.stats.sessions_active, -1);
            self.registry.release(player, session);
            self.end_lease(player, session);
            return;
        };
        // Everyone in the instance now sees its party (XP sharing), whichever worker
        // processed the party change.
        let pids: Vec<u64> = self
            .instances
            .get(&to)
            .map(|i| i.members.iter().map(|m| m.join.player_id).collect())
            .unwrap_or_default();
        for pid in pids {
            let party = self.party_id_of(pid);
            if let Some(inst) = self.instances.get_mut(&to) {
                inst.world.set_party(pid, party);
            }
        }
        self.checkpoint(&[session]);
        for work in parked {
            self.apply(work);
        }
        if self.draining {
            let goaway = ServerMsg::Goaway(Goaway {
                reason: "server is shutting down".into(),
                reconnect_after_ms: self.settings.reconnect_after_ms,
            });
            if let Some(f) = frame(&goaway) {
                self.goaway_and_leave(session, &f);
            }
        }
    }

    /// The instance of `party`'s `leader` on this worker, re-keyed as the party's so the
    /// party keeps sharing it.
    fn leader_instance(&mut self, party: PartyId, leader: u64) -> Option<u32> {
        let id = self.instances.values().find_map(|i| {
            i.members
                .iter()
                .any(|m| m.join.player_id == leader)
                .then_some(i.id)
        })?;
        let inst = self.instances.get_mut(&id)?;
        let zone = inst.key.0;
        if self.by_key.get(&inst.key) == Some(&id) {
            self.by_key.remove(&inst.key);
        }
        inst.key = (zone, Owner::Party(party));
        self.by_key.insert(inst.key, id);
        Some(id)
    }

    fn apply(&mut self, work: Work) {
        match work {
            Work::Input {
                session,
                count,
                inputs,
                received_at,
                ack_tick,
            } => {
                let Some(instance_id) = self.sessions.get(&session) else {
                    return;
                };
                let Some(inst) = self.instances.get_mut(instance_id) else {
                    return;
                };
                let Some(m) = inst.members.iter_mut().find(|m| m.session == session) else {
                    return;
                };
                let now = Instant::now();
                self.meters
                    .input_age
                    .record(now.saturating_duration_since(received_at).as_secs_f64());
                // The first input reporting a newer snapshot of this worker closes that
                // snapshot's round trip. A tick the worker has not reached is a client's
                // lie or another worker's tick: not measured.
                if ack_tick > m.acked_tick && u64::from(ack_tick) <= self.ticks {
                    m.acked_tick = ack_tick;
                    if let Some(sent) = self.snapshot_times.sent_at(ack_tick) {
                        self.meters
                            .snapshot_round_trip
                            .record(now.saturating_duration_since(sent).as_secs_f64());
                    }
                }
                let mut newest = None;
                for input in &inputs[..usize::from(count)] {
                    if inst.world.queue_input(m.entity, *input) {
                        Stats::inc(&self.stats.inputs_queued);
                        newest = Some(input.seq);
                    }
                }
                if let Some(seq) = newest {
                    if m.pending.len() == PENDING_INPUT_TIMES {
                        m.pending.pop_front();
                    }
                    m.pending.push_back((seq, received_at));
                }
            }
            Work::Request {
                session,
                id,
                body,
                received_at,
            } => self.request(session, id, body, received_at),
        }
    }

    fn request(&mut self, session: SessionId, id: u32, body: Request, received_at: Instant) {
        let kind = body.kind();
        if let Some(mapped) = wire::game_request(&body) {
            let Some(&instance_id) = self.sessions.get(&session) else {
                return;
            };
            let Some(inst) = self.instances.get_mut(&instance_id) else {
                return;
            };
            let Some(m) = inst.members.iter_mut().find(|m| m.session == session) else {
                return;
            };
            if m.migrating.is_some() {
                // Its new worker applies it, after the handover.
                if m.parked.len() < PARKED_REQUESTS {
                    m.parked.push(Work::Request {
                        session,
                        id,
                        body,
                        received_at,
                    });
                } else {
                    respond(&m.join, id, Err(RequestError::RateLimited));
                }
                return;
            }
            let queued = mapped.and_then(|req| {
                inst.world
                    .queue_request(m.entity, id, req)
                    .map_err(|e| match e {
                        zonehost_game::QueueError::QueueFull => RequestError::RateLimited,
                        zonehost_game::QueueError::UnknownEntity => RequestError::NotAllowed,
                    })
            });
            match queued {
                Ok(()) => {
                    if m.requests.len() == PENDING_REQUESTS {
                        m.requests.pop_front();
                    }
                    m.requests.push_back((id, kind, received_at));
                }
                Err(e) => respond(&m.join, id, Err(e)),
            }
            return;
        }
        let Some(m) = self.member(session) else {
            return;
        };
        let player = m.join.player_id;
        let body = match body {
            Request::Ping { client_time_us } => {
                let tick = self.ticks as u32;
                Ok(Response::Pong {
                    client_time_us,
                    server_tick: tick,
                })
            }
            Request::GetInventory => {
                let state = self
                    .sessions
                    .get(&session)
                    .and_then(|i| self.instances.get(i))
                    .and_then(|inst| {
                        let m = inst.members.iter().find(|m| m.session == session)?;
                        inst.world.export_player(m.entity)
                    });
                state
                    .map(|s| Response::Inventory(wire::inventory(&s)))
                    .ok_or(RequestError::Internal)
            }
            Request::GetZone => self
                .sessions
                .get(&session)
                .and_then(|i| self.instances.get(i))
                .map(|inst| Response::Zone(wire::zone(inst.world.template())))
                .ok_or(RequestError::Internal),
            party_request => match &self.directory {
                Some(d) => {
                    // The directory answers once the store has decided.
                    let call = crate::parties::PartyCall::Request {
                        player,
                        id,
                        body: party_request,
                        received_at,
                    };
                    if d.call(call).is_err() {
                        if let Some(m) = self.member(session) {
                            respond(&m.join, id, Err(RequestError::RateLimited));
                        }
                    }
                    return;
                }
                None => self.party_request(player, party_request),
            },
        };
        if let Some(m) = self.member(session) {
            respond(&m.join, id, body);
        }
        metrics::histogram!("zonehost_request_duration_seconds", "kind" => kind)
            .record(received_at.elapsed().as_secs_f64());
    }

    fn party_request(&mut self, player: u64, body: Request) -> Result<Response, RequestError> {
        let result = {
            let mut parties = self
                .settings
                .parties
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match body {
                Request::PartyInvite { player: name } => {
                    if self.registry.contact(player_id(&name)).is_none() {
                        return Err(RequestError::NoSuchPlayer);
                    }
                    parties.invite(player, player_id(&name))
                }
                Request::PartyAccept => parties.accept(player),
                Request::PartyDecline => parties.decline(player),
                Request::PartyLeave => parties.leave(player),
                Request::PartyKick { player: name } => parties.kick(player, player_id(&name)),
                _ => return Err(RequestError::NotAllowed),
            }
        };
        let change = result.map_err(wire::party_error)?;
        self.announce_party(change);
        Ok(Response::Done)
    }

    /// Tells the players concerned about a party change, mirrors membership into this
    /// worker's worlds and, when someone joins, moves them into the leader's instance if
    /// this worker owns it.
    fn announce_party(&mut self, change: PartyChange) {
        let tell = |pid: u64, ev: PartyEvent| {
            // A session not yet welcomed (still loading) must see its Welcome first; it
            // gets its party's membership right after the Welcome (`tell_party_after_welcome`).
            let contact = self
                .registry
                .contact(pid)
                .filter(|c| c.shared.is_welcomed());
            if let (Some(c), Some(f)) = (contact, frame(&ServerMsg::Event(Event::Party(ev)))) {
                if c.outbox.try_send(Outgoing::Frame(f)).is_err() {
                    tracing::debug!(player = pid, "party event dropped: outbox full or closed");
                }
            }
        };
        let name = |pid: u64| {
            self.registry
                .name_of(pid)
                .unwrap_or_else(|| format!("{pid:016x}"))
        };
        match change {
            PartyChange::Invited { inviter, invitee } => {
                tell(invitee, PartyEvent::Invited { by: name(inviter) })
            }
            PartyChange::Declined { inviter, invitee } => {
                tell(inviter, PartyEvent::Declined { by: name(invitee) })
            }
            PartyChange::Joined { party, player, .. } => {
                self.announce_members(party);
                self.join_leader_instance(party, player);
            }
            PartyChange::Left {
                party,
                player,
                kicked,
                disbanded,
                last_member,
                ..
            } => {
                tell(player, PartyEvent::Left { kicked });
                if let Some(last) = last_member {
                    // SPEC §6.4: the member left alone learns that the party is gone.
                    tell(last, PartyEvent::dissolved(party));
                }
                self.set_party_in_worlds(player, None);
                if disbanded {
                    // The one remaining member is party-less now.
                    let left: Vec<u64> = self
                        .instances
                        .values()
                        .flat_map(|i| i.members.iter().map(|m| m.join.player_id))
                        .filter(|p| self.party_id_of(*p).is_none() && *p != player)
                        .collect();
                    for p in left {
                        self.set_party_in_worlds(p, None);
                    }
                }
                self.announce_members(party);
            }
        }
    }

    fn announce_members(&mut self, party: PartyId) {
        let members = {
            let parties = self
                .settings
                .parties
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            parties.party(party).map(|p| (p.leader, p.members.clone()))
        };
        let Some((leader, members)) = members else {
            return;
        };
        let name = |pid: u64| {
            self.registry
                .name_of(pid)
                .unwrap_or_else(|| format!("{pid:016x}"))
        };
        let ev = PartyEvent::Members {
            party,
            leader: name(leader),
            members: members.iter().map(|p| name(*p)).collect(),
        };
        let Some(f) = frame(&ServerMsg::Event(Event::Party(ev))) else {
            return;
        };
        for pid in &members {
            // A member still loading must see its Welcome first; it is told its party's
            // membership right after it (see `join`).
            let contact = self
                .registry
                .contact(*pid)
                .filter(|c| c.shared.is_welcomed());
            if let Some(c) = contact {
                let _ = c.outbox.try_send(Outgoing::Frame(f.clone()));
            }
            self.set_party_in_worlds(*pid, Some(party));
        }
    }

    fn set_party_in_worlds(&mut self, player: u64, party: Option<PartyId>) {
        for inst in self.instances.values_mut() {
            if inst.world.set_party(player, party) {
                return;
            }
        }
    }

    /// Moves `player` into its party leader's instance: at once when both are on this
    /// worker, else by handing the player over to the leader's worker.
    fn join_leader_instance(&mut self, party: PartyId, player: u64) {
        let Some(leader) = self.leader_of(party) else {
            return;
        };
        let find = |pid: u64| {
            self.instances.values().find_map(|i| {
                i.members
                    .iter()
                    .find(|m| m.join.player_id == pid)
                    .map(|m| (i.key.0, m.session))
            })
        };
        let Some((zone, session)) = find(player) else {
            return;
        };
        if find(leader).is_some() {
            if let Some(id) = self.leader_instance(party, leader) {
                if let Some(inst) = self.instances.get(&id) {
                    let zone = inst.key.0;
                    self.transfer(session, zone);
                }
            }
            return;
        }
        if let Some(w) = self.worker_of(leader) {
            self.request_migration(
                session,
                w,
                Goal::Leader {
                    leader,
                    party,
                    zone,
                },
            );
        }
    }

    fn leader_of(&self, party: PartyId) -> Option<u64> {
        let parties = self
            .settings
            .parties
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        parties.party(party).map(|p| p.leader)
    }

    /// Snapshot ticks are the worker's tick count, not the world's, so a player's snapshot
    /// ticks keep increasing across zone changes (clients order snapshots by tick).
    fn send_snapshots(&mut self) {
        let tick = self.ticks as u32;
        self.snapshot_times.sent(tick, Instant::now());
        for inst in self.instances.values_mut() {
            if inst.members.iter().all(|m| m.detached_at.is_some()) {
                continue;
            }
            inst.entities.clear();
            inst.entities
                .extend(inst.world.entities().map(|e| EntityState {
                    id: e.id,
                    x_mm: e.pos_mm.0,
                    y_mm: e.pos_mm.1,
                    vx_cms: (e.vel_mms.0 / 10).clamp(i16::MIN.into(), i16::MAX.into()) as i16,
                    vy_cms: (e.vel_mms.1 / 10).clamp(i16::MIN.into(), i16::MAX.into()) as i16,
                    hp: e.hp,
                    max_hp: e.max_hp,
                    kind: e.kind.wire_code(),
                    flags: e.flags,
                }));
            inst.acks.clear();
            inst.acks.extend(
                inst.world
                    .player_acks()
                    .map(|(entity, last_input)| PlayerAck { entity, last_input }),
            );
            if let Err(e) = encode_snapshot(
                tick,
                inst.id,
                inst.world.zone().id,
                &inst.acks,
                &inst.entities,
                &mut inst.datagrams,
            ) {
                tracing::error!(instance = inst.id, error = %e, "snapshot encoding failed");
                continue;
            }
            for d in &inst.datagrams {
                self.meters.snapshot_bytes.record(d.len() as f64);
            }
            let now = Instant::now();
            for m in &mut inst.members {
                if m.detached_at.is_some() {
                    continue;
                }
                if let Some(received) = m.applied_since_snapshot.take() {
                    self.meters
                        .input_to_snapshot
                        .record(now.saturating_duration_since(received).as_secs_f64());
                }
                for d in &inst.datagrams {
                    if m.join.conn.displaces_on_send(d.len()) {
                        Stats::inc(&self.stats.datagrams_displaced);
                    }
                    match m.join.conn.send_datagram(d.clone()) {
                        Ok(()) => {
                            Stats::inc(&self.stats.datagrams_out);
                            self.stats
                                .datagram_bytes_out
                                .fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                        Err(_) => Stats::inc(&self.stats.datagram_send_errors),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecondLogin;
    use crate::session::Contact;
    use crate::sim::{ConnShared, Link, LinkError, Route};
    use tokio::sync::mpsc;
    use zonehost_protocol::frame::FrameDecoder;

    #[test]
    fn snapshot_times_remember_the_last_ring_of_ticks() {
        let mut times = SnapshotTimes::new();
        let t0 = Instant::now();
        assert_eq!(times.sent_at(5), None, "nothing sent yet");
        times.sent(5, t0);
        assert_eq!(times.sent_at(5), Some(t0));
        // A tick one ring later takes the slot: the old tick is forgotten, not confused.
        let later = t0 + Duration::from_secs(17);
        times.sent(5 + SNAPSHOT_TIMES as u32, later);
        assert_eq!(times.sent_at(5), None);
        assert_eq!(times.sent_at(5 + SNAPSHOT_TIMES as u32), Some(later));
        assert_eq!(times.sent_at(6), None);
    }

    #[derive(Debug, Default)]
    struct NoLink;

    impl Link for NoLink {
        fn send_datagram(&self, _data: Bytes) -> Result<(), LinkError> {
            Ok(())
        }
        fn close(&self, _code: u32, _reason: &[u8]) {}
    }

    struct Two {
        workers: Vec<Worker>,
        inboxes: Arc<[Arc<Inbox>]>,
        registry: Arc<Registry>,
        stats: Arc<Stats>,
    }

    impl Two {
        fn new() -> Self {
            let config = Config::default();
            let inboxes: Arc<[Arc<Inbox>]> = (0..2).map(|_| Arc::new(Inbox::new(64))).collect();
            let registry = Arc::new(Registry::new(SecondLogin::Refuse));
            let stats = Arc::new(Stats::new(2));
            let parties = Arc::new(Mutex::new(Parties::new()));
            let content = Arc::new(Content::builtin().expect("built-in content"));
            let resume = Arc::new(ResumeMinter::random().expect("randomness"));
            let workers = (0..2)
                .map(|i| {
                    Worker::new(
                        WorkerSettings::from_config(
                            i,
                            &config,
                            content.clone(),
                            resume.clone(),
                            parties.clone(),
                            7,
                        ),
                        inboxes[i].clone(),
                        stats.clone(),
                        registry.clone(),
                        Arc::new(AtomicBool::new(false)),
                    )
                    .with_peers(inboxes.clone())
                })
                .collect();
            Self {
                workers,
                inboxes,
                registry,
                stats,
            }
        }

        fn tick(&mut self) {
            for w in &mut self.workers {
                w.tick();
            }
        }

        /// Joins `name` on worker `on`; returns its session's route and its outbox.
        fn join(&mut self, session: u64, name: &str, on: usize) -> mpsc::Receiver<Outgoing> {
            let (tx, rx) = mpsc::channel(256);
            let shared = Arc::new(ConnShared::default());
            let link: Arc<dyn Link> = Arc::new(NoLink);
            let route = Route::new(self.inboxes.clone(), on);
            let contact = Contact {
                name: name.into(),
                conn: link.clone(),
                shared: shared.clone(),
                outbox: tx.clone(),
            };
            self.registry
                .claim(player_id(name), session, contact, &route)
                .expect("claim");
            route.control(Control::Join(Box::new(Join {
                session,
                player_id: player_id(name),
                player_name: name.into(),
                conn: link,
                outbox: tx,
                shared,
            })));
            self.tick();
            rx
        }

        fn request(&self, session: u64, id: u32, body: Request) {
            let (_, route) = self.registry.route(self.player_of(session)).expect("live");
            route
                .work(Work::Request {
                    session,
                    id,
                    body,
                    received_at: Instant::now(),
                })
                .expect("inbox has room");
        }

        fn player_of(&self, session: u64) -> u64 {
            self.workers
                .iter()
                .find_map(|w| w.member(session).map(|m| m.join.player_id))
                .expect("a member")
        }

        fn instance_of(&self, session: u64) -> Option<(usize, u32)> {
            self.workers
                .iter()
                .enumerate()
                .find_map(|(i, w)| w.sessions.get(&session).map(|inst| (i, *inst)))
        }
    }

    /// Every server message queued on `rx` so far.
    fn drain(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        let mut decoder = FrameDecoder::new(zonehost_protocol::MAX_FRAME_LEN);
        while let Ok(o) = rx.try_recv() {
            if let Outgoing::Frame(f) = o {
                decoder.extend(&f);
                while let Ok(Some(m)) = decoder.next_message::<ServerMsg>() {
                    out.push(m);
                }
            }
        }
        out
    }

    /// A placer whose server is overloaded against peer `b` (or not, `busy` below 600).
    fn placer(busy: u32) -> crate::placement::InstancePlacer {
        let peers = [("a", 4000u16), ("b", 4001)]
            .iter()
            .map(|(id, port)| {
                (
                    id.to_string(),
                    std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                )
            })
            .collect();
        let placement = Arc::new(crate::placement::Placement::new(
            "a".into(),
            &peers,
            crate::placement::Thresholds {
                above_permille: 600,
                margin_permille: 250,
            },
        ));
        let row = |id: &str, busy| crate::store::ServerLoad {
            server_id: id.into(),
            players: 10,
            busy_permille: busy,
            draining: false,
            updated_at_ms: 0,
            address: None,
        };
        placement.update(row("a", busy), vec![row("b", 100)]);
        crate::placement::InstancePlacer {
            placement,
            handoffs: Arc::new(Handoffs::default()),
        }
    }

    #[test]
    fn only_new_dungeon_instances_of_solo_players_and_leaders_go_to_a_peer() {
        let mut t = Two::new();
        let busy = placer(900);
        let idle = placer(300);
        t.workers[0].placer = Some(busy.clone());
        t.workers[1].placer = Some(idle.clone());
        let count = |p: &crate::placement::InstancePlacer| {
            (
                p.placement.counters.instances_local.load(Ordering::Relaxed),
                p.placement.counters.instances_peer.load(Ordering::Relaxed),
            )
        };
        let town = t.settings_town();
        // Not busy: the crypt's instance opens here (counted local).
        let _solo_rx = t.join(1, "solo", 1);
        t.workers[1].transfer(1, 2);
        assert_eq!(
            t.workers[1].instances[&t.instance_of(1).expect("here").1]
                .key
                .0,
            2
        );
        assert_eq!(count(&idle), (1, 0));
        // Busy: a solo player's new crypt instance goes to b; once settled it is saved
        // (no store here) and queued for its Redirect, with the crypt as its destination.
        let mut walker_rx = t.join(2, "walker", 0);
        t.workers[0].transfer(2, 2);
        assert_eq!(count(&busy), (0, 0), "counted once it is handed off");
        assert!(t.instance_of(2).is_some(), "still here until settled");
        t.tick();
        assert_eq!(count(&busy), (0, 1));
        assert_eq!(t.instance_of(2), None, "left the simulation");
        let queued = busy.handoffs.take();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].session, 2);
        assert_eq!(queued[0].to.as_ref().map(|t| t.0.as_str()), Some("b"));
        assert!(t.registry.route(player_id("walker")).is_none());
        assert!(
            !drain(&mut walker_rx)
                .iter()
                .any(|m| matches!(m, ServerMsg::Event(Event::ZoneEntered { .. }))),
            "no ZoneEntered: the Redirect replaces it"
        );
        // Towns are never placed (nor counted).
        let _home_rx = t.join(3, "home", 0);
        t.workers[0].placer = None;
        t.workers[0].transfer(3, 2);
        t.workers[0].placer = Some(busy.clone());
        let (_, crypt) = t.instance_of(3).expect("in the crypt here");
        t.workers[0].transfer(3, town);
        t.tick();
        let (_, now_in) = t.instance_of(3).expect("still here");
        assert_ne!(now_in, crypt);
        assert_eq!(t.workers[0].instances[&now_in].key.0, town);
        assert_eq!(count(&busy), (0, 1), "the town was not counted");
        // A party: the member's instance is its leader's (never placed), and an instance
        // that exists is rejoined, even by the leader.
        let _lead_rx = t.join(5, "lead", 0);
        let _memb_rx = t.join(6, "memb", 0);
        t.request(
            5,
            1,
            Request::PartyInvite {
                player: "memb".into(),
            },
        );
        t.tick();
        t.request(6, 2, Request::PartyAccept);
        t.tick();
        t.tick();
        t.workers[0].transfer(6, 3);
        t.tick();
        let (_, marsh) = t.instance_of(6).expect("the member stays");
        assert_eq!(t.workers[0].instances[&marsh].key.0, 3);
        assert_eq!(count(&busy), (0, 1));
        t.workers[0].transfer(5, 3);
        t.tick();
        assert_eq!(
            t.instance_of(5),
            Some((0, marsh)),
            "the leader joins its party's marsh"
        );
        assert_eq!(count(&busy), (0, 1));
        // The leader's new instance is placed.
        t.workers[0].transfer(5, 4);
        t.tick();
        assert_eq!(t.instance_of(5), None);
        assert_eq!(count(&busy), (0, 2));
        assert_eq!(busy.handoffs.take().len(), 1);
    }

    #[test]
    fn a_newer_zone_change_supersedes_a_pending_placement() {
        let mut t = Two::new();
        let busy = placer(900);
        t.workers[0].placer = Some(busy.clone());
        let town = t.settings_town();
        let _rx = t.join(1, "fickle", 0);
        // Into the crypt: placed on a peer, waiting to settle (the next tick)...
        t.workers[0].transfer(1, 2);
        assert_eq!(t.workers[0].placing.len(), 1);
        // ...but back to town first (a respawn, say): the placement is dropped.
        t.workers[0].transfer(1, town);
        assert!(t.workers[0].placing.is_empty());
        t.tick();
        let (_, now_in) = t.instance_of(1).expect("still on this server");
        assert_eq!(t.workers[0].instances[&now_in].key.0, town);
        assert!(busy.handoffs.take().is_empty(), "no Redirect queued");
    }

    #[test]
    fn a_party_member_is_handed_to_the_leaders_worker_and_stray_work_follows_it() {
        let mut t = Two::new();
        let _lead_rx = t.join(1, "lead", 0);
        let mut memb_rx = t.join(2, "memb", 1);
        let (lw, lead_inst) = t.instance_of(1).expect("leader placed");
        assert_eq!(lw, 0);
        assert_eq!(t.instance_of(2).map(|(w, _)| w), Some(1));
        t.request(
            1,
            1,
            Request::PartyInvite {
                player: "memb".into(),
            },
        );
        t.tick();
        t.request(2, 2, Request::PartyAccept);
        // Accept (worker 1), handover (stage 5), arrival (worker 0, next tick).
        for _ in 0..3 {
            t.tick();
        }
        assert_eq!(
            t.instance_of(2),
            Some((0, lead_inst)),
            "member joined the leader"
        );
        assert_eq!(Stats::get(&t.stats.sim_migrations), 1);
        assert_eq!(t.inboxes[0].players(), 2);
        assert_eq!(t.inboxes[1].players(), 0);
        let msgs = drain(&mut memb_rx);
        assert!(msgs.iter().any(|m| matches!(
            m,
            ServerMsg::Event(Event::ZoneEntered { instance, .. }) if *instance == lead_inst
        )));
        // A message a connection task queued on the old worker before it saw the new
        // route is forwarded and answered by the new one.
        t.inboxes[1]
            .work(Work::Request {
                session: 2,
                id: 9,
                body: Request::Ping { client_time_us: 5 },
                received_at: Instant::now(),
            })
            .expect("room");
        t.tick();
        t.tick();
        assert!(Stats::get(&t.stats.sim_forwarded) >= 1);
        let msgs = drain(&mut memb_rx);
        assert!(
            msgs.iter().any(|m| matches!(
                m,
                ServerMsg::Response {
                    id: 9,
                    body: Ok(Response::Pong { .. })
                }
            )),
            "{msgs:?}"
        );
        // The route now leads to the leader's worker; a leave sent there ends the session.
        let (_, route) = t.registry.route(player_id("memb")).expect("live");
        assert_eq!(route.worker(), 0);
        route.control(Control::Leave { session: 2 });
        t.tick();
        assert_eq!(t.instance_of(2), None);
        assert!(t.registry.route(player_id("memb")).is_none());
    }

    #[test]
    fn a_leave_queued_on_the_old_worker_is_forwarded_and_ends_the_session() {
        let mut t = Two::new();
        let _a = t.join(1, "lead", 0);
        let _b = t.join(2, "memb", 1);
        let town = t.settings_town();
        assert!(t.workers[1].request_migration(2, 0, Goal::Zone(town)));
        t.tick();
        t.tick();
        assert_eq!(t.instance_of(2).map(|(w, _)| w), Some(0));
        // The connection task read the route before the move: its Leave lands on worker 1.
        t.inboxes[1].control(Control::Leave { session: 2 });
        t.tick();
        t.tick();
        assert_eq!(
            t.instance_of(2),
            None,
            "the session ended on its new worker"
        );
        assert!(t.registry.route(player_id("memb")).is_none(), "released");
        assert_eq!(t.inboxes[0].players(), 1);
        assert_eq!(t.inboxes[1].players(), 0);
    }

    #[test]
    fn game_requests_during_a_pending_handover_travel_with_the_player() {
        let mut t = Two::new();
        let _a = t.join(1, "lead", 0);
        let mut rx = t.join(2, "memb", 1);
        let goal = Goal::Zone(t.settings_town());
        assert!(t.workers[1].request_migration(2, 0, goal));
        // Still on worker 1 (nothing ticked): a game request is parked, not applied.
        t.inboxes[1]
            .work(Work::Request {
                session: 2,
                id: 4,
                body: Request::UseItem { item: 0 },
                received_at: Instant::now(),
            })
            .expect("room");
        t.workers[1].tick();
        assert_eq!(t.instance_of(2).map(|(w, _)| w), None, "in transit");
        t.workers[0].tick();
        t.tick();
        t.tick();
        assert_eq!(t.instance_of(2).map(|(w, _)| w), Some(0));
        let msgs = drain(&mut rx);
        assert!(
            msgs.iter()
                .any(|m| matches!(m, ServerMsg::Response { id: 4, .. })),
            "the parked request was answered by the new worker: {msgs:?}"
        );
    }

    #[test]
    fn a_handover_waits_for_the_players_item_operations_in_flight() {
        use crate::store::{ItemStore, Owner as StoreOwner};

        let (mut t, stored) = Two::on_redb("migrate");
        // Each is loaded and admitted (the store answers in the background); stop right at
        // the member's admission.
        let _a = t.join_loaded(1, "lead", 0);
        let _b = t.join_loaded(2, "memb", 1);
        // A fresh character's starter kit is being created: item operations in flight.
        let in_flight = |w: &Worker| {
            w.persist.as_ref().map_or(0, |p| {
                p.items.values().filter(|i| i.session == Some(2)).count()
            })
        };
        assert!(in_flight(&t.workers[1]) > 0, "starter kit ops in flight");
        let town = t.settings_town();
        assert!(t.workers[1].request_migration(2, 0, Goal::Zone(town)));
        t.workers[1].migrate_settled(Instant::now());
        assert_eq!(
            t.instance_of(2).map(|(w, _)| w),
            Some(1),
            "no handover while item operations are in flight"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.instance_of(2).map(|(w, _)| w) != Some(0) {
            assert!(Instant::now() < deadline, "handover never happened");
            std::thread::sleep(Duration::from_millis(2));
            t.tick();
        }
        assert_eq!(in_flight(&t.workers[1]), 0, "settled before it left");
        // Exactly once: the store's items of the player are exactly its inventory.
        let (_, inst) = t.instance_of(2).expect("placed");
        let state = {
            let i = t.workers[0].instances.get(&inst).expect("instance");
            let m = i.members.iter().find(|m| m.session == 2).expect("member");
            i.world.export_player(m.entity).expect("state")
        };
        let mut live: Vec<u128> = state.inventory.item_ids().map(|i| i.0).collect();
        let mut stored_items: Vec<u128> = stored
            .store
            .items_of(StoreOwner::Player(player_id("memb")))
            .expect("items")
            .iter()
            .map(|r| r.item_id)
            .collect();
        live.sort_unstable();
        stored_items.sort_unstable();
        assert!(!live.is_empty());
        assert_eq!(live, stored_items);
        drop(t);
        stored.stop();
    }

    #[test]
    fn a_party_handoff_waits_for_the_members_item_operations_in_flight() {
        let (mut t, stored) = Two::on_redb("handoff");
        let deadline = Instant::now() + Duration::from_secs(10);
        let _b = t.join_loaded(2, "memb", 1);
        let in_flight = |w: &Worker| {
            w.persist.as_ref().map_or(0, |p| {
                p.items.values().filter(|i| i.session == Some(2)).count()
            })
        };
        assert!(in_flight(&t.workers[1]) > 0, "starter kit ops in flight");
        // The directory hands the member to its leader's server.
        t.workers[1].party_handoffs.push((2, Instant::now()));
        t.workers[1].hand_off_settled(Instant::now());
        assert_eq!(
            t.instance_of(2).map(|(w, _)| w),
            Some(1),
            "no handoff while item operations are in flight"
        );
        while t.instance_of(2).is_some() {
            assert!(Instant::now() < deadline, "handoff never happened");
            std::thread::sleep(Duration::from_millis(2));
            t.tick();
        }
        assert_eq!(in_flight(&t.workers[1]), 0, "settled before it left");
        assert!(t.workers[1].party_handoffs.is_empty());
        drop(t);
        stored.stop();
    }

    /// A redb store and its store worker under a fresh temporary directory.
    struct Stored {
        store: Arc<crate::store::redb::RedbStore>,
        worker: crate::store::writer::StoreWorker,
        dir: std::path::PathBuf,
    }

    impl Stored {
        fn stop(self) {
            self.worker.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Two {
        /// Two workers persisting through one store worker on a fresh redb file.
        fn on_redb(tag: &str) -> (Self, Stored) {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("zonehost-{tag}-{}-{nanos:x}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let store = Arc::new(
                crate::store::redb::RedbStore::open(&dir.join("store.redb")).expect("store"),
            );
            let worker = crate::store::writer::StoreWorker::spawn(
                Box::new(store.clone()),
                &Config::default().store,
            )
            .expect("spawn");
            let mut t = Two::new();
            let settings = PersistSettings::new(3, Duration::from_secs(10));
            t.workers = std::mem::take(&mut t.workers)
                .into_iter()
                .map(|w| w.with_store(worker.handle(), settings.for_worker()))
                .collect();
            (t, Stored { store, worker, dir })
        }

        /// Joins `name` on `worker` and ticks until the store has loaded it and it is
        /// admitted (at most 10 s).
        fn join_loaded(
            &mut self,
            session: SessionId,
            name: &str,
            worker: usize,
        ) -> mpsc::Receiver<Outgoing> {
            let rx = self.join(session, name, worker);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.instance_of(session).is_none() {
                assert!(Instant::now() < deadline, "{name} never admitted");
                std::thread::sleep(Duration::from_millis(2));
                self.tick();
            }
            rx
        }

        fn settings_town(&self) -> u16 {
            self.workers[0]
                .settings
                .content
                .town()
                .map(|t| t.id)
                .expect("a town")
        }
    }
}
