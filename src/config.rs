//! Everything the service needs to start, independent of how it was configured, and the
//! defaults — shared by the command line (`cli::args`), `tessera-token` and the tests.

use crate::auth::AuthSettings;
use crate::domain::lockout::LockoutPolicy;
use crate::domain::password::HashParams;
use crate::domain::password_policy::PasswordPolicy;
use crate::domain::session::SessionPolicy;
use crate::http::HttpSettings;
use crate::http::access_log::AccessLog;
use crate::store::DbLocation;
use crate::support::clock::{self, Clock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the keyring lives unless told otherwise; only this default is created on demand.
pub const DEFAULT_KEYS_PATH: &str = "keys/jwks.json";
pub const DEFAULT_DB_PATH: &str = "data/tessera.db";
/// Token issuer (`iss`) and audience (`aud`).
pub const DEFAULT_ISSUER: &str = "tessera";
pub const DEFAULT_AUDIENCE: &str = "tessera-api";
/// Access-token lifetime in seconds; also the longest lifetime the codec accepts. Short,
/// because refresh tokens carry sessions (OAuth 2.0 Security BCP §4.14; GoTrue and Kratos
/// default to minutes too), and it bounds how long the denylist keeps a row.
pub const DEFAULT_TOKEN_TTL: i64 = 900;
/// The longest `--token-ttl` accepted. Tools that cannot know the server's setting (the admin
/// CLI ending a session) keep denylist rows this long, so no token can outlive them.
pub const MAX_TOKEN_TTL: i64 = 86_400;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY: i64 = 30;
/// Requests allowed to wait for a hashing thread before 503.
pub const DEFAULT_HASH_QUEUE: usize = 64;
/// Nice value of the hashing threads: token checks preempt hashing.
pub const DEFAULT_HASH_NICE: i32 = 19;
/// Per-client-IP token buckets: (burst, sustained per second).
pub const DEFAULT_LOGIN_LIMIT: (u32, f64) = (20, 2.0);
pub const DEFAULT_REGISTER_LIMIT: (u32, f64) = (10, 0.2);
/// A refresh is one database write and no hash; a client needs one per access-token lifetime.
pub const DEFAULT_REFRESH_LIMIT: (u32, f64) = (30, 1.0);
/// Seconds between sweeps of expired denylist and ledger rows.
pub const DEFAULT_PRUNE_INTERVAL_SECS: u64 = 60;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database is: a SQLite file or a PostgreSQL URL.
    pub db: DbLocation,
    /// Longest wait for the database (see [`crate::store::DEFAULT_DB_TIMEOUT`]).
    pub db_timeout: Duration,
    /// On PostgreSQL, a replica's lease on answering token checks from memory.
    pub replica_lease: Duration,
    pub keys_path: PathBuf,
    /// Create the key file if it is missing (the dev default only).
    pub create_missing_keys: bool,
    pub issuer: String,
    pub audience: String,
    pub leeway: i64,
    pub hash: HashParams,
    pub auth: AuthSettings,
    pub http: HttpSettings,
    pub hash_permits: usize,
    pub hash_queue: usize,
    pub hash_nice: i32,
    pub login_limit: (u32, f64),
    pub register_limit: (u32, f64),
    pub refresh_limit: (u32, f64),
    pub prune_interval: Duration,
    /// Where "now" comes from: the wall clock, or a test's manual clock.
    pub clock: Arc<dyn Clock>,
    /// Where request lines go; off unless the binary set up logging.
    pub access_log: AccessLog,
}

impl Config {
    /// Every default, with this database and key file (which must exist: only the default key
    /// path is created on demand).
    pub fn for_paths(db: &Path, keys: &Path) -> Self {
        Self {
            db: DbLocation::from(db),
            db_timeout: crate::store::DEFAULT_DB_TIMEOUT,
            replica_lease: crate::store::DEFAULT_REPLICA_LEASE,
            keys_path: keys.into(),
            create_missing_keys: false,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            leeway: DEFAULT_LEEWAY,
            hash: HashParams::default(),
            auth: AuthSettings {
                token_ttl: DEFAULT_TOKEN_TTL,
                password_policy: PasswordPolicy::default(),
                lockout: LockoutPolicy::default(),
                sessions: SessionPolicy::default(),
            },
            http: HttpSettings::default(),
            hash_permits: default_hash_permits(),
            hash_queue: DEFAULT_HASH_QUEUE,
            hash_nice: DEFAULT_HASH_NICE,
            login_limit: DEFAULT_LOGIN_LIMIT,
            register_limit: DEFAULT_REGISTER_LIMIT,
            refresh_limit: DEFAULT_REFRESH_LIMIT,
            prune_interval: Duration::from_secs(DEFAULT_PRUNE_INTERVAL_SECS),
            clock: clock::system(),
            access_log: AccessLog::off(),
        }
    }
}

/// One hashing thread per CPU: argon2 is memory-bandwidth bound, more only queue.
pub fn default_hash_permits() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}
