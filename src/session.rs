//! Authentication and the registry of live sessions (one per player).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use zonehost_protocol::message::{close_code, RejectCode};
use zonehost_protocol::token::{Claims, KeySet, TokenError};

use crate::config::SecondLogin;
use crate::sim::{ConnShared, Link, SessionId};
use crate::telemetry::DisconnectCause;

/// Verifies tokens against the configured keys, audience and clock.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: KeySet,
    audience: String,
    skew_secs: u64,
}

impl Authenticator {
    /// An authenticator accepting tokens signed by any key of `keys` for `audience`.
    pub fn new(keys: KeySet, audience: String, skew_secs: u64) -> Self {
        Self {
            keys,
            audience,
            skew_secs,
        }
    }

    /// Verifies `token` now; maps failures to the `RejectCode` sent to the client.
    pub fn verify(&self, token: &str) -> Result<Claims, (RejectCode, TokenError)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.verify_at(token, now)
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, (RejectCode, TokenError)> {
        self.keys
            .verify(token, &self.audience, now, self.skew_secs)
            .map_err(|e| {
                let code = match e {
                    TokenError::Expired { .. } | TokenError::NotYetValid => {
                        RejectCode::TokenExpired
                    }
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

#[derive(Debug)]
struct Entry {
    session: SessionId,
    conn: Arc<dyn Link>,
    shared: Arc<ConnShared>,
}

/// Live sessions by player id. Touched only when a session starts or ends, never per tick.
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
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `player_id` for `session`. With `refuse`, fails if the player is live; with
    /// `take_over`, closes the old connection and claims the player.
    pub fn claim(
        &self,
        player_id: u64,
        session: SessionId,
        conn: &Arc<dyn Link>,
        shared: &Arc<ConnShared>,
    ) -> Result<(), RejectCode> {
        let mut live = self.lock();
        if let Some(old) = live.get(&player_id) {
            match self.policy {
                SecondLogin::Refuse => return Err(RejectCode::AlreadyConnected),
                SecondLogin::TakeOver => {
                    old.shared.set_cause(DisconnectCause::TakenOver);
                    old.conn.close(close_code::TAKEN_OVER, b"taken over");
                }
            }
        }
        live.insert(
            player_id,
            Entry {
                session,
                conn: conn.clone(),
                shared: shared.clone(),
            },
        );
        Ok(())
    }

    /// Releases `player_id` if `session` still holds it.
    pub fn release(&self, player_id: u64, session: SessionId) {
        let mut live = self.lock();
        if live.get(&player_id).is_some_and(|e| e.session == session) {
            live.remove(&player_id);
        }
    }

    /// Number of live players.
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
    use ed25519_dalek::SigningKey;
    use zonehost_protocol::token::{sign, CLAIMS_VERSION};

    #[test]
    fn token_errors_map_to_reject_codes() {
        let sk = SigningKey::from_bytes(&[3; 32]);
        let mut keys = KeySet::new();
        keys.insert(0, sk.verifying_key());
        let auth = Authenticator::new(keys, "dev".into(), 30);
        let claims = Claims {
            version: CLAIMS_VERSION,
            player: "p".into(),
            audience: "dev".into(),
            issued_at: 100,
            expires_at: 200,
            nonce: [0; 16],
            key_id: 0,
        };
        let t = sign(&claims, &sk);
        assert!(auth.verify_at(&t, 150).is_ok());
        assert_eq!(
            auth.verify_at(&t, 300).map_err(|e| e.0),
            Err(RejectCode::TokenExpired)
        );
        assert_eq!(
            auth.verify_at("garbage", 150).map_err(|e| e.0),
            Err(RejectCode::InvalidToken)
        );
        let other = sign(
            &Claims {
                audience: "prod".into(),
                ..claims
            },
            &sk,
        );
        assert_eq!(
            auth.verify_at(&other, 150).map_err(|e| e.0),
            Err(RejectCode::WrongAudience)
        );
    }
}
