//! One bot: connect and authenticate, then send inputs on a fixed schedule and read
//! snapshots and events until the end of the run.

use std::f32::consts::TAU;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use tokio::time::{Instant, MissedTickBehavior};
use zonehost_client::{Client, ClientError, Incoming};
use zonehost_protocol::datagram::{InputCmd, MOVE_AXIS_MAX};
use zonehost_protocol::ClientEvent;

use crate::stats::{record, Live};

/// How long a bot may take to say `Bye` at the end.
const CLOSE_BOUND: Duration = Duration::from_secs(3);

/// Settings shared by every bot.
#[derive(Debug)]
pub(crate) struct BotSettings {
    pub(crate) server: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) input_hz: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) seed: u64,
    pub(crate) end_at: Instant,
}

/// What one bot did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct BotSummary {
    pub(crate) connected: bool,
    pub(crate) failed: bool,
    /// Distinct snapshot ticks received.
    pub(crate) snapshots: u64,
    /// `snapshot_rate_hz` × seconds from `Welcome` to the end (or the failure).
    pub(crate) expected_snapshots: f64,
}

/// Random walk: a direction held for 0.5..2 s, sometimes standing still.
#[derive(Debug)]
pub(crate) struct Wander {
    rng: Pcg32,
    cmd: InputCmd,
    left: u32,
    hz: u32,
}

impl Wander {
    pub(crate) fn new(seed: u64, index: usize, hz: u32) -> Self {
        let stream = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Self {
            rng: Pcg32::seed_from_u64(stream),
            cmd: InputCmd::default(),
            left: 0,
            hz: hz.max(2),
        }
    }

    pub(crate) fn next_cmd(&mut self) -> InputCmd {
        if self.left == 0 {
            self.left = self.rng.random_range(self.hz / 2..=self.hz * 2);
            self.cmd = if self.rng.random_range(0..10) == 0 {
                InputCmd::default()
            } else {
                let angle = self.rng.random::<f32>() * TAU;
                let axis = f32::from(MOVE_AXIS_MAX);
                InputCmd::new(
                    (angle.cos() * axis).round() as i16,
                    (angle.sin() * axis).round() as i16,
                    0,
                )
            };
        }
        self.left -= 1;
        self.cmd
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
        ClientError::Config(_) | ClientError::File { .. } | ClientError::Io(_) => {
            "local error".into()
        }
    };
    format!("{phase}: {what}")
}

/// Runs one bot from `start_at` to `settings.end_at`.
pub(crate) async fn run_bot(
    index: usize,
    token: String,
    endpoint: quinn::Endpoint,
    start_at: Instant,
    settings: Arc<BotSettings>,
    live: Arc<Live>,
) -> BotSummary {
    let mut summary = BotSummary::default();
    tokio::time::sleep_until(start_at).await;
    let now = Instant::now();
    if now >= settings.end_at {
        return summary;
    }
    let budget = settings.connect_timeout.min(settings.end_at - now);
    let connected = Client::connect_timeout(
        &endpoint,
        settings.server,
        &settings.server_name,
        &token,
        &format!("zonehost-loadgen/{}", env!("CARGO_PKG_VERSION")),
        budget,
    )
    .await;
    let mut client = match connected {
        Ok(c) => c,
        Err(e) => {
            let mut kind = failure_kind("connect", &e);
            if matches!(e, ClientError::Timeout(_)) && budget < settings.connect_timeout {
                kind = "connect: not finished at the end of the run".into();
            }
            live.fail(kind, e.to_string());
            summary.failed = true;
            return summary;
        }
    };
    let welcomed = Instant::now();
    record(&mut live.hists().connect, welcomed - now);
    summary.connected = true;
    Live::add(&live.connected_total, 1);
    Live::add(&live.connected_now, 1);
    let rate = f64::from(client.welcome().snapshot_rate_hz);

    let failure = drive(index, &mut client, &settings, &live, &mut summary).await;
    let stopped = Instant::now().min(settings.end_at);
    summary.expected_snapshots = rate * (stopped - welcomed).as_secs_f64();
    let stats = client.stats();
    Live::add(&live.bad_datagrams, stats.bad_datagrams);
    Live::add(&live.snapshot_datagrams, stats.snapshots);
    Live::add(&live.snapshot_bytes, stats.snapshot_bytes);
    live.connected_now
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    match failure {
        Some((kind, message)) => {
            summary.failed = true;
            live.fail(kind, message);
        }
        None => {
            let _ = tokio::time::timeout(CLOSE_BOUND, client.close()).await;
        }
    }
    summary
}

/// The input/receive loop; returns a failure, or `None` when the run ended normally.
async fn drive(
    index: usize,
    client: &mut Client,
    settings: &BotSettings,
    live: &Live,
    summary: &mut BotSummary,
) -> Option<(String, String)> {
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.input_hz));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut wander = Wander::new(settings.seed, index, settings.input_hz);
    let mut last_tick = None::<u32>;
    let mut next_due: Option<Instant> = None;
    let end = tokio::time::sleep_until(settings.end_at);
    tokio::pin!(end);
    loop {
        tokio::select! {
            biased;
            () = &mut end => return None,
            scheduled = ticker.tick() => {
                let now = Instant::now();
                if let Some(due) = next_due {
                    // Ticks skipped because this bot was not polled in time.
                    let skipped = (scheduled.saturating_duration_since(due).as_secs_f64()
                        / period.as_secs_f64())
                    .round() as u64;
                    Live::add(&live.skipped_ticks, skipped);
                }
                next_due = Some(scheduled + period);
                record(&mut live.hists().send_lag, now - scheduled);
                match client.send_input(wander.next_cmd()) {
                    Ok(_) => Live::add(&live.inputs, 1),
                    Err(e) => {
                        Live::add(&live.send_errors, 1);
                        return Some((failure_kind("run", &e), e.to_string()));
                    }
                }
            }
            incoming = client.next_event() => match incoming {
                Ok(Incoming::Snapshot(info, _)) => {
                    if !info.stale && last_tick.is_none_or(|t| info.tick > t) {
                        last_tick = Some(info.tick);
                        summary.snapshots += 1;
                        Live::add(&live.snapshots, 1);
                    }
                }
                Ok(Incoming::Event(ClientEvent::InputAcked { latency, .. })) => {
                    Live::add(&live.acks, 1);
                    let mut h = live.hists();
                    record(&mut h.action, latency);
                    record(&mut h.action_window, latency);
                }
                Ok(Incoming::Event(ClientEvent::Goaway(g))) => {
                    return Some(("run: goaway".into(), format!("server going away: {}", g.reason)));
                }
                Ok(Incoming::Event(ClientEvent::Response { .. })) => Live::add(&live.responses, 1),
                Ok(Incoming::Event(_)) => Live::add(&live.events, 1),
                Err(e) => return Some((failure_kind("run", &e), e.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wander_is_seeded_and_bounded() {
        let a: Vec<InputCmd> = {
            let mut w = Wander::new(1, 3, 60);
            (0..600).map(|_| w.next_cmd()).collect()
        };
        let b: Vec<InputCmd> = {
            let mut w = Wander::new(1, 3, 60);
            (0..600).map(|_| w.next_cmd()).collect()
        };
        let c: Vec<InputCmd> = {
            let mut w = Wander::new(1, 4, 60);
            (0..600).map(|_| w.next_cmd()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let distinct: std::collections::HashSet<(i16, i16)> =
            a.iter().map(|c| (c.move_x.get(), c.move_y.get())).collect();
        assert!(distinct.len() >= 3, "changes direction: {distinct:?}");
        for cmd in &a {
            let (x, y) = (i32::from(cmd.move_x.get()), i32::from(cmd.move_y.get()));
            assert!(x.abs() <= 1000 && y.abs() <= 1000);
            assert!(x * x + y * y <= 1_002_000, "unit direction at most");
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
}
