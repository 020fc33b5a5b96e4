//! The store's domain types: player records and their fences, items and their operations,
//! leases, parties and invitations, mail, trades and server loads. Plain data shared by every
//! backend, the store worker and the server; no backend code.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The player record layout version written by this build (see [`super::record`], which
/// re-exports it; it lives here so that [`PlayerRecord::new`] needs no codec).
pub const RECORD_VERSION: u16 = 2;

/// A checkpoint fence: `(epoch, seq)`, ordered lexicographically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// Epoch of the writer (from its lease); a new writer has a greater epoch.
    pub epoch: u64,
    /// Checkpoint sequence within the epoch.
    pub seq: u64,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.epoch, self.seq)
    }
}

/// A player's durable record: what a checkpoint saves and a login loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerRecord {
    /// Stable id, `zonehost_protocol::token::player_id(name)`.
    pub player_id: u64,
    /// Player name.
    pub name: String,
    /// Record layout version. Saves always write the current layout
    /// ([`RECORD_VERSION`]) whatever this says; a loaded record reports the layout
    /// it was found in (older ones are migrated on load).
    pub schema_version: u32,
    /// Fence epoch (see [`Fence`]).
    pub epoch: u64,
    /// Fence sequence (see [`Fence`]).
    pub seq: u64,
    /// Zone template id.
    pub zone: u16,
    /// Position, millimetres.
    pub x_mm: i32,
    /// Position, millimetres.
    pub y_mm: i32,
    /// Character level.
    pub level: u32,
    /// Experience points.
    pub xp: u64,
    /// Gold (a plain value, never a counter: it is saved with the rest of the checkpoint).
    pub gold: u64,
    /// Opaque, versioned game state owned by the game crate (equipment slots, quests...).
    pub state: Vec<u8>,
    /// Wall-clock time of the checkpoint, Unix milliseconds.
    pub saved_at_ms: u64,
}

impl PlayerRecord {
    /// A fresh level-1 record at fence `(0, 0)` (any first save is greater).
    pub fn new(name: &str) -> Self {
        Self {
            player_id: zonehost_protocol::token::player_id(name),
            name: name.to_owned(),
            schema_version: u32::from(RECORD_VERSION),
            epoch: 0,
            seq: 0,
            zone: 1,
            x_mm: 0,
            y_mm: 0,
            level: 1,
            xp: 0,
            gold: 0,
            state: Vec::new(),
            saved_at_ms: 0,
        }
    }

    /// The record's fence.
    pub fn fence(&self) -> Fence {
        Fence {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// The result of saving one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaveOutcome {
    /// Written (durable when `save_players` returns).
    Saved {
        /// Player id.
        player_id: u64,
    },
    /// Refused: the stored fence is not smaller than the record's. Nothing was written.
    Stale {
        /// Player id.
        player_id: u64,
        /// The fence stored now (equal to the record's own fence when a retried save had
        /// already landed).
        stored: Fence,
    },
}

impl SaveOutcome {
    /// The player this outcome is about.
    pub fn player_id(&self) -> u64 {
        match *self {
            SaveOutcome::Saved { player_id } | SaveOutcome::Stale { player_id, .. } => player_id,
        }
    }
}

/// Who holds an item. Exactly one owner at a time; the item row says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Owner {
    /// A player's inventory (equipped or not: slots live in the player's game state).
    Player(u64),
    /// Lying on the ground of a zone instance. Ground items of an instance that no longer
    /// exists are swept with `Destroy { from: Ground { .. } }` (see [`Store::items_of`](crate::store::ItemStore::items_of)).
    Ground {
        /// Zone instance id.
        instance: u64,
    },
    /// In escrow of a trade in progress (see [`trade`](super::trade)): the trade's row decides whether
    /// it goes on to its recipient or back to its giver.
    Trade {
        /// Trade id.
        trade: u64,
    },
}

impl Owner {
    /// Text form used as a CQL column value and in dumps: `player:<id>`, `ground:<id>`,
    /// `trade:<id>`.
    pub fn to_key(&self) -> String {
        match self {
            Owner::Player(id) => format!("player:{id}"),
            Owner::Ground { instance } => format!("ground:{instance}"),
            Owner::Trade { trade } => format!("trade:{trade}"),
        }
    }

    /// Parses [`Owner::to_key`]'s form.
    pub fn from_key(key: &str) -> Option<Owner> {
        let (kind, id) = key.split_once(':')?;
        let id: u64 = id.parse().ok()?;
        match kind {
            "player" => Some(Owner::Player(id)),
            "ground" => Some(Owner::Ground { instance: id }),
            "trade" => Some(Owner::Trade { trade: id }),
            _ => None,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_key())
    }
}

/// What an item operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemOpKind {
    /// Creates the item (loot, quest reward). Refused if the id exists or ever existed.
    Create {
        /// First owner.
        owner: Owner,
        /// Opaque item data from the game crate (base type, affixes, ...).
        data: Vec<u8>,
    },
    /// Moves the item, only if its current owner is `from` (pick up, drop, trade).
    Transfer {
        /// Expected current owner.
        from: Owner,
        /// New owner.
        to: Owner,
    },
    /// Destroys the item, only if its current owner is `from` (use, sell, sweep).
    Destroy {
        /// Expected current owner.
        from: Owner,
    },
}

/// One exactly-once item operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOp {
    /// Unique id of the operation (random 128 bits); retries reuse it.
    pub op_id: u128,
    /// The item.
    pub item_id: u128,
    /// What to do.
    pub kind: ItemOpKind,
}

/// The outcome of an item operation. Refusals are outcomes, recorded and replayed like
/// successes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemOutcome {
    /// The item now exists, owned by `owner`.
    Created {
        /// Item id.
        item_id: u128,
        /// Owner.
        owner: Owner,
    },
    /// The item moved.
    Transferred {
        /// Item id.
        item_id: u128,
        /// Previous owner.
        from: Owner,
        /// New owner.
        to: Owner,
    },
    /// The item is gone.
    Destroyed {
        /// Item id.
        item_id: u128,
        /// Its last owner.
        from: Owner,
    },
    /// Refused: the item's owner is not the expected one (`None`: no such item, or destroyed).
    OwnerMismatch {
        /// Item id.
        item_id: u128,
        /// The owner at the time of the operation.
        actual: Option<Owner>,
    },
    /// Refused: `Create` of an id that exists or existed.
    AlreadyExists {
        /// Item id.
        item_id: u128,
    },
}

impl ItemOutcome {
    /// Whether the operation changed the item (not a refusal).
    pub fn applied(&self) -> bool {
        matches!(
            self,
            ItemOutcome::Created { .. }
                | ItemOutcome::Transferred { .. }
                | ItemOutcome::Destroyed { .. }
        )
    }
}

/// A live item as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Item id.
    pub item_id: u128,
    /// Current owner (`None` once destroyed: the tombstone keeps the id from being reused).
    pub owner: Option<Owner>,
    /// Opaque item data.
    pub data: Vec<u8>,
    /// The last operation that changed the item.
    pub last_op: u128,
}

/// A held lease on a named resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Resource name, e.g. `player:<id>` or `instance:<id>`.
    pub resource: String,
    /// Holder name (server id).
    pub holder: String,
    /// Fencing epoch: greater than every earlier holder's epoch of this resource.
    pub epoch: u64,
    /// Expiry, Unix milliseconds (exclusive: at `now_ms >= expires_at_ms` it is free).
    pub expires_at_ms: u64,
}

/// A party as the store keeps it: the truth of membership whichever servers its members
/// play on. Every write goes through [`Store::write_party`](crate::store::PartyStore::write_party), a compare-and-set on
/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyRecord {
    /// Party id (random, never reused).
    pub party_id: u64,
    /// The leader's player id (also in `members`).
    pub leader: u64,
    /// Members' player ids, in joining order. Empty: the party is disbanded (the write
    /// deletes it).
    pub members: Vec<u64>,
    /// Players invited and not yet answered.
    pub invites: Vec<u64>,
    /// Bumped by every write: the compare-and-set token.
    pub version: u64,
}

/// A pending party invitation (cluster mode): `invitee` is invited to `party_id` until
/// `expires_at_ms`. Kept in the store's invitation index, one per invitee (a newer
/// invitation replaces an older one), written by [`Store::write_party_invite`](crate::store::PartyStore::write_party_invite) with the
/// party itself; valid only while the party lists the invitee in
/// [`PartyRecord::invites`] and not in its members, and until it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The party the invitee is invited to.
    pub party_id: u64,
    /// The invited player.
    pub invitee: u64,
    /// Expiry, Unix milliseconds (exclusive: at `now_ms >= expires_at_ms` it is gone).
    pub expires_at_ms: u64,
}

/// A message to a server, queued in the store (its mailbox). Servers post to the server
/// whose lease holds a player, and poll their own mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Id: posting time (Unix ms) in the high 64 bits, random low bits: mail sorts by
    /// posting time.
    pub id: u128,
    /// Opaque body.
    pub body: Vec<u8>,
}

/// Where a trade stands in the store. Only `Open` may change, once, by a conditional
/// write ([`Store::decide_trade`](crate::store::TradeStore::decide_trade)): that single write is the trade's commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TradeState {
    /// Manifest written; items may be (partly) in escrow; nothing decided.
    Open,
    /// Decided: every escrowed item goes to its recipient, and the gold moves.
    Committed,
    /// Decided: every escrowed item goes back to its giver; no gold moves.
    Aborted,
}

impl TradeState {
    /// Text form (CQL column value): `open`, `committed`, `aborted`.
    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::Open => "open",
            TradeState::Committed => "committed",
            TradeState::Aborted => "aborted",
        }
    }

    /// Parses [`TradeState::as_str`]'s form.
    pub fn parse(text: &str) -> Option<TradeState> {
        match text {
            "open" => Some(TradeState::Open),
            "committed" => Some(TradeState::Committed),
            "aborted" => Some(TradeState::Aborted),
            _ => None,
        }
    }
}

/// One item changing hands in a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TradeLeg {
    /// Item id.
    pub item_id: u128,
    /// Giver (player id): the item's owner before the trade, and after an abort.
    pub from: u64,
    /// Recipient (player id): the item's owner after a commit.
    pub to: u64,
}

/// A trade's row: its manifest (written once, before any item moves) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    /// Unique trade id (also the escrow owner, [`Owner::Trade`]).
    pub trade_id: u64,
    /// The two players.
    pub players: [u64; 2],
    /// Items changing hands.
    pub legs: Vec<TradeLeg>,
    /// Gold given by `players[0]` and by `players[1]` (recorded for audit and recovery;
    /// the amounts themselves live in the players' checkpoints, see `trade` module docs).
    pub gold: [u64; 2],
    /// State (see [`TradeState`]).
    pub state: TradeState,
    /// Settled: every escrowed item has been delivered or returned.
    pub settled: bool,
    /// When the trade was opened, Unix milliseconds (recovery leaves young trades to
    /// their server).
    pub opened_at_ms: u64,
}

impl TradeRecord {
    /// Whether `other` describes the same trade (same manifest, whatever its state).
    pub fn same_manifest(&self, other: &TradeRecord) -> bool {
        self.trade_id == other.trade_id
            && self.players == other.players
            && self.legs == other.legs
            && self.gold == other.gold
            && self.opened_at_ms == other.opened_at_ms
    }
}

/// How a trade ended in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradeOutcome {
    /// Every item is with its recipient; the gold amounts apply.
    Committed,
    /// Every escrowed item is back with its giver; no gold moves.
    Aborted {
        /// Items whose escrow was refused, with their owner then (`None`: no such item or
        /// destroyed). Empty when the trade had been aborted by someone else (recovery).
        refused: Vec<(u128, Option<Owner>)>,
    },
}

/// A server's published load: one row of the `servers` table (cluster mode, see
/// [`crate::placement`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLoad {
    /// The server (`[store] server_id`).
    pub server_id: String,
    /// Players it owns (sessions in its sim workers).
    pub players: u32,
    /// Mean busy fraction of its sim workers over the last report interval, per mille.
    pub busy_permille: u32,
    /// It drains: send nobody there.
    pub draining: bool,
    /// When it measured this, Unix milliseconds.
    pub updated_at_ms: u64,
    /// The address clients reach it at (`[cluster] advertise`): how peers that do not list
    /// it in `[cluster.peers]` find it. `None`: it advertises none.
    pub address: Option<std::net::SocketAddr>,
}
