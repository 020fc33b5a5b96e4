//! Signed, expiring authentication tokens (SPEC.md §3).
//!
//! Binary form: `claims_len: u16 LE`, postcard-encoded [`Claims`], then a 64-byte Ed25519
//! signature over `SIGNING_CONTEXT || claims`. Text form (sent in `Hello`): the binary form
//! in unpadded base64url. An account backend mints tokens with its signing key; servers
//! hold the matching verifying keys, selected by `key_id` (several at once for rotation).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::MAX_TOKEN_LEN;

pub use crate::limits::MAX_PLAYER_NAME_LEN;

/// Domain-separation prefix of the signed bytes.
pub const SIGNING_CONTEXT: &[u8] = b"zonehost-token-v1\0";
/// Claims format version.
pub const CLAIMS_VERSION: u8 = 1;
const SIGNATURE_LEN: usize = 64;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Claims format version, [`CLAIMS_VERSION`].
    pub version: u8,
    /// Player (account character) name: 1..=32 bytes of `[A-Za-z0-9_-]`.
    pub player: String,
    /// Audience: the cluster or server id the token is valid for.
    pub audience: String,
    /// Issued at, Unix seconds.
    pub issued_at: u64,
    /// Expires at, Unix seconds.
    pub expires_at: u64,
    /// Random nonce; servers remember nonces until expiry to refuse replays.
    pub nonce: [u8; 16],
    /// Id of the signing key, to select the verifying key.
    pub key_id: u32,
}

impl Claims {
    /// Stable 64-bit player id: the first 8 bytes (LE) of SHA-256(`"zonehost-player:" || player`).
    pub fn player_id(&self) -> u64 {
        player_id(&self.player)
    }
}

/// Stable 64-bit player id of a player name (see [`Claims::player_id`]).
pub fn player_id(name: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"zonehost-player:")
        .chain_update(name.as_bytes())
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(id)
}

/// Whether `name` is a valid player name.
pub fn valid_player_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PLAYER_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not valid base64url, too long, or not a well-formed binary token.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// No verifying key with this id.
    #[error("unknown key id {0}")]
    UnknownKey(u32),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The token expired.
    #[error("token expired at {expires_at}, now {now}")]
    Expired {
        /// Expiry, Unix seconds.
        expires_at: u64,
        /// Verification time, Unix seconds.
        now: u64,
    },
    /// Issued in the future beyond the allowed clock skew.
    #[error("token issued in the future")]
    NotYetValid,
    /// The audience does not match this server.
    #[error("token is for audience {0:?}")]
    WrongAudience(String),
    /// The player name is not valid.
    #[error("invalid player name")]
    InvalidPlayer,
}

/// Signs `claims` and returns the token text.
pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    // Serializing a struct of strings and integers into a Vec cannot fail.
    let body = postcard::to_allocvec(claims).unwrap_or_default();
    let mut signed = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    signed.extend_from_slice(SIGNING_CONTEXT);
    signed.extend_from_slice(&body);
    let sig = key.sign(&signed);
    let mut bin = Vec::with_capacity(2 + body.len() + SIGNATURE_LEN);
    bin.extend_from_slice(&(body.len() as u16).to_le_bytes());
    bin.extend_from_slice(&body);
    bin.extend_from_slice(&sig.to_bytes());
    URL_SAFE_NO_PAD.encode(bin)
}

/// Parses a token without checking its signature or times (for inspection and fuzzing).
pub fn parse(text: &str) -> Result<(Claims, Vec<u8>, Signature), TokenError> {
    if text.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let bin = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed("not base64url"))?;
    let (len, rest) = bin
        .split_first_chunk::<2>()
        .ok_or(TokenError::Malformed("truncated"))?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() != len + SIGNATURE_LEN {
        return Err(TokenError::Malformed("length mismatch"));
    }
    let (body, sig) = rest.split_at(len);
    let (claims, tail): (Claims, _) =
        postcard::take_from_bytes(body).map_err(|_| TokenError::Malformed("bad claims"))?;
    if !tail.is_empty() {
        return Err(TokenError::Malformed("trailing claim bytes"));
    }
    if claims.version != CLAIMS_VERSION {
        return Err(TokenError::Malformed("claims version"));
    }
    let sig = Signature::from_slice(sig).map_err(|_| TokenError::Malformed("signature"))?;
    Ok((claims, body.to_vec(), sig))
}

/// Verifying keys a server accepts, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<(u32, VerifyingKey)>,
}

impl KeySet {
    /// An empty key set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the verifying key of `key_id`.
    pub fn insert(&mut self, key_id: u32, key: VerifyingKey) {
        self.keys.retain(|(id, _)| *id != key_id);
        self.keys.push((key_id, key));
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies signature, audience, player name and validity window at `now` (Unix
    /// seconds), allowing `skew_secs` of clock difference each way.
    pub fn verify(
        &self,
        text: &str,
        audience: &str,
        now: u64,
        skew_secs: u64,
    ) -> Result<Claims, TokenError> {
        let (claims, body, sig) = parse(text)?;
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == claims.key_id)
            .map(|(_, k)| k)
            .ok_or(TokenError::UnknownKey(claims.key_id))?;
        let mut signed = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
        signed.extend_from_slice(SIGNING_CONTEXT);
        signed.extend_from_slice(&body);
        key.verify_strict(&signed, &sig)
            .map_err(|_| TokenError::BadSignature)?;
        if claims.audience != audience {
            return Err(TokenError::WrongAudience(claims.audience));
        }
        if !valid_player_name(&claims.player) {
            return Err(TokenError::InvalidPlayer);
        }
        if claims.issued_at > now.saturating_add(skew_secs) {
            return Err(TokenError::NotYetValid);
        }
        if now > claims.expires_at.saturating_add(skew_secs) {
            return Err(TokenError::Expired {
                expires_at: claims.expires_at,
                now,
            });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims() -> Claims {
        Claims {
            version: 1,
            player: "alice".into(),
            audience: "dev".into(),
            issued_at: 1000,
            expires_at: 2000,
            nonce: [7; 16],
            key_id: 3,
        }
    }

    fn keys() -> (SigningKey, KeySet) {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let mut ks = KeySet::new();
        ks.insert(3, sk.verifying_key());
        (sk, ks)
    }

    #[test]
    fn valid_token_verifies() {
        let (sk, ks) = keys();
        let t = sign(&claims(), &sk);
        assert_eq!(ks.verify(&t, "dev", 1500, 30), Ok(claims()));
        assert_eq!(claims().player_id(), player_id("alice"));
        assert_ne!(player_id("alice"), player_id("bob"));
    }

    #[test]
    fn each_refusal_is_typed() {
        let (sk, ks) = keys();
        let t = sign(&claims(), &sk);
        assert!(matches!(
            ks.verify(&t, "dev", 2031, 30),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(ks.verify(&t, "dev", 969, 30), Err(TokenError::NotYetValid));
        assert_eq!(
            ks.verify(&t, "prod", 1500, 30),
            Err(TokenError::WrongAudience("dev".into()))
        );
        let other = SigningKey::from_bytes(&[1; 32]);
        assert_eq!(
            ks.verify(&sign(&claims(), &other), "dev", 1500, 30),
            Err(TokenError::BadSignature)
        );
        let unknown = Claims {
            key_id: 4,
            ..claims()
        };
        assert_eq!(
            ks.verify(&sign(&unknown, &sk), "dev", 1500, 30),
            Err(TokenError::UnknownKey(4))
        );
        let bad_name = Claims {
            player: "a b".into(),
            ..claims()
        };
        assert_eq!(
            ks.verify(&sign(&bad_name, &sk), "dev", 1500, 30),
            Err(TokenError::InvalidPlayer)
        );
        assert!(matches!(
            ks.verify("!!", "dev", 1500, 30),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            ks.verify(&"A".repeat(2000), "dev", 1500, 30),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn tampered_claims_fail_signature() {
        let (sk, ks) = keys();
        let t = sign(&claims(), &sk);
        let mut bin = URL_SAFE_NO_PAD.decode(&t).expect("b64");
        let i = bin.len() - 70;
        bin[i] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(bin);
        assert!(ks.verify(&forged, "dev", 1500, 30).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "[A-Za-z0-9_-]{0,300}") {
            let _ = parse(&s);
        }
    }
}
