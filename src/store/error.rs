//! What can go wrong in storage, whatever the backend.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("cannot create database file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("that username is taken")]
    UsernameTaken,
    #[error("the password or token generation changed while the login was checked")]
    CredentialsChanged,
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database file {0} is missing or was replaced since it was opened")]
    FileReplaced(PathBuf),
    #[error("no database at {0} (only `tessera serve` creates one)")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database files changed under the server; revocation state cannot be proven")]
    Unprovable,
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("database location: {0}")]
    BadLocation(String),
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    #[error("database error: {0}")]
    Postgres(String),
    #[error("the database aborted a transaction that lost a race; retry: {0}")]
    Contended(String),
}

impl StoreError {
    /// The database cannot be trusted right now (files replaced, or unreachable): answer 503,
    /// never 200 from state that cannot be proven current.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::FileReplaced(_)
                | Self::Unprovable
                | Self::Io { .. }
                | Self::Unreachable(_)
                | Self::Contended(_)
        )
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Another connection holding the lock past `busy_timeout` (`SQLITE_BUSY`), or a table
    /// locked within a shared cache (`SQLITE_LOCKED`), is contention, as PostgreSQL's lost races
    /// are: nothing was written, so the request may be retried (503). Everything else is a
    /// storage failure.
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match error.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => Self::Contended(error.to_string()),
            _ => Self::Sqlite(error),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An error and every source under it, joined by ": " — what a log line needs to name the real
/// cause (drivers' own messages are often just "db error" or "error creating a new object").
/// Repeated messages (a wrapper that prints its source) appear once.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
