//! Client transport settings and a builder for quinn client endpoints on tuned UDP sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::acks::AckOptions;
use crate::impair::{ImpairedSocket, Impairment};
use crate::trust::{rustls_config, Trust};
use crate::ClientError;

/// Default interval of QUIC keep-alive pings.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Default idle timeout: the connection is dropped after this long without a packet.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default per-connection buffer for received, not yet read datagrams (bytes).
///
/// quinn's default (1.25 MB) lets a client that does not read fast enough grow by that
/// much per connection, and a stalled reader then works through seconds-old snapshots.
/// 32 KiB still holds the largest snapshot (16 parts of at most 1100 bytes); when the
/// reader falls behind, quinn drops the oldest datagrams, which is what a game wants:
/// only the newest snapshot matters and input acknowledgements are cumulative.
pub const DEFAULT_DATAGRAM_RECEIVE_BUFFER: usize = 32 * 1024;
/// Default per-connection buffer for datagrams queued for sending (bytes).
pub const DEFAULT_DATAGRAM_SEND_BUFFER: usize = 32 * 1024;
/// Default `SO_RCVBUF`/`SO_SNDBUF` requested by [`EndpointBuilder`] (bytes).
///
/// With the usual 208 KiB default a 60 Hz burst to hundreds of connections on one socket
/// loses datagrams; the kernel caps the request at `net.core.rmem_max`/`wmem_max`.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// QUIC transport settings of client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Interval of keep-alive pings (`None` disables them).
    pub keep_alive: Option<Duration>,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Bytes of received datagrams buffered per connection before the oldest are dropped.
    pub datagram_receive_buffer: usize,
    /// Bytes of outgoing datagrams buffered per connection before the oldest are dropped.
    pub datagram_send_buffer: usize,
    /// How the server is asked to acknowledge (ACK frequency; on by default).
    pub ack: AckOptions,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            datagram_receive_buffer: DEFAULT_DATAGRAM_RECEIVE_BUFFER,
            datagram_send_buffer: DEFAULT_DATAGRAM_SEND_BUFFER,
            ack: AckOptions::default(),
        }
    }
}

impl TransportOptions {
    /// The quinn transport configuration. The datagram receive buffer must hold at least
    /// one maximal datagram ([`zonehost_protocol::MAX_DATAGRAM_LEN`]).
    pub fn transport_config(&self) -> Result<quinn::TransportConfig, ClientError> {
        if self.datagram_receive_buffer < zonehost_protocol::MAX_DATAGRAM_LEN {
            return Err(ClientError::Config(format!(
                "datagram receive buffer of {} bytes cannot hold one {}-byte datagram",
                self.datagram_receive_buffer,
                zonehost_protocol::MAX_DATAGRAM_LEN
            )));
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| ClientError::Config(format!("idle timeout: {e}")))?;
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer);
        self.ack.apply(&mut t);
        Ok(t)
    }
}

/// A complete quinn client configuration: TLS per `trust` (see
/// [`crate::trust::rustls_config`]) and the transport `options`.
pub fn client_config(
    trust: &Trust,
    options: &TransportOptions,
) -> Result<quinn::ClientConfig, ClientError> {
    let tls = rustls_config(trust)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Config(format!("QUIC TLS: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(options.transport_config()?));
    Ok(config)
}

/// Socket buffer sizes as the kernel reports them after the request (Linux reports twice
/// the usable size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// `SO_RCVBUF`.
    pub recv: usize,
    /// `SO_SNDBUF`.
    pub send: usize,
}

/// A quinn client endpoint and what its socket got.
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    /// The endpoint; its default client configuration is set, so
    /// [`crate::Client::connect`] can use it directly. Many connections may share it.
    pub endpoint: quinn::Endpoint,
    /// Socket buffer sizes granted by the kernel.
    pub buffers: SocketBuffers,
}

/// Builds a quinn client endpoint on a std UDP socket with chosen buffer sizes.
///
/// ```no_run
/// # async fn f() -> Result<(), zonehost_client::ClientError> {
/// use zonehost_client::{EndpointBuilder, Trust};
/// let endpoint = EndpointBuilder::new(Trust::certificate_file("data/cert.der")?)
///     .socket_buffers(8 << 20, 8 << 20)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EndpointBuilder {
    trust: Trust,
    bind: SocketAddr,
    recv_buffer: Option<usize>,
    send_buffer: Option<usize>,
    transport: TransportOptions,
    impairment: Impairment,
}

impl EndpointBuilder {
    /// A builder binding `0.0.0.0:0`, requesting [`DEFAULT_SOCKET_BUFFER`] buffers and
    /// using default [`TransportOptions`].
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            recv_buffer: Some(DEFAULT_SOCKET_BUFFER),
            send_buffer: Some(DEFAULT_SOCKET_BUFFER),
            transport: TransportOptions::default(),
            impairment: Impairment::default(),
        }
    }

    /// Impair the socket's traffic (added latency, jitter, loss, reordering per direction;
    /// see [`crate::impair`]). The default impairs nothing and adds no cost.
    pub fn impair(mut self, impairment: Impairment) -> Self {
        self.impairment = impairment;
        self
    }

    /// Local address to bind (use an IPv6 address to reach IPv6 servers).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Requested `SO_RCVBUF` and `SO_SNDBUF` in bytes; `None` keeps the system default.
    pub fn socket_buffers(
        mut self,
        recv: impl Into<Option<usize>>,
        send: impl Into<Option<usize>>,
    ) -> Self {
        self.recv_buffer = recv.into();
        self.send_buffer = send.into();
        self
    }

    /// Transport settings of the connections made through this endpoint.
    pub fn transport(mut self, options: TransportOptions) -> Self {
        self.transport = options;
        self
    }

    /// Creates the socket and the endpoint. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<ClientEndpoint, ClientError> {
        let client_config = client_config(&self.trust, &self.transport)?;
        let socket = Socket::new(
            Domain::for_address(self.bind),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if let Some(n) = self.recv_buffer {
            socket.set_recv_buffer_size(n)?;
        }
        if let Some(n) = self.send_buffer {
            socket.set_send_buffer_size(n)?;
        }
        socket.bind(&self.bind.into())?;
        let buffers = SocketBuffers {
            recv: socket.recv_buffer_size()?,
            send: socket.send_buffer_size()?,
        };
        for (name, asked, got, sysctl) in [
            (
                "SO_RCVBUF",
                self.recv_buffer,
                buffers.recv,
                "net.core.rmem_max",
            ),
            (
                "SO_SNDBUF",
                self.send_buffer,
                buffers.send,
                "net.core.wmem_max",
            ),
        ] {
            if let Some(asked) = asked {
                if got < asked {
                    tracing::warn!(
                        option = name,
                        requested = asked,
                        granted = got,
                        "kernel capped the UDP socket buffer (raise {sysctl}); expect datagram loss under load"
                    );
                }
            }
        }
        let socket: std::net::UdpSocket = socket.into();
        socket.set_nonblocking(true)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| ClientError::Config("no async runtime (call inside tokio)".into()))?;
        let mut endpoint = if self.impairment.is_none() {
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?
        } else {
            self.impairment.validate().map_err(ClientError::Config)?;
            let inner = runtime.wrap_udp_socket(socket)?;
            let impaired = ImpairedSocket::new(inner, self.impairment);
            quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                None,
                impaired,
                runtime,
            )?
        };
        endpoint.set_default_client_config(client_config);
        Ok(ClientEndpoint { endpoint, buffers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_defaults_bound_the_datagram_buffer() {
        let o = TransportOptions::default();
        assert!(o.datagram_receive_buffer <= 128 * 1024);
        assert!(o.transport_config().is_ok());
        let too_long = TransportOptions {
            idle_timeout: Duration::from_secs(u64::MAX / 2),
            ..o
        };
        assert!(too_long.transport_config().is_err());
        let tiny = TransportOptions {
            datagram_receive_buffer: 100,
            ..TransportOptions::default()
        };
        assert!(tiny.transport_config().is_err());
    }

    #[tokio::test]
    async fn builds_endpoint_with_buffers() {
        let trust = Trust::Fingerprint([0; 32]);
        let ep = EndpointBuilder::new(trust)
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .socket_buffers(256 * 1024, None)
            .build()
            .expect("endpoint");
        assert!(ep.buffers.recv > 0 && ep.buffers.send > 0);
        let addr = ep.endpoint.local_addr().expect("addr");
        assert!(addr.ip().is_loopback() && addr.port() != 0);
    }
}
