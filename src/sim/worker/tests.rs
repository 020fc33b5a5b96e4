use super::*;
use crate::config::SecondLogin;
use crate::session::Contact;
use crate::sim::{outbox, ConnShared, Link, LinkError, OutboxReceiver, Route};
use zonehost_game::PlayerInput;
use zonehost_protocol::datagram::MAX_INPUTS_PER_DATAGRAM;
use zonehost_protocol::frame::FrameDecoder;

#[test]
fn snapshot_times_remember_the_last_ring_of_ticks() {
    let mut times = SnapshotTimes::new();
    let t0 = Instant::now();
    assert_eq!(times.sent_at(5), None, "nothing sent yet");
    times.sent(5, t0);
    assert_eq!(times.sent_at(5), Some(t0));
    // A tick one ring later takes the slot: the old tick is forgotten, not confused.
    let later = t0 + Duration::from_secs(17);
    times.sent(5 + SNAPSHOT_TIMES as u32, later);
    assert_eq!(times.sent_at(5), None);
    assert_eq!(times.sent_at(5 + SNAPSHOT_TIMES as u32), Some(later));
    assert_eq!(times.sent_at(6), None);
}

#[derive(Debug, Default)]
struct NoLink;

impl Link for NoLink {
    fn send_datagram(&self, _data: Bytes) -> Result<(), LinkError> {
        Ok(())
    }
    fn close(&self, _code: u32, _reason: &[u8]) {}
}

struct Two {
    workers: Vec<Worker>,
    inboxes: Arc<[Arc<Inbox>]>,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
}

/// What the workers of one test share.
struct Shared {
    config: Config,
    content: Arc<Content>,
    resume: Arc<ResumeMinter>,
    parties: Arc<Mutex<Parties>>,
    stats: Arc<Stats>,
    registry: Arc<Registry>,
}

impl Shared {
    /// The default configuration, built-in content, no parties, for `workers` workers.
    fn new(workers: usize) -> Self {
        Self {
            config: Config::default(),
            content: Arc::new(Content::builtin().expect("built-in content")),
            resume: Arc::new(ResumeMinter::random().expect("randomness")),
            parties: Arc::new(Mutex::new(Parties::new())),
            stats: Arc::new(Stats::new(workers)),
            registry: Arc::new(Registry::new(SecondLogin::Refuse)),
        }
    }

    /// Worker `index`, reading `inbox`.
    fn worker(&self, index: usize, inbox: Arc<Inbox>) -> Worker {
        Worker::new(
            WorkerSettings::from_config(
                index,
                &self.config,
                self.content.clone(),
                self.resume.clone(),
                self.parties.clone(),
                7,
            ),
            inbox,
            self.stats.clone(),
            self.registry.clone(),
            Arc::new(AtomicBool::new(false)),
        )
    }
}

impl Two {
    fn new() -> Self {
        let shared = Shared::new(2);
        let inboxes: Arc<[Arc<Inbox>]> = (0..2).map(|_| Arc::new(Inbox::new(64))).collect();
        let workers = (0..2)
            .map(|i| {
                shared
                    .worker(i, inboxes[i].clone())
                    .with_peers(inboxes.clone())
            })
            .collect();
        Self {
            workers,
            inboxes,
            registry: shared.registry,
            stats: shared.stats,
        }
    }

    fn tick(&mut self) {
        for w in &mut self.workers {
            w.tick();
        }
    }

    /// Ticks every worker at `now` (test time).
    fn tick_at(&mut self, now: Instant) {
        for w in &mut self.workers {
            w.tick_at(now);
        }
    }

    /// Joins `name` on worker `on`; returns its session's route and its outbox.
    fn join(&mut self, session: u64, name: &str, on: usize) -> OutboxReceiver {
        let (tx, rx) = outbox(256);
        let shared = Arc::new(ConnShared::default());
        let link: Arc<dyn Link> = Arc::new(NoLink);
        let route = Route::new(self.inboxes.clone(), on);
        let contact = Contact {
            name: name.into(),
            conn: link.clone(),
            shared: shared.clone(),
            outbox: tx.clone(),
        };
        self.registry
            .claim(player_id(name), session, contact, &route)
            .expect("claim");
        route.control(Control::Join(Box::new(Join {
            session,
            player_id: player_id(name),
            player_name: name.into(),
            conn: link,
            outbox: tx,
            shared,
        })));
        self.tick();
        rx
    }

    fn request(&self, session: u64, id: u32, body: Request) {
        let (_, route) = self.registry.route(self.player_of(session)).expect("live");
        route
            .work(Work::Request {
                session,
                id,
                body,
                received_at: Instant::now(),
            })
            .expect("inbox has room");
    }

    fn player_of(&self, session: u64) -> u64 {
        self.workers
            .iter()
            .find_map(|w| w.member(session).map(|m| m.join.player_id))
            .expect("a member")
    }

    fn instance_of(&self, session: u64) -> Option<(usize, u32)> {
        self.workers
            .iter()
            .enumerate()
            .find_map(|(i, w)| w.sessions.get(&session).map(|inst| (i, *inst)))
    }
}

/// Every server message queued on `rx` so far.
fn drain(rx: &mut OutboxReceiver) -> Vec<ServerMsg> {
    let mut out = Vec::new();
    let mut decoder = FrameDecoder::new(zonehost_protocol::MAX_FRAME_LEN);
    while let Ok(o) = rx.try_recv() {
        if let Outgoing::Frame(f) = o {
            decoder.extend(&f);
            while let Ok(Some(m)) = decoder.next_message::<ServerMsg>() {
                out.push(m);
            }
        }
    }
    out
}

/// A placer whose server is overloaded against peer `b` (or not, `busy` below 600).
fn placer(busy: u32) -> crate::placement::InstancePlacer {
    let peers = [("a", 4000u16), ("b", 4001)]
        .iter()
        .map(|(id, port)| {
            (
                id.to_string(),
                std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
            )
        })
        .collect();
    let placement = Arc::new(crate::placement::Placement::new(
        "a".into(),
        &peers,
        crate::placement::Thresholds {
            above_permille: 600,
            margin_permille: 250,
        },
    ));
    let row = |id: &str, busy| crate::store::ServerLoad {
        server_id: id.into(),
        players: 10,
        busy_permille: busy,
        draining: false,
        updated_at_ms: 0,
        address: None,
    };
    placement.update(row("a", busy), vec![row("b", 100)]);
    crate::placement::InstancePlacer {
        placement,
        handoffs: Arc::new(crate::cluster::Handoffs::default()),
    }
}

/// A solo player's instance keeps room for exactly one member (instances live as long as
/// their players; a pushed empty Vec would reserve four).
#[test]
fn a_solo_instance_holds_room_for_one_member() {
    let mut t = Two::new();
    let _rx = t.join(1, "solo", 0);
    let (w, inst) = t.instance_of(1).expect("placed");
    let members = &t.workers[w].instances[&inst].members;
    assert_eq!((members.len(), members.capacity()), (1, 1));
}

#[test]
fn only_new_dungeon_instances_of_solo_players_and_leaders_go_to_a_peer() {
    let mut t = Two::new();
    let busy = placer(900);
    let idle = placer(300);
    t.workers[0].placer = Some(Arc::new(busy.clone()));
    t.workers[1].placer = Some(Arc::new(idle.clone()));
    let count = |p: &crate::placement::InstancePlacer| {
        (
            p.placement.counters.instances_local.load(Ordering::Relaxed),
            p.placement.counters.instances_peer.load(Ordering::Relaxed),
        )
    };
    let town = t.settings_town();
    // Not busy: the crypt's instance opens here (counted local).
    let _solo_rx = t.join(1, "solo", 1);
    t.workers[1].transfer(1, 2);
    assert_eq!(
        t.workers[1].instances[&t.instance_of(1).expect("here").1]
            .key
            .0,
        2
    );
    assert_eq!(count(&idle), (1, 0));
    // Busy: a solo player's new crypt instance goes to b; once settled it is saved
    // (no store here) and queued for its Redirect, with the crypt as its destination.
    let mut walker_rx = t.join(2, "walker", 0);
    t.workers[0].transfer(2, 2);
    assert_eq!(count(&busy), (0, 0), "counted once it is handed off");
    assert!(t.instance_of(2).is_some(), "still here until settled");
    t.tick();
    assert_eq!(count(&busy), (0, 1));
    assert_eq!(t.instance_of(2), None, "left the simulation");
    let queued = busy.handoffs.take();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].session, 2);
    assert_eq!(queued[0].to.as_ref().map(|t| t.0.as_str()), Some("b"));
    assert!(t.registry.route(player_id("walker")).is_none());
    assert!(
        !drain(&mut walker_rx)
            .iter()
            .any(|m| matches!(m, ServerMsg::Event(Event::ZoneEntered { .. }))),
        "no ZoneEntered: the Redirect replaces it"
    );
    // Towns are never placed (nor counted).
    let _home_rx = t.join(3, "home", 0);
    t.workers[0].placer = None;
    t.workers[0].transfer(3, 2);
    t.workers[0].placer = Some(Arc::new(busy.clone()));
    let (_, crypt) = t.instance_of(3).expect("in the crypt here");
    t.workers[0].transfer(3, town);
    t.tick();
    let (_, now_in) = t.instance_of(3).expect("still here");
    assert_ne!(now_in, crypt);
    assert_eq!(t.workers[0].instances[&now_in].key.0, town);
    assert_eq!(count(&busy), (0, 1), "the town was not counted");
    // A party: the member's instance is its leader's (never placed), and an instance
    // that exists is rejoined, even by the leader.
    let _lead_rx = t.join(5, "lead", 0);
    let _memb_rx = t.join(6, "memb", 0);
    t.request(
        5,
        1,
        Request::PartyInvite {
            player: "memb".into(),
        },
    );
    t.tick();
    t.request(6, 2, Request::PartyAccept);
    t.tick();
    t.tick();
    t.workers[0].transfer(6, 3);
    t.tick();
    let (_, marsh) = t.instance_of(6).expect("the member stays");
    assert_eq!(t.workers[0].instances[&marsh].key.0, 3);
    assert_eq!(count(&busy), (0, 1));
    t.workers[0].transfer(5, 3);
    t.tick();
    assert_eq!(
        t.instance_of(5),
        Some((0, marsh)),
        "the leader joins its party's marsh"
    );
    assert_eq!(count(&busy), (0, 1));
    // The leader's new instance is placed.
    t.workers[0].transfer(5, 4);
    t.tick();
    assert_eq!(t.instance_of(5), None);
    assert_eq!(count(&busy), (0, 2));
    assert_eq!(busy.handoffs.take().len(), 1);
}

#[test]
fn a_newer_zone_change_supersedes_a_pending_placement() {
    let mut t = Two::new();
    let busy = placer(900);
    t.workers[0].placer = Some(Arc::new(busy.clone()));
    let town = t.settings_town();
    let _rx = t.join(1, "fickle", 0);
    // Into the crypt: placed on a peer, waiting to settle (the next tick)...
    t.workers[0].transfer(1, 2);
    assert_eq!(t.workers[0].placing.len(), 1);
    // ...but back to town first (a respawn, say): the placement is dropped.
    t.workers[0].transfer(1, town);
    assert!(t.workers[0].placing.is_empty());
    t.tick();
    let (_, now_in) = t.instance_of(1).expect("still on this server");
    assert_eq!(t.workers[0].instances[&now_in].key.0, town);
    assert!(busy.handoffs.take().is_empty(), "no Redirect queued");
}

#[test]
fn a_party_member_is_handed_to_the_leaders_worker_and_stray_work_follows_it() {
    let mut t = Two::new();
    let _lead_rx = t.join(1, "lead", 0);
    let mut memb_rx = t.join(2, "memb", 1);
    let (lw, lead_inst) = t.instance_of(1).expect("leader placed");
    assert_eq!(lw, 0);
    assert_eq!(t.instance_of(2).map(|(w, _)| w), Some(1));
    t.request(
        1,
        1,
        Request::PartyInvite {
            player: "memb".into(),
        },
    );
    t.tick();
    t.request(2, 2, Request::PartyAccept);
    // Accept (worker 1), handover (stage 5), arrival (worker 0, next tick).
    for _ in 0..3 {
        t.tick();
    }
    assert_eq!(
        t.instance_of(2),
        Some((0, lead_inst)),
        "member joined the leader"
    );
    assert_eq!(Stats::get(&t.stats.sim_migrations), 1);
    assert_eq!(t.inboxes[0].players(), 2);
    assert_eq!(t.inboxes[1].players(), 0);
    let msgs = drain(&mut memb_rx);
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMsg::Event(Event::ZoneEntered { instance, .. }) if *instance == lead_inst
    )));
    // A message a connection task queued on the old worker before it saw the new
    // route is forwarded and answered by the new one.
    t.inboxes[1]
        .work(Work::Request {
            session: 2,
            id: 9,
            body: Request::Ping { client_time_us: 5 },
            received_at: Instant::now(),
        })
        .expect("room");
    t.tick();
    t.tick();
    assert!(Stats::get(&t.stats.sim_forwarded) >= 1);
    let msgs = drain(&mut memb_rx);
    assert!(
        msgs.iter().any(|m| matches!(
            m,
            ServerMsg::Response {
                id: 9,
                body: Ok(Response::Pong { .. })
            }
        )),
        "{msgs:?}"
    );
    // The route now leads to the leader's worker; a leave sent there ends the session.
    let (_, route) = t.registry.route(player_id("memb")).expect("live");
    assert_eq!(route.worker(), 0);
    route.control(Control::Leave { session: 2 });
    t.tick();
    assert_eq!(t.instance_of(2), None);
    assert!(t.registry.route(player_id("memb")).is_none());
}

#[test]
fn a_leave_queued_on_the_old_worker_is_forwarded_and_ends_the_session() {
    let mut t = Two::new();
    let _a = t.join(1, "lead", 0);
    let _b = t.join(2, "memb", 1);
    let town = t.settings_town();
    assert!(t.workers[1].request_migration(2, 0, Goal::Zone(town)));
    t.tick();
    t.tick();
    assert_eq!(t.instance_of(2).map(|(w, _)| w), Some(0));
    // The connection task read the route before the move: its Leave lands on worker 1.
    t.inboxes[1].control(Control::Leave { session: 2 });
    t.tick();
    t.tick();
    assert_eq!(
        t.instance_of(2),
        None,
        "the session ended on its new worker"
    );
    assert!(t.registry.route(player_id("memb")).is_none(), "released");
    assert_eq!(t.inboxes[0].players(), 1);
    assert_eq!(t.inboxes[1].players(), 0);
}

#[test]
fn game_requests_during_a_pending_handover_travel_with_the_player() {
    let mut t = Two::new();
    let _a = t.join(1, "lead", 0);
    let mut rx = t.join(2, "memb", 1);
    let goal = Goal::Zone(t.settings_town());
    assert!(t.workers[1].request_migration(2, 0, goal));
    // Still on worker 1 (nothing ticked): a game request is parked, not applied.
    t.inboxes[1]
        .work(Work::Request {
            session: 2,
            id: 4,
            body: Request::UseItem { item: 0 },
            received_at: Instant::now(),
        })
        .expect("room");
    t.workers[1].tick();
    assert_eq!(t.instance_of(2).map(|(w, _)| w), None, "in transit");
    t.workers[0].tick();
    t.tick();
    t.tick();
    assert_eq!(t.instance_of(2).map(|(w, _)| w), Some(0));
    let msgs = drain(&mut rx);
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ServerMsg::Response { id: 4, .. })),
        "the parked request was answered by the new worker: {msgs:?}"
    );
}

#[test]
fn a_handover_waits_for_the_players_item_operations_in_flight() {
    use crate::store::{ItemStore, Owner};

    let (mut t, stored) = Two::on_redb("migrate");
    // Each is loaded and admitted (the store answers in the background); stop right at
    // the member's admission.
    let _a = t.join_loaded(1, "lead", 0);
    let _b = t.join_loaded(2, "memb", 1);
    // A fresh character's starter kit is being created: item operations in flight.
    let in_flight = |w: &Worker| w.persist.as_ref().map_or(0, |p| p.item_ops_of(2));
    assert!(in_flight(&t.workers[1]) > 0, "starter kit ops in flight");
    let town = t.settings_town();
    assert!(t.workers[1].request_migration(2, 0, Goal::Zone(town)));
    t.workers[1].migrate_settled(Instant::now());
    assert_eq!(
        t.instance_of(2).map(|(w, _)| w),
        Some(1),
        "no handover while item operations are in flight"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.instance_of(2).map(|(w, _)| w) != Some(0) {
        assert!(Instant::now() < deadline, "handover never happened");
        std::thread::sleep(Duration::from_millis(2));
        t.tick();
    }
    assert_eq!(in_flight(&t.workers[1]), 0, "settled before it left");
    // Exactly once: the store's items of the player are exactly its inventory.
    let (_, inst) = t.instance_of(2).expect("placed");
    let state = {
        let i = t.workers[0].instances.get(&inst).expect("instance");
        let m = i.members.iter().find(|m| m.session == 2).expect("member");
        i.world.export_player(m.entity).expect("state")
    };
    let mut live: Vec<u128> = state.inventory.item_ids().map(|i| i.0).collect();
    let mut stored_items: Vec<u128> = stored
        .store
        .items_of(Owner::Player(player_id("memb")))
        .expect("items")
        .iter()
        .map(|r| r.item_id)
        .collect();
    live.sort_unstable();
    stored_items.sort_unstable();
    assert!(!live.is_empty());
    assert_eq!(live, stored_items);
    drop(t);
    stored.stop();
}

#[test]
fn a_party_handoff_waits_for_the_members_item_operations_in_flight() {
    let (mut t, stored) = Two::on_redb("handoff");
    let deadline = Instant::now() + Duration::from_secs(10);
    let _b = t.join_loaded(2, "memb", 1);
    let in_flight = |w: &Worker| w.persist.as_ref().map_or(0, |p| p.item_ops_of(2));
    assert!(in_flight(&t.workers[1]) > 0, "starter kit ops in flight");
    // The directory hands the member to its leader's server.
    t.workers[1].party_handoffs.push((2, Instant::now()));
    t.workers[1].hand_off_settled(Instant::now());
    assert_eq!(
        t.instance_of(2).map(|(w, _)| w),
        Some(1),
        "no handoff while item operations are in flight"
    );
    while t.instance_of(2).is_some() {
        assert!(Instant::now() < deadline, "handoff never happened");
        std::thread::sleep(Duration::from_millis(2));
        t.tick();
    }
    assert_eq!(in_flight(&t.workers[1]), 0, "settled before it left");
    assert!(t.workers[1].party_handoffs.is_empty());
    drop(t);
    stored.stop();
}

/// A redb store and its store worker under a fresh temporary directory.
struct Stored {
    store: Arc<crate::store::redb::RedbStore>,
    worker: crate::store::writer::StoreWorker,
    dir: std::path::PathBuf,
}

impl Stored {
    fn stop(self) {
        self.worker.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Two {
    /// Two workers persisting through one store worker on a fresh redb file.
    fn on_redb(tag: &str) -> (Self, Stored) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("zonehost-{tag}-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store =
            Arc::new(crate::store::redb::RedbStore::open(&dir.join("store.redb")).expect("store"));
        let worker = crate::store::writer::StoreWorker::spawn(
            Box::new(store.clone()),
            &Config::default().store,
        )
        .expect("spawn");
        let mut t = Two::new();
        let settings = PersistSettings::new(3, Duration::from_secs(10));
        t.workers = std::mem::take(&mut t.workers)
            .into_iter()
            .map(|w| w.with_store(worker.handle(), settings.for_worker()))
            .collect();
        (t, Stored { store, worker, dir })
    }

    /// Joins `name` on `worker` and ticks until the store has loaded it and it is
    /// admitted (at most 10 s).
    fn join_loaded(&mut self, session: SessionId, name: &str, worker: usize) -> OutboxReceiver {
        let rx = self.join(session, name, worker);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.instance_of(session).is_none() {
            assert!(Instant::now() < deadline, "{name} never admitted");
            std::thread::sleep(Duration::from_millis(2));
            self.tick();
        }
        rx
    }

    fn settings_town(&self) -> u16 {
        self.workers[0]
            .settings
            .content
            .town()
            .map(|t| t.id)
            .expect("a town")
    }
}

#[test]
fn a_detached_session_ends_when_its_resume_grace_is_over_in_test_time() {
    let mut t = Two::new();
    let _rx = t.join(1, "sleeper", 0);
    let (_, route) = t.registry.route(player_id("sleeper")).expect("live");
    route.control(Control::Detach { session: 1 });
    let t0 = Instant::now();
    t.tick_at(t0);
    assert!(t.workers[0]
        .member(1)
        .is_some_and(|m| m.detached_at == Some(t0)));
    let grace = t.workers[0].settings.resume_grace;
    t.tick_at(t0 + grace - Duration::from_millis(1));
    assert!(
        t.workers[0].member(1).is_some(),
        "waits for a resume until the grace ends"
    );
    t.tick_at(t0 + grace);
    assert!(t.workers[0].member(1).is_none(), "the grace is over");
    assert!(
        t.registry.route(player_id("sleeper")).is_none(),
        "the player is released"
    );
}

/// A link that counts the datagrams sent on it.
#[derive(Debug, Default)]
struct CountingLink(std::sync::atomic::AtomicUsize);

impl Link for CountingLink {
    fn send_datagram(&self, _data: Bytes) -> Result<(), LinkError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn close(&self, _code: u32, _reason: &[u8]) {}
}

#[test]
fn snapshots_move_onto_the_ticks_the_inputs_arrive_on() {
    // 60 ticks, 30 snapshots per second (the default): every other tick.
    let shared = Shared::new(1);
    assert_eq!(shared.config.ticks_per_snapshot(), 2);
    let inbox = Arc::new(Inbox::new(64));
    let mut w = shared.worker(0, inbox.clone());
    let link = Arc::new(CountingLink::default());
    let (tx, _rx) = outbox(256);
    inbox.control(Control::Join(Box::new(Join {
        session: 1,
        player_id: player_id("phased"),
        player_name: "phased".into(),
        conn: link.clone(),
        outbox: tx,
        shared: Arc::new(ConnShared::default()),
    })));
    w.tick();
    let instance = *w.sessions.get(&1).expect("joined");
    // Inputs that arrive on the ticks without the instance's snapshots.
    let phase = w.instances[&instance].snapshot_phase;
    let quiet = |tick: u64| !snapshot_due(tick, phase, 2, 1);
    let mut seq = 0;
    let mut ticks_with_inputs = Vec::new();
    for _ in 0..3 * PHASE_REVIEW_TICKS {
        // The worker's next tick is `w.ticks + 1`.
        if quiet(w.ticks + 1) {
            seq += 1;
            let mut inputs = [PlayerInput::default(); MAX_INPUTS_PER_DATAGRAM];
            inputs[0] = PlayerInput {
                seq,
                move_x: 1000,
                ..PlayerInput::default()
            };
            assert!(inbox
                .work(Work::Input {
                    session: 1,
                    count: 1,
                    inputs,
                    received_at: Instant::now(),
                    ack_tick: 0,
                })
                .is_ok());
            ticks_with_inputs.push(w.ticks + 1);
        }
        let before = link.0.load(Ordering::Relaxed);
        w.tick();
        let sent = link.0.load(Ordering::Relaxed) - before;
        assert!(sent <= 1, "one snapshot datagram a tick at most");
    }
    let moved = w.instances[&instance].snapshot_phase;
    assert_ne!(moved % 2, phase % 2, "the phase moved");
    // From now on every input is seen in the snapshot of the tick that applies it.
    for _ in 0..20 {
        let applying = snapshot_due(w.ticks + 1, moved, 2, 1);
        let before = link.0.load(Ordering::Relaxed);
        w.tick();
        let sent = link.0.load(Ordering::Relaxed) - before;
        assert_eq!(sent, usize::from(applying), "tick {}", w.ticks);
    }
    assert!(ticks_with_inputs.len() >= 3 * PHASE_REVIEW_TICKS as usize / 2 - 1);
}
