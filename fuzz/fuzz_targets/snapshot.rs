//! `decode_snapshot` and `SnapshotView::apply` on arbitrary bytes (SPEC.md §4.3).
//!
//! Properties: never panics; a decoded snapshot respects the header rules, its archive
//! deserializes fully, its element counts are bounded by the body length (validated
//! arrays cannot overlap); applying it to a view either fails with a typed error or
//! leaves the view sorted by id without duplicates; and re-encoding its content with
//! `encode_snapshot` gives one datagram that decodes to the same content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::rancor;
use zonehost_protocol::datagram::{MAX_SNAPSHOT_PARTS, SNAPSHOT_HEADER_LEN};
use zonehost_protocol::snapshot::{
    decode_snapshot, encode_snapshot, Applied, Change, Changes, EntityState,
    SnapshotBody, SnapshotMeta, SnapshotView, ACK_LEN, BODY_FIXED_LEN, DESPAWN_LEN,
    ENTITY_LEN, HP_LEN, MOVE_LEN,
};
use zonehost_protocol::MAX_DATAGRAM_LEN;

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
    let (tick, baseline) = (header.tick.get(), header.baseline.get());
    assert!(baseline == 0 || baseline < tick);

    let counts = (
        body.acks.len(),
        body.spawns.len(),
        body.moves.len(),
        body.hps.len(),
        body.despawns.len(),
    );
    assert!(
        BODY_FIXED_LEN
            + ACK_LEN * counts.0
            + ENTITY_LEN * counts.1
            + MOVE_LEN * counts.2
            + HP_LEN * counts.3
            + DESPAWN_LEN * counts.4
            <= body_len,
        "{counts:?} in a {body_len}-byte body"
    );
    for a in body.acks.iter() {
        assert!(body.ack_for(a.entity.to_native()).is_some());
    }

    // Applied to an empty view, and to one that holds the baseline when there is one.
    let mut view = SnapshotView::new();
    let fresh = view.apply(header, body);
    if baseline != 0 {
        assert_eq!(fresh, Ok(Applied::MissingBaseline));
    }
    if let Ok(Applied::Complete) = fresh {
        assert_eq!(view.tick(), tick);
    }
    let ids = view.entities().windows(2).all(|w| w[0].id < w[1].id);
    assert!(ids, "a view stays sorted by id without duplicates");

    let full: SnapshotBody = rkyv::deserialize::<SnapshotBody, rancor::Error>(body)
        .expect("a validated body deserializes");
    let list: Vec<Change> = full
        .despawns
        .iter()
        .map(|&id| Change::Despawn(id))
        .chain(full.spawns.iter().map(|&e| Change::Spawn(e)))
        .chain(full.moves.iter().map(|&m| Change::Move(m)))
        .chain(full.hps.iter().map(|&h| Change::Hp(h)))
        .collect();
    let changes = Changes::from_list(list);
    let meta = SnapshotMeta {
        tick,
        baseline,
        instance: header.instance.get(),
        zone: full.zone,
    };
    let mut out = Vec::new();
    encode_snapshot(meta, &full.acks, &changes, &mut out)
        .expect("content that fit one datagram re-encodes");
    assert_eq!(out.len(), 1, "content of one datagram fits one datagram");
    let (h, b) = decode_snapshot(&out[0]).expect("encoder output decodes");
    assert_eq!((h.tick, h.baseline, h.instance), (header.tick, header.baseline, header.instance));
    let back: SnapshotBody =
        rkyv::deserialize::<SnapshotBody, rancor::Error>(b).expect("deserialize");
    assert_eq!(back, full);
    std::hint::black_box(EntityState::default());
});
