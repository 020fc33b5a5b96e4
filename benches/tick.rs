//! The simulation worker's tick at N players: what one 60 Hz tick of a worker costs with
//! every player in its own instance (solo play, the common case), inputs arriving at 30 Hz
//! and snapshots at 30 Hz (the recommended setting), deltas against what each client
//! acknowledged. The connections are in-memory links that read each snapshot's tick back
//! as the client's acknowledgement, so no socket or quinn cost is in the figure: this is
//! the worker's own share, the one the loadtest's minute-to-minute noise cannot resolve.
//! As in the server, the worker persists through the store worker on an embedded (redb)
//! store in a temporary directory (characters created at join, dirty marks every tick,
//! checkpoints every 10 s of game time), and the production Prometheus recorder is
//! installed, so metric updates cost what they do in the server.
//!
//! Each case is measured warm (ticks back to back) and cold (the caches filled with other
//! data before each tick, as the network thread and the load generator do in a loadtest).
//! Two cases, each stationary (every measured tick does the same kind of work): walkers in
//! the town (the built-in town without its portals), and fighters in the built-in Cold
//! Crypt without its portals (its walls and 32 monsters), attacking as they walk (the dead
//! respawn in a gate town that sends them straight back).
//!
//! `cargo bench --bench tick -- --warm-up-time 2 --measurement-time 10`

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zonehost::config::{Config, SecondLogin};
use zonehost::session::{Registry, ResumeMinter};
use zonehost::sim::{outbox, OutboxReceiver};
use zonehost::sim::{
    Control, Inbox, Join, Link, LinkError, Outgoing, PersistSettings, Work, Worker, WorkerSettings,
};
use zonehost::store::redb::RedbStore;
use zonehost::store::writer::StoreWorker;
use zonehost::telemetry::Stats;
use zonehost_game::{Content, Parties, PlayerInput};
use zonehost_protocol::datagram::{split_snapshot, BUTTON_ATTACK, MAX_INPUTS_PER_DATAGRAM};
use zonehost_protocol::frame::FrameDecoder;
use zonehost_protocol::message::{Event, ServerMsg};
use zonehost_protocol::MAX_FRAME_LEN;

/// A town whose spawn point is boxed in by portals to the crypt (zone 2): every new player
/// is moved into its own crypt instance within its first steps, whichever way it walks.
fn gate_town() -> String {
    let mut town = String::from(
        "id = 1\nname = \"Gate\"\nwidth_mm = 20000\nheight_mm = 20000\n\
         spawn_mm = [10000, 10000]\ntown = true\n",
    );
    // South, north, west and east of a 400 mm box around the spawn point.
    for [x0, y0, x1, y1] in [
        [0, 0, 20000, 9800],
        [0, 10200, 20000, 20000],
        [0, 9800, 9800, 10200],
        [10200, 9800, 20000, 10200],
    ] {
        town.push_str(&format!(
            "\n[[portals]]\nrect = [{x0}, {y0}, {x1}, {y1}]\ntarget = 2\n"
        ));
    }
    town
}

/// A zone's TOML without its `[[portals]]` tables.
fn without_portals(text: &str) -> String {
    let mut out = String::new();
    let mut in_portal = false;
    for line in text.lines() {
        if line.starts_with("[[") {
            in_portal = line.starts_with("[[portals]]");
        }
        if !in_portal {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The built-in town (content/zones/town.toml) without its portals: walkers stay in town,
/// so every tick of the measurement costs the same.
fn town() -> Content {
    let town = without_portals(include_str!("../content/zones/town.toml"));
    Content::from_sources(&[town]).expect("bench town")
}

/// The gate town and the Cold Crypt (content/zones/crypt.toml: its walls and 32
/// monsters) without its portals: fighters stay in the crypt, and the dead come back to
/// it through the gate.
fn arena() -> Content {
    let crypt = without_portals(include_str!("../content/zones/crypt.toml"));
    Content::from_sources(&[gate_town(), crypt]).expect("bench content")
}

/// A client's end of the connection: counts snapshot bytes and remembers the newest
/// snapshot tick, which the next input acknowledges (every part of a tick arrives here).
#[derive(Debug, Default)]
struct BotLink {
    newest_tick: AtomicU32,
    bytes: AtomicU64,
}

impl Link for BotLink {
    fn send_datagram(&self, data: Bytes) -> Result<(), LinkError> {
        if let Ok((header, _)) = split_snapshot(&data) {
            self.newest_tick
                .fetch_max(header.tick.get(), Ordering::Relaxed);
        }
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self, _code: u32, _reason: &[u8]) {}
}

/// A player: its link, its reliable outbox and its input sequence.
struct Bot {
    session: u64,
    link: Arc<BotLink>,
    outbox: OutboxReceiver,
    frames: FrameDecoder,
    seq: u32,
}

/// Ticks played before measuring: joins, first steps, full states, then deltas.
const WARM_UP_TICKS: u64 = 120;

/// One worker with `players` players, each in its own instance of `content`'s start
/// zone (or, with the arena content, of the arena once they took one step).
struct Bench {
    worker: Worker,
    inbox: Arc<Inbox>,
    bots: Vec<Bot>,
    now: Instant,
    tick: Duration,
    ticks: u64,
    fight: bool,
    /// `ZoneEntered` events for the arena read during the warm-up.
    arrivals: usize,
    /// `Welcome` frames read during the warm-up.
    welcomed: usize,
    /// Memory written between the ticks of a cold measurement.
    evict: Vec<u64>,
    /// Keeps the store worker (and its thread) alive.
    _store: StoreWorker,
    /// The store's directory, removed on drop.
    dir: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bench {
    fn new(content: Content, players: usize, fight: bool) -> Self {
        let config = Config::default();
        let inbox = Arc::new(Inbox::new(config.inbox_capacity));
        let settings = WorkerSettings::from_config(
            0,
            &config,
            Arc::new(content),
            Arc::new(ResumeMinter::random().expect("randomness")),
            Arc::new(Mutex::new(Parties::new())),
            7,
        );
        let tick = settings.tick;
        // On tmpfs where there is one: the bench plays ~50 times faster than real time, so
        // the store thread writes checkpoints ~50 times as often as in the server; on tmpfs
        // their fsyncs cost nothing beside the measured thread. (Runs of the same code
        // still differ by up to 15-25 % on these shared machines, with or without it.)
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "zonehost-tick-bench-{}-{players}-{}",
            std::process::id(),
            u8::from(fight)
        ));
        std::fs::create_dir_all(&dir).expect("bench store directory");
        let redb = RedbStore::open(&dir.join("store.redb")).expect("bench store");
        let store = StoreWorker::spawn(Box::new(redb), &config.store).expect("store worker");
        let persist = PersistSettings::new(1, config.store.checkpoint_interval());
        let worker = Worker::new(
            settings,
            inbox.clone(),
            Arc::new(Stats::new(1)),
            Arc::new(Registry::new(SecondLogin::Refuse)),
            Arc::new(AtomicBool::new(false)),
        )
        .with_store(store.handle(), persist.for_worker());
        let bots = (0..players)
            .map(|i| {
                let session = i as u64 + 1;
                let link = Arc::new(BotLink::default());
                let (tx, rx) = outbox(config.outbox_capacity);
                inbox.control(Control::Join(Box::new(Join {
                    session,
                    player_id: 1_000_000 + session,
                    player_name: format!("bot{session}"),
                    conn: link.clone(),
                    outbox: tx,
                    shared: Arc::default(),
                })));
                Bot {
                    session,
                    link,
                    outbox: rx,
                    frames: FrameDecoder::new(MAX_FRAME_LEN),
                    seq: 0,
                }
            })
            .collect();
        let mut bench = Self {
            worker,
            inbox,
            bots,
            now: Instant::now(),
            tick,
            ticks: 0,
            fight,
            arrivals: 0,
            welcomed: 0,
            evict: vec![0; EVICT_BYTES / 8],
            _store: store,
            dir,
        };
        // Characters are created in the store before their `Welcome`: tick in real time
        // until every bot is in (bounded), then play the warm-up.
        let deadline = Instant::now() + Duration::from_secs(60);
        while bench.welcomed < players && Instant::now() < deadline {
            bench.step(false);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            bench.welcomed, players,
            "every bot was welcomed within 60 s"
        );
        bench.ticks = 0;
        for _ in 0..WARM_UP_TICKS {
            bench.step(false);
        }
        bench
    }

    /// Queues this tick's input datagrams: each bot sends every other tick (30 Hz), half
    /// of them on even ticks, two commands sampled at 60 Hz plus the newest redundancy,
    /// walking a slowly turning course and, when fighting, swinging every few commands.
    fn send_inputs(&mut self) {
        let now = Instant::now();
        for (i, bot) in self.bots.iter_mut().enumerate() {
            if (self.ticks + i as u64) % 2 != 0 {
                continue;
            }
            let mut inputs = [PlayerInput::default(); MAX_INPUTS_PER_DATAGRAM];
            let count = 4u8;
            for (k, input) in inputs.iter_mut().take(usize::from(count)).enumerate() {
                let seq = (bot.seq + 2).saturating_sub(k as u32);
                let heading = (seq / 90 + i as u32) % 8;
                let (x, y) = [
                    (1000, 0),
                    (700, 700),
                    (0, 1000),
                    (-700, 700),
                    (-1000, 0),
                    (-700, -700),
                    (0, -1000),
                    (700, -700),
                ][heading as usize];
                let attack = self.fight && seq % 8 == 0;
                *input = PlayerInput {
                    seq,
                    move_x: x,
                    move_y: y,
                    buttons: if attack { BUTTON_ATTACK } else { 0 },
                };
            }
            bot.seq += 2;
            let work = Work::Input {
                session: bot.session,
                count,
                inputs,
                received_at: now,
                ack_tick: bot.link.newest_tick.load(Ordering::Relaxed),
            };
            if self.inbox.work(work).is_err() {
                panic!("the inbox holds a tick of inputs");
            }
        }
    }

    /// Reads what the worker queued on the reliable outboxes, as a client does during
    /// the warm-up (counting the arrivals in zone 2), or drops it unread once measuring.
    fn read_outboxes(&mut self, decode: bool) {
        for bot in &mut self.bots {
            while let Ok(out) = bot.outbox.try_recv() {
                if let (true, Outgoing::Frame(frame)) = (decode, out) {
                    bot.frames.extend(&frame);
                    while let Ok(Some(msg)) = bot.frames.next_message::<ServerMsg>() {
                        match msg {
                            ServerMsg::Event(Event::ZoneEntered { zone: 2, .. }) => {
                                self.arrivals += 1
                            }
                            ServerMsg::Welcome(_) => self.welcomed += 1,
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// One tick: inputs in, the worker's tick, outboxes read. Returns the tick's time.
    /// `cold`: the caches are first filled with other data, as in the server, where the
    /// network thread and the load generator run on the same two cores in the 16.7 ms
    /// between ticks (the worker then reads its instances from L3 or memory).
    fn step(&mut self, cold: bool) -> Duration {
        if cold {
            evict_caches(&mut self.evict);
        }
        self.send_inputs();
        self.now += self.tick;
        self.ticks += 1;
        let started = Instant::now();
        self.worker.tick_at(self.now);
        let spent = started.elapsed();
        self.read_outboxes(self.ticks <= WARM_UP_TICKS);
        spent
    }

    fn snapshot_bytes(&self) -> u64 {
        self.bots
            .iter()
            .map(|b| b.link.bytes.load(Ordering::Relaxed))
            .sum()
    }
}

/// Bytes written between ticks of a cold measurement: four times this machine's L2 (and a
/// quarter of its L3).
const EVICT_BYTES: usize = 8 << 20;

/// Writes one word of every cache line of `buf`.
fn evict_caches(buf: &mut [u64]) {
    for line in buf.chunks_mut(8) {
        line[0] = line[0].wrapping_add(1);
    }
    std::hint::black_box(buf);
}

fn worker_tick(c: &mut Criterion) {
    let _ = zonehost::ops::prometheus();
    let mut g = c.benchmark_group("worker_tick");
    g.sample_size(20);
    for players in [100usize, 500] {
        for (name, content, fight) in [
            ("town_walkers", town(), false),
            ("arena_fighters", arena(), true),
        ] {
            let mut bench = Bench::new(content, players, fight);
            assert!(
                bench.snapshot_bytes() > 0,
                "the warm-up sent snapshots to the bots"
            );
            if fight {
                assert_eq!(bench.arrivals, players, "every bot entered its arena");
            }
            g.throughput(Throughput::Elements(players as u64));
            g.bench_function(format!("{name}_{players}p"), |b| {
                b.iter_custom(|ticks| (0..ticks).map(|_| bench.step(false)).sum())
            });
            g.bench_function(format!("{name}_{players}p_cold"), |b| {
                b.iter_custom(|ticks| (0..ticks).map(|_| bench.step(true)).sum())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, worker_tick);
criterion_main!(benches);
