//! The schema (`deploy/scylla/schema.cql`) and `zonehost store migrate`.

use std::sync::Arc;

use ::scylla::errors::ExecutionError;

use super::config::ScyllaConfig;
use super::conn::err;
use super::conn::{classify, run_on, runtime, session, Message};
use crate::store::{DbFailure, StoreError};

/// The schema version `deploy/scylla/schema.cql` creates (2: the `trades` table; 3: the
/// cluster tables `servers`, `server_addresses`, `parties`, `party_of`, `party_invites`,
/// `mailbox`; every
/// statement is `IF NOT EXISTS`, so `store migrate` upgrades an older keyspace, and every
/// server of a cluster prepares statements on all of them at start).
pub const SCHEMA_VERSION: i32 = 3;

/// The schema, embedded for [`migrate`].
pub const SCHEMA_CQL: &str = include_str!("../../../deploy/scylla/schema.cql");

/// The statements of [`SCHEMA_CQL`] that `migrate` runs inside the keyspace (everything
/// but `CREATE KEYSPACE` and `USE`), comments stripped.
pub fn schema_statements() -> Vec<String> {
    let text: String = SCHEMA_CQL
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .filter(|s| {
            let upper = s.to_ascii_uppercase();
            !upper.starts_with("CREATE KEYSPACE") && !upper.starts_with("USE ")
        })
        .collect()
}

/// Whether `e` is a server's refusal of the `tablets` keyspace option (a server without
/// tablets: Apache Cassandra answers a syntax error "Unknown property 'tablets'", older
/// ScyllaDB a configuration error naming it).
pub(super) fn refuses_tablets_option(e: &ExecutionError) -> bool {
    matches!(classify(e), DbFailure::Refused)
        && e.to_string().to_ascii_lowercase().contains("tablets")
}

/// Creates the keyspace (replication from the config) and every table of the schema,
/// records the schema version and waits for schema agreement. Idempotent.
pub fn migrate(config: &ScyllaConfig) -> Result<String, StoreError> {
    config.validate()?;
    let rt = runtime()?;
    let config = config.clone();
    let result = run_on(&rt, async move {
        let s = session(&config, None).await?;
        let ks = &config.keyspace;
        let replication = format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
            config.replication_factor
        );
        // ScyllaDB 6+ makes new keyspaces tablet-based, where LWT needs a recent release:
        // ask for vnodes. Servers that have no tablets (Apache Cassandra, ScyllaDB before
        // 6.0) refuse the unknown option; they use vnodes anyway, so create it without.
        let keyspace_kind = match s
            .query_unpaged(
                format!("{replication} AND tablets = {{'enabled': false}}"),
                (),
            )
            .await
        {
            Ok(_) => "vnodes, tablets disabled",
            Err(e) if refuses_tablets_option(&e) => {
                s.query_unpaged(replication, ())
                    .await
                    .map_err(err("creating the keyspace"))?;
                "vnodes, the server has no tablets option"
            }
            Err(e) => return Err(err("creating the keyspace")(e)),
        };
        s.use_keyspace(ks.as_str(), false)
            .await
            .map_err(err("using the keyspace"))?;
        let statements = schema_statements();
        for cql in &statements {
            s.query_unpaged(cql.as_str(), ())
                .await
                .map_err(|e| StoreError::Scylla {
                    context: "applying the schema",
                    kind: classify(&e),
                    source: Arc::new(Message(format!("{cql}: {e}"))),
                })?;
        }
        s.query_unpaged(
            "INSERT INTO schema_meta (name, version) VALUES ('schema', ?)",
            (SCHEMA_VERSION,),
        )
        .await
        .map_err(err("recording the schema version"))?;
        s.await_schema_agreement()
            .await
            .map_err(err("awaiting schema agreement"))?;
        Ok(format!(
            "scylla keyspace {ks} ({keyspace_kind}) at {} at schema version {SCHEMA_VERSION} \
             ({} statements)",
            config.uri,
            statements.len()
        ))
    });
    rt.shutdown_background();
    result
}
