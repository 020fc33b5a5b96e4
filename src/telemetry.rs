//! Server counters and gauges. `Stats` is the single source of truth, updated with relaxed
//! atomics on the hot path (no locks, no allocation); label values are closed enums whose
//! names are part of the metrics API (dashboards and alerts depend on them).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use zonehost_protocol::message::RejectCode;

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant,)* }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The metric label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

label_enum! {
    /// Why a received datagram was dropped (`cause` label of `zonehost_datagrams_dropped_total`).
    DropCause {
        /// It did not decode (bad length, version, kind or field).
        Malformed => "malformed",
        /// It arrived before the session was welcomed.
        NotWelcomed => "not_welcomed",
        /// The sim worker's inbox was full.
        InboxFull => "inbox_full",
        /// The per-connection datagram rate limit was exceeded.
        RateLimited => "rate_limited",
    }
}

label_enum! {
    /// Why a session or connection ended (`cause` label of `zonehost_disconnects_total`).
    DisconnectCause {
        /// The client said `Bye`.
        ClientBye => "client_bye",
        /// The client closed the QUIC connection.
        ClientClosed => "client_closed",
        /// No packet within the idle timeout.
        IdleTimeout => "idle_timeout",
        /// Transport failure (reset, protocol error at the QUIC layer).
        ConnectionLost => "connection_lost",
        /// The client broke the protocol (bad frame, message out of state).
        ProtocolViolation => "protocol_violation",
        /// The client's reliable outbox overflowed.
        SlowReader => "slow_reader",
        /// A second login took the session over.
        TakenOver => "taken_over",
        /// The server drained.
        Shutdown => "shutdown",
        /// The session was refused at `Hello`.
        Rejected => "rejected",
    }
}

fn reject_index(code: RejectCode) -> usize {
    code as usize
}

/// Number of [`RejectCode`] variants.
pub const REJECT_CODES: usize = 11;

/// Every [`RejectCode`], in wire order.
pub const ALL_REJECT_CODES: [RejectCode; REJECT_CODES] = [
    RejectCode::UnsupportedVersion,
    RejectCode::InvalidToken,
    RejectCode::TokenExpired,
    RejectCode::WrongAudience,
    RejectCode::AlreadyConnected,
    RejectCode::ServerFull,
    RejectCode::Draining,
    RejectCode::ProtocolViolation,
    RejectCode::HelloTimeout,
    RejectCode::TokenReplayed,
    RejectCode::Internal,
];

/// Live counters of one server instance.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted (handshake started).
    pub connections_accepted: AtomicU64,
    /// Connections refused before the handshake because the connection cap was reached.
    pub connections_refused_full: AtomicU64,
    /// Open connections (gauge).
    pub connections_open: AtomicI64,
    /// Welcomed sessions (gauge).
    pub sessions_active: AtomicI64,
    /// Zone instances alive (gauge).
    pub instances_live: AtomicI64,
    /// Sessions refused at `Hello`, by [`RejectCode`].
    pub rejects: [AtomicU64; REJECT_CODES],
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Datagram bytes received.
    pub datagram_bytes_in: AtomicU64,
    /// Datagrams dropped, by [`DropCause`].
    pub datagrams_dropped: [AtomicU64; 4],
    /// Snapshot datagrams handed to QUIC.
    pub datagrams_out: AtomicU64,
    /// Snapshot bytes handed to QUIC.
    pub datagram_bytes_out: AtomicU64,
    /// Snapshot datagrams QUIC refused (connection lost, datagrams disabled, too large).
    pub datagram_send_errors: AtomicU64,
    /// Player inputs applied-or-queued into worlds.
    pub inputs_queued: AtomicU64,
    /// Reliable requests received.
    pub requests: AtomicU64,
    /// Disconnects, by [`DisconnectCause`].
    pub disconnects: [AtomicU64; 9],
    /// Simulation ticks run.
    pub ticks: AtomicU64,
    /// Ticks that started more than one tick period late.
    pub ticks_late: AtomicU64,
    /// Ticks skipped because catch-up could not keep up.
    pub ticks_skipped: AtomicU64,
    /// Total tick processing time, microseconds (for averages).
    pub tick_busy_us: AtomicU64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dropped datagram.
    pub fn dropped(&self, cause: DropCause) {
        Self::inc(&self.datagrams_dropped[cause as usize]);
    }

    /// Datagrams dropped for `cause` so far.
    pub fn dropped_count(&self, cause: DropCause) -> u64 {
        self.datagrams_dropped[cause as usize].load(Ordering::Relaxed)
    }

    /// Counts a refused session.
    pub fn rejected(&self, code: RejectCode) {
        Self::inc(&self.rejects[reject_index(code)]);
    }

    /// Sessions refused with `code` so far.
    pub fn reject_count(&self, code: RejectCode) -> u64 {
        self.rejects[reject_index(code)].load(Ordering::Relaxed)
    }

    /// Counts a disconnect.
    pub fn disconnected(&self, cause: DisconnectCause) {
        Self::inc(&self.disconnects[cause as usize]);
    }

    /// Disconnects for `cause` so far.
    pub fn disconnect_count(&self, cause: DisconnectCause) -> u64 {
        self.disconnects[cause as usize].load(Ordering::Relaxed)
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds to a gauge.
    pub fn gauge_add(gauge: &AtomicI64, delta: i64) {
        gauge.fetch_add(delta, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_cover_every_label() {
        let s = Stats::default();
        assert_eq!(s.datagrams_dropped.len(), DropCause::ALL.len());
        assert_eq!(s.disconnects.len(), DisconnectCause::ALL.len());
        for (i, code) in ALL_REJECT_CODES.iter().enumerate() {
            assert_eq!(reject_index(*code), i);
        }
        s.rejected(RejectCode::Internal);
        assert_eq!(s.reject_count(RejectCode::Internal), 1);
    }
}
