//! Helpers shared by the fuzz targets and the seed generator (`examples/gen_seeds.rs`).
//!
//! * [`check_frames`]: the property run by `frame_client` and `frame_server`.
//! * [`Op`]: the little language the `client_session` target reads its input in.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zonehost_protocol::frame::{decode_payload, encode_frame, FrameDecoder, FRAME_HEADER_LEN};
use zonehost_protocol::message::Bounded;
use zonehost_protocol::DecodeError;

/// Input layout of the frame targets: `n = data[0] & 7`, then `n` chunk-length bytes
/// (each chunk is `byte + 1` long, used cyclically; none means one single chunk), then
/// the stream bytes.
pub fn split_chunking(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n & 7).min(rest.len());
    Some(rest.split_at(n))
}

/// Builds a frame-target input: the chunk lengths (each `1..=256`) then the stream.
pub fn frame_input(chunks: &[usize], stream: &[u8]) -> Vec<u8> {
    assert!(chunks.len() <= 7 && chunks.iter().all(|c| (1..=256).contains(c)));
    let mut v = vec![chunks.len() as u8];
    v.extend(chunks.iter().map(|c| (c - 1) as u8));
    v.extend_from_slice(stream);
    v
}

/// Pulls every complete frame from `d`: `(message, payload length)` in order, and whether
/// the stream ended in an error (after which the stream is unusable).
fn drain<T: DeserializeOwned + Bounded>(d: &mut FrameDecoder, out: &mut Vec<(T, usize)>) -> bool {
    loop {
        match d.next_payload() {
            Ok(None) => return false,
            Ok(Some(p)) => match decode_payload::<T>(&p) {
                Ok(m) => out.push((m, p.len())),
                Err(_) => return true,
            },
            Err(e) => {
                // Only a zero or oversized length prefix fails before the payload.
                assert!(
                    matches!(
                        e,
                        DecodeError::TooLong { .. }
                            | DecodeError::Field {
                                field: "length",
                                ..
                            }
                    ),
                    "unexpected frame error {e:?}"
                );
                return true;
            }
        }
    }
}

/// The frame decoder property: feeding the stream in arbitrary chunks yields exactly
/// what feeding it at once yields (same messages, same error, same leftover bytes), and
/// every decoded message re-encodes to a frame no longer than the one received (encoders
/// write minimal varints, decoders also accept longer ones) that decodes to itself.
pub fn check_frames<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug + Bounded,
{
    let Some((lens, stream)) = split_chunking(data) else {
        return;
    };

    let mut whole = FrameDecoder::default();
    whole.extend(stream);
    let mut want = Vec::new();
    let want_err = drain::<T>(&mut whole, &mut want);

    let mut chunked = FrameDecoder::default();
    let mut got = Vec::new();
    let mut got_err = false;
    let (mut pos, mut i) = (0, 0);
    while pos < stream.len() && !got_err {
        let len = match lens {
            [] => stream.len(),
            _ => usize::from(lens[i % lens.len()]) + 1,
        };
        i += 1;
        let end = (pos + len).min(stream.len());
        chunked.extend(&stream[pos..end]);
        pos = end;
        got_err = drain::<T>(&mut chunked, &mut got);
    }
    assert_eq!(got, want, "chunking changed the decoded messages");
    assert_eq!(got_err, want_err, "chunking changed the error");
    if !got_err {
        assert_eq!(chunked.buffered(), whole.buffered());
    }

    for (msg, payload_len) in &got {
        let frame = encode_frame(msg).expect("a decoded message re-encodes");
        let len = frame.len() - FRAME_HEADER_LEN;
        assert!(
            len <= *payload_len,
            "re-encoding grew {payload_len} -> {len}"
        );
        assert_eq!(&frame[..FRAME_HEADER_LEN], &(len as u32).to_le_bytes());
        let back: T = decode_payload(&frame[FRAME_HEADER_LEN..]).expect("re-encoded frame decodes");
        assert_eq!(&back, msg);
    }
}

/// One step of the `client_session` target. Wire form (tag byte, then arguments):
///
/// | tag & 7 | op | arguments |
/// |---|---|---|
/// | 0 | [`Op::Stream`] | `len: u8`, `len` bytes |
/// | 1 | [`Op::Datagram`] | `len: u16 LE`, `len` bytes |
/// | 2 | [`Op::Input`] | `move_x: i16 LE`, `move_y: i16 LE`, `buttons: u16 LE` |
/// | 3 | [`Op::Request`] | `client_time_us: u64 LE` |
/// | 4 | [`Op::Advance`] | `ms: u8` |
/// | 5 | [`Op::Poll`] | none |
/// | 6 | [`Op::Bye`] | none |
/// | 7 | [`Op::Hello`] | none |
///
/// Arguments cut short by the end of the input are taken as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// Bytes received on the control stream.
    Stream(&'a [u8]),
    /// A received datagram.
    Datagram(&'a [u8]),
    /// Send an input command.
    Input(i16, i16, u16),
    /// Send a `Ping` request.
    Request(u64),
    /// Advance the virtual clock.
    Advance(u8),
    /// Drain the session's events.
    Poll,
    /// Say `Bye`.
    Bye,
    /// Call `hello()` again (must fail).
    Hello,
}

impl Op<'_> {
    /// Appends the wire form of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Stream(b) => {
                assert!(b.len() <= 255);
                out.push(0);
                out.push(b.len() as u8);
                out.extend_from_slice(b);
            }
            Op::Datagram(b) => {
                out.push(1);
                out.extend_from_slice(&(b.len() as u16).to_le_bytes());
                out.extend_from_slice(b);
            }
            Op::Input(x, y, b) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
                out.extend_from_slice(&y.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
            Op::Request(t) => {
                out.push(3);
                out.extend_from_slice(&t.to_le_bytes());
            }
            Op::Advance(ms) => out.extend_from_slice(&[4, *ms]),
            Op::Poll => out.push(5),
            Op::Bye => out.push(6),
            Op::Hello => out.push(7),
        }
    }
}

/// Reads [`Op`]s from fuzz input.
#[derive(Debug)]
pub struct Ops<'a>(pub &'a [u8]);

impl<'a> Ops<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.take(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
}

impl<'a> Iterator for Ops<'a> {
    type Item = Op<'a>;

    fn next(&mut self) -> Option<Op<'a>> {
        let [tag] = self.take(1) else {
            return None;
        };
        Some(match tag & 7 {
            0 => {
                let [len] = self.array::<1>();
                Op::Stream(self.take(usize::from(len)))
            }
            1 => {
                let len = u16::from_le_bytes(self.array());
                Op::Datagram(self.take(usize::from(len)))
            }
            2 => {
                let [a, b, c, d, e, f] = self.array::<6>();
                Op::Input(
                    i16::from_le_bytes([a, b]),
                    i16::from_le_bytes([c, d]),
                    u16::from_le_bytes([e, f]),
                )
            }
            3 => Op::Request(u64::from_le_bytes(self.array())),
            4 => Op::Advance(self.array::<1>()[0]),
            5 => Op::Poll,
            6 => Op::Bye,
            _ => Op::Hello,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = [
            Op::Stream(b"abc"),
            Op::Datagram(&[1, 2]),
            Op::Input(-3, 1000, 1),
            Op::Request(77),
            Op::Advance(16),
            Op::Poll,
            Op::Bye,
            Op::Hello,
        ];
        let mut bytes = Vec::new();
        ops.iter().for_each(|o| o.encode(&mut bytes));
        assert_eq!(Ops(&bytes).collect::<Vec<_>>(), ops);
    }
}
