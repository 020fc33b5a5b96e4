//! `zonehost store verify-ops`: checks a log of confirmed item operations (written by
//! `loadgen --ops-log`, or by any client that keeps one) against the store: nothing the
//! server confirmed may be lost.
//!
//! The log is JSON lines `{"t_us":…,"player":…,"item":"…","fact":"with|left|doubt","op":…}`
//! (format in `loadgen/src/opslog.rs` and docs/persistence.md). For each item, the last
//! confirmed fact (by `t_us`) decides what the store must show:
//! - `with` by player P: the item is owned by P;
//! - `left` by player P: the item exists (live elsewhere, or destroyed) and P does not own it;
//!
//! unless a `doubt` about the item (an operation on it was never answered) comes later, or,
//! for `left`, a `doubt` of P about an unknown item (`"*"`: an unanswered pick-up) does:
//! then either outcome is allowed and the item is counted as in doubt. Facts about one item
//! from different players may be logged out of order by a few milliseconds (separate
//! connections); only `with` is a strong claim, and a `with` can only follow the previous
//! holder's `left` in the store, so the rule never needs an exact global order.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;

use serde::Deserialize;

use super::{Owner, Store, StoreError};

/// Mismatches listed in full at most (the count is always exact).
const LISTED: usize = 20;

/// Why a log could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
    /// A line that is not a record (only a torn last line is tolerated: a writer killed
    /// mid-line).
    #[error("line {line}: {why}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Deserialize)]
struct Line {
    t_us: u64,
    player: u64,
    item: String,
    fact: FactKind,
    #[serde(default)]
    op: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FactKind {
    With,
    Left,
    Doubt,
}

/// A fact the store does not show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Item id.
    pub item: u128,
    /// The player of the fact.
    pub player: u64,
    /// `true`: confirmed in the player's inventory; `false`: confirmed out of it.
    pub with: bool,
    /// The operation that confirmed it.
    pub op: String,
    /// When (microseconds since the run started).
    pub t_us: u64,
    /// What the store holds (`None`: no record of the item at all).
    pub found: Option<Option<Owner>>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claim = if self.with { "in" } else { "out of" };
        let found = match &self.found {
            None => "no record of the item".to_owned(),
            Some(None) => "destroyed".to_owned(),
            Some(Some(o)) => format!("owned by {o:?}"),
        };
        write!(
            f,
            "item {}: confirmed {claim} player {}'s inventory ({} at {:.3} s), store: {found}",
            self.item,
            self.player,
            self.op,
            self.t_us as f64 / 1e6
        )
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpsReport {
    /// Records read.
    pub records: u64,
    /// Distinct items with at least one confirmed fact.
    pub items: u64,
    /// Items whose last fact is `with` and that the store shows with that player.
    pub held_as_confirmed: u64,
    /// Items whose last fact is `left` and that the store shows elsewhere.
    pub gone_as_confirmed: u64,
    /// Items with an unanswered operation after their last fact (not checked).
    pub in_doubt: u64,
    /// A torn last line was skipped.
    pub torn_last_line: bool,
    /// Facts the store does not show (at most 20 listed, see `mismatch_count`).
    pub mismatches: Vec<Mismatch>,
    /// Every mismatch.
    pub mismatch_count: u64,
}

impl OpsReport {
    /// Whether every confirmed fact holds.
    pub fn is_clean(&self) -> bool {
        self.mismatch_count == 0
    }
}

impl fmt::Display for OpsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "confirmed operations: {} records, {} items; {} held as confirmed, {} gone as confirmed, {} in doubt (an unanswered operation came after), {} lost",
            self.records,
            self.items,
            self.held_as_confirmed,
            self.gone_as_confirmed,
            self.in_doubt,
            self.mismatch_count
        )?;
        if self.torn_last_line {
            writeln!(f, "  (a torn last line was skipped)")?;
        }
        for m in &self.mismatches {
            writeln!(f, "  LOST {m}")?;
        }
        if self.mismatch_count > self.mismatches.len() as u64 {
            writeln!(
                f,
                "  ... and {} more",
                self.mismatch_count - self.mismatches.len() as u64
            )?;
        }
        Ok(())
    }
}

/// The last confirmed fact about an item.
#[derive(Debug, Clone)]
struct Last {
    t_us: u64,
    player: u64,
    with: bool,
    op: String,
}

/// Checks the log read from `log` against `store`.
pub fn verify(store: &dyn Store, log: impl BufRead) -> Result<OpsReport, VerifyError> {
    let mut report = OpsReport::default();
    let mut last: HashMap<u128, Last> = HashMap::new();
    // Latest doubt per item, and per player for unknown items.
    let mut doubt_item: HashMap<u128, u64> = HashMap::new();
    let mut doubt_any: HashMap<u64, u64> = HashMap::new();
    let mut pending_error: Option<VerifyError> = None;
    for (n, line) in log.lines().enumerate() {
        let line = line?;
        if let Some(e) = pending_error.take() {
            // Only the last line may be torn.
            return Err(e);
        }
        if line.trim().is_empty() {
            continue;
        }
        let rec: Line = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                pending_error = Some(VerifyError::Malformed {
                    line: n + 1,
                    why: e.to_string(),
                });
                continue;
            }
        };
        report.records += 1;
        let item = if rec.item == "*" {
            None
        } else {
            match rec.item.parse::<u128>() {
                Ok(i) => Some(i),
                Err(e) => {
                    return Err(VerifyError::Malformed {
                        line: n + 1,
                        why: format!("item {:?}: {e}", rec.item),
                    })
                }
            }
        };
        match (rec.fact, item) {
            (FactKind::Doubt, Some(i)) => {
                let t = doubt_item.entry(i).or_default();
                *t = (*t).max(rec.t_us);
            }
            (FactKind::Doubt, None) => {
                let t = doubt_any.entry(rec.player).or_default();
                *t = (*t).max(rec.t_us);
            }
            (fact, Some(i)) => {
                let newer = last.get(&i).is_none_or(|l| rec.t_us >= l.t_us);
                if newer {
                    last.insert(
                        i,
                        Last {
                            t_us: rec.t_us,
                            player: rec.player,
                            with: fact == FactKind::With,
                            op: rec.op,
                        },
                    );
                }
            }
            (_, None) => {
                return Err(VerifyError::Malformed {
                    line: n + 1,
                    why: "a `with` or `left` fact needs an item id".into(),
                })
            }
        }
    }
    report.torn_last_line = pending_error.is_some();
    report.items = last.len() as u64;
    let mut items: Vec<(u128, Last)> = last.into_iter().collect();
    items.sort_by_key(|(i, l)| (l.t_us, *i));
    for (item, l) in items {
        let doubted = doubt_item.get(&item).is_some_and(|&t| t >= l.t_us)
            || (!l.with && doubt_any.get(&l.player).is_some_and(|&t| t >= l.t_us));
        if doubted {
            report.in_doubt += 1;
            continue;
        }
        let found = store.item(item)?.map(|r| r.owner);
        let holds = matches!(found, Some(Some(Owner::Player(p))) if p == l.player);
        let ok = match (l.with, &found) {
            (true, _) => holds,
            (false, None) => false,
            (false, Some(_)) => !holds,
        };
        if ok {
            if l.with {
                report.held_as_confirmed += 1;
            } else {
                report.gone_as_confirmed += 1;
            }
            continue;
        }
        report.mismatch_count += 1;
        if report.mismatches.len() < LISTED {
            report.mismatches.push(Mismatch {
                item,
                player: l.player,
                with: l.with,
                op: l.op,
                t_us: l.t_us,
                found,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;
    use crate::store::{ItemOp, ItemOpKind, ItemStore};

    /// Removes its directory when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store_with(items: &[(u128, Option<Owner>)]) -> (TempDir, RedbStore) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = TempDir(std::env::temp_dir().join(format!(
            "zonehost-verify-ops-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let store = RedbStore::open(&dir.0.join("s.redb")).expect("open");
        for (n, (item, owner)) in items.iter().enumerate() {
            let create = ItemOp {
                op_id: (n as u128) * 2 + 1,
                item_id: *item,
                kind: ItemOpKind::Create {
                    owner: Owner::Player(1),
                    data: vec![1],
                },
            };
            store.apply_item_op(&create).expect("create");
            let second = match owner {
                Some(Owner::Player(1)) => None,
                Some(to) => Some(ItemOpKind::Transfer {
                    from: Owner::Player(1),
                    to: *to,
                }),
                None => Some(ItemOpKind::Destroy {
                    from: Owner::Player(1),
                }),
            };
            if let Some(kind) = second {
                let op = ItemOp {
                    op_id: (n as u128) * 2 + 2,
                    item_id: *item,
                    kind,
                };
                store.apply_item_op(&op).expect("second op");
            }
        }
        (dir, store)
    }

    fn line(t: u64, player: u64, item: &str, fact: &str) -> String {
        format!(r#"{{"t_us":{t},"player":{player},"item":"{item}","fact":"{fact}","op":"x"}}"#)
    }

    fn run(store: &RedbStore, lines: &[String]) -> Result<OpsReport, VerifyError> {
        verify(store, lines.join("\n").as_bytes())
    }

    #[test]
    fn facts_the_store_shows_pass() {
        let (_d, s) = store_with(&[
            (10, Some(Owner::Player(1))),
            (11, Some(Owner::Player(2))),
            (12, None),
            (13, Some(Owner::Ground { instance: 4 })),
        ]);
        let r = run(
            &s,
            &[
                line(1, 1, "10", "with"),
                line(2, 1, "11", "with"),
                line(3, 1, "11", "left"),
                line(4, 2, "11", "with"),
                line(5, 1, "12", "left"),
                line(6, 1, "13", "left"),
            ],
        )
        .expect("verify");
        assert!(r.is_clean(), "{r}");
        assert_eq!(
            (r.items, r.held_as_confirmed, r.gone_as_confirmed),
            (4, 2, 2)
        );
    }

    #[test]
    fn a_lost_pick_up_and_an_undone_drop_are_found() {
        let (_d, s) = store_with(&[
            (10, Some(Owner::Ground { instance: 4 })),
            (11, Some(Owner::Player(1))),
        ]);
        let r = run(
            &s,
            &[
                line(1, 1, "10", "with"),
                line(2, 1, "11", "left"),
                line(3, 1, "99", "with"),
            ],
        )
        .expect("verify");
        assert_eq!(r.mismatch_count, 3, "{r}");
        assert!(!r.is_clean());
        assert_eq!(r.mismatches[2].found, None, "99 has no record");
        assert!(r.to_string().contains("LOST item 10"), "{r}");
    }

    #[test]
    fn doubts_after_the_last_fact_excuse_it_earlier_ones_do_not() {
        let (_d, s) = store_with(&[
            (10, Some(Owner::Ground { instance: 4 })),
            (11, Some(Owner::Player(1))),
            (12, Some(Owner::Ground { instance: 4 })),
        ]);
        let r = run(
            &s,
            &[
                // An unanswered drop of 10 after its pick-up: either outcome.
                line(1, 1, "10", "with"),
                line(2, 1, "10", "doubt"),
                // An unanswered pick-up (unknown item) after 11 was dropped.
                line(3, 1, "11", "left"),
                line(4, 1, "*", "doubt"),
                // A doubt before the last fact does not excuse it.
                line(5, 1, "12", "doubt"),
                line(6, 1, "12", "with"),
            ],
        )
        .expect("verify");
        assert_eq!(r.in_doubt, 2, "{r}");
        assert_eq!(r.mismatch_count, 1, "{r}");
        assert_eq!(r.mismatches[0].item, 12);
        // Another player's unknown pick-up does not excuse player 1's drop.
        let (_d, s) = store_with(&[(11, Some(Owner::Player(1)))]);
        let r = run(&s, &[line(3, 1, "11", "left"), line(4, 2, "*", "doubt")]).expect("verify");
        assert_eq!(r.mismatch_count, 1, "{r}");
    }

    #[test]
    fn a_torn_last_line_is_tolerated_a_bad_line_before_it_is_not() {
        let (_d, s) = store_with(&[(10, Some(Owner::Player(1)))]);
        let torn = [line(1, 1, "10", "with"), r#"{"t_us":2,"pla"#.to_owned()];
        let r = run(&s, &torn).expect("verify");
        assert!(r.torn_last_line && r.is_clean(), "{r}");
        let bad = [r#"{"t_us":2,"pla"#.to_owned(), line(1, 1, "10", "with")];
        assert!(matches!(
            run(&s, &bad),
            Err(VerifyError::Malformed { line: 1, .. })
        ));
        let no_item = [line(1, 1, "*", "with")];
        assert!(matches!(
            run(&s, &no_item),
            Err(VerifyError::Malformed { line: 1, .. })
        ));
        let bad_id = [line(1, 1, "ten", "with")];
        assert!(matches!(
            run(&s, &bad_id),
            Err(VerifyError::Malformed { line: 1, .. })
        ));
    }
}
