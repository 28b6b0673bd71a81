//! Each bad-input class gets its status and a problem+json body — never a 500.

use crate::helpers::*;

const JSON: (&str, &str) = ("content-type", "application/json");

async fn post_raw(app: &TestApp, path: &str, body: &[u8]) -> crate::http_client::Reply {
    app.with_headers("POST", path, &[JSON], Some(body)).await
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in [
        &b"{"[..],
        b"{\"username\":}",
        b"not json",
        b"",
        b"{} trailing",
    ] {
        assert_problem(&post_raw(&app, "/v1/users", body).await, 400);
    }
}

#[tokio::test]
async fn non_object_bodies_are_400() {
    let app = spawn_app().await;
    for body in [&b"[]"[..], b"null", b"\"kvothe\"", b"42"] {
        assert_problem(&post_raw(&app, "/v1/sessions", body).await, 400);
    }
}

#[tokio::test]
async fn wrong_types_missing_null_and_unknown_fields_are_400_naming_them() {
    let app = spawn_app().await;
    let reply = post_raw(
        &app,
        "/v1/sessions",
        br#"{"username": 42, "password": null, "admin": true}"#,
    )
    .await;
    let body = assert_problem(&reply, 400);
    assert_eq!(
        error_codes(&body),
        [
            ("username".into(), "wrong_type".into()),
            ("password".into(), "null".into()),
            ("admin".into(), "unknown_field".into()),
        ]
    );
    let reply = post_raw(&app, "/v1/sessions", br#"{"username":"kvothe"}"#).await;
    let body = assert_problem(&reply, 400);
    assert_eq!(error_codes(&body), [("password".into(), "missing".into())]);
}

#[tokio::test]
async fn duplicate_members_are_400() {
    let app = spawn_app().await;
    let body = br#"{"username":"a","username":"b","password":"x"}"#;
    let reply = post_raw(&app, "/v1/sessions", body).await;
    let problem = assert_problem(&reply, 400);
    // The member is named; its values are never echoed.
    assert_eq!(
        error_codes(&problem),
        [("username".into(), "duplicate_member".into())]
    );
    assert!(!reply.body.windows(3).any(|w| w == b"\"b\""));
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin1",
    ] {
        let reply = app
            .with_headers(
                "POST",
                "/v1/users",
                &[("content-type", content_type)],
                Some(b"{}"),
            )
            .await;
        assert_problem(&reply, 415);
    }
    let reply = app
        .with_headers("POST", "/v1/users", &[], Some(b"{}"))
        .await;
    assert_problem(&reply, 415);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let password = "x".repeat(1024 * 1024);
    let body = format!(r#"{{"username":"kvothe","password":"{password}"}}"#);
    assert_problem(&post_raw(&app, "/v1/sessions", body.as_bytes()).await, 413);
}

#[tokio::test]
async fn password_over_the_maximum_is_422_without_hashing() {
    let app = spawn_app().await;
    let reply = app.register("kvothe", &"ab1!".repeat(257)).await;
    let body = assert_problem(&reply, 422);
    assert_eq!(error_codes(&body), [("password".into(), "too_long".into())]);
}

#[tokio::test]
async fn invalid_utf8_body_is_400() {
    let app = spawn_app().await;
    let reply = post_raw(
        &app,
        "/v1/sessions",
        b"{\"username\":\"\xff\xfe\",\"password\":\"x\"}",
    )
    .await;
    assert_problem(&reply, 400);
}

#[tokio::test]
async fn deeply_nested_json_is_400() {
    let app = spawn_app().await;
    let body = format!("{{\"username\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    assert_problem(&post_raw(&app, "/v1/sessions", body.as_bytes()).await, 400);
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    assert_problem(&app.send("GET", "/v1/nothing", None).await, 404);
    assert_problem(&app.send("GET", "/v1/users/a/b", None).await, 404);
    let reply = app.send("PATCH", "/v1/users/me", None).await;
    assert_problem(&reply, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, DELETE"));
    let reply = app.send("PUT", "/v1/sessions", None).await;
    assert_eq!(reply.header("allow"), Some("GET, HEAD, POST, DELETE"));
    let reply = app.send("GET", "/v1/sessions/refresh", None).await;
    assert_eq!(reply.header("allow"), Some("POST"));
}

/// HEAD works wherever GET does (RFC 9110 §9.3.2).
#[tokio::test]
async fn head_works_wherever_get_does() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    for (path, token) in [
        ("/healthz", None),
        ("/openapi.json", None),
        ("/v1/users/me", Some(token.as_str())),
        ("/v1/users/kvothe", Some(token.as_str())),
    ] {
        let reply = app.send("HEAD", path, token).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.body.is_empty(), "{path}: HEAD has no body");
    }
    assert_eq!(app.send("HEAD", "/v1/users/me", None).await.status, 401);
}

#[tokio::test]
async fn trace_is_405() {
    let app = spawn_app().await;
    for path in ["/v1/users/me", "/v1/sessions", "/healthz"] {
        assert_problem(&app.send("TRACE", path, None).await, 405);
    }
}

#[tokio::test]
async fn missing_credentials_get_a_bare_bearer_challenge() {
    let app = spawn_app().await;
    let reply = app.send("GET", "/v1/users/me", None).await;
    assert_problem(&reply, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
    let basic = app
        .with_headers(
            "GET",
            "/v1/users/me",
            &[("authorization", "Basic a3ZvdGhlOng=")],
            None,
        )
        .await;
    assert_eq!(
        basic.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
}

#[tokio::test]
async fn malformed_authorization_header_is_400_invalid_request() {
    let app = spawn_app().await;
    for value in ["Bearer", "Bearer  two spaces", "Bearer a b"] {
        let reply = app
            .with_headers("GET", "/v1/users/me", &[("authorization", value)], None)
            .await;
        assert_problem(&reply, 400);
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );
    }
}

#[tokio::test]
async fn every_response_is_nosniff_no_store_with_a_content_type() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    for reply in [
        app.me(&token).await,
        app.send("GET", "/nope", None).await,
        app.send("GET", "/healthz", None).await,
        app.login("kvothe", "wrong wrong wrong").await,
    ] {
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(reply.header("content-type").is_some());
        assert!(reply.header("x-request-id").is_some());
    }
}
