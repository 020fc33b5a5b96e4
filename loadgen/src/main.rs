//! `loadgen`: drive N zonehost bots over real QUIC and report action latency.
//!
//! ```text
//! loadgen --players 500 --duration 30s --server 127.0.0.1:4433 --cert data/cert.der \
//!         --token-key data/dev-signing.key --ramp-up 5s --input-hz 60 --max-p99-ms 50 \
//!         --report report.json --sockets 4 --seed 1
//! loadgen --scenario 1k-mixed --report run.json --html run.html
//! loadgen --mix mover=50,fighter=30,looter=20 --players 100 --slo "p99<100ms,failures=0"
//! loadgen merge a.json b.json -o all.json --html all.html
//! loadgen compare before.json after.json
//! ```
//! Exit code 0 when every criterion held, 1 when one did not (a bot failed, an objective
//! was missed, ...), 2 when the run could not start.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use zonehost_client::{
    AckOptions, TransportOptions, Trust, DEFAULT_DATAGRAM_RECEIVE_BUFFER, DEFAULT_SOCKET_BUFFER,
};
use zonehost_loadgen::scenario::{Scenario, BUILTIN};
use zonehost_loadgen::{parse_duration, parse_range, Config, Mix, Report, TokenSource};

/// Drive N zonehost bots over real QUIC and report action latency.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Merge reports of load generators that ran together (histograms are added, so the
    /// percentiles are exact over all samples).
    Merge {
        /// Reports (JSON) to merge.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        /// Write the merged report here.
        #[arg(short, long)]
        output: PathBuf,
        /// Also write the merged report as HTML.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Print the differences between two reports (A is the baseline).
    Compare {
        /// Baseline report (JSON).
        a: PathBuf,
        /// Report to compare with it (JSON).
        b: PathBuf,
    },
}

/// Run options. Options a scenario sets (players, duration, ramp-up, input rate, seed,
/// sockets, mix, think time, ...) take the scenario's value unless given here.
#[derive(Debug, Args)]
struct RunArgs {
    /// A built-in scenario (smoke, 1k-mixed, soak, churn, trade) or a scenario TOML file.
    #[arg(long)]
    scenario: Option<String>,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    list_scenarios: bool,
    /// Number of bots [default: 10].
    #[arg(long)]
    players: Option<usize>,
    /// Total run time, ramp-up included (30s, 2m, ...) [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Server address; repeat for the servers of a cluster: bots are spread over them in
    /// turn, each party group on its leader's server.
    #[arg(long, default_value = "127.0.0.1:4433", num_args = 1)]
    server: Vec<SocketAddr>,
    /// With several --server: party members connect in turn like every bot instead of on
    /// their leader's server, so the cluster must move them to it (a Redirect each).
    #[arg(long)]
    spread_parties: bool,
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
    /// Connects are spread evenly over this period [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    ramp_up: Option<Duration>,
    /// Input datagrams per second per bot, each with the commands sampled at 60 Hz since
    /// the previous one [default: 30, the recommended client setting].
    #[arg(long)]
    input_hz: Option<u32>,
    /// Each bot asks the server for at most this many snapshots per second on each
    /// connection (it grants a whole fraction of its rate) [default: the server's rate].
    #[arg(long, value_name = "HZ")]
    ask_snapshot_rate: Option<u16>,
    /// Behaviour weights, e.g. mover=40,fighter=30,looter=10,hopper=5,party=8,churner=5,idler=2
    /// [default: mover=1].
    #[arg(long, value_parser = Mix::parse)]
    mix: Option<Mix>,
    /// Pause range after non-combat actions, e.g. 500ms..2s.
    #[arg(long, value_parser = parse_range)]
    think: Option<(Duration, Duration)>,
    /// Snapshots per second a navigating bot looks into.
    #[arg(long)]
    view_hz: Option<u32>,
    /// How long a churner stays connected, e.g. 10s..30s.
    #[arg(long, value_parser = parse_range)]
    churn_session: Option<(Duration, Duration)>,
    /// How long a churner stays away, e.g. 1s..3s.
    #[arg(long, value_parser = parse_range)]
    churn_pause: Option<(Duration, Duration)>,
    /// How long a party member stays in its party, e.g. 20s..40s.
    #[arg(long, value_parser = parse_range)]
    party_stay: Option<(Duration, Duration)>,
    /// Party leaders open a trade with a member this often, e.g. 15s (default: never).
    #[arg(long, value_parser = parse_duration)]
    party_trade_every: Option<Duration>,
    /// Objectives deciding the exit code, e.g. "p99<100ms,attack.p99<200ms,failures=0"
    /// (grammar in loadgen/README.md); replaces the scenario's.
    #[arg(long)]
    slo: Option<String>,
    /// Fail (exit 1) when the move-latency p99 exceeds this many milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Fail (exit 1) when snapshots received / expected is below this ratio.
    #[arg(long)]
    min_snapshot_ratio: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write a self-contained HTML report (inline SVG charts) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Client UDP sockets to spread the bots over [default: 4].
    #[arg(long)]
    sockets: Option<usize>,
    /// Requested SO_RCVBUF/SO_SNDBUF per socket, bytes.
    #[arg(long, default_value_t = DEFAULT_SOCKET_BUFFER)]
    socket_buffer: usize,
    /// Per-connection buffer for received, unread datagrams, bytes (the oldest are dropped
    /// beyond it).
    #[arg(long, default_value_t = DEFAULT_DATAGRAM_RECEIVE_BUFFER)]
    datagram_buffer: usize,
    /// Send each input this many milliseconds after a snapshot arrives instead of on a
    /// free-running schedule (with --input-hz equal to the server's snapshot rate; e.g. 12
    /// at 30 Hz lets both directions' ACKs ride on datagrams on loopback).
    #[arg(long)]
    input_phase_ms: Option<u64>,
    /// Do not ask the server to pace its ACKs (the QUIC ACK frequency extension); quinn then
    /// acknowledges every second packet at once and any other within 25 ms.
    #[arg(long)]
    no_ack_frequency: bool,
    /// Ack-eliciting packets the server may receive before it must acknowledge.
    #[arg(long, default_value_t = zonehost_client::acks::DEFAULT_ACK_ELICITING_THRESHOLD)]
    ack_threshold: u32,
    /// Longest time the server may hold an ACK back, milliseconds (quinn asks for at most
    /// the greater of the round-trip time and 25 ms).
    #[arg(long, default_value_t = zonehost_client::acks::DEFAULT_ACK_MAX_DELAY.as_millis() as u64)]
    ack_max_delay_ms: u64,
    /// Seed of behaviours, movement and bot names (bot-SEED-INDEX) [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Tokio worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Bound on connect + authentication per bot.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// A bot whose connection is lost reconnects (resume, else a fresh login) and fails
    /// only when it is not back within this deadline; 0s: a loss fails the bot.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    recover_deadline: Duration,
    /// Write what the server confirmed about every item a bot touched (JSON lines; check
    /// it against the store with `zonehost store verify-ops --ops-log FILE`).
    #[arg(long)]
    ops_log: Option<PathBuf>,
    /// The server's metrics address (e.g. 127.0.0.1:9100): the report gets its CPU and
    /// resident memory per player over the window after the ramp-up.
    #[arg(long)]
    server_metrics: Option<SocketAddr>,
    /// Print a progress line every second even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// The server's content directory (DIR/zones/*.toml) when it does not run the
    /// built-in zones (bots plan paths on these maps).
    #[arg(long)]
    content: Option<PathBuf>,
    /// Added one-way latency, both directions (e.g. 50ms).
    #[arg(long, value_parser = parse_duration)]
    latency: Option<Duration>,
    /// Latency jitter (±), both directions.
    #[arg(long, value_parser = parse_duration)]
    jitter: Option<Duration>,
    /// Datagram loss probability 0..1, both directions.
    #[arg(long)]
    loss: Option<f64>,
    /// Reordering probability 0..1, both directions.
    #[arg(long)]
    reorder: Option<f64>,
    /// Added latency, client → server only.
    #[arg(long, value_parser = parse_duration)]
    latency_up: Option<Duration>,
    /// Added latency, server → client only.
    #[arg(long, value_parser = parse_duration)]
    latency_down: Option<Duration>,
    /// Jitter, client → server only.
    #[arg(long, value_parser = parse_duration)]
    jitter_up: Option<Duration>,
    /// Jitter, server → client only.
    #[arg(long, value_parser = parse_duration)]
    jitter_down: Option<Duration>,
    /// Loss, client → server only.
    #[arg(long)]
    loss_up: Option<f64>,
    /// Loss, server → client only.
    #[arg(long)]
    loss_down: Option<f64>,
    /// Reordering, client → server only.
    #[arg(long)]
    reorder_up: Option<f64>,
    /// Reordering, server → client only.
    #[arg(long)]
    reorder_down: Option<f64>,
}

impl RunArgs {
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
        let (first, others) = self
            .server
            .split_first()
            .context("--server: at least one address")?;
        let mut c = Config::new(*first, trust, tokens);
        c.other_servers = others.to_vec();
        c.spread_parties = self.spread_parties;
        if let Some(name) = &self.scenario {
            Scenario::load(name)?.apply(&mut c)?;
        }
        c.server_name = self.server_name.clone();
        macro_rules! over {
            ($($field:ident <- $arg:expr),* $(,)?) => { $( if let Some(v) = $arg.clone() { c.$field = v; } )* };
        }
        over!(
            players <- self.players,
            duration <- self.duration,
            ramp_up <- self.ramp_up,
            input_hz <- self.input_hz,
            sockets <- self.sockets,
            seed <- self.seed,
            mix <- self.mix,
            think <- self.think,
            view_hz <- self.view_hz,
            churn_session <- self.churn_session,
            churn_pause <- self.churn_pause,
            party_stay <- self.party_stay,
        );
        if let Some(every) = self.party_trade_every {
            c.party_trade_every = Some(every);
        }
        if let Some(text) = &self.slo {
            c.slo =
                zonehost_loadgen::slo::parse(text).map_err(|e| anyhow::anyhow!("--slo: {e}"))?;
        }
        let imp = &mut c.impair;
        for (dir, lat, jit, loss, reo) in [
            (
                &mut imp.up,
                self.latency_up,
                self.jitter_up,
                self.loss_up,
                self.reorder_up,
            ),
            (
                &mut imp.down,
                self.latency_down,
                self.jitter_down,
                self.loss_down,
                self.reorder_down,
            ),
        ] {
            if let Some(v) = lat.or(self.latency) {
                dir.latency = v;
            }
            if let Some(v) = jit.or(self.jitter) {
                dir.jitter = v;
            }
            if let Some(v) = loss.or(self.loss) {
                dir.loss = v;
            }
            if let Some(v) = reo.or(self.reorder) {
                dir.reorder = v;
            }
        }
        c.socket_buffer = self.socket_buffer;
        c.content_dir = self.content.clone();
        c.connect_timeout = self.connect_timeout;
        c.recover_deadline = (!self.recover_deadline.is_zero()).then_some(self.recover_deadline);
        c.ops_log = self.ops_log.clone();
        c.server_metrics = self.server_metrics;
        c.max_p99 = match self.max_p99_ms {
            Some(ms) => Some(
                Duration::try_from_secs_f64(ms / 1000.0).context("--max-p99-ms must be >= 0")?,
            ),
            None => None,
        };
        c.min_snapshot_ratio = self.min_snapshot_ratio;
        c.progress = self.progress || std::io::stderr().is_terminal();
        c.input_phase = self.input_phase_ms.map(Duration::from_millis);
        if self.ask_snapshot_rate.is_some() {
            c.snapshot_rate_hz = self.ask_snapshot_rate;
        }
        c.transport = TransportOptions {
            datagram_receive_buffer: self.datagram_buffer,
            ack: AckOptions {
                frequency: !self.no_ack_frequency,
                eliciting_threshold: self.ack_threshold,
                max_delay: Duration::from_millis(self.ack_max_delay_ms.max(1)),
                ..AckOptions::default()
            },
            ..TransportOptions::default()
        };
        c.validate()?;
        Ok(c)
    }
}

fn write_outputs(report: &Report, json: Option<&Path>, html: Option<&Path>) -> Result<()> {
    if let Some(path) = json {
        let text = report.to_json().context("serializing the report")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = html {
        std::fs::write(path, zonehost_loadgen::html::render(report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn read_report(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Report::from_json(&text).with_context(|| format!("parsing {}", path.display()))
}

fn run(args: RunArgs) -> Result<bool> {
    if args.list_scenarios {
        for (name, text) in BUILTIN {
            let s = Scenario::from_toml(text)?;
            say(&format!("{name:<10} {}", s.description.unwrap_or_default()));
        }
        return Ok(true);
    }
    let config = args.config()?;
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    let report = runtime.block_on(zonehost_loadgen::run(config))?;
    say(&report.to_string());
    write_outputs(&report, args.report.as_deref(), args.html.as_deref())?;
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
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => run(cli.run),
        Some(Command::Merge {
            reports,
            output,
            html,
        }) => (|| {
            let loaded = reports
                .iter()
                .map(|p| Ok((p.display().to_string(), read_report(p)?)))
                .collect::<Result<Vec<_>>>()?;
            let merged = zonehost_loadgen::merge(&loaded).map_err(|e| anyhow::anyhow!(e))?;
            say(&merged.to_string());
            write_outputs(&merged, Some(&output), html.as_deref())?;
            Ok(merged.passed())
        })(),
        Some(Command::Compare { a, b }) => (|| {
            let (a, b) = (read_report(&a)?, read_report(&b)?);
            say(&zonehost_loadgen::compare(&a, &b));
            Ok(true)
        })(),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
