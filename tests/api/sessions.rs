use crate::helpers::*;
use crate::http_client::Reply;

#[tokio::test]
async fn login_returns_a_bearer_token_that_must_not_be_cached() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let reply = app.login("kvothe", GOOD_PASSWORD).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let claims = app.claims_of(body["access_token"].as_str().unwrap());
    assert_ne!(
        claims.sub, "kvothe",
        "sub is an opaque id, never the username"
    );
}

#[tokio::test]
async fn me_returns_the_profile_with_no_store() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let reply = app.me(&token).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["username"], "kvothe");
    assert_eq!(body["full_name"], "Test User");
    assert_eq!(body["mothers_favorite_search_engine"], "Searx");
}

/// Everything a client can observe, minus what differs per request by design.
fn observable(reply: &Reply) -> (u16, Vec<(String, String)>, bytes::Bytes) {
    let mut headers: Vec<_> = reply
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (reply.status, headers, reply.body.clone())
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_identical_answers() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let wrong_password = app.login("kvothe", "not the password at all").await;
    let unknown_user = app.login("nobody", "not the password at all").await;
    let invalid_name = app.login("no body", "not the password at all").await;
    assert_problem(&wrong_password, 401);
    assert_eq!(observable(&wrong_password), observable(&unknown_user));
    assert_eq!(observable(&wrong_password), observable(&invalid_name));
    assert_eq!(
        wrong_password.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
}

#[tokio::test]
async fn logout_current_kills_only_that_token() {
    let app = spawn_app().await;
    let first = app.user_with_token("kvothe").await;
    let second = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(
        app.send("DELETE", "/v1/sessions/current", Some(&first))
            .await
            .status,
        204
    );
    let rejected = app.me(&first).await;
    assert_problem(&rejected, 401);
    assert!(
        rejected
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(app.me(&second).await.status, 200);
}

#[tokio::test]
async fn logout_current_is_idempotent_for_a_genuine_token() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    for _ in 0..2 {
        assert_eq!(
            app.send("DELETE", "/v1/sessions/current", Some(&token))
                .await
                .status,
            204
        );
    }
    assert_eq!(app.store().denylist_len().unwrap(), 1);
}

#[tokio::test]
async fn logout_everywhere_kills_every_token_then_login_works_again() {
    let app = spawn_app().await;
    let first = app.user_with_token("kvothe").await;
    let second = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(
        app.send("DELETE", "/v1/sessions", Some(&first))
            .await
            .status,
        204
    );
    assert_problem(&app.me(&first).await, 401);
    assert_problem(&app.me(&second).await, 401);
    let fresh = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(app.me(&fresh).await.status, 200);
}

#[tokio::test]
async fn logout_everywhere_leaves_other_users_alone() {
    let app = spawn_app().await;
    let mine = app.user_with_token("kvothe").await;
    let theirs = app.user_with_token("tpratchett").await;
    app.send("DELETE", "/v1/sessions", Some(&mine)).await;
    assert_eq!(app.me(&theirs).await.status, 200);
}

#[tokio::test]
async fn reading_a_user_by_name_works_only_for_yourself() {
    let app = spawn_app().await;
    let token = app.user_with_token("Kvothe").await;
    app.register("tpratchett", GOOD_PASSWORD).await;
    let own = app.send("GET", "/v1/users/KVOTHE", Some(&token)).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.json()["username"], "Kvothe");
    let other = app.send("GET", "/v1/users/tpratchett", Some(&token)).await;
    let missing = app.send("GET", "/v1/users/nobody", Some(&token)).await;
    assert_problem(&other, 403);
    assert_eq!(
        other.body, missing.body,
        "403 whether or not the user exists"
    );
    assert_eq!(missing.status, 403);
}

#[tokio::test]
async fn expired_denylist_rows_are_pruned() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    app.send("DELETE", "/v1/sessions/current", Some(&token))
        .await;
    let store = app.store();
    assert_eq!(store.denylist_len().unwrap(), 1);
    let exp = app.claims_of(&token).exp;
    app.state.auth.prune(exp - 1).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 1, "not yet expired");
    app.state.auth.prune(exp + 31).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 0, "expired plus leeway");
}
