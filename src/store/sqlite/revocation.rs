//! The revocation view: an in-memory copy of token state — users' profiles and generations, and
//! the live denylist — kept exactly consistent with SQLite, including writes by other processes
//! (the admin CLI, a `sqlite3` shell). The server's token checks read it instead of SQLite.
//!
//! How a check knows the copy is current, without SQL: SQLite's WAL index (the `-shm` file)
//! starts with two copies of a 48-byte header that every commit, by any connection in any
//! process, rewrites (sqlite.org/walformat.html §2.1). The view remembers the header it last
//! synchronised at. A check reads the header with one `pread` on a descriptor the view holds;
//! if it still equals the remembered one, nothing was committed since and the copy is current.
//! Otherwise the caller must run [`RevocationView::catch_up`] off the async reactor: it reads
//! the header *first*, then applies the change log (`token_changes`, filled by triggers) past
//! the last sequence number applied, then records that header — a commit landing meanwhile
//! moves the header again and the next check catches up again.
//!
//! Why `pread` and not a memory map: a mapped `-shm` that another process truncates raises
//! SIGBUS in our reads; a short `pread` is an error we can fail closed on. And why the
//! descriptor is opened once and shared by every view of that file in the process: on Linux,
//! closing *any* descriptor of a file drops all of the process's POSIX locks on it, including
//! SQLite's shared lock on the `-shm` that tells other processes the database is in use.
//!
//! Why it stays exact whatever the log holds: `token_changes.seq` is AUTOINCREMENT, so SQLite
//! remembers the highest number ever issued even after pruning empties the table. If the rows
//! after our position are not exactly `last_seq + 1 ..= highest`, something was pruned before
//! we saw it, and the view rebuilds from the tables instead of trusting the log.
//!
//! Why it fails closed: if the database, its `-wal` or its `-shm` is deleted or replaced under
//! the server, other processes no longer share our WAL index, and revocations they commit
//! would be invisible. Once that is seen, every check answers [`StoreError::Unprovable`].

use super::thread_answers;
use super::{Result, StoreError, TokenState};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Denial;
use crate::domain::user::UserProfile;
use rusqlite::Connection;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, Weak};

/// Users kept in memory at most; beyond it the view is emptied and refills on demand.
const MAX_CACHED_USERS: usize = 200_000;

/// Bytes of one WAL-index header copy.
const HEADER_BYTES: usize = 48;
pub(super) type Header = [u8; HEADER_BYTES];

/// What the view says about a token's user.
#[derive(Debug)]
pub(super) enum Lookup {
    Hit(TokenState),
    /// Current, but the user is not in memory: load it, then [`RevocationView::remember`].
    Miss {
        version: u64,
    },
    /// Something was committed since the last catch-up.
    Stale,
}

#[derive(Debug, Clone)]
struct CachedUser {
    profile: Arc<UserProfile>,
    generation: u64,
}

/// std's map and its SipHash: a faster hasher measured no difference per request (BENCHMARKS.md,
/// "Hand-written infrastructure, measured").
type HashMap<K, V> = std::collections::HashMap<K, V>;

#[derive(Debug, Default)]
struct View {
    users: HashMap<UserId, CachedUser>,
    /// Denylisted ids — token ids and ended sessions' ids, which never collide (128 random
    /// bits each) — → when the last token they cover expires, and why they were denylisted.
    denylist: HashMap<TokenId, (i64, Denial)>,
    /// Sequence number of the last `token_changes` row applied.
    last_seq: i64,
    /// Bumped whenever anything is applied, so a user loaded before can be told apart.
    version: u64,
    /// The WAL-index header read just before the last catch-up; `None` until one succeeds.
    synced: Option<Header>,
}

#[derive(Debug)]
pub(super) struct RevocationView {
    /// Unique in the process: threads' remembered answers name the view they came from.
    id: u64,
    view: RwLock<View>,
    /// One catch-up at a time; a request that finds the view stale waits for the running one
    /// and then usually finds nothing left to do.
    catching_up: Mutex<()>,
    files: WatchedFiles,
    /// Set for good once the files were found deleted or replaced.
    unprovable: AtomicBool,
}

impl RevocationView {
    /// Builds the view for the database `conn` has open (WAL mode, so the `-shm` exists).
    pub(super) fn open(conn: &Connection) -> Result<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let view = Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            view: RwLock::new(View::default()),
            catching_up: Mutex::new(()),
            files: WatchedFiles::open(conn)?,
            unprovable: AtomicBool::new(false),
        };
        view.catch_up(conn)?;
        Ok(view)
    }

    /// The database file SQLite actually opened (symbolic links resolved).
    pub(super) fn db_path(&self) -> &Path {
        &self.files.db_path
    }

    /// No SQL, no blocking: a `pread` and an `fstat` on the `-shm`, then hash-map lookups. A
    /// token is revoked if its own id or its session's is on the denylist.
    pub(super) fn lookup(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Lookup> {
        let Some(header) = self.header()? else {
            return Ok(Lookup::Stale);
        };
        Ok(self.lookup_at(&header, user_id, jti, sid))
    }

    /// [`lookup`](Self::lookup), answered without the view's lock when this thread already got
    /// the answer at the header just read (`thread_answers.rs`). For the reactor's few worker
    /// threads only: each keeps up to a thousand answers.
    pub(super) fn lookup_remembering(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Lookup> {
        let Some(header) = self.header()? else {
            return Ok(Lookup::Stale);
        };
        if let Some(state) = thread_answers::recall(self.id, &header, user_id, jti, sid) {
            return Ok(Lookup::Hit(state));
        }
        let lookup = self.lookup_at(&header, user_id, jti, sid);
        if let Lookup::Hit(state) = &lookup {
            thread_answers::remember(self.id, &header, user_id, jti, sid, state);
        }
        Ok(lookup)
    }

    /// The view's answer, if it is synchronised at `header`.
    fn lookup_at(
        &self,
        header: &Header,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Lookup {
        let view = self.read();
        if view.synced.as_ref() != Some(header) {
            return Lookup::Stale;
        }
        match view.users.get(user_id) {
            Some(user) => Lookup::Hit(TokenState {
                profile: user.profile.clone(),
                current_generation: user.generation,
                revoked: view
                    .denylist
                    .get(jti.as_str())
                    .or_else(|| view.denylist.get(sid.as_str()))
                    .map(|(_, denial)| *denial),
            }),
            None => Lookup::Miss {
                version: view.version,
            },
        }
    }

    /// Applies whatever was committed since the last catch-up. Runs SQL: blocking pool only.
    pub(super) fn catch_up(&self, conn: &Connection) -> Result<()> {
        let _turn = self
            .catching_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Read before syncing: a commit landing after this read moves the header again.
        let header = self.header()?;
        if header.is_some() && self.read().synced == header {
            return Ok(()); // another request caught up while this one waited
        }
        if let Err(error) = self.files.verify() {
            self.unprovable.store(true, Ordering::SeqCst);
            return Err(error);
        }
        self.apply_changes(conn)?;
        self.write().synced = header;
        Ok(())
    }

    /// Adds a user loaded after a miss at `version` — unless something was applied since, in
    /// which case what was loaded may be stale and the next request loads again.
    pub(super) fn remember(&self, version: u64, profile: &Arc<UserProfile>, generation: u64) {
        let mut view = self.write();
        if view.version != version {
            return;
        }
        if view.users.len() >= MAX_CACHED_USERS {
            view.users.clear();
        }
        let user = CachedUser {
            profile: profile.clone(),
            generation,
        };
        view.users.insert(profile.id.clone(), user);
    }

    /// Forgets denylist entries for tokens that expired before `cutoff`.
    pub(super) fn prune(&self, cutoff: i64) {
        self.write()
            .denylist
            .retain(|_, (expires_at, _)| *expires_at >= cutoff);
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

    /// Applies the log past `last_seq`, or rebuilds if the log no longer covers that gap.
    fn apply_changes(&self, conn: &Connection) -> Result<()> {
        // One read transaction: the position and the rows come from the same snapshot.
        let tx = conn.unchecked_transaction()?;
        let last_seq = self.read().last_seq;
        let highest: i64 = tx.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'token_changes'), 0)",
            [],
            |row| row.get(0),
        )?;
        if highest == last_seq && self.read().synced.is_some() {
            return Ok(());
        }
        let mut statement = tx.prepare_cached(
            "SELECT seq, user_id, jti, expires_at, reason FROM token_changes WHERE seq > ?1
             ORDER BY seq",
        )?;
        let changes = statement
            .query_map([last_seq], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(statement);
        let contiguous = changes
            .iter()
            .zip(last_seq + 1..)
            .all(|((seq, ..), expected)| *seq == expected);
        let complete = last_seq + i64::try_from(changes.len()).unwrap_or(i64::MAX) == highest;
        if !(contiguous && complete && self.read().synced.is_some()) {
            // Pruned past our position, reset, or the first sync: start from the tables.
            return rebuild(&mut self.write(), &tx, highest);
        }
        let mut view = self.write();
        for (seq, user_id, jti, expires_at, reason) in changes {
            match (jti, expires_at) {
                (Some(jti), Some(expires_at)) => {
                    let denial = Denial::from_stored(reason.as_deref());
                    view.denylist
                        .insert(TokenId::from_string(jti), (expires_at, denial));
                }
                _ => {
                    view.users.remove(user_id.as_str());
                }
            }
            view.last_seq = seq;
        }
        view.version += 1;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Empties the user view and reloads the denylist; the log position becomes `highest`.
fn rebuild(view: &mut View, conn: &Connection, highest: i64) -> Result<()> {
    let mut statement =
        conn.prepare_cached("SELECT jti, expires_at, reason FROM revoked_tokens")?;
    let rows = statement.query_map([], |row| {
        let reason: Option<String> = row.get(2)?;
        Ok((
            TokenId::from_string(row.get(0)?),
            (row.get(1)?, Denial::from_stored(reason.as_deref())),
        ))
    })?;
    view.denylist = rows.collect::<rusqlite::Result<HashMap<TokenId, (i64, Denial)>>>()?;
    view.users.clear();
    view.last_seq = highest;
    view.version += 1;
    Ok(())
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
