//! `FrameDecoder` + `next_message::<ClientMsg>` on an arbitrarily chunked stream (SPEC.md §5, §6):
//! what the server runs on every control stream. Input layout: see
//! `zonehost_protocol_fuzz::split_chunking`; property: `zonehost_protocol_fuzz::check_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonehost_protocol::message::ClientMsg;

fuzz_target!(|data: &[u8]| zonehost_protocol_fuzz::check_frames::<ClientMsg>(data));
