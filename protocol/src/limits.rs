//! Length limits of the variable-length fields of the wire format (SPEC.md §3.4, §6.6).
//! Beneath the modules that enforce them: [`crate::message`] checks every field of a
//! message, [`crate::token`] the player name a token carries; both re-export them.

/// Longest accepted token text, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Longest accepted free-text field (client name, reasons), in bytes.
pub const MAX_TEXT_LEN: usize = 256;

/// Longest `Redirect.address` in bytes (`host:port`).
pub const MAX_ADDRESS_LEN: usize = 128;

/// Most members a party event may list (the party size limit of the game rules).
pub const MAX_PARTY_MEMBERS: usize = 4;

/// Most items one side of a trade may offer (the game's `TRADE_MAX_ITEMS`); bounds every
/// item list of a trade event.
pub const MAX_TRADE_ITEMS: usize = 8;

/// Longest player name, in bytes.
pub const MAX_PLAYER_NAME_LEN: usize = 32;
