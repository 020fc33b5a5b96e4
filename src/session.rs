//! Authentication (account tokens and resume tokens) and the registry of live sessions
//! (one per player, possibly detached while waiting for a resume).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use zonehost_protocol::message::{close_code, RejectCode};
use zonehost_protocol::token::{parse, sign, Claims, KeySet, TokenError, CLAIMS_VERSION};

use crate::config::SecondLogin;

use crate::link::{ConnShared, Link, Outbox, SessionId};
use crate::sim::{Control, IntoRoute, Route};
use crate::telemetry::DisconnectCause;

/// Audience of resume tokens (minted by this server for its own sessions).
pub const RESUME_AUDIENCE: &str = "zonehost-resume";
/// Lifetime of a resume token. Whether it still resumes anything is decided by the
/// session's grace period, not by this expiry.
pub const RESUME_TOKEN_TTL_SECS: u64 = 24 * 3600;
const RESUME_KEY_ID: u32 = u32::MAX;

/// Key id of redirect tickets (SPEC.md §3.7).
pub const TICKET_KEY_ID: u32 = u32::MAX - 1;
/// Audience prefix of redirect tickets; the target's `server_id` follows.
pub const TICKET_AUDIENCE_PREFIX: &str = "zonehost-ticket:";
/// Lifetime of a redirect ticket, seconds.
pub const TICKET_TTL_SECS: u64 = 30;

/// The audience of tickets for server `server_id`.
pub fn ticket_audience(server_id: &str) -> String {
    format!("{TICKET_AUDIENCE_PREFIX}{server_id}")
}

/// Current Unix time in seconds.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a verified `Hello` token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// A fresh login with an account token.
    Login(Claims),
    /// A resume of a detached session with a token this server minted.
    Resume(Claims),
}

impl Verified {
    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        match self {
            Verified::Login(c) | Verified::Resume(c) => c,
        }
    }
}

/// Mints resume tokens: signed by a per-process key, bound to the player, single use
/// (the replay guard remembers their nonces).
#[derive(Debug)]
pub struct ResumeMinter {
    key: SigningKey,
}

impl ResumeMinter {
    /// A minter with a fresh random key.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key set that verifies this minter's tokens.
    pub fn keys(&self) -> KeySet {
        let mut keys = KeySet::new();
        keys.insert(RESUME_KEY_ID, self.key.verifying_key());
        keys
    }

    /// A resume token for `player`, issued at `now` (Unix seconds).
    pub fn mint(&self, player: &str, now: u64) -> String {
        let mut nonce = [0u8; 16];
        if getrandom::fill(&mut nonce).is_err() {
            // Still single-use through the replay guard; only guessability suffers.
            nonce[..8].copy_from_slice(&now.to_le_bytes());
        }
        let claims = Claims {
            version: CLAIMS_VERSION,
            player: player.into(),
            audience: RESUME_AUDIENCE.into(),
            issued_at: now,
            expires_at: now + RESUME_TOKEN_TTL_SECS,
            nonce,
            key_id: RESUME_KEY_ID,
        };
        sign(&claims, &self.key)
    }
}

/// Verifies tokens against the configured keys, audience and clock.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: KeySet,
    audience: String,
    skew_secs: u64,
    resume_keys: KeySet,
    /// Cluster mode: the ticket key set and this server's ticket audience.
    tickets: Option<(KeySet, String)>,
}

impl Authenticator {
    /// Accepts account tokens signed by any key of `keys` for `audience`, and resume
    /// tokens verified by `resume_keys`.
    pub fn new(keys: KeySet, audience: String, skew_secs: u64, resume_keys: KeySet) -> Self {
        Self {
            keys,
            audience,
            skew_secs,
            resume_keys,
            tickets: None,
        }
    }

    /// Also accepts redirect tickets (SPEC.md §3.7) verified by `keys` for `audience`
    /// (`zonehost-ticket:<this server_id>`), as logins.
    pub fn with_tickets(mut self, keys: KeySet, audience: String) -> Self {
        self.tickets = Some((keys, audience));
        self
    }

    /// Verifies `token` now; maps failures to the `RejectCode` sent to the client.
    pub fn verify(&self, token: &str) -> Result<Verified, (RejectCode, TokenError)> {
        self.verify_at(token, unix_secs())
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Verified, (RejectCode, TokenError)> {
        let audience = parse(token).map(|(c, _, _)| c.audience).unwrap_or_default();
        let ticket = audience.starts_with(TICKET_AUDIENCE_PREFIX);
        let result = if let (true, Some((keys, own))) = (ticket, &self.tickets) {
            keys.verify(token, own, now, self.skew_secs)
                .map(Verified::Login)
        } else if audience == RESUME_AUDIENCE {
            self.resume_keys
                .verify(token, RESUME_AUDIENCE, now, self.skew_secs)
                .map(Verified::Resume)
        } else {
            self.keys
                .verify(token, &self.audience, now, self.skew_secs)
                .map(Verified::Login)
        };
        result.map_err(|e| {
            let code = match e {
                TokenError::Expired { .. } | TokenError::NotYetValid => RejectCode::TokenExpired,
                TokenError::WrongAudience(_) => RejectCode::WrongAudience,
                TokenError::Malformed(_)
                | TokenError::UnknownKey(_)
                | TokenError::BadSignature
                | TokenError::InvalidPlayer => RejectCode::InvalidToken,
            };
            (code, e)
        })
    }
}

/// How a session is reached: its connection, close bookkeeping and reliable outbox.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Player name.
    pub name: String,
    /// The connection.
    pub conn: Arc<dyn Link>,
    /// Close bookkeeping.
    pub shared: Arc<ConnShared>,
    /// Reliable outbox (events to this player from anywhere, e.g. party invites).
    pub outbox: Outbox,
}

#[derive(Debug)]
struct Entry {
    session: SessionId,
    contact: Contact,
    route: Arc<Route>,
    /// The connection was lost; the session waits in its world for a resume.
    detached: bool,
}

/// Live sessions by player id. Touched only when a session starts, detaches, resumes or
/// ends, never per tick.
#[derive(Debug)]
pub struct Registry {
    policy: SecondLogin,
    live: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    /// An empty registry applying `policy` to second logins.
    pub fn new(policy: SecondLogin) -> Self {
        Self {
            policy,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Single inserts and removes cannot leave the map inconsistent, so a poisoned
        // lock is still usable.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `player_id` for a new `session` owned by the worker `route` leads to. With
    /// `refuse`, fails if the player is live; with `take_over`, closes the old connection
    /// and claims the player. A detached session is always ended in favour of a login.
    pub fn claim(
        &self,
        player_id: u64,
        session: SessionId,
        contact: Contact,
        route: impl IntoRoute,
    ) -> Result<(), RejectCode> {
        let mut live = self.lock();
        if let Some(old) = live.get(&player_id) {
            if old.detached {
                old.route.control(Control::Leave {
                    session: old.session,
                });
            } else {
                match self.policy {
                    SecondLogin::Refuse => return Err(RejectCode::AlreadyConnected),
                    SecondLogin::TakeOver => {
                        old.contact.shared.set_cause(DisconnectCause::TakenOver);
                        old.contact
                            .conn
                            .close(close_code::TAKEN_OVER, b"taken over");
                    }
                }
            }
        }
        let entry = Entry {
            session,
            contact,
            route: route.into_route(),
            detached: false,
        };
        live.insert(player_id, entry);
        Ok(())
    }

    /// Ends `session` of `player_id` from the server's side (its ownership lease was lost):
    /// an attached connection is closed with `code` and `cause` (the connection task then
    /// ends the session), a detached session is told to leave. False if the session no
    /// longer holds the player.
    pub fn evict(
        &self,
        player_id: u64,
        session: SessionId,
        cause: DisconnectCause,
        code: u32,
    ) -> bool {
        let live = self.lock();
        match live.get(&player_id) {
            Some(e) if e.session == session => {
                if e.detached {
                    e.route.control(Control::Leave { session });
                } else {
                    e.contact.shared.set_cause(cause);
                    e.contact.conn.close(code, cause.as_str().as_bytes());
                }
                true
            }
            _ => false,
        }
    }

    /// Marks `session` of `player_id` detached (its connection was lost); false if the
    /// session no longer holds the player.
    pub fn detach(&self, player_id: u64, session: SessionId) -> bool {
        match self.lock().get_mut(&player_id) {
            Some(e) if e.session == session => {
                e.detached = true;
                true
            }
            _ => false,
        }
    }

    /// Re-attaches the detached session of `player_id` to a new connection; returns the
    /// session id and its route to the worker that owns it.
    pub fn reattach(
        &self,
        player_id: u64,
        contact: Contact,
    ) -> Result<(SessionId, Arc<Route>), RejectCode> {
        match self.lock().get_mut(&player_id) {
            Some(e) if e.detached => {
                e.detached = false;
                e.contact = contact;
                Ok((e.session, e.route.clone()))
            }
            Some(_) => Err(RejectCode::AlreadyConnected),
            None => Err(RejectCode::SessionExpired),
        }
    }

    /// Releases `player_id` if `session` still holds it.
    pub fn release(&self, player_id: u64, session: SessionId) {
        let mut live = self.lock();
        if live.get(&player_id).is_some_and(|e| e.session == session) {
            live.remove(&player_id);
        }
    }

    /// The name and outbox of a live, attached player.
    pub fn contact(&self, player_id: u64) -> Option<Contact> {
        self.lock()
            .get(&player_id)
            .filter(|e| !e.detached)
            .map(|e| e.contact.clone())
    }

    /// The route of a live player's session (attached or detached): which sim worker
    /// owns it.
    pub fn route(&self, player_id: u64) -> Option<(SessionId, Arc<Route>)> {
        self.lock()
            .get(&player_id)
            .map(|e| (e.session, e.route.clone()))
    }

    /// The name of a live player (attached or detached).
    pub fn name_of(&self, player_id: u64) -> Option<String> {
        self.lock().get(&player_id).map(|e| e.contact.name.clone())
    }

    /// Number of live players (detached ones included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no player is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(audience: &str) -> Claims {
        Claims {
            version: CLAIMS_VERSION,
            player: "p".into(),
            audience: audience.into(),
            issued_at: 100,
            expires_at: 200,
            nonce: [0; 16],
            key_id: 0,
        }
    }

    fn auth() -> (SigningKey, ResumeMinter, Authenticator) {
        let sk = SigningKey::from_bytes(&[3; 32]);
        let mut keys = KeySet::new();
        keys.insert(0, sk.verifying_key());
        let minter = ResumeMinter::random().expect("randomness");
        let auth = Authenticator::new(keys, "dev".into(), 30, minter.keys());
        (sk, minter, auth)
    }

    #[test]
    fn token_errors_map_to_reject_codes() {
        let (sk, _, auth) = auth();
        let t = sign(&claims("dev"), &sk);
        assert_eq!(auth.verify_at(&t, 150), Ok(Verified::Login(claims("dev"))));
        assert_eq!(
            auth.verify_at(&t, 300).map_err(|e| e.0),
            Err(RejectCode::TokenExpired)
        );
        assert_eq!(
            auth.verify_at("garbage", 150).map_err(|e| e.0),
            Err(RejectCode::InvalidToken)
        );
        let other = sign(&claims("prod"), &sk);
        assert_eq!(
            auth.verify_at(&other, 150).map_err(|e| e.0),
            Err(RejectCode::WrongAudience)
        );
    }

    #[test]
    fn resume_tokens_verify_only_with_the_minting_key() {
        let (sk, minter, auth) = auth();
        let t = minter.mint("p", 1000);
        assert!(matches!(auth.verify_at(&t, 1001), Ok(Verified::Resume(c)) if c.player == "p"));
        // An account key cannot forge a resume token.
        let forged = sign(
            &Claims {
                key_id: RESUME_KEY_ID,
                ..claims(RESUME_AUDIENCE)
            },
            &sk,
        );
        assert_eq!(
            auth.verify_at(&forged, 150).map_err(|e| e.0),
            Err(RejectCode::InvalidToken)
        );
    }
}
