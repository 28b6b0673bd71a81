//! An in-memory view of token state — users' profiles and generations, and the live denylist —
//! kept exactly consistent with SQLite, including writes by other processes (the admin CLI).
//!
//! Why: checking revocation with a SQLite read on the blocking pool cost more than all the rest
//! of a `GET /v1/users/me` (BENCHMARKS.md). Here a request costs a hash-map lookup and a look at
//! the WAL-index header in shared memory; only after a commit does its thread run `PRAGMA
//! data_version` on a connection it owns — a value that changes whenever *any other* connection
//! commits.
//!
//! Before that, `wal_watch` compares the WAL-index header in shared memory with what this thread
//! saw at its last sync — no lock, no system call — and only when it moved does the thread ask
//! `PRAGMA data_version`.
//!
//! How it stays exact: triggers append every change that can affect a token — a generation bump,
//! a profile change, a deleted user, a denylisted `jti` — to `token_changes`. When a thread sees
//! `data_version` move, it applies the log past the last sequence number applied. If the log was
//! pruned past that point the whole view is rebuilt. A user missing from the view is loaded by the
//! caller on the blocking pool and added only if no change was applied in between.

use super::users::UserProfile;
use super::wal_watch::{Header, WalWatch};
use super::{Result, TokenState};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Users kept in memory at most; beyond it the view is emptied and refills on demand.
const MAX_CACHED_USERS: usize = 200_000;

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per thread, per cache: a read-only connection and the `data_version` it last saw.
    static WATCHERS: RefCell<HashMap<u64, Watcher>> = RefCell::new(HashMap::new());
}

struct Watcher {
    conn: Connection,
    last_version: Option<i64>,
    /// The WAL-index header read just before this thread's last sync.
    last_header: Option<Header>,
}

#[derive(Debug, Clone)]
struct CachedUser {
    profile: Arc<UserProfile>,
    generation: u64,
}

#[derive(Debug, Default)]
struct View {
    users: HashMap<String, CachedUser>,
    /// Denylisted `jti` → its token's expiry.
    denylist: HashMap<String, i64>,
    /// Sequence number of the last `token_changes` row applied.
    last_seq: i64,
}

#[derive(Debug)]
pub(super) struct TokenCache {
    id: u64,
    path: PathBuf,
    view: RwLock<View>,
    /// Lock-free commit detection; `None` if the -shm file could not be mapped, in which case
    /// every request asks `PRAGMA data_version`.
    wal: Option<WalWatch>,
}

/// What the view knows about a token's user.
pub(super) enum Lookup {
    Hit(TokenState),
    /// Not in memory: load from the database, then [`TokenCache::remember`] at `seq`.
    Miss {
        seq: i64,
    },
}

impl TokenCache {
    /// Builds the view from the database: the live denylist and the change-log position.
    pub(super) fn load(path: &Path, conn: &Connection) -> Result<Self> {
        let wal = WalWatch::open(path)
            .inspect_err(|error| tracing::warn!(%error, "cannot map the WAL index; checking data_version per request"))
            .ok();
        let cache = Self {
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            path: path.into(),
            view: RwLock::new(View::default()),
            wal,
        };
        cache.rebuild(conn)?;
        Ok(cache)
    }

    pub(super) fn lookup(&self, user_id: &str, jti: &str) -> Result<Lookup> {
        self.catch_up()?;
        let view = self.read();
        Ok(match view.users.get(user_id) {
            Some(user) => Lookup::Hit(TokenState {
                profile: user.profile.clone(),
                current_generation: user.generation,
                revoked: view.denylist.contains_key(jti),
            }),
            None => Lookup::Miss { seq: view.last_seq },
        })
    }

    /// Adds a user loaded from the database after a miss at `seq` — unless a change was applied
    /// since, in which case what was loaded may be stale and the next request loads again.
    pub(super) fn remember(&self, seq: i64, profile: &Arc<UserProfile>, generation: u64) {
        let mut view = self.write();
        if view.last_seq != seq {
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
            .retain(|_, expires_at| *expires_at >= cutoff);
    }

    /// Applies the change log if anything was committed since this thread last looked.
    fn catch_up(&self) -> Result<()> {
        // Read before syncing: a commit landing after this read moves the header again.
        let header = self.wal.as_ref().and_then(WalWatch::header);
        WATCHERS.with_borrow_mut(|watchers| {
            let watcher = match watchers.entry(self.id) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Watcher {
                    conn: open_watcher(&self.path)?,
                    last_version: None,
                    last_header: None,
                }),
            };
            // The common case: no commit anywhere since this thread's last sync.
            if header.is_some() && header == watcher.last_header {
                return Ok(());
            }
            let version: i64 = watcher
                .conn
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |row| row.get(0))?;
            // A new watcher has seen nothing yet, so it always applies the log once.
            if watcher.last_version != Some(version) {
                self.apply_changes(&watcher.conn)?;
                watcher.last_version = Some(version);
            }
            watcher.last_header = header;
            Ok(())
        })
    }

    fn apply_changes(&self, conn: &Connection) -> Result<()> {
        let mut view = self.write();
        let oldest: Option<i64> = conn
            .query_row("SELECT min(seq) FROM token_changes", [], |row| row.get(0))
            .optional()?
            .flatten();
        if oldest.is_some_and(|oldest| oldest > view.last_seq + 1) {
            // The log was pruned past our position: start over.
            drop(view);
            return self.rebuild(conn);
        }
        let mut statement = conn.prepare_cached(
            "SELECT seq, user_id, jti, expires_at FROM token_changes WHERE seq > ?1 ORDER BY seq",
        )?;
        let mut rows = statement.query([view.last_seq])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let user_id: String = row.get(1)?;
            match (
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ) {
                (Some(jti), Some(expires_at)) => {
                    view.denylist.insert(jti, expires_at);
                }
                _ => {
                    view.users.remove(&user_id);
                }
            }
            view.last_seq = seq;
        }
        Ok(())
    }

    /// Empties the user view and reloads the denylist and the log position.
    fn rebuild(&self, conn: &Connection) -> Result<()> {
        let mut view = self.write();
        view.users.clear();
        view.last_seq = conn.query_row(
            "SELECT coalesce(max(seq), 0) FROM token_changes",
            [],
            |row| row.get(0),
        )?;
        let mut statement = conn.prepare("SELECT jti, expires_at FROM revoked_tokens")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        view.denylist = rows.collect::<rusqlite::Result<HashMap<String, i64>>>()?;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TokenCache {
    fn drop(&mut self) {
        // This thread's watcher goes with the cache; other threads' go when they exit.
        let _ = WATCHERS.try_with(|watchers| watchers.borrow_mut().remove(&self.id));
    }
}

fn open_watcher(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}
