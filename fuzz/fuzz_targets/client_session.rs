//! A `ClientSession` after `hello()`, fed arbitrary control-stream bytes, datagrams,
//! inputs, requests and clock steps (input format: `zonehost_protocol_fuzz::Op`).
//!
//! Properties: never panics, and its observable state only moves forward: the state
//! (New < AwaitingWelcome < Active < Closed), the newest snapshot tick, the highest acked
//! input; inputs report the view's newest complete tick; `InputAcked` sequences strictly increase and were sent; a `Response` answers
//! a request that was made and not yet answered; every input datagram it produces decodes.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use zonehost_protocol::datagram::{InputCmd, InputDatagram};
use zonehost_protocol::frame::FrameDecoder;
use zonehost_protocol::message::{ClientMsg, Request};
use zonehost_protocol::session::SessionState;
use zonehost_protocol::{ClientEvent, ClientSession};
use zonehost_protocol_fuzz::{Op, Ops};

fn rank(s: SessionState) -> u8 {
    match s {
        SessionState::New => 0,
        SessionState::AwaitingWelcome => 1,
        SessionState::Active => 2,
        SessionState::Closed => 3,
    }
}

#[derive(Default)]
struct Seen {
    welcomes: usize,
    last_acked_seq: u32,
    pending: HashSet<u32>,
}

fn check_event(s: &ClientSession, seen: &mut Seen, e: ClientEvent) {
    match e {
        ClientEvent::Welcome(_) => {
            seen.welcomes += 1;
            assert_eq!(seen.welcomes, 1, "a second Welcome was accepted");
        }
        ClientEvent::InputAcked { seq, .. } => {
            assert!(seq > seen.last_acked_seq, "acks go forward");
            assert!(seq < s.next_input_seq(), "acked input {seq} was never sent");
            assert!(seq <= s.highest_acked());
            seen.last_acked_seq = seq;
        }
        ClientEvent::Response { id, .. } => {
            assert!(
                seen.pending.remove(&id),
                "response {id} answers no open request"
            );
        }
        ClientEvent::Redirected(_) => {
            // Before the Welcome (another server owns the player) or after it (a draining
            // server hands the player over, or the player moves to its party leader's
            // server, SPEC §2.4): either way the session ends.
            assert_eq!(
                s.state(),
                SessionState::Closed,
                "a Redirect ends the session"
            );
        }
        ClientEvent::Rejected(_) | ClientEvent::Event(_) | ClientEvent::Goaway(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut s = ClientSession::new("tok", "fuzz");
    let hello = s.hello().expect("hello from New");
    let mut d = FrameDecoder::default();
    d.extend(&hello);
    assert!(matches!(
        d.next_message::<ClientMsg>(),
        Ok(Some(ClientMsg::Hello(h))) if h.version == u16::from(zonehost_protocol::PROTOCOL_VERSION) && h.token == "tok"
    ));
    let mut seen = Seen::default();

    for op in Ops(data) {
        let (state, tick, acked) = (s.state(), s.newest_tick(), s.highest_acked());
        match op {
            Op::Stream(bytes) => {
                let _ = s.handle_stream_data(bytes, now);
            }
            Op::Datagram(bytes) => {
                if let Ok(info) = s.handle_datagram(bytes, now) {
                    assert_eq!(state, SessionState::Active);
                    assert!(info.part < info.parts);
                    if info.other_instance {
                        assert!(info.stale && info.last_input.is_none());
                        assert_eq!(s.newest_tick(), tick);
                    } else {
                        assert_eq!(info.stale, info.tick < tick);
                        assert_eq!(s.newest_tick(), tick.max(info.tick));
                    }
                }
            }
            Op::Input(x, y, buttons) => {
                let seq = s.next_input_seq();
                let cmd = InputCmd::new(x, y, buttons);
                match s.send_input(cmd, now) {
                    Ok(bytes) => {
                        assert_eq!(state, SessionState::Active);
                        let d = InputDatagram::decode(&bytes).expect("own input decodes");
                        assert_eq!(d.header.seq.get(), seq);
                        // Inputs report the newest *complete* tick, the delta baseline.
                        assert_eq!(d.header.ack_tick.get(), s.view().tick());
                        assert!(s.view().tick() <= s.newest_tick());
                        assert_eq!(d.cmds[0], cmd);
                        assert_eq!(s.next_input_seq(), seq + 1);
                    }
                    Err(_) => assert_ne!(state, SessionState::Active),
                }
            }
            Op::Request(t) => match s.request(Request::Ping { client_time_us: t }, now) {
                Ok((id, _)) => {
                    assert_eq!(state, SessionState::Active);
                    assert!(seen.pending.insert(id), "request id {id} reused");
                }
                Err(_) => assert_ne!(state, SessionState::Active),
            },
            Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            Op::Poll => {
                while let Some(e) = s.poll_event() {
                    check_event(&s, &mut seen, e);
                }
            }
            Op::Bye => {
                s.bye().expect("bye encodes");
                assert_eq!(s.state(), SessionState::Closed);
            }
            Op::Hello => assert!(s.hello().is_err()),
        }
        assert!(
            rank(s.state()) >= rank(state),
            "{state:?} -> {:?}",
            s.state()
        );
        assert!(s.newest_tick() >= tick);
        assert!(s.highest_acked() >= acked);
    }
    while let Some(e) = s.poll_event() {
        check_event(&s, &mut seen, e);
    }
});
