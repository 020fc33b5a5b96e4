//! One bot: connect and authenticate, then send inputs on a fixed schedule, make the
//! requests its [`Brain`] decides on, read snapshots and events until the end of the run
//! (churners leave and log in again in between).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use tokio::time::{Instant, MissedTickBehavior};
use zonehost_client::reconnect::{attempt_is_fatal, loss_is_recoverable};
use zonehost_client::{
    recover, Client, ClientError, Incoming, Loss, PacketCounts, ReconnectError, ReconnectPolicy,
    Target,
};
use zonehost_protocol::datagram::{InputCmd, MAX_INPUTS_PER_DATAGRAM};
use zonehost_protocol::message::{snapshot_divisor, Combat, Event, InventoryEvent, Request};
use zonehost_protocol::snapshot::Applied;
use zonehost_protocol::ClientEvent;

use crate::behaviour::Behaviour;
use crate::brain::{Brain, BrainSettings};
use crate::config::TokenSource;
use crate::nav::Atlas;
use crate::opslog::{ItemLedger, OpsLog};
use crate::stats::{Live, Metric, Samples};
use crate::tokens::{bot_name, fresh_token};

/// How long a bot may take to say `Bye` at the end.
const CLOSE_BOUND: Duration = Duration::from_secs(3);
/// How often a bot moves its samples into the shared histograms.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Longest a request may take to be written to the control stream.
const WRITE_BOUND: Duration = Duration::from_secs(5);
/// How often a bot reads its connection's byte counters.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Simulation ticks per second of a zonehost server (SPEC.md §6.3, `Welcome.tick_rate_hz`).
const SPEC_TICK_HZ: u32 = 60;

/// New commands per input datagram: a bot samples its input every simulation tick
/// (`tick_hz`) and sends `input_hz` datagrams per second, each with the commands sampled
/// since the previous one (SPEC.md §4.2): 3 at 20 Hz, 2 at 30 Hz.
pub(crate) fn commands_per_datagram(tick_hz: u32, input_hz: u32) -> usize {
    let n = (f64::from(tick_hz) / f64::from(input_hz.max(1))).round() as usize;
    n.clamp(1, MAX_INPUTS_PER_DATAGRAM)
}

/// Settings shared by every bot.
#[derive(Debug)]
pub(crate) struct BotSettings {
    pub(crate) server_name: String,
    pub(crate) input_hz: u32,
    /// Inputs go this long after a snapshot arrives (see `Config::input_phase`).
    pub(crate) input_phase: Option<Duration>,
    /// Ask for at most this many snapshots per second (`Config::snapshot_rate_hz`).
    pub(crate) snapshot_rate_hz: Option<u16>,
    pub(crate) connect_timeout: Duration,
    /// Get a lost session back within this deadline (`None`: a loss fails the bot).
    pub(crate) recover_deadline: Option<Duration>,
    pub(crate) seed: u64,
    pub(crate) end_at: Instant,
    pub(crate) atlas: Arc<Atlas>,
    pub(crate) think: (Duration, Duration),
    pub(crate) view_hz: u32,
    pub(crate) churn_session: (Duration, Duration),
    pub(crate) churn_pause: (Duration, Duration),
    pub(crate) party_stay: (Duration, Duration),
    pub(crate) party_trade_every: Option<Duration>,
    pub(crate) tokens: TokenSource,
    /// Every server of the run (a recovering bot tries the others when its own is gone).
    pub(crate) servers: Vec<SocketAddr>,
    /// The confirmed-operations log, when the run writes one.
    pub(crate) ops_log: Option<Arc<OpsLog>>,
}

/// What one bot is.
#[derive(Debug, Clone)]
pub(crate) struct BotPlan {
    pub(crate) index: usize,
    pub(crate) behaviour: Behaviour,
    pub(crate) token: String,
    /// The server it logs in to.
    pub(crate) server: SocketAddr,
    /// Party: member names to invite (leader), or the leader's name (member).
    pub(crate) party_leader_of: Vec<String>,
    pub(crate) party_member_of: Option<String>,
}

/// What one bot did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct BotSummary {
    pub(crate) connected: bool,
    pub(crate) failed: bool,
    /// Distinct snapshot ticks received.
    pub(crate) snapshots: u64,
    /// `snapshot_rate_hz` × seconds from each `Welcome` to the end of that session.
    pub(crate) expected_snapshots: f64,
    /// Sessions (logins) completed.
    pub(crate) sessions: u32,
    /// Seconds connected, all sessions.
    pub(crate) connected_secs: f64,
}

/// Why a session loop stopped.
enum Stop {
    End,
    Churn,
    /// A draining cluster server handed the player to a peer: reconnect there.
    Redirected(zonehost_protocol::message::Redirect),
    /// The connection was lost in a way a reconnection may repair (recovery on).
    Lost {
        error: ClientError,
        /// What a `Goaway` before the loss asked to wait.
        goaway_wait: Duration,
    },
    Failed(String, String),
}

fn uniform(rng: &mut Pcg32, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        lo
    } else {
        lo + (hi - lo).mul_f64(rng.random::<f64>())
    }
}

/// A short, stable failure category for grouping (the full message is kept as an example).
pub(crate) fn failure_kind(phase: &str, e: &ClientError) -> String {
    use quinn::ConnectionError as C;
    let what = match e {
        ClientError::Rejected(r) => format!("rejected {}", r.code.as_str()),
        ClientError::Timeout(_) => "timeout".into(),
        ClientError::Goaway(_) => "goaway".into(),
        ClientError::StreamClosed => "control stream closed".into(),
        ClientError::BadRedirect { .. } => "bad redirect".into(),
        ClientError::TooManyRedirects(_) => "too many redirects".into(),
        ClientError::Session(_) => "protocol error".into(),
        ClientError::Connection(c)
        | ClientError::Read(quinn::ReadError::ConnectionLost(c))
        | ClientError::Write(quinn::WriteError::ConnectionLost(c))
        | ClientError::Datagram(quinn::SendDatagramError::ConnectionLost(c)) => match c {
            C::ApplicationClosed(a) => format!(
                "closed by server (code {}: {})",
                a.error_code,
                String::from_utf8_lossy(&a.reason)
            ),
            C::TimedOut => "idle timeout".into(),
            C::TransportError(t) => format!("transport error {}", t.code),
            C::ConnectionClosed(c) => format!("closed by server transport (code {})", c.error_code),
            C::Reset => "reset".into(),
            C::LocallyClosed => "locally closed".into(),
            C::VersionMismatch => "QUIC version mismatch".into(),
            C::CidsExhausted => "connection ids exhausted".into(),
        },
        ClientError::Read(_) | ClientError::Write(_) => "control stream error".into(),
        ClientError::Datagram(_) => "datagram send error".into(),
        ClientError::Connect(_) => "connect refused locally".into(),
        ClientError::Token(_) => "no token".into(),
        ClientError::Config(_) | ClientError::File { .. } | ClientError::Io(_) => {
            "local error".into()
        }
    };
    format!("{phase}: {what}")
}

/// Runs one bot from `start_at` to `settings.end_at`.
pub(crate) async fn run_bot(
    plan: BotPlan,
    endpoint: quinn::Endpoint,
    start_at: Instant,
    settings: Arc<BotSettings>,
    live: Arc<Live>,
) -> BotSummary {
    let mut summary = BotSummary::default();
    let mut rng = Pcg32::seed_from_u64(settings.seed ^ (plan.index as u64) << 17 ^ 0xc4u64);
    tokio::time::sleep_until(start_at).await;
    let mut brain = Brain::new(
        BrainSettings {
            behaviour: plan.behaviour,
            seed: settings.seed,
            index: plan.index,
            // Commands per second: one per simulation tick, whatever the send rate.
            input_hz: settings.input_hz
                * commands_per_datagram(SPEC_TICK_HZ, settings.input_hz) as u32,
            think: settings.think,
            view_hz: settings.view_hz,
            party_leader_of: plan.party_leader_of.clone(),
            party_member_of: plan.party_member_of.clone(),
            party_stay: settings.party_stay,
            party_trade_every: settings.party_trade_every,
        },
        settings.atlas.clone(),
        bot_name(settings.seed, plan.index),
        Instant::now(),
    );
    let mut token = plan.token.clone();
    let mut server = plan.server;
    let mut samples = Samples::default();
    let client_name = format!("zonehost-loadgen/{}", env!("CARGO_PKG_VERSION"));
    // A session got back after a loss, and when the loss was noticed.
    let mut recovered: Option<(Client, Instant)> = None;
    loop {
        let now = Instant::now();
        if now >= settings.end_at {
            break;
        }
        let (mut client, recovering) = match recovered.take() {
            Some((client, lost_at)) => (client, Some(lost_at)),
            None => {
                let budget = settings.connect_timeout.min(settings.end_at - now);
                let phase = if summary.sessions == 0 {
                    "connect"
                } else {
                    "reconnect"
                };
                let connected = Client::connect_timeout(
                    &endpoint,
                    server,
                    &settings.server_name,
                    &token,
                    &client_name,
                    budget,
                )
                .await;
                let client = match connected {
                    Ok(c) => c,
                    // A churner coming back to a server that is down (crashed, draining,
                    // restarting) recovers like a bot whose connection was lost. (A connect
                    // cut short by the end of the run is no loss.)
                    Err(e)
                        if summary.sessions > 0
                            && settings.recover_deadline.is_some()
                            && !attempt_is_fatal(&e)
                            && budget == settings.connect_timeout =>
                    {
                        Live::add(&live.disconnections, 1);
                        let loss = Loss {
                            at: now.into_std(),
                            error: e,
                            wait: Duration::ZERO,
                            resume_token: None,
                        };
                        match recover_session(&endpoint, server, &settings, &live, plan.index, loss)
                            .await
                        {
                            Ok(Some(back)) => {
                                recovered = Some(back);
                                continue;
                            }
                            Ok(None) => break,
                            Err(()) => {
                                summary.failed = true;
                                break;
                            }
                        }
                    }
                    // A churner's reconnect still in progress when the run ended: not a
                    // failure (the bot ran out of run, not the server out of answers),
                    // counted apart.
                    Err(ClientError::Timeout(_))
                        if summary.sessions > 0 && budget < settings.connect_timeout =>
                    {
                        Live::add(&live.cut_at_end, 1);
                        break;
                    }
                    Err(e) => {
                        let mut kind = failure_kind(phase, &e);
                        if matches!(e, ClientError::Timeout(_)) && budget < settings.connect_timeout
                        {
                            kind = format!("{phase}: not finished at the end of the run");
                        }
                        live.fail(kind, e.to_string());
                        summary.failed = true;
                        break;
                    }
                };
                samples.add(&live, Metric::Connect, Instant::now() - now);
                (client, None)
            }
        };
        let welcomed = Instant::now();
        summary.connected = true;
        summary.sessions += 1;
        if recovering.is_none() {
            Live::add(&live.connects, 1);
        }
        if summary.sessions == 1 {
            Live::add(&live.connected_total, 1);
        }
        Live::add(&live.connected_now, 1);
        if let Some((metric, d)) = brain.on_welcome(client.welcome(), welcomed) {
            // A zone change whose new instance was placed on this server.
            samples.add(&live, metric, d);
            Live::add(&live.zone_changes, 1);
        }
        let mut ledger = settings
            .ops_log
            .is_some()
            .then(|| ItemLedger::new(client.welcome().player_id));
        let server_hz = client.welcome().snapshot_rate_hz;
        let rate = match settings.snapshot_rate_hz {
            // Granted per connection (SPEC.md §6.2): ask on every one. A failed send
            // shows up as the connection's loss in `drive`.
            Some(hz) => {
                let ask = client.request(Request::SnapshotRate { hz });
                let _ = tokio::time::timeout(WRITE_BOUND, ask).await;
                f64::from(server_hz / snapshot_divisor(server_hz, hz))
            }
            None => f64::from(server_hz),
        };
        let churn_at = (plan.behaviour == Behaviour::Churner)
            .then(|| welcomed + uniform(&mut rng, settings.churn_session));
        let stop = drive(
            &mut client,
            &mut brain,
            &settings,
            &live,
            &mut samples,
            &mut summary,
            churn_at,
            recovering,
            ledger.as_mut(),
        )
        .await;
        if let (Some(l), Some(log)) = (ledger.as_mut(), &settings.ops_log) {
            l.session_ended(Instant::now());
            log.write(&l.take());
        }
        let stopped = Instant::now().min(settings.end_at);
        summary.expected_snapshots += rate * (stopped - welcomed).as_secs_f64();
        summary.connected_secs += (stopped - welcomed).as_secs_f64();
        let stats = client.stats();
        Live::add(&live.bad_datagrams, stats.bad_datagrams);
        Live::add(&live.snapshot_datagrams, stats.snapshots);
        Live::add(&live.snapshot_bytes, stats.snapshot_bytes);
        live.connected_now
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match stop {
            Stop::Failed(kind, message) => {
                summary.failed = true;
                live.fail(kind, message);
                break;
            }
            Stop::End => {
                let _ = tokio::time::timeout(CLOSE_BOUND, client.close()).await;
                break;
            }
            Stop::Lost { error, goaway_wait } => {
                Live::add(&live.disconnections, 1);
                let resume = Some(client.welcome().resume_token.clone());
                drop(client);
                let loss = Loss {
                    at: Instant::now().into_std(),
                    error,
                    wait: goaway_wait,
                    resume_token: resume,
                };
                match recover_session(&endpoint, server, &settings, &live, plan.index, loss).await {
                    Ok(Some(back)) => recovered = Some(back),
                    Ok(None) => break,
                    Err(()) => {
                        summary.failed = true;
                        break;
                    }
                }
            }
            Stop::Redirected(r) => match r.address.parse::<SocketAddr>() {
                Ok(to) => {
                    server = to;
                    token = r.ticket;
                }
                Err(e) => {
                    live.fail("run: bad redirect".into(), format!("{:?}: {e}", r.address));
                    summary.failed = true;
                    break;
                }
            },
            Stop::Churn => {
                let _ = tokio::time::timeout(CLOSE_BOUND, client.close()).await;
                let pause = uniform(&mut rng, settings.churn_pause);
                tokio::time::sleep_until((Instant::now() + pause).min(settings.end_at)).await;
                let fresh = {
                    let (source, seed, index) =
                        (settings.tokens.clone(), settings.seed, plan.index);
                    tokio::task::spawn_blocking(move || fresh_token(&source, seed, index)).await
                };
                match fresh {
                    Ok(Ok(t)) => token = t,
                    Ok(Err(e)) => {
                        live.fail("reconnect: no fresh token".into(), e.to_string());
                        summary.failed = true;
                        break;
                    }
                    Err(e) => {
                        live.fail("reconnect: token task failed".into(), e.to_string());
                        summary.failed = true;
                        break;
                    }
                }
            }
        }
    }
    samples.flush(&live);
    summary
}

/// Gets a lost session back (`zonehost_client::recover`: resume, else a fresh login,
/// trying the run's other servers in turn): `Ok(None)` when the run ended first,
/// `Err(())` once the failure is recorded.
async fn recover_session(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    settings: &BotSettings,
    live: &Live,
    index: usize,
    loss: Loss,
) -> Result<Option<(Client, Instant)>, ()> {
    let lost_at = Instant::from_std(loss.at);
    let policy = ReconnectPolicy {
        deadline: settings.recover_deadline.unwrap_or_default(),
        ..ReconnectPolicy::default()
    };
    let target = Target {
        endpoint: endpoint.clone(),
        addr: server,
        // A crashed server of a cluster that does not come back: its peers take the
        // player once its lease has expired.
        fallbacks: settings
            .servers
            .iter()
            .copied()
            .filter(|s| *s != server)
            .collect(),
        server_name: settings.server_name.clone(),
        client_name: format!("zonehost-loadgen/{}", env!("CARGO_PKG_VERSION")),
    };
    let (source, seed) = (settings.tokens.clone(), settings.seed);
    let tokens = move || fresh_token(&source, seed, index).map_err(|e| e.to_string());
    let attempts = &live.reconnect_attempts;
    let recovery = recover(&target, &tokens, &policy, loss, |_, _| {
        Live::add(attempts, 1);
    });
    match tokio::time::timeout_at(settings.end_at, recovery).await {
        // The run ended first: not a failure.
        Err(_) => Ok(None),
        Ok(Ok(back)) => {
            Live::add(
                if back.resumed {
                    &live.resumed
                } else {
                    &live.rejoined
                },
                1,
            );
            Ok(Some((back.client, lost_at)))
        }
        Ok(Err(e)) => {
            let kind = match &e {
                ReconnectError::GaveUp { .. } => "recover: not back within the deadline".to_owned(),
                ReconnectError::Fatal(c) => failure_kind("recover", c),
                _ => "recover: failed".to_owned(),
            };
            live.fail(kind, e.to_string());
            Err(())
        }
    }
}

/// After a failed send on a closed connection: a `Redirect` the server sent before it
/// closed (a cluster handoff) that this bot has not read yet, if any. Reads what is
/// buffered, bounded in time and count; the session is over either way.
async fn unread_redirect(client: &mut Client) -> Option<zonehost_protocol::message::Redirect> {
    const BOUND: Duration = Duration::from_millis(200);
    let until = Instant::now() + BOUND;
    for _ in 0..1024 {
        match tokio::time::timeout_at(until, client.next_event()).await {
            Ok(Ok(Incoming::Event(ClientEvent::Redirected(r)))) => return Some(r),
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
    }
    None
}

/// Writes a ledger's new records to the run's log.
fn record(ledger: &mut ItemLedger, settings: &BotSettings) {
    if let (true, Some(log)) = (ledger.has_records(), &settings.ops_log) {
        log.write(&ledger.take());
    }
}

/// Adds what a reliable event says about the game to the counters, before `brain` sees
/// it (a pick-up is looted loot while the brain still remembers the drop).
fn count_game_event(live: &Live, brain: &Brain, ev: &Event) {
    match ev {
        // The combat log goes to the whole instance: only kills by this bot's entity in
        // its current instance (not the `Welcome`'s, which a zone change replaces) are its
        // own.
        Event::Combat(Combat::Killed { killer, .. }) if brain.is_me(*killer) => {
            Live::add(&live.kills, 1);
        }
        Event::Died { .. } => Live::add(&live.deaths, 1),
        Event::ZoneEntered { .. } => Live::add(&live.zone_changes, 1),
        Event::Inventory(InventoryEvent::PickedUp { ground, .. })
            if brain.is_kill_loot(*ground) =>
        {
            Live::add(&live.loot_picked_up, 1);
        }
        _ => {}
    }
}

/// The input/request/receive loop of one session.
#[allow(clippy::too_many_arguments)]
async fn drive(
    client: &mut Client,
    brain: &mut Brain,
    settings: &BotSettings,
    live: &Live,
    samples: &mut Samples,
    summary: &mut BotSummary,
    churn_at: Option<Instant>,
    mut recovering: Option<Instant>,
    mut ledger: Option<&mut ItemLedger>,
) -> Stop {
    let recovery_on = settings.recover_deadline.is_some();
    let mut goaway_wait = None::<Duration>;
    // A loss the bot may recover from, else a failure.
    let lost = |e: ClientError, goaway_wait: Option<Duration>| {
        if recovery_on && loss_is_recoverable(&e, goaway_wait.is_some()) {
            Stop::Lost {
                error: e,
                goaway_wait: goaway_wait.unwrap_or_default(),
            }
        } else {
            Stop::Failed(failure_kind("run", &e), e.to_string())
        }
    };
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.input_hz));
    let batch = commands_per_datagram(client.welcome().tick_rate_hz.into(), settings.input_hz);
    let mut cmds = [InputCmd::default(); MAX_INPUTS_PER_DATAGRAM];
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let sends_inputs = brain.behaviour().sends_inputs();
    let mut last_tick = None::<u32>;
    let mut last_snapshot_at = None::<Instant>;
    let mut next_due: Option<Instant> = None;
    // Inputs sent after skipped schedule slots: (seq, slots skipped before it).
    let mut skipped_before: VecDeque<(u32, u32)> = VecDeque::with_capacity(16);
    let mut flush_at = Instant::now() + FLUSH_EVERY;
    let mut stats_at = Instant::now() + STATS_EVERY;
    let (mut tx_seen, mut rx_seen) = {
        let s = client.connection().stats();
        (s.udp_tx.bytes, s.udp_rx.bytes)
    };
    let mut packets_seen = {
        let s = client.connection().stats();
        (PacketCounts::sent(&s), PacketCounts::received(&s))
    };
    let stop_at = churn_at.map_or(settings.end_at, |c| c.min(settings.end_at));
    let end = tokio::time::sleep_until(stop_at);
    tokio::pin!(end);
    let stop = loop {
        tokio::select! {
            biased;
            () = &mut end => {
                break if stop_at < settings.end_at { Stop::Churn } else { Stop::End };
            }
            scheduled = ticker.tick() => {
                let now = Instant::now();
                let mut skipped = 0u32;
                if let Some(due) = next_due {
                    // Slots skipped because this bot was not polled in time.
                    skipped = (scheduled.saturating_duration_since(due).as_secs_f64()
                        / period.as_secs_f64())
                    .round() as u32;
                    Live::add(&live.skipped_ticks, u64::from(skipped));
                }
                next_due = Some(scheduled + period);
                // After a `Goaway` the session is closed: wait for the server's close.
                if goaway_wait.is_some() {
                    continue;
                }
                if sends_inputs {
                    samples.add(live, Metric::SendLag, now - scheduled);
                    let first = client.session().next_input_seq();
                    for (i, cmd) in cmds[..batch].iter_mut().enumerate() {
                        *cmd = brain.next_input(first.wrapping_add(i as u32), scheduled);
                    }
                    match client.send_inputs_at(&cmds[..batch], scheduled.into_std()) {
                        Ok(seq) => {
                            Live::add(&live.inputs, 1);
                            if skipped > 0 {
                                if skipped_before.len() == skipped_before.capacity() {
                                    skipped_before.pop_front();
                                }
                                skipped_before.push_back((seq, skipped));
                            }
                        }
                        Err(e) => {
                            Live::add(&live.send_errors, 1);
                            if let Some(r) = unread_redirect(client).await {
                                break Stop::Redirected(r);
                            }
                            break lost(e, goaway_wait);
                        }
                    }
                }
                if let Some((metric, request, item)) = brain.next_request(now) {
                    // Bounded: a server that stops reading its control stream must not
                    // stall this bot's input schedule forever.
                    match tokio::time::timeout(WRITE_BOUND, client.request(request)).await {
                        Ok(Ok(id)) => {
                            Live::add(&live.requests, 1);
                            brain.request_sent(id, metric, item, now);
                            if let Some(l) = ledger.as_deref_mut() {
                                l.request_sent(id, metric, item);
                            }
                        }
                        Ok(Err(e)) => {
                            if let Some(r) = unread_redirect(client).await {
                                break Stop::Redirected(r);
                            }
                            break lost(e, goaway_wait);
                        }
                        Err(_) => {
                            break Stop::Failed(
                                "run: request write timed out".into(),
                                format!("writing a {} request took over {WRITE_BOUND:?}", metric.name()),
                            )
                        }
                    }
                }
                if now >= flush_at {
                    samples.flush(live);
                    flush_at = now + FLUSH_EVERY;
                }
                if now >= stats_at {
                    let s = client.connection().stats();
                    Live::add(&live.bytes_up, s.udp_tx.bytes.saturating_sub(tx_seen));
                    Live::add(&live.bytes_down, s.udp_rx.bytes.saturating_sub(rx_seen));
                    (tx_seen, rx_seen) = (s.udp_tx.bytes, s.udp_rx.bytes);
                    live.add_packets(&s, &mut packets_seen);
                    stats_at = now + STATS_EVERY;
                }
            }
            incoming = client.next_event() => match incoming {
                Ok(Incoming::Snapshot(info, _)) => {
                    let now = Instant::now();
                    if !info.stale && last_tick.is_none_or(|t| info.tick > t) {
                        last_tick = Some(info.tick);
                        summary.snapshots += 1;
                        Live::add(&live.snapshots, 1);
                        if let Some(prev) = last_snapshot_at {
                            samples.add(live, Metric::SnapshotGap, now - prev);
                        }
                        last_snapshot_at = Some(now);
                        if let Some(phase) = settings.input_phase {
                            // Keep the next input `phase` after this snapshot (moved only
                            // when it drifted by more than a quarter period).
                            let target = now + phase;
                            let drift = next_due
                                .map_or(period, |due| due.max(target) - due.min(target));
                            if drift > period / 4 {
                                ticker.reset_at(target);
                                next_due = None;
                            }
                        }
                        if let Some(lost_at) = recovering.take() {
                            samples.add(live, Metric::Recover, now - lost_at);
                        }
                    } else if info.stale && !info.other_instance {
                        // Overtaken by a newer tick: arrived, but too late to be of use.
                        Live::add(&live.late_snapshots, 1);
                    }
                    if info.applied == Applied::Complete && brain.wants_view(now) {
                        brain.on_view(&info, client.view(), now);
                    }
                }
                Ok(Incoming::Event(ClientEvent::InputAcked { seq, latency })) => {
                    Live::add(&live.acks, 1);
                    samples.add(live, Metric::Move, latency);
                    // Coordinated omission: slots the bot skipped would have been acked no
                    // sooner than this input, each one period later than it was due.
                    while let Some(&(s, n)) = skipped_before.front() {
                        if s > seq {
                            break;
                        }
                        skipped_before.pop_front();
                        if s == seq {
                            let n = n.min(1000);
                            for k in 1..=n {
                                samples.add(live, Metric::Move, latency + period * k);
                            }
                            Live::add(&live.backfilled, u64::from(n));
                        }
                    }
                }
                Ok(Incoming::Event(ClientEvent::Response { id, body, latency })) => {
                    Live::add(&live.responses, 1);
                    if let Some(l) = ledger.as_deref_mut() {
                        l.response(id, body.is_ok(), Instant::now());
                        record(l, settings);
                    }
                    if let Some(metric) = brain.on_response(id, &body, Instant::now()) {
                        match &body {
                            Ok(_) => samples.add(live, metric, latency),
                            Err(e) => live.rejected(metric, &format!("{e:?}")),
                        }
                    }
                }
                Ok(Incoming::Event(ClientEvent::Event(ev))) => {
                    Live::add(&live.events, 1);
                    if let Some(l) = ledger.as_deref_mut() {
                        l.event(&ev, Instant::now());
                        record(l, settings);
                    }
                    count_game_event(live, brain, &ev);
                    if let Some((metric, d)) = brain.on_event(&ev, Instant::now()) {
                        samples.add(live, metric, d);
                    }
                }
                Ok(Incoming::Event(ClientEvent::Redirected(r))) => break Stop::Redirected(r),
                Ok(Incoming::Event(ClientEvent::Goaway(g))) => {
                    if !recovery_on {
                        break Stop::Failed("run: goaway".into(), format!("server going away: {}", g.reason));
                    }
                    // The server closes next; come back after the delay it asks for.
                    goaway_wait = Some(Duration::from_millis(g.reconnect_after_ms.into()));
                }
                Ok(Incoming::Event(_)) => Live::add(&live.events, 1),
                Err(e) => break lost(e, goaway_wait),
            },
        }
    };
    let s = client.connection().stats();
    Live::add(&live.bytes_up, s.udp_tx.bytes.saturating_sub(tx_seen));
    Live::add(&live.bytes_down, s.udp_rx.bytes.saturating_sub(rx_seen));
    live.add_packets(&s, &mut packets_seen);
    samples.flush(live);
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_carries_the_commands_of_its_period() {
        // (tick rate, datagrams per second, new commands per datagram)
        for (tick, hz, n) in [
            (60, 60, 1),
            (60, 30, 2),
            (60, 20, 3),
            (60, 15, 4),
            (60, 25, 2),
            (60, 120, 1),
            (60, 7, 8),
            (60, 0, 8),
            (50, 25, 2),
        ] {
            assert_eq!(
                commands_per_datagram(tick, hz),
                n,
                "{tick} Hz ticks, {hz} Hz sends"
            );
        }
    }

    #[test]
    fn failure_kinds_are_short() {
        use zonehost_protocol::message::{Reject, RejectCode};
        let e = ClientError::Rejected(Reject {
            code: RejectCode::ServerFull,
            reason: "full".into(),
        });
        assert_eq!(failure_kind("connect", &e), "connect: rejected server_full");
        let e = ClientError::Connection(quinn::ConnectionError::TimedOut);
        assert_eq!(failure_kind("run", &e), "run: idle timeout");
    }

    #[test]
    fn kills_count_under_the_entity_id_of_the_current_instance() {
        use crate::brain::tests_support::fighter;
        let t0 = Instant::now();
        let live = Live::new();
        // A fresh character: welcomed in town as entity 1, then entity 33 in the crypt
        // (where entity 1 is a monster).
        let mut brain = fighter(1, 1, t0);
        let entered = Event::ZoneEntered {
            zone: 2,
            instance: 4,
            entity_id: 33,
        };
        count_game_event(&live, &brain, &entered);
        brain.on_event(&entered, t0);
        let killed = |killer| {
            Event::Combat(Combat::Killed {
                killer,
                victim: 7,
                monster_kind: 1,
            })
        };
        count_game_event(&live, &brain, &killed(33));
        count_game_event(&live, &brain, &killed(1));
        count_game_event(&live, &brain, &killed(34));
        assert_eq!(Live::get(&live.kills), 1);
        assert_eq!(Live::get(&live.zone_changes), 1);
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut rng = Pcg32::seed_from_u64(1);
        let r = (Duration::from_secs(1), Duration::from_secs(2));
        for _ in 0..100 {
            let d = uniform(&mut rng, r);
            assert!(d >= r.0 && d <= r.1);
        }
        assert_eq!(uniform(&mut rng, (r.1, r.0)), r.1);
    }
}
