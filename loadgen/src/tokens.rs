//! Tokens for the bots: minted with a signing key, produced by a command, or given.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use zonehost_protocol::token::{sign, valid_player_name, Claims, CLAIMS_VERSION};

use crate::config::TokenSource;
use crate::error::Error;

/// Player name of bot `index` in a run with `seed`.
pub fn bot_name(seed: u64, index: usize) -> String {
    format!("bot-{seed}-{index}")
}

/// One token per bot, in bot order.
pub(crate) fn tokens_for(
    source: &TokenSource,
    seed: u64,
    players: usize,
) -> Result<Vec<String>, Error> {
    let names: Vec<String> = (0..players).map(|i| bot_name(seed, i)).collect();
    if let Some(bad) = names.iter().find(|n| !valid_player_name(n)) {
        return Err(Error::Config(format!(
            "bot name {bad:?} is not a valid player name (use a smaller --seed)"
        )));
    }
    match source {
        TokenSource::SigningKey {
            key,
            key_id,
            audience,
            ttl,
        } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::Config("system clock before 1970".into()))?;
            names
                .into_iter()
                .map(|player| mint(key, *key_id, audience, player, now, *ttl))
                .collect()
        }
        TokenSource::Command(template) => names.iter().map(|n| run_command(template, n)).collect(),
        TokenSource::Fixed(tokens) => {
            if tokens.len() < players {
                return Err(Error::Config(format!(
                    "{} tokens given for {players} players",
                    tokens.len()
                )));
            }
            Ok(tokens[..players].to_vec())
        }
    }
}

/// A fresh token for bot `index` (a reconnect: tokens are single use). Fixed tokens cannot
/// be renewed.
pub(crate) fn fresh_token(source: &TokenSource, seed: u64, index: usize) -> Result<String, Error> {
    let name = bot_name(seed, index);
    match source {
        TokenSource::SigningKey {
            key,
            key_id,
            audience,
            ttl,
        } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::Config("system clock before 1970".into()))?;
            mint(key, *key_id, audience, name, now, *ttl)
        }
        TokenSource::Command(template) => run_command(template, &name),
        TokenSource::Fixed(_) => Err(Error::Token(
            "fixed tokens cannot be renewed for a reconnect".into(),
        )),
    }
}

/// Signs a token for `player` valid from `now` (Unix time) for `ttl`, with a random nonce.
pub fn mint(
    key: &SigningKey,
    key_id: u32,
    audience: &str,
    player: String,
    now: Duration,
    ttl: Duration,
) -> Result<String, Error> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| Error::Config(format!("random nonce: {e}")))?;
    let claims = Claims {
        version: CLAIMS_VERSION,
        player,
        audience: audience.to_string(),
        issued_at: now.as_secs(),
        expires_at: now.as_secs().saturating_add(ttl.as_secs()),
        nonce,
        key_id,
    };
    Ok(sign(&claims, key))
}

fn run_command(template: &str, player: &str) -> Result<String, Error> {
    let command = template.replace("{player}", player);
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output()
        .map_err(|e| Error::Token(format!("running {command:?}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Token(format!(
            "{command:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let token = String::from_utf8(out.stdout)
        .map_err(|_| Error::Token(format!("{command:?} printed non-UTF-8")))?;
    let token = token.trim();
    // The token is the last non-empty line, so tools that print a banner still work.
    let token = token.lines().last().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(Error::Token(format!("{command:?} printed no token")));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonehost_protocol::token::{parse, KeySet};

    #[test]
    fn minted_tokens_verify() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let source = TokenSource::SigningKey {
            key: Box::new(key.clone()),
            key_id: 4,
            audience: "dev".into(),
            ttl: Duration::from_secs(3600),
        };
        let tokens = tokens_for(&source, 1, 3).expect("tokens");
        assert_eq!(tokens.len(), 3);
        let (claims, _, _) = parse(&tokens[2]).expect("parse");
        assert_eq!(claims.player, "bot-1-2");
        assert_eq!(claims.key_id, 4);
        assert_eq!(claims.audience, "dev");
        assert_eq!(claims.expires_at - claims.issued_at, 3600);
        let mut verifier = KeySet::new();
        verifier.insert(4, key.verifying_key());
        let verified = verifier
            .verify(&tokens[2], "dev", claims.issued_at, 0)
            .expect("verifies");
        assert_eq!(verified, claims);
        assert!(verifier
            .verify(&tokens[2], "prod", claims.issued_at, 0)
            .is_err());
        let (c0, _, _) = parse(&tokens[0]).expect("parse");
        assert_ne!(c0.nonce, claims.nonce);
    }

    #[test]
    fn names_are_valid_and_checked() {
        assert!(valid_player_name(&bot_name(u64::MAX, 9999)));
        let source = TokenSource::Fixed(vec!["a".into(); 2]);
        assert!(tokens_for(&source, 1, 3).is_err());
        assert_eq!(tokens_for(&source, 1, 2).expect("fixed"), vec!["a", "a"]);
    }

    #[test]
    fn command_tokens() {
        let source = TokenSource::Command("echo banner; echo tok-{player}".into());
        assert_eq!(
            tokens_for(&source, 7, 2).expect("cmd"),
            vec!["tok-bot-7-0", "tok-bot-7-1"]
        );
        assert!(tokens_for(&TokenSource::Command("exit 3".into()), 7, 1).is_err());
        assert!(tokens_for(&TokenSource::Command("true".into()), 7, 1).is_err());
    }
}
