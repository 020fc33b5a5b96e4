use super::*;
use crate::store::redb::RedbStore;
use crate::store::ItemOpKind;
use crate::store::PlayerStore;

fn temp_path(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir()
        .join(format!(
            "zonehost-writer-{tag}-{}-{nanos:x}",
            std::process::id()
        ))
        .join("store.redb")
}

fn wait_for(handle: &StoreHandle, n: usize) -> Vec<StoreReply> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n && Instant::now() < deadline {
        handle.drain_replies(&mut out);
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

#[test]
fn replies_come_back_in_order_to_the_submitting_handle() {
    let path = temp_path("order");
    let store = RedbStore::open(&path).expect("open");
    let worker = StoreWorker::spawn(Box::new(store), &StoreConfig::default()).expect("spawn");
    let a = worker.handle();
    let b = worker.handle();
    let mut rec = PlayerRecord::new("writer");
    rec.epoch = 1;
    rec.seq = 1;
    a.submit(StoreCommand::SavePlayers {
        token: 1,
        records: vec![rec.clone()],
    })
    .expect("submit");
    a.submit(StoreCommand::LoadPlayer {
        token: 2,
        player_id: rec.player_id,
    })
    .expect("submit");
    b.submit(StoreCommand::ItemOp {
        token: 3,
        op: ItemOp {
            op_id: 9,
            item_id: 9,
            kind: ItemOpKind::Create {
                owner: Owner::Player(rec.player_id),
                data: vec![1],
            },
        },
    })
    .expect("submit");
    b.submit(StoreCommand::Barrier { token: 4 })
        .expect("submit");
    let ra = wait_for(&a, 2);
    let rb = wait_for(&b, 2);
    assert!(matches!(ra[0], StoreReply::Saved { token: 1, result: Ok(ref o) } if o.len() == 1));
    match &ra[1] {
        StoreReply::Loaded {
            token: 2,
            result: Ok(Some(r)),
            ..
        } => assert_eq!(r.fence(), rec.fence()),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        rb[0],
        StoreReply::Item {
            token: 3,
            result: Ok(ItemOutcome::Created { .. }),
            ..
        }
    ));
    assert!(matches!(rb[1], StoreReply::Barrier { token: 4 }));
    assert_eq!(a.in_flight(), 0);
    assert_eq!(worker.stats().ops(StoreOp::Save), 1);
    assert_eq!(worker.stats().queue_depth(), 0);
    worker.stop();
    assert!(matches!(
        a.submit(StoreCommand::Barrier { token: 5 }),
        Err(SubmitError::Closed(_))
    ));
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[test]
fn a_handle_refuses_beyond_its_in_flight_limit() {
    let path = temp_path("full");
    let store = RedbStore::open(&path).expect("open");
    let config = StoreConfig {
        replies_capacity: 2,
        ..StoreConfig::default()
    };
    let worker = StoreWorker::spawn(Box::new(store), &config).expect("spawn");
    let h = worker.handle();
    h.submit(StoreCommand::Barrier { token: 1 }).expect("1");
    h.submit(StoreCommand::Barrier { token: 2 }).expect("2");
    assert!(matches!(
        h.submit(StoreCommand::Barrier { token: 3 }),
        Err(SubmitError::Full(_))
    ));
    let got = wait_for(&h, 2);
    assert_eq!(got.len(), 2);
    h.submit(StoreCommand::Barrier { token: 3 })
        .expect("room again");
    assert_eq!(worker.stats().refused_full.load(Ordering::Relaxed), 1);
    drop(worker);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// A store whose saves wait until the test opens the gate.
#[derive(Debug)]
struct Gated {
    inner: RedbStore,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl PlayerStore for Gated {
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        self.inner.load_player(player_id)
    }
    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
        drop(open);
        self.inner.save_players(records)
    }
}

impl crate::store::forward::Forward for Gated {
    type Inner = RedbStore;
    fn inner(&self) -> &RedbStore {
        &self.inner
    }
}
impl crate::store::forward::ForwardItems for Gated {}
impl crate::store::forward::ForwardTrades for Gated {}
impl crate::store::forward::ForwardLeases for Gated {}
impl crate::store::forward::ForwardParties for Gated {}
impl crate::store::forward::ForwardMail for Gated {}
impl crate::store::forward::ForwardCheck for Gated {}

#[test]
fn a_full_queue_refuses_and_has_room_again_once_the_worker_takes_commands() {
    let path = temp_path("queue");
    let store = Arc::new(Gated {
        inner: RedbStore::open(&path).expect("open"),
        open: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
    });
    let config = StoreConfig {
        queue_capacity: 2,
        max_batch: 1,
        ..StoreConfig::default()
    };
    let worker = StoreWorker::spawn(Box::new(store.clone()), &config).expect("spawn");
    let h = worker.handle();
    // The worker takes the save off the queue and waits at the gate.
    h.submit(save(1)).expect("save");
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker.stats().queue_depth() != 0 {
        assert!(Instant::now() < deadline, "the worker took the save");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.submit(StoreCommand::Barrier { token: 2 })
        .expect("queued 1 of 2");
    h.submit(StoreCommand::Barrier { token: 3 })
        .expect("queued 2 of 2");
    assert!(matches!(
        h.submit(StoreCommand::Barrier { token: 4 }),
        Err(SubmitError::Full(_))
    ));
    assert_eq!(worker.stats().refused_full.load(Ordering::Relaxed), 1);
    assert_eq!(worker.stats().queue_depth(), 2);
    *store.open.lock().expect("gate") = true;
    store.opened.notify_all();
    let got = wait_for(&h, 3);
    assert_eq!(got.len(), 3);
    assert!(matches!(got[2], StoreReply::Barrier { token: 3 }));
    h.submit(StoreCommand::Barrier { token: 4 })
        .expect("room again");
    assert_eq!(wait_for(&h, 1).len(), 1);
    drop(worker);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

fn save(p: u64) -> StoreCommand {
    let mut rec = PlayerRecord::new("w");
    rec.player_id = p;
    StoreCommand::SavePlayers {
        token: p,
        records: vec![rec],
    }
}

fn item_op(item: u128, from: Owner, to: Owner) -> StoreCommand {
    StoreCommand::ItemOp {
        token: 0,
        op: ItemOp {
            op_id: item,
            item_id: item,
            kind: ItemOpKind::Transfer { from, to },
        },
    }
}

fn load(p: u64) -> StoreCommand {
    StoreCommand::LoadPlayer {
        token: 0,
        player_id: p,
    }
}

fn waves(cmds: &[StoreCommand]) -> Vec<usize> {
    plan_waves(&cmds.iter().collect::<Vec<_>>())
}

#[test]
fn independent_commands_share_a_wave_dependent_ones_keep_their_order() {
    let ground = Owner::Ground { instance: 5 };
    let cmds = [
        save(1),
        load(2),
        item_op(10, Owner::Player(3), ground),
        // Player 1 again: after its save.
        load(1),
        // Item 10 again: after its first operation; player 4 is new.
        item_op(10, ground, Owner::Player(4)),
        save(2),
        save(5),
    ];
    assert_eq!(waves(&cmds), vec![0, 0, 0, 1, 1, 1, 0]);
}

#[test]
fn trades_and_barriers_stand_between_everything() {
    let cmds = [
        save(1),
        load(1),
        StoreCommand::Barrier { token: 0 },
        save(2),
        StoreCommand::Trade {
            token: 0,
            manifest: TradeRecord {
                trade_id: 1,
                players: [1, 2],
                legs: Vec::new(),
                gold: [0, 0],
                state: super::super::TradeState::Open,
                settled: false,
                opened_at_ms: 0,
            },
        },
        load(3),
    ];
    assert_eq!(waves(&cmds), vec![0, 1, 2, 3, 4, 5]);
    let first = [StoreCommand::Barrier { token: 0 }, save(1), save(2)];
    assert_eq!(waves(&first), vec![0, 1, 1]);
}

#[test]
fn overlapped_waves_give_the_outcomes_of_submission_order() {
    let path = temp_path("overlap");
    let store = RedbStore::open(&path).expect("open");
    let replies = Arc::new(ReplyQueue {
        queue: BoundedQueue::new(64),
        in_flight: AtomicUsize::new(0),
    });
    let env = |cmd| Envelope {
        cmd,
        replies: replies.clone(),
        submitted: Instant::now(),
    };
    let mut rec = PlayerRecord::new("overlap");
    rec.epoch = 1;
    rec.seq = 1;
    let pid = rec.player_id;
    let create = |item: u128| StoreCommand::ItemOp {
        token: item as u64,
        op: ItemOp {
            op_id: item,
            item_id: item,
            kind: ItemOpKind::Create {
                owner: Owner::Player(pid),
                data: vec![1],
            },
        },
    };
    let mut batch = vec![
        env(StoreCommand::SavePlayers {
            token: 1,
            records: vec![rec.clone()],
        }),
        env(create(20)),
        env(StoreCommand::LoadItems {
            token: 2,
            owner: Owner::Player(pid),
        }),
        env(create(21)),
        env(StoreCommand::LoadPlayer {
            token: 3,
            player_id: pid,
        }),
    ];
    let stats = StoreStats::default();
    execute(&store, &mut batch, &stats, &Meters::new(), true);
    let mut got = Vec::new();
    while let Some(r) = replies.queue.pop() {
        got.push(r);
    }
    assert_eq!(got.len(), 5);
    // The load of the player's items saw the creation submitted before it, not the one
    // after it.
    let items = got.iter().find_map(|r| match r {
        StoreReply::Items {
            token: 2,
            result: Ok(items),
            ..
        } => Some(items.iter().map(|i| i.item_id).collect::<Vec<_>>()),
        _ => None,
    });
    assert_eq!(items, Some(vec![20]));
    let loaded = got.iter().any(
        |r| matches!(r, StoreReply::Loaded { token: 3, result: Ok(Some(r)), .. } if r.fence() == rec.fence()),
    );
    assert!(loaded, "{got:?}");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[test]
fn dirty_set_takes_due_players_only() {
    let t0 = Instant::now();
    let mut d = DirtySet::new();
    d.mark(1, t0);
    d.mark(2, t0 + Duration::from_secs(5));
    d.mark(1, t0 + Duration::from_secs(6));
    let mut out = Vec::new();
    d.take_due(
        t0 + Duration::from_secs(10),
        Duration::from_secs(10),
        &mut out,
    );
    assert_eq!(out, vec![1]);
    assert_eq!(d.len(), 1);
    out.clear();
    d.take_all(&mut out);
    assert_eq!(out, vec![2]);
    assert!(d.is_empty());
}
