//! Logins racing password changes, and refreshes racing the operations that end sessions. The hashing threads are held so
//! the login is parked between reading the credentials and checking them — a barrier, not a
//! sleep — while the password changes underneath it.

use crate::helpers::*;
use tessera::domain::password::{Hasher, Password};
use tessera::store::{PasswordChange, PasswordChangeOutcome};

const NEW_PASSWORD: &str = "an entirely different passphrase";

/// kvothe's credentials as the store holds them now.
fn credentials_of_kvothe(store: &dyn tessera::store::Store) -> tessera::store::Credentials {
    store
        .find_credentials(&tessera::domain::username::Username::parse("kvothe").unwrap())
        .unwrap()
        .unwrap()
}

/// `password` hashed with the app's configured parameters.
fn hash_with(app: &TestApp, password: &str) -> String {
    Hasher::new(app.config.hash)
        .unwrap()
        .hash(&Password::normalize(password).unwrap())
        .unwrap()
}

/// Starts a login with the old password, waits until it is queued for hashing behind the held
/// threads, changes the password in the store (as `session_token`'s session would), then lets
/// the login finish.
async fn login_racing_a_password_change(
    app: &TestApp,
    session_token: &str,
) -> crate::http_client::Reply {
    let session = app.claims_of(session_token).sid;
    let hashing = || app.state.auth.hashing_stats();
    let held = app.state.auth.hold_hashing();
    let login = {
        let addr = app.addr;
        tokio::spawn(async move {
            let body = serde_json::json!({"username": "kvothe", "password": GOOD_PASSWORD});
            crate::http_client::send_json(addr, "POST", "/v1/sessions", None, &body)
                .await
                .unwrap()
        })
    };
    wait_for(|| hashing().queue_depth == 1).await;
    let store = app.store();
    let before = credentials_of_kvothe(store.as_ref());
    let new_hash = hash_with(app, NEW_PASSWORD);
    let change = PasswordChange {
        user_id: &before.user_id,
        session_id: &session,
        new_generation: before.token_generation + 1,
        verified_hash: &before.password_hash,
        new_hash: &new_hash,
        now: 0,
    };
    assert!(matches!(
        store.change_password(&change).unwrap(),
        PasswordChangeOutcome::Changed { .. }
    ));
    drop(held);
    login.await.unwrap()
}

/// A login that waited in the hash queue while the password changed gets no token: it
/// verified credentials that are no longer current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_flight_during_a_password_change_gets_no_token() {
    let app = spawn_app_with(|c| c.hash_permits = 1).await;
    let before = app.user_with_token("kvothe").await;
    let reply = login_racing_a_password_change(&app, &before).await;
    assert_problem(&reply, 401);
    assert_problem(&app.me(&before).await, 401);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
    app.token("kvothe", NEW_PASSWORD).await;
}

/// A login racing a password change, with argon2 parameters changed, cannot store its rehash
/// of the *old* password over the new hash: once the change answered 200, only the new
/// password works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehashing_login_cannot_undo_a_password_change() {
    let app = spawn_app_with(|c| c.hash_permits = 1).await;
    let session = app.user_with_token("kvothe").await;
    let app = app.restart_with_hash(512, 1).await;
    let reply = login_racing_a_password_change(&app, &session).await;
    assert_problem(&reply, 401);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
    app.token("kvothe", NEW_PASSWORD).await;
}

// ---- refreshes racing the operations that end sessions ----

/// Starts a refresh of each session's refresh token, all at once.
fn refresh_all_at_once(
    app: &std::sync::Arc<TestApp>,
    pairs: &[(String, String)],
) -> Vec<tokio::task::JoinHandle<crate::http_client::Reply>> {
    pairs
        .iter()
        .map(|(_, refresh)| {
            let (app, refresh) = (app.clone(), refresh.clone());
            tokio::spawn(async move { app.refresh(&refresh).await })
        })
        .collect()
}

/// Neither the access token nor the refresh token of `pair` works any more.
async fn assert_dead(app: &TestApp, (access, refresh): &(String, String)) {
    assert_problem(&app.me(access).await, 401);
    assert_problem(&app.refresh(refresh).await, 401);
}

/// A refresh and a logout of the same session, at once, many times over: whichever lands
/// first, nothing the refresh handed out may work once both have answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_racing_a_logout_never_leaves_a_live_token() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.register("kvothe", GOOD_PASSWORD).await;
    let mut refreshes_won = 0;
    for _ in 0..30 {
        let (access, refresh) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
        let refreshing = tokio::spawn({
            let app = app.clone();
            async move { app.refresh(&refresh).await }
        });
        let logout = app
            .send("DELETE", "/v1/sessions/current", Some(&access))
            .await;
        assert_eq!(logout.status, 204);
        let refreshed = refreshing.await.unwrap();
        if refreshed.status == 200 {
            refreshes_won += 1;
            assert_dead(&app, &tokens(&refreshed.json())).await;
        } else {
            assert_problem(&refreshed, 401);
        }
    }
    // Not asserted (scheduling decides), but printed so a run shows both orders happened.
    println!("refresh answered 200 before the logout in {refreshes_won} of 30 rounds");
}

/// The same against log-out-everywhere, with several sessions refreshing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_racing_a_logout_everywhere_leave_no_live_token() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.register("kvothe", GOOD_PASSWORD).await;
    for _ in 0..10 {
        let mut grants = Vec::new();
        for _ in 0..4 {
            grants.push(tokens(&app.grant("kvothe", GOOD_PASSWORD).await));
        }
        let refreshing = refresh_all_at_once(&app, &grants);
        let everywhere = app.send("DELETE", "/v1/sessions", Some(&grants[0].0)).await;
        assert!(
            matches!(everywhere.status, 204 | 401),
            "{}",
            everywhere.status
        );
        for task in refreshing {
            let reply = task.await.unwrap();
            if reply.status == 200 {
                assert_dead(&app, &tokens(&reply.json())).await;
            }
        }
        for pair in &grants {
            assert_dead(&app, pair).await;
        }
    }
}

/// A second process — the admin CLI — ends a session while the server is busy refreshing
/// others: the moment the command returns, that session's tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_cli_ends_a_session_while_others_refresh() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.register("kvothe", GOOD_PASSWORD).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (_, mut refresh) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
        let app = app.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let reply = app.refresh(&refresh).await;
                assert_eq!(reply.status, 200, "{:?}", reply.json());
                refresh = tokens(&reply.json()).1;
                rounds += 1;
            }
            rounds
        }));
    }
    for _ in 0..5 {
        let victim = app.grant("kvothe", GOOD_PASSWORD).await;
        let (access, refresh) = tokens(&victim);
        let id = victim["session_id"].as_str().unwrap().to_owned();
        let db = app.db_path.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["session", "revoke", &id, "--db"])
                .arg(db)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_problem(&app.me(&access).await, 401);
        assert_problem(&app.refresh(&refresh).await, 401);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        assert!(worker.await.unwrap() > 0);
    }
}

/// The refresh bucket under concurrency: of sixteen refreshes at once from one address with
/// a burst of four, exactly four are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_cannot_outrun_the_per_ip_bucket() {
    let app = std::sync::Arc::new(spawn_app_with(|c| c.refresh_limit = (4, 0.001)).await);
    let (_, refresh) = tokens(&app.user_with_grant("kvothe").await);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let app = app.clone();
            let refresh = refresh.clone();
            tokio::spawn(async move { app.refresh(&refresh).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        12,
        "{statuses:?}"
    );
}

/// A password change while the user's other sessions refresh: whichever commits first, no
/// other session keeps a working token, and the changing session's fresh pair works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_racing_a_password_change_leave_only_the_changing_session() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (changer, _) = tokens(&app.user_with_grant("kvothe").await);
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(tokens(&app.grant("kvothe", GOOD_PASSWORD).await));
    }
    let refreshing = refresh_all_at_once(&app, &others);
    let body = serde_json::json!({"current_password": GOOD_PASSWORD,
                                  "new_password": NEW_PASSWORD});
    let changed = app.put_json("/v1/users/me/password", &changer, &body).await;
    assert_eq!(changed.status, 200, "{:?}", changed.json());
    for task in refreshing {
        let reply = task.await.unwrap();
        if reply.status == 200 {
            assert_dead(&app, &tokens(&reply.json())).await;
        }
    }
    for pair in &others {
        assert_dead(&app, pair).await;
    }
    let (fresh_access, fresh_refresh) = tokens(&changed.json());
    assert_eq!(app.me(&fresh_access).await.status, 200);
    assert_eq!(app.refresh(&fresh_refresh).await.status, 200);
}

/// A correct password change racing a login that rehashes the same password (new argon2
/// parameters): the change verified the old hash, the login then replaced it with a new hash of
/// the same password. The change must not blame the user — it checks the password against the
/// new hash and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_racing_a_rehashing_login_is_not_a_wrong_password() {
    let app = spawn_app_with(|c| c.hash_permits = 1).await;
    let session = app.user_with_token("kvothe").await;
    let app = app.restart_with_hash(512, 1).await;
    let hashing = || app.state.auth.hashing_stats();
    let held = app.state.auth.hold_hashing();
    let change = {
        let (addr, session) = (app.addr, session.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({"current_password": GOOD_PASSWORD, "new_password": NEW_PASSWORD});
            crate::http_client::send_json(
                addr,
                "PUT",
                "/v1/users/me/password",
                Some(&session),
                &body,
            )
            .await
            .unwrap()
        })
    };
    // The change is queued to verify the current password; meanwhile a login commits its
    // rehash of that same password, as `record_login` does.
    wait_for(|| hashing().queue_depth == 1).await;
    let store = app.store();
    let before = credentials_of_kvothe(store.as_ref());
    let rehash = hash_with(&app, GOOD_PASSWORD);
    let login_session = tessera::domain::ids::SessionId::random();
    store
        .record_login(
            &before,
            Some(&rehash),
            &tessera::store::NewSession {
                id: &login_session,
                origin: &tessera::domain::session::Origin {
                    user_agent: "racing login".into(),
                    client_address: None,
                },
                factors: tessera::domain::session::Factors::Password,
                created_at: 0,
                expires_at: i64::MAX / 2,
            },
        )
        .unwrap();
    drop(held);
    let changed = change.await.unwrap();
    assert_eq!(changed.status, 200, "{:?}", changed.json());
    app.token("kvothe", NEW_PASSWORD).await;
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
}
