//! The server core stepped in one process without sockets: a sim worker ticked by hand,
//! a `ClientSession` fed by an in-memory link, virtual time. Deterministic and fast.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use zonehost::config::{Config, SecondLogin};
use zonehost::session::{Registry, ResumeMinter};
use zonehost::sim::{
    ConnShared, Control, Inbox, Join, Link, LinkError, Outgoing, Work, Worker, WorkerSettings,
};
use zonehost::telemetry::Stats;
use zonehost_protocol::datagram::{InputCmd, InputDatagram};
use zonehost_protocol::message::{close_code, Request, Response};
use zonehost_protocol::snapshot::decode_snapshot;
use zonehost_protocol::{ClientEvent, ClientSession};

#[derive(Debug, Default)]
struct MemLink {
    datagrams: Mutex<Vec<Bytes>>,
    closed: Mutex<Option<u32>>,
}

impl Link for MemLink {
    fn send_datagram(&self, data: Bytes) -> Result<(), LinkError> {
        if self.closed.lock().map(|c| c.is_some()).unwrap_or(true) {
            return Err(LinkError::Lost);
        }
        self.datagrams
            .lock()
            .map_err(|_| LinkError::Lost)?
            .push(data);
        Ok(())
    }

    fn close(&self, code: u32, _reason: &[u8]) {
        if let Ok(mut c) = self.closed.lock() {
            c.get_or_insert(code);
        }
    }
}

struct Harness {
    worker: Worker,
    inbox: Arc<Inbox>,
    stats: Arc<Stats>,
    now: Instant,
}

struct Player {
    session: u64,
    client: ClientSession,
    link: Arc<MemLink>,
    outbox: mpsc::Receiver<Outgoing>,
}

impl Harness {
    fn new() -> Self {
        let config = Config::default();
        let inbox = Arc::new(Inbox::new(1024));
        let stats = Arc::new(Stats::new(1));
        let registry = Arc::new(Registry::new(SecondLogin::Refuse));
        let worker = Worker::new(
            WorkerSettings::from_config(
                0,
                &config,
                Arc::new(ResumeMinter::random().expect("randomness")),
            ),
            inbox.clone(),
            stats.clone(),
            registry,
            Arc::new(AtomicBool::new(false)),
        );
        Self {
            worker,
            inbox,
            stats,
            now: Instant::now(),
        }
    }

    /// Joins a player and delivers its `Welcome` to its client session.
    fn join(&mut self, session: u64) -> Player {
        let link = Arc::new(MemLink::default());
        let (tx, rx) = mpsc::channel(16);
        self.inbox.control(Control::Join(Box::new(Join {
            session,
            player_id: session * 1000,
            player_name: format!("p{session}"),
            conn: link.clone(),
            outbox: tx,
            shared: Arc::new(ConnShared::default()),
        })));
        let mut client = ClientSession::new("unused-by-the-core", "stepper");
        client.hello().expect("hello");
        let mut p = Player {
            session,
            client,
            link,
            outbox: rx,
        };
        self.step(&mut [&mut p]);
        assert!(matches!(
            p.client.poll_event(),
            Some(ClientEvent::Welcome(_))
        ));
        p
    }

    /// One tick of virtual time: the worker ticks, then every player receives what it was sent.
    fn step(&mut self, players: &mut [&mut Player]) {
        self.now += Duration::from_micros(16_667);
        self.worker.tick();
        for p in players.iter_mut() {
            while let Ok(out) = p.outbox.try_recv() {
                let frame = match out {
                    Outgoing::Frame(f) | Outgoing::CloseAfter { frame: f, .. } => f,
                };
                p.client
                    .handle_stream_data(&frame, self.now)
                    .expect("frame");
            }
            let datagrams: Vec<Bytes> = p
                .link
                .datagrams
                .lock()
                .map(|mut d| d.drain(..).collect())
                .unwrap_or_default();
            for d in datagrams {
                p.client.handle_datagram(&d, self.now).expect("snapshot");
            }
        }
    }

    fn send_input(&self, p: &mut Player, cmd: InputCmd) {
        let bytes = p.client.send_input(cmd, self.now).expect("input");
        let datagram = InputDatagram::decode(&bytes).expect("decode");
        let work = Work::input(p.session, &datagram, self.now);
        assert!(self.inbox.work(work).is_ok());
    }
}

fn own_x(p: &Player, snapshot: &[u8]) -> Option<i32> {
    let entity = p.client.welcome()?.entity_id;
    let (_, body) = decode_snapshot(snapshot).ok()?;
    body.entities
        .iter()
        .find(|e| e.id == entity)
        .map(|e| e.x_mm.to_native())
}

#[test]
fn movement_is_applied_in_order_and_acknowledged_next_tick() {
    let mut h = Harness::new();
    let mut p = h.join(1);
    let start_x = 50_000;
    let mut latencies = Vec::new();
    let mut x = start_x;
    for _ in 0..60 {
        h.send_input(&mut p, InputCmd::new(1000, 0, 0));
        h.worker.tick();
        h.now += Duration::from_micros(16_667);
        let datagrams: Vec<Bytes> = p
            .link
            .datagrams
            .lock()
            .map(|mut d| d.drain(..).collect())
            .unwrap_or_default();
        assert_eq!(
            datagrams.len(),
            1,
            "one snapshot datagram per tick at 60 Hz"
        );
        let now_x = own_x(&p, &datagrams[0]).expect("own entity in snapshot");
        assert_eq!(
            now_x - x,
            100,
            "one input of full speed per tick moves 6000 mm/s / 60"
        );
        x = now_x;
        p.client
            .handle_datagram(&datagrams[0], h.now)
            .expect("snapshot");
        while let Some(ev) = p.client.poll_event() {
            if let ClientEvent::InputAcked { latency, .. } = ev {
                latencies.push(latency);
            }
        }
    }
    assert_eq!(p.client.highest_acked(), 60);
    assert_eq!(latencies.len(), 60, "every input acknowledged exactly once");
    assert!(
        latencies
            .iter()
            .all(|l| *l == Duration::from_micros(16_667)),
        "acked by the next snapshot"
    );
    assert_eq!(
        x,
        start_x + 6000,
        "60 inputs at full speed: 60 * 6000 mm/s / 60 Hz"
    );
}

#[test]
fn position_moves_at_the_speed_limit_whatever_the_input_rate() {
    let mut h = Harness::new();
    let mut p = h.join(1);
    // A cheating client sends 5 inputs per tick for 60 ticks.
    for _ in 0..60 {
        for _ in 0..5 {
            h.send_input(&mut p, InputCmd::new(1000, 0, 0));
        }
        h.worker.tick();
    }
    h.worker.tick();
    let d: Vec<Bytes> = p
        .link
        .datagrams
        .lock()
        .map(|mut d| d.drain(..).collect())
        .unwrap_or_default();
    let x = d.last().and_then(|s| own_x(&p, s)).expect("snapshot");
    let moved = x - 50_000;
    // At most one input per tick plus the bank of 4: 65 ticks * 100 mm.
    assert!(moved <= 65 * 100, "moved {moved} mm in 61 ticks");
    assert!(moved >= 60 * 100, "moved {moved} mm: inputs were lost");
}

#[test]
fn each_player_gets_its_own_instance_and_ping_is_answered() {
    let mut h = Harness::new();
    let mut a = h.join(1);
    let mut b = h.join(2);
    assert_ne!(
        a.client.welcome().map(|w| w.instance),
        b.client.welcome().map(|w| w.instance)
    );
    assert_eq!(
        h.stats
            .sessions_active
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let (id, _frame) = a
        .client
        .request(Request::Ping { client_time_us: 42 }, h.now)
        .expect("request");
    assert!(h
        .inbox
        .work(Work::Request {
            session: 1,
            id,
            body: Request::Ping { client_time_us: 42 },
            received_at: h.now
        })
        .is_ok());
    h.step(&mut [&mut a, &mut b]);
    let mut got_pong = false;
    while let Some(ev) = a.client.poll_event() {
        if let ClientEvent::Response {
            id: rid,
            body: Ok(Response::Pong {
                client_time_us: 42, ..
            }),
            ..
        } = ev
        {
            got_pong = rid == id;
        }
    }
    assert!(got_pong);
    h.inbox.control(Control::Leave { session: 2 });
    h.step(&mut [&mut a]);
    assert_eq!(
        h.stats
            .sessions_active
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        h.stats
            .instances_live
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn drain_sends_goaway_and_refuses_new_joins() {
    let mut h = Harness::new();
    let mut a = h.join(1);
    h.inbox.control(Control::Drain);
    h.step(&mut [&mut a]);
    assert!(matches!(
        a.client.poll_event(),
        Some(ClientEvent::Goaway(_))
    ));
    assert_eq!(
        h.stats
            .sessions_active
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let link = Arc::new(MemLink::default());
    let (tx, mut rx) = mpsc::channel(4);
    h.inbox.control(Control::Join(Box::new(Join {
        session: 9,
        player_id: 9,
        player_name: "late".into(),
        conn: link,
        outbox: tx,
        shared: Arc::new(ConnShared::default()),
    })));
    h.worker.tick();
    assert!(matches!(
        rx.try_recv(),
        Ok(Outgoing::CloseAfter {
            code: close_code::REJECTED,
            ..
        })
    ));
}
