//! Logins racing password changes (review findings 3 and 4). The hashing threads are held so
//! the login is parked between reading the credentials and checking them — a barrier, not a
//! sleep — while the password changes underneath it.

use crate::helpers::*;
use tessera::domain::password::{Hasher, Password};

const NEW_PASSWORD: &str = "an entirely different passphrase";

/// Starts a login with the old password, waits until it is queued for hashing behind the held
/// threads, changes the password in the store, then lets the login finish.
async fn login_racing_a_password_change(app: &TestApp) -> crate::http_client::Reply {
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
    let before = store
        .find_credentials(&tessera::domain::username::Username::parse("kvothe").unwrap())
        .unwrap()
        .unwrap();
    let new_hash = Hasher::new(app.config.hash)
        .unwrap()
        .hash(&Password::normalize(NEW_PASSWORD).unwrap())
        .unwrap();
    store
        .change_password(&before.user_id, &before.password_hash, &new_hash)
        .unwrap()
        .unwrap();
    drop(held);
    login.await.unwrap()
}

/// Finding 4: a login that waited in the hash queue while the password changed was issued a
/// token at the *new* generation, which survived the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_in_flight_during_a_password_change_gets_no_token() {
    let app = spawn_app_with(|c| c.hash_permits = 1).await;
    let before = app.user_with_token("kvothe").await;
    let reply = login_racing_a_password_change(&app).await;
    assert_problem(&reply, 401);
    assert_problem(&app.me(&before).await, 401);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
    app.token("kvothe", NEW_PASSWORD).await;
}

/// Finding 3: when argon2 parameters had changed, the racing login rehashed the *old*
/// password over the new hash — the change answered 200, yet the old password kept working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehashing_login_cannot_undo_a_password_change() {
    let app = spawn_app_with(|c| c.hash_permits = 1).await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let app = app.restart_with_hash(512, 1).await;
    let reply = login_racing_a_password_change(&app).await;
    assert_problem(&reply, 401);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
    app.token("kvothe", NEW_PASSWORD).await;
}
