//! Writes valid seed inputs for every fuzz target into `<dir>/<target>/` (default `seeds`).
//!
//! `cargo +nightly run --example gen_seeds -- seeds` (from `fuzz/`); `seed.sh` runs it.
//! The output is deterministic, and committed under `fuzz/seeds/`.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use zonehost_protocol::datagram::{encode_input, InputCmd, BUTTON_ATTACK};
use zonehost_protocol::frame::encode_frame;
use zonehost_protocol::message::{
    ClientMsg, Combat, Event, Goaway, Hello, InventoryEvent, InventoryView, ItemInfo, PartyEvent,
    Reject, RejectCode, Request, RequestError, Response, ServerMsg, TradeEndReason, TradeEvent,
    TradeOffer, Welcome, ZonePortal, ZoneRect, ZoneView,
};
use zonehost_protocol::snapshot::{
    diff, encode_snapshot, kind, Changes, EntityState, PlayerAck, SnapshotMeta,
};
use zonehost_protocol::token::{sign, Claims};
use zonehost_protocol_fuzz::{frame_input, Op};

fn entity(id: u32) -> EntityState {
    EntityState {
        id,
        x_mm: 50_000 - id as i32 * 100,
        y_mm: -7,
        vx_cms: -600,
        vy_cms: 3,
        hp: 90,
        max_hp: 100,
        kind: if id < 4 { kind::PLAYER } else { kind::MONSTER },
        flags: 0,
    }
}

fn acks(n: u32) -> Vec<PlayerAck> {
    (0..n)
        .map(|i| PlayerAck {
            entity: i,
            last_input: 10 + i,
        })
        .collect()
}

/// Full-state snapshot datagrams (baseline 0).
fn snapshots(tick: u32, acks: &[PlayerAck], entities: &[EntityState]) -> Vec<Vec<u8>> {
    delta(tick, 0, acks, &[], entities)
}

/// Snapshot datagrams of `now` as a delta against `base` (tick `baseline`).
fn delta(
    tick: u32,
    baseline: u32,
    acks: &[PlayerAck],
    base: &[EntityState],
    now: &[EntityState],
) -> Vec<Vec<u8>> {
    let mut changes = Changes::default();
    diff(base, now, &mut changes);
    let meta = SnapshotMeta {
        tick,
        baseline,
        instance: 9,
        zone: 1,
    };
    let mut out = Vec::new();
    encode_snapshot(meta, acks, &changes, &mut out).expect("encode snapshot");
    out.iter().map(|b| b.to_vec()).collect()
}

fn frame<T: serde::Serialize + zonehost_protocol::message::Bounded>(msg: &T) -> Vec<u8> {
    encode_frame(msg).expect("encode frame").to_vec()
}

fn welcome(entity_id: u32) -> ServerMsg {
    ServerMsg::Welcome(Welcome {
        player_id: 0x173c_5dad_7535_7f37,
        entity_id,
        zone: 1,
        instance: 9,
        tick_rate_hz: 60,
        snapshot_rate_hz: 60,
        server_tick: 100,
        server_time_us: 1_700_000_000_000_000,
        max_speed_mms: 6000,
        last_input: 0,
        resume_token: "resume".into(),
    })
}

fn claims() -> Claims {
    Claims {
        version: 1,
        player: "alice".into(),
        audience: "dev".into(),
        issued_at: 1000,
        expires_at: 2000,
        nonce: [7; 16],
        key_id: 3,
    }
}

struct Writer(PathBuf);

impl Writer {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir).expect("create seed dir");
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let w = Writer(Path::new(&dir).to_path_buf());

    // input_datagram: the SPEC example, two and eight commands.
    let one = encode_input(0x0102_0304, 7, &[InputCmd::new(1000, -1, BUTTON_ATTACK)]);
    w.put("input_datagram", "one_cmd", &one);
    let two = encode_input(
        10,
        3,
        &[InputCmd::new(0, 500, 0), InputCmd::new(-1000, 0, 1)],
    );
    w.put("input_datagram", "two_cmds", &two);
    let eight: Vec<InputCmd> = (0..8).map(|i| InputCmd::new(i * 100, -i, 0)).collect();
    w.put(
        "input_datagram",
        "eight_cmds",
        &encode_input(500, 499, &eight),
    );

    // snapshot: empty, one ack + one entity, and both parts of 4 players + 50 entities.
    w.put("snapshot", "empty", &snapshots(1, &[], &[])[0]);
    w.put(
        "snapshot",
        "one_entity",
        &snapshots(7, &acks(1), &[entity(1)])[0],
    );
    let ents: Vec<EntityState> = (0..64).map(entity).collect();
    for (i, part) in snapshots(1000, &acks(4), &ents).iter().enumerate() {
        w.put("snapshot", &format!("4p_64e_part{i}"), part);
    }
    // A delta of the same scene: one gone, one new, moves and hit-point changes.
    let mut now: Vec<EntityState> = ents[1..].to_vec();
    now.push(entity(90));
    for e in &mut now[..20] {
        e.x_mm += 120;
    }
    for e in &mut now[30..35] {
        e.hp -= 5;
    }
    w.put(
        "snapshot",
        "4p_64e_delta",
        &delta(1003, 1000, &acks(4), &ents, &now)[0],
    );

    // frame_client: what a client sends, whole and in small chunks.
    let hello = frame(&ClientMsg::Hello(Hello {
        version: 2,
        token: "ab".into(),
        client: "c".into(),
    }));
    let ping = frame(&ClientMsg::Request {
        id: 1,
        body: Request::Ping {
            client_time_us: 300,
        },
    });
    let bye = frame(&ClientMsg::Bye);
    w.put("frame_client", "hello", &frame_input(&[], &hello));
    let session = [hello.clone(), ping.clone(), bye].concat();
    w.put(
        "frame_client",
        "hello_ping_bye_chunked",
        &frame_input(&[3, 1, 7], &session),
    );
    w.put(
        "frame_client",
        "ping_partial",
        &frame_input(&[2], &ping[..6]),
    );

    let game: Vec<u8> = [
        ClientMsg::Request {
            id: 2,
            body: Request::Equip {
                item: u128::MAX - 7,
            },
        },
        ClientMsg::Request {
            id: 3,
            body: Request::PartyInvite {
                player: "bob".into(),
            },
        },
        ClientMsg::Request {
            id: 4,
            body: Request::EnterZone,
        },
        ClientMsg::Request {
            id: 5,
            body: Request::GetZone,
        },
    ]
    .iter()
    .flat_map(frame)
    .collect();
    w.put("frame_client", "game_requests", &frame_input(&[], &game));

    // frame_server: what a server sends.
    let reject = frame(&ServerMsg::Reject(Reject {
        code: RejectCode::TokenExpired,
        reason: String::new(),
    }));
    let pong = frame(&ServerMsg::Response {
        id: 1,
        body: Ok(Response::Pong {
            client_time_us: 300,
            server_tick: 70_000,
        }),
    });
    let limited = frame(&ServerMsg::Response {
        id: 2,
        body: Err(RequestError::RateLimited),
    });
    let notice = frame(&ServerMsg::Event(Event::Notice { text: "hi".into() }));
    let goaway = frame(&ServerMsg::Goaway(Goaway {
        reason: "bye".into(),
        reconnect_after_ms: 2000,
    }));
    w.put("frame_server", "reject", &frame_input(&[], &reject));
    let sword = ItemInfo {
        id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        base: 12,
        rarity: 2,
        level: 7,
        unique: None,
        affixes: vec![(1, 15), (4, -3)],
    };
    let game: Vec<u8> = [
        ServerMsg::Response {
            id: 5,
            body: Ok(Response::Inventory(InventoryView {
                bag: vec![sword.clone()],
                equipment: vec![(
                    0,
                    ItemInfo {
                        unique: Some(3),
                        ..sword.clone()
                    },
                )],
                gold: 1234,
                level: 7,
                xp: 99,
            })),
        },
        ServerMsg::Response {
            id: 6,
            body: Err(RequestError::NotMember),
        },
        ServerMsg::Event(Event::Combat(Combat::Hit {
            attacker: 1,
            target: 40,
            physical: 12,
            fire: 3,
            crit: true,
            target_hp: 0,
        })),
        ServerMsg::Event(Event::ItemDropped {
            ground: 900,
            item: sword.clone(),
            owner: Some(77),
            x_mm: -1500,
            y_mm: 2500,
        }),
        ServerMsg::Event(Event::Gold {
            delta: -40,
            gold: 1194,
        }),
        ServerMsg::Event(Event::Inventory(InventoryEvent::Equipped {
            item: sword.id,
            slot: 0,
            swapped_out: Some(5),
        })),
        ServerMsg::Event(Event::Party(PartyEvent::Members {
            party: 3,
            leader: "alice".into(),
            members: vec!["alice".into(), "bob".into()],
        })),
        ServerMsg::Event(Event::ZoneEntered {
            zone: 2,
            instance: 10,
            entity_id: 3,
        }),
        ServerMsg::Event(Event::Trade(TradeEvent::Updated {
            trade: 4,
            partner: 77,
            partner_entity: 2,
            mine: TradeOffer {
                items: vec![sword.id],
                gold: 30,
                accepted: true,
            },
            theirs: TradeOffer {
                items: vec![],
                gold: 0,
                accepted: false,
            },
            committing: false,
        })),
        ServerMsg::Event(Event::Inventory(InventoryEvent::Traded {
            trade: 4,
            given: vec![sword.id],
            received: vec![sword.clone()],
        })),
        ServerMsg::Event(Event::Trade(TradeEvent::Ended {
            trade: 4,
            reason: TradeEndReason::Completed,
        })),
        ServerMsg::Response {
            id: 7,
            body: Err(RequestError::TradeBusy),
        },
        ServerMsg::Response {
            id: 8,
            body: Ok(Response::Zone(ZoneView {
                zone: 1,
                name: "Emberhold".into(),
                width_mm: 40_000,
                height_mm: 40_000,
                spawn_mm: (20_000, 20_000),
                town: true,
                walls: vec![ZoneRect {
                    x0: 10_000,
                    y0: 10_000,
                    x1: 12_000,
                    y1: 10_500,
                }],
                portals: vec![ZonePortal {
                    area: ZoneRect {
                        x0: 38_000,
                        y0: 18_000,
                        x1: 40_000,
                        y1: 22_000,
                    },
                    target: 2,
                }],
            })),
        },
        ServerMsg::Event(Event::Party(PartyEvent::dissolved(3))),
    ]
    .iter()
    .flat_map(frame)
    .collect();
    w.put(
        "frame_server",
        "game_messages",
        &frame_input(&[3, 9], &game),
    );

    let stream = [
        frame(&welcome(5)),
        pong.clone(),
        limited.clone(),
        notice.clone(),
        goaway.clone(),
    ]
    .concat();
    w.put(
        "frame_server",
        "welcome_to_goaway",
        &frame_input(&[], &stream),
    );
    w.put(
        "frame_server",
        "welcome_to_goaway_chunked",
        &frame_input(&[1, 5, 2, 40], &stream),
    );

    // token: valid for "dev" at 1500 with key 3; another audience; another key.
    let sk = SigningKey::from_bytes(&[9; 32]);
    w.put("token", "valid", sign(&claims(), &sk).as_bytes());
    let prod = Claims {
        audience: "prod".into(),
        ..claims()
    };
    w.put("token", "other_audience", sign(&prod, &sk).as_bytes());
    let other = Claims {
        key_id: 7,
        player: "bob_the-2nd".into(),
        ..claims()
    };
    w.put(
        "token",
        "other_key",
        sign(&other, &SigningKey::from_bytes(&[1; 32])).as_bytes(),
    );

    // client_session: welcome, inputs, acks in snapshots, requests and their answers.
    let mut ops = Vec::new();
    let mut push = |o: Op<'_>| o.encode(&mut ops);
    let welcome = frame(&welcome(2));
    push(Op::Stream(&welcome[..5]));
    push(Op::Stream(&welcome[5..]));
    push(Op::Poll);
    for i in 0..10 {
        push(Op::Input(i * 100, -i, (i % 2) as u16));
        push(Op::Advance(16));
    }
    let acked = |n| {
        let a = [
            PlayerAck {
                entity: 1,
                last_input: 1,
            },
            PlayerAck {
                entity: 2,
                last_input: n,
            },
        ];
        snapshots(100 + n, &a, &ents[..60.min(ents.len())])
    };
    for part in acked(3) {
        push(Op::Datagram(&part));
    }
    push(Op::Poll);
    push(Op::Request(300));
    push(Op::Advance(20));
    push(Op::Stream(&pong));
    push(Op::Request(301));
    push(Op::Stream(&limited));
    for part in acked(8) {
        push(Op::Datagram(&part));
    }
    push(Op::Stream(&notice));
    push(Op::Poll);
    let zone = frame(&ServerMsg::Event(Event::ZoneEntered {
        zone: 2,
        instance: 10,
        entity_id: 1,
    }));
    push(Op::Stream(&zone));
    for part in acked(9) {
        push(Op::Datagram(&part));
    }
    push(Op::Poll);
    push(Op::Stream(&goaway));
    push(Op::Hello);
    push(Op::Bye);
    push(Op::Poll);
    w.put("client_session", "full_session", &ops);

    let mut ops = Vec::new();
    Op::Stream(&reject).encode(&mut ops);
    Op::Poll.encode(&mut ops);
    Op::Input(1, 1, 0).encode(&mut ops);
    w.put("client_session", "rejected", &ops);

    println!("seeds written to {dir}");
}
