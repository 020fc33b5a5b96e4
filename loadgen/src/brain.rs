//! A bot's decisions, without I/O: fed the `Welcome`, sampled snapshots, events, responses
//! and the time, it says which input to send on each schedule slot and which request to
//! make. Every wait is a deadline (never a loop), every refusal has a reaction that does
//! not repeat the same request at once, and at most one request is in flight.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use tokio::time::Instant;
use zonehost_game::items::base;
use zonehost_game::Rect;
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{
    Combat, Event, InventoryEvent, ItemInfo, PartyEvent, Request, RequestError, Response,
    TradeEvent, Welcome,
};
use zonehost_protocol::session::SnapshotInfo;
use zonehost_protocol::snapshot::{kind, ArchivedSnapshotBody};

use crate::behaviour::Behaviour;
use crate::nav::{axes_toward, dist, Atlas, ZoneMap};
use crate::stats::Metric;
use crate::wander::Wander;

/// Sent inputs remembered for position prediction.
const PREDICT: usize = 64;
/// Shortest gap between two requests of one bot.
const REQUEST_GAP: Duration = Duration::from_millis(200);
/// Assumed attack interval until the bag is read (Short Sword: 30 ticks).
const ATTACK_INTERVAL: Duration = Duration::from_millis(500);
/// Default weapon reach (Short Sword), millimetres.
const DEFAULT_REACH: i32 = 1800;
/// Pick-up range (game/RULES.md `PICKUP_RANGE_MM`), with a margin.
const PICKUP_RANGE: i64 = 1800;
/// Loot remembered at most.
const MAX_LOOT: usize = 16;
/// A target not seen for this long is dropped.
const TARGET_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a hopper waits for `ZoneEntered` after stepping into a portal.
const HOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Items a looter keeps in its bag before dropping the worst.
const BAG_KEEP: usize = 30;

/// Settings of one bot's brain.
#[derive(Debug, Clone)]
pub(crate) struct BrainSettings {
    pub(crate) behaviour: Behaviour,
    pub(crate) seed: u64,
    pub(crate) index: usize,
    pub(crate) input_hz: u32,
    /// Pause range after non-combat actions.
    pub(crate) think: (Duration, Duration),
    /// Snapshots a navigating bot looks into per second.
    pub(crate) view_hz: u32,
    /// Party: the names of the members to invite (leader) or of the leader (member).
    pub(crate) party_leader_of: Vec<String>,
    pub(crate) party_member_of: Option<String>,
    /// How long a party member stays before leaving.
    pub(crate) party_stay: (Duration, Duration),
    /// A leader opens a trade with the nearest player this often (`None`: never).
    pub(crate) party_trade_every: Option<Duration>,
}

/// A trade this bot takes part in, as the last `TradeEvent::Updated` showed it.
#[derive(Debug, Clone, Default)]
struct TradeSeen {
    mine: Vec<u128>,
    mine_accepted: bool,
    committing: bool,
    /// This bot already put its item on offer (one item per trade).
    offered: bool,
    /// A trade request was refused: cancel rather than repeat it.
    cancel: bool,
    /// When this bot first saw the trade (a trade stuck longer than [`TRADE_PATIENCE`]
    /// is cancelled).
    since: Option<Instant>,
}

/// How long a bot waits for a trade to complete before cancelling it.
const TRADE_PATIENCE: Duration = Duration::from_secs(10);

/// Largest distance at which a leader opens a trade (the game's limit is 5 m).
const TRADE_REACH: i64 = 4500;

#[derive(Debug, Clone, Copy)]
struct Target {
    id: u32,
    pos: (i32, i32),
    seen: Instant,
    /// The last snapshot showed it walking at this bot: it comes by itself.
    coming: bool,
}

#[derive(Debug, Clone, Copy)]
struct Loot {
    ground: u32,
    pos: (i32, i32),
    too_far: u8,
    /// Dropped by a monster this bot killed (not its own potion put down and taken back).
    from_kill: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u32,
    metric: Metric,
    /// Item or ground entity concerned.
    item: u128,
}

/// The zone hopper's progress.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hop {
    /// Choose a portal.
    Pick,
    /// Walk to the standing point outside the portal.
    Approach {
        portal: Rect,
        stand: (i32, i32),
        axis: (i16, i16),
    },
    /// Stand still until a snapshot confirms the position.
    Settle {
        portal: Rect,
        stand: (i32, i32),
        axis: (i16, i16),
    },
    /// Send `left` more steps; the last one enters the portal.
    Step { axis: (i16, i16), left: u32 },
    /// Stepped in at `at`; waiting for `ZoneEntered` until `until`.
    Wait { until: Instant },
    /// In the portal without a transfer: ask with `EnterZone`.
    Ask,
    /// Stay in the new zone until `until`.
    Dwell { until: Instant },
}

/// What the brain wants measured from an event.
pub(crate) type Measured = Option<(Metric, Duration)>;

/// One bot's decisions.
#[derive(Debug)]
pub(crate) struct Brain {
    s: BrainSettings,
    atlas: Arc<Atlas>,
    rng: Pcg32,
    wander: Wander,
    name: String,
    player_id: u64,
    me: u32,
    zone: u16,
    level: u8,
    // What the last looked-at snapshot said.
    pos: Option<(i32, i32)>,
    pos_seq: u32,
    hp: u16,
    max_hp: u16,
    view_tick: u32,
    next_view: Instant,
    nearest: Option<(u32, (i32, i32), i64)>,
    target: Option<Target>,
    // Prediction.
    sent: [(u32, i16, i16); PREDICT],
    last_seq: u32,
    /// The last input that asked to move.
    last_move_seq: u32,
    // Navigation.
    path: Vec<(i32, i32)>,
    path_goal: Option<(i32, i32)>,
    path_at: Option<Instant>,
    roam: Option<((i32, i32), Instant)>,
    last_pred: (i32, i32),
    stuck_ticks: u32,
    unstick_left: u32,
    unstick_cmd: InputCmd,
    // Requests.
    pending: Option<Pending>,
    next_request_at: Instant,
    backoff: Duration,
    attack_ready_at: Instant,
    /// The worn weapon's attack interval (game/RULES.md), once the bag is known.
    attack_interval: Duration,
    reach: i32,
    close_in_until: Option<Instant>,
    attack_log: Option<(u32, Instant)>,
    dead: bool,
    leaving: bool,
    // Hopper.
    hop: Hop,
    zone_timer: Option<Instant>,
    // Looter.
    inventory_asked: bool,
    inventory_known: bool,
    bag: Vec<ItemInfo>,
    equipment: Vec<(u8, ItemInfo)>,
    unusable: Vec<u128>,
    loot: Vec<Loot>,
    potion_ready_at: Instant,
    exercise_at: Instant,
    exercise_item: Option<u128>,
    // Party.
    in_party: bool,
    party_members: Vec<String>,
    invited_by: Option<String>,
    invite_at: Instant,
    invite_next: usize,
    leave_at: Option<Instant>,
    // Trade.
    trade: Option<TradeSeen>,
    trade_at: Instant,
    /// Nearest other player in the current snapshot tick: (entity, distance).
    nearest_player: Option<(u32, i64)>,
}

impl Brain {
    pub(crate) fn new(s: BrainSettings, atlas: Arc<Atlas>, name: String, now: Instant) -> Self {
        let stream = s.seed ^ (s.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
        let wander = Wander::new(s.seed, s.index, s.input_hz);
        Self {
            rng: Pcg32::seed_from_u64(stream),
            wander,
            atlas,
            name,
            player_id: 0,
            me: 0,
            zone: 0,
            level: 1,
            pos: None,
            pos_seq: 0,
            hp: 0,
            max_hp: 0,
            view_tick: 0,
            next_view: now,
            nearest: None,
            target: None,
            sent: [(0, 0, 0); PREDICT],
            last_seq: 0,
            last_move_seq: 0,
            path: Vec::new(),
            path_goal: None,
            path_at: None,
            roam: None,
            last_pred: (0, 0),
            stuck_ticks: 0,
            unstick_left: 0,
            unstick_cmd: InputCmd::default(),
            pending: None,
            next_request_at: now,
            backoff: Duration::from_millis(500),
            attack_ready_at: now,
            attack_interval: ATTACK_INTERVAL,
            reach: DEFAULT_REACH,
            close_in_until: None,
            attack_log: None,
            dead: false,
            leaving: false,
            hop: Hop::Pick,
            zone_timer: None,
            inventory_asked: false,
            inventory_known: false,
            bag: Vec::new(),
            equipment: Vec::new(),
            unusable: Vec::new(),
            loot: Vec::new(),
            potion_ready_at: now,
            exercise_at: now + Duration::from_secs(2),
            exercise_item: None,
            in_party: false,
            party_members: Vec::new(),
            invited_by: None,
            invite_at: now + Duration::from_secs(1),
            invite_next: 0,
            leave_at: None,
            trade: None,
            trade_at: now + s.party_trade_every.unwrap_or_default(),
            nearest_player: None,
            s,
        }
    }

    /// The behaviour.
    pub(crate) fn behaviour(&self) -> Behaviour {
        self.s.behaviour
    }

    fn think(&mut self) -> Duration {
        let (lo, hi) = self.s.think;
        if hi <= lo {
            return lo;
        }
        lo + (hi - lo).mul_f64(self.rng.random::<f64>())
    }

    fn map(&self) -> Option<&ZoneMap> {
        self.atlas.zone(self.zone)
    }

    /// A (re)connect: everything learned about the world is reset.
    ///
    /// A hopper's zone change that ended in a `Redirect` (its new instance was placed on
    /// another server) completes with this `Welcome`, in the new zone: it is measured
    /// from the step into the portal to here, reconnecting included, and returned.
    pub(crate) fn on_welcome(&mut self, w: &Welcome, now: Instant) -> Measured {
        let hop = self.hop;
        let hopping = self.zone_timer.filter(|_| w.zone != self.zone);
        let keep_party = (self.invite_next, self.party_members.clone());
        *self = Brain::new(self.s.clone(), self.atlas.clone(), self.name.clone(), now);
        self.player_id = w.player_id;
        self.me = w.entity_id;
        self.zone = w.zone;
        self.last_seq = w.last_input;
        self.last_move_seq = w.last_input;
        self.pos_seq = w.last_input;
        if matches!(hop, Hop::Dwell { .. }) {
            self.hop = Hop::Pick;
        }
        (self.invite_next, self.party_members) = keep_party;
        self.next_request_at = now + Duration::from_millis(300);
        let started = hopping?;
        if self.s.behaviour == Behaviour::Hopper {
            let dwell = self.think();
            self.hop = Hop::Dwell { until: now + dwell };
        }
        Some((Metric::EnterZone, now.saturating_duration_since(started)))
    }

    /// Whether the next snapshot should be looked into (navigating bots, at `view_hz`,
    /// and every snapshot while a hopper settles).
    pub(crate) fn wants_view(&self, now: Instant) -> bool {
        self.s.behaviour.navigates()
            && (now >= self.next_view || matches!(self.hop, Hop::Settle { .. }))
    }

    /// Reads own position and hit points, the nearest monster and the target's position.
    pub(crate) fn on_view(
        &mut self,
        info: &SnapshotInfo,
        body: &ArchivedSnapshotBody,
        now: Instant,
    ) {
        if info.stale || info.other_instance {
            return;
        }
        if info.tick != self.view_tick {
            // A new tick: start a new nearest-monster search (parts of one tick add up).
            self.view_tick = info.tick;
            self.nearest = None;
            self.nearest_player = None;
            let period = Duration::from_secs(1) / self.s.view_hz.max(1);
            self.next_view = now + period;
        }
        let origin = self.pos.unwrap_or((0, 0));
        for e in body.entities.iter() {
            let id = e.id.to_native();
            let p = (e.x_mm.to_native(), e.y_mm.to_native());
            if id == self.me && e.kind == kind::PLAYER {
                if let Some(seq) = info.last_input {
                    self.pos = Some(p);
                    self.pos_seq = seq;
                }
                self.hp = e.hp.to_native();
                self.max_hp = e.max_hp.to_native();
            } else if e.kind == kind::PLAYER {
                let d = dist(origin, p);
                if self.nearest_player.is_none_or(|(_, nd)| d < nd) {
                    self.nearest_player = Some((id, d));
                }
            } else if e.kind == kind::MONSTER && e.hp.to_native() > 0 {
                if let Some(t) = self.target.as_mut() {
                    if t.id == id {
                        t.pos = p;
                        t.seen = now;
                        // Moving, and toward us (positive dot product with the way to us).
                        let v = (
                            i64::from(e.vx_cms.to_native()),
                            i64::from(e.vy_cms.to_native()),
                        );
                        let to_me = (
                            i64::from(origin.0) - i64::from(p.0),
                            i64::from(origin.1) - i64::from(p.1),
                        );
                        t.coming = v != (0, 0) && v.0 * to_me.0 + v.1 * to_me.1 > 0;
                    }
                }
                let d = dist(origin, p);
                if self.nearest.is_none_or(|(_, _, nd)| d < nd) {
                    self.nearest = Some((id, p, d));
                }
            }
        }
        if let Some(t) = self.target {
            if now.saturating_duration_since(t.seen) > TARGET_TIMEOUT {
                self.target = None;
            }
        }
        if let Hop::Settle {
            portal,
            stand,
            axis,
        } = self.hop
        {
            // Settled once a snapshot reports every moving input applied (standing inputs
            // keep coming): the position is final.
            if info.last_input.is_some_and(|a| a >= self.last_move_seq) {
                if let Some(p) = self.pos {
                    if dist(p, stand) <= 30 {
                        let steps = self.map().and_then(|m| m.steps_into(p, axis, portal, 40));
                        self.hop = match steps {
                            Some(left) => Hop::Step { axis, left },
                            None => Hop::Pick,
                        };
                    } else {
                        self.hop = Hop::Approach {
                            portal,
                            stand,
                            axis,
                        };
                    }
                }
            }
        }
        if self.target.is_none() && self.fights() && !self.dead {
            if let Some((id, p, _)) = self.nearest {
                self.target = Some(Target {
                    id,
                    pos: p,
                    seen: now,
                    coming: false,
                });
            }
        }
    }

    /// Whether `entity` is this bot in its current instance: the entity id of the last
    /// `Welcome` or `ZoneEntered` (every instance numbers its entities anew).
    pub(crate) fn is_me(&self, entity: u32) -> bool {
        self.me != 0 && entity == self.me
    }

    /// Whether `ground` is loot of this bot's kills that it is after (so its `PickedUp` is
    /// a looted drop, not the potion it put down itself).
    pub(crate) fn is_kill_loot(&self, ground: u32) -> bool {
        self.loot.iter().any(|l| l.ground == ground && l.from_kill)
    }

    fn fights(&self) -> bool {
        matches!(
            self.s.behaviour,
            Behaviour::Fighter | Behaviour::Looter | Behaviour::Party
        )
    }

    /// Where the bot stands after the inputs the last looked-at snapshot had not applied.
    pub(crate) fn predicted(&self) -> Option<(i32, i32)> {
        let mut p = self.pos?;
        let map = self.map()?;
        let first = self.pos_seq.wrapping_add(1);
        let n = self.last_seq.wrapping_sub(self.pos_seq).min(PREDICT as u32);
        for k in 0..n {
            let seq = first.wrapping_add(k);
            let (s, x, y) = self.sent[seq as usize % PREDICT];
            if s == seq {
                p = map.step(p, x, y);
            }
        }
        Some(p)
    }

    /// The command for schedule slot `seq`, due at `due`.
    pub(crate) fn next_input(&mut self, seq: u32, due: Instant) -> InputCmd {
        let cmd = match self.s.behaviour {
            Behaviour::Mover | Behaviour::Churner | Behaviour::Idler => self.wander.next_cmd(),
            _ => self.steer(due),
        };
        self.sent[seq as usize % PREDICT] = (seq, cmd.move_x.get(), cmd.move_y.get());
        self.last_seq = seq;
        if cmd.move_x.get() != 0 || cmd.move_y.get() != 0 {
            self.last_move_seq = seq;
        }
        if let Hop::Step { axis, left } = self.hop {
            if left <= 1 {
                self.zone_timer = Some(due);
                self.hop = Hop::Wait {
                    until: due + HOP_TIMEOUT,
                };
            } else {
                self.hop = Hop::Step {
                    axis,
                    left: left - 1,
                };
            }
        }
        cmd
    }

    fn steer(&mut self, now: Instant) -> InputCmd {
        if self.dead || self.leaving {
            return InputCmd::default();
        }
        let Some(pred) = self.predicted() else {
            return InputCmd::default();
        };
        if let Hop::Step { axis, .. } = self.hop {
            return InputCmd::new(axis.0, axis.1, 0);
        }
        if self.unstick_left > 0 {
            self.unstick_left -= 1;
            return self.unstick_cmd;
        }
        let Some((goal, stop)) = self.goal(pred, now) else {
            self.stuck_ticks = 0;
            return InputCmd::default();
        };
        let d = dist(pred, goal);
        if d <= stop {
            self.stuck_ticks = 0;
            if let Hop::Approach {
                portal,
                stand,
                axis,
            } = self.hop
            {
                self.hop = Hop::Settle {
                    portal,
                    stand,
                    axis,
                };
            }
            return InputCmd::default();
        }
        // Path upkeep: a new goal far from the planned one, or an old plan.
        let replan = self.path.is_empty()
            || self.path_goal.is_none_or(|g| dist(g, goal) > 1500)
            || self
                .path_at
                .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(3));
        if replan {
            self.path = self
                .map()
                .and_then(|m| m.path(pred, goal))
                .unwrap_or_else(|| vec![goal]);
            self.path_goal = Some(goal);
            self.path_at = Some(now);
        } else if let Some(last) = self.path.last_mut() {
            *last = goal;
        }
        while self.path.len() > 1 && dist(pred, self.path[0]) < 200 {
            self.path.remove(0);
        }
        let wp = self.path.first().copied().unwrap_or(goal);
        let max = if self.path.len() <= 1 {
            (d - stop).clamp(1, 100) as i32
        } else {
            100
        };
        let (x, y) = axes_toward(pred, wp, max);
        // Stuck: the prediction did not move for half a second although we push.
        if pred == self.last_pred && (x, y) != (0, 0) {
            self.stuck_ticks += 1;
            if self.stuck_ticks > self.s.input_hz / 2 + 10 {
                self.stuck_ticks = 0;
                self.path.clear();
                self.unstick_left = self.s.input_hz / 2;
                self.unstick_cmd = self.wander.random_cmd();
            }
        } else {
            self.stuck_ticks = 0;
        }
        self.last_pred = pred;
        InputCmd::new(x, y, 0)
    }

    /// Where to go and how close to get.
    fn goal(&mut self, pred: (i32, i32), now: Instant) -> Option<((i32, i32), i64)> {
        match self.s.behaviour {
            Behaviour::Hopper => self.hop_goal(now),
            Behaviour::Fighter | Behaviour::Looter | Behaviour::Party => self.fight_goal(pred, now),
            _ => None,
        }
    }

    fn hop_goal(&mut self, now: Instant) -> Option<((i32, i32), i64)> {
        match self.hop {
            Hop::Pick => {
                let atlas = self.atlas.clone();
                let map = atlas.zone(self.zone)?;
                if map.portals.is_empty() {
                    return None;
                }
                let i = self.rng.random_range(0..map.portals.len());
                let portal = map.portals[i].0;
                let gap = 250 + self.rng.random_range(0..100);
                let (stand, axis) = map.portal_approach(portal, gap);
                self.hop = Hop::Approach {
                    portal,
                    stand,
                    axis,
                };
                self.path.clear();
                Some((stand, 2))
            }
            Hop::Approach { stand, .. } => Some((stand, 2)),
            Hop::Dwell { until } => {
                if now >= until {
                    self.hop = Hop::Pick;
                }
                None
            }
            Hop::Settle { .. } | Hop::Step { .. } | Hop::Ask => None,
            Hop::Wait { until } => {
                if now >= until {
                    // No transfer: stepped short (a wall, a lost input) or already inside.
                    let inside = self
                        .pos
                        .zip(self.map())
                        .is_some_and(|(p, m)| m.portals.iter().any(|(r, _)| r.contains(p)));
                    self.zone_timer = None;
                    self.hop = if inside { Hop::Ask } else { Hop::Pick };
                }
                None
            }
        }
    }

    fn fight_goal(&mut self, pred: (i32, i32), now: Instant) -> Option<((i32, i32), i64)> {
        // Own loot first (before leaving a zone, where it would be lost), unless a monster
        // is close.
        if self.s.behaviour == Behaviour::Looter {
            let engaged = self.target.is_some_and(|t| dist(pred, t.pos) < 4000);
            if !engaged {
                if let Some(l) = self.loot.first() {
                    return Some((l.pos, 800));
                }
            }
        }
        let map = self.map()?;
        // Towns have no monsters: go to the easiest combat zone.
        if map.town || map.min_monster_level.is_none() {
            let to = self.atlas.easiest_combat_zone()?;
            let portal = map
                .portal_to(to)
                .or_else(|| map.portals.first().map(|(r, _)| *r))?;
            return Some((portal.center(), 0));
        }
        // Far too dangerous here: back to town.
        if map
            .min_monster_level
            .is_some_and(|l| u16::from(l) > u16::from(self.level) + 6)
        {
            let town = map
                .portals
                .iter()
                .find(|(_, t)| self.atlas.zone(*t).is_some_and(|z| z.town))
                .map(|(r, _)| *r)?;
            return Some((town.center(), 0));
        }
        if let Some(t) = self.target {
            if t.coming && self.close_in_until.is_none_or(|u| now >= u) {
                // Pulling: the target walks at us, so wait for it where we are instead of
                // walking on into its pack (every monster within its aggro radius of us
                // would join).
                return Some((pred, 0));
            }
            let stop = if self.close_in_until.is_some_and(|u| now < u) {
                600
            } else {
                i64::from(self.reach - 500).max(500)
            };
            return Some((t.pos, stop));
        }
        // Nothing in sight: roam to random walkable points.
        let (w, h) = (map.width, map.height);
        let fresh = self
            .roam
            .is_some_and(|(p, until)| now < until && dist(pred, p) > 500);
        if !fresh {
            let mut pick = None;
            for _ in 0..16 {
                let p = (self.rng.random_range(0..w), self.rng.random_range(0..h));
                if self.map().is_some_and(|m| m.is_walkable(p)) {
                    pick = Some(p);
                    break;
                }
            }
            self.roam = pick.map(|p| (p, now + Duration::from_secs(15)));
        }
        self.roam.map(|(p, _)| (p, 300))
    }

    /// The next request to make, if any (at most one in flight, spaced by at least
    /// [`REQUEST_GAP`] and by think times).
    pub(crate) fn next_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if self.pending.is_some() || now < self.next_request_at || self.me == 0 {
            return None;
        }
        if self.leaving {
            return None;
        }
        match self.s.behaviour {
            Behaviour::Hopper => {
                if self.hop == Hop::Ask && !self.dead {
                    self.zone_timer = Some(now);
                    self.hop = Hop::Wait {
                        until: now + HOP_TIMEOUT,
                    };
                    return Some((Metric::EnterZone, Request::EnterZone, 0));
                }
                None
            }
            Behaviour::Looter => self
                .survive_request(now)
                .or_else(|| self.loot_request(now))
                .or_else(|| self.attack_request(now)),
            Behaviour::Party => self
                .party_request(now)
                .or_else(|| self.trade_request(now))
                .or_else(|| self.survive_request(now))
                .or_else(|| self.attack_request(now)),
            Behaviour::Fighter => self
                .survive_request(now)
                .or_else(|| self.attack_request(now)),
            _ => None,
        }
    }

    fn attack_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if self.dead || now < self.attack_ready_at {
            return None;
        }
        let t = self.target?;
        let me = self.predicted()?;
        if dist(me, t.pos) > i64::from(self.reach) {
            return None;
        }
        self.attack_log = Some((t.id, now));
        Some((
            Metric::Attack,
            Request::Attack { target: t.id },
            u128::from(t.id),
        ))
    }

    fn is_potion(item: &ItemInfo) -> bool {
        base(item.base).is_some_and(|b| b.heal > 0)
    }

    fn slot_of(item: &ItemInfo) -> Option<u8> {
        base(item.base)
            .and_then(|b| b.slot)
            .map(|s| s.index() as u8)
    }

    /// A rough worth of an equippable item: base value plus affixes plus rarity.
    fn score(item: &ItemInfo) -> i64 {
        let Some(b) = base(item.base) else { return 0 };
        let base_value = i64::from(b.damage.0 + b.damage.1) * 5 + i64::from(b.armour) * 10;
        let affixes: i64 = item.affixes.iter().map(|(_, v)| i64::from(*v)).sum();
        base_value + affixes + i64::from(item.rarity) * 10 + i64::from(item.level)
    }

    fn can_wear(&self, item: &ItemInfo) -> bool {
        base(item.base).is_some_and(|b| b.slot.is_some() && b.req_level <= self.level)
            && !self.unusable.contains(&item.id)
    }

    fn worn_score(&self, slot: u8) -> i64 {
        self.equipment
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(-1, |(_, i)| Self::score(i))
    }

    /// What every fighting bot does to stay alive: learn its bag after each login (a new
    /// character's starter kit has two potions) and drink a potion below half HP.
    fn survive_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if self.dead {
            return None;
        }
        if !self.inventory_asked {
            self.inventory_asked = true;
            return Some((Metric::Inventory, Request::GetInventory, 0));
        }
        if !self.inventory_known || self.dead {
            return None;
        }
        if self.max_hp > 0
            && u32::from(self.hp) * 2 < u32::from(self.max_hp)
            && now >= self.potion_ready_at
        {
            if let Some(p) = self
                .bag
                .iter()
                .find(|i| Self::is_potion(i) && !self.unusable.contains(&i.id))
            {
                return Some((Metric::UseItem, Request::UseItem { item: p.id }, p.id));
            }
        }
        None
    }

    /// Attack interval and reach of the worn weapon (fists without one), as the game
    /// computes them: `max(10, ticks * 100 / (100 + min(75, attack speed %)))` ticks, the
    /// attack speed summed over everything worn. A wrong guess costs an `OnCooldown` or
    /// `TooFar` refusal per swing (a Hand Axe swings every 33 ticks, not 30).
    fn weapon_changed(&mut self) {
        use zonehost_game::character::{MAX_ATTACK_SPEED_PCT, MIN_ATTACK_TICKS};
        use zonehost_game::items::{AffixKind, EquipSlot, FISTS};
        let weapon = self
            .equipment
            .iter()
            .find_map(|(_, i)| base(i.base).filter(|b| b.slot == Some(EquipSlot::Weapon)));
        let (ticks, reach) = weapon.map_or((FISTS.1, FISTS.2), |b| (b.attack_ticks, b.range_mm));
        let ias: i32 = self
            .equipment
            .iter()
            .flat_map(|(_, i)| i.affixes.iter())
            .filter(|(k, _)| *k == AffixKind::AttackSpeed as u8)
            .map(|(_, v)| *v)
            .sum();
        let ias = (ias.max(0) as u32).min(MAX_ATTACK_SPEED_PCT);
        let ticks = (ticks * 100 / (100 + ias)).max(MIN_ATTACK_TICKS);
        self.attack_interval = Duration::from_secs(u64::from(ticks)) / zonehost_game::TICK_HZ;
        self.reach = reach;
    }

    fn loot_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if !self.inventory_known || self.dead {
            return None;
        }
        // Better gear: wear it.
        let better = self.bag.iter().find(|i| {
            self.can_wear(i)
                && Self::slot_of(i).is_some_and(|s| Self::score(i) > self.worn_score(s))
        });
        if let Some(i) = better {
            return Some((Metric::Equip, Request::Equip { item: i.id }, i.id));
        }
        // Junk (gear no better than what is worn), or the worst when the bag fills up.
        let junk = self.bag.iter().find(|i| {
            !Self::is_potion(i)
                && !self.unusable.contains(&i.id)
                && Self::slot_of(i).is_some_and(|s| Self::score(i) <= self.worn_score(s))
        });
        let junk = junk.or_else(|| {
            (self.bag.len() >= BAG_KEEP)
                .then(|| {
                    self.bag
                        .iter()
                        .filter(|i| !self.unusable.contains(&i.id))
                        .min_by_key(|i| Self::score(i))
                })
                .flatten()
        });
        if let Some(i) = junk {
            return Some((Metric::Drop, Request::Drop { item: i.id }, i.id));
        }
        // Loot in reach.
        if let Some(me) = self.predicted() {
            if let Some(l) = self.loot.iter().find(|l| dist(me, l.pos) <= PICKUP_RANGE) {
                return Some((
                    Metric::PickUp,
                    Request::PickUp { ground: l.ground },
                    u128::from(l.ground),
                ));
            }
        }
        // Now and then, while nothing attacks: drop a potion to pick it up again.
        let calm = self
            .target
            .is_none_or(|t| self.predicted().is_none_or(|me| dist(me, t.pos) > 6000));
        if calm && now >= self.exercise_at && self.exercise_item.is_none() && self.loot.is_empty() {
            if let Some(p) = self.bag.iter().find(|i| Self::is_potion(i)) {
                let id = p.id;
                self.exercise_item = Some(id);
                self.exercise_at = now + Duration::from_secs(20) + self.think();
                return Some((Metric::Drop, Request::Drop { item: id }, id));
            }
        }
        None
    }

    fn party_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        if let Some(by) = self.invited_by.take() {
            if self.s.party_member_of.as_deref().is_none_or(|l| l == by) && !self.in_party {
                return Some((Metric::Party, Request::PartyAccept, 0));
            }
            return Some((Metric::Party, Request::PartyDecline, 0));
        }
        if self.in_party && self.leave_at.is_some_and(|t| now >= t) {
            self.leave_at = None;
            return Some((Metric::Party, Request::PartyLeave, 0));
        }
        if !self.s.party_leader_of.is_empty() && now >= self.invite_at {
            let n = self.s.party_leader_of.len();
            for k in 0..n {
                let i = (self.invite_next + k) % n;
                let name = &self.s.party_leader_of[i];
                if !self.party_members.contains(name) {
                    self.invite_next = i + 1;
                    self.invite_at = now + Duration::from_secs(2);
                    return Some((
                        Metric::Party,
                        Request::PartyInvite {
                            player: name.clone(),
                        },
                        0,
                    ));
                }
            }
            self.invite_at = now + Duration::from_secs(2);
        }
        None
    }

    /// Trading (party bots with `party_trade_every`): a leader opens a trade with the
    /// nearest player (in a party instance, a member); each side offers one potion, then
    /// accepts; a refusal cancels the trade.
    fn trade_request(&mut self, now: Instant) -> Option<(Metric, Request, u128)> {
        let every = self.s.party_trade_every?;
        if self.dead {
            return None;
        }
        if let Some(t) = self.trade.as_mut() {
            if t.committing {
                return None;
            }
            if t.since
                .is_some_and(|s| now.saturating_duration_since(s) > TRADE_PATIENCE)
            {
                t.since = Some(now);
                t.cancel = true;
            }
            if t.cancel {
                t.cancel = false;
                return Some((Metric::TradeCancel, Request::TradeCancel, 0));
            }
            if !t.offered {
                t.offered = true;
                let offer = self
                    .bag
                    .iter()
                    .find(|i| Self::is_potion(i) && !t.mine.contains(&i.id))
                    .map(|i| i.id);
                if let Some(item) = offer {
                    return Some((Metric::TradeOffer, Request::TradeOffer { item }, item));
                }
            }
            if !t.mine_accepted {
                t.mine_accepted = true;
                return Some((Metric::TradeAccept, Request::TradeAccept, 0));
            }
            return None;
        }
        if self.s.party_leader_of.is_empty() || !self.in_party || now < self.trade_at {
            return None;
        }
        let (with, d) = self.nearest_player?;
        if d > TRADE_REACH || !self.inventory_known {
            return None;
        }
        self.trade_at = now + every;
        Some((Metric::TradeOpen, Request::TradeOpen { with }, 0))
    }

    /// The request just sent got id `id`.
    pub(crate) fn request_sent(&mut self, id: u32, metric: Metric, item: u128, now: Instant) {
        self.pending = Some(Pending { id, metric, item });
        self.next_request_at = now + REQUEST_GAP;
    }

    /// A response arrived; returns the metric of the request it answers (`None` when it is
    /// not this brain's).
    pub(crate) fn on_response(
        &mut self,
        id: u32,
        body: &Result<Response, RequestError>,
        now: Instant,
    ) -> Option<Metric> {
        let p = self.pending.filter(|p| p.id == id)?;
        self.pending = None;
        match body {
            Ok(r) => {
                self.backoff = Duration::from_millis(500);
                self.on_done(p, r, now);
            }
            Err(e) => self.on_refused(p, *e, now),
        }
        Some(p.metric)
    }

    fn on_done(&mut self, p: Pending, r: &Response, now: Instant) {
        match p.metric {
            Metric::Attack => self.attack_ready_at = now + self.attack_interval,
            Metric::Inventory => {
                if let Response::Inventory(v) = r {
                    self.bag = v.bag.clone();
                    self.equipment = v.equipment.clone();
                    self.level = v.level;
                    self.inventory_known = true;
                    self.weapon_changed();
                }
            }
            Metric::PickUp => {
                let g = p.item as u32;
                self.loot.retain(|l| l.ground != g);
                self.next_request_at = now + self.think();
            }
            Metric::EnterZone => {}
            _ => self.next_request_at = now + self.think(),
        }
    }

    fn on_refused(&mut self, p: Pending, e: RequestError, now: Instant) {
        use RequestError as E;
        if p.metric == Metric::Attack {
            self.attack_log = None;
        }
        match e {
            E::RateLimited | E::Internal | E::NotAllowed => {
                self.next_request_at = now + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(8));
            }
            E::Dead => self.dead = true,
            E::Leaving => self.leaving = true,
            E::TooFar => match p.metric {
                Metric::Attack => {
                    self.reach = (self.reach - 300).max(900);
                    self.attack_ready_at = now + Duration::from_millis(300);
                }
                Metric::PickUp => {
                    let g = p.item as u32;
                    if let Some(l) = self.loot.iter_mut().find(|l| l.ground == g) {
                        l.too_far += 1;
                    }
                    self.loot.retain(|l| l.too_far < 5);
                    self.next_request_at = now + Duration::from_millis(500);
                }
                _ => {}
            },
            E::NoLineOfSight => {
                self.close_in_until = Some(now + Duration::from_secs(2));
                self.attack_ready_at = now + Duration::from_millis(300);
            }
            E::NoSuchTarget => {
                self.target = None;
            }
            E::OnCooldown => match p.metric {
                Metric::UseItem => self.potion_ready_at = now + Duration::from_secs(1),
                _ => self.attack_ready_at = now + Duration::from_millis(250),
            },
            E::NoSuchItem | E::NotYours => {
                let g = p.item;
                self.loot.retain(|l| u128::from(l.ground) != g);
                self.bag.retain(|i| i.id != g);
                if self.exercise_item == Some(g) {
                    self.exercise_item = None;
                }
            }
            E::NoEffect => self.potion_ready_at = now + Duration::from_secs(3),
            E::NotUsable | E::WrongSlot | E::LevelTooLow | E::GroundFull => {
                self.unusable.push(p.item);
                if self.exercise_item == Some(p.item) {
                    self.exercise_item = None;
                }
            }
            E::BagFull => {
                // Drop something before picking up more: the junk rule handles it.
                self.next_request_at = now + Duration::from_millis(500);
                let g = p.item as u32;
                self.loot.retain(|l| l.ground != g);
            }
            E::NotAtPortal => {
                self.zone_timer = None;
                self.hop = Hop::Pick;
            }
            E::SlotEmpty => {}
            E::NoSuchPlayer | E::PartyFull | E::NotLeader | E::AlreadyInParty => {
                self.invite_at = now + Duration::from_secs(2);
            }
            E::NoInvite | E::SelfInvite | E::NotMember => {}
            E::NotInParty => self.in_party = false,
            E::TradeBusy
            | E::NoTrade
            | E::ItemEquipped
            | E::NotEnoughGold
            | E::PartnerBagFull
            | E::OfferFull => {}
        }
        if matches!(
            p.metric,
            Metric::TradeOpen | Metric::TradeOffer | Metric::TradeAccept
        ) {
            if let Some(t) = self.trade.as_mut() {
                t.cancel = !t.committing;
            }
        }
    }

    /// A reliable event arrived; returns a latency to record, if it completes a measurement.
    pub(crate) fn on_event(&mut self, ev: &Event, now: Instant) -> Measured {
        match ev {
            Event::Combat(c) => return self.on_combat(c, now),
            Event::ItemDropped {
                ground,
                owner,
                x_mm,
                y_mm,
                ..
            } if self.s.behaviour == Behaviour::Looter
                && *owner == Some(self.player_id)
                && self.loot.len() < MAX_LOOT =>
            {
                self.loot.push(Loot {
                    ground: *ground,
                    pos: (*x_mm, *y_mm),
                    too_far: 0,
                    from_kill: true,
                });
            }
            Event::ItemExpired { ground } => self.loot.retain(|l| l.ground != *ground),
            Event::Trade(TradeEvent::Updated {
                mine, committing, ..
            }) => {
                let t = self.trade.get_or_insert_with(|| TradeSeen {
                    since: Some(now),
                    ..TradeSeen::default()
                });
                t.mine = mine.items.clone();
                t.mine_accepted = mine.accepted;
                t.committing = *committing;
                t.offered |= !mine.items.is_empty();
            }
            Event::Trade(TradeEvent::Ended { .. }) => self.trade = None,
            Event::LevelUp { level } => self.level = *level,
            Event::Died { .. } => {
                self.dead = true;
                self.target = None;
                self.path.clear();
                self.attack_log = None;
            }
            Event::Respawned => {
                self.dead = false;
                self.pos = None;
            }
            Event::ZoneEntered {
                zone, entity_id, ..
            } => {
                let measured = self
                    .zone_timer
                    .take()
                    .map(|t| (Metric::EnterZone, now.saturating_duration_since(t)));
                self.me = *entity_id;
                self.zone = *zone;
                self.pos = None;
                self.pos_seq = self.last_seq;
                self.target = None;
                self.nearest = None;
                self.loot.clear();
                self.path.clear();
                self.roam = None;
                self.dead = false;
                self.leaving = false;
                self.attack_log = None;
                self.exercise_item = None;
                self.next_view = now;
                if self.s.behaviour == Behaviour::Hopper {
                    let dwell = self.think();
                    self.hop = Hop::Dwell { until: now + dwell };
                }
                return measured;
            }
            Event::Inventory(i) => self.on_inventory(i, now),
            Event::Party(p) => self.on_party(p, now),
            _ => {}
        }
        None
    }

    fn on_combat(&mut self, c: &Combat, now: Instant) -> Measured {
        match c {
            Combat::Hit {
                attacker, target, ..
            }
            | Combat::Miss { attacker, target } => {
                if *attacker == self.me {
                    if let Some((t, at)) = self.attack_log {
                        if t == *target {
                            self.attack_log = None;
                            return Some((Metric::AttackLog, now.saturating_duration_since(at)));
                        }
                    }
                } else if *target == self.me && self.fights() && !self.dead {
                    if let Combat::Hit { target_hp, .. } = c {
                        // Fresher than the sampled snapshots: decides the next potion.
                        self.hp = (*target_hp).min(u32::from(u16::MAX)) as u16;
                    }
                    // Fight back when the attacker is closer than the current target.
                    let keep = self.target.is_some_and(|t| {
                        self.predicted()
                            .is_some_and(|me| dist(me, t.pos) <= i64::from(self.reach))
                    });
                    if !keep {
                        let pos = self.predicted().unwrap_or((0, 0));
                        self.target = Some(Target {
                            id: *attacker,
                            pos,
                            seen: now,
                            coming: false,
                        });
                    }
                }
            }
            Combat::Killed { victim, .. } => {
                if self.target.is_some_and(|t| t.id == *victim) {
                    self.target = None;
                }
            }
        }
        None
    }

    fn on_inventory(&mut self, i: &InventoryEvent, now: Instant) {
        match i {
            InventoryEvent::PickedUp { item, ground } => {
                self.loot.retain(|l| l.ground != *ground);
                if !self.bag.iter().any(|b| b.id == item.id) {
                    self.bag.push(item.clone());
                }
                if self.exercise_item == Some(item.id) {
                    self.exercise_item = None;
                }
            }
            InventoryEvent::Equipped {
                item,
                slot,
                swapped_out,
            } => {
                if let Some(pos) = self.bag.iter().position(|b| b.id == *item) {
                    let info = self.bag.remove(pos);
                    if let Some(old) = swapped_out {
                        if let Some(w) = self
                            .equipment
                            .iter()
                            .position(|(s, e)| *s == *slot && e.id == *old)
                        {
                            let (_, o) = self.equipment.remove(w);
                            self.bag.push(o);
                        }
                    }
                    self.equipment.retain(|(s, _)| *s != *slot);
                    self.equipment.push((*slot, info));
                    self.weapon_changed();
                }
            }
            InventoryEvent::Unequipped { item, slot } => {
                if let Some(w) = self
                    .equipment
                    .iter()
                    .position(|(s, e)| *s == *slot && e.id == *item)
                {
                    let (_, o) = self.equipment.remove(w);
                    self.bag.push(o);
                    self.weapon_changed();
                }
            }
            InventoryEvent::Dropped { item, ground } => {
                self.bag.retain(|b| b.id != *item);
                if self.exercise_item == Some(*item) {
                    // Our own potion at our feet: pick it up again (public ground item).
                    let pos = self.predicted().unwrap_or((0, 0));
                    self.loot.insert(
                        0,
                        Loot {
                            ground: *ground,
                            pos,
                            too_far: 0,
                            from_kill: false,
                        },
                    );
                    self.next_request_at = self.next_request_at.min(now + REQUEST_GAP);
                }
            }
            InventoryEvent::Consumed { item, .. } => {
                self.bag.retain(|b| b.id != *item);
                self.potion_ready_at = now + Duration::from_millis(1100);
            }
            InventoryEvent::Granted { .. } => {
                self.inventory_asked = false;
                self.inventory_known = false;
            }
            InventoryEvent::Returned { item } => {
                if !self.bag.iter().any(|b| b.id == item.id) {
                    self.bag.push(item.clone());
                }
            }
            InventoryEvent::Traded {
                given, received, ..
            } => {
                self.bag.retain(|b| !given.contains(&b.id));
                for item in received {
                    if !self.bag.iter().any(|b| b.id == item.id) {
                        self.bag.push(item.clone());
                    }
                }
            }
        }
    }

    fn on_party(&mut self, p: &PartyEvent, now: Instant) {
        match p {
            PartyEvent::Invited { by } => self.invited_by = Some(by.clone()),
            PartyEvent::Declined { .. } => self.invite_at = now + Duration::from_secs(2),
            PartyEvent::Members { members, .. } => {
                self.in_party = members.contains(&self.name);
                self.party_members = members.clone();
                if self.in_party && self.s.party_member_of.is_some() && self.leave_at.is_none() {
                    let (lo, hi) = self.s.party_stay;
                    let stay = if hi > lo {
                        lo + (hi - lo).mul_f64(self.rng.random::<f64>())
                    } else {
                        lo
                    };
                    self.leave_at = Some(now + stay);
                }
            }
            PartyEvent::Left { .. } => {
                self.in_party = false;
                self.party_members.clear();
                self.leave_at = None;
                self.invite_at = now + Duration::from_secs(2);
            }
        }
    }

    /// For tests and the report: where the hopper is.
    #[cfg(test)]
    fn hop_state(&self) -> Hop {
        self.hop
    }
}

/// Brains for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use zonehost_protocol::message::Welcome;

    /// Settings of a test bot of behaviour `b` (bot 0, seed 1, 60 Hz inputs and views).
    pub(crate) fn settings(b: Behaviour) -> BrainSettings {
        BrainSettings {
            behaviour: b,
            seed: 1,
            index: 0,
            input_hz: 60,
            think: (Duration::from_millis(100), Duration::from_millis(200)),
            view_hz: 60,
            party_leader_of: Vec::new(),
            party_member_of: None,
            party_stay: (Duration::from_secs(5), Duration::from_secs(6)),
            party_trade_every: None,
        }
    }

    /// A `Welcome` of player 77 into `zone` as `entity`.
    pub(crate) fn welcome(zone: u16, entity: u32) -> Welcome {
        Welcome {
            player_id: 77,
            entity_id: entity,
            zone,
            instance: 1,
            tick_rate_hz: 60,
            snapshot_rate_hz: 60,
            server_tick: 0,
            server_time_us: 0,
            max_speed_mms: 6000,
            last_input: 0,
            resume_token: String::new(),
        }
    }

    /// A fighter brain welcomed in `zone` as `entity`.
    pub(crate) fn fighter(zone: u16, entity: u32, now: Instant) -> Brain {
        let s = BrainSettings {
            view_hz: 10,
            ..settings(Behaviour::Fighter)
        };
        let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-0".into(), now);
        b.on_welcome(&welcome(zone, entity), now);
        b
    }
}

#[cfg(test)]
mod tests;
