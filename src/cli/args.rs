//! The command line: every tunable with its default, as a flag and a `TESSERA_*` variable.
//!
//! Defaults follow the standards cited next to each; `tessera serve --help` prints them all.
//! Those shared with other entry points live in [`crate::config`].

use crate::auth::AuthSettings;
use crate::config::{
    Config, DEFAULT_AUDIENCE, DEFAULT_DB_PATH, DEFAULT_HASH_NICE, DEFAULT_HASH_QUEUE,
    DEFAULT_ISSUER, DEFAULT_KEYS_PATH, DEFAULT_LEEWAY, DEFAULT_PRUNE_INTERVAL_SECS,
    DEFAULT_REFRESH_LIMIT, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL,
};
use crate::domain::lockout::LockoutPolicy;
use crate::domain::password::HashParams;
use crate::domain::password_policy::{ABSOLUTE_MIN_CHARS, PasswordPolicy};
use crate::domain::session::SessionPolicy;
use crate::http::HttpSettings;
use crate::http::client_address::TrustedProxies;
use crate::store::DbLocation;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "tessera", version, about = "A small authentication service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve(Box<ServeArgs>),
    /// Manage the signing keys (JWK Set file).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// JWK Set key file to manage (the same file `serve --keys` reads).
        #[arg(long, env = "TESSERA_KEYS", default_value = DEFAULT_KEYS_PATH, global = true)]
        keys: PathBuf,
    },
    /// Administer users directly in the database (works while the server runs).
    User {
        #[command(subcommand)]
        action: UserAction,
        /// SQLite database file (must already exist: only `serve` creates one) or postgres://
        /// URL (keep the password out of argv: TESSERA_DB, or PGPASSWORD).
        #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg, global = true)]
        db: DbLocation,
    },
    /// List and end users' sessions directly in the database (works while the server runs).
    Session {
        #[command(subcommand)]
        action: SessionAction,
        /// SQLite database file (must already exist: only `serve` creates one) or postgres://
        /// URL (keep the password out of argv: TESSERA_DB, or PGPASSWORD).
        #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg, global = true)]
        db: DbLocation,
        /// Idle timeout in seconds, as the server's `--session-idle` (to tell idle sessions).
        #[arg(long, env = "TESSERA_SESSION_IDLE", default_value_t = SessionPolicy::default().idle_timeout, global = true)]
        session_idle: i64,
    },
    /// Manage the resource servers allowed to introspect tokens (POST /v1/introspect).
    Client {
        #[command(subcommand)]
        action: ClientAction,
        /// SQLite database file (must already exist: only `serve` creates one) or postgres://
        /// URL (keep the password out of argv: TESSERA_DB, or PGPASSWORD).
        #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg, global = true)]
        db: DbLocation,
    },
    /// Inspect the database.
    Db {
        #[command(subcommand)]
        action: DbAction,
        /// SQLite database file (must already exist: only `serve` creates one) or postgres://
        /// URL (keep the password out of argv: TESSERA_DB, or PGPASSWORD).
        #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg, global = true)]
        db: DbLocation,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a new key file with one signing key (refuses to overwrite).
    Generate,
    /// Add a new signing key in front; older keys keep verifying.
    Rotate,
    /// Add a new key that only verifies (across replicas: add everywhere, then promote).
    Add,
    /// Make a key the signing one; the one before keeps verifying until retired.
    Promote {
        /// Key id to promote, as `keys list` prints it.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// List key ids and which one signs (never the keys).
    List,
    /// Remove a non-signing key once no server can have signed with it for one token
    /// lifetime: counted from the later of the rotation in the key file and the servers' own
    /// record in the database (refused before that unless --force).
    Retire {
        /// Key id to remove, as `keys list` prints it.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Retire even though tokens it signed may still be live (they stop verifying at once).
        #[arg(long)]
        force: bool,
        /// Access-token lifetime in seconds: the server's `--token-ttl`.
        #[arg(long, env = "TESSERA_TOKEN_TTL", default_value_t = DEFAULT_TOKEN_TTL)]
        token_ttl: i64,
        /// Clock skew tolerated in seconds: the server's `--leeway`.
        #[arg(long, env = "TESSERA_LEEWAY", default_value_t = DEFAULT_LEEWAY)]
        leeway: i64,
        /// The servers' database (SQLite file or postgres:// URL), where each server records
        /// until when it may sign with its key.
        #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg)]
        db: DbLocation,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// List users (never hashes).
    List,
    /// Revoke every token of a user (bumps the token generation).
    Revoke {
        /// The account's username (any case or width).
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// Remove a user's second factor (a lost device) and end every session of theirs.
    TotpReset {
        /// The account's username (any case or width).
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// Clear a user's failed-login counter.
    Unlock {
        /// The account's username (any case or width).
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionAction {
    /// List a user's sessions on file, newest first, with their status (never token material).
    List {
        /// The account's username (any case or width).
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// End a session: its refresh token and every access token it issued stop working at once.
    Revoke {
        /// The session id, as `session list` or `tessera-token inspect` (`sid`) prints it. Ids
        /// may start with `-`; they are never read as flags.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Add a client and print its secret — once: only a digest of it is stored.
    Add {
        /// The client's name (its client_id): 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
    },
    /// List clients by name (never secrets).
    List,
    /// Remove a client: its next introspection request is refused.
    Remove {
        /// The client's name, as `client list` prints it.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Print a plain-text SQL dump to stdout.
    Dump,
    /// Run SQLite's integrity check.
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT, or HOST:PORT (its first IPv4 address, else its first).
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:8080", value_parser = listen_address)]
    pub listen: SocketAddr,
    /// Address for Prometheus metrics (`GET /metrics`); off unless given. Keep it private.
    #[arg(long, env = "TESSERA_METRICS_LISTEN", value_parser = listen_address)]
    pub metrics_listen: Option<SocketAddr>,
    /// SQLite database file (created with mode 0600 if missing), or a postgres:// URL for
    /// several replicas on one database (keep the password out of argv: TESSERA_DB or
    /// PGPASSWORD).
    #[arg(long, env = "TESSERA_DB", hide_env_values = true, default_value = DEFAULT_DB_PATH, value_parser = DbLocation::from_arg)]
    pub db: DbLocation,
    /// Longest wait for the database — a lock another connection holds, a pooled connection, a
    /// statement — before the request is answered 503 (e.g. `5s`, `800ms`).
    #[arg(long, env = "TESSERA_DB_TIMEOUT", default_value = "5s", value_parser = db_timeout)]
    pub db_timeout: Duration,
    /// On PostgreSQL: how long a replica's lease on its in-memory token checks lasts. A revoking
    /// request waits for every replica holding a live lease to apply it; a replica cut off from
    /// the database stops answering from memory before its lease runs out, so a dead replica
    /// delays revocations by at most this long.
    #[arg(long, env = "TESSERA_REPLICA_LEASE", default_value = "5s", value_parser = replica_lease)]
    pub replica_lease: Duration,
    /// JWK Set key file. When not given, keys/jwks.json is used and created if missing (dev
    /// setup); a path given explicitly must already exist.
    #[arg(long, env = "TESSERA_KEYS")]
    pub keys: Option<PathBuf>,
    /// Token issuer (`iss`).
    #[arg(long, env = "TESSERA_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// Token audience (`aud`).
    #[arg(long, env = "TESSERA_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Access-token lifetime in seconds; also the longest lifetime accepted.
    #[arg(long, env = "TESSERA_TOKEN_TTL", default_value_t = DEFAULT_TOKEN_TTL, value_parser = clap::value_parser!(i64).range(60..=MAX_TOKEN_TTL))]
    pub token_ttl: i64,
    /// Seconds without a refresh after which a session ends (default 14 days).
    #[arg(long, env = "TESSERA_SESSION_IDLE", default_value_t = SessionPolicy::default().idle_timeout, value_parser = clap::value_parser!(i64).range(60..=31_536_000))]
    pub session_idle: i64,
    /// Seconds after login at which a session ends, refreshed or not (default 30 days).
    #[arg(long, env = "TESSERA_SESSION_MAX_AGE", default_value_t = SessionPolicy::default().max_age, value_parser = clap::value_parser!(i64).range(60..=31_536_000))]
    pub session_max_age: i64,
    /// Seconds during which the refresh token superseded last still gets the session's current
    /// one (two tabs refreshing at once); after that, presenting it ends the session.
    #[arg(long, env = "TESSERA_REFRESH_REUSE_GRACE", default_value_t = SessionPolicy::default().reuse_grace, value_parser = clap::value_parser!(i64).range(0..=300))]
    pub refresh_reuse_grace: i64,
    /// Clock skew tolerated on exp/nbf/iat, in seconds.
    #[arg(long, env = "TESSERA_LEEWAY", default_value_t = DEFAULT_LEEWAY, value_parser = clap::value_parser!(i64).range(0..=300))]
    pub leeway: i64,
    /// argon2id memory in KiB (OWASP minimum 19456).
    #[arg(long, env = "TESSERA_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// argon2id iterations (OWASP minimum 2 at 19 MiB).
    #[arg(long, env = "TESSERA_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "TESSERA_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Minimum password length in code points (NIST: 15 single-factor; never below 8).
    #[arg(long, env = "TESSERA_PASSWORD_MIN_CHARS", default_value_t = 15, value_parser = clap::value_parser!(u16).range(ABSOLUTE_MIN_CHARS as i64..=64))]
    pub password_min_chars: u16,
    /// Maximum password length in code points.
    #[arg(long, env = "TESSERA_PASSWORD_MAX_CHARS", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(64..=4096))]
    pub password_max_chars: u16,
    /// Consecutive failed logins before the account softlock starts delaying attempts.
    #[arg(long, env = "TESSERA_LOCKOUT_FREE_ATTEMPTS", default_value_t = 5)]
    pub lockout_free_attempts: u32,
    /// First softlock delay in seconds; doubles per further failure.
    #[arg(long, env = "TESSERA_LOCKOUT_BASE_DELAY", default_value_t = 2)]
    pub lockout_base_delay: u64,
    /// Longest softlock delay in seconds.
    #[arg(long, env = "TESSERA_LOCKOUT_MAX_DELAY", default_value_t = 900)]
    pub lockout_max_delay: u64,
    /// Concurrent argon2 computations (default: number of CPUs).
    #[arg(long, env = "TESSERA_HASH_PERMITS")]
    pub hash_permits: Option<usize>,
    /// Requests allowed to wait for an argon2 slot before 503.
    #[arg(long, env = "TESSERA_HASH_QUEUE", default_value_t = DEFAULT_HASH_QUEUE)]
    pub hash_queue: usize,
    /// Nice value of the argon2 threads (0–19): token checks preempt hashing (0 disables).
    #[arg(long, env = "TESSERA_HASH_NICE", default_value_t = DEFAULT_HASH_NICE,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub hash_nice: i32,
    /// Login attempts per client IP in a burst.
    #[arg(long, env = "TESSERA_LOGIN_BURST", default_value_t = 20)]
    pub login_burst: u32,
    /// Login attempts per client IP per second, sustained (0 disables).
    #[arg(long, env = "TESSERA_LOGIN_RATE", default_value_t = 2.0)]
    pub login_rate: f64,
    /// Registrations per client IP in a burst.
    #[arg(long, env = "TESSERA_REGISTER_BURST", default_value_t = 10)]
    pub register_burst: u32,
    /// Registrations per client IP per second, sustained (0 disables).
    #[arg(long, env = "TESSERA_REGISTER_RATE", default_value_t = 0.2)]
    pub register_rate: f64,
    /// Refreshes per client IP in a burst.
    #[arg(long, env = "TESSERA_REFRESH_BURST", default_value_t = DEFAULT_REFRESH_LIMIT.0)]
    pub refresh_burst: u32,
    /// Refreshes per client IP per second, sustained (0 disables).
    #[arg(long, env = "TESSERA_REFRESH_RATE", default_value_t = DEFAULT_REFRESH_LIMIT.1)]
    pub refresh_rate: f64,
    /// Largest request body in bytes.
    #[arg(long, env = "TESSERA_BODY_LIMIT", default_value_t = 16 * 1024)]
    pub body_limit: usize,
    /// Simultaneous connections; at the cap, idle keep-alive connections are closed first.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Simultaneous connections from one client address (IPv6: per /64).
    #[arg(
        long,
        env = "TESSERA_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 128
    )]
    pub max_connections_per_client: usize,
    /// A reverse proxy whose `X-Forwarded-For` names the client (CIDR or one address;
    /// repeatable; comma-separated in the variable). Without one, forwarding headers are
    /// ignored and the TCP peer is the client.
    #[arg(long = "trusted-proxy", env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::http::client_address::parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a connection may go without a request in service — to send a request head, or
    /// idle between requests — before it is closed (slowloris guard).
    #[arg(long, env = "TESSERA_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds a whole request may take, body included.
    #[arg(long, env = "TESSERA_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "TESSERA_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Seconds between sweeps of expired denylist and ledger rows.
    #[arg(long, env = "TESSERA_PRUNE_INTERVAL", default_value_t = DEFAULT_PRUNE_INTERVAL_SECS)]
    pub prune_interval: u64,
    /// Log format.
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A listen address: an IP and port, or a host name and port resolved once at start (IPv4
/// preferred, as `localhost` users expect `127.0.0.1` to answer).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let hint = "give HOST:PORT or IP:PORT, e.g. 127.0.0.1:8080 or localhost:8080";
    let resolved: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{e}; {hint}"))?
        .collect();
    resolved
        .iter()
        .find(|address| address.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{text} resolves to no address; {hint}"))
}

/// A `--db-timeout`: long enough for a busy database to answer, short enough that a stuck one
/// is noticed well within a request's timeout.
fn db_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
        Ok(timeout)
    } else {
        Err("between 100ms and 60s".into())
    }
}

/// A `--replica-lease`: long enough to renew four times over a slow network, short enough that a
/// dead replica does not hold revocations up for long.
fn replica_lease(text: &str) -> Result<Duration, String> {
    let lease = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if (Duration::from_millis(500)..=Duration::from_secs(60)).contains(&lease) {
        Ok(lease)
    } else {
        Err("between 500ms and 60s".into())
    }
}

impl ServeArgs {
    pub fn to_config(&self) -> Config {
        let keys_path = self
            .keys
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYS_PATH));
        Config {
            db: self.db.clone(),
            db_timeout: self.db_timeout,
            replica_lease: self.replica_lease,
            keys_path,
            create_missing_keys: self.keys.is_none(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway: self.leeway,
            hash: HashParams {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            auth: AuthSettings {
                token_ttl: self.token_ttl,
                password_policy: PasswordPolicy {
                    min_chars: usize::from(self.password_min_chars),
                    max_chars: usize::from(self.password_max_chars),
                },
                lockout: LockoutPolicy {
                    free_attempts: self.lockout_free_attempts,
                    base_delay: self.lockout_base_delay,
                    max_delay: self.lockout_max_delay,
                },
                sessions: SessionPolicy {
                    idle_timeout: self.session_idle,
                    max_age: self.session_max_age,
                    reuse_grace: self.refresh_reuse_grace,
                },
            },
            http: HttpSettings {
                body_limit: self.body_limit,
                max_connections: self.max_connections,
                max_connections_per_client: self.max_connections_per_client,
                header_read_timeout: Duration::from_secs(self.header_read_timeout.max(1)),
                request_timeout: Duration::from_secs(self.request_timeout.max(1)),
                body_timeout: Duration::from_secs(self.request_timeout.clamp(1, 10)),
                shutdown_grace: Duration::from_secs(self.shutdown_grace),
                trusted_proxies: TrustedProxies::new(self.trusted_proxies.iter().copied()),
                ..HttpSettings::default()
            },
            hash_permits: self
                .hash_permits
                .unwrap_or_else(crate::config::default_hash_permits),
            hash_queue: self.hash_queue,
            hash_nice: self.hash_nice,
            login_limit: (self.login_burst, self.login_rate),
            register_limit: (self.register_burst, self.register_rate),
            refresh_limit: (self.refresh_burst, self.refresh_rate),
            prune_interval: Duration::from_secs(self.prune_interval.max(1)),
            clock: crate::support::clock::system(),
            access_log: crate::http::access_log::AccessLog::off(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_standards() {
        let cli = Cli::try_parse_from(["tessera", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let config = args.to_config();
        assert_eq!(config.auth.token_ttl, 900);
        assert_eq!(config.auth.sessions, SessionPolicy::default());
        assert_eq!(config.refresh_limit, DEFAULT_REFRESH_LIMIT);
        assert_eq!(config.auth.password_policy, PasswordPolicy::default());
        assert_eq!(config.hash, HashParams::default());
        assert!(config.create_missing_keys);
        assert_eq!(config.keys_path, PathBuf::from(DEFAULT_KEYS_PATH));
        assert_eq!(config.hash_nice, 19);
    }

    #[test]
    fn hash_nice_is_a_nice_value_that_only_lowers_priority() {
        for bad in ["-1", "20"] {
            assert!(Cli::try_parse_from(["tessera", "serve", "--hash-nice", bad]).is_err());
        }
        for good in ["0", "19"] {
            assert!(Cli::try_parse_from(["tessera", "serve", "--hash-nice", good]).is_ok());
        }
    }

    #[test]
    fn password_minimum_cannot_go_below_eight() {
        assert!(Cli::try_parse_from(["tessera", "serve", "--password-min-chars", "7"]).is_err());
        assert!(Cli::try_parse_from(["tessera", "serve", "--password-min-chars", "8"]).is_ok());
    }

    #[test]
    fn listen_takes_host_names_and_says_what_it_wants() {
        let parse = |value: &str| {
            Cli::try_parse_from(["tessera", "serve", "--listen", value]).map(|cli| {
                match cli.command {
                    Command::Serve(args) => args.listen,
                    _ => panic!(),
                }
            })
        };
        assert_eq!(
            parse("localhost:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(parse("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        let refused = parse("localhost").unwrap_err().to_string();
        assert!(refused.contains("HOST:PORT"), "{refused}");
    }

    #[test]
    fn trusted_proxies_repeat_and_refuse_what_is_not_a_network() {
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Serve(args) => args.to_config().http.trusted_proxies,
                _ => panic!(),
            })
        };
        let none = parse(&["tessera", "serve"]).unwrap();
        assert!(none.is_empty());
        let two = parse(&[
            "tessera",
            "serve",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1,127.0.0.1",
        ])
        .unwrap();
        assert!(!two.is_empty());
        let shown: Vec<String> = two.networks().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "127.0.0.1/32"]);
        let refused = parse(&["tessera", "serve", "--trusted-proxy", "nginx"]).unwrap_err();
        assert!(refused.to_string().contains("CIDR"), "{refused}");
    }

    #[test]
    fn an_explicit_key_path_is_never_created() {
        let cli = Cli::try_parse_from(["tessera", "serve", "--keys", "/etc/k.json"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert!(!args.to_config().create_missing_keys);
    }
}
