//! Messages carried in frames on the control stream (SPEC.md §6).
//!
//! Encoded with postcard 1.x (serde): enums as a varint variant index in declaration
//! order, integers as varints, strings and vectors as a varint length then bytes.
//! New variants are only ever appended, so older peers reject them with a typed error.

use serde::{Deserialize, Serialize};

use crate::limits::MAX_PLAYER_NAME_LEN;
use crate::DecodeError;

pub use crate::limits::{
    MAX_ADDRESS_LEN, MAX_PARTY_MEMBERS, MAX_TEXT_LEN, MAX_TOKEN_LEN, MAX_TRADE_ITEMS,
};

fn items(field: &'static str, len: usize) -> Result<(), DecodeError> {
    if len > MAX_TRADE_ITEMS {
        return Err(DecodeError::Field {
            field,
            reason: "more items than a trade offer holds",
        });
    }
    Ok(())
}

/// Size rules serde cannot express (SPEC.md §6.6): every text field has a byte limit.
/// [`crate::frame`] checks them on both encode and decode, so an over-long field is a typed
/// error at the sender and at the receiver, never a silently accepted allocation.
pub trait Bounded {
    /// Checks every variable-length field of the message against its documented limit.
    fn check_bounds(&self) -> Result<(), DecodeError>;
}

fn text(field: &'static str, value: &str, limit: usize) -> Result<(), DecodeError> {
    if value.len() > limit {
        return Err(DecodeError::Field {
            field,
            reason: "longer than its limit",
        });
    }
    Ok(())
}

fn name(field: &'static str, value: &str) -> Result<(), DecodeError> {
    text(field, value, MAX_PLAYER_NAME_LEN)
}

impl Bounded for ClientMsg {
    fn check_bounds(&self) -> Result<(), DecodeError> {
        match self {
            ClientMsg::Hello(h) => {
                text("Hello.token", &h.token, MAX_TOKEN_LEN)?;
                text("Hello.client", &h.client, MAX_TEXT_LEN)
            }
            ClientMsg::Request {
                body: Request::PartyInvite { player } | Request::PartyKick { player },
                ..
            } => name("Request.player", player),
            ClientMsg::Request { .. } | ClientMsg::Bye => Ok(()),
        }
    }
}

impl Bounded for ServerMsg {
    fn check_bounds(&self) -> Result<(), DecodeError> {
        match self {
            ServerMsg::Welcome(w) => text("Welcome.resume_token", &w.resume_token, MAX_TOKEN_LEN),
            ServerMsg::Reject(r) => text("Reject.reason", &r.reason, MAX_TEXT_LEN),
            ServerMsg::Goaway(g) => text("Goaway.reason", &g.reason, MAX_TEXT_LEN),
            ServerMsg::Redirect(r) => {
                text("Redirect.address", &r.address, MAX_ADDRESS_LEN)?;
                text("Redirect.ticket", &r.ticket, MAX_TOKEN_LEN)
            }
            ServerMsg::Event(Event::Notice { text: t }) => text("Notice.text", t, MAX_TEXT_LEN),
            ServerMsg::Event(Event::Party(
                PartyEvent::Invited { by } | PartyEvent::Declined { by },
            )) => name("PartyEvent.by", by),
            ServerMsg::Event(Event::Party(PartyEvent::Members {
                leader, members, ..
            })) => {
                name("Members.leader", leader)?;
                if members.len() > MAX_PARTY_MEMBERS {
                    return Err(DecodeError::Field {
                        field: "Members.members",
                        reason: "more members than a party holds",
                    });
                }
                members.iter().try_for_each(|m| name("Members.members", m))
            }
            ServerMsg::Event(Event::Trade(TradeEvent::Updated { mine, theirs, .. })) => {
                items("TradeEvent::Updated.mine.items", mine.items.len())?;
                items("TradeEvent::Updated.theirs.items", theirs.items.len())
            }
            ServerMsg::Event(Event::Inventory(InventoryEvent::Traded {
                given, received, ..
            })) => {
                items("Traded.given", given.len())?;
                items("Traded.received", received.len())
            }
            ServerMsg::Response {
                body: Ok(Response::Zone(z)),
                ..
            } => text("ZoneView.name", &z.name, MAX_TEXT_LEN),
            ServerMsg::Event(_) | ServerMsg::Response { .. } => Ok(()),
        }
    }
}

/// Cuts `reason` to at most [`MAX_TEXT_LEN`] bytes on a character boundary, for text fields
/// built from runtime data (error messages) that must never make a frame unencodable.
pub fn bounded_text(mut reason: String) -> String {
    if reason.len() > MAX_TEXT_LEN {
        let mut end = MAX_TEXT_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// Every message a client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message on the control stream; requests may follow it at once and are
    /// answered after `Welcome` (SPEC.md §2.1).
    Hello(Hello),
    /// A request; the server answers with a `Response` of the same id.
    Request {
        /// Client-chosen id echoed in the response.
        id: u32,
        /// The request.
        body: Request,
    },
    /// The client is leaving; the server saves and closes the session.
    Bye,
}

/// The opening message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// Signed authentication token in its text form (see [`crate::token`]).
    pub token: String,
    /// Free-form client name and version, for logs (at most [`MAX_TEXT_LEN`] bytes).
    pub client: String,
}

/// Requests a client may make once welcomed. Game requests are resolved in the next
/// simulation tick; the response comes after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Round-trip probe; answered with [`Response::Pong`].
    Ping {
        /// Client clock in microseconds, echoed back.
        client_time_us: u64,
    },
    /// Attack a monster once (range, line of sight and cooldown are checked).
    Attack {
        /// Monster entity id.
        target: u32,
    },
    /// Pick up a ground item (distance and ownership are checked).
    PickUp {
        /// Ground item entity id.
        ground: u32,
    },
    /// Equip a bag item; a worn item in that slot goes back to the bag.
    Equip {
        /// Item id.
        item: u128,
    },
    /// Move a worn item to the bag.
    Unequip {
        /// Equipment slot code (see [`slot`]).
        slot: u8,
    },
    /// Drop a bag item at the player's feet.
    Drop {
        /// Item id.
        item: u128,
    },
    /// Use a consumable from the bag (potions heal).
    UseItem {
        /// Item id.
        item: u128,
    },
    /// Take the portal the player stands in; the zone change arrives as
    /// [`Event::ZoneEntered`].
    EnterZone,
    /// Ask for the full inventory; answered with [`Response::Inventory`].
    GetInventory,
    /// Invite a player (by name) into your party.
    PartyInvite {
        /// Player name.
        player: String,
    },
    /// Accept the pending party invite.
    PartyAccept,
    /// Decline the pending party invite.
    PartyDecline,
    /// Leave your party.
    PartyLeave,
    /// Remove a member from your party (leader only).
    PartyKick {
        /// Player name.
        player: String,
    },
    /// Open a trade with a party member nearby (game/RULES.md, *Trade*); both sides get
    /// [`TradeEvent::Updated`].
    TradeOpen {
        /// The other player's entity id.
        with: u32,
    },
    /// Put a bag item on offer (voids both acceptances).
    TradeOffer {
        /// Item id.
        item: u128,
    },
    /// Take an item off the offer (voids both acceptances).
    TradeWithdraw {
        /// Item id.
        item: u128,
    },
    /// Set the gold on offer (voids both acceptances when it changes).
    TradeGold {
        /// Gold.
        gold: u64,
    },
    /// Accept both offers as they stand. The acceptance that completes the pair is
    /// answered only once the exchange is durable (or failed).
    TradeAccept,
    /// Cancel the trade (before both sides accepted).
    TradeCancel,
    /// Ask for the current zone's layout (bounds, walls, portals); answered with
    /// [`Response::Zone`]. Appended in v1 (SPEC.md §1.2).
    GetZone,
}

impl Request {
    /// Stable, low-cardinality name of the request kind (metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping { .. } => "ping",
            Request::Attack { .. } => "attack",
            Request::PickUp { .. } => "pick_up",
            Request::Equip { .. } => "equip",
            Request::Unequip { .. } => "unequip",
            Request::Drop { .. } => "drop",
            Request::UseItem { .. } => "use_item",
            Request::EnterZone => "enter_zone",
            Request::GetInventory => "get_inventory",
            Request::PartyInvite { .. } => "party_invite",
            Request::PartyAccept => "party_accept",
            Request::PartyDecline => "party_decline",
            Request::PartyLeave => "party_leave",
            Request::PartyKick { .. } => "party_kick",
            Request::TradeOpen { .. } => "trade_open",
            Request::TradeOffer { .. } => "trade_offer",
            Request::TradeWithdraw { .. } => "trade_withdraw",
            Request::TradeGold { .. } => "trade_gold",
            Request::TradeAccept => "trade_accept",
            Request::TradeCancel => "trade_cancel",
            Request::GetZone => "get_zone",
        }
    }

    /// Every request kind name, for metrics label sets.
    pub const KINDS: &'static [&'static str] = &[
        "ping",
        "attack",
        "pick_up",
        "equip",
        "unequip",
        "drop",
        "use_item",
        "enter_zone",
        "get_inventory",
        "party_invite",
        "party_accept",
        "party_decline",
        "party_leave",
        "party_kick",
        "trade_open",
        "trade_offer",
        "trade_withdraw",
        "trade_gold",
        "trade_accept",
        "trade_cancel",
        "get_zone",
    ];
}

/// Equipment slot codes.
pub mod slot {
    /// Main-hand weapon.
    pub const WEAPON: u8 = 0;
    /// Head.
    pub const HELM: u8 = 1;
    /// Chest.
    pub const BODY: u8 = 2;
    /// Hands.
    pub const GLOVES: u8 = 3;
    /// Feet.
    pub const BOOTS: u8 = 4;
    /// Finger.
    pub const RING: u8 = 5;
}

/// One item as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemInfo {
    /// Unique 128-bit id.
    pub id: u128,
    /// Base type id (game/RULES.md).
    pub base: u16,
    /// Rarity: 0 common, 1 magic, 2 rare, 3 unique.
    pub rarity: u8,
    /// Item level.
    pub level: u8,
    /// Unique index, for uniques.
    pub unique: Option<u8>,
    /// Affixes as `(kind code, value)`; kind codes in game/RULES.md.
    pub affixes: Vec<(u8, i32)>,
}

/// A player's full inventory and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryView {
    /// Bag items, in bag order.
    pub bag: Vec<ItemInfo>,
    /// Worn items with their slot code.
    pub equipment: Vec<(u8, ItemInfo)>,
    /// Gold.
    pub gold: u64,
    /// Character level.
    pub level: u8,
    /// XP toward the next level.
    pub xp: u64,
}

/// Successful answers to requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's `client_time_us`.
        client_time_us: u64,
        /// Server tick when the request was applied.
        server_tick: u32,
    },
    /// The request was applied (its effects arrive as events).
    Done,
    /// Answer to [`Request::GetInventory`].
    Inventory(InventoryView),
    /// Answer to [`Request::GetZone`]. Appended in v1 (SPEC.md §1.2).
    Zone(ZoneView),
}

/// A rectangle of a zone, millimetres, half-open: `x0 <= x < x1`, `y0 <= y < y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRect {
    /// Left edge (inclusive).
    pub x0: i32,
    /// Top edge (inclusive).
    pub y0: i32,
    /// Right edge (exclusive).
    pub x1: i32,
    /// Bottom edge (exclusive).
    pub y1: i32,
}

/// A portal: stepping into `area` from outside it moves the player to zone `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonePortal {
    /// Where it is.
    pub area: ZoneRect,
    /// Destination zone id.
    pub target: u16,
}

/// The layout of the zone a player is in (game/RULES.md, *Content*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneView {
    /// Zone template id (as in `Welcome.zone`).
    pub zone: u16,
    /// Display name (at most [`MAX_TEXT_LEN`] bytes).
    pub name: String,
    /// Width, millimetres: positions run `0..=width_mm`.
    pub width_mm: i32,
    /// Height, millimetres: positions run `0..=height_mm`.
    pub height_mm: i32,
    /// Where arrivals appear.
    pub spawn_mm: (i32, i32),
    /// Whether it is a town (no monsters; where the dead respawn).
    pub town: bool,
    /// Impassable rectangles.
    pub walls: Vec<ZoneRect>,
    /// Exits.
    pub portals: Vec<ZonePortal>,
}

/// Why a request was refused; nothing changed. The index of each variant is its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// The request is not valid in the session's current state.
    #[error("not allowed now")]
    NotAllowed,
    /// The request was rate limited.
    #[error("rate limited")]
    RateLimited,
    /// The server failed internally; the request had no effect.
    #[error("internal error")]
    Internal,
    /// The target monster does not exist or is dead.
    #[error("no such target")]
    NoSuchTarget,
    /// The item or ground item does not exist.
    #[error("no such item")]
    NoSuchItem,
    /// Out of reach.
    #[error("too far")]
    TooFar,
    /// A wall blocks the shot.
    #[error("no line of sight")]
    NoLineOfSight,
    /// The bag is full.
    #[error("bag full")]
    BagFull,
    /// The ground item belongs to another player.
    #[error("not yours")]
    NotYours,
    /// The item cannot be equipped.
    #[error("wrong slot")]
    WrongSlot,
    /// The character's level is too low for the item.
    #[error("level too low")]
    LevelTooLow,
    /// Nothing is worn in that slot.
    #[error("slot empty")]
    SlotEmpty,
    /// The item cannot be used.
    #[error("not usable")]
    NotUsable,
    /// Still cooling down.
    #[error("on cooldown")]
    OnCooldown,
    /// Using it would do nothing.
    #[error("no effect")]
    NoEffect,
    /// Too many items on the ground.
    #[error("ground full")]
    GroundFull,
    /// Not standing in a portal.
    #[error("not at a portal")]
    NotAtPortal,
    /// The character is dead.
    #[error("dead")]
    Dead,
    /// The character is changing zones.
    #[error("leaving the zone")]
    Leaving,
    /// No such player (party requests).
    #[error("no such player")]
    NoSuchPlayer,
    /// Inviting yourself.
    #[error("cannot invite yourself")]
    SelfInvite,
    /// Already in a party.
    #[error("already in a party")]
    AlreadyInParty,
    /// Only the party leader may do this.
    #[error("not the party leader")]
    NotLeader,
    /// The party is full.
    #[error("party full")]
    PartyFull,
    /// No pending invite.
    #[error("no pending invite")]
    NoInvite,
    /// Not in a party.
    #[error("not in a party")]
    NotInParty,
    /// The player is not a member of your party.
    #[error("not a member")]
    NotMember,
    /// A side is already trading, or the trade is being made durable.
    #[error("trade busy")]
    TradeBusy,
    /// No trade is open.
    #[error("no trade open")]
    NoTrade,
    /// The item is worn: only bag items can be traded.
    #[error("item is equipped")]
    ItemEquipped,
    /// More gold than the character carries.
    #[error("not enough gold")]
    NotEnoughGold,
    /// The other side's bag could not hold what it would receive.
    #[error("partner's bag full")]
    PartnerBagFull,
    /// The offer already holds [`MAX_TRADE_ITEMS`] items.
    #[error("offer full")]
    OfferFull,
}

/// One combat log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Combat {
    /// An attack hit.
    Hit {
        /// Attacker entity.
        attacker: u32,
        /// Target entity.
        target: u32,
        /// Physical damage.
        physical: u32,
        /// Fire damage.
        fire: u32,
        /// Critical hit.
        crit: bool,
        /// Target hit points left.
        target_hp: u32,
    },
    /// An attack missed.
    Miss {
        /// Attacker entity.
        attacker: u32,
        /// Target entity.
        target: u32,
    },
    /// A monster died.
    Killed {
        /// Killer (player entity).
        killer: u32,
        /// Victim (monster entity).
        victim: u32,
        /// Monster kind code.
        monster_kind: u8,
    },
}

/// A change to the receiving player's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryEvent {
    /// A ground item moved into the bag.
    PickedUp {
        /// The item.
        item: ItemInfo,
        /// The ground entity it was.
        ground: u32,
    },
    /// A bag item was equipped.
    Equipped {
        /// Item id.
        item: u128,
        /// Slot code.
        slot: u8,
        /// The item that went back to the bag.
        swapped_out: Option<u128>,
    },
    /// A worn item moved to the bag.
    Unequipped {
        /// Item id.
        item: u128,
        /// Slot code.
        slot: u8,
    },
    /// A bag item was dropped.
    Dropped {
        /// Item id.
        item: u128,
        /// The new ground entity.
        ground: u32,
    },
    /// A consumable was used up.
    Consumed {
        /// Item id.
        item: u128,
        /// Hit points restored.
        healed: u32,
    },
    /// Items granted by the server (a new character's starter kit).
    Granted {
        /// Item ids (details via [`Request::GetInventory`]).
        items: Vec<u128>,
    },
    /// A dropped item is back in the bag: the server could not make the drop durable.
    Returned {
        /// The item.
        item: ItemInfo,
    },
    /// A trade ended after both accepted: `given` left the bag, `received` entered it
    /// (after a failed trade: the player's own offer back, `given` empty). Gold arrives
    /// as [`Event::Gold`].
    Traded {
        /// Trade id.
        trade: u32,
        /// Items given (at most [`MAX_TRADE_ITEMS`]).
        given: Vec<u128>,
        /// Items received (at most [`MAX_TRADE_ITEMS`]).
        received: Vec<ItemInfo>,
    },
}

/// One side's offer in a trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeOffer {
    /// Offered item ids (at most [`MAX_TRADE_ITEMS`]).
    pub items: Vec<u128>,
    /// Offered gold.
    pub gold: u64,
    /// Whether this side accepted both offers as they stand.
    pub accepted: bool,
}

/// Why a trade ended. The index of each variant is its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TradeEndReason {
    /// The exchange is done and durable (code 0).
    Completed,
    /// A side cancelled (code 1).
    Cancelled,
    /// A side left the instance (code 2).
    PartnerLeft,
    /// A side died (code 3).
    Died,
    /// A side is changing zones (code 4).
    ZoneChange,
    /// The sides are no longer in the same party (code 5).
    PartyChanged,
    /// The exchange could not be made durable; every offer went back (code 6).
    Failed,
}

/// A change to a trade the receiving player takes part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradeEvent {
    /// The trade opened or changed.
    Updated {
        /// Trade id.
        trade: u32,
        /// The other side's player id.
        partner: u64,
        /// The other side's entity id.
        partner_entity: u32,
        /// Your offer.
        mine: TradeOffer,
        /// Their offer.
        theirs: TradeOffer,
        /// Both accepted: the exchange is being made durable; nothing can change.
        committing: bool,
    },
    /// The trade ended.
    Ended {
        /// Trade id.
        trade: u32,
        /// Why.
        reason: TradeEndReason,
    },
}

/// A change to the receiving player's party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartyEvent {
    /// You were invited.
    Invited {
        /// Inviter's name.
        by: String,
    },
    /// Your invite was declined.
    Declined {
        /// Invitee's name.
        by: String,
    },
    /// Party membership now (sent to every member on each change). An empty `members`
    /// list (and an empty `leader`) means the party dissolved: sent to the member left
    /// alone when the others left or were kicked ([`PartyEvent::dissolved`]).
    Members {
        /// Party id.
        party: u32,
        /// Leader's name.
        leader: String,
        /// Members' names, leader included.
        members: Vec<String>,
    },
    /// You are no longer in a party.
    Left {
        /// Whether you were kicked.
        kicked: bool,
    },
}

impl PartyEvent {
    /// The `Members` event that tells the last member that party `party` dissolved: no
    /// leader, no members (SPEC §6.4).
    pub fn dissolved(party: u32) -> Self {
        PartyEvent::Members {
            party,
            leader: String::new(),
            members: Vec::new(),
        }
    }
}

/// Every message the server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The session is accepted.
    Welcome(Welcome),
    /// The session is refused; the server closes the connection after sending it.
    Reject(Reject),
    /// Answer to the request with the same id.
    Response {
        /// Id of the request answered.
        id: u32,
        /// Outcome.
        body: Result<Response, RequestError>,
    },
    /// Something happened in the world that the client must know reliably.
    Event(Event),
    /// The server is going away; reconnect after the given delay.
    Goaway(Goaway),
    /// Answer to `Hello` (instead of `Welcome`): the player is live on another server;
    /// connect there with the ticket as the `Hello` token. The server closes after it.
    Redirect(Redirect),
}

/// Where to connect instead, and the ticket that server accepts instead of an account
/// token (SPEC.md §2.2, §3.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// `host:port` of the server that owns the player (at most [`MAX_ADDRESS_LEN`] bytes).
    pub address: String,
    /// A signed, short-lived, single-use token for that server (at most [`MAX_TOKEN_LEN`]
    /// bytes).
    pub ticket: String,
}

/// Session parameters granted by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Stable player id derived from the token's player name.
    pub player_id: u64,
    /// Id of the player's entity in its zone instance (used to find its ack in snapshots).
    pub entity_id: u32,
    /// Zone template id.
    pub zone: u16,
    /// Zone instance id.
    pub instance: u32,
    /// Simulation ticks per second.
    pub tick_rate_hz: u16,
    /// Snapshots per second.
    pub snapshot_rate_hz: u16,
    /// Current simulation tick.
    pub server_tick: u32,
    /// Server wall clock, microseconds since the Unix epoch.
    pub server_time_us: u64,
    /// Movement speed limit in millimetres per second.
    pub max_speed_mms: u32,
    /// Highest input sequence the server has applied for this player (0 for a new
    /// session); a resumed client continues numbering after it.
    pub last_input: u32,
    /// Single-use token that resumes this session on a new connection (send it as
    /// `Hello.token`) if the connection is lost; valid while the server keeps the session,
    /// i.e. for its resume grace period after the loss.
    pub resume_token: String,
}

/// Reasons a session is refused. The index of each variant is its wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectCode {
    /// The client's protocol version is not supported (code 0).
    UnsupportedVersion,
    /// The token is malformed or its signature does not verify (code 1).
    InvalidToken,
    /// The token has expired (code 2).
    TokenExpired,
    /// The token is for another server or cluster (code 3).
    WrongAudience,
    /// The player already has a live session (code 4).
    AlreadyConnected,
    /// The server is at its player limit (code 5).
    ServerFull,
    /// The server is draining and takes no new players (code 6).
    Draining,
    /// The client sent something other than a valid `Hello` (code 7).
    ProtocolViolation,
    /// The client did not send `Hello` in time (code 8).
    HelloTimeout,
    /// The token has been used already (code 9).
    TokenReplayed,
    /// The server failed internally (code 10).
    Internal,
    /// A resume token was presented but its session is gone (grace period over) (code 11).
    SessionExpired,
}

impl RejectCode {
    /// Stable snake_case name (metrics label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::UnsupportedVersion => "unsupported_version",
            RejectCode::InvalidToken => "invalid_token",
            RejectCode::TokenExpired => "token_expired",
            RejectCode::WrongAudience => "wrong_audience",
            RejectCode::AlreadyConnected => "already_connected",
            RejectCode::ServerFull => "server_full",
            RejectCode::Draining => "draining",
            RejectCode::ProtocolViolation => "protocol_violation",
            RejectCode::HelloTimeout => "hello_timeout",
            RejectCode::TokenReplayed => "token_replayed",
            RejectCode::Internal => "internal",
            RejectCode::SessionExpired => "session_expired",
        }
    }
}

/// A refused session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable detail (at most [`MAX_TEXT_LEN`] bytes).
    pub reason: String,
}

/// Reliable world events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A free-form server notice (e.g. an operator message).
    Notice {
        /// The text.
        text: String,
    },
    /// A combat log line of the instance.
    Combat(Combat),
    /// An item appeared on the ground.
    ItemDropped {
        /// Ground entity id.
        ground: u32,
        /// The item.
        item: ItemInfo,
        /// Player id who may pick it up (`None` = anyone).
        owner: Option<u64>,
        /// Position x, millimetres.
        x_mm: i32,
        /// Position y, millimetres.
        y_mm: i32,
    },
    /// A ground item expired.
    ItemExpired {
        /// Ground entity id.
        ground: u32,
    },
    /// You gained XP.
    XpGained {
        /// Amount.
        amount: u64,
    },
    /// You reached a new level.
    LevelUp {
        /// New level.
        level: u8,
    },
    /// You died; the penalty is applied.
    Died {
        /// Entity that dealt the killing blow.
        killer: u32,
        /// Gold lost.
        gold_lost: u64,
        /// XP lost.
        xp_lost: u64,
    },
    /// You came back to life in place.
    Respawned,
    /// Your gold changed.
    Gold {
        /// Signed change.
        delta: i64,
        /// New total.
        gold: u64,
    },
    /// Your inventory changed.
    Inventory(InventoryEvent),
    /// Your party changed.
    Party(PartyEvent),
    /// You are now in another zone instance with a new entity id (after a portal or a
    /// death). Snapshots of the new instance follow.
    ZoneEntered {
        /// Zone template id.
        zone: u16,
        /// Instance id.
        instance: u32,
        /// Your new entity id.
        entity_id: u32,
    },
    /// A trade you take part in changed.
    Trade(TradeEvent),
}

/// The server is shutting down or moving the player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goaway {
    /// Why.
    pub reason: String,
    /// Milliseconds the client should wait before reconnecting.
    pub reconnect_after_ms: u32,
}

/// QUIC application error codes used when closing a connection (SPEC.md §7).
pub mod close_code {
    /// Normal close (the client said `Bye`, or the server finished a drain).
    pub const NORMAL: u32 = 0;
    /// The session was refused (a `Reject` was sent first).
    pub const REJECTED: u32 = 1;
    /// The peer violated the protocol (malformed or out-of-state message).
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The client read too slowly; its outbox overflowed.
    pub const SLOW_READER: u32 = 3;
    /// Another session for the same player took over.
    pub const TAKEN_OVER: u32 = 4;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 5;
    /// Repeated abuse (rate limits, invalid actions).
    pub const ABUSE: u32 = 6;
    /// Internal server error.
    pub const INTERNAL: u32 = 7;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_payload, encode_frame, FRAME_HEADER_LEN};

    #[test]
    fn over_long_text_is_refused_by_encoder_and_decoder() {
        let long = ClientMsg::Hello(Hello {
            version: 1,
            token: "t".into(),
            client: "x".repeat(MAX_TEXT_LEN + 1),
        });
        assert!(matches!(
            encode_frame(&long),
            Err(DecodeError::Field {
                field: "Hello.client",
                ..
            })
        ));
        // A peer that skips the check: the receiver still refuses it.
        let payload = postcard::to_allocvec(&long).expect("postcard");
        assert!(matches!(
            decode_payload::<ClientMsg>(&payload),
            Err(DecodeError::Field {
                field: "Hello.client",
                ..
            })
        ));
        let at_limit = ClientMsg::Hello(Hello {
            version: 1,
            token: "t".into(),
            client: "x".repeat(MAX_TEXT_LEN),
        });
        assert!(encode_frame(&at_limit).is_ok());
        let invite = ClientMsg::Request {
            id: 1,
            body: Request::PartyInvite {
                player: "p".repeat(MAX_PLAYER_NAME_LEN + 1),
            },
        };
        let payload = postcard::to_allocvec(&invite).expect("postcard");
        assert!(decode_payload::<ClientMsg>(&payload).is_err());
        let members = ServerMsg::Event(Event::Party(PartyEvent::Members {
            party: 1,
            leader: "a".into(),
            members: vec!["a".into(); MAX_PARTY_MEMBERS + 1],
        }));
        assert!(encode_frame(&members).is_err());
    }

    #[test]
    fn bounded_text_cuts_on_a_char_boundary() {
        assert_eq!(bounded_text("short".into()), "short");
        let cut = bounded_text("é".repeat(MAX_TEXT_LEN));
        assert!(cut.len() <= MAX_TEXT_LEN && cut.len() >= MAX_TEXT_LEN - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        let reject = ServerMsg::Reject(Reject {
            code: RejectCode::Internal,
            reason: bounded_text("r".repeat(10 * MAX_TEXT_LEN)),
        });
        assert!(encode_frame(&reject).is_ok());
    }

    #[test]
    fn hello_bytes_are_exact() {
        let f = encode_frame(&ClientMsg::Hello(Hello {
            version: 1,
            token: "ab".into(),
            client: "c".into(),
        }))
        .expect("encode");
        assert_eq!(&f[..], &[7, 0, 0, 0, 0, 1, 2, b'a', b'b', 1, b'c']);
    }

    #[test]
    fn reject_code_is_variant_index() {
        let f = encode_frame(&ServerMsg::Reject(Reject {
            code: RejectCode::TokenExpired,
            reason: String::new(),
        }))
        .expect("encode");
        assert_eq!(&f[FRAME_HEADER_LEN..], &[1, 2, 0]);
    }

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The frame vectors of SPEC.md §9.3–9.4 are what the encoder produces, and the SPEC
    /// still lists them (so a wire change without a SPEC change fails here).
    #[test]
    fn spec_frame_vectors_match_the_encoder() {
        let spec = include_str!("../SPEC.md");
        let client = [
            (
                ClientMsg::Request {
                    id: 1,
                    body: Request::Ping {
                        client_time_us: 300,
                    },
                },
                "05 00 00 00 01 01 00 ac 02",
            ),
            (ClientMsg::Bye, "01 00 00 00 02"),
            (
                ClientMsg::Request {
                    id: 2,
                    body: Request::TradeOpen { with: 7 },
                },
                "04 00 00 00 01 02 0e 07",
            ),
            (
                ClientMsg::Request {
                    id: 3,
                    body: Request::TradeAccept,
                },
                "03 00 00 00 01 03 12",
            ),
            (
                ClientMsg::Request {
                    id: 4,
                    body: Request::GetZone,
                },
                "03 00 00 00 01 04 14",
            ),
        ];
        for (msg, want) in client {
            let got = hex(&encode_frame(&msg).expect("encode"));
            assert_eq!(got, want, "{msg:?}");
            assert!(spec.contains(&format!("`{want}`")), "SPEC lacks {want}");
        }
        let server = [
            (
                ServerMsg::Response {
                    id: 1,
                    body: Err(RequestError::TradeBusy),
                },
                "04 00 00 00 02 01 01 1b",
            ),
            (
                ServerMsg::Event(Event::Trade(TradeEvent::Ended {
                    trade: 1,
                    reason: TradeEndReason::Completed,
                })),
                "05 00 00 00 03 0c 01 01 00",
            ),
            (
                ServerMsg::Event(Event::Trade(TradeEvent::Updated {
                    trade: 1,
                    partner: 2,
                    partner_entity: 3,
                    mine: TradeOffer {
                        items: vec![],
                        gold: 5,
                        accepted: true,
                    },
                    theirs: TradeOffer {
                        items: vec![],
                        gold: 0,
                        accepted: false,
                    },
                    committing: false,
                })),
                "0d 00 00 00 03 0c 00 01 02 03 00 05 01 00 00 00 00",
            ),
            (
                ServerMsg::Reject(Reject {
                    code: RejectCode::TokenExpired,
                    reason: String::new(),
                }),
                "03 00 00 00 01 02 00",
            ),
            (
                ServerMsg::Response {
                    id: 1,
                    body: Ok(Response::Pong {
                        client_time_us: 300,
                        server_tick: 70000,
                    }),
                },
                "09 00 00 00 02 01 00 00 ac 02 f0 a2 04",
            ),
            (
                ServerMsg::Response {
                    id: 1,
                    body: Err(RequestError::RateLimited),
                },
                "04 00 00 00 02 01 01 01",
            ),
            (
                ServerMsg::Event(Event::Notice { text: "hi".into() }),
                "05 00 00 00 03 00 02 68 69",
            ),
            (
                ServerMsg::Goaway(Goaway {
                    reason: "bye".into(),
                    reconnect_after_ms: 2000,
                }),
                "07 00 00 00 04 03 62 79 65 d0 0f",
            ),
            (
                ServerMsg::Redirect(Redirect {
                    address: "127.0.0.1:4433".into(),
                    ticket: "t".into(),
                }),
                "12 00 00 00 05 0e 31 32 37 2e 30 2e 30 2e 31 3a 34 34 33 33 01 74",
            ),
            (
                ServerMsg::Welcome(Welcome {
                    player_id: 1,
                    entity_id: 5,
                    zone: 1,
                    instance: 2,
                    tick_rate_hz: 60,
                    snapshot_rate_hz: 60,
                    server_tick: 0,
                    server_time_us: 0,
                    max_speed_mms: 6000,
                    last_input: 3,
                    resume_token: "r".into(),
                }),
                "0e 00 00 00 00 01 05 01 02 3c 3c 00 00 f0 2e 03 01 72",
            ),
            (
                ServerMsg::Response {
                    id: 4,
                    body: Ok(Response::Zone(ZoneView {
                        zone: 1,
                        name: "T".into(),
                        width_mm: 1000,
                        height_mm: 500,
                        spawn_mm: (10, -10),
                        town: true,
                        walls: vec![ZoneRect {
                            x0: 0,
                            y0: 0,
                            x1: 100,
                            y1: 2,
                        }],
                        portals: vec![ZonePortal {
                            area: ZoneRect {
                                x0: 1,
                                y0: 2,
                                x1: 3,
                                y1: 4,
                            },
                            target: 2,
                        }],
                    })),
                },
                "1a 00 00 00 02 04 00 03 01 01 54 d0 0f e8 07 14 13 01 01 00 00 c8 01 04 01 02 04 06 08 02",
            ),
        ];
        for (msg, want) in server {
            let got = hex(&encode_frame(&msg).expect("encode"));
            assert_eq!(got, want, "{msg:?}");
            let reject = want.starts_with("03 00 00 00 01");
            assert!(
                reject || spec.contains(&format!("`{want}`")),
                "SPEC lacks {want}"
            );
        }
    }

    #[test]
    fn unknown_variant_is_a_typed_error() {
        assert!(decode_payload::<ClientMsg>(&[42]).is_err());
        assert!(decode_payload::<ServerMsg>(&[]).is_err());
    }

    fn item_info() -> impl proptest::strategy::Strategy<Value = ItemInfo> {
        use proptest::prelude::*;
        (
            any::<u128>(),
            any::<u16>(),
            0..4u8,
            any::<u8>(),
            any::<Option<u8>>(),
        )
            .prop_map(|(id, base, rarity, level, unique)| ItemInfo {
                id,
                base,
                rarity,
                level,
                unique,
                affixes: vec![(1, -3)],
            })
    }

    fn offer(max: usize) -> impl proptest::strategy::Strategy<Value = TradeOffer> {
        use proptest::prelude::*;
        (
            prop::collection::vec(any::<u128>(), 0..=max),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(items, gold, accepted)| TradeOffer {
                items,
                gold,
                accepted,
            })
    }

    proptest::proptest! {
        /// Trade messages round-trip through frames; lists longer than
        /// [`MAX_TRADE_ITEMS`] are refused by the encoder and by the decoder.
        #[test]
        fn trade_messages_round_trip_and_are_bounded(
            trade in proptest::prelude::any::<u32>(),
            partner in proptest::prelude::any::<u64>(),
            mine in offer(MAX_TRADE_ITEMS + 2),
            theirs in offer(MAX_TRADE_ITEMS),
            received in proptest::collection::vec(item_info(), 0..=MAX_TRADE_ITEMS + 1),
            reason in 0..7u8,
            gold in proptest::prelude::any::<u64>(),
            item in proptest::prelude::any::<u128>(),
        ) {
            let reasons = [
                TradeEndReason::Completed,
                TradeEndReason::Cancelled,
                TradeEndReason::PartnerLeft,
                TradeEndReason::Died,
                TradeEndReason::ZoneChange,
                TradeEndReason::PartyChanged,
                TradeEndReason::Failed,
            ];
            let offer_fits = mine.items.len() <= MAX_TRADE_ITEMS;
            let msgs = [
                (offer_fits, ServerMsg::Event(Event::Trade(TradeEvent::Updated {
                    trade,
                    partner,
                    partner_entity: trade ^ 1,
                    mine: mine.clone(),
                    theirs,
                    committing: gold % 2 == 0,
                }))),
                (offer_fits && received.len() <= MAX_TRADE_ITEMS, ServerMsg::Event(Event::Inventory(InventoryEvent::Traded {
                    trade,
                    given: mine.items.clone(),
                    received: received.clone(),
                }))),
            ];
            for (fits, msg) in msgs {
                let payload = postcard::to_allocvec(&msg).expect("postcard");
                match encode_frame(&msg) {
                    Ok(f) => {
                        proptest::prop_assert!(fits);
                        let back: ServerMsg = decode_payload(&f[FRAME_HEADER_LEN..]).expect("decode");
                        proptest::prop_assert_eq!(back, msg);
                    }
                    Err(e) => {
                        proptest::prop_assert!(!fits, "{e:?}");
                        let refused = decode_payload::<ServerMsg>(&payload).is_err();
                        proptest::prop_assert!(refused);
                    }
                }
            }
            let ended = ServerMsg::Event(Event::Trade(TradeEvent::Ended {
                trade,
                reason: reasons[usize::from(reason)],
            }));
            let f = encode_frame(&ended).expect("encode");
            proptest::prop_assert_eq!(decode_payload::<ServerMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), ended);
            for body in [
                Request::TradeOpen { with: trade },
                Request::TradeOffer { item },
                Request::TradeWithdraw { item },
                Request::TradeGold { gold },
                Request::TradeAccept,
                Request::TradeCancel,
            ] {
                let msg = ClientMsg::Request { id: trade, body };
                let f = encode_frame(&msg).expect("encode");
                proptest::prop_assert_eq!(decode_payload::<ClientMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), msg);
            }
        }
    }

    fn zone_rect() -> impl proptest::strategy::Strategy<Value = ZoneRect> {
        use proptest::prelude::*;
        any::<[i32; 4]>().prop_map(|[x0, y0, x1, y1]| ZoneRect { x0, y0, x1, y1 })
    }

    proptest::proptest! {
        /// `GetZone` and its answer round-trip; a name over `MAX_TEXT_LEN` is refused by
        /// the encoder and the decoder.
        #[test]
        fn zone_messages_round_trip_and_are_bounded(
            zone in proptest::prelude::any::<u16>(),
            name in "[a-zA-Z ]{0,300}",
            size in proptest::prelude::any::<(i32, i32, i32, i32)>(),
            town in proptest::prelude::any::<bool>(),
            walls in proptest::collection::vec(zone_rect(), 0..20),
            portals in proptest::collection::vec((zone_rect(), proptest::prelude::any::<u16>()), 0..6),
            id in proptest::prelude::any::<u32>(),
        ) {
            let ask = ClientMsg::Request { id, body: Request::GetZone };
            let f = encode_frame(&ask).expect("encode");
            proptest::prop_assert_eq!(decode_payload::<ClientMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), ask);
            let fits = name.len() <= MAX_TEXT_LEN;
            let msg = ServerMsg::Response {
                id,
                body: Ok(Response::Zone(ZoneView {
                    zone,
                    name,
                    width_mm: size.0,
                    height_mm: size.1,
                    spawn_mm: (size.2, size.3),
                    town,
                    walls,
                    portals: portals.into_iter().map(|(area, target)| ZonePortal { area, target }).collect(),
                })),
            };
            match encode_frame(&msg) {
                Ok(f) => {
                    proptest::prop_assert!(fits);
                    proptest::prop_assert_eq!(decode_payload::<ServerMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), msg);
                }
                Err(_) => {
                    proptest::prop_assert!(!fits);
                    let payload = postcard::to_allocvec(&msg).expect("postcard");
                    proptest::prop_assert!(decode_payload::<ServerMsg>(&payload).is_err());
                }
            }
        }
    }

    #[test]
    fn new_variants_are_appended() {
        // Codes other peers already know must not move.
        assert_eq!(
            postcard::to_allocvec(&RequestError::NotMember).expect("postcard"),
            vec![26]
        );
        assert_eq!(
            postcard::to_allocvec(&RequestError::OfferFull).expect("postcard"),
            vec![32]
        );
        assert_eq!(Request::KINDS.len(), 21);
        assert_eq!(
            postcard::to_allocvec(&Request::GetZone).expect("postcard"),
            vec![20]
        );
        assert_eq!(Request::KINDS[20], Request::GetZone.kind());
        assert_eq!(Request::KINDS[14], Request::TradeOpen { with: 0 }.kind());
    }
}
