//! The gate of the tests that need a CQL node (`SCYLLA_URI`): ScyllaDB in production,
//! the Apache Cassandra node of `scripts/cql-node.sh` in the test suite.

#![allow(unreachable_pub, dead_code)]

/// Set by `scripts/test.sh` when it started a CQL node: a gated test then fails instead of
/// skipping when `SCYLLA_URI` is missing, so CI never passes with a skipped CQL suite.
pub const REQUIRED_ENV: &str = "ZONEHOST_CQL_REQUIRED";

/// The CQL contact point for `what`, or `None` after a loud SKIPPED line when none is
/// configured (a developer without Java). Panics when [`REQUIRED_ENV`] is `1` and
/// `SCYLLA_URI` is unset.
pub fn cql_uri(what: &str) -> Option<String> {
    if let Ok(uri) = std::env::var("SCYLLA_URI") {
        return Some(uri);
    }
    assert!(
        std::env::var(REQUIRED_ENV).as_deref() != Ok("1"),
        "{what}: {REQUIRED_ENV}=1 but SCYLLA_URI is unset (scripts/test.sh starts a CQL node)"
    );
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIPPED: {what} (needs a CQL node: scripts/cql-node.sh start, then");
    eprintln!("         SCYLLA_URI=127.0.0.1:29042; scripts/test.sh does both)");
    eprintln!("==================================================================");
    println!("SKIPPED: {what} (set SCYLLA_URI=...)");
    None
}
