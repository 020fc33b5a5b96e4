//! `loadgen`: drive N zonehost bots over real QUIC and report action latency.
//!
//! ```text
//! loadgen --players 500 --duration 30s --server 127.0.0.1:4433 --cert data/cert.der \
//!         --token-key data/dev-signing.key --ramp-up 5s --input-hz 60 --max-p99-ms 50 \
//!         --report report.json --sockets 4 --seed 1
//! ```
//! Exit code 0 when every criterion held, 1 when one did not (a bot failed, p99 above
//! `--max-p99-ms`, ...), 2 when the run could not start.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use zonehost_client::{
    TransportOptions, Trust, DEFAULT_DATAGRAM_RECEIVE_BUFFER, DEFAULT_SOCKET_BUFFER,
};
use zonehost_loadgen::{parse_duration, Config, TokenSource};

/// Drive N zonehost bots over real QUIC and report action latency.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Number of bots.
    #[arg(long, default_value_t = 10)]
    players: usize,
    /// Total run time, ramp-up included (30s, 2m, ...).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Server address; bots connect to this address only.
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: SocketAddr,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Server certificate (DER) to trust exactly, e.g. the server's DATA_DIR/cert.der.
    #[arg(long, default_value = "data/cert.der", conflicts_with = "fingerprint")]
    cert: PathBuf,
    /// Pin the server certificate by SHA-256 fingerprint (64 hex digits) instead of --cert.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Ed25519 signing key seed (32 raw bytes) to mint bot tokens with.
    #[arg(long, default_value = "data/dev-signing.key")]
    token_key: PathBuf,
    /// Get each bot's token from this shell command instead (`{player}` is replaced by the
    /// bot's name; the last line of its output is the token), e.g.
    /// 'target/release/zonehost token --data-dir data --player {player}'.
    #[arg(long, value_name = "CMD", conflicts_with = "token_key")]
    tokens_from_cmd: Option<String>,
    /// Key id written in minted tokens.
    #[arg(long, default_value_t = 0)]
    key_id: u32,
    /// Audience written in minted tokens.
    #[arg(long, default_value = "dev")]
    audience: String,
    /// Connects are spread evenly over this period.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    ramp_up: Duration,
    /// Inputs per second per bot.
    #[arg(long, default_value_t = 60)]
    input_hz: u32,
    /// Fail (exit 1) when the action-latency p99 exceeds this many milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Fail (exit 1) when snapshots received / expected is below this ratio.
    #[arg(long)]
    min_snapshot_ratio: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Client UDP sockets to spread the bots over.
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Requested SO_RCVBUF/SO_SNDBUF per socket, bytes.
    #[arg(long, default_value_t = DEFAULT_SOCKET_BUFFER)]
    socket_buffer: usize,
    /// Per-connection buffer for received, unread datagrams, bytes (the oldest are dropped
    /// beyond it).
    #[arg(long, default_value_t = DEFAULT_DATAGRAM_RECEIVE_BUFFER)]
    datagram_buffer: usize,
    /// Seed of movement and bot names (bot-SEED-INDEX).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tokio worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Bound on connect + authentication per bot.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Print a progress line every second even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
}

impl Cli {
    fn config(&self) -> Result<Config> {
        let trust = match &self.fingerprint {
            Some(fp) => Trust::parse_fingerprint(fp)?,
            None => Trust::certificate_file(&self.cert)
                .with_context(|| "reading the server certificate (--cert)")?,
        };
        let tokens = match &self.tokens_from_cmd {
            Some(cmd) => TokenSource::Command(cmd.clone()),
            None => TokenSource::signing_key_file(&self.token_key, self.key_id, &self.audience)
                .context("loading the token signing key (--token-key)")?,
        };
        let mut c = Config::new(self.server, trust, tokens);
        c.server_name = self.server_name.clone();
        c.players = self.players;
        c.duration = self.duration;
        c.ramp_up = self.ramp_up;
        c.input_hz = self.input_hz;
        c.sockets = self.sockets;
        c.socket_buffer = self.socket_buffer;
        c.seed = self.seed;
        c.connect_timeout = self.connect_timeout;
        c.max_p99 = match self.max_p99_ms {
            Some(ms) => Some(
                Duration::try_from_secs_f64(ms / 1000.0).context("--max-p99-ms must be >= 0")?,
            ),
            None => None,
        };
        c.min_snapshot_ratio = self.min_snapshot_ratio;
        c.progress = self.progress || std::io::stderr().is_terminal();
        c.transport = TransportOptions {
            datagram_receive_buffer: self.datagram_buffer,
            ..TransportOptions::default()
        };
        c.validate()?;
        Ok(c)
    }
}

fn run(cli: Cli) -> Result<bool> {
    let config = cli.config()?;
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    let report = runtime.block_on(zonehost_loadgen::run(config))?;
    println!("{report}");
    if let Some(path) = &cli.report {
        let json = report.to_json().context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.passed())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
