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
    /// Why a UDP datagram was not QUIC for this endpoint (`reason` label of
    /// `zonehost_udp_junk_datagrams_total`); see `net::junk`.
    JunkReason {
        /// Not a QUIC packet at all: too short, or a long header whose connection id
        /// lengths are out of range.
        NotQuic => "not_quic",
        /// A long header with a QUIC version this endpoint does not speak.
        UnsupportedVersion => "unsupported_version",
        /// A short header whose connection id this endpoint never issued.
        UnknownConnection => "unknown_connection",
    }
}

label_enum! {
    /// How a QUIC handshake failed (`reason` label of `zonehost_handshakes_failed_total`).
    HandshakeFailure {
        /// The peer stopped answering before the handshake completed (quinn's idle timeout).
        Timeout => "timeout",
        /// The handshake failed otherwise (TLS or ALPN refused, transport error, reset).
        Error => "error",
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
        /// Too many malformed or rate-limited messages.
        Abuse => "abuse",
        /// The server lost the player's ownership lease to another server (cluster mode).
        LeaseLost => "lease_lost",
        /// The session was redirected to another server: at `Hello` to the server that
        /// owns the player, or after `Welcome` to its party leader's server or to the peer
        /// where its new instance was placed (cluster mode).
        Redirected => "redirected",
        /// A draining cluster server handed the player to a peer (`Redirect` after its
        /// final checkpoint and lease release).
        Migrated => "migrated",
    }
}

fn reject_index(code: RejectCode) -> usize {
    code as usize
}

/// Number of [`RejectCode`] variants.
pub const REJECT_CODES: usize = 12;

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
    RejectCode::SessionExpired,
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
    /// Sessions whose connection was lost, waiting for a resume (gauge).
    pub sessions_detached: AtomicI64,
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
    /// Older unsent snapshot datagrams QUIC discarded to make room (send buffer full).
    pub datagrams_displaced: AtomicU64,
    /// Client snapshots sent as full states (no usable baseline).
    pub snapshots_full: AtomicU64,
    /// Client snapshots sent as deltas against the client's reported baseline.
    pub snapshots_delta: AtomicU64,
    /// Player inputs applied-or-queued into worlds.
    pub inputs_queued: AtomicU64,
    /// Reliable requests received.
    pub requests: AtomicU64,
    /// Disconnects, by [`DisconnectCause`].
    pub disconnects: [AtomicU64; 13],
    /// Requests refused by the per-session rate limit.
    pub requests_rate_limited: AtomicU64,
    /// Handshakes refused because one source address opened too many.
    pub handshakes_refused_rate: AtomicU64,
    /// Connections asked to complete a stateless retry (address validation) under load.
    pub handshake_retries: AtomicU64,
    /// Accepted handshakes that never completed, by [`HandshakeFailure`].
    pub handshakes_failed: [AtomicU64; 2],
    /// UDP datagrams read from the endpoint's socket (QUIC or not).
    pub udp_datagrams_in: AtomicU64,
    /// UDP datagrams that were not QUIC for this endpoint, by [`JunkReason`].
    pub udp_junk: [AtomicU64; 3],
    /// Simulation ticks run.
    pub ticks: AtomicU64,
    /// Ticks that started more than one tick period late.
    pub ticks_late: AtomicU64,
    /// Ticks skipped because catch-up could not keep up.
    pub ticks_skipped: AtomicU64,
    /// Total tick processing time, microseconds (for averages).
    pub tick_busy_us: AtomicU64,
    /// QUIC packets declared lost, summed over connections (sampled).
    pub quic_lost_packets: AtomicU64,
    /// QUIC congestion events, summed over connections (sampled).
    pub quic_congestion_events: AtomicU64,
    /// UDP packets of player connections by direction (index 0 sent, 1 received; sampled).
    pub quic_packets: [AtomicU64; 2],
    /// QUIC DATAGRAM frames of player connections by direction (sampled).
    pub quic_datagram_frames: [AtomicU64; 2],
    /// QUIC ACK frames of player connections by direction (sampled).
    pub quic_ack_frames: [AtomicU64; 2],
    /// Packets of player connections that carried only ACK frames, estimated, by direction
    /// (sampled; see `zonehost_client::acks::ack_only_estimate`).
    pub quic_ack_only_packets: [AtomicU64; 2],
    /// Players handed from one sim worker to another (party convergence).
    pub sim_migrations: AtomicU64,
    /// Messages a sim worker forwarded to the worker it had handed their session to.
    pub sim_forwarded: AtomicU64,
    /// Party records written (cluster mode; compare-and-set that won).
    pub party_writes: AtomicU64,
    /// Party writes that lost a compare-and-set and were retried.
    pub party_write_conflicts: AtomicU64,
    /// Party mails posted to other servers' mailboxes.
    pub party_mail_sent: AtomicU64,
    /// Party mails read from this server's mailbox.
    pub party_mail_received: AtomicU64,
    /// Party mails that did not decode (dropped).
    pub party_mail_invalid: AtomicU64,
    /// Party members handed to their leader's server (saved, lease released, redirected).
    pub party_handoffs: AtomicU64,
    /// Party members removed from their party because no server held them past the
    /// absence grace (a crashed server's players).
    pub party_members_pruned: AtomicU64,
    /// Per sim worker load, indexed by worker.
    pub workers: Vec<WorkerStats>,
    /// Further publishers run at scrape (the store's counters, the player leases'),
    /// added at start-up with [`Stats::add_publisher`].
    extra: std::sync::Mutex<Vec<ExtraPublisher>>,
}

/// A publisher of counters kept outside [`Stats`] (e.g. the store worker's), run by
/// [`Stats::publish`].
struct ExtraPublisher(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ExtraPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraPublisher")
    }
}

/// Load of one sim worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Players owned (gauge).
    pub players: AtomicI64,
    /// Time spent inside ticks, microseconds.
    pub busy_us: AtomicU64,
}

impl Stats {
    /// Counters for a server with `workers` sim workers.
    pub fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            ..Self::default()
        }
    }
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

    /// Counts a handshake that never completed.
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        Self::inc(&self.handshakes_failed[why as usize]);
    }

    /// Counts `n` UDP datagrams that were not QUIC for this endpoint.
    pub fn junk(&self, reason: JunkReason, n: u64) {
        self.udp_junk[reason as usize].fetch_add(n, Ordering::Relaxed);
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

/// Kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution (exported with buckets).
    Histogram,
}

impl MetricKind {
    /// Prometheus type name.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One exported metric: the API dashboards and alerts are written against.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Full metric name.
    pub name: &'static str,
    /// Kind.
    pub kind: MetricKind,
    /// Label names (bounded value sets, never a player id).
    pub labels: &'static [&'static str],
    /// Help text.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every metric the server exports. The table in `docs/metrics.md` is checked against this list.
pub const METRICS: &[MetricDef] = &[
    m(
        "zonehost_connections_accepted_total",
        Counter,
        &[],
        "QUIC connections accepted (handshake started).",
    ),
    m(
        "zonehost_connections_refused_total",
        Counter,
        &["reason"],
        "Connections refused before the handshake (reason=full|source_rate).",
    ),
    m(
        "zonehost_handshake_retries_total",
        Counter,
        &[],
        "Connections sent a QUIC stateless retry (address validation under handshake load).",
    ),
    m(
        "zonehost_handshakes_failed_total",
        Counter,
        &["reason"],
        "Accepted QUIC handshakes that never completed (reason=timeout|error).",
    ),
    m(
        "zonehost_udp_datagrams_received_total",
        Counter,
        &[],
        "UDP datagrams read from the QUIC socket, QUIC or not.",
    ),
    m(
        "zonehost_udp_junk_datagrams_total",
        Counter,
        &["reason"],
        "UDP datagrams that were not QUIC for this endpoint and were dropped (reason=not_quic|unsupported_version|unknown_connection).",
    ),
    m(
        "zonehost_requests_rate_limited_total",
        Counter,
        &[],
        "Requests refused by the per-session rate limit.",
    ),
    m(
        "zonehost_connections_open",
        Gauge,
        &[],
        "Open QUIC connections, handshaking or playing.",
    ),
    m(
        "zonehost_sessions_active",
        Gauge,
        &[],
        "Welcomed player sessions (players connected).",
    ),
    m(
        "zonehost_instances_live",
        Gauge,
        &[],
        "Zone instances alive.",
    ),
    m(
        "zonehost_session_rejects_total",
        Counter,
        &["code"],
        "Sessions refused at Hello, by reject code.",
    ),
    m(
        "zonehost_datagrams_received_total",
        Counter,
        &[],
        "Datagrams received from clients.",
    ),
    m(
        "zonehost_datagram_received_bytes_total",
        Counter,
        &[],
        "Datagram payload bytes received.",
    ),
    m(
        "zonehost_datagrams_dropped_total",
        Counter,
        &["cause"],
        "Received datagrams dropped, by cause.",
    ),
    m(
        "zonehost_datagrams_sent_total",
        Counter,
        &[],
        "Snapshot datagrams handed to QUIC.",
    ),
    m(
        "zonehost_datagram_sent_bytes_total",
        Counter,
        &[],
        "Snapshot datagram bytes handed to QUIC.",
    ),
    m(
        "zonehost_snapshots_sent_total",
        Counter,
        &["kind"],
        "Client snapshots sent, by kind: delta (against the tick the client reported) or full (no usable baseline: a new client, or one silent for 32 snapshots).",
    ),
    m(
        "zonehost_datagram_send_errors_total",
        Counter,
        &[],
        "Snapshot datagrams QUIC refused.",
    ),
    m(
        "zonehost_datagrams_displaced_total",
        Counter,
        &[],
        "Older unsent snapshot datagrams QUIC discarded to make room for a newer one (its send buffer was full: a slow or congested client).",
    ),
    m(
        "zonehost_inputs_queued_total",
        Counter,
        &[],
        "Player input commands queued into worlds (redundant copies excluded).",
    ),
    m(
        "zonehost_requests_total",
        Counter,
        &[],
        "Reliable requests received.",
    ),
    m(
        "zonehost_disconnects_total",
        Counter,
        &["cause"],
        "Sessions and connections ended, by cause.",
    ),
    m(
        "zonehost_ticks_total",
        Counter,
        &[],
        "Simulation ticks run, all workers.",
    ),
    m(
        "zonehost_ticks_late_total",
        Counter,
        &[],
        "Ticks that started more than one tick period late.",
    ),
    m(
        "zonehost_ticks_skipped_total",
        Counter,
        &[],
        "Ticks skipped because catch-up could not keep up.",
    ),
    m(
        "zonehost_tick_busy_microseconds_total",
        Counter,
        &[],
        "Time spent inside ticks, all workers (rate / 1e6 = busy cores).",
    ),
    m(
        "zonehost_tick_duration_seconds",
        Histogram,
        &[],
        "Time to run one tick of one worker.",
    ),
    m(
        "zonehost_tick_lateness_seconds",
        Histogram,
        &[],
        "How late a tick started against its schedule.",
    ),
    m(
        "zonehost_request_duration_seconds",
        Histogram,
        &["kind"],
        "Request received to reply queued, by request kind.",
    ),
    m(
        "zonehost_draining",
        Gauge,
        &[],
        "1 while the server drains, else 0.",
    ),
    m(
        "zonehost_process_cpu_seconds",
        Gauge,
        &[],
        "User and system CPU time of the server process, seconds (procfs; a gauge set at scrape).",
    ),
    m(
        "zonehost_process_resident_memory_bytes",
        Gauge,
        &[],
        "Resident memory of the server process, bytes (procfs).",
    ),
    m(
        "zonehost_sessions_by_state",
        Gauge,
        &["state"],
        "Sessions by state: handshaking, active, detached (connection lost, waiting for a resume).",
    ),
    m(
        "zonehost_sim_worker_players",
        Gauge,
        &["worker"],
        "Players owned by each sim worker.",
    ),
    m(
        "zonehost_sim_worker_busy_microseconds_total",
        Counter,
        &["worker"],
        "Time each sim worker spent in ticks (rate / 1e6 = busy share of a core).",
    ),
    m(
        "zonehost_sim_migrations_total",
        Counter,
        &[],
        "Live players handed from one sim worker to another (a party member joining its leader's worker).",
    ),
    m(
        "zonehost_sim_forwarded_total",
        Counter,
        &[],
        "Inputs, requests and lifecycle messages a sim worker forwarded to the worker it had just handed their session to.",
    ),
    m(
        "zonehost_party_writes_total",
        Counter,
        &["result"],
        "Party records written in the store (cluster mode), by result: written (the compare-and-set won) or conflict (lost and retried).",
    ),
    m(
        "zonehost_party_mail_total",
        Counter,
        &["direction"],
        "Party messages between servers through the store's mailboxes, by direction: sent, received, invalid (did not decode, dropped).",
    ),
    m(
        "zonehost_party_handoffs_total",
        Counter,
        &[],
        "Party members handed to their leader's server: saved, lease released, redirected with a ticket.",
    ),
    m(
        "zonehost_party_members_pruned_total",
        Counter,
        &[],
        "Party members removed from their stored party because no server held them (no live player lease) for the absence grace: players of a crashed server that did not come back.",
    ),
    m(
        "zonehost_store_op_seconds",
        Histogram,
        &["op"],
        "Store command submitted by a sim worker to its reply, queueing included (op=load|save|item|items).",
    ),
    m(
        "zonehost_store_errors_total",
        Counter,
        &["op"],
        "Store commands that failed (I/O, corrupt data, database errors); refusals are not errors.",
    ),
    m(
        "zonehost_store_queue_depth",
        Gauge,
        &[],
        "Store commands queued and not yet taken by the store worker.",
    ),
    m(
        "zonehost_store_saves_stale_total",
        Counter,
        &[],
        "Checkpoints refused because a newer fence was already stored.",
    ),
    m(
        "zonehost_trades_total",
        Counter,
        &["outcome"],
        "Reserved trades answered by the store: committed, aborted (an item had changed owner), failed (store errors).",
    ),
    m(
        "zonehost_store_cache_hits_total",
        Counter,
        &[],
        "Player record loads answered by the moka cache.",
    ),
    m(
        "zonehost_store_cache_misses_total",
        Counter,
        &[],
        "Player record loads that went to the store.",
    ),
    m(
        "zonehost_input_apply_seconds",
        Histogram,
        &[],
        "Action latency stage 1: input datagram received to input applied in a tick.",
    ),
    m(
        "zonehost_input_age_seconds",
        Histogram,
        &[],
        "Age of an input datagram when the tick consumes it: read from the connection to taken from the sim inbox (network thread hand-off and inbox wait).",
    ),
    m(
        "zonehost_snapshot_round_trip_seconds",
        Histogram,
        &[],
        "Player-felt round trip: a snapshot handed to QUIC to the tick consuming the first input datagram that reports it (ack_tick); both directions' socket, network and queue waits included.",
    ),
    m(
        "zonehost_input_to_snapshot_seconds",
        Histogram,
        &[],
        "Action latency stages 1+2: input datagram received to the snapshot acknowledging it handed to QUIC.",
    ),
    m(
        "zonehost_snapshot_bytes",
        Histogram,
        &[],
        "Size of each snapshot datagram.",
    ),
    m(
        "zonehost_quic_rtt_seconds",
        Histogram,
        &[],
        "QUIC round-trip time estimate per connection, sampled every second.",
    ),
    m(
        "zonehost_quic_lost_packets_total",
        Counter,
        &[],
        "QUIC packets declared lost (sampled from quinn connection stats).",
    ),
    m(
        "zonehost_quic_congestion_events_total",
        Counter,
        &[],
        "QUIC congestion events (sampled from quinn connection stats).",
    ),
    m(
        "zonehost_quic_packets_total",
        Counter,
        &["direction"],
        "UDP packets of player connections, direction=sent|received (sampled every second from quinn connection stats; QUIC packets coalesced in one UDP datagram count once).",
    ),
    m(
        "zonehost_quic_datagram_frames_total",
        Counter,
        &["direction"],
        "QUIC DATAGRAM frames of player connections, direction=sent|received (sampled from quinn connection stats).",
    ),
    m(
        "zonehost_quic_ack_frames_total",
        Counter,
        &["direction"],
        "QUIC ACK frames of player connections, direction=sent|received, alone or riding on other frames (sampled from quinn connection stats).",
    ),
    m(
        "zonehost_quic_ack_only_packets_total",
        Counter,
        &["direction"],
        "Packets of player connections that carried nothing but ACK frames, direction=sent|received. An estimate from quinn's counters: packets minus non-ACK frames, at most the ACK frames (a lower bound, exact when no packet carries two non-ACK frames).",
    ),
    m(
        "zonehost_player_leases_total",
        Counter,
        &["event"],
        "Player ownership lease events (cluster mode): event=acquired (at login), renewed, released (after the final checkpoint), lost (taken over or expired: the session was closed and its writes stopped).",
    ),
    m(
        "zonehost_player_leases_held",
        Gauge,
        &[],
        "Player ownership leases this server holds (cluster mode; lost ones until their sessions end).",
    ),
    m(
        "zonehost_cluster_load_permille",
        Gauge,
        &[],
        "Mean sim worker busy fraction (per mille) this server last published to the servers table (cluster mode).",
    ),
    m(
        "zonehost_cluster_login_redirects_total",
        Counter,
        &[],
        "New logins redirected to a less loaded peer (placement by load, cluster mode).",
    ),
    m(
        "zonehost_cluster_handoffs_total",
        Counter,
        &["outcome"],
        "Players a draining server handed off (outcome=redirected: Redirect to a peer; closed: Goaway or connection already gone).",
    ),
    m(
        "zonehost_cluster_instance_placements_total",
        Counter,
        &["where"],
        "New instances of a zone change placed by load (cluster mode, dungeons of solo players and party leaders): where=local (created here) or peer (the player was saved in the new zone and redirected to a less loaded peer).",
    ),
];

/// Bucket bounds of every `_bytes` histogram.
pub const BYTES_BUCKETS: &[f64] = &[64.0, 128.0, 256.0, 512.0, 768.0, 1024.0, 1100.0, 1500.0];

/// Bucket bounds of every `_seconds` histogram.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

impl Stats {
    /// Copies the counters into the installed `metrics` recorder (called at scrape time,
    /// Adds a publisher of counters kept outside [`Stats`], run at every scrape.
    pub fn add_publisher(&self, publisher: impl Fn() + Send + Sync + 'static) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ExtraPublisher(Box::new(publisher)));
    }

    /// so the hot path only touches atomics).
    pub fn publish(&self, draining: bool) {
        use metrics::{counter, gauge};
        let c =
            |name: &'static str, v: &AtomicU64| counter!(name).absolute(v.load(Ordering::Relaxed));
        let g =
            |name: &'static str, v: &AtomicI64| gauge!(name).set(v.load(Ordering::Relaxed) as f64);
        c(
            "zonehost_connections_accepted_total",
            &self.connections_accepted,
        );
        counter!("zonehost_connections_refused_total", "reason" => "full")
            .absolute(Self::get(&self.connections_refused_full));
        counter!("zonehost_connections_refused_total", "reason" => "source_rate")
            .absolute(Self::get(&self.handshakes_refused_rate));
        c("zonehost_handshake_retries_total", &self.handshake_retries);
        for why in HandshakeFailure::ALL {
            counter!("zonehost_handshakes_failed_total", "reason" => why.as_str())
                .absolute(Self::get(&self.handshakes_failed[*why as usize]));
        }
        c(
            "zonehost_udp_datagrams_received_total",
            &self.udp_datagrams_in,
        );
        for reason in JunkReason::ALL {
            counter!("zonehost_udp_junk_datagrams_total", "reason" => reason.as_str())
                .absolute(Self::get(&self.udp_junk[*reason as usize]));
        }
        c(
            "zonehost_requests_rate_limited_total",
            &self.requests_rate_limited,
        );
        g("zonehost_connections_open", &self.connections_open);
        g("zonehost_sessions_active", &self.sessions_active);
        g("zonehost_instances_live", &self.instances_live);
        for code in ALL_REJECT_CODES {
            counter!("zonehost_session_rejects_total", "code" => code.as_str())
                .absolute(self.reject_count(code));
        }
        c("zonehost_datagrams_received_total", &self.datagrams_in);
        c(
            "zonehost_datagram_received_bytes_total",
            &self.datagram_bytes_in,
        );
        for cause in DropCause::ALL {
            counter!("zonehost_datagrams_dropped_total", "cause" => cause.as_str())
                .absolute(self.dropped_count(*cause));
        }
        c("zonehost_datagrams_sent_total", &self.datagrams_out);
        c(
            "zonehost_datagram_sent_bytes_total",
            &self.datagram_bytes_out,
        );
        counter!("zonehost_snapshots_sent_total", "kind" => "full")
            .absolute(self.snapshots_full.load(Ordering::Relaxed));
        counter!("zonehost_snapshots_sent_total", "kind" => "delta")
            .absolute(self.snapshots_delta.load(Ordering::Relaxed));
        c(
            "zonehost_datagram_send_errors_total",
            &self.datagram_send_errors,
        );
        c(
            "zonehost_datagrams_displaced_total",
            &self.datagrams_displaced,
        );
        c("zonehost_inputs_queued_total", &self.inputs_queued);
        c("zonehost_requests_total", &self.requests);
        for cause in DisconnectCause::ALL {
            counter!("zonehost_disconnects_total", "cause" => cause.as_str())
                .absolute(self.disconnect_count(*cause));
        }
        c("zonehost_ticks_total", &self.ticks);
        c("zonehost_ticks_late_total", &self.ticks_late);
        c("zonehost_ticks_skipped_total", &self.ticks_skipped);
        c("zonehost_tick_busy_microseconds_total", &self.tick_busy_us);
        c("zonehost_quic_lost_packets_total", &self.quic_lost_packets);
        c("zonehost_sim_migrations_total", &self.sim_migrations);
        c("zonehost_sim_forwarded_total", &self.sim_forwarded);
        counter!("zonehost_party_writes_total", "result" => "written")
            .absolute(Self::get(&self.party_writes));
        counter!("zonehost_party_writes_total", "result" => "conflict")
            .absolute(Self::get(&self.party_write_conflicts));
        for (direction, v) in [
            ("sent", &self.party_mail_sent),
            ("received", &self.party_mail_received),
            ("invalid", &self.party_mail_invalid),
        ] {
            counter!("zonehost_party_mail_total", "direction" => direction).absolute(Self::get(v));
        }
        c("zonehost_party_handoffs_total", &self.party_handoffs);
        c(
            "zonehost_party_members_pruned_total",
            &self.party_members_pruned,
        );
        c(
            "zonehost_quic_congestion_events_total",
            &self.quic_congestion_events,
        );
        for (i, direction) in ["sent", "received"].into_iter().enumerate() {
            for (name, v) in [
                ("zonehost_quic_packets_total", &self.quic_packets[i]),
                (
                    "zonehost_quic_datagram_frames_total",
                    &self.quic_datagram_frames[i],
                ),
                ("zonehost_quic_ack_frames_total", &self.quic_ack_frames[i]),
                (
                    "zonehost_quic_ack_only_packets_total",
                    &self.quic_ack_only_packets[i],
                ),
            ] {
                counter!(name, "direction" => direction).absolute(Self::get(v));
            }
        }
        let open = self.connections_open.load(Ordering::Relaxed);
        let active = self.sessions_active.load(Ordering::Relaxed);
        gauge!("zonehost_sessions_by_state", "state" => "handshaking")
            .set((open - active).max(0) as f64);
        gauge!("zonehost_sessions_by_state", "state" => "active").set(active as f64);
        gauge!("zonehost_sessions_by_state", "state" => "detached")
            .set(self.sessions_detached.load(Ordering::Relaxed) as f64);
        for (i, w) in self.workers.iter().enumerate() {
            let worker = i.to_string();
            gauge!("zonehost_sim_worker_players", "worker" => worker.clone())
                .set(w.players.load(Ordering::Relaxed) as f64);
            counter!("zonehost_sim_worker_busy_microseconds_total", "worker" => worker)
                .absolute(w.busy_us.load(Ordering::Relaxed));
        }
        gauge!("zonehost_draining").set(if draining { 1.0 } else { 0.0 });
        crate::process_stats::publish();
        for extra in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            (extra.0)();
        }
    }
}

/// Starts at zero the series that are recorded only when their event happens (or only in
/// cluster mode), so that `rate()`, `increase()` and alerts see them from the start instead
/// of an absent series. Label values are the closed sets the sources record.
pub fn register_event_series() {
    for outcome in ["committed", "aborted", "failed"] {
        metrics::counter!("zonehost_trades_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["redirected", "closed"] {
        metrics::counter!("zonehost_cluster_handoffs_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("zonehost_cluster_login_redirects_total").increment(0);
    for place in ["local", "peer"] {
        metrics::counter!("zonehost_cluster_instance_placements_total", "where" => place)
            .increment(0);
    }
    for event in ["acquired", "renewed", "released", "lost"] {
        metrics::counter!("zonehost_player_leases_total", "event" => event).increment(0);
    }
    metrics::gauge!("zonehost_player_leases_held").increment(0.0);
    metrics::gauge!("zonehost_cluster_load_permille").increment(0.0);
}

/// Registers help texts with the installed recorder.
pub fn describe() {
    for d in METRICS {
        match d.kind {
            MetricKind::Counter => metrics::describe_counter!(d.name, d.help),
            MetricKind::Gauge => metrics::describe_gauge!(d.name, d.help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(d.name, metrics::Unit::Seconds, d.help)
            }
        }
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
        assert_eq!(s.handshakes_failed.len(), HandshakeFailure::ALL.len());
        assert_eq!(s.udp_junk.len(), JunkReason::ALL.len());
        for (i, code) in ALL_REJECT_CODES.iter().enumerate() {
            assert_eq!(reject_index(*code), i);
        }
        s.rejected(RejectCode::Internal);
        assert_eq!(s.reject_count(RejectCode::Internal), 1);
    }

    /// Every metric name the server's sources record must be declared in [`METRICS`].
    #[test]
    fn every_recorded_metric_is_declared() {
        fn scan(dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    scan(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    for (i, _) in text.match_indices("\"zonehost_") {
                        let rest = &text[i + 1..];
                        let end = rest.find('"').unwrap_or(0);
                        let name = &rest[..end];
                        let is_name = name.len() > "zonehost_".len()
                            && name
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                        if is_name {
                            out.push(name.to_string());
                        }
                    }
                }
            }
        }
        let mut used = Vec::new();
        scan(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut used,
        );
        assert!(used.len() > 20, "the scan found the sources");
        for name in used {
            assert!(
                METRICS.iter().any(|d| d.name == name),
                "{name} is recorded but not declared in METRICS"
            );
        }
    }

    /// The metrics table of `docs/metrics.md` lists exactly the catalog.
    #[test]
    fn docs_list_every_metric() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
        )
        .unwrap_or_default();
        for d in METRICS {
            let row = format!("| `{}` | {} |", d.name, d.kind.as_str());
            assert!(
                doc.contains(&row),
                "docs/metrics.md lacks the row for {}",
                d.name
            );
        }
        for line in doc.lines().filter(|l| l.starts_with("| `zonehost_")) {
            let name = line
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or_default();
            assert!(
                METRICS.iter().any(|d| d.name == name),
                "docs/metrics.md lists {name}, which METRICS does not declare"
            );
        }
    }

    #[test]
    fn catalog_names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = METRICS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        assert!(METRICS.iter().all(|d| d.name.starts_with("zonehost_")));
        assert!(METRICS
            .iter()
            .filter(|d| d.kind == MetricKind::Counter)
            .all(|d| d.name.ends_with("_total")));
    }
}
