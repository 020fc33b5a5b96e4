//! Party trade over real QUIC on 127.0.0.1, against the embedded store: two players form a
//! party, trade a potion each (with typed refusals on the way), the completing acceptance
//! is answered after the store's commit, and both inventories are right after a
//! reconnect and after a drain/restart on the same data directory; `store check` finds
//! every item owned once and no escrow left. And a drop the store could not make comes
//! back to the bag (`World::return_to_bag`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use common::bot::Bot;
use common::faulty::FaultyStore;
use common::{client_endpoint, temp_data_dir, TestServer, WAIT};
use zonehost::config::Config;
use zonehost::store::redb::RedbStore;
use zonehost::store::Owner;
use zonehost::store::{CheckStore, ItemStore};
use zonehost::StartOptions;
use zonehost_protocol::message::{
    Event, InventoryEvent, InventoryView, PartyEvent, Request, RequestError, Response,
    TradeEndReason, TradeEvent,
};
use zonehost_protocol::token::player_id;

/// Waits until `bot` is told its trade ended for `reason`.
async fn trade_ended(bot: &mut Bot, reason: TradeEndReason) {
    wait_event(
        bot,
        "trade ended",
        |e| matches!(e, Event::Trade(TradeEvent::Ended { reason: r, .. }) if *r == reason),
    )
    .await;
}

/// `a` invites `b` (named `b_name`) into a party; waits until `b` is in `a`'s instance.
async fn form_party(a: &mut Bot, b: &mut Bot, b_name: &str) {
    done(
        a.request(Request::PartyInvite {
            player: b_name.into(),
        })
        .await,
        "invite",
    );
    wait_event(b, "invite", |e| {
        matches!(e, Event::Party(PartyEvent::Invited { .. }))
    })
    .await;
    done(b.request(Request::PartyAccept).await, "accept");
    let a_instance = a.instance;
    wait_event(
        b,
        "move into the leader's instance",
        |e| matches!(e, Event::ZoneEntered { instance, .. } if *instance == a_instance),
    )
    .await;
}

/// Pumps `bot` until an event matching `want` arrives (taken), within [`WAIT`].
async fn wait_event(bot: &mut Bot, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(i) = bot.events.iter().position(&want) {
            return bot.events.remove(i);
        }
        assert!(Instant::now() < deadline, "{}: no {what}", bot.name);
        bot.pump().await.expect("connection alive");
    }
}

fn bag(v: &InventoryView) -> Vec<u128> {
    let mut ids: Vec<u128> = v.bag.iter().map(|i| i.id).collect();
    ids.sort_unstable();
    ids
}

fn done(r: Result<Response, RequestError>, what: &str) {
    assert_eq!(r, Ok(Response::Done), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_members_trade_items_exactly_once_across_reconnect_and_restart() {
    let dir = temp_data_dir("trade");
    let server = TestServer::start_in(dir.clone(), |c| c.drain_timeout_ms = 5_000).await;
    let endpoint = client_endpoint(&server);
    let (alice, bob) = ("alice", "bob");
    let mut a = Bot::connect(&endpoint, server.addr(), &server.token(alice), alice)
        .await
        .expect("alice joins");
    let mut b = Bot::connect(&endpoint, server.addr(), &server.token(bob), bob)
        .await
        .expect("bob joins");

    // Not in a party yet: refused.
    let b_entity_alone = b.entity;
    assert_eq!(
        a.request(Request::TradeOpen {
            with: b_entity_alone
        })
        .await,
        Err(RequestError::NoSuchTarget),
        "bob is in another instance"
    );

    // Party: bob joins alice's instance.
    form_party(&mut a, &mut b, bob).await;

    let (ia, ib) = (a.inventory().await, b.inventory().await);
    let (pa, pb) = (ia.bag[0].id, ib.bag[0].id);
    let sword = ia.equipment[0].1.id;

    // Open, with typed refusals on the way.
    done(
        a.request(Request::TradeOpen { with: b.entity }).await,
        "open",
    );
    assert_eq!(
        b.request(Request::TradeOpen { with: a.entity }).await,
        Err(RequestError::TradeBusy)
    );
    assert_eq!(
        a.request(Request::TradeGold { gold: ia.gold + 1 }).await,
        Err(RequestError::NotEnoughGold)
    );
    assert_eq!(
        a.request(Request::TradeOffer { item: sword }).await,
        Err(RequestError::ItemEquipped)
    );
    done(
        a.request(Request::TradeOffer { item: pa }).await,
        "a offers",
    );
    done(
        b.request(Request::TradeOffer { item: pb }).await,
        "b offers",
    );
    done(a.request(Request::TradeAccept).await, "a accepts");
    let seen = wait_event(
        &mut b,
        "alice's acceptance",
        |e| matches!(e, Event::Trade(TradeEvent::Updated { theirs, .. }) if theirs.accepted),
    )
    .await;
    let Event::Trade(TradeEvent::Updated { theirs, mine, .. }) = seen else {
        unreachable!("matched above");
    };
    assert_eq!((theirs.items, mine.items), (vec![pa], vec![pb]));
    // The completing acceptance is answered after the store committed the trade.
    done(b.request(Request::TradeAccept).await, "b accepts");
    for bot in [&mut a, &mut b] {
        trade_ended(bot, TradeEndReason::Completed).await;
        wait_event(bot, "Traded", |e| {
            matches!(e, Event::Inventory(InventoryEvent::Traded { .. }))
        })
        .await;
    }
    let want_a: Vec<u128> = {
        let mut v: Vec<u128> = bag(&ia).into_iter().filter(|i| *i != pa).collect();
        v.push(pb);
        v.sort_unstable();
        v
    };
    let want_b: Vec<u128> = {
        let mut v: Vec<u128> = bag(&ib).into_iter().filter(|i| *i != pb).collect();
        v.push(pa);
        v.sort_unstable();
        v
    };
    assert_eq!(bag(&a.inventory().await), want_a);
    assert_eq!(bag(&b.inventory().await), want_b);
    // Nothing is traded twice: the items are no longer where they were.
    assert_eq!(
        a.request(Request::Drop { item: pa }).await,
        Err(RequestError::NoSuchItem)
    );

    // Reconnect (same server): the inventories come back from the store.
    let _ = a.client.close().await;
    let _ = b.client.close().await;
    let mut a = Bot::connect_again(&endpoint, server.addr(), || server.token(alice), alice).await;
    let mut b = Bot::connect_again(&endpoint, server.addr(), || server.token(bob), bob).await;
    assert_eq!(bag(&a.inventory().await), want_a);
    assert_eq!(bag(&b.inventory().await), want_b);
    let _ = a.client.close().await;
    let _ = b.client.close().await;

    // Drain and restart on the same data directory.
    let dir = server.stop_keeping_data().await;
    let server = TestServer::start_in(dir.clone(), |c| c.drain_timeout_ms = 5_000).await;
    let mut a = Bot::connect_again(&endpoint, server.addr(), || server.token(alice), alice).await;
    let mut b = Bot::connect_again(&endpoint, server.addr(), || server.token(bob), bob).await;
    assert_eq!(bag(&a.inventory().await), want_a);
    assert_eq!(bag(&b.inventory().await), want_b);
    let _ = a.client.close().await;
    let _ = b.client.close().await;
    let dir = server.stop_keeping_data().await;

    let store = RedbStore::open(&dir.join("store.redb")).expect("store opens");
    let report = store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (
            report.trades,
            report.trades_unsettled,
            report.items_in_escrow
        ),
        (1, 0, 0),
        "{report}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// A server on a fresh data directory serving from `store`.
async fn serve_from(dir: &std::path::Path, store: Arc<FaultyStore>) -> TestServer {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        metrics_listen: None,
        drain_timeout_ms: 5_000,
        ..Config::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = zonehost::start_with(
        config,
        async move {
            let _ = rx.await;
        },
        StartOptions { store: Some(store) },
    )
    .await
    .expect("server starts");
    TestServer {
        server,
        shutdown: Some(tx),
        data_dir: dir.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_the_store_fails_gives_every_offer_back() {
    let dir = temp_data_dir("trade-fail");
    let store = Arc::new(FaultyStore {
        fail_drops: true,
        fail_trades: true,
        ..FaultyStore::new(RedbStore::open(&dir.join("store.redb")).expect("store opens"))
    });
    let server = serve_from(&dir, store.clone()).await;
    let endpoint = client_endpoint(&server);
    let (alice, bob) = ("dave", "erin");
    let mut a = Bot::connect(&endpoint, server.addr(), &server.token(alice), alice)
        .await
        .expect("joins");
    let mut b = Bot::connect(&endpoint, server.addr(), &server.token(bob), bob)
        .await
        .expect("joins");
    form_party(&mut a, &mut b, bob).await;
    let (ia, ib) = (a.inventory().await, b.inventory().await);
    done(
        a.request(Request::TradeOpen { with: b.entity }).await,
        "open",
    );
    done(
        a.request(Request::TradeOffer { item: ia.bag[0].id }).await,
        "a offers",
    );
    done(
        b.request(Request::TradeOffer { item: ib.bag[1].id }).await,
        "b offers",
    );
    done(a.request(Request::TradeAccept).await, "a accepts");
    wait_event(
        &mut b,
        "alice's acceptance",
        |e| matches!(e, Event::Trade(TradeEvent::Updated { theirs, .. }) if theirs.accepted),
    )
    .await;
    // The store fails the trade (three attempts): the acceptance is answered Internal and
    // both sides get their own offer back.
    assert_eq!(
        b.request(Request::TradeAccept).await,
        Err(RequestError::Internal)
    );
    for bot in [&mut a, &mut b] {
        trade_ended(bot, TradeEndReason::Failed).await;
    }
    assert_eq!(bag(&a.inventory().await), bag(&ia));
    assert_eq!(bag(&b.inventory().await), bag(&ib));
    let _ = a.client.close().await;
    let _ = b.client.close().await;
    server.stop_keeping_data().await;
    for (name, v) in [(alice, &ia), (bob, &ib)] {
        let mut owned: Vec<u128> = store
            .items_of(Owner::Player(player_id(name)))
            .expect("items")
            .iter()
            .map(|r| r.item_id)
            .collect();
        owned.sort_unstable();
        let mut all: Vec<u128> = v
            .bag
            .iter()
            .chain(v.equipment.iter().map(|(_, i)| i))
            .map(|i| i.id)
            .collect();
        all.sort_unstable();
        assert_eq!(
            owned, all,
            "{name}: the store still gives each its own items"
        );
    }
    let report = store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_the_store_could_not_make_returns_to_the_bag() {
    let dir = temp_data_dir("trade-return");
    let store = Arc::new(FaultyStore {
        fail_drops: true,
        fail_trades: false,
        ..FaultyStore::new(RedbStore::open(&dir.join("store.redb")).expect("store opens"))
    });
    let test_server = serve_from(&dir, store.clone()).await;
    let endpoint = client_endpoint(&test_server);
    let name = "carol";
    let mut c = Bot::connect(
        &endpoint,
        test_server.addr(),
        &test_server.token(name),
        name,
    )
    .await
    .expect("carol joins");
    let before = c.inventory().await;
    let potion = before.bag[0].id;
    assert_eq!(
        c.request(Request::Drop { item: potion }).await,
        Err(RequestError::Internal),
        "the store failed the drop"
    );
    let back = wait_event(&mut c, "Returned", |e| {
        matches!(e, Event::Inventory(InventoryEvent::Returned { .. }))
    })
    .await;
    assert!(
        matches!(&back, Event::Inventory(InventoryEvent::Returned { item }) if item.id == potion),
        "{back:?}"
    );
    assert_eq!(bag(&c.inventory().await), bag(&before));
    // Still usable as a bag item: dropping it again is refused by the store again, and it
    // comes back again (not lost, not duplicated on the ground).
    assert_eq!(
        c.request(Request::Drop { item: potion }).await,
        Err(RequestError::Internal)
    );
    wait_event(&mut c, "Returned again", |e| {
        matches!(e, Event::Inventory(InventoryEvent::Returned { .. }))
    })
    .await;
    assert_eq!(bag(&c.inventory().await), bag(&before));
    let _ = c.client.close().await;
    test_server.stop_keeping_data().await;
    let owner = store.item(potion).expect("read").and_then(|i| i.owner);
    assert_eq!(owner, Some(Owner::Player(player_id(name))));
    let report = store.check().expect("check");
    assert!(report.is_clean(), "{report}");
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}
