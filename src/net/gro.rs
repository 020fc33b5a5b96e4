//! The server's UDP socket with one datagram per receive buffer (UDP GRO off).
//!
//! quinn-udp turns generic receive offload on for every socket it wraps, so the kernel
//! may hand quinn several datagrams of one flow in one buffer, and quinn sizes its
//! endpoint's receive buffer for the largest such read in each of its batch slots
//! (64 datagrams × 32 slots × a 1472-byte payload = 3 MB of address space; only the
//! pages reads land on become resident, so the RSS barely changes). A game server's
//! clients each send one or two datagrams a tick, so there is seldom anything to
//! coalesce, and with GRO off the server and its load generator both spent less CPU:
//! four alternated pairs of 1000-bot runs in two sittings (docs/performance.md, "Memory
//! per player and UDP GRO"), server 76.3 % of a core against 81.8 % with GRO on, loadgen
//! 76.8 % against 81.6 % (a fifth pair, under perf, went the other way; the effect is of
//! the size of that machine's run-to-run spread). [`one_datagram_per_buffer`] turns GRO off again on Linux and
//! tells quinn so (through the counting socket, `junk.rs`); elsewhere the socket is
//! quinn's as it is.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;

use quinn::{AsyncUdpSocket, Runtime};

/// quinn's socket for `socket` and the datagrams one receive buffer may hold, to report
/// to quinn: 1 where GRO could be turned off (Linux), else what quinn-udp found (also
/// when the kernel refuses, which is logged).
pub(crate) fn one_datagram_per_buffer(
    socket: UdpSocket,
) -> io::Result<(Arc<dyn AsyncUdpSocket>, usize)> {
    // The same socket under a second descriptor: options belong to the socket.
    #[cfg(target_os = "linux")]
    let same_socket = socket.try_clone()?;
    let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
    // After the wrap, which turned GRO on.
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::UdpGroSegment};
        match setsockopt(&same_socket, UdpGroSegment, &false) {
            Ok(()) => return Ok((inner, 1)),
            Err(e) => tracing::warn!(
                error = %e,
                "could not turn UDP GRO off; quinn keeps its 3 MB receive buffer"
            ),
        }
    }
    let segments = inner.max_receive_segments();
    Ok((inner, segments))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::time::Duration;

    use nix::sys::socket::{getsockopt, sockopt::UdpGroSegment};
    use quinn::Runtime;

    use super::one_datagram_per_buffer;

    fn bind() -> UdpSocket {
        let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bound");
        socket.set_nonblocking(true).expect("nonblocking");
        socket
    }

    /// quinn-udp turns GRO on and reports 64 segments; the server's socket has it off,
    /// reports one, and still receives what is sent to it (the counting socket passes
    /// the one on to quinn: `net::tests`).
    #[test]
    fn the_server_socket_has_gro_off_says_so_and_receives() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let plain = bind();
            let plain_probe = plain.try_clone().expect("clone");
            let plain = quinn::TokioRuntime.wrap_udp_socket(plain).expect("wrapped");
            assert!(getsockopt(&plain_probe, UdpGroSegment).expect("getsockopt"));
            assert_eq!(plain.max_receive_segments(), 64);

            let server = bind();
            let probe = server.try_clone().expect("clone");
            let (socket, segments) = one_datagram_per_buffer(server).expect("wrapped");
            assert!(!getsockopt(&probe, UdpGroSegment).expect("getsockopt"));
            assert_eq!(segments, 1);

            // Three datagrams in a row from one peer arrive as three reads' worth.
            let to = socket.local_addr().expect("address");
            let peer = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("peer");
            for i in 0..3u8 {
                peer.send_to(&[i; 100], to).expect("sent");
            }
            let mut got = Vec::new();
            let mut storage = vec![[0u8; 1500]; 4];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while got.len() < 3 {
                assert!(tokio::time::Instant::now() < deadline, "received {got:?}");
                let mut bufs: Vec<_> = storage
                    .iter_mut()
                    .map(|b| std::io::IoSliceMut::new(&mut b[..]))
                    .collect();
                let mut meta = vec![quinn::udp::RecvMeta::default(); bufs.len()];
                let n = std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta))
                    .await
                    .expect("received");
                for (m, b) in meta.iter().zip(&bufs).take(n) {
                    assert_eq!(m.len, 100, "one datagram per buffer");
                    got.push(b[0]);
                }
            }
            assert_eq!(got, [0, 1, 2]);
        });
    }
}
