//! `/v1/forward-auth`: what a reverse proxy asks before each request of the app it protects.
//! Tessera alone here; `tests/api/gateway.rs` puts real nginx and Caddy in front.

use crate::helpers::*;
use crate::http_client::Reply;
use serde_json::{Value, json};
use tessera::support::clock::ManualClock;

/// A full name no header could carry as it is: non-ASCII, spaces, a `%`, and what would forge a
/// header line if it were copied raw.
pub const AWKWARD_FULL_NAME: &str = "Zoë Ærøskøbing 李 \"100%\", Esq.";

/// Registers `username` with [`AWKWARD_FULL_NAME`] and logs in: the grant.
pub async fn awkward_user(app: &TestApp, username: &str) -> Value {
    let reply = app
        .post_json(
            "/v1/users",
            &json!({"username": username, "full_name": AWKWARD_FULL_NAME,
                    "password": GOOD_PASSWORD, "mothers_favorite_search_engine": "Kagi"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    app.grant(username, GOOD_PASSWORD).await
}

/// Every way a token stops standing, done through the API as a user would (or the admin CLI).
#[derive(Debug, Clone, Copy)]
pub enum Revocation {
    Logout,
    LogoutEverywhere,
    PasswordChange,
    RefreshReuse,
    EndSessionById,
}

pub const EVERY_REVOCATION: [Revocation; 5] = [
    Revocation::Logout,
    Revocation::LogoutEverywhere,
    Revocation::PasswordChange,
    Revocation::RefreshReuse,
    Revocation::EndSessionById,
];

/// Revokes `grant`'s access token the way `how` says. `clock` is the app's: a refresh-token
/// replay counts as reuse only once the grace has passed.
pub async fn revoke(app: &TestApp, clock: &ManualClock, grant: &Value, how: Revocation) {
    let (token, refresh) = tokens(grant);
    let status = match how {
        Revocation::Logout => {
            app.send("DELETE", "/v1/sessions/current", Some(&token))
                .await
                .status
        }
        Revocation::LogoutEverywhere => {
            app.send("DELETE", "/v1/sessions", Some(&token))
                .await
                .status
        }
        Revocation::PasswordChange => {
            let body = json!({"current_password": GOOD_PASSWORD,
                              "new_password": "a brand new password of the user"});
            app.put_json("/v1/users/me/password", &token, &body)
                .await
                .status
        }
        Revocation::RefreshReuse => {
            assert_eq!(app.refresh(&refresh).await.status, 200);
            clock.advance(app.config.auth.sessions.reuse_grace + 1);
            app.refresh(&refresh).await.status
        }
        Revocation::EndSessionById => {
            let id = grant["session_id"].as_str().unwrap();
            app.send("DELETE", &format!("/v1/sessions/{id}"), Some(&token))
                .await
                .status
        }
    };
    let expected = match how {
        Revocation::PasswordChange => 200,
        Revocation::RefreshReuse => 401,
        _ => 204,
    };
    assert_eq!(status, expected, "{how:?}");
}

async fn ask(app: &TestApp, method: &str, token: Option<&str>) -> Reply {
    app.send(method, "/v1/forward-auth", token).await
}

#[tokio::test]
async fn a_live_token_gets_200_and_identity_headers_that_are_visible_ascii() {
    let app = spawn_app().await;
    let grant = awkward_user(&app, "Zoë").await;
    let (token, _) = tokens(&grant);
    let reply = ask(&app, "GET", Some(&token)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(
        reply.header("remote-user"),
        Some("zo%C3%AB"),
        "canonical, encoded"
    );
    let name = reply.header("remote-name").unwrap();
    let decoded = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, AWKWARD_FULL_NAME);
    assert!(name.bytes().all(|b| (b'!'..=b'~').contains(&b)), "{name}");
    let claims = app.claims_of(&token);
    assert_eq!(reply.header("remote-user-id"), Some(claims.sub.as_str()));
    assert_eq!(
        reply.header("remote-session-id"),
        grant["session_id"].as_str()
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn no_token_or_a_bad_one_gets_the_bearer_challenge() {
    let app = spawn_app().await;
    let missing = ask(&app, "GET", None).await;
    assert_problem(&missing, 401);
    assert!(
        missing
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    assert!(missing.header("remote-user").is_none());
    let forged = ask(&app, "GET", Some("eyJhbGciOiJub25lIn0.e30.")).await;
    assert_problem(&forged, 401);
    assert!(
        forged
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
}

/// Proxies send the original request's method, and may send its `Content-Length` or a body:
/// every method is answered alike and the body is never read (nor waited for).
#[tokio::test]
async fn any_method_with_any_body_is_answered_without_reading_the_body() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let authorization = format!("Bearer {token}");
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let reply = ask(&app, method, Some(&token)).await;
        assert_eq!(reply.status, 200, "{method}");
        assert_eq!(reply.header("remote-user"), Some("kvothe"), "{method}");
    }
    let big = vec![b'x'; 1 << 20];
    let reply = app
        .with_headers(
            "POST",
            "/v1/forward-auth",
            &[
                ("authorization", &authorization),
                ("content-type", "application/json"),
            ],
            Some(&big),
        )
        .await;
    assert_eq!(reply.status, 200, "a body past the API's limit is not read");
    // A Content-Length whose body never comes: the answer does not wait for it.
    let head = format!(
        "POST /v1/forward-auth HTTP/1.1\r\nhost: t\r\nauthorization: {authorization}\r\n\
         content-length: 5000\r\n\r\n"
    );
    let (response, _) = app.raw(head.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// The very next request after any revocation is refused.
#[tokio::test]
async fn every_revocation_is_refused_on_the_next_request() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    for (i, how) in EVERY_REVOCATION.into_iter().enumerate() {
        let name = format!("user{i}");
        let grant = app.user_with_grant(&name).await;
        let (token, _) = tokens(&grant);
        assert_eq!(ask(&app, "GET", Some(&token)).await.status, 200, "{how:?}");
        revoke(&app, &clock, &grant, how).await;
        let refused = ask(&app, "GET", Some(&token)).await;
        assert_eq!(refused.status, 401, "{how:?}");
        assert!(refused.header("remote-user").is_none());
    }
}

/// Requests a check may need before the in-memory view is current: a commit of the server's own
/// (its signing-lease renewal, pruning) can land between two checks, and the next request
/// catches the view up.
const CATCH_UP_REQUESTS: usize = 20;

/// The memory path's answer for `token`, asking the server again (which catches the view up)
/// while the view is a commit behind and the memory path declines. `expected` is the status
/// those requests get.
async fn from_memory(
    app: &TestApp,
    token: &str,
    expected: u16,
) -> tessera::auth::Result<Option<tessera::auth::Authenticated>> {
    let now = app.state.clock.now();
    for _ in 0..CATCH_UP_REQUESTS {
        match app.state.auth.authenticate_in_memory(token, now) {
            Ok(None) => assert_eq!(ask(app, "GET", Some(token)).await.status, expected),
            answered => return answered,
        }
    }
    Ok(None)
}

/// Once the view has caught up, the memory path refuses `token` itself; it never accepts it.
async fn assert_refused_from_memory(app: &TestApp, token: &str) {
    match from_memory(app, token, 401).await {
        Err(_) => {}
        Ok(Some(_)) => panic!("a revoked token was accepted from memory"),
        Ok(None) => panic!("the memory path never caught up with the revocation"),
    }
}

/// The check every protected request pays is answered from the in-memory view once the user is
/// known — no blocking work and no storage read — and a revocation is seen there at once.
#[tokio::test]
async fn a_known_users_token_is_checked_from_memory() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    assert_eq!(ask(&app, "GET", Some(&token)).await.status, 200);
    let caller = from_memory(&app, &token, 200)
        .await
        .unwrap()
        .expect("answered from memory");
    assert_eq!(caller.profile.username.canonical(), "kvothe");
    assert_eq!(
        app.send("DELETE", "/v1/sessions/current", Some(&token))
            .await
            .status,
        204
    );
    assert_refused_from_memory(&app, &token).await;
}

/// Another process revoking (the admin CLI, on its own connection) between two checks: the
/// memory path never accepts the token again. While its view is a commit behind it declines
/// (storage answers, and refuses); once a request has caught the view up, it refuses itself.
#[tokio::test]
async fn a_revocation_by_another_process_is_never_accepted_from_memory() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    assert_eq!(ask(&app, "GET", Some(&token)).await.status, 200);
    assert!(from_memory(&app, &token, 200).await.unwrap().is_some());
    let revoke = tessera::cli::args::UserAction::Revoke {
        username: "kvothe".into(),
    };
    tessera::cli::admin::user(&revoke, &app.db).unwrap();
    let now = app.state.clock.now();
    assert!(
        !matches!(
            app.state.auth.authenticate_in_memory(&token, now),
            Ok(Some(_))
        ),
        "a token revoked by another process was accepted from memory"
    );
    assert_refused_from_memory(&app, &token).await;
}
