//! SQLite's feeder of the revocation view (`store/revocation_view.rs`): it keeps the view exactly
//! consistent with SQLite, including writes by other processes (the admin CLI, a `sqlite3`
//! shell), so the server's token checks read memory instead of SQLite.
//!
//! How a check knows the copy is current, without SQL: SQLite's WAL index (the `-shm` file)
//! starts with two copies of a 48-byte header that every commit, by any connection in any
//! process, rewrites (sqlite.org/walformat.html §2.1). The header is the view's stamp. A check
//! reads the header with one `pread` on a descriptor the feeder holds; if the view is stamped
//! with it, nothing was committed since and the copy is current. Otherwise the caller must run
//! [`SqliteRevocation::catch_up`] off the async reactor: it reads the header *first*, then
//! applies the change log (`token_changes`, filled by triggers) past the last sequence number
//! applied, then stamps the view with that header — a commit landing meanwhile moves the header
//! again and the next check catches up again.
//!
//! Why `pread` and not a memory map: a mapped `-shm` that another process truncates raises
//! SIGBUS in our reads; a short `pread` is an error we can fail closed on. And why the
//! descriptor is opened once and shared by every view of that file in the process: on Linux,
//! closing *any* descriptor of a file drops all of the process's POSIX locks on it, including
//! SQLite's shared lock on the `-shm` that tells other processes the database is in use.
//!
//! Why the log's positions are contiguous: `token_changes.seq` is AUTOINCREMENT, so SQLite
//! remembers the highest number ever issued even after pruning empties the table, and writers
//! are serialised, so a number is visible only once every number below it is.
//!
//! Why it fails closed: if the database, its `-wal` or its `-shm` is deleted or replaced under
//! the server, other processes write to another WAL index than ours, and revocations they commit
//! would be invisible. Once that is seen, every check answers [`StoreError::Unprovable`].

use super::{Result, StoreError};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Denial;
use crate::store::revocation_view::{self, Change, Lookup, RevocationView, Stamp};
use rusqlite::Connection;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// Bytes of one WAL-index header copy: the size of a stamp.
const HEADER_BYTES: usize = 48;
type Header = Stamp;

#[derive(Debug)]
pub(super) struct SqliteRevocation {
    view: RevocationView,
    /// One catch-up at a time; a request that finds the view stale waits for the running one
    /// and then usually finds nothing left to do.
    catching_up: Mutex<()>,
    files: WatchedFiles,
    /// Set for good once the files were found deleted or replaced.
    unprovable: AtomicBool,
}

impl SqliteRevocation {
    /// Builds the view for the database `conn` has open (WAL mode, so the `-shm` exists).
    pub(super) fn open(conn: &Connection) -> Result<Self> {
        let feeder = Self {
            view: RevocationView::default(),
            catching_up: Mutex::new(()),
            files: WatchedFiles::open(conn)?,
            unprovable: AtomicBool::new(false),
        };
        feeder.catch_up(conn)?;
        Ok(feeder)
    }

    /// The database file SQLite actually opened (symbolic links resolved).
    pub(super) fn db_path(&self) -> &Path {
        &self.files.db_path
    }

    /// No SQL, no blocking: a `pread` and an `fstat` on the `-shm`, then hash-map lookups.
    pub(super) fn lookup(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Lookup> {
        let Some(header) = self.header()? else {
            return Ok(Lookup::Stale);
        };
        Ok(self.view.lookup(&header, user_id, jti, sid))
    }

    /// [`lookup`](Self::lookup), answered without the view's lock when this thread already got
    /// the answer at the header just read (`thread_answers.rs`).
    pub(super) fn lookup_remembering(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Lookup> {
        let Some(header) = self.header()? else {
            return Ok(Lookup::Stale);
        };
        Ok(self.view.lookup_remembering(&header, user_id, jti, sid))
    }

    /// Applies whatever was committed since the last catch-up. Runs SQL: blocking pool only.
    pub(super) fn catch_up(&self, conn: &Connection) -> Result<()> {
        let _turn = self
            .catching_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Read before syncing: a commit landing after this read moves the header again.
        let Some(header) = self.header()? else {
            // A writer is half-way through: the next check reads the header again.
            return Ok(());
        };
        if self.view.is_at(&header) {
            return Ok(()); // another request caught up while this one waited
        }
        if let Err(error) = self.files.verify() {
            self.unprovable.store(true, Ordering::SeqCst);
            return Err(error);
        }
        self.apply_changes(conn, header)
    }

    /// Adds a user loaded after a miss at `version` (see [`RevocationView::remember`]).
    pub(super) fn remember(
        &self,
        version: u64,
        profile: &Arc<crate::domain::user::UserProfile>,
        generation: u64,
    ) {
        self.view.remember(version, profile, generation);
    }

    /// Forgets denylist entries for tokens that expired before `cutoff`.
    pub(super) fn prune(&self, cutoff: i64) {
        self.view.prune(cutoff);
    }

    /// Whether the files SQLite has open are still the ones at their paths.
    pub(super) fn verify_files(&self) -> Result<()> {
        if self.unprovable.load(Ordering::SeqCst) {
            return Err(StoreError::Unprovable);
        }
        self.files.verify().inspect_err(|_| {
            self.unprovable.store(true, Ordering::SeqCst);
        })
    }

    fn header(&self) -> Result<Option<Header>> {
        if self.unprovable.load(Ordering::SeqCst) {
            return Err(StoreError::Unprovable);
        }
        self.files.header().inspect_err(|_| {
            self.unprovable.store(true, Ordering::SeqCst);
        })
    }

    /// Applies the log past the view's position and stamps the view with `header`, or rebuilds
    /// if the log does not cover that gap.
    fn apply_changes(&self, conn: &Connection, header: Header) -> Result<()> {
        // One read transaction: the position and the rows come from the same snapshot.
        let tx = conn.unchecked_transaction()?;
        let position = self.view.position();
        let head: i64 = tx.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'token_changes'), 0)",
            [],
            |row| row.get(0),
        )?;
        let mut statement = tx.prepare_cached(
            "SELECT seq, user_id, jti, expires_at, reason FROM token_changes WHERE seq > ?1
             ORDER BY seq",
        )?;
        let changes = statement
            .query_map([position], |row| {
                let change = match (row.get::<_, Option<String>>(2)?, row.get(3)?) {
                    (Some(jti), Some(expires_at)) => Change::Denied {
                        id: TokenId::from_string(jti),
                        expires_at,
                        denial: Denial::from_stored(row.get::<_, Option<String>>(4)?.as_deref()),
                    },
                    _ => Change::User(UserId::from_string(row.get(1)?)),
                };
                Ok((row.get::<_, i64>(0)?, change))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(statement);
        if self.view.is_synchronised() && revocation_view::continues(position, &changes, head) {
            if changes.is_empty() {
                self.view.restamp(header);
            } else {
                self.view.apply(changes, header);
            }
            return Ok(());
        }
        // Pruned past our position, reset, or the first sync: start from the tables.
        let mut statement =
            tx.prepare_cached("SELECT jti, expires_at, reason FROM revoked_tokens")?;
        let denylist = statement
            .query_map([], |row| {
                let reason: Option<String> = row.get(2)?;
                Ok((
                    TokenId::from_string(row.get(0)?),
                    row.get(1)?,
                    Denial::from_stored(reason.as_deref()),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.view.rebuild(denylist, head, header);
        Ok(())
    }
}

/// The database's files as SQLite opened them, and the `-shm` descriptor the view reads.
#[derive(Debug)]
struct WatchedFiles {
    db_path: PathBuf,
    wal_path: PathBuf,
    shm_path: PathBuf,
    /// (device, inode) of each file when the view opened.
    identities: [(u64, u64); 3],
    shm: Arc<File>,
}

impl WatchedFiles {
    fn open(conn: &Connection) -> Result<Self> {
        // SQLite's own name for the file, symbolic links resolved — so the `-shm` we read is
        // the one its connections use, whatever path the operator passed.
        Self::at(PathBuf::from(conn.path().unwrap_or_default()))
    }

    fn at(db_path: PathBuf) -> Result<Self> {
        let sibling = |suffix: &str| {
            let mut name = db_path.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        let (wal_path, shm_path) = (sibling("-wal"), sibling("-shm"));
        let shm = shared_descriptor(&shm_path)?;
        let shm_meta = shm.metadata().map_err(io(&shm_path))?;
        let identities = [
            identity(&db_path)?,
            identity(&wal_path)?,
            (shm_meta.dev(), shm_meta.ino()),
        ];
        if identities[2] != identity(&shm_path)? {
            return Err(StoreError::FileReplaced(shm_path));
        }
        Ok(Self {
            db_path,
            wal_path,
            shm_path,
            identities,
            shm,
        })
    }

    /// The header when both copies agree; `None` while a writer is half-way through. An error
    /// when the `-shm` was deleted (no links left) or cut short under us.
    fn header(&self) -> Result<Option<Header>> {
        let meta = self.shm.metadata().map_err(io(&self.shm_path))?;
        if meta.nlink() == 0 {
            return Err(StoreError::FileReplaced(self.shm_path.clone()));
        }
        let mut bytes = [0u8; 2 * HEADER_BYTES];
        self.shm
            .read_exact_at(&mut bytes, 0)
            .map_err(|_| StoreError::FileReplaced(self.shm_path.clone()))?;
        let (first, second) = bytes.split_at(HEADER_BYTES);
        Ok((first == second)
            .then(|| Header::try_from(first).ok())
            .flatten())
    }

    /// Each path still names the file SQLite has open.
    fn verify(&self) -> Result<()> {
        for (path, expected) in [&self.db_path, &self.wal_path, &self.shm_path]
            .into_iter()
            .zip(self.identities)
        {
            if identity(path).ok() != Some(expected) {
                return Err(StoreError::FileReplaced(path.clone()));
            }
        }
        Ok(())
    }
}

fn identity(path: &Path) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    Ok((meta.dev(), meta.ino()))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.into(),
        source,
    }
}

/// One read-only descriptor per `-shm` file per process, shared by every view of it and closed
/// only when the last view goes (see the module comment for why closing is dangerous).
fn shared_descriptor(path: &Path) -> Result<Arc<File>> {
    /// (device, inode) of a `-shm` → the descriptor every view of it shares.
    type Open = Vec<((u64, u64), Weak<File>)>;
    static OPEN: Mutex<Open> = Mutex::new(Vec::new());
    let key = identity(path)?;
    let mut open: MutexGuard<'_, _> = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|(_, file)| file.strong_count() > 0);
    if let Some(file) = open
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, f)| f.upgrade())
    {
        return Ok(file);
    }
    let file = Arc::new(File::open(path).map_err(io(path))?);
    open.push((key, Arc::downgrade(&file)));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .unwrap();
        conn
    }

    #[test]
    fn header_moves_with_every_commit_from_any_connection_and_not_on_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = wal_db(&path);
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let files = WatchedFiles::open(&writer).unwrap();
        let before = files.header().unwrap().unwrap();
        assert_eq!(
            files.header().unwrap(),
            Some(before),
            "stable without commits"
        );
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let after_one = files.header().unwrap().unwrap();
        assert_ne!(after_one, before);
        let other = Connection::open(&path).unwrap();
        other.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_ne!(files.header().unwrap().unwrap(), after_one);
        let settled = files.header().unwrap().unwrap();
        let _: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(files.header().unwrap(), Some(settled));
    }

    #[test]
    fn a_symlinked_path_watches_the_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.db");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // A stale -shm beside the link must not be the one watched.
        std::fs::write(dir.path().join("link.db-shm"), [0u8; 32768]).unwrap();
        let conn = wal_db(&link);
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        let files = WatchedFiles::open(&conn).unwrap();
        assert_eq!(files.db_path, real.canonicalize().unwrap());
        let before = files.header().unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_ne!(files.header().unwrap(), before);
    }

    #[test]
    fn views_of_one_shm_share_one_descriptor_even_after_an_earlier_view_went() {
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("d.db-shm");
        std::fs::write(&shm, [0u8; 2 * HEADER_BYTES]).unwrap();
        drop(shared_descriptor(&shm).unwrap());
        let first = shared_descriptor(&shm).unwrap();
        let second = shared_descriptor(&shm).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one descriptor, never two");
    }

    /// Plain files stand in for SQLite's here: a real connection over a truncated `-shm`
    /// faults in SQLite's own mapping (see the threat table in docs/security.md), which is not ours.
    #[test]
    fn a_truncated_or_deleted_shm_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let shm = dir.path().join("w.db-shm");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(dir.path().join("w.db-wal"), b"").unwrap();
        std::fs::write(&shm, [7u8; 2 * HEADER_BYTES]).unwrap();
        let files = WatchedFiles::at(db).unwrap();
        assert_eq!(files.header().unwrap(), Some([7u8; HEADER_BYTES]));
        files.verify().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&shm)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(files.header().is_err(), "short read");
        std::fs::remove_file(&shm).unwrap();
        assert!(files.header().is_err(), "no links left");
        assert!(files.verify().is_err());
    }
}
