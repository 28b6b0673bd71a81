//! What can go wrong in storage, whatever the backend.

use std::path::PathBuf;
use std::sync::Arc;

/// A cause kept whole, for the log: what the driver or the pool said, with its own sources.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

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
    #[error("a client with that name exists")]
    ClientExists,
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
    /// A bound of ours ran out, or the store is shutting down: no driver error to keep.
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    /// The connection could not be had, or broke, or the server refused the work for now
    /// (restart, shutdown, too many connections, a cancelled statement).
    #[error("the database connection failed or was closed")]
    Disconnected(#[source] Cause),
    #[error("database error")]
    Postgres(#[source] tokio_postgres::Error),
    /// Nothing was written: another transaction held the lock too long, or PostgreSQL aborted
    /// this one as a deadlock or serialisation loser. Retry.
    #[error("the database is busy or aborted a transaction that lost a race; retry")]
    Contended(#[source] Cause),
    /// One failure answered to every token check of a batch.
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// The database cannot be trusted right now (files replaced, or unreachable): answer 503,
    /// never 200 from state that cannot be proven current.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Shared(failure) => failure.is_unavailable(),
            other => matches!(
                other,
                Self::FileReplaced(_)
                    | Self::Unprovable
                    | Self::Io { .. }
                    | Self::Unreachable(_)
                    | Self::Disconnected(_)
                    | Self::Contended(_)
            ),
        }
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
            Some(DatabaseBusy | DatabaseLocked) => Self::Contended(Box::new(error)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Another connection's lock past the busy timeout is contention (503, retry), and the
    /// driver's error is kept as the source, so the log names SQLite's own words.
    #[test]
    fn a_busy_database_is_contention_and_keeps_its_cause() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let mapped = StoreError::from(busy);
        assert!(matches!(mapped, StoreError::Contended(_)), "{mapped}");
        assert!(mapped.is_unavailable());
        let source = std::error::Error::source(&mapped).unwrap();
        assert!(source.is::<rusqlite::Error>());
        assert!(
            cause_chain(&mapped).contains("database is locked"),
            "{}",
            cause_chain(&mapped)
        );
        let other = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
        assert!(matches!(other, StoreError::Sqlite(_)) && !other.is_unavailable());
    }

    /// A failure shared by a batch of token checks answers each as the original would.
    #[test]
    fn a_shared_failure_keeps_its_kind_and_its_chain() {
        let shared = StoreError::Shared(Arc::new(StoreError::Unreachable("no answer".into())));
        assert!(shared.is_unavailable());
        assert!(cause_chain(&shared).contains("no answer"));
        let broken = StoreError::Shared(Arc::new(StoreError::Corrupt("column 3".into())));
        assert!(!broken.is_unavailable());
    }

    #[test]
    fn the_cause_chain_says_each_message_once() {
        let inner = StoreError::Unreachable("no answer within 5s".into());
        let outer = StoreError::Shared(Arc::new(inner));
        assert_eq!(
            cause_chain(&outer),
            "the database cannot be reached: no answer within 5s"
        );
    }
}
