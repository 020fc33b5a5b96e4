//! `token::parse` and `KeySet::verify` on arbitrary text (SPEC.md §3).
//!
//! Properties: never panics; a token that parses is exactly the unpadded base64url of
//! `claims_len || claims || signature` (the text form is canonical); a token that
//! verifies satisfies every verification rule, and re-signing its claims with the same
//! key gives a token that verifies to the same claims.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use zonehost_protocol::message::MAX_TOKEN_LEN;
use zonehost_protocol::token::{parse, sign, valid_player_name, KeySet, CLAIMS_VERSION};

/// The signing keys of the seed tokens (`examples/gen_seeds.rs`), by key id.
const KEYS: [(u32, [u8; 32]); 2] = [(3, [9; 32]), (7, [1; 32])];
const AUDIENCE: &str = "dev";
const SKEW: u64 = 30;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut keys = KeySet::new();
    for (id, seed) in KEYS {
        keys.insert(id, SigningKey::from_bytes(&seed).verifying_key());
    }

    let parsed = parse(&text);
    if let Ok((claims, body, sig)) = &parsed {
        assert!(text.len() <= MAX_TOKEN_LEN);
        assert_eq!(claims.version, CLAIMS_VERSION);
        let mut bin = (body.len() as u16).to_le_bytes().to_vec();
        bin.extend_from_slice(body);
        bin.extend_from_slice(&sig.to_bytes());
        assert_eq!(URL_SAFE_NO_PAD.encode(&bin), text, "text form is canonical");
    }

    // The seeds are valid at 1500; the extremes exercise the saturating time checks.
    for now in [0, 1500, u64::MAX] {
        let Ok(claims) = keys.verify(&text, AUDIENCE, now, SKEW) else {
            continue;
        };
        let (parsed_claims, _, _) = parsed.as_ref().expect("verified tokens parse");
        assert_eq!(&claims, parsed_claims);
        let seed = KEYS
            .iter()
            .find(|(id, _)| *id == claims.key_id)
            .map(|(_, seed)| seed)
            .expect("verified with a key of the set");
        assert_eq!(claims.audience, AUDIENCE);
        assert!(valid_player_name(&claims.player));
        assert!(claims.issued_at <= now.saturating_add(SKEW));
        assert!(now <= claims.expires_at.saturating_add(SKEW));

        let again = sign(&claims, &SigningKey::from_bytes(seed));
        assert!(
            again.len() <= text.len(),
            "minimal re-encoding is no longer"
        );
        assert_eq!(keys.verify(&again, AUDIENCE, now, SKEW), Ok(claims));
    }
});
