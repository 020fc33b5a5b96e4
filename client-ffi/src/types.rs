//! The C-visible types and constants (`#[repr(C)]`, plain integers; no Rust enum crosses
//! the boundary, so foreign code can never hand the library an invalid discriminant).

use std::ffi::c_char;
use std::ptr;

use bytes::{BufMut, Bytes, BytesMut};
use zonehost_protocol::snapshot::EntityState;

// ---- result codes ---------------------------------------------------------------------------

/// Success.
pub const ZH_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const ZH_ERR_NULL_POINTER: i32 = -1;
/// The client handle is 0, was never issued, or was freed by `zh_client_free`.
pub const ZH_ERR_INVALID_HANDLE: i32 = -2;
/// An argument is invalid: text that is not UTF-8 or too long, an unparsable address or
/// fingerprint, no or two ways of trusting the server, an out-of-range value.
pub const ZH_ERR_INVALID_ARGUMENT: i32 = -3;
/// The caller's buffer is too small; the needed size was written to the length output.
pub const ZH_ERR_BUFFER_TOO_SMALL: i32 = -4;
/// The client was closed (`zh_close`) or its connection ended: create a new client.
pub const ZH_ERR_CLOSED: i32 = -5;
/// Not valid in the client's current state (an input before `ZH_EVENT_WELCOME`, a second
/// `zh_connect`).
pub const ZH_ERR_WRONG_STATE: i32 = -6;
/// The queue to the network thread is full; try again next frame.
pub const ZH_ERR_WOULD_BLOCK: i32 = -7;
/// No such element: no current snapshot, or an index past the end.
pub const ZH_ERR_NOT_FOUND: i32 = -8;
/// The operating system refused a resource (thread, socket, runtime).
pub const ZH_ERR_IO: i32 = -9;
/// An internal error (a bug in the library, caught before it crossed the boundary); the
/// client may be unusable: free it.
pub const ZH_ERR_INTERNAL: i32 = -10;

// ---- client states --------------------------------------------------------------------------

/// Created; `zh_connect` not called yet.
pub const ZH_STATE_IDLE: u32 = 0;
/// QUIC and TLS handshake (or following a redirect).
pub const ZH_STATE_CONNECTING: u32 = 1;
/// Connected; `Hello` sent, waiting for `Welcome`.
pub const ZH_STATE_AUTHENTICATING: u32 = 2;
/// Welcomed: inputs and requests may be sent.
pub const ZH_STATE_ACTIVE: u32 = 3;
/// `zh_close` was called; waiting for the connection to end.
pub const ZH_STATE_CLOSING: u32 = 4;
/// The connection ended (`ZH_EVENT_DISCONNECTED` was or will be returned by `zh_poll`).
pub const ZH_STATE_CLOSED: u32 = 5;

// ---- event kinds ----------------------------------------------------------------------------

/// No event is waiting: the rest of the frame belongs to the game.
pub const ZH_EVENT_NONE: u32 = 0;
/// The server accepted the session: see `ZhEvent.welcome`.
pub const ZH_EVENT_WELCOME: u32 = 1;
/// A snapshot datagram: see `ZhEvent.snapshot` and the `zh_snapshot_*` accessors.
pub const ZH_EVENT_SNAPSHOT: u32 = 2;
/// An input was reported applied by a snapshot: see `ZhEvent.input_acked`.
pub const ZH_EVENT_INPUT_ACKED: u32 = 3;
/// The answer to a request: see `ZhEvent.response`.
pub const ZH_EVENT_RESPONSE: u32 = 4;
/// A reliable world event: see `ZhEvent.game`.
pub const ZH_EVENT_GAME: u32 = 5;
/// The server sent the player to another server; the library is following (a
/// `ZH_EVENT_WELCOME` from the new server comes next): see `ZhEvent.redirect`.
pub const ZH_EVENT_REDIRECTED: u32 = 6;
/// The server refused the session: see `ZhEvent.rejected`; `ZH_EVENT_DISCONNECTED` follows.
pub const ZH_EVENT_REJECTED: u32 = 7;
/// The server is going away: see `ZhEvent.goaway`; `ZH_EVENT_DISCONNECTED` follows.
pub const ZH_EVENT_GOAWAY: u32 = 8;
/// The connection ended, for good: see `ZhEvent.disconnected`. The last event of a client.
pub const ZH_EVENT_DISCONNECTED: u32 = 9;

// ---- response kinds -------------------------------------------------------------------------

/// The request failed: `ZhResponse.error` holds the code.
pub const ZH_RESPONSE_ERROR: u32 = 0;
/// The request was applied; its effects arrive as `ZH_EVENT_GAME` events.
pub const ZH_RESPONSE_DONE: u32 = 1;
/// Answer to a ping: `pong_client_time_us`, `pong_server_tick`.
pub const ZH_RESPONSE_PONG: u32 = 2;
/// Answer to `zh_request_get_inventory`: `gold`, `level`, `xp`, and `item_count` items
/// (bag first, then worn ones) read with `zh_event_item`.
pub const ZH_RESPONSE_INVENTORY: u32 = 3;
/// Answer to `zh_request_get_zone`: `zone`, `zone_name`, `width_mm`, `height_mm`,
/// `spawn_x_mm`, `spawn_y_mm`, `town`, and `wall_count` walls then `portal_count` portals
/// read with `zh_event_rect`.
pub const ZH_RESPONSE_ZONE: u32 = 4;
/// Answer to `zh_request_snapshot_rate`: `snapshot_rate_hz`, the snapshots per second this
/// connection now receives.
pub const ZH_RESPONSE_SNAPSHOT_RATE: u32 = 5;

// ---- game event kinds (ZhGameEvent.kind) ----------------------------------------------------

/// Server notice: `text`.
pub const ZH_GAME_NOTICE: u32 = 1;
/// An attack hit: `entity` attacker, `target`, `amount` physical, `amount2` fire, `flag`
/// critical, `value` target hit points left.
pub const ZH_GAME_COMBAT_HIT: u32 = 2;
/// An attack missed: `entity` attacker, `target`.
pub const ZH_GAME_COMBAT_MISS: u32 = 3;
/// A monster died: `entity` killer, `target` victim, `value` monster kind.
pub const ZH_GAME_COMBAT_KILLED: u32 = 4;
/// An item appeared on the ground: `entity` ground id, `item`, `x_mm`, `y_mm`, `flag` 1 when
/// it has an owner, `amount` the owner's player id.
pub const ZH_GAME_ITEM_DROPPED: u32 = 5;
/// A ground item expired: `entity` ground id.
pub const ZH_GAME_ITEM_EXPIRED: u32 = 6;
/// XP gained: `amount`.
pub const ZH_GAME_XP_GAINED: u32 = 7;
/// New level: `value`.
pub const ZH_GAME_LEVEL_UP: u32 = 8;
/// You died: `entity` killer, `amount` gold lost, `amount2` XP lost.
pub const ZH_GAME_DIED: u32 = 9;
/// You came back to life.
pub const ZH_GAME_RESPAWNED: u32 = 10;
/// Gold changed: `delta`, `amount` new total.
pub const ZH_GAME_GOLD: u32 = 11;
/// A ground item moved into the bag: `item`, `entity` the ground id it was.
pub const ZH_GAME_PICKED_UP: u32 = 12;
/// A bag item was equipped: `item.id`, `value` slot, `flag` 1 when `other_item` (the item
/// that went back to the bag) is set.
pub const ZH_GAME_EQUIPPED: u32 = 13;
/// A worn item moved to the bag: `item.id`, `value` slot.
pub const ZH_GAME_UNEQUIPPED: u32 = 14;
/// A bag item was dropped: `item.id`, `entity` the new ground id.
pub const ZH_GAME_DROPPED: u32 = 15;
/// A consumable was used: `item.id`, `amount` hit points restored.
pub const ZH_GAME_CONSUMED: u32 = 16;
/// Items granted (starter kit): `item_count` item ids read with `zh_event_item`.
pub const ZH_GAME_GRANTED: u32 = 17;
/// A dropped item came back to the bag: `item`.
pub const ZH_GAME_RETURNED: u32 = 18;
/// A trade ended with an exchange: `value` trade id, `amount` items given, `item_count`
/// items received read with `zh_event_item`.
pub const ZH_GAME_TRADED: u32 = 19;
/// You were invited into a party: `text` inviter.
pub const ZH_GAME_PARTY_INVITED: u32 = 20;
/// Your invite was declined: `text` invitee.
pub const ZH_GAME_PARTY_DECLINED: u32 = 21;
/// Party membership: `value` party id, `text` leader, `name_count` member names read with
/// `zh_event_name`. No leader and no members: the party dissolved.
pub const ZH_GAME_PARTY_MEMBERS: u32 = 22;
/// You left the party: `flag` 1 when kicked.
pub const ZH_GAME_PARTY_LEFT: u32 = 23;
/// You are in another zone instance: `value` zone, `amount` instance, `entity` your new
/// entity id.
pub const ZH_GAME_ZONE_ENTERED: u32 = 24;
/// A trade opened or changed: `value` trade id, `amount` partner player id, `entity` partner
/// entity, `delta` your gold offered, `amount2` their gold offered, `flag` bit 0 you
/// accepted, bit 1 they accepted, bit 2 committing; `item_count` offered items (yours, then
/// theirs: `ZhItem.slot` is 0 for yours and 1 for theirs) read with `zh_event_item`.
pub const ZH_GAME_TRADE_UPDATED: u32 = 25;
/// A trade ended: `value` trade id, `amount` reason code (SPEC.md: 0 completed, 1
/// cancelled, 2 partner left, 3 died, 4 zone change, 5 party changed, 6 failed).
pub const ZH_GAME_TRADE_ENDED: u32 = 26;

// ---- other constants ------------------------------------------------------------------------

/// Size in bytes of one entity in a snapshot (`ZhWireEntity`).
pub const ZH_WIRE_ENTITY_SIZE: usize = 22;
/// `ZhDisconnect.close_code` when the connection did not end with an application close
/// code (a timeout, a failed connect, a local error): see `reason`.
pub const ZH_NO_CLOSE_CODE: u64 = u64::MAX;
/// Largest absolute value of a movement axis of `zh_send_input` (full speed).
pub const ZH_MOVE_AXIS_MAX: i16 = 1000;
/// Button bit: attack in the movement direction.
pub const ZH_BUTTON_ATTACK: u16 = 1;

// ---- structs --------------------------------------------------------------------------------

/// How to reach and trust the server; read by `zh_client_create`, which copies what it needs
/// (the caller may free every pointer once it returns).
///
/// Exactly one of `cert_der` (with `cert_der_len`) and `cert_fingerprint` must be set.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ZhConfig {
    /// Server address `host:port` (NUL-terminated UTF-8; required). A host name is resolved
    /// by the network thread when connecting.
    pub server_address: *const c_char,
    /// TLS server name (NUL-terminated UTF-8); NULL means "localhost".
    pub server_name: *const c_char,
    /// Signed authentication token (NUL-terminated; required).
    pub token: *const c_char,
    /// Client name and version for the server's logs (NUL-terminated); NULL means
    /// "zonehost-ffi".
    pub client_name: *const c_char,
    /// The server's DER certificate, trusted exactly (pinned); NULL when
    /// `cert_fingerprint` is used.
    pub cert_der: *const u8,
    /// Length of `cert_der` in bytes.
    pub cert_der_len: usize,
    /// SHA-256 fingerprint of the server certificate as 64 hex digits (`:` allowed,
    /// NUL-terminated); NULL when `cert_der` is used.
    pub cert_fingerprint: *const c_char,
}

/// A 128-bit item id as two 64-bit halves.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZhItemId {
    /// Low 64 bits.
    pub lo: u64,
    /// High 64 bits.
    pub hi: u64,
}

impl From<u128> for ZhItemId {
    fn from(id: u128) -> Self {
        Self {
            lo: id as u64,
            hi: (id >> 64) as u64,
        }
    }
}

impl From<ZhItemId> for u128 {
    fn from(id: ZhItemId) -> Self {
        (u128::from(id.hi) << 64) | u128::from(id.lo)
    }
}

/// One movement command for `zh_send_inputs`: the same values as `zh_send_input`'s.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZhInput {
    /// Movement along x, thousandths of full speed (-`ZH_MOVE_AXIS_MAX`..=`ZH_MOVE_AXIS_MAX`).
    pub move_x: i16,
    /// Movement along y, thousandths of full speed.
    pub move_y: i16,
    /// `ZH_BUTTON_*` bits.
    pub buttons: u16,
}

/// Most new commands one `zh_send_inputs` call (one datagram) carries.
pub const ZH_MAX_INPUTS_PER_DATAGRAM: u32 = 8;

/// One item (affixes are not exposed).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZhItem {
    /// Unique id.
    pub id: ZhItemId,
    /// Base type (game/RULES.md; 40 is a minor healing potion).
    pub base: u16,
    /// 0 common, 1 magic, 2 rare, 3 unique.
    pub rarity: u8,
    /// Item level.
    pub level: u8,
    /// Number of affixes.
    pub affix_count: u32,
    /// Where it is: -1 in the bag, else the equipment slot code (inventory responses); for
    /// trade offers 0 yours, 1 theirs.
    pub slot: i32,
}

/// A borrowed, NUL-terminated UTF-8 string owned by the library: valid until the next
/// `zh_poll`, `zh_close` or `zh_client_free` on the same client. `ptr` is NULL (and `len` 0)
/// when the field is unused.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ZhStr {
    /// The text, NUL-terminated.
    pub ptr: *const c_char,
    /// Its length in bytes, without the NUL.
    pub len: usize,
}

impl Default for ZhStr {
    fn default() -> Self {
        Self {
            ptr: ptr::null(),
            len: 0,
        }
    }
}

/// `ZH_EVENT_WELCOME`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhWelcome {
    /// Stable player id.
    pub player_id: u64,
    /// The player's entity id in its zone instance.
    pub entity_id: u32,
    /// Zone template id.
    pub zone: u32,
    /// Zone instance id.
    pub instance: u32,
    /// Simulation ticks per second.
    pub tick_rate_hz: u32,
    /// Snapshots per second.
    pub snapshot_rate_hz: u32,
    /// Server tick at the welcome.
    pub server_tick: u32,
    /// Server wall clock, microseconds since the Unix epoch.
    pub server_time_us: u64,
    /// Movement speed limit, millimetres per second.
    pub max_speed_mms: u32,
    /// Highest input sequence the server has applied (0 for a new session).
    pub last_input: u32,
    /// Redirects followed before this welcome.
    pub redirects: u32,
}

/// `ZH_EVENT_SNAPSHOT`: the header of the snapshot datagram. The entities the player sees
/// (rebuilt from this and earlier deltas: the newest complete tick) are read with
/// `zh_snapshot_entities` / `zh_snapshot_entity` until the next poll.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhSnapshot {
    /// Simulation tick.
    pub tick: u32,
    /// Zone instance id.
    pub instance: u32,
    /// Zone template id.
    pub zone: u32,
    /// Part index of this datagram (large snapshots are split).
    pub part: u32,
    /// Number of parts of this tick.
    pub parts: u32,
    /// Number of entities the player sees (the newest complete tick, after this part).
    pub entity_count: u32,
    /// 1 when `last_input` is set.
    pub has_last_input: u8,
    /// 1 when older than a tick already received.
    pub stale: u8,
    /// 1 for a late snapshot of the instance the player left (not applied; its entities
    /// are still readable).
    pub other_instance: u8,
    /// The last input sequence the server applied for this player.
    pub last_input: u32,
}

/// `ZH_EVENT_INPUT_ACKED`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhInputAck {
    /// Input sequence (as returned by `zh_send_input`).
    pub seq: u32,
    /// Action latency: from `zh_send_input` to the arrival of the first snapshot that
    /// reported it applied, in microseconds.
    pub latency_us: u64,
}

/// `ZH_EVENT_RESPONSE`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhResponse {
    /// The request id returned by the `zh_request_*` call.
    pub id: u32,
    /// `ZH_RESPONSE_*`.
    pub kind: u32,
    /// For `ZH_RESPONSE_ERROR`: the request error code (SPEC.md §6: 0 not allowed, 1 rate
    /// limited, 4 no such item, 5 too far, 14 no effect, ...); `error_text` names it.
    pub error: u32,
    /// For `ZH_RESPONSE_ERROR`: the error's description.
    pub error_text: ZhStr,
    /// From the request to the response, microseconds.
    pub latency_us: u64,
    /// `ZH_RESPONSE_PONG`: the request's client time.
    pub pong_client_time_us: u64,
    /// `ZH_RESPONSE_PONG`: server tick when applied.
    pub pong_server_tick: u32,
    /// `ZH_RESPONSE_INVENTORY`: gold.
    pub gold: u64,
    /// `ZH_RESPONSE_INVENTORY`: XP toward the next level.
    pub xp: u64,
    /// `ZH_RESPONSE_INVENTORY`: character level.
    pub level: u32,
    /// `ZH_RESPONSE_INVENTORY`: bag plus worn items, read with `zh_event_item`.
    pub item_count: u32,
    /// `ZH_RESPONSE_ZONE`: zone template id.
    pub zone: u32,
    /// `ZH_RESPONSE_ZONE`: display name.
    pub zone_name: ZhStr,
    /// `ZH_RESPONSE_ZONE`: width, millimetres (positions run 0..=width).
    pub width_mm: i32,
    /// `ZH_RESPONSE_ZONE`: height, millimetres.
    pub height_mm: i32,
    /// `ZH_RESPONSE_ZONE`: where arrivals appear, x.
    pub spawn_x_mm: i32,
    /// `ZH_RESPONSE_ZONE`: where arrivals appear, y.
    pub spawn_y_mm: i32,
    /// `ZH_RESPONSE_ZONE`: 1 for a town (no monsters).
    pub town: u8,
    /// `ZH_RESPONSE_ZONE`: impassable rectangles (`zh_event_rect` 0..wall_count).
    pub wall_count: u32,
    /// `ZH_RESPONSE_ZONE`: portals (`zh_event_rect` wall_count..wall_count+portal_count).
    pub portal_count: u32,
    /// `ZH_RESPONSE_SNAPSHOT_RATE`: snapshots per second granted.
    pub snapshot_rate_hz: u32,
}

/// A rectangle of a zone, millimetres, half-open (`x0 <= x < x1`, `y0 <= y < y1`): a wall,
/// or a portal's area.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZhZoneRect {
    /// Left edge (inclusive).
    pub x0: i32,
    /// Top edge (inclusive).
    pub y0: i32,
    /// Right edge (exclusive).
    pub x1: i32,
    /// Bottom edge (exclusive).
    pub y1: i32,
    /// -1 for a wall; for a portal, the zone it leads to.
    pub target: i32,
}

/// `ZH_EVENT_GAME`: one reliable world event; which fields mean what depends on `kind`
/// (see each `ZH_GAME_*` constant); unused fields are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhGameEvent {
    /// `ZH_GAME_*`.
    pub kind: u32,
    /// An entity id (attacker, killer, ground item, partner, new own entity).
    pub entity: u32,
    /// A target entity id.
    pub target: u32,
    /// A small value (slot, level, zone, hit points, trade or party id, monster kind).
    pub value: u32,
    /// A flag or bit set.
    pub flag: u32,
    /// An amount (damage, XP, gold, instance id, player id).
    pub amount: u64,
    /// A second amount.
    pub amount2: u64,
    /// A signed change.
    pub delta: i64,
    /// Position x, millimetres.
    pub x_mm: i32,
    /// Position y, millimetres.
    pub y_mm: i32,
    /// The item concerned.
    pub item: ZhItem,
    /// A second item id (the one swapped out by an equip).
    pub other_item: ZhItemId,
    /// Items of the event, read with `zh_event_item`.
    pub item_count: u32,
    /// Names of the event, read with `zh_event_name`.
    pub name_count: u32,
    /// Text (notice, a player name).
    pub text: ZhStr,
}

/// `ZH_EVENT_REDIRECTED`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhRedirect {
    /// The server the library is now connecting to (`host:port`).
    pub address: ZhStr,
    /// 1 when the redirect came after a welcome (a handover), 0 during login.
    pub after_welcome: u8,
}

/// `ZH_EVENT_REJECTED`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhRejected {
    /// Reject code (SPEC.md: 1 invalid token, 2 expired, 4 already connected, 5 full, ...).
    pub code: u32,
    /// Its stable name (`invalid_token`, ...).
    pub code_name: ZhStr,
    /// The server's explanation.
    pub reason: ZhStr,
}

/// `ZH_EVENT_GOAWAY`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhGoaway {
    /// Why.
    pub reason: ZhStr,
    /// How long to wait before reconnecting, milliseconds.
    pub reconnect_after_ms: u32,
}

/// `ZH_EVENT_DISCONNECTED`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhDisconnect {
    /// QUIC application close code (SPEC.md §7: 0 normal, 1 rejected, 2 protocol
    /// violation, 3 slow reader, 4 taken over, 5 shutdown, 6 abuse, 7 internal), or
    /// `ZH_NO_CLOSE_CODE`.
    pub close_code: u64,
    /// 1 when this side ended the connection (`zh_close`, a failed connect, a local error).
    pub local: u8,
    /// Why, in words.
    pub reason: ZhStr,
}

/// One event returned by `zh_poll`: `kind` says which member is meaningful; the others are
/// zero. Strings and the data read through `zh_snapshot_*`, `zh_event_item` and
/// `zh_event_name` stay valid until the next `zh_poll`, `zh_close` or `zh_client_free` on
/// the same client.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhEvent {
    /// `ZH_EVENT_*`.
    pub kind: u32,
    /// `ZH_EVENT_WELCOME`.
    pub welcome: ZhWelcome,
    /// `ZH_EVENT_SNAPSHOT`.
    pub snapshot: ZhSnapshot,
    /// `ZH_EVENT_INPUT_ACKED`.
    pub input_acked: ZhInputAck,
    /// `ZH_EVENT_RESPONSE`.
    pub response: ZhResponse,
    /// `ZH_EVENT_GAME`.
    pub game: ZhGameEvent,
    /// `ZH_EVENT_REDIRECTED`.
    pub redirect: ZhRedirect,
    /// `ZH_EVENT_REJECTED`.
    pub rejected: ZhRejected,
    /// `ZH_EVENT_GOAWAY`.
    pub goaway: ZhGoaway,
    /// `ZH_EVENT_DISCONNECTED`.
    pub disconnected: ZhDisconnect,
}

/// One entity of a snapshot as it is on the wire: 22 bytes, alignment 1, little-endian:
/// id u32 @0, x_mm i32 @4, y_mm i32 @8, vx_cms i16 @12, vy_cms i16 @14, hp u16 @16,
/// max_hp u16 @18, kind u8 @20, flags u8 @21. Decode it with `zh_wire_entity_read`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ZhWireEntity {
    /// The raw bytes.
    pub bytes: [u8; ZH_WIRE_ENTITY_SIZE],
}

/// One entity, decoded.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZhEntity {
    /// Entity id, unique within the instance.
    pub id: u32,
    /// Position x, millimetres.
    pub x_mm: i32,
    /// Position y, millimetres.
    pub y_mm: i32,
    /// Velocity x, centimetres per second.
    pub vx_cms: i16,
    /// Velocity y, centimetres per second.
    pub vy_cms: i16,
    /// Hit points.
    pub hp: u16,
    /// Maximum hit points.
    pub max_hp: u16,
    /// 1 player, 2 monster, 3 ground item.
    pub kind: u8,
    /// Kind-specific flags.
    pub flags: u8,
}

impl ZhWireEntity {
    /// Decodes the little-endian fields.
    pub(crate) fn decode(bytes: &[u8; ZH_WIRE_ENTITY_SIZE]) -> ZhEntity {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        ZhEntity {
            id: u32_at(0),
            x_mm: u32_at(4) as i32,
            y_mm: u32_at(8) as i32,
            vx_cms: u16_at(12) as i16,
            vy_cms: u16_at(14) as i16,
            hp: u16_at(16),
            max_hp: u16_at(18),
            kind: bytes[20],
            flags: bytes[21],
        }
    }
}

/// Counters of one client, from `zh_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ZhStats {
    /// Inputs sent.
    pub inputs_sent: u64,
    /// Inputs acknowledged (`ZH_EVENT_INPUT_ACKED` events).
    pub inputs_acked: u64,
    /// Sum of their latencies, microseconds.
    pub ack_latency_sum_us: u64,
    /// Snapshot datagrams accepted.
    pub snapshots: u64,
    /// Datagrams refused by the session (malformed, or not for this session).
    pub bad_datagrams: u64,
    /// Snapshot datagrams dropped because the caller did not poll fast enough.
    pub dropped_datagrams: u64,
    /// Requests sent.
    pub requests_sent: u64,
}

/// Entities in the wire layout of [`ZhWireEntity`] (the archived layout of the protocol's
/// `EntityState`: 22 bytes each, little-endian, no padding).
pub(crate) fn wire_entities(entities: &[EntityState]) -> Bytes {
    let mut buf = BytesMut::with_capacity(entities.len() * ZH_WIRE_ENTITY_SIZE);
    for e in entities {
        buf.put_u32_le(e.id);
        buf.put_i32_le(e.x_mm);
        buf.put_i32_le(e.y_mm);
        buf.put_i16_le(e.vx_cms);
        buf.put_i16_le(e.vy_cms);
        buf.put_u16_le(e.hp);
        buf.put_u16_le(e.max_hp);
        buf.put_u8(e.kind);
        buf.put_u8(e.flags);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonehost_protocol::snapshot::{
        decode_snapshot, diff, encode_snapshot, kind, Changes, EntityState, SnapshotMeta,
    };

    #[test]
    fn item_ids_round_trip() {
        for id in [0u128, 1, u128::from(u64::MAX) + 7, u128::MAX] {
            assert_eq!(u128::from(ZhItemId::from(id)), id);
        }
    }

    /// The bytes `zh_snapshot_entities` points at ([`wire_entities`] of the view) are the
    /// archived layout of the protocol's entities, and decode, at the documented 22-byte
    /// stride, to the entities that were encoded.
    #[test]
    fn wire_entities_of_a_real_snapshot_decode_to_the_originals() {
        let entities: Vec<EntityState> = (0..5)
            .map(|i| EntityState {
                id: 1000 + i,
                x_mm: -70_000 + i as i32,
                y_mm: 123_456,
                vx_cms: -600,
                vy_cms: 3,
                hp: 90,
                max_hp: 100,
                kind: kind::MONSTER,
                flags: 7,
            })
            .collect();
        let mut out = Vec::new();
        let mut changes = Changes::default();
        diff(&[], &entities, &mut changes);
        let meta = SnapshotMeta {
            tick: 9,
            baseline: 0,
            instance: 1,
            zone: 2,
        };
        encode_snapshot(meta, &[], &changes, &mut out).expect("encode");
        let (_, body) = decode_snapshot(&out[0]).expect("decode");
        let slice = body.spawns.as_slice();
        let offset = slice.as_ptr() as usize - out[0].as_ptr() as usize;
        let archived = &out[0][offset..offset + slice.len() * ZH_WIRE_ENTITY_SIZE];
        let raw = wire_entities(&entities);
        assert_eq!(
            &raw[..],
            archived,
            "the view's bytes are the archived layout"
        );
        let decoded: Vec<ZhEntity> = raw
            .chunks_exact(ZH_WIRE_ENTITY_SIZE)
            .map(|c| ZhWireEntity::decode(c.try_into().expect("22 bytes")))
            .collect();
        let want: Vec<ZhEntity> = entities
            .iter()
            .map(|e| ZhEntity {
                id: e.id,
                x_mm: e.x_mm,
                y_mm: e.y_mm,
                vx_cms: e.vx_cms,
                vy_cms: e.vy_cms,
                hp: e.hp,
                max_hp: e.max_hp,
                kind: e.kind,
                flags: e.flags,
            })
            .collect();
        assert_eq!(decoded, want);
    }
}
