//! One client as the caller's thread sees it: the sans-IO [`ClientSession`] driven with the
//! bytes the network thread delivered, and the storage behind the pointers of the current
//! event. Everything here is safe Rust; `ffi.rs` turns it into C functions.

use std::collections::VecDeque;
use std::ffi::CString;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zonehost_client::{Trust, MAX_REDIRECTS};
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{
    close_code, Combat, Event, InventoryEvent, ItemInfo, PartyEvent, Request, Response, TradeEvent,
    ZoneRect,
};
use zonehost_protocol::session::SessionState;
use zonehost_protocol::snapshot::{decode_snapshot, Applied, ArchivedEntityState};
use zonehost_protocol::{ClientEvent, ClientSession};

use crate::cstr::cstring;
use crate::error::FfiError;
use crate::net::{Command, Net, NetEvent, SendError};
use crate::types::*;

// The entity pointer handed out by `zh_snapshot_entities` points into the rkyv archive: its
// layout must be the documented `ZhWireEntity` layout.
const _: () = {
    assert!(size_of::<ArchivedEntityState>() == ZH_WIRE_ENTITY_SIZE);
    assert!(align_of::<ArchivedEntityState>() == 1);
    assert!(std::mem::offset_of!(ArchivedEntityState, id) == 0);
    assert!(std::mem::offset_of!(ArchivedEntityState, x_mm) == 4);
    assert!(std::mem::offset_of!(ArchivedEntityState, y_mm) == 8);
    assert!(std::mem::offset_of!(ArchivedEntityState, vx_cms) == 12);
    assert!(std::mem::offset_of!(ArchivedEntityState, vy_cms) == 14);
    assert!(std::mem::offset_of!(ArchivedEntityState, hp) == 16);
    assert!(std::mem::offset_of!(ArchivedEntityState, max_hp) == 18);
    assert!(std::mem::offset_of!(ArchivedEntityState, kind) == 20);
    assert!(std::mem::offset_of!(ArchivedEntityState, flags) == 21);
};

/// Most network events one `zh_poll` call works through before it returns `ZH_EVENT_NONE`
/// (a bound on the time one call can take; the rest waits for the next call).
const MAX_NET_EVENTS_PER_POLL: usize = 4096;

/// What a client was created with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `host:port`.
    pub(crate) address: String,
    /// TLS server name.
    pub(crate) server_name: String,
    /// Authentication token.
    pub(crate) token: String,
    /// Name for the server's logs.
    pub(crate) client_name: String,
    /// Which certificate to accept.
    pub(crate) trust: Trust,
}

/// Where a client is; `ZH_STATE_*` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    Authenticating,
    Active,
    Closing,
    Closed,
}

/// A disconnect waiting to be returned by `poll`.
#[derive(Debug)]
struct Disconnect {
    code: Option<u64>,
    reason: String,
    local: bool,
}

/// The data the pointers of the current event point into.
#[derive(Debug, Default)]
struct Current {
    /// The entities of the current snapshot event: (bytes, offset, count).
    snapshot: Option<(Bytes, usize, usize)>,
    /// The session's view in the wire layout: (its newest complete tick, bytes).
    view: Option<(u32, Bytes)>,
    texts: Vec<CString>,
    items: Vec<ZhItem>,
    names: Vec<CString>,
    rects: Vec<ZhZoneRect>,
}

/// One client.
#[derive(Debug)]
pub(crate) struct Client {
    settings: Settings,
    net: Net,
    phase: Phase,
    session: ClientSession,
    /// Redirects followed since the last welcome.
    redirects: u32,
    /// Whether a welcome was seen (a later redirect is a handover).
    welcomed: bool,
    /// Disconnects to report, returned before session events (at most one in practice).
    local: VecDeque<Disconnect>,
    current: Current,
    resume_token: CString,
    stats: ZhStats,
}

impl Client {
    /// Starts the network thread; no connection yet.
    pub(crate) fn new(settings: Settings, ipv6: bool) -> Result<Self, FfiError> {
        let net = Net::start(settings.trust.clone(), ipv6).map_err(FfiError::io)?;
        let session = ClientSession::new(settings.token.clone(), settings.client_name.clone());
        Ok(Self {
            settings,
            net,
            phase: Phase::Idle,
            session,
            redirects: 0,
            welcomed: false,
            local: VecDeque::new(),
            current: Current::default(),
            resume_token: CString::default(),
            stats: ZhStats::default(),
        })
    }

    /// `ZH_STATE_*`.
    pub(crate) fn state(&self) -> u32 {
        match self.phase {
            Phase::Idle => ZH_STATE_IDLE,
            Phase::Connecting => ZH_STATE_CONNECTING,
            Phase::Authenticating => ZH_STATE_AUTHENTICATING,
            Phase::Active => ZH_STATE_ACTIVE,
            Phase::Closing => ZH_STATE_CLOSING,
            Phase::Closed => ZH_STATE_CLOSED,
        }
    }

    /// Counters.
    pub(crate) fn stats(&self) -> ZhStats {
        ZhStats {
            dropped_datagrams: self.net.dropped_datagrams(),
            ..self.stats
        }
    }

    /// The resume token of the current session (empty before the welcome).
    pub(crate) fn resume_token(&self) -> &CString {
        &self.resume_token
    }

    fn closed_error(&self) -> FfiError {
        FfiError::new(ZH_ERR_CLOSED, "the client is closed; create a new one")
    }

    /// Starts connecting (non-blocking).
    pub(crate) fn connect(&mut self) -> Result<(), FfiError> {
        match self.phase {
            Phase::Idle => {}
            Phase::Closing | Phase::Closed => return Err(self.closed_error()),
            _ => {
                return Err(FfiError::new(
                    ZH_ERR_WRONG_STATE,
                    "zh_connect was called already",
                ))
            }
        }
        let mut permits = self.net.reserve(1).map_err(queue_error)?;
        permits.send(Command::Connect {
            address: self.settings.address.clone(),
            server_name: self.settings.server_name.clone(),
        });
        self.phase = Phase::Connecting;
        Ok(())
    }

    fn require_active(&self) -> Result<(), FfiError> {
        match self.phase {
            Phase::Active => Ok(()),
            Phase::Closing | Phase::Closed => Err(self.closed_error()),
            _ => Err(FfiError::new(
                ZH_ERR_WRONG_STATE,
                "not welcomed yet: wait for ZH_EVENT_WELCOME",
            )),
        }
    }

    /// Sends one input; returns its sequence.
    pub(crate) fn send_input(&mut self, cmd: InputCmd) -> Result<u32, FfiError> {
        self.send_inputs(&[cmd])
    }

    /// Sends several new inputs (oldest first, 1..=8) in one datagram; returns the
    /// newest one's sequence.
    pub(crate) fn send_inputs(&mut self, cmds: &[InputCmd]) -> Result<u32, FfiError> {
        self.require_active()?;
        let mut permits = self.net.reserve(1).map_err(queue_error)?;
        let datagram = self
            .session
            .send_inputs(cmds, Instant::now())
            .map_err(|e| FfiError::new(ZH_ERR_WRONG_STATE, e.to_string()))?;
        permits.send(Command::Datagram(datagram));
        self.stats.inputs_sent += 1;
        Ok(self.session.next_input_seq().wrapping_sub(1))
    }

    /// Sends one request; returns its id.
    pub(crate) fn request(&mut self, request: Request) -> Result<u32, FfiError> {
        self.require_active()?;
        let mut permits = self.net.reserve(1).map_err(queue_error)?;
        let (id, frame) = self
            .session
            .request(request, Instant::now())
            .map_err(|e| FfiError::new(ZH_ERR_INVALID_ARGUMENT, e.to_string()))?;
        permits.send(Command::Stream(frame));
        self.stats.requests_sent += 1;
        Ok(id)
    }

    /// Says `Bye` and closes (non-blocking); `ZH_EVENT_DISCONNECTED` follows.
    pub(crate) fn close(&mut self) -> Result<(), FfiError> {
        self.current = Current::default();
        match self.phase {
            Phase::Closing | Phase::Closed => Err(self.closed_error()),
            Phase::Idle => {
                self.phase = Phase::Closed;
                self.push_disconnect(None, "closed before connecting", true);
                Ok(())
            }
            Phase::Connecting | Phase::Authenticating | Phase::Active => {
                let mut permits = self.net.reserve(2).map_err(queue_error)?;
                let active = self.phase == Phase::Active;
                if active {
                    if let Ok(bye) = self.session.bye() {
                        permits.send(Command::Stream(bye));
                    }
                }
                permits.send(Command::Close {
                    code: close_code::NORMAL,
                    reason: "bye",
                    graceful: active,
                });
                self.phase = Phase::Closing;
                Ok(())
            }
        }
    }

    /// The next event (`kind` `ZH_EVENT_NONE` when there is none); invalidates the previous
    /// event's data.
    pub(crate) fn poll(&mut self) -> ZhEvent {
        self.current = Current::default();
        for _ in 0..MAX_NET_EVENTS_PER_POLL {
            if let Some(d) = self.local.pop_front() {
                return self.disconnect_event(d);
            }
            if let Some(event) = self.session.poll_event() {
                if let Some(event) = self.session_event(event) {
                    return event;
                }
                continue;
            }
            let Some(net) = self.net.poll() else {
                break;
            };
            if let Some(event) = self.net_event(net) {
                return event;
            }
        }
        ZhEvent::default()
    }

    /// The current snapshot's entity array: (datagram, byte offset, count).
    pub(crate) fn snapshot_entities(&self) -> Option<(&[u8], usize)> {
        self.current
            .snapshot
            .as_ref()
            .and_then(|(bytes, offset, count)| {
                let len = count.checked_mul(ZH_WIRE_ENTITY_SIZE)?;
                Some((bytes.get(*offset..offset.checked_add(len)?)?, *count))
            })
    }

    /// Entity `index` of the current snapshot.
    pub(crate) fn snapshot_entity(&self, index: usize) -> Result<ZhEntity, FfiError> {
        let (bytes, count) = self.snapshot_entities().ok_or_else(no_snapshot)?;
        if index >= count {
            return Err(FfiError::new(
                ZH_ERR_NOT_FOUND,
                format!("entity {index} of a snapshot of {count}"),
            ));
        }
        let start = index * ZH_WIRE_ENTITY_SIZE;
        let raw: &[u8; ZH_WIRE_ENTITY_SIZE] = bytes
            .get(start..start + ZH_WIRE_ENTITY_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(no_snapshot)?;
        Ok(ZhWireEntity::decode(raw))
    }

    /// Item `index` of the current event.
    pub(crate) fn event_item(&self, index: usize) -> Result<ZhItem, FfiError> {
        self.current.items.get(index).copied().ok_or_else(|| {
            FfiError::new(
                ZH_ERR_NOT_FOUND,
                format!("item {index} of an event with {}", self.current.items.len()),
            )
        })
    }

    /// Rectangle `index` of the current event (a zone response's walls, then portals).
    pub(crate) fn event_rect(&self, index: usize) -> Result<ZhZoneRect, FfiError> {
        self.current.rects.get(index).copied().ok_or_else(|| {
            FfiError::new(
                ZH_ERR_NOT_FOUND,
                format!(
                    "rectangle {index} of an event with {}",
                    self.current.rects.len()
                ),
            )
        })
    }

    /// Name `index` of the current event.
    pub(crate) fn event_name(&self, index: usize) -> Result<ZhStr, FfiError> {
        self.current
            .names
            .get(index)
            .map(|c| ZhStr {
                ptr: c.as_ptr(),
                len: c.as_bytes().len(),
            })
            .ok_or_else(|| {
                FfiError::new(
                    ZH_ERR_NOT_FOUND,
                    format!("name {index} of an event with {}", self.current.names.len()),
                )
            })
    }

    fn push_disconnect(&mut self, code: Option<u64>, reason: &str, local: bool) {
        self.local.push_back(Disconnect {
            code,
            reason: reason.to_owned(),
            local,
        });
    }

    fn disconnect_event(&mut self, d: Disconnect) -> ZhEvent {
        ZhEvent {
            kind: ZH_EVENT_DISCONNECTED,
            disconnected: ZhDisconnect {
                close_code: d.code.unwrap_or(ZH_NO_CLOSE_CODE),
                local: u8::from(d.local),
                reason: self.text(&d.reason),
            },
            ..ZhEvent::default()
        }
    }

    /// Keeps `text` until the next poll and returns a pointer to it.
    fn text(&mut self, text: &str) -> ZhStr {
        let c = cstring(text);
        let s = ZhStr {
            ptr: c.as_ptr(),
            len: c.as_bytes().len(),
        };
        // Moving a CString into the Vec does not move its heap buffer.
        self.current.texts.push(c);
        s
    }

    fn net_event(&mut self, event: NetEvent) -> Option<ZhEvent> {
        match event {
            NetEvent::Connected => {
                if self.phase != Phase::Connecting {
                    return None;
                }
                let sent = match self.session.hello() {
                    Ok(hello) => match self.net.reserve(1) {
                        Ok(mut permits) => {
                            permits.send(Command::Stream(hello));
                            Ok(())
                        }
                        Err(e) => Err(queue_error(e).message().to_owned()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                match sent {
                    Ok(()) => self.phase = Phase::Authenticating,
                    Err(e) => self.fail("cannot send Hello", &e),
                }
                None
            }
            NetEvent::ConnectFailed(reason) => {
                if matches!(self.phase, Phase::Connecting | Phase::Closing) {
                    self.phase = Phase::Closed;
                    self.push_disconnect(None, &reason, true);
                }
                None
            }
            NetEvent::Stream(bytes) => {
                // Bytes of a connection left behind by a redirect are not for this session.
                if !matches!(self.phase, Phase::Authenticating | Phase::Active) {
                    return None;
                }
                if let Err(e) = self.session.handle_stream_data(&bytes, Instant::now()) {
                    let reason = format!("protocol violation by the server: {e}");
                    if let Ok(mut permits) = self.net.reserve(1) {
                        permits.send(Command::Close {
                            code: close_code::PROTOCOL_VIOLATION,
                            reason: "protocol violation",
                            graceful: false,
                        });
                    }
                    self.phase = Phase::Closed;
                    self.push_disconnect(
                        Some(close_code::PROTOCOL_VIOLATION.into()),
                        &reason,
                        true,
                    );
                }
                None
            }
            NetEvent::Datagram(bytes, arrived) => {
                if self.session.state() != SessionState::Active {
                    return None;
                }
                match self.session.handle_datagram(&bytes, arrived) {
                    Ok(info) => {
                        self.stats.snapshots += 1;
                        Some(self.snapshot_event(bytes, info))
                    }
                    Err(_) => {
                        self.stats.bad_datagrams += 1;
                        None
                    }
                }
            }
            NetEvent::Closed {
                code,
                reason,
                local,
            } => {
                match self.phase {
                    Phase::Closed => {}
                    // While connecting, no connection of this session exists yet: this is
                    // the end of the one a redirect left (the server closes it after the
                    // `Redirect`); the new one reports `Connected` or `ConnectFailed`.
                    Phase::Connecting => {}
                    _ => {
                        self.phase = Phase::Closed;
                        self.push_disconnect(code, &reason, local);
                    }
                }
                None
            }
        }
    }

    /// Marks the client closed after a local failure and queues the disconnect.
    fn fail(&mut self, what: &str, why: &str) {
        if let Ok(mut permits) = self.net.reserve(1) {
            permits.send(Command::Close {
                code: close_code::NORMAL,
                reason: "client error",
                graceful: false,
            });
        }
        self.phase = Phase::Closed;
        self.push_disconnect(None, &format!("{what}: {why}"), true);
    }

    fn snapshot_event(
        &mut self,
        bytes: Bytes,
        info: zonehost_protocol::session::SnapshotInfo,
    ) -> ZhEvent {
        let mut snapshot = ZhSnapshot {
            tick: info.tick,
            part: info.part.into(),
            parts: info.parts.into(),
            has_last_input: u8::from(info.last_input.is_some()),
            last_input: info.last_input.unwrap_or(0),
            stale: u8::from(info.stale),
            other_instance: u8::from(info.other_instance),
            ..ZhSnapshot::default()
        };
        // The session accepted these bytes, so they decode.
        if let Ok((header, body)) = decode_snapshot(&bytes) {
            snapshot.instance = header.instance.get();
            snapshot.zone = body.zone.to_native().into();
        }
        // What the player sees: the session's view, rebuilt from the deltas, in the wire
        // layout (re-encoded only when a tick completed).
        let view = self.session.view();
        let fresh = self.current.view.as_ref().map(|(t, _)| *t) == Some(view.tick());
        if info.applied == Applied::Complete || !fresh {
            self.current.view = Some((view.tick(), wire_entities(view.entities())));
        }
        let count = view.entities().len();
        snapshot.entity_count = u32::try_from(count).unwrap_or(0);
        if let Some((_, view)) = &self.current.view {
            self.current.snapshot = Some((view.clone(), 0, count));
        }
        ZhEvent {
            kind: ZH_EVENT_SNAPSHOT,
            snapshot,
            ..ZhEvent::default()
        }
    }

    fn session_event(&mut self, event: ClientEvent) -> Option<ZhEvent> {
        let mut out = ZhEvent::default();
        match event {
            ClientEvent::Welcome(w) => {
                self.phase = Phase::Active;
                self.welcomed = true;
                self.resume_token = cstring(&w.resume_token);
                out.kind = ZH_EVENT_WELCOME;
                out.welcome = ZhWelcome {
                    player_id: w.player_id,
                    entity_id: w.entity_id,
                    zone: w.zone.into(),
                    instance: w.instance,
                    tick_rate_hz: w.tick_rate_hz.into(),
                    snapshot_rate_hz: w.snapshot_rate_hz.into(),
                    server_tick: w.server_tick,
                    server_time_us: w.server_time_us,
                    max_speed_mms: w.max_speed_mms,
                    last_input: w.last_input,
                    redirects: self.redirects,
                };
                self.redirects = 0;
            }
            ClientEvent::Rejected(r) => {
                out.kind = ZH_EVENT_REJECTED;
                out.rejected = ZhRejected {
                    code: r.code as u32,
                    code_name: self.text(r.code.as_str()),
                    reason: self.text(&r.reason),
                };
            }
            ClientEvent::Redirected(r) => {
                if self.redirects as usize >= MAX_REDIRECTS {
                    self.fail(
                        "too many redirects",
                        &format!("more than {MAX_REDIRECTS} in a row (last to {})", r.address),
                    );
                    return None;
                }
                self.redirects += 1;
                let after_welcome = self.phase == Phase::Active;
                self.session = ClientSession::new(r.ticket, self.settings.client_name.clone());
                let queued = match self.net.reserve(1) {
                    Ok(mut permits) => {
                        permits.send(Command::Connect {
                            address: r.address.clone(),
                            server_name: self.settings.server_name.clone(),
                        });
                        Ok(())
                    }
                    Err(e) => Err(queue_error(e)),
                };
                if let Err(e) = queued {
                    self.fail("cannot follow the redirect", e.message());
                    return None;
                }
                self.phase = Phase::Connecting;
                out.kind = ZH_EVENT_REDIRECTED;
                out.redirect = ZhRedirect {
                    address: self.text(&r.address),
                    after_welcome: u8::from(after_welcome),
                };
            }
            ClientEvent::Response { id, body, latency } => {
                out.kind = ZH_EVENT_RESPONSE;
                let mut response = ZhResponse {
                    id,
                    latency_us: micros(latency),
                    ..ZhResponse::default()
                };
                match body {
                    Ok(Response::Done) => response.kind = ZH_RESPONSE_DONE,
                    Ok(Response::Pong {
                        client_time_us,
                        server_tick,
                    }) => {
                        response.kind = ZH_RESPONSE_PONG;
                        response.pong_client_time_us = client_time_us;
                        response.pong_server_tick = server_tick;
                    }
                    Ok(Response::Inventory(view)) => {
                        response.kind = ZH_RESPONSE_INVENTORY;
                        response.gold = view.gold;
                        response.xp = view.xp;
                        response.level = view.level.into();
                        self.current.items = view
                            .bag
                            .iter()
                            .map(|i| item(i, -1))
                            .chain(view.equipment.iter().map(|(s, i)| item(i, (*s).into())))
                            .collect();
                        response.item_count = count(self.current.items.len());
                    }
                    Ok(Response::SnapshotRate { hz }) => {
                        response.kind = ZH_RESPONSE_SNAPSHOT_RATE;
                        response.snapshot_rate_hz = hz.into();
                    }
                    Ok(Response::Zone(z)) => {
                        response.kind = ZH_RESPONSE_ZONE;
                        response.zone = z.zone.into();
                        response.zone_name = self.text(&z.name);
                        response.width_mm = z.width_mm;
                        response.height_mm = z.height_mm;
                        (response.spawn_x_mm, response.spawn_y_mm) = z.spawn_mm;
                        response.town = u8::from(z.town);
                        let rect = |r: &ZoneRect, target: i32| ZhZoneRect {
                            x0: r.x0,
                            y0: r.y0,
                            x1: r.x1,
                            y1: r.y1,
                            target,
                        };
                        self.current.rects = z
                            .walls
                            .iter()
                            .map(|w| rect(w, -1))
                            .chain(z.portals.iter().map(|p| rect(&p.area, p.target.into())))
                            .collect();
                        response.wall_count = count(z.walls.len());
                        response.portal_count = count(z.portals.len());
                    }
                    Err(e) => {
                        response.kind = ZH_RESPONSE_ERROR;
                        response.error = e as u32;
                        response.error_text = self.text(&e.to_string());
                    }
                }
                out.response = response;
            }
            ClientEvent::Event(e) => {
                out.kind = ZH_EVENT_GAME;
                out.game = self.game_event(e);
            }
            ClientEvent::Goaway(g) => {
                out.kind = ZH_EVENT_GOAWAY;
                out.goaway = ZhGoaway {
                    reason: self.text(&g.reason),
                    reconnect_after_ms: g.reconnect_after_ms,
                };
            }
            ClientEvent::InputAcked { seq, latency } => {
                self.stats.inputs_acked += 1;
                self.stats.ack_latency_sum_us += micros(latency);
                out.kind = ZH_EVENT_INPUT_ACKED;
                out.input_acked = ZhInputAck {
                    seq,
                    latency_us: micros(latency),
                };
            }
        }
        Some(out)
    }

    fn game_event(&mut self, event: Event) -> ZhGameEvent {
        let mut g = ZhGameEvent::default();
        match event {
            Event::Notice { text } => {
                g.kind = ZH_GAME_NOTICE;
                g.text = self.text(&text);
            }
            Event::Combat(Combat::Hit {
                attacker,
                target,
                physical,
                fire,
                crit,
                target_hp,
            }) => {
                g.kind = ZH_GAME_COMBAT_HIT;
                g.entity = attacker;
                g.target = target;
                g.amount = physical.into();
                g.amount2 = fire.into();
                g.flag = crit.into();
                g.value = target_hp;
            }
            Event::Combat(Combat::Miss { attacker, target }) => {
                g.kind = ZH_GAME_COMBAT_MISS;
                g.entity = attacker;
                g.target = target;
            }
            Event::Combat(Combat::Killed {
                killer,
                victim,
                monster_kind,
            }) => {
                g.kind = ZH_GAME_COMBAT_KILLED;
                g.entity = killer;
                g.target = victim;
                g.value = monster_kind.into();
            }
            Event::ItemDropped {
                ground,
                item: i,
                owner,
                x_mm,
                y_mm,
            } => {
                g.kind = ZH_GAME_ITEM_DROPPED;
                g.entity = ground;
                g.item = item(&i, -1);
                g.flag = owner.is_some().into();
                g.amount = owner.unwrap_or(0);
                g.x_mm = x_mm;
                g.y_mm = y_mm;
            }
            Event::ItemExpired { ground } => {
                g.kind = ZH_GAME_ITEM_EXPIRED;
                g.entity = ground;
            }
            Event::XpGained { amount } => {
                g.kind = ZH_GAME_XP_GAINED;
                g.amount = amount;
            }
            Event::LevelUp { level } => {
                g.kind = ZH_GAME_LEVEL_UP;
                g.value = level.into();
            }
            Event::Died {
                killer,
                gold_lost,
                xp_lost,
            } => {
                g.kind = ZH_GAME_DIED;
                g.entity = killer;
                g.amount = gold_lost;
                g.amount2 = xp_lost;
            }
            Event::Respawned => g.kind = ZH_GAME_RESPAWNED,
            Event::Gold { delta, gold } => {
                g.kind = ZH_GAME_GOLD;
                g.delta = delta;
                g.amount = gold;
            }
            Event::Inventory(e) => self.inventory_event(e, &mut g),
            Event::Party(PartyEvent::Invited { by }) => {
                g.kind = ZH_GAME_PARTY_INVITED;
                g.text = self.text(&by);
            }
            Event::Party(PartyEvent::Declined { by }) => {
                g.kind = ZH_GAME_PARTY_DECLINED;
                g.text = self.text(&by);
            }
            Event::Party(PartyEvent::Members {
                party,
                leader,
                members,
            }) => {
                g.kind = ZH_GAME_PARTY_MEMBERS;
                g.value = party;
                g.text = self.text(&leader);
                self.current.names = members.iter().map(|m| cstring(m)).collect();
                g.name_count = count(self.current.names.len());
            }
            Event::Party(PartyEvent::Left { kicked }) => {
                g.kind = ZH_GAME_PARTY_LEFT;
                g.flag = kicked.into();
            }
            Event::ZoneEntered {
                zone,
                instance,
                entity_id,
            } => {
                g.kind = ZH_GAME_ZONE_ENTERED;
                g.value = zone.into();
                g.amount = instance.into();
                g.entity = entity_id;
            }
            Event::Trade(TradeEvent::Updated {
                trade,
                partner,
                partner_entity,
                mine,
                theirs,
                committing,
            }) => {
                g.kind = ZH_GAME_TRADE_UPDATED;
                g.value = trade;
                g.amount = partner;
                g.entity = partner_entity;
                g.delta = i64::try_from(mine.gold).unwrap_or(i64::MAX);
                g.amount2 = theirs.gold;
                g.flag = u32::from(mine.accepted)
                    | u32::from(theirs.accepted) << 1
                    | u32::from(committing) << 2;
                self.current.items = mine
                    .items
                    .iter()
                    .map(|id| id_item(*id, 0))
                    .chain(theirs.items.iter().map(|id| id_item(*id, 1)))
                    .collect();
                g.item_count = count(self.current.items.len());
            }
            Event::Trade(TradeEvent::Ended { trade, reason }) => {
                g.kind = ZH_GAME_TRADE_ENDED;
                g.value = trade;
                g.amount = reason as u64;
            }
        }
        g
    }

    fn inventory_event(&mut self, event: InventoryEvent, g: &mut ZhGameEvent) {
        match event {
            InventoryEvent::PickedUp { item: i, ground } => {
                g.kind = ZH_GAME_PICKED_UP;
                g.item = item(&i, -1);
                g.entity = ground;
            }
            InventoryEvent::Equipped {
                item: id,
                slot,
                swapped_out,
            } => {
                g.kind = ZH_GAME_EQUIPPED;
                g.item = id_item(id, slot.into());
                g.value = slot.into();
                g.flag = swapped_out.is_some().into();
                g.other_item = swapped_out.unwrap_or(0).into();
            }
            InventoryEvent::Unequipped { item: id, slot } => {
                g.kind = ZH_GAME_UNEQUIPPED;
                g.item = id_item(id, -1);
                g.value = slot.into();
            }
            InventoryEvent::Dropped { item: id, ground } => {
                g.kind = ZH_GAME_DROPPED;
                g.item = id_item(id, -1);
                g.entity = ground;
            }
            InventoryEvent::Consumed { item: id, healed } => {
                g.kind = ZH_GAME_CONSUMED;
                g.item = id_item(id, -1);
                g.amount = healed.into();
            }
            InventoryEvent::Granted { items } => {
                g.kind = ZH_GAME_GRANTED;
                self.current.items = items.iter().map(|id| id_item(*id, -1)).collect();
                g.item_count = count(self.current.items.len());
            }
            InventoryEvent::Returned { item: i } => {
                g.kind = ZH_GAME_RETURNED;
                g.item = item(&i, -1);
            }
            InventoryEvent::Traded {
                trade,
                given,
                received,
            } => {
                g.kind = ZH_GAME_TRADED;
                g.value = trade;
                g.amount = given.len() as u64;
                self.current.items = received.iter().map(|i| item(i, -1)).collect();
                g.item_count = count(self.current.items.len());
            }
        }
    }
}

fn no_snapshot() -> FfiError {
    FfiError::new(
        ZH_ERR_NOT_FOUND,
        "no current snapshot: the last zh_poll did not return ZH_EVENT_SNAPSHOT",
    )
}

fn queue_error(e: SendError) -> FfiError {
    match e {
        SendError::Full => FfiError::new(
            ZH_ERR_WOULD_BLOCK,
            "the queue to the network thread is full; try again next frame",
        ),
        SendError::Stopped => FfiError::new(ZH_ERR_INTERNAL, "the network thread has stopped"),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn item(i: &ItemInfo, slot: i32) -> ZhItem {
    ZhItem {
        id: i.id.into(),
        base: i.base,
        rarity: i.rarity,
        level: i.level,
        affix_count: count(i.affixes.len()),
        slot,
    }
}

fn id_item(id: u128, slot: i32) -> ZhItem {
    ZhItem {
        id: id.into(),
        slot,
        ..ZhItem::default()
    }
}
