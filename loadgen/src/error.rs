//! Why a run could not start: the one error type of the library.

use std::path::PathBuf;

use zonehost_client::ClientError;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Tokens could not be obtained.
    #[error("tokens: {0}")]
    Token(String),
    /// The client library failed (TLS configuration, socket).
    #[error(transparent)]
    Client(#[from] ClientError),
}
