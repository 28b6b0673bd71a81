//! Refresh tokens over real HTTP: rotation, two tabs refreshing at once, replay after the grace
//! window, idle and absolute expiry on the injected clock, one answer for every bad token, and
//! tokens that never leave the response they were issued in.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use tessera::domain::ids::SessionId;
use tessera::support::clock::ManualClock;

async fn metrics(app: &TestApp) -> String {
    let reply = crate::http_client::send(app.metrics_addr, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn keys_of(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_keeps_the_session() {
    let app = spawn_app().await;
    let login = app.user_with_grant("kvothe").await;
    let (_, first) = tokens(&login);
    let reply = app.refresh(&first).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let refreshed = reply.json();
    assert_eq!(
        keys_of(&refreshed),
        keys_of(&login),
        "the same body shape as a login"
    );
    let (access, second) = tokens(&refreshed);
    assert_ne!(second, first);
    assert_eq!(refreshed["session_id"], login["session_id"]);
    assert_eq!(
        app.claims_of(&access).sid,
        login["session_id"].as_str().unwrap()
    );
    assert_eq!(app.me(&access).await.status, 200);
    // The new one rotates in turn.
    let third = app.refresh(&second).await;
    assert_eq!(third.status, 200);
    assert_ne!(tokens(&third.json()).1, second);
    app.grant("kvothe", GOOD_PASSWORD).await;
    let text = metrics(&app).await;
    assert!(text.contains("tessera_sessions_live 2"), "{text}");
    assert!(
        text.contains("tessera_refreshes_total{outcome=\"rotated\"} 2"),
        "{text}"
    );
}

/// Two tabs (here eight) refresh with one token at the same moment: all succeed, all end up
/// holding the session's one current refresh token, and every access token works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_one_token_all_get_the_same_new_token() {
    let clock = ManualClock::starting_now();
    let app = Arc::new(spawn_app_with(|c| c.clock = clock.clone()).await);
    let (_, first) = tokens(&app.user_with_grant("kvothe").await);
    let replies = futures_join_all((0..8).map(|_| {
        let app = app.clone();
        let first = first.clone();
        async move { app.refresh(&first).await }
    }))
    .await;
    let mut refresh_tokens = HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        let (access, refresh) = tokens(&reply.json());
        assert_eq!(app.me(&access).await.status, 200);
        refresh_tokens.insert(refresh);
    }
    assert_eq!(refresh_tokens.len(), 1, "one current token for every tab");
    let current = refresh_tokens.into_iter().next().unwrap();
    assert_ne!(current, first);
    let text = metrics(&app).await;
    assert!(
        text.contains("tessera_refreshes_total{outcome=\"rotated\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tessera_refreshes_total{outcome=\"grace\"} 7"),
        "{text}"
    );
    // Both tabs keep working: the shared token rotates normally.
    assert_eq!(app.refresh(&current).await.status, 200);
}

/// Replay after the grace window: the session ends — the replayed token, the current one and
/// every access token it issued are refused on the very next request.
#[tokio::test]
async fn a_replay_after_the_grace_window_ends_the_whole_session() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    let (first_access, first) = tokens(&app.user_with_grant("kvothe").await);
    let (other_access, other_refresh) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
    let (second_access, second) = tokens(&app.refresh(&first).await.json());
    // Within the grace window the superseded token still earns the current one...
    clock.advance(9);
    assert_eq!(tokens(&app.refresh(&first).await.json()).1, second);
    // ...after it, it is a replay.
    clock.advance(1);
    let replay = app.refresh(&first).await;
    let body = assert_problem(&replay, 401);
    assert_eq!(body["type"], "urn:tessera:problem:invalid-refresh-token");
    assert_problem(&app.refresh(&second).await, 401);
    assert_problem(&app.me(&first_access).await, 401);
    assert_problem(&app.me(&second_access).await, 401);
    // The operator's view agrees: the admin store sees the access tokens denylisted.
    let store = app.store();
    for access in [&first_access, &second_access] {
        let claims = app.claims_of(access);
        assert!(
            store
                .token_state(&claims.sub, &claims.jti, &claims.sid)
                .unwrap()
                .unwrap()
                .revoked
                .is_some()
        );
    }
    // The user's other session is not the thief's.
    assert_eq!(app.me(&other_access).await.status, 200);
    assert_eq!(app.refresh(&other_refresh).await.status, 200);
    let text = metrics(&app).await;
    assert!(text.contains("tessera_refresh_reuse_total 1"), "{text}");
}

/// Only the token superseded last gets the grace: one superseded twice is a replay at once.
#[tokio::test]
async fn a_token_superseded_twice_is_a_replay_even_within_the_grace_window() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    let (_, first) = tokens(&app.user_with_grant("kvothe").await);
    let (_, second) = tokens(&app.refresh(&first).await.json());
    let (third_access, _) = tokens(&app.refresh(&second).await.json());
    assert_problem(&app.refresh(&first).await, 401);
    assert_problem(&app.me(&third_access).await, 401);
}

#[tokio::test]
async fn idle_sessions_end_and_refreshing_keeps_them_alive() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.auth.sessions.idle_timeout = 1000;
    })
    .await;
    let (_, mut refresh) = tokens(&app.user_with_grant("kvothe").await);
    for _ in 0..3 {
        clock.advance(999);
        let reply = app.refresh(&refresh).await;
        assert_eq!(reply.status, 200, "refreshed within the idle timeout");
        refresh = tokens(&reply.json()).1;
    }
    clock.advance(1000);
    assert_problem(&app.refresh(&refresh).await, 401);
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime_and_access_tokens_never_outlive_it() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.auth.sessions.max_age = 2000;
    })
    .await;
    let login = app.user_with_grant("kvothe").await;
    let (_, mut refresh) = tokens(&login);
    clock.advance(1500);
    let reply = app.refresh(&refresh).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["expires_in"], 500, "cut at the session's end");
    assert_eq!(body["refresh_expires_at"], body["expires_at"]);
    refresh = tokens(&body).1;
    clock.advance(500);
    assert_problem(&app.refresh(&refresh).await, 401);
}

/// Unknown, malformed, expired, revoked, reused: one answer, byte for byte (minus the date and
/// the request id).
#[tokio::test]
async fn every_bad_refresh_token_gets_the_same_answer() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.auth.sessions.max_age = 5000;
    })
    .await;
    let grant = app.user_with_grant("kvothe").await;
    let (_, reused) = tokens(&grant);
    let (_, current) = tokens(&app.refresh(&reused).await.json());
    clock.advance(60);
    let reuse = app.refresh(&reused).await;
    let (access, logged_out) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
    app.send("DELETE", "/v1/sessions/current", Some(&access))
        .await;
    let revoked = app.refresh(&logged_out).await;
    let (_, expiring) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
    clock.advance(5000);
    let expired = app.refresh(&expiring).await;
    let unknown_session = app.codec().refresh_token(&SessionId::random(), 0).unwrap();
    let unknown = app.refresh(unknown_session.expose()).await;
    let malformed = app.refresh("tsr_not-a-token").await;
    let foreign_key = tessera::token::Codec::new(
        tessera::token::Keyring::from_secret("other", &[3; 32]).unwrap(),
        app.codec().policy().clone(),
    )
    .refresh_token(&SessionId::random(), 0)
    .unwrap();
    let forged = app.refresh(foreign_key.expose()).await;
    let ended = app.refresh(&current).await;
    let reference = assert_problem(&reuse, 401);
    assert_eq!(
        reference["type"],
        "urn:tessera:problem:invalid-refresh-token"
    );
    assert_eq!(
        reuse.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
    for (name, reply) in [
        ("revoked", &revoked),
        ("expired", &expired),
        ("unknown", &unknown),
        ("malformed", &malformed),
        ("forged", &forged),
        ("ended by reuse", &ended),
    ] {
        assert_eq!(observable(reply), observable(&reuse), "{name}");
    }
}

#[tokio::test]
async fn refresh_bodies_are_checked_like_every_other() {
    let app = spawn_app().await;
    let missing = app.post_json("/v1/sessions/refresh", &json!({})).await;
    assert_problem(&missing, 400);
    let wrong_type = app
        .post_json("/v1/sessions/refresh", &json!({"refresh_token": 7}))
        .await;
    assert_problem(&wrong_type, 400);
    let extra = app
        .post_json(
            "/v1/sessions/refresh",
            &json!({"refresh_token": "tsr_x", "access_token": "y"}),
        )
        .await;
    assert_problem(&extra, 400);
    let huge = "a".repeat(64 * 1024);
    let too_large = app
        .post_json("/v1/sessions/refresh", &json!({"refresh_token": huge}))
        .await;
    assert_problem(&too_large, 413);
}

#[tokio::test]
async fn refreshes_have_their_own_per_ip_bucket() {
    let app = spawn_app_with(|c| c.refresh_limit = (2, 0.001)).await;
    let (_, mut refresh) = tokens(&app.user_with_grant("kvothe").await);
    for _ in 0..2 {
        let reply = app.refresh(&refresh).await;
        assert_eq!(reply.status, 200);
        refresh = tokens(&reply.json()).1;
    }
    let limited = app.refresh(&refresh).await;
    assert_problem(&limited, 429);
    assert!(limited.header("retry-after").is_some());
    // Logins draw from their own bucket.
    assert_eq!(app.login("kvothe", GOOD_PASSWORD).await.status, 200);
}

/// The database holds no token material: a dump shows sessions, never a refresh token or the
/// tag that makes one.
#[tokio::test]
async fn refresh_tokens_never_reach_the_database() {
    let app = spawn_app().await;
    let (_, first) = tokens(&app.user_with_grant("kvothe").await);
    let (_, second) = tokens(&app.refresh(&first).await.json());
    let dump = app.store().dump().unwrap();
    assert!(dump.contains("INSERT INTO \"sessions\""), "{dump}");
    for token in [&first, &second] {
        let secret_part = token.strip_prefix("tsr_").unwrap();
        assert!(!dump.contains(secret_part));
        assert!(!dump.contains(&secret_part[secret_part.len() - 20..]));
    }
}

/// Tokens minted before sessions existed carry no `sid`: refused, and the client logs in again.
#[tokio::test]
async fn tokens_from_before_sessions_are_refused() {
    let app = spawn_app().await;
    let login = app.user_with_grant("kvothe").await;
    let claims = app.claims_of(login["access_token"].as_str().unwrap());
    let set = tessera::token::JwkSet::load(&app.keys_path).unwrap();
    let key = &set.keys[0];
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(key.kid.clone());
    let legacy = json!({
        "iss": claims.iss, "aud": claims.aud, "sub": claims.sub, "iat": claims.iat,
        "nbf": claims.nbf, "exp": claims.exp, "jti": "legacy-token-id", "gen": claims.r#gen,
    });
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&key.k)
        .unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &legacy,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    let reply = app.me(&token).await;
    assert_problem(&reply, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(app.login("kvothe", GOOD_PASSWORD).await.status, 200);
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}
