//! `POST /v1/introspect` (RFC 7662): clients made by the admin CLI, one identical inactive
//! answer for every token that does not stand, 401 without valid client credentials, and a
//! client secret that never reaches a log or the dump.

use crate::crash::{start_binary_with, terminate};
use crate::helpers::*;
use crate::http_client::{self, Reply};
use crate::replicas::admin_cli;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use std::net::SocketAddr;
use tessera::support::clock::ManualClock;

/// `tessera client add NAME` against the app's database: the secret it printed.
pub async fn add_client(db: &str, name: &str) -> String {
    let output = admin_cli(&["client", "add", name, "--db", db], &[]).await;
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    printed
        .split_whitespace()
        .find(|word| word.starts_with("tsc_"))
        .unwrap_or_else(|| panic!("no secret in {printed}"))
        .to_owned()
}

fn basic(name: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{name}:{secret}")))
}

async fn introspect(addr: SocketAddr, authorization: Option<&str>, form: &str) -> Reply {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    http_client::send(addr, "POST", "/v1/introspect", &headers, Some(form.into()))
        .await
        .unwrap()
}

fn db_arg(app: &TestApp) -> String {
    app.db_path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_live_access_token_is_active_with_its_claims() {
    let app = spawn_app().await;
    let secret = add_client(&db_arg(&app), "billing").await;
    let grant = app.user_with_grant("Kvothe").await;
    let (token, _) = tokens(&grant);
    let reply = introspect(
        app.addr,
        Some(&basic("billing", &secret)),
        &format!("token={token}&token_type_hint=access_token"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let claims = app.claims_of(&token);
    assert_eq!(
        reply.json(),
        json!({"active": true, "sub": claims.sub.as_str(), "username": "kvothe",
               "sid": claims.sid.as_str(), "exp": claims.exp, "iat": claims.iat,
               "iss": "tessera", "aud": "tessera-api", "token_type": "Bearer"})
    );
}

/// Revoked, expired, malformed, a refresh token, another issuer's, a forged signature: the
/// same bytes, so a client learns that a token does not stand and nothing about why.
#[tokio::test]
async fn every_kind_of_inactive_token_gets_the_identical_answer() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    let secret = add_client(&db_arg(&app), "billing").await;
    let authorization = basic("billing", &secret);
    let logged_out = app.user_with_grant("kvothe").await;
    let (logged_out_token, refresh_token) = tokens(&logged_out);
    app.send("DELETE", "/v1/sessions/current", Some(&logged_out_token))
        .await;
    let expiring = app.grant("kvothe", GOOD_PASSWORD).await;
    let (expiring_token, _) = tokens(&expiring);
    let live = app.grant("kvothe", GOOD_PASSWORD).await;
    let (live_token, _) = tokens(&live);
    let mut foreign_claims = app.claims_of(&live_token);
    foreign_claims.iss = "someone-else".into();
    let foreign = app.codec().sign(&foreign_claims);
    let mut forged = live_token.clone();
    forged.pop();
    forged.push(if live_token.ends_with('A') { 'B' } else { 'A' });
    clock.advance(app.config.auth.token_ttl + 1);
    let still_live = app.grant("kvothe", GOOD_PASSWORD).await;
    assert_eq!(
        introspect(
            app.addr,
            Some(&authorization),
            &format!("token={}", tokens(&still_live).0)
        )
        .await
        .json()["active"],
        true
    );
    let cases = [
        ("revoked", logged_out_token),
        ("expired", expiring_token),
        ("refresh token", refresh_token),
        ("another issuer's", foreign),
        ("forged signature", forged),
        ("malformed", "not-a-token".to_owned()),
        ("percent-garbage", "%FF%FE".to_owned()),
    ];
    let mut answers = Vec::new();
    for (kind, token) in cases {
        let form = format!("token={}", token.replace('%', "%25"));
        let reply = introspect(app.addr, Some(&authorization), &form).await;
        assert_eq!(reply.status, 200, "{kind}");
        let (status, mut headers, body) = observable(&reply);
        headers.retain(|(name, _)| name != "x-request-id");
        answers.push((kind, status, headers, body));
    }
    let (_, status, headers, body) = &answers[0];
    assert_eq!(&body[..], br#"{"active":false}"#);
    for (kind, s, h, b) in &answers {
        assert_eq!((s, h, b), (status, headers, body), "{kind}");
    }
}

#[tokio::test]
async fn without_valid_client_credentials_the_answer_is_401_basic() {
    let app = spawn_app().await;
    let secret = add_client(&db_arg(&app), "billing").await;
    let token = app.user_with_token("kvothe").await;
    let form = format!("token={token}");
    let bearer = format!("Bearer {token}");
    for (why, authorization) in [
        ("none", None),
        (
            "wrong secret",
            Some(basic("billing", &format!("{secret}x"))),
        ),
        ("unknown client", Some(basic("payroll", &secret))),
        ("a bad name", Some(basic("bill ing", &secret))),
        ("the token as Bearer", Some(bearer.clone())),
        ("not base64", Some("Basic ???".into())),
    ] {
        let reply = introspect(app.addr, authorization.as_deref(), &form).await;
        let body = assert_problem(&reply, 401);
        assert_eq!(body["type"], "urn:tessera:problem:invalid-client", "{why}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Basic realm="tessera", charset="UTF-8""#),
            "{why}"
        );
        assert!(
            !String::from_utf8_lossy(&reply.body).contains(&secret),
            "{why}"
        );
    }
}

#[tokio::test]
async fn bad_forms_get_a_4xx_problem() {
    let app = spawn_app().await;
    let secret = add_client(&db_arg(&app), "billing").await;
    let authorization = basic("billing", &secret);
    let missing = introspect(
        app.addr,
        Some(&authorization),
        "token_type_hint=access_token",
    )
    .await;
    let body = assert_problem(&missing, 400);
    assert_eq!(error_codes(&body), [("token".into(), "missing".into())]);
    let twice = introspect(app.addr, Some(&authorization), "token=a&token=b").await;
    assert_problem(&twice, 400);
    let json_body = http_client::send(
        app.addr,
        "POST",
        "/v1/introspect",
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        Some(br#"{"token":"x"}"#.to_vec()),
    )
    .await
    .unwrap();
    let body = assert_problem(&json_body, 415);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("x-www-form-urlencoded")
    );
    let get = app.send("GET", "/v1/introspect", None).await;
    assert_problem(&get, 405);
}

/// `tessera client remove` in another process while the server runs: the very next request of
/// that client is refused; `client list` never shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_client_is_refused_at_once() {
    let app = spawn_app().await;
    let db = db_arg(&app);
    let secret = add_client(&db, "billing").await;
    let other = add_client(&db, "payroll").await;
    let again = admin_cli(&["client", "add", "billing", "--db", &db], &[]).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{again:?}"
    );
    let token = app.user_with_token("kvothe").await;
    let form = format!("token={token}");
    let listed = admin_cli(&["client", "list", "--db", &db], &[]).await;
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("billing") && listed.contains("payroll"),
        "{listed}"
    );
    assert!(
        !listed.contains(&secret) && !listed.contains(&other),
        "{listed}"
    );
    let allowed = introspect(app.addr, Some(&basic("billing", &secret)), &form).await;
    assert_eq!(allowed.json()["active"], true);
    let removed = admin_cli(&["client", "remove", "billing", "--db", &db], &[]).await;
    assert!(removed.status.success(), "{removed:?}");
    let refused = introspect(app.addr, Some(&basic("billing", &secret)), &form).await;
    assert_eq!(refused.status, 401);
    let unaffected = introspect(app.addr, Some(&basic("payroll", &other)), &form).await;
    assert_eq!(unaffected.json()["active"], true);
    let gone = admin_cli(&["client", "remove", "billing", "--db", &db], &[]).await;
    assert!(!gone.status.success());
}

/// The secret is printed once by `client add` and then appears nowhere: not in the server's
/// log (successes and failures logged), not in `tessera db dump`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_secret_never_reaches_the_log_or_the_dump() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log, reader) =
        start_binary_with(dir.path(), "info", "text", &["--login-rate", "0"]);
    let db = dir.path().join("tessera.db").to_string_lossy().into_owned();
    let secret = add_client(&db, "billing").await;
    let body = json!({"username": "kvothe", "full_name": "Patrick Rothfuss", "password": GOOD_PASSWORD,
                      "mothers_favorite_search_engine": "Duck Duck Go"});
    http_client::send_json(addr, "POST", "/v1/users", None, &body)
        .await
        .unwrap();
    let login = json!({"username": "kvothe", "password": GOOD_PASSWORD});
    let grant = http_client::send_json(addr, "POST", "/v1/sessions", None, &login)
        .await
        .unwrap()
        .json();
    let (token, _) = tokens(&grant);
    let form = format!("token={token}");
    assert_eq!(
        introspect(addr, Some(&basic("billing", &secret)), &form)
            .await
            .json()["active"],
        true
    );
    let wrong = format!("{}x", &secret);
    assert_eq!(
        introspect(addr, Some(&basic("billing", &wrong)), &form)
            .await
            .status,
        401
    );
    assert_eq!(
        introspect(addr, Some(&basic("billing", &secret)), "token=nonsense")
            .await
            .json()["active"],
        false
    );
    let dump = admin_cli(&["db", "dump", "--db", &db], &[]).await;
    assert!(dump.status.success());
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(
        dump.contains("introspection_clients"),
        "the table is dumped"
    );
    assert_eq!(terminate(&mut child).code(), Some(0));
    reader.join().unwrap();
    let everything = log.lock().unwrap().join("\n");
    assert!(everything.contains("introspection refused"), "{everything}");
    let secret_part = &secret["tsc_".len()..];
    assert!(
        !everything.contains(secret_part),
        "the secret reached the log"
    );
    assert!(!dump.contains(secret_part), "the secret reached the dump");
    assert!(!everything.contains(&token), "a token reached the log");
}
