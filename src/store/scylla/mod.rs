//! The ScyllaDB backend (`scylla` driver 1.x, plain CQL without TLS).
//!
//! Schema: `deploy/scylla/schema.cql` (applied by [`migrate`]). Statements are prepared
//! once at [`ScyllaStore::connect`]; rows are typed with `SerializeRow`/`DeserializeRow`
//! derives, except LWT results whose columns vary (`[applied]` plus the current values),
//! which are read by column name.
//!
//! Execution profiles:
//! - **state**: LOCAL_QUORUM, `request_timeout_ms`, the default retry policy (reads and
//!   idempotent writes only);
//! - **lwt**: LOCAL_SERIAL Paxos phase, LOCAL_QUORUM commit, `lwt_timeout_ms`, *no* driver
//!   retries;
//! - **serial read**: LOCAL_SERIAL reads (linearizable: they also finish any Paxos round
//!   left in flight, so what they return is final), `lwt_timeout_ms`.
//!
//! Unknown outcomes: a conditional write that fails in a way that may have applied
//! (timeout, write timeout of type CAS, broken connection...) is never retried blindly. The
//! row is re-read at LOCAL_SERIAL: if it carries our change (`last_op == op_id`, fence equal
//! to ours, lease holder and epoch ours) the write applied; if the condition still holds it
//! did not, and retrying is safe; otherwise the refusal is reported. If the re-read fails
//! too the caller gets [`StoreError::UnknownOutcome`] and must retry later with the same op
//! id / fence.
//!
//! Parties: one row per party in `parties`, written only by LWTs conditional on its
//! `version` (compare-and-set, see [`Store::write_party`](crate::store::PartyStore::write_party)); the `party_of` index is written
//! for added members *before* that LWT and cleared (conditionally) for removed members
//! after it, and every read of it is checked against the party row, so a failure between
//! the two never makes a player a member of a party that does not list it. The invitation
//! index `party_invites` (invitee -> party, expiry) follows the same discipline: written
//! `USING TTL` before the party's LWT, cleared `IF party_id = ..` after it, read against
//! the party row and the expiry. Mail between
//! servers is one partition per server in `mailbox`, ordered by mail id, with a 5 minute
//! table TTL as a backstop for mail nobody deletes.
//!
//! Exactly-once items: `item_ops` records every outcome; a retry first reads it. If the
//! process died between the item LWT and the op-log write, the retry's LWT is refused and
//! the row's `last_op` shows it was ours.
//!
//! The store is synchronous (see the module docs of `store`): it owns a small tokio runtime
//! (one worker thread) where the driver runs; each call spawns its requests there (a
//! checkpoint batch runs up to `max_in_flight` LWTs concurrently) and waits for the result
//! on the calling thread, so it works from any thread, inside another runtime or not.

mod check;
mod config;
mod conn;
mod items;
mod leases;
mod mail;
mod parties;
mod players;
mod schema;
mod trades;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::session::Session;
use tokio::sync::Semaphore;

pub use config::ScyllaConfig;
pub use conn::{classify, may_have_applied};
pub use schema::{migrate, schema_statements, SCHEMA_CQL, SCHEMA_VERSION};

use super::{
    CheckStore, Fence, IntegrityReport, Invitation, ItemOp, ItemOutcome, ItemRecord, ItemStore,
    Lease, LeaseError, LeaseStore, Mail, MailStore, Owner, PartyRecord, PartyStore, PlayerRecord,
    PlayerStore, SaveOutcome, ServerLoad, StoreError, TradeRecord, TradeState, TradeStore,
};
use conn::{
    blob16, err, from_blob16, i64_of, id_from_cql, id_to_cql, msg, run_on, runtime, session, Inner,
    Profiles, LEASE_TTL_GRACE_SECS,
};
use items::{HasItems, ItemStatements};
use leases::{
    lease_result, HasLeases, LeaseStatements, ServerAddressCql, ServerPublish, ServerRowCql,
};
use mail::{MailCql, MailStatements};
use parties::{HasParties, PartyStatements};
use players::{HasPlayers, PlayerStatements};
use trades::{HasTrades, TradeStatements};

/// Every prepared statement, one struct per domain (prepared at [`ScyllaStore::connect`]).
#[derive(Debug)]
struct Statements {
    /// See [`players`].
    players: PlayerStatements,
    /// See [`items`].
    items: ItemStatements,
    /// See [`leases`].
    leases: LeaseStatements,
    /// See [`trades`].
    trades: TradeStatements,
    /// See [`parties`].
    parties: PartyStatements,
    /// See [`mail`].
    mail: MailStatements,
}

impl Statements {
    async fn prepare_all(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        Ok(Self {
            players: PlayerStatements::prepare(s, p).await?,
            items: ItemStatements::prepare(s, p).await?,
            leases: LeaseStatements::prepare(s, p).await?,
            trades: TradeStatements::prepare(s, p).await?,
            parties: PartyStatements::prepare(s, p).await?,
            mail: MailStatements::prepare(s, p).await?,
        })
    }
}

impl HasPlayers for Statements {
    fn players(&self) -> &PlayerStatements {
        &self.players
    }
}

impl HasItems for Statements {
    fn items(&self) -> &ItemStatements {
        &self.items
    }
}

impl HasLeases for Statements {
    fn leases(&self) -> &LeaseStatements {
        &self.leases
    }
}

impl HasTrades for Statements {
    fn trades(&self) -> &TradeStatements {
        &self.trades
    }
}

impl HasParties for Statements {
    fn parties(&self) -> &PartyStatements {
        &self.parties
    }
}

/// The shared state of a [`ScyllaStore`].
type Shared = Inner<Statements>;

/// The ScyllaDB store.
#[derive(Debug)]
pub struct ScyllaStore {
    inner: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ScyllaStore {
    /// Connects to the cluster and prepares every statement. The keyspace must exist
    /// ([`migrate`]).
    pub fn connect(config: &ScyllaConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let rt = runtime()?;
        let config = config.clone();
        let inner = run_on(&rt, async move {
            let session = session(&config, Some(&config.keyspace)).await?;
            let profiles = Profiles::new(&config);
            let st = Statements::prepare_all(&session, &profiles).await?;
            Ok(Inner {
                session,
                st,
                limit: Arc::new(Semaphore::new(config.max_in_flight)),
            })
        });
        match inner {
            Ok(inner) => Ok(Self {
                inner: Arc::new(inner),
                runtime: Some(rt),
            }),
            Err(e) => {
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    fn run<T, F>(&self, f: impl FnOnce(Arc<Shared>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let rt = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        run_on(rt, f(self.inner.clone()))
    }

    /// Operator and test tool: writes `bytes` as the record of `player_id` with `fence`,
    /// as is (no encoding, no fencing).
    pub fn put_raw_player(
        &self,
        player_id: u64,
        fence: Fence,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let bytes = bytes.to_vec();
        self.run(move |i| async move {
            let values = (
                id_to_cql(player_id),
                i64_of(fence.epoch, "epoch")?,
                i64_of(fence.seq, "seq")?,
                bytes,
            );
            i.session
                .execute_unpaged(&i.st.players.put_raw_player, values)
                .await
                .map_err(err("writing a raw record"))?;
            Ok(())
        })
    }

    /// Operator and test tool: adds an owner-index entry without touching the item row
    /// (plants the anomaly [`Store::check`](crate::store::CheckStore::check) must find).
    pub fn insert_raw_index_entry(&self, owner: Owner, item_id: u128) -> Result<(), StoreError> {
        self.run(move |i| async move {
            i.session
                .execute_unpaged(&i.st.items.index_insert, (owner.to_key(), blob16(item_id)))
                .await
                .map_err(err("writing an index entry"))?;
            Ok(())
        })
    }
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PlayerStore for ScyllaStore {
    fn load_player(&self, player_id: u64) -> Result<Option<PlayerRecord>, StoreError> {
        self.run(move |i| async move { i.load_player(player_id).await })
    }

    fn save_players(&self, records: &[PlayerRecord]) -> Result<Vec<SaveOutcome>, StoreError> {
        // Records of one player keep their batch order (each sees the one before it, as in
        // the embedded store's transaction); different players are saved concurrently.
        // Concurrent saves of one player made a stale record's outcome name whichever newer
        // fence won the race (found on Cassandra by `fencing_refuses_stale_checkpoints`).
        let records = records.to_vec();
        self.run(move |i| async move {
            let n = records.len();
            let mut by_player: BTreeMap<u64, Vec<(usize, PlayerRecord)>> = BTreeMap::new();
            for (index, r) in records.into_iter().enumerate() {
                by_player.entry(r.player_id).or_default().push((index, r));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, chain) in by_player {
                let me = i.clone();
                let permit = i.limit.clone().acquire_owned().await;
                tasks.spawn(async move {
                    let _permit = permit;
                    let mut out = Vec::with_capacity(chain.len());
                    for (index, r) in chain {
                        out.push((index, me.save_one(r).await));
                    }
                    out
                });
            }
            let mut outcomes: Vec<Option<SaveOutcome>> = vec![None; n];
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                for (index, result) in joined.map_err(err("checkpoint"))? {
                    match result {
                        Ok(o) => outcomes[index] = Some(o),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            outcomes
                .into_iter()
                .map(|o| o.ok_or_else(|| msg("checkpoint", "a save task vanished")))
                .collect()
        })
    }
}

impl ItemStore for ScyllaStore {
    fn apply_item_op(&self, op: &ItemOp) -> Result<ItemOutcome, StoreError> {
        let op = op.clone();
        self.run(move |i| async move { i.apply_item_op(op).await })
    }

    fn apply_item_ops(
        &self,
        ops: &[ItemOp],
    ) -> Result<Vec<Result<ItemOutcome, StoreError>>, StoreError> {
        // Ops on one item must keep their order; ops on different items run concurrently.
        let ops = ops.to_vec();
        self.run(move |i| async move {
            let mut by_item: BTreeMap<u128, Vec<(usize, ItemOp)>> = BTreeMap::new();
            let n = ops.len();
            for (index, op) in ops.into_iter().enumerate() {
                by_item.entry(op.item_id).or_default().push((index, op));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, chain) in by_item {
                let me = i.clone();
                let permit = i.limit.clone().acquire_owned().await;
                tasks.spawn(async move {
                    let _permit = permit;
                    let mut out = Vec::with_capacity(chain.len());
                    for (index, op) in chain {
                        out.push((index, me.apply_item_op(op).await));
                    }
                    out
                });
            }
            let mut results: Vec<Option<Result<ItemOutcome, StoreError>>> = vec![None; n];
            while let Some(joined) = tasks.join_next().await {
                for (index, r) in joined.map_err(err("item operations"))? {
                    results[index] = Some(r);
                }
            }
            Ok(results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(msg("item operations", "a task vanished"))))
                .collect())
        })
    }

    fn item(&self, item_id: u128) -> Result<Option<ItemRecord>, StoreError> {
        self.run(move |i| async move { i.read_item(item_id, false).await })
    }

    fn items_of(&self, owner: Owner) -> Result<Vec<ItemRecord>, StoreError> {
        self.run(move |i| i.items_of(owner))
    }

    fn dead_ground_items(&self, epoch: u64) -> Result<Vec<ItemRecord>, StoreError> {
        // Called only by a server that is alone on the keyspace (not in cluster mode; in a
        // cluster, grounds of other epochs may be other servers' live instances, and the
        // cluster sweeps those whose run lease expired instead: `sweep_dead_runs`). A full
        // scan of the owner index, once at start.
        Ok(self
            .ground_items()?
            .into_iter()
            .filter(
                |r| matches!(r.owner, Some(Owner::Ground { instance }) if instance >> 32 < epoch),
            )
            .collect())
    }

    fn ground_items(&self) -> Result<Vec<ItemRecord>, StoreError> {
        self.run(move |i| async move { i.ground_items().await })
    }
}

impl TradeStore for ScyllaStore {
    fn put_trade(&self, trade: &TradeRecord) -> Result<TradeRecord, StoreError> {
        let trade = trade.clone();
        self.run(move |i| async move { i.put_trade(trade).await })
    }

    fn decide_trade(
        &self,
        trade_id: u64,
        decision: TradeState,
    ) -> Result<Option<TradeState>, StoreError> {
        self.run(move |i| async move { i.decide_trade(trade_id, decision).await })
    }

    fn settle_trade(&self, trade_id: u64) -> Result<(), StoreError> {
        self.run(move |i| async move { i.settle_trade(trade_id).await })
    }

    fn trade(&self, trade_id: u64) -> Result<Option<TradeRecord>, StoreError> {
        self.run(move |i| async move { i.read_trade(trade_id, false).await })
    }

    fn unsettled_trades(&self) -> Result<Vec<TradeRecord>, StoreError> {
        self.run(move |i| async move {
            let mut out = Vec::new();
            for t in i.scan_trades().await? {
                match t {
                    Ok(t) if !t.settled => out.push(t),
                    Ok(_) => {}
                    Err((trade_id, reason)) => return Err(StoreError::Trade { trade_id, reason }),
                }
            }
            Ok(out)
        })
    }

    fn run_trade(&self, manifest: &TradeRecord) -> Result<super::TradeOutcome, StoreError> {
        // No multi-row transactions: one conditional write per step (see `trade`).
        super::trade::run(self, manifest)
    }
}

impl LeaseStore for ScyllaStore {
    fn acquire_lease(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let (resource, holder) = (resource.to_owned(), holder.to_owned());
        lease_result(
            self.run(
                move |i| async move { Ok(i.acquire_lease(resource, holder, ttl, now_ms).await) },
            ),
        )
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration, now_ms: u64) -> Result<Lease, LeaseError> {
        let lease = lease.clone();
        lease_result(self.run(move |i| async move { Ok(i.renew_lease(lease, ttl, now_ms).await) }))
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        let lease = lease.clone();
        lease_result(self.run(move |i| async move { Ok(i.release_lease(lease).await) }))
    }

    fn lease_of(&self, resource: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let resource = resource.to_owned();
        self.run(move |i| async move {
            let row = i.read_lease(&resource).await?;
            Ok(
                row.and_then(|r| match (r.holder, r.epoch, r.expires_at_ms) {
                    (Some(holder), Some(epoch), Some(until))
                        if u64::try_from(until).unwrap_or(0) > now_ms =>
                    {
                        Some(Lease {
                            resource,
                            holder,
                            epoch: id_from_cql(epoch),
                            expires_at_ms: u64::try_from(until).unwrap_or(0),
                        })
                    }
                    _ => None,
                }),
            )
        })
    }

    fn publish_load(
        &self,
        load: &ServerLoad,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let expires = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let cell_ttl = ttl.as_secs().saturating_add(1 + LEASE_TTL_GRACE_SECS);
        let row = ServerPublish {
            server_id: load.server_id.clone(),
            players: i32::try_from(load.players).unwrap_or(i32::MAX),
            busy_permille: i32::try_from(load.busy_permille).unwrap_or(i32::MAX),
            draining: load.draining,
            updated_at_ms: i64_of(load.updated_at_ms, "updated_at_ms")?,
            expires_at_ms: i64_of(expires, "expires_at_ms")?,
            ttl: i32::try_from(cell_ttl).map_err(|_| StoreError::Invalid {
                reason: format!("servers row ttl {cell_ttl} s out of range"),
            })?,
        };
        let address = load
            .address
            .map(|a| (row.ttl, a.to_string(), row.server_id.clone()));
        self.run(move |i| async move {
            i.execute(&i.st.leases.publish_load, row, "publishing a server's load")
                .await?;
            if let Some(values) = address {
                i.execute(
                    &i.st.leases.publish_address,
                    values,
                    "publishing a server's address",
                )
                .await?;
            }
            Ok(())
        })
    }

    fn server_loads(&self, now_ms: u64) -> Result<Vec<ServerLoad>, StoreError> {
        self.run(move |i| async move {
            let mut out = Vec::new();
            i.scan::<ServerRowCql>(&i.st.leases.scan_servers, (), "reading the servers' loads", |r| {
                if u64::try_from(r.expires_at_ms).is_ok_and(|e| e > now_ms) {
                    out.push(ServerLoad {
                        server_id: r.server_id,
                        players: u32::try_from(r.players).unwrap_or(0),
                        busy_permille: u32::try_from(r.busy_permille).unwrap_or(0),
                        draining: r.draining,
                        updated_at_ms: u64::try_from(r.updated_at_ms).unwrap_or(0),
                        address: None,
                    });
                }
                Ok(())
            })
            .await?;
            let mut addresses = std::collections::HashMap::new();
            i.scan::<ServerAddressCql>(
                &i.st.leases.scan_addresses,
                (),
                "reading the servers' addresses",
                |r| {
                    match r.address.as_deref().map(str::parse::<std::net::SocketAddr>) {
                        Some(Ok(a)) => {
                            addresses.insert(r.server_id, a);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(server = %r.server_id, error = %e, "server address does not parse; ignored")
                        }
                        None => {}
                    }
                    Ok(())
                },
            )
            .await?;
            for load in &mut out {
                load.address = addresses.get(&load.server_id).copied();
            }
            out.sort_by(|a, b| a.server_id.cmp(&b.server_id));
            Ok(out)
        })
    }
}

impl PartyStore for ScyllaStore {
    fn load_party(&self, party_id: u64) -> Result<Option<PartyRecord>, StoreError> {
        self.run(move |i| async move { i.read_party(party_id).await })
    }

    fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        self.run(move |i| async move { i.party_of(player_id).await })
    }

    fn write_party(&self, party: &PartyRecord, expected: Option<u64>) -> Result<bool, StoreError> {
        super::check_party_version(party, expected)?;
        let party = party.clone();
        self.run(move |i| async move { i.write_party(party, expected, None).await })
    }

    fn write_party_invite(
        &self,
        party: &PartyRecord,
        expected: Option<u64>,
        invitation: &Invitation,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        super::check_party_version(party, expected)?;
        super::check_invitation(party, invitation, now_ms)?;
        // The cell outlives the invitation (rounded up) by the leases' grace: readers
        // check `expires_at_ms`, the TTL only reclaims the row.
        let life_secs = invitation
            .expires_at_ms
            .saturating_sub(now_ms)
            .div_ceil(1000);
        let cell_ttl = life_secs.saturating_add(1 + LEASE_TTL_GRACE_SECS);
        let cell_ttl = i32::try_from(cell_ttl).map_err(|_| StoreError::Invalid {
            reason: format!("invitation ttl {cell_ttl} s out of range"),
        })?;
        let party = party.clone();
        let invitation = *invitation;
        self.run(move |i| async move {
            i.write_party(party, expected, Some((invitation, cell_ttl)))
                .await
        })
    }

    fn invitation_of(&self, player_id: u64, now_ms: u64) -> Result<Option<Invitation>, StoreError> {
        self.run(move |i| async move { i.invitation_of(player_id, now_ms).await })
    }
}

impl MailStore for ScyllaStore {
    fn post_mail(&self, server: &str, body: &[u8], now_ms: u64) -> Result<u128, StoreError> {
        let id = super::mail_id(now_ms);
        let (server, body) = (server.to_owned(), body.to_vec());
        self.run(move |i| async move {
            i.execute(
                &i.st.mail.post_mail,
                (server, blob16(id), body),
                "posting mail",
            )
            .await?;
            Ok(id)
        })
    }

    fn read_mail(&self, server: &str, max: usize) -> Result<Vec<Mail>, StoreError> {
        let server = server.to_owned();
        let limit = i32::try_from(max).unwrap_or(i32::MAX);
        self.run(move |i| async move {
            let result = i
                .execute(&i.st.mail.read_mail, (server, limit), "reading mail")
                .await?;
            let rows = result.into_rows_result().map_err(err("reading mail"))?;
            let mut out = Vec::new();
            for row in rows.rows::<MailCql>().map_err(err("reading mail"))? {
                let row = row.map_err(err("reading mail"))?;
                let Some(id) = row.mail_id.as_deref().and_then(from_blob16) else {
                    continue;
                };
                out.push(Mail {
                    id,
                    body: row.body.unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }

    fn delete_mail(&self, server: &str, ids: &[u128]) -> Result<(), StoreError> {
        let (server, ids) = (server.to_owned(), ids.to_vec());
        self.run(move |i| async move {
            for id in ids {
                i.execute(
                    &i.st.mail.delete_mail,
                    (server.clone(), blob16(id)),
                    "deleting mail",
                )
                .await?;
            }
            Ok(())
        })
    }
}

impl CheckStore for ScyllaStore {
    fn backend(&self) -> &'static str {
        "scylla"
    }

    fn check(&self) -> Result<IntegrityReport, StoreError> {
        self.run(move |i| async move { i.check().await })
    }
}
