//! The integrity check (`zonehost store check`) over every table.

use std::collections::{BTreeMap, HashMap, HashSet};

use ::scylla::DeserializeRow;

use super::conn::{from_blob16, id_from_cql, Inner};
use super::items::{parse_owner, HasItems, IndexRow, ItemScanRow};
use super::leases::{HasLeases, LeaseRowCql};
use super::players::{HasPlayers, PlayerScanRow};
use super::trades::HasTrades;
use crate::store::record;
use crate::store::{Anomaly, IntegrityReport, Owner, StoreError};

#[derive(Debug, DeserializeRow)]
pub(super) struct KeyOnly {
    #[allow(dead_code)]
    pub(super) k: Option<Vec<u8>>,
}

impl<S: HasPlayers + HasItems + HasLeases + HasTrades> Inner<S> {
    pub(super) async fn check(&self) -> Result<IntegrityReport, StoreError> {
        let mut report = IntegrityReport {
            backend: "scylla".into(),
            index_written_apart: true,
            ..Default::default()
        };
        let mut anomalies = Vec::new();
        self.scan::<PlayerScanRow>(
            &self.st.players().scan_players,
            (),
            "scanning players",
            |row| {
                report.players += 1;
                let player_id = id_from_cql(row.player_id);
                let decoded = match row.record {
                    Some(b) => record::decode(player_id, &b).map(|_| ()),
                    None => Err(StoreError::Corrupt {
                        player_id,
                        reason: "row has no record blob".into(),
                    }),
                };
                if let Err(StoreError::Corrupt { reason, .. }) = decoded {
                    anomalies.push(Anomaly::CorruptPlayer { player_id, reason });
                }
                Ok(())
            },
        )
        .await?;
        let mut owner_of: HashMap<u128, Owner> = HashMap::new();
        let mut destroyed = 0u64;
        self.scan::<ItemScanRow>(&self.st.items().scan_items, (), "scanning items", |row| {
            let Some(item_id) = from_blob16(&row.item_id) else {
                anomalies.push(Anomaly::CorruptItem {
                    item_id: 0,
                    reason: format!("item id of {} bytes", row.item_id.len()),
                });
                return Ok(());
            };
            match parse_owner(item_id, row.owner.as_deref()) {
                Ok(Some(o)) => {
                    owner_of.insert(item_id, o);
                }
                Ok(None) => destroyed += 1,
                Err(e) => anomalies.push(Anomaly::CorruptItem {
                    item_id,
                    reason: e.to_string(),
                }),
            }
            Ok(())
        })
        .await?;
        let mut listed: BTreeMap<u128, Vec<Owner>> = BTreeMap::new();
        let mut entries = 0u64;
        self.scan::<IndexRow>(
            &self.st.items().scan_index,
            (),
            "scanning the owner index",
            |row| {
                entries += 1;
                match (Owner::from_key(&row.owner), from_blob16(&row.item_id)) {
                    (Some(o), Some(id)) => listed.entry(id).or_default().push(o),
                    _ => anomalies.push(Anomaly::CorruptItem {
                        item_id: from_blob16(&row.item_id).unwrap_or(0),
                        reason: format!("index entry under {:?} does not parse", row.owner),
                    }),
                }
                Ok(())
            },
        )
        .await?;
        let mut ops = 0u64;
        self.scan::<KeyOnly>(&self.st.items().scan_ops, (), "scanning the op log", |_| {
            ops += 1;
            Ok(())
        })
        .await?;
        let mut leases = 0u64;
        self.scan::<LeaseRowCql>(&self.st.leases().scan_leases, (), "scanning leases", |_| {
            leases += 1;
            Ok(())
        })
        .await?;
        let mut owners = HashSet::new();
        for (&item_id, &owner) in &owner_of {
            owners.insert(owner);
            report.items += 1;
            match owner {
                Owner::Player(_) => report.items_on_players += 1,
                Owner::Ground { .. } => report.items_on_ground += 1,
                Owner::Trade { .. } => report.items_in_escrow += 1,
            }
            let l = listed.get(&item_id);
            if !l.is_some_and(|l| l.contains(&owner)) {
                anomalies.push(Anomaly::MissingIndexEntry { item_id, owner });
            }
            let also: Vec<Owner> = l
                .map(|l| l.iter().copied().filter(|o| *o != owner).collect())
                .unwrap_or_default();
            if !also.is_empty() {
                anomalies.push(Anomaly::DuplicateOwner {
                    item_id,
                    owner,
                    also,
                });
            }
        }
        for (item_id, l) in &listed {
            if !owner_of.contains_key(item_id) {
                for &owner in l {
                    anomalies.push(Anomaly::DanglingIndexEntry {
                        item_id: *item_id,
                        owner,
                    });
                }
            }
        }
        let mut unsettled = HashSet::new();
        let mut corrupt = HashSet::new();
        for t in self.scan_trades().await? {
            report.trades += 1;
            match t {
                Ok(t) if !t.settled => {
                    report.trades_unsettled += 1;
                    unsettled.insert(t.trade_id);
                }
                Ok(_) => {}
                Err((trade_id, reason)) => {
                    corrupt.insert(trade_id);
                    anomalies.push(Anomaly::CorruptTrade { trade_id, reason });
                }
            }
        }
        for (&item_id, &owner) in &owner_of {
            if let Owner::Trade { trade } = owner {
                if !unsettled.contains(&trade) && !corrupt.contains(&trade) {
                    anomalies.push(Anomaly::StrandedEscrow { item_id, trade });
                }
            }
        }
        report.destroyed_items = destroyed;
        report.index_entries = entries;
        report.owners = owners.len() as u64;
        report.ops = ops;
        report.leases = leases;
        anomalies.sort_by_key(|a| format!("{a}"));
        report.anomalies = anomalies;
        Ok(report)
    }
}
