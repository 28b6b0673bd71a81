//! The attack suite, against a running server: every case is a 4xx (401 for token attacks),
//! never a 500, and no failed attempt revokes or locks anything.

use crate::helpers::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Sha256, Sha512};
use tessera::token::JwkSet;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn server_key(app: &TestApp) -> (String, Vec<u8>) {
    let set = JwkSet::load(&app.keys_path).unwrap();
    (
        set.keys[0].kid.clone(),
        URL_SAFE_NO_PAD.decode(&set.keys[0].k).unwrap(),
    )
}

fn hs256(key: &[u8], input: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

fn hs512(key: &[u8], input: &str) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

/// A token with this header and payload, MACed with HS256 under `key`.
fn forge(header: &Value, payload: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let signature = hs256(key, &input);
    format!("{input}.{signature}")
}

fn payload_of(token: &str) -> Value {
    let segment = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

async fn assert_token_refused(app: &TestApp, token: &str, case: &str) {
    let reply = app.me(token).await;
    assert_eq!(reply.status, 401, "{case}: {:?}", reply.json());
    assert_problem(&reply, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token"),
        "{case}"
    );
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_all_401() {
    let app = spawn_app().await;
    let valid = app.user_with_token("victim").await;
    let (kid, key) = server_key(&app);
    let claims = payload_of(&valid);
    let header = |alg: &str| json!({"alg": alg, "typ": "at+jwt", "kid": kid});
    let mut cases: Vec<(String, String)> = Vec::new();

    for alg in ["none", "None", "nOnE"] {
        let unsigned = format!(
            "{}.{}.",
            b64(header(alg).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        cases.push((format!("alg {alg}"), unsigned));
    }
    let hs512_input = format!(
        "{}.{}",
        b64(header("HS512").to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    cases.push((
        "HS512".into(),
        format!("{hs512_input}.{}", hs512(&key, &hs512_input)),
    ));
    // The classic key-confusion attack: RS256 "verified" with the HMAC secret as public key.
    cases.push((
        "RS256 with HMAC key".into(),
        forge(&header("RS256"), &claims, &key),
    ));
    cases.push((
        "lowercase hs256".into(),
        forge(&header("hs256"), &claims, &key),
    ));
    let (signing_input, _) = valid.rsplit_once('.').unwrap();
    cases.push(("empty signature".into(), format!("{signing_input}.")));
    cases.push(("stripped signature".into(), signing_input.to_owned()));
    cases.push((
        "MAC from another key".into(),
        forge(&header("HS256"), &claims, &[7u8; 32]),
    ));
    for extra in ["jwk", "jku", "x5u", "x5c", "crit"] {
        let mut h = header("HS256");
        h[extra] = json!("https://attacker.example/key");
        cases.push((format!("{extra} header"), forge(&h, &claims, &key)));
    }
    for bad_kid in ["../../dev/null", "' OR '1'='1", "x'; DROP TABLE users; --"] {
        let h = json!({"alg": "HS256", "typ": "at+jwt", "kid": bad_kid});
        cases.push((format!("kid {bad_kid}"), forge(&h, &claims, &key)));
    }
    let mut wrong_typ = header("HS256");
    wrong_typ["typ"] = json!("JWT");
    cases.push(("typ JWT".into(), forge(&wrong_typ, &claims, &key)));
    for (claim, value) in [
        ("sub", json!("someone-else")),
        ("gen", json!(99)),
        ("exp", json!(4_000_000_000i64)),
    ] {
        let mut tampered = claims.clone();
        tampered[claim] = value;
        let (head, _, signature) = split3(&valid);
        let token = format!(
            "{head}.{}.{signature}",
            b64(tampered.to_string().as_bytes())
        );
        cases.push((format!("tampered {claim}"), token));
    }
    let now = tessera::support::clock::now();
    for (name, claim, value) in [
        ("expired", "exp", json!(now - 120)),
        ("nbf in the future", "nbf", json!(now + 600)),
        ("wrong iss", "iss", json!("evil")),
        ("wrong aud", "aud", json!("other-api")),
    ] {
        let mut c = claims.clone();
        c[claim] = value;
        if name == "expired" {
            c["iat"] = json!(now - 1000);
            c["nbf"] = json!(now - 1000);
        }
        cases.push((name.into(), forge(&header("HS256"), &c, &key)));
    }

    for (case, token) in &cases {
        assert_token_refused(&app, token, case).await;
    }
    // Scanners replay a valid token after tampered ones: nothing above revoked or locked it.
    assert_eq!(app.me(&valid).await.status, 200);
    assert_eq!(app.store().denylist_len().unwrap(), 0);
}

fn split3(token: &str) -> (&str, &str, &str) {
    let mut parts = token.split('.');
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

#[tokio::test]
async fn revoked_token_reencoded_non_canonically_stays_revoked() {
    let app = spawn_app().await;
    let token = app.user_with_token("victim").await;
    assert_eq!(
        app.send("DELETE", "/v1/sessions/current", Some(&token))
            .await
            .status,
        204
    );
    let (head, payload, signature) = split3(&token);
    // Same bytes for a lenient decoder: padding, or set unused trailing bits in the MAC.
    let last = signature.chars().last().unwrap();
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = ALPHABET.find(last).unwrap();
    let flipped = ALPHABET.chars().nth(index ^ 0b11).unwrap();
    let variants = [
        format!("{head}.{payload}.{signature}="),
        format!("{head}=.{payload}.{signature}"),
        format!(
            "{head}.{payload}.{}{flipped}",
            &signature[..signature.len() - 1]
        ),
    ];
    for variant in variants {
        assert_token_refused(&app, &variant, "non-canonical").await;
    }
}

#[tokio::test]
async fn deleted_users_and_old_generation_tokens_are_401() {
    let app = spawn_app().await;
    let old = app.user_with_token("victim").await;
    let current = app.token("victim", GOOD_PASSWORD).await;
    app.send("DELETE", "/v1/sessions", Some(&current)).await;
    assert_token_refused(&app, &old, "old generation").await;

    let doomed = app.user_with_token("doomed").await;
    assert_eq!(app.delete_account(&doomed, GOOD_PASSWORD).await.status, 204);
    assert_token_refused(&app, &doomed, "deleted user").await;
    // Re-registering the name makes a new account: the old token still fails.
    app.register("doomed", GOOD_PASSWORD).await;
    assert_token_refused(&app, &doomed, "deleted then re-registered").await;
}

#[tokio::test]
async fn token_in_the_query_string_is_refused() {
    let app = spawn_app().await;
    let token = app.user_with_token("victim").await;
    let reply = app
        .send("GET", &format!("/v1/users/me?access_token={token}"), None)
        .await;
    assert_problem(&reply, 400);
    let reply = app
        .send(
            "GET",
            &format!("/v1/users/me?access_token={token}"),
            Some(&token),
        )
        .await;
    assert_problem(&reply, 400);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = spawn_app().await;
    let token = app.user_with_token("victim").await;
    let bearer = format!("Bearer {token}");
    let reply = app
        .with_headers(
            "GET",
            "/v1/users/me",
            &[("authorization", &bearer), ("authorization", &bearer)],
            None,
        )
        .await;
    assert_problem(&reply, 400);
}

#[tokio::test]
async fn a_100_kb_token_is_a_4xx() {
    let app = spawn_app().await;
    let huge = format!("Bearer {}", "a".repeat(100 * 1024));
    let reply = app
        .with_headers("GET", "/v1/users/me", &[("authorization", &huge)], None)
        .await;
    assert_problem(&reply, 431);
    let big = format!(
        "Bearer {}.{}.{}",
        "a".repeat(3000),
        "b".repeat(3000),
        "c".repeat(43)
    );
    let reply = app
        .with_headers("GET", "/v1/users/me", &[("authorization", &big)], None)
        .await;
    assert_problem(&reply, 401);
}

#[tokio::test]
async fn sql_injection_in_username_fields_is_just_data() {
    let app = spawn_app().await;
    for name in ["x'); DROP TABLE users; --", "' OR '1'='1"] {
        let reply = app.register(name, GOOD_PASSWORD).await;
        assert_problem(&reply, 422);
        assert_problem(&app.login(name, GOOD_PASSWORD).await, 401);
    }
    let name = "robert');DROP--";
    assert_eq!(app.register(name, GOOD_PASSWORD).await.status, 201);
    app.token(name, GOOD_PASSWORD).await;
    assert_problem(&app.login("' OR 1=1 --", "x").await, 401);
    assert_eq!(app.store().list_users().unwrap().len(), 1);
}

#[tokio::test]
async fn a_1_mb_password_is_a_4xx() {
    let app = spawn_app().await;
    app.register("victim", GOOD_PASSWORD).await;
    let reply = app.login("victim", &"p".repeat(1024 * 1024)).await;
    assert_problem(&reply, 413);
}

#[tokio::test]
async fn hostile_bodies_are_4xx() {
    let app = spawn_app().await;
    let nested = format!("{{\"a\":{}{}}}", "{\"a\":".repeat(1500), "}".repeat(1500));
    for body in [
        nested.as_bytes(),
        b"\xc3\x28",
        b"{\"username\":\"\xed\xa0\x80\"}",
    ] {
        let reply = app
            .with_headers(
                "POST",
                "/v1/users",
                &[("content-type", "application/json")],
                Some(body),
            )
            .await;
        assert_problem(&reply, 400);
    }
}
