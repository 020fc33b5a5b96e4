//! One zone instance: its entities and the fixed-timestep [`World::step`].
//!
//! # Stages of a step, in order
//! 1. Tick counter advances; last step's events are cleared.
//! 2. Players: queued inputs are applied within the input budget, at most
//!    `MAX_INPUTS_PER_TICK` a tick (movement with wall
//!    collision, facing, the attack button); walking into a portal starts a transfer.
//! 3. Players: queued requests are resolved in queue order, players in entity order.
//! 4. Players holding the attack button swing at the nearest monster in their facing
//!    cone (if their attack is ready).
//! 5. Monsters: AI (idle, chase, attack, leash back), boss novas.
//! 6. Respawns: players (in-place zones) and monsters whose timers ran out.
//! 7. Ground items past their lifetime expire.
//!
//! Everything is deterministic: one seeded RNG drawn in this fixed order, entities in
//! vectors (never hash-map iteration), integer millimetres.
//!
//! The `impl World` is cut by stage: requests (3) in `world/requests.rs`, the players'
//! attacks, kills and XP (4) in `world/fighting.rs`, monster AI and player death (5) in
//! `world/monster_ai.rs`, the trade rules in `world/trading.rs`; the rest is here.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use crate::character::{player_stats, xp_to_next, PlayerState, PlayerStats, MAX_LEVEL};
use crate::combat::{Attacker, Defender};
use crate::content::ZoneTemplate;
use crate::events::{Event, InventoryChange, QueueError, Reject, Request, TransferCause};
use crate::geom::{in_wall, sweep};
use crate::hash::StableHasher;
use crate::inventory::Inventory;
use crate::items::{Category, Item, ItemId, MINOR_HEALING_POTION, SHORT_SWORD};
use crate::monsters::{Element, MonsterKind, MonsterStats};
use crate::movement::{
    step_mm, velocity_mms, PlayerInput, BUTTON_ATTACK, MAX_BANKED_INPUTS, MAX_INPUTS_PER_TICK,
    MAX_INPUT_SEQ_AHEAD, MAX_QUEUED_INPUTS, QUEUE_SLACK, TICK_HZ,
};
use crate::rng::GameRng;
use crate::trade::{Trade, TradeEnd, TradeId};

mod fighting;
mod monster_ai;
mod requests;
mod trading;

pub use crate::entity::{EntityId, EntityKind, EntityView, GroundView, FLAG_DEAD, FLAG_LEAVING};
pub use crate::zone::ZoneSpec;

/// Requests a player may have pending; more are refused with [`QueueError::QueueFull`].
pub const MAX_QUEUED_REQUESTS: usize = 8;
/// Largest distance from which a ground item can be picked up, in millimetres.
pub const PICKUP_RANGE_MM: i32 = 2000;
/// Ticks between two potions.
pub const POTION_COOLDOWN_TICKS: u32 = TICK_HZ;
/// Ticks during which loot can only be picked up by its owner.
pub const LOOT_OWNER_TICKS: u32 = 60 * TICK_HZ;
/// Ticks a ground item lasts before it expires.
pub const GROUND_ITEM_TICKS: u32 = 5 * 60 * TICK_HZ;
/// Most items on the ground of one instance; further loot is not generated and further
/// drops are refused with [`Reject::GroundFull`].
pub const MAX_GROUND_ITEMS: usize = 256;
/// Ticks a dead player waits before respawning in a zone that respawns in place.
pub const PLAYER_RESPAWN_TICKS: u32 = 3 * TICK_HZ;
/// Percent of carried gold lost on death.
pub const DEATH_GOLD_LOSS_PCT: u64 = 10;
/// Percent of the current level's XP requirement lost on death (never below 0).
pub const DEATH_XP_LOSS_PCT: u64 = 10;
/// Party members within this distance of a kill share its XP.
pub const XP_SHARE_RANGE_MM: i32 = 40_000;
/// XP bonus per additional party member sharing a kill, in percent.
pub const PARTY_XP_BONUS_PCT: u64 = 20;
/// A returning (leashed) monster teleports home after this many ticks.
pub const RETURN_TIMEOUT_TICKS: u32 = 10 * TICK_HZ;
/// Weapons reaching farther than this are ranged (need line of sight).
pub const RANGED_THRESHOLD_MM: i32 = 3000;
/// Minor healing potions in a new character's bag.
pub const STARTER_POTIONS: usize = 2;

/// Why [`World::add_player_with_state`] refused a player.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The inventory is over capacity, has an item in the wrong slot, or repeats an id.
    #[error("invalid inventory")]
    InvalidInventory,
    /// The level is 0 or above the maximum.
    #[error("invalid level {0}")]
    BadLevel(u8),
    /// A player with this id is already in the world.
    #[error("player {0} is already in this world")]
    AlreadyPresent(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Life {
    Alive,
    Dead { respawn_at: u32 },
    Leaving,
}

#[derive(Debug, Clone, Hash)]
struct Player {
    id: EntityId,
    player_id: u64,
    pos: (i32, i32),
    vel: (i32, i32),
    facing: (i32, i32),
    queue: VecDeque<PlayerInput>,
    last_applied: u32,
    budget: u32,
    inputs_dropped: u64,
    level: u8,
    xp: u64,
    hp: u32,
    inv: Inventory,
    stats: PlayerStats,
    next_attack: u32,
    next_potion: u32,
    requests: VecDeque<(u32, Request)>,
    party: Option<u32>,
    life: Life,
    attack_held: bool,
    in_portal: Option<usize>,
    dirty: bool,
}

impl Player {
    fn alive(&self) -> bool {
        self.life == Life::Alive
    }

    fn attacker(&self) -> Attacker {
        Attacker {
            level: self.level,
            accuracy: self.stats.accuracy,
            crit_pct: self.stats.crit_pct,
            physical: self.stats.physical,
            physical_pct: self.stats.physical_pct,
            fire: (self.stats.fire, self.stats.fire),
        }
    }

    fn defender(&self) -> Defender {
        Defender {
            level: self.level,
            evasion: self.stats.evasion,
            armour: self.stats.armour,
            fire_resist: self.stats.fire_resist,
        }
    }

    fn refresh_stats(&mut self) {
        self.stats = player_stats(self.level, &self.inv.equipment);
        self.hp = self.hp.min(self.stats.max_hp);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ai {
    Idle,
    Chase(EntityId),
    Return { since: u32 },
}

#[derive(Debug, Clone, Hash)]
struct Monster {
    id: EntityId,
    kind: MonsterKind,
    level: u8,
    group: usize,
    pos: (i32, i32),
    vel: (i32, i32),
    home: (i32, i32),
    hp: u32,
    stats: MonsterStats,
    ai: Ai,
    next_attack: u32,
    next_nova: u32,
    alive: bool,
    respawn_at: Option<u32>,
}

impl Monster {
    fn defender(&self) -> Defender {
        Defender {
            level: self.level,
            evasion: self.stats.evasion,
            armour: self.stats.armour,
            fire_resist: self.kind.def().fire_resist,
        }
    }

    fn attacker(&self) -> Attacker {
        let def = self.kind.def();
        let (physical, fire) = match def.element {
            Element::Physical => (self.stats.damage, (0, 0)),
            Element::Fire => ((0, 0), self.stats.damage),
        };
        Attacker {
            level: self.level,
            accuracy: self.stats.accuracy,
            crit_pct: def.crit_pct,
            physical,
            physical_pct: 100,
            fire,
        }
    }
}

#[derive(Debug, Clone, Hash)]
struct Ground {
    id: EntityId,
    item: Item,
    pos: (i32, i32),
    owner: Option<u64>,
    free_at: u32,
    expire_at: u32,
}

/// One zone instance's live state.
#[derive(Debug, Clone)]
pub struct World {
    zone: ZoneSpec,
    template: ZoneTemplate,
    seed: u64,
    rng: GameRng,
    tick: u32,
    next_entity: EntityId,
    item_counter: u64,
    players: Vec<Player>,
    monsters: Vec<Monster>,
    ground: Vec<Ground>,
    events: Vec<Event>,
    requests_dropped: u64,
    loot_lost: u64,
    scratch: Vec<Category>,
    trades: Vec<Trade>,
    next_trade: TradeId,
    /// Events of calls made between steps (trade completion, return to bag), delivered
    /// with the next step's events.
    deferred: Vec<Event>,
    /// Inside [`World::step`] (events go to `events`, else to `deferred`).
    stepping: bool,
}

impl World {
    /// An empty, open instance of `zone` (no walls, monsters or portals; seed 0; dead
    /// players respawn in place).
    pub fn new(zone: ZoneSpec) -> Self {
        Self::from_template(&ZoneTemplate::open(&zone), 0)
    }

    /// An instance of `template` with its monsters spawned, seeded with `seed`. The
    /// server must give every instance a distinct seed: item ids are derived from it.
    pub fn from_template(template: &ZoneTemplate, seed: u64) -> Self {
        let mut w = Self {
            zone: template.spec(),
            template: template.clone(),
            seed,
            rng: GameRng::new(seed),
            tick: 0,
            next_entity: 1,
            item_counter: 0,
            players: Vec::new(),
            monsters: Vec::new(),
            ground: Vec::new(),
            events: Vec::new(),
            requests_dropped: 0,
            loot_lost: 0,
            scratch: Vec::new(),
            trades: Vec::new(),
            next_trade: 1,
            deferred: Vec::new(),
            stepping: false,
        };
        // Exactly the template's monsters: a pushed Vec doubles (33 monsters would hold
        // room for 64), and every instance of the zone keeps its list for its lifetime.
        w.monsters
            .reserve_exact(template.spawns.iter().map(|g| g.count as usize).sum());
        for (gi, g) in template.spawns.iter().enumerate() {
            for _ in 0..g.count {
                let m = w.spawn_monster(gi);
                w.monsters.push(m);
            }
        }
        w
    }

    fn alloc_entity(&mut self) -> EntityId {
        let id = self.next_entity;
        self.next_entity = self.next_entity.wrapping_add(1).max(1);
        id
    }

    fn mint_item(&mut self) -> ItemId {
        let id = ItemId::mint(self.seed, self.item_counter);
        self.item_counter += 1;
        id
    }

    fn spawn_monster(&mut self, group: usize) -> Monster {
        let id = self.alloc_entity();
        let g = &self.template.spawns[group];
        let (kind, area, lmin, lmax) = (g.kind, g.area, g.level_min, g.level_max);
        let level = self
            .rng
            .range(u32::from(lmin), u32::from(lmax))
            .clamp(1, 99) as u8;
        let mut pos = area.center();
        for _ in 0..8 {
            let p = (
                self.rng.range_i32(area.x0, area.x1.saturating_sub(1)),
                self.rng.range_i32(area.y0, area.y1.saturating_sub(1)),
            );
            if !in_wall(p, &self.template.walls) {
                pos = p;
                break;
            }
        }
        let stats = kind.def().stats(level);
        Monster {
            id,
            kind,
            level,
            group,
            pos,
            vel: (0, 0),
            home: pos,
            hp: stats.max_hp,
            stats,
            ai: Ai::Idle,
            next_attack: 0,
            next_nova: 0,
            alive: true,
            respawn_at: None,
        }
    }

    /// The zone.
    pub fn zone(&self) -> &ZoneSpec {
        &self.zone
    }

    /// The template this instance was built from.
    pub fn template(&self) -> &ZoneTemplate {
        &self.template
    }

    /// The seed this instance was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Ticks stepped so far.
    pub fn tick(&self) -> u32 {
        self.tick
    }

    /// Number of players.
    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// Number of living monsters.
    pub fn monster_count(&self) -> usize {
        self.monsters.iter().filter(|m| m.alive).count()
    }

    /// Adds a new level-1 character at the zone spawn with the starter kit (a short
    /// sword, equipped, and [`STARTER_POTIONS`] minor healing potions) and returns its
    /// entity id. The kit is reported at once in [`World::events`] as
    /// [`InventoryChange::Granted`] (and is cleared by the next step like other events).
    pub fn add_player(&mut self, player_id: u64) -> EntityId {
        let mut state = PlayerState::new(player_id);
        let sword = Item::common(self.mint_item(), SHORT_SWORD, 1);
        let mut granted = vec![sword.id];
        state
            .inventory
            .equipment
            .set(crate::items::EquipSlot::Weapon, Some(sword));
        for _ in 0..STARTER_POTIONS {
            let p = Item::common(self.mint_item(), MINOR_HEALING_POTION, 1);
            granted.push(p.id);
            state.inventory.bag.push(p);
        }
        let id = self.insert_player(state);
        self.events.push(Event::Inventory {
            entity: id,
            player_id,
            change: InventoryChange::Granted { items: granted },
        });
        id
    }

    /// Adds a character with its saved or transferred state at the zone spawn. The
    /// state is validated; hit points are clamped to the maximum, and 0 (a dead or
    /// fresh character) becomes full health.
    pub fn add_player_with_state(&mut self, state: PlayerState) -> Result<EntityId, ImportError> {
        if state.level == 0 || state.level > MAX_LEVEL {
            return Err(ImportError::BadLevel(state.level));
        }
        if !state.inventory.is_valid() {
            return Err(ImportError::InvalidInventory);
        }
        if self.players.iter().any(|p| p.player_id == state.player_id) {
            return Err(ImportError::AlreadyPresent(state.player_id));
        }
        Ok(self.insert_player(state))
    }

    fn insert_player(&mut self, state: PlayerState) -> EntityId {
        let id = self.alloc_entity();
        let stats = player_stats(state.level, &state.inventory.equipment);
        let hp = if state.hp == 0 {
            stats.max_hp
        } else {
            state.hp.min(stats.max_hp)
        };
        let pos = self.template.spawn_mm;
        let in_portal = self
            .template
            .portals
            .iter()
            .position(|p| p.area.contains(pos));
        // Most instances hold one player (solo play): room for exactly one at first,
        // then the usual doubling (a pushed empty Vec reserves four).
        if self.players.is_empty() {
            self.players.reserve_exact(1);
        }
        self.players.push(Player {
            id,
            player_id: state.player_id,
            pos,
            vel: (0, 0),
            facing: (1000, 0),
            queue: VecDeque::with_capacity(MAX_QUEUED_INPUTS),
            last_applied: 0,
            // A new arrival starts with a full bank: inputs sent before its first tick apply.
            budget: MAX_BANKED_INPUTS - 1,
            inputs_dropped: 0,
            level: state.level,
            xp: state.xp.min(xp_to_next(state.level).saturating_sub(1)),
            hp,
            inv: state.inventory,
            stats,
            next_attack: 0,
            next_potion: 0,
            requests: VecDeque::new(),
            party: None,
            life: Life::Alive,
            attack_held: false,
            in_portal,
            dirty: false,
        });
        id
    }

    fn player_index(&self, entity: EntityId) -> Option<usize> {
        self.players.iter().position(|p| p.id == entity)
    }

    /// Removes a player; returns its player id if it was here.
    pub fn remove_player(&mut self, entity: EntityId) -> Option<u64> {
        self.take_player(entity).map(|s| s.player_id)
    }

    /// Removes a player and returns its full state (for a zone transfer or a save on
    /// disconnect).
    ///
    /// A trade being negotiated ends ([`TradeEnd::PartnerLeft`]); gold reserved in a trade
    /// being made durable is counted in the exported state (see [`World::complete_trade`]).
    pub fn take_player(&mut self, entity: EntityId) -> Option<PlayerState> {
        let i = self.player_index(entity)?;
        self.cancel_trade_of(entity, TradeEnd::PartnerLeft);
        let mut state = Self::state_of(&self.players[i]);
        state.inventory.gold = state.inventory.gold.saturating_add(self.held_gold(entity));
        self.players.swap_remove(i);
        Some(state)
    }

    fn state_of(p: &Player) -> PlayerState {
        PlayerState {
            player_id: p.player_id,
            level: p.level,
            xp: p.xp,
            hp: p.hp,
            inventory: p.inv.clone(),
        }
    }

    /// A copy of a player's full state (for periodic saves). Gold reserved in a trade
    /// being made durable is counted: it is the player's until the store decides.
    pub fn export_player(&self, entity: EntityId) -> Option<PlayerState> {
        let mut state = self
            .players
            .iter()
            .find(|p| p.id == entity)
            .map(Self::state_of)?;
        state.inventory.gold = state.inventory.gold.saturating_add(self.held_gold(entity));
        Some(state)
    }

    /// The entity of `player_id`, if present.
    pub fn player_entity(&self, player_id: u64) -> Option<EntityId> {
        self.players
            .iter()
            .find(|p| p.player_id == player_id)
            .map(|p| p.id)
    }

    /// Appends to `out` the player ids whose durable state (level, XP, inventory, gold)
    /// changed since the last call, and clears their dirty marks.
    pub fn take_dirty(&mut self, out: &mut Vec<u64>) {
        for p in &mut self.players {
            if p.dirty {
                p.dirty = false;
                out.push(p.player_id);
            }
        }
    }

    /// Tells the world which party a player belongs to (`None`: none); used for XP
    /// sharing and trades (a trade being negotiated ends when its sides' parties differ).
    /// Returns whether the player is here.
    pub fn set_party(&mut self, player_id: u64, party: Option<u32>) -> bool {
        let Some(p) = self.players.iter_mut().find(|p| p.player_id == player_id) else {
            return false;
        };
        p.party = party;
        let entity = p.id;
        if let Some(view) = self.trade_index(entity).map(|ti| {
            let t = &self.trades[ti];
            t.sides.iter().map(|s| s.entity).collect::<Vec<_>>()
        }) {
            let parties: Vec<Option<u32>> = view
                .iter()
                .map(|e| {
                    self.players
                        .iter()
                        .find(|p| p.id == *e)
                        .and_then(|p| p.party)
                })
                .collect();
            if party.is_none() || parties.iter().any(|q| *q != party) {
                self.cancel_trade_of(entity, TradeEnd::PartyChanged);
            }
        }
        true
    }

    /// Queues an input for a player. Inputs at or below the last applied or already
    /// queued sequence are ignored (redundant copies), and so are inputs more than
    /// [`MAX_INPUT_SEQ_AHEAD`] past the last applied one (sequences do not wrap); returns
    /// whether it was queued.
    pub fn queue_input(&mut self, entity: EntityId, input: PlayerInput) -> bool {
        let Some(p) = self.players.iter_mut().find(|p| p.id == entity) else {
            return false;
        };
        if input.seq.saturating_sub(p.last_applied) > MAX_INPUT_SEQ_AHEAD {
            return false;
        }
        let newest = p.queue.back().map_or(p.last_applied, |i| i.seq);
        if input.seq <= newest {
            // Out of order but still unapplied: insert in place.
            if input.seq > p.last_applied && !p.queue.iter().any(|i| i.seq == input.seq) {
                let at = p
                    .queue
                    .iter()
                    .position(|i| i.seq > input.seq)
                    .unwrap_or(p.queue.len());
                p.queue.insert(at, input);
            } else {
                return false;
            }
        } else {
            p.queue.push_back(input);
        }
        while p.queue.len() > MAX_QUEUED_INPUTS {
            p.queue.pop_front();
            p.inputs_dropped += 1;
        }
        true
    }

    /// Queues a request for a player, resolved in the next step and answered by an
    /// [`Event::RequestDone`] carrying `request_id`.
    pub fn queue_request(
        &mut self,
        entity: EntityId,
        request_id: u32,
        request: Request,
    ) -> Result<(), QueueError> {
        let Some(p) = self.players.iter_mut().find(|p| p.id == entity) else {
            return Err(QueueError::UnknownEntity);
        };
        if p.requests.len() >= MAX_QUEUED_REQUESTS {
            self.requests_dropped += 1;
            return Err(QueueError::QueueFull);
        }
        p.requests.push_back((request_id, request));
        Ok(())
    }

    /// Events of the last step (plus any emitted by `add_player` since), oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Requests refused because a player's request queue was full.
    pub fn requests_dropped(&self) -> u64 {
        self.requests_dropped
    }

    /// Loot not generated because the ground was full.
    pub fn loot_lost(&self) -> u64 {
        self.loot_lost
    }

    /// Advances the world by one fixed tick (see the module docs for the stages).
    pub fn step(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        self.events.clear();
        self.events.append(&mut self.deferred);
        self.stepping = true;
        self.step_movement();
        for pi in 0..self.players.len() {
            while let Some((request_id, request)) = self.players[pi].requests.pop_front() {
                let result = self.apply_request(pi, request);
                let p = &self.players[pi];
                self.events.push(Event::RequestDone {
                    entity: p.id,
                    player_id: p.player_id,
                    request_id,
                    kind: request.kind(),
                    result,
                });
            }
        }
        self.step_button_attacks();
        self.step_monsters();
        self.step_respawns();
        self.step_ground();
        self.stepping = false;
    }

    fn step_movement(&mut self) {
        let (w, h) = (self.zone.width_mm, self.zone.height_mm);
        let walls = &self.template.walls;
        let mut transfers = Vec::new();
        for (pi, p) in self.players.iter_mut().enumerate() {
            p.budget = (p.budget + 1).min(MAX_BANKED_INPUTS);
            while p.queue.len() > p.budget as usize + QUEUE_SLACK {
                if let Some(stale) = p.queue.pop_front() {
                    p.last_applied = stale.seq;
                    p.inputs_dropped += 1;
                }
            }
            let start = p.pos;
            let mut applied = 0;
            p.attack_held = false;
            while p.budget > 0 && applied < MAX_INPUTS_PER_TICK as i32 {
                let Some(input) = p.queue.pop_front() else {
                    break;
                };
                p.budget -= 1;
                p.last_applied = input.seq;
                applied += 1;
                if !p.alive() {
                    continue;
                }
                let v = velocity_mms(&input);
                p.pos = sweep(p.pos, (step_mm(v.0), step_mm(v.1)), walls, w, h);
                if input.move_x != 0 || input.move_y != 0 {
                    p.facing = (
                        i32::from(input.move_x.clamp(-1000, 1000)),
                        i32::from(input.move_y.clamp(-1000, 1000)),
                    );
                }
                if input.buttons & BUTTON_ATTACK != 0 {
                    p.attack_held = true;
                }
            }
            p.vel = if applied == 0 {
                (0, 0)
            } else {
                (
                    (p.pos.0 - start.0) * TICK_HZ as i32 / applied,
                    (p.pos.1 - start.1) * TICK_HZ as i32 / applied,
                )
            };
            let now_in = self
                .template
                .portals
                .iter()
                .position(|q| q.area.contains(p.pos));
            if p.alive() && now_in.is_some() && now_in != p.in_portal {
                if let Some(portal) = now_in.and_then(|i| self.template.portals.get(i)) {
                    transfers.push((pi, portal.target));
                }
            }
            p.in_portal = now_in;
        }
        for (pi, to_zone) in transfers {
            self.begin_transfer(pi, to_zone, TransferCause::Portal);
        }
    }

    fn begin_transfer(&mut self, pi: usize, to_zone: u16, cause: TransferCause) {
        let entity = self.players[pi].id;
        self.cancel_trade_of(entity, TradeEnd::ZoneChange);
        let p = &mut self.players[pi];
        p.life = Life::Leaving;
        p.vel = (0, 0);
        p.dirty = true;
        self.events.push(Event::Transfer {
            entity: p.id,
            player_id: p.player_id,
            to_zone,
            cause,
        });
    }

    fn step_respawns(&mut self) {
        let tick = self.tick;
        let spawn = self.template.spawn_mm;
        for p in &mut self.players {
            if let Life::Dead { respawn_at } = p.life {
                if tick >= respawn_at {
                    p.life = Life::Alive;
                    p.pos = spawn;
                    p.hp = p.stats.max_hp;
                    p.in_portal = None;
                    self.events.push(Event::PlayerRespawned {
                        entity: p.id,
                        player_id: p.player_id,
                    });
                }
            }
        }
        for mi in 0..self.monsters.len() {
            let m = &self.monsters[mi];
            if !m.alive && m.respawn_at.is_some_and(|t| tick >= t) {
                let fresh = self.spawn_monster(m.group);
                self.monsters[mi] = fresh;
            }
        }
    }

    fn step_ground(&mut self) {
        let tick = self.tick;
        let events = &mut self.events;
        self.ground.retain(|g| {
            let keep = tick < g.expire_at;
            if !keep {
                events.push(Event::ItemExpired {
                    ground: g.id,
                    item: g.item.id,
                });
            }
            keep
        });
    }

    /// Sets the last applied input sequence of a player who arrives from another
    /// instance, so the client's repeated older inputs are recognised as already applied.
    pub fn set_last_input(&mut self, entity: EntityId, seq: u32) -> bool {
        match self.players.iter_mut().find(|p| p.id == entity) {
            Some(p) => {
                p.last_applied = p.last_applied.max(seq);
                p.queue.retain(|i| i.seq > seq);
                true
            }
            None => false,
        }
    }

    /// A player's position, millimetres.
    pub fn player_pos(&self, entity: EntityId) -> Option<(i32, i32)> {
        self.players.iter().find(|p| p.id == entity).map(|p| p.pos)
    }

    /// Moves a player to a saved position (a login restoring its last checkpoint). Refused
    /// (false, nothing changes) outside the zone or inside a wall. A player placed inside
    /// a portal does not take it until it walks out and back in.
    pub fn place_player(&mut self, entity: EntityId, pos_mm: (i32, i32)) -> bool {
        let (w, h) = (self.zone.width_mm, self.zone.height_mm);
        if pos_mm.0 < 0 || pos_mm.1 < 0 || pos_mm.0 > w || pos_mm.1 > h {
            return false;
        }
        if in_wall(pos_mm, &self.template.walls) {
            return false;
        }
        let in_portal = self
            .template
            .portals
            .iter()
            .position(|q| q.area.contains(pos_mm));
        match self.players.iter_mut().find(|p| p.id == entity) {
            Some(p) => {
                p.pos = pos_mm;
                p.in_portal = in_portal;
                true
            }
            None => false,
        }
    }

    /// Removes an item from a player's bag or equipment (the store refused the operation
    /// that gave it to the player). Returns it if it was there.
    pub fn remove_item(&mut self, entity: EntityId, item: ItemId) -> Option<Item> {
        let p = self.players.iter_mut().find(|p| p.id == entity)?;
        if let Some(i) = p.inv.bag.iter().position(|it| it.id == item) {
            p.dirty = true;
            return Some(p.inv.bag.remove(i));
        }
        let slot = p
            .inv
            .equipment
            .iter()
            .find(|(_, it)| it.id == item)
            .map(|(s, _)| s)?;
        let taken = p.inv.equipment.set(slot, None);
        p.refresh_stats();
        p.dirty = true;
        taken
    }

    /// Puts a ground item back into `entity`'s bag: the store refused the drop that put
    /// it on the ground, so it is still the player's. Emits (with the next step's events)
    /// [`InventoryChange::Returned`] and [`Event::ItemExpired`] for the ground entity.
    /// Refused, leaving the world unchanged: [`Reject::NoSuchItem`] (no such ground item),
    /// [`Reject::NoSuchTarget`] (no such player), [`Reject::BagFull`].
    pub fn return_to_bag(&mut self, entity: EntityId, item: ItemId) -> Result<(), Reject> {
        let gi = self
            .ground
            .iter()
            .position(|g| g.item.id == item)
            .ok_or(Reject::NoSuchItem)?;
        let p = self
            .players
            .iter_mut()
            .find(|p| p.id == entity)
            .ok_or(Reject::NoSuchTarget)?;
        if !p.inv.has_room() {
            return Err(Reject::BagFull);
        }
        let g = self.ground.remove(gi);
        let returned = g.item.clone();
        if let Err(back) = p.inv.add(g.item) {
            // Unreachable (room was checked), but never lose an item.
            self.ground.insert(gi, Ground { item: back, ..g });
            return Err(Reject::BagFull);
        }
        p.dirty = true;
        self.deferred.push(Event::Inventory {
            entity: p.id,
            player_id: p.player_id,
            change: InventoryChange::Returned { item: returned },
        });
        self.deferred
            .push(Event::ItemExpired { ground: g.id, item });
        Ok(())
    }

    /// Removes a ground item by item id (the store refused the drop that put it there).
    /// Returns whether it was there.
    pub fn remove_ground_item(&mut self, item: ItemId) -> bool {
        let before = self.ground.len();
        self.ground.retain(|g| g.item.id != item);
        self.ground.len() != before
    }

    /// Last input sequence applied for a player's entity.
    pub fn last_input(&self, entity: EntityId) -> Option<u32> {
        self.players
            .iter()
            .find(|p| p.id == entity)
            .map(|p| p.last_applied)
    }

    /// Every entity: players first, then living monsters, then ground items.
    pub fn entities(&self) -> impl Iterator<Item = EntityView> + '_ {
        let hp16 = |v: u32| v.min(u32::from(u16::MAX)) as u16;
        let players = self.players.iter().map(move |p| EntityView {
            id: p.id,
            kind: EntityKind::Player,
            pos_mm: p.pos,
            vel_mms: p.vel,
            hp: hp16(p.hp),
            max_hp: hp16(p.stats.max_hp),
            flags: match p.life {
                Life::Alive => 0,
                Life::Dead { .. } => FLAG_DEAD,
                Life::Leaving => FLAG_LEAVING | if p.hp == 0 { FLAG_DEAD } else { 0 },
            },
        });
        let monsters = self
            .monsters
            .iter()
            .filter(|m| m.alive)
            .map(move |m| EntityView {
                id: m.id,
                kind: EntityKind::Monster,
                pos_mm: m.pos,
                vel_mms: m.vel,
                hp: hp16(m.hp),
                max_hp: hp16(m.stats.max_hp),
                flags: m.kind as u8,
            });
        let ground = self.ground.iter().map(|g| EntityView {
            id: g.id,
            kind: EntityKind::GroundItem,
            pos_mm: g.pos,
            vel_mms: (0, 0),
            hp: 0,
            max_hp: 0,
            flags: g.item.rarity.code()
                | match g.item.base_def().map(|b| b.category) {
                    Some(Category::Weapon) | None => 0,
                    Some(Category::Armour) => 1 << 2,
                    Some(Category::Potion) => 2 << 2,
                },
        });
        players.chain(monsters).chain(ground)
    }

    /// Items on the ground, oldest first; `owner` is `None` once the owner lock lapsed.
    pub fn ground_items(&self) -> impl Iterator<Item = GroundView<'_>> + '_ {
        let tick = self.tick;
        self.ground.iter().map(move |g| GroundView {
            id: g.id,
            item: &g.item,
            pos_mm: g.pos,
            owner: g.owner.filter(|_| tick < g.free_at),
        })
    }

    /// `(entity, last applied input)` of every player.
    pub fn player_acks(&self) -> impl Iterator<Item = (EntityId, u32)> + '_ {
        self.players.iter().map(|p| (p.id, p.last_applied))
    }

    /// Inputs dropped because a player's queue overflowed, summed over players.
    pub fn inputs_dropped(&self) -> u64 {
        self.players.iter().map(|p| p.inputs_dropped).sum()
    }

    /// A stable 64-bit digest of the whole simulation state (positions, stats,
    /// inventories, monsters, ground items, queues, RNG), identical across platforms and
    /// runs for identical seeds and inputs. Meant for determinism tests and desync checks.
    pub fn state_hash(&self) -> u64 {
        let mut h = StableHasher::new();
        self.zone.id.hash(&mut h);
        self.seed.hash(&mut h);
        self.tick.hash(&mut h);
        self.next_entity.hash(&mut h);
        self.item_counter.hash(&mut h);
        self.rng.fingerprint().hash(&mut h);
        self.players.hash(&mut h);
        self.monsters.hash(&mut h);
        self.ground.hash(&mut h);
        self.trades.hash(&mut h);
        h.finish()
    }
}

/// XP after the level-gap penalty: full up to 5 levels above the monster, then 20 %
/// less per extra level, down to 10 %.
pub fn xp_for_level_gap(xp: u64, player_level: u8, monster_level: u8) -> u64 {
    let gap = i64::from(player_level) - i64::from(monster_level);
    let pct = if gap <= 5 {
        100
    } else {
        (100 - 20 * (gap - 5)).max(10)
    };
    xp * pct as u64 / 100
}

#[cfg(test)]
mod tests;
