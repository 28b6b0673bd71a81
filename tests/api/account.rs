//! Account operations: password change (ASVS 6.2.2) and deletion; rehash on login.

use crate::helpers::*;
use crate::http_client;
use serde_json::json;

const NEW_PASSWORD: &str = "an entirely different passphrase";

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> http_client::Reply {
    http_client::send_json(
        app.addr,
        "PUT",
        "/v1/users/me/password",
        Some(token),
        &json!({"current_password": current, "new_password": new}),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn password_change_returns_a_fresh_token_and_kills_every_other() {
    let app = spawn_app().await;
    let first = app.user_with_token("kvothe").await;
    let second = app.token("kvothe", GOOD_PASSWORD).await;
    let reply = change_password(&app, &first, GOOD_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let fresh = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&fresh).await.status, 200);
    assert_problem(&app.me(&first).await, 401);
    assert_problem(&app.me(&second).await, 401);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
    app.token("kvothe", NEW_PASSWORD).await;
}

#[tokio::test]
async fn password_change_needs_the_current_password() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let reply = change_password(&app, &token, "not my password at all", NEW_PASSWORD).await;
    assert_problem(&reply, 403);
    assert_eq!(app.me(&token).await.status, 200, "nothing changed");
}

#[tokio::test]
async fn new_password_goes_through_the_same_policy() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    for (new, code) in [
        ("short", "too_short"),
        ("passwordpassword", "too_common"),
        ("kvothe kvothe kvothe", "context_specific"),
    ] {
        let body = assert_problem(
            &change_password(&app, &token, GOOD_PASSWORD, new).await,
            422,
        );
        assert_eq!(
            error_codes(&body),
            [("new_password".into(), code.into())],
            "{new}"
        );
    }
}

#[tokio::test]
async fn deleting_the_account_kills_its_tokens_and_frees_the_name() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let other = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(app.delete_account(&token, GOOD_PASSWORD).await.status, 204);
    assert_problem(&app.me(&token).await, 401);
    assert_problem(&app.me(&other).await, 401);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 401);
    assert_eq!(app.register("kvothe", GOOD_PASSWORD).await.status, 201);
}

#[tokio::test]
async fn login_rehashes_when_the_configured_parameters_change() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let stored = |app: &TestApp| {
        app.store()
            .find_credentials(&tessera::domain::username::Username::parse("kvothe").unwrap())
            .unwrap()
            .unwrap()
            .password_hash
    };
    assert!(stored(&app).starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
    let app = app.restart_with_hash(512, 2).await;
    app.token("kvothe", GOOD_PASSWORD).await;
    assert!(
        stored(&app).starts_with("$argon2id$v=19$m=512,t=2,p=1$"),
        "{}",
        stored(&app)
    );
    app.token("kvothe", GOOD_PASSWORD).await;
}

/// Deleting the account re-authenticates with the password, and a wrong one counts for the
/// softlock like any failed guess.
#[tokio::test]
async fn deleting_the_account_requires_the_password() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    // No body at all: the answer names what is missing.
    let bodiless = assert_problem(&app.send("DELETE", "/v1/users/me", Some(&token)).await, 400);
    assert!(
        bodiless["detail"].as_str().unwrap().contains("password"),
        "{bodiless}"
    );
    assert_eq!(bodiless["errors"][0]["field"], "password");
    assert_eq!(bodiless["errors"][0]["code"], "missing");
    let empty =
        http_client::send_json(app.addr, "DELETE", "/v1/users/me", Some(&token), &json!({}))
            .await
            .unwrap();
    assert_problem(&empty, 400);
    assert_problem(
        &app.delete_account(&token, "not my password at all").await,
        403,
    );
    let failed = app
        .store()
        .failed_logins(&tessera::domain::username::Username::parse("kvothe").unwrap())
        .unwrap();
    assert_eq!(failed, Some(1));
    assert_eq!(app.me(&token).await.status, 200, "still there");
    assert_eq!(app.delete_account(&token, GOOD_PASSWORD).await.status, 204);
    assert_problem(&app.me(&token).await, 401);
}

/// After the argon2 parameters are raised, verifying an account's old, cheaper hash is held to
/// the configured parameters' cost on the hashing thread, so it takes as long as an unknown
/// name's (the timings are in BENCHMARKS.md; no timing is asserted here, and the count does not
/// depend on one: a busy machine may make the old hash as slow as the new on its own).
#[tokio::test]
async fn verifying_an_old_parameter_hash_is_padded_to_the_current_cost() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let app = app.restart_with_hash(2048, 2).await;
    // An unknown name first: it measures what a current-parameter verification costs.
    assert_problem(&app.login("nobody", "a wrong password here").await, 401);
    assert_eq!(app.state.auth.hashing_stats().padded, 0);
    assert_problem(&app.login("kvothe", "a wrong password here").await, 401);
    assert_eq!(app.state.auth.hashing_stats().padded, 1);
}
