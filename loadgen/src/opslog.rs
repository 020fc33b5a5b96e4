//! The confirmed-operations log (`--ops-log FILE`): what the server confirmed about each
//! item a bot touched, as JSON lines, for `zonehost store verify-ops` to check against the
//! store after a drill (docs/persistence.md, *Checking a drill against the store*).
//!
//! One record per line: `{"t_us":…,"player":…,"item":"…","fact":"…","op":"…"}` with
//! `t_us` microseconds since the run started (one clock for every bot), `player` the
//! player id of the `Welcome`, `item` the item id in decimal (a `u128` does not fit a JSON
//! number) or `"*"`, and `fact` one of:
//! - `with`: the server confirmed the item is in this player's inventory (a `PickUp`
//!   answered `Done`, or the `Traded` event of a committed trade);
//! - `left`: it confirmed the item left it (`Drop` or `UseItem` answered `Done`, `Traded`);
//! - `doubt`: an operation on the item was sent and never answered (the connection was
//!   lost or the run ended), or the item was on offer in a trade that had not ended: the
//!   store may or may not hold its effect. `"*"`: an unanswered `PickUp` of a ground item
//!   whose id the bot did not learn, so any item this player let go before may be back.
//!
//! Only answers that SPEC.md says come after the store committed are facts: `Done` of
//! the durable kinds (`PickUp`, `Drop`, `UseItem`) and a committed trade's `Traded`. The
//! `PickedUp`, `Dropped` and `Consumed` events go out before the commit and only tell which
//! item an answer is about.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::time::Instant;
use zonehost_protocol::message::{Event, InventoryEvent, TradeEvent};

use crate::stats::Metric;

/// Bounds the ledger's short memories (a bot has at most one request in flight).
const RECENT: usize = 8;

/// What the server confirmed about an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Fact {
    /// In the player's inventory.
    With,
    /// Out of the player's inventory.
    Left,
    /// An operation on it was never answered.
    Doubt,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// When the bot learnt it.
    pub(crate) at: Instant,
    /// Player id.
    pub(crate) player: u64,
    /// Item id; `None`: unknown (see the module documentation).
    pub(crate) item: Option<u128>,
    /// What is known.
    pub(crate) fact: Fact,
    /// The operation: `pick_up`, `drop`, `use_item` or `trade`.
    pub(crate) op: &'static str,
}

#[derive(Serialize)]
struct Line<'a> {
    t_us: u64,
    player: u64,
    item: String,
    fact: Fact,
    op: &'a str,
}

/// The log file every bot of a run appends to.
#[derive(Debug)]
pub(crate) struct OpsLog {
    out: Mutex<BufWriter<File>>,
    start: Instant,
    records: AtomicU64,
    write_errors: AtomicU64,
}

impl OpsLog {
    /// Creates (truncates) `path`; `start` is time zero of the records.
    pub(crate) fn create(path: &Path, start: Instant) -> std::io::Result<Self> {
        Ok(Self {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
            start,
            records: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        })
    }

    /// Appends records (buffered: [`OpsLog::flush`] at the end of the run).
    pub(crate) fn write(&self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            let line = Line {
                t_us: r.at.saturating_duration_since(self.start).as_micros() as u64,
                player: r.player,
                item: r.item.map_or_else(|| "*".to_owned(), |i| i.to_string()),
                fact: r.fact,
                op: r.op,
            };
            let written = serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            match written {
                Ok(()) => self.records.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.write_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// Writes out what is buffered.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }

    /// Records written so far.
    pub(crate) fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Records that could not be written.
    pub(crate) fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
}

/// One bot's view of its item operations during one session: turns requests, answers and
/// events into [`Record`]s.
#[derive(Debug, Default)]
pub(crate) struct ItemLedger {
    player: u64,
    /// The request in flight: (request id, what it is, item or ground entity).
    pending: Option<(u32, Metric, u128)>,
    /// `PickedUp` events: (ground entity, item).
    picked: Vec<(u32, u128)>,
    /// `Consumed` events.
    consumed: Vec<u128>,
    /// Items on offer in the trade this bot takes part in (both sides).
    trade_items: Vec<u128>,
    out: Vec<Record>,
}

fn remember<T>(v: &mut Vec<T>, x: T) {
    if v.len() == RECENT {
        v.remove(0);
    }
    v.push(x);
}

impl ItemLedger {
    /// A ledger for a session of `player`.
    pub(crate) fn new(player: u64) -> Self {
        Self {
            player,
            ..Self::default()
        }
    }

    fn record(&mut self, item: Option<u128>, fact: Fact, op: &'static str, at: Instant) {
        self.out.push(Record {
            at,
            player: self.player,
            item,
            fact,
            op,
        });
    }

    /// A request went out (`item`: the item, or the ground entity of a `PickUp`).
    pub(crate) fn request_sent(&mut self, id: u32, metric: Metric, item: u128) {
        if matches!(metric, Metric::PickUp | Metric::Drop | Metric::UseItem) {
            self.pending = Some((id, metric, item));
        }
    }

    /// A response arrived (`done`: `Done`, else refused: a refusal changes nothing).
    pub(crate) fn response(&mut self, id: u32, done: bool, at: Instant) {
        let Some((_, metric, item)) = self.pending.filter(|(p, _, _)| *p == id) else {
            return;
        };
        self.pending = None;
        if !done {
            return;
        }
        match metric {
            Metric::PickUp => {
                let ground = item as u32;
                match self.picked.iter().position(|(g, _)| *g == ground) {
                    Some(i) => {
                        let (_, id) = self.picked.remove(i);
                        self.record(Some(id), Fact::With, "pick_up", at);
                    }
                    // The event naming the item did not arrive first: which item this
                    // player now holds is unknown.
                    None => self.record(None, Fact::Doubt, "pick_up", at),
                }
            }
            Metric::Drop => self.record(Some(item), Fact::Left, "drop", at),
            Metric::UseItem => {
                if let Some(i) = self.consumed.iter().position(|c| *c == item) {
                    self.consumed.remove(i);
                    self.record(Some(item), Fact::Left, "use_item", at);
                }
            }
            _ => {}
        }
    }

    /// A game event arrived.
    pub(crate) fn event(&mut self, ev: &Event, at: Instant) {
        match ev {
            Event::Inventory(InventoryEvent::PickedUp { item, ground }) => {
                remember(&mut self.picked, (*ground, item.id));
            }
            Event::Inventory(InventoryEvent::Consumed { item, .. }) => {
                remember(&mut self.consumed, *item);
            }
            Event::Inventory(InventoryEvent::Traded {
                given, received, ..
            }) => {
                for &g in given {
                    self.record(Some(g), Fact::Left, "trade", at);
                }
                for r in received {
                    self.record(Some(r.id), Fact::With, "trade", at);
                }
                self.trade_items.clear();
            }
            Event::Trade(TradeEvent::Updated { mine, theirs, .. }) => {
                self.trade_items.clear();
                self.trade_items.extend(&mine.items);
                self.trade_items.extend(&theirs.items);
            }
            Event::Trade(TradeEvent::Ended { .. }) => self.trade_items.clear(),
            _ => {}
        }
    }

    /// The session ended (lost, redirected, or the run is over): what was in flight is in
    /// doubt.
    pub(crate) fn session_ended(&mut self, at: Instant) {
        if let Some((_, metric, item)) = self.pending.take() {
            match metric {
                Metric::PickUp => self.record(None, Fact::Doubt, "pick_up", at),
                Metric::Drop => self.record(Some(item), Fact::Doubt, "drop", at),
                _ => self.record(Some(item), Fact::Doubt, "use_item", at),
            }
        }
        for item in std::mem::take(&mut self.trade_items) {
            self.record(Some(item), Fact::Doubt, "trade", at);
        }
    }

    /// Takes the records made since the last call.
    pub(crate) fn take(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.out)
    }

    /// Whether records are waiting for [`ItemLedger::take`].
    pub(crate) fn has_records(&self) -> bool {
        !self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonehost_protocol::message::{ItemInfo, TradeEndReason, TradeOffer};

    fn item(id: u128) -> ItemInfo {
        ItemInfo {
            id,
            base: 1,
            rarity: 0,
            level: 1,
            unique: None,
            affixes: Vec::new(),
        }
    }

    fn facts(l: &mut ItemLedger) -> Vec<(Option<u128>, Fact, &'static str)> {
        l.take()
            .into_iter()
            .map(|r| (r.item, r.fact, r.op))
            .collect()
    }

    #[test]
    fn a_pick_up_is_a_fact_only_once_done_and_names_the_item_of_its_event() {
        let t = Instant::now();
        let mut l = ItemLedger::new(7);
        l.request_sent(1, Metric::PickUp, 300);
        l.event(
            &Event::Inventory(InventoryEvent::PickedUp {
                item: item(11),
                ground: 300,
            }),
            t,
        );
        assert!(!l.has_records(), "the event comes before the commit");
        l.response(1, true, t);
        assert_eq!(facts(&mut l), vec![(Some(11), Fact::With, "pick_up")]);
        // A done pick-up whose event never came: which item is unknown.
        l.request_sent(2, Metric::PickUp, 301);
        l.response(2, true, t);
        assert_eq!(facts(&mut l), vec![(None, Fact::Doubt, "pick_up")]);
    }

    #[test]
    fn refusals_and_other_answers_are_no_facts() {
        let t = Instant::now();
        let mut l = ItemLedger::new(7);
        l.request_sent(1, Metric::Drop, 11);
        l.response(1, false, t);
        l.request_sent(2, Metric::Attack, 0);
        l.response(2, true, t);
        l.response(99, true, t);
        // UseItem of something that was not consumed (no event): no change.
        l.request_sent(3, Metric::UseItem, 12);
        l.response(3, true, t);
        assert!(facts(&mut l).is_empty());
        l.request_sent(4, Metric::Drop, 11);
        l.response(4, true, t);
        l.request_sent(5, Metric::UseItem, 12);
        l.event(
            &Event::Inventory(InventoryEvent::Consumed {
                item: 12,
                healed: 5,
            }),
            t,
        );
        l.response(5, true, t);
        assert_eq!(
            facts(&mut l),
            vec![
                (Some(11), Fact::Left, "drop"),
                (Some(12), Fact::Left, "use_item")
            ]
        );
    }

    #[test]
    fn trades_are_facts_when_traded_and_doubts_when_cut_short() {
        let t = Instant::now();
        let mut l = ItemLedger::new(7);
        let offer = |items: Vec<u128>| TradeOffer {
            items,
            gold: 0,
            accepted: true,
        };
        l.event(
            &Event::Trade(TradeEvent::Updated {
                trade: 1,
                partner: 8,
                partner_entity: 3,
                mine: offer(vec![11]),
                theirs: offer(vec![21]),
                committing: true,
            }),
            t,
        );
        l.event(
            &Event::Inventory(InventoryEvent::Traded {
                trade: 1,
                given: vec![11],
                received: vec![item(21)],
            }),
            t,
        );
        l.session_ended(t);
        assert_eq!(
            facts(&mut l),
            vec![
                (Some(11), Fact::Left, "trade"),
                (Some(21), Fact::With, "trade")
            ]
        );
        // The connection lost while a trade was open, a drop in flight.
        l.event(
            &Event::Trade(TradeEvent::Updated {
                trade: 2,
                partner: 8,
                partner_entity: 3,
                mine: offer(vec![12]),
                theirs: offer(vec![22]),
                committing: true,
            }),
            t,
        );
        l.request_sent(9, Metric::Drop, 13);
        l.session_ended(t);
        assert_eq!(
            facts(&mut l),
            vec![
                (Some(13), Fact::Doubt, "drop"),
                (Some(12), Fact::Doubt, "trade"),
                (Some(22), Fact::Doubt, "trade")
            ]
        );
        // An ended trade leaves nothing in doubt.
        l.event(
            &Event::Trade(TradeEvent::Updated {
                trade: 3,
                partner: 8,
                partner_entity: 3,
                mine: offer(vec![14]),
                theirs: offer(vec![]),
                committing: false,
            }),
            t,
        );
        l.event(
            &Event::Trade(TradeEvent::Ended {
                trade: 3,
                reason: TradeEndReason::Cancelled,
            }),
            t,
        );
        l.session_ended(t);
        assert!(facts(&mut l).is_empty());
    }

    #[test]
    fn the_log_writes_one_json_line_per_record() {
        let dir = std::env::temp_dir().join(format!("opslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("ops.jsonl");
        let start = Instant::now();
        let log = OpsLog::create(&path, start).expect("create");
        let big = u128::MAX - 1;
        log.write(&[
            Record {
                at: start,
                player: 5,
                item: Some(big),
                fact: Fact::With,
                op: "pick_up",
            },
            Record {
                at: start,
                player: 5,
                item: None,
                fact: Fact::Doubt,
                op: "pick_up",
            },
        ]);
        log.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["item"], big.to_string());
        assert_eq!(lines[0]["fact"], "with");
        assert_eq!(lines[1]["item"], "*");
        assert_eq!(lines[1]["player"], 5);
        assert_eq!(log.records(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
