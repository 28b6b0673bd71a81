//! `--trusted-proxy`: behind a trusted proxy the client is the address it forwarded — for the
//! per-client limits, the session list and the logs — and a peer that is not trusted cannot
//! choose its address by sending `X-Forwarded-For`.

use crate::helpers::*;
use serde_json::{Value, json};
use tessera::http::client_address::{TrustedProxies, parse_network};

fn trusting(networks: &[&str]) -> TrustedProxies {
    TrustedProxies::new(networks.iter().map(|n| parse_network(n).unwrap()))
}

async fn login_from(app: &TestApp, forwarded_for: &str) -> (u16, Value) {
    let body = json!({"username": "kvothe", "password": GOOD_PASSWORD}).to_string();
    let reply = app
        .with_headers(
            "POST",
            "/v1/sessions",
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", forwarded_for),
            ],
            Some(body.as_bytes()),
        )
        .await;
    (reply.status, reply.json())
}

/// Every live session's address, the caller's own first.
async fn session_addresses(app: &TestApp, token: &str) -> Vec<Value> {
    let reply = app.send("GET", "/v1/sessions", Some(token)).await;
    assert_eq!(reply.status, 200);
    let mut sessions = reply.json()["sessions"].as_array().unwrap().clone();
    sessions.sort_by_key(|s| s["current"] != true);
    sessions
        .iter()
        .map(|s| s["client_address"].clone())
        .collect()
}

/// Two clients behind one trusted proxy each get their own login budget, and the proxy's own
/// address gets none of theirs; the session list names each one.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_sqlite_app_with(|c| {
        c.login_limit = (2, 0.001);
        c.http.trusted_proxies = trusting(&["127.0.0.0/8"]);
    })
    .await;
    app.register("kvothe", GOOD_PASSWORD).await;
    // What nginx sends: whatever the client claimed, then the address it saw.
    for client in ["198.51.100.1", "2001:db8::7"] {
        for _ in 0..2 {
            let (status, _) = login_from(&app, &format!("10.6.6.6, {client}")).await;
            assert_eq!(status, 200, "{client}");
        }
        let (status, _) = login_from(&app, &format!("10.6.6.6, {client}")).await;
        assert_eq!(status, 429, "{client}'s own budget is spent");
    }
    // A third client behind the same proxy is untouched by the first two.
    let (status, grant) = login_from(&app, "203.0.113.50").await;
    assert_eq!(status, 200);
    let token = grant["access_token"].as_str().unwrap();
    let addresses = session_addresses(&app, token).await;
    assert_eq!(addresses[0], "203.0.113.50");
    assert!(addresses.contains(&json!("198.51.100.1")));
    assert!(addresses.contains(&json!("2001:db8::7")));
    // Garbage in the chain ends the walk at the proxy: the proxy's address, never the garbage.
    let (status, grant) = login_from(&app, "unknown").await;
    assert_eq!(status, 200);
    let addresses = session_addresses(&app, grant["access_token"].as_str().unwrap()).await;
    assert_eq!(addresses[0], "127.0.0.1");
}

/// Without `--trusted-proxy`, or from a peer outside it, `X-Forwarded-For` changes nothing: a
/// client rotating forged addresses still spends the one budget of its real address.
#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address() {
    for trusted in [TrustedProxies::default(), trusting(&["10.0.0.0/8"])] {
        let app = spawn_sqlite_app_with(|c| {
            c.login_limit = (2, 0.001);
            c.http.trusted_proxies = trusted;
        })
        .await;
        app.register("kvothe", GOOD_PASSWORD).await;
        let (_, grant) = login_from(&app, "198.51.100.1").await;
        let (status, _) = login_from(&app, "198.51.100.2").await;
        assert_eq!(status, 200);
        let (status, _) = login_from(&app, "198.51.100.3").await;
        assert_eq!(status, 429, "forged addresses share the peer's budget");
        let addresses = session_addresses(&app, grant["access_token"].as_str().unwrap()).await;
        assert_eq!(addresses, [json!("127.0.0.1"), json!("127.0.0.1")]);
    }
}

/// Hostile chains from a trusted peer — overlong, many fields, bytes that are not text — are
/// answered like any request (never a 500), and name no address the client chose.
#[tokio::test]
async fn hostile_chains_never_fail_a_request() {
    let app = spawn_sqlite_app_with(|c| c.http.trusted_proxies = trusting(&["127.0.0.1"])).await;
    let token = app.user_with_token("kvothe").await;
    let long = vec!["127.0.0.1"; 2000].join(",");
    let cases: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("x-forwarded-for", long.as_bytes())],
        vec![("x-forwarded-for", b"1.2.3.4\xff")],
        vec![("x-forwarded-for", b",,,,")],
        vec![("x-forwarded-for", b"[::1"), ("x-forwarded-for", b"")],
    ];
    for headers in cases {
        let mut request = b"GET /v1/users/me HTTP/1.1\r\nhost: t\r\nconnection: close\r\n".to_vec();
        request.extend_from_slice(format!("authorization: Bearer {token}\r\n").as_bytes());
        for (name, value) in headers {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        let (response, _) = app.raw(&request).await;
        let status = response.split(' ').nth(1).unwrap_or_default().to_owned();
        assert!(status == "200" || status == "431", "{response}");
    }
}

/// The log of a server that trusts no proxy names the TCP peer, whatever `X-Forwarded-For`
/// claims: a forged address never reaches an operator's grep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peers_forged_address_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log, reader) =
        crate::crash::start_binary_with(dir.path(), "info", "text", &["--login-rate", "0"]);
    let body = json!({"username": "kvothe", "password": "wrong"}).to_string();
    let reply = crate::http_client::send(
        addr,
        "POST",
        "/v1/sessions",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "198.51.100.9"),
        ],
        Some(body.into_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 401);
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_eq!(crate::crash::terminate(&mut child).code(), Some(0));
    reader.join().unwrap();
    let lines = log.lock().unwrap().clone();
    let of_request: Vec<&String> = lines.iter().filter(|line| line.contains(&id)).collect();
    assert_eq!(of_request.len(), 2, "{lines:#?}");
    assert!(
        of_request
            .iter()
            .all(|line| line.contains("client=127.0.0.1")),
        "{of_request:#?}"
    );
    assert!(!lines.join("\n").contains("198.51.100.9"), "{lines:#?}");
}
