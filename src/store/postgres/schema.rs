//! Versioned migrations for PostgreSQL, applied at start inside one transaction that holds a
//! transaction-level advisory lock, so replicas starting together migrate exactly once (the
//! others wait on the lock, then find nothing to do). A database from a newer build is refused.
//!
//! The tables mirror SQLite's (`store/sqlite/schema.rs`) as they stand after its migrations:
//! the same names, columns, constraints and cascades. There is no change log: every token check
//! reads the tables (see `postgres/mod.rs`), so nothing needs replaying.

use super::Client;
use crate::store::{Result, StoreError};

/// Any fixed number: the key of the advisory lock migrations hold (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x7465_7373_6572_6131; // "tessera1"

/// Each entry moves the schema one version forward. Never edit one that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: users, sessions and the denylist.
    r"
    CREATE TABLE users (
        id                             TEXT    PRIMARY KEY,
        username                       TEXT    NOT NULL,
        username_canonical             TEXT    NOT NULL UNIQUE,
        full_name                      TEXT    NOT NULL,
        mothers_favorite_search_engine TEXT    NOT NULL,
        password_hash                  TEXT    NOT NULL,
        token_generation               BIGINT  NOT NULL DEFAULT 0,
        failed_logins                  INTEGER NOT NULL DEFAULT 0,
        last_failed_login_at           BIGINT,
        created_at                     BIGINT  NOT NULL
    );
    CREATE TABLE revoked_tokens (
        jti        TEXT   PRIMARY KEY,
        user_id    TEXT   NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at BIGINT NOT NULL,
        kind       TEXT   NOT NULL DEFAULT 'token' CHECK (kind IN ('token', 'session'))
    );
    CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);
    CREATE INDEX revoked_tokens_by_user ON revoked_tokens(user_id);
    CREATE TABLE sessions (
        id              TEXT   PRIMARY KEY,
        user_id         TEXT   NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        generation      BIGINT NOT NULL,
        refresh_counter BIGINT NOT NULL DEFAULT 0,
        rotated_at      BIGINT,
        user_agent      TEXT   NOT NULL,
        created_at      BIGINT NOT NULL,
        last_used_at    BIGINT NOT NULL,
        expires_at      BIGINT NOT NULL,
        ended_at        BIGINT,
        end_reason      TEXT CHECK (end_reason IN ('logout', 'revoked', 'reuse')),
        CHECK ((ended_at IS NULL) = (end_reason IS NULL))
    );
    CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
    ",
    // 2: one fingerprint per key id, so every replica holds the same key material under each
    // kid (postgres/mod.rs, register_keys).
    r"
    CREATE TABLE key_fingerprints (
        kid         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL
    );
    ",
    // 3: rows that a guess at a name with no account locks and writes, so it pays the same
    // transaction as a real account's softlock reservation (postgres/mod.rs,
    // pad_unknown_attempt). Several rows, so concurrent guesses do not queue on one row lock
    // where guesses at real accounts, each on its own row, would not.
    r"
    CREATE TABLE softlock_padding (
        slot       INTEGER PRIMARY KEY CHECK (slot BETWEEN 0 AND 15),
        touched_at BIGINT  NOT NULL
    );
    INSERT INTO softlock_padding (slot, touched_at) SELECT n, 0 FROM generate_series(0, 15) n;
    ",
    // 4: until when some replica may sign with each key: renewed while a replica signs with
    // it, read by `tessera keys retire` (store/mod.rs, record_signing).
    r"
    ALTER TABLE key_fingerprints ADD COLUMN signing_until BIGINT;
    ",
    // 5: the client's address at login, for the session list; empty for older sessions.
    r"
    ALTER TABLE sessions ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
    ",
    // 6: the resource servers allowed to introspect tokens (store/mod.rs, Clients).
    r"
    CREATE TABLE introspection_clients (
        name          TEXT   PRIMARY KEY,
        secret_digest TEXT   NOT NULL,  -- SHA-256 of the secret, base64url: never the secret
        created_at    BIGINT NOT NULL
    );
    ",
    // 7: why each id is on the denylist (domain::session::Denial), so a rejected token's log
    // line names the real reason. NULL on older rows.
    r"
    ALTER TABLE revoked_tokens ADD COLUMN reason TEXT;
    ",
];

pub(super) async fn migrate(client: &mut Client) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = client.transaction().await.map_err(super::error)?;
    // `CREATE TABLE IF NOT EXISTS` would say "already exists, skipping" as a NOTICE on every
    // start and every admin command: only warnings and worse are worth a line.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(super::error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(super::error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tessera_schema (version BIGINT NOT NULL)")
        .await
        .map_err(super::error)?;
    let current: i64 = tx
        .query_opt("SELECT version FROM tessera_schema", &[])
        .await
        .map_err(super::error)?
        .map_or(Ok(0), |row| super::col(&row, 0))?;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in (1i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(super::error)?;
        tx.execute("DELETE FROM tessera_schema", &[])
            .await
            .map_err(super::error)?;
        tx.execute("INSERT INTO tessera_schema VALUES ($1)", &[&version])
            .await
            .map_err(super::error)?;
    }
    tx.commit().await.map_err(super::error)?;
    Ok(())
}
