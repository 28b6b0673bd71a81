-- Tessera database dump (schema version 2)
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
PRAGMA user_version=2;
CREATE TABLE issued_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
INSERT INTO "issued_tokens" VALUES('BouMxIEP5iZfgoQ1otQeBA','h1xXMpkVRY6pR-YbHvGNoQ',0,1795612073,1795615673);
INSERT INTO "issued_tokens" VALUES('WXTZngnapuo8sHpRyL2N6g','nxhlhnL9tvcGF0oLqv_HSw',0,1795612073,1795615673);
INSERT INTO "issued_tokens" VALUES('zhqm61N8cJ-0V_5E98aOlg','h1xXMpkVRY6pR-YbHvGNoQ',0,1795612073,1795615673);
CREATE TABLE revoked_tokens (
        jti        TEXT    PRIMARY KEY,
        user_id    TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
INSERT INTO "revoked_tokens" VALUES('zhqm61N8cJ-0V_5E98aOlg','h1xXMpkVRY6pR-YbHvGNoQ',1795615673);
CREATE TABLE token_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id    TEXT    NOT NULL,
        jti        TEXT,              -- set when a token was denylisted
        expires_at INTEGER,           -- that token's expiry
        changed_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
INSERT INTO "token_changes" VALUES(1,'h1xXMpkVRY6pR-YbHvGNoQ','zhqm61N8cJ-0V_5E98aOlg',1795615673,1795612073);
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
INSERT INTO "users" VALUES('h1xXMpkVRY6pR-YbHvGNoQ','kvothe','kvothe','Patrick Rothfuss','Duck Duck Go','$argon2id$v=19$m=19456,t=2,p=1$PMIR5vaiBCuoH+sKs16iAg$QZGfAkmB1eoGnGrUzITbrZ3vycWyhyzLrGHQRuGrY+s',0,0,NULL,1795612073);
INSERT INTO "users" VALUES('nxhlhnL9tvcGF0oLqv_HSw','tpratchett','tpratchett','Terry Pratchett','Google','$argon2id$v=19$m=19456,t=2,p=1$hdQna3fAs7hSJzlu+9wPGg$HmsN6dzEygcNkY71v3r4GUf7V7wyOKVptiXd24q0298',0,0,NULL,1795612073);
CREATE INDEX issued_tokens_by_expiry ON issued_tokens(expires_at);
CREATE INDEX issued_tokens_by_user ON issued_tokens(user_id);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);
CREATE VIEW active_sessions AS
        SELECT u.username, t.jti, t.issued_at, t.expires_at
        FROM issued_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.expires_at > unixepoch()
          AND t.generation = u.token_generation
          AND t.jti NOT IN (SELECT jti FROM revoked_tokens);
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
