//! `decode_snapshot` on arbitrary bytes (SPEC.md §4.3).
//!
//! Properties: never panics; a decoded snapshot respects the header rules, its archive
//! deserializes fully, its element counts are bounded by the body length (validated
//! arrays cannot overlap), and re-encoding its content with `encode_snapshot` gives
//! datagrams that decode to the same zone, acks and entities.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::rancor;
use zonehost_protocol::datagram::{MAX_SNAPSHOT_PARTS, SNAPSHOT_HEADER_LEN};
use zonehost_protocol::snapshot::{decode_snapshot, encode_snapshot, SnapshotBody};
use zonehost_protocol::MAX_DATAGRAM_LEN;

/// Archived sizes (SPEC.md §4.3).
const BODY_FIXED_LEN: usize = 18;
const ACK_LEN: usize = 8;
const ENTITY_LEN: usize = 22;

fuzz_target!(|data: &[u8]| {
    let Ok((header, body)) = decode_snapshot(data) else {
        return;
    };
    assert!(data.len() <= MAX_DATAGRAM_LEN);
    let body_len = data.len() - SNAPSHOT_HEADER_LEN;
    assert_eq!(usize::from(header.body_len.get()), body_len);
    assert!(header.parts >= 1 && header.parts <= MAX_SNAPSHOT_PARTS);
    assert!(header.part < header.parts);
    assert_eq!(header.flags.get(), 0);

    let (acks, entities) = (body.acks.len(), body.entities.len());
    assert!(
        BODY_FIXED_LEN + ACK_LEN * acks + ENTITY_LEN * entities <= body_len,
        "{acks} acks and {entities} entities in a {body_len}-byte body"
    );
    let mut sum = 0u64;
    for e in body.entities.iter() {
        sum = sum
            .wrapping_add(u64::from(e.id.to_native()))
            .wrapping_add(e.x_mm.to_native() as u64)
            .wrapping_add(e.y_mm.to_native() as u64)
            .wrapping_add(u64::from(e.hp.to_native()) + u64::from(e.kind));
    }
    for a in body.acks.iter() {
        let found = body.ack_for(a.entity.to_native());
        assert!(found.is_some());
    }
    std::hint::black_box(sum);

    let full: SnapshotBody = rkyv::deserialize::<SnapshotBody, rancor::Error>(body)
        .expect("a validated body deserializes");
    assert_eq!((full.acks.len(), full.entities.len()), (acks, entities));

    let mut out = Vec::new();
    encode_snapshot(
        header.tick.get(),
        header.instance.get(),
        full.zone,
        &full.acks,
        &full.entities,
        &mut out,
    )
    .expect("content that fit one datagram re-encodes");
    let mut back = Vec::new();
    for (i, d) in out.iter().enumerate() {
        assert!(d.len() <= MAX_DATAGRAM_LEN);
        let (h, b) = decode_snapshot(d).expect("encoder output decodes");
        assert_eq!((usize::from(h.part), usize::from(h.parts)), (i, out.len()));
        assert_eq!((h.tick, h.instance), (header.tick, header.instance));
        let part: SnapshotBody =
            rkyv::deserialize::<SnapshotBody, rancor::Error>(b).expect("deserialize");
        assert_eq!((part.zone, &part.acks), (full.zone, &full.acks));
        back.extend(part.entities);
    }
    assert_eq!(back, full.entities);
});
