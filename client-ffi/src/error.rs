//! Error codes with a message, and the per-thread "last error" that `zh_last_error` reads.

use std::cell::RefCell;
use std::ffi::CString;

use crate::cstr::cstring;
use crate::types::ZH_ERR_IO;

/// A failed call: its `ZH_ERR_*` code and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    code: i32,
    message: String,
}

impl FfiError {
    /// An error with `code` (a `ZH_ERR_*` constant).
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A resource the operating system refused.
    pub(crate) fn io(message: String) -> Self {
        Self::new(ZH_ERR_IO, message)
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

thread_local! {
    /// The message of the last failed call on this thread (errno-like).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `error` as this thread's last error and returns its code.
pub(crate) fn record(error: &FfiError) -> i32 {
    let message = cstring(&error.message);
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
    error.code
}

/// Calls `f` with this thread's last error message (without the NUL).
pub(crate) fn with_last_error<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    LAST_ERROR.with(|last| f(last.borrow().as_bytes()))
}
