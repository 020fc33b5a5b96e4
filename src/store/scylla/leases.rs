//! Leases (`leases`) and the servers' published loads and addresses (`servers`,
//! `server_addresses`): rows, statements, acquire / renew / release.

use std::time::Duration;

use ::scylla::client::session::Session;
use ::scylla::statement::batch::Batch;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::{DeserializeRow, SerializeRow};

use super::conn::{
    err, i64_of, id_from_cql, may_have_applied, msg, prepare, prepare_lwt_batch, Inner, Kind, Lwt,
    Profiles, LEASE_TTL_GRACE_SECS, MAX_ROUNDS,
};
use crate::store::{Lease, LeaseError, StoreError};

#[derive(Debug, Clone, DeserializeRow)]
pub(super) struct LeaseRowCql {
    pub(super) holder: Option<String>,
    pub(super) epoch: Option<i64>,
    pub(super) expires_at_ms: Option<i64>,
}

#[derive(Debug, SerializeRow)]
pub(super) struct LeaseExtend {
    pub(super) ttl: i32,
    pub(super) expires_at_ms: i64,
    pub(super) holder: String,
    pub(super) resource: String,
    pub(super) if_holder: String,
    pub(super) if_epoch: i64,
    pub(super) now_ms: i64,
}

#[derive(Debug, SerializeRow)]
pub(super) struct LeaseRelease {
    pub(super) resource: String,
    pub(super) if_holder: String,
    pub(super) if_epoch: i64,
}

#[derive(Debug, SerializeRow, DeserializeRow)]
pub(super) struct ServerRowCql {
    pub(super) server_id: String,
    pub(super) players: i32,
    pub(super) busy_permille: i32,
    pub(super) draining: bool,
    pub(super) updated_at_ms: i64,
    pub(super) expires_at_ms: i64,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct ServerAddressCql {
    pub(super) server_id: String,
    pub(super) address: Option<String>,
}

#[derive(Debug, SerializeRow)]
pub(super) struct ServerPublish {
    pub(super) server_id: String,
    pub(super) players: i32,
    pub(super) busy_permille: i32,
    pub(super) draining: bool,
    pub(super) updated_at_ms: i64,
    pub(super) expires_at_ms: i64,
    pub(super) ttl: i32,
}

pub(super) fn lease_result<T>(
    r: Result<Result<T, LeaseError>, StoreError>,
) -> Result<T, LeaseError> {
    r.map_err(LeaseError::Store).and_then(|inner| inner)
}

/// The prepared statements of this domain (see [`HasLeases`]).
pub(super) struct LeaseStatements {
    pub(super) read_lease: PreparedStatement,
    pub(super) lease_first: Batch,
    pub(super) lease_takeover_expired: Batch,
    pub(super) lease_takeover_free: Batch,
    pub(super) lease_extend: PreparedStatement,
    pub(super) lease_release: PreparedStatement,
    pub(super) scan_leases: PreparedStatement,
    pub(super) publish_load: PreparedStatement,
    pub(super) scan_servers: PreparedStatement,
    pub(super) publish_address: PreparedStatement,
    pub(super) scan_addresses: PreparedStatement,
}

impl std::fmt::Debug for LeaseStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStatements").finish_non_exhaustive()
    }
}

impl LeaseStatements {
    /// Prepares every statement of this domain on `s` with the profiles `p`.
    pub(super) async fn prepare(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        Ok(Self {
            read_lease: prepare(
                s,
                p,
                "SELECT holder, epoch, expires_at_ms FROM leases WHERE resource = ?",
                SerialRead,
            )
            .await?,
            lease_first: prepare_lwt_batch(
                s,
                p,
                &[
                    "INSERT INTO leases (resource, epoch) VALUES (?, ?) IF NOT EXISTS",
                    "UPDATE leases USING TTL ? SET holder = ?, expires_at_ms = ? WHERE resource = ?",
                ],
            )
            .await?,
            lease_takeover_expired: prepare_lwt_batch(
                s,
                p,
                &[
                    "UPDATE leases SET epoch = ? WHERE resource = ? IF epoch = ? AND expires_at_ms = ?",
                    "UPDATE leases USING TTL ? SET holder = ?, expires_at_ms = ? WHERE resource = ?",
                ],
            )
            .await?,
            lease_takeover_free: prepare_lwt_batch(
                s,
                p,
                &[
                    "UPDATE leases SET epoch = ? WHERE resource = ? IF epoch = ? AND holder = null",
                    "UPDATE leases USING TTL ? SET holder = ?, expires_at_ms = ? WHERE resource = ?",
                ],
            )
            .await?,
            lease_extend: prepare(
                s,
                p,
                "UPDATE leases USING TTL :ttl SET expires_at_ms = :expires_at_ms, holder = :holder \
                 WHERE resource = :resource \
                 IF holder = :if_holder AND epoch = :if_epoch AND expires_at_ms > :now_ms",
                Lwt,
            )
            .await?,
            lease_release: prepare(
                s,
                p,
                "DELETE holder, expires_at_ms FROM leases WHERE resource = :resource \
                 IF holder = :if_holder AND epoch = :if_epoch",
                Lwt,
            )
            .await?,
            scan_leases: prepare(
                s,
                p,
                "SELECT holder, epoch, expires_at_ms FROM leases",
                Idempotent,
            )
            .await?,
            publish_load: prepare(
                s,
                p,
                "INSERT INTO servers (server_id, players, busy_permille, draining, \
                 updated_at_ms, expires_at_ms) VALUES (:server_id, :players, :busy_permille, \
                 :draining, :updated_at_ms, :expires_at_ms) USING TTL :ttl",
                Idempotent,
            )
            .await?,
            scan_servers: prepare(
                s,
                p,
                "SELECT server_id, players, busy_permille, draining, updated_at_ms, \
                 expires_at_ms FROM servers",
                Idempotent,
            )
            .await?,
            publish_address: prepare(
                s,
                p,
                "UPDATE server_addresses USING TTL ? SET address = ? WHERE server_id = ?",
                Idempotent,
            )
            .await?,
            scan_addresses: prepare(
                s,
                p,
                "SELECT server_id, address FROM server_addresses",
                Idempotent,
            )
            .await?,
        })
    }
}

/// Statements that include this domain's: what its methods on [`Inner`] need.
pub(super) trait HasLeases: Send + Sync + 'static {
    /// This domain's prepared statements.
    fn leases(&self) -> &LeaseStatements;
}

impl<S: HasLeases> Inner<S> {
    pub(super) async fn read_lease(
        &self,
        resource: &str,
    ) -> Result<Option<LeaseRowCql>, StoreError> {
        self.first_row::<LeaseRowCql>(&self.st.leases().read_lease, (resource,), "reading a lease")
            .await
    }

    pub(super) async fn acquire_lease(
        &self,
        resource: String,
        holder: String,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now_ms.saturating_add(ttl_ms);
        let expires_cql = i64_of(expires, "lease expiry")?;
        let now_cql = i64_of(now_ms, "now")?;
        let cell_ttl = i32::try_from(ttl.as_secs().saturating_add(LEASE_TTL_GRACE_SECS + 1))
            .unwrap_or(i32::MAX);
        for _ in 0..MAX_ROUNDS {
            let row = self.read_lease(&resource).await?;
            let current_epoch = row.as_ref().and_then(|r| r.epoch).map(id_from_cql);
            let held = row
                .as_ref()
                .and_then(|r| match (&r.holder, r.expires_at_ms) {
                    (Some(h), Some(until)) if until > now_cql => Some((h.clone(), until)),
                    _ => None,
                });
            let (sent, epoch) = match (&row, held) {
                (_, Some((h, until))) if h != holder => {
                    return Err(LeaseError::Held {
                        resource,
                        holder: h,
                        epoch: current_epoch.unwrap_or(0),
                        expires_at_ms: id_from_cql(until),
                    })
                }
                (_, Some(_)) => {
                    // Ours already: extend, same epoch.
                    let epoch = current_epoch.unwrap_or(0);
                    let sent = self
                        .session
                        .execute_unpaged(
                            &self.st.leases().lease_extend,
                            LeaseExtend {
                                ttl: cell_ttl,
                                expires_at_ms: expires_cql,
                                holder: holder.clone(),
                                resource: resource.clone(),
                                if_holder: holder.clone(),
                                if_epoch: i64_of(epoch, "epoch")?,
                                now_ms: now_cql,
                            },
                        )
                        .await;
                    (sent, epoch)
                }
                (None, None) | (Some(LeaseRowCql { epoch: None, .. }), None) => {
                    let sent = self
                        .session
                        .batch(
                            &self.st.leases().lease_first,
                            (
                                (resource.clone(), 1i64),
                                (cell_ttl, holder.clone(), expires_cql, resource.clone()),
                            ),
                        )
                        .await;
                    (sent, 1)
                }
                (Some(r), None) => {
                    let seen = r.epoch.unwrap_or(0);
                    let epoch = id_from_cql(seen) + 1;
                    let new_epoch = i64_of(epoch, "epoch")?;
                    let second = (cell_ttl, holder.clone(), expires_cql, resource.clone());
                    let sent = match (&r.holder, r.expires_at_ms) {
                        (Some(_), Some(until)) => {
                            self.session
                                .batch(
                                    &self.st.leases().lease_takeover_expired,
                                    ((new_epoch, resource.clone(), seen, until), second),
                                )
                                .await
                        }
                        _ => {
                            self.session
                                .batch(
                                    &self.st.leases().lease_takeover_free,
                                    ((new_epoch, resource.clone(), seen), second),
                                )
                                .await
                        }
                    };
                    (sent, epoch)
                }
            };
            let lease = Lease {
                resource: resource.clone(),
                holder: holder.clone(),
                epoch,
                expires_at_ms: expires,
            };
            match sent {
                Ok(result) => {
                    if Lwt::parse(result)?.applied {
                        return Ok(lease);
                    }
                    // Someone moved first: look again.
                }
                Err(e) if may_have_applied(&e) => match self.read_lease(&resource).await {
                    Ok(Some(r))
                        if r.holder.as_deref() == Some(holder.as_str())
                            && r.epoch.map(id_from_cql) == Some(epoch)
                            && r.expires_at_ms == Some(expires_cql) =>
                    {
                        return Ok(lease)
                    }
                    Ok(_) => {}
                    Err(read) => {
                        return Err(StoreError::UnknownOutcome {
                            context: "lease acquisition",
                            detail: format!("write: {e}; re-read: {read}"),
                        }
                        .into())
                    }
                },
                Err(e) => return Err(err("lease acquisition")(e).into()),
            }
        }
        Err(msg("lease acquisition", format!("{resource}: still contended")).into())
    }

    pub(super) async fn renew_lease(
        &self,
        lease: Lease,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now_ms.saturating_add(ttl_ms);
        let expires_cql = i64_of(expires, "lease expiry")?;
        let cell_ttl = i32::try_from(ttl.as_secs().saturating_add(LEASE_TTL_GRACE_SECS + 1))
            .unwrap_or(i32::MAX);
        let lost = || LeaseError::Lost {
            resource: lease.resource.clone(),
            epoch: lease.epoch,
        };
        let renewed = Lease {
            expires_at_ms: expires,
            ..lease.clone()
        };
        for _ in 0..MAX_ROUNDS {
            let sent = self
                .session
                .execute_unpaged(
                    &self.st.leases().lease_extend,
                    LeaseExtend {
                        ttl: cell_ttl,
                        expires_at_ms: expires_cql,
                        holder: lease.holder.clone(),
                        resource: lease.resource.clone(),
                        if_holder: lease.holder.clone(),
                        if_epoch: i64_of(lease.epoch, "epoch")?,
                        now_ms: i64_of(now_ms, "now")?,
                    },
                )
                .await;
            match sent {
                Ok(result) => {
                    return if Lwt::parse(result)?.applied {
                        Ok(renewed)
                    } else {
                        Err(lost())
                    }
                }
                Err(e) if may_have_applied(&e) => match self.read_lease(&lease.resource).await {
                    Ok(Some(r))
                        if r.holder.as_deref() == Some(lease.holder.as_str())
                            && r.epoch.map(id_from_cql) == Some(lease.epoch) =>
                    {
                        if r.expires_at_ms == Some(expires_cql) {
                            return Ok(renewed);
                        }
                        // Still ours and not renewed: sending again is safe.
                    }
                    Ok(_) => return Err(lost()),
                    Err(read) => {
                        return Err(StoreError::UnknownOutcome {
                            context: "lease renewal",
                            detail: format!("write: {e}; re-read: {read}"),
                        }
                        .into())
                    }
                },
                Err(e) => return Err(err("lease renewal")(e).into()),
            }
        }
        Err(msg(
            "lease renewal",
            format!("{}: still contended", lease.resource),
        )
        .into())
    }

    pub(super) async fn release_lease(&self, lease: Lease) -> Result<(), LeaseError> {
        let sent = self
            .session
            .execute_unpaged(
                &self.st.leases().lease_release,
                LeaseRelease {
                    resource: lease.resource.clone(),
                    if_holder: lease.holder.clone(),
                    if_epoch: i64_of(lease.epoch, "epoch")?,
                },
            )
            .await;
        let lost = || LeaseError::Lost {
            resource: lease.resource.clone(),
            epoch: lease.epoch,
        };
        match sent {
            Ok(result) => {
                if Lwt::parse(result)?.applied {
                    Ok(())
                } else {
                    Err(lost())
                }
            }
            Err(e) if may_have_applied(&e) => match self.read_lease(&lease.resource).await {
                // Whether our delete or someone else's takeover did it, we hold nothing.
                Ok(Some(r))
                    if r.holder.as_deref() == Some(lease.holder.as_str())
                        && r.epoch.map(id_from_cql) == Some(lease.epoch) =>
                {
                    Err(StoreError::UnknownOutcome {
                        context: "lease release",
                        detail: format!("write: {e}; the lease is still held"),
                    }
                    .into())
                }
                Ok(_) => Ok(()),
                Err(read) => Err(StoreError::UnknownOutcome {
                    context: "lease release",
                    detail: format!("write: {e}; re-read: {read}"),
                }
                .into()),
            },
            Err(e) => Err(err("lease release")(e).into()),
        }
    }
}
