//! Mailboxes between servers: the `mailbox` table, its row and statements.

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::DeserializeRow;

use super::conn::{prepare, Kind, Profiles};
use crate::store::StoreError;

#[derive(Debug, DeserializeRow)]
pub(super) struct MailCql {
    pub(super) mail_id: Option<Vec<u8>>,
    pub(super) body: Option<Vec<u8>>,
}

/// The prepared statements of the mailboxes.
pub(super) struct MailStatements {
    pub(super) post_mail: PreparedStatement,
    pub(super) read_mail: PreparedStatement,
    pub(super) delete_mail: PreparedStatement,
}

impl std::fmt::Debug for MailStatements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailStatements").finish_non_exhaustive()
    }
}

impl MailStatements {
    /// Prepares every statement of this domain on `s` with the profiles `p`.
    pub(super) async fn prepare(s: &Session, p: &Profiles) -> Result<Self, StoreError> {
        use Kind::*;
        Ok(Self {
            post_mail: prepare(
                s,
                p,
                "INSERT INTO mailbox (server, mail_id, body) VALUES (?, ?, ?)",
                Idempotent,
            )
            .await?,
            read_mail: prepare(
                s,
                p,
                "SELECT mail_id, body FROM mailbox WHERE server = ? LIMIT ?",
                Idempotent,
            )
            .await?,
            delete_mail: prepare(
                s,
                p,
                "DELETE FROM mailbox WHERE server = ? AND mail_id = ?",
                Idempotent,
            )
            .await?,
        })
    }
}
