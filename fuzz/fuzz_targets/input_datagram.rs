//! `InputDatagram::decode` on arbitrary bytes (SPEC.md §4.2).
//!
//! Properties: never panics; whatever decodes satisfies every documented rule and
//! re-encodes byte for byte with `encode_input` (decoding requires `flags` and every
//! `reserved` field to be zero, so nothing is lost).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonehost_protocol::datagram::{
    encode_input, peek_kind, InputCmd, InputDatagram, BUTTONS_KNOWN, KIND_INPUT,
    MAX_INPUTS_PER_DATAGRAM, MOVE_AXIS_MAX,
};
use zonehost_protocol::PROTOCOL_VERSION;

fuzz_target!(|data: &[u8]| {
    let kind = peek_kind(data);
    let Ok(d) = InputDatagram::decode(data) else {
        return;
    };
    assert_eq!(kind, Ok(KIND_INPUT));
    let h = d.header;
    assert_eq!(
        (h.version, h.kind, h.flags),
        (PROTOCOL_VERSION, KIND_INPUT, 0)
    );
    let n = d.cmds.len();
    assert!((1..=MAX_INPUTS_PER_DATAGRAM).contains(&n));
    assert_eq!(usize::from(h.count), n);
    assert_eq!(data.len(), 12 + 8 * n);

    let seqs: Vec<u32> = d.iter().map(|(s, _)| s).collect();
    let expected: Vec<u32> = (0..n as u32).map(|i| h.seq.get() - i).collect();
    assert_eq!(seqs, expected, "command i has sequence seq - i");

    for c in d.cmds {
        assert!(c.move_x.get().abs() <= MOVE_AXIS_MAX && c.move_y.get().abs() <= MOVE_AXIS_MAX);
        assert_eq!(c.buttons.get() & !BUTTONS_KNOWN, 0);
        assert_eq!(c.reserved.get(), 0);
        assert_eq!(
            InputCmd::new(c.move_x.get(), c.move_y.get(), c.buttons.get()),
            *c
        );
    }

    let again = encode_input(h.seq.get(), h.ack_tick.get(), d.cmds);
    assert_eq!(&again[..], data, "decode/encode round trip");
});
