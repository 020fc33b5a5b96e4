//! Unit tests of the embedded backend.

use super::tables::*;
use super::*;
use crate::store::ItemOpKind;

fn temp_store(tag: &str) -> (RedbStore, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "zonehost-redb-unit-{tag}-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    let path = dir.join("store.redb");
    (RedbStore::open(&path).expect("open"), dir)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[test]
fn reopen_keeps_schema_version_and_refuses_newer_files() {
    let (store, dir) = temp_store("schema");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    let path = store.path().to_owned();
    {
        let txn = store.begin().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", SCHEMA_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    drop(store);
    match RedbStore::open(&path) {
        Err(StoreError::Open { reason, .. }) => assert!(reason.contains("newer"), "{reason}"),
        other => panic!("expected Open error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_corrupt_item_row_fails_only_its_own_op_in_a_batch() {
    let (store, dir) = temp_store("corrupt-item");
    {
        let txn = store.begin().expect("txn");
        txn.open_table(ITEMS)
            .expect("items")
            .insert(7u128, &[9u8, 9, 9][..])
            .expect("insert");
        txn.commit().expect("commit");
    }
    let ops = [
        ItemOp {
            op_id: 1,
            item_id: 7,
            kind: ItemOpKind::Destroy {
                from: Owner::Player(1),
            },
        },
        ItemOp {
            op_id: 2,
            item_id: 8,
            kind: ItemOpKind::Create {
                owner: Owner::Player(1),
                data: vec![],
            },
        },
    ];
    let results = store.apply_item_ops(&ops).expect("batch");
    assert!(matches!(
        results[0],
        Err(StoreError::CorruptItem { item_id: 7, .. })
    ));
    assert!(matches!(results[1], Ok(ItemOutcome::Created { .. })));
    let report = store.check().expect("check");
    assert!(report
        .anomalies
        .iter()
        .any(|a| matches!(a, Anomaly::CorruptItem { item_id: 7, .. })));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dead_grounds_are_those_of_earlier_epochs() {
    let (store, dir) = temp_store("dead-grounds");
    let old_ground = Owner::Ground {
        instance: (2 << 32) | 5,
    };
    let live_ground = Owner::Ground {
        instance: (3 << 32) | 1,
    };
    for (id, owner) in [
        (1u128, old_ground),
        (2, live_ground),
        (3, Owner::Player(2 << 32)),
        (4, old_ground),
    ] {
        let op = ItemOp {
            op_id: id | (1 << 100),
            item_id: id,
            kind: ItemOpKind::Create {
                owner,
                data: vec![],
            },
        };
        store.apply_item_op(&op).expect("create");
    }
    // Item 4 was picked up since: its old index entry is gone with the transfer.
    store
        .apply_item_op(&ItemOp {
            op_id: 99,
            item_id: 4,
            kind: ItemOpKind::Transfer {
                from: old_ground,
                to: Owner::Player(7),
            },
        })
        .expect("transfer");
    let dead: Vec<u128> = store
        .dead_ground_items(3)
        .expect("dead grounds")
        .iter()
        .map(|r| r.item_id)
        .collect();
    assert_eq!(dead, vec![1]);
    assert!(store.dead_ground_items(2).expect("none").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn owner_keys_round_trip() {
    for o in [Owner::Player(5), Owner::Ground { instance: 9 }] {
        let (k, id) = owner_key(o);
        assert_eq!(owner_from_key(k, id), Some(o));
    }
    assert_eq!(owner_from_key(0, 1), None);
}
