//! A connected, authenticated zonehost session over quinn.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zonehost_protocol::datagram::InputCmd;
use zonehost_protocol::message::{close_code, Goaway, Redirect, Reject, Request, Welcome};
use zonehost_protocol::session::SnapshotInfo;
use zonehost_protocol::{ClientEvent, ClientSession, SessionError, MAX_FRAME_LEN};

/// Default bound on [`Client::connect`]: QUIC handshake plus `Hello` → `Welcome`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Client::close`] waits for the server to close after `Bye`.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting is invalid (TLS, transport, fingerprint text...).
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Socket creation or configuration failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// quinn refused to start the connection (bad server name, endpoint stopping...).
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed (by either side, or by the idle timeout).
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to the control stream failed.
    #[error("control stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading the control stream failed.
    #[error("control stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// A datagram could not be sent.
    #[error("send datagram: {0}")]
    Datagram(#[from] quinn::SendDatagramError),
    /// The server sent something the session does not accept, or the session is in the
    /// wrong state for the operation.
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// The server refused the session.
    #[error("rejected: {} ({})", .0.code.as_str(), .0.reason)]
    Rejected(Reject),
    /// The server sent `Goaway` before `Welcome`.
    #[error("server going away: {}", .0.reason)]
    Goaway(Goaway),
    /// The server finished the control stream before `Welcome`, or it is finished already.
    #[error("control stream closed by the server")]
    StreamClosed,
    /// The server redirected to an address that does not resolve.
    #[error("redirect to {address:?}: {reason}")]
    BadRedirect {
        /// The address the server sent.
        address: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// More than [`MAX_REDIRECTS`] redirects in a row.
    #[error("more than {MAX_REDIRECTS} redirects in a row (last to {0})")]
    TooManyRedirects(SocketAddr),
    /// The application's token provider had no token for a login.
    #[error("token provider: {0}")]
    Token(String),
    /// `connect` did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Something received from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An event of the session: a response, a world event, `Goaway`, or an input
    /// acknowledgement with its measured latency.
    Event(ClientEvent),
    /// A snapshot datagram: what the session read from its header and acks (and whether
    /// it completed a tick), and the datagram itself. The entities the player sees are
    /// [`Client::view`].
    Snapshot(SnapshotInfo, Bytes),
}

/// Counters of what a [`Client`] received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Datagrams received and accepted as snapshots (parts count separately).
    pub snapshots: u64,
    /// Bytes of the accepted snapshot datagrams.
    pub snapshot_bytes: u64,
    /// Datagrams received that the session refused (malformed, or after the session closed).
    pub bad_datagrams: u64,
    /// Inputs sent.
    pub inputs_sent: u64,
}

/// A connected, authenticated session: a quinn connection, its control stream and the
/// sans-IO [`ClientSession`].
///
/// Use one task per client: [`Client::next_event`] is cancel-safe, so a loop can
/// `tokio::select!` between it and an input timer and call [`Client::send_input`] from
/// the timer branch.
#[derive(Debug)]
pub struct Client {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    stream_finished: bool,
    session: ClientSession,
    welcome: Welcome,
    stats: ClientStats,
    redirects: Vec<SocketAddr>,
}

/// Most redirects [`Client::connect`] follows in a row before it gives up.
pub const MAX_REDIRECTS: usize = 2;

/// How one handshake ended short of an error.
enum Handshake {
    Welcomed(Box<Client>),
    Redirected(Redirect),
}

impl Client {
    /// Connects to `addr` (TLS name `server_name`) through `endpoint`, whose default
    /// client configuration must be set (see [`crate::EndpointBuilder`]), sends `Hello`
    /// with `token`, and waits for `Welcome`, all within [`DEFAULT_CONNECT_TIMEOUT`].
    ///
    /// A refusal is [`ClientError::Rejected`] with the server's code and reason.
    ///
    /// To resume a session after a lost connection, connect again with the previous
    /// `Welcome::resume_token` as `token` (within the server's resume grace period).
    ///
    /// A `Redirect` (a server of a cluster that does not own the player) is followed
    /// automatically, with the ticket as the token and the same `server_name`, at most
    /// [`MAX_REDIRECTS`] times in a row, within the same bound;
    /// [`Client::redirected_via`] reports the addresses it was sent to.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        token: &str,
        client_name: &str,
    ) -> Result<Client, ClientError> {
        Self::connect_timeout(
            endpoint,
            addr,
            server_name,
            token,
            client_name,
            DEFAULT_CONNECT_TIMEOUT,
        )
        .await
    }

    /// [`Client::connect`] with an explicit bound on the whole handshake.
    pub async fn connect_timeout(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        token: &str,
        client_name: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let handshake = async move {
            let mut redirects = Vec::new();
            let mut addr = addr;
            let mut token = token.to_owned();
            loop {
                let conn = endpoint.connect(addr, server_name)?.await?;
                match Self::handshake(conn, &token, client_name).await? {
                    Handshake::Welcomed(mut client) => {
                        client.redirects = redirects;
                        return Ok(*client);
                    }
                    Handshake::Redirected(r) => {
                        let to = resolve(&r.address).await?;
                        if redirects.len() >= MAX_REDIRECTS {
                            return Err(ClientError::TooManyRedirects(to));
                        }
                        tracing::info!(from = %addr, to = %to, "redirected");
                        redirects.push(to);
                        addr = to;
                        token = r.ticket;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Follows a `Redirect` received after the `Welcome` (a draining cluster server
    /// handing the player to a peer, [`ClientEvent::Redirected`] from
    /// [`Client::next_event`]): connects to its address with its ticket as the token,
    /// like [`Client::connect`] (same bound, further redirects followed). The new
    /// client's [`Client::redirected_via`] starts with that address.
    pub async fn follow(
        endpoint: &quinn::Endpoint,
        redirect: &Redirect,
        server_name: &str,
        client_name: &str,
    ) -> Result<Client, ClientError> {
        let to = resolve(&redirect.address).await?;
        let mut client =
            Self::connect(endpoint, to, server_name, &redirect.ticket, client_name).await?;
        client.redirects.insert(0, to);
        Ok(client)
    }

    /// The addresses this client was redirected to before its `Welcome`, in order (empty
    /// when the first server took it).
    pub fn redirected_via(&self) -> &[SocketAddr] {
        &self.redirects
    }

    async fn handshake(
        conn: quinn::Connection,
        token: &str,
        client_name: &str,
    ) -> Result<Handshake, ClientError> {
        let (mut send, mut recv) = conn.open_bi().await?;
        let mut session = ClientSession::new(token, client_name);
        send.write_chunk(session.hello()?).await?;
        loop {
            let Some(chunk) = recv.read_chunk(MAX_FRAME_LEN, true).await? else {
                return Err(ClientError::StreamClosed);
            };
            session.handle_stream_data(&chunk.bytes, Instant::now())?;
            // Only these three can precede `Welcome` (the session refuses anything else);
            // events queued after `Welcome` stay in the session for `next_event`.
            while let Some(event) = session.poll_event() {
                match event {
                    ClientEvent::Welcome(welcome) => {
                        return Ok(Handshake::Welcomed(Box::new(Client {
                            conn,
                            send,
                            recv,
                            stream_finished: false,
                            session,
                            welcome,
                            stats: ClientStats::default(),
                            redirects: Vec::new(),
                        })));
                    }
                    ClientEvent::Redirected(r) => return Ok(Handshake::Redirected(r)),
                    ClientEvent::Rejected(reject) => return Err(ClientError::Rejected(reject)),
                    ClientEvent::Goaway(goaway) => return Err(ClientError::Goaway(goaway)),
                    other => {
                        tracing::debug!(?other, "event before Welcome ignored");
                    }
                }
            }
        }
    }

    /// The entities the player sees: the newest complete snapshot tick of the current
    /// instance, rebuilt from the server's deltas (sorted by id).
    pub fn view(&self) -> &[zonehost_protocol::snapshot::EntityState] {
        self.session.view().entities()
    }

    /// The `Welcome` the server sent.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The underlying sans-IO session (sequences, acks, state).
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The underlying quinn connection (RTT, statistics, close reason).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Counters of what this client sent and received.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Sends one input datagram carrying `cmd` (and the previous few commands, against
    /// loss). Returns the input's sequence number, which a later
    /// [`ClientEvent::InputAcked`] reports with its latency.
    pub fn send_input(&mut self, cmd: InputCmd) -> Result<u32, ClientError> {
        self.send_input_at(cmd, Instant::now())
    }

    /// [`Client::send_input`] for an input that was due at `due` (its slot on a fixed
    /// schedule): the acknowledgement latency is measured from `due`, not from the moment
    /// it left, so a sender that falls behind its schedule cannot hide its own delay
    /// (coordinated omission).
    pub fn send_input_at(&mut self, cmd: InputCmd, due: Instant) -> Result<u32, ClientError> {
        self.send_inputs_at(&[cmd], due)
    }

    /// Sends several new input commands (oldest first, 1..=8; e.g. the 3 commands sampled
    /// at 60 Hz since the previous datagram when sending 20 datagrams per second) in one
    /// datagram, repeating earlier ones for redundancy (SPEC.md §4.2). Returns the newest
    /// command's sequence number; its [`ClientEvent::InputAcked`] latency is measured
    /// from `due`, the datagram's slot.
    pub fn send_inputs_at(&mut self, cmds: &[InputCmd], due: Instant) -> Result<u32, ClientError> {
        let datagram = self.session.send_inputs(cmds, due)?;
        self.conn.send_datagram(datagram)?;
        self.stats.inputs_sent += 1;
        Ok(self.session.next_input_seq().wrapping_sub(1))
    }

    /// Sends a request on the control stream; returns its id, which the matching
    /// [`ClientEvent::Response`] carries.
    pub async fn request(&mut self, request: Request) -> Result<u32, ClientError> {
        let (id, frame) = self.session.request(request, Instant::now())?;
        self.send.write_chunk(frame).await?;
        Ok(id)
    }

    /// Waits for the next thing from the server: a queued session event first, else
    /// control-stream data or a snapshot datagram, whichever comes first.
    ///
    /// Datagrams the session refuses are counted in [`ClientStats::bad_datagrams`] and
    /// skipped. Errors are final: the connection closed
    /// ([`ClientError::Connection`]), the control stream failed, or the server broke the
    /// protocol on it ([`ClientError::Session`]).
    ///
    /// Cancel-safe: nothing is consumed unless it is returned.
    pub async fn next_event(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(Incoming::Event(event));
            }
            tokio::select! {
                biased;
                chunk = self.recv.read_chunk(MAX_FRAME_LEN, true), if !self.stream_finished => {
                    match chunk? {
                        Some(chunk) => self.session.handle_stream_data(&chunk.bytes, Instant::now())?,
                        // The server finished its side (it closes the connection next);
                        // keep reading datagrams until it does.
                        None => self.stream_finished = true,
                    }
                }
                datagram = self.conn.read_datagram() => {
                    let datagram = datagram?;
                    match self.session.handle_datagram(&datagram, Instant::now()) {
                        Ok(info) => {
                            self.stats.snapshots += 1;
                            self.stats.snapshot_bytes += datagram.len() as u64;
                            return Ok(Incoming::Snapshot(info, datagram));
                        }
                        Err(error) => {
                            self.stats.bad_datagrams += 1;
                            tracing::debug!(%error, len = datagram.len(), "datagram ignored");
                        }
                    }
                }
            }
        }
    }

    /// Says `Bye`, waits up to [`CLOSE_GRACE`] for the server to close the connection, and
    /// closes it. Returns the error of sending `Bye`, if any (the connection is closed
    /// regardless).
    pub async fn close(mut self) -> Result<(), ClientError> {
        let sent = async {
            let bye = self.session.bye()?;
            self.send.write_chunk(bye).await?;
            self.send.finish().map_err(|_| ClientError::StreamClosed)?;
            Ok::<_, ClientError>(())
        }
        .await;
        if sent.is_ok() {
            let _ = tokio::time::timeout(CLOSE_GRACE, self.conn.closed()).await;
        }
        self.conn.close(close_code::NORMAL.into(), b"bye");
        sent
    }
}

/// Resolves a redirect's `host:port` to its first address.
pub(crate) async fn resolve(address: &str) -> Result<SocketAddr, ClientError> {
    let bad = |reason: String| ClientError::BadRedirect {
        address: address.to_owned(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}
