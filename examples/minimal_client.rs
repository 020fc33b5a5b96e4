//! A minimal native zonehost client: connect, authenticate, walk in a circle for 5 seconds
//! sending 60 Hz inputs, print the position the server reports, say `Bye`.
//!
//! Run it against a local server, in three terminals (or background the server):
//!
//! ```text
//! cargo run --release -- serve
//!     # listens on 127.0.0.1:4433; on first run writes data/cert.der (the dev certificate)
//!     # and data/dev-signing.key (the dev token-signing key)
//! cargo run --release -- token --player alice
//!     # prints a token signed with data/dev-signing.key, valid for an hour
//! cargo run --release --example minimal_client -- \
//!     --server 127.0.0.1:4433 --cert data/cert.der --token <TOKEN>
//! ```
//!
//! Options: `--server ADDR` (default `127.0.0.1:4433`), `--cert FILE` (the server's DER
//! certificate, trusted exactly; default `data/cert.der`), `--token TOKEN` (required),
//! `--server-name NAME` (TLS name, default `localhost`).
//!
//! The pieces: [`EndpointBuilder`] makes a quinn endpoint that trusts the given certificate,
//! [`Client::connect`] does the QUIC handshake and `Hello` → `Welcome`,
//! [`Client::send_input`] sends one input datagram, [`Client::next_event`] returns session
//! events (input acknowledgements with their latency, responses, world events) and snapshot
//! datagrams; [`Client::view`] is what the player sees, rebuilt from the server's delta
//! snapshots.

use std::f32::consts::TAU;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use zonehost_client::{Client, EndpointBuilder, Incoming, Trust};
use zonehost_protocol::datagram::{InputCmd, MOVE_AXIS_MAX};
use zonehost_protocol::ClientEvent;

/// How long to walk.
const WALK: Duration = Duration::from_secs(5);
/// Input rate.
const INPUT_HZ: u32 = 60;

/// Command-line options.
#[derive(Debug)]
struct Args {
    server: SocketAddr,
    server_name: String,
    cert: String,
    token: String,
}

fn parse_args() -> Result<Args> {
    let mut server = "127.0.0.1:4433".to_string();
    let mut server_name = "localhost".to_string();
    let mut cert = "data/cert.der".to_string();
    let mut token = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => server = value()?,
            "--server-name" => server_name = value()?,
            "--cert" => cert = value()?,
            "--token" => token = Some(value()?),
            "-h" | "--help" => {
                println!("usage: minimal_client [--server ADDR] [--cert FILE] [--server-name NAME] --token TOKEN");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Args {
        server: server
            .parse()
            .with_context(|| format!("--server {server:?}"))?,
        server_name,
        cert,
        token: token
            .context("--token is required (mint one with `zonehost token --player NAME`)")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;

    // A client endpoint trusting exactly the server's certificate.
    let trust = Trust::certificate_file(&args.cert)?;
    let endpoint = EndpointBuilder::new(trust).build()?.endpoint;

    // QUIC + TLS handshake, then Hello -> Welcome (or a typed Rejected error).
    let mut client = Client::connect(
        &endpoint,
        args.server,
        &args.server_name,
        &args.token,
        "minimal_client",
    )
    .await
    .context("connecting")?;
    let welcome = client.welcome().clone();
    // (`welcome.resume_token` would resume this session after a lost connection; not printed.)
    println!(
        "welcome: player {} entity {} in zone {} instance {}, {} Hz ticks, {} Hz snapshots",
        welcome.player_id,
        welcome.entity_id,
        welcome.zone,
        welcome.instance,
        welcome.tick_rate_hz,
        welcome.snapshot_rate_hz
    );

    // Walk one circle in WALK, one input per 1/60 s, printing the position twice a second.
    let start = Instant::now();
    let mut inputs = tokio::time::interval(Duration::from_secs(1) / INPUT_HZ);
    inputs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_print = start;
    let (mut acks, mut latency_sum) = (0u32, Duration::ZERO);
    while start.elapsed() < WALK {
        tokio::select! {
            _ = inputs.tick() => {
                let angle = TAU * start.elapsed().as_secs_f32() / WALK.as_secs_f32();
                let axis = f32::from(MOVE_AXIS_MAX);
                let cmd = InputCmd::new((angle.cos() * axis) as i16, (angle.sin() * axis) as i16, 0);
                client.send_input(cmd)?;
            }
            incoming = client.next_event() => match incoming? {
                Incoming::Snapshot(info, _) => {
                    if last_print.elapsed() >= Duration::from_millis(500) {
                        if let Some(me) = client.view().iter().find(|e| e.id == welcome.entity_id) {
                            last_print = Instant::now();
                            println!(
                                "tick {:>6}  position ({:>8.2} m, {:>8.2} m)  last applied input {:?}",
                                info.tick,
                                me.x_mm as f32 / 1000.0,
                                me.y_mm as f32 / 1000.0,
                                info.last_input,
                            );
                        }
                    }
                }
                Incoming::Event(ClientEvent::InputAcked { latency, .. }) => {
                    acks += 1;
                    latency_sum += latency;
                }
                Incoming::Event(ClientEvent::Goaway(g)) => {
                    println!("server going away: {}", g.reason);
                    return Ok(());
                }
                Incoming::Event(other) => println!("event: {other:?}"),
            }
        }
    }
    if acks > 0 {
        println!(
            "{acks} inputs acknowledged, mean action latency {:.1} ms",
            latency_sum.as_secs_f64() * 1000.0 / f64::from(acks)
        );
    }

    // Bye: the server saves the player and closes the connection.
    client.close().await?;
    endpoint.wait_idle().await;
    println!("bye");
    Ok(())
}
