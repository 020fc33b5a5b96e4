//! Messages carried in frames on the control stream (SPEC.md §6).
//!
//! Encoded with postcard 1.x (serde): enums as a varint variant index in declaration
//! order, integers as varints, strings and vectors as a varint length then bytes.
//! New variants are only ever appended, so older peers reject them with a typed error.

use serde::{Deserialize, Serialize};

/// Longest accepted token text, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Longest accepted free-text field (client name, reasons), in bytes.
pub const MAX_TEXT_LEN: usize = 256;

/// Every message a client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message on the control stream; nothing else is accepted before `Welcome`.
    Hello(Hello),
    /// A request; the server answers with a `Response` of the same id.
    Request {
        /// Client-chosen id echoed in the response.
        id: u32,
        /// The request.
        body: Request,
    },
    /// The client is leaving; the server saves and closes the session.
    Bye,
}

/// The opening message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// Signed authentication token in its text form (see [`crate::token`]).
    pub token: String,
    /// Free-form client name and version, for logs (at most [`MAX_TEXT_LEN`] bytes).
    pub client: String,
}

/// Requests a client may make once welcomed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Round-trip probe; answered with [`Response::Pong`].
    Ping {
        /// Client clock in microseconds, echoed back.
        client_time_us: u64,
    },
}

impl Request {
    /// Stable, low-cardinality name of the request kind (metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping { .. } => "ping",
        }
    }
}

/// Successful answers to requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's `client_time_us`.
        client_time_us: u64,
        /// Server tick when the request was applied.
        server_tick: u32,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// The request is not valid in the session's current state.
    #[error("not allowed now")]
    NotAllowed,
    /// The request was rate limited.
    #[error("rate limited")]
    RateLimited,
    /// The server failed internally; the request had no effect.
    #[error("internal error")]
    Internal,
}

/// Every message the server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The session is accepted.
    Welcome(Welcome),
    /// The session is refused; the server closes the connection after sending it.
    Reject(Reject),
    /// Answer to the request with the same id.
    Response {
        /// Id of the request answered.
        id: u32,
        /// Outcome.
        body: Result<Response, RequestError>,
    },
    /// Something happened in the world that the client must know reliably.
    Event(Event),
    /// The server is going away; reconnect after the given delay.
    Goaway(Goaway),
}

/// Session parameters granted by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Stable player id derived from the token's player name.
    pub player_id: u64,
    /// Id of the player's entity in its zone instance (used to find its ack in snapshots).
    pub entity_id: u32,
    /// Zone template id.
    pub zone: u16,
    /// Zone instance id.
    pub instance: u32,
    /// Simulation ticks per second.
    pub tick_rate_hz: u16,
    /// Snapshots per second.
    pub snapshot_rate_hz: u16,
    /// Current simulation tick.
    pub server_tick: u32,
    /// Server wall clock, microseconds since the Unix epoch.
    pub server_time_us: u64,
    /// Movement speed limit in millimetres per second.
    pub max_speed_mms: u32,
    /// Single-use token that resumes this session on a new connection (send it as
    /// `Hello.token`) if the connection is lost; valid while the server keeps the session,
    /// i.e. for its resume grace period after the loss.
    pub resume_token: String,
}

/// Reasons a session is refused. The index of each variant is its wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectCode {
    /// The client's protocol version is not supported (code 0).
    UnsupportedVersion,
    /// The token is malformed or its signature does not verify (code 1).
    InvalidToken,
    /// The token has expired (code 2).
    TokenExpired,
    /// The token is for another server or cluster (code 3).
    WrongAudience,
    /// The player already has a live session (code 4).
    AlreadyConnected,
    /// The server is at its player limit (code 5).
    ServerFull,
    /// The server is draining and takes no new players (code 6).
    Draining,
    /// The client sent something other than a valid `Hello` (code 7).
    ProtocolViolation,
    /// The client did not send `Hello` in time (code 8).
    HelloTimeout,
    /// The token has been used already (code 9).
    TokenReplayed,
    /// The server failed internally (code 10).
    Internal,
    /// A resume token was presented but its session is gone (grace period over) (code 11).
    SessionExpired,
}

impl RejectCode {
    /// Stable snake_case name (metrics label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::UnsupportedVersion => "unsupported_version",
            RejectCode::InvalidToken => "invalid_token",
            RejectCode::TokenExpired => "token_expired",
            RejectCode::WrongAudience => "wrong_audience",
            RejectCode::AlreadyConnected => "already_connected",
            RejectCode::ServerFull => "server_full",
            RejectCode::Draining => "draining",
            RejectCode::ProtocolViolation => "protocol_violation",
            RejectCode::HelloTimeout => "hello_timeout",
            RejectCode::TokenReplayed => "token_replayed",
            RejectCode::Internal => "internal",
            RejectCode::SessionExpired => "session_expired",
        }
    }
}

/// A refused session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable detail (at most [`MAX_TEXT_LEN`] bytes).
    pub reason: String,
}

/// Reliable world events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A free-form server notice (e.g. an operator message).
    Notice {
        /// The text.
        text: String,
    },
}

/// The server is shutting down or moving the player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goaway {
    /// Why.
    pub reason: String,
    /// Milliseconds the client should wait before reconnecting.
    pub reconnect_after_ms: u32,
}

/// QUIC application error codes used when closing a connection (SPEC.md §7).
pub mod close_code {
    /// Normal close (the client said `Bye`, or the server finished a drain).
    pub const NORMAL: u32 = 0;
    /// The session was refused (a `Reject` was sent first).
    pub const REJECTED: u32 = 1;
    /// The peer violated the protocol (malformed or out-of-state message).
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The client read too slowly; its outbox overflowed.
    pub const SLOW_READER: u32 = 3;
    /// Another session for the same player took over.
    pub const TAKEN_OVER: u32 = 4;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 5;
    /// Repeated abuse (rate limits, invalid actions).
    pub const ABUSE: u32 = 6;
    /// Internal server error.
    pub const INTERNAL: u32 = 7;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_payload, encode_frame, FRAME_HEADER_LEN};

    #[test]
    fn hello_bytes_are_exact() {
        let f = encode_frame(&ClientMsg::Hello(Hello {
            version: 1,
            token: "ab".into(),
            client: "c".into(),
        }))
        .expect("encode");
        assert_eq!(&f[..], &[7, 0, 0, 0, 0, 1, 2, b'a', b'b', 1, b'c']);
    }

    #[test]
    fn reject_code_is_variant_index() {
        let f = encode_frame(&ServerMsg::Reject(Reject {
            code: RejectCode::TokenExpired,
            reason: String::new(),
        }))
        .expect("encode");
        assert_eq!(&f[FRAME_HEADER_LEN..], &[1, 2, 0]);
    }

    #[test]
    fn unknown_variant_is_a_typed_error() {
        assert!(decode_payload::<ClientMsg>(&[42]).is_err());
        assert!(decode_payload::<ServerMsg>(&[]).is_err());
    }
}
