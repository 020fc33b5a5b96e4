//! The exported C functions. Each body runs inside `call`, which catches panics (none
//! may unwind into foreign frames) and records the message of a failure for
//! `zh_last_error`.
//!
//! Handles: a `ZhClient` is a 64-bit id issued from a counter that never repeats (2^64 ids)
//! and looked up in a global registry on every call. A freed or never-issued id is not in
//! the registry, so it is reported as `ZH_ERR_INVALID_HANDLE` without touching any memory:
//! there is no pointer to a freed object anywhere, and no ABA when memory is reused.

// The C ABI needs `unsafe`: `#[no_mangle]` exports and reads/writes through pointers that
// foreign code passes in. Every such access goes through the small helpers at the end of
// this file, each with its `// SAFETY:` note; the rest of the crate has no `unsafe`.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use zonehost_client::Trust;
use zonehost_protocol::datagram::{InputCmd, BUTTONS_KNOWN, MOVE_AXIS_MAX};
use zonehost_protocol::message::{Request, MAX_TOKEN_LEN};
use zonehost_protocol::token::MAX_PLAYER_NAME_LEN;

use crate::client::{Client, Settings};
use crate::error::{self, FfiError};
use crate::types::*;

/// A client handle: an opaque id, 0 is never a valid handle.
pub type ZhClient = u64;

/// Longest accepted server address, TLS name or client name, in bytes.
const MAX_NAME_LEN: usize = 256;
/// Longest accepted certificate, in bytes.
const MAX_CERT_LEN: usize = 64 * 1024;

/// Every live client by handle.
#[derive(Debug)]
struct Registry {
    next: u64,
    clients: BTreeMap<u64, Arc<Mutex<Client>>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 1,
    clients: BTreeMap::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // Insert and remove leave the map consistent even if a panic interrupted a holder.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn invalid_handle(handle: ZhClient) -> FfiError {
    FfiError::new(
        ZH_ERR_INVALID_HANDLE,
        format!("client handle {handle} is not live (0, never issued, or freed)"),
    )
}

/// Runs `f` on the client `handle` with its lock held.
fn with_client<T>(
    handle: ZhClient,
    f: impl FnOnce(&mut Client) -> Result<T, FfiError>,
) -> Result<T, FfiError> {
    let client = registry()
        .clients
        .get(&handle)
        .cloned()
        .ok_or_else(|| invalid_handle(handle))?;
    let mut guard = client.lock().map_err(|_| {
        FfiError::new(
            ZH_ERR_INTERNAL,
            "the client failed internally in an earlier call; free it",
        )
    })?;
    f(&mut guard)
}

/// Runs an exported function's body: no panic crosses the boundary, failures are recorded.
fn call(f: impl FnOnce() -> Result<(), FfiError>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ZH_OK,
        Ok(Err(e)) => error::record(&e),
        Err(_) => error::record(&FfiError::new(
            ZH_ERR_INTERNAL,
            "internal error (a panic) in the zonehost library",
        )),
    }
}

// ---- library --------------------------------------------------------------------------------

/// The library version, a static NUL-terminated string (never free it).
#[no_mangle]
pub extern "C" fn zh_version() -> *const c_char {
    static VERSION: &CStr = c"zonehost_ffi 0.1.0 (protocol 1)";
    VERSION.as_ptr()
}

/// Copies the message of the last failed call made on the calling thread into `buf` (of
/// `buf_len` bytes), NUL-terminated, and writes its length without the NUL to `out_len`
/// when `out_len` is not NULL. Messages are per thread (like `errno`) and are kept until
/// the next failure on that thread; this function never changes it.
///
/// Returns `ZH_ERR_BUFFER_TOO_SMALL` when `buf_len` is less than the length plus one (`buf`
/// is then untouched and may be NULL: call with `buf_len` 0 to learn the length), and
/// `ZH_ERR_NULL_POINTER` when `buf` is NULL but `buf_len` is not 0.
///
/// # Safety
/// `buf` must point to `buf_len` writable bytes (or be NULL with `buf_len` 0); `out_len` must
/// be NULL or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn zh_last_error(
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        error::with_last_error(|message| {
            // SAFETY: the caller passes NULL or a writable size_t.
            unsafe { write_optional(out_len, message.len()) };
            if buf.is_null() && buf_len != 0 {
                return ZH_ERR_NULL_POINTER;
            }
            if buf_len < message.len() + 1 {
                return ZH_ERR_BUFFER_TOO_SMALL;
            }
            // SAFETY: `buf` is not NULL and has `buf_len` > message.len() writable bytes; the
            // message is our own CString, which cannot overlap the caller's buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), message.len());
                buf.add(message.len()).write(0);
            }
            ZH_OK
        })
    }))
    .unwrap_or(ZH_ERR_INTERNAL)
}

// ---- lifecycle ------------------------------------------------------------------------------

/// Creates a client from `config` (copied; the caller keeps ownership of every pointer in
/// it) and writes its handle to `out_client`. Starts the client's network thread
/// ("zonehost-net") and binds its UDP socket; does not connect (see `zh_connect`).
///
/// # Safety
/// `config` must point to a valid `ZhConfig` whose non-NULL strings are NUL-terminated and
/// whose `cert_der` has `cert_der_len` readable bytes; `out_client` must point to a writable
/// `ZhClient`.
#[no_mangle]
pub unsafe extern "C" fn zh_client_create(
    config: *const ZhConfig,
    out_client: *mut ZhClient,
) -> i32 {
    call(|| {
        check_out(out_client, "out_client")?;
        // SAFETY: the caller passes a valid ZhConfig or NULL.
        let config = unsafe { read_ref(config, "config") }?;
        // SAFETY (all four): the caller passes NUL-terminated strings or NULL.
        let address = unsafe { text(config.server_address, "server_address", MAX_NAME_LEN) }?
            .ok_or_else(|| null("config.server_address"))?;
        let server_name = unsafe { text(config.server_name, "server_name", MAX_NAME_LEN) }?
            .unwrap_or("localhost");
        let token = unsafe { text(config.token, "token", MAX_TOKEN_LEN) }?
            .ok_or_else(|| null("config.token"))?;
        let client_name = unsafe { text(config.client_name, "client_name", MAX_NAME_LEN) }?
            .unwrap_or("zonehost-ffi");
        // SAFETY: the caller passes NULL or cert_der_len readable bytes.
        let cert = unsafe {
            bytes(
                config.cert_der,
                config.cert_der_len,
                "cert_der",
                MAX_CERT_LEN,
            )
        }?;
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let fingerprint =
            unsafe { text(config.cert_fingerprint, "cert_fingerprint", MAX_NAME_LEN) }?;
        let trust =
            match (cert, fingerprint) {
                (Some(der), None) if !der.is_empty() => Trust::Certificate(der.to_vec().into()),
                (None, Some(fp)) => Trust::parse_fingerprint(fp)
                    .map_err(|e| FfiError::new(ZH_ERR_INVALID_ARGUMENT, e.to_string()))?,
                _ => return Err(FfiError::new(
                    ZH_ERR_INVALID_ARGUMENT,
                    "set exactly one of config.cert_der (non-empty) and config.cert_fingerprint",
                )),
            };
        if !address.contains(':') {
            return Err(FfiError::new(
                ZH_ERR_INVALID_ARGUMENT,
                format!("server_address {address:?}: want host:port"),
            ));
        }
        let ipv6 = address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.is_ipv6());
        let client = Client::new(
            Settings {
                address: address.to_owned(),
                server_name: server_name.to_owned(),
                token: token.to_owned(),
                client_name: client_name.to_owned(),
                trust,
            },
            ipv6,
        )?;
        let handle = {
            let mut reg = registry();
            let handle = reg.next;
            reg.next += 1;
            reg.clients.insert(handle, Arc::new(Mutex::new(client)));
            handle
        };
        // SAFETY: checked non-NULL above; the caller passes a writable ZhClient.
        unsafe { write_out(out_client, handle) };
        Ok(())
    })
}

/// Frees the client: closes its connection at once if it is open (call `zh_close` first
/// and poll until `ZH_EVENT_DISCONNECTED` for a graceful goodbye), stops and joins its
/// network thread (at most about a second), and invalidates the handle and every pointer
/// the client returned. Any later call with the handle returns `ZH_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn zh_client_free(client: ZhClient) -> i32 {
    call(|| {
        let removed = registry().clients.remove(&client);
        match removed {
            // Dropping the last reference joins the network thread.
            Some(c) => {
                drop(c);
                Ok(())
            }
            None => Err(invalid_handle(client)),
        }
    })
}

/// Starts connecting and authenticating; returns at once. Progress is reported by
/// `zh_state` and `zh_poll` (`ZH_EVENT_WELCOME`, or `ZH_EVENT_REJECTED` /
/// `ZH_EVENT_DISCONNECTED`). Valid once per client.
#[no_mangle]
pub extern "C" fn zh_connect(client: ZhClient) -> i32 {
    call(|| with_client(client, |c| c.connect()))
}

/// Writes the client's `ZH_STATE_*` to `out_state`.
///
/// # Safety
/// `out_state` must point to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn zh_state(client: ZhClient, out_state: *mut u32) -> i32 {
    call(|| {
        check_out(out_state, "out_state")?;
        let state = with_client(client, |c| Ok(c.state()))?;
        // SAFETY: checked non-NULL; the caller passes a writable uint32_t.
        unsafe { write_out(out_state, state) };
        Ok(())
    })
}

/// Says goodbye and closes the connection (or abandons a connect in progress); returns at
/// once. `zh_poll` returns `ZH_EVENT_DISCONNECTED` when the connection has ended (within
/// about a second: the server's acknowledgement of the goodbye is awaited that long). Every
/// later send returns `ZH_ERR_CLOSED`, and so does a second `zh_close`. Invalidates the
/// pointers of the current event.
#[no_mangle]
pub extern "C" fn zh_close(client: ZhClient) -> i32 {
    call(|| with_client(client, |c| c.close()))
}

/// Writes the client's counters to `out_stats`.
///
/// # Safety
/// `out_stats` must point to a writable `ZhStats`.
#[no_mangle]
pub unsafe extern "C" fn zh_stats(client: ZhClient, out_stats: *mut ZhStats) -> i32 {
    call(|| {
        check_out(out_stats, "out_stats")?;
        let stats = with_client(client, |c| Ok(c.stats()))?;
        // SAFETY: checked non-NULL; the caller passes a writable ZhStats.
        unsafe { write_out(out_stats, stats) };
        Ok(())
    })
}

/// Copies the session's resume token (from the last welcome; empty before it) into `buf`,
/// NUL-terminated, and its length without the NUL to `out_len` (when not NULL). Returns
/// `ZH_ERR_BUFFER_TOO_SMALL` (buffer untouched) when `buf_len` is less than the length plus
/// one. A new client created with this token as its token resumes the session within the
/// server's grace period.
///
/// # Safety
/// `buf` must point to `buf_len` writable bytes (or be NULL with `buf_len` 0); `out_len` must
/// be NULL or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn zh_resume_token(
    client: ZhClient,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    call(|| {
        let token = with_client(client, |c| Ok(c.resume_token().clone()))?;
        // SAFETY: the caller's buffer contract, passed on.
        unsafe { copy_text(token.as_bytes(), buf, buf_len, out_len) }
    })
}

// ---- sending --------------------------------------------------------------------------------

/// Sends one input: movement `move_x`, `move_y` in thousandths of full speed
/// (-`ZH_MOVE_AXIS_MAX`..=`ZH_MOVE_AXIS_MAX`) and `buttons` (`ZH_BUTTON_*` bits). Call once
/// per frame (the server simulates at 60 Hz); the datagram also repeats the previous few
/// inputs against loss. Writes the input's sequence to `out_seq` when it is not NULL; a
/// later `ZH_EVENT_INPUT_ACKED` reports it with its latency. Requires `ZH_STATE_ACTIVE`.
///
/// # Safety
/// `out_seq` must be NULL or point to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn zh_send_input(
    client: ZhClient,
    move_x: i16,
    move_y: i16,
    buttons: u16,
    out_seq: *mut u32,
) -> i32 {
    call(|| {
        let cmd = input_cmd(ZhInput {
            move_x,
            move_y,
            buttons,
        })?;
        let seq = with_client(client, |c| c.send_input(cmd))?;
        // SAFETY: the caller passes NULL or a writable uint32_t.
        unsafe { write_optional(out_seq, seq) };
        Ok(())
    })
}

/// Sends `count` new inputs (1..=`ZH_MAX_INPUTS_PER_DATAGRAM`, oldest first) in one
/// datagram, with earlier ones repeated against loss: for a game that samples its input
/// every frame (the server simulates at 60 Hz) and sends fewer datagrams, e.g. 2 inputs
/// 30 times a second (SPEC.md §4.2). Each input gets its own sequence; the newest one's is
/// written to `out_seq` when it is not NULL, and a later `ZH_EVENT_INPUT_ACKED` reports
/// it with its latency. Nothing is sent if any input is invalid. Requires
/// `ZH_STATE_ACTIVE`.
///
/// # Safety
/// `inputs` must be NULL or point to `count` readable `ZhInput`s; `out_seq` must be NULL or
/// point to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn zh_send_inputs(
    client: ZhClient,
    inputs: *const ZhInput,
    count: u32,
    out_seq: *mut u32,
) -> i32 {
    call(|| {
        if inputs.is_null() {
            return Err(null("inputs"));
        }
        if !(1..=ZH_MAX_INPUTS_PER_DATAGRAM).contains(&count) {
            return Err(FfiError::new(
                ZH_ERR_INVALID_ARGUMENT,
                format!("{count} inputs: 1..={ZH_MAX_INPUTS_PER_DATAGRAM} per datagram"),
            ));
        }
        let mut cmds = [InputCmd::default(); ZH_MAX_INPUTS_PER_DATAGRAM as usize];
        for (i, cmd) in cmds[..count as usize].iter_mut().enumerate() {
            // SAFETY: non-NULL, and `count` readable inputs per the contract (any alignment).
            let input = unsafe { inputs.add(i).read_unaligned() };
            *cmd = input_cmd(input)?;
        }
        let seq = with_client(client, |c| c.send_inputs(&cmds[..count as usize]))?;
        // SAFETY: the caller passes NULL or a writable uint32_t.
        unsafe { write_optional(out_seq, seq) };
        Ok(())
    })
}

/// A checked command: axes within ±`MOVE_AXIS_MAX`, known buttons only.
fn input_cmd(input: ZhInput) -> Result<InputCmd, FfiError> {
    let ZhInput {
        move_x,
        move_y,
        buttons,
    } = input;
    let axis = -MOVE_AXIS_MAX..=MOVE_AXIS_MAX;
    if !axis.contains(&move_x) || !axis.contains(&move_y) {
        return Err(FfiError::new(
            ZH_ERR_INVALID_ARGUMENT,
            format!("movement ({move_x}, {move_y}) outside -{MOVE_AXIS_MAX}..={MOVE_AXIS_MAX}"),
        ));
    }
    if buttons & !BUTTONS_KNOWN != 0 {
        return Err(FfiError::new(
            ZH_ERR_INVALID_ARGUMENT,
            format!("unknown button bits {:#x}", buttons & !BUTTONS_KNOWN),
        ));
    }
    Ok(InputCmd::new(move_x, move_y, buttons))
}

/// Sends `request` and writes its id to `out_id` (when not NULL).
///
/// # Safety
/// `out_id` must be NULL or point to a writable `uint32_t`.
unsafe fn request(client: ZhClient, request: Request, out_id: *mut u32) -> i32 {
    call(|| {
        let id = with_client(client, |c| c.request(request))?;
        // SAFETY: per this function's contract.
        unsafe { write_optional(out_id, id) };
        Ok(())
    })
}

/// Reads a player name argument.
///
/// # Safety
/// `player` must be NULL or NUL-terminated.
unsafe fn player_name(player: *const c_char) -> Result<String, FfiError> {
    // SAFETY: passed on from the caller.
    unsafe { text(player, "player", MAX_PLAYER_NAME_LEN) }?
        .map(str::to_owned)
        .ok_or_else(|| null("player"))
}

/// Requests `Ping`; answered by `ZH_RESPONSE_PONG` echoing `client_time_us`.
///
/// Every `zh_request_*` function: requires `ZH_STATE_ACTIVE`; writes the request id to
/// `out_id` when it is not NULL; the answer is a `ZH_EVENT_RESPONSE` with that id.
///
/// # Safety
/// `out_id` must be NULL or point to a writable `uint32_t` (the same for every
/// `zh_request_*` function).
#[no_mangle]
pub unsafe extern "C" fn zh_request_ping(
    client: ZhClient,
    client_time_us: u64,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::Ping { client_time_us }, out_id)
}

/// Requests an attack on monster `target`.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_attack(client: ZhClient, target: u32, out_id: *mut u32) -> i32 {
    request(client, Request::Attack { target }, out_id)
}

/// Requests picking up the ground item entity `ground`.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_pick_up(
    client: ZhClient,
    ground: u32,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::PickUp { ground }, out_id)
}

/// Requests equipping bag item `item`.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_equip(
    client: ZhClient,
    item: ZhItemId,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::Equip { item: item.into() }, out_id)
}

/// Requests moving the item worn in `slot` to the bag.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_unequip(client: ZhClient, slot: u8, out_id: *mut u32) -> i32 {
    request(client, Request::Unequip { slot }, out_id)
}

/// Requests dropping bag item `item` at the player's feet (`ZH_GAME_DROPPED` gives the
/// ground id).
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_drop(
    client: ZhClient,
    item: ZhItemId,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::Drop { item: item.into() }, out_id)
}

/// Requests using consumable `item` (a potion heals).
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_use_item(
    client: ZhClient,
    item: ZhItemId,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::UseItem { item: item.into() }, out_id)
}

/// Requests taking the portal the player stands in.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_enter_zone(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::EnterZone, out_id)
}

/// Requests the full inventory (`ZH_RESPONSE_INVENTORY`).
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_get_inventory(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::GetInventory, out_id)
}

/// Requests the current zone's layout (`ZH_RESPONSE_ZONE`).
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_get_zone(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::GetZone, out_id)
}

/// Asks for at most `hz` snapshots per second on this connection (0: the server's rate);
/// answered by `ZH_RESPONSE_SNAPSHOT_RATE` with the rate granted, a whole fraction of the
/// server's (SPEC.md §6.2). It holds for this connection: a client created to resume a
/// session asks again.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_snapshot_rate(
    client: ZhClient,
    hz: u16,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::SnapshotRate { hz }, out_id)
}

/// Invites `player` (NUL-terminated name) into your party.
///
/// # Safety
/// `player` must be NULL or NUL-terminated; `out_id` as for `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_party_invite(
    client: ZhClient,
    player: *const c_char,
    out_id: *mut u32,
) -> i32 {
    // SAFETY: the caller passes NULL or a NUL-terminated string.
    match catch_unwind(|| unsafe { player_name(player) }) {
        Ok(Ok(player)) => request(client, Request::PartyInvite { player }, out_id),
        Ok(Err(e)) => error::record(&e),
        Err(_) => ZH_ERR_INTERNAL,
    }
}

/// Accepts the pending party invite.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_party_accept(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::PartyAccept, out_id)
}

/// Declines the pending party invite.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_party_decline(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::PartyDecline, out_id)
}

/// Leaves your party.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_party_leave(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::PartyLeave, out_id)
}

/// Removes `player` (NUL-terminated name) from your party (leader only).
///
/// # Safety
/// `player` must be NULL or NUL-terminated; `out_id` as for `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_party_kick(
    client: ZhClient,
    player: *const c_char,
    out_id: *mut u32,
) -> i32 {
    // SAFETY: the caller passes NULL or a NUL-terminated string.
    match catch_unwind(|| unsafe { player_name(player) }) {
        Ok(Ok(player)) => request(client, Request::PartyKick { player }, out_id),
        Ok(Err(e)) => error::record(&e),
        Err(_) => ZH_ERR_INTERNAL,
    }
}

/// Opens a trade with the party member whose entity is `with`.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_trade_open(
    client: ZhClient,
    with: u32,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::TradeOpen { with }, out_id)
}

/// Puts bag item `item` on offer.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_trade_offer(
    client: ZhClient,
    item: ZhItemId,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::TradeOffer { item: item.into() }, out_id)
}

/// Takes `item` off the offer.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_trade_withdraw(
    client: ZhClient,
    item: ZhItemId,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::TradeWithdraw { item: item.into() }, out_id)
}

/// Sets the gold on offer.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_trade_gold(
    client: ZhClient,
    gold: u64,
    out_id: *mut u32,
) -> i32 {
    request(client, Request::TradeGold { gold }, out_id)
}

/// Accepts both offers as they stand.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_trade_accept(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::TradeAccept, out_id)
}

/// Cancels the trade.
///
/// # Safety
/// See `zh_request_ping`.
#[no_mangle]
pub unsafe extern "C" fn zh_request_trade_cancel(client: ZhClient, out_id: *mut u32) -> i32 {
    request(client, Request::TradeCancel, out_id)
}

// ---- receiving ------------------------------------------------------------------------------

/// Writes the next event to `out_event` (`kind` `ZH_EVENT_NONE` when nothing is waiting)
/// and returns at once: call it in a loop each frame until `ZH_EVENT_NONE`. Invalidates
/// everything the previous event pointed to (strings, snapshot entities, items, names).
///
/// # Safety
/// `out_event` must point to a writable `ZhEvent`.
#[no_mangle]
pub unsafe extern "C" fn zh_poll(client: ZhClient, out_event: *mut ZhEvent) -> i32 {
    call(|| {
        check_out(out_event, "out_event")?;
        let event = with_client(client, |c| Ok(c.poll()))?;
        // SAFETY: checked non-NULL; the caller passes a writable ZhEvent.
        unsafe { write_out(out_event, event) };
        Ok(())
    })
}

/// Points `out_entities` at the entities the player sees as of the current snapshot (the
/// last event returned by `zh_poll`, if it was `ZH_EVENT_SNAPSHOT`): the newest complete
/// tick rebuilt from the server's deltas, sorted by id, in the wire layout. Writes the
/// count to `out_count`. The array is owned by the library, read-only, valid until the
/// next `zh_poll`, `zh_close` or `zh_client_free` on this client.
/// Read an element with `zh_wire_entity_read`. `ZH_ERR_NOT_FOUND` when there is no current
/// snapshot.
///
/// # Safety
/// `out_entities` and `out_count` must point to writable locations of their types.
#[no_mangle]
pub unsafe extern "C" fn zh_snapshot_entities(
    client: ZhClient,
    out_entities: *mut *const ZhWireEntity,
    out_count: *mut usize,
) -> i32 {
    call(|| {
        check_out(out_entities, "out_entities")?;
        check_out(out_count, "out_count")?;
        let (ptr, count) = with_client(client, |c| {
            let (bytes, count) = c
                .snapshot_entities()
                .ok_or_else(|| FfiError::new(ZH_ERR_NOT_FOUND, "no current snapshot"))?;
            // ZhWireEntity is 22 bytes with alignment 1, so any byte address holds one.
            Ok((bytes.as_ptr().cast::<ZhWireEntity>(), count))
        })?;
        // SAFETY: both checked non-NULL; the caller passes writable locations.
        unsafe {
            write_out(out_entities, ptr);
            write_out(out_count, count);
        }
        Ok(())
    })
}

/// Decodes entity `index` of the current snapshot into `out_entity` (bounds-checked;
/// `ZH_ERR_NOT_FOUND` past the end or without a current snapshot).
///
/// # Safety
/// `out_entity` must point to a writable `ZhEntity`.
#[no_mangle]
pub unsafe extern "C" fn zh_snapshot_entity(
    client: ZhClient,
    index: usize,
    out_entity: *mut ZhEntity,
) -> i32 {
    call(|| {
        check_out(out_entity, "out_entity")?;
        let entity = with_client(client, |c| c.snapshot_entity(index))?;
        // SAFETY: checked non-NULL; the caller passes a writable ZhEntity.
        unsafe { write_out(out_entity, entity) };
        Ok(())
    })
}

/// Decodes one wire entity (an element of the array from `zh_snapshot_entities`) into
/// `out_entity`.
///
/// # Safety
/// `entity` must point to a `ZhWireEntity` still valid (see `zh_snapshot_entities`);
/// `out_entity` must point to a writable `ZhEntity`.
#[no_mangle]
pub unsafe extern "C" fn zh_wire_entity_read(
    entity: *const ZhWireEntity,
    out_entity: *mut ZhEntity,
) -> i32 {
    call(|| {
        check_out(out_entity, "out_entity")?;
        // SAFETY: the caller passes NULL or a live ZhWireEntity (alignment 1).
        let wire = unsafe { read_ref(entity, "entity") }?;
        let decoded = ZhWireEntity::decode(&wire.bytes);
        // SAFETY: checked non-NULL; the caller passes a writable ZhEntity.
        unsafe { write_out(out_entity, decoded) };
        Ok(())
    })
}

/// Copies item `index` of the current event (an inventory response, `ZH_GAME_GRANTED`,
/// `ZH_GAME_TRADED`, `ZH_GAME_TRADE_UPDATED`; `item_count` says how many) into `out_item`.
///
/// # Safety
/// `out_item` must point to a writable `ZhItem`.
#[no_mangle]
pub unsafe extern "C" fn zh_event_item(
    client: ZhClient,
    index: usize,
    out_item: *mut ZhItem,
) -> i32 {
    call(|| {
        check_out(out_item, "out_item")?;
        let item = with_client(client, |c| c.event_item(index))?;
        // SAFETY: checked non-NULL; the caller passes a writable ZhItem.
        unsafe { write_out(out_item, item) };
        Ok(())
    })
}

/// Copies rectangle `index` of the current event (a `ZH_RESPONSE_ZONE`: `wall_count` walls,
/// then `portal_count` portals) into `out_rect`.
///
/// # Safety
/// `out_rect` must point to a writable `ZhZoneRect`.
#[no_mangle]
pub unsafe extern "C" fn zh_event_rect(
    client: ZhClient,
    index: usize,
    out_rect: *mut ZhZoneRect,
) -> i32 {
    call(|| {
        check_out(out_rect, "out_rect")?;
        let rect = with_client(client, |c| c.event_rect(index))?;
        // SAFETY: checked non-NULL; the caller passes a writable ZhZoneRect.
        unsafe { write_out(out_rect, rect) };
        Ok(())
    })
}

/// Points `out_name` at name `index` of the current event (`ZH_GAME_PARTY_MEMBERS`;
/// `name_count` says how many); the string is valid until the next `zh_poll`.
///
/// # Safety
/// `out_name` must point to a writable `ZhStr`.
#[no_mangle]
pub unsafe extern "C" fn zh_event_name(
    client: ZhClient,
    index: usize,
    out_name: *mut ZhStr,
) -> i32 {
    call(|| {
        check_out(out_name, "out_name")?;
        let name = with_client(client, |c| c.event_name(index))?;
        // SAFETY: checked non-NULL; the caller passes a writable ZhStr.
        unsafe { write_out(out_name, name) };
        Ok(())
    })
}

// ---- pointer helpers: the only places that touch foreign memory ------------------------------

fn null(what: &str) -> FfiError {
    FfiError::new(ZH_ERR_NULL_POINTER, format!("{what} is NULL"))
}

fn check_out<T>(p: *mut T, what: &str) -> Result<(), FfiError> {
    if p.is_null() {
        return Err(null(what));
    }
    Ok(())
}

/// Writes `value` through `p` (checked non-NULL by the caller).
///
/// # Safety
/// `p` must be non-NULL and valid for a write of `T` (any alignment).
unsafe fn write_out<T>(p: *mut T, value: T) {
    // SAFETY: per this function's contract.
    unsafe { p.write_unaligned(value) }
}

/// Writes `value` through `p` unless it is NULL.
///
/// # Safety
/// `p` must be NULL or valid for a write of `T` (any alignment).
unsafe fn write_optional<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: non-NULL, and valid per this function's contract.
        unsafe { p.write_unaligned(value) }
    }
}

/// Borrows `*p`, or fails with `ZH_ERR_NULL_POINTER`.
///
/// # Safety
/// `p` must be NULL or point to a valid, aligned `T` that outlives the borrow.
unsafe fn read_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, FfiError> {
    // SAFETY: per this function's contract.
    unsafe { p.as_ref() }.ok_or_else(|| null(what))
}

/// Reads a NUL-terminated UTF-8 string of at most `max` bytes; `None` for NULL.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives the borrow.
unsafe fn text<'a>(p: *const c_char, what: &str, max: usize) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    let c = unsafe { CStr::from_ptr(p) };
    if c.to_bytes().len() > max {
        return Err(FfiError::new(
            ZH_ERR_INVALID_ARGUMENT,
            format!("{what} is longer than {max} bytes"),
        ));
    }
    c.to_str()
        .map(Some)
        .map_err(|_| FfiError::new(ZH_ERR_INVALID_ARGUMENT, format!("{what} is not UTF-8")))
}

/// Borrows `len` bytes at `p` (at most `max`); `None` for NULL.
///
/// # Safety
/// `p` must be NULL or point to `len` readable bytes that outlive the borrow.
unsafe fn bytes<'a>(
    p: *const u8,
    len: usize,
    what: &str,
    max: usize,
) -> Result<Option<&'a [u8]>, FfiError> {
    if p.is_null() {
        return Ok(None);
    }
    if len > max {
        return Err(FfiError::new(
            ZH_ERR_INVALID_ARGUMENT,
            format!("{what} is longer than {max} bytes"),
        ));
    }
    // SAFETY: non-NULL with `len` readable bytes per this function's contract.
    Ok(Some(unsafe { std::slice::from_raw_parts(p, len) }))
}

/// Copies `text` with a NUL into the caller's buffer (see `zh_resume_token`).
///
/// # Safety
/// `buf` must be NULL or point to `buf_len` writable bytes; `out_len` NULL or writable.
unsafe fn copy_text(
    text: &[u8],
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> Result<(), FfiError> {
    // SAFETY: per this function's contract.
    unsafe { write_optional(out_len, text.len()) };
    if buf.is_null() && buf_len != 0 {
        return Err(null("buf"));
    }
    if buf_len < text.len() + 1 {
        return Err(FfiError::new(
            ZH_ERR_BUFFER_TOO_SMALL,
            format!("buffer of {buf_len} bytes; {} needed", text.len() + 1),
        ));
    }
    // SAFETY: `buf` has `buf_len` > text.len() writable bytes and cannot overlap our own
    // string.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}
