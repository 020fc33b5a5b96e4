//! A sans-IO client session: feed it received bytes and the current time, and it returns
//! typed events and the bytes to send. It owns input sequencing, redundancy against loss
//! and action-latency measurement; the caller owns sockets and clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::datagram::{encode_input, InputCmd, MAX_INPUTS_PER_DATAGRAM};
use crate::frame::{encode_frame, FrameDecoder};
use crate::message::{
    ClientMsg, Event, Goaway, Hello, Redirect, Reject, Request, RequestError, Response, ServerMsg,
    Welcome,
};
use crate::snapshot::{decode_snapshot, Applied, ArchivedSnapshotBody, SnapshotView, ViewError};
use crate::{DecodeError, PROTOCOL_VERSION};

/// How many sent inputs are remembered for latency measurement.
const SENT_HISTORY: usize = 512;

/// Where the session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Created; `hello()` not yet called.
    New,
    /// `Hello` produced; waiting for `Welcome` or `Reject`.
    AwaitingWelcome,
    /// Welcomed: inputs and requests may be sent.
    Active,
    /// Rejected, told to go away, or failed; nothing more may be sent.
    Closed,
}

/// Something the session learned from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted the session.
    Welcome(Welcome),
    /// The server refused the session.
    Rejected(Reject),
    /// The player is live on another server: connect to `address` with `ticket` as the
    /// token (the session is closed). Before `Welcome`: another server owns the player;
    /// after it: a draining cluster server handed the player to a peer (SPEC.md §2.3).
    Redirected(Redirect),
    /// Answer to request `id`, with the time since it was sent.
    Response {
        /// Request id.
        id: u32,
        /// Outcome.
        body: Result<Response, RequestError>,
        /// Time from `request()` to the response.
        latency: Duration,
    },
    /// A reliable world event.
    Event(Event),
    /// The server is going away.
    Goaway(Goaway),
    /// Input `seq` was first reported applied, `latency` after it was sent.
    InputAcked {
        /// Input sequence.
        seq: u32,
        /// Time from sending to the first snapshot that reported it applied.
        latency: Duration,
    },
}

/// Why the session could not process bytes or produce a message.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The server sent bytes that do not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The operation is not valid in the current state.
    #[error("not valid in state {0:?}")]
    State(SessionState),
    /// The server sent a message that is not valid in the current state.
    #[error("unexpected message from server in state {0:?}")]
    Unexpected(SessionState),
    /// A snapshot part contradicts its baseline (its acks were still taken).
    #[error("snapshot: {0}")]
    View(#[from] ViewError),
    /// An input datagram carries 1..=8 new commands (`MAX_INPUTS_PER_DATAGRAM`).
    #[error("{0} new input commands in one datagram (1..=8)")]
    InputCount(usize),
}

/// What a snapshot datagram told the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Snapshot tick.
    pub tick: u32,
    /// Part index and count.
    pub part: u8,
    /// Number of parts of this tick.
    pub parts: u8,
    /// The last input applied for this player, if the snapshot carries it.
    pub last_input: Option<u32>,
    /// Whether the tick was older than one already seen, or the snapshot belongs to
    /// another instance (see `other_instance`).
    pub stale: bool,
    /// The snapshot is of another instance than the current `Welcome`'s (a late datagram
    /// of the zone just left): reported, but not applied, and the newest tick is unchanged.
    pub other_instance: bool,
    /// What the part did to the session's [`SnapshotView`]: [`Applied::Complete`] when
    /// the view now shows this tick.
    pub applied: Applied,
}

/// The client side of one zonehost session, without I/O.
#[derive(Debug)]
pub struct ClientSession {
    state: SessionState,
    token: String,
    client_name: String,
    rx: FrameDecoder,
    events: VecDeque<ClientEvent>,
    welcome: Option<Welcome>,
    next_request_id: u32,
    pending_requests: VecDeque<(u32, Instant)>,
    next_seq: u32,
    recent_inputs: VecDeque<InputCmd>,
    sent_at: VecDeque<(u32, Instant)>,
    highest_acked: u32,
    newest_tick: u32,
    view: SnapshotView,
}

impl ClientSession {
    /// A new session that will authenticate with `token`.
    pub fn new(token: impl Into<String>, client_name: impl Into<String>) -> Self {
        Self {
            state: SessionState::New,
            token: token.into(),
            client_name: client_name.into(),
            rx: FrameDecoder::default(),
            events: VecDeque::new(),
            welcome: None,
            next_request_id: 1,
            pending_requests: VecDeque::new(),
            next_seq: 1,
            recent_inputs: VecDeque::with_capacity(MAX_INPUTS_PER_DATAGRAM),
            sent_at: VecDeque::with_capacity(SENT_HISTORY),
            highest_acked: 0,
            newest_tick: 0,
            view: SnapshotView::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The `Welcome` received, once active.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// Newest snapshot tick received (not necessarily complete).
    pub fn newest_tick(&self) -> u32 {
        self.newest_tick
    }

    /// The entities the player sees, rebuilt from the snapshots received: the newest
    /// complete tick of the current instance.
    pub fn view(&self) -> &SnapshotView {
        &self.view
    }

    /// Highest input sequence the server reported applied.
    pub fn highest_acked(&self) -> u32 {
        self.highest_acked
    }

    /// Sequence the next input will get.
    pub fn next_input_seq(&self) -> u32 {
        self.next_seq
    }

    /// Produces the `Hello` frame to write on the freshly opened control stream.
    pub fn hello(&mut self) -> Result<Bytes, SessionError> {
        if self.state != SessionState::New {
            return Err(SessionError::State(self.state));
        }
        let msg = ClientMsg::Hello(Hello {
            version: u16::from(PROTOCOL_VERSION),
            token: self.token.clone(),
            client: self.client_name.clone(),
        });
        self.state = SessionState::AwaitingWelcome;
        Ok(encode_frame(&msg)?)
    }

    /// Produces a request frame; returns its id and bytes.
    pub fn request(&mut self, body: Request, now: Instant) -> Result<(u32, Bytes), SessionError> {
        if self.state != SessionState::Active {
            return Err(SessionError::State(self.state));
        }
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        let bytes = encode_frame(&ClientMsg::Request { id, body })?;
        self.pending_requests.push_back((id, now));
        Ok((id, bytes))
    }

    /// Produces the `Bye` frame and closes the session.
    pub fn bye(&mut self) -> Result<Bytes, SessionError> {
        self.state = SessionState::Closed;
        Ok(encode_frame(&ClientMsg::Bye)?)
    }

    /// Produces the next input datagram: `cmd` with a new sequence, followed by the most
    /// recent earlier commands (newest first) so that a lost datagram costs nothing.
    pub fn send_input(&mut self, cmd: InputCmd, now: Instant) -> Result<Bytes, SessionError> {
        self.send_inputs(&[cmd], now)
    }

    /// Produces one input datagram for several new commands, oldest first (a client that
    /// samples its input every simulation tick and sends fewer datagrams: 3 per datagram
    /// at 20 datagrams per second, SPEC.md §4.2), followed by earlier ones up to 8 in
    /// all. Each command gets its own sequence; the acknowledgement latency
    /// ([`ClientEvent::InputAcked`]) is reported once per datagram, for its newest.
    pub fn send_inputs(&mut self, cmds: &[InputCmd], now: Instant) -> Result<Bytes, SessionError> {
        if self.state != SessionState::Active {
            return Err(SessionError::State(self.state));
        }
        if cmds.is_empty() || cmds.len() > MAX_INPUTS_PER_DATAGRAM {
            return Err(SessionError::InputCount(cmds.len()));
        }
        for &cmd in cmds {
            if self.recent_inputs.len() == MAX_INPUTS_PER_DATAGRAM {
                self.recent_inputs.pop_back();
            }
            self.recent_inputs.push_front(cmd);
            self.next_seq = self.next_seq.wrapping_add(1);
        }
        let seq = self.next_seq.wrapping_sub(1);
        if self.sent_at.len() == SENT_HISTORY {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back((seq, now));
        let recent: Vec<InputCmd> = self.recent_inputs.iter().copied().collect();
        Ok(encode_input(seq, self.view.tick(), &recent))
    }

    /// Feeds bytes received on the control stream.
    pub fn handle_stream_data(&mut self, data: &[u8], now: Instant) -> Result<(), SessionError> {
        self.rx.extend(data);
        while let Some(msg) = self.rx.next_message::<ServerMsg>()? {
            self.handle_message(msg, now)?;
        }
        Ok(())
    }

    fn handle_message(&mut self, msg: ServerMsg, now: Instant) -> Result<(), SessionError> {
        match (self.state, msg) {
            (SessionState::AwaitingWelcome, ServerMsg::Welcome(w)) => {
                self.state = SessionState::Active;
                // A resumed session continues the input sequence the server has applied.
                self.next_seq = self.next_seq.max(w.last_input.saturating_add(1));
                self.highest_acked = self.highest_acked.max(w.last_input);
                self.welcome = Some(w.clone());
                self.events.push_back(ClientEvent::Welcome(w));
            }
            (SessionState::AwaitingWelcome, ServerMsg::Reject(r)) => {
                self.state = SessionState::Closed;
                self.events.push_back(ClientEvent::Rejected(r));
            }
            // Before `Welcome`: the login belongs elsewhere (§2.2). After it: a draining cluster
            // server hands the player to a peer, or the player moves to its party leader's
            // server (§2.3).
            (SessionState::AwaitingWelcome | SessionState::Active, ServerMsg::Redirect(r)) => {
                self.state = SessionState::Closed;
                self.events.push_back(ClientEvent::Redirected(r));
            }
            (SessionState::Active, ServerMsg::Response { id, body }) => {
                let latency = match self.pending_requests.iter().position(|(p, _)| *p == id) {
                    Some(i) => self
                        .pending_requests
                        .remove(i)
                        .map(|(_, t)| now.saturating_duration_since(t)),
                    None => None,
                }
                .ok_or(SessionError::Unexpected(self.state))?;
                self.events
                    .push_back(ClientEvent::Response { id, body, latency });
            }
            (SessionState::Active, ServerMsg::Event(e)) => {
                if let (
                    Event::ZoneEntered {
                        zone,
                        instance,
                        entity_id,
                    },
                    Some(w),
                ) = (&e, self.welcome.as_mut())
                {
                    w.zone = *zone;
                    w.instance = *instance;
                    w.entity_id = *entity_id;
                }
                self.events.push_back(ClientEvent::Event(e));
            }
            (SessionState::Active | SessionState::AwaitingWelcome, ServerMsg::Goaway(g)) => {
                self.state = SessionState::Closed;
                self.events.push_back(ClientEvent::Goaway(g));
            }
            (state, _) => return Err(SessionError::Unexpected(state)),
        }
        Ok(())
    }

    /// Feeds a received datagram. Returns what it said; input acknowledgements become
    /// [`ClientEvent::InputAcked`] events, and the entities are rebuilt into
    /// [`ClientSession::view`]. A part that contradicts its baseline is
    /// [`SessionError::View`] after its acks were taken.
    pub fn handle_datagram(
        &mut self,
        data: &[u8],
        now: Instant,
    ) -> Result<SnapshotInfo, SessionError> {
        let (header, body) = decode_snapshot(data)?;
        let (entity, instance) = match (&self.state, &self.welcome) {
            (SessionState::Active, Some(w)) => (w.entity_id, w.instance),
            _ => return Err(SessionError::Unexpected(self.state)),
        };
        if header.instance.get() != instance {
            // A late snapshot of the instance the player just left: entity ids there mean
            // something else, so it is reported but not applied.
            return Ok(SnapshotInfo {
                tick: header.tick.get(),
                part: header.part,
                parts: header.parts,
                last_input: None,
                stale: true,
                other_instance: true,
                applied: Applied::Stale,
            });
        }
        let mut info = self.apply_snapshot(
            header.tick.get(),
            header.part,
            header.parts,
            body,
            entity,
            now,
        );
        info.applied = self.view.apply(header, body)?;
        Ok(info)
    }

    fn apply_snapshot(
        &mut self,
        tick: u32,
        part: u8,
        parts: u8,
        body: &ArchivedSnapshotBody,
        entity: u32,
        now: Instant,
    ) -> SnapshotInfo {
        let stale = tick < self.newest_tick;
        self.newest_tick = self.newest_tick.max(tick);
        let last_input = body.ack_for(entity);
        if let Some(acked) = last_input {
            // An ack of an input never sent is ignored (it would hide later real acks).
            if acked > self.highest_acked && acked < self.next_seq {
                while let Some(&(seq, sent)) = self.sent_at.front() {
                    if seq > acked {
                        break;
                    }
                    self.sent_at.pop_front();
                    if seq > self.highest_acked {
                        let latency = now.saturating_duration_since(sent);
                        self.events
                            .push_back(ClientEvent::InputAcked { seq, latency });
                    }
                }
                self.highest_acked = acked;
            }
        }
        SnapshotInfo {
            tick,
            part,
            parts,
            last_input,
            stale,
            other_instance: false,
            applied: Applied::Stale,
        }
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagram::InputDatagram;
    use crate::frame::FrameDecoder;
    use crate::snapshot::{encode_snapshot, Changes, PlayerAck, SnapshotMeta};

    fn server_frame(msg: &ServerMsg) -> Bytes {
        encode_frame(msg).expect("encode")
    }

    fn welcome() -> Welcome {
        Welcome {
            player_id: 1,
            entity_id: 5,
            zone: 1,
            instance: 1,
            tick_rate_hz: 60,
            snapshot_rate_hz: 60,
            server_tick: 0,
            server_time_us: 0,
            max_speed_mms: 6000,
            last_input: 0,
            resume_token: "r".into(),
        }
    }

    /// A one-part full snapshot of tick 1 without entities, acknowledging `last_input` for
    /// the welcomed entity 5.
    fn empty_snapshot_acking(last_input: u32) -> Bytes {
        let mut out = Vec::new();
        let meta = SnapshotMeta {
            tick: 1,
            baseline: 0,
            instance: 1,
            zone: 1,
        };
        let acks = [PlayerAck {
            entity: 5,
            last_input,
        }];
        encode_snapshot(meta, &acks, &Changes::default(), &mut out).expect("snap");
        out.remove(0)
    }

    #[test]
    fn handshake_inputs_and_acks() {
        let t0 = Instant::now();
        let mut s = ClientSession::new("tok", "test");
        assert!(s.send_input(InputCmd::default(), t0).is_err());
        let hello = s.hello().expect("hello");
        let mut d = FrameDecoder::default();
        d.extend(&hello);
        assert!(
            matches!(d.next_message::<ClientMsg>(), Ok(Some(ClientMsg::Hello(h))) if h.token == "tok")
        );

        s.handle_stream_data(&server_frame(&ServerMsg::Welcome(welcome())), t0)
            .expect("welcome");
        assert_eq!(s.poll_event(), Some(ClientEvent::Welcome(welcome())));
        assert_eq!(s.state(), SessionState::Active);

        let mut last = Bytes::new();
        for i in 0..10 {
            last = s
                .send_input(InputCmd::new(i, 0, 0), t0 + Duration::from_millis(i as u64))
                .expect("input");
        }
        let d = InputDatagram::decode(&last).expect("decode");
        assert_eq!(d.header.seq.get(), 10);
        assert_eq!(d.cmds.len(), MAX_INPUTS_PER_DATAGRAM);
        assert_eq!(d.cmds[0].move_x.get(), 9);
        assert_eq!(d.cmds[7].move_x.get(), 2);

        let out = empty_snapshot_acking(3);
        let info = s
            .handle_datagram(&out, t0 + Duration::from_millis(20))
            .expect("snapshot");
        assert_eq!(info.last_input, Some(3));
        assert_eq!(info.applied, Applied::Complete);
        // The next input reports the complete tick as its baseline.
        let next = s.send_input(InputCmd::default(), t0).expect("input");
        let next = InputDatagram::decode(&next).expect("decode");
        assert_eq!(next.header.ack_tick.get(), 1);
        let _ = s.highest_acked();
        let acks: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(acks.len(), 3);
        assert_eq!(
            acks[2],
            ClientEvent::InputAcked {
                seq: 3,
                latency: Duration::from_millis(18)
            }
        );
        // A repeated ack yields nothing new.
        s.handle_datagram(&out, t0 + Duration::from_millis(30))
            .expect("snapshot");
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn batched_inputs_number_each_command_and_time_each_datagram() {
        let t0 = Instant::now();
        let mut s = ClientSession::new("tok", "test");
        s.hello().expect("hello");
        s.handle_stream_data(&server_frame(&ServerMsg::Welcome(welcome())), t0)
            .expect("welcome");
        let _ = s.poll_event();
        assert!(matches!(
            s.send_inputs(&[], t0),
            Err(SessionError::InputCount(0))
        ));
        assert!(matches!(
            s.send_inputs(&[InputCmd::default(); 9], t0),
            Err(SessionError::InputCount(9))
        ));
        // 20 datagrams per second of 3 commands each (sampled at 60 Hz).
        let mut last = Bytes::new();
        for d in 0..4i16 {
            let cmds = [0, 1, 2].map(|i| InputCmd::new(10 * d + i, 0, 0));
            let at = t0 + Duration::from_millis(50 * d as u64);
            last = s.send_inputs(&cmds, at).expect("inputs");
        }
        assert_eq!(s.next_input_seq(), 13);
        let d = InputDatagram::decode(&last).expect("decode");
        assert_eq!(d.header.seq.get(), 12);
        assert_eq!(d.cmds.len(), MAX_INPUTS_PER_DATAGRAM);
        // Newest first: 32, 31, 30, then the previous datagrams' 22, 21, 20, 12, 11.
        let xs: Vec<i16> = d.cmds.iter().map(|c| c.move_x.get()).collect();
        assert_eq!(xs, vec![32, 31, 30, 22, 21, 20, 12, 11]);
        // An ack of the second datagram's newest command reports that datagram (and the
        // first) once each, timed from when each left.
        s.handle_datagram(&empty_snapshot_acking(6), t0 + Duration::from_millis(80))
            .expect("snapshot");
        let acked: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            acked,
            vec![
                ClientEvent::InputAcked {
                    seq: 3,
                    latency: Duration::from_millis(80)
                },
                ClientEvent::InputAcked {
                    seq: 6,
                    latency: Duration::from_millis(30)
                },
            ]
        );
    }

    #[test]
    fn reject_closes() {
        let mut s = ClientSession::new("tok", "test");
        s.hello().expect("hello");
        let r = Reject {
            code: crate::message::RejectCode::TokenExpired,
            reason: "old".into(),
        };
        s.handle_stream_data(&server_frame(&ServerMsg::Reject(r.clone())), Instant::now())
            .expect("reject");
        assert_eq!(s.poll_event(), Some(ClientEvent::Rejected(r)));
        assert_eq!(s.state(), SessionState::Closed);
    }

    #[test]
    fn redirect_closes_and_reports_where_to_go() {
        let mut s = ClientSession::new("tok", "test");
        s.hello().expect("hello");
        let r = Redirect {
            address: "127.0.0.1:4433".into(),
            ticket: "t".into(),
        };
        s.handle_stream_data(
            &server_frame(&ServerMsg::Redirect(r.clone())),
            Instant::now(),
        )
        .expect("redirect");
        assert_eq!(s.poll_event(), Some(ClientEvent::Redirected(r)));
        assert_eq!(s.state(), SessionState::Closed);
    }

    #[test]
    fn a_redirect_after_welcome_hands_the_session_over() {
        let mut s = ClientSession::new("tok", "test");
        s.hello().expect("hello");
        s.handle_stream_data(
            &server_frame(&ServerMsg::Welcome(welcome())),
            Instant::now(),
        )
        .expect("welcome");
        assert!(matches!(s.poll_event(), Some(ClientEvent::Welcome(_))));
        let r = Redirect {
            address: "127.0.0.1:4434".into(),
            ticket: "t".into(),
        };
        s.handle_stream_data(
            &server_frame(&ServerMsg::Redirect(r.clone())),
            Instant::now(),
        )
        .expect("redirect while active");
        assert_eq!(s.poll_event(), Some(ClientEvent::Redirected(r)));
        assert_eq!(s.state(), SessionState::Closed);
        assert!(s.send_input(InputCmd::default(), Instant::now()).is_err());
    }

    #[test]
    fn out_of_state_messages_are_errors() {
        let mut s = ClientSession::new("tok", "test");
        s.hello().expect("hello");
        let resp = ServerMsg::Response {
            id: 1,
            body: Err(RequestError::Internal),
        };
        assert!(matches!(
            s.handle_stream_data(&server_frame(&resp), Instant::now()),
            Err(SessionError::Unexpected(_))
        ));
    }
}
