//! Tessera in front of an app, behind real nginx and real Caddy started from the files in
//! `deploy/` (only their three addresses changed): a tiny upstream echoes what reached it.

use crate::forward_auth::{AWKWARD_FULL_NAME, EVERY_REVOCATION, awkward_user, revoke};
use crate::helpers::*;
use crate::http_client::{self, Reply};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tessera::http::client_address::{TrustedProxies, parse_network};
use tessera::support::clock::ManualClock;

const NEEDS_PROXIES: &str = "needs nginx and caddy (Debian packages); .ci/run installs them";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Nginx,
    Caddy,
}

/// The upstream app: answers every request with what reached it — method, headers, body size —
/// and counts the requests it saw.
struct Echo {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
}

async fn start_echo() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let method = request.method().to_string();
                        let mut headers = serde_json::Map::new();
                        for (name, value) in request.headers() {
                            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                            headers
                                .entry(name.as_str())
                                .and_modify(|v| {
                                    *v = json!(format!("{}, {value}", v.as_str().unwrap()));
                                })
                                .or_insert(json!(value));
                        }
                        let body = request.into_body().collect().await?.to_bytes();
                        let answer =
                            json!({"method": method, "headers": headers, "body_len": body.len()});
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                            answer.to_string(),
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Echo { addr, seen }
}

/// A stand-in for a Tessera that is overloaded or has lost its database: every answer is its
/// 503 with `Retry-After`.
async fn start_unavailable_tessera() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let body = json!({"type": "urn:tessera:problem:overloaded", "status": 503});
                    let mut response =
                        hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    response
                        .headers_mut()
                        .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                    Ok::<_, hyper::Error>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A proxy process started from `deploy/`, stopped on drop.
struct Proxy {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The deploy file with its three addresses replaced by this test's.
fn deploy_file(name: &str, tessera: SocketAddr, app: SocketAddr, proxy: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .replace("127.0.0.1:8080", &tessera.to_string())
        .replace("127.0.0.1:3000", &app.to_string())
        .replace("127.0.0.1:8000", &proxy.to_string())
}

async fn start_proxy(kind: Kind, tessera: SocketAddr, app: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let addr = free_port();
    let mut command = match kind {
        Kind::Nginx => {
            std::fs::write(
                root.join("site.conf"),
                deploy_file("nginx.conf", tessera, app, addr),
            )
            .unwrap();
            let main = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
                 error_log {root}/error.log info;\nevents {{ worker_connections 512; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n\
                 proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fastcgi;\n\
                 uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
                 include {root}/site.conf;\n}}\n",
                root = root.display()
            );
            std::fs::write(root.join("nginx.conf"), main).unwrap();
            let mut command = Command::new("nginx");
            command
                .arg("-p")
                .arg(root)
                .arg("-e")
                .arg(root.join("error.log"))
                .arg("-c")
                .arg(root.join("nginx.conf"));
            command
        }
        Kind::Caddy => {
            let global = format!(
                "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}/data\n}}\n\n",
                root.display()
            );
            let site = deploy_file("Caddyfile", tessera, app, addr);
            std::fs::write(root.join("Caddyfile"), global + &site).unwrap();
            let mut command = Command::new("caddy");
            command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(root.join("Caddyfile"))
                .env("HOME", root)
                .env("XDG_DATA_HOME", root.join("data"))
                .env("XDG_CONFIG_HOME", root.join("config"));
            command
        }
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{kind:?}: {e} ({NEEDS_PROXIES})"));
    let proxy = Proxy {
        addr,
        child,
        _dir: dir,
    };
    // Ready once it accepts connections; a proxy that never does fails the test, not hangs it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?} did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy
}

async fn through(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    through_from(None, proxy, method, path, headers, None).await
}

async fn through_from(
    local: Option<IpAddr>,
    proxy: &Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    http_client::send_from(local, proxy.addr, method, path, headers, body)
        .await
        .unwrap()
}

fn trusting_loopback() -> TrustedProxies {
    TrustedProxies::new([parse_network("127.0.0.1").unwrap()])
}

async fn an_app_is_protected(kind: Kind) {
    let clock = ManualClock::starting_now();
    let tessera = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.http.trusted_proxies = trusting_loopback();
    })
    .await;
    let echo = start_echo().await;
    let proxy = start_proxy(kind, tessera.addr, echo.addr).await;

    // No token: the proxy relays Tessera's 401 and its challenge; the app never hears of it.
    let refused = through(&proxy, "GET", "/dashboard", &[]).await;
    assert_eq!(refused.status, 401, "{kind:?}");
    let challenge = refused.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{kind:?}: {challenge:?}");
    assert_eq!(echo.seen.load(Ordering::SeqCst), 0);

    // Registration and sign-in through the proxy's /tessera/ path.
    let register = json!({"username": "Zoë", "full_name": AWKWARD_FULL_NAME,
                          "password": GOOD_PASSWORD, "mothers_favorite_search_engine": "Kagi"});
    let body = register.to_string().into_bytes();
    let json_type = [("content-type", "application/json")];
    let reply = through_from(
        None,
        &proxy,
        "POST",
        "/tessera/v1/users",
        &json_type,
        Some(body),
    )
    .await;
    assert_eq!(reply.status, 201, "{kind:?}: {:?}", reply.json());
    let login = json!({"username": "zoë", "password": GOOD_PASSWORD}).to_string();
    let reply = through_from(
        None,
        &proxy,
        "POST",
        "/tessera/v1/sessions",
        &json_type,
        Some(login.into()),
    )
    .await;
    assert_eq!(reply.status, 200, "{kind:?}");
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let authorization = format!("Bearer {token}");

    // A live token: the app sees who it is — never what the client claimed, never the token.
    let reply = through(
        &proxy,
        "GET",
        "/dashboard?tab=1",
        &[
            ("authorization", &authorization),
            ("remote-user", "admin"),
            ("Remote-Name", "Administrator"),
            ("remote-user-id", "0"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{kind:?}");
    let seen = reply.json();
    let headers = &seen["headers"];
    assert_eq!(headers["remote-user"], "zo%C3%AB", "{kind:?}: {seen}");
    let name = headers["remote-name"].as_str().unwrap();
    let decoded = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, AWKWARD_FULL_NAME, "{kind:?}");
    let claims = tessera.claims_of(&token);
    assert_eq!(headers["remote-user-id"], claims.sub.as_str(), "{kind:?}");
    assert_eq!(
        headers["remote-session-id"],
        claims.sid.as_str(),
        "{kind:?}"
    );
    assert!(headers.get("authorization").is_none(), "{kind:?}: {seen}");

    // A POST with a body reaches the app whole.
    let upload = vec![b'x'; 100_000];
    let reply = through_from(
        None,
        &proxy,
        "POST",
        "/upload",
        &[
            ("authorization", &authorization),
            ("content-type", "application/octet-stream"),
        ],
        Some(upload),
    )
    .await;
    assert_eq!(reply.status, 200, "{kind:?}");
    assert_eq!(reply.json()["method"], "POST");
    assert_eq!(reply.json()["body_len"], 100_000);

    // Every revocation is refused on the very next request through the proxy.
    for (i, how) in EVERY_REVOCATION.into_iter().enumerate() {
        let grant = awkward_user(&tessera, &format!("user{i}")).await;
        let (token, _) = tokens(&grant);
        let authorization = format!("Bearer {token}");
        let before = through(&proxy, "GET", "/", &[("authorization", &authorization)]).await;
        assert_eq!(before.status, 200, "{kind:?} {how:?}");
        revoke(&tessera, &clock, &grant, how).await;
        let seen_before = echo.seen.load(Ordering::SeqCst);
        let after = through(&proxy, "GET", "/", &[("authorization", &authorization)]).await;
        assert_eq!(after.status, 401, "{kind:?} {how:?}");
        assert_eq!(
            echo.seen.load(Ordering::SeqCst),
            seen_before,
            "{kind:?} {how:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and caddy (Debian packages); .ci/run installs them"]
async fn nginx_protects_an_app_and_revocation_bites_on_the_next_request() {
    an_app_is_protected(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and caddy (Debian packages); .ci/run installs them"]
async fn caddy_protects_an_app_and_revocation_bites_on_the_next_request() {
    an_app_is_protected(Kind::Caddy).await;
}

/// Behind the proxy, the per-client login budget is the client's (another loopback address
/// plays each client), not the proxy's; the session list names the client.
async fn limits_apply_to_the_client_behind_the_proxy(kind: Kind) {
    let tessera = spawn_app_with(|c| {
        c.login_limit = (2, 0.001);
        c.http.trusted_proxies = trusting_loopback();
    })
    .await;
    tessera.register("kvothe", GOOD_PASSWORD).await;
    let echo = start_echo().await;
    let proxy = start_proxy(kind, tessera.addr, echo.addr).await;
    let login = |from: [u8; 4]| {
        let proxy = &proxy;
        async move {
            let body = json!({"username": "kvothe", "password": GOOD_PASSWORD}).to_string();
            through_from(
                Some(IpAddr::from(from)),
                proxy,
                "POST",
                "/tessera/v1/sessions",
                &[("content-type", "application/json")],
                Some(body.into_bytes()),
            )
            .await
        }
    };
    let first = login([127, 0, 0, 2]).await;
    assert_eq!(first.status, 200, "{kind:?}");
    assert_eq!(login([127, 0, 0, 2]).await.status, 200, "{kind:?}");
    assert_eq!(
        login([127, 0, 0, 2]).await.status,
        429,
        "{kind:?}: its budget is spent"
    );
    assert_eq!(
        login([127, 0, 0, 3]).await.status,
        200,
        "{kind:?}: another client's is not"
    );
    let token = first.json()["access_token"].as_str().unwrap().to_owned();
    let sessions = tessera
        .send("GET", "/v1/sessions", Some(&token))
        .await
        .json();
    let addresses: Vec<&Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["client_address"])
        .collect();
    assert!(
        addresses.contains(&&json!("127.0.0.2")),
        "{kind:?}: {sessions}"
    );
    assert!(
        addresses.contains(&&json!("127.0.0.3")),
        "{kind:?}: {sessions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and caddy (Debian packages); .ci/run installs them"]
async fn nginx_per_client_limits_see_the_client() {
    limits_apply_to_the_client_behind_the_proxy(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and caddy (Debian packages); .ci/run installs them"]
async fn caddy_per_client_limits_see_the_client() {
    limits_apply_to_the_client_behind_the_proxy(Kind::Caddy).await;
}

/// Tessera gone: the proxy answers an error of its own and the app is never reached — closed,
/// never open. nginx's recipe turns its 500 into 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and caddy (Debian packages); .ci/run installs them"]
async fn with_tessera_down_the_app_is_closed_not_open() {
    for kind in [Kind::Nginx, Kind::Caddy] {
        let mut tessera = spawn_app().await;
        let token = tessera.user_with_token("kvothe").await;
        let authorization = format!("Bearer {token}");
        let echo = start_echo().await;
        let proxy = start_proxy(kind, tessera.addr, echo.addr).await;
        let open = through(&proxy, "GET", "/", &[("authorization", &authorization)]).await;
        assert_eq!(open.status, 200, "{kind:?}");
        tessera.shutdown().await;
        let seen = echo.seen.load(Ordering::SeqCst);
        let closed = through(&proxy, "GET", "/", &[("authorization", &authorization)]).await;
        match kind {
            Kind::Nginx => {
                assert_eq!(closed.status, 503, "{kind:?}");
                assert_eq!(closed.header("retry-after"), Some("5"));
            }
            // Caddy answers 502 when the auth request cannot be made.
            Kind::Caddy => assert_eq!(closed.status, 502, "{kind:?}"),
        }
        assert_eq!(
            echo.seen.load(Ordering::SeqCst),
            seen,
            "{kind:?}: the app was reached"
        );
    }
}

/// Tessera answering 503 (overloaded, database down): still closed. nginx's recipe says 503 with
/// its own Retry-After; Caddy passes Tessera's answer on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and caddy (Debian packages); .ci/run installs them"]
async fn with_tessera_unavailable_the_app_is_closed_and_the_client_told_to_retry() {
    let tessera = start_unavailable_tessera().await;
    for kind in [Kind::Nginx, Kind::Caddy] {
        let echo = start_echo().await;
        let proxy = start_proxy(kind, tessera, echo.addr).await;
        let reply = through(&proxy, "GET", "/", &[("authorization", "Bearer x.y.z")]).await;
        assert_eq!(reply.status, 503, "{kind:?}");
        let retry_after = match kind {
            Kind::Nginx => "5",
            Kind::Caddy => "1",
        };
        assert_eq!(reply.header("retry-after"), Some(retry_after), "{kind:?}");
        assert_eq!(
            echo.seen.load(Ordering::SeqCst),
            0,
            "{kind:?}: the app was reached"
        );
    }
}
