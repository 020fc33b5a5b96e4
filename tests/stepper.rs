//! The server core stepped in one process without sockets: a sim worker ticked by hand,
//! a `ClientSession` fed by an in-memory link, virtual time. Deterministic and fast.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zonehost::config::{Config, SecondLogin};
use zonehost::session::{Contact, Registry, ResumeMinter};
use zonehost::sim::{outbox, OutboxReceiver};
use zonehost::sim::{
    ConnShared, Control, Inbox, Join, Link, LinkError, Outgoing, Work, Worker, WorkerSettings,
};
use zonehost::telemetry::Stats;
use zonehost_game::{Content, Parties};
use zonehost_protocol::datagram::{InputCmd, InputDatagram};
use zonehost_protocol::message::{close_code, Event, PartyEvent, Request, RequestError, Response};
use zonehost_protocol::snapshot::decode_snapshot;
use zonehost_protocol::token::player_id;
use zonehost_protocol::{ClientEvent, ClientSession};

/// x of the town's spawn point (content/zones/town.toml).
const TOWN_SPAWN_X: i32 = 20_000;

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
    registry: Arc<Registry>,
    now: Instant,
}

struct Player {
    session: u64,
    client: ClientSession,
    link: Arc<MemLink>,
    outbox: OutboxReceiver,
}

impl Harness {
    fn new() -> Self {
        // One snapshot per tick: each stepped tick is observable on its own.
        let config = Config {
            snapshot_rate_hz: 60,
            ..Config::default()
        };
        let inbox = Arc::new(Inbox::new(1024));
        let stats = Arc::new(Stats::new(1));
        let registry = Arc::new(Registry::new(SecondLogin::Refuse));
        let worker = Worker::new(
            WorkerSettings::from_config(
                0,
                &config,
                Arc::new(Content::builtin().expect("built-in content")),
                Arc::new(ResumeMinter::random().expect("randomness")),
                Arc::new(Mutex::new(Parties::new())),
                7,
            ),
            inbox.clone(),
            stats.clone(),
            registry.clone(),
            Arc::new(AtomicBool::new(false)),
        );
        Self {
            worker,
            inbox,
            stats,
            registry,
            now: Instant::now(),
        }
    }

    /// Joins a player and delivers its `Welcome` to its client session.
    fn join(&mut self, session: u64) -> Player {
        let link = Arc::new(MemLink::default());
        let (tx, rx) = outbox(256);
        let name = format!("p{session}");
        let shared = Arc::new(ConnShared::default());
        let contact = Contact {
            name: name.clone(),
            conn: link.clone(),
            shared: shared.clone(),
            outbox: tx.clone(),
        };
        self.registry
            .claim(player_id(&name), session, contact, &self.inbox)
            .expect("claim");
        self.inbox.control(Control::Join(Box::new(Join {
            session,
            player_id: player_id(&name),
            player_name: name,
            conn: link.clone(),
            outbox: tx,
            shared,
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

/// Hands `datagrams` to the player's session and reads its own x from the rebuilt view.
fn own_x(p: &mut Player, datagrams: &[Bytes], now: Instant) -> Option<i32> {
    let entity = p.client.welcome()?.entity_id;
    for d in datagrams {
        p.client.handle_datagram(d, now).ok()?;
    }
    p.client.view().get(entity).map(|e| e.x_mm)
}

#[test]
fn movement_is_applied_in_order_and_acknowledged_next_tick() {
    let mut h = Harness::new();
    let mut p = h.join(1);
    let start_x = TOWN_SPAWN_X;
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
        let now_x = own_x(&mut p, &datagrams, h.now).expect("own entity in snapshot");
        assert_eq!(
            now_x - x,
            100,
            "one input of full speed per tick moves 6000 mm/s / 60"
        );
        x = now_x;
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
    let now = h.now;
    let x = own_x(&mut p, &d, now).expect("snapshot");
    let moved = x - TOWN_SPAWN_X;
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
    assert!(events(&mut a)
        .iter()
        .any(|e| matches!(e, ClientEvent::Goaway(_))));
    assert_eq!(
        h.stats
            .sessions_active
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let link = Arc::new(MemLink::default());
    let (tx, mut rx) = outbox(4);
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

fn events(p: &mut Player) -> Vec<ClientEvent> {
    std::iter::from_fn(|| p.client.poll_event()).collect()
}

impl Harness {
    /// Sends a request and returns its response after one tick (game requests resolve in
    /// the next world step).
    fn request(&mut self, p: &mut Player, body: Request) -> Result<Response, RequestError> {
        let (id, _) = p.client.request(body.clone(), self.now).expect("request");
        assert!(self
            .inbox
            .work(Work::Request {
                session: p.session,
                id,
                body,
                received_at: self.now
            })
            .is_ok());
        for _ in 0..3 {
            self.step(&mut [&mut *p]);
            for ev in events(p) {
                if let ClientEvent::Response { id: rid, body, .. } = ev {
                    if rid == id {
                        return body;
                    }
                }
            }
        }
        panic!("no response to request {id}");
    }
}

#[test]
fn new_character_has_a_starter_kit_and_item_requests_are_validated() {
    let mut h = Harness::new();
    let mut p = h.join(1);
    let inv = match h.request(&mut p, Request::GetInventory) {
        Ok(Response::Inventory(inv)) => inv,
        other => panic!("expected an inventory, got {other:?}"),
    };
    assert_eq!(inv.level, 1);
    assert_eq!(inv.equipment.len(), 1, "a starter weapon is worn");
    assert_eq!(inv.equipment[0].0, zonehost_protocol::message::slot::WEAPON);
    assert_eq!(inv.bag.len(), 2, "two starter potions");
    let potion = inv.bag[0].id;
    assert_eq!(
        h.request(&mut p, Request::UseItem { item: potion }),
        Err(RequestError::NoEffect),
        "full health"
    );
    assert_eq!(
        h.request(&mut p, Request::Equip { item: 12345 }),
        Err(RequestError::NoSuchItem)
    );
    assert_eq!(
        h.request(&mut p, Request::Equip { item: potion }),
        Err(RequestError::WrongSlot)
    );
    assert_eq!(
        h.request(&mut p, Request::Unequip { slot: 9 }),
        Err(RequestError::WrongSlot)
    );
    assert_eq!(
        h.request(&mut p, Request::EnterZone),
        Err(RequestError::NotAtPortal)
    );
    assert_eq!(
        h.request(&mut p, Request::Attack { target: 999 }),
        Err(RequestError::NoSuchTarget)
    );
    let weapon = inv.equipment[0].1.id;
    assert_eq!(
        h.request(&mut p, Request::Unequip { slot: 0 }),
        Ok(Response::Done)
    );
    let inv = match h.request(&mut p, Request::GetInventory) {
        Ok(Response::Inventory(inv)) => inv,
        other => panic!("expected an inventory, got {other:?}"),
    };
    assert!(inv.equipment.is_empty());
    assert!(
        inv.bag.iter().any(|i| i.id == weapon),
        "the weapon went back to the bag"
    );
}

#[test]
fn walking_into_a_portal_enters_a_combat_zone_with_monsters() {
    let mut h = Harness::new();
    let mut p = h.join(1);
    let mut entered = None;
    for _ in 0..400 {
        h.send_input(&mut p, InputCmd::new(1000, 0, 0));
        h.step(&mut [&mut p]);
        for ev in events(&mut p) {
            if let ClientEvent::Event(Event::ZoneEntered {
                zone,
                instance,
                entity_id,
            }) = ev
            {
                entered = Some((zone, instance, entity_id));
            }
        }
        if entered.is_some() {
            break;
        }
    }
    let (zone, instance, entity) = entered.expect("the east portal of town leads to the crypt");
    assert_eq!(zone, 2);
    assert_eq!(
        p.client
            .welcome()
            .map(|w| (w.zone, w.instance, w.entity_id)),
        Some((zone, instance, entity))
    );
    h.step(&mut [&mut p]);
    h.worker.tick();
    let snapshot: Vec<Bytes> = p
        .link
        .datagrams
        .lock()
        .map(|mut d| d.drain(..).collect())
        .unwrap_or_default();
    for d in &snapshot {
        let (header, _) = decode_snapshot(d).expect("snapshot");
        assert_eq!(header.instance.get(), instance);
        p.client
            .handle_datagram(d, h.now)
            .expect("snapshot applies");
    }
    let view = p.client.view().entities();
    let monsters = view
        .iter()
        .filter(|e| e.kind == zonehost_protocol::snapshot::kind::MONSTER)
        .count();
    let me = view.iter().any(|e| e.id == entity);
    assert!(monsters > 0, "the crypt has monsters");
    assert!(me, "the player is in the new instance's snapshot");
    assert_eq!(
        h.stats
            .instances_live
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the empty town instance is gone"
    );
}

#[test]
fn party_members_share_the_leaders_instance() {
    let mut h = Harness::new();
    let mut a = h.join(1);
    let mut b = h.join(2);
    let a_instance = a.client.welcome().map(|w| w.instance);
    assert_eq!(
        h.request(
            &mut a,
            Request::PartyInvite {
                player: "nobody".into()
            }
        ),
        Err(RequestError::NoSuchPlayer)
    );
    assert_eq!(
        h.request(
            &mut a,
            Request::PartyInvite {
                player: "p2".into()
            }
        ),
        Ok(Response::Done)
    );
    h.step(&mut [&mut b]);
    assert!(events(&mut b).iter().any(
        |e| matches!(e, ClientEvent::Event(Event::Party(PartyEvent::Invited { by })) if by == "p1")
    ));
    assert_eq!(h.request(&mut b, Request::PartyAccept), Ok(Response::Done));
    h.step(&mut [&mut a, &mut b]);
    assert_eq!(
        b.client.welcome().map(|w| w.instance),
        a_instance,
        "b moved into the leader's instance"
    );
    let members = events(&mut a).into_iter().find_map(|e| match e {
        ClientEvent::Event(Event::Party(PartyEvent::Members {
            leader, members, ..
        })) => Some((leader, members)),
        _ => None,
    });
    assert_eq!(
        members,
        Some(("p1".to_string(), vec!["p1".to_string(), "p2".to_string()]))
    );
    assert_eq!(
        h.stats
            .instances_live
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(h.request(&mut b, Request::PartyLeave), Ok(Response::Done));
}
