//! Issue 17 item 2: with the ACK frequency extension on both sides, a player exchanging
//! datagrams with the server at 30 Hz each way sends and receives few packets that carry
//! nothing but ACKs. Real QUIC on 127.0.0.1; the packet counts are the client's quinn
//! connection statistics (the server publishes the same counts as metrics, checked too).
//!
//! quinn asks its peer for an ACK delay of at most the greater of the round-trip time and
//! 25 ms. On bare loopback that is 25 ms, shorter than a 30 Hz period, so whether an ACK
//! finds a datagram to ride on depends on the phase between the two senders (printed, not
//! asserted). On a path with a 60 ms round trip (the client's socket impairment adds 30 ms
//! each way, as a player's internet path would) and a phase that leaves the server 30 ms
//! between an input and its next snapshot, quinn's defaults send an ACK of its own for
//! about every input, and the requested 50 ms hold every ACK until the next datagram:
//! that is asserted.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{TestServer, WAIT};
use zonehost_client::{
    AckOptions, Client, EndpointBuilder, Impairment, Incoming, PacketCounts, TransportOptions,
    Trust,
};
use zonehost_protocol::datagram::InputCmd;

/// Datagrams each way per second.
const HZ: u16 = 30;
/// Measured window (after a warm-up).
const WINDOW: Duration = Duration::from_secs(2);
/// Delay from a snapshot's arrival to the input the client sends in reply. With 30 ms
/// each way the input reaches the server 70 ms after the snapshot left, 3.3 ms past a
/// snapshot tick (a 33.3 ms period), so the server's next datagram is 30 ms away: beyond
/// quinn's default 25 ms ACK delay, within the 50 ms the ACK frequency extension asks for.
const INPUT_AFTER: Duration = Duration::from_millis(10);

/// What one exchange measured on the client: packets it sent and received.
struct Exchange {
    up: PacketCounts,
    down: PacketCounts,
    /// The server's published counts over the whole connection: `[sent, received]`
    /// packets and ACK-only packets.
    server_packets: [u64; 2],
}

impl Exchange {
    fn share(&self) -> f64 {
        let ack_only = self.up.ack_only + self.down.ack_only;
        let packets = self.up.packets + self.down.packets;
        ack_only as f64 / packets.max(1) as f64
    }
}

/// Connects one player over a path with `one_way` added delay each way, then sends inputs
/// at `HZ` while the server sends snapshots at `HZ`, and returns the client's packet counts
/// over `WINDOW`.
async fn exchange(ack: bool, one_way: Duration) -> Exchange {
    let mut impairment = Impairment::default();
    impairment.up.latency = one_way;
    impairment.down.latency = one_way;
    let server = TestServer::start(|c| {
        c.snapshot_rate_hz = HZ;
        c.ack.frequency = ack;
    })
    .await;
    let endpoint = EndpointBuilder::new(Trust::Certificate(server.server.certificate.clone()))
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .impair(impairment)
        .transport(TransportOptions {
            ack: if ack {
                AckOptions::default()
            } else {
                AckOptions::off()
            },
            ..TransportOptions::default()
        })
        .build()
        .expect("client endpoint");
    let token = server.token("acker");
    let mut client = tokio::time::timeout(
        WAIT,
        Client::connect(
            &endpoint.endpoint,
            server.addr(),
            "localhost",
            &token,
            "acks",
        ),
    )
    .await
    .expect("connects in time")
    .expect("welcome");
    // An input goes `INPUT_AFTER` after each snapshot arrives (a client that reacts to
    // what it sees), so the phase between the two senders is fixed, not left to chance.
    let mut next_input: Option<tokio::time::Instant> = None;
    let warm_up_end = Instant::now() + Duration::from_millis(500) + one_way * 4;
    let end = warm_up_end + WINDOW;
    let mut start = None;
    let mut x = 0i16;
    loop {
        let now = Instant::now();
        if start.is_none() && now >= warm_up_end {
            let s = client.connection().stats();
            start = Some((PacketCounts::sent(&s), PacketCounts::received(&s)));
        }
        if now >= end {
            break;
        }
        let due = next_input;
        tokio::select! {
            () = async { if let Some(at) = due { tokio::time::sleep_until(at).await } }, if due.is_some() => {
                next_input = None;
                x = if x > 0 { -1000 } else { 1000 };
                client.send_input(InputCmd::new(x, 0, 0)).expect("input sent");
            }
            event = tokio::time::timeout(WAIT, client.next_event()) => {
                let event = event.expect("snapshots keep coming").expect("connection stays up");
                if matches!(event, Incoming::Snapshot(..)) && next_input.is_none() {
                    next_input = Some(tokio::time::Instant::now() + INPUT_AFTER);
                }
            }
        }
    }
    let s = client.connection().stats();
    let (up0, down0) = start.expect("the window started");
    let up = PacketCounts::sent(&s).since(&up0);
    let down = PacketCounts::received(&s).since(&down0);
    client.close().await.expect("bye");
    // The server samples a connection's counts every second and once when it ends.
    let stats = server.server.stats.clone();
    let deadline = Instant::now() + WAIT;
    while stats.quic_packets[1].load(Ordering::Relaxed) < up.packets && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_packets = [
        stats.quic_packets[0].load(Ordering::Relaxed),
        stats.quic_packets[1].load(Ordering::Relaxed),
    ];
    Exchange {
        up,
        down,
        server_packets,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_ride_on_datagrams_at_30_hz_each_way() {
    let path = Duration::from_millis(30);
    let runs = [
        (
            "loopback, quinn defaults",
            exchange(false, Duration::ZERO).await,
        ),
        (
            "loopback, ACK frequency",
            exchange(true, Duration::ZERO).await,
        ),
        ("60 ms RTT, quinn defaults", exchange(false, path).await),
        ("60 ms RTT, ACK frequency", exchange(true, path).await),
    ];
    for (name, e) in &runs {
        eprintln!(
            "{name}: up {} packets ({} datagrams, {} ACK-only), down {} packets ({} datagrams, \
             {} ACK-only), ACK-only share {:.1} %; server counted sent {} received {}",
            e.up.packets,
            e.up.datagrams,
            e.up.ack_only,
            e.down.packets,
            e.down.datagrams,
            e.down.ack_only,
            e.share() * 100.0,
            e.server_packets[0],
            e.server_packets[1],
        );
    }
    let secs = WINDOW.as_secs_f64();
    for (name, e) in &runs {
        // Data really flowed both ways at about HZ (loose: a loaded machine may lag).
        assert!(
            e.up.datagrams as f64 >= f64::from(HZ) * secs * 0.6,
            "{name}: {} input datagrams",
            e.up.datagrams
        );
        assert!(
            e.down.datagrams as f64 >= f64::from(HZ) * secs * 0.6,
            "{name}: {} snapshot datagrams",
            e.down.datagrams
        );
        // The server's published counts cover at least what the client saw in the window.
        assert!(e.server_packets[0] >= e.down.packets, "{name}");
        assert!(e.server_packets[1] >= e.up.packets, "{name}");
    }
    let new = &runs[3].1;
    assert!(
        new.share() < 0.10,
        "ACK-only share {:.1} % with ACK frequency on a 60 ms path",
        new.share() * 100.0
    );
}
