//! The zonehost client as a C library (`libzonehost_ffi.so` / `.a`, header
//! `include/zonehost.h`), for game engines: C, C++ (Unreal), C# (Unity), Godot
//! (GDExtension). See `docs/engines.md`.
//!
//! Poll-based: the game calls `zh_send_input` and `zh_poll` once per frame; nothing calls
//! back into foreign code. Each client owns one network thread ("zonehost-net", a
//! single-threaded tokio runtime running quinn) that only moves bytes between the socket and
//! two bounded queues; the sans-IO [`zonehost_protocol::ClientSession`] runs on the
//! caller's thread inside `zh_poll` and the send functions.
//!
//! Rules of the C API (repeated in the header):
//! * every function returns `ZH_OK` (0) or a negative `ZH_ERR_*` code; `zh_last_error`
//!   gives the message of the last failure on the calling thread;
//! * no panic crosses the boundary (each body runs under `catch_unwind`);
//! * a client handle is an id in a registry, so a freed handle is detected, not
//!   dereferenced;
//! * a client must be used from one thread at a time (calls are serialised by a lock, but
//!   the pointers one call returns are invalidated by the next `zh_poll` from any thread);
//! * pointers the library returns (strings, the snapshot's entity array) stay valid until
//!   the next `zh_poll`, `zh_close` or `zh_client_free` on the same client.

mod client;
mod cstr;
mod error;
pub mod ffi;
mod net;
pub mod types;

pub use ffi::*;
pub use types::*;
