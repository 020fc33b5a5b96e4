//! Rust text as C strings: the one conversion the client and the error slot share.

use std::ffi::CString;

/// A C string of `text`, NUL bytes (which C cannot represent) replaced by `?`.
pub(crate) fn cstring(text: &str) -> CString {
    CString::new(text.replace('\0', "?")).unwrap_or_default()
}
