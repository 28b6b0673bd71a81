-- Tessera database dump (schema version 10)
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
PRAGMA user_version=10;
CREATE TABLE introspection_clients (
        name          TEXT    PRIMARY KEY,
        secret_digest TEXT    NOT NULL,  -- SHA-256 of the secret, base64url: never the secret
        created_at    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
CREATE TABLE key_fingerprints (
        kid         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL    -- HMAC of a fixed label under the key: not the key
    , signing_until INTEGER) STRICT, WITHOUT ROWID;
INSERT INTO "key_fingerprints" VALUES('U-LpH---hZtS','3TQeflov51HMEyjOPcRnCI928Oo18OQRmow6Zas9toE',1796416175);
CREATE TABLE recovery_codes (
        user_id TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        digest  TEXT    NOT NULL,        -- SHA-256 of the code, base64url: never the code
        used_at INTEGER,
        PRIMARY KEY (user_id, digest)
    ) STRICT, WITHOUT ROWID;
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','DScyNJB4yJNfzDY2G-ns9cMeWnKUha9NFkEyu20pK4w',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','FCFhb3ugAvLWkklkmhVxr9mTBJfzL-N4DXW-rMrAz_s',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','I5WINvyiHU3rV1vAUZmYvie9ZjEbQKoquU5vCzpvmq4',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','JBr6jZ16YHPixxRmrnJV41YafWJy8D_4lzxdanFcUSA',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','NZHRxePa2yFrmFz5P-fIX9APrWHs35U_LvrU5KgxH5c',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','RGsAwv5TBWR-m4iXu0MinkpuwlTcrq5iab7uRjr7_c0',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','XW5U92pGXHOyxUOzvQ3BrC4DiJbuBWCM4g0VwMU68KQ',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','_wROeFqDlz322kzW8jUuVmnn5en2kcYtvXIGTKvG7WY',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','cX2GX2qppZx86EkTmLFysjSdC6JXp0edlgmbjNq3k5k',NULL);
INSERT INTO "recovery_codes" VALUES('22LOiE2Hc-y5RDzKBFbzEg','edgFUAQwtpbZJwsL9QO8b_jfI1nflEPx3PMHmbk6-G4',NULL);
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    , kind TEXT NOT NULL DEFAULT 'token'
        CHECK (kind IN ('token', 'session')), reason TEXT) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('yu493Kan3G2C1IC5OkPTBg','PvEhiNzrQKlz8J9cxSMPyA',1796417015,'session','logout');
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
        end_reason      TEXT CHECK (end_reason IN ('logout', 'revoked', 'reuse')), client_address TEXT NOT NULL DEFAULT '', factors TEXT NOT NULL DEFAULT 'pwd',
        CHECK ((ended_at IS NULL) = (end_reason IS NULL))
    ) STRICT;
INSERT INTO "sessions" VALUES('4pIQsDYrSqoi5l_Llsz7cg','22LOiE2Hc-y5RDzKBFbzEg',0,1,1796416115,'',1796416115,1796416115,1799008115,NULL,NULL,'127.0.0.1','pwd');
INSERT INTO "sessions" VALUES('YsoX5J61jJzyEvxih3RX_g','PvEhiNzrQKlz8J9cxSMPyA',0,0,NULL,'',1796416115,1796416115,1799008115,NULL,NULL,'127.0.0.1','pwd');
INSERT INTO "sessions" VALUES('yu493Kan3G2C1IC5OkPTBg','PvEhiNzrQKlz8J9cxSMPyA',0,0,NULL,'',1796416115,1796416115,1799008115,1796416115,'logout','127.0.0.1','pwd');
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
INSERT INTO "token_changes" VALUES(1,'22LOiE2Hc-y5RDzKBFbzEg',NULL,NULL,1796416115,NULL);
INSERT INTO "token_changes" VALUES(2,'22LOiE2Hc-y5RDzKBFbzEg',NULL,NULL,1796416115,NULL);
INSERT INTO "token_changes" VALUES(3,'PvEhiNzrQKlz8J9cxSMPyA','yu493Kan3G2C1IC5OkPTBg',1796417015,1796416115,'logout');
CREATE TABLE totp_factors (
        user_id       TEXT    PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        sealed_secret TEXT    NOT NULL,  -- v1.KID.DATA (token/sealing.rs): never the secret
        active        INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),  -- 0: not confirmed
        last_step     INTEGER,           -- the last time step accepted: never accepted again
        created_at    INTEGER NOT NULL
    ) STRICT;
INSERT INTO "totp_factors" VALUES('22LOiE2Hc-y5RDzKBFbzEg','v1.U-LpH---hZtS.botfhagBdLPRn0mjF7EfGHDJ8lCwtk7TnBD9zxxt56PJ8RZbGsQ7T3lVB_Bvhxzn4jUXYdUDeUOOmyBu',1,59880537,1796416115);
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
INSERT INTO "users" VALUES('22LOiE2Hc-y5RDzKBFbzEg','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$P39/BEC2QUHzd5qet+Pdag$MMCqtFa0tPBv54LcLYy60SXQv0GUEvzbzQ6TBYMqp38',0,1,1796416115,1796416115);
INSERT INTO "users" VALUES('PvEhiNzrQKlz8J9cxSMPyA','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$yb8GZC1xJFkk7VAHDbs4XQ$xEtG6hO4x31peDNM4dpJyFMSNean87Udo8QyW7I1tpI',0,0,NULL,1796416115);
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
CREATE TRIGGER token_changes_on_totp_active AFTER UPDATE OF active ON totp_factors
        BEGIN INSERT INTO token_changes (user_id) VALUES (NEW.user_id); END;
CREATE TRIGGER token_changes_on_totp_delete AFTER DELETE ON totp_factors
        BEGIN INSERT INTO token_changes (user_id) VALUES (OLD.user_id); END;
CREATE TRIGGER token_changes_on_totp_insert AFTER INSERT ON totp_factors
        BEGIN INSERT INTO token_changes (user_id) VALUES (NEW.user_id); END;
COMMIT;
