//! Persistence over real QUIC on 127.0.0.1, against the embedded store:
//! - item replies (drop, pick-up) are sent only once the store committed the item
//!   operation, and the ownership they report survives a restart on the same data dir;
//! - position and inventory survive a disconnect/reconnect and a drain/restart;
//! - a corrupt record or an unknown record version refuses only its own player (Reject
//!   `Internal`, logged with the player id) while others play; a v1 record is migrated;
//! - the operator CLI: `zonehost store check` exit codes, `zonehost player show`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::bot::{Bot, JoinError};
use common::faulty::FaultyStore;
use common::{client_endpoint, temp_data_dir, TestServer, WAIT};
use zonehost::store::record::{self, RECORD_VERSION};
use zonehost::store::redb::RedbStore;
use zonehost::store::{CheckStore, ItemStore, PlayerStore};
use zonehost::store::{Fence, ItemOp, ItemOpKind, ItemOutcome, Owner, PlayerRecord, Store};
use zonehost_protocol::message::{RejectCode, Request, Response};
use zonehost_protocol::token::player_id;

// ---------------------------------------------------------------------------------------
// Helpers

/// Log lines of every server in this test binary (installed once, before any server).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_with(needles: &[&str]) -> Vec<String> {
    let text =
        String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Polls `cond` until it holds; panics after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the `zonehost` binary with `args`; returns (exit code, stdout, stderr).
fn zonehost_cli(args: &[&str], data_dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zonehost"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("ZONEHOST_CONFIG")
        .env_remove("ZONEHOST_DATA_DIR")
        .output()
        .expect("run the zonehost binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn owner_of(store: &dyn Store, item: u128) -> Option<Owner> {
    store
        .item(item)
        .expect("read the item row")
        .and_then(|r| r.owner)
}

fn bag_ids(inv: &zonehost_protocol::message::InventoryView) -> BTreeSet<u128> {
    inv.bag.iter().map(|i| i.id).collect()
}

fn is_ground_of(owner: Option<Owner>, instance: u32) -> bool {
    // The store names a ground `(epoch << 32) | instance`.
    matches!(owner, Some(Owner::Ground { instance: g }) if g as u32 == instance)
}

// ---------------------------------------------------------------------------------------
// (a) item replies after the commit; ownership survives a restart

#[tokio::test]
async fn item_replies_follow_the_commit_and_ownership_survives_a_restart() {
    logs();
    let dir = temp_data_dir("persist-items");
    let server = TestServer::start_in(dir.clone(), |c| c.drain_timeout_ms = 5_000).await;
    let store = server.server.store.clone();
    let endpoint = client_endpoint(&server);
    let name = "persist-alice";
    let pid = player_id(name);
    let mut bot = Bot::connect(&endpoint, server.addr(), &server.token(name), name)
        .await
        .expect("welcome");
    let inv = bot.inventory().await;
    let potions = bag_ids(&inv);
    assert_eq!(potions.len(), 2, "starter kit: two potions in the bag");
    // The running server holds the embedded file: the check cannot run, and says so with
    // its own exit code (not 1, which means "anomalies found").
    let (code, out, err) = zonehost_cli(&["store", "check"], &dir);
    assert_eq!(code, Some(2), "store check on a store in use: {out}{err}");
    assert!(err.contains("opening the store"), "{err}");
    assert_eq!(inv.equipment.len(), 1, "starter kit: a sword worn");
    let sword = inv.equipment[0].1.id;
    // The starter kit is created in the store right after Welcome.
    eventually("the starter kit in the store", || {
        store
            .items_of(Owner::Player(pid))
            .map(|items| items.len() == 3)
            .unwrap_or(false)
    })
    .await;

    for round in 0..4 {
        for &potion in &potions {
            let ground = bot.drop_item(potion).await;
            // The reply is sent only after the commit: the row already says so.
            let after_drop = owner_of(store.as_ref(), potion);
            assert!(
                is_ground_of(after_drop, bot.instance),
                "round {round}: Done for a drop while the store says {after_drop:?}"
            );
            assert_eq!(
                bot.request(Request::PickUp { ground }).await,
                Ok(Response::Done),
                "round {round}: pick-up"
            );
            assert_eq!(
                owner_of(store.as_ref(), potion),
                Some(Owner::Player(pid)),
                "round {round}: Done for a pick-up before the commit"
            );
        }
    }
    // Equipment changes are checkpointed before the reply, too.
    let weapon_slot = inv.equipment[0].0;
    let worn = |store: &dyn Store| {
        let record = store.load_player(pid).expect("load").expect("record");
        let state = zonehost::sim::persist::decode_state(pid, &record.state).expect("state");
        let in_bag = state.inventory.bag.iter().any(|i| i.id.0 == sword);
        (state.inventory.equipment.weapon().map(|i| i.id.0), in_bag)
    };
    assert_eq!(
        bot.request(Request::Unequip { slot: weapon_slot }).await,
        Ok(Response::Done)
    );
    assert_eq!(
        worn(store.as_ref()),
        (None, true),
        "Done for an unequip before the checkpoint"
    );
    assert_eq!(
        bot.request(Request::Equip { item: sword }).await,
        Ok(Response::Done)
    );
    assert_eq!(
        worn(store.as_ref()),
        (Some(sword), false),
        "Done for an equip before the checkpoint"
    );

    // Leave one potion on the ground and log out: it is swept (destroyed) with the
    // instance, the other stays in the bag.
    let (kept, dropped) = {
        let mut it = potions.iter().copied();
        (it.next().expect("potion"), it.next().expect("potion"))
    };
    bot.drop_item(dropped).await;
    bot.client.close().await.expect("bye");
    drop(store);
    let dir = server.stop_keeping_data().await;

    // Same data dir, new process state: ownership is what the replies said.
    let server = TestServer::start_in(dir.clone(), |c| c.drain_timeout_ms = 5_000).await;
    let store = server.server.store.clone();
    assert_eq!(owner_of(store.as_ref(), kept), Some(Owner::Player(pid)));
    assert_eq!(owner_of(store.as_ref(), sword), Some(Owner::Player(pid)));
    assert_eq!(
        store.item(dropped).expect("read").map(|r| r.owner),
        Some(None),
        "the ground item was swept (destroyed) with its instance"
    );
    let mut bot = Bot::connect(
        &client_endpoint(&server),
        server.addr(),
        &server.token(name),
        name,
    )
    .await
    .expect("welcome after restart");
    let inv = bot.inventory().await;
    assert_eq!(bag_ids(&inv), BTreeSet::from([kept]));
    assert_eq!(
        inv.equipment.iter().map(|(_, i)| i.id).collect::<Vec<_>>(),
        vec![sword]
    );
    bot.client.close().await.expect("bye");
    drop(store);
    let dir = server.stop_keeping_data().await;

    // (d, healthy) and (e) on the store the server left.
    let (code, out, err) = zonehost_cli(&["store", "check"], &dir);
    assert_eq!(code, Some(0), "store check on a healthy store: {out}{err}");
    assert!(
        out.contains("OK: every item is owned exactly once"),
        "{out}"
    );
    let (code, out, err) = zonehost_cli(&["player", "show", name], &dir);
    assert_eq!(code, Some(0), "player show: {err}");
    assert!(
        out.contains(&format!("player \"{name}\" (id {pid})")),
        "{out}"
    );
    assert!(
        out.contains(&format!("record layout  v{RECORD_VERSION}")),
        "{out}"
    );
    assert!(out.contains("zone           1"), "{out}");
    assert!(out.contains("position       ("), "{out}");
    assert!(out.contains("items          2"), "{out}");
    assert!(out.contains(&format!("{kept:032x}")), "{out}");
    assert!(out.contains(&format!("{sword:032x}")), "{out}");
    let (code, out, _) = zonehost_cli(&["player", "show", "persist-nobody"], &dir);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("no saved record") && out.contains("items          0"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// (b) position and inventory across a reconnect and across a drain

#[tokio::test]
async fn position_and_inventory_survive_reconnect_and_drain() {
    logs();
    let dir = temp_data_dir("persist-drain");
    let server = TestServer::start_in(dir.clone(), |c| c.drain_timeout_ms = 5_000).await;
    let endpoint = client_endpoint(&server);
    let (bob, carol) = ("persist-bob", "persist-carol");
    let mut b = Bot::connect(&endpoint, server.addr(), &server.token(bob), bob)
        .await
        .expect("welcome");
    let start = b.position().await;
    let p1 = b.walk(40, 1000, 0).await;
    // (Exact distances are not the point here: inputs that bunch up on a loaded machine
    // may be dropped by the server's input budget.)
    assert!(
        p1.0 > start.0 && p1.1 == start.1,
        "walked east: {start:?} -> {p1:?}"
    );
    let inv = b.inventory().await;
    let potions: Vec<u128> = bag_ids(&inv).into_iter().collect();
    let store = server.server.store.clone();
    b.drop_item(potions[0]).await;
    b.client.close().await.expect("bye");

    // Reconnect: same place, same bag (the dropped potion went with the instance).
    let mut b = Bot::connect_again(&endpoint, server.addr(), || server.token(bob), bob).await;
    assert_eq!(b.position().await, p1, "position after a reconnect");
    assert_eq!(bag_ids(&b.inventory().await), BTreeSet::from([potions[1]]));
    eventually(
        "the ground sweep of the left instance",
        || matches!(store.item(potions[0]), Ok(Some(r)) if r.owner.is_none()),
    )
    .await;

    // Move again, both players, and drain while they are connected.
    let p2 = b.walk(30, 0, -1000).await;
    assert!(
        p2.0 == p1.0 && p2.1 < p1.1,
        "walked north: {p1:?} -> {p2:?}"
    );
    let mut c = Bot::connect(&endpoint, server.addr(), &server.token(carol), carol)
        .await
        .expect("welcome");
    let c0 = c.position().await;
    let c1 = c.walk(25, -1000, 1000).await;
    assert_ne!(c1, c0);
    let carol_bag = bag_ids(&c.inventory().await);
    drop(store);
    let dir = server.stop_keeping_data().await;
    drop((b, c));

    // Nothing lost across the drain: the records say so, and so does the next login.
    {
        let store = RedbStore::open(&dir.join("store.redb")).expect("open the store");
        for (name, pos) in [(bob, p2), (carol, c1)] {
            let r = store
                .load_player(player_id(name))
                .expect("load")
                .expect("a record");
            assert_eq!(
                (r.x_mm, r.y_mm),
                pos,
                "{name}: stored position after the drain"
            );
        }
        assert!(store.check().expect("check").is_clean());
    }
    let server = TestServer::start_in(dir, |c| c.drain_timeout_ms = 5_000).await;
    let endpoint = client_endpoint(&server);
    let mut b = Bot::connect(&endpoint, server.addr(), &server.token(bob), bob)
        .await
        .expect("welcome after restart");
    let mut c = Bot::connect(&endpoint, server.addr(), &server.token(carol), carol)
        .await
        .expect("welcome after restart");
    assert_eq!(b.position().await, p2, "bob after the restart");
    assert_eq!(c.position().await, c1, "carol after the restart");
    assert_eq!(bag_ids(&b.inventory().await), BTreeSet::from([potions[1]]));
    assert_eq!(bag_ids(&c.inventory().await), carol_bag);
    b.client.close().await.expect("bye");
    c.client.close().await.expect("bye");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// (c) bad data refuses one player; an old layout is migrated

#[tokio::test]
async fn bad_records_refuse_only_their_player_and_old_records_are_migrated() {
    logs();
    let dir = temp_data_dir("persist-bad");
    let (corrupt, future, elder, healthy) = (
        "persist-corrupt",
        "persist-future",
        "persist-elder",
        "persist-healthy",
    );
    {
        let store = RedbStore::open(&dir.join("store.redb")).expect("create the store");
        let fence = Fence { epoch: 1, seq: 1 };
        store
            .put_raw_player(
                player_id(corrupt),
                fence,
                b"ZHPR\x02\x00 this is not a record",
            )
            .expect("plant a corrupt record");
        let mut r = PlayerRecord::new(future);
        r.epoch = 1;
        r.seq = 1;
        let mut bytes = record::encode(&r).expect("encode");
        bytes[4..6].copy_from_slice(&99u16.to_le_bytes());
        assert_eq!(record::peek_version(&bytes), Some(99));
        store
            .put_raw_player(player_id(future), fence, &bytes)
            .expect("plant a record of an unknown version");
        let mut old = PlayerRecord::new(elder);
        old.epoch = 1;
        old.seq = 1;
        old.x_mm = 23_000;
        old.y_mm = 21_500;
        old.gold = 77;
        store
            .put_raw_player(
                player_id(elder),
                fence,
                &record::encode_v1(&old).expect("encode v1"),
            )
            .expect("plant a v1 record");
    }
    let server = TestServer::start_in(dir.clone(), |c| c.drain_timeout_ms = 5_000).await;
    let endpoint = client_endpoint(&server);

    for bad in [corrupt, future] {
        match Bot::connect(&endpoint, server.addr(), &server.token(bad), bad).await {
            Err(JoinError::Rejected(RejectCode::Internal, reason)) => {
                assert!(reason.contains("could not be loaded"), "{bad}: {reason}")
            }
            other => panic!("{bad}: expected Reject(Internal), got {other:?}"),
        }
        let id = format!("player_id={}", player_id(bad));
        let lines = log_lines_with(&["ERROR", "could not be loaded", &id]);
        assert!(!lines.is_empty(), "{bad}: no error log line naming {id}");
        assert!(lines[0].contains("corrupt record"), "{}", lines[0]);
    }
    assert!(log_lines_with(&["unknown record version 99"])
        .iter()
        .any(|l| l.contains(&format!("player_id={}", player_id(future)))));

    // Everyone else plays normally, on the same server, at the same time.
    let mut y = Bot::connect(&endpoint, server.addr(), &server.token(healthy), healthy)
        .await
        .expect("a healthy player gets in");
    let potion = *bag_ids(&y.inventory().await).first().expect("a potion");
    let ground = y.drop_item(potion).await;
    assert_eq!(
        y.request(Request::PickUp { ground }).await,
        Ok(Response::Done)
    );
    let y0 = y.position().await;
    let y1 = y.walk(10, 1000, 0).await;
    assert!(y1.0 > y0.0 && y1.1 == y0.1, "{y0:?} -> {y1:?}");

    // The v1 record loads (migrated): its position and gold, level 1.
    let mut w = Bot::connect(&endpoint, server.addr(), &server.token(elder), elder)
        .await
        .expect("a v1 record loads");
    assert_eq!(w.position().await, (23_000, 21_500));
    let inv = w.inventory().await;
    assert_eq!((inv.gold, inv.level), (77, 1));
    w.walk(5, 0, 1000).await;
    // The bad records are still refused (nothing was overwritten by the attempts).
    assert!(matches!(
        Bot::connect(&endpoint, server.addr(), &server.token(corrupt), corrupt).await,
        Err(JoinError::Rejected(RejectCode::Internal, _))
    ));
    y.client.close().await.expect("bye");
    w.client.close().await.expect("bye");
    let dir = server.stop_keeping_data().await;

    let (code, out, _) = zonehost_cli(&["player", "show", corrupt], &dir);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("UNREADABLE") && out.contains("checksum mismatch"),
        "{out}"
    );
    let store = RedbStore::open(&dir.join("store.redb")).expect("open the store");
    let migrated = store
        .load_player(player_id(elder))
        .expect("load")
        .expect("record");
    assert_eq!(
        migrated.schema_version,
        u32::from(RECORD_VERSION),
        "the next checkpoint writes the current layout"
    );
    assert_eq!((migrated.gold, migrated.level), (77, 1));
    assert!(migrated.fence() > Fence { epoch: 1, seq: 1 });
    let report = store.check().expect("check");
    assert_eq!(
        report
            .anomalies
            .iter()
            .filter(|a| matches!(a, zonehost::store::Anomaly::CorruptPlayer { .. }))
            .count(),
        2,
        "{report}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// (d) `zonehost store check` exit codes

fn create(item_id: u128, owner: Owner) -> ItemOp {
    ItemOp {
        op_id: item_id | (1 << 120),
        item_id,
        kind: ItemOpKind::Create {
            owner,
            data: vec![1, 2, 3],
        },
    }
}

#[test]
fn store_check_exits_1_on_an_item_owned_twice_or_a_dangling_owner() {
    let healthy = temp_data_dir("persist-check-ok");
    {
        let store = RedbStore::open(&healthy.join("store.redb")).expect("create");
        assert!(matches!(
            store.apply_item_op(&create(1, Owner::Player(7))),
            Ok(ItemOutcome::Created { .. })
        ));
        assert!(matches!(
            store.apply_item_op(&create(2, Owner::Ground { instance: 3 })),
            Ok(ItemOutcome::Created { .. })
        ));
        let mut r = PlayerRecord::new("persist-check");
        r.epoch = 1;
        r.seq = 1;
        store.save_players(&[r]).expect("save");
    }
    let (code, out, err) = zonehost_cli(&["store", "check"], &healthy);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("2 live (1 on players, 1 on the ground)"),
        "{out}"
    );

    let twice = temp_data_dir("persist-check-twice");
    {
        let store = RedbStore::open(&twice.join("store.redb")).expect("create");
        store
            .apply_item_op(&create(0xABC, Owner::Player(7)))
            .expect("create");
        store
            .insert_raw_index_entry(Owner::Player(8), 0xABC)
            .expect("plant a second owner");
    }
    let (code, out, err) = zonehost_cli(&["store", "check"], &twice);
    assert_eq!(code, Some(1), "an item owned twice: {out}{err}");
    assert!(out.contains("FAILED: 1 anomalies"), "{out}");
    assert!(
        out.contains(&format!(
            "item {:032x} owned by player:7 is also listed under player:8",
            0xABC
        )),
        "{out}"
    );

    let dangling = temp_data_dir("persist-check-dangling");
    {
        let store = RedbStore::open(&dangling.join("store.redb")).expect("create");
        store
            .insert_raw_index_entry(Owner::Player(9), 0xDEF)
            .expect("plant a dangling owner");
    }
    let (code, out, err) = zonehost_cli(&["store", "check"], &dangling);
    assert_eq!(code, Some(1), "a dangling owner: {out}{err}");
    assert!(
        out.contains(&format!("index of player:9 lists item {:032x}", 0xDEF)),
        "{out}"
    );
    for d in [healthy, twice, dangling] {
        let _ = std::fs::remove_dir_all(d);
    }
}

// ---------------------------------------------------------------------------------------
// A failed checkpoint is retried (the last one of a session has no later one to fall back
// on), and a drain waits for it: a sim worker stepped by hand over a store whose saves
// fail a few times.

#[derive(Debug, Default)]
struct NoLink;

impl zonehost::sim::Link for NoLink {
    fn send_datagram(&self, _data: bytes::Bytes) -> Result<(), zonehost::sim::LinkError> {
        Ok(())
    }
    fn close(&self, _code: u32, _reason: &[u8]) {}
}

#[test]
fn a_failed_final_checkpoint_is_retried_not_dropped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use zonehost::config::{Config, SecondLogin};
    use zonehost::session::{Contact, Registry, ResumeMinter};
    use zonehost::sim::{
        ConnShared, Control, Inbox, Join, Outgoing, PersistSettings, Worker, WorkerSettings,
    };
    use zonehost::store::writer::StoreWorker;

    let dir = temp_data_dir("persist-flaky");
    let flushed: Arc<AtomicBool>;
    let flaky = Arc::new(FaultyStore::new(
        RedbStore::open(&dir.join("store.redb")).expect("create"),
    ));
    let config = Config::default();
    let store_worker =
        StoreWorker::spawn(Box::new(flaky.clone()), &config.store).expect("store worker");
    let inbox = Arc::new(Inbox::new(64));
    let registry = Arc::new(Registry::new(SecondLogin::Refuse));
    let mut worker = Worker::new(
        WorkerSettings::from_config(
            0,
            &config,
            Arc::new(zonehost_game::Content::builtin().expect("content")),
            Arc::new(ResumeMinter::random().expect("randomness")),
            Arc::new(Mutex::new(zonehost_game::Parties::new())),
            7,
        ),
        inbox.clone(),
        Arc::new(zonehost::telemetry::Stats::new(1)),
        registry.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .with_store(store_worker.handle(), {
        let settings = PersistSettings::new(3, Duration::from_secs(10));
        flushed = settings.flushed.clone();
        settings
    });

    let name = "persist-flaky";
    let pid = player_id(name);
    let (tx, mut rx) = zonehost::sim::outbox(64);
    let link = Arc::new(NoLink);
    let shared = Arc::new(ConnShared::default());
    registry
        .claim(
            pid,
            1,
            Contact {
                name: name.into(),
                conn: link.clone(),
                shared: shared.clone(),
                outbox: tx.clone(),
            },
            &inbox,
        )
        .expect("claim");
    inbox.control(Control::Join(Box::new(Join {
        session: 1,
        player_id: pid,
        player_name: name.into(),
        conn: link,
        outbox: tx,
        shared,
    })));
    // Tick until the load has come back and the player is welcomed, then until the new
    // character's first checkpoint is stored.
    let tick_until = |worker: &mut Worker, what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            worker.tick();
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let welcomed = Arc::new(AtomicBool::new(false));
    {
        let deadline = Instant::now() + WAIT;
        while !welcomed.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "no Welcome");
            worker.tick();
            while let Ok(Outgoing::Frame(_)) = rx.try_recv() {
                welcomed.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let stored_seq = || {
        flaky
            .inner
            .load_player(pid)
            .ok()
            .flatten()
            .map_or(0, |r| r.seq)
    };
    tick_until(&mut worker, "the first checkpoint", &|| stored_seq() >= 1);
    let first = stored_seq();

    // The server drains while the disk hiccups twice: the session's last checkpoint must
    // still land, and the worker may report itself flushed only once it has.
    flaky.fail_saves.store(2, Ordering::SeqCst);
    inbox.control(Control::Drain);
    tick_until(
        &mut worker,
        "the drain to report the store flushed",
        &|| flushed.load(Ordering::Acquire),
    );
    assert!(
        stored_seq() > first,
        "flushed, but the final checkpoint is not stored (seq {} <= {first})",
        stored_seq()
    );
    assert_eq!(
        flaky.fail_saves.load(Ordering::SeqCst),
        0,
        "both failures were hit"
    );
    drop(worker);
    store_worker.stop();
    let _ = std::fs::remove_dir_all(dir);
}
