//! Network impairment on the client side, without root: a wrapper around quinn's UDP
//! socket that adds latency, jitter, loss and reordering, per direction.
//!
//! Outgoing datagrams an impaired direction keeps are copied and released by a timer task
//! at their due time; incoming ones are read by a task, delayed the same way and handed to
//! quinn in due order. An unimpaired direction costs nothing (the wrapped socket is called
//! directly); an impaired one costs one copy and one allocation per datagram, which is why
//! it is opt-in. Jitter keeps datagrams in order (a datagram never overtakes the one sent
//! before it, like a queue on a real path; a reordering jitter makes QUIC declare spurious
//! losses and shrink its congestion window far more than the same delay does on the
//! internet); `reorder` explicitly holds a share of datagrams back by a latency-sized extra
//! delay so that later ones overtake them.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Datagrams held back per direction at most; beyond it they are dropped (as a full
/// router queue would).
pub const MAX_HELD: usize = 16_384;

/// Impairment of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Direction {
    /// Added one-way delay.
    pub latency: Duration,
    /// Each datagram's delay is uniform in `latency ± jitter` (never below zero), but a
    /// datagram never leaves before the one sent before it (jitter does not reorder).
    pub jitter: Duration,
    /// Probability (0..=1) that a datagram is dropped.
    pub loss: f64,
    /// Probability (0..=1) that a datagram is held back by an extra `latency + 2 × jitter`
    /// (at least 5 ms), so that later ones overtake it.
    pub reorder: f64,
}

impl Direction {
    /// Whether this direction is left alone.
    pub fn is_none(&self) -> bool {
        self.latency.is_zero() && self.jitter.is_zero() && self.loss <= 0.0 && self.reorder <= 0.0
    }

    /// Probabilities within 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [("loss", self.loss), ("reorder", self.reorder)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be within 0..=1, got {p}"));
            }
        }
        Ok(())
    }
}

/// Impairment of both directions of a client socket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Client → server.
    pub up: Direction,
    /// Server → client.
    pub down: Direction,
    /// Seed of the loss/jitter draws.
    pub seed: u64,
}

impl Impairment {
    /// Whether both directions are left alone.
    pub fn is_none(&self) -> bool {
        self.up.is_none() && self.down.is_none()
    }

    /// Both directions valid.
    pub fn validate(&self) -> Result<(), String> {
        self.up.validate().map_err(|e| format!("up: {e}"))?;
        self.down.validate().map_err(|e| format!("down: {e}"))
    }
}

/// Lock-free splitmix64 draws.
#[derive(Debug)]
struct Draws(AtomicU64);

impl Draws {
    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `None` when the datagram is lost, else its delay and whether it is held back to be
    /// overtaken.
    fn fate(&self, d: &Direction) -> Option<(Duration, bool)> {
        if d.loss > 0.0 && self.unit() < d.loss {
            return None;
        }
        let j = d.jitter.as_secs_f64();
        let mut delay = (d.latency.as_secs_f64() + (self.unit() * 2.0 - 1.0) * j).max(0.0);
        let held_back = d.reorder > 0.0 && self.unit() < d.reorder;
        if held_back {
            delay += (d.latency.as_secs_f64() + 2.0 * j).max(0.005);
        }
        Some((Duration::from_secs_f64(delay), held_back))
    }
}

/// Due times that keep datagrams in order unless one is held back on purpose.
#[derive(Debug)]
struct Fifo(Option<Instant>);

impl Fifo {
    fn due(&mut self, now: Instant, (delay, held_back): (Duration, bool)) -> Instant {
        let due = now + delay;
        if held_back {
            return due;
        }
        let due = self.0.map_or(due, |last| due.max(last));
        self.0 = Some(due);
        due
    }
}

/// A datagram waiting for its due time.
#[derive(Debug)]
struct Held {
    due: Instant,
    order: u64,
    peer: SocketAddr,
    ecn: Option<EcnCodepoint>,
    local: Option<IpAddr>,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed: the earliest due time is the greatest (top of a max-heap).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// A quinn socket with impairment (see the module documentation).
pub struct ImpairedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    imp: Impairment,
    draws: Arc<Draws>,
    order: AtomicU64,
    out_fifo: Mutex<Fifo>,
    /// Outgoing held datagrams, to the release task.
    out: Option<mpsc::Sender<Held>>,
    /// Incoming datagrams due now, from the receive task.
    incoming: Option<Mutex<mpsc::Receiver<Held>>>,
}

impl fmt::Debug for ImpairedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedSocket")
            .field("impairment", &self.imp)
            .finish_non_exhaustive()
    }
}

impl ImpairedSocket {
    /// Wraps `inner`; starts the release and receive tasks of the impaired directions on
    /// the current tokio runtime (they end when the socket is dropped).
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, imp: Impairment) -> Arc<Self> {
        let draws = Arc::new(Draws(AtomicU64::new(imp.seed)));
        let out = (!imp.up.is_none()).then(|| {
            let (tx, rx) = mpsc::channel(MAX_HELD);
            tokio::spawn(release_out(inner.clone(), rx));
            tx
        });
        let incoming = (!imp.down.is_none()).then(|| {
            let (tx, rx) = mpsc::channel(MAX_HELD);
            tokio::spawn(receive_in(inner.clone(), imp.down, draws.clone(), tx));
            Mutex::new(rx)
        });
        Arc::new(Self {
            inner,
            imp,
            draws,
            order: AtomicU64::new(0),
            out_fifo: Mutex::new(Fifo(None)),
            out,
            incoming,
        })
    }
}

/// Sends held outgoing datagrams at their due time.
async fn release_out(inner: Arc<dyn AsyncUdpSocket>, mut rx: mpsc::Receiver<Held>) {
    let mut heap = BinaryHeap::<Held>::new();
    loop {
        let next = heap.peek().map(|h| h.due);
        tokio::select! {
            held = rx.recv() => match held {
                Some(h) => heap.push(h),
                None => return,
            },
            () = sleep_until_opt(next) => {
                let now = Instant::now();
                while heap.peek().is_some_and(|h| h.due <= now) {
                    if let Some(h) = heap.pop() {
                        let t = Transmit {
                            destination: h.peer,
                            ecn: h.ecn,
                            contents: &h.data,
                            segment_size: None,
                            src_ip: h.local,
                        };
                        // A full socket buffer drops the datagram, as a congested link would.
                        let _ = inner.try_send(&t);
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reads the real socket, drops and delays datagrams, and hands them over when due.
async fn receive_in(
    inner: Arc<dyn AsyncUdpSocket>,
    dir: Direction,
    draws: Arc<Draws>,
    tx: mpsc::Sender<Held>,
) {
    let mut heap = BinaryHeap::<Held>::new();
    let mut order = 0u64;
    let mut fifo = Fifo(None);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let next = heap.peek().map(|h| h.due);
        tokio::select! {
            () = tx.closed() => return,
            got = std::future::poll_fn(|cx| {
                let mut bufs = [IoSliceMut::new(&mut buf)];
                let mut meta = [RecvMeta::default()];
                inner.poll_recv(cx, &mut bufs, &mut meta).map(|r| r.map(|_| meta[0]))
            }) => match got {
                Ok(meta) => {
                    let now = Instant::now();
                    let stride = meta.stride.max(1);
                    let len = meta.len.min(buf.len());
                    for chunk in buf[..len].chunks(stride) {
                        if heap.len() >= MAX_HELD {
                            break;
                        }
                        if let Some(fate) = draws.fate(&dir) {
                            order += 1;
                            heap.push(Held {
                                due: fifo.due(now, fate),
                                order,
                                peer: meta.addr,
                                ecn: meta.ecn,
                                local: meta.dst_ip,
                                data: chunk.to_vec(),
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "impaired socket: receive error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            () = sleep_until_opt(next) => {
                let now = Instant::now();
                while heap.peek().is_some_and(|h| h.due <= now) {
                    if let Some(h) = heap.pop() {
                        if tx.try_send(h).is_err() {
                            // quinn is not reading: drop, like a full socket buffer.
                        }
                    }
                }
            }
        }
    }
}

impl AsyncUdpSocket for ImpairedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(out) = &self.out else {
            return self.inner.try_send(transmit);
        };
        let now = Instant::now();
        let seg = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut fifo = self.out_fifo.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in transmit.contents.chunks(seg) {
            let Some(fate) = self.draws.fate(&self.imp.up) else {
                continue;
            };
            let held = Held {
                due: fifo.due(now, fate),
                order: self.order.fetch_add(1, Ordering::Relaxed),
                peer: transmit.destination,
                ecn: transmit.ecn,
                local: transmit.src_ip,
                data: chunk.to_vec(),
            };
            // A full queue drops the datagram (QUIC recovers it like any loss).
            let _ = out.try_send(held);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Some(incoming) = &self.incoming else {
            return self.inner.poll_recv(cx, bufs, meta);
        };
        let mut rx = incoming.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(h)) => {
                    let len = h.data.len().min(bufs[n].len());
                    bufs[n][..len].copy_from_slice(&h.data[..len]);
                    meta[n] = RecvMeta {
                        addr: h.peer,
                        len,
                        stride: len,
                        ecn: h.ecn,
                        dst_ip: h.local,
                    };
                    n += 1;
                }
                Poll::Ready(None) => {
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "impairment receive task ended",
                        )));
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        if n == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(n))
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        if self.out.is_some() {
            1
        } else {
            self.inner.max_transmit_segments()
        }
    }

    fn max_receive_segments(&self) -> usize {
        if self.incoming.is_some() {
            1
        } else {
            self.inner.max_receive_segments()
        }
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};

    /// A plain socket on 127.0.0.1 in the 25000-25999 test port range.
    fn peer() -> UdpSocket {
        for port in 25_000u16..26_000 {
            let p = 25_000 + (port - 25_000 + (std::process::id() % 1000) as u16) % 1000;
            if let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, p)) {
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                return s;
            }
        }
        panic!("no free port in 25000-25999");
    }

    fn impaired(imp: Impairment) -> Arc<ImpairedSocket> {
        let std = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        std.set_nonblocking(true).expect("nonblocking");
        let runtime = quinn::default_runtime().expect("runtime");
        let inner = runtime.wrap_udp_socket(std).expect("wrap");
        ImpairedSocket::new(inner, imp)
    }

    fn send(s: &ImpairedSocket, to: SocketAddr, data: &[u8]) {
        s.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: None,
        })
        .expect("send");
    }

    /// Receives on a blocking socket off the runtime, until `n` datagrams or `bound`.
    async fn collect(
        peer: UdpSocket,
        n: usize,
        bound: Duration,
    ) -> Vec<(std::time::Instant, Vec<u8>)> {
        tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < n && start.elapsed() < bound {
                if let Ok(len) = peer.recv(&mut buf) {
                    got.push((std::time::Instant::now(), buf[..len].to_vec()));
                }
            }
            got
        })
        .await
        .expect("collector")
    }

    #[tokio::test]
    async fn up_latency_delays_and_loss_drops() {
        let p = peer();
        let to = p.local_addr().expect("addr");
        let s = impaired(Impairment {
            up: Direction {
                latency: Duration::from_millis(60),
                ..Direction::default()
            },
            ..Impairment::default()
        });
        let t0 = std::time::Instant::now();
        send(&s, to, b"late");
        let got = collect(p.try_clone().expect("clone"), 1, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"late");
        let waited = got[0].0 - t0;
        assert!(waited >= Duration::from_millis(60), "{waited:?}");
        assert!(waited < Duration::from_millis(1000), "{waited:?}");

        let lossy = impaired(Impairment {
            up: Direction {
                loss: 0.5,
                ..Direction::default()
            },
            seed: 7,
            ..Impairment::default()
        });
        for i in 0..200u8 {
            send(&lossy, to, &[i]);
        }
        let got = collect(p, 200, Duration::from_millis(500)).await;
        assert!(
            (50..=150).contains(&got.len()),
            "{} of 200 arrived",
            got.len()
        );
    }

    #[tokio::test]
    async fn jitter_alone_keeps_order() {
        let p = peer();
        let to = p.local_addr().expect("addr");
        let s = impaired(Impairment {
            up: Direction {
                latency: Duration::from_millis(5),
                jitter: Duration::from_millis(4),
                ..Direction::default()
            },
            seed: 3,
            ..Impairment::default()
        });
        for i in 0..100u8 {
            send(&s, to, &[i]);
        }
        let got = collect(p, 100, Duration::from_secs(2)).await;
        let order: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(order, (0..100).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn jitter_and_reorder_reorder() {
        let p = peer();
        let to = p.local_addr().expect("addr");
        let s = impaired(Impairment {
            up: Direction {
                latency: Duration::from_millis(5),
                jitter: Duration::from_millis(4),
                reorder: 0.2,
                ..Direction::default()
            },
            seed: 3,
            ..Impairment::default()
        });
        for i in 0..100u8 {
            send(&s, to, &[i]);
        }
        let got = collect(p, 100, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 100, "nothing lost");
        let order: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
        assert!(
            order.windows(2).any(|w| w[1] < w[0]),
            "some reordering: {order:?}"
        );
    }

    #[tokio::test]
    async fn down_latency_delays_receives() {
        let s = impaired(Impairment {
            down: Direction {
                latency: Duration::from_millis(50),
                ..Direction::default()
            },
            ..Impairment::default()
        });
        let me = s.local_addr().expect("addr");
        let p = peer();
        let t0 = std::time::Instant::now();
        p.send_to(b"hi", me).expect("send");
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| {
                let mut bufs = [IoSliceMut::new(&mut buf)];
                let mut meta = [RecvMeta::default()];
                s.poll_recv(cx, &mut bufs, &mut meta)
                    .map(|r| r.map(|n| (n, meta[0])))
            }),
        )
        .await
        .expect("in time")
        .expect("received");
        assert_eq!(got.0, 1);
        assert_eq!(&buf[..got.1.len], b"hi");
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn validation_and_none() {
        assert!(Impairment::default().is_none());
        let bad = Impairment {
            down: Direction {
                loss: 1.5,
                ..Direction::default()
            },
            ..Impairment::default()
        };
        assert!(bad.validate().is_err());
        let draws = Draws(AtomicU64::new(1));
        let d = Direction {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            ..Direction::default()
        };
        for _ in 0..1000 {
            let (x, held) = draws.fate(&d).expect("no loss");
            assert!(!held);
            assert!(
                x >= Duration::from_millis(40) && x <= Duration::from_millis(60),
                "{x:?}"
            );
        }
        // Jitter alone keeps order; a held-back datagram may be overtaken.
        let t = Instant::now();
        let mut fifo = Fifo(None);
        let a = fifo.due(t, (Duration::from_millis(60), false));
        let b = fifo.due(
            t + Duration::from_millis(1),
            (Duration::from_millis(40), false),
        );
        assert!(b >= a);
        let c = fifo.due(
            t + Duration::from_millis(2),
            (Duration::from_millis(90), true),
        );
        let d2 = fifo.due(
            t + Duration::from_millis(3),
            (Duration::from_millis(40), false),
        );
        assert!(d2 < c && d2 >= b);
    }
}
