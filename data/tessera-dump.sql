-- Tessera database dump (schema version 4)
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
PRAGMA user_version=4;
CREATE TABLE key_fingerprints (
        kid         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL    -- HMAC of a fixed label under the key: not the key
    ) STRICT, WITHOUT ROWID;
INSERT INTO "key_fingerprints" VALUES('baoBWS44ss8D','Q3ReE1CEPBoYy2JbQ8vQovTnXCWG6Rk2pjsRZjDGSbs');
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    , kind TEXT NOT NULL DEFAULT 'token'
        CHECK (kind IN ('token', 'session'))) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('Oo-EePT3XSqVHw1B7HgRkQ','RXY5uV4YxQdEHCof43y3Fw',1795759461,'session');
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
INSERT INTO "sessions" VALUES('Oo-EePT3XSqVHw1B7HgRkQ','RXY5uV4YxQdEHCof43y3Fw',0,0,NULL,'',1795758561,1795758561,1798350561,1795758561,'logout');
INSERT INTO "sessions" VALUES('Xh7BQQ770pTBPFvtVJaBfg','vUVg8Fw-EUzQJNc1cv7jZQ',0,1,1795758561,'',1795758561,1795758561,1798350561,NULL,NULL);
INSERT INTO "sessions" VALUES('gM_9BLy8S6m7UYR0nQ9sFA','RXY5uV4YxQdEHCof43y3Fw',0,0,NULL,'',1795758561,1795758561,1798350561,NULL,NULL);
CREATE TABLE token_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    TEXT    NOT NULL,
        jti        TEXT,              -- set when a token was denylisted
        expires_at INTEGER,           -- that token's expiry
        changed_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
INSERT INTO "token_changes" VALUES(1,'RXY5uV4YxQdEHCof43y3Fw','Oo-EePT3XSqVHw1B7HgRkQ',1795759461,1795758561);
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
INSERT INTO "users" VALUES('RXY5uV4YxQdEHCof43y3Fw','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$wDjCKwAZS1fiWc9iyjygjA$jrWe2fcJANy9IYVDSn/kVRSCeChVobdgbVmE8V+bsVA',0,0,NULL,1795758560);
INSERT INTO "users" VALUES('vUVg8Fw-EUzQJNc1cv7jZQ','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$wDJtG8YkS7whpbxaP97ZJQ$qiev0pWaoQaTT/euiiQ/8eX6GrZRAHhPuRIr1vZJqMA',0,0,NULL,1795758561);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
CREATE VIEW active_sessions AS
        SELECT u.username, s.id AS session_id, s.created_at, s.last_used_at, s.expires_at,
               s.user_agent
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.ended_at IS NULL
          AND s.generation = u.token_generation
          AND s.expires_at > unixepoch();
CREATE TRIGGER token_changes_on_delete AFTER DELETE ON users
        BEGIN INSERT INTO token_changes (user_id) VALUES (OLD.id); END;
CREATE TRIGGER token_changes_on_generation AFTER UPDATE OF token_generation ON users
        BEGIN INSERT INTO token_changes (user_id) VALUES (NEW.id); END;
CREATE TRIGGER token_changes_on_profile
        AFTER UPDATE OF id, username, full_name, mothers_favorite_search_engine ON users
        BEGIN INSERT INTO token_changes (user_id) VALUES (OLD.id); END;
CREATE TRIGGER token_changes_on_revoke AFTER INSERT ON revoked_tokens
        BEGIN INSERT INTO token_changes (user_id, jti, expires_at)
              VALUES (NEW.user_id, NEW.jti, NEW.expires_at); END;
COMMIT;
