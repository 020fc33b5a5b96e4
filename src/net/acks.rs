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
//!
//! The pacing itself and the packet counts (`zonehost_client::acks`: `AckOptions`,
//! `PacketCounts`) are the client library's: both ends of a connection use the same code.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zonehost_client::acks::{
    AckOptions, DEFAULT_ACK_ELICITING_THRESHOLD, DEFAULT_ACK_MAX_DELAY,
    DEFAULT_ACK_REORDERING_THRESHOLD,
};

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
            eliciting_threshold: DEFAULT_ACK_ELICITING_THRESHOLD,
            max_delay_ms: DEFAULT_ACK_MAX_DELAY.as_millis() as u64,
            reordering_threshold: DEFAULT_ACK_REORDERING_THRESHOLD,
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

    /// The same settings as the client library's options.
    pub fn options(&self) -> AckOptions {
        AckOptions {
            frequency: self.frequency,
            eliciting_threshold: self.eliciting_threshold,
            max_delay: Duration::from_millis(self.max_delay_ms),
            reordering_threshold: self.reordering_threshold,
        }
    }

    /// Sets the ACK frequency extension on `transport` (nothing when it is off).
    pub fn apply(&self, transport: &mut quinn::TransportConfig) {
        self.options().apply(transport);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_checked() {
        assert_eq!(AckConfig::default().check(), Ok(()));
        let zero_delay = AckConfig {
            max_delay_ms: 0,
            ..AckConfig::default()
        };
        assert!(zero_delay.check().is_err());
        assert_eq!(AckConfig::default().options(), AckOptions::default());
        let mut t = quinn::TransportConfig::default();
        AckConfig::default().apply(&mut t);
        AckConfig {
            frequency: false,
            ..AckConfig::default()
        }
        .apply(&mut t);
    }
}
