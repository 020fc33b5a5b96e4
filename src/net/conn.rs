//! One connection: handshake (`Hello` → `Welcome`/`Reject`), then a pump that moves
//! datagrams and control-stream frames into the owning sim worker's inbox and the
//! session's outbox onto the control stream. No game rules live here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use zonehost_protocol::datagram::InputDatagram;
use zonehost_protocol::frame::{encode_frame, FrameDecoder};
use zonehost_protocol::message::{
    bounded_text, close_code, ClientMsg, Hello, Redirect, Reject, RejectCode, RequestError,
    ServerMsg, MAX_TOKEN_LEN,
};
use zonehost_protocol::{DecodeError, PROTOCOL_VERSION};

use crate::cluster::AcquireError;
use crate::limits::{ReplayError, ReplayGuard, TokenBucket, ViolationCounter};
use crate::session::{unix_secs, Authenticator, Contact, Registry, Verified};

use crate::sim::{
    outbox, ConnShared, Control, Join, Link, Outbox, OutboxReceiver, Outgoing, Route, Sim, Work,
};
use crate::telemetry::{DisconnectCause, DropCause, HandshakeFailure, Stats};

/// What connection tasks need in cluster mode (all empty otherwise).
#[derive(Debug, Default)]
pub(crate) struct ClusterContext {
    /// Player ownership leases.
    pub(crate) leases: Option<Arc<crate::cluster::PlayerLeases>>,
    /// Redirect ticket minter.
    pub(crate) tickets: Option<Arc<crate::cluster::Tickets>>,
    /// Placement by measured load: new logins may be sent to a less loaded peer.
    pub(crate) placement: Option<Arc<crate::placement::Placement>>,
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct ConnContext {
    /// Leases, tickets and peers (cluster mode).
    pub(crate) cluster: ClusterContext,
    pub(crate) stats: Arc<Stats>,
    pub(crate) auth: Authenticator,
    pub(crate) registry: Arc<Registry>,
    pub(crate) sim: Arc<Sim>,
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) hello_timeout: Duration,
    pub(crate) max_frame_len: usize,
    pub(crate) outbox_capacity: usize,
    pub(crate) replay: ReplayGuard,
    pub(crate) datagram_rate: (u32, u32),
    pub(crate) request_rate: (u32, u32),
    pub(crate) max_violations: u32,
    pub(crate) resume_grace: bool,
    pub(crate) next_session: std::sync::atomic::AtomicU64,
}

/// How often each connection's quinn statistics are sampled into metrics.
const QUIC_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Last sampled quinn counters of one connection, to add only the difference.
#[derive(Default)]
struct QuicSeen {
    lost_packets: u64,
    congestion_events: u64,
    /// Packets sent and received: `[sent, received]`.
    packets: [zonehost_client::PacketCounts; 2],
}

impl QuicSeen {
    fn sample(&mut self, conn: &quinn::Connection, stats: &Stats, rtt: &metrics::Histogram) {
        let s = conn.stats();
        let ordering = std::sync::atomic::Ordering::Relaxed;
        stats.quic_lost_packets.fetch_add(
            s.path.lost_packets.saturating_sub(self.lost_packets),
            ordering,
        );
        stats.quic_congestion_events.fetch_add(
            s.path
                .congestion_events
                .saturating_sub(self.congestion_events),
            ordering,
        );
        self.lost_packets = s.path.lost_packets;
        self.congestion_events = s.path.congestion_events;
        rtt.record(s.path.rtt.as_secs_f64());
        self.count_packets(&s, stats);
    }

    /// Adds the packets and frames since the last sample to `stats` (also called once when
    /// the connection ends, so its last second is not lost).
    fn count_packets(&mut self, s: &quinn::ConnectionStats, stats: &Stats) {
        use zonehost_client::PacketCounts;
        let ordering = std::sync::atomic::Ordering::Relaxed;
        let now = [PacketCounts::sent(s), PacketCounts::received(s)];
        for (i, (now, seen)) in now.iter().zip(self.packets.iter()).enumerate() {
            let d = now.since(seen);
            stats.quic_packets[i].fetch_add(d.packets, ordering);
            stats.quic_datagram_frames[i].fetch_add(d.datagrams, ordering);
            stats.quic_ack_frames[i].fetch_add(d.acks, ordering);
            stats.quic_ack_only_packets[i].fetch_add(d.ack_only, ordering);
        }
        self.packets = now;
    }
}

/// How long a refused client gets to read its `Reject` or `Goaway` before the close.
const LAST_FRAME_GRACE: Duration = Duration::from_secs(1);

struct ControlStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

enum HelloError {
    /// The connection or stream failed before a `Hello` arrived.
    Lost,
    /// Something other than a valid `Hello` arrived.
    Violation(quinn::SendStream),
    /// A `Hello` whose token is longer than `MAX_TOKEN_LEN`: an invalid token (SPEC §3.4
    /// rule 1), not a protocol violation.
    TokenTooLong(quinn::SendStream),
}

async fn read_hello(
    conn: &quinn::Connection,
    max_frame_len: usize,
) -> Result<(ControlStream, Hello), HelloError> {
    let (send, mut recv) = conn.accept_bi().await.map_err(|_| HelloError::Lost)?;
    let mut decoder = FrameDecoder::new(max_frame_len);
    loop {
        match decoder.next_message::<ClientMsg>() {
            Ok(Some(ClientMsg::Hello(hello))) => {
                return Ok((
                    ControlStream {
                        send,
                        recv,
                        decoder,
                    },
                    hello,
                ))
            }
            Err(DecodeError::Field {
                field: "Hello.token",
                ..
            }) => return Err(HelloError::TokenTooLong(send)),
            Ok(Some(_)) | Err(_) => return Err(HelloError::Violation(send)),
            Ok(None) => {}
        }
        match recv.read_chunk(max_frame_len, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Err(HelloError::Violation(send)),
            Err(_) => return Err(HelloError::Lost),
        }
    }
}

/// Sends `Reject` on the control stream, waits briefly for delivery, closes.
async fn reject(
    ctx: &ConnContext,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    code: RejectCode,
    reason: String,
) {
    ctx.stats.rejected(code);
    ctx.stats.disconnected(DisconnectCause::Rejected);
    tracing::info!(remote = %conn.remote_address(), code = code.as_str(), %reason, "session rejected");
    if let Ok(frame) = encode_frame(&ServerMsg::Reject(Reject {
        code,
        reason: bounded_text(reason),
    })) {
        if send.write_chunk(frame).await.is_ok() && send.finish().is_ok() {
            let _ = tokio::time::timeout(LAST_FRAME_GRACE, send.stopped()).await;
        }
    }
    conn.close(close_code::REJECTED.into(), code.as_str().as_bytes());
}

/// Takes a connection through its handshake, `Hello`, token and admission (rejecting or
/// redirecting it when it does not go ahead) and hands its session to the sim.
async fn admit(incoming: quinn::Incoming, ctx: Arc<ConnContext>) -> Option<Admitted> {
    let ctx = &*ctx;
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            ctx.stats.handshake_failed(match e {
                quinn::ConnectionError::TimedOut => HandshakeFailure::Timeout,
                _ => HandshakeFailure::Error,
            });
            return None;
        }
    };
    let (control, hello) =
        match tokio::time::timeout(ctx.hello_timeout, read_hello(&conn, ctx.max_frame_len)).await {
            Ok(Ok(x)) => x,
            Ok(Err(HelloError::Violation(send))) => {
                let reason = "the first message must be a valid Hello".to_string();
                reject(ctx, &conn, send, RejectCode::ProtocolViolation, reason).await;
                return None;
            }
            Ok(Err(HelloError::TokenTooLong(send))) => {
                let reason = format!("the token is longer than {MAX_TOKEN_LEN} bytes");
                reject(ctx, &conn, send, RejectCode::InvalidToken, reason).await;
                return None;
            }
            Ok(Err(HelloError::Lost)) => {
                ctx.stats.disconnected(DisconnectCause::ConnectionLost);
                return None;
            }
            Err(_) => {
                ctx.stats.rejected(RejectCode::HelloTimeout);
                ctx.stats.disconnected(DisconnectCause::Rejected);
                conn.close(close_code::REJECTED.into(), b"hello_timeout");
                return None;
            }
        };
    if hello.version != u16::from(PROTOCOL_VERSION) {
        let reason = format!(
            "server speaks protocol {PROTOCOL_VERSION}, client {}",
            hello.version
        );
        reject(
            ctx,
            &conn,
            control.send,
            RejectCode::UnsupportedVersion,
            reason,
        )
        .await;
        return None;
    }
    if *ctx.draining.borrow() {
        reject(
            ctx,
            &conn,
            control.send,
            RejectCode::Draining,
            "server is draining".into(),
        )
        .await;
        return None;
    }
    let verified = match ctx.auth.verify(&hello.token) {
        Ok(v) => v,
        Err((code, e)) => {
            reject(ctx, &conn, control.send, code, e.to_string()).await;
            return None;
        }
    };
    let claims = verified.claims().clone();
    let now_secs = unix_secs();
    if let Err(e) = ctx
        .replay
        .check_and_remember(claims.nonce, claims.expires_at, now_secs)
    {
        let code = match e {
            ReplayError::Replayed => RejectCode::TokenReplayed,
            ReplayError::Full => RejectCode::ServerFull,
        };
        reject(ctx, &conn, control.send, code, e.to_string()).await;
        return None;
    }
    let player_id = claims.player_id();
    let shared = Arc::new(ConnShared::default());
    let link: Arc<dyn Link> = Arc::new(conn.clone());
    let (outbox, outbox_rx) = outbox(ctx.outbox_capacity);
    let contact = Contact {
        name: claims.player.clone(),
        conn: link.clone(),
        shared: shared.clone(),
        outbox: outbox.clone(),
    };
    let (session, inbox, resumed) = match verified {
        Verified::Login(_) => {
            // Placement by load: an account-token login may be sent to a less loaded
            // peer; a ticket-bearing one was placed already and is admitted here.
            let ticket = claims
                .audience
                .starts_with(crate::cluster::TICKET_AUDIENCE_PREFIX);
            if let (false, Some(placement), Some(tickets)) =
                (ticket, &ctx.cluster.placement, &ctx.cluster.tickets)
            {
                if let Some((target, address)) = placement.login_target() {
                    let r = Redirect {
                        address: address.to_string(),
                        ticket: tickets.mint(&claims.player, &target, now_secs),
                    };
                    redirect(ctx, &conn, control.send, r).await;
                    return None;
                }
            }
            let session = ctx.next_session();
            let inbox = ctx.sim.least_loaded();
            if let Err(code) = ctx.registry.claim(player_id, session, contact, &inbox) {
                let reason = format!("player {} already has a live session", claims.player);
                reject(ctx, &conn, control.send, code, reason).await;
                return None;
            }
            if let Err(refusal) = take_lease(ctx, player_id, session, &claims.player).await {
                ctx.registry.release(player_id, session);
                match refusal {
                    Refusal::Reject(code, reason) => {
                        reject(ctx, &conn, control.send, code, reason).await
                    }
                    Refusal::Redirect(r) => redirect(ctx, &conn, control.send, r).await,
                }
                return None;
            }
            (session, inbox, false)
        }
        Verified::Resume(_) => match ctx.registry.reattach(player_id, contact) {
            Ok((session, inbox)) => (session, inbox, true),
            Err(code) => {
                let reason = format!("no session of {} waits for a resume", claims.player);
                reject(ctx, &conn, control.send, code, reason).await;
                return None;
            }
        },
    };
    tracing::info!(remote = %conn.remote_address(), player = %claims.player, session, resumed, "session started");
    let join = Box::new(Join {
        session,
        player_id,
        player_name: claims.player.clone(),
        conn: link,
        outbox: outbox.clone(),
        shared: shared.clone(),
    });
    inbox.control(if resumed {
        Control::Attach(join)
    } else {
        Control::Join(join)
    });
    Some(Admitted {
        conn,
        control,
        player: claims.player,
        player_id,
        session,
        inbox,
        shared,
        outbox,
        outbox_rx,
    })
}

/// A session admitted by [`admit`]: what its pumps need for as long as it lives.
struct Admitted {
    conn: quinn::Connection,
    control: ControlStream,
    player: String,
    player_id: u64,
    session: u64,
    inbox: Arc<Route>,
    shared: Arc<ConnShared>,
    outbox: Outbox,
    outbox_rx: OutboxReceiver,
}

/// Runs one connection to its end.
///
/// The handshake and admission run in an allocation of their own ([`admit`], boxed),
/// freed before the session starts: the connection's task then holds only what the
/// session's pumps need. (An `async fn` keeps its arguments for its whole life, and a
/// single state machine is sized for its largest await, the handshake's: its 384-byte
/// `Incoming` and the `Reject` it may write.)
pub(crate) fn handle(
    incoming: quinn::Incoming,
    ctx: Arc<ConnContext>,
) -> impl std::future::Future<Output = ()> + Send {
    let admitting = Box::pin(admit(incoming, ctx.clone()));
    async move {
        if let Some(admitted) = admitting.await {
            admitted.run(ctx).await;
        }
    }
}

impl Admitted {
    /// Runs the admitted session until its connection ends.
    async fn run(self, ctx: Arc<ConnContext>) {
        let Admitted {
            conn,
            control,
            player,
            player_id,
            session,
            inbox,
            shared,
            outbox,
            outbox_rx,
        } = self;
        let started = Instant::now();
        let ControlStream {
            send,
            recv,
            decoder,
        } = control;
        tokio::spawn(write_loop(send, outbox_rx, conn.clone(), shared.clone()));
        let now = Instant::now();
        let violations = Arc::new(Mutex::new(ViolationCounter::new(
            ctx.max_violations,
            VIOLATION_WINDOW,
            now,
        )));
        // Datagrams and the control stream are read by two tasks so that each is woken only
        // by its own traffic: in one `select!` every datagram re-polled the stream read
        // (a connection lock and a stream lookup per datagram, measured in the profile).
        let datagrams = tokio::spawn(
            DatagramPump {
                ctx: ctx.clone(),
                conn: conn.clone(),
                inbox: inbox.clone(),
                session,
                shared: shared.clone(),
                bucket: TokenBucket::new(ctx.datagram_rate.0, ctx.datagram_rate.1, now),
                violations: violations.clone(),
            }
            .run(),
        );
        let cause = Pump {
            ctx: &ctx,
            conn: &conn,
            inbox: &inbox,
            session,
            outbox,
            shared: &shared,
            requests: TokenBucket::new(ctx.request_rate.0, ctx.request_rate.1, now),
            violations,
        }
        .run(recv, decoder)
        .await;
        // The control stream ends with the connection (or closes it), so the datagram
        // task is finishing too; stop it before the sim hears that the session left.
        datagrams.abort();
        let _ = datagrams.await;
        let lost = matches!(
            cause,
            DisconnectCause::IdleTimeout | DisconnectCause::ConnectionLost
        );
        if lost && ctx.resume_grace && ctx.registry.detach(player_id, session) {
            inbox.control(Control::Detach { session });
        } else {
            inbox.control(Control::Leave { session });
        }
        ctx.stats.disconnected(cause);
        tracing::info!(
            player = %player,
            session,
            cause = cause.as_str(),
            secs = started.elapsed().as_secs_f32(),
            "session ended"
        );
    }
}

/// Why a login does not go ahead.
enum Refusal {
    /// Refused with a code and a reason.
    Reject(RejectCode, String),
    /// Sent to the server that owns the player.
    Redirect(Redirect),
}

/// Sends `Redirect` on the control stream, waits briefly for delivery, closes.
async fn redirect(
    ctx: &ConnContext,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    redirect: Redirect,
) {
    ctx.stats.disconnected(DisconnectCause::Redirected);
    tracing::info!(remote = %conn.remote_address(), to = %redirect.address, "session redirected");
    if let Ok(frame) = encode_frame(&ServerMsg::Redirect(redirect)) {
        if send.write_chunk(frame).await.is_ok() && send.finish().is_ok() {
            let _ = tokio::time::timeout(LAST_FRAME_GRACE, send.stopped()).await;
        }
    }
    conn.close(close_code::REJECTED.into(), b"redirect");
}

/// Takes the player's ownership lease for `session` (cluster mode; nothing otherwise).
/// When another server owns the player and its address is known, the refusal is a
/// redirect there with a ticket.
async fn take_lease(
    ctx: &ConnContext,
    player_id: u64,
    session: u64,
    player: &str,
) -> Result<(), Refusal> {
    let Some(leases) = ctx.cluster.leases.clone() else {
        return Ok(());
    };
    let taken = tokio::task::spawn_blocking(move || {
        leases.acquire(player_id, session, crate::sim::persist::unix_millis())
    })
    .await;
    let internal = || {
        Refusal::Reject(
            RejectCode::Internal,
            "the player could not be leased".into(),
        )
    };
    match taken {
        Ok(Ok(_fence_epoch)) => Ok(()),
        Ok(Err(AcquireError::HeldElsewhere {
            holder,
            expires_at_ms,
        })) => match (
            ctx.cluster
                .placement
                .as_ref()
                .and_then(|p| p.peer_address(&holder)),
            &ctx.cluster.tickets,
        ) {
            (Some(address), Some(tickets)) => Err(Refusal::Redirect(Redirect {
                address: address.to_string(),
                ticket: tickets.mint(player, &holder, unix_secs()),
            })),
            _ => Err(Refusal::Reject(
                RejectCode::AlreadyConnected,
                format!("the player is live on server {holder} (lease until {expires_at_ms} ms)"),
            )),
        },
        Ok(Err(e)) => {
            tracing::error!(player_id, error = %e, "player lease not taken");
            Err(internal())
        }
        Err(e) => {
            tracing::error!(player_id, error = %e, "player lease task failed");
            Err(internal())
        }
    }
}

struct Pump<'a> {
    ctx: &'a ConnContext,
    conn: &'a quinn::Connection,
    inbox: &'a Arc<Route>,
    session: u64,
    outbox: Outbox,
    shared: &'a Arc<ConnShared>,
    requests: TokenBucket,
    violations: Arc<Mutex<ViolationCounter>>,
}

/// Reads the connection's datagrams into the sim worker's inbox (its own task).
struct DatagramPump {
    ctx: Arc<ConnContext>,
    conn: quinn::Connection,
    inbox: Arc<Route>,
    session: u64,
    shared: Arc<ConnShared>,
    bucket: TokenBucket,
    violations: Arc<Mutex<ViolationCounter>>,
}

/// Counts a violation; closes the connection for abuse past the limit.
fn record_violation(
    violations: &Mutex<ViolationCounter>,
    conn: &quinn::Connection,
    shared: &ConnShared,
) -> Option<DisconnectCause> {
    // A poisoned lock only means another task panicked mid-record; the count is still usable.
    let over = violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(Instant::now());
    over.then(|| {
        shared.set_cause(DisconnectCause::Abuse);
        conn.close(
            close_code::ABUSE.into(),
            b"too many invalid or rate-limited messages",
        );
        shared.cause().unwrap_or(DisconnectCause::Abuse)
    })
}

impl DatagramPump {
    async fn run(mut self) {
        while let Ok(bytes) = self.conn.read_datagram().await {
            if self.on_datagram(&bytes).is_some() {
                return;
            }
        }
    }

    fn on_datagram(&mut self, bytes: &Bytes) -> Option<DisconnectCause> {
        let stats = &self.ctx.stats;
        Stats::inc(&stats.datagrams_in);
        stats
            .datagram_bytes_in
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // SPEC §2.1: the server does not read datagrams before the session's `Welcome`
        // (none may be sent before it); they are dropped, not applied later.
        if !self.shared.is_welcomed() {
            stats.dropped(DropCause::NotWelcomed);
            return None;
        }
        if !self.bucket.try_take(Instant::now()) {
            stats.dropped(DropCause::RateLimited);
            return record_violation(&self.violations, &self.conn, &self.shared);
        }
        let Ok(datagram) = InputDatagram::decode(bytes) else {
            stats.dropped(DropCause::Malformed);
            return record_violation(&self.violations, &self.conn, &self.shared);
        };
        let work = Work::input(self.session, &datagram, Instant::now());
        if self.inbox.work(work).is_err() {
            stats.dropped(DropCause::InboxFull);
        }
        None
    }
}

/// Window over which protocol violations are counted toward an abuse close.
const VIOLATION_WINDOW: Duration = Duration::from_secs(10);

impl Pump<'_> {
    async fn run(&mut self, recv: quinn::RecvStream, decoder: FrameDecoder) -> DisconnectCause {
        let mut sample = tokio::time::interval(QUIC_STATS_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rtt = metrics::histogram!("zonehost_quic_rtt_seconds");
        let mut seen = QuicSeen::default();
        let cause = self.pump(recv, decoder, &mut sample, &mut seen, &rtt).await;
        seen.count_packets(&self.conn.stats(), &self.ctx.stats);
        cause
    }

    async fn pump(
        &mut self,
        mut recv: quinn::RecvStream,
        mut decoder: FrameDecoder,
        sample: &mut tokio::time::Interval,
        seen: &mut QuicSeen,
        rtt: &metrics::Histogram,
    ) -> DisconnectCause {
        let conn = self.conn;
        let max_frame_len = self.ctx.max_frame_len;
        // Frames that arrived in the same chunks as the `Hello` (a pipelining client) are
        // complete already: handle them now, not when more stream data happens to arrive.
        if let Some(cause) = self.on_frames(&mut decoder) {
            return cause;
        }
        loop {
            tokio::select! {
                _ = sample.tick() => seen.sample(conn, &self.ctx.stats, rtt),
                chunk = recv.read_chunk(max_frame_len, true) => match chunk {
                    Ok(Some(chunk)) => {
                        decoder.extend(&chunk.bytes);
                        if let Some(cause) = self.on_frames(&mut decoder) {
                            return cause;
                        }
                    }
                    // Every complete frame was handled; bytes left over are a frame the
                    // FIN cut short.
                    Ok(None) if decoder.buffered() > 0 => return self.close(DisconnectCause::ProtocolViolation, close_code::PROTOCOL_VIOLATION, "truncated frame"),
                    Ok(None) => return self.close(DisconnectCause::ClientBye, close_code::NORMAL, "stream finished"),
                    Err(quinn::ReadError::ConnectionLost(e)) => return self.classify(e),
                    Err(_) => return self.close(DisconnectCause::ProtocolViolation, close_code::PROTOCOL_VIOLATION, "control stream reset"),
                },
            }
        }
    }

    fn close(&self, cause: DisconnectCause, code: u32, reason: &str) -> DisconnectCause {
        self.shared.set_cause(cause);
        self.conn.close(code.into(), reason.as_bytes());
        self.shared.cause().unwrap_or(cause)
    }

    fn classify(&self, e: quinn::ConnectionError) -> DisconnectCause {
        if let Some(cause) = self.shared.cause() {
            return cause;
        }
        match e {
            quinn::ConnectionError::ApplicationClosed(_) => DisconnectCause::ClientClosed,
            quinn::ConnectionError::TimedOut => DisconnectCause::IdleTimeout,
            quinn::ConnectionError::LocallyClosed => DisconnectCause::Shutdown,
            _ => DisconnectCause::ConnectionLost,
        }
    }

    /// Counts a violation; closes the connection for abuse past the limit.
    fn violation(&mut self) -> Option<DisconnectCause> {
        record_violation(&self.violations, self.conn, self.shared)
    }

    /// Handles every complete frame; returns a cause when the session must end.
    fn on_frames(&mut self, decoder: &mut FrameDecoder) -> Option<DisconnectCause> {
        loop {
            match decoder.next_message::<ClientMsg>() {
                Ok(None) => return None,
                Ok(Some(ClientMsg::Request { id, body })) => {
                    Stats::inc(&self.ctx.stats.requests);
                    if !self.requests.try_take(Instant::now()) {
                        Stats::inc(&self.ctx.stats.requests_rate_limited);
                        let limited = ServerMsg::Response {
                            id,
                            body: Err(RequestError::RateLimited),
                        };
                        if let Ok(frame) = encode_frame(&limited) {
                            let _ = self.outbox.try_send(Outgoing::Frame(frame));
                        }
                        if let Some(cause) = self.violation() {
                            return Some(cause);
                        }
                        continue;
                    }
                    let work = Work::Request {
                        session: self.session,
                        id,
                        body,
                        received_at: Instant::now(),
                    };
                    if self.inbox.work(work).is_err() {
                        let busy = ServerMsg::Response {
                            id,
                            body: Err(RequestError::RateLimited),
                        };
                        if let Ok(frame) = encode_frame(&busy) {
                            let _ = self.outbox.try_send(Outgoing::Frame(frame));
                        }
                    }
                }
                Ok(Some(ClientMsg::Bye)) => {
                    return Some(self.close(DisconnectCause::ClientBye, close_code::NORMAL, "bye"));
                }
                Ok(Some(ClientMsg::Hello(_))) | Err(_) => {
                    return Some(self.close(
                        DisconnectCause::ProtocolViolation,
                        close_code::PROTOCOL_VIOLATION,
                        "invalid frame on control stream",
                    ));
                }
            }
        }
    }
}

/// Writes the session's outbox to the control stream until it closes.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: OutboxReceiver,
    conn: quinn::Connection,
    shared: Arc<ConnShared>,
) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Outgoing::Frame(frame) => {
                if send.write_chunk(frame).await.is_err() {
                    return;
                }
            }
            Outgoing::CloseAfter { frame, code, cause } => {
                shared.set_cause(cause);
                if send.write_chunk(frame).await.is_ok() && send.finish().is_ok() {
                    let _ = tokio::time::timeout(LAST_FRAME_GRACE, send.stopped()).await;
                }
                conn.close(code.into(), cause.as_str().as_bytes());
                return;
            }
        }
    }
}
