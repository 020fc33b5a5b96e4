//! Player checkpoints: the `players` table, its rows, statements and fenced saves.

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::{DeserializeRow, SerializeRow};

use super::conn::{
    display_i64, err, i64_of, id_from_cql, id_to_cql, may_have_applied, msg, prepare, Inner, Kind,
    Lwt, Profiles, MAX_ROUNDS,
};
use crate::store::record;
use crate::store::{Fence, PlayerRecord, SaveOutcome, StoreError};

#[derive(Debug, Clone, SerializeRow)]
pub(super) struct PlayerValues {
    pub(super) player_id: i64,
    pub(super) name: String,
    pub(super) epoch: i64,
    pub(super) seq: i64,
    pub(super) schema_version: i32,
    pub(super) zone: i32,
    pub(super) x_mm: i32,
    pub(super) y_mm: i32,
    pub(super) level: i64,
    pub(super) xp: i64,
    pub(super) gold: i64,
    pub(super) saved_at_ms: i64,
    pub(super) record: Vec<u8>,
}

#[derive(Debug, SerializeRow)]
pub(super) struct PlayerIfSameEpoch {
    #[scylla(flatten)]
    pub(super) values: PlayerValues,
    pub(super) if_epoch: i64,
    pub(super) if_seq: i64,
}

#[derive(Debug, SerializeRow)]
pub(super) struct PlayerIfOlderEpoch {
    #[scylla(flatten)]
    pub(super) values: PlayerValues,
    pub(super) if_epoch: i64,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct PlayerBlob {
    pub(super) record: Option<Vec<u8>>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct FenceRow {
    pub(super) epoch: Option<i64>,
    pub(super) seq: Option<i64>,
}

#[derive(Debug, DeserializeRow)]
pub(super) struct PlayerScanRow {
    pub(super) player_id: i64,
    pub(super) record: Option<Vec<u8>>,
}

pub(super) const PLAYER_COLUMNS: &str = "name = :name, epoch = :epoch, seq = :seq, \
    schema_version = :schema_version, zone = :zone, x_mm = :x_mm, y_mm = :y_mm, \
    level = :level, xp = :xp, gold = :gold, saved_at_ms = :saved_at_ms, record = :record";

pub(super) fn player_values(r: &PlayerRecord, bytes: Vec<u8>) -> Result<PlayerValues, StoreError> {
    Ok(PlayerValues {
        player_id: id_to_cql(r.player_id),
        name: r.name.clone(),
        epoch: i64_of(r.epoch, "epoch")?,
        seq: i64_of(r.seq, "seq")?,
        schema_version: i32::from(record::RECORD_VERSION),
        zone: i32::from(r.zone),
        x_mm: r.x_mm,
        y_mm: r.y_mm,
        level: i64::from(r.level),
        xp: display_i64(r.xp),
        gold: display_i64(r.gold),
        saved_at_ms: display_i64(r.saved_at_ms),
        record: bytes,
    })
}

pub(super) enum SaveStep {
    SameEpoch,
    Insert,
    OlderEpoch,
}

/// The prepared statements of this domain (see [`HasPlayers`]).
pub(super) struct PlayerStatements {
    pub(super) load_player: PreparedStatement,
    pub(super) read_fence: PreparedStatement,
    pub(super) insert_player: PreparedStatement,
    pub(super) update_player_same_epoch: PreparedStatement,
    pub(super) update_player_older_epoch: PreparedStatement,
    pub(super) put_raw_player: PreparedStatement,
    pub(super) scan_players: PreparedStatement,
}

impl std::fmt::Debug for PlayerStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerStatements").finish_non_exhaustive()
    }
}

impl PlayerStatements {
    /// Prepares every statement of this domain on `s` with the profiles `p`.
    pub(super) async fn prepare(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        Ok(Self {
            load_player: prepare(
                s,
                p,
                "SELECT record FROM players WHERE player_id = ?",
                Idempotent,
            )
            .await?,
            read_fence: prepare(
                s,
                p,
                "SELECT epoch, seq FROM players WHERE player_id = ?",
                SerialRead,
            )
            .await?,
            insert_player: prepare(
                s,
                p,
                "INSERT INTO players (player_id, name, epoch, seq, schema_version, zone, x_mm, \
                 y_mm, level, xp, gold, saved_at_ms, record) VALUES (:player_id, :name, :epoch, \
                 :seq, :schema_version, :zone, :x_mm, :y_mm, :level, :xp, :gold, :saved_at_ms, \
                 :record) IF NOT EXISTS",
                Lwt,
            )
            .await?,
            update_player_same_epoch: prepare(
                s,
                p,
                &format!(
                    "UPDATE players SET {PLAYER_COLUMNS} WHERE player_id = :player_id \
                     IF epoch = :if_epoch AND seq < :if_seq"
                ),
                Lwt,
            )
            .await?,
            update_player_older_epoch: prepare(
                s,
                p,
                &format!(
                    "UPDATE players SET {PLAYER_COLUMNS} WHERE player_id = :player_id \
                     IF epoch < :if_epoch"
                ),
                Lwt,
            )
            .await?,
            put_raw_player: prepare(
                s,
                p,
                "INSERT INTO players (player_id, epoch, seq, record) VALUES (?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            scan_players: prepare(s, p, "SELECT player_id, record FROM players", Idempotent)
                .await?,
        })
    }
}

/// Statements that include this domain's: what its methods on [`Inner`] need.
pub(super) trait HasPlayers: Send + Sync + 'static {
    /// This domain's prepared statements.
    fn players(&self) -> &PlayerStatements;
}

impl<S: HasPlayers> Inner<S> {
    pub(super) async fn load_player(
        &self,
        player_id: u64,
    ) -> Result<Option<PlayerRecord>, StoreError> {
        let row: Option<PlayerBlob> = self
            .first_row::<PlayerBlob>(
                &self.st.players().load_player,
                (id_to_cql(player_id),),
                "loading a player",
            )
            .await?;
        match row {
            None => Ok(None),
            Some(PlayerBlob { record: None }) => Err(StoreError::Corrupt {
                player_id,
                reason: "row has no record blob".into(),
            }),
            Some(PlayerBlob { record: Some(b) }) => record::decode(player_id, &b).map(Some),
        }
    }

    pub(super) async fn read_fence(&self, player_id: u64) -> Result<Option<Fence>, StoreError> {
        let row: Option<FenceRow> = self
            .first_row::<FenceRow>(
                &self.st.players().read_fence,
                (id_to_cql(player_id),),
                "re-reading a fence",
            )
            .await?;
        Ok(row.and_then(|r| match (r.epoch, r.seq) {
            (Some(e), Some(s)) => Some(Fence {
                epoch: id_from_cql(e),
                seq: id_from_cql(s),
            }),
            _ => None,
        }))
    }

    pub(super) async fn save_one(&self, r: PlayerRecord) -> Result<SaveOutcome, StoreError> {
        let player_id = r.player_id;
        let fence = r.fence();
        let values = player_values(&r, record::encode(&r)?)?;
        let mut step = SaveStep::SameEpoch;
        for _ in 0..MAX_ROUNDS {
            let sent = match step {
                SaveStep::SameEpoch => {
                    self.session
                        .execute_unpaged(
                            &self.st.players().update_player_same_epoch,
                            PlayerIfSameEpoch {
                                values: values.clone(),
                                if_epoch: values.epoch,
                                if_seq: values.seq,
                            },
                        )
                        .await
                }
                SaveStep::Insert => {
                    self.session
                        .execute_unpaged(&self.st.players().insert_player, values.clone())
                        .await
                }
                SaveStep::OlderEpoch => {
                    self.session
                        .execute_unpaged(
                            &self.st.players().update_player_older_epoch,
                            PlayerIfOlderEpoch {
                                values: values.clone(),
                                if_epoch: values.epoch,
                            },
                        )
                        .await
                }
            };
            let stored = match sent {
                Ok(result) => {
                    let lwt = Lwt::parse(result)?;
                    if lwt.applied {
                        return Ok(SaveOutcome::Saved { player_id });
                    }
                    match (lwt.bigint("epoch"), lwt.bigint("seq")) {
                        (Some(e), Some(s)) => Some(Fence {
                            epoch: id_from_cql(e),
                            seq: id_from_cql(s),
                        }),
                        // No row (or a server that returns only [applied]): ask.
                        _ => match step {
                            SaveStep::Insert => self.read_fence(player_id).await?,
                            _ => None,
                        },
                    }
                }
                Err(e) if may_have_applied(&e) => {
                    // Unknown outcome: the serial read completes any Paxos round in flight.
                    match self.read_fence(player_id).await {
                        Ok(Some(f)) if f == fence => return Ok(SaveOutcome::Saved { player_id }),
                        Ok(found) => found,
                        Err(read) => {
                            return Err(StoreError::UnknownOutcome {
                                context: "checkpoint",
                                detail: format!("write: {e}; re-read: {read}"),
                            })
                        }
                    }
                }
                Err(e) => return Err(err("checkpoint")(e)),
            };
            step = match stored {
                None => SaveStep::Insert,
                Some(s) if s >= fence => {
                    return Ok(SaveOutcome::Stale {
                        player_id,
                        stored: s,
                    })
                }
                Some(s) if s.epoch < fence.epoch => SaveStep::OlderEpoch,
                Some(_) => SaveStep::SameEpoch,
            };
        }
        Err(msg(
            "checkpoint",
            format!("player {player_id}: still contended after {MAX_ROUNDS} rounds"),
        ))
    }
}
