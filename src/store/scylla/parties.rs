//! Parties and invitations: `parties`, the membership index `party_of` and the
//! invitation index `party_invites`; rows, statements, compare-and-set writes.

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::DeserializeRow;

use super::conn::{
    err, i64_of, id_from_cql, id_to_cql, may_have_applied, prepare, Inner, Kind, Lwt, Profiles,
};
use crate::store::{Invitation, PartyRecord, StoreError};

#[derive(Debug, Clone, DeserializeRow)]
pub(super) struct PartyRowCql {
    pub(super) leader: Option<i64>,
    pub(super) members: Option<Vec<i64>>,
    pub(super) invites: Option<Vec<i64>>,
    pub(super) version: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct PartyOfCql {
    pub(super) party_id: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct PartyInviteCql {
    pub(super) party_id: Option<i64>,
    pub(super) expires_at_ms: Option<i64>,
}

/// The prepared statements of this domain (see [`HasParties`]).
pub(super) struct PartyStatements {
    pub(super) read_party: PreparedStatement,
    pub(super) insert_party: PreparedStatement,
    pub(super) update_party: PreparedStatement,
    pub(super) delete_party: PreparedStatement,
    pub(super) read_party_of: PreparedStatement,
    pub(super) set_party_of: PreparedStatement,
    pub(super) clear_party_of: PreparedStatement,
    pub(super) read_party_invite: PreparedStatement,
    pub(super) set_party_invite: PreparedStatement,
    pub(super) clear_party_invite: PreparedStatement,
}

impl std::fmt::Debug for PartyStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartyStatements").finish_non_exhaustive()
    }
}

impl PartyStatements {
    /// Prepares every statement of this domain on `s` with the profiles `p`.
    pub(super) async fn prepare(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        Ok(Self {
            read_party: prepare(
                s,
                p,
                "SELECT leader, members, invites, version FROM parties WHERE party_id = ?",
                SerialRead,
            )
            .await?,
            insert_party: prepare(
                s,
                p,
                "INSERT INTO parties (party_id, leader, members, invites, version) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
                Lwt,
            )
            .await?,
            update_party: prepare(
                s,
                p,
                "UPDATE parties SET leader = ?, members = ?, invites = ?, version = ? \
                 WHERE party_id = ? IF version = ?",
                Lwt,
            )
            .await?,
            delete_party: prepare(
                s,
                p,
                "DELETE FROM parties WHERE party_id = ? IF version = ?",
                Lwt,
            )
            .await?,
            read_party_of: prepare(
                s,
                p,
                "SELECT party_id FROM party_of WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            set_party_of: prepare(
                s,
                p,
                "INSERT INTO party_of (player_id, party_id) VALUES (?, ?)",
                Idempotent,
            )
            .await?,
            clear_party_of: prepare(
                s,
                p,
                "DELETE FROM party_of WHERE player_id = ? IF party_id = ?",
                Lwt,
            )
            .await?,
            read_party_invite: prepare(
                s,
                p,
                "SELECT party_id, expires_at_ms FROM party_invites WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            set_party_invite: prepare(
                s,
                p,
                "UPDATE party_invites USING TTL ? SET party_id = ?, expires_at_ms = ? \
                 WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            clear_party_invite: prepare(
                s,
                p,
                "DELETE FROM party_invites WHERE player_id = ? IF party_id = ?",
                Lwt,
            )
            .await?,
        })
    }
}

/// Statements that include this domain's: what its methods on [`Inner`] need.
pub(super) trait HasParties: Send + Sync + 'static {
    /// This domain's prepared statements.
    fn parties(&self) -> &PartyStatements;
}

impl<S: HasParties> Inner<S> {
    pub(super) async fn read_party(
        &self,
        party_id: u64,
    ) -> Result<Option<PartyRecord>, StoreError> {
        let row = self
            .first_row::<PartyRowCql>(
                &self.st.parties().read_party,
                (id_to_cql(party_id),),
                "reading a party",
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (Some(leader), Some(version)) = (row.leader, row.version) else {
            return Err(StoreError::Invalid {
                reason: format!("party {party_id:016x}: row without leader or version"),
            });
        };
        let ids =
            |v: Option<Vec<i64>>| v.unwrap_or_default().into_iter().map(id_from_cql).collect();
        Ok(Some(PartyRecord {
            party_id,
            leader: id_from_cql(leader),
            members: ids(row.members),
            invites: ids(row.invites),
            version: u64::try_from(version).unwrap_or(0),
        }))
    }

    pub(super) async fn party_of(&self, player_id: u64) -> Result<Option<u64>, StoreError> {
        let row = self
            .first_row::<PartyOfCql>(
                &self.st.parties().read_party_of,
                (id_to_cql(player_id),),
                "reading a membership",
            )
            .await?;
        let Some(party_id) = row.and_then(|r| r.party_id).map(id_from_cql) else {
            return Ok(None);
        };
        let party = self.read_party(party_id).await?;
        Ok(party
            .filter(|p| p.members.contains(&player_id))
            .map(|p| p.party_id))
    }

    pub(super) async fn write_party(
        &self,
        party: PartyRecord,
        expected: Option<u64>,
        invitation: Option<(Invitation, i32)>,
    ) -> Result<bool, StoreError> {
        let current = self.read_party(party.party_id).await?;
        if current.as_ref().map(|c| c.version) != expected {
            return Ok(false);
        }
        let id = id_to_cql(party.party_id);
        // The invitee points to the party first (checked against the row when read).
        if let Some((inv, cell_ttl)) = invitation {
            self.execute(
                &self.st.parties().set_party_invite,
                (
                    cell_ttl,
                    id,
                    i64_of(inv.expires_at_ms, "invitation expiry")?,
                    id_to_cql(inv.invitee),
                ),
                "writing an invitation",
            )
            .await?;
        }
        // Added members point to the party first (checked against the row when read).
        for m in &party.members {
            self.execute(
                &self.st.parties().set_party_of,
                (id_to_cql(*m), id),
                "writing a membership",
            )
            .await?;
        }
        let cql_ids = |v: &[u64]| v.iter().map(|x| id_to_cql(*x)).collect::<Vec<i64>>();
        let version = i64_of(party.version, "party version")?;
        let sent = match (expected, party.members.is_empty()) {
            (None, true) => return Ok(true),
            (None, false) => {
                self.session
                    .execute_unpaged(
                        &self.st.parties().insert_party,
                        (
                            id,
                            id_to_cql(party.leader),
                            cql_ids(&party.members),
                            cql_ids(&party.invites),
                            version,
                        ),
                    )
                    .await
            }
            (Some(v), true) => {
                self.session
                    .execute_unpaged(
                        &self.st.parties().delete_party,
                        (id, i64_of(v, "party version")?),
                    )
                    .await
            }
            (Some(v), false) => {
                self.session
                    .execute_unpaged(
                        &self.st.parties().update_party,
                        (
                            id_to_cql(party.leader),
                            cql_ids(&party.members),
                            cql_ids(&party.invites),
                            version,
                            id,
                            i64_of(v, "party version")?,
                        ),
                    )
                    .await
            }
        };
        let applied = match sent {
            Ok(result) => Lwt::parse(result)?.applied,
            Err(e) if may_have_applied(&e) => {
                // Unknown outcome: the serial read finishes the round and tells.
                let now = self.read_party(party.party_id).await.map_err(|re| {
                    StoreError::UnknownOutcome {
                        context: "writing a party",
                        detail: format!("write: {e}; re-read: {re}"),
                    }
                })?;
                match now {
                    None => party.members.is_empty(),
                    Some(p) => p == party,
                }
            }
            Err(e) => return Err(err("writing a party")(e)),
        };
        if !applied {
            return Ok(false);
        }
        // The party row is written: that is the outcome. The index clean-up below is
        // advisory (every index read is checked against the party row, and invitations
        // also expire), so a failure is logged rather than turning a done write into an
        // error the caller would report (and retry into a refusal).
        // Removed members no longer point to it (unless they joined another since).
        for old in current.iter().flat_map(|c| c.members.iter()) {
            if !party.members.contains(old) {
                if let Err(e) = self
                    .execute(
                        &self.st.parties().clear_party_of,
                        (id_to_cql(*old), id),
                        "clearing a membership",
                    )
                    .await
                {
                    tracing::warn!(player = *old, party = party.party_id, error = %e, "stale party_of entry left (checked against the party row on read)");
                }
            }
        }
        // Invitees it no longer lists lose their invitation to it (unless invited elsewhere
        // since).
        for old in current.iter().flat_map(|c| c.invites.iter()) {
            if party.members.is_empty() || !party.invites.contains(old) {
                if let Err(e) = self
                    .execute(
                        &self.st.parties().clear_party_invite,
                        (id_to_cql(*old), id),
                        "clearing an invitation",
                    )
                    .await
                {
                    tracing::warn!(player = *old, party = party.party_id, error = %e, "stale invitation entry left (checked against the party row on read, and it expires)");
                }
            }
        }
        Ok(true)
    }

    pub(super) async fn invitation_of(
        &self,
        player_id: u64,
        now_ms: u64,
    ) -> Result<Option<Invitation>, StoreError> {
        let row = self
            .first_row::<PartyInviteCql>(
                &self.st.parties().read_party_invite,
                (id_to_cql(player_id),),
                "reading an invitation",
            )
            .await?;
        let Some((party_id, expires)) = row.and_then(|r| r.party_id.zip(r.expires_at_ms)) else {
            return Ok(None);
        };
        let entry = Invitation {
            party_id: id_from_cql(party_id),
            invitee: player_id,
            expires_at_ms: u64::try_from(expires).unwrap_or(0),
        };
        if entry.expires_at_ms <= now_ms {
            return Ok(None);
        }
        let party = self.read_party(entry.party_id).await?;
        Ok(crate::store::pending_invitation(
            entry,
            party.as_ref(),
            now_ms,
        ))
    }
}
