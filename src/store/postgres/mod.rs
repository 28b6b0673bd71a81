//! The PostgreSQL backend of the storage seam, for several replicas on one database, through
//! `tokio-postgres` with a small `deadpool` pool (prepared statements cached per connection).
//! Nothing else in the crate sees SQL.
//!
//! The seam is synchronous (the use cases run on the blocking pool), so this store drives its
//! connections on a runtime of its own — one thread — and each method blocks its caller, a
//! blocking-pool thread or the admin CLI, until the query is done ([`block_on`]: the caller's
//! thread waits on the query's future; the connection's I/O runs on the store's thread). Why the
//! seam is synchronous: docs/architecture.md, "Decisions".
//!
//! **Revocation stays exact across replicas** in one of two ways. A serving replica answers token
//! checks from its in-memory revocation view while it holds a lease, and every revoking write
//! waits until each live lease has acknowledged it ([`replica`]). Without a lease — and in the
//! admin CLI — a check reads the tables (in shared batches, [`token_checks`]): a revocation is
//! committed before its 204 goes out, and a check that starts after that reads a snapshot that
//! includes it (READ COMMITTED takes a snapshot per statement).
//!
//! **Every wait is bounded** by the store's timeout (`--db-timeout`), so no caller — a request's
//! blocking-pool thread above all — waits longer than about twice that, whatever the network
//! or the server does: waiting for a pooled connection or opening one (the pool's timeouts),
//! then the work on it ([`PgStore::with_client`]). A connection whose work ran out of time is
//! mid-statement with no answer coming (a partition, a frozen server process): it is taken out
//! of the pool and closed, never handed to the next caller. The server enforces the same bound
//! on its side (`statement_timeout`, `lock_timeout`, and `idle_in_transaction_session_timeout`
//! so a client that vanished mid-transaction releases its locks), and TCP keepalives find idle
//! connections whose peer is gone.
//!
//! **Fail closed, recover alone.** With the database unreachable, too slow, or restarting,
//! every method fails with [`StoreError::Unreachable`] (or [`StoreError::Contended`] for a lost
//! race), which the HTTP layer answers with 503 and `Retry-After` — token checks included, never
//! 200 from a guess. The pool opens new connections when the database answers again.
//!
//! **Durability.** Acknowledged writes rely on `synchronous_commit` being on (PostgreSQL's
//! default): the store refuses to open a database where it is off.

mod clients;
mod factors;
mod maintenance;
mod replica;
mod schema;
mod sessions;
mod token_checks;
mod tokens;
mod users;

use super::error::cause_chain;
use super::{Result, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{NoTls, Row};

type Client = deadpool_postgres::Object;

pub(super) use replica::DEFAULT_LEASE as DEFAULT_REPLICA_LEASE;
pub use replica::{ACK_BUCKETS, ReplicationStats};

/// Connections kept per replica; more requests wait for one (up to the timeout).
const POOL_SIZE: usize = 16;

/// A handle on one PostgreSQL database.
pub struct PgStore {
    /// Drives the pool's connections. Taken on drop, which may happen on an async thread.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// The longest any one piece of work on a connection may take.
    timeout: Duration,
    /// Token checks, read in shared batches.
    checks: token_checks::TokenChecks,
    /// A serving replica's view and lease; `None` for an operator's store.
    replica: Option<Arc<replica::Replica>>,
    /// Wakes this process's writers when a replica acknowledges (only a serving replica's feed
    /// hears acknowledgements; an operator's store polls).
    acks: Arc<replica::AckSignal>,
    latency: replica::AckLatency,
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
    /// absent from the URL is taken from `PGPASSWORD`, so it need not appear in argv. `timeout`
    /// bounds every wait (see the module comment).
    pub fn open(url: &str, timeout: Duration) -> Result<Self> {
        Self::open_with(url, timeout, None)
    }

    /// The server's store: [`PgStore::open`], then a replica's view fed by the change feed, under
    /// a lease of `lease` ([`replica`]).
    pub fn open_for_serving(url: &str, timeout: Duration, lease: Duration) -> Result<Self> {
        Self::open_with(url, timeout, Some(lease))
    }

    fn open_with(url: &str, timeout: Duration, lease: Option<Duration>) -> Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::BadLocation("not a valid postgres:// URL".into()))?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        bound_connections(&mut config, timeout);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::BadLocation(cause_chain(&e)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tessera-postgres")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: "<postgres runtime>".into(),
                source,
            })?;
        let checks = token_checks::TokenChecks::start(&runtime, pool.clone(), timeout);
        let mut store = Self {
            runtime: Some(runtime),
            pool,
            timeout,
            checks,
            replica: None,
            acks: Arc::default(),
            latency: replica::AckLatency::default(),
        };
        store.run(async |client| {
            let row = client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .map_err(error)?;
            if col::<String>(&row, 0)? == "off" {
                return Err(StoreError::BadLocation(
                    "synchronous_commit is off: acknowledged writes could be lost".into(),
                ));
            }
            schema::migrate(client).await
        })?;
        if let (Some(lease), Some(runtime)) = (lease, &store.runtime) {
            let view = Arc::new(replica::Replica::new(lease));
            // Named so an operator (or a test) can tell each replica's feed connection apart.
            config.application_name(format!("tessera-feed-{}", std::process::id()));
            runtime.spawn(replica::follow(
                view.clone(),
                store.acks.clone(),
                config,
                timeout,
            ));
            store.replica = Some(view);
        }
        Ok(store)
    }

    /// Gives up this replica's lease at shutdown: it stops answering from memory and renewing,
    /// and its row is deleted: writers wait only for the leases that exist.
    fn release_lease(&self) -> Result<()> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let id = replica.release().to_owned();
        self.block(self.execute("DELETE FROM replica_leases WHERE replica = $1", &[&id]))?;
        Ok(())
    }

    /// After a revoking write committed: returns once every replica holding a live lease has
    /// applied it (or its lease ran out), so no replica can accept a token it revoked.
    fn await_replicas(&self) -> Result<()> {
        let waiting = |rows: Vec<Row>, position: Option<i64>| -> Result<replica::Waiting> {
            let row = rows
                .first()
                .ok_or_else(|| StoreError::Corrupt("no change position".into()))?;
            let offset = usize::from(position.is_none());
            Ok(replica::Waiting {
                position: match position {
                    Some(position) => position,
                    None => col(row, 0)?,
                },
                lagging: col(row, offset)?,
                longest_lease_left: col(row, offset + 1)?,
            })
        };
        replica::await_replicas(
            &self.acks,
            &self.latency,
            self.timeout.saturating_mul(2),
            || waiting(self.block(self.query(replica::HEAD_SQL, &[]))?, None),
            |position| {
                let rows = self.block(self.query(replica::LAGGING_SQL, &[&position]))?;
                waiting(rows, Some(position))
            },
        )
    }

    /// Runs `work` to completion, blocking the calling thread (a blocking-pool thread, the
    /// CLI, or startup). Everything `work` awaits is bounded already; this bound is the
    /// backstop that holds even if one of those were not.
    fn block<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unreachable("store is shutting down".into()));
        };
        let backstop = self.timeout.saturating_mul(2) + Duration::from_secs(1);
        block_on(runtime, async {
            tokio::time::timeout(backstop, work)
                .await
                .unwrap_or_else(|_| Err(timed_out(backstop)))
        })
    }

    /// [`PgStore::with_client`], blocking the calling thread.
    fn run<T>(&self, work: impl AsyncFnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.block(self.with_client(work))
    }

    /// [`on_connection`] with this store's pool and timeout.
    async fn with_client<T>(&self, work: impl AsyncFnOnce(&mut Client) -> Result<T>) -> Result<T> {
        on_connection(&self.pool, self.timeout, work).await
    }

    /// One statement on a pooled connection, prepared once per connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.with_client(async |client| {
            let statement = client.prepare_cached(sql).await.map_err(error)?;
            client.query(&statement, params).await.map_err(error)
        })
        .await
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        self.with_client(async |client| {
            let statement = client.prepare_cached(sql).await.map_err(error)?;
            client.execute(&statement, params).await.map_err(error)
        })
        .await
    }
}

/// Runs `work` on a connection of `pool` within `timeout`. A connection whose work ran out of
/// time may still have a statement in flight that will never be answered, so it is detached
/// from the pool and closed (its driver task aborted) instead of going back to the next caller.
async fn on_connection<T>(
    pool: &Pool,
    timeout: Duration,
    work: impl AsyncFnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let mut client = pool.get().await.map_err(pool_error)?;
    match tokio::time::timeout(timeout, work(&mut client)).await {
        Ok(result) => result,
        Err(_) => {
            drop(deadpool_postgres::Object::take(client));
            Err(timed_out(timeout))
        }
    }
}

/// The connection settings that bound every wait on the database's side and the network's:
/// the server cancels a statement, a lock wait or an abandoned transaction after `timeout` (or
/// twice that, for the last), and TCP keepalives close connections whose peer went away while
/// they sat idle in the pool. Options the URL already sets come first; ours are appended.
fn bound_connections(config: &mut tokio_postgres::Config, timeout: Duration) {
    let millis = timeout.as_millis().max(1);
    let ours = format!(
        "-c statement_timeout={millis} -c lock_timeout={millis} \
         -c idle_in_transaction_session_timeout={}",
        millis.saturating_mul(2)
    );
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{given} {ours}"),
        _ => ours,
    };
    config.options(&options);
    config.connect_timeout(timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.keepalives_interval(Duration::from_secs(2));
    config.keepalives_retries(3);
    // Data sent and never acknowledged (the peer's host is gone) closes the connection too.
    config.tcp_user_timeout(timeout.saturating_mul(2));
}

/// Waits for `future` on the calling thread, inside `runtime`'s context so that what it spawns
/// (connections) and its timers live on the store's runtime, which drives their I/O. Unlike
/// `Runtime::block_on` this may run where another runtime is current — the server opens its
/// store from async startup code — and only the calling thread waits; every wait inside is
/// bounded (`--db-timeout`).
fn block_on<F: Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    let _context = runtime.enter();
    futures_executor::block_on(future)
}

fn timed_out(after: Duration) -> StoreError {
    StoreError::Unreachable(format!(
        "no answer from the database within {}",
        humantime::format_duration(after)
    ))
}

/// A failure to get a connection: every kind means the database cannot be used right now
/// (down, refusing connections, wrong password, too slow), so a 503 — with the driver's cause
/// (for a wrong password, the server's own message) kept for the log.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Disconnected(Box::new(e))
}

/// SQLSTATE classes that mean the connection or the server went away, or is not taking work
/// now — a stop, a restart, a terminated backend, a full server, a cancelled statement — so
/// the request may succeed if retried: class 08 (connection exception), 57 (operator
/// intervention: `admin_shutdown`, `crash_shutdown`, `cannot_connect_now`, `query_canceled`
/// by `statement_timeout`, …), 53 (insufficient resources: too many connections, out of
/// memory or disk).
const RETRYABLE_CLASSES: [&str; 3] = ["08", "57", "53"];

/// A driver error as a [`StoreError`], with its whole cause chain (the driver's own message is
/// only "db error"; the server's is its source). Lost connections and the classes above are
/// "unreachable" (503), lost races "contended" (503), the rest storage failures (500). Messages
/// carry no credentials (the driver never prints its config).
fn error(e: tokio_postgres::Error) -> StoreError {
    let io = std::error::Error::source(&e).is_some_and(|source| source.is::<std::io::Error>());
    let code = e.code().map(SqlState::code);
    // Two transactions that lock the same rows in opposite orders (deleting an account while
    // one of its sessions ends) can deadlock; PostgreSQL aborts one. A lock wait past
    // `lock_timeout` is the same kind of loss. Nothing was written, so the client is told to
    // retry (503), never 500.
    let lost_race = e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::LOCK_NOT_AVAILABLE
    });
    let retryable = code.is_some_and(|code| RETRYABLE_CLASSES.iter().any(|c| code.starts_with(c)));
    if lost_race {
        StoreError::Contended(Box::new(e))
    } else if e.is_closed() || io || retryable {
        StoreError::Disconnected(Box::new(e))
    } else {
        StoreError::Postgres(e)
    }
}

/// Column `i` of `row`, or [`StoreError::Corrupt`] if it is missing or of another type: what
/// the database holds is outside input, and a surprise there must fail the one call, never
/// panic a thread or a task.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {}", cause_chain(&e))))
}

pub(super) use super::rows::{to_i64, to_u64};

fn profile_from_row(row: &Row) -> Result<crate::domain::user::UserProfile> {
    super::rows::profile(row, 0)
}

fn session_from_row(row: &Row) -> Result<crate::domain::session::SessionRecord> {
    super::rows::session(row)
}

/// The count a `SELECT count(*)` returned.
fn first_count(rows: &[Row]) -> Result<u64> {
    rows.first().map_or(Ok(0), |row| col(row, 0).map(to_u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain connection to the test server's `postgres` database.
    async fn connect() -> tokio_postgres::Client {
        let server = std::env::var("TESSERA_TEST_POSTGRES")
            .expect("TESSERA_TEST_POSTGRES names a PostgreSQL server");
        let mut config: tokio_postgres::Config = format!("{server}/postgres").parse().unwrap();
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Two transactions locking two rows in opposite orders: PostgreSQL aborts one, and the
    /// store reports it as a lost race (503, retry) — not a storage failure (500).
    #[test]
    #[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
    fn a_deadlock_is_a_lost_race_not_a_failure() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
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

    /// Rows are outside input: one whose columns are missing or of other types than the
    /// mapper expects fails that one call with `Corrupt` — it never panics the thread or the
    /// token-check task that read it.
    #[test]
    #[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
    fn a_row_of_unexpected_shape_is_an_error_not_a_panic() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = connect().await;
            let wrong_types = client
                .query_one("SELECT 1::INT4, 2, 3, 4, 5, 'six'", &[])
                .await
                .unwrap();
            assert!(matches!(
                profile_from_row(&wrong_types),
                Err(StoreError::Corrupt(_))
            ));
            let too_short = client.query_one("SELECT 'id'", &[]).await.unwrap();
            assert!(matches!(
                session_from_row(&too_short),
                Err(StoreError::Corrupt(_))
            ));
            assert!(matches!(
                first_count(&[too_short]),
                Err(StoreError::Corrupt(_))
            ));
        });
    }

    /// The server's reasons for ending a connection or refusing work are retryable 503s, with
    /// the server's message in the cause; a plain SQL mistake stays a storage failure.
    #[test]
    #[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
    fn server_side_interruptions_are_unreachable_and_keep_their_message() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = connect().await;
            client
                .batch_execute("SET statement_timeout = 10")
                .await
                .unwrap();
            let cancelled = client.execute("SELECT pg_sleep(1)", &[]).await.unwrap_err();
            let mapped = error(cancelled);
            assert!(matches!(mapped, StoreError::Disconnected(_)), "{mapped}");
            // The driver's error is kept whole, the server's message under it.
            assert!(
                cause_chain(&mapped).contains("statement timeout"),
                "{}",
                cause_chain(&mapped)
            );
            let source = std::error::Error::source(&mapped).unwrap();
            assert!(source.is::<tokio_postgres::Error>());
            let victim = connect().await;
            let pid: i32 = victim
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            client
                .batch_execute("SET statement_timeout = 0")
                .await
                .unwrap();
            client
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap();
            let ended = victim.execute("SELECT 1", &[]).await.unwrap_err();
            let mapped = error(ended);
            assert!(mapped.is_unavailable(), "{mapped}");
            let mistake = client
                .execute("SELECT no_such_column", &[])
                .await
                .unwrap_err();
            let mapped = error(mistake);
            assert!(matches!(mapped, StoreError::Postgres(_)), "{mapped}");
            assert!(
                cause_chain(&mapped).contains("no_such_column"),
                "{}",
                cause_chain(&mapped)
            );
        });
    }
}
