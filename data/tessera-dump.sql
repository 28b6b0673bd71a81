-- Tessera database dump (schema version 9)
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
PRAGMA user_version=9;
CREATE TABLE introspection_clients (
        name          TEXT    PRIMARY KEY,
        secret_digest TEXT    NOT NULL,  -- SHA-256 of the secret, base64url: never the secret
        created_at    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
CREATE TABLE key_fingerprints (
        kid         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL    -- HMAC of a fixed label under the key: not the key
    , signing_until INTEGER) STRICT, WITHOUT ROWID;
INSERT INTO "key_fingerprints" VALUES('qLll7rzlF-XH','oHQUZhmVzMe36IkLDAEe1FhWptg_0JPvZTM_UYlh8Ms',1796406055);
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    , kind TEXT NOT NULL DEFAULT 'token'
        CHECK (kind IN ('token', 'session')), reason TEXT) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('hljMtJdMG-vhJzI8R92WFg','1jLlIAWCYQ5dX5WsltYIow',1796406895,'session','logout');
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
        end_reason      TEXT CHECK (end_reason IN ('logout', 'revoked', 'reuse')), client_address TEXT NOT NULL DEFAULT '',
        CHECK ((ended_at IS NULL) = (end_reason IS NULL))
    ) STRICT;
INSERT INTO "sessions" VALUES('GvQLOrxdpS2C7_e8IFCsAQ','X_SZ7jy4qxnYEG5hAL4Tmw',0,1,1796405995,'',1796405995,1796405995,1798997995,NULL,NULL,'127.0.0.1');
INSERT INTO "sessions" VALUES('K0QT48w7G4pdtG70p86gBQ','1jLlIAWCYQ5dX5WsltYIow',0,0,NULL,'',1796405995,1796405995,1798997995,NULL,NULL,'127.0.0.1');
INSERT INTO "sessions" VALUES('hljMtJdMG-vhJzI8R92WFg','1jLlIAWCYQ5dX5WsltYIow',0,0,NULL,'',1796405995,1796405995,1798997995,1796405995,'logout','127.0.0.1');
CREATE TABLE softlock_padding (
        slot       INTEGER PRIMARY KEY CHECK (slot BETWEEN 0 AND 15),
        touched_at INTEGER NOT NULL
    ) STRICT;
INSERT INTO "softlock_padding" VALUES(0,0);
INSERT INTO "softlock_padding" VALUES(1,0);
INSERT INTO "softlock_padding" VALUES(2,0);
INSERT INTO "softlock_padding" VALUES(3,0);
INSERT INTO "softlock_padding" VALUES(4,0);
INSERT INTO "softlock_padding" VALUES(5,0);
INSERT INTO "softlock_padding" VALUES(6,0);
INSERT INTO "softlock_padding" VALUES(7,0);
INSERT INTO "softlock_padding" VALUES(8,0);
INSERT INTO "softlock_padding" VALUES(9,0);
INSERT INTO "softlock_padding" VALUES(10,0);
INSERT INTO "softlock_padding" VALUES(11,0);
INSERT INTO "softlock_padding" VALUES(12,0);
INSERT INTO "softlock_padding" VALUES(13,0);
INSERT INTO "softlock_padding" VALUES(14,0);
INSERT INTO "softlock_padding" VALUES(15,0);
CREATE TABLE token_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    TEXT    NOT NULL,
        jti        TEXT,              -- set when a token was denylisted
        expires_at INTEGER,           -- that token's expiry
        changed_at INTEGER NOT NULL DEFAULT (unixepoch())
    , reason TEXT) STRICT;
INSERT INTO "token_changes" VALUES(1,'1jLlIAWCYQ5dX5WsltYIow','hljMtJdMG-vhJzI8R92WFg',1796406895,1796405995,'logout');
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
INSERT INTO "users" VALUES('1jLlIAWCYQ5dX5WsltYIow','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$bnYjnB+IiLsfhNws4ANXjg$ANs98AjbHRiL8VkrSGhYIB8jKfojB+odMaX7TR6NQTE',0,0,NULL,1796405995);
INSERT INTO "users" VALUES('X_SZ7jy4qxnYEG5hAL4Tmw','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$ddIf0huBzTi0zDyZvLDDJQ$cBRjTd35J3pM6Qu/FMZWkZeGCamip0asvYGGO1Djr9o',0,0,NULL,1796405995);
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
        BEGIN INSERT INTO token_changes (user_id, jti, expires_at, reason)
              VALUES (NEW.user_id, NEW.jti, NEW.expires_at, NEW.reason); END;
COMMIT;
