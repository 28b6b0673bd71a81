//! Versioned migrations, applied at startup inside one transaction each. `PRAGMA user_version`
//! records how far a database has come; a database from a newer build is refused, not guessed at.

use super::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};

/// Each entry moves the schema one version forward. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: users, the denylist, and the ledger of issued tokens.
    r"
    CREATE TABLE users (
        id                             TEXT    PRIMARY KEY,     -- opaque random id; the token's `sub`
        username                       TEXT    NOT NULL,        -- as typed, for display
        username_canonical             TEXT    NOT NULL UNIQUE, -- RFC 8265 UsernameCaseMapped: the identity
        full_name                      TEXT    NOT NULL,
        mothers_favorite_search_engine TEXT    NOT NULL,        -- a profile detail, never an authenticator
        password_hash                  TEXT    NOT NULL,        -- argon2id PHC string
        token_generation               INTEGER NOT NULL DEFAULT 0,  -- bump = revoke every earlier token
        failed_logins                  INTEGER NOT NULL DEFAULT 0,  -- consecutive; drives the softlock
        last_failed_login_at           INTEGER,
        created_at                     INTEGER NOT NULL
    ) STRICT;

    -- Logged-out tokens, until they would have expired anyway. Bounded by pruning.
    CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);

    -- Ledger of tokens issued at login: who is logged in, for audit and the dump. Verification
    -- never reads it; it costs one insert per login and is pruned with the denylist.
    CREATE TABLE issued_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX issued_tokens_by_user ON issued_tokens(user_id);
    CREATE INDEX issued_tokens_by_expiry ON issued_tokens(expires_at);

    -- Sessions that are live right now: issued, unexpired, not revoked, current generation.
    CREATE VIEW active_sessions AS
        SELECT u.username, t.jti, t.issued_at, t.expires_at
        FROM issued_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.expires_at > unixepoch()
          AND t.generation = u.token_generation
          AND t.jti NOT IN (SELECT jti FROM revoked_tokens);
    ",
    // 2: the change log that keeps the in-memory revocation view exact (store/revocation.rs).
    r"
    CREATE TABLE token_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    TEXT    NOT NULL,
        jti        TEXT,              -- set when a token was denylisted
        expires_at INTEGER,           -- that token's expiry
        changed_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
    CREATE TRIGGER token_changes_on_generation AFTER UPDATE OF token_generation ON users
        BEGIN INSERT INTO token_changes (user_id) VALUES (NEW.id); END;
    CREATE TRIGGER token_changes_on_profile
        AFTER UPDATE OF id, username, full_name, mothers_favorite_search_engine ON users
        BEGIN INSERT INTO token_changes (user_id) VALUES (OLD.id); END;
    CREATE TRIGGER token_changes_on_delete AFTER DELETE ON users
        BEGIN INSERT INTO token_changes (user_id) VALUES (OLD.id); END;
    CREATE TRIGGER token_changes_on_revoke AFTER INSERT ON revoked_tokens
        BEGIN INSERT INTO token_changes (user_id, jti, expires_at)
              VALUES (NEW.user_id, NEW.jti, NEW.expires_at); END;
    ",
    // 3: sessions with rotating refresh tokens (store/sqlite/sessions.rs). Ending a session puts
    // its id on the denylist beside token ids, so the change log above already carries it to
    // every view: no new kind of change. Sessions now say who is logged in, so the ledger of
    // issued tokens goes (it only ever served audit and the dump).
    r"
    CREATE TABLE sessions (
        id              TEXT    PRIMARY KEY,     -- 128 random bits; the access tokens' `sid`
        user_id         TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        generation      INTEGER NOT NULL,        -- the user's token generation it lives at
        refresh_counter INTEGER NOT NULL DEFAULT 0, -- which refresh token is current; tokens are
                                                    -- derived from keys/, never stored
        rotated_at      INTEGER,                 -- when the current one superseded the one before
        user_agent      TEXT    NOT NULL,
        created_at      INTEGER NOT NULL,
        last_used_at    INTEGER NOT NULL,        -- login or last refresh: the idle clock
        expires_at      INTEGER NOT NULL,        -- absolute end; no access token outlives it
        ended_at        INTEGER,
        end_reason      TEXT CHECK (end_reason IN ('logout', 'revoked', 'reuse')),
        CHECK ((ended_at IS NULL) = (end_reason IS NULL))
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions(user_id, created_at);

    -- The denylist holds token ids (`jti`) and ids of ended sessions (`sid`): a token is refused
    -- if either of its ids is listed, until the row's expires_at.
    ALTER TABLE revoked_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'token'
        CHECK (kind IN ('token', 'session'));

    DROP VIEW active_sessions;
    DROP TABLE issued_tokens;
    -- Who is logged in now: sessions not ended, not revoked by a generation bump, not past
    -- their absolute end (the idle timeout is a server setting, so it is not applied here).
    CREATE VIEW active_sessions AS
        SELECT u.username, s.id AS session_id, s.created_at, s.last_used_at, s.expires_at,
               s.user_agent
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.ended_at IS NULL
          AND s.generation = u.token_generation
          AND s.expires_at > unixepoch();
    ",
    // 4: one fingerprint per key id, so every server on this database holds the same key
    // material under each kid (store/sqlite/mod.rs, register_keys).
    r"
    CREATE TABLE key_fingerprints (
        kid         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL    -- HMAC of a fixed label under the key: not the key
    ) STRICT, WITHOUT ROWID;
    ",
    // 5: rows that a guess at a name with no account writes to, so it pays the same write
    // transaction (and fsync) as a real account's softlock reservation
    // (store/sqlite/users.rs, pad_unknown_attempt).
    r"
    CREATE TABLE softlock_padding (
        slot       INTEGER PRIMARY KEY CHECK (slot BETWEEN 0 AND 15),
        touched_at INTEGER NOT NULL
    ) STRICT;
    WITH RECURSIVE slots(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM slots WHERE n < 15)
    INSERT INTO softlock_padding (slot, touched_at) SELECT n, 0 FROM slots;
    ",
    // 6: until when some server may sign with each key: renewed while a server signs with it,
    // read by `tessera keys retire` (store/mod.rs, record_signing).
    r"
    ALTER TABLE key_fingerprints ADD COLUMN signing_until INTEGER;
    ",
    // 7: the client's address at login, for the session list; empty for older sessions.
    r"
    ALTER TABLE sessions ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
    ",
    // 8: the resource servers allowed to introspect tokens (store/mod.rs, Clients).
    r"
    CREATE TABLE introspection_clients (
        name          TEXT    PRIMARY KEY,
        secret_digest TEXT    NOT NULL,  -- SHA-256 of the secret, base64url: never the secret
        created_at    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    ",
    // 9: why each id is on the denylist (domain::session::Denial), carried by the change log to
    // every view, so a rejected token's log line names the real reason. NULL on older rows.
    r"
    ALTER TABLE revoked_tokens ADD COLUMN reason TEXT;
    ALTER TABLE token_changes ADD COLUMN reason TEXT;
    DROP TRIGGER token_changes_on_revoke;
    CREATE TRIGGER token_changes_on_revoke AFTER INSERT ON revoked_tokens
        BEGIN INSERT INTO token_changes (user_id, jti, expires_at, reason)
              VALUES (NEW.user_id, NEW.jti, NEW.expires_at, NEW.reason); END;
    ",
    // 10: the second factor (domain/totp.rs). The secret is sealed under a key derived from
    // keys/ (token/sealing.rs), so the database alone holds none; recovery codes only as
    // digests. The factor's state is part of the profile the revocation view holds (`/me`
    // shows it), so changing it goes through the change log like a profile change. Sessions
    // record the factors they were started with: their tokens' `amr`.
    r"
    CREATE TABLE totp_factors (
        user_id       TEXT    PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        sealed_secret TEXT    NOT NULL,  -- v1.KID.DATA (token/sealing.rs): never the secret
        active        INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),  -- 0: not confirmed
        last_step     INTEGER,           -- the last time step accepted: never accepted again
        created_at    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE recovery_codes (
        user_id TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        digest  TEXT    NOT NULL,        -- SHA-256 of the code, base64url: never the code
        used_at INTEGER,
        PRIMARY KEY (user_id, digest)
    ) STRICT, WITHOUT ROWID;
    ALTER TABLE sessions ADD COLUMN factors TEXT NOT NULL DEFAULT 'pwd';  -- RFC 8176 amr values
    CREATE TRIGGER token_changes_on_totp_insert AFTER INSERT ON totp_factors
        BEGIN INSERT INTO token_changes (user_id) VALUES (NEW.user_id); END;
    CREATE TRIGGER token_changes_on_totp_active AFTER UPDATE OF active ON totp_factors
        BEGIN INSERT INTO token_changes (user_id) VALUES (NEW.user_id); END;
    CREATE TRIGGER token_changes_on_totp_delete AFTER DELETE ON totp_factors
        BEGIN INSERT INTO token_changes (user_id) VALUES (OLD.user_id); END;
    ",
];

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}
