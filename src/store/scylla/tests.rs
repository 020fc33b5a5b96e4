//! Unit tests of the ScyllaDB backend that need no database.

use ::scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};
use ::scylla::statement::Consistency;

use super::conn::*;
use super::*;
use crate::store::ItemOpKind;

#[test]
fn schema_statements_skip_keyspace_and_use() {
    let st = schema_statements();
    assert!(st.iter().all(|s| s.starts_with("CREATE TABLE")), "{st:?}");
    for table in [
        "schema_meta",
        "players",
        "items",
        "items_by_owner",
        "item_ops",
        "leases",
        "servers",
        "server_addresses",
        "parties",
        "party_of",
        "party_invites",
        "mailbox",
        "trades",
    ] {
        assert!(
            st.iter()
                .any(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} ("))),
            "{table}"
        );
    }
    assert!(st.iter().all(|s| !s.contains("--")));
}

#[test]
fn timeouts_are_unknown_outcomes_and_refusals_are_not() {
    let timeout = ExecutionError::RequestTimeout(Duration::from_secs(5));
    assert!(may_have_applied(&timeout));
    let cas = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
        DbError::WriteTimeout {
            consistency: Consistency::LocalSerial,
            received: 1,
            required: 2,
            write_type: WriteType::Cas,
        },
        "timeout".into(),
    ));
    assert!(may_have_applied(&cas));
    let unavailable = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
        DbError::Unavailable {
            consistency: Consistency::LocalQuorum,
            required: 2,
            alive: 1,
        },
        "down".into(),
    ));
    assert!(!may_have_applied(&unavailable));
    let overloaded = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
        DbError::Overloaded,
        "busy".into(),
    ));
    assert!(!may_have_applied(&overloaded));
    assert!(!may_have_applied(&ExecutionError::EmptyPlan));
}

#[test]
fn config_validation_and_nodes() {
    let c = ScyllaConfig::with_uri("scylla://10.0.0.1:9042, 10.0.0.2:9042");
    assert_eq!(c.nodes(), vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
    c.validate().expect("valid");
    let bad = ScyllaConfig {
        keyspace: "drop table;".into(),
        ..c.clone()
    };
    assert!(bad.validate().is_err());
    assert!(ScyllaConfig::with_uri(" , ").validate().is_err());
}

#[test]
fn ids_round_trip_through_cql_types() {
    for v in [0u64, 1, i64::MAX as u64, u64::MAX] {
        assert_eq!(id_from_cql(id_to_cql(v)), v);
    }
    for v in [0u128, 1, u128::MAX] {
        assert_eq!(from_blob16(&blob16(v)), Some(v));
    }
    assert_eq!(from_blob16(&[1, 2, 3]), None);
    assert!(i64_of(u64::MAX, "x").is_err());
}

#[test]
fn judging_a_re_read_row() {
    let op = ItemOp {
        op_id: 5,
        item_id: 1,
        kind: ItemOpKind::Transfer {
            from: Owner::Player(1),
            to: Owner::Player(2),
        },
    };
    let row = |owner, last_op| ItemRecord {
        item_id: 1,
        owner: Some(owner),
        data: vec![],
        last_op,
    };
    // Our change is there.
    assert!(matches!(
        Shared::judge(&op, Some(&row(Owner::Player(2), 5))),
        Some(ItemOutcome::Transferred { .. })
    ));
    // Not applied, condition holds: safe to resend.
    assert_eq!(Shared::judge(&op, Some(&row(Owner::Player(1), 4))), None);
    // Someone else moved it.
    assert!(matches!(
        Shared::judge(&op, Some(&row(Owner::Player(3), 6))),
        Some(ItemOutcome::OwnerMismatch {
            actual: Some(Owner::Player(3)),
            ..
        })
    ));
    assert!(matches!(
        Shared::judge(&op, None),
        Some(ItemOutcome::OwnerMismatch { actual: None, .. })
    ));
}
