//! A replica's revocation view on PostgreSQL: token checks answered from memory, kept exact by
//! moving the cost to the writer — a revoking operation is acknowledged only after every replica
//! holding a live lease has applied it (Chubby's client caches, Burrows, OSDI 2006).
//!
//! **The feed.** Every revoking change is recorded, in its own transaction, in `token_changes`
//! with a position from a counter row taken at commit (migration 8 in `schema.rs`), so positions
//! follow commit order with no gaps: a reader that sees position p sees every position below.
//! The commit notifies `tessera_changes`; the replica's feed task, on a connection of its own that
//! listens, reads every change past its position and applies it to the view
//! (`store/revocation_view.rs`), then acknowledges the position in its lease row and notifies
//! `tessera_acks`, which wakes the writers waiting on it.
//!
//! **The lease.** The feed task renews the replica's row every quarter lease; the database dates
//! it (`expires_at`, by its own clock). A writer, after its commit, waits until every row whose
//! lease has not run out has acknowledged a position at or past its change ([`await_replicas`]).
//! The replica trusts its memory only until `sent +` [`trusted_span`], where `sent` is read from
//! its monotonic clock *before* the renewal was sent — so before the database's `expires_at`,
//! which was computed after it, as long as the two clocks disagree by less than the margin
//! [`trusted_span`] keeps (the stated clock assumption: the database's clock is not stepped
//! during a lease).
//!
//! **Why no replica accepts a revoked token after the writer's 204.** Take a change committed
//! at position p, and a writer that found every live lease acknowledged at ≥ p. A replica whose
//! row was live at that check had applied p. A replica whose row had run out had stopped trusting
//! memory by then (the clock assumption), and trusts it again only after a renewal that was
//! answered while it still trusted — impossible, it did not — or after a renewal *followed by a
//! full catch-up*: that renewal committed after the writer's check (else the writer would have
//! seen a live lease), so after p, and the catch-up that follows it reads p.
//!
//! **Losing the feed.** A dropped connection withdraws trust at once (a notification may be lost
//! with it); a connection that hangs makes renewals fail, and trust lapses on its own. Either
//! way the replica answers from the database (exact, as before) or 503 when that is unreachable,
//! and returns to memory once it holds a lease and has caught up.

use super::{col, error, timed_out};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Denial;
use crate::store::revocation_view::{self, Change, Lookup, RevocationView, Stamp};
use crate::store::{Result, StoreError, TokenState};
use crate::support::shards::Sharded;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// The acknowledgement protocol this build speaks, recorded in each lease row.
const PROTOCOL: i32 = 1;

/// The default lease (`--replica-lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// Upper bounds, seconds, of the acknowledgement-latency histogram.
pub const ACK_BUCKETS: [f64; 12] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How long, from the moment a renewal was sent, the replica trusts its memory: the lease less a
/// margin for the two clocks' disagreement.
pub(super) fn trusted_span(lease: Duration) -> Duration {
    lease.saturating_sub(lease / 5)
}

/// How often the lease is renewed: four renewals per lease, so one or two lost renewals still
/// leave the replica trusting its memory.
pub(super) fn renewal_interval(lease: Duration) -> Duration {
    lease / 4
}

/// When the renewal after one sent at `sent` is due: a renewal interval later, counted from the
/// sending, as the trust it earns is.
fn next_renewal(sent: Instant, lease: Duration) -> Instant {
    sent + renewal_interval(lease)
}

/// The feed's wait before its first reconnection.
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// The wait before the feed reconnects after `pause`: doubling from the first, so a database
/// that is down is not hammered, up to a renewal interval (at least a tenth of a second), so a
/// database that is back is reached again within about a renewal.
fn next_reconnect_pause(pause: Duration, lease: Duration) -> Duration {
    (pause * 2).min(renewal_interval(lease).max(Duration::from_millis(100)))
}

/// When the replica may answer from memory: until a deadline on its monotonic clock, which only
/// a renewal extends and a lost connection withdraws. Every method takes the time as an argument,
/// so the rules are tested on an injected clock.
#[derive(Debug)]
pub(super) struct Trust {
    origin: Instant,
    /// Nanoseconds after `origin` until which memory is trusted; 0 when it is not.
    until: AtomicU64,
}

impl Trust {
    pub(super) fn new(origin: Instant) -> Self {
        Self {
            origin,
            until: AtomicU64::new(0),
        }
    }

    pub(super) fn trusts(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0 && self.nanos(now) < until
    }

    /// A renewal sent at `sent` succeeded: trust memory until `sent` + [`trusted_span`]. Never
    /// shortens a deadline a later renewal set.
    pub(super) fn extend(&self, sent: Instant, lease: Duration) {
        let until = self.nanos(sent + trusted_span(lease)).max(1);
        self.until.fetch_max(until, Ordering::AcqRel);
    }

    /// Stop trusting memory now. True if it was trusted until then.
    pub(super) fn withdraw(&self, now: Instant) -> bool {
        let was = self.trusts(now);
        self.until.store(0, Ordering::Release);
        was
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The stamp of the view's `epoch`-th synchronisation.
fn stamp(epoch: u64) -> Stamp {
    let mut stamp = [0; 48];
    stamp[..8].copy_from_slice(&epoch.to_le_bytes());
    stamp
}

/// Wakes writers waiting for acknowledgements when any replica acknowledges.
#[derive(Debug, Default)]
pub(super) struct AckSignal {
    seen: Mutex<u64>,
    changed: Condvar,
}

impl AckSignal {
    fn notify(&self) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Waits until an acknowledgement arrives after `since`, or `limit` passes.
    fn wait(&self, since: u64, limit: Duration) {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .changed
            .wait_timeout_while(seen, limit, |seen| *seen == since);
    }

    fn current(&self) -> u64 {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    from_memory: Sharded<AtomicU64>,
    from_database: Sharded<AtomicU64>,
    leases_taken: AtomicU64,
    leases_lost: AtomicU64,
    /// Highest position any notification announced.
    head_seen: AtomicI64,
}

/// What `/metrics` and `/readyz` say about replication.
#[derive(Debug, Clone, Default)]
pub struct ReplicationStats {
    /// Whether token checks are answered from memory right now.
    pub from_memory_now: bool,
    pub checks_from_memory: u64,
    pub checks_from_database: u64,
    pub leases_taken: u64,
    pub leases_lost: u64,
    /// Positions announced but not yet applied.
    pub lag: u64,
    /// Revocation acknowledgement waits: count per [`ACK_BUCKETS`] bucket (then +Inf), and the
    /// sum of their durations in seconds.
    pub ack_buckets: Vec<u64>,
    pub ack_sum_seconds: f64,
}

/// Revocation acknowledgement latency, as observed by this process's writers.
#[derive(Debug, Default)]
pub(super) struct AckLatency {
    buckets: [AtomicU64; ACK_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl AckLatency {
    fn record(&self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        let slot = ACK_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(ACK_BUCKETS.len());
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// One serving replica's view, trust and feed state, shared by the store's methods and the feed
/// task.
#[derive(Debug)]
pub(super) struct Replica {
    /// Names this process's lease row: random, never reused.
    id: String,
    lease: Duration,
    view: RevocationView,
    trust: Trust,
    /// Bumped by each synchronisation of the view, and published after it: lookups ask the view
    /// at this epoch's stamp, without its lock when the thread already has the answer.
    epoch: AtomicU64,
    counters: Counters,
    /// Whether the feed holds a lease: a lost lease is logged once per loss.
    held: AtomicBool,
    /// Set at shutdown: the feed stops renewing.
    released: AtomicBool,
}

impl Replica {
    pub(super) fn new(lease: Duration) -> Self {
        Self {
            id: crate::crypto::random::base64url_id::<16>(),
            lease,
            view: RevocationView::default(),
            trust: Trust::new(Instant::now()),
            epoch: AtomicU64::new(0),
            counters: Counters::default(),
            held: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    pub(super) fn trusts_now(&self) -> bool {
        self.trust.trusts(Instant::now())
    }

    /// Stops trusting memory and renewing, for good (shutdown); the caller deletes the row.
    pub(super) fn release(&self) -> &str {
        self.released.store(true, Ordering::SeqCst);
        self.trust.withdraw(Instant::now());
        &self.id
    }

    /// From memory only, never blocking: `None` unless the replica trusts its memory and the
    /// view has the user at the published epoch.
    pub(super) fn cached(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Option<TokenState> {
        if !self.trust.trusts(Instant::now()) {
            return None;
        }
        let at = stamp(self.epoch.load(Ordering::Acquire));
        match self.view.lookup_remembering(&at, user, jti, sid) {
            Lookup::Hit(state) => {
                self.counters
                    .from_memory
                    .local()
                    .fetch_add(1, Ordering::Relaxed);
                Some(state)
            }
            Lookup::Miss { .. } | Lookup::Stale => None,
        }
    }

    /// From memory when trusted and the view has the user; otherwise `load` reads the database
    /// (and a user it finds is remembered, unless the view changed meanwhile).
    pub(super) fn token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
        load: impl FnOnce() -> Result<Option<TokenState>>,
    ) -> Result<Option<TokenState>> {
        let miss = if self.trust.trusts(Instant::now()) {
            let at = stamp(self.epoch.load(Ordering::Acquire));
            match self.view.lookup(&at, user, jti, sid) {
                Lookup::Hit(state) => {
                    self.counters
                        .from_memory
                        .local()
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(state));
                }
                Lookup::Miss { version } => Some(version),
                Lookup::Stale => None,
            }
        } else {
            None
        };
        self.counters
            .from_database
            .local()
            .fetch_add(1, Ordering::Relaxed);
        let state = load()?;
        if let (Some(version), Some(state)) = (miss, &state) {
            self.view
                .remember(version, &state.profile, state.current_generation);
        }
        Ok(state)
    }

    pub(super) fn prune(&self, cutoff: i64) {
        self.view.prune(cutoff);
    }

    pub(super) fn stats(&self, latency: &AckLatency) -> ReplicationStats {
        let sum = |shards: &Sharded<AtomicU64>| {
            shards
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let head = self.counters.head_seen.load(Ordering::Relaxed);
        ReplicationStats {
            from_memory_now: self.trust.trusts(Instant::now()),
            checks_from_memory: sum(&self.counters.from_memory),
            checks_from_database: sum(&self.counters.from_database),
            leases_taken: self.counters.leases_taken.load(Ordering::Relaxed),
            leases_lost: self.counters.leases_lost.load(Ordering::Relaxed),
            lag: u64::try_from(head.saturating_sub(self.view.position())).unwrap_or(0),
            ..latency.snapshot()
        }
    }

    /// Stops trusting memory; counts and logs a lost lease once.
    fn lose(&self, why: &str) {
        if self.trust.withdraw(Instant::now()) || self.held.swap(false, Ordering::AcqRel) {
            self.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                reason = why,
                "replica lease lost: token checks read the database until it is renewed"
            );
        }
    }

    /// The view moved to a new synchronisation: publish it for lookups.
    fn next_stamp(&self) -> (u64, Stamp) {
        let epoch = self.epoch.load(Ordering::Acquire) + 1;
        (epoch, stamp(epoch))
    }

    fn publish(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }
}

impl AckLatency {
    fn snapshot(&self) -> ReplicationStats {
        ReplicationStats {
            ack_buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            #[allow(clippy::cast_precision_loss)] // micros of waiting: far below 2^52
            ack_sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            ..ReplicationStats::default()
        }
    }
}

/// Runs the replica's feed for as long as the store lives: connect, listen, renew, catch up,
/// apply, acknowledge; on any failure stop trusting memory, wait a little, start again.
pub(super) async fn follow(
    replica: Arc<Replica>,
    acks: Arc<AckSignal>,
    config: tokio_postgres::Config,
    timeout: Duration,
) {
    let mut pause = FIRST_RECONNECT_PAUSE;
    while !replica.released.load(Ordering::SeqCst) {
        let failure = session(&replica, &acks, &config, timeout).await;
        let why = failure.map_or_else(|e| crate::store::cause_chain(&e), |()| String::new());
        replica.lose(&why);
        tokio::time::sleep(pause).await;
        pause = next_reconnect_pause(pause, replica.lease);
    }
}

/// What the listening connection hears.
#[derive(Debug, PartialEq)]
enum Note {
    Changed(i64),
    Acknowledged,
}

impl Note {
    /// A notification on one of the two channels the feed listens to: an acknowledgement, or a
    /// change whose payload is its position (unreadable: taken as past everything, so the lag
    /// the replica reports errs high, never low; the catch-up reads the real head either way).
    fn heard(channel: &str, payload: &str) -> Self {
        if channel == "tessera_acks" {
            Self::Acknowledged
        } else {
            Self::Changed(payload.parse().unwrap_or(i64::MAX))
        }
    }
}

/// One connection's life. Returns when the connection fails or a statement runs out of time.
async fn session(
    replica: &Replica,
    acks: &AckSignal,
    config: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<()> {
    let (client, connection) = within(timeout, async {
        config.connect(tokio_postgres::NoTls).await.map_err(error)
    })
    .await?;
    let (notes_in, mut notes) = mpsc::unbounded_channel();
    let driver = AbortOnDrop(tokio::spawn(drive(connection, notes_in)));
    within(timeout, async {
        client
            .batch_execute("LISTEN tessera_changes; LISTEN tessera_acks")
            .await
            .map_err(error)
    })
    .await?;
    let mut renew_at = Instant::now();
    loop {
        if replica.released.load(Ordering::SeqCst) {
            return Ok(());
        }
        if Instant::now() >= renew_at {
            let sent = Instant::now();
            within(timeout, renew(&client, replica)).await?;
            if replica.trust.trusts(Instant::now()) {
                replica.trust.extend(sent, replica.lease);
            } else {
                // The lease may have run out by the writers' reckoning: they may have gone on
                // without this replica. Everything they committed is visible after the renewal,
                // so catch up fully before trusting memory again.
                within(timeout, catch_up(&client, replica)).await?;
                within(timeout, acknowledge(&client, replica)).await?;
                replica.trust.extend(sent, replica.lease);
                replica
                    .counters
                    .leases_taken
                    .fetch_add(1, Ordering::Relaxed);
                if !replica.held.swap(true, Ordering::AcqRel) {
                    tracing::info!("replica lease held: token checks answered from memory");
                }
            }
            renew_at = next_renewal(sent, replica.lease);
        }
        let note = tokio::select! {
            note = notes.recv() => note,
            () = tokio::time::sleep_until(renew_at.into()) => continue,
        };
        let mut changed = false;
        let mut note = note;
        // Everything already heard is handled by one catch-up.
        loop {
            match note {
                None => {
                    drop(driver);
                    return Err(StoreError::Unreachable(
                        "the change feed's connection closed".into(),
                    ));
                }
                Some(Note::Changed(position)) => {
                    replica
                        .counters
                        .head_seen
                        .fetch_max(position, Ordering::Relaxed);
                    changed = true;
                }
                Some(Note::Acknowledged) => acks.notify(),
            }
            match notes.try_recv() {
                Ok(next) => note = Some(next),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => note = None,
            }
        }
        if changed {
            within(timeout, catch_up(&client, replica)).await?;
            within(timeout, acknowledge(&client, replica)).await?;
        }
    }
}

/// `work`, or an error once `timeout` has passed.
async fn within<T>(timeout: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drives the connection and forwards its notifications; ends (closing the channel) when the
/// connection does.
async fn drive(
    mut connection: tokio_postgres::Connection<
        tokio_postgres::Socket,
        tokio_postgres::tls::NoTlsStream,
    >,
    notes: mpsc::UnboundedSender<Note>,
) {
    while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
        let AsyncMessage::Notification(notification) = message else {
            continue;
        };
        let note = Note::heard(notification.channel(), notification.payload());
        if notes.send(note).is_err() {
            return;
        }
    }
}

/// Takes or renews this replica's lease, acknowledging what it has applied.
async fn renew(client: &tokio_postgres::Client, replica: &Replica) -> Result<()> {
    #[allow(clippy::cast_precision_loss)] // a lease in milliseconds: far below 2^52
    let lease_millis = replica.lease.as_millis() as f64;
    client
        .execute(
            "INSERT INTO replica_leases (replica, protocol, applied, renewed_at, expires_at)
             VALUES ($1, $2, $3, clock_timestamp(),
                     clock_timestamp() + $4::FLOAT8 * INTERVAL '1 millisecond')
             ON CONFLICT (replica) DO UPDATE SET protocol = EXCLUDED.protocol,
                 applied = EXCLUDED.applied, renewed_at = EXCLUDED.renewed_at,
                 expires_at = EXCLUDED.expires_at",
            &[
                &replica.id,
                &PROTOCOL,
                &replica.view.position(),
                &lease_millis,
            ],
        )
        .await
        .map_err(error)?;
    Ok(())
}

/// Records the applied position in the lease row and wakes the writers waiting on it.
async fn acknowledge(client: &tokio_postgres::Client, replica: &Replica) -> Result<()> {
    client
        .query(
            "WITH acked AS (UPDATE replica_leases SET applied = greatest(applied, $2)
                            WHERE replica = $1 RETURNING 1)
             SELECT pg_notify('tessera_acks', '') FROM acked",
            &[&replica.id, &replica.view.position()],
        )
        .await
        .map_err(error)?;
    Ok(())
}

/// Applies every change past the view's position, in position order — or rebuilds the view
/// from the tables when the log does not cover the gap (pruned) or the view is new.
async fn catch_up(client: &tokio_postgres::Client, replica: &Replica) -> Result<()> {
    let position = replica.view.position();
    if replica.view.is_synchronised() {
        // One statement, one snapshot: the head and every change up to it.
        let rows = client
            .query(
                "SELECT h.position, c.seq, c.user_id, c.jti, c.expires_at, c.reason
                 FROM change_position h
                 LEFT JOIN token_changes c ON c.seq > $1 AND c.seq <= h.position
                 ORDER BY c.seq",
                &[&position],
            )
            .await
            .map_err(error)?;
        let head: i64 = rows.first().map_or(Ok(position), |row| col(row, 0))?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(seq) = col::<Option<i64>>(row, 1)? else {
                continue;
            };
            let change = match (col::<Option<String>>(row, 3)?, col::<Option<i64>>(row, 4)?) {
                (Some(jti), Some(expires_at)) => Change::Denied {
                    id: TokenId::from_string(jti),
                    expires_at,
                    denial: Denial::from_stored(col::<Option<String>>(row, 5)?.as_deref()),
                },
                _ => Change::User(UserId::from_string(col(row, 2)?)),
            };
            changes.push((seq, change));
        }
        if revocation_view::continues(position, &changes, head) {
            if !changes.is_empty() {
                let (epoch, at) = replica.next_stamp();
                replica.view.apply(changes, at);
                replica.publish(epoch);
            }
            return Ok(());
        }
    }
    rebuild(client, replica).await
}

/// The view from the tables: the denylist and the head position read in one snapshot.
async fn rebuild(client: &tokio_postgres::Client, replica: &Replica) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(error)?;
    let read = async {
        let head = client
            .query_one("SELECT position FROM change_position", &[])
            .await
            .map_err(error)?;
        let head: i64 = col(&head, 0)?;
        let rows = client
            .query("SELECT jti, expires_at, reason FROM revoked_tokens", &[])
            .await
            .map_err(error)?;
        let denylist = rows
            .iter()
            .map(|row| {
                Ok((
                    TokenId::from_string(col(row, 0)?),
                    col(row, 1)?,
                    Denial::from_stored(col::<Option<String>>(row, 2)?.as_deref()),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok::<_, StoreError>((head, denylist))
    };
    let read = read.await;
    client.batch_execute("COMMIT").await.map_err(error)?;
    let (head, denylist) = read?;
    let (epoch, at) = replica.next_stamp();
    replica.view.rebuild(denylist, head, at);
    replica.publish(epoch);
    Ok(())
}

/// What a writer waits for after committing a revoking change.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The change's position (or a later one: waiting for more is only slower).
    pub position: i64,
    /// Replicas whose live lease has not acknowledged it.
    pub lagging: i64,
    /// Seconds until the last of their leases runs out, by the database's clock.
    pub longest_lease_left: f64,
}

/// The statement a writer polls: how many live leases lag behind `$1`, and for how long at most.
pub(super) const LAGGING_SQL: &str = "
    SELECT count(*), coalesce(max(extract(epoch FROM expires_at - clock_timestamp())), 0)::FLOAT8
    FROM replica_leases WHERE applied < $1 AND expires_at > clock_timestamp()";

/// The statement a writer starts with: the head position after its commit, and the lagging
/// leases at it.
pub(super) const HEAD_SQL: &str = "
    SELECT h.position, count(l.replica),
           coalesce(max(extract(epoch FROM l.expires_at - clock_timestamp())), 0)::FLOAT8
    FROM change_position h
    LEFT JOIN replica_leases l ON l.applied < h.position AND l.expires_at > clock_timestamp()
    GROUP BY h.position";

/// Waits until no live lease lags behind the change: `first` reads the head position after the
/// commit and what lags behind it, `poll` reads it again (one statement each), woken by any
/// acknowledgement and at least every `POLL_EVERY`. Bounded: a lease runs out unless its replica
/// renews it, and a replica renews only while its feed works, which acknowledges; the backstop
/// `limit` past the longest lease first seen answers an error (503) rather than a 204 that
/// might not be safe.
pub(super) fn await_replicas(
    acks: &AckSignal,
    latency: &AckLatency,
    limit: Duration,
    first: impl FnOnce() -> Result<Waiting>,
    mut poll: impl FnMut(i64) -> Result<Waiting>,
) -> Result<()> {
    const POLL_EVERY: Duration = Duration::from_millis(20);
    let started = Instant::now();
    // Read before each statement: an acknowledgement arriving while it runs still wakes us.
    let mut seen = acks.current();
    let mut waiting = first()?;
    let backstop =
        Duration::try_from_secs_f64(waiting.longest_lease_left).unwrap_or_default() + limit;
    loop {
        if waiting.lagging == 0 {
            latency.record(started.elapsed());
            return Ok(());
        }
        if started.elapsed() > backstop {
            return Err(StoreError::Unreachable(format!(
                "the revocation is committed, but {} replica(s) neither acknowledged it nor \
                 let their leases run out",
                waiting.lagging
            )));
        }
        let left = Duration::try_from_secs_f64(waiting.longest_lease_left).unwrap_or_default();
        acks.wait(seen, POLL_EVERY.min(left.max(Duration::from_millis(1))));
        seen = acks.current();
        waiting = poll(waiting.position)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(5);

    #[test]
    fn memory_is_trusted_from_a_renewal_until_four_fifths_of_a_lease_after_it_was_sent() {
        let t0 = Instant::now();
        let trust = Trust::new(t0);
        assert!(!trust.trusts(t0), "nothing renewed yet");
        let sent = t0 + Duration::from_secs(1);
        trust.extend(sent, LEASE);
        assert!(trust.trusts(sent));
        assert!(trust.trusts(sent + Duration::from_millis(3_999)));
        assert!(!trust.trusts(sent + Duration::from_secs(4)), "the margin");
        assert!(!trust.trusts(sent + LEASE));
    }

    #[test]
    fn an_older_renewal_answered_late_never_shortens_the_trust() {
        let t0 = Instant::now();
        let trust = Trust::new(t0);
        trust.extend(t0 + Duration::from_secs(2), LEASE);
        trust.extend(t0, LEASE);
        assert!(trust.trusts(t0 + Duration::from_millis(5_999)));
        assert!(!trust.trusts(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn a_withdrawal_ends_trust_at_once_until_the_next_renewal() {
        let t0 = Instant::now();
        let trust = Trust::new(t0);
        trust.extend(t0, LEASE);
        assert!(trust.withdraw(t0 + Duration::from_secs(1)));
        assert!(!trust.trusts(t0 + Duration::from_secs(1)));
        assert!(!trust.withdraw(t0 + Duration::from_secs(1)), "already");
        trust.extend(t0 + Duration::from_secs(2), LEASE);
        assert!(trust.trusts(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn trust_always_ends_before_the_databases_lease_and_renewals_overlap() {
        for millis in [500, 1_000, 5_000, 60_000] {
            let lease = Duration::from_millis(millis);
            assert!(trusted_span(lease) < lease);
            // Three renewals fit in the trusted span: losing two still leaves no gap.
            assert!(renewal_interval(lease) * 3 <= trusted_span(lease));
            // And no more often than four times a lease: renewals are the replica's only
            // statements while it answers from memory.
            assert!(renewal_interval(lease) * 4 >= lease);
        }
    }

    #[test]
    fn notifications_are_told_apart_by_channel() {
        assert_eq!(Note::heard("tessera_acks", ""), Note::Acknowledged);
        assert_eq!(Note::heard("tessera_changes", "42"), Note::Changed(42));
        assert_eq!(
            Note::heard("tessera_changes", "not a number"),
            Note::Changed(i64::MAX),
            "an unreadable position is taken as past everything"
        );
    }

    #[test]
    fn the_next_renewal_is_due_a_renewal_interval_after_the_last_was_sent() {
        let sent = Instant::now();
        assert_eq!(next_renewal(sent, LEASE), sent + LEASE / 4);
        assert!(next_renewal(sent, LEASE) > sent);
    }

    #[test]
    fn reconnect_pauses_double_up_to_a_renewal_interval() {
        let lease = Duration::from_secs(8);
        let mut pauses = vec![FIRST_RECONNECT_PAUSE];
        for _ in 0..8 {
            let last = *pauses.last().unwrap();
            pauses.push(next_reconnect_pause(last, lease));
        }
        let millis: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(
            millis,
            [50, 100, 200, 400, 800, 1_600, 2_000, 2_000, 2_000],
            "doubling, then one renewal interval (a quarter of the lease)"
        );
        // A short lease still waits a tenth of a second between attempts.
        let short = Duration::from_millis(200);
        assert_eq!(
            next_reconnect_pause(Duration::from_millis(100), short),
            Duration::from_millis(100)
        );
    }

    fn waiting(lagging: i64, left: f64) -> Waiting {
        Waiting {
            position: 7,
            lagging,
            longest_lease_left: left,
        }
    }

    #[test]
    fn a_writer_returns_once_nothing_lags_and_records_the_wait() {
        let (acks, latency) = (AckSignal::default(), AckLatency::default());
        let mut polls = vec![waiting(0, 0.0), waiting(1, 1.0)];
        await_replicas(
            &acks,
            &latency,
            LEASE,
            || Ok(waiting(2, 1.0)),
            |position| {
                assert_eq!(position, 7);
                Ok(polls.pop().unwrap())
            },
        )
        .unwrap();
        assert!(polls.is_empty(), "polled until nothing lagged");
        assert_eq!(latency.snapshot().ack_buckets.iter().sum::<u64>(), 1);
    }

    #[test]
    fn a_writer_that_cannot_prove_safety_answers_an_error_not_success() {
        let (acks, latency) = (AckSignal::default(), AckLatency::default());
        // A replica that keeps renewing without acknowledging: past the backstop, an error.
        let outcome = await_replicas(
            &acks,
            &latency,
            Duration::ZERO,
            || Ok(waiting(1, 0.0)),
            |_| Ok(waiting(1, 0.0)),
        );
        assert!(matches!(outcome, Err(StoreError::Unreachable(_))));
        assert_eq!(latency.snapshot().ack_buckets.iter().sum::<u64>(), 0);
    }

    #[test]
    fn an_acknowledgement_wakes_a_waiting_writer() {
        let acks = Arc::new(AckSignal::default());
        let since = acks.current();
        let waker = std::thread::spawn({
            let acks = acks.clone();
            move || acks.notify()
        });
        // Bounded far beyond need: the wait ends on the notification, not on this limit.
        acks.wait(since, Duration::from_secs(600));
        waker.join().unwrap();
        assert_eq!(acks.current(), since + 1);
    }

    #[test]
    fn a_wait_without_an_acknowledgement_lasts_its_limit() {
        let acks = AckSignal::default();
        let limit = Duration::from_millis(20);
        let started = Instant::now();
        acks.wait(acks.current(), limit);
        assert!(started.elapsed() >= limit, "returned before its limit");
    }

    #[test]
    fn waits_are_counted_in_the_first_bucket_they_fit_and_past_the_last_in_infinity() {
        let latency = AckLatency::default();
        latency.record(Duration::from_micros(500));
        latency.record(Duration::from_millis(1)); // exactly the first bound
        latency.record(Duration::from_secs(5)); // exactly the last bound
        latency.record(Duration::from_secs(9));
        let stats = latency.snapshot();
        let mut expected = vec![0; ACK_BUCKETS.len() + 1];
        expected[0] = 2;
        expected[ACK_BUCKETS.len() - 1] = 1;
        expected[ACK_BUCKETS.len()] = 1;
        assert_eq!(stats.ack_buckets, expected);
        assert!((stats.ack_sum_seconds - 14.0015).abs() < 1e-9);
    }

    fn user_state(user: &str) -> TokenState {
        TokenState {
            profile: Arc::new(crate::domain::user::UserProfile::with_id(user)),
            current_generation: 4,
            revoked: None,
        }
    }

    fn ids() -> (UserId, TokenId, SessionId) {
        (
            UserId::from_string("u1".into()),
            TokenId::from_string("j1".into()),
            SessionId::from_string("s1".into()),
        )
    }

    #[test]
    fn an_untrusted_replica_answers_from_the_database_and_says_so() {
        let replica = Replica::new(LEASE);
        let (user, jti, sid) = ids();
        assert!(!replica.trusts_now());
        assert_eq!(replica.cached(&user, &jti, &sid), None);
        let loaded = replica
            .token_state(&user, &jti, &sid, || Ok(Some(user_state("u1"))))
            .unwrap();
        assert_eq!(loaded, Some(user_state("u1")));
        let stats = replica.stats(&AckLatency::default());
        assert!(!stats.from_memory_now);
        assert_eq!(
            (stats.checks_from_memory, stats.checks_from_database),
            (0, 1)
        );
    }

    #[test]
    fn a_trusted_replica_remembers_a_loaded_user_and_answers_from_memory_until_released() {
        // A lease of an hour: the test never outlives the trust it starts with.
        let lease = Duration::from_secs(3600);
        let replica = Replica::new(lease);
        let (user, jti, sid) = ids();
        replica.view.restamp(stamp(0));
        replica.trust.extend(Instant::now(), lease);
        assert!(replica.trusts_now());
        // A miss loads from the database and remembers the user at the view's version.
        let loaded = replica
            .token_state(&user, &jti, &sid, || Ok(Some(user_state("u1"))))
            .unwrap();
        assert_eq!(loaded, Some(user_state("u1")));
        let remembered = replica.cached(&user, &jti, &sid).expect("from memory");
        assert_eq!(remembered.current_generation, 4);
        let again = replica
            .token_state(&user, &jti, &sid, || panic!("read the database"))
            .unwrap();
        assert_eq!(again, Some(user_state("u1")));
        let stats = replica.stats(&AckLatency::default());
        assert!(stats.from_memory_now);
        assert_eq!(
            (stats.checks_from_memory, stats.checks_from_database),
            (2, 1)
        );
        // Released: its lease row's id, and memory is never trusted again.
        assert_eq!(replica.release(), replica.id);
        assert_eq!(replica.id.len(), 22);
        assert!(!replica.trusts_now());
        assert_eq!(replica.cached(&user, &jti, &sid), None);
    }

    #[test]
    fn each_synchronisation_gets_a_new_stamp_and_lookups_follow_it_once_published() {
        let lease = Duration::from_secs(3600);
        let replica = Replica::new(lease);
        let (user, jti, sid) = ids();
        replica.trust.extend(Instant::now(), lease);
        let (first, at_first) = replica.next_stamp();
        assert_eq!(first, 1);
        replica.view.restamp(at_first);
        // Not yet published: lookups still ask at the old stamp and find the view moved on.
        let loaded = replica
            .token_state(&user, &jti, &sid, || Ok(Some(user_state("u1"))))
            .unwrap();
        assert_eq!(loaded, Some(user_state("u1")));
        assert_eq!(
            replica.cached(&user, &jti, &sid),
            None,
            "stale, not remembered"
        );
        replica.publish(first);
        replica
            .token_state(&user, &jti, &sid, || Ok(Some(user_state("u1"))))
            .unwrap();
        assert!(
            replica.cached(&user, &jti, &sid).is_some(),
            "remembered at it"
        );
        let (second, at_second) = replica.next_stamp();
        assert_eq!(second, 2);
        assert_ne!(at_second, at_first);
    }

    #[test]
    fn a_lost_lease_ends_trust_and_is_counted_once_and_lag_is_what_was_announced_past_the_view() {
        let lease = Duration::from_secs(3600);
        let replica = Replica::new(lease);
        replica.trust.extend(Instant::now(), lease);
        replica.lose("test");
        assert!(!replica.trusts_now());
        replica.lose("test again");
        let stats = replica.stats(&AckLatency::default());
        assert_eq!(stats.leases_lost, 1, "one loss, counted once");
        replica.counters.head_seen.store(5, Ordering::Relaxed);
        replica.counters.leases_taken.store(3, Ordering::Relaxed);
        let stats = replica.stats(&AckLatency::default());
        assert_eq!((stats.lag, stats.leases_taken), (5, 3));
    }
}
