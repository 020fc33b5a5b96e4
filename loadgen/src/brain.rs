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
mod tests {
    use super::tests_support::{settings, welcome};
    use super::*;
    use zonehost_protocol::snapshot::{decode_snapshot, encode_snapshot, EntityState, PlayerAck};

    /// As if the bag had been read already (an empty bag), so the next request is about
    /// something else.
    fn bag_known(b: &mut Brain) {
        b.inventory_asked = true;
        b.inventory_known = true;
    }

    fn player(id: u32, p: (i32, i32), hp: u16) -> EntityState {
        EntityState {
            id,
            x_mm: p.0,
            y_mm: p.1,
            hp,
            max_hp: 124,
            kind: kind::PLAYER,
            ..EntityState::default()
        }
    }

    fn monster(id: u32, p: (i32, i32)) -> EntityState {
        EntityState {
            id,
            x_mm: p.0,
            y_mm: p.1,
            hp: 40,
            max_hp: 40,
            kind: kind::MONSTER,
            ..EntityState::default()
        }
    }

    fn view(b: &mut Brain, tick: u32, ack: u32, entities: &[EntityState], now: Instant) {
        let mut out = Vec::new();
        encode_snapshot(
            tick,
            1,
            b.zone,
            &[PlayerAck {
                entity: b.me,
                last_input: ack,
            }],
            entities,
            &mut out,
        )
        .expect("encode");
        let (_, body) = decode_snapshot(&out[0]).expect("decode");
        let info = SnapshotInfo {
            tick,
            part: 0,
            parts: 1,
            last_input: Some(ack),
            stale: false,
            other_instance: false,
        };
        b.on_view(&info, body, now);
    }

    /// Plays the server for one bot: applies each input with the game's movement rules
    /// and answers with a snapshot (no latency).
    fn walk(
        b: &mut Brain,
        pos: &mut (i32, i32),
        seq: &mut u32,
        ticks: u32,
        t: &mut Instant,
        extra: &[EntityState],
    ) {
        let map = b.atlas.zone(b.zone).cloned().expect("zone");
        for _ in 0..ticks {
            *seq += 1;
            *t += Duration::from_micros(16_667);
            let cmd = b.next_input(*seq, *t);
            *pos = map.step(*pos, cmd.move_x.get(), cmd.move_y.get());
            let mut ents = vec![player(b.me, *pos, 124)];
            ents.extend_from_slice(extra);
            view(b, *seq, *seq, &ents, *t);
        }
    }

    #[test]
    fn fighter_walks_from_town_toward_the_crypt_portal() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Fighter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(1, 5), t0);
        let mut pos = (20_000, 20_000);
        let (mut seq, mut t) = (0, t0);
        view(&mut b, 1, 0, &[player(5, pos, 124)], t);
        walk(&mut b, &mut pos, &mut seq, 60 * 8, &mut t, &[]);
        let portal = Rect::new(38000, 18000, 40000, 22000);
        assert!(
            portal.contains(pos) || dist(pos, portal.center()) < 200,
            "ended at {pos:?}"
        );
    }

    #[test]
    fn fighter_approaches_attacks_and_handles_refusals() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Fighter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(2, 5), t0);
        bag_known(&mut b);
        let mut pos = (3000, 30000);
        let m = monster(900, (8000, 30000));
        let (mut seq, mut t) = (0, t0);
        view(&mut b, 1, 0, &[player(5, pos, 124), m], t);
        assert!(b.next_request(t).is_none(), "out of reach: no attack");
        walk(&mut b, &mut pos, &mut seq, 120, &mut t, &[m]);
        assert!(
            dist(pos, (8000, 30000)) <= 1800,
            "walked into reach: {pos:?}"
        );
        let (metric, req, _) = b.next_request(t).expect("attack");
        assert_eq!(metric, Metric::Attack);
        assert_eq!(req, Request::Attack { target: 900 });
        b.request_sent(1, metric, 900, t);
        assert!(
            b.next_request(t + Duration::from_secs(1)).is_none(),
            "one in flight"
        );
        // The combat log line completes the attack -> log measurement.
        let hit = Event::Combat(Combat::Miss {
            attacker: 5,
            target: 900,
        });
        let m2 = b.on_event(&hit, t + Duration::from_millis(20));
        assert_eq!(m2, Some((Metric::AttackLog, Duration::from_millis(20))));
        assert_eq!(
            b.on_response(1, &Ok(Response::Done), t + Duration::from_millis(21)),
            Some(Metric::Attack)
        );
        assert!(
            b.next_request(t + Duration::from_millis(100)).is_none(),
            "cooldown respected"
        );
        // TooFar: shorter assumed reach, no immediate retry.
        let t2 = t + Duration::from_secs(1);
        let (metric, _, _) = b.next_request(t2).expect("attack again");
        b.request_sent(2, metric, 900, t2);
        assert_eq!(
            b.on_response(2, &Err(RequestError::TooFar), t2),
            Some(Metric::Attack)
        );
        assert!(b.reach < DEFAULT_REACH);
        assert!(b.next_request(t2 + Duration::from_millis(100)).is_none());
        // NoSuchTarget: the target is forgotten.
        let t3 = t2 + Duration::from_secs(1);
        if let Some((metric, _, _)) = b.next_request(t3) {
            b.request_sent(3, metric, 900, t3);
            b.on_response(3, &Err(RequestError::NoSuchTarget), t3);
            assert!(b.target.is_none());
        }
        // A response for another id is not ours.
        assert_eq!(b.on_response(99, &Ok(Response::Done), t3), None);
    }

    #[test]
    fn rate_limits_back_off_exponentially() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Party),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.s.party_leader_of = vec!["bot-1-1".into()];
        b.on_welcome(&welcome(1, 5), t0);
        bag_known(&mut b);
        let mut t = t0 + Duration::from_secs(2);
        let mut gaps = Vec::new();
        for id in 1..6 {
            let mut k = 0;
            let (metric, req, item) = loop {
                if let Some(r) = b.next_request(t) {
                    break r;
                }
                t += Duration::from_millis(100);
                k += 1;
                assert!(k < 1000, "bounded");
            };
            assert!(matches!(req, Request::PartyInvite { .. }));
            b.request_sent(id, metric, item, t);
            b.on_response(id, &Err(RequestError::RateLimited), t);
            gaps.push(b.next_request_at - t);
        }
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
        assert!(gaps[4] >= Duration::from_secs(4));
    }

    #[test]
    fn looter_drops_and_picks_up_a_potion_and_drinks_when_hurt() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Looter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(2, 5), t0);
        view(&mut b, 1, 0, &[player(5, (3000, 30000), 124)], t0);
        let (m, req, _) = b
            .next_request(t0 + Duration::from_secs(1))
            .expect("inventory");
        assert_eq!((m, req), (Metric::Inventory, Request::GetInventory));
        b.request_sent(1, m, 0, t0);
        let sword = ItemInfo {
            id: 10,
            base: 1,
            rarity: 0,
            level: 1,
            unique: None,
            affixes: vec![],
        };
        let potion = |id| ItemInfo {
            id,
            base: 40,
            rarity: 0,
            level: 1,
            unique: None,
            affixes: vec![],
        };
        let inv = zonehost_protocol::message::InventoryView {
            bag: vec![potion(11), potion(12)],
            equipment: vec![(0, sword)],
            gold: 0,
            level: 1,
            xp: 0,
        };
        b.on_response(
            1,
            &Ok(Response::Inventory(inv)),
            t0 + Duration::from_secs(1),
        );
        let t = t0 + Duration::from_secs(3);
        let (m, req, item) = b.next_request(t).expect("exercise drop");
        assert_eq!(m, Metric::Drop);
        assert_eq!(req, Request::Drop { item: 11 });
        b.request_sent(2, m, item, t);
        b.on_event(
            &Event::Inventory(InventoryEvent::Dropped {
                item: 11,
                ground: 300,
            }),
            t,
        );
        b.on_response(2, &Ok(Response::Done), t);
        let t = t + Duration::from_secs(1);
        let (m, req, item) = b.next_request(t).expect("pick up");
        assert_eq!((m, req), (Metric::PickUp, Request::PickUp { ground: 300 }));
        b.request_sent(3, m, item, t);
        b.on_event(
            &Event::Inventory(InventoryEvent::PickedUp {
                item: potion(11),
                ground: 300,
            }),
            t,
        );
        b.on_response(3, &Ok(Response::Done), t);
        // Hurt: a potion is used.
        view(&mut b, 2, 0, &[player(5, (3000, 30000), 40)], t);
        let t = t + Duration::from_secs(1);
        let (m, req, _) = b.next_request(t).expect("potion");
        assert_eq!(m, Metric::UseItem);
        assert!(matches!(req, Request::UseItem { item: 11 | 12 }));
        // A better weapon is worn; the old one is then junk and dropped.
        b.request_sent(4, m, 11, t);
        b.on_response(4, &Err(RequestError::NoEffect), t);
        let axe = ItemInfo {
            id: 20,
            base: 2,
            rarity: 1,
            level: 3,
            unique: None,
            affixes: vec![(4, 20)],
        };
        b.bag.push(axe);
        b.level = 2;
        let t = t + Duration::from_secs(1);
        let (m, req, item) = b.next_request(t).expect("equip");
        assert_eq!((m, req), (Metric::Equip, Request::Equip { item: 20 }));
        b.request_sent(5, m, item, t);
        b.on_event(
            &Event::Inventory(InventoryEvent::Equipped {
                item: 20,
                slot: 0,
                swapped_out: Some(10),
            }),
            t,
        );
        b.on_response(5, &Ok(Response::Done), t);
        // The axe swings every 33 ticks: the next attack waits 550 ms, not the sword's 500.
        assert_eq!(b.attack_interval, Duration::from_millis(550));
        assert_eq!(b.reach, 1800);
        let t = t + Duration::from_secs(1);
        let (m, req, _) = b.next_request(t).expect("drop junk");
        assert_eq!((m, req), (Metric::Drop, Request::Drop { item: 10 }));
    }

    #[test]
    fn a_zone_change_ending_in_a_redirect_is_measured_until_the_welcome_in_the_new_zone() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Hopper),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        assert_eq!(
            b.on_welcome(&welcome(1, 5), t0),
            None,
            "a login is no zone change"
        );
        // Stepped into the crypt's portal; the server placed the new instance on a peer:
        // Redirect, reconnect, Welcome there in the crypt 90 ms later.
        b.zone_timer = Some(t0);
        b.hop = Hop::Wait {
            until: t0 + HOP_TIMEOUT,
        };
        let got = b.on_welcome(&welcome(2, 7), t0 + Duration::from_millis(90));
        assert_eq!(got, Some((Metric::EnterZone, Duration::from_millis(90))));
        assert!(
            matches!(b.hop_state(), Hop::Dwell { .. }),
            "{:?}",
            b.hop_state()
        );
        assert_eq!((b.zone, b.me, b.zone_timer), (2, 7, None));
        // A redirect that does not change the zone (a drain, a party move) while waiting
        // is not a zone change: nothing measured, the timer is gone.
        b.zone_timer = Some(t0);
        assert_eq!(
            b.on_welcome(&welcome(2, 8), t0 + Duration::from_millis(50)),
            None
        );
        assert_eq!(b.zone_timer, None);
    }

    #[test]
    fn hopper_steps_into_a_portal_and_measures_the_zone_change() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Hopper),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(1, 5), t0);
        let mut pos = (20_000, 20_000);
        let (mut seq, mut t) = (0, t0);
        view(&mut b, 1, 0, &[player(5, pos, 124)], t);
        let mut entered = None;
        let map = b.atlas.zone(1).cloned().expect("town");
        // Snapshots lag one input behind (the next input always leaves before the
        // snapshot acknowledging the previous one arrives).
        for _ in 0..60 * 20 {
            seq += 1;
            t += Duration::from_micros(16_667);
            let cmd = b.next_input(seq, t);
            view(&mut b, seq, seq - 1, &[player(5, pos, 124)], t);
            pos = map.step(pos, cmd.move_x.get(), cmd.move_y.get());
            if let Some((portal, _)) = map.portals.iter().find(|(r, _)| r.contains(pos)) {
                entered = Some((t, *portal));
                break;
            }
        }
        let (at, _) = entered.expect("walked into a portal");
        assert!(
            matches!(b.hop_state(), Hop::Wait { .. }),
            "{:?}",
            b.hop_state()
        );
        assert_eq!(b.zone_timer, Some(at), "timed from the input that entered");
        let got = b.on_event(
            &Event::ZoneEntered {
                zone: 2,
                instance: 9,
                entity_id: 6,
            },
            at + Duration::from_millis(40),
        );
        assert_eq!(got, Some((Metric::EnterZone, Duration::from_millis(40))));
        assert!(matches!(b.hop_state(), Hop::Dwell { .. }));
        assert_eq!(b.me, 6);
    }

    #[test]
    fn party_leader_trades_a_potion_with_the_nearest_member() {
        use zonehost_protocol::message::{TradeEndReason, TradeOffer};
        let t0 = Instant::now();
        let mut s = settings(Behaviour::Party);
        s.party_leader_of = vec!["bot-1-1".into()];
        s.party_trade_every = Some(Duration::from_secs(5));
        let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-0".into(), t0);
        b.on_welcome(&welcome(1, 5), t0);
        bag_known(&mut b);
        let potion = ItemInfo {
            id: 99,
            base: zonehost_game::items::MINOR_HEALING_POTION,
            rarity: 0,
            level: 1,
            unique: None,
            affixes: Vec::new(),
        };
        b.bag.push(potion);
        b.on_event(
            &Event::Party(PartyEvent::Members {
                party: 1,
                leader: "bot-1-0".into(),
                members: vec!["bot-1-0".into(), "bot-1-1".into()],
            }),
            t0,
        );
        b.pos = Some((1000, 1000));
        b.nearest_player = Some((6, 2000));
        // Not before the interval.
        assert!(b.trade_request(t0 + Duration::from_secs(1)).is_none());
        let t = t0 + Duration::from_secs(6);
        let (m, req, _) = b.trade_request(t).expect("open");
        assert_eq!(
            (m, req),
            (Metric::TradeOpen, Request::TradeOpen { with: 6 })
        );
        let view = |items: Vec<u128>, accepted: bool, committing: bool| {
            Event::Trade(TradeEvent::Updated {
                trade: 1,
                partner: 2,
                partner_entity: 6,
                mine: TradeOffer {
                    items,
                    gold: 0,
                    accepted,
                },
                theirs: TradeOffer {
                    items: vec![7],
                    gold: 0,
                    accepted: false,
                },
                committing,
            })
        };
        b.on_event(&view(vec![], false, false), t);
        let (m, req, _) = b.trade_request(t).expect("offer");
        assert_eq!(
            (m, req),
            (Metric::TradeOffer, Request::TradeOffer { item: 99 })
        );
        b.on_event(&view(vec![99], false, false), t);
        let (m, req, _) = b.trade_request(t).expect("accept");
        assert_eq!((m, req), (Metric::TradeAccept, Request::TradeAccept));
        assert!(b.trade_request(t).is_none(), "accepted: waits");
        // The partner changed its offer: acceptance voided, accept again.
        b.on_event(&view(vec![99], false, false), t);
        assert_eq!(
            b.trade_request(t).map(|(m, ..)| m),
            Some(Metric::TradeAccept)
        );
        b.on_event(&view(vec![99], true, true), t);
        assert!(
            b.trade_request(t + Duration::from_secs(60)).is_none(),
            "committing"
        );
        b.on_event(
            &Event::Trade(TradeEvent::Ended {
                trade: 1,
                reason: TradeEndReason::Completed,
            }),
            t,
        );
        assert!(b.trade.is_none());
        // A stuck trade is cancelled after the patience.
        let t2 = t + Duration::from_secs(6);
        assert!(b.trade_request(t2).is_some(), "next trade opens");
        b.on_event(&view(vec![], false, false), t2);
        let _ = b.trade_request(t2);
        let _ = b.trade_request(t2);
        let (m, req, _) = b
            .trade_request(t2 + TRADE_PATIENCE + Duration::from_secs(1))
            .expect("cancel");
        assert_eq!((m, req), (Metric::TradeCancel, Request::TradeCancel));
    }

    #[test]
    fn party_member_accepts_then_leaves() {
        let t0 = Instant::now();
        let mut s = settings(Behaviour::Party);
        s.party_member_of = Some("bot-1-0".into());
        let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-1".into(), t0);
        b.on_welcome(&welcome(1, 5), t0);
        bag_known(&mut b);
        b.on_event(
            &Event::Party(PartyEvent::Invited {
                by: "bot-1-0".into(),
            }),
            t0,
        );
        let t = t0 + Duration::from_secs(1);
        let (m, req, _) = b.next_request(t).expect("accept");
        assert_eq!((m, req), (Metric::Party, Request::PartyAccept));
        b.request_sent(1, m, 0, t);
        b.on_event(
            &Event::Party(PartyEvent::Members {
                party: 1,
                leader: "bot-1-0".into(),
                members: vec!["bot-1-0".into(), "bot-1-1".into()],
            }),
            t,
        );
        b.on_response(1, &Ok(Response::Done), t);
        assert!(b.in_party);
        assert!(b.next_request(t + Duration::from_secs(1)).is_none());
        let (m, req, _) = b.next_request(t + Duration::from_secs(7)).expect("leave");
        assert_eq!((m, req), (Metric::Party, Request::PartyLeave));
    }

    #[test]
    fn own_kills_follow_the_entity_id_across_zone_changes() {
        // A fresh character logs in in town (entity 1 there) and walks into the crypt,
        // where it is entity 33: its kills there carry 33, and entity 1 is a monster.
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Fighter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(1, 1), t0);
        assert!(b.is_me(1));
        b.on_event(
            &Event::ZoneEntered {
                zone: 2,
                instance: 7,
                entity_id: 33,
            },
            t0,
        );
        assert!(b.is_me(33), "the crypt entity is this bot");
        assert!(
            !b.is_me(1),
            "the town entity id is someone else in the crypt"
        );
        assert!(!b.is_me(0));
    }

    #[test]
    fn fighter_reads_its_bag_and_drinks_a_potion_when_hurt() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Fighter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(2, 5), t0);
        let m = monster(900, (3500, 30000));
        view(&mut b, 1, 0, &[player(5, (3000, 30000), 124), m], t0);
        let t = t0 + Duration::from_secs(1);
        let (metric, req, _) = b.next_request(t).expect("inventory");
        assert_eq!((metric, req), (Metric::Inventory, Request::GetInventory));
        b.request_sent(1, metric, 0, t);
        let potion = ItemInfo {
            id: 11,
            base: 40,
            rarity: 0,
            level: 1,
            unique: None,
            affixes: vec![],
        };
        let inv = zonehost_protocol::message::InventoryView {
            bag: vec![potion],
            equipment: vec![],
            gold: 0,
            level: 1,
            xp: 0,
        };
        b.on_response(1, &Ok(Response::Inventory(inv)), t);
        // Nothing worn: fists, 30 ticks at 1500 mm.
        assert_eq!(
            (b.attack_interval, b.reach),
            (Duration::from_millis(500), 1500)
        );
        // Healthy: it attacks.
        let t = t + Duration::from_secs(1);
        let (metric, req, _) = b.next_request(t).expect("attack");
        assert_eq!(
            (metric, req),
            (Metric::Attack, Request::Attack { target: 900 })
        );
        b.request_sent(2, metric, 900, t);
        b.on_response(2, &Ok(Response::Done), t);
        // A hit takes it below half: the combat log alone (no snapshot yet) makes it drink.
        b.on_event(
            &Event::Combat(Combat::Hit {
                attacker: 900,
                target: 5,
                physical: 70,
                fire: 0,
                crit: false,
                target_hp: 54,
            }),
            t,
        );
        let t = t + Duration::from_secs(1);
        let (metric, req, _) = b.next_request(t).expect("potion");
        assert_eq!(
            (metric, req),
            (Metric::UseItem, Request::UseItem { item: 11 })
        );
        b.request_sent(3, metric, 11, t);
        b.on_event(
            &Event::Inventory(InventoryEvent::Consumed {
                item: 11,
                healed: 60,
            }),
            t,
        );
        b.on_response(3, &Ok(Response::Done), t);
        // No potion left: it fights on.
        let t = t + Duration::from_secs(2);
        let (metric, _, _) = b.next_request(t).expect("attack again");
        assert_eq!(metric, Metric::Attack);
    }

    #[test]
    fn only_drops_of_own_kills_count_as_loot() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Looter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(2, 5), t0);
        let sword = ItemInfo {
            id: 50,
            base: 1,
            rarity: 0,
            level: 1,
            unique: None,
            affixes: vec![],
        };
        for (ground, owner) in [(300, Some(77)), (301, Some(78)), (302, None)] {
            b.on_event(
                &Event::ItemDropped {
                    ground,
                    item: sword.clone(),
                    owner,
                    x_mm: 3000,
                    y_mm: 30000,
                },
                t0,
            );
        }
        assert!(b.is_kill_loot(300), "owned by this player (77)");
        assert!(!b.is_kill_loot(301) && !b.is_kill_loot(302));
        b.on_event(
            &Event::Inventory(InventoryEvent::PickedUp {
                item: sword,
                ground: 300,
            }),
            t0,
        );
        assert!(!b.is_kill_loot(300), "taken");
    }

    /// What a fighter achieved against the real rules.
    #[derive(Debug, Default)]
    struct Played {
        kills: u32,
        deaths: u32,
        attacks: u32,
        refused: u32,
        potions: u32,
    }

    fn wire_item(i: &zonehost_game::Item) -> ItemInfo {
        ItemInfo {
            id: i.id.0,
            base: i.base,
            rarity: i.rarity.code(),
            level: i.level,
            unique: i.unique,
            affixes: i.affixes.iter().map(|a| (a.kind as u8, a.value)).collect(),
        }
    }

    fn wire_reject(r: zonehost_game::Reject) -> RequestError {
        use zonehost_game::Reject as G;
        match r {
            G::NoSuchTarget => RequestError::NoSuchTarget,
            G::TooFar => RequestError::TooFar,
            G::NoLineOfSight => RequestError::NoLineOfSight,
            G::OnCooldown => RequestError::OnCooldown,
            G::NoEffect => RequestError::NoEffect,
            G::NoSuchItem => RequestError::NoSuchItem,
            G::NotUsable => RequestError::NotUsable,
            G::Dead => RequestError::Dead,
            G::Leaving => RequestError::Leaving,
            _ => RequestError::Internal,
        }
    }

    /// A fresh character's fighter brain playing the built-in crypt (a real
    /// `zonehost_game::World`, seeded) in virtual time, as the server would run it: one
    /// input per tick, requests resolved by the next step, a snapshot and the events of
    /// each step fed back. A death (a transfer to town on the server) brings the character
    /// back at the crypt entrance under a new entity id, as a walk back from town would.
    fn play_crypt(seed: u64, secs: u32) -> Played {
        use zonehost_game::{Content, EntityKind, World};
        let content = Content::builtin().expect("builtin content");
        let mut w = World::from_template(content.zone(2).expect("crypt"), seed);
        let mut me = w.add_player(77);
        let t0 = Instant::now();
        let mut s = settings(Behaviour::Fighter);
        s.seed = seed;
        let mut b = Brain::new(s, Arc::new(Atlas::builtin()), "bot-1-0".into(), t0);
        b.on_welcome(&welcome(2, me), t0);
        let mut played = Played::default();
        let (mut t, mut req_id) = (t0, 0u32);
        for seq in 1..=secs * 60 {
            t += Duration::from_micros(16_667);
            let cmd = b.next_input(seq, t);
            w.queue_input(
                me,
                zonehost_game::PlayerInput {
                    seq,
                    move_x: cmd.move_x.get(),
                    move_y: cmd.move_y.get(),
                    buttons: cmd.buttons.get(),
                },
            );
            if let Some((metric, req, item)) = b.next_request(t) {
                req_id += 1;
                b.request_sent(req_id, metric, item, t);
                let game_req = match req {
                    Request::Attack { target } => {
                        played.attacks += 1;
                        Some(zonehost_game::Request::Attack { target })
                    }
                    Request::UseItem { item } => Some(zonehost_game::Request::UseItem {
                        item: zonehost_game::ItemId(item),
                    }),
                    _ => None,
                };
                match game_req {
                    Some(r) => {
                        let queued = w.queue_request(me, req_id, r);
                        assert!(queued.is_ok(), "one request in flight: {queued:?}");
                    }
                    None => {
                        // Server requests are answered at once.
                        let state = w.export_player(me).expect("present");
                        let inv = zonehost_protocol::message::InventoryView {
                            bag: state.inventory.bag.iter().map(wire_item).collect(),
                            equipment: state
                                .inventory
                                .equipment
                                .items()
                                .map(|i| (0, wire_item(i)))
                                .collect(),
                            gold: state.inventory.gold,
                            level: state.level,
                            xp: state.xp,
                        };
                        let body = match req {
                            Request::GetInventory => Ok(Response::Inventory(inv)),
                            _ => Err(RequestError::NotAllowed),
                        };
                        b.on_response(req_id, &body, t);
                    }
                }
            }
            w.step();
            let mut died = false;
            let events: Vec<zonehost_game::Event> = w.events().to_vec();
            for ev in &events {
                use zonehost_game::Event as G;
                let wire = match ev {
                    G::RequestDone {
                        entity,
                        request_id,
                        result,
                        ..
                    } if *entity == me => {
                        let body = result.map(|()| Response::Done).map_err(wire_reject);
                        if body.is_err() {
                            played.refused += 1;
                        }
                        b.on_response(*request_id, &body, t);
                        None
                    }
                    G::Hit {
                        attacker,
                        target,
                        physical,
                        fire,
                        crit,
                        target_hp,
                    } => Some(Event::Combat(Combat::Hit {
                        attacker: *attacker,
                        target: *target,
                        physical: *physical,
                        fire: *fire,
                        crit: *crit,
                        target_hp: *target_hp,
                    })),
                    G::Miss { attacker, target } => Some(Event::Combat(Combat::Miss {
                        attacker: *attacker,
                        target: *target,
                    })),
                    G::Killed {
                        killer,
                        victim,
                        kind,
                    } => {
                        if b.is_me(*killer) {
                            played.kills += 1;
                        }
                        Some(Event::Combat(Combat::Killed {
                            killer: *killer,
                            victim: *victim,
                            monster_kind: *kind as u8,
                        }))
                    }
                    G::PlayerDied { entity, killer, .. } if *entity == me => {
                        died = true;
                        played.deaths += 1;
                        Some(Event::Died {
                            killer: *killer,
                            gold_lost: 0,
                            xp_lost: 0,
                        })
                    }
                    G::Inventory {
                        entity,
                        change: zonehost_game::InventoryChange::Consumed { item, healed },
                        ..
                    } if *entity == me => {
                        played.potions += 1;
                        Some(Event::Inventory(InventoryEvent::Consumed {
                            item: item.0,
                            healed: *healed,
                        }))
                    }
                    G::LevelUp { entity, level, .. } if *entity == me => {
                        Some(Event::LevelUp { level: *level })
                    }
                    _ => None,
                };
                if let Some(e) = wire {
                    b.on_event(&e, t);
                }
            }
            if died {
                let state = w.take_player(me).expect("present");
                me = w.add_player_with_state(state).expect("back");
                b.on_event(
                    &Event::ZoneEntered {
                        zone: 2,
                        instance: 1,
                        entity_id: me,
                    },
                    t,
                );
                continue;
            }
            let ents: Vec<EntityState> = w
                .entities()
                .filter(|e| e.kind != EntityKind::GroundItem)
                .map(|e| EntityState {
                    id: e.id,
                    x_mm: e.pos_mm.0,
                    y_mm: e.pos_mm.1,
                    // As the server encodes it (cm/s).
                    vx_cms: (e.vel_mms.0 / 10).clamp(-32_768, 32_767) as i16,
                    vy_cms: (e.vel_mms.1 / 10).clamp(-32_768, 32_767) as i16,
                    hp: e.hp,
                    max_hp: e.max_hp,
                    kind: if e.kind == EntityKind::Player {
                        kind::PLAYER
                    } else {
                        kind::MONSTER
                    },
                    ..EntityState::default()
                })
                .collect();
            let ack = w.last_input(me).unwrap_or(0);
            view(&mut b, w.tick(), ack, &ents, t);
        }
        played
    }

    #[test]
    fn a_fresh_fighter_kills_crypt_monsters_under_the_real_rules() {
        let mut total = Played::default();
        for seed in 1..=3 {
            let p = play_crypt(seed, 90);
            assert!(p.kills >= 3, "seed {seed}: {p:?}");
            assert!(p.potions >= 2, "drank its starter potions: {p:?}");
            assert!(
                p.refused * 10 <= p.attacks,
                "seed {seed}: few refusals: {p:?}"
            );
            total.kills += p.kills;
            total.deaths += p.deaths;
            total.attacks += p.attacks;
            total.potions += p.potions;
        }
        // A kill takes 11..=24 swings at 70..=89 % (game/tests/balance.rs); wasted swings
        // (targets switched, monsters leashing home and healing) stay a minority.
        assert!(
            total.attacks <= total.kills * 30,
            "attacks per kill: {total:?}"
        );
        // The crypt's zombies come in packs of up to seven that a new character cannot
        // survive (game/tests/balance.rs: 1 win in 50 against four): deaths happen, but
        // fewer than kills.
        assert!(total.kills > total.deaths, "{total:?}");
    }

    #[test]
    fn dead_bots_stand_still_and_ask_nothing() {
        let t0 = Instant::now();
        let mut b = Brain::new(
            settings(Behaviour::Fighter),
            Arc::new(Atlas::builtin()),
            "bot-1-0".into(),
            t0,
        );
        b.on_welcome(&welcome(2, 5), t0);
        view(
            &mut b,
            1,
            0,
            &[player(5, (5000, 30000), 124), monster(9, (5500, 30000))],
            t0,
        );
        b.on_event(
            &Event::Died {
                killer: 9,
                gold_lost: 0,
                xp_lost: 0,
            },
            t0,
        );
        assert!(b.next_request(t0 + Duration::from_secs(5)).is_none());
        assert_eq!(b.next_input(1, t0), InputCmd::default());
        b.on_event(
            &Event::ZoneEntered {
                zone: 1,
                instance: 3,
                entity_id: 8,
            },
            t0,
        );
        assert!(!b.dead);
    }
}
