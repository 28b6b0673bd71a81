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
INSERT INTO "issued_tokens" VALUES('OjuksHr3oQJyp9QQcC7xmg','WPYaUULqJZvnXDHymcE5Eg',0,1795610083,1795613683);
INSERT INTO "issued_tokens" VALUES('XsMX2zth6KDFelMH9bJcJA','Ibe-mlq6Vrc_p1FJYaRCnA',0,1795610083,1795613683);
INSERT INTO "issued_tokens" VALUES('k3McfWioN-3_JhPdK6n-4Q','WPYaUULqJZvnXDHymcE5Eg',0,1795610083,1795613683);
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('OjuksHr3oQJyp9QQcC7xmg','WPYaUULqJZvnXDHymcE5Eg',1795613683);
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
INSERT INTO "users" VALUES('Ibe-mlq6Vrc_p1FJYaRCnA','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$1JS2X+7fKHpQfr+ncQl3cw$NqiTsG6rJo58WQS+3JUpbfAu05yFPHpazdD8gaavzG0',0,0,NULL,1795610083);
INSERT INTO "users" VALUES('WPYaUULqJZvnXDHymcE5Eg','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$sCX41ifuHmm64sD+hRwUlw$ugFw//5h+SVs+7QcfN+4hqw48OWVMGI8UFRbgtO9xsk',0,0,NULL,1795610083);
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
