//! Decoding errors shared by every decoder of the crate.

use thiserror::Error;

/// Why a datagram, frame, snapshot or token could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before a complete header or body.
    #[error("truncated: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The input is longer than the declared or permitted size.
    #[error("too long: {len} bytes, limit {limit}")]
    TooLong {
        /// Bytes present or declared.
        len: usize,
        /// Limit in bytes.
        limit: usize,
    },
    /// The protocol version byte is not one this build speaks.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// The datagram kind byte is unknown or not valid in this direction.
    #[error("unknown datagram kind {0}")]
    Kind(u8),
    /// A field holds a value outside its documented range.
    #[error("invalid field `{field}`: {reason}")]
    Field {
        /// Field name as in SPEC.md.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The rkyv snapshot body failed validation.
    #[error("invalid snapshot body: {0}")]
    Snapshot(String),
    /// The postcard message body failed to decode.
    #[error("invalid message: {0}")]
    Message(String),
}
