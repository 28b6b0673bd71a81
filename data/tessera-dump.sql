-- Tessera database dump (schema version 3)
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
PRAGMA user_version=3;
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    , kind TEXT NOT NULL DEFAULT 'token'
        CHECK (kind IN ('token', 'session'))) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('JZz6UK_1Xycl_q9nQW9yBg','dHhaseRATxzKARJWO8s7WA',1795756669,'session');
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
INSERT INTO "sessions" VALUES('BTjwNoSgxoZdqDy_jFcwNQ','kSONX2cQZG8Cf7dlEZtayA',0,1,1795755769,'',1795755769,1795755769,1798347769,NULL,NULL);
INSERT INTO "sessions" VALUES('JZz6UK_1Xycl_q9nQW9yBg','dHhaseRATxzKARJWO8s7WA',0,0,NULL,'',1795755769,1795755769,1798347769,1795755769,'logout');
INSERT INTO "sessions" VALUES('WFwceyudWGReiDVMRf4ZsA','dHhaseRATxzKARJWO8s7WA',0,0,NULL,'',1795755769,1795755769,1798347769,NULL,NULL);
CREATE TABLE token_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    TEXT    NOT NULL,
        jti        TEXT,              -- set when a token was denylisted
        expires_at INTEGER,           -- that token's expiry
        changed_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
INSERT INTO "token_changes" VALUES(1,'dHhaseRATxzKARJWO8s7WA','JZz6UK_1Xycl_q9nQW9yBg',1795756669,1795755769);
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
INSERT INTO "users" VALUES('dHhaseRATxzKARJWO8s7WA','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$tWGwD8RYpV9BP36xfYwOpg$osXnUvHo83XcwSUfLaG8heTCyV6dIRluv9NsDkumYLk',0,0,NULL,1795755769);
INSERT INTO "users" VALUES('kSONX2cQZG8Cf7dlEZtayA','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$Pnttn7fsxomrBgL3t1tXgQ$v8PBglOdGfmQNrsx8mgoOpXlckgX6uDuGkcr19S2YrM',0,0,NULL,1795755769);
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
