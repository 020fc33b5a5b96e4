//! Acknowledgement pacing (the QUIC ACK frequency extension) and packet counts read from a
//! connection's quinn statistics: how many packets went each way and how many of them
//! carried nothing but acknowledgements.
//!
//! The server has the same settings (`[ack]` in its configuration, docs/operations.md):
//! each side asks the other to hold its ACK frames back a little so they ride on the next
//! datagram going the other way instead of travelling as packets of their own.

use std::time::Duration;

/// How a connection asks its peer to acknowledge (the receiver decides when to
/// acknowledge, so these values travel to the peer in an `ACK_FREQUENCY` frame).
///
/// quinn bounds the delay it asks for by the greater of the path's round-trip time and
/// 25 ms, so on a short path no acknowledgement waits longer than 25 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOptions {
    /// Ask the peer to use the extension with the values below; `false` leaves quinn's
    /// behaviour (an ACK for every second ack-eliciting packet, 25 ms at most).
    pub frequency: bool,
    /// Ack-eliciting packets the peer may receive without acknowledging at once.
    pub eliciting_threshold: u32,
    /// Longest time the peer may hold an acknowledgement back (see the bound above).
    pub max_delay: Duration,
    /// Packets received out of order that make the peer acknowledge at once (0: never).
    pub reordering_threshold: u32,
}

/// Default of [`AckOptions::eliciting_threshold`]: a burst of snapshot parts is
/// acknowledged once, inside quinn's initial congestion window of about 12 packets.
pub const DEFAULT_ACK_ELICITING_THRESHOLD: u32 = 8;
/// Default of [`AckOptions::max_delay`]: one period at 20 Hz.
pub const DEFAULT_ACK_MAX_DELAY: Duration = Duration::from_millis(50);
/// Default of [`AckOptions::reordering_threshold`] (quinn's packet threshold minus one).
pub const DEFAULT_ACK_REORDERING_THRESHOLD: u32 = 2;

impl Default for AckOptions {
    fn default() -> Self {
        Self {
            frequency: true,
            eliciting_threshold: DEFAULT_ACK_ELICITING_THRESHOLD,
            max_delay: DEFAULT_ACK_MAX_DELAY,
            reordering_threshold: DEFAULT_ACK_REORDERING_THRESHOLD,
        }
    }
}

impl AckOptions {
    /// quinn's behaviour without the extension (for comparisons).
    pub fn off() -> Self {
        Self {
            frequency: false,
            ..Self::default()
        }
    }

    /// Sets the ACK frequency extension on `transport` (nothing when it is off).
    pub fn apply(&self, transport: &mut quinn::TransportConfig) {
        if !self.frequency {
            return;
        }
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(self.eliciting_threshold.into())
            .max_ack_delay(Some(self.max_delay))
            .reordering_threshold(self.reordering_threshold.into());
        transport.ack_frequency_config(Some(ack));
    }
}

/// Packet and frame counts of one direction of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCounts {
    /// UDP datagrams (QUIC packets coalesced in one datagram count once).
    pub packets: u64,
    /// DATAGRAM frames.
    pub datagrams: u64,
    /// ACK frames.
    pub acks: u64,
    /// Estimated packets that carried nothing but ACK frames (see [`ack_only_estimate`]).
    pub ack_only: u64,
}

impl PacketCounts {
    /// Counts of the packets the connection sent.
    pub fn sent(s: &quinn::ConnectionStats) -> Self {
        Self::of(s.udp_tx.datagrams, &s.frame_tx)
    }

    /// Counts of the packets the connection received.
    pub fn received(s: &quinn::ConnectionStats) -> Self {
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

    /// The growth from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            packets: self.packets.saturating_sub(earlier.packets),
            datagrams: self.datagrams.saturating_sub(earlier.datagrams),
            acks: self.acks.saturating_sub(earlier.acks),
            ack_only: self.ack_only.saturating_sub(earlier.ack_only),
        }
    }

    /// `ack_only / packets` (0 without packets).
    pub fn ack_only_share(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.ack_only as f64 / self.packets as f64
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
/// quinn does not count ACK-only packets. Every other packet carries at least one non-ACK
/// frame, so at least `packets - other` packets were ACK-only, and an ACK-only packet
/// carries an ACK frame, so at most `acks` were. The estimate is that lower bound capped
/// at `acks`: exact when no packet carries two non-ACK frames (one input or snapshot
/// datagram per packet, as in this protocol once connected); each packet that also carries
/// a stream frame or a second small datagram, and the handshake's coalesced packets, make
/// it undercount by one.
pub fn ack_only_estimate(packets: u64, acks: u64, other: u64) -> u64 {
    packets.saturating_sub(other).min(acks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_packets_without_other_frames_capped_by_acks() {
        assert_eq!(ack_only_estimate(10, 6, 7), 3);
        assert_eq!(ack_only_estimate(10, 0, 7), 0);
        assert_eq!(ack_only_estimate(5, 5, 9), 0);
        assert_eq!(ack_only_estimate(0, 0, 0), 0);
    }

    #[test]
    fn counts_each_direction_and_share() {
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
        assert_eq!(sent.ack_only, 8);
        assert!((sent.ack_only_share() - 8.0 / 30.0).abs() < 1e-12);
        assert_eq!(PacketCounts::received(&s).ack_only, 9);
        assert_eq!(sent.since(&sent), PacketCounts::default());
        assert_eq!(PacketCounts::default().ack_only_share(), 0.0);
        let mut t = quinn::TransportConfig::default();
        AckOptions::default().apply(&mut t);
        AckOptions::off().apply(&mut t);
    }
}
