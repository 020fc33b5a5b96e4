//! zonehost game rules: pure, deterministic functions of state, inputs and a seed.
//!
//! No I/O, no clocks, no async: the simulation driver calls [`World::step`] once per
//! fixed tick and reads the resulting state and [`World::events`]. Rules and constants
//! are documented in `RULES.md`.
//!
//! Driving a world from a server:
//! - build it: [`Content::from_sources`] (zone TOML texts) then
//!   [`World::from_template`] with a per-instance seed;
//! - players: [`World::add_player`] (new character) or [`World::add_player_with_state`]
//!   (loaded / transferred), [`World::take_player`] to remove and export;
//! - each tick: [`World::queue_input`] and [`World::queue_request`], then
//!   [`World::step`], then read [`World::entities`], [`World::player_acks`] and
//!   [`World::events`] (combat log, loot, inventory changes, request results, transfers);
//! - persistence: [`World::take_dirty`] and [`World::export_player`];
//! - parties: [`Parties`] registry, mirrored into worlds with [`World::set_party`];
//! - trades: requests like any other; on [`Event::TradeReady`] make the exchange durable,
//!   then [`World::complete_trade`].

#![warn(missing_docs)]

pub mod character;
pub mod combat;
pub mod content;
mod entity;
pub mod events;
pub mod geom;
mod hash;
pub mod inventory;
pub mod items;
pub mod monsters;
pub mod movement;
pub mod party;
mod rng;
pub mod trade;
pub mod world;
mod zone;

pub use character::{PlayerState, PlayerStats};
pub use content::{Content, ContentError, Portal, SpawnGroup, ZoneTemplate};
pub use entity::{EntityId, EntityKind, EntityView, GroundView};
pub use events::{Event, InventoryChange, QueueError, Reject, Request, RequestKind, TransferCause};
pub use geom::Rect;
pub use inventory::{Equipment, Inventory, BAG_SLOTS};
pub use items::{EquipSlot, Item, ItemId, Rarity};
pub use monsters::MonsterKind;
pub use movement::{PlayerInput, BUTTON_ATTACK, MAX_SPEED_MMS, TICK_HZ};
pub use party::{Parties, PartyChange, PartyError, PartyId};
pub use trade::{
    Offer, TradeEnd, TradeId, TradeManifest, TradeSide, TradeView, Undelivered, TRADE_MAX_ITEMS,
    TRADE_RANGE_MM,
};
pub use world::{ImportError, World};
pub use zone::ZoneSpec;
