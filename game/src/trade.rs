//! Party trade: what the two sides see and what the server must make durable.
//!
//! The rules (in `RULES.md`, *Trade*) are applied by [`crate::World`] as requests
//! ([`crate::Request::TradeOpen`] ... [`crate::Request::TradeCancel`]). When both sides
//! have accepted the same offers, the world *reserves* them: the offered items leave the
//! bags and the offered gold leaves the purses, held by the trade, and the world emits
//! [`crate::Event::TradeReady`] with a [`TradeManifest`]. The server makes the exchange
//! durable and then calls [`crate::World::complete_trade`]: committed, each side receives
//! what the other offered; aborted, each side gets its own offer back. Nothing is ever
//! in two places: a reserved item is only in the trade.

use crate::entity::EntityId;
use crate::items::{Item, ItemId};

/// Largest distance between the two players to open a trade and to accept it, in mm.
pub const TRADE_RANGE_MM: i32 = 5000;
/// Most items one side may offer.
pub const TRADE_MAX_ITEMS: usize = 8;

/// A trade's id, unique within one world.
pub type TradeId = u32;

/// What one side puts on offer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Offer {
    /// Bag items, in the order they were offered.
    pub items: Vec<ItemId>,
    /// Gold.
    pub gold: u64,
    /// Whether this side accepted both offers as they stand.
    pub accepted: bool,
}

/// A trade as one side sees it ([`crate::Event::TradeUpdated`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TradeView {
    /// Trade id.
    pub trade: TradeId,
    /// The other side's player id.
    pub partner: u64,
    /// The other side's entity.
    pub partner_entity: EntityId,
    /// This side's offer.
    pub mine: Offer,
    /// The other side's offer.
    pub theirs: Offer,
    /// Both accepted: the exchange is being made durable; nothing can change any more.
    pub committing: bool,
}

/// Why a trade ended ([`crate::Event::TradeEnded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TradeEnd {
    /// The exchange is done.
    Completed,
    /// A side cancelled.
    Cancelled,
    /// A side left the instance (disconnect, logout).
    PartnerLeft,
    /// A side died.
    Died,
    /// A side is changing zones.
    ZoneChange,
    /// The two sides are no longer in the same party.
    PartyChanged,
    /// The server could not make the exchange durable (an item had changed owner, or
    /// the store failed): every offer went back to its side.
    Failed,
}

impl TradeEnd {
    /// Stable, low-cardinality name (metrics label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            TradeEnd::Completed => "completed",
            TradeEnd::Cancelled => "cancelled",
            TradeEnd::PartnerLeft => "partner_left",
            TradeEnd::Died => "died",
            TradeEnd::ZoneChange => "zone_change",
            TradeEnd::PartyChanged => "party_changed",
            TradeEnd::Failed => "failed",
        }
    }
}

/// One side of a reserved trade: what it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeSide {
    /// Entity.
    pub entity: EntityId,
    /// Player id.
    pub player_id: u64,
    /// Items given (full, for persistence).
    pub items: Vec<Item>,
    /// Gold given.
    pub gold: u64,
}

/// A reserved trade the server must make durable ([`crate::Event::TradeReady`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeManifest {
    /// Trade id (world-local).
    pub trade: TradeId,
    /// The two sides, the opener first.
    pub sides: [TradeSide; 2],
}

/// What [`crate::World::complete_trade`] could not hand over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// `(player id, item)` for items whose receiver left the world meanwhile (or, never
    /// expected, whose bag was full). The store already says who owns them: the receiver
    /// gets them at its next login.
    pub items: Vec<(u64, Item)>,
    /// A committed trade whose gold did not move because a side had left (each side kept
    /// its own gold, as its last checkpoint says).
    pub gold_kept: bool,
}

/// A trade in a world.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Trade {
    pub(crate) id: TradeId,
    pub(crate) sides: [Side; 2],
    pub(crate) committing: bool,
}

/// One side of a trade in a world.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Side {
    pub(crate) entity: EntityId,
    pub(crate) player_id: u64,
    pub(crate) offer: Offer,
    /// Reserved items and gold while committing.
    pub(crate) held: Vec<Item>,
    pub(crate) held_gold: u64,
}

impl Side {
    pub(crate) fn new(entity: EntityId, player_id: u64) -> Self {
        Self {
            entity,
            player_id,
            offer: Offer::default(),
            held: Vec::new(),
            held_gold: 0,
        }
    }
}

impl Trade {
    /// Index of `entity`'s side.
    pub(crate) fn side_of(&self, entity: EntityId) -> Option<usize> {
        self.sides.iter().position(|s| s.entity == entity)
    }

    /// The view of side `i`.
    pub(crate) fn view(&self, i: usize) -> TradeView {
        let (me, other) = (&self.sides[i], &self.sides[1 - i]);
        TradeView {
            trade: self.id,
            partner: other.player_id,
            partner_entity: other.entity,
            mine: me.offer.clone(),
            theirs: other.offer.clone(),
            committing: self.committing,
        }
    }
}
