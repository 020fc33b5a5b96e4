//! The transport floor: the same QUIC stack, settings and traffic shape as `zonehost serve`
//! and `loadgen`, with no game at all, to tell what the machine itself allows.
//!
//! The server accepts connections with zonehost's own quinn/rustls configuration and UDP
//! socket buffers (quinn's socket otherwise: GRO stays on, see `server`); every
//! connection's datagrams are read into an atomic "newest sequence
//! seen", and one task, at `--rate` Hz, sends every connection one datagram of
//! `--snapshot-bytes` carrying that sequence (the shape of a snapshot acking an input).
//! The client opens `--connections` connections spread over `--sockets` UDP sockets with
//! zonehost-client's endpoint (the one loadgen uses), sends each connection's sequence
//! number at `--rate` Hz in `--input-bytes` datagrams, and measures input sequence *k*
//! sent → first datagram reporting ≥ *k*: loadgen's action latency without the game.
//!
//! ```text
//! cargo run --release --example quic_floor -- server --listen 127.0.0.1:24600 --data-dir /tmp/floor
//! cargo run --release --example quic_floor -- client --server 127.0.0.1:24600 \
//!     --cert /tmp/floor/cert.der --connections 1000 --seconds 30
//! ```
//! `scripts/quic-floor.sh` runs both and reports each process's CPU.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use zonehost_client::{AckOptions, EndpointBuilder, PacketCounts, TransportOptions, Trust};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Accept connections and answer at `--rate` Hz.
    Server {
        #[arg(long, default_value = "127.0.0.1:24600")]
        listen: SocketAddr,
        /// Where the dev certificate is created (cert.der).
        #[arg(long)]
        data_dir: PathBuf,
        /// Datagrams per second sent to each connection.
        #[arg(long, default_value_t = 60)]
        rate: u32,
        /// Size of each server datagram (zonehost's movers' snapshots average ~195 B).
        #[arg(long, default_value_t = 195)]
        snapshot_bytes: usize,
        /// tokio worker threads (zonehost's `net_threads`, default 1).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Do not ask clients to pace their ACKs (zonehost's `ack.frequency = false`).
        #[arg(long)]
        no_ack_frequency: bool,
    },
    /// Open connections, send at `--rate` Hz and measure sequence → ack latency.
    Client {
        #[arg(long, default_value = "127.0.0.1:24600")]
        server: SocketAddr,
        /// The server's certificate (DER), trusted by fingerprint.
        #[arg(long)]
        cert: PathBuf,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Connections are opened evenly over this many seconds.
        #[arg(long, default_value_t = 10)]
        ramp_up: u64,
        #[arg(long, default_value_t = 60)]
        rate: u32,
        /// Size of each client datagram (zonehost's input datagrams are ~116 B).
        #[arg(long, default_value_t = 116)]
        input_bytes: usize,
        /// Client UDP sockets (loadgen's default is 4).
        #[arg(long, default_value_t = 4)]
        sockets: usize,
        /// tokio worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// One task sends every connection's datagram per tick (instead of a timer per
        /// connection): what a client frame loop driving many bots would do.
        #[arg(long)]
        shared_ticker: bool,
        /// Do not ask the server to pace its ACKs (loadgen's `--no-ack-frequency`).
        #[arg(long)]
        no_ack_frequency: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = match &args.mode {
        Mode::Server { threads, .. } | Mode::Client { threads, .. } => (*threads).max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    match args.mode {
        Mode::Server {
            listen,
            data_dir,
            rate,
            snapshot_bytes,
            no_ack_frequency,
            ..
        } => runtime.block_on(server(
            listen,
            data_dir,
            rate,
            snapshot_bytes,
            !no_ack_frequency,
        )),
        Mode::Client {
            server,
            cert,
            connections,
            seconds,
            ramp_up,
            rate,
            input_bytes,
            sockets,
            shared_ticker,
            no_ack_frequency,
            ..
        } => runtime.block_on(client(ClientPlan {
            server,
            cert,
            connections,
            run: Duration::from_secs(seconds),
            ramp_up: Duration::from_secs(ramp_up),
            rate,
            input_bytes,
            sockets,
            shared_ticker,
            ack_frequency: !no_ack_frequency,
        })),
    }
}

/// One connection as the server's ticker sees it.
struct Peer {
    conn: quinn::Connection,
    newest: Arc<AtomicU64>,
}

async fn server(
    listen: SocketAddr,
    data_dir: PathBuf,
    rate: u32,
    snapshot_bytes: usize,
    ack_frequency: bool,
) -> anyhow::Result<()> {
    if snapshot_bytes < 8 || rate == 0 {
        bail!("--snapshot-bytes must be at least 8 and --rate positive");
    }
    let mut config = zonehost::config::Config::default();
    config.ack.frequency = ack_frequency;
    let identity = zonehost::keys::load_or_create_dev_identity(&data_dir)?;
    let server_config = zonehost::net::server_config(&config, &identity)?;
    let (socket, _) =
        zonehost::net::bind_udp(listen, config.udp_recv_buffer, config.udp_send_buffer)?;
    // quinn's own socket, GRO on: zonehost serve turns GRO off (it measured cheaper for
    // the server), the floor's server measured 2.5 points of a core cheaper with it on,
    // so the floor keeps it and stays the lower bound (docs/performance.md).
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    eprintln!("quic_floor server on {listen}, {rate} Hz, {snapshot_bytes} B datagrams");
    let peers: Arc<Mutex<Vec<Peer>>> = Arc::default();
    {
        let peers = peers.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut payload = vec![0u8; snapshot_bytes];
            loop {
                ticker.tick().await;
                let mut peers = peers.lock().unwrap_or_else(|p| p.into_inner());
                peers.retain(|p| p.conn.close_reason().is_none());
                for p in peers.iter() {
                    payload[..8].copy_from_slice(&p.newest.load(Ordering::Relaxed).to_le_bytes());
                    // Counted as the client's loss if it fails: nothing else to do here.
                    let _ = p.conn.send_datagram(Bytes::copy_from_slice(&payload));
                }
            }
        });
    }
    while let Some(incoming) = endpoint.accept().await {
        let peers = peers.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let newest = Arc::new(AtomicU64::new(0));
            peers.lock().unwrap_or_else(|p| p.into_inner()).push(Peer {
                conn: conn.clone(),
                newest: newest.clone(),
            });
            while let Ok(d) = conn.read_datagram().await {
                if let Some(seq) = d.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    newest.fetch_max(u64::from_le_bytes(seq), Ordering::Relaxed);
                }
            }
        });
    }
    Ok(())
}

struct ClientPlan {
    server: SocketAddr,
    cert: PathBuf,
    connections: usize,
    run: Duration,
    ramp_up: Duration,
    rate: u32,
    input_bytes: usize,
    sockets: usize,
    shared_ticker: bool,
    ack_frequency: bool,
}

/// Sequences in flight on one connection: (seq, sent at), oldest first.
type InFlight = Arc<Mutex<VecDeque<(u64, Instant)>>>;

/// A connection the shared ticker sends on.
struct Sender {
    conn: quinn::Connection,
    seq: u64,
    in_flight: InFlight,
}

/// Sends every registered connection's next sequence once per tick until `end`.
async fn shared_sender(
    senders: Arc<Mutex<Vec<Sender>>>,
    rate: u32,
    input_bytes: usize,
    end: Instant,
) -> u64 {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut payload = vec![0u8; input_bytes];
    let mut sent = 0;
    while Instant::now() < end {
        ticker.tick().await;
        let now = Instant::now();
        let mut senders = senders.lock().unwrap_or_else(|p| p.into_inner());
        for s in senders.iter_mut() {
            s.seq += 1;
            payload[..8].copy_from_slice(&s.seq.to_le_bytes());
            if s.conn
                .send_datagram(Bytes::copy_from_slice(&payload))
                .is_ok()
            {
                sent += 1;
                let mut q = s.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                q.push_back((s.seq, now));
                if q.len() > 600 {
                    q.pop_front();
                }
            }
        }
    }
    sent
}

/// What one connection measured.
struct Measured {
    latency: Histogram<u64>,
    sent: u64,
    received: u64,
    failed: bool,
    /// Packets sent and received from the start of the measurement to the end.
    packets: (PacketCounts, PacketCounts),
}

async fn client(plan: ClientPlan) -> anyhow::Result<()> {
    if plan.input_bytes < 8 || plan.rate == 0 || plan.connections == 0 {
        bail!("--input-bytes must be at least 8, --rate and --connections positive");
    }
    let der = std::fs::read(&plan.cert).with_context(|| format!("{}", plan.cert.display()))?;
    let trust = Trust::Fingerprint(zonehost_client::trust::fingerprint(&der.into()));
    let endpoints = (0..plan.sockets.clamp(1, plan.connections))
        .map(|_| {
            EndpointBuilder::new(trust.clone())
                .bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .transport(TransportOptions {
                    ack: if plan.ack_frequency {
                        AckOptions::default()
                    } else {
                        AckOptions::off()
                    },
                    ..TransportOptions::default()
                })
                .socket_buffers(Some(4 << 20), Some(4 << 20))
                .build()
                .map(|e| e.endpoint)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let end = start + plan.ramp_up + plan.run;
    // Latency is recorded only after the ramp-up (and a 2 s settle), like loadgen's steady state.
    let measure_from = start + plan.ramp_up + Duration::from_secs(2);
    let senders: Option<Arc<Mutex<Vec<Sender>>>> = plan.shared_ticker.then(Arc::default);
    let shared = senders
        .clone()
        .map(|s| tokio::spawn(shared_sender(s, plan.rate, plan.input_bytes, end)));
    let empty = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.connections {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let at = start + plan.ramp_up.mul_f64(i as f64 / plan.connections as f64);
        let (server, rate, input_bytes) = (plan.server, plan.rate, plan.input_bytes);
        let senders = senders.clone();
        let latency = empty.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let run = Run {
                server,
                rate,
                input_bytes,
                end,
                measure_from,
            };
            one_connection(endpoint, run, senders, latency).await
        });
    }
    let mut all = empty;
    let (mut sent, mut received, mut failed) = (0u64, 0u64, 0usize);
    let (mut up, mut down) = (PacketCounts::default(), PacketCounts::default());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(m) => {
                all.add(&m.latency)?;
                sent += m.sent;
                received += m.received;
                failed += usize::from(m.failed);
                for (sum, add) in [(&mut up, m.packets.0), (&mut down, m.packets.1)] {
                    sum.packets += add.packets;
                    sum.datagrams += add.datagrams;
                    sum.acks += add.acks;
                    sum.ack_only += add.ack_only;
                }
            }
            Err(_) => failed += 1,
        }
    }
    if let Some(shared) = shared {
        sent += shared.await.unwrap_or(0);
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "connections {}  failed {failed}  sent {sent}  acks {}  datagrams received {received}",
        plan.connections,
        all.len()
    );
    println!(
        "seq -> ack latency: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        all.max() as f64 / 1000.0
    );
    let per = (plan.connections as f64
        * plan
            .run
            .saturating_sub(Duration::from_secs(2))
            .as_secs_f64())
    .max(1e-9);
    println!(
        "UDP packets per connection: up {:.1}/s ({:.1} datagrams/s), down {:.1}/s ({:.1} datagrams/s); \
         ACK-only up {:.1} %, down {:.1} %, both {:.1} % (ACK frequency {})",
        up.packets as f64 / per,
        up.datagrams as f64 / per,
        down.packets as f64 / per,
        down.datagrams as f64 / per,
        up.ack_only_share() * 100.0,
        down.ack_only_share() * 100.0,
        (up.ack_only + down.ack_only) as f64 / (up.packets + down.packets).max(1) as f64 * 100.0,
        if plan.ack_frequency { "on" } else { "off" }
    );
    for e in &endpoints {
        e.close(0u32.into(), b"done");
    }
    Ok(())
}

/// What every connection of a client run shares.
#[derive(Clone, Copy)]
struct Run {
    server: SocketAddr,
    rate: u32,
    input_bytes: usize,
    end: Instant,
    measure_from: Instant,
}

async fn one_connection(
    endpoint: quinn::Endpoint,
    run: Run,
    senders: Option<Arc<Mutex<Vec<Sender>>>>,
    latency: Histogram<u64>,
) -> Measured {
    let Run {
        server,
        rate,
        input_bytes,
        end,
        measure_from,
    } = run;
    let mut m = Measured {
        latency,
        sent: 0,
        received: 0,
        failed: false,
        packets: Default::default(),
    };
    let conn = match endpoint.connect(server, "localhost") {
        Ok(c) => match c.await {
            Ok(c) => c,
            Err(_) => {
                m.failed = true;
                return m;
            }
        },
        Err(_) => {
            m.failed = true;
            return m;
        }
    };
    let in_flight: InFlight = Arc::default();
    if let Some(senders) = &senders {
        senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Sender {
                conn: conn.clone(),
                seq: 0,
                in_flight: in_flight.clone(),
            });
    }
    let own_ticks = senders.is_none();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut payload = vec![0u8; input_bytes];
    let mut seq = 0u64;
    let mut counted_from = None;
    let deadline = tokio::time::sleep_until(end.into());
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = ticker.tick(), if own_ticks => {
                if counted_from.is_none() && Instant::now() >= measure_from {
                    let s = conn.stats();
                    counted_from = Some((PacketCounts::sent(&s), PacketCounts::received(&s)));
                }
                seq += 1;
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                if conn.send_datagram(Bytes::copy_from_slice(&payload)).is_err() {
                    m.failed = true;
                    break;
                }
                m.sent += 1;
                let mut q = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                q.push_back((seq, Instant::now()));
                if q.len() > 600 {
                    q.pop_front();
                }
            }
            d = conn.read_datagram() => {
                let Ok(d) = d else { m.failed = true; break };
                m.received += 1;
                if counted_from.is_none() && Instant::now() >= measure_from {
                    let s = conn.stats();
                    counted_from = Some((PacketCounts::sent(&s), PacketCounts::received(&s)));
                }
                let Some(acked) = d.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else { continue };
                let acked = u64::from_le_bytes(acked);
                let now = Instant::now();
                let mut q = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(&(s, at)) = q.front() {
                    if s > acked {
                        break;
                    }
                    q.pop_front();
                    if at >= measure_from {
                        let _ = m.latency.record((now - at).as_micros() as u64);
                    }
                }
            }
        }
    }
    if let Some((up, down)) = counted_from {
        let s = conn.stats();
        m.packets = (
            PacketCounts::sent(&s).since(&up),
            PacketCounts::received(&s).since(&down),
        );
    }
    conn.close(0u32.into(), b"done");
    m
}
