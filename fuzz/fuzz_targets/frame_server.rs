//! `FrameDecoder` + `next_message::<ServerMsg>` on an arbitrarily chunked stream (SPEC.md §5, §6):
//! what a client runs on its control stream. Input layout: see
//! `zonehost_protocol_fuzz::split_chunking`; property: `zonehost_protocol_fuzz::check_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonehost_protocol::message::ServerMsg;

fuzz_target!(|data: &[u8]| zonehost_protocol_fuzz::check_frames::<ServerMsg>(data));
