//! The integrity check's report ([`IntegrityReport`], `zonehost store check`) and the
//! problems it lists ([`Anomaly`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::types::Owner;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anomaly {
    /// The owner index lists a live item under an owner other than its row's owner as
    /// well. The item row is the single owner, and every read of the index checks it, so
    /// the item is not given twice: this is a stale entry (see [`Anomaly::is_leftover`]).
    DuplicateOwner {
        /// Item id.
        item_id: u128,
        /// The owner in the item row (the truth).
        owner: Owner,
        /// The other owner(s) the index lists it under.
        also: Vec<Owner>,
    },
    /// A live item is missing from its owner's index.
    MissingIndexEntry {
        /// Item id.
        item_id: u128,
        /// Its owner.
        owner: Owner,
    },
    /// The index lists an item that does not exist or was destroyed: a stale entry (see
    /// [`Anomaly::is_leftover`]).
    DanglingIndexEntry {
        /// Item id.
        item_id: u128,
        /// The owner the index lists it under.
        owner: Owner,
    },
    /// An item row does not decode.
    CorruptItem {
        /// Item id.
        item_id: u128,
        /// What is wrong.
        reason: String,
    },
    /// A player record does not decode.
    CorruptPlayer {
        /// Player id.
        player_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// An item is held in escrow by a trade that is settled or has no row: nothing will
    /// ever deliver or return it.
    StrandedEscrow {
        /// Item id.
        item_id: u128,
        /// Trade id.
        trade: u64,
    },
    /// A trade row does not decode.
    CorruptTrade {
        /// Trade id.
        trade_id: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Anomaly {
    /// Whether this is an extra owner-index entry ([`Anomaly::DuplicateOwner`],
    /// [`Anomaly::DanglingIndexEntry`]): what a process killed between an item's write and
    /// its index update leaves behind on a backend that writes them apart (see
    /// [`IntegrityReport::index_written_apart`]). Every reader of the index checks the item
    /// row, so such an entry neither gives an item to a second owner nor hides it. A
    /// *missing* entry (an item its owner's index does not list) is always a fault: that
    /// item would be invisible to its owner.
    pub fn is_leftover(&self) -> bool {
        matches!(
            self,
            Anomaly::DuplicateOwner { .. } | Anomaly::DanglingIndexEntry { .. }
        )
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::DuplicateOwner {
                item_id,
                owner,
                also,
            } => {
                write!(
                    f,
                    "item {item_id:032x} owned by {owner} is also listed under"
                )?;
                for o in also {
                    write!(f, " {o}")?;
                }
                Ok(())
            }
            Anomaly::MissingIndexEntry { item_id, owner } => {
                write!(
                    f,
                    "item {item_id:032x} owned by {owner} is missing from its owner's index"
                )
            }
            Anomaly::DanglingIndexEntry { item_id, owner } => write!(
                f,
                "index of {owner} lists item {item_id:032x}, which does not exist or was destroyed"
            ),
            Anomaly::CorruptItem { item_id, reason } => {
                write!(f, "item {item_id:032x}: corrupt row: {reason}")
            }
            Anomaly::CorruptPlayer { player_id, reason } => {
                write!(f, "player {player_id}: corrupt record: {reason}")
            }
            Anomaly::StrandedEscrow { item_id, trade } => write!(
                f,
                "item {item_id:032x} is in escrow of trade {trade}, which is settled or unknown"
            ),
            Anomaly::CorruptTrade { trade_id, reason } => {
                write!(f, "trade {trade_id}: corrupt row: {reason}")
            }
        }
    }
}

/// Result of an integrity check: counts and every anomaly found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// Backend name.
    pub backend: String,
    /// Player records.
    pub players: u64,
    /// Live items (each must have exactly one owner).
    pub items: u64,
    /// Destroyed items (tombstones).
    pub destroyed_items: u64,
    /// Live items on players.
    pub items_on_players: u64,
    /// Live items on the ground.
    pub items_on_ground: u64,
    /// Live items in escrow of an unsettled trade (in flight: each is owned once, by the
    /// trade, which will deliver or return it).
    pub items_in_escrow: u64,
    /// Trade rows.
    pub trades: u64,
    /// Trades not settled yet (recovery resolves them).
    pub trades_unsettled: u64,
    /// Distinct owners holding at least one item.
    pub owners: u64,
    /// Owner-index entries.
    pub index_entries: u64,
    /// Recorded item operations (op log).
    pub ops: u64,
    /// Lease rows.
    pub leases: u64,
    /// Problems found; empty when the store is consistent.
    pub anomalies: Vec<Anomaly>,
    /// The backend writes an item's row and its owner-index entries apart (ScyllaDB: the
    /// new owner's entry before the row's conditional write, the old owner's removed after
    /// it), so a killed process leaves extra entries ([`Anomaly::is_leftover`]): they are
    /// listed and do not fail the check. The embedded store writes both in one
    /// transaction, where an extra entry is a fault.
    pub index_written_apart: bool,
}

impl IntegrityReport {
    /// Whether no fault was found (see [`IntegrityReport::faults`]).
    pub fn is_clean(&self) -> bool {
        self.faults().next().is_none()
    }

    /// Whether `a` is a stale entry this backend's write model explains, not a fault.
    fn is_stale(&self, a: &Anomaly) -> bool {
        self.index_written_apart && a.is_leftover()
    }

    /// The anomalies that are faults: all of them, except the extra index entries of a
    /// backend that writes its index apart ([`IntegrityReport::index_written_apart`]).
    pub fn faults(&self) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(|a| !self.is_stale(a))
    }
}

impl fmt::Display for IntegrityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store check ({})", self.backend)?;
        writeln!(f, "  players          {}", self.players)?;
        writeln!(
            f,
            "  items            {} live ({} on players, {} on the ground), {} destroyed",
            self.items, self.items_on_players, self.items_on_ground, self.destroyed_items
        )?;
        writeln!(
            f,
            "  trades           {} ({} unsettled, {} items in escrow)",
            self.trades, self.trades_unsettled, self.items_in_escrow
        )?;
        writeln!(f, "  owners           {}", self.owners)?;
        writeln!(f, "  index entries    {}", self.index_entries)?;
        writeln!(f, "  item ops logged  {}", self.ops)?;
        writeln!(f, "  leases           {}", self.leases)?;
        let leftovers: Vec<&Anomaly> = self.anomalies.iter().filter(|a| self.is_stale(a)).collect();
        if !leftovers.is_empty() {
            writeln!(
                f,
                "  stale index entries {} (left by a process killed between an item write and \
                 its index update; every read checks the item row and skips them)",
                leftovers.len()
            )?;
            for a in &leftovers {
                writeln!(f, "    - {a}")?;
            }
        }
        let faults: Vec<&Anomaly> = self.faults().collect();
        if faults.is_empty() {
            write!(f, "OK: every item is owned exactly once")
        } else {
            writeln!(f, "FAILED: {} anomalies", faults.len())?;
            for (i, a) in faults.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(f, "  - {a}")?;
            }
            Ok(())
        }
    }
}
