//! A bot's decisions, without I/O: fed the `Welcome`, sampled snapshots, events, responses
//! and the time, it says which input to send on each schedule slot and which request to
//! make. Every wait is a deadline (never a loop), every refusal has a reaction that does
//! not repeat the same request at once, and at most one request is in flight.
//!
//! This file holds the state, the snapshot view, the input schedule and the dispatch of
//! responses, refusals and events; the decisions by concern are in the child files
//! `navigation` (goals and steering), `combat`, `items` (survival and looting) and `party`
//! (parties and trades).

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use tokio::time::Instant;
use zonehost_game::Rect;
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{
    Event, ItemInfo, Request, RequestError, Response, TradeEvent, Welcome,
};
use zonehost_protocol::session::SnapshotInfo;
use zonehost_protocol::snapshot::{kind, EntityState};

use crate::behaviour::Behaviour;
use crate::nav::{dist, Atlas, ZoneMap};
use crate::stats::Metric;
use crate::wander::Wander;

mod combat;
mod items;
mod navigation;
mod party;

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
    pub(crate) fn on_view(&mut self, info: &SnapshotInfo, entities: &[EntityState], now: Instant) {
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
        for e in entities {
            let id = e.id;
            let p = (e.x_mm, e.y_mm);
            if id == self.me && e.kind == kind::PLAYER {
                if let Some(seq) = info.last_input {
                    self.pos = Some(p);
                    self.pos_seq = seq;
                }
                self.hp = e.hp;
                self.max_hp = e.max_hp;
            } else if e.kind == kind::PLAYER {
                let d = dist(origin, p);
                if self.nearest_player.is_none_or(|(_, nd)| d < nd) {
                    self.nearest_player = Some((id, d));
                }
            } else if e.kind == kind::MONSTER && e.hp > 0 {
                if let Some(t) = self.target.as_mut() {
                    if t.id == id {
                        t.pos = p;
                        t.seen = now;
                        // Moving, and toward us (positive dot product with the way to us).
                        let v = (i64::from(e.vx_cms), i64::from(e.vy_cms));
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
