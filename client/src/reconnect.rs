//! A [`Client`] that survives the loss of its connection (SPEC.md §2.6): on a stateless
//! reset, an idle timeout, a `Goaway` or an error close that allows it, it reconnects with
//! capped exponential backoff and jitter, first with its resume token and, when the server
//! refuses it (a restarted server does not know its predecessor's sessions), with a fresh
//! login through the application's [`TokenProvider`].
//!
//! The decisions are pure functions ([`ReconnectPolicy::backoff`], [`loss_is_recoverable`],
//! [`resume_refused`], [`attempt_is_fatal`]); [`recover`] is the retry loop and
//! [`ReconnectingClient`] only pumps.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{close_code, Goaway, Redirect, RejectCode, Request, Welcome};
use zonehost_protocol::ClientEvent;

use crate::client::{Client, ClientError, Incoming};

/// Supplies account tokens for logins: the first one and every re-login after the server
/// refused a resume. Called from the client's task; it should return quickly (an
/// application whose account service is remote keeps a fresh token ready).
pub trait TokenProvider: Send + Sync + 'static {
    /// A fresh account token, or why none is available now (the attempt then counts as
    /// failed and is retried after the backoff, until the deadline).
    fn token(&self) -> Result<String, String>;
}

impl<F> TokenProvider for F
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    fn token(&self) -> Result<String, String> {
        self()
    }
}

/// When and how often to reconnect. Defaults suit a game client; [`ReconnectPolicy::off`]
/// is for tools that want the first loss to be final.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Reconnect at all. Default true.
    pub enabled: bool,
    /// Backoff before the second attempt (the first one starts at once, or after the
    /// delay a `Goaway` asked for). Default 100 ms.
    pub initial_backoff: Duration,
    /// Cap of the exponential backoff. Default 1 s.
    pub max_backoff: Duration,
    /// Fraction of each backoff that is random (0: none, 1: anywhere between 0 and the
    /// backoff), so that many clients that lost one server do not come back in step.
    /// Default 0.5.
    pub jitter: f64,
    /// Bound of one attempt (QUIC handshake and `Hello` → `Welcome`). A server that is
    /// not up yet does not answer at all, so this decides how soon after its return a
    /// client notices it. Default 1.5 s.
    pub attempt_timeout: Duration,
    /// Give up when the session is not back this long after the loss. Default 30 s.
    pub deadline: Duration,
    /// After each reconnection, ask for the inventory (`GetInventory`) so that the
    /// application's view is re-synchronised; the answer arrives as an ordinary
    /// response. Default true.
    pub resync: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            jitter: 0.5,
            attempt_timeout: Duration::from_millis(1500),
            deadline: Duration::from_secs(30),
            resync: true,
        }
    }
}

impl ReconnectPolicy {
    /// No reconnection: the first loss is returned as [`ReconnectError::Lost`].
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Backoff after failed attempt number `attempt` (1-based): `initial_backoff`
    /// doubled per attempt, capped at `max_backoff`, of which the fraction `jitter` is
    /// scaled by `random` (uniform over `u64`). Pure: time and randomness are inputs.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let unit = random as f64 / u64::MAX as f64;
        base.mul_f64(1.0 - jitter * unit)
    }
}

/// What a [`ReconnectingClient`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Something the server sent on the current connection.
    Incoming(Incoming),
    /// The connection was lost (`reason`) and attempt number `attempt` (1-based) starts now.
    Reconnecting {
        /// Attempt number since the loss, 1-based.
        attempt: u32,
        /// Why the connection was lost, or why the previous attempt failed.
        reason: String,
    },
    /// The server took the resume token: the same session goes on (position, inventory,
    /// party kept; input numbering continues after `welcome.last_input`).
    Resumed {
        /// The new `Welcome`.
        welcome: Welcome,
        /// When the loss was noticed.
        lost_at: Instant,
        /// Attempts it took.
        attempts: u32,
    },
    /// The server refused the resume (a restarted server, or the grace period was over)
    /// and a fresh login succeeded: a new session with the player's stored state.
    Rejoined {
        /// The new `Welcome`.
        welcome: Welcome,
        /// When the loss was noticed.
        lost_at: Instant,
        /// Attempts it took.
        attempts: u32,
    },
}

/// Why a [`ReconnectingClient`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconnectError {
    /// The first login failed.
    #[error("login: {0}")]
    Login(#[source] ClientError),
    /// The connection was lost and the policy does not allow (or is off for) a reconnect.
    #[error("connection lost: {0}")]
    Lost(#[source] ClientError),
    /// The session was not back within [`ReconnectPolicy::deadline`].
    #[error("gave up reconnecting after {elapsed:?} and {attempts} attempts: {last}")]
    GaveUp {
        /// Time since the loss.
        elapsed: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: ClientError,
    },
    /// An attempt failed in a way that retrying cannot fix (wrong audience, unsupported
    /// version, bad configuration).
    #[error("reconnect refused: {0}")]
    Fatal(#[source] ClientError),
    /// The client was closed (or a previous error ended it).
    #[error("client closed")]
    Closed,
}

/// Counters of a [`ReconnectingClient`]'s life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconnectStats {
    /// Connections lost.
    pub losses: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Recoveries by resume.
    pub resumed: u64,
    /// Recoveries by a fresh login.
    pub rejoined: u64,
    /// `Redirect`s followed after the `Welcome` (a cluster server handing the player to a
    /// peer); each ends as a recovery too (`Resumed` with the redirect's ticket, else
    /// `Rejoined`).
    pub redirects: u64,
}

/// Whether a lost connection may be reconnected: resets, timeouts, transport errors and
/// the server closes `SHUTDOWN`, `INTERNAL` and `SLOW_READER` may; a `NORMAL` close may
/// only after a `Goaway` (`after_goaway`), a `REJECTED` close only when its reason is
/// `redirected` (a handoff whose `Redirect` was not read first), a `TAKEN_OVER` close only
/// when its reason is `lease_lost` (a cluster server lost the player's lease, no other
/// session took it); other `TAKEN_OVER` and `REJECTED` closes, `ABUSE`,
/// `PROTOCOL_VIOLATION`, a local close and protocol errors may not.
pub fn loss_is_recoverable(error: &ClientError, after_goaway: bool) -> bool {
    use quinn::{ReadError, SendDatagramError, WriteError};
    let conn = match error {
        ClientError::Connection(e)
        | ClientError::Read(ReadError::ConnectionLost(e))
        | ClientError::Write(WriteError::ConnectionLost(e))
        | ClientError::Datagram(SendDatagramError::ConnectionLost(e)) => e,
        // The server finished or reset the control stream: it is closing.
        ClientError::StreamClosed | ClientError::Read(_) | ClientError::Write(_) => return true,
        _ => return false,
    };
    match conn {
        quinn::ConnectionError::Reset
        | quinn::ConnectionError::TimedOut
        | quinn::ConnectionError::TransportError(_)
        | quinn::ConnectionError::ConnectionClosed(_) => true,
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            [
                close_code::SHUTDOWN,
                close_code::INTERNAL,
                close_code::SLOW_READER,
            ]
            .iter()
            .any(|c| u64::from(*c) == code)
                || (after_goaway && code == u64::from(close_code::NORMAL))
                // A cluster server moved the player and its `Redirect` was not read
                // before the close: any server of the cluster directs it again.
                || (code == u64::from(close_code::REJECTED) && &close.reason[..] == b"redirected")
                // A cluster server that lost the player's lease (its renewal did not land
                // in time): not another session of the player; the cluster takes it back.
                || (code == u64::from(close_code::TAKEN_OVER) && &close.reason[..] == b"lease_lost")
        }
        _ => false,
    }
}

/// Whether a `Reject` of a resume token means the session is gone for good (retry with a
/// fresh login at once) rather than "not now".
pub fn resume_refused(code: RejectCode) -> bool {
    matches!(
        code,
        RejectCode::InvalidToken
            | RejectCode::SessionExpired
            | RejectCode::TokenReplayed
            | RejectCode::TokenExpired
    )
}

/// Whether a failed attempt ends the reconnection (retrying cannot help).
pub fn attempt_is_fatal(error: &ClientError) -> bool {
    match error {
        ClientError::Rejected(r) => matches!(
            r.code,
            RejectCode::UnsupportedVersion | RejectCode::WrongAudience
        ),
        ClientError::Config(_) | ClientError::File { .. } | ClientError::Session(_) => true,
        _ => false,
    }
}

/// Where and as whom to (re)connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The endpoint (its default client configuration set).
    pub endpoint: quinn::Endpoint,
    /// The server.
    pub addr: SocketAddr,
    /// Other servers of the same cluster, tried in turn after `addr` (attempt 1 goes to
    /// `addr`, attempt 2 to the first of these, and so on, round): a server that crashed
    /// and does not come back is replaced by a peer, which admits the player once the dead
    /// server's lease has expired. Empty for a single server.
    pub fallbacks: Vec<SocketAddr>,
    /// TLS server name.
    pub server_name: String,
    /// Client name sent in `Hello`.
    pub client_name: String,
}

impl Target {
    /// The player now plays on `addr` (a redirect, or a recovery that landed on a
    /// fallback): it becomes the first server to try, the previous one a fallback.
    pub fn now_at(&mut self, addr: SocketAddr) {
        if addr == self.addr {
            return;
        }
        let previous = std::mem::replace(&mut self.addr, addr);
        self.fallbacks.retain(|a| *a != addr && *a != previous);
        self.fallbacks.insert(0, previous);
    }

    /// The server attempt `attempt` (from 1) goes to: `addr`, then each fallback in turn.
    pub fn addr_for(&self, attempt: u32) -> SocketAddr {
        let n = self.fallbacks.len() + 1;
        match (attempt.saturating_sub(1) as usize) % n {
            0 => self.addr,
            i => self.fallbacks[i - 1],
        }
    }
}

/// A lost connection, as [`recover`] needs to know it.
#[derive(Debug)]
pub struct Loss {
    /// When the loss was noticed (the deadline counts from here).
    pub at: Instant,
    /// Why the connection ended.
    pub error: ClientError,
    /// Wait before the first attempt (what a `Goaway` asked for; zero otherwise).
    pub wait: Duration,
    /// The last `Welcome.resume_token`, tried first.
    pub resume_token: Option<String>,
}

/// A session back after a loss.
#[derive(Debug)]
pub struct Recovered {
    /// The new connection.
    pub client: Client,
    /// Whether the resume token was taken (else: a fresh login).
    pub resumed: bool,
    /// Attempts it took.
    pub attempts: u32,
}

/// Gets a session back after `loss`: waits `loss.wait` (what a `Goaway` asked for), then
/// tries `loss.resume_token` (if any) and, once the server refuses it
/// ([`resume_refused`]), fresh logins with tokens from `tokens`; failed attempts are
/// retried after [`ReconnectPolicy::backoff`] until [`ReconnectPolicy::deadline`] after
/// the loss. `on_attempt(n, reason)` is called as attempt `n` starts, `reason` being why
/// the connection or the previous attempt failed.
///
/// This is the loop [`ReconnectingClient`] runs; the load generator calls it directly.
pub async fn recover(
    target: &Target,
    tokens: &dyn TokenProvider,
    policy: &ReconnectPolicy,
    loss: Loss,
    mut on_attempt: impl FnMut(u32, &str) + Send,
) -> Result<Recovered, ReconnectError> {
    let Loss {
        at: lost_at,
        error: loss,
        wait: first_wait,
        mut resume_token,
    } = loss;
    let give_up_at = lost_at + policy.deadline;
    let random_state = std::collections::hash_map::RandomState::new();
    let mut next_try = lost_at + first_wait;
    let mut last = loss;
    let mut attempts = 0u32;
    loop {
        tokio::time::sleep_until(next_try.min(give_up_at).into()).await;
        let now = Instant::now();
        if now >= give_up_at {
            return Err(ReconnectError::GaveUp {
                elapsed: now - lost_at,
                attempts,
                last,
            });
        }
        attempts += 1;
        on_attempt(attempts, &last.to_string());
        let resumed = resume_token.is_some();
        let token = match &resume_token {
            Some(t) => Ok(t.clone()),
            None => tokens.token().map_err(ClientError::Token),
        };
        let timeout = policy.attempt_timeout.min(give_up_at - now);
        let result = match token {
            Ok(token) => {
                Client::connect_timeout(
                    &target.endpoint,
                    target.addr_for(attempts),
                    &target.server_name,
                    &token,
                    &target.client_name,
                    timeout,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let error = match result {
            Ok(client) => {
                tracing::info!(resumed, attempts, down = ?lost_at.elapsed(), "reconnected");
                return Ok(Recovered {
                    client,
                    resumed,
                    attempts,
                });
            }
            Err(e) if attempt_is_fatal(&e) => return Err(ReconnectError::Fatal(e)),
            Err(e) => e,
        };
        let now = Instant::now();
        next_try = match &error {
            // The session is gone: log in afresh at once.
            ClientError::Rejected(r) if resumed && resume_refused(r.code) => {
                resume_token = None;
                now
            }
            ClientError::Goaway(g) => now + Duration::from_millis(g.reconnect_after_ms.into()),
            _ => {
                let mut h = random_state.build_hasher();
                h.write_u32(attempts);
                now + policy.backoff(attempts, h.finish())
            }
        };
        tracing::debug!(%error, attempts, "reconnect attempt failed");
        last = error;
    }
}

/// A recovery in progress.
type Recovery = Pin<Box<dyn Future<Output = Result<Recovered, ReconnectError>> + Send>>;

/// A [`Client`] that reconnects by itself (see the module docs). Drive it with
/// [`ReconnectingClient::next_event`], which is cancel-safe: a recovery in progress is
/// kept across calls.
pub struct ReconnectingClient {
    target: Target,
    tokens: Arc<dyn TokenProvider>,
    policy: ReconnectPolicy,
    client: Option<Client>,
    resume_token: Option<String>,
    goaway_after: Option<Duration>,
    /// When the current loss was noticed, and the recovery running for it.
    recovery: Option<(Instant, Recovery)>,
    attempts_rx: Option<tokio::sync::mpsc::UnboundedReceiver<(u32, String)>>,
    queued: VecDeque<Update>,
    stats: ReconnectStats,
    closed: bool,
    /// The snapshot rate last asked for (`Request::SnapshotRate`), asked again on every
    /// new connection (the server grants it per connection).
    snapshot_rate: Option<u16>,
}

impl std::fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("target", &self.target)
            .field("connected", &self.client.is_some())
            .field("policy", &self.policy)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ReconnectingClient {
    /// Logs in to `addr` (TLS name `server_name`) through `endpoint` with a token from
    /// `tokens`: one attempt, bounded by [`crate::DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        client_name: &str,
        tokens: Arc<dyn TokenProvider>,
        policy: ReconnectPolicy,
    ) -> Result<Self, ReconnectError> {
        let token = tokens
            .token()
            .map_err(|e| ReconnectError::Login(ClientError::Token(e)))?;
        let client = Client::connect(endpoint, addr, server_name, &token, client_name)
            .await
            .map_err(ReconnectError::Login)?;
        let mut target = Target {
            endpoint: endpoint.clone(),
            addr,
            fallbacks: Vec::new(),
            server_name: server_name.to_owned(),
            client_name: client_name.to_owned(),
        };
        // Redirected during the login: the player plays where it landed.
        target.now_at(client.connection().remote_address());
        Ok(Self {
            target,
            tokens,
            policy,
            resume_token: Some(client.welcome().resume_token.clone()),
            client: Some(client),
            goaway_after: None,
            recovery: None,
            attempts_rx: None,
            queued: VecDeque::new(),
            stats: ReconnectStats::default(),
            closed: false,
            snapshot_rate: None,
        })
    }

    /// The current connection, `None` while reconnecting.
    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// The current connection, mutably, `None` while reconnecting.
    pub fn client_mut(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// Where the client plays and what it falls back to (a followed redirect or a
    /// recovery on a fallback moves it).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Counters of losses, attempts, recoveries and redirects.
    pub fn stats(&self) -> ReconnectStats {
        self.stats
    }

    /// The policy in force.
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// Sends an input on the current connection; `Ok(None)` while reconnecting or after a
    /// `Goaway` (the input is dropped: movement is not replayed across a reconnection). A
    /// send that fails
    /// because the connection was lost starts the reconnection.
    pub fn send_input(&mut self, cmd: InputCmd) -> Result<Option<u32>, ReconnectError> {
        self.send_input_at(cmd, Instant::now())
    }

    /// [`ReconnectingClient::send_input`] for an input due at `due` (see
    /// [`Client::send_input_at`]).
    pub fn send_input_at(
        &mut self,
        cmd: InputCmd,
        due: Instant,
    ) -> Result<Option<u32>, ReconnectError> {
        let Some(client) = self.client.as_mut().filter(|_| self.goaway_after.is_none()) else {
            return self.idle_result();
        };
        match client.send_input_at(cmd, due) {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => self.on_loss(e).map(|()| None),
        }
    }

    /// Sends a request on the current connection; `Ok(None)` while reconnecting or after
    /// a `Goaway` (not sent: the application decides whether to send it again after the
    /// recovery). The exception is `Request::SnapshotRate`: the client remembers the rate
    /// and asks for it again on every new connection (its answer arrives as an
    /// [`Update::Incoming`] response after the `Resumed` or `Rejoined`).
    pub async fn request(&mut self, request: Request) -> Result<Option<u32>, ReconnectError> {
        if let Request::SnapshotRate { hz } = request {
            self.snapshot_rate = (hz != 0).then_some(hz);
        }
        let Some(client) = self.client.as_mut().filter(|_| self.goaway_after.is_none()) else {
            return self.idle_result();
        };
        match client.request(request).await {
            Ok(id) => Ok(Some(id)),
            Err(e) => self.on_loss(e).map(|()| None),
        }
    }

    fn idle_result<T>(&self) -> Result<Option<T>, ReconnectError> {
        if self.closed {
            Err(ReconnectError::Closed)
        } else {
            Ok(None)
        }
    }

    /// Waits for the next update: something from the server, or a step of a
    /// reconnection. An error is final (the deadline passed, a fatal refusal, or a loss
    /// the policy does not recover). Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Update, ReconnectError> {
        loop {
            if let Some(update) = self.queued.pop_front() {
                return Ok(update);
            }
            if self.closed {
                return Err(ReconnectError::Closed);
            }
            if let Some(client) = self.client.as_mut() {
                match client.next_event().await {
                    Ok(Incoming::Event(ClientEvent::Goaway(g))) => {
                        self.goaway_after =
                            Some(Duration::from_millis(g.reconnect_after_ms.into()));
                        return Ok(Update::Incoming(Incoming::Event(ClientEvent::Goaway(g))));
                    }
                    Ok(Incoming::Event(ClientEvent::Redirected(r))) if self.policy.enabled => {
                        self.on_redirect(r.clone());
                        return Ok(Update::Incoming(Incoming::Event(ClientEvent::Redirected(
                            r,
                        ))));
                    }
                    Ok(incoming) => return Ok(Update::Incoming(incoming)),
                    Err(e) => {
                        self.on_loss(e)?;
                        continue;
                    }
                }
            }
            let (Some((lost_at, recovery)), Some(rx)) =
                (self.recovery.as_mut(), self.attempts_rx.as_mut())
            else {
                self.closed = true;
                return Err(ReconnectError::Closed);
            };
            let lost_at = *lost_at;
            let outcome = tokio::select! {
                biased;
                Some((attempt, reason)) = rx.recv() => {
                    self.stats.attempts += 1;
                    return Ok(Update::Reconnecting { attempt, reason });
                }
                outcome = recovery => outcome,
            };
            self.recovery = None;
            if let Some(mut rx) = self.attempts_rx.take() {
                while let Ok((attempt, reason)) = rx.try_recv() {
                    self.stats.attempts += 1;
                    self.queued
                        .push_back(Update::Reconnecting { attempt, reason });
                }
            }
            match outcome {
                Ok(Recovered {
                    mut client,
                    resumed,
                    attempts,
                }) => {
                    let welcome = client.welcome().clone();
                    self.resume_token = Some(welcome.resume_token.clone());
                    self.target.now_at(client.connection().remote_address());
                    if self.policy.resync {
                        if let Err(e) = client.request(Request::GetInventory).await {
                            tracing::debug!(%e, "resync request failed");
                        }
                    }
                    if let Some(hz) = self.snapshot_rate {
                        if let Err(e) = client.request(Request::SnapshotRate { hz }).await {
                            tracing::debug!(%e, "snapshot rate request failed");
                        }
                    }
                    self.client = Some(client);
                    let update = if resumed {
                        self.stats.resumed += 1;
                        Update::Resumed {
                            welcome,
                            lost_at,
                            attempts,
                        }
                    } else {
                        self.stats.rejoined += 1;
                        Update::Rejoined {
                            welcome,
                            lost_at,
                            attempts,
                        }
                    };
                    self.queued.push_back(update);
                }
                Err(e) => {
                    self.closed = true;
                    self.queued.clear();
                    return Err(e);
                }
            }
        }
    }

    /// Follows a `Redirect` received after the `Welcome`: the player now plays on the
    /// server it names, which takes its ticket as a resume token (a fresh login when it
    /// refuses it); the server that sent it stays among the fallbacks.
    fn on_redirect(&mut self, r: Redirect) {
        // The sending server closes this connection; nothing more comes on it.
        self.client = None;
        self.goaway_after = None;
        self.resume_token = None;
        self.stats.redirects += 1;
        let lost_at = Instant::now();
        tracing::info!(to = %r.address, "redirected; following");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (mut target, tokens, policy) = (
            self.target.clone(),
            self.tokens.clone(),
            self.policy.clone(),
        );
        let recovery = Box::pin(async move {
            let to = crate::client::resolve(&r.address)
                .await
                .map_err(ReconnectError::Fatal)?;
            target.now_at(to);
            let loss = Loss {
                at: lost_at,
                error: ClientError::Goaway(Goaway {
                    reason: format!("redirected to {}", r.address),
                    reconnect_after_ms: 0,
                }),
                wait: Duration::ZERO,
                resume_token: Some(r.ticket),
            };
            recover(&target, &*tokens, &policy, loss, move |n, reason| {
                let _ = tx.send((n, reason.to_owned()));
            })
            .await
        });
        self.recovery = Some((lost_at, recovery));
        self.attempts_rx = Some(rx);
    }

    /// Records a loss: a recovery starts, or the error is final.
    fn on_loss(&mut self, error: ClientError) -> Result<(), ReconnectError> {
        self.client = None;
        if !self.policy.enabled || !loss_is_recoverable(&error, self.goaway_after.is_some()) {
            self.closed = true;
            return Err(ReconnectError::Lost(error));
        }
        self.stats.losses += 1;
        let lost_at = Instant::now();
        let wait = self.goaway_after.take().unwrap_or_default();
        tracing::info!(%error, ?wait, "connection lost; reconnecting");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (target, tokens, policy, resume) = (
            self.target.clone(),
            self.tokens.clone(),
            self.policy.clone(),
            self.resume_token.take(),
        );
        let recovery = Box::pin(async move {
            let loss = Loss {
                at: lost_at,
                error,
                wait,
                resume_token: resume,
            };
            recover(&target, &*tokens, &policy, loss, move |n, reason| {
                let _ = tx.send((n, reason.to_owned()));
            })
            .await
        });
        self.recovery = Some((lost_at, recovery));
        self.attempts_rx = Some(rx);
        Ok(())
    }

    /// Says `Bye` on the current connection (if any) and stops.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.closed = true;
        match self.client.take() {
            Some(client) => client.close().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonehost_protocol::message::Reject;

    #[test]
    fn attempts_go_to_the_server_then_each_fallback_in_turn() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let c: SocketAddr = "127.0.0.1:3".parse().expect("addr");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let endpoint = rt.block_on(async {
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint")
        });
        let mut t = Target {
            endpoint,
            addr: a,
            fallbacks: Vec::new(),
            server_name: "localhost".into(),
            client_name: "test".into(),
        };
        assert_eq!(
            (1..=3).map(|i| t.addr_for(i)).collect::<Vec<_>>(),
            vec![a, a, a]
        );
        t.fallbacks = vec![b, c];
        assert_eq!(
            (1..=7).map(|i| t.addr_for(i)).collect::<Vec<_>>(),
            vec![a, b, c, a, b, c, a]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let p = ReconnectPolicy {
            jitter: 0.0,
            ..ReconnectPolicy::default()
        };
        let ms = |a| p.backoff(a, u64::MAX).as_millis();
        assert_eq!(
            (ms(1), ms(2), ms(3), ms(4), ms(5), ms(50)),
            (100, 200, 400, 800, 1000, 1000)
        );
        let p = ReconnectPolicy::default();
        assert_eq!(p.backoff(3, 0), Duration::from_millis(400));
        assert_eq!(p.backoff(3, u64::MAX), Duration::from_millis(200));
        let mid = p.backoff(3, u64::MAX / 2);
        assert!(mid > Duration::from_millis(290) && mid < Duration::from_millis(310));
    }

    #[test]
    fn which_losses_and_refusals_are_retried() {
        let app = |code: u32| {
            ClientError::Connection(quinn::ConnectionError::ApplicationClosed(
                quinn::ApplicationClose {
                    error_code: code.into(),
                    reason: bytes::Bytes::new(),
                },
            ))
        };
        let reset = ClientError::Connection(quinn::ConnectionError::Reset);
        let idle = ClientError::Connection(quinn::ConnectionError::TimedOut);
        assert!(loss_is_recoverable(&reset, false));
        assert!(loss_is_recoverable(&idle, false));
        assert!(loss_is_recoverable(&app(close_code::SHUTDOWN), false));
        assert!(!loss_is_recoverable(&app(close_code::NORMAL), false));
        assert!(loss_is_recoverable(&app(close_code::NORMAL), true));
        assert!(!loss_is_recoverable(&app(close_code::TAKEN_OVER), true));
        assert!(!loss_is_recoverable(&app(close_code::ABUSE), false));
        assert!(!loss_is_recoverable(&app(close_code::REJECTED), false));
        let redirected = ClientError::Connection(quinn::ConnectionError::ApplicationClosed(
            quinn::ApplicationClose {
                error_code: close_code::REJECTED.into(),
                reason: bytes::Bytes::from_static(b"redirected"),
            },
        ));
        assert!(loss_is_recoverable(&redirected, false));
        let lease_lost = ClientError::Connection(quinn::ConnectionError::ApplicationClosed(
            quinn::ApplicationClose {
                error_code: close_code::TAKEN_OVER.into(),
                reason: bytes::Bytes::from_static(b"lease_lost"),
            },
        ));
        assert!(loss_is_recoverable(&lease_lost, false));
        assert!(!loss_is_recoverable(
            &ClientError::Connection(quinn::ConnectionError::LocallyClosed),
            true
        ));
        assert!(resume_refused(RejectCode::InvalidToken));
        assert!(resume_refused(RejectCode::SessionExpired));
        assert!(!resume_refused(RejectCode::ServerFull));
        assert!(!resume_refused(RejectCode::Draining));
        let rejected = |code| {
            ClientError::Rejected(Reject {
                code,
                reason: String::new(),
            })
        };
        assert!(attempt_is_fatal(&rejected(RejectCode::WrongAudience)));
        assert!(!attempt_is_fatal(&rejected(RejectCode::ServerFull)));
        assert!(!attempt_is_fatal(&ClientError::Timeout(
            Duration::from_secs(1)
        )));
        assert!(!attempt_is_fatal(&ClientError::Token("down".into())));
    }
}
