use super::*;
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::{EndReason, Origin};
use crate::domain::username::Username;
use crate::store::{
    Accounts, Credentials, NewAccount, NewSession, PasswordChange, PasswordChangeOutcome,
    Revocation, SessionGrant, Sessions,
};
use std::os::unix::fs::PermissionsExt as _;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open_for_serving(&dir.path().join("t.db"), crate::store::DEFAULT_DB_TIMEOUT)
            .unwrap();
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

fn sid(id: &str) -> &'static SessionId {
    Box::leak(Box::new(SessionId::from_string(id.into())))
}

fn session(id: &str) -> NewSession<'static> {
    NewSession {
        id: sid(id),
        origin: Box::leak(Box::new(Origin {
            user_agent: "curl/8".into(),
            client_address: Some([192, 0, 2, 1].into()),
        })),
        factors: crate::domain::session::Factors::Password,
        created_at: 100,
        expires_at: 10_000,
    }
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

#[test]
fn database_file_is_created_private_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/t.db");
    let store = SqliteStore::open_for_serving(&path, crate::store::DEFAULT_DB_TIMEOUT).unwrap();
    store.create_user(&user("u1", "kvothe")).unwrap();
    drop(store);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let store = SqliteStore::open_for_serving(&path, crate::store::DEFAULT_DB_TIMEOUT).unwrap();
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
    store.record_login(&creds, None, &session("s1")).unwrap();
    let state = store
        .token_state(uid("u1"), tid("j1"), sid("no-session"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (state.current_generation, state.revoked.is_some()),
        (0, false)
    );
    assert_eq!(state.profile.username.canonical(), "kvothe");

    store.denylist(tid("j1"), uid("u1"), 200).unwrap();
    store.denylist(tid("j1"), uid("u1"), 200).unwrap(); // idempotent
    assert!(
        store
            .token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );
    assert!(
        store
            .token_state(uid("u1"), tid("j2"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_none()
    );

    assert_eq!(store.bump_generation(uid("u1")).unwrap(), Some(1));
    assert_eq!(
        store
            .token_state(uid("u1"), tid("j2"), sid("no-session"))
            .unwrap()
            .unwrap()
            .current_generation,
        1
    );
    assert!(
        store
            .token_state(uid("nobody"), tid("j1"), sid("no-session"))
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
        .record_login(&creds, Some("$argon2id$new"), &session("s1"))
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
    store.record_login(&before, None, &session("s0")).unwrap();
    let change = PasswordChange {
        user_id: uid("u1"),
        session_id: sid("s0"),
        new_generation: 1,
        verified_hash: &before.password_hash,
        new_hash: "$argon2id$changed",
        now: 150,
    };
    assert!(matches!(
        store.change_password(&change).unwrap(),
        PasswordChangeOutcome::Changed { .. }
    ));
    assert!(matches!(
        store.record_login(&before, Some("$argon2id$rehash-of-old"), &session("s1"),),
        Err(StoreError::CredentialsChanged)
    ));
    assert_eq!(
        verified(&store, "kvothe").password_hash,
        "$argon2id$changed"
    );
    let current = verified(&store, "kvothe");
    store.bump_generation(uid("u1")).unwrap();
    assert!(matches!(
        store.record_login(&current, None, &session("s2")),
        Err(StoreError::CredentialsChanged)
    ));
}

#[test]
fn pruning_drops_only_expired_rows() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store.denylist(tid("old"), uid("u1"), 50).unwrap();
    store.denylist(tid("new"), uid("u1"), 500).unwrap();
    store.prune_expired(100, 3600, 1000).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 1);
    assert!(
        store
            .token_state(uid("u1"), tid("new"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );
}

#[test]
fn deleting_a_user_frees_the_name_and_cascades() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("s1")).unwrap();
    store.denylist(tid("j1"), uid("u1"), 200).unwrap();
    assert!(store.delete_user(uid("u1")).unwrap());
    assert_eq!(store.denylist_len().unwrap(), 0);
    store.create_user(&user("u2", "kvothe")).unwrap();
}

#[test]
fn changing_the_password_bumps_the_generation_and_keeps_only_the_callers_session() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("s1")).unwrap();
    store.record_login(&creds, None, &session("s2")).unwrap();
    let change = |hash| PasswordChange {
        user_id: uid("u1"),
        session_id: sid("s1"),
        new_generation: 1,
        verified_hash: "$argon2id$stub",
        new_hash: hash,
        now: 150,
    };
    assert_eq!(
        store.change_password(&change("$argon2id$x")).unwrap(),
        PasswordChangeOutcome::Changed {
            refresh_counter: 1,
            session_expires_at: 10_000
        }
    );
    assert_eq!(verified(&store, "kvothe").token_generation, 1);
    let kept = store.session(sid("s1")).unwrap().unwrap();
    assert_eq!(
        (kept.generation, kept.current_generation, kept.rotated_at),
        (1, 1, None)
    );
    let other = store.session(sid("s2")).unwrap().unwrap();
    assert_eq!(
        (other.generation, other.current_generation),
        (0, 1),
        "ended by the bump"
    );
    assert_eq!(
        store.change_password(&change("$argon2id$y")).unwrap(),
        PasswordChangeOutcome::PasswordChanged,
        "compare-and-set on the verified hash"
    );
}

#[test]
fn a_grant_lands_only_on_the_session_as_judged() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("s1")).unwrap();
    let grant = |expected, new| SessionGrant {
        session_id: sid("s1"),
        user_id: uid("u1"),
        generation: 0,
        expected_counter: expected,
        new_counter: new,
        now: 160,
    };
    assert!(store.grant_in_session(&grant(0, 1)).unwrap());
    assert!(
        !store.grant_in_session(&grant(0, 1)).unwrap(),
        "lost the race"
    );
    let rotated = store.session(sid("s1")).unwrap().unwrap();
    assert_eq!(rotated.client_address, Some([192, 0, 2, 1].into()));
    assert_eq!(rotated.user_agent, "curl/8");
    assert_eq!(
        (
            rotated.refresh_counter,
            rotated.rotated_at,
            rotated.last_used_at
        ),
        (1, Some(160), 160)
    );
    assert!(
        store.grant_in_session(&grant(1, 1)).unwrap(),
        "grace: no rotation"
    );
    assert_eq!(
        store.session(sid("s1")).unwrap().unwrap().rotated_at,
        Some(160)
    );
    store.bump_generation(uid("u1")).unwrap();
    assert!(
        !store.grant_in_session(&grant(1, 2)).unwrap(),
        "generation moved"
    );
}

#[test]
fn ending_a_session_denylists_its_id_and_nothing_else() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("s1")).unwrap();
    store.record_login(&creds, None, &session("s2")).unwrap();
    let grant = SessionGrant {
        session_id: sid("s1"),
        user_id: uid("u1"),
        generation: 0,
        expected_counter: 0,
        new_counter: 1,
        now: 160,
    };
    assert!(store.grant_in_session(&grant).unwrap());
    assert!(
        !store
            .end_session(
                sid("s1"),
                Some(uid("u2")),
                EndReason::Revoked,
                170,
                170 + 900
            )
            .unwrap(),
        "not the owner"
    );
    assert!(
        store
            .end_session(
                sid("s1"),
                Some(uid("u1")),
                EndReason::Logout,
                170,
                170 + 900
            )
            .unwrap()
    );
    assert!(
        !store
            .end_session(sid("s1"), None, EndReason::Logout, 171, 171 + 900)
            .unwrap(),
        "already ended"
    );
    for (session, revoked) in [("s1", true), ("s2", false)] {
        let state = store
            .token_state(uid("u1"), tid("any-token"), sid(session))
            .unwrap()
            .unwrap();
        assert_eq!(state.revoked.is_some(), revoked, "{session}");
    }
    let ended = store.session(sid("s1")).unwrap().unwrap();
    assert_eq!(ended.ended, Some((170, EndReason::Logout)));
    assert!(
        !store.grant_in_session(&grant).unwrap(),
        "an ended session issues nothing"
    );
    assert_eq!(store.live_sessions(170, 1000).unwrap(), 1);
    // Until the last token it can have issued expires (or the session's own end): 170 + 900.
    assert_eq!(store.denylist_len().unwrap(), 1);
    store.prune_expired(1070, 900, 100_000).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 1);
    store.prune_expired(1071, 900, 100_000).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 0);
    let state = store
        .token_state(uid("u1"), tid("any-token"), sid("s1"))
        .unwrap()
        .unwrap();
    assert_eq!(state.revoked, None, "memory forgets what the table forgot");
}

/// A token is refused if either of its ids is listed — also when the view answers from memory.
#[test]
fn the_view_refuses_a_token_of_an_ended_session_from_memory() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("s1")).unwrap();
    let fill = store
        .token_state(uid("u1"), tid("t1"), sid("s1"))
        .unwrap()
        .unwrap();
    assert!(fill.revoked.is_none());
    store
        .end_session(sid("s1"), None, EndReason::Reuse, 170, 1070)
        .unwrap();
    // The first check after a commit catches the view up; the next answers from memory.
    assert!(
        store
            .token_state(uid("u1"), tid("t1"), sid("s1"))
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );
    let cached = store
        .cached_token_state(uid("u1"), tid("t1"), sid("s1"))
        .unwrap()
        .unwrap();
    assert!(cached.revoked.is_some());
}

#[test]
fn pruning_drops_sessions_only_once_they_can_serve_nothing() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("ended")).unwrap();
    store.record_login(&creds, None, &session("live")).unwrap();
    store
        .end_session(sid("ended"), None, EndReason::Logout, 200, 200 + 900)
        .unwrap();
    // Ended at 200; tokens live up to 900 s: kept until 1100.
    store.prune_expired(1000, 900, 100_000).unwrap();
    assert!(store.session(sid("ended")).unwrap().is_some());
    store.prune_expired(1101, 900, 100_000).unwrap();
    assert!(store.session(sid("ended")).unwrap().is_none());
    assert!(store.session(sid("live")).unwrap().is_some());
    // Idle since 100 with a 500 s timeout and 900 s tokens: gone after 1500.
    store.prune_expired(1501, 900, 500).unwrap();
    assert!(store.session(sid("live")).unwrap().is_none());
}

#[test]
fn dump_holds_schema_and_rows() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let dump = store.dump().unwrap();
    assert!(dump.contains("CREATE TABLE users"));
    assert!(dump.contains("CREATE VIEW active_sessions"));
    assert!(dump.contains("INSERT INTO \"users\" VALUES('u1','kvothe','kvothe'"));
    assert!(dump.contains("PRAGMA user_version=10;"));
    assert!(dump.contains("CREATE TABLE softlock_padding"));
    assert!(dump.contains("CREATE TABLE sessions"));
}

#[test]
fn memory_view_fills_on_miss_and_follows_every_write() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .is_none(),
        "not loaded yet"
    );
    store
        .token_state(uid("u1"), tid("j1"), sid("no-session"))
        .unwrap()
        .unwrap();
    let hit = store
        .cached_token_state(uid("u1"), tid("j1"), sid("no-session"))
        .unwrap()
        .unwrap();
    assert_eq!((hit.current_generation, hit.revoked.is_some()), (0, false));

    // Our own commit: the view has caught up by the time the write returns.
    store.denylist(tid("j1"), uid("u1"), 200).unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );

    // Another process (the admin CLI) writes through its own connection.
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other
        .execute("UPDATE users SET token_generation = 7 WHERE id = 'u1'", [])
        .unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .is_none(),
        "invalidated"
    );
    assert_eq!(
        store
            .token_state(uid("u1"), tid("j2"), sid("no-session"))
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
            .cached_token_state(uid("u1"), tid("j2"), sid("no-session"))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .token_state(uid("u1"), tid("j2"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );

    other
        .execute("DELETE FROM users WHERE id = 'u1'", [])
        .unwrap();
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j2"), sid("no-session"))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .token_state(uid("u1"), tid("j2"), sid("no-session"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn memory_view_rebuilds_when_the_change_log_was_pruned_past_it() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store
        .token_state(uid("u1"), tid("j1"), sid("no-session"))
        .unwrap();
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
            .cached_token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .is_none()
    );
    let state = store
        .token_state(uid("u1"), tid("j1"), sid("no-session"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (state.current_generation, state.revoked.is_some()),
        (2, true)
    );
    assert!(
        store
            .cached_token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );
}

/// With the change log pruned *empty* (`min(seq)` is NULL), the view still notices the gap
/// against AUTOINCREMENT's highest `seq` and rebuilds: a revocation it had not yet seen is
/// never forgotten.
#[test]
fn memory_view_sees_revocations_after_the_change_log_was_pruned_empty() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    assert!(
        store
            .token_state(uid("u1"), tid("j1"), sid("no-session"))
            .unwrap()
            .unwrap()
            .revoked
            .is_none()
    );
    store.denylist(tid("j1"), uid("u1"), i64::MAX).unwrap();
    store.bump_generation(uid("u1")).unwrap();
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    other.execute("DELETE FROM token_changes", []).unwrap();
    let state = store
        .token_state(uid("u1"), tid("j1"), sid("no-session"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (state.current_generation, state.revoked.is_some()),
        (1, true)
    );
}

// ---- group commit: refreshes of one batch behave as one transaction each would ----

fn grant_for(session: &'static str, expected: u64) -> SessionGrant<'static> {
    SessionGrant {
        session_id: sid(session),
        user_id: uid("u1"),
        generation: 0,
        expected_counter: expected,
        new_counter: expected + 1,
        now: 500,
    }
}

/// Sixteen refreshes of one token at once: however the writer batches them, exactly one moves
/// the session; the others see it moved and would judge again.
#[test]
fn concurrent_grants_on_one_session_move_it_exactly_once() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("s1")).unwrap();
    let store = std::sync::Arc::new(store);
    for expected in 0..3 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.grant_in_session(&grant_for("s1", expected)).unwrap()
                })
            })
            .collect();
        let moved = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|moved| *moved)
            .count();
        assert_eq!(moved, 1, "round {expected}");
        let current = store.session(sid("s1")).unwrap().unwrap().refresh_counter;
        assert_eq!(current, expected + 1);
    }
}

/// Thirty-two sessions refreshed at once all move, each once.
#[test]
fn concurrent_grants_on_many_sessions_all_move() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    let names: Vec<&'static str> = (0..32)
        .map(|i| &*Box::leak(format!("s{i}").into_boxed_str()))
        .collect();
    for name in &names {
        store.record_login(&creds, None, &session(name)).unwrap();
    }
    let store = std::sync::Arc::new(store);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(names.len()));
    let threads: Vec<_> = names
        .iter()
        .map(|name| {
            let (store, barrier, name) = (store.clone(), barrier.clone(), *name);
            std::thread::spawn(move || {
                barrier.wait();
                store.grant_in_session(&grant_for(name, 0)).unwrap()
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    for name in &names {
        assert_eq!(
            store.session(sid(name)).unwrap().unwrap().refresh_counter,
            1
        );
    }
}

/// Another process holding the write lock: queued grants wait for it (busy timeout), then
/// commit; a session it ended meanwhile is not moved.
#[test]
fn grants_wait_for_another_writer_and_see_what_it_committed() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    store.record_login(&creds, None, &session("kept")).unwrap();
    store.record_login(&creds, None, &session("ended")).unwrap();
    let store = std::sync::Arc::new(store);
    let other = Connection::open(dir.path().join("t.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let threads: Vec<_> = ["kept", "ended"]
        .into_iter()
        .map(|name| {
            let store = store.clone();
            std::thread::spawn(move || store.grant_in_session(&grant_for(name, 0)).unwrap())
        })
        .collect();
    other
        .execute(
            "UPDATE sessions SET ended_at = 400, end_reason = 'revoked' WHERE id = 'ended'",
            [],
        )
        .unwrap();
    other.execute_batch("COMMIT").unwrap();
    // The other writer held the lock before either grant was queued, so both ran after its
    // commit: the session it ended does not move.
    let moved: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(moved, [true, false]);
}

/// Answers a thread remembers (`thread_answers.rs`) are never given after a commit — by this
/// store or by another connection — and never for another session, user or view.
/// The view carries why each id is denylisted — from this store's own writes and from another
/// process's — so a rejection answered from memory names the same reason as one read from the
/// tables.
#[test]
fn the_view_knows_why_each_session_ended() {
    use crate::domain::session::Denial;
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let creds = verified(&store, "kvothe");
    for id in ["s1", "s2", "s3"] {
        store.record_login(&creds, None, &session(id)).unwrap();
    }
    store.token_state(uid("u1"), tid("j"), sid("s1")).unwrap();
    store
        .end_session(sid("s1"), Some(uid("u1")), EndReason::Revoked, 170, 1070)
        .unwrap();
    store
        .end_session(sid("s2"), None, EndReason::Revoked, 170, 1070)
        .unwrap();
    let plain = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    plain
        .execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at, kind, reason)
             VALUES ('s3', 'u1', 1070, 'session', 'reuse')",
            [],
        )
        .unwrap();
    plain
        .execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ('old', 'u1', 1070)",
            [],
        )
        .unwrap();
    store.token_state(uid("u1"), tid("j"), sid("s1")).unwrap();
    for (session, expected) in [
        ("s1", Denial::EndedByUser),
        ("s2", Denial::RevokedByOperator),
        ("s3", Denial::Reuse),
        ("old", Denial::Unrecorded),
    ] {
        let from_memory = store
            .cached_token_state(uid("u1"), tid("j"), sid(session))
            .unwrap()
            .unwrap();
        let from_tables = store
            .load_token_state(uid("u1"), tid("j"), sid(session))
            .unwrap()
            .unwrap();
        assert_eq!(from_memory.revoked, Some(expected), "{session}");
        assert_eq!(from_tables.revoked, Some(expected), "{session}");
    }
    // Rebuilt from the tables (a fresh view), the reasons are the same.
    let fresh =
        SqliteStore::open_for_serving(&dir.path().join("t.db"), crate::store::DEFAULT_DB_TIMEOUT)
            .unwrap();
    fresh.token_state(uid("u1"), tid("j"), sid("s3")).unwrap();
    let state = fresh
        .cached_token_state(uid("u1"), tid("j"), sid("s3"))
        .unwrap()
        .unwrap();
    assert_eq!(state.revoked, Some(Denial::Reuse));
}

#[test]
fn a_users_tokens_share_one_profile_copy_per_thread_until_the_next_commit() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store.token_state(uid("u1"), tid("j1"), sid("s1")).unwrap();
    let cached = |jti: &str, session: &str| {
        store
            .cached_token_state(uid("u1"), tid(jti), sid(session))
            .unwrap()
            .unwrap()
            .profile
    };
    let first = cached("j1", "s1");
    let second = cached("j2", "s2");
    assert!(
        Arc::ptr_eq(&first, &second),
        "one copy for the user's tokens"
    );
    store.bump_generation(uid("u1")).unwrap();
    store.token_state(uid("u1"), tid("j1"), sid("s1")).unwrap();
    let after = cached("j1", "s1");
    assert!(
        !Arc::ptr_eq(&first, &after),
        "a commit starts the copies over"
    );
    assert_eq!(*first, *after);
}

#[test]
fn remembered_answers_end_with_the_next_commit_and_belong_to_one_question() {
    let (dir, store) = open();
    let (other_dir, other_store) = open();
    for store in [&store, &other_store] {
        store.create_user(&user("u1", "kvothe")).unwrap();
        store
            .token_state(uid("u1"), tid("j1"), sid("s1"))
            .unwrap()
            .unwrap();
    }
    let cached = |store: &SqliteStore, jti: &str, session: &str| {
        store
            .cached_token_state(uid("u1"), tid(jti), sid(session))
            .unwrap()
    };
    // Asked twice: the second answer is the remembered one.
    for _ in 0..2 {
        assert_eq!(cached(&store, "j1", "s1").unwrap().current_generation, 0);
    }
    // The other store's view has its own answers, even for the same ids.
    other_store.bump_generation(uid("u1")).unwrap();
    other_store
        .token_state(uid("u1"), tid("j1"), sid("s1"))
        .unwrap();
    assert_eq!(
        cached(&other_store, "j1", "s1").unwrap().current_generation,
        1
    );
    assert_eq!(cached(&store, "j1", "s1").unwrap().current_generation, 0);
    // The same token id under another session (whose id is denylisted) is another question,
    // asked at the same header: the first answer is not given for it.
    store.denylist(tid("s2"), uid("u1"), 300).unwrap();
    store.token_state(uid("u1"), tid("j1"), sid("s1")).unwrap();
    assert!(cached(&store, "j1", "s1").unwrap().revoked.is_none());
    assert!(cached(&store, "j1", "s2").unwrap().revoked.is_some());
    assert!(cached(&store, "j1", "s1").unwrap().revoked.is_none());

    // A commit by another connection, as the admin CLI makes: the remembered answer is gone.
    let plain = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    plain
        .execute("UPDATE users SET token_generation = 5 WHERE id = 'u1'", [])
        .unwrap();
    assert!(
        cached(&store, "j1", "s1").is_none(),
        "stale until caught up"
    );
    store.token_state(uid("u1"), tid("j1"), sid("s1")).unwrap();
    assert_eq!(cached(&store, "j1", "s1").unwrap().current_generation, 5);
    plain
        .execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ('j1', 'u1', 300)",
            [],
        )
        .unwrap();
    assert!(
        cached(&store, "j1", "s1").is_none(),
        "stale until caught up"
    );
    store.token_state(uid("u1"), tid("j1"), sid("s1")).unwrap();
    assert!(cached(&store, "j1", "s1").unwrap().revoked.is_some());
    drop(other_dir);
}

/// Our own commits leave the revocation view current: the next token check is answered from
/// memory rather than handed to the blocking pool to catch up. Every login commits a session, so
/// during a login storm that hand-off would set `/me`'s tail latency (BENCHMARKS.md, "Isolation:
/// a login storm"). A commit by another connection still leaves the view stale until caught up.
#[test]
fn our_own_commits_leave_the_view_current() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store
        .token_state(uid("u1"), tid("j1"), sid("s1"))
        .unwrap()
        .unwrap();
    let cached = |jti: &str| {
        store
            .cached_token_state(uid("u1"), tid(jti), sid("s1"))
            .unwrap()
    };
    assert!(cached("j1").is_some());
    // A commit that changes no revocation state.
    store.create_user(&user("u2", "denna")).unwrap();
    assert!(cached("j1").is_some(), "current after our own commit");
    // Commits that do: each is seen at once.
    store.denylist(tid("j1"), uid("u1"), 300).unwrap();
    assert!(cached("j1").unwrap().revoked.is_some());
    assert!(cached("j2").unwrap().revoked.is_none());
    // (A generation bump makes the view forget the user, to be loaded again with its profile.)
    store.bump_generation(uid("u1")).unwrap();
    assert!(cached("j2").is_none(), "forgotten, not stale");
    store.token_state(uid("u1"), tid("j2"), sid("s1")).unwrap();
    assert_eq!(cached("j2").unwrap().current_generation, 1);
    // Another connection's commit: stale until a check catches up, as before.
    let plain = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    plain
        .execute("UPDATE users SET full_name = 'K' WHERE id = 'u2'", [])
        .unwrap();
    assert!(cached("j2").is_none(), "stale until caught up");
}

/// Our eager catch-ups racing another process's commits: while threads of ours commit and catch
/// up, a plain connection denylists a token; from the moment its commit returns, no check may
/// answer "not revoked" from memory.
#[test]
fn eager_catch_ups_never_hide_another_process_s_commit() {
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    let plain = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    plain.busy_timeout(Duration::from_secs(30)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for writer in 0..3 {
            let (store, stop) = (&store, &stop);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("w{writer}n{n}");
                    store.create_user(&user(&name, &name)).unwrap();
                    n += 1;
                }
            });
        }
        for round in 0..50 {
            let jti = format!("j{round}");
            store.token_state(uid("u1"), tid(&jti), sid("s1")).unwrap();
            plain
                .execute(
                    "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (?1, 'u1', 300)",
                    [&jti],
                )
                .unwrap();
            let answer = store
                .cached_token_state(uid("u1"), tid(&jti), sid("s1"))
                .unwrap();
            assert!(
                answer.is_none_or(|state| state.revoked.is_some()),
                "round {round}: a revoked token answered as live"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// A `-wal` replaced under the server (not the database file itself): another process would
/// commit into a WAL the view does not watch, so the store stops vouching for its memory.
#[test]
fn a_wal_replaced_under_the_store_is_refused_and_memory_stops_answering() {
    use crate::store::Maintenance as _;
    let (dir, store) = open();
    store.create_user(&user("u1", "kvothe")).unwrap();
    store.ping().unwrap();
    assert!(store.answers_from_memory());
    let wal = dir.path().join("t.db-wal");
    let stand_in = dir.path().join("other-wal");
    std::fs::write(&stand_in, b"").unwrap();
    std::fs::rename(&stand_in, &wal).unwrap();
    assert!(matches!(store.ping(), Err(StoreError::FileReplaced(path)) if path == wal));
    assert!(!store.answers_from_memory());
    assert!(
        matches!(store.ping(), Err(StoreError::Unprovable)),
        "for good"
    );
}
