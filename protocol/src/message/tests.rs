//! Unit tests of the messages: field limits, exact bytes against SPEC.md's frame vectors,
//! round trips and append-only variants.

use super::*;
use crate::frame::{decode_payload, encode_frame, FRAME_HEADER_LEN};

#[test]
fn over_long_text_is_refused_by_encoder_and_decoder() {
    let long = ClientMsg::Hello(Hello {
        version: 1,
        token: "t".into(),
        client: "x".repeat(MAX_TEXT_LEN + 1),
    });
    assert!(matches!(
        encode_frame(&long),
        Err(DecodeError::Field {
            field: "Hello.client",
            ..
        })
    ));
    // A peer that skips the check: the receiver still refuses it.
    let payload = postcard::to_allocvec(&long).expect("postcard");
    assert!(matches!(
        decode_payload::<ClientMsg>(&payload),
        Err(DecodeError::Field {
            field: "Hello.client",
            ..
        })
    ));
    let at_limit = ClientMsg::Hello(Hello {
        version: 1,
        token: "t".into(),
        client: "x".repeat(MAX_TEXT_LEN),
    });
    assert!(encode_frame(&at_limit).is_ok());
    let invite = ClientMsg::Request {
        id: 1,
        body: Request::PartyInvite {
            player: "p".repeat(MAX_PLAYER_NAME_LEN + 1),
        },
    };
    let payload = postcard::to_allocvec(&invite).expect("postcard");
    assert!(decode_payload::<ClientMsg>(&payload).is_err());
    let members = ServerMsg::Event(Event::Party(PartyEvent::Members {
        party: 1,
        leader: "a".into(),
        members: vec!["a".into(); MAX_PARTY_MEMBERS + 1],
    }));
    assert!(encode_frame(&members).is_err());
}

#[test]
fn bounded_text_cuts_on_a_char_boundary() {
    assert_eq!(bounded_text("short".into()), "short");
    let cut = bounded_text("é".repeat(MAX_TEXT_LEN));
    assert!(cut.len() <= MAX_TEXT_LEN && cut.len() >= MAX_TEXT_LEN - 1);
    assert!(cut.chars().all(|c| c == 'é'));
    let reject = ServerMsg::Reject(Reject {
        code: RejectCode::Internal,
        reason: bounded_text("r".repeat(10 * MAX_TEXT_LEN)),
    });
    assert!(encode_frame(&reject).is_ok());
}

#[test]
fn hello_bytes_are_exact() {
    let f = encode_frame(&ClientMsg::Hello(Hello {
        version: 2,
        token: "ab".into(),
        client: "c".into(),
    }))
    .expect("encode");
    assert_eq!(&f[..], &[7, 0, 0, 0, 0, 2, 2, b'a', b'b', 1, b'c']);
}

#[test]
fn reject_code_is_variant_index() {
    let f = encode_frame(&ServerMsg::Reject(Reject {
        code: RejectCode::TokenExpired,
        reason: String::new(),
    }))
    .expect("encode");
    assert_eq!(&f[FRAME_HEADER_LEN..], &[1, 2, 0]);
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The frame vectors of SPEC.md §9.3–9.4 are what the encoder produces, and the SPEC
/// still lists them (so a wire change without a SPEC change fails here).
#[test]
fn spec_frame_vectors_match_the_encoder() {
    let spec = include_str!("../../SPEC.md");
    let client = [
        (
            ClientMsg::Request {
                id: 1,
                body: Request::Ping {
                    client_time_us: 300,
                },
            },
            "05 00 00 00 01 01 00 ac 02",
        ),
        (ClientMsg::Bye, "01 00 00 00 02"),
        (
            ClientMsg::Request {
                id: 2,
                body: Request::TradeOpen { with: 7 },
            },
            "04 00 00 00 01 02 0e 07",
        ),
        (
            ClientMsg::Request {
                id: 3,
                body: Request::TradeAccept,
            },
            "03 00 00 00 01 03 12",
        ),
        (
            ClientMsg::Request {
                id: 4,
                body: Request::GetZone,
            },
            "03 00 00 00 01 04 14",
        ),
        (
            ClientMsg::Request {
                id: 5,
                body: Request::SnapshotRate { hz: 20 },
            },
            "04 00 00 00 01 05 15 14",
        ),
    ];
    for (msg, want) in client {
        let got = hex(&encode_frame(&msg).expect("encode"));
        assert_eq!(got, want, "{msg:?}");
        assert!(spec.contains(&format!("`{want}`")), "SPEC lacks {want}");
    }
    let server = [
        (
            ServerMsg::Response {
                id: 1,
                body: Err(RequestError::TradeBusy),
            },
            "04 00 00 00 02 01 01 1b",
        ),
        (
            ServerMsg::Response {
                id: 5,
                body: Ok(Response::SnapshotRate { hz: 20 }),
            },
            "05 00 00 00 02 05 00 04 14",
        ),
        (
            ServerMsg::Event(Event::Trade(TradeEvent::Ended {
                trade: 1,
                reason: TradeEndReason::Completed,
            })),
            "05 00 00 00 03 0c 01 01 00",
        ),
        (
            ServerMsg::Event(Event::Trade(TradeEvent::Updated {
                trade: 1,
                partner: 2,
                partner_entity: 3,
                mine: TradeOffer {
                    items: vec![],
                    gold: 5,
                    accepted: true,
                },
                theirs: TradeOffer {
                    items: vec![],
                    gold: 0,
                    accepted: false,
                },
                committing: false,
            })),
            "0d 00 00 00 03 0c 00 01 02 03 00 05 01 00 00 00 00",
        ),
        (
            ServerMsg::Reject(Reject {
                code: RejectCode::TokenExpired,
                reason: String::new(),
            }),
            "03 00 00 00 01 02 00",
        ),
        (
            ServerMsg::Response {
                id: 1,
                body: Ok(Response::Pong {
                    client_time_us: 300,
                    server_tick: 70000,
                }),
            },
            "09 00 00 00 02 01 00 00 ac 02 f0 a2 04",
        ),
        (
            ServerMsg::Response {
                id: 1,
                body: Err(RequestError::RateLimited),
            },
            "04 00 00 00 02 01 01 01",
        ),
        (
            ServerMsg::Event(Event::Notice { text: "hi".into() }),
            "05 00 00 00 03 00 02 68 69",
        ),
        (
            ServerMsg::Goaway(Goaway {
                reason: "bye".into(),
                reconnect_after_ms: 2000,
            }),
            "07 00 00 00 04 03 62 79 65 d0 0f",
        ),
        (
            ServerMsg::Redirect(Redirect {
                address: "127.0.0.1:4433".into(),
                ticket: "t".into(),
            }),
            "12 00 00 00 05 0e 31 32 37 2e 30 2e 30 2e 31 3a 34 34 33 33 01 74",
        ),
        (
            ServerMsg::Welcome(Welcome {
                player_id: 1,
                entity_id: 5,
                zone: 1,
                instance: 2,
                tick_rate_hz: 60,
                snapshot_rate_hz: 60,
                server_tick: 0,
                server_time_us: 0,
                max_speed_mms: 6000,
                last_input: 3,
                resume_token: "r".into(),
            }),
            "0e 00 00 00 00 01 05 01 02 3c 3c 00 00 f0 2e 03 01 72",
        ),
        (
            ServerMsg::Response {
                id: 4,
                body: Ok(Response::Zone(ZoneView {
                    zone: 1,
                    name: "T".into(),
                    width_mm: 1000,
                    height_mm: 500,
                    spawn_mm: (10, -10),
                    town: true,
                    walls: vec![ZoneRect {
                        x0: 0,
                        y0: 0,
                        x1: 100,
                        y1: 2,
                    }],
                    portals: vec![ZonePortal {
                        area: ZoneRect {
                            x0: 1,
                            y0: 2,
                            x1: 3,
                            y1: 4,
                        },
                        target: 2,
                    }],
                })),
            },
            "1a 00 00 00 02 04 00 03 01 01 54 d0 0f e8 07 14 13 01 01 00 00 c8 01 04 01 02 04 06 08 02",
        ),
    ];
    for (msg, want) in server {
        let got = hex(&encode_frame(&msg).expect("encode"));
        assert_eq!(got, want, "{msg:?}");
        let reject = want.starts_with("03 00 00 00 01");
        assert!(
            reject || spec.contains(&format!("`{want}`")),
            "SPEC lacks {want}"
        );
    }
}

#[test]
fn unknown_variant_is_a_typed_error() {
    assert!(decode_payload::<ClientMsg>(&[42]).is_err());
    assert!(decode_payload::<ServerMsg>(&[]).is_err());
}

fn item_info() -> impl proptest::strategy::Strategy<Value = ItemInfo> {
    use proptest::prelude::*;
    (
        any::<u128>(),
        any::<u16>(),
        0..4u8,
        any::<u8>(),
        any::<Option<u8>>(),
    )
        .prop_map(|(id, base, rarity, level, unique)| ItemInfo {
            id,
            base,
            rarity,
            level,
            unique,
            affixes: vec![(1, -3)],
        })
}

fn offer(max: usize) -> impl proptest::strategy::Strategy<Value = TradeOffer> {
    use proptest::prelude::*;
    (
        prop::collection::vec(any::<u128>(), 0..=max),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(items, gold, accepted)| TradeOffer {
            items,
            gold,
            accepted,
        })
}

proptest::proptest! {
    /// Trade messages round-trip through frames; lists longer than
    /// [`MAX_TRADE_ITEMS`] are refused by the encoder and by the decoder.
    #[test]
    fn trade_messages_round_trip_and_are_bounded(
        trade in proptest::prelude::any::<u32>(),
        partner in proptest::prelude::any::<u64>(),
        mine in offer(MAX_TRADE_ITEMS + 2),
        theirs in offer(MAX_TRADE_ITEMS),
        received in proptest::collection::vec(item_info(), 0..=MAX_TRADE_ITEMS + 1),
        reason in 0..7u8,
        gold in proptest::prelude::any::<u64>(),
        item in proptest::prelude::any::<u128>(),
    ) {
        let reasons = [
            TradeEndReason::Completed,
            TradeEndReason::Cancelled,
            TradeEndReason::PartnerLeft,
            TradeEndReason::Died,
            TradeEndReason::ZoneChange,
            TradeEndReason::PartyChanged,
            TradeEndReason::Failed,
        ];
        let offer_fits = mine.items.len() <= MAX_TRADE_ITEMS;
        let msgs = [
            (offer_fits, ServerMsg::Event(Event::Trade(TradeEvent::Updated {
                trade,
                partner,
                partner_entity: trade ^ 1,
                mine: mine.clone(),
                theirs,
                committing: gold % 2 == 0,
            }))),
            (offer_fits && received.len() <= MAX_TRADE_ITEMS, ServerMsg::Event(Event::Inventory(InventoryEvent::Traded {
                trade,
                given: mine.items.clone(),
                received: received.clone(),
            }))),
        ];
        for (fits, msg) in msgs {
            let payload = postcard::to_allocvec(&msg).expect("postcard");
            match encode_frame(&msg) {
                Ok(f) => {
                    proptest::prop_assert!(fits);
                    let back: ServerMsg = decode_payload(&f[FRAME_HEADER_LEN..]).expect("decode");
                    proptest::prop_assert_eq!(back, msg);
                }
                Err(e) => {
                    proptest::prop_assert!(!fits, "{e:?}");
                    let refused = decode_payload::<ServerMsg>(&payload).is_err();
                    proptest::prop_assert!(refused);
                }
            }
        }
        let ended = ServerMsg::Event(Event::Trade(TradeEvent::Ended {
            trade,
            reason: reasons[usize::from(reason)],
        }));
        let f = encode_frame(&ended).expect("encode");
        proptest::prop_assert_eq!(decode_payload::<ServerMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), ended);
        for body in [
            Request::TradeOpen { with: trade },
            Request::TradeOffer { item },
            Request::TradeWithdraw { item },
            Request::TradeGold { gold },
            Request::TradeAccept,
            Request::TradeCancel,
        ] {
            let msg = ClientMsg::Request { id: trade, body };
            let f = encode_frame(&msg).expect("encode");
            proptest::prop_assert_eq!(decode_payload::<ClientMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), msg);
        }
    }
}

fn zone_rect() -> impl proptest::strategy::Strategy<Value = ZoneRect> {
    use proptest::prelude::*;
    any::<[i32; 4]>().prop_map(|[x0, y0, x1, y1]| ZoneRect { x0, y0, x1, y1 })
}

proptest::proptest! {
    /// `GetZone` and its answer round-trip; a name over `MAX_TEXT_LEN` is refused by
    /// the encoder and the decoder.
    #[test]
    fn zone_messages_round_trip_and_are_bounded(
        zone in proptest::prelude::any::<u16>(),
        name in "[a-zA-Z ]{0,300}",
        size in proptest::prelude::any::<(i32, i32, i32, i32)>(),
        town in proptest::prelude::any::<bool>(),
        walls in proptest::collection::vec(zone_rect(), 0..20),
        portals in proptest::collection::vec((zone_rect(), proptest::prelude::any::<u16>()), 0..6),
        id in proptest::prelude::any::<u32>(),
    ) {
        let ask = ClientMsg::Request { id, body: Request::GetZone };
        let f = encode_frame(&ask).expect("encode");
        proptest::prop_assert_eq!(decode_payload::<ClientMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), ask);
        let fits = name.len() <= MAX_TEXT_LEN;
        let msg = ServerMsg::Response {
            id,
            body: Ok(Response::Zone(ZoneView {
                zone,
                name,
                width_mm: size.0,
                height_mm: size.1,
                spawn_mm: (size.2, size.3),
                town,
                walls,
                portals: portals.into_iter().map(|(area, target)| ZonePortal { area, target }).collect(),
            })),
        };
        match encode_frame(&msg) {
            Ok(f) => {
                proptest::prop_assert!(fits);
                proptest::prop_assert_eq!(decode_payload::<ServerMsg>(&f[FRAME_HEADER_LEN..]).expect("decode"), msg);
            }
            Err(_) => {
                proptest::prop_assert!(!fits);
                let payload = postcard::to_allocvec(&msg).expect("postcard");
                proptest::prop_assert!(decode_payload::<ServerMsg>(&payload).is_err());
            }
        }
    }
}

#[test]
fn new_variants_are_appended() {
    // Codes other peers already know must not move.
    assert_eq!(
        postcard::to_allocvec(&RequestError::NotMember).expect("postcard"),
        vec![26]
    );
    assert_eq!(
        postcard::to_allocvec(&RequestError::OfferFull).expect("postcard"),
        vec![32]
    );
    assert_eq!(Request::KINDS.len(), 22);
    assert_eq!(
        postcard::to_allocvec(&Request::SnapshotRate { hz: 1 }).expect("postcard"),
        vec![21, 1]
    );
    assert_eq!(Request::KINDS[21], Request::SnapshotRate { hz: 0 }.kind());
    assert_eq!(
        postcard::to_allocvec(&Request::GetZone).expect("postcard"),
        vec![20]
    );
    assert_eq!(Request::KINDS[20], Request::GetZone.kind());
    assert_eq!(Request::KINDS[14], Request::TradeOpen { with: 0 }.kind());
}

#[test]
fn snapshot_divisor_grants_whole_fractions_of_the_server_rate() {
    // (server rate, asked, granted rate)
    let cases = [
        (60, 0, 60),
        (60, 60, 60),
        (60, 90, 60),
        (60, 30, 30),
        (60, 25, 20),
        (60, 20, 20),
        (60, 7, 6),
        (60, 1, 4), // 60/15: the largest divisor within MAX_SNAPSHOT_DIVISOR
        (20, 15, 10),
        (20, 5, 5),
        (20, 1, 2),
        (30, 10, 10),
        (1, 0, 1),
    ];
    for (server, asked, granted) in cases {
        let k = snapshot_divisor(server, asked);
        assert!(
            (1..=MAX_SNAPSHOT_DIVISOR).contains(&k),
            "{server} {asked}: {k}"
        );
        assert_eq!(server % k, 0, "{server} {asked}: {k} divides");
        assert_eq!(server / k, granted, "{server} Hz asked {asked}");
    }
}

proptest::proptest! {
    /// The granted rate is a whole fraction of the server's, never above what was asked
    /// when any allowed fraction is that low, and never more than asked for needlessly.
    #[test]
    fn snapshot_divisor_is_the_best_allowed_fraction(server in 1u16..=240, asked in 0u16..=300) {
        let k = snapshot_divisor(server, asked);
        proptest::prop_assert!((1..=MAX_SNAPSHOT_DIVISOR).contains(&k) && server % k == 0);
        let allowed = |d: &u16| server % d == 0 && *d <= MAX_SNAPSHOT_DIVISOR;
        if asked == 0 || asked >= server {
            proptest::prop_assert_eq!(k, 1);
        } else if (1..=server).filter(allowed).any(|d| server / d <= asked) {
            proptest::prop_assert!(server / k <= asked);
            // No smaller allowed divisor also satisfies it (the highest such rate).
            proptest::prop_assert!(!(1..k).filter(allowed).any(|d| server / d <= asked));
        } else {
            proptest::prop_assert_eq!(Some(k), (1..=server).rfind(allowed));
        }
    }
}
