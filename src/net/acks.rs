//! Acknowledgement pacing (the QUIC ACK frequency extension) and per-connection packet
//! counts read from quinn's connection statistics.
//!
//! Without the extension quinn acknowledges every second ack-eliciting packet at once and
//! any other one after at most 25 ms. A game connection at 20-30 Hz sends a datagram each
//! way every 33-50 ms, so the acknowledgement of a datagram often cannot wait for the next
//! datagram going the other way and travels as a packet of its own. [`AckConfig`] asks
//! the peer (it is the receiver that decides when to acknowledge) to wait for more
//! packets and longer, so that its ACK frames ride on its own datagrams.
//!
//! quinn bounds what it requests: the delay asked of the peer is at most the greater of
//! the path's round-trip time and 25 ms (and never below the peer's `min_ack_delay`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How this endpoint asks its peers to acknowledge (`[ack]` in the server configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AckConfig {
    /// Send the peer an `ACK_FREQUENCY` frame with the values below; `false` leaves
    /// quinn's behaviour (an ACK for every second ack-eliciting packet, 25 ms at most).
    /// Default true.
    pub frequency: bool,
    /// Ack-eliciting packets the peer may receive without acknowledging at once (0 would
    /// acknowledge every packet at once). Default 8: a burst of several snapshot parts is
    /// acknowledged once, well inside quinn's initial congestion window of about 12 packets.
    pub eliciting_threshold: u32,
    /// Longest time the peer may hold an acknowledgement back, milliseconds; quinn asks
    /// for at most the greater of the round-trip time and 25 ms. Default 50 (one period at
    /// 20 Hz: the peer's next datagram carries the ACK).
    pub max_delay_ms: u64,
    /// Packets received out of order that make the peer acknowledge at once (0: never;
    /// 1: any gap, RFC 9000's rule). Default 2 (quinn's packet threshold minus one, as the
    /// extension's draft recommends).
    pub reordering_threshold: u32,
}

impl Default for AckConfig {
    fn default() -> Self {
        Self {
            frequency: true,
            eliciting_threshold: 8,
            max_delay_ms: 50,
            reordering_threshold: 2,
        }
    }
}

impl AckConfig {
    /// Why these values are unusable, if they are.
    pub fn check(&self) -> Result<(), &'static str> {
        if !(1..=1000).contains(&self.max_delay_ms) {
            return Err("max_delay_ms must be 1..=1000");
        }
        if self.eliciting_threshold > 1000 || self.reordering_threshold > 1000 {
            return Err("eliciting_threshold and reordering_threshold must be <= 1000");
        }
        Ok(())
    }

    /// Sets the ACK frequency extension on `transport` (nothing when it is off).
    pub fn apply(&self, transport: &mut quinn::TransportConfig) {
        if !self.frequency {
            return;
        }
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(self.eliciting_threshold.into())
            .max_ack_delay(Some(Duration::from_millis(self.max_delay_ms)))
            .reordering_threshold(self.reordering_threshold.into());
        transport.ack_frequency_config(Some(ack));
    }
}

/// Packet and frame counts of one direction of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PacketCounts {
    /// UDP datagrams (QUIC packets coalesced in one datagram count once).
    pub(crate) packets: u64,
    /// DATAGRAM frames.
    pub(crate) datagrams: u64,
    /// ACK frames.
    pub(crate) acks: u64,
    /// Estimated packets that carried nothing but ACK frames (see [`ack_only_estimate`]).
    pub(crate) ack_only: u64,
}

impl PacketCounts {
    /// Counts of the packets this connection sent.
    pub(crate) fn sent(s: &quinn::ConnectionStats) -> Self {
        Self::of(s.udp_tx.datagrams, &s.frame_tx)
    }

    /// Counts of the packets this connection received.
    pub(crate) fn received(s: &quinn::ConnectionStats) -> Self {
        Self::of(s.udp_rx.datagrams, &s.frame_rx)
    }

    fn of(packets: u64, f: &quinn::FrameStats) -> Self {
        Self {
            packets,
            datagrams: f.datagram,
            acks: f.acks,
            ack_only: ack_only_estimate(packets, f.acks, other_frames(f)),
        }
    }

    /// The growth from `earlier` to `self` (counters never go back; saturating anyway).
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            packets: self.packets.saturating_sub(earlier.packets),
            datagrams: self.datagrams.saturating_sub(earlier.datagrams),
            acks: self.acks.saturating_sub(earlier.acks),
            ack_only: self.ack_only.saturating_sub(earlier.ack_only),
        }
    }
}

/// Frames other than ACK (and PADDING, which quinn does not count) in `f`.
fn other_frames(f: &quinn::FrameStats) -> u64 {
    [
        f.ack_frequency,
        f.crypto,
        f.connection_close,
        f.data_blocked,
        f.datagram,
        u64::from(f.handshake_done),
        f.immediate_ack,
        f.max_data,
        f.max_stream_data,
        f.max_streams_bidi,
        f.max_streams_uni,
        f.new_connection_id,
        f.new_token,
        f.path_challenge,
        f.path_response,
        f.ping,
        f.reset_stream,
        f.retire_connection_id,
        f.stream_data_blocked,
        f.streams_blocked_bidi,
        f.streams_blocked_uni,
        f.stop_sending,
        f.stream,
    ]
    .iter()
    .fold(0u64, |sum, n| sum.saturating_add(*n))
}

/// Packets that carried only ACK frames, estimated from counters quinn keeps: `packets`
/// UDP datagrams, `acks` ACK frames and `other` frames of every other kind.
///
/// quinn does not count ACK-only packets. Every packet that is not ACK-only carries at
/// least one other frame, so at most `other` packets are not ACK-only and at least
/// `packets - other` are; an ACK-only packet carries an ACK frame, so at most `acks` are.
/// The estimate is that lower bound, capped at `acks`. It is exact when no packet carries
/// two non-ACK frames, which holds for this protocol's traffic once connected (one input
/// or snapshot datagram per packet; the few packets that also carry a stream frame or
/// several small datagrams make it undercount by one each). The handshake's coalesced
/// packets (several CRYPTO frames in one UDP datagram) make it undercount too.
pub(crate) fn ack_only_estimate(packets: u64, acks: u64, other: u64) -> u64 {
    packets.saturating_sub(other).min(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_packets_without_other_frames_capped_by_acks() {
        // 10 packets: 7 carried a datagram (3 of them an ACK too), 3 only an ACK.
        assert_eq!(ack_only_estimate(10, 6, 7), 3);
        // No ACK frames: nothing can be ACK-only, whatever the other counts say (e.g. a
        // PMTU probe of PADDING only is not counted as a frame).
        assert_eq!(ack_only_estimate(10, 0, 7), 0);
        // Two frames in one packet: the estimate undercounts, never goes below zero.
        assert_eq!(ack_only_estimate(5, 5, 9), 0);
        assert_eq!(ack_only_estimate(0, 0, 0), 0);
    }

    #[test]
    fn counts_come_from_each_direction_and_subtract() {
        let mut s = quinn::ConnectionStats::default();
        s.udp_tx.datagrams = 30;
        s.frame_tx.datagram = 20;
        s.frame_tx.acks = 25;
        s.frame_tx.stream = 2;
        s.udp_rx.datagrams = 40;
        s.frame_rx.datagram = 30;
        s.frame_rx.acks = 12;
        s.frame_rx.ping = 1;
        let sent = PacketCounts::sent(&s);
        assert_eq!(
            sent,
            PacketCounts {
                packets: 30,
                datagrams: 20,
                acks: 25,
                ack_only: 8
            }
        );
        let received = PacketCounts::received(&s);
        assert_eq!(received.ack_only, 9);
        assert_eq!(received.packets, 40);
        let earlier = PacketCounts {
            packets: 10,
            datagrams: 5,
            acks: 30,
            ack_only: 1,
        };
        assert_eq!(
            sent.since(&earlier),
            PacketCounts {
                packets: 20,
                datagrams: 15,
                acks: 0,
                ack_only: 7
            }
        );
    }

    #[test]
    fn default_config_is_valid_and_checked() {
        assert_eq!(AckConfig::default().check(), Ok(()));
        let zero_delay = AckConfig {
            max_delay_ms: 0,
            ..AckConfig::default()
        };
        assert!(zero_delay.check().is_err());
        let mut t = quinn::TransportConfig::default();
        AckConfig::default().apply(&mut t);
        AckConfig {
            frequency: false,
            ..AckConfig::default()
        }
        .apply(&mut t);
    }
}
