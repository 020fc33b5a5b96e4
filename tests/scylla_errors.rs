//! The ScyllaDB backend's error paths, against `scylla-proxy` in dry mode (no ScyllaDB
//! behind it): the real driver, the real prepared statements and execution profiles, and
//! a proxy that answers each request from a per-test script.
//!
//! The proxy plays a node only as far as the driver needs to get a session up: `OPTIONS`,
//! `STARTUP`, `REGISTER`; the control connection's metadata queries fail (the driver then
//! runs on its contact points with dummy metadata); `USE` and `PREPARE` are answered with
//! the keyspace and with prepared metadata derived from the statement text and the column
//! types of `deploy/scylla/schema.cql`. Every `EXECUTE` goes to the test's script, which
//! sees which statement it is and at which consistency, counts it, and answers one fixed
//! response per request (an error, an LWT's `[applied]`, a scripted row, or nothing): no
//! data model, no fake storage semantics.
//!
//! What is proven:
//! - `Unavailable`, `Overloaded` and read timeouts come back as typed
//!   [`StoreError::Scylla`] errors with their [`DbFailure`] kind;
//! - an LWT refused with `Unavailable` or `Overloaded` is not applied: a typed error, sent
//!   once, no re-read, and the owner-index entry written ahead of it is taken back;
//! - an LWT `WriteTimeout` (CAS) is an unknown outcome resolved by one LOCAL_SERIAL re-read
//!   (the row carries our op id: applied), never by sending the LWT again;
//! - when that re-read fails too, the caller gets [`StoreError::UnknownOutcome`] and the
//!   LWT was still sent only once (no blind retry), and nothing was logged as done;
//! - a client-side timeout of an LWT is resolved the same way: the re-read shows the
//!   condition still holds and the op not applied, and only then is the LWT sent again;
//! - a checkpoint's fenced LWT that times out is resolved by a LOCAL_SERIAL fence re-read
//!   (our fence stored: saved), or is an unknown outcome when that read fails, sent once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use scylla_cql::frame::response::error::{DbError, WriteType};
use scylla_cql::frame::types::{write_int, write_short, write_short_bytes, write_string};
use scylla_cql::Consistency;
use scylla_proxy::{
    Condition, Node, Proxy, Reaction, RequestFrame, RequestOpcode, RequestReaction, RequestRule,
    ResponseFrame, ResponseOpcode, RunningProxy, ShardAwareness,
};
use zonehost::store::scylla::{ScyllaConfig, ScyllaStore};
use zonehost::store::{
    DbFailure, Invitation, ItemOp, ItemOpKind, ItemOutcome, Owner, PartyRecord, StoreError,
};
use zonehost::store::{ItemStore, PartyStore, PlayerStore};

// ---------------------------------------------------------------------------------------
// Prepared metadata from the statement text

const KEYSPACE: &str = "zonehost";

/// CQL type option ids.
const BIGINT: u16 = 0x0002;
const BLOB: u16 = 0x0003;
const BOOLEAN: u16 = 0x0004;
const INT: u16 = 0x0009;
const TEXT: u16 = 0x000D;
/// Not a CQL type id: `list<bigint>` (an option with its element type), expanded by
/// [`put_specs`].
const LIST_BIGINT: u16 = 0xFF20;

/// Column types of `deploy/scylla/schema.cql`, plus the names of non-column markers.
fn type_of(name: &str) -> u16 {
    match name.strip_prefix("if_").unwrap_or(name) {
        "player_id" | "epoch" | "seq" | "level" | "xp" | "gold" | "saved_at_ms"
        | "expires_at_ms" | "now_ms" | "party_id" | "leader" | "version" => BIGINT,
        "members" | "invites" => LIST_BIGINT,
        "schema_version" | "zone" | "x_mm" | "y_mm" | "ttl" | "[ttl]" => INT,
        "name" | "owner" | "resource" | "holder" => TEXT,
        "[applied]" => BOOLEAN,
        _ => BLOB,
    }
}

fn tokens(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in cql.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' || c == '[' || c == ']' {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn table_of(t: &[String]) -> String {
    t.windows(2)
        .find(|w| {
            matches!(
                w[0].to_ascii_uppercase().as_str(),
                "FROM" | "INTO" | "UPDATE"
            )
        })
        .map(|w| w[1].clone())
        .unwrap_or_default()
}

/// `(name, type)` of each bind marker, in order.
fn bind_markers(t: &[String]) -> Vec<(String, u16)> {
    let upper: Vec<String> = t.iter().map(|s| s.to_ascii_uppercase()).collect();
    // INSERT INTO t (a, b) VALUES (?, ?): the k-th marker binds the k-th column.
    let insert_cols: Vec<String> = if upper.first().map(String::as_str) == Some("INSERT") {
        let open = t.iter().position(|s| s == "(").unwrap_or(0);
        let close = t.iter().position(|s| s == ")").unwrap_or(0);
        t[open + 1..close]
            .iter()
            .filter(|s| *s != ",")
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let mut in_values = 0usize;
    let mut out = Vec::new();
    for (i, tok) in t.iter().enumerate() {
        let positional = tok == "?";
        let named = tok.strip_prefix(':').map(str::to_owned);
        if !positional && named.is_none() {
            continue;
        }
        let name = if let Some(n) = named {
            n
        } else if !insert_cols.is_empty() && upper[..i].contains(&"VALUES".to_owned()) {
            in_values += 1;
            insert_cols[in_values - 1].clone()
        } else if i >= 1 && upper[i - 1] == "TTL" {
            "[ttl]".to_owned()
        } else if i >= 2 && matches!(t[i - 1].as_str(), "=" | "<" | ">") {
            t[i - 2].clone()
        } else {
            format!("marker{i}")
        };
        let ty = type_of(&name);
        out.push((name, ty));
    }
    out
}

/// `(name, type)` of the columns a SELECT returns (`a AS b` returns `b`).
fn select_columns(t: &[String]) -> Vec<(String, u16)> {
    if !t.first().is_some_and(|s| s.eq_ignore_ascii_case("SELECT")) {
        return Vec::new();
    }
    let from = t
        .iter()
        .position(|s| s.eq_ignore_ascii_case("FROM"))
        .unwrap_or(t.len());
    let mut out = Vec::new();
    for part in t[1..from].split(|s| s == ",") {
        if let Some(name) = part.last() {
            out.push((name.clone(), type_of(&part[0])));
        }
    }
    out
}

fn put_specs(body: &mut BytesMut, table: &str, cols: &[(String, u16)]) {
    if !cols.is_empty() {
        write_string(KEYSPACE, body).expect("keyspace");
        write_string(table, body).expect("table");
    }
    for (name, ty) in cols {
        write_string(name, body).expect("column name");
        if *ty == LIST_BIGINT {
            write_short(0x0020, body);
            write_short(BIGINT, body);
        } else {
            write_short(*ty, body);
        }
    }
}

/// A `RESULT Prepared` for `cql` with statement id `id`.
fn prepared(request: &RequestFrame, id: &[u8], cql: &str) -> ResponseFrame {
    let t = tokens(cql);
    let table = table_of(&t);
    let binds = bind_markers(&t);
    let result = select_columns(&t);
    let mut body = BytesMut::new();
    write_int(0x0004, &mut body);
    write_short_bytes(id, &mut body).expect("id");
    // Prepared metadata: global table spec, no partition key indexes.
    write_int(i32::from(!binds.is_empty()), &mut body);
    write_int(binds.len() as i32, &mut body);
    write_int(0, &mut body);
    put_specs(&mut body, &table, &binds);
    // Result metadata.
    write_int(i32::from(!result.is_empty()), &mut body);
    write_int(result.len() as i32, &mut body);
    put_specs(&mut body, &table, &result);
    ResponseFrame::new(
        request.params.for_response(),
        ResponseOpcode::Result,
        body.freeze(),
    )
}

fn statement_id(cql: &str) -> Vec<u8> {
    // FNV-1a: distinct texts get distinct ids, the same text the same id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cql.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h.to_be_bytes().to_vec()
}

// ---------------------------------------------------------------------------------------
// Scripted answers

/// One answer to an EXECUTE.
#[derive(Debug, Clone)]
enum Answer {
    /// `RESULT Void` (a plain write).
    Void,
    /// An LWT's result: `[applied]` only.
    Applied(bool),
    /// Rows of the statement's result columns (`None` = null cell).
    Rows(Vec<Vec<Option<Vec<u8>>>>),
    /// A CQL error.
    Error(DbError),
}

/// What the script saw: each EXECUTE's statement text and consistency, in order.
#[derive(Debug, Clone, Default)]
struct Seen {
    executes: Vec<(String, Consistency)>,
}

impl Seen {
    fn count(&self, cql_start: &str) -> usize {
        self.executes
            .iter()
            .filter(|(q, _)| q.starts_with(cql_start))
            .count()
    }
}

type Script = dyn Fn(&str, usize) -> Answer + Send + Sync;

struct Harness {
    proxy: RunningProxy,
    store: Option<Arc<ScyllaStore>>,
    seen: Arc<Mutex<Seen>>,
}

/// The item transfer LWT of the backend (its text, as prepared).
const TRANSFER: &str = "UPDATE items SET owner = :owner, last_op = :last_op WHERE item_id = :item_id IF owner = :if_owner";

fn consistency_of(body: &[u8]) -> Option<Consistency> {
    let mut b = body;
    let id_len = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    b = b.get(2 + id_len..)?;
    let raw = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    Consistency::try_from(raw).ok()
}

fn execute_id(body: &[u8]) -> Option<Vec<u8>> {
    let id_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2..2 + id_len).map(<[u8]>::to_vec)
}

fn answer_frame(request: &RequestFrame, cql: &str, answer: Answer) -> ResponseFrame {
    let mut body = BytesMut::new();
    match answer {
        Answer::Void => write_int(0x0001, &mut body),
        Answer::Applied(applied) => {
            write_int(0x0002, &mut body);
            write_int(1, &mut body);
            write_int(1, &mut body);
            put_specs(
                &mut body,
                &table_of(&tokens(cql)),
                &[("[applied]".to_owned(), BOOLEAN)],
            );
            write_int(1, &mut body);
            write_int(1, &mut body);
            body.put_u8(u8::from(applied));
        }
        Answer::Rows(rows) => {
            let t = tokens(cql);
            let cols = select_columns(&t);
            write_int(0x0002, &mut body);
            write_int(1, &mut body);
            write_int(cols.len() as i32, &mut body);
            put_specs(&mut body, &table_of(&t), &cols);
            write_int(rows.len() as i32, &mut body);
            for row in rows {
                for cell in row {
                    match cell {
                        Some(v) => {
                            write_int(v.len() as i32, &mut body);
                            body.put_slice(&v);
                        }
                        None => write_int(-1, &mut body),
                    }
                }
            }
        }
        Answer::Error(e) => {
            return ResponseFrame::forged_error(request.params.for_response(), e, Some("scripted"))
                .expect("a forgeable error")
        }
    }
    ResponseFrame::new(
        request.params.for_response(),
        ResponseOpcode::Result,
        body.freeze(),
    )
}

impl Harness {
    /// A dry-mode proxy node on 127.0.0.1, answering EXECUTEs with
    /// `script(statement, nth execution of it)`; with `delay_first_transfer`, the first
    /// execution of [`TRANSFER`] is answered (a CAS write timeout) only after that long
    /// and is not shown to the script. Then a store connected through it.
    async fn start(
        script: Arc<Script>,
        delay_first_transfer: Option<Duration>,
        config: impl FnOnce(&mut ScyllaConfig),
    ) -> Self {
        // A free TCP port on 127.0.0.1 (the listener is closed just before the proxy binds).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1");
        let ids: Arc<Mutex<HashMap<Vec<u8>, String>>> = Arc::default();
        let seen: Arc<Mutex<Seen>> = Arc::default();

        let responder = {
            let ids = ids.clone();
            let seen = seen.clone();
            Arc::new(move |frame: RequestFrame| {
                let cql = execute_id(&frame.body)
                    .and_then(|id| ids.lock().expect("ids").get(&id).cloned())
                    .unwrap_or_default();
                let consistency = consistency_of(&frame.body).unwrap_or(Consistency::Any);
                let nth = {
                    let mut s = seen.lock().expect("seen");
                    s.executes.push((cql.clone(), consistency));
                    s.executes.iter().filter(|(q, _)| *q == cql).count()
                };
                answer_frame(&frame, &cql, script(&cql, nth))
            })
        };
        let mut rules = vec![
            RequestRule(
                Condition::RequestOpcode(RequestOpcode::Options),
                RequestReaction::forge_response(Arc::new(|f: RequestFrame| {
                    ResponseFrame::forged_supported(f.params, &HashMap::new()).expect("SUPPORTED")
                })),
            ),
            RequestRule(
                Condition::RequestOpcode(RequestOpcode::Startup)
                    .or(Condition::RequestOpcode(RequestOpcode::Register)),
                RequestReaction::forge_response(Arc::new(|f: RequestFrame| {
                    ResponseFrame::forged_ready(f.params)
                })),
            ),
            RequestRule(
                Condition::RequestOpcode(RequestOpcode::Query)
                    .and(Condition::BodyContainsCaseInsensitive(Box::new(*b"USE "))),
                RequestReaction::forge_response(Arc::new(|f: RequestFrame| {
                    let mut body = BytesMut::new();
                    write_int(0x0003, &mut body);
                    write_string(KEYSPACE, &mut body).expect("keyspace");
                    ResponseFrame::new(
                        f.params.for_response(),
                        ResponseOpcode::Result,
                        body.freeze(),
                    )
                })),
            ),
            // Topology and schema reads of the control connection fail: the driver then
            // works from its contact points.
            RequestRule(
                Condition::RequestOpcode(RequestOpcode::Query),
                RequestReaction::forge().server_error(),
            ),
            RequestRule(Condition::RequestOpcode(RequestOpcode::Prepare), {
                let ids = ids.clone();
                RequestReaction::forge_response(Arc::new(move |f: RequestFrame| {
                    let mut b: &[u8] = &f.body;
                    let cql = scylla_cql::frame::types::read_long_string(&mut b)
                        .unwrap_or_default()
                        .to_owned();
                    let id = statement_id(&cql);
                    ids.lock().expect("ids").insert(id.clone(), cql.clone());
                    prepared(&f, &id, &cql)
                }))
            }),
        ];
        if let Some(delay) = delay_first_transfer {
            rules.push(RequestRule(
                Condition::RequestOpcode(RequestOpcode::Execute)
                    .and(Condition::BodyContainsCaseSensitive(
                        statement_id(TRANSFER).into_boxed_slice(),
                    ))
                    .and(Condition::TrueForLimitedTimes(1)),
                RequestReaction::forge_response_with_delay(
                    delay,
                    Arc::new(|f: RequestFrame| {
                        answer_frame(&f, TRANSFER, Answer::Error(cas_timeout()))
                    }),
                ),
            ));
        }
        rules.push(RequestRule(
            Condition::RequestOpcode(RequestOpcode::Execute)
                .or(Condition::RequestOpcode(RequestOpcode::Batch)),
            RequestReaction::forge_response(responder),
        ));
        let proxy = Proxy::new([Node::builder()
            .proxy_address(addr)
            .shard_awareness(ShardAwareness::Unaware)
            .request_rules(rules)
            .build_dry_mode()]);
        let proxy = proxy.run().await.expect("the proxy runs");
        let mut cfg = ScyllaConfig::with_uri(&addr.to_string());
        // Generous: only the client-timeout case relies on a timeout, and sets its own.
        cfg.connect_timeout_ms = 5_000;
        cfg.request_timeout_ms = 5_000;
        cfg.lwt_timeout_ms = 5_000;
        config(&mut cfg);
        let store = tokio::task::spawn_blocking(move || ScyllaStore::connect(&cfg))
            .await
            .expect("join")
            .expect("the store connects through the dry-mode proxy");
        seen.lock().expect("seen").executes.clear();
        Self {
            proxy,
            store: Some(Arc::new(store)),
            seen,
        }
    }

    /// Calls the (blocking) store off the runtime that runs the proxy.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ScyllaStore) -> T + Send + 'static,
    ) -> T {
        let store = self.store.clone().expect("store");
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .expect("join")
    }

    /// What the script has seen so far (a copy).
    fn seen(&self) -> Seen {
        self.seen.lock().expect("seen").clone()
    }

    async fn finish(mut self) {
        drop(self.store.take());
        let _ = self.proxy.finish().await;
    }
}

// ---------------------------------------------------------------------------------------
// The cases

const FROM: Owner = Owner::Player(1);
const TO: Owner = Owner::Ground { instance: 7 };
const OP_ID: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
const ITEM_ID: u128 = 0x0202_0202_0202_0202_0202_0202_0202_0202;

fn transfer_op() -> ItemOp {
    ItemOp {
        op_id: OP_ID,
        item_id: ITEM_ID,
        kind: ItemOpKind::Transfer { from: FROM, to: TO },
    }
}

fn cas_timeout() -> DbError {
    DbError::WriteTimeout {
        consistency: Consistency::LocalSerial,
        received: 0,
        required: 2,
        write_type: WriteType::Cas,
    }
}

fn unavailable() -> DbError {
    DbError::Unavailable {
        consistency: Consistency::LocalQuorum,
        required: 2,
        alive: 1,
    }
}

/// The item row `(owner, data, last_op)` as the re-read returns it.
fn item_row(owner: Owner, last_op: u128) -> Answer {
    Answer::Rows(vec![vec![
        Some(owner.to_key().into_bytes()),
        Some(vec![1, 2, 3]),
        Some(last_op.to_be_bytes().to_vec()),
    ]])
}

/// The writes around an item LWT that every case answers the same way.
fn plumbing(cql: &str) -> Option<Answer> {
    if cql.starts_with("SELECT op, outcome FROM item_ops") {
        Some(Answer::Rows(Vec::new()))
    } else if cql.starts_with("INSERT INTO items_by_owner")
        || cql.starts_with("DELETE FROM items_by_owner")
        || cql.starts_with("INSERT INTO item_ops")
    {
        Some(Answer::Void)
    } else {
        None
    }
}

const REREAD: &str = "SELECT owner, data, last_op FROM items";

fn rereads_at(seen: &Seen, consistency: Consistency) -> usize {
    seen.executes
        .iter()
        .filter(|(q, c)| q.starts_with(REREAD) && *c == consistency)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_overloaded_and_read_timeouts_are_typed_errors() {
    let current: Arc<Mutex<DbError>> = Arc::new(Mutex::new(DbError::Overloaded));
    let script = {
        let current = current.clone();
        Arc::new(move |cql: &str, _nth: usize| {
            if cql.starts_with("SELECT record FROM players") {
                Answer::Error(current.lock().expect("current").clone())
            } else {
                Answer::Error(DbError::ServerError)
            }
        })
    };
    let h = Harness::start(script, None, |_| {}).await;
    let cases = [
        (unavailable(), DbFailure::Unavailable),
        (DbError::Overloaded, DbFailure::Overloaded),
        (
            DbError::ReadTimeout {
                consistency: Consistency::LocalQuorum,
                received: 1,
                required: 2,
                data_present: false,
            },
            DbFailure::ReadTimeout,
        ),
    ];
    for (error, kind) in cases {
        *current.lock().expect("current") = error.clone();
        let got = h.call(|s| s.load_player(42)).await;
        match got {
            Err(e @ StoreError::Scylla { .. }) => {
                assert_eq!(e.db_failure(), Some(kind), "{error:?}: {e}")
            }
            other => panic!("{error:?}: expected a typed Scylla error, got {other:?}"),
        }
    }
    assert!(h.seen().count("SELECT record FROM players") >= 3);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lwt_refused_as_unavailable_or_overloaded_is_not_applied_and_not_retried() {
    for (refusal, kind) in [
        (unavailable(), DbFailure::Unavailable),
        (DbError::Overloaded, DbFailure::Overloaded),
    ] {
        let answer = refusal.clone();
        let script = Arc::new(move |cql: &str, _nth: usize| {
            if let Some(a) = plumbing(cql) {
                a
            } else if cql == TRANSFER {
                Answer::Error(answer.clone())
            } else if cql.starts_with(REREAD) {
                // The row as it is: untouched by the refused LWT.
                item_row(FROM, 0x77)
            } else {
                Answer::Error(DbError::ServerError)
            }
        });
        let h = Harness::start(script, None, |_| {}).await;
        let got = h.call(|s| s.apply_item_op(&transfer_op())).await;
        match &got {
            Err(e) => assert_eq!(e.db_failure(), Some(kind), "{refusal:?}: {e}"),
            Ok(o) => panic!("{refusal:?}: expected a typed error, got {o:?}"),
        }
        let seen = h.seen();
        assert_eq!(
            seen.count(TRANSFER),
            1,
            "{refusal:?}: a refused LWT is not resent"
        );
        assert_eq!(
            rereads_at(&seen, Consistency::LocalSerial),
            0,
            "{refusal:?}: a refusal needs no serial re-read: {:?}",
            seen.executes
        );
        assert_eq!(
            seen.count("INSERT INTO item_ops"),
            0,
            "{refusal:?}: nothing logged as done"
        );
        // The new owner's index entry, written ahead of the LWT, is taken back.
        assert_eq!(seen.count("INSERT INTO items_by_owner"), 1);
        assert_eq!(
            seen.count("DELETE FROM items_by_owner"),
            1,
            "{refusal:?}: the index must not keep a second owner: {:?}",
            seen.executes
        );
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lwt_write_timeout_is_resolved_by_a_serial_re_read() {
    let script = Arc::new(|cql: &str, _nth: usize| {
        if let Some(a) = plumbing(cql) {
            a
        } else if cql == TRANSFER {
            Answer::Error(cas_timeout())
        } else if cql.starts_with(REREAD) {
            // The write did land: the row carries our op id.
            item_row(TO, OP_ID)
        } else {
            Answer::Error(DbError::ServerError)
        }
    });
    let h = Harness::start(script, None, |_| {}).await;
    let got = h.call(|s| s.apply_item_op(&transfer_op())).await;
    assert_eq!(
        got.expect("resolved by the re-read"),
        ItemOutcome::Transferred {
            item_id: ITEM_ID,
            from: FROM,
            to: TO
        }
    );
    let seen = h.seen();
    assert_eq!(seen.count(TRANSFER), 1, "the LWT is never resent blindly");
    assert_eq!(rereads_at(&seen, Consistency::LocalSerial), 1);
    assert_eq!(
        seen.count("DELETE FROM items_by_owner"),
        1,
        "old owner unlisted"
    );
    assert_eq!(seen.count("INSERT INTO item_ops"), 1, "outcome logged once");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lwt_write_timeout_with_a_failed_re_read_is_an_unknown_outcome() {
    let script = Arc::new(|cql: &str, _nth: usize| {
        if let Some(a) = plumbing(cql) {
            a
        } else if cql == TRANSFER {
            Answer::Error(cas_timeout())
        } else if cql.starts_with(REREAD) {
            Answer::Error(DbError::Unavailable {
                consistency: Consistency::LocalSerial,
                required: 2,
                alive: 1,
            })
        } else {
            Answer::Error(DbError::ServerError)
        }
    });
    let h = Harness::start(script, None, |_| {}).await;
    let got = h.call(|s| s.apply_item_op(&transfer_op())).await;
    assert!(
        matches!(got, Err(StoreError::UnknownOutcome { .. })),
        "expected UnknownOutcome, got {got:?}"
    );
    let seen = h.seen();
    assert_eq!(seen.count(TRANSFER), 1, "no blind retry of the LWT");
    assert!(rereads_at(&seen, Consistency::LocalSerial) >= 1);
    assert_eq!(
        seen.count("INSERT INTO item_ops"),
        0,
        "nothing logged as done"
    );
    assert_eq!(
        seen.count("DELETE FROM items_by_owner"),
        0,
        "it may have applied: both index entries stay until a retry decides"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lwt_client_timeout_is_re_read_before_it_is_sent_again() {
    let script = Arc::new(|cql: &str, _nth: usize| {
        if let Some(a) = plumbing(cql) {
            a
        } else if cql == TRANSFER {
            // Only the second send reaches the script (the first one is delayed).
            Answer::Applied(true)
        } else if cql.starts_with(REREAD) {
            // The timed-out write did not land: the condition still holds.
            item_row(FROM, 0x77)
        } else {
            Answer::Error(DbError::ServerError)
        }
    });
    // The first send is answered after 6 s; the driver gives up after 1.5 s (the serial
    // re-read gets the same 1.5 s, ample for an immediate answer).
    let h = Harness::start(script, Some(Duration::from_secs(6)), |c| {
        c.lwt_timeout_ms = 1_500;
    })
    .await;
    let got = h.call(|s| s.apply_item_op(&transfer_op())).await;
    assert_eq!(
        got.expect("applied on the second send"),
        ItemOutcome::Transferred {
            item_id: ITEM_ID,
            from: FROM,
            to: TO
        }
    );
    let seen = h.seen();
    let order: Vec<&str> = seen
        .executes
        .iter()
        .map(|(q, _)| q.split(" WHERE").next().unwrap_or(q))
        .collect();
    let reread = order
        .iter()
        .position(|q| q.starts_with(REREAD))
        .expect("a re-read after the timeout");
    let resend = order
        .iter()
        .position(|q| *q == TRANSFER.split(" WHERE").next().unwrap_or(TRANSFER))
        .expect("the LWT sent again");
    assert!(reread < resend, "re-read first, then resend: {order:?}");
    assert_eq!(seen.executes[reread].1, Consistency::LocalSerial);
    assert_eq!(seen.count("INSERT INTO item_ops"), 1);
    h.finish().await;
}

// Checkpoints: a fenced LWT per record; a timeout is resolved by a serial fence re-read.

const SAVE_SAME_EPOCH: &str = "UPDATE players SET name = :name";
const FENCE_REREAD: &str = "SELECT epoch, seq FROM players";

fn checkpoint_record() -> zonehost::store::PlayerRecord {
    let mut r = zonehost::store::PlayerRecord::new("scylla-errors");
    r.epoch = 5;
    r.seq = 9;
    r
}

fn fence_row(epoch: i64, seq: i64) -> Answer {
    Answer::Rows(vec![vec![
        Some(epoch.to_be_bytes().to_vec()),
        Some(seq.to_be_bytes().to_vec()),
    ]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_write_timeout_is_resolved_by_a_serial_fence_re_read() {
    let script = Arc::new(|cql: &str, _nth: usize| {
        if cql.starts_with(SAVE_SAME_EPOCH) {
            Answer::Error(cas_timeout())
        } else if cql.starts_with(FENCE_REREAD) {
            // Our fence is stored: the timed-out write landed.
            fence_row(5, 9)
        } else {
            Answer::Error(DbError::ServerError)
        }
    });
    let h = Harness::start(script, None, |_| {}).await;
    let record = checkpoint_record();
    let player_id = record.player_id;
    let got = h.call(move |s| s.save_players(&[record])).await;
    assert_eq!(
        got.expect("resolved by the re-read"),
        vec![zonehost::store::SaveOutcome::Saved { player_id }]
    );
    let seen = h.seen();
    assert_eq!(seen.count(SAVE_SAME_EPOCH), 1, "never resent blindly");
    assert_eq!(
        seen.executes
            .iter()
            .filter(|(q, c)| q.starts_with(FENCE_REREAD) && *c == Consistency::LocalSerial)
            .count(),
        1
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_timeout_with_a_failed_re_read_is_an_unknown_outcome() {
    let script = Arc::new(|cql: &str, _nth: usize| {
        if cql.starts_with(SAVE_SAME_EPOCH) {
            Answer::Error(cas_timeout())
        } else if cql.starts_with(FENCE_REREAD) {
            Answer::Error(DbError::ReadTimeout {
                consistency: Consistency::LocalSerial,
                received: 1,
                required: 2,
                data_present: false,
            })
        } else {
            Answer::Error(DbError::ServerError)
        }
    });
    let h = Harness::start(script, None, |_| {}).await;
    let record = checkpoint_record();
    let got = h.call(move |s| s.save_players(&[record])).await;
    assert!(
        matches!(got, Err(StoreError::UnknownOutcome { .. })),
        "expected UnknownOutcome, got {got:?}"
    );
    assert_eq!(h.seen().count(SAVE_SAME_EPOCH), 1, "no blind retry");
    h.finish().await;
}

// ---------------------------------------------------------------------------------------
// Party invitations: the order of the writes around the party's LWT

const PARTY: u64 = 0x7700;
const LEADER: u64 = 0x4400;
const INVITEE: u64 = 0x5500;

fn bigint(v: u64) -> Option<Vec<u8>> {
    Some(v.to_be_bytes().to_vec())
}

fn bigints(v: &[u64]) -> Option<Vec<u8>> {
    let mut b = (v.len() as i32).to_be_bytes().to_vec();
    for x in v {
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&x.to_be_bytes());
    }
    Some(b)
}

fn position(seen: &Seen, cql_start: &str) -> usize {
    seen.executes
        .iter()
        .position(|(q, _)| q.starts_with(cql_start))
        .unwrap_or_else(|| panic!("never executed: {cql_start}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_indexed_before_the_party_lwt_and_cleared_after_the_answer() {
    let expires_at_ms = 4_000_000_000_000u64;
    let script = Arc::new(move |cql: &str, nth: usize| {
        if cql.starts_with("SELECT leader, members, invites, version FROM parties") {
            // None before the invitation's write, then the party listing the invitee.
            if nth == 1 {
                Answer::Rows(Vec::new())
            } else {
                Answer::Rows(vec![vec![
                    bigint(LEADER),
                    bigints(&[LEADER]),
                    bigints(&[INVITEE]),
                    bigint(1),
                ]])
            }
        } else if cql.starts_with("SELECT party_id, expires_at_ms FROM party_invites") {
            Answer::Rows(vec![vec![bigint(PARTY), bigint(expires_at_ms)]])
        } else if cql.starts_with("UPDATE party_invites") || cql.starts_with("INSERT INTO party_of")
        {
            Answer::Void
        } else if cql.starts_with("INSERT INTO parties")
            || cql.starts_with("UPDATE parties")
            || cql.starts_with("DELETE FROM party_invites")
        {
            Answer::Applied(true)
        } else {
            Answer::Error(DbError::ServerError)
        }
    });
    let h = Harness::start(script, None, |_| {}).await;
    let party = PartyRecord {
        party_id: PARTY,
        leader: LEADER,
        members: vec![LEADER],
        invites: vec![INVITEE],
        version: 1,
    };
    let invitation = Invitation {
        party_id: PARTY,
        invitee: INVITEE,
        expires_at_ms,
    };
    let now = expires_at_ms - 60_000;
    let written = {
        let party = party.clone();
        h.call(move |s| s.write_party_invite(&party, None, &invitation, now))
            .await
    };
    assert!(written.expect("written"), "created: {:?}", h.seen());
    let seen = h.seen();
    assert_eq!(seen.count("UPDATE party_invites"), 1);
    assert!(
        position(&seen, "UPDATE party_invites") < position(&seen, "INSERT INTO parties"),
        "the index entry is written before the party's LWT: {seen:?}"
    );
    assert_eq!(seen.count("DELETE FROM party_invites"), 0);
    // Read back against the party row; an expired entry is not even checked against it.
    let got = h.call(move |s| s.invitation_of(INVITEE, now)).await;
    assert_eq!(got.expect("read"), Some(invitation));
    let reads = h
        .seen()
        .count("SELECT leader, members, invites, version FROM parties");
    let got = h
        .call(move |s| s.invitation_of(INVITEE, expires_at_ms))
        .await;
    assert_eq!(got.expect("read"), None, "expired");
    assert_eq!(
        h.seen()
            .count("SELECT leader, members, invites, version FROM parties"),
        reads
    );
    // The invitee accepts: its entry is cleared (conditionally) after the party's LWT.
    let accepted = PartyRecord {
        members: vec![LEADER, INVITEE],
        invites: Vec::new(),
        version: 2,
        ..party
    };
    let written = h.call(move |s| s.write_party(&accepted, Some(1))).await;
    assert!(written.expect("written"), "accepted");
    let seen = h.seen();
    assert_eq!(seen.count("DELETE FROM party_invites"), 1);
    assert!(
        position(&seen, "UPDATE parties") < position(&seen, "DELETE FROM party_invites"),
        "the index entry is cleared after the party's LWT: {seen:?}"
    );
    h.finish().await;
}
