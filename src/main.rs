//! The `zonehost` binary: `serve` runs the server, `token` mints a dev token,
//! `config` prints the default configuration, `store migrate|check` and `player show`
//! are the operators' persistence tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use zonehost::config::{Config, LogFormat, SecondLogin};
use zonehost::keys;
use zonehost_protocol::token::{sign, valid_player_name, Claims, CLAIMS_VERSION};

#[derive(Debug, Parser)]
#[command(
    name = "zonehost",
    version,
    about = "QUIC game server for an instanced action-RPG"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded defaults; dev certificate and signing key created on first run).
    Serve(ServeArgs),
    /// Mint a token signed with the dev signing key of a data directory.
    Token(TokenArgs),
    /// Print the default configuration as TOML.
    Config,
    /// Operate on the store (the server must not be running on an embedded store).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Inspect players in the store.
    Player {
        #[command(subcommand)]
        command: PlayerCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create or upgrade the schema (embedded file, or the ScyllaDB keyspace). Idempotent.
    Migrate(StoreArgs),
    /// Integrity check: every item owned exactly once, every record readable. Exits 1 on
    /// any anomaly, 2 when the store cannot be opened or read (e.g. locked by a server).
    Check(StoreArgs),
    /// Check a log of confirmed item operations (`loadgen --ops-log`) against the store:
    /// every item the server confirmed in (or out of) a player's inventory must be there
    /// (or not), unless an unanswered operation came after. Exits 1 when one is lost, 2
    /// when the store or the log cannot be read.
    VerifyOps {
        /// The log (JSON lines).
        #[arg(long)]
        ops_log: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PlayerCommand {
    /// Print a player's record and items.
    Show {
        /// Player name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the store is: the same `--config` / `--data-dir` as `serve`.
#[derive(Debug, Args)]
struct StoreArgs {
    /// TOML configuration file (its `[store]` section and `data_dir` are used).
    #[arg(long, env = "ZONEHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the config file's).
    #[arg(long, env = "ZONEHOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn into_config(self) -> Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        c.store
            .validate()
            .context("invalid [store] configuration")?;
        Ok(c)
    }

    fn open(self) -> Result<Box<dyn zonehost::store::Store>> {
        let c = self.into_config()?;
        zonehost::store::open(&c.store, &c.data_dir).context("opening the store")
    }
}

fn store_command(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Migrate(args) => {
            let c = args.into_config()?;
            if let Some(dir) = c
                .store
                .embedded_path(&c.data_dir)
                .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
            {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let summary = zonehost::store::migrate(&c.store, &c.data_dir).context("migrating")?;
            println!("{summary}");
            Ok(())
        }
        StoreCommand::Check(args) => {
            // Exit 1 means "anomalies found"; a store that cannot be read at all (locked by
            // a running server, missing cluster...) is exit 2, so scripts can tell them apart.
            let report = args
                .open()
                .and_then(|store| {
                    zonehost::store::check(store.as_ref()).context("checking the store")
                })
                .unwrap_or_else(|e| {
                    eprintln!("zonehost store check: {e:#}");
                    std::process::exit(2);
                });
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
            Ok(())
        }
        StoreCommand::VerifyOps { ops_log, store } => {
            let report = std::fs::File::open(&ops_log)
                .with_context(|| format!("opening {}", ops_log.display()))
                .and_then(|log| {
                    let store = store.open()?;
                    zonehost::store::confirmed::verify(store.as_ref(), std::io::BufReader::new(log))
                        .context("checking the confirmed operations")
                })
                .unwrap_or_else(|e| {
                    eprintln!("zonehost store verify-ops: {e:#}");
                    std::process::exit(2);
                });
            print!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn player_command(command: PlayerCommand) -> Result<()> {
    match command {
        PlayerCommand::Show { name, store } => {
            anyhow::ensure!(
                valid_player_name(&name),
                "invalid player name {name:?}: 1..=32 of A-Z a-z 0-9 _ -"
            );
            let store = store.open()?;
            print!(
                "{}",
                zonehost::store::show_player(store.as_ref(), &name)
                    .context("reading the player")?
            );
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "ZONEHOST_CONFIG")]
    config: Option<PathBuf>,
    /// UDP listen address.
    #[arg(long, env = "ZONEHOST_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (dev certificate, dev signing key, store).
    #[arg(long, env = "ZONEHOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP address for /metrics, /healthz, /readyz ("off" disables).
    #[arg(long, env = "ZONEHOST_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Simulation worker threads.
    #[arg(long, env = "ZONEHOST_SIM_WORKERS")]
    sim_workers: Option<usize>,
    /// Tokio worker threads for networking.
    #[arg(long, env = "ZONEHOST_NET_THREADS")]
    net_threads: Option<usize>,
    /// Simulation ticks per second.
    #[arg(long, env = "ZONEHOST_TICK_RATE")]
    tick_rate: Option<u16>,
    /// Snapshots per second (must divide the tick rate).
    #[arg(long, env = "ZONEHOST_SNAPSHOT_RATE")]
    snapshot_rate: Option<u16>,
    /// Radius around a player within which it is sent monsters and items, mm.
    #[arg(long, env = "ZONEHOST_INTEREST_RADIUS_MM")]
    interest_radius_mm: Option<u32>,
    /// Maximum concurrent connections.
    #[arg(long, env = "ZONEHOST_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// What to do with a second login of a live player.
    #[arg(long, env = "ZONEHOST_SECOND_LOGIN", value_enum)]
    second_login: Option<SecondLogin>,
    /// After a drain, keep serving /metrics (draining 1) this long before exiting, ms.
    #[arg(long, env = "ZONEHOST_DRAIN_LINGER_MS")]
    drain_linger_ms: Option<u64>,
    /// Log format.
    #[arg(long, env = "ZONEHOST_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// This server's id in the store (`[store] server_id`: lease holder, `[cluster.peers]`
    /// key): lets the servers of a cluster share one config file.
    #[arg(long, env = "ZONEHOST_SERVER_ID")]
    server_id: Option<String>,
    /// The address clients reach this server at (`[cluster] advertise`), published so that
    /// peers which do not list it find it: lets the servers of a cluster share one config.
    #[arg(long, env = "ZONEHOST_ADVERTISE")]
    advertise: Option<std::net::SocketAddr>,
    /// Development only: host N servers of one cluster in this process, sharing one
    /// store, on the --listen port and the N - 1 ports after it (ids: server id + index).
    #[arg(long, value_name = "N")]
    dev_cluster: Option<usize>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Player name (1..=32 of A-Z a-z 0-9 _ -).
    #[arg(long)]
    player: String,
    /// Data directory holding dev-signing.key (created if missing).
    #[arg(long, env = "ZONEHOST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Audience (must match the server's `audience`).
    #[arg(long, default_value = "dev")]
    audience: String,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = match v.as_str() {
                "off" | "" => None,
                s => Some(
                    s.parse()
                        .with_context(|| format!("--metrics-listen {s:?}"))?,
                ),
            };
        }
        if let Some(v) = self.sim_workers {
            c.sim_workers = v;
        }
        if let Some(v) = self.drain_linger_ms {
            c.drain_linger_ms = v;
        }
        if let Some(v) = self.net_threads {
            c.net_threads = v;
        }
        if let Some(v) = self.tick_rate {
            c.tick_rate_hz = v;
        }
        if let Some(v) = self.snapshot_rate {
            c.snapshot_rate_hz = v;
        }
        if let Some(v) = self.interest_radius_mm {
            c.interest_radius_mm = v;
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = self.second_login {
            c.second_login = v;
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = self.server_id {
            c.store.server_id = v;
        }
        if let Some(v) = self.advertise {
            c.cluster.advertise = Some(v);
        }
        c.validate()?;
        Ok(c)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C drains");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown signal received");
}

fn serve(args: ServeArgs) -> Result<()> {
    let dev_cluster = args.dev_cluster;
    let config = args.into_config()?;
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.net_threads)
        .thread_name("zh-net")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async move {
        if let Some(n) = dev_cluster {
            let servers = zonehost::start_dev_cluster(config, n, shutdown_signal()).await?;
            tracing::warn!(
                servers = servers.len(),
                "dev cluster: several servers in one process on one store (development only)"
            );
            for server in servers {
                server.wait().await;
            }
            return Ok(());
        }
        let server = zonehost::start(config, shutdown_signal()).await?;
        if server.dev_signing_key.is_some() {
            tracing::info!("dev tokens: `zonehost token --player NAME` (signed with the data directory's dev key)");
        }
        server.wait().await;
        Ok::<_, anyhow::Error>(())
    })
}

fn token(args: TokenArgs) -> Result<()> {
    anyhow::ensure!(
        valid_player_name(&args.player),
        "invalid player name {:?}: 1..=32 of A-Z a-z 0-9 _ -",
        args.player
    );
    let key = keys::load_or_create_signing_key(&args.data_dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("random nonce: {e}"))?;
    let claims = Claims {
        version: CLAIMS_VERSION,
        player: args.player,
        audience: args.audience,
        issued_at: now,
        expires_at: now + args.ttl,
        nonce,
        key_id: keys::DEV_KEY_ID,
    };
    println!("{}", sign(&claims, &key));
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Store { command } => store_command(command),
        Command::Player { command } => player_command(command),
        Command::Config => {
            print!(
                "{}",
                toml::to_string(&Config::default()).context("serializing the default config")?
            );
            Ok(())
        }
    }
}
