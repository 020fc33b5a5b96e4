//! zonehost game rules: pure, deterministic functions of state, inputs and a seed.
//!
//! No I/O, no clocks, no async: the simulation driver calls [`World::step`] once per
//! fixed tick and reads the resulting state. Rules and constants are documented in
//! `RULES.md`.

pub mod movement;
pub mod world;

pub use movement::{PlayerInput, MAX_SPEED_MMS, TICK_HZ};
pub use world::{EntityId, EntityKind, EntityView, World, ZoneSpec};
