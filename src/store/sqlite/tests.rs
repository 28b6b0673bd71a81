use super::*;
use std::os::unix::fs::PermissionsExt as _;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_for_serving(&dir.path().join("t.db")).unwrap();
    (dir, store)
}

// Typed values from the literals the tests read best with. Leaked: a few bytes per test, and
// records that borrow them can then be built in one expression.
fn uid(id: &str) -> &'static UserId {
    Box::leak(Box::new(UserId::from_string(id.into())))
}

fn tid(id: &str) -> &'static TokenId {
    Box::leak(Box::new(TokenId::from_string(id.into())))
}

fn name(name: &str) -> &'static Username {
    Box::leak(Box::new(Username::parse(name).unwrap()))
}

fn user(id: &str, username: &str) -> NewAccount<'static> {
    NewAccount {
        id: uid(id),
        username: name(username),
        full_name: "Full Name",
        mothers_favorite_search_engine: "Searx",
        password_hash: "$argon2id$stub",
        created_at: 100,
    }
}

fn verified(store: &SqliteStore, username: &str) -> Credentials {
    store.find_credentials(name(username)).unwrap().unwrap()
}

fn ledger(jti: &str, user_id: &str) -> IssuedTokenRecord<'static> {
    IssuedTokenRecord {
        jti: tid(jti),
        user_id: uid(user_id),
        generation: 0,
        issued_at: 100,
        expires_at: 200,
    }
}

#[test]
fn database_file_is_created_private_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/t.db");
    let store = SqliteStore::open_for_serving(&path).unwrap();
    store.create_user(&user("u1", "kvothe")).unwrap();
    drop(store);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let store = SqliteStore::open_for_serving(&path).unwrap();
    assert!(store.find_credentials(name("kvothe")).unwrap().is_some());
    assert_eq!(store.integrity_check().unwrap(), ["ok"]);
}

#[test]
fn canonical_username_is_unique() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    assert!(matches!(
        store.create_user(&user("u2", "kvothe")),
        Err(StoreError::UsernameTaken)
    ));
}

#[test]
fn token_state_reports_generation_and_denylist() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store
        .record_login(&ledger("j1", "u1"), &creds, None)
        .unwrap();
    let state = store.token_state(uid("u1"), tid("j1")).unwrap().unwrap();
    assert_eq!((state.current_generation, state.revoked), (0, false));
    assert_eq!(state.profile.username.canonical(), "kvothe");

    store.revoke_token(tid("j1"), uid("u1"), 200).unwrap();
    store.revoke_token(tid("j1"), uid("u1"), 200).unwrap(); // idempotent
    assert!(
        store
            .token_state(uid("u1"), tid("j1"))
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !store
            .token_state(uid("u1"), tid("j2"))
            .unwrap()
            .unwrap()
            .revoked
    );

    assert_eq!(store.bump_generation(uid("u1")).unwrap(), Some(1));
    assert_eq!(
        store
            .token_state(uid("u1"), tid("j2"))
            .unwrap()
            .unwrap()
            .current_generation,
        1
    );
    assert!(
        store
            .token_state(uid("nobody"), tid("j1"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn reserved_attempts_count_up_and_reset_on_login() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let policy = crate::domain::lockout::LockoutPolicy::default();
    for _ in 0..5 {
        assert_eq!(
            store.reserve_attempt(uid("u1"), &policy, 10).unwrap(),
            Ok(())
        );
    }
    assert_eq!(
        store.reserve_attempt(uid("u1"), &policy, 10).unwrap(),
        Err(2)
    );
    assert_eq!(store.failed_logins(name("kvothe")).unwrap(), Some(5));
    let creds = verified(&store, "kvothe");
    store
        .record_login(&ledger("j1", "u1"), &creds, Some("$argon2id$new"))
        .unwrap();
    assert_eq!(store.failed_logins(name("kvothe")).unwrap(), Some(0));
    assert_eq!(verified(&store, "kvothe").password_hash, "$argon2id$new");
}

/// Review findings 3 and 4 at the storage boundary: a login records its token (and any
/// rehash) only if the hash and generation it verified are still the stored ones.
#[test]
fn a_login_is_not_recorded_once_its_credentials_changed() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let before = verified(&store, "kvothe");
    store
        .change_password(uid("u1"), &before.password_hash, "$argon2id$changed")
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.record_login(
            &ledger("j1", "u1"),
            &before,
            Some("$argon2id$rehash-of-old")
        ),
        Err(StoreError::CredentialsChanged)
    ));
    assert_eq!(
        verified(&store, "kvothe").password_hash,
        "$argon2id$changed"
    );
    let current = verified(&store, "kvothe");
    store.bump_generation(uid("u1")).unwrap();
    assert!(matches!(
        store.record_login(&ledger("j2", "u1"), &current, None),
        Err(StoreError::CredentialsChanged)
    ));
}

#[test]
fn pruning_drops_only_expired_rows() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store.revoke_token(tid("old"), uid("u1"), 50).unwrap();
    store.revoke_token(tid("new"), uid("u1"), 500).unwrap();
    store.prune_expired(100, 3600).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 1);
    assert!(
        store
            .token_state(uid("u1"), tid("new"))
            .unwrap()
            .unwrap()
            .revoked
    );
}

#[test]
fn deleting_a_user_frees_the_name_and_cascades() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store
        .record_login(&ledger("j1", "u1"), &creds, None)
        .unwrap();
    store.revoke_token(tid("j1"), uid("u1"), 200).unwrap();
    assert!(store.delete_user(uid("u1")).unwrap());
    assert_eq!(store.denylist_len().unwrap(), 0);
    store.create_user(&user("u2", "kvothe")).unwrap();
}

#[test]
fn changing_the_password_bumps_the_generation() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    assert_eq!(
        store
            .change_password(uid("u1"), "$argon2id$stub", "$argon2id$x")
            .unwrap(),
        Some(1)
    );
    assert_eq!(verified(&store, "kvothe").token_generation, 1);
    assert_eq!(
        store
            .change_password(uid("u1"), "$argon2id$stub", "$argon2id$y")
            .unwrap(),
        None,
        "compare-and-set on the verified hash"
    );
}

#[test]
fn dump_holds_schema_and_rows() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let dump = store.dump().unwrap();
    assert!(dump.contains("CREATE TABLE users"));
    assert!(dump.contains("CREATE VIEW active_sessions"));
    assert!(dump.contains("INSERT INTO \"users\" VALUES('u1','kvothe','kvothe'"));
    assert!(dump.contains("PRAGMA user_version=2;"));
}

#[test]
fn memory_view_fills_on_miss_and_follows_every_write() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"))
            .unwrap()
            .is_none(),
        "not loaded yet"
    );
    store.token_state(uid("u1"), tid("j1")).unwrap().unwrap();
    let hit = store
        .cached_token_state(uid("u1"), tid("j1"))
        .unwrap()
        .unwrap();
    assert_eq!((hit.current_generation, hit.revoked), (0, false));

    store.revoke_token(tid("j1"), uid("u1"), 200).unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"))
            .unwrap()
            .is_none(),
        "a commit makes the view stale until it catches up"
    );
    assert!(
        store
            .token_state(uid("u1"), tid("j1"))
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"))
            .unwrap()
            .unwrap()
            .revoked
    );

    // Another process (the admin CLI) writes through its own connection.
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other
        .execute("UPDATE users SET token_generation = 7 WHERE id = 'u1'", [])
        .unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"))
            .unwrap()
            .is_none(),
        "invalidated"
    );
    assert_eq!(
        store
            .token_state(uid("u1"), tid("j2"))
            .unwrap()
            .unwrap()
            .current_generation,
        7
    );
    other
        .execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ('j2', 'u1', 300)",
            [],
        )
        .unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j2"))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .token_state(uid("u1"), tid("j2"))
            .unwrap()
            .unwrap()
            .revoked
    );

    other
        .execute("DELETE FROM users WHERE id = 'u1'", [])
        .unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j2"))
            .unwrap()
            .is_none()
    );
    assert!(store.token_state(uid("u1"), tid("j2")).unwrap().is_none());
}

#[test]
fn memory_view_rebuilds_when_the_change_log_was_pruned_past_it() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store.token_state(uid("u1"), tid("j1")).unwrap();
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other
        .execute_batch(
            "UPDATE users SET token_generation = 1 WHERE id = 'u1';
             UPDATE users SET token_generation = 2 WHERE id = 'u1';
             DELETE FROM token_changes;",
        )
        .unwrap();
    other
        .execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ('j1', 'u1', 300)",
            [],
        )
        .unwrap();
    // The two generation changes are gone from the log: the view must not trust its copy.
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"))
            .unwrap()
            .is_none()
    );
    let state = store.token_state(uid("u1"), tid("j1")).unwrap().unwrap();
    assert_eq!((state.current_generation, state.revoked), (2, true));
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"))
            .unwrap()
            .unwrap()
            .revoked
    );
}

/// Review finding 2: with the log pruned *empty*, `min(seq)` was NULL and the view neither
/// applied nor rebuilt, so a revocation it had not yet seen was forgotten.
#[test]
fn memory_view_sees_revocations_after_the_change_log_was_pruned_empty() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    assert!(
        !store
            .token_state(uid("u1"), tid("j1"))
            .unwrap()
            .unwrap()
            .revoked
    );
    store.revoke_token(tid("j1"), uid("u1"), i64::MAX).unwrap();
    store.bump_generation(uid("u1")).unwrap();
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other.execute("DELETE FROM token_changes", []).unwrap();
    let state = store.token_state(uid("u1"), tid("j1")).unwrap().unwrap();
    assert_eq!((state.current_generation, state.revoked), (1, true));
}
