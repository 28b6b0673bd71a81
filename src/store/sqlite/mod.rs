//! The SQLite backend of the storage seam, through rusqlite; nothing else in the crate touches
//! SQL. Synchronous, meant to run off the async reactor.
//!
//! Connection settings, and why:
//! - `journal_mode=WAL`: readers never block the writer or each other, which is the request mix
//!   here (one token check per request, writes only on register/login/logout).
//! - `synchronous=FULL`: every commit is fsynced. NORMAL would be durable across a process crash
//!   but can lose the last commits on power loss — and a lost logout means a revoked token lives
//!   again. Writes already sit behind an argon2 hash or are rare, so the fsync is affordable.
//! - `foreign_keys=ON`: deleting a user removes its sessions and denylist rows.
//! - `busy_timeout` (`--db-timeout`): concurrent writers (server threads, the admin CLI) wait
//!   rather than fail — for a bounded time, after which the request is told to retry (503).

mod clients;
mod dump;
mod factors;
mod group_commit;
mod revocation;
mod schema;
mod sessions;
mod tokens;
mod users;

use super::{Maintenance, Result, StoreError};

use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Idle connections kept for reuse; more are opened on demand under load.
const MAX_IDLE_CONNECTIONS: usize = 16;

/// A handle on the database: a small pool of connections to one file and, for the server, the
/// in-memory revocation view that keeps per-request token checks off SQLite.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// How long a connection waits for another's lock (`busy_timeout`).
    busy_timeout: Duration,
    /// The file opened, as (device, inode): our connections keep writing to that file even if
    /// the path is deleted or replaced, so readiness checks the path still names it.
    identity: (u64, u64),
    /// Taken by every write of this process, so its writers queue here and are woken the moment
    /// the previous one commits — instead of all calling BEGIN IMMEDIATE and sleeping in SQLite's
    /// busy handler, which backs off for milliseconds while the lock sits free (BENCHMARKS.md,
    /// "Refresh"). Other processes' writers still meet `busy_timeout`.
    writer: Arc<Mutex<()>>,
    // Field order is drop order: connections (the group commit's too) close before the view's
    // `-shm` descriptor.
    /// The server's refreshes, committed in batches; `None` for an operator's store.
    group: Option<group_commit::GroupCommit>,
    idle: Mutex<Vec<Connection>>,
    view: Option<revocation::SqliteRevocation>,
}

impl SqliteStore {
    /// The server's store: creates the database (mode 0600) if missing, migrates it, and builds
    /// the revocation view.
    pub fn open_for_serving(path: &Path, busy_timeout: Duration) -> Result<Self> {
        create_private_file(path)?;
        let mut store = Self::open_unwatched(path, busy_timeout)?;
        let view = store.with_conn(|conn| revocation::SqliteRevocation::open(conn))?;
        store.path = view.db_path().to_path_buf();
        store.group = Some(group_commit::GroupCommit::start(
            &store.path,
            store.writer.clone(),
            busy_timeout,
        )?);
        store.view = Some(view);
        Ok(store)
    }

    /// An operator's store (admin CLI, `tessera-token verify --db`): the database must exist,
    /// and every token check reads SQLite directly — exact, and nothing held open for long.
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.into()));
        }
        Self::open_unwatched(path, super::DEFAULT_DB_TIMEOUT)
    }

    fn open_unwatched(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let mut conn = connect(path, busy_timeout)?;
        schema::migrate(&mut conn)?;
        let identity = file_identity(path).ok_or_else(|| StoreError::FileReplaced(path.into()))?;
        Ok(Self {
            path: path.into(),
            busy_timeout,
            identity,
            writer: Arc::new(Mutex::new(())),
            group: None,
            idle: Mutex::new(vec![conn]),
            view: None,
        })
    }

    /// Runs `f` on a pooled connection.
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = match self.lock_idle().pop() {
            Some(conn) => conn,
            None => connect(&self.path, self.busy_timeout)?,
        };
        let result = f(&mut conn);
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
        result
    }

    /// Runs a write on a pooled connection, then checks the files are still the ones at their
    /// paths: a commit into a deleted `-wal` would be lost at the next start, so it must not
    /// be acknowledged.
    pub(crate) fn with_write<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let value = {
            // A panic under this lock leaves nothing half-done: the transaction rolls back.
            let _turn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            self.with_conn(f)?
        };
        self.verify_files()?;
        self.catch_up_after_commit();
        Ok(value)
    }

    /// After a commit of ours, the revocation view catches up at once, off the async reactor
    /// as writes are: the next token check then finds it current in memory, instead of the
    /// first check on each worker handing off to the blocking pool to catch up. Every login
    /// commits a session, so during a storm of logins that hand-off set `/me`'s tail latency
    /// (BENCHMARKS.md). The same catch-up a check would run, only sooner. Best effort: if it
    /// fails, the next check meets the same failure and reports it.
    fn catch_up_after_commit(&self) {
        if let Some(view) = &self.view {
            let _ = self.with_conn(|conn| view.catch_up(conn));
        }
    }

    fn verify_files(&self) -> Result<()> {
        if file_identity(&self.path) != Some(self.identity) {
            return Err(StoreError::FileReplaced(self.path.clone()));
        }
        match &self.view {
            Some(view) => view.verify_files(),
            None => Ok(()),
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Maintenance for SqliteStore {
    fn register_keys(&self, fingerprints: &[(String, String)]) -> Result<Vec<String>> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut conflicts = Vec::new();
            for (kid, fingerprint) in fingerprints {
                tx.execute(
                    "INSERT OR IGNORE INTO key_fingerprints (kid, fingerprint) VALUES (?1, ?2)",
                    [kid, fingerprint],
                )?;
                let stored: String = tx.query_row(
                    "SELECT fingerprint FROM key_fingerprints WHERE kid = ?1",
                    [kid],
                    |row| row.get(0),
                )?;
                if &stored != fingerprint {
                    conflicts.push(kid.clone());
                }
            }
            tx.commit()?;
            Ok(conflicts)
        })
    }

    fn record_signing(&self, kid: &str, until: i64) -> Result<()> {
        self.with_write(|conn| {
            conn.execute(
                "UPDATE key_fingerprints SET signing_until = max(coalesce(signing_until, ?2), ?2)
                 WHERE kid = ?1",
                rusqlite::params![kid, until],
            )?;
            Ok(())
        })
    }

    fn signing_until(&self, kid: &str) -> Result<Option<i64>> {
        use rusqlite::OptionalExtension as _;
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT signing_until FROM key_fingerprints WHERE kid = ?1",
                    [kid],
                    |row| row.get::<_, Option<i64>>(0),
                )
                .optional()?
                .flatten())
        })
    }

    fn ping(&self) -> Result<()> {
        self.verify_files()?;
        self.with_conn(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    fn answers_from_memory(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|view| view.verify_files().is_ok())
    }

    fn replication(&self) -> Option<super::ReplicationStats> {
        None
    }

    fn integrity_check(&self) -> Result<Vec<String>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Folds the WAL back into the main file, so the file alone is complete.
    fn checkpoint(&self) -> Result<()> {
        self.with_conn(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn dump(&self) -> Result<String> {
        self.with_conn(|conn| dump::dump(conn))
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Creates the database file with mode 0600 before SQLite opens it, so it is never readable by
/// others, even briefly; SQLite gives its -wal and -shm files the same mode.
fn create_private_file(path: &Path) -> Result<()> {
    let error = |source| StoreError::Create {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(error)?;
    }
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(error(e)),
    }
}

pub(super) use super::rows::{to_i64, to_u64};

#[cfg(test)]
mod tests;
