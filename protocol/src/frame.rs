//! Length-prefixed frames on reliable streams (SPEC.md §5).
//!
//! A frame is a 4-byte little-endian payload length followed by that many bytes of a
//! postcard-encoded message. Lengths above [`MAX_FRAME_LEN`] or of zero are rejected
//! before any payload is buffered, so a lying length prefix costs the receiver nothing.

use bytes::{Buf, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::Bounded;
use crate::{DecodeError, MAX_FRAME_LEN};

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Encodes `msg` as one frame (length prefix + postcard payload); a text field over its
/// limit ([`Bounded`]) is refused here rather than by the peer.
pub fn encode_frame<T: Serialize + Bounded>(msg: &T) -> Result<Bytes, DecodeError> {
    msg.check_bounds()?;
    let buf = vec![0u8; FRAME_HEADER_LEN];
    let mut buf = postcard::to_extend(msg, buf).map_err(|e| DecodeError::Message(e.to_string()))?;
    let len = buf.len() - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLong {
            len,
            limit: MAX_FRAME_LEN,
        });
    }
    buf[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(Bytes::from(buf))
}

/// Decodes one frame payload (without its length prefix) into a message whose text fields
/// are within their limits ([`Bounded`]).
pub fn decode_payload<T: DeserializeOwned + Bounded>(payload: &[u8]) -> Result<T, DecodeError> {
    let (msg, rest): (T, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|e| DecodeError::Message(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TooLong {
            len: payload.len(),
            limit: payload.len() - rest.len(),
        });
    }
    msg.check_bounds()?;
    Ok(msg)
}

/// Reassembles frames from stream chunks of any size.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_len` (capped at [`MAX_FRAME_LEN`]).
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len: max_len.min(MAX_FRAME_LEN),
        }
    }

    /// Appends received stream bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete payload, `Ok(None)` when more bytes are needed, or an error
    /// for a zero or oversized length prefix (the stream is then unusable).
    pub fn next_payload(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(DecodeError::Field {
                field: "length",
                reason: "zero-length frame",
            });
        }
        if len > self.max_len {
            return Err(DecodeError::TooLong {
                len,
                limit: self.max_len,
            });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            self.buf.reserve(FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Returns the next complete message decoded as `T`.
    pub fn next_message<T: DeserializeOwned + Bounded>(
        &mut self,
    ) -> Result<Option<T>, DecodeError> {
        match self.next_payload()? {
            Some(p) => decode_payload(&p).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientMsg, Hello, Request};
    use proptest::prelude::*;

    #[test]
    fn lying_length_is_rejected_before_buffering() {
        let mut d = FrameDecoder::default();
        d.extend(&u32::MAX.to_le_bytes());
        assert!(matches!(d.next_payload(), Err(DecodeError::TooLong { .. })));
        let mut z = FrameDecoder::default();
        z.extend(&[0, 0, 0, 0, 1]);
        assert!(matches!(z.next_payload(), Err(DecodeError::Field { .. })));
    }

    #[test]
    fn trailing_bytes_in_payload_are_rejected() {
        let mut frame = encode_frame(&ClientMsg::Bye).expect("encode").to_vec();
        frame.push(0);
        frame[0] += 1;
        let mut d = FrameDecoder::default();
        d.extend(&frame);
        assert!(d.next_message::<ClientMsg>().is_err());
    }

    proptest! {
        #[test]
        fn frames_survive_any_chunking(tokens in prop::collection::vec("[a-z]{0,40}", 1..8), cut in 1usize..50) {
            let msgs: Vec<ClientMsg> = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| if i % 2 == 0 {
                    ClientMsg::Hello(Hello { version: 1, token: t.clone(), client: "p".into() })
                } else {
                    ClientMsg::Request { id: i as u32, body: Request::Ping { client_time_us: i as u64 } }
                })
                .collect();
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend_from_slice(&encode_frame(m).expect("encode"));
            }
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                d.extend(chunk);
                while let Some(m) = d.next_message::<ClientMsg>().expect("decode") {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut d = FrameDecoder::default();
            d.extend(&bytes);
            while let Ok(Some(_)) = d.next_message::<ClientMsg>() {}
        }
    }
}
