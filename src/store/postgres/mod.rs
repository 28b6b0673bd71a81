//! The PostgreSQL backend of the storage seam, for several replicas on one database, through
//! `tokio-postgres` with a small `deadpool` pool (prepared statements cached per connection).
//! Nothing else in the crate sees SQL.
//!
//! The seam is synchronous (the use cases run on the blocking pool), so this store drives its
//! connections on a runtime of its own — one thread — and each method blocks its caller, a
//! blocking-pool thread or the admin CLI, until the query is done ([`block_on`]: the caller's
//! thread polls the query and parks; the connection's I/O runs on the store's thread).
//!
//! **Revocation stays exact across replicas** because every token check reads the tables: a
//! revocation is committed before its 204 goes out, and a check that starts after that reads a
//! snapshot that includes it (READ COMMITTED takes a snapshot per statement). There is no
//! in-memory view to keep current, so [`Store::cached_token_state`] always defers to the
//! blocking pool. The price is one round trip per authenticated request (BENCHMARKS.md).
//!
//! **Fail closed, recover alone.** With the database unreachable every method fails with
//! [`StoreError::Unreachable`], which the HTTP layer answers with 503 — token checks included,
//! never 200 from a guess. The pool opens new connections when the database returns.
//!
//! **Durability.** Acknowledged writes rely on `synchronous_commit` being on (PostgreSQL's
//! default): the store refuses to open a database where it is off.

mod schema;
mod token_checks;

use super::{
    Credentials, NewAccount, NewSession, PasswordChange, PasswordChangeOutcome, Result,
    SessionGrant, Store, StoreError, TokenState, UserSummary,
};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::lockout::LockoutPolicy;
use crate::domain::profile_text::ProfileText;
use crate::domain::session::{EndReason, SessionRecord};
use crate::domain::user::UserProfile;
use crate::domain::username::Username;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

type Client = deadpool_postgres::Object;

/// Connections kept per replica; more requests wait for one (up to the wait timeout).
const POOL_SIZE: usize = 16;
/// How long a request waits for a connection, or for one to open, before answering 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `location` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// A handle on one PostgreSQL database.
pub struct PgStore {
    /// Drives the pool's connections. Taken on drop, which may happen on an async thread.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Token checks, read in shared batches.
    checks: token_checks::TokenChecks,
}

impl std::fmt::Debug for PgStore {
    // The URL carries credentials: it is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects, checks `synchronous_commit`, and migrates (under an advisory lock). A password
    /// absent from the URL is taken from `PGPASSWORD`, so it need not appear in argv.
    pub fn open(url: &str) -> Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::BadLocation("not a valid postgres:// URL".into()))?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        config.connect_timeout(POOL_TIMEOUT);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::BadLocation(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tessera-postgres")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: "<postgres runtime>".into(),
                source,
            })?;
        let checks = token_checks::TokenChecks::start(&runtime, pool.clone());
        let store = Self {
            runtime: Some(runtime),
            pool,
            checks,
        };
        store.block(async {
            let mut client = store.client().await?;
            let durable: String = client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .map_err(error)?
                .get(0);
            if durable == "off" {
                return Err(StoreError::BadLocation(
                    "synchronous_commit is off: acknowledged writes could be lost".into(),
                ));
            }
            schema::migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// Runs `work` to completion, blocking the calling thread (a blocking-pool thread, the
    /// CLI, or startup).
    fn block<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        match &self.runtime {
            Some(runtime) => block_on(runtime, work),
            None => Err(StoreError::Unreachable("store is shutting down".into())),
        }
    }

    async fn client(&self) -> Result<Client> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unreachable(e.to_string()))
    }

    /// One statement on a pooled connection, prepared once per connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(error)?;
        client.query(&statement, params).await.map_err(error)
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(error)?;
        client.execute(&statement, params).await.map_err(error)
    }
}

/// Polls `future` on the calling thread, parking between wake-ups, inside `runtime`'s context
/// so that what it spawns (connections) and its timers live on the store's runtime. Unlike
/// `Runtime::block_on` this may run where another runtime is current — the server opens its
/// store from async startup code — and only the calling thread waits.
fn block_on<F: Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let _context = runtime.enter();
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// A driver error as a [`StoreError`]: lost connections are "unreachable" (503), the rest
/// storage failures. Messages carry no credentials (the driver never prints its config).
fn error(e: tokio_postgres::Error) -> StoreError {
    let io = std::error::Error::source(&e).is_some_and(|source| source.is::<std::io::Error>());
    // Two transactions that lock the same rows in opposite orders (deleting an account while
    // one of its sessions ends) can deadlock; PostgreSQL aborts one. Nothing was written, so
    // the client is told to retry (503), never 500.
    let lost_race = e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    });
    if lost_race {
        StoreError::Contended(e.to_string())
    } else if e.is_closed() || io {
        StoreError::Unreachable(e.to_string())
    } else {
        StoreError::Postgres(e.to_string())
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A profile from a row's first six columns: id, username, username_canonical, full_name,
/// mothers_favorite_search_engine, created_at.
fn profile_from_row(row: &Row) -> UserProfile {
    UserProfile {
        id: UserId::from_string(row.get(0)),
        username: Username::from_stored(row.get(1), row.get(2)),
        full_name: ProfileText::from_stored(row.get(3)),
        mothers_favorite_search_engine: ProfileText::from_stored(row.get(4)),
        created_at: row.get(5),
    }
}

fn session_from_row(row: &Row) -> SessionRecord {
    let ended_at: Option<i64> = row.get(9);
    let reason: Option<String> = row.get(10);
    SessionRecord {
        id: SessionId::from_string(row.get(0)),
        user_id: UserId::from_string(row.get(1)),
        generation: to_u64(row.get(2)),
        current_generation: to_u64(row.get(3)),
        refresh_counter: to_u64(row.get(4)),
        rotated_at: row.get(5),
        created_at: row.get(6),
        last_used_at: row.get(7),
        expires_at: row.get(8),
        ended: ended_at.map(|at| (at, EndReason::from_stored(reason.as_deref().unwrap_or("")))),
        user_agent: row.get(11),
    }
}

/// Column `i` of `row` as an SQL literal; our tables hold only text and integers.
fn sql_literal(row: &Row, i: usize) -> String {
    use tokio_postgres::types::Type;
    let kind = row.columns().get(i).map(|c| c.type_().clone());
    let value = match kind {
        Some(Type::INT8) => row
            .try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .map(|v| v.to_string()),
        Some(Type::INT4) => row
            .try_get::<_, Option<i32>>(i)
            .ok()
            .flatten()
            .map(|v| v.to_string()),
        _ => row
            .try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .map(|v| format!("'{}'", v.replace('\'', "''"))),
    };
    value.unwrap_or_else(|| "NULL".into())
}

impl Store for PgStore {
    fn create_user(&self, user: &NewAccount<'_>) -> Result<UserProfile> {
        self.block(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO users (id, username, username_canonical, full_name,
                         mothers_favorite_search_engine, password_hash, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await
                .map_err(error)?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &user.id.as_str(),
                        &user.username.as_typed(),
                        &user.username.canonical(),
                        &user.full_name,
                        &user.mothers_favorite_search_engine,
                        &user.password_hash,
                        &user.created_at,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(user.profile()),
                // The unique index on the canonical name settles races, across replicas too.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(StoreError::UsernameTaken)
                }
                Err(e) => Err(error(e)),
            }
        })
    }

    fn find_credentials(&self, username: &Username) -> Result<Option<Credentials>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT id, password_hash, token_generation FROM users
                     WHERE username_canonical = $1",
                    &[&username.canonical()],
                )
                .await?;
            Ok(rows.first().map(|row| Credentials {
                user_id: UserId::from_string(row.get(0)),
                password_hash: row.get(1),
                token_generation: to_u64(row.get(2)),
            }))
        })
    }

    fn reserve_attempt(
        &self,
        user: &UserId,
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<std::result::Result<(), u64>> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(error)?;
            // FOR UPDATE: two replicas' guesses cannot both read the same count.
            let Some(row) = tx
                .query_opt(
                    "SELECT failed_logins, last_failed_login_at FROM users WHERE id = $1
                     FOR UPDATE",
                    &[&user.as_str()],
                )
                .await
                .map_err(error)?
            else {
                return Ok(Ok(()));
            };
            let failures: i32 = row.get(0);
            let last: Option<i64> = row.get(1);
            let failures = u32::try_from(failures).unwrap_or(0);
            if let Some(retry_after) = policy.retry_after(failures, last, now) {
                return Ok(Err(retry_after));
            }
            tx.execute(
                "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login_at = $2
                 WHERE id = $1",
                &[&user.as_str(), &now],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(Ok(()))
        })
    }

    fn record_login(
        &self,
        verified: &Credentials,
        rehashed_password: Option<&str>,
        session: &NewSession<'_>,
    ) -> Result<()> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(error)?;
            let still_current = tx
                .execute(
                    "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL,
                         password_hash = coalesce($4, password_hash)
                     WHERE id = $1 AND password_hash = $2 AND token_generation = $3",
                    &[
                        &verified.user_id.as_str(),
                        &verified.password_hash,
                        &to_i64(verified.token_generation),
                        &rehashed_password,
                    ],
                )
                .await
                .map_err(error)?
                == 1;
            if !still_current {
                return Err(StoreError::CredentialsChanged);
            }
            tx.execute(
                "INSERT INTO sessions (id, user_id, generation, user_agent, created_at,
                     last_used_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $5, $6)",
                &[
                    &session.id.as_str(),
                    &verified.user_id.as_str(),
                    &to_i64(verified.token_generation),
                    &session.user_agent,
                    &session.created_at,
                    &session.expires_at,
                ],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(())
        })
    }

    fn change_password(&self, change: &PasswordChange<'_>) -> Result<PasswordChangeOutcome> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(error)?;
            let changed = tx
                .execute(
                    "UPDATE users SET password_hash = $3, token_generation = token_generation + 1,
                         failed_logins = 0, last_failed_login_at = NULL
                     WHERE id = $1 AND password_hash = $2 AND token_generation + 1 = $4",
                    &[
                        &change.user_id.as_str(),
                        &change.verified_hash,
                        &change.new_hash,
                        &to_i64(change.new_generation),
                    ],
                )
                .await
                .map_err(error)?
                == 1;
            if !changed {
                let same = tx
                    .query_opt(
                        "SELECT password_hash = $2 FROM users WHERE id = $1",
                        &[&change.user_id.as_str(), &change.verified_hash],
                    )
                    .await
                    .map_err(error)?
                    .map(|row| row.get::<_, bool>(0));
                return Ok(match same {
                    Some(false) => PasswordChangeOutcome::PasswordChanged,
                    _ => PasswordChangeOutcome::SessionEnded,
                });
            }
            let kept = tx
                .query_opt(
                    "UPDATE sessions SET generation = $3, refresh_counter = refresh_counter + 1,
                         rotated_at = NULL, last_used_at = $4
                     WHERE id = $1 AND user_id = $2 AND ended_at IS NULL
                     RETURNING refresh_counter, expires_at",
                    &[
                        &change.session_id.as_str(),
                        &change.user_id.as_str(),
                        &to_i64(change.new_generation),
                        &change.now,
                    ],
                )
                .await
                .map_err(error)?;
            let Some(row) = kept else {
                return Ok(PasswordChangeOutcome::SessionEnded);
            };
            tx.commit().await.map_err(error)?;
            Ok(PasswordChangeOutcome::Changed {
                refresh_counter: to_u64(row.get(0)),
                session_expires_at: row.get(1),
            })
        })
    }

    fn delete_user(&self, user: &UserId) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute("DELETE FROM users WHERE id = $1", &[&user.as_str()])
                .await?
                == 1)
        })
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        self.block(async {
            let rows = self
                .query(select_sessions!("WHERE s.id = $1"), &[&id.as_str()])
                .await?;
            Ok(rows.first().map(session_from_row))
        })
    }

    fn sessions_of(&self, user: &UserId) -> Result<Vec<SessionRecord>> {
        self.block(async {
            let rows = self
                .query(
                    select_sessions!("WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id"),
                    &[&user.as_str()],
                )
                .await?;
            Ok(rows.iter().map(session_from_row).collect())
        })
    }

    fn grant_in_session(&self, grant: &SessionGrant<'_>) -> Result<bool> {
        // One conditional UPDATE: under READ COMMITTED a row changed meanwhile is re-checked
        // against the WHERE clause, so of two racing refreshes exactly one moves the counter.
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE sessions SET refresh_counter = $4,
                         rotated_at = CASE WHEN $4 <> $3 THEN $6 ELSE rotated_at END,
                         last_used_at = $6
                     WHERE id = $1 AND user_id = $2 AND refresh_counter = $3
                       AND ended_at IS NULL AND generation = $5
                       AND generation = (SELECT token_generation FROM users WHERE id = $2)",
                    &[
                        &grant.session_id.as_str(),
                        &grant.user_id.as_str(),
                        &to_i64(grant.expected_counter),
                        &to_i64(grant.new_counter),
                        &to_i64(grant.generation),
                        &grant.now,
                    ],
                )
                .await?
                == 1)
        })
    }

    fn end_session(
        &self,
        id: &SessionId,
        owner: Option<&UserId>,
        reason: EndReason,
        now: i64,
        tokens_expire_by: i64,
    ) -> Result<bool> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(error)?;
            let ended = tx
                .query_opt(
                    "UPDATE sessions SET ended_at = $3, end_reason = $4
                     WHERE id = $1 AND ended_at IS NULL AND ($2::TEXT IS NULL OR user_id = $2)
                     RETURNING user_id, LEAST(expires_at, $5)",
                    &[
                        &id.as_str(),
                        &owner.map(UserId::as_str),
                        &now,
                        &reason.as_str(),
                        &tokens_expire_by,
                    ],
                )
                .await
                .map_err(error)?;
            let Some(row) = ended else {
                return Ok(false);
            };
            let user_id: String = row.get(0);
            let denied_until: i64 = row.get(1);
            tx.execute(
                "INSERT INTO revoked_tokens (jti, user_id, expires_at, kind)
                 VALUES ($1, $2, $3, 'session') ON CONFLICT DO NOTHING",
                &[&id.as_str(), &user_id, &denied_until],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(true)
        })
    }

    fn live_sessions(&self, now: i64, idle_timeout: i64) -> Result<u64> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.ended_at IS NULL AND s.generation = u.token_generation
                       AND s.expires_at > $1 AND s.last_used_at > $1 - $2",
                    &[&now, &idle_timeout],
                )
                .await?;
            Ok(rows.first().map_or(0, |row| to_u64(row.get(0))))
        })
    }

    /// Read with the other checks queued meanwhile, in one statement that starts after this
    /// one was queued ([`token_checks`]).
    fn token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        self.checks.check(user, jti, sid)
    }

    /// Never from memory: every check reads the database (see the module comment).
    fn cached_token_state(
        &self,
        _user: &UserId,
        _jti: &TokenId,
        _sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        Ok(None)
    }

    fn bump_generation(&self, user: &UserId) -> Result<Option<u64>> {
        self.block(async {
            let rows = self
                .query(
                    "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1
                     RETURNING token_generation",
                    &[&user.as_str()],
                )
                .await?;
            Ok(rows.first().map(|row| to_u64(row.get(0))))
        })
    }

    fn prune_expired(
        &self,
        cutoff: i64,
        longest_token_lifetime: i64,
        session_idle: i64,
    ) -> Result<usize> {
        let settled = cutoff.saturating_sub(longest_token_lifetime);
        self.block(async {
            let sessions = self
                .execute(
                    "DELETE FROM sessions s WHERE s.expires_at < $1
                        OR s.ended_at < $2
                        OR s.last_used_at < $2 - $3
                        OR (s.last_used_at < $2 AND s.generation <>
                            (SELECT token_generation FROM users u WHERE u.id = s.user_id))",
                    &[&cutoff, &settled, &session_idle],
                )
                .await?;
            let revoked = self
                .execute(
                    "DELETE FROM revoked_tokens WHERE expires_at < $1",
                    &[&cutoff],
                )
                .await?;
            Ok(usize::try_from(sessions + revoked).unwrap_or(usize::MAX))
        })
    }

    fn revoke_all_of(&self, username: &Username) -> Result<Option<u64>> {
        self.block(async {
            let rows = self
                .query(
                    "UPDATE users SET token_generation = token_generation + 1
                     WHERE username_canonical = $1 RETURNING token_generation",
                    &[&username.canonical()],
                )
                .await?;
            Ok(rows.first().map(|row| to_u64(row.get(0))))
        })
    }

    fn unlock_user(&self, username: &Username) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL
                     WHERE username_canonical = $1",
                    &[&username.canonical()],
                )
                .await?
                == 1)
        })
    }

    fn failed_logins(&self, username: &Username) -> Result<Option<u32>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT failed_logins FROM users WHERE username_canonical = $1",
                    &[&username.canonical()],
                )
                .await?;
            Ok(rows
                .first()
                .map(|row| u32::try_from(row.get::<_, i32>(0)).unwrap_or(0)))
        })
    }

    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT username, created_at, token_generation, failed_logins
                     FROM users ORDER BY username_canonical",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| UserSummary {
                    username: row.get(0),
                    created_at: row.get(1),
                    token_generation: to_u64(row.get(2)),
                    failed_logins: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                })
                .collect())
        })
    }

    fn denylist_len(&self) -> Result<u64> {
        self.block(async {
            let rows = self
                .query("SELECT count(*) FROM revoked_tokens", &[])
                .await?;
            Ok(rows.first().map_or(0, |row| to_u64(row.get(0))))
        })
    }

    fn register_keys(&self, fingerprints: &[(String, String)]) -> Result<Vec<String>> {
        self.block(async {
            let mut conflicts = Vec::new();
            for (kid, fingerprint) in fingerprints {
                let rows = self
                    .query(
                        "WITH added AS (
                             INSERT INTO key_fingerprints (kid, fingerprint) VALUES ($1, $2)
                             ON CONFLICT (kid) DO NOTHING RETURNING fingerprint)
                         SELECT fingerprint FROM added
                         UNION ALL SELECT fingerprint FROM key_fingerprints WHERE kid = $1",
                        &[kid, fingerprint],
                    )
                    .await?;
                if rows
                    .iter()
                    .any(|row| row.get::<_, String>(0) != *fingerprint)
                {
                    conflicts.push(kid.clone());
                }
            }
            Ok(conflicts)
        })
    }

    fn ping(&self) -> Result<()> {
        self.block(async {
            self.query("SELECT 1", &[]).await?;
            Ok(())
        })
    }

    /// PostgreSQL checks its own pages; here: the schema is ours and every table answers.
    fn integrity_check(&self) -> Result<Vec<String>> {
        self.block(async {
            for table in ["users", "sessions", "revoked_tokens"] {
                self.query(&format!("SELECT count(*) FROM {table}"), &[])
                    .await?;
            }
            Ok(vec!["ok".to_owned()])
        })
    }

    /// Nothing to fold back: PostgreSQL is complete once a commit returns.
    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    /// Our tables as plain text: the migrations that made them, then every row as an INSERT,
    /// in a stable order (`pg_dump` remains the tool for backups).
    fn dump(&self) -> Result<String> {
        self.block(async {
            let mut out = format!(
                "-- Tessera database dump (PostgreSQL, schema version {})\n",
                schema::MIGRATIONS.len()
            );
            for migration in schema::MIGRATIONS {
                out.push_str(migration.trim());
                out.push('\n');
            }
            for table in ["users", "sessions", "revoked_tokens"] {
                let rows = self
                    .query(&format!("SELECT * FROM {table} ORDER BY 1"), &[])
                    .await?;
                for row in &rows {
                    let values: Vec<String> = (0..row.len()).map(|i| sql_literal(row, i)).collect();
                    out.push_str(&format!(
                        "INSERT INTO \"{table}\" VALUES({});\n",
                        values.join(",")
                    ));
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two transactions locking two rows in opposite orders: PostgreSQL aborts one, and the
    /// store reports it as a lost race (503, retry) — not a storage failure (500). Runs when
    /// `TESSERA_TEST_POSTGRES` names a server (`.ci/run` sets it), like the API suite.
    #[test]
    fn a_deadlock_is_a_lost_race_not_a_failure() {
        let Ok(server) = std::env::var("TESSERA_TEST_POSTGRES") else {
            return;
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut config: tokio_postgres::Config = format!("{server}/postgres").parse().unwrap();
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
            let connect = || async {
                let (client, connection) = config.connect(NoTls).await.unwrap();
                tokio::spawn(connection);
                client
            };
            let (first, second) = (connect().await, connect().await);
            let table = format!("deadlock_{}", std::process::id());
            first
                .batch_execute(&format!(
                    "CREATE TABLE {table} (id INT PRIMARY KEY, n INT);
                     INSERT INTO {table} VALUES (1, 0), (2, 0)"
                ))
                .await
                .unwrap();
            let lock = |id: i32| format!("UPDATE {table} SET n = n + 1 WHERE id = {id}");
            first
                .batch_execute(&format!("BEGIN; {}", lock(1)))
                .await
                .unwrap();
            second
                .batch_execute(&format!("BEGIN; {}", lock(2)))
                .await
                .unwrap();
            let (cross_first, cross_second) = (lock(2), lock(1));
            let (a, b) = tokio::join!(
                first.batch_execute(&cross_first),
                second.batch_execute(&cross_second)
            );
            let failure = a.err().or(b.err()).expect("one of them is aborted");
            let mapped = error(failure);
            assert!(matches!(mapped, StoreError::Contended(_)), "{mapped}");
            assert!(mapped.is_unavailable());
            let _ = first.batch_execute("ROLLBACK").await;
            let _ = second.batch_execute("ROLLBACK").await;
            first
                .batch_execute(&format!("DROP TABLE {table}"))
                .await
                .unwrap();
        });
    }
}
