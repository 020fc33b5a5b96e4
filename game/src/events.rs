//! What goes into a world besides movement ([`Request`]) and what comes out of a step
//! ([`Event`]).

use crate::entity::EntityId;
use crate::items::{EquipSlot, Item, ItemId};
use crate::monsters::MonsterKind;
use crate::trade::{TradeEnd, TradeId, TradeManifest, TradeView};

/// A player's request, queued with [`crate::World::queue_request`] and resolved during the
/// next [`crate::World::step`]; its result is reported as [`Event::RequestDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Attack this monster once (range, line of sight and cooldown are checked).
    Attack {
        /// Monster entity id.
        target: EntityId,
    },
    /// Pick up a ground item.
    PickUp {
        /// Ground item entity id.
        ground: EntityId,
    },
    /// Equip a bag item; a worn item in that slot goes back to the bag.
    Equip {
        /// Bag item id.
        item: ItemId,
    },
    /// Move a worn item to the bag.
    Unequip {
        /// Which slot.
        slot: EquipSlot,
    },
    /// Drop a bag item on the ground at the player's feet (anyone may pick it up).
    Drop {
        /// Bag item id.
        item: ItemId,
    },
    /// Use a consumable from the bag (potions heal).
    UseItem {
        /// Bag item id.
        item: ItemId,
    },
    /// Take the portal the player stands in.
    EnterZone,
    /// Open a trade with a party member nearby (see `RULES.md`, *Trade*).
    TradeOpen {
        /// The other player's entity id.
        with: EntityId,
    },
    /// Put a bag item on offer (resets both acceptances).
    TradeOffer {
        /// Bag item id.
        item: ItemId,
    },
    /// Take an item off the offer (resets both acceptances).
    TradeWithdraw {
        /// Offered item id.
        item: ItemId,
    },
    /// Set the gold on offer (resets both acceptances when it changes).
    TradeGold {
        /// Gold offered (at most what the player carries).
        gold: u64,
    },
    /// Accept both offers as they stand; when both sides have, the trade is reserved and
    /// made durable.
    TradeAccept,
    /// Cancel the trade (before both sides accepted).
    TradeCancel,
}

impl Request {
    /// What kind of request this is.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Attack { .. } => RequestKind::Attack,
            Request::PickUp { .. } => RequestKind::PickUp,
            Request::Equip { .. } => RequestKind::Equip,
            Request::Unequip { .. } => RequestKind::Unequip,
            Request::Drop { .. } => RequestKind::Drop,
            Request::UseItem { .. } => RequestKind::UseItem,
            Request::EnterZone => RequestKind::EnterZone,
            Request::TradeOpen { .. } => RequestKind::TradeOpen,
            Request::TradeOffer { .. } => RequestKind::TradeOffer,
            Request::TradeWithdraw { .. } => RequestKind::TradeWithdraw,
            Request::TradeGold { .. } => RequestKind::TradeGold,
            Request::TradeAccept => RequestKind::TradeAccept,
            Request::TradeCancel => RequestKind::TradeCancel,
        }
    }
}

/// The kind of a [`Request`], without its arguments: one variant per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// [`Request::Attack`].
    Attack,
    /// [`Request::PickUp`].
    PickUp,
    /// [`Request::Equip`].
    Equip,
    /// [`Request::Unequip`].
    Unequip,
    /// [`Request::Drop`].
    Drop,
    /// [`Request::UseItem`].
    UseItem,
    /// [`Request::EnterZone`].
    EnterZone,
    /// [`Request::TradeOpen`].
    TradeOpen,
    /// [`Request::TradeOffer`].
    TradeOffer,
    /// [`Request::TradeWithdraw`].
    TradeWithdraw,
    /// [`Request::TradeGold`].
    TradeGold,
    /// [`Request::TradeAccept`].
    TradeAccept,
    /// [`Request::TradeCancel`].
    TradeCancel,
}

impl RequestKind {
    /// Stable, low-cardinality name (a metrics label: dashboards depend on it; the same
    /// name as the wire request's kind).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Attack => "attack",
            RequestKind::PickUp => "pick_up",
            RequestKind::Equip => "equip",
            RequestKind::Unequip => "unequip",
            RequestKind::Drop => "drop",
            RequestKind::UseItem => "use_item",
            RequestKind::EnterZone => "enter_zone",
            RequestKind::TradeOpen => "trade_open",
            RequestKind::TradeOffer => "trade_offer",
            RequestKind::TradeWithdraw => "trade_withdraw",
            RequestKind::TradeGold => "trade_gold",
            RequestKind::TradeAccept => "trade_accept",
            RequestKind::TradeCancel => "trade_cancel",
        }
    }
}

/// Why a request was refused. Nothing changed in the world when a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    /// The target monster does not exist or is dead.
    #[error("no such target")]
    NoSuchTarget,
    /// The item is not in the bag, or the ground item does not exist.
    #[error("no such item")]
    NoSuchItem,
    /// Out of reach (weapon range, or pick-up range).
    #[error("too far")]
    TooFar,
    /// A wall is in the way of a ranged attack.
    #[error("no line of sight")]
    NoLineOfSight,
    /// The bag is full.
    #[error("bag full")]
    BagFull,
    /// The ground item belongs to another player (for now).
    #[error("not yours")]
    NotYours,
    /// The item cannot be equipped.
    #[error("cannot be equipped")]
    WrongSlot,
    /// The character's level is below the item's requirement.
    #[error("level too low")]
    LevelTooLow,
    /// Nothing is worn in that slot.
    #[error("slot empty")]
    SlotEmpty,
    /// The item cannot be used.
    #[error("not usable")]
    NotUsable,
    /// The attack or potion is still cooling down.
    #[error("on cooldown")]
    OnCooldown,
    /// Using the item would do nothing (e.g. a potion at full health).
    #[error("no effect")]
    NoEffect,
    /// Too many items lie on the ground in this instance.
    #[error("ground full")]
    GroundFull,
    /// The player is not standing in a portal.
    #[error("not at a portal")]
    NotAtPortal,
    /// The player is dead.
    #[error("dead")]
    Dead,
    /// The player is leaving the zone.
    #[error("leaving the zone")]
    Leaving,
    /// Trading needs both players in the same party.
    #[error("not in the same party")]
    NotInParty,
    /// A side is already trading, or the trade is being made durable.
    #[error("trade busy")]
    TradeBusy,
    /// The player has no trade open.
    #[error("no trade open")]
    NoTrade,
    /// The item is worn: only bag items can be traded.
    #[error("item is equipped")]
    ItemEquipped,
    /// More gold than the player carries.
    #[error("not enough gold")]
    NotEnoughGold,
    /// The other side's bag could not hold what it would receive.
    #[error("partner's bag full")]
    PartnerBagFull,
    /// The offer already holds `TRADE_MAX_ITEMS` items.
    #[error("offer full")]
    OfferFull,
}

/// Why [`crate::World::queue_request`] did not queue a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No player with that entity id in this world.
    #[error("unknown entity")]
    UnknownEntity,
    /// The player already has `MAX_QUEUED_REQUESTS` pending.
    #[error("request queue full")]
    QueueFull,
}

/// An inventory change of one player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryChange {
    /// A ground item moved into the bag.
    PickedUp {
        /// The item (full, for persistence).
        item: Item,
        /// The ground entity it was.
        ground: EntityId,
    },
    /// A bag item was equipped.
    Equipped {
        /// The item.
        item: ItemId,
        /// Its slot.
        slot: EquipSlot,
        /// The item that went back to the bag.
        swapped_out: Option<ItemId>,
    },
    /// A worn item moved to the bag.
    Unequipped {
        /// The item.
        item: ItemId,
        /// The slot it left.
        slot: EquipSlot,
    },
    /// A bag item was dropped on the ground.
    Dropped {
        /// The item.
        item: ItemId,
        /// The new ground entity.
        ground: EntityId,
    },
    /// A consumable was used up.
    Consumed {
        /// The item.
        item: ItemId,
        /// Hit points restored.
        healed: u32,
    },
    /// Items the world created for this player (the starter kit of a new character).
    Granted {
        /// The items.
        items: Vec<ItemId>,
    },
    /// A dropped item came back into the bag: the store refused the drop (see
    /// [`crate::World::return_to_bag`]).
    Returned {
        /// The item.
        item: Item,
    },
    /// A trade ended after its reservation: `given` left for good (committed) and
    /// `received` entered the bag (committed: the partner's offer; aborted: this side's
    /// own offer back, with `given` empty). Already durable: the store made the exchange.
    Traded {
        /// Trade id.
        trade: TradeId,
        /// Items given to the partner.
        given: Vec<ItemId>,
        /// Items that entered the bag.
        received: Vec<Item>,
    },
}

/// Why a player is leaving the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferCause {
    /// Walked into, or asked to use, a portal.
    Portal,
    /// Died; the target is the zone's respawn town.
    Death,
}

/// Something that happened during a step. Events of one step are readable with
/// [`crate::World::events`] until the next step. Events with a `player_id` concern that
/// player privately; the others are instance-wide (combat log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An attack hit.
    Hit {
        /// Attacking entity.
        attacker: EntityId,
        /// Hit entity.
        target: EntityId,
        /// Physical damage dealt.
        physical: u32,
        /// Fire damage dealt.
        fire: u32,
        /// Critical hit.
        crit: bool,
        /// Target hit points left.
        target_hp: u32,
    },
    /// An attack missed.
    Miss {
        /// Attacking entity.
        attacker: EntityId,
        /// Target entity.
        target: EntityId,
    },
    /// A monster died.
    Killed {
        /// Player entity that dealt the killing blow.
        killer: EntityId,
        /// Monster entity.
        victim: EntityId,
        /// Its kind.
        kind: MonsterKind,
    },
    /// A player gained XP.
    XpGained {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// XP gained.
        amount: u64,
    },
    /// A player reached a new level.
    LevelUp {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// New level.
        level: u8,
    },
    /// A player died (the penalty is already applied).
    PlayerDied {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// Entity that dealt the killing blow.
        killer: EntityId,
        /// Gold lost.
        gold_lost: u64,
        /// XP lost.
        xp_lost: u64,
    },
    /// A player came back to life at the zone spawn (in-place respawn zones only).
    PlayerRespawned {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
    },
    /// A player's gold changed.
    GoldChanged {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// Signed change.
        delta: i64,
        /// New total.
        gold: u64,
    },
    /// An item appeared on the ground (loot or a player's drop).
    ItemDropped {
        /// Ground entity id.
        ground: EntityId,
        /// The item.
        item: Item,
        /// Player who may pick it up (loot; `None` = anyone).
        owner: Option<u64>,
        /// Where.
        pos_mm: (i32, i32),
    },
    /// A ground item expired and is gone for good.
    ItemExpired {
        /// Ground entity id.
        ground: EntityId,
        /// The item.
        item: ItemId,
    },
    /// A player's inventory changed.
    Inventory {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// What changed.
        change: InventoryChange,
    },
    /// A queued request was resolved.
    RequestDone {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// The id given to `queue_request`.
        request_id: u32,
        /// The request kind ([`Request::kind`]).
        kind: RequestKind,
        /// Accepted, or why not.
        result: Result<(), Reject>,
    },
    /// A trade this player takes part in opened or changed (private to the player).
    TradeUpdated {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// The trade as this player sees it.
        view: TradeView,
    },
    /// A trade this player took part in ended (private to the player).
    TradeEnded {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// Trade id.
        trade: TradeId,
        /// Why.
        reason: TradeEnd,
    },
    /// Both sides accepted: the offers are reserved (out of the bags and purses) and the
    /// server must make the exchange durable, then call [`crate::World::complete_trade`].
    TradeReady {
        /// What each side gives.
        manifest: TradeManifest,
    },
    /// The player must move to another zone: the server exports the player
    /// ([`crate::World::take_player`]) and imports it into an instance of `to_zone`.
    /// Until then the player is frozen and untargetable.
    Transfer {
        /// Player entity.
        entity: EntityId,
        /// Player id.
        player_id: u64,
        /// Destination zone id.
        to_zone: u16,
        /// Why.
        cause: TransferCause,
    },
}

impl Event {
    /// The player this event is private to, if any.
    pub fn player_id(&self) -> Option<u64> {
        match self {
            Event::XpGained { player_id, .. }
            | Event::LevelUp { player_id, .. }
            | Event::PlayerDied { player_id, .. }
            | Event::PlayerRespawned { player_id, .. }
            | Event::GoldChanged { player_id, .. }
            | Event::Inventory { player_id, .. }
            | Event::RequestDone { player_id, .. }
            | Event::TradeUpdated { player_id, .. }
            | Event::TradeEnded { player_id, .. }
            | Event::Transfer { player_id, .. } => Some(*player_id),
            Event::TradeReady { .. }
            | Event::Hit { .. }
            | Event::Miss { .. }
            | Event::Killed { .. }
            | Event::ItemDropped { .. }
            | Event::ItemExpired { .. } => None,
        }
    }

    /// Whether it changes a player's durable record (save it).
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Event::XpGained { .. }
                | Event::LevelUp { .. }
                | Event::PlayerDied { .. }
                | Event::GoldChanged { .. }
                | Event::Inventory { .. }
        )
    }
}
