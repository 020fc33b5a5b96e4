//! Counts UDP datagrams that are not QUIC for this endpoint.
//!
//! quinn drops such datagrams silently (a trace log line at most) and neither its
//! `EndpointStats` nor any `ConnectionStats` counts them, so a flood of garbage on the game
//! port was invisible. [`CountingSocket`] wraps the endpoint's UDP socket and, for every
//! datagram quinn reads, runs the first step of quinn-proto's own decoding on the header
//! bytes: the header form, the version of a long header, the connection id lengths, and for
//! a short header whether this endpoint issued its connection id (connection ids are
//! generated with a keyed hash, see [`crate::net::endpoint_config`], so that check is one
//! `FxHash` of 8 bytes). No allocation and no lock: a few byte reads and relaxed atomic adds
//! per receive batch, against the ~8 µs quinn spends per packet.
//!
//! What it does not catch: garbage that happens to look like a QUIC v1 Initial (a long
//! header of a supported version); quinn then fails to decrypt it or starts a handshake
//! that never completes, which `zonehost_handshakes_failed_total` counts.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, HashedConnectionIdGenerator};

use crate::telemetry::{JunkReason, Stats};

/// Length of the connection ids this endpoint issues (`HashedConnectionIdGenerator`).
const LOCAL_CID_LEN: usize = 8;
/// Longest connection id QUIC v1 allows in a long header (RFC 9000 §17.2).
const MAX_CID_LEN: usize = 20;

/// Classifies one datagram's first bytes: `None` when quinn would route it (a supported
/// long header, or a short header for a connection id this endpoint issued).
pub(crate) fn classify(datagram: &[u8], cids: &HashedConnectionIdGenerator) -> Option<JunkReason> {
    let Some(&first) = datagram.first() else {
        return Some(JunkReason::NotQuic);
    };
    if first & 0x80 != 0 {
        // Long header: flags, version (4), DCID length + DCID, SCID length + SCID.
        let Some(version) = datagram.get(1..5) else {
            return Some(JunkReason::NotQuic);
        };
        let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
        if !quinn_proto::DEFAULT_SUPPORTED_VERSIONS.contains(&version) {
            return Some(JunkReason::UnsupportedVersion);
        }
        let Some(&dcid_len) = datagram.get(5) else {
            return Some(JunkReason::NotQuic);
        };
        let dcid_len = usize::from(dcid_len);
        if dcid_len > MAX_CID_LEN {
            return Some(JunkReason::NotQuic);
        }
        match datagram.get(6 + dcid_len) {
            Some(&scid_len) if usize::from(scid_len) <= MAX_CID_LEN => None,
            _ => Some(JunkReason::NotQuic),
        }
    } else {
        let Some(dcid) = datagram.get(1..1 + LOCAL_CID_LEN) else {
            return Some(JunkReason::NotQuic);
        };
        match cids.validate(&ConnectionId::new(dcid)) {
            Ok(()) => None,
            Err(_) => Some(JunkReason::UnknownConnection),
        }
    }
}

/// The endpoint's UDP socket with every received datagram counted and classified.
pub(crate) struct CountingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    cids: HashedConnectionIdGenerator,
    stats: Arc<Stats>,
    /// Datagrams one receive buffer may hold (GRO), as reported to quinn.
    receive_segments: usize,
}

impl fmt::Debug for CountingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl CountingSocket {
    /// Wraps `inner`; `cid_key` is the key the endpoint's connection id generator uses;
    /// `receive_segments` is how many datagrams the kernel may put in one buffer (1 with
    /// GRO off, see `gro.rs`): quinn sizes its receive buffer by it.
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        cid_key: u64,
        stats: Arc<Stats>,
        receive_segments: usize,
    ) -> Self {
        Self {
            inner,
            cids: HashedConnectionIdGenerator::from_key(cid_key),
            stats,
            receive_segments: receive_segments.max(1),
        }
    }

    fn count(&self, bufs: &[IoSliceMut<'_>], meta: &[RecvMeta]) {
        let mut total = 0u64;
        let mut junk = [0u64; 3];
        for (buf, m) in bufs.iter().zip(meta) {
            let data = &buf[..m.len.min(buf.len())];
            // With GRO one buffer holds several datagrams, `stride` bytes apart.
            let stride = if m.stride == 0 {
                data.len().max(1)
            } else {
                m.stride
            };
            for datagram in data.chunks(stride) {
                total += 1;
                if let Some(reason) = classify(datagram, &self.cids) {
                    junk[reason as usize] += 1;
                }
            }
        }
        self.stats
            .udp_datagrams_in
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        for reason in JunkReason::ALL {
            let n = junk[*reason as usize];
            if n > 0 {
                self.stats.junk(*reason, n);
            }
        }
    }
}

impl AsyncUdpSocket for CountingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled {
            let n = (*n).min(bufs.len()).min(meta.len());
            self.count(&bufs[..n], &meta[..n]);
        }
        polled
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.receive_segments
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator() -> HashedConnectionIdGenerator {
        HashedConnectionIdGenerator::from_key(0x5eed)
    }

    #[test]
    fn short_headers_of_issued_connection_ids_are_quic() {
        let mut cids = generator();
        let cid = cids.generate_cid();
        assert_eq!(cid.len(), LOCAL_CID_LEN);
        let mut packet = vec![0x40];
        packet.extend_from_slice(&cid);
        packet.extend_from_slice(&[0u8; 40]);
        assert_eq!(classify(&packet, &cids), None);
        // The same id under another key was not issued by this endpoint.
        assert_eq!(
            classify(&packet, &HashedConnectionIdGenerator::from_key(1)),
            Some(JunkReason::UnknownConnection)
        );
    }

    #[test]
    fn long_headers_are_checked_for_version_and_lengths() {
        let cids = generator();
        let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
        initial.extend_from_slice(&[7u8; 8]);
        initial.push(8);
        initial.extend_from_slice(&[9u8; 8]);
        assert_eq!(classify(&initial, &cids), None);
        let mut other_version = initial.clone();
        other_version[1..5].copy_from_slice(&[0x0a, 0x1a, 0x2a, 0x3a]);
        assert_eq!(
            classify(&other_version, &cids),
            Some(JunkReason::UnsupportedVersion)
        );
        let mut long_cid = initial.clone();
        long_cid[5] = 21;
        assert_eq!(classify(&long_cid, &cids), Some(JunkReason::NotQuic));
        assert_eq!(classify(&initial[..6], &cids), Some(JunkReason::NotQuic));
    }

    #[test]
    fn empty_and_tiny_datagrams_are_not_quic() {
        let cids = generator();
        assert_eq!(classify(&[], &cids), Some(JunkReason::NotQuic));
        assert_eq!(classify(&[0x41, 1, 2], &cids), Some(JunkReason::NotQuic));
        assert_eq!(classify(&[0xc0, 0, 0], &cids), Some(JunkReason::NotQuic));
    }
}
