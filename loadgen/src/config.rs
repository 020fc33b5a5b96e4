//! What a load run does: [`Config`] and where bots get their tokens ([`TokenSource`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use zonehost_client::{Impairment, TransportOptions, Trust, DEFAULT_SOCKET_BUFFER};

use crate::behaviour::{Behaviour, Mix};
use crate::error::Error;
use crate::slo::Slo;

/// Everything a load run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server address (with `other_servers` empty, the only address bots connect to).
    pub server: SocketAddr,
    /// Further servers of a cluster: bots are spread over `server` and these (a party
    /// group stays together on its leader's server). Default empty.
    pub other_servers: Vec<SocketAddr>,
    /// Party members connect to servers in turn like every bot, not to their leader's
    /// server, so a cluster must bring them together (the leader's server redirects them).
    pub spread_parties: bool,
    /// TLS server name sent in the handshake (the certificate is pinned, so any valid name works).
    pub server_name: String,
    /// Which server certificate is trusted.
    pub trust: Trust,
    /// Where tokens come from.
    pub tokens: TokenSource,
    /// Number of bots.
    pub players: usize,
    /// Total length of the run, ramp-up included; every bot stops at its end.
    pub duration: Duration,
    /// Connects are spread evenly over this period from the start.
    pub ramp_up: Duration,
    /// Input datagrams per second per bot (each carries the commands sampled at 60 Hz
    /// since the previous one). Default 30.
    pub input_hz: u32,
    /// Send each input this long after a snapshot arrives (the input schedule is moved
    /// when it drifts by more than a quarter period), instead of on a free-running
    /// schedule. Meant for `input_hz` equal to the server's snapshot rate: a fixed phase
    /// lets the ACKs of both directions ride on datagrams (docs/operations.md, ACK
    /// frequency). `None` (default): free-running.
    pub input_phase: Option<Duration>,
    /// Each bot asks for at most this many snapshots per second on each connection
    /// (`Request::SnapshotRate`, right after the `Welcome`); `None` (default): the
    /// server's rate.
    pub snapshot_rate_hz: Option<u16>,
    /// Number of client UDP sockets (quinn endpoints) bots are spread over.
    pub sockets: usize,
    /// Requested `SO_RCVBUF`/`SO_SNDBUF` of each socket, bytes.
    pub socket_buffer: usize,
    /// Seed of the bots' movement and of their names (`bot-<seed>-<i>`).
    pub seed: u64,
    /// Bound on connect + authentication per bot.
    pub connect_timeout: Duration,
    /// A bot whose connection is lost (reset, idle timeout, `Goaway` and close) gets its
    /// session back (resume, else a fresh login) with `zonehost_client::recover`, and
    /// fails only when it is not back within this deadline; `None`: the loss fails the
    /// bot. Default 30 s.
    pub recover_deadline: Option<Duration>,
    /// Write what the server confirmed about every item a bot touched to this file (JSON
    /// lines), for `zonehost store verify-ops` after the run; `None`: no log.
    pub ops_log: Option<std::path::PathBuf>,
    /// The server's metrics address (`metrics_listen`): its CPU and memory over the window
    /// from the end of the ramp-up to the end of the run go into the report.
    pub server_metrics: Option<SocketAddr>,
    /// Fail the run when the action-latency p99 exceeds this.
    pub max_p99: Option<Duration>,
    /// Fail the run when snapshots received / expected falls below this ratio (0..=1).
    pub min_snapshot_ratio: Option<f64>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// QUIC transport settings of the bots' connections.
    pub transport: TransportOptions,
    /// Scenario name, for the report (`None`: flags only).
    pub scenario: Option<String>,
    /// Relative weights of bot behaviours (default: all movers).
    pub mix: Mix,
    /// Pause range after non-combat actions (looting, party, zone dwell).
    pub think: (Duration, Duration),
    /// Snapshots per second a navigating bot looks into (own position, monsters).
    pub view_hz: u32,
    /// How long a churner stays connected, range.
    pub churn_session: (Duration, Duration),
    /// How long a churner stays away before logging in again, range.
    pub churn_pause: (Duration, Duration),
    /// How long a party member stays in its party before leaving, range.
    pub party_stay: (Duration, Duration),
    /// A party leader opens a trade with the nearest member this often (each side offers a
    /// potion and accepts); `None` (the default): party bots do not trade.
    pub party_trade_every: Option<Duration>,
    /// Network impairment of the bots' sockets.
    pub impair: Impairment,
    /// Service-level objectives that decide the result (besides bot failures).
    pub slo: Vec<Slo>,
    /// The server's content directory (`DIR/zones/*.toml`), when it does not run the
    /// built-in zones; bots plan their paths on these maps.
    pub content_dir: Option<std::path::PathBuf>,
}

impl Config {
    /// Every server address bots connect to: `server`, then `other_servers`.
    pub fn servers(&self) -> Vec<SocketAddr> {
        std::iter::once(self.server)
            .chain(self.other_servers.iter().copied())
            .collect()
    }

    /// A configuration with defaults for everything but the server, its trust and tokens:
    /// 10 players, 30 s, 5 s ramp-up, 60 Hz, 4 sockets, seed 1, 10 s connect timeout, all
    /// movers, think times 0.5..2 s, bots look at 10 snapshots per second, churners stay
    /// 10..30 s and pause 1..3 s, party members stay 20..40 s, no impairment, no SLO.
    pub fn new(server: SocketAddr, trust: Trust, tokens: TokenSource) -> Self {
        Self {
            server,
            other_servers: Vec::new(),
            spread_parties: false,
            server_name: "localhost".into(),
            trust,
            tokens,
            players: 10,
            duration: Duration::from_secs(30),
            ramp_up: Duration::from_secs(5),
            input_hz: 30,
            input_phase: None,
            snapshot_rate_hz: None,
            sockets: 4,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            seed: 1,
            connect_timeout: Duration::from_secs(10),
            recover_deadline: Some(Duration::from_secs(30)),
            ops_log: None,
            server_metrics: None,
            max_p99: None,
            min_snapshot_ratio: None,
            progress: false,
            transport: TransportOptions::default(),
            scenario: None,
            mix: Mix::default(),
            think: (Duration::from_millis(500), Duration::from_secs(2)),
            view_hz: 10,
            churn_session: (Duration::from_secs(10), Duration::from_secs(30)),
            churn_pause: (Duration::from_secs(1), Duration::from_secs(3)),
            party_stay: (Duration::from_secs(20), Duration::from_secs(40)),
            party_trade_every: None,
            impair: Impairment::default(),
            slo: Vec::new(),
            content_dir: None,
        }
    }

    /// Checks the settings once, before anything starts.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.players == 0 {
            return bad("players must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("duration must be positive");
        }
        if self.ramp_up >= self.duration {
            return bad("ramp-up must be shorter than the duration");
        }
        if self.input_hz == 0 || self.input_hz > 1000 {
            return bad("input rate must be 1..=1000 Hz");
        }
        if self.sockets == 0 {
            return bad("sockets must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect timeout must be positive");
        }
        if let Some(r) = self.min_snapshot_ratio {
            if !(0.0..=1.0).contains(&r) {
                return bad("min snapshot ratio must be within 0..=1");
            }
        }
        if let Err(e) = self.transport.transport_config() {
            return Err(Error::Config(e.to_string()));
        }
        self.mix.validate().map_err(Error::Config)?;
        if self.view_hz == 0 || self.view_hz > 1000 {
            return bad("view rate must be 1..=1000 Hz");
        }
        for (name, (lo, hi)) in [
            ("think time", self.think),
            ("churn session", self.churn_session),
            ("churn pause", self.churn_pause),
            ("party stay", self.party_stay),
        ] {
            if lo > hi {
                return Err(Error::Config(format!("{name}: minimum above maximum")));
            }
        }
        if self.churn_session.0.is_zero() {
            return bad("churn session must be positive");
        }
        self.impair
            .validate()
            .map_err(|e| Error::Config(format!("impairment: {e}")))?;
        let churners = self.mix.0.get(&Behaviour::Churner).is_some_and(|w| *w > 0);
        if churners && matches!(self.tokens, TokenSource::Fixed(_)) {
            return bad(
                "churners need fresh tokens for each login: use a signing key or a token command",
            );
        }
        if self
            .servers()
            .iter()
            .any(|s| s.ip().is_unspecified() || s.port() == 0)
        {
            return bad("server address must be a concrete host and port");
        }
        Ok(())
    }
}

/// Where bots get their authentication tokens.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// Mint tokens locally with an Ed25519 signing key (the server's dev key, or an account
    /// backend's key in a test environment).
    SigningKey {
        /// The key (boxed: it is large next to the other variants).
        key: Box<SigningKey>,
        /// Key id written in the claims.
        key_id: u32,
        /// Audience written in the claims (must match the server's).
        audience: String,
        /// Token lifetime.
        ttl: Duration,
    },
    /// Run a shell command per bot and use its trimmed standard output as the token;
    /// `{player}` in the command is replaced by the bot's player name.
    Command(String),
    /// Use these tokens, one per bot in order (there must be at least as many as bots).
    Fixed(Vec<String>),
}

impl TokenSource {
    /// A [`TokenSource::SigningKey`] reading the 32-byte Ed25519 secret seed from `path`
    /// (the server's `<data_dir>/dev-signing.key`), with a lifetime of one hour.
    pub fn signing_key_file(
        path: impl AsRef<Path>,
        key_id: u32,
        audience: impl Into<String>,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })?;
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            Error::Config(format!(
                "{}: expected a 32-byte Ed25519 seed, found {} bytes",
                path.display(),
                bytes.len()
            ))
        })?;
        Ok(TokenSource::SigningKey {
            key: Box::new(SigningKey::from_bytes(&seed)),
            key_id,
            audience: audience.into(),
            ttl: Duration::from_secs(3600),
        })
    }
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 30s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("duration {text:?}: {e}"))
}

/// Parses a duration range `500ms..2s` (or one duration for both ends).
pub fn parse_range(text: &str) -> Result<(Duration, Duration), String> {
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if a > b {
                return Err(format!("range {text:?}: minimum above maximum"));
            }
            Ok((a, b))
        }
        None => parse_duration(text).map(|d| (d, d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("500ms..2s"),
            Ok((Duration::from_millis(500), Duration::from_secs(2)))
        );
        assert_eq!(
            parse_range("1s"),
            Ok((Duration::from_secs(1), Duration::from_secs(1)))
        );
        assert!(parse_range("2s..1s").is_err());
        assert!(parse_range("x..1s").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn validation() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let c = Config::new(
            addr,
            Trust::Fingerprint([0; 32]),
            TokenSource::Fixed(vec![]),
        );
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.ramp_up = bad.duration;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.players = 0;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.server = "0.0.0.0:4433".parse().expect("addr");
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.min_snapshot_ratio = Some(1.5);
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.mix = Mix::parse("churner=1").expect("mix");
        assert!(
            bad.validate().is_err(),
            "churners cannot renew fixed tokens"
        );
        let mut bad = c;
        bad.impair.up.loss = 2.0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn signing_key_file_needs_32_bytes() {
        let dir = std::env::temp_dir().join(format!("zh-loadgen-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.key");
        std::fs::write(&good, [7u8; 32]).expect("write");
        assert!(matches!(
            TokenSource::signing_key_file(&good, 0, "dev"),
            Ok(TokenSource::SigningKey { key_id: 0, .. })
        ));
        let bad = dir.join("bad.key");
        std::fs::write(&bad, [7u8; 31]).expect("write");
        assert!(TokenSource::signing_key_file(&bad, 0, "dev").is_err());
        assert!(TokenSource::signing_key_file(dir.join("missing"), 0, "dev").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
