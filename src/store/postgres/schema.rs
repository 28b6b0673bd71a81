//! Versioned migrations for PostgreSQL, applied at start inside one transaction that holds a
//! transaction-level advisory lock, so replicas starting together migrate exactly once (the
//! others wait on the lock, then find nothing to do). A database from a newer build is refused.
//!
//! The tables mirror SQLite's (`store/sqlite/schema.rs`) as they stand after its migrations:
//! the same names, columns, constraints and cascades. The change log differs in how positions
//! are given (a counter row, so they follow commit order: `postgres/replica.rs`) and adds the
//! replicas' leases.

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
    // 8: the change feed that keeps replicas' in-memory revocation views exact, and the leases
    // under which writers wait for replicas' acknowledgements (postgres/replica.rs).
    //
    // Positions come from one counter row, taken by a deferred trigger — at commit, as the
    // transaction's last lock — and held until the commit completes: a revoking transaction
    // gets the next position only once every earlier one has committed and become visible, so
    // positions follow commit order and a reader that sees position p sees every position below.
    // A rollback undoes its increment, so positions have no gaps. Logins and refreshes revoke
    // nothing and never take the row; taking it last means it adds no lock-order deadlocks.
    r"
    CREATE TABLE change_position (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        position  BIGINT  NOT NULL
    );
    INSERT INTO change_position VALUES (TRUE, 0);

    CREATE TABLE token_changes (
        seq        BIGINT PRIMARY KEY,  -- the change's position: SQLite's name for it
        user_id    TEXT   NOT NULL,
        jti        TEXT,               -- set when a token or session id was denylisted
        expires_at BIGINT,             -- until when
        reason     TEXT,
        changed_at BIGINT NOT NULL DEFAULT extract(epoch FROM now())::BIGINT
    );

    CREATE FUNCTION tessera_record_change(changed_user TEXT, denied TEXT, until BIGINT,
                                          why TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
    DECLARE at BIGINT;
    BEGIN
        UPDATE change_position SET position = position + 1 RETURNING position INTO at;
        INSERT INTO token_changes (seq, user_id, jti, expires_at, reason)
            VALUES (at, changed_user, denied, until, why);
        PERFORM pg_notify('tessera_changes', at::TEXT);
    END $$;

    CREATE FUNCTION tessera_user_changed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM tessera_record_change(OLD.id, NULL, NULL, NULL);
        RETURN NULL;
    END $$;

    CREATE FUNCTION tessera_id_denied() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM tessera_record_change(NEW.user_id, NEW.jti, NEW.expires_at, NEW.reason);
        RETURN NULL;
    END $$;

    CREATE CONSTRAINT TRIGGER token_changes_on_user AFTER UPDATE ON users
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN (OLD.token_generation IS DISTINCT FROM NEW.token_generation
              OR OLD.id IS DISTINCT FROM NEW.id
              OR OLD.username IS DISTINCT FROM NEW.username
              OR OLD.username_canonical IS DISTINCT FROM NEW.username_canonical
              OR OLD.full_name IS DISTINCT FROM NEW.full_name
              OR OLD.mothers_favorite_search_engine
                 IS DISTINCT FROM NEW.mothers_favorite_search_engine
              OR OLD.created_at IS DISTINCT FROM NEW.created_at)
        EXECUTE FUNCTION tessera_user_changed();
    CREATE CONSTRAINT TRIGGER token_changes_on_delete AFTER DELETE ON users
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tessera_user_changed();
    CREATE CONSTRAINT TRIGGER token_changes_on_revoke AFTER INSERT ON revoked_tokens
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tessera_id_denied();

    -- One row per serving replica, dated by the database's clock. A revoking writer answers
    -- only once every row whose lease has not run out has acknowledged its change.
    CREATE TABLE replica_leases (
        replica    TEXT        PRIMARY KEY,  -- random per server process
        protocol   INTEGER     NOT NULL,     -- the acknowledgement protocol it speaks
        applied    BIGINT      NOT NULL,     -- change position applied and acknowledged
        renewed_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    ",
    // 9: the second factor, as SQLite's migration 10 (store/sqlite/schema.rs): the sealed
    // secret, recovery-code digests, the factors each session was started with; a factor's
    // state is part of the profile replicas hold, so its changes go through the change feed.
    r"
    CREATE TABLE totp_factors (
        user_id       TEXT    PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        sealed_secret TEXT    NOT NULL,
        active        INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
        last_step     BIGINT,
        created_at    BIGINT  NOT NULL
    );
    CREATE TABLE recovery_codes (
        user_id TEXT   NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        digest  TEXT   NOT NULL,
        used_at BIGINT,
        PRIMARY KEY (user_id, digest)
    );
    ALTER TABLE sessions ADD COLUMN factors TEXT NOT NULL DEFAULT 'pwd';

    CREATE FUNCTION tessera_factor_changed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM tessera_record_change(OLD.user_id, NULL, NULL, NULL);
        ELSE
            PERFORM tessera_record_change(NEW.user_id, NULL, NULL, NULL);
        END IF;
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER token_changes_on_totp_insert AFTER INSERT ON totp_factors
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tessera_factor_changed();
    CREATE CONSTRAINT TRIGGER token_changes_on_totp_active AFTER UPDATE ON totp_factors
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN (OLD.active IS DISTINCT FROM NEW.active)
        EXECUTE FUNCTION tessera_factor_changed();
    CREATE CONSTRAINT TRIGGER token_changes_on_totp_delete AFTER DELETE ON totp_factors
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tessera_factor_changed();
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
