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
    /// Ask for fewer snapshots on this connection: at most `hz` per second (0: the
    /// server's rate). The server grants a whole fraction of its rate
    /// ([`snapshot_divisor`]) and answers [`Response::SnapshotRate`]. Holds until the
    /// connection ends (a resumed session starts at the server's rate again). Added in v2.
    SnapshotRate {
        /// Snapshots per second wanted at most; 0 for the server's rate.
        hz: u16,
    },
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
            Request::SnapshotRate { .. } => "snapshot_rate",
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
        "snapshot_rate",
    ];
}

/// Most a client may divide the server's snapshot rate by ([`Request::SnapshotRate`]):
/// the server keeps 32 snapshot ticks of history (`snapshot::BASELINE_HISTORY`), so a
/// client sent every 16th snapshot still has room for 16 intervals of round trip before
/// its baseline is forgotten and it gets full states.
pub const MAX_SNAPSHOT_DIVISOR: u16 = 16;

/// The divisor `k` a server sending `server_hz` snapshots per second grants a client
/// asking for at most `asked_hz` ([`Request::SnapshotRate`]; SPEC.md §6.2): the client
/// gets every `k`-th snapshot, `server_hz / k` per second. `k` is the smallest divisor
/// of `server_hz` with `server_hz / k <= asked_hz`, at most [`MAX_SNAPSHOT_DIVISOR`]
/// (the largest divisor within that bound when no rate is low enough); 1 when `asked_hz`
/// is 0 or not below `server_hz`.
pub fn snapshot_divisor(server_hz: u16, asked_hz: u16) -> u16 {
    if asked_hz == 0 || asked_hz >= server_hz {
        return 1;
    }
    let divisors = || (1..=MAX_SNAPSHOT_DIVISOR.min(server_hz)).filter(|k| server_hz % k == 0);
    divisors()
        .find(|k| server_hz / k <= asked_hz)
        .or_else(|| divisors().next_back())
        .unwrap_or(1)
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
    /// Answer to [`Request::SnapshotRate`]: snapshots per second this connection now
    /// receives. Added in v2.
    SnapshotRate {
        /// Snapshots per second granted.
        hz: u16,
    },
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
mod tests;
