//! Server configuration: a TOML file whose every option has a documented default,
//! overridable by command-line flags and `ZONEHOST_*` environment variables, validated once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::StoreConfig;

/// What to do when a player who already has a live session logs in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SecondLogin {
    /// Refuse the new session with `Reject{AlreadyConnected}` (default).
    Refuse,
    /// Close the old session (close code `TAKEN_OVER`) and accept the new one.
    TakeOver,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (default).
    Human,
    /// One JSON object per line.
    Json,
}

/// A verifying key accepted for tokens, in addition to the dev key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyingKeyConfig {
    /// Key id carried in tokens (`Claims::key_id`).
    pub id: u32,
    /// Ed25519 public key, 64 hex characters.
    pub public_key_hex: String,
}

/// Every server option. Field docs state the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address of the QUIC endpoint. Default `0.0.0.0:4433`.
    pub listen: SocketAddr,
    /// Directory for the dev certificate, dev signing key and data files. Default `data`.
    pub data_dir: PathBuf,
    /// HTTP address for `/metrics`, `/healthz`, `/readyz`; `"off"` (or empty) to disable.
    /// Default `127.0.0.1:9464`.
    #[serde(with = "optional_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain; when unset a dev certificate is created in `data_dir`. Default unset.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`. Default unset.
    pub key_file: Option<PathBuf>,
    /// Token audience this server accepts. Default `dev`.
    pub audience: String,
    /// Allowed clock difference when checking token times, seconds. Default 30.
    pub token_skew_secs: u64,
    /// Accept tokens signed by the dev key in `data_dir` (created on first run). Default true.
    pub dev_signing_key: bool,
    /// Further verifying keys (rotation). Default none.
    pub verifying_keys: Vec<VerifyingKeyConfig>,
    /// Directory with zone templates in `zones/*.toml`; unset uses the built-in content
    /// (the files of the repository's `content/`, compiled in). Default unset.
    pub content_dir: Option<PathBuf>,
    /// Simulation worker threads, each owning a set of zone instances. Default 1.
    pub sim_workers: usize,
    /// Tokio worker threads for networking. Default 1 (measured best on 2 cores, see docs/performance.md).
    pub net_threads: usize,
    /// Simulation ticks per second. Default 60.
    pub tick_rate_hz: u16,
    /// Snapshots per second; must divide `tick_rate_hz`. Default 30: the measured setting
    /// for 1000 players on one 2-core server (docs/operations.md, *Snapshots: cadence and
    /// interest*); a client may ask for fewer (`Request::SnapshotRate`).
    pub snapshot_rate_hz: u16,
    /// Radius around a player within which it is sent monsters and items on the ground,
    /// millimetres (its party's players are always sent). Default 30 000 (30 m: more than
    /// a screen in every direction).
    pub interest_radius_mm: u32,
    /// Ticks a late worker may run back to back to catch up before skipping. Default 5.
    pub max_catchup_ticks: u32,
    /// Most concurrent connections (handshaking or playing). Default 5000.
    pub max_connections: usize,
    /// Requested UDP socket receive buffer, bytes (the kernel may cap it: see `net.core.rmem_max`). Default 4 MiB.
    pub udp_recv_buffer: usize,
    /// Requested UDP socket send buffer, bytes (capped by `net.core.wmem_max`). Default 4 MiB.
    pub udp_send_buffer: usize,
    /// Per-connection buffer for received, unread datagrams, bytes. Default 65536.
    pub datagram_recv_buffer: usize,
    /// Per-connection buffer for datagrams waiting to be sent, bytes (oldest dropped first).
    /// Kept small so a starved sender drops stale snapshots instead of queueing seconds of them. Default 8192.
    pub datagram_send_buffer: usize,
    /// Connection idle timeout, milliseconds. Default 10000.
    pub idle_timeout_ms: u64,
    /// Time a client has to open the control stream and send `Hello`, milliseconds. Default 5000.
    pub hello_timeout_ms: u64,
    /// Capacity of each sim worker's input/request inbox (messages). Default 65536. A bound,
    /// not a reservation: the inbox takes memory for what it holds (`queue::BoundedQueue`).
    pub inbox_capacity: usize,
    /// Capacity of each session's reliable outbox (frames); a client that lets it fill is
    /// disconnected as a slow reader. Default 256.
    pub outbox_capacity: usize,
    /// Largest reliable frame accepted from a client, bytes (at most 65536). Default 16384.
    pub max_frame_len: usize,
    /// Input datagrams per second a connection may send (token bucket rate). Default 120.
    pub datagram_rate: u32,
    /// Input datagram burst. Default 240.
    pub datagram_burst: u32,
    /// Requests per second a session may send. Default 30.
    pub request_rate: u32,
    /// Request burst. Default 60.
    pub request_burst: u32,
    /// Violations (malformed or rate-limited messages) tolerated within 10 s before the
    /// connection is closed with close code `ABUSE`. Default 200.
    pub max_violations: u32,
    /// Handshakes per second accepted from one source IP address (many players can share
    /// one NAT address, and loadgen runs from one address). Default 500.
    pub handshakes_per_ip_rate: u32,
    /// Handshake burst per source IP address. Default 1000.
    pub handshakes_per_ip_burst: u32,
    /// Above this many new connections per second server-wide, unvalidated clients must
    /// complete a QUIC stateless retry (address validation) first. Default 500.
    pub retry_above_handshakes_per_sec: u32,
    /// Unexpired token nonces remembered to refuse replays (memory bound). Default 1000000.
    pub replay_cache_capacity: usize,
    /// How long a session whose connection was lost (idle timeout, transport error) stays
    /// in its world waiting for a resume token, milliseconds; 0 closes it at once. Default 30000.
    pub resume_grace_ms: u64,
    /// Second login for a live player. Default `refuse`.
    pub second_login: SecondLogin,
    /// Time allowed for a graceful drain after SIGTERM/SIGINT, milliseconds. Default 10000.
    pub drain_timeout_ms: u64,
    /// After a drain, how long the process keeps serving `/metrics` (with
    /// `zonehost_draining 1`, `/readyz` 503) before it exits, milliseconds, so that
    /// Prometheus scrapes the drain and the `ZonehostDown` alert can tell a planned stop from
    /// a crash. Must exceed the scrape interval plus its timeout; 0 exits at once. Only
    /// applies when `metrics_listen` is set. Default 10000 (two scrapes at the shipped 5 s;
    /// drain plus linger stay under the 30 s stop timeouts in deploy/).
    pub drain_linger_ms: u64,
    /// Delay clients are told to wait before reconnecting after a drain, milliseconds. Default 2000.
    pub reconnect_after_ms: u32,
    /// Log format. Default `human`.
    pub log_format: LogFormat,
    /// File holding the QUIC stateless-reset secret (64 raw bytes). It must survive a
    /// restart so that the restarted server can answer packets of connections that died
    /// with it by a stateless reset (clients learn in one round trip instead of waiting
    /// out their idle timeout). Servers of a cluster may share one file, like
    /// `cluster.ticket_key_file`. When unset, `data_dir/stateless-reset.key` is created
    /// on first run (owner-only permissions) and reused. Default unset.
    pub reset_key_file: Option<PathBuf>,
    /// Least time between two stateless resets the endpoint sends, microseconds (quinn's
    /// default is 20000, which resets only 50 dead connections per second after a
    /// crash). A reset is always smaller than the packet that caused it, so it cannot
    /// amplify. Default 1000.
    pub reset_min_interval_us: u64,
    /// Persistence (`[store]`): backend (default: the embedded redb file
    /// `data_dir/store.redb`, no set-up), checkpoint interval (default 10 s), player cache
    /// (default 10000 records, 600 s idle TTL), queue sizes. Every field and its default
    /// is documented on [`StoreConfig`].
    pub store: StoreConfig,
    /// Several servers on one shared store (`[cluster]`): player ownership leases,
    /// redirects. Off by default; every field and its default is documented on
    /// [`ClusterConfig`].
    pub cluster: ClusterConfig,
    /// How peers are asked to acknowledge (`[ack]`, the QUIC ACK frequency extension);
    /// every field and its default is documented on [`crate::net::AckConfig`].
    pub ack: crate::net::AckConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            data_dir: PathBuf::from("data"),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            cert_file: None,
            key_file: None,
            audience: "dev".into(),
            token_skew_secs: 30,
            dev_signing_key: true,
            verifying_keys: Vec::new(),
            content_dir: None,
            sim_workers: 1,
            net_threads: 1,
            tick_rate_hz: 60,
            snapshot_rate_hz: 30,
            interest_radius_mm: 30_000,
            max_catchup_ticks: 5,
            max_connections: 5000,
            udp_recv_buffer: 4 << 20,
            udp_send_buffer: 4 << 20,
            datagram_recv_buffer: 64 << 10,
            datagram_send_buffer: 8 << 10,
            idle_timeout_ms: 10_000,
            hello_timeout_ms: 5_000,
            inbox_capacity: 65_536,
            outbox_capacity: 256,
            max_frame_len: 16 << 10,
            datagram_rate: 120,
            datagram_burst: 240,
            request_rate: 30,
            request_burst: 60,
            max_violations: 200,
            handshakes_per_ip_rate: 500,
            handshakes_per_ip_burst: 1000,
            retry_above_handshakes_per_sec: 500,
            replay_cache_capacity: 1_000_000,
            resume_grace_ms: 30_000,
            second_login: SecondLogin::Refuse,
            drain_timeout_ms: 10_000,
            drain_linger_ms: 10_000,
            reconnect_after_ms: 2_000,
            log_format: LogFormat::Human,
            reset_key_file: None,
            reset_min_interval_us: 1_000,
            store: StoreConfig::default(),
            cluster: ClusterConfig::default(),
            ack: crate::net::AckConfig::default(),
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("parsing {path}: {source}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An option is out of range.
    #[error("invalid option `{option}`: {reason}")]
    Invalid {
        /// Option name.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file; missing options take their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })
    }

    /// Checks every option once; the server relies on these invariants afterwards.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: &str| {
            Err(ConfigError::Invalid {
                option,
                reason: reason.into(),
            })
        };
        if self.sim_workers == 0 || self.sim_workers > 256 {
            return invalid("sim_workers", "must be 1..=256");
        }
        if self.net_threads == 0 || self.net_threads > 256 {
            return invalid("net_threads", "must be 1..=256");
        }
        if !(1..=240).contains(&self.tick_rate_hz) {
            return invalid("tick_rate_hz", "must be 1..=240");
        }
        if self.snapshot_rate_hz == 0 || self.tick_rate_hz % self.snapshot_rate_hz != 0 {
            return invalid("snapshot_rate_hz", "must be > 0 and divide tick_rate_hz");
        }
        if !(1_000..=1_000_000).contains(&self.interest_radius_mm) {
            return invalid("interest_radius_mm", "must be 1000..=1000000 (1 m to 1 km)");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be > 0");
        }
        if self.max_frame_len < 256 || self.max_frame_len > zonehost_protocol::MAX_FRAME_LEN {
            return invalid("max_frame_len", "must be 256..=65536");
        }
        if self.inbox_capacity < 16 || self.outbox_capacity < 4 {
            return invalid("inbox_capacity/outbox_capacity", "must be >= 16 / >= 4");
        }
        if self.datagram_recv_buffer < 2048 || self.datagram_send_buffer < 2048 {
            return invalid("datagram_*_buffer", "must be >= 2048");
        }
        if let Err(reason) = self.ack.check() {
            return invalid("ack", reason);
        }
        if self.idle_timeout_ms < 1000 || self.hello_timeout_ms == 0 {
            return invalid(
                "idle_timeout_ms/hello_timeout_ms",
                "idle >= 1000, hello > 0",
            );
        }
        if self.datagram_rate == 0
            || self.datagram_burst == 0
            || self.request_rate == 0
            || self.request_burst == 0
        {
            return invalid("datagram_rate/request_rate", "rates and bursts must be > 0");
        }
        if self.handshakes_per_ip_rate == 0
            || self.handshakes_per_ip_burst == 0
            || self.replay_cache_capacity == 0
        {
            return invalid("handshakes_per_ip_*/replay_cache_capacity", "must be > 0");
        }
        if self.audience.is_empty() {
            return invalid("audience", "must not be empty");
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return invalid("cert_file/key_file", "set both or neither");
        }
        if !self.dev_signing_key && self.verifying_keys.is_empty() {
            return invalid(
                "verifying_keys",
                "no token key: enable dev_signing_key or list keys",
            );
        }
        for k in &self.verifying_keys {
            if k.public_key_hex.len() != 64
                || !k.public_key_hex.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return invalid("verifying_keys", "public_key_hex must be 64 hex characters");
            }
        }
        if let Err(e) = self.store.validate() {
            return Err(ConfigError::Invalid {
                option: "store",
                reason: e.to_string(),
            });
        }
        if let Err(reason) = self.cluster.validate() {
            return Err(ConfigError::Invalid {
                option: "cluster",
                reason,
            });
        }
        Ok(())
    }

    /// Ticks between two snapshots.
    pub fn ticks_per_snapshot(&self) -> u32 {
        u32::from(self.tick_rate_hz / self.snapshot_rate_hz.max(1))
    }
}

/// `Option<SocketAddr>` in a config file: an address, or `"off"` / `""` for none (an absent
/// key keeps the default, so "none" needs a value of its own; it is written back as
/// `"off"`, so `zonehost config` output reads back the same).
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str("off"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "off" | "" => Ok(None),
            addr => addr.parse().map(Some).map_err(|e| {
                serde::de::Error::custom(format!("{addr:?}: {e} (an address, or \"off\")"))
            }),
        }
    }
}

/// Cluster options (`[cluster]` in the server config). Field docs state the default; the
/// defaults keep a single server working exactly as without this section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Take a player ownership lease at login (see the module docs). Default `false`.
    pub enabled: bool,
    /// The address clients must use for each other server of the cluster, by its
    /// `server_id`: a login of a player another server owns is redirected there. Servers
    /// missing here are found through the store instead, by the address each publishes with
    /// its load (`advertise`), for as long as its load row is live; a listed address wins
    /// over a published one. A player owned by a server known neither way is refused with
    /// `AlreadyConnected`. Default empty.
    pub peers: BTreeMap<String, SocketAddr>,
    /// The address clients reach this server at, published with its load so that peers
    /// that do not list it in their `peers` find it (a new server joins a running cluster
    /// without a change to the others' configuration). Default unset: the `listen` address
    /// when its IP is a specific one (not `0.0.0.0` or `::`), else nothing is published.
    pub advertise: Option<SocketAddr>,
    /// Lifetime of a player lease, seconds; the owner renews it every third of this. If a
    /// server dies, its players can log in elsewhere after at most this long. Default 30.
    pub player_lease_ttl_secs: u64,
    /// The cluster's shared redirect-ticket signing key (32 raw bytes; every server of a
    /// cluster must have the same file). Default unset: `data_dir/cluster-ticket.key`,
    /// created on first start.
    pub ticket_key_file: Option<PathBuf>,
    /// How often this server publishes its load to the store's `servers` table and reads
    /// the others' (see [`crate::placement`]); a row lives 5 intervals. Milliseconds,
    /// default 1000.
    pub load_report_interval_ms: u64,
    /// New logins are redirected to a less loaded peer only while this server's sim busy
    /// fraction is at least this, per mille. Default 600 (60 % busy).
    pub redirect_above_permille: u32,
    /// ... and at least this much above the least loaded peer's estimate, per mille
    /// (hysteresis: redirecting stops below half of it, or below
    /// `redirect_above_permille` minus half of it). Default 250. With both at 0 every
    /// login goes to the least loaded peer (a test and dev setting).
    pub redirect_margin_permille: u32,
    /// Place new dungeon instances by load too: while this server is overloaded (the same
    /// thresholds and hysteresis as for logins, see [`crate::placement`]) a solo player or
    /// party leader whose zone change would open a new dungeon instance is saved in that
    /// zone and redirected to the least loaded peer, which opens the instance. Needs
    /// clients that follow a `Redirect` after `Welcome` (SPEC §2.4); turn it off while
    /// older clients play. Default `true`.
    pub place_instances: bool,
    /// Lifetime of a party invitation, seconds: an invitee may answer it on whichever
    /// server it plays until then (it survives the invitee's moves, logouts and its
    /// server's restarts), then it is gone (`NoInvite`). Default 120: longer than a crash
    /// costs a player (`player_lease_ttl_secs` plus a reconnect), short enough that a
    /// forgotten invitation does not surprise anyone.
    pub party_invite_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            peers: BTreeMap::new(),
            advertise: None,
            player_lease_ttl_secs: 30,
            ticket_key_file: None,
            load_report_interval_ms: 1000,
            redirect_above_permille: 600,
            redirect_margin_permille: 250,
            place_instances: true,
            party_invite_ttl_secs: 120,
        }
    }
}

impl ClusterConfig {
    /// Checks ranges; `Err` names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=3600).contains(&self.player_lease_ttl_secs) {
            return Err("player_lease_ttl_secs must be 1..=3600".into());
        }
        if !(50..=60_000).contains(&self.load_report_interval_ms) {
            return Err("load_report_interval_ms must be 50..=60000".into());
        }
        if !(1..=3600).contains(&self.party_invite_ttl_secs) {
            return Err("party_invite_ttl_secs must be 1..=3600".into());
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(format!(
                    "advertise {a} must be an address clients can reach (a specific IP and port)"
                ));
            }
        }
        if self.redirect_above_permille > 1000 || self.redirect_margin_permille > 1000 {
            return Err(
                "redirect_above_permille and redirect_margin_permille must be at most 1000".into(),
            );
        }
        Ok(())
    }

    /// The address this server publishes for its peers: `advertise`, else `listen` when
    /// its IP is a specific one (see [`ClusterConfig::advertise`]).
    pub fn advertised(&self, listen: SocketAddr) -> Option<SocketAddr> {
        self.advertise
            .or_else(|| (!listen.ip().is_unspecified() && listen.port() != 0).then_some(listen))
    }

    /// The load report interval.
    pub fn load_report_interval(&self) -> Duration {
        Duration::from_millis(self.load_report_interval_ms)
    }

    /// The lease lifetime.
    pub fn player_lease_ttl(&self) -> Duration {
        Duration::from_secs(self.player_lease_ttl_secs)
    }

    /// The lifetime of a party invitation.
    pub fn party_invite_ttl(&self) -> Duration {
        Duration::from_secs(self.party_invite_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        let text = toml::to_string(&c).expect("serialize");
        let back: Config = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn metrics_can_be_turned_off_in_the_file_and_that_round_trips() {
        for off in ["\"off\"", "\"\""] {
            let c: Config = toml::from_str(&format!("metrics_listen = {off}\n")).expect("parse");
            assert_eq!(c.metrics_listen, None);
            let back: Config =
                toml::from_str(&toml::to_string(&c).expect("serialize")).expect("parse");
            assert_eq!(back.metrics_listen, None);
        }
        let c: Config = toml::from_str("metrics_listen = \"127.0.0.1:9999\"\n").expect("parse");
        assert_eq!(
            c.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9999)))
        );
        assert!(toml::from_str::<Config>("metrics_listen = \"nowhere\"\n").is_err());
    }

    #[test]
    fn partial_file_takes_defaults_and_unknown_keys_fail() {
        let c: Config = toml::from_str("sim_workers = 2\n").expect("parse");
        assert_eq!(c.sim_workers, 2);
        assert_eq!(c.tick_rate_hz, 60);
        assert!(toml::from_str::<Config>("no_such_option = 1\n").is_err());
    }

    #[test]
    fn store_section_parses_and_is_validated() {
        let c: Config = toml::from_str("[store]\ncheckpoint_interval_secs = 3\n").expect("parse");
        assert_eq!(c.store.checkpoint_interval_secs, 3);
        assert_eq!(
            c.store.cache_capacity,
            StoreConfig::default().cache_capacity
        );
        assert!(toml::from_str::<Config>("[store]\nnope = 1\n").is_err());
        let mut bad = Config::default();
        bad.store.checkpoint_interval_secs = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                option: "store",
                ..
            })
        ));
    }

    #[test]
    fn invalid_values_are_named() {
        let c = Config {
            snapshot_rate_hz: 7,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                option: "snapshot_rate_hz",
                ..
            })
        ));
        let c = Config {
            cert_file: Some("a".into()),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                option: "cert_file/key_file",
                ..
            })
        ));
    }
}
