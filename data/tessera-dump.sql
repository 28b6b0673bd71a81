-- Tessera database dump (schema version 1)
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
PRAGMA user_version=1;
CREATE TABLE issued_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
INSERT INTO "issued_tokens" VALUES('C-uPQPzPLu8gIYBEKP-WQg','qRCXVBGOvkmOmhkMN7puhg',0,1795610819,1795614419);
INSERT INTO "issued_tokens" VALUES('R_FCZb-B7Z1QyMOBeg_2Rg','XlUFcxTo4kG8mQPP_GUxFg',0,1795610819,1795614419);
INSERT INTO "issued_tokens" VALUES('zS1qbHb0WXktTuFM8LK7hg','qRCXVBGOvkmOmhkMN7puhg',0,1795610819,1795614419);
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('zS1qbHb0WXktTuFM8LK7hg','qRCXVBGOvkmOmhkMN7puhg',1795614419);
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
INSERT INTO "users" VALUES('XlUFcxTo4kG8mQPP_GUxFg','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$Gt0tZ11YoiNBxSORiF3Dbg$1T4c9ngrevaXF9YpM5MH/0khH5bA5g6+1BsbuYLKxVg',0,0,NULL,1795610819);
INSERT INTO "users" VALUES('qRCXVBGOvkmOmhkMN7puhg','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$mH/ZfxSa1rdU1V3C9xMxwQ$CktV2QE8HGcQP4TsCv6v6Y+Lzp0E3gAXSBkJZgWnB14',0,0,NULL,1795610819);
CREATE INDEX issued_tokens_by_expiry ON issued_tokens(expires_at);
CREATE INDEX issued_tokens_by_user ON issued_tokens(user_id);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);
CREATE VIEW active_sessions AS
        SELECT u.username, t.jti, t.issued_at, t.expires_at
        FROM issued_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.expires_at > unixepoch()
          AND t.generation = u.token_generation
          AND t.jti NOT IN (SELECT jti FROM revoked_tokens);
COMMIT;
