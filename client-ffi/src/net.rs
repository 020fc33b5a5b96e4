//! The network thread: one per client, running a single-threaded tokio runtime that only
//! pumps bytes between quinn and two bounded queues. It holds no protocol state: the sans-IO
//! [`zonehost_protocol::ClientSession`] lives on the caller's thread (see `client.rs`).
//!
//! * commands (caller → network): a bounded tokio channel of [`COMMAND_QUEUE`] entries,
//!   written with `try_send` (a full queue is an error for the caller, never a wait);
//! * events (network → caller): a bounded lock-free [`ArrayQueue`] of [`EVENT_QUEUE`]
//!   entries. A snapshot datagram that finds it full is dropped and counted (only the newest
//!   snapshot matters); control-stream data waits for room (it is reliable), for at most
//!   [`STALL_LIMIT`], after which the connection is closed: the caller stopped polling.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use tokio::sync::mpsc;
use zonehost_client::{EndpointBuilder, Trust, CLOSE_GRACE, DEFAULT_CONNECT_TIMEOUT};
use zonehost_protocol::message::close_code;
use zonehost_protocol::MAX_FRAME_LEN;

/// Capacity of the caller → network command queue.
pub(crate) const COMMAND_QUEUE: usize = 256;
/// Capacity of the network → caller event queue.
pub(crate) const EVENT_QUEUE: usize = 1024;
/// Longest the network thread waits for room for reliable data before it closes the
/// connection (the caller is not polling).
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Bound on closing the endpoint when the client is freed.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What the caller's thread asks the network thread to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Resolve `address` (`host:port`), open a QUIC connection (TLS name `server_name`) and
    /// its control stream; any current connection is closed first (a redirect).
    Connect {
        address: String,
        server_name: String,
    },
    /// Write these bytes on the control stream.
    Stream(Bytes),
    /// Send one datagram.
    Datagram(Bytes),
    /// Close the connection with `code`; when `graceful`, finish the control stream first
    /// and give the server [`CLOSE_GRACE`] to close it.
    Close {
        code: u32,
        reason: &'static str,
        graceful: bool,
    },
}

/// What the network thread reports to the caller's thread.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// The connection and its control stream are open.
    Connected,
    /// The connection could not be made.
    ConnectFailed(String),
    /// Bytes read from the control stream.
    Stream(Bytes),
    /// A datagram and when it arrived (input latency is measured to this instant, not to
    /// the caller's next poll).
    Datagram(Bytes, Instant),
    /// The connection ended: `code` is the QUIC application close code when the connection
    /// was closed by an application (either side), `local` when this side closed it.
    Closed {
        code: Option<u64>,
        reason: String,
        local: bool,
    },
}

/// Why a command could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The command queue is full (the network thread is behind).
    Full,
    /// The network thread has stopped.
    Stopped,
}

/// The network thread's start-up result, handed to the creating thread.
///
/// A mutex and a condition variable rather than a `std::sync::mpsc` channel: a channel's
/// blocking receive stores a `std::thread::Thread` handle in a thread-local of the caller's
/// thread, which a foreign (C) main thread never frees (valgrind reports it).
#[derive(Debug, Default)]
struct Ready {
    result: Mutex<Option<Result<(), String>>>,
    changed: Condvar,
}

impl Ready {
    fn set(&self, result: Result<(), String>) {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(result);
        self.changed.notify_all();
    }

    fn wait(&self) -> Result<(), String> {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = slot.take() {
                return result;
            }
            slot = self.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Sets the start-up result when dropped without one (the thread ended early), so that the
/// creating thread never waits forever.
struct ReadyGuard<'a>(&'a Ready);

impl Drop for ReadyGuard<'_> {
    fn drop(&mut self) {
        let mut slot = self.0.result.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Err("the network thread stopped while starting".into()));
            self.0.changed.notify_all();
        }
    }
}

/// The queues shared with the network thread.
#[derive(Debug)]
struct Outbox {
    events: ArrayQueue<NetEvent>,
    dropped_datagrams: AtomicU64,
}

/// The caller's side of one network thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct Net {
    commands: Option<mpsc::Sender<Command>>,
    outbox: Arc<Outbox>,
    thread: Option<JoinHandle<()>>,
}

impl Net {
    /// Starts the network thread with a quinn endpoint trusting `trust`, bound to the
    /// unspecified address of `family`'s IP version. Returns once the endpoint exists.
    pub(crate) fn start(trust: Trust, ipv6: bool) -> Result<Net, String> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let outbox = Arc::new(Outbox {
            events: ArrayQueue::new(EVENT_QUEUE),
            dropped_datagrams: AtomicU64::new(0),
        });
        let ready = Arc::new(Ready::default());
        let (shared, signal) = (outbox.clone(), ready.clone());
        let thread = std::thread::Builder::new()
            .name("zonehost-net".into())
            .spawn(move || thread_main(trust, ipv6, rx, shared, &signal))
            .map_err(|e| format!("cannot start the network thread: {e}"))?;
        let net = Net {
            commands: Some(tx),
            outbox,
            thread: Some(thread),
        };
        ready.wait().map(|()| net)
    }

    /// Reserves room for `n` commands: either all of them fit or none is queued.
    pub(crate) fn reserve(&self, n: usize) -> Result<Permits<'_>, SendError> {
        let tx = self.commands.as_ref().ok_or(SendError::Stopped)?;
        match tx.try_reserve_many(n) {
            Ok(permits) => Ok(Permits(permits)),
            Err(mpsc::error::TrySendError::Full(())) => Err(SendError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => Err(SendError::Stopped),
        }
    }

    /// The next event of the network thread, if any.
    pub(crate) fn poll(&self) -> Option<NetEvent> {
        self.outbox.events.pop()
    }

    /// Snapshot datagrams dropped because the event queue was full.
    pub(crate) fn dropped_datagrams(&self) -> u64 {
        self.outbox.dropped_datagrams.load(Ordering::Relaxed)
    }
}

/// Room reserved in the command queue by [`Net::reserve`].
#[derive(Debug)]
pub(crate) struct Permits<'a>(mpsc::PermitIterator<'a, Command>);

impl Permits<'_> {
    /// Queues `command` in one reserved slot (ignored when none is left: a caller bug that
    /// reserved too few).
    pub(crate) fn send(&mut self, command: Command) {
        if let Some(permit) = self.0.next() {
            permit.send(command);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Closing the channel tells the thread to close the connection and stop.
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn thread_main(
    trust: Trust,
    ipv6: bool,
    commands: mpsc::Receiver<Command>,
    outbox: Arc<Outbox>,
    ready: &Ready,
) {
    let _guard = ReadyGuard(ready);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ready.set(Err(format!("cannot start the tokio runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let bind = if ipv6 {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        };
        let endpoint = match EndpointBuilder::new(trust).bind(bind).build() {
            Ok(ep) => ep.endpoint,
            Err(e) => {
                ready.set(Err(format!("cannot create the QUIC endpoint: {e}")));
                return;
            }
        };
        ready.set(Ok(()));
        pump(&endpoint, commands, &outbox).await;
        endpoint.close(close_code::NORMAL.into(), b"client freed");
        let _ = tokio::time::timeout(IDLE_WAIT, endpoint.wait_idle()).await;
    });
}

/// One open connection and its control stream.
struct Live {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    finished: bool,
}

/// What one turn of the pump decided.
enum Step {
    Keep,
    Connect {
        address: String,
        server_name: String,
    },
    Close {
        code: u32,
        reason: &'static str,
        graceful: bool,
    },
    Lost(quinn::ConnectionError),
    Stop,
}

async fn pump(endpoint: &quinn::Endpoint, mut commands: mpsc::Receiver<Command>, out: &Outbox) {
    let mut live: Option<Live> = None;
    loop {
        let step = match live.as_mut() {
            None => match commands.recv().await {
                None => Step::Stop,
                Some(Command::Connect {
                    address,
                    server_name,
                }) => Step::Connect {
                    address,
                    server_name,
                },
                Some(Command::Close { .. }) => {
                    let closed = NetEvent::Closed {
                        code: None,
                        reason: "closed before a connection was made".into(),
                        local: true,
                    };
                    if !push_reliable(out, closed, &commands).await {
                        return;
                    }
                    Step::Keep
                }
                // Bytes for a connection that no longer exists.
                Some(Command::Stream(_) | Command::Datagram(_)) => Step::Keep,
            },
            Some(l) => tokio::select! {
                command = commands.recv() => match command {
                    None => Step::Stop,
                    Some(Command::Stream(bytes)) => {
                        // A failed write surfaces as the connection error on the read side.
                        let _ = l.send.write_chunk(bytes).await;
                        Step::Keep
                    }
                    Some(Command::Datagram(bytes)) => {
                        // Same: a lost connection is reported by `read_datagram`.
                        let _ = l.conn.send_datagram(bytes);
                        Step::Keep
                    }
                    Some(Command::Close { code, reason, graceful }) => Step::Close { code, reason, graceful },
                    Some(Command::Connect { address, server_name }) => Step::Connect { address, server_name },
                },
                chunk = l.recv.read_chunk(MAX_FRAME_LEN, true), if !l.finished => match chunk {
                    Ok(Some(chunk)) => {
                        if push_reliable(out, NetEvent::Stream(chunk.bytes), &commands).await {
                            Step::Keep
                        } else {
                            Step::Close { code: close_code::NORMAL, reason: "event queue stalled", graceful: false }
                        }
                    }
                    // The server finished its side, or the stream failed with the
                    // connection: the datagram branch reports how the connection ended.
                    Ok(None) | Err(_) => {
                        l.finished = true;
                        Step::Keep
                    }
                },
                datagram = l.conn.read_datagram() => match datagram {
                    Ok(bytes) => {
                        if out.events.push(NetEvent::Datagram(bytes, Instant::now())).is_err() {
                            out.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                        }
                        Step::Keep
                    }
                    Err(e) => Step::Lost(e),
                },
            },
        };
        match step {
            Step::Keep => {}
            Step::Stop => {
                if let Some(l) = live.take() {
                    l.conn.close(close_code::NORMAL.into(), b"client freed");
                }
                return;
            }
            Step::Connect {
                address,
                server_name,
            } => {
                if let Some(l) = live.take() {
                    l.conn.close(close_code::NORMAL.into(), b"redirected");
                }
                // The attempt gives way to a close or to the client being freed (which
                // would otherwise wait for the connect timeout).
                let attempt = connect(endpoint, &address, &server_name);
                tokio::pin!(attempt);
                let outcome = loop {
                    tokio::select! {
                        result = &mut attempt => break Some(result),
                        command = commands.recv() => match command {
                            None => return,
                            Some(Command::Close { .. }) => break None,
                            // Nothing else is sent before `Connected`.
                            Some(_) => {}
                        },
                    }
                };
                let event = match outcome {
                    Some(Ok(l)) => {
                        live = Some(l);
                        NetEvent::Connected
                    }
                    Some(Err(e)) => NetEvent::ConnectFailed(e),
                    None => NetEvent::Closed {
                        code: None,
                        reason: "closed while connecting".into(),
                        local: true,
                    },
                };
                if !push_reliable(out, event, &commands).await {
                    return;
                }
            }
            Step::Close {
                code,
                reason,
                graceful,
            } => {
                if let Some(mut l) = live.take() {
                    if graceful {
                        let _ = l.send.finish();
                        let _ = tokio::time::timeout(CLOSE_GRACE, l.conn.closed()).await;
                    }
                    l.conn.close(code.into(), reason.as_bytes());
                }
                let closed = NetEvent::Closed {
                    code: Some(code.into()),
                    reason: reason.into(),
                    local: true,
                };
                if !push_reliable(out, closed, &commands).await {
                    return;
                }
            }
            Step::Lost(error) => {
                live = None;
                let (code, reason, local) = describe(&error);
                let closed = NetEvent::Closed {
                    code,
                    reason,
                    local,
                };
                if !push_reliable(out, closed, &commands).await {
                    return;
                }
            }
        }
    }
}

/// Close code, reason and side of a connection error.
fn describe(error: &quinn::ConnectionError) -> (Option<u64>, String, bool) {
    match error {
        quinn::ConnectionError::ApplicationClosed(c) => (
            Some(c.error_code.into_inner()),
            String::from_utf8_lossy(&c.reason).into_owned(),
            false,
        ),
        quinn::ConnectionError::LocallyClosed => (None, error.to_string(), true),
        other => (None, other.to_string(), false),
    }
}

async fn connect(
    endpoint: &quinn::Endpoint,
    address: &str,
    server_name: &str,
) -> Result<Live, String> {
    let attempt = async {
        let addr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("{address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address}: resolves to no address"))?;
        let conn = endpoint
            .connect(addr, server_name)
            .map_err(|e| format!("connect to {addr}: {e}"))?
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("control stream: {e}"))?;
        Ok(Live {
            conn,
            send,
            recv,
            finished: false,
        })
    };
    tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("connect to {address}: timed out after {DEFAULT_CONNECT_TIMEOUT:?}"))?
}

/// Queues reliable data for the caller, waiting for room while the caller still exists, for
/// at most [`STALL_LIMIT`]. Returns false when it gave up.
async fn push_reliable(
    out: &Outbox,
    mut event: NetEvent,
    commands: &mpsc::Receiver<Command>,
) -> bool {
    let deadline = Instant::now() + STALL_LIMIT;
    loop {
        match out.events.push(event) {
            Ok(()) => return true,
            Err(back) => event = back,
        }
        if commands.is_closed() || Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
