//! One simulation worker: a fixed-timestep loop over the zone instances it owns.
//!
//! Tick stages, in order:
//! 1. drain lifecycle messages (join → `Welcome`, leave, drain → `Goaway`);
//! 2. drain inputs and requests queued since the last tick (bounded by what was queued
//!    when the stage began, so a flood cannot starve the tick);
//! 3. step every instance's world;
//! 4. on snapshot ticks, encode each instance's snapshot once and hand the same `Bytes`
//!    to every member's connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use zonehost_game::{World, ZoneSpec, MAX_SPEED_MMS};
use zonehost_protocol::frame::encode_frame;
use zonehost_protocol::message::{
    close_code, Goaway, Reject, RejectCode, Request, Response, ServerMsg, Welcome,
};
use zonehost_protocol::snapshot::{encode_snapshot, EntityState, PlayerAck};

use super::{Control, Inbox, Join, Outgoing, SessionId, Work};
use crate::config::Config;
use crate::session::{Registry, ResumeMinter};
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
    /// The starting zone.
    pub start_zone: ZoneSpec,
    /// How long a session whose connection was lost waits for a resume.
    pub resume_grace: Duration,
    /// Mints the resume token of each `Welcome`.
    pub resume: Arc<ResumeMinter>,
}

impl WorkerSettings {
    /// Settings of worker `index` from the validated config.
    pub fn from_config(index: usize, config: &Config, resume: Arc<ResumeMinter>) -> Self {
        Self {
            index,
            tick: Duration::from_secs(1) / u32::from(config.tick_rate_hz),
            tick_rate_hz: config.tick_rate_hz,
            snapshot_rate_hz: config.snapshot_rate_hz,
            ticks_per_snapshot: config.ticks_per_snapshot(),
            max_catchup_ticks: config.max_catchup_ticks.max(1),
            reconnect_after_ms: config.reconnect_after_ms,
            start_zone: ZoneSpec {
                id: 1,
                width_mm: 100_000,
                height_mm: 100_000,
                spawn_mm: (50_000, 50_000),
            },
            resume_grace: Duration::from_millis(config.resume_grace_ms),
            resume,
        }
    }
}

/// Receive times of inputs not yet applied, kept for the action-latency stage metrics.
const PENDING_INPUT_TIMES: usize = 16;

#[derive(Debug)]
struct Member {
    session: SessionId,
    entity: u32,
    join: Box<Join>,
    /// `(newest sequence of a datagram, when it was received)`, oldest first.
    pending: VecDeque<(u32, Instant)>,
    /// Receive time of the oldest input applied since the last snapshot.
    applied_since_snapshot: Option<Instant>,
    /// When the connection was lost; the member waits for a resume until the grace ends.
    detached_at: Option<Instant>,
}

/// Metric handles resolved once per worker (no registry lookup per sample).
#[derive(Debug)]
struct Meters {
    tick_duration: metrics::Histogram,
    tick_lateness: metrics::Histogram,
    input_apply: metrics::Histogram,
    input_to_snapshot: metrics::Histogram,
    snapshot_bytes: metrics::Histogram,
}

impl Meters {
    fn new() -> Self {
        Self {
            tick_duration: metrics::histogram!("zonehost_tick_duration_seconds"),
            tick_lateness: metrics::histogram!("zonehost_tick_lateness_seconds"),
            input_apply: metrics::histogram!("zonehost_input_apply_seconds"),
            input_to_snapshot: metrics::histogram!("zonehost_input_to_snapshot_seconds"),
            snapshot_bytes: metrics::histogram!("zonehost_snapshot_bytes"),
        }
    }
}

#[derive(Debug)]
struct Instance {
    id: u32,
    world: World,
    members: Vec<Member>,
    entities: Vec<EntityState>,
    acks: Vec<PlayerAck>,
    datagrams: Vec<Bytes>,
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
    sessions: HashMap<SessionId, u32>,
    draining: bool,
    ticks: u64,
    meters: Meters,
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
            sessions: HashMap::new(),
            draining: false,
            ticks: 0,
            meters: Meters::new(),
        }
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
    }

    /// Runs one tick: lifecycle messages, queued work, world steps, snapshots.
    pub fn tick(&mut self) {
        self.ticks += 1;
        Stats::inc(&self.stats.ticks);
        while let Some(msg) = self.inbox.control.pop() {
            match msg {
                Control::Join(join) => self.join(join),
                Control::Leave { session } => self.leave(session),
                Control::Detach { session } => self.detach(session),
                Control::Attach(join) => self.attach(join),
                Control::Drain => self.drain(),
            }
        }
        for _ in 0..self.inbox.work.len() {
            let Some(work) = self.inbox.work.pop() else {
                break;
            };
            self.apply(work);
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        for inst in self.instances.values_mut() {
            inst.world.step();
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
        if self.ticks % u64::from(self.settings.ticks_per_snapshot) == 0 {
            self.send_snapshots();
        }
    }

    fn join(&mut self, join: Box<Join>) {
        if self.draining {
            let reject = ServerMsg::Reject(Reject {
                code: RejectCode::Draining,
                reason: "server is draining".into(),
            });
            if let Some(frame) = frame(&reject) {
                let _ = join.outbox.try_send(Outgoing::CloseAfter {
                    frame,
                    code: close_code::REJECTED,
                    cause: DisconnectCause::Shutdown,
                });
            }
            self.registry.release(join.player_id, join.session);
            return;
        }
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let mut world = World::new(self.settings.start_zone.clone());
        let entity = world.add_player(join.player_id);
        let session = join.session;
        if !self.send_welcome(&join, &world, id, entity) {
            self.registry.release(join.player_id, session);
            return;
        }
        tracing::debug!(session, player = %join.player_name, instance = id, "joined");
        self.inbox.players.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, 1);
        }
        Stats::gauge_add(&self.stats.sessions_active, 1);
        Stats::gauge_add(&self.stats.instances_live, 1);
        self.instances.insert(
            id,
            Instance {
                id,
                world,
                members: vec![Member {
                    session,
                    entity,
                    join,
                    pending: VecDeque::with_capacity(PENDING_INPUT_TIMES),
                    applied_since_snapshot: None,
                    detached_at: None,
                }],
                entities: Vec::new(),
                acks: Vec::new(),
                datagrams: Vec::new(),
            },
        );
        self.sessions.insert(session, id);
    }

    /// Sends `Welcome` (with a fresh resume token) to a joining or resuming session;
    /// false if the session could not take it (and its connection was closed).
    fn send_welcome(&self, join: &Join, world: &World, instance: u32, entity: u32) -> bool {
        let welcome = ServerMsg::Welcome(Welcome {
            player_id: join.player_id,
            entity_id: entity,
            zone: world.zone().id,
            instance,
            tick_rate_hz: self.settings.tick_rate_hz,
            snapshot_rate_hz: self.settings.snapshot_rate_hz,
            server_tick: world.tick(),
            server_time_us: unix_micros(),
            max_speed_mms: MAX_SPEED_MMS,
            resume_token: self
                .settings
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
        true
    }

    /// The connection of `session` was lost: keep its player in the world for the grace
    /// period, sending it nothing.
    fn detach(&mut self, session: SessionId) {
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
            Some(inst) => self.send_welcome(&join, &inst.world, instance, entity),
            None => false,
        };
        if !welcomed {
            return;
        }
        if let Some(m) = self.member_mut(session) {
            m.join = join;
            m.detached_at = None;
            m.pending.clear();
            Stats::gauge_add(&self.stats.sessions_active, 1);
            Stats::gauge_add(&self.stats.sessions_detached, -1);
        }
    }

    fn member_mut(&mut self, session: SessionId) -> Option<&mut Member> {
        let inst = self.instances.get_mut(self.sessions.get(&session)?)?;
        inst.members.iter_mut().find(|m| m.session == session)
    }

    fn leave(&mut self, session: SessionId) {
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
        inst.world.remove_player(member.entity);
        self.registry.release(member.join.player_id, session);
        self.inbox.players.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = self.stats.workers.get(self.settings.index) {
            Stats::gauge_add(&w.players, -1);
        }
        if member.detached_at.is_some() {
            Stats::gauge_add(&self.stats.sessions_detached, -1);
        } else {
            Stats::gauge_add(&self.stats.sessions_active, -1);
        }
        if inst.members.is_empty() {
            self.instances.remove(&instance_id);
            Stats::gauge_add(&self.stats.instances_live, -1);
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
            if let Some(m) = self.member(session) {
                let msg = Outgoing::CloseAfter {
                    frame: frame.clone(),
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
    }

    fn member(&self, session: SessionId) -> Option<&Member> {
        let inst = self.instances.get(self.sessions.get(&session)?)?;
        inst.members.iter().find(|m| m.session == session)
    }

    fn apply(&mut self, work: Work) {
        match work {
            Work::Input {
                session,
                count,
                inputs,
                received_at,
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
            } => {
                let Some(m) = self.member(session) else {
                    return;
                };
                let tick = self
                    .sessions
                    .get(&session)
                    .and_then(|i| self.instances.get(i))
                    .map_or(0, |i| i.world.tick());
                let response = match body {
                    Request::Ping { client_time_us } => Ok(Response::Pong {
                        client_time_us,
                        server_tick: tick,
                    }),
                };
                let kind = "ping";
                if let Some(frame) = frame(&ServerMsg::Response { id, body: response }) {
                    match m.join.outbox.try_send(Outgoing::Frame(frame)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            m.join.shared.set_cause(DisconnectCause::SlowReader);
                            m.join.conn.close(close_code::SLOW_READER, b"slow reader");
                        }
                        Err(TrySendError::Closed(_)) => {}
                    }
                }
                metrics::histogram!("zonehost_request_duration_seconds", "kind" => kind)
                    .record(received_at.elapsed().as_secs_f64());
            }
        }
    }

    fn send_snapshots(&mut self) {
        for inst in self.instances.values_mut() {
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
                inst.world.tick(),
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
