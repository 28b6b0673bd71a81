//! The storage seam: everything above `store/` reaches storage through the [`Store`] trait, and
//! learns nothing of which database runs behind it. SQLite ([`sqlite`]) is the default;
//! PostgreSQL ([`postgres`]), chosen by a `postgres://` URL, lets several replicas share one
//! database.
//!
//! Why a trait object rather than an enum over backends: a backend is then one folder and one
//! `impl`, added without editing a `match` in every method here, and `auth` holds an
//! `Arc<dyn Store>` it cannot look behind. The price, one indirect call per storage operation,
//! is invisible next to a hash-map lookup, let alone a query.
//!
//! Every method is synchronous and may block (SQL, file checks): call it off the async reactor —
//! except [`Store::cached_token_state`], which never blocks.

/// A query of sessions with their user's current generation, in the column order both backends'
/// `session_from_row` read, then `tail` (each backend's own placeholders). A literal, so each
/// backend's statement cache finds it without formatting a string. Defined before the backend
/// modules so both can use it.
macro_rules! select_sessions {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, s.user_id, s.generation, u.token_generation, s.refresh_counter, ",
            "s.rotated_at, s.created_at, s.last_used_at, s.expires_at, s.ended_at, ",
            "s.end_reason, s.user_agent, s.client_address, s.factors ",
            "FROM sessions s JOIN users u ON u.id = s.user_id ",
            $tail
        )
    };
}

mod error;
mod location;
mod postgres;
mod records;
mod revocation_view;
mod rows;
mod sqlite;
mod thread_answers;

pub use error::{Result, StoreError, cause_chain};
pub use location::DbLocation;
pub use postgres::{ACK_BUCKETS, PgStore, ReplicationStats};
pub use records::{
    Credentials, NewAccount, NewSession, PasswordChange, PasswordChangeOutcome, SessionGrant,
    TokenState, TotpChange, TotpFactor, UserSummary,
};
pub use sqlite::SqliteStore;

use crate::domain::client::{ClientName, ClientRecord};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::lockout::LockoutPolicy;
use crate::domain::session::{EndReason, SessionRecord};
use crate::domain::user::UserProfile;
use crate::domain::username::Username;
use std::sync::Arc;
use std::time::Duration;

/// How long any one wait for the database may last — a lock held by another connection, a
/// connection from the pool, a statement — before the request is answered 503 (`--db-timeout`).
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL replica's lease on answering token checks from memory (`--replica-lease`).
pub const DEFAULT_REPLICA_LEASE: Duration = postgres::DEFAULT_REPLICA_LEASE;

/// What the service needs from storage, by topic: each backend implements the six traits in
/// the module of that topic (`sqlite/users.rs`, `postgres/users.rs`, …), one name per operation
/// from the seam down, with no forwarding layer between the seam and the SQL. [`Store`] is all
/// six, for an `Arc<dyn Store>` (whose methods need no import).
pub trait Store:
    Accounts
    + Sessions
    + Revocation
    + SecondFactors
    + Clients
    + Maintenance
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> Store for T where
    T: Accounts
        + Sessions
        + Revocation
        + SecondFactors
        + Clients
        + Maintenance
        + Send
        + Sync
        + std::fmt::Debug
{
}

/// Accounts: creating, finding and deleting users, the softlock's counters, and what the admin CLI does to them.
pub trait Accounts {
    /// Inserts a user. Of any number of concurrent registrations of one name, exactly one
    /// commits; the others get [`StoreError::UsernameTaken`].
    fn create_user(&self, user: &NewAccount<'_>) -> Result<UserProfile>;

    /// The hash and the generation of a user, read together.
    fn find_credentials(&self, username: &Username) -> Result<Option<Credentials>>;

    /// Reserves one password guess against the softlock, atomically, before any hashing:
    /// counted as a failure now and forgiven by a successful login. `Ok(Err(seconds))` when the
    /// guess is refused; a user deleted meanwhile is `Ok(Ok(()))` (the guess then fails).
    fn reserve_attempt(
        &self,
        user: &UserId,
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<std::result::Result<(), u64>>;

    /// What [`Store::reserve_attempt`] costs, paid by a guess at a name with no account: a
    /// write transaction of the same shape on a padding row. Timing then cannot tell a real
    /// account from a phantom — both pay a reservation's write and one argon2 verification.
    fn pad_unknown_attempt(&self, now: i64) -> Result<()>;

    /// Deletes a user with its sessions, ledger and denylist rows. True if one was deleted.
    fn delete_user(&self, user: &UserId) -> Result<bool>;

    /// `tessera user revoke`: bumps the generation by username.
    fn revoke_all_of(&self, username: &Username) -> Result<Option<u64>>;

    /// `tessera user unlock`: clears the failure counter. False if no such user.
    fn unlock_user(&self, username: &Username) -> Result<bool>;

    /// Guesses reserved and not yet forgiven.
    fn failed_logins(&self, username: &Username) -> Result<Option<u32>>;

    fn list_users(&self) -> Result<Vec<UserSummary>>;
}

/// Sessions: logins that start them, refreshes that move them, the password change that keeps one, and their ends.
pub trait Sessions {
    /// A successful login: starts the session, clears the failure counter and optionally stores
    /// a rehashed password, in one transaction — only if the hash and generation are still
    /// `verified`; otherwise [`StoreError::CredentialsChanged`] and nothing must go out.
    fn record_login(
        &self,
        verified: &Credentials,
        rehashed_password: Option<&str>,
        session: &NewSession<'_>,
    ) -> Result<()>;

    /// Replaces the hash and bumps the generation (every session ends), keeping the caller's
    /// session alive at the new generation with a fresh refresh token — one transaction, only
    /// if hash, generation and session are still as verified.
    fn change_password(&self, change: &PasswordChange<'_>) -> Result<PasswordChangeOutcome>;

    /// A session with its user's current generation; `None` if unknown (or pruned, or its
    /// user deleted).
    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>>;

    /// The user's sessions on file, newest first — ended and expired ones included.
    fn sessions_of(&self, user: &UserId) -> Result<Vec<SessionRecord>>;

    /// Moves a session's refresh counter (a refresh), only if the session is as the caller
    /// judged it (see [`SessionGrant`]). False if not: judge again.
    fn grant_in_session(&self, grant: &SessionGrant<'_>) -> Result<bool>;

    /// Ends a session not yet ended — of `owner`, if given — and denylists its id until
    /// `tokens_expire_by` (every access token it issued has expired by then; the session's own
    /// end if sooner), in one transaction. False if there was no such session to end.
    fn end_session(
        &self,
        id: &SessionId,
        owner: Option<&UserId>,
        reason: EndReason,
        now: i64,
        tokens_expire_by: i64,
    ) -> Result<bool>;

    /// Sessions live at `now` (not ended, not revoked, before both deadlines).
    fn live_sessions(&self, now: i64, idle_timeout: i64) -> Result<u64>;
}

/// Token state — the revocation view: what every authenticated request checks, and what changes it.
pub trait Revocation {
    /// The token's user, current generation and whether its `jti` or its session `sid` is
    /// denylisted — exact, whatever other processes committed. `None` when the user no longer
    /// exists. Blocking.
    fn token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>>;

    /// The same from memory only, never blocking: `Ok(None)` when the backend cannot answer
    /// without I/O (the caller then uses [`Store::token_state`] on the blocking pool); an error
    /// when it cannot prove its memory current.
    fn cached_token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>>;

    /// Revokes every token the user holds. The new generation, or `None` if no such user.
    fn bump_generation(&self, user: &UserId) -> Result<Option<u64>>;

    /// Drops denylist rows of tokens expired before `cutoff`, and sessions that can serve
    /// nothing any more; keeps change history for at least `longest_token_lifetime`. Returns
    /// how many session and denylist rows went.
    fn prune_expired(
        &self,
        cutoff: i64,
        longest_token_lifetime: i64,
        session_idle: i64,
    ) -> Result<usize>;

    /// Rows on the denylist (for metrics and tests).
    fn denylist_len(&self) -> Result<u64>;
}

/// Second factors: a user's TOTP factor, its used time steps and recovery codes. Every change
/// that decides whether a code is accepted is one conditional statement, so of concurrent
/// requests presenting one code exactly one succeeds.
pub trait SecondFactors {
    /// The user's factor, if any.
    fn totp_factor(&self, user: &UserId) -> Result<Option<TotpFactor>>;

    /// Starts a pending factor with this sealed secret, replacing a pending one. False if the
    /// user has an active factor.
    fn enrol_totp(&self, user: &UserId, sealed_secret: &str, now: i64) -> Result<bool>;

    /// Activates the pending factor: records `step` as used (only if later than any used),
    /// stores the recovery codes' digests, and ends every other session of the user (they were
    /// started with one factor) — one transaction. False if there was nothing pending or the
    /// step was used.
    fn confirm_totp(&self, confirm: &TotpChange<'_>) -> Result<bool>;

    /// Records `step` as used if it is later than the last one recorded for the user's active
    /// factor. False: a replay (or no active factor).
    fn use_totp_step(&self, user: &UserId, step: i64) -> Result<bool>;

    /// Marks an unused recovery code of the user's used. False if none matches.
    fn use_recovery_code(&self, user: &UserId, digest: &str, now: i64) -> Result<bool>;

    /// Replaces every recovery code of the user's active factor. False if there is none.
    fn replace_recovery_codes(&self, user: &UserId, digests: &[String]) -> Result<bool>;

    /// Removes the factor and its codes and ends every session of the user but `keep` (all of
    /// them when `None`) — one transaction. False if there was no factor.
    fn remove_totp(&self, change: &TotpChange<'_>) -> Result<bool>;

    /// Every sealed secret, with its user (to reseal them under another key).
    fn sealed_secrets(&self) -> Result<Vec<(UserId, String)>>;

    /// Replaces a sealed secret, only if it is still `old`. False if it changed meanwhile.
    fn reseal_secret(&self, user: &UserId, old: &str, new: &str) -> Result<bool>;
}

/// Introspection clients: the resource servers that may ask whether a token stands. Every
/// check reads storage, so a client removed by any process is refused on its next request.
pub trait Clients {
    /// Adds a client with its secret's digest (never the secret); [`StoreError::ClientExists`]
    /// if the name is taken.
    fn add_client(&self, name: &ClientName, secret_digest: &str, now: i64) -> Result<()>;

    /// The digest of a client's secret; `None` if there is no such client.
    fn client_secret_digest(&self, name: &ClientName) -> Result<Option<String>>;

    /// Every client, by name (never a digest).
    fn list_clients(&self) -> Result<Vec<ClientRecord>>;

    /// Removes a client. False if there was none of that name.
    fn remove_client(&self, name: &ClientName) -> Result<bool>;
}

/// Keys, readiness, integrity, shutdown and the dump.
pub trait Maintenance {
    /// Records each `(kid, fingerprint)` not seen before and returns the kids already recorded
    /// with another fingerprint: the same key id holding different key material elsewhere.
    fn register_keys(&self, fingerprints: &[(String, String)]) -> Result<Vec<String>>;

    /// Records that a server signs with `kid` and may go on doing so until `until`: the
    /// recorded moment only ever moves later, so with several servers it is the last one's.
    /// Servers renew it while they sign with the key; `tessera keys retire` reads it.
    fn record_signing(&self, kid: &str, until: i64) -> Result<()>;

    /// Until when some server may have signed with `kid`, if any server recorded it.
    fn signing_until(&self, kid: &str) -> Result<Option<i64>>;

    /// Whether storage answers and is still the one opened (readiness).
    fn ping(&self) -> Result<()>;

    /// Whether token checks are answered from memory right now (readiness reports it): on
    /// SQLite always (the view proves itself per check), on PostgreSQL while the replica holds
    /// its lease. Never blocks.
    fn answers_from_memory(&self) -> bool;

    /// A serving PostgreSQL replica's view, lease and acknowledgement figures, for metrics.
    fn replication(&self) -> Option<ReplicationStats>;

    /// The backend's integrity check: `["ok"]` or the problems found.
    fn integrity_check(&self) -> Result<Vec<String>>;

    /// Makes the store complete on its own before shutdown.
    fn checkpoint(&self) -> Result<()>;

    /// A plain-text dump: schema, then every row, in a stable order.
    fn dump(&self) -> Result<String>;
}

/// Padding rows (see [`Store::pad_unknown_attempt`]), one picked at random per guess so that
/// concurrent guesses seldom wait on one row's lock.
const PADDING_SLOTS: u8 = 16;

fn padding_slot() -> u8 {
    rand::random_range(0..PADDING_SLOTS)
}

/// The server's store at `location`: a PostgreSQL database (whose replica view holds leases of
/// `replica_lease`), or a SQLite file created and migrated if missing (with its in-memory
/// revocation view). `timeout` bounds every wait for the database.
pub fn open_for_serving(
    location: &DbLocation,
    timeout: Duration,
    replica_lease: Duration,
) -> Result<Arc<dyn Store>> {
    match location {
        DbLocation::Postgres(url) => Ok(Arc::new(PgStore::open_for_serving(
            url,
            timeout,
            replica_lease,
        )?)),
        DbLocation::Sqlite(path) => Ok(Arc::new(SqliteStore::open_for_serving(path, timeout)?)),
    }
}

/// An operator's store (admin CLI, `tessera-token verify`): it must exist, and every read goes
/// to the database.
pub fn open_existing(location: &DbLocation) -> Result<Arc<dyn Store>> {
    match location {
        DbLocation::Postgres(url) => Ok(Arc::new(PgStore::open(url, DEFAULT_DB_TIMEOUT)?)),
        DbLocation::Sqlite(path) => Ok(Arc::new(SqliteStore::open_existing(path)?)),
    }
}
