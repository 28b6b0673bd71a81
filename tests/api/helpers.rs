//! `spawn_app()`: the real server on an ephemeral port with a fresh database and fresh keys in
//! a temporary directory, and a small client to talk to it over real HTTP.

use crate::http_client::{self, Reply};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera::config::Config;
use tessera::domain::password::HashParams;
use tessera::http::AppState;
use tessera::store::{DbLocation, Store};
use tessera::token::{Claims, Codec, JwkSet, Keyring, ValidationPolicy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub const GOOD_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: Arc<AppState>,
    pub config: Config,
    /// The database: a SQLite file's path, or (on PostgreSQL) its URL, as a command line takes it.
    pub db_path: PathBuf,
    pub db: DbLocation,
    pub keys_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: Arc<tempfile::TempDir>,
}

/// The configuration `tessera serve` would use, with cheap argon2 (tests hash a lot) and the
/// per-IP limiters off (every test client is 127.0.0.1). Tests that exercise those set them.
pub fn test_config(dir: &std::path::Path) -> Config {
    let db = dir.join("tessera.db");
    let keys = dir.join("jwks.json");
    let mut config = Config::for_paths(&db, &keys);
    config.hash = HashParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    config.login_limit = (1, 0.0);
    config.register_limit = (1, 0.0);
    config.refresh_limit = (1, 0.0);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    if let Some(url) = fresh_postgres_database().await {
        config.db = DbLocation::Postgres(url);
    }
    JwkSet::create(&config.keys_path).unwrap();
    tweak(&mut config);
    start(config, Arc::new(dir)).await
}

/// A server on SQLite whatever backend the suite runs against: for tests of SQLite's own files
/// and locks, which then run (and count) in every pass instead of skipping themselves.
pub async fn spawn_sqlite_app() -> TestApp {
    spawn_sqlite_app_with(|_| {}).await
}

pub async fn spawn_sqlite_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|config| {
        config.db = DbLocation::Sqlite(config.keys_path.with_file_name("tessera.db"));
        tweak(config);
    })
    .await
}

/// The backend the suite runs against: SQLite (a file per test) unless `TESSERA_TEST_POSTGRES`
/// names a PostgreSQL server (`postgres://user@host:port`, password in `PGPASSWORD`), where each
/// test gets a database of its own. `.ci/run` runs the suite both ways.
pub fn postgres_server() -> Option<String> {
    std::env::var("TESSERA_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// Creates an empty database on the test server; its URL (no password in it).
pub async fn fresh_postgres_database() -> Option<String> {
    let server = postgres_server()?;
    let client = postgres_client("postgres").await;
    let name = format!(
        "tessera_test_{}",
        tessera::domain::ids::UserId::random().as_str()
    )
    .to_lowercase()
    .replace('-', "_");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    Some(format!("{server}/{name}"))
}

/// A plain connection to `database` on the test server, as an operator's `psql` would have.
pub async fn postgres_client(database: &str) -> tokio_postgres::Client {
    let server = postgres_server().expect("TESSERA_TEST_POSTGRES names a PostgreSQL server");
    let mut config: tokio_postgres::Config = format!("{server}/{database}").parse().unwrap();
    if let Ok(password) = std::env::var("PGPASSWORD") {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Starts a server on an existing configuration (same database and keys): a restart.
pub async fn start(config: Config, dir: Arc<tempfile::TempDir>) -> TestApp {
    let state = tessera::app::build_state(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let state = state.clone();
        let housekeeping = tessera::app::Housekeeping::of(&config);
        async move {
            tessera::app::run(listener, Some(metrics), state, housekeeping, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        }
    });
    TestApp {
        addr,
        metrics_addr,
        state,
        db_path: match &config.db {
            DbLocation::Sqlite(path) => path.clone(),
            DbLocation::Postgres(url) => PathBuf::from(url),
        },
        db: config.db.clone(),
        keys_path: config.keys_path.clone(),
        config,
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    /// The database as an operator sees it: a store of its own, reading the files directly.
    pub fn store(&self) -> Arc<dyn Store> {
        tessera::store::open_existing(&self.db).unwrap()
    }

    /// Stops this server and starts another on the same database and keys.
    pub async fn restart(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.shutdown().await;
        let mut config = self.config.clone();
        tweak(&mut config);
        start(config, self._dir.clone()).await
    }

    /// Restarts with other argon2 parameters, so hashes stored so far become outdated.
    pub async fn restart_with_hash(self, memory_kib: u32, iterations: u32) -> TestApp {
        self.restart(|config| {
            config.hash = HashParams {
                memory_kib,
                iterations,
                parallelism: 1,
            };
        })
        .await
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        http_client::send_json(self.addr, "POST", path, None, body)
            .await
            .unwrap()
    }

    pub async fn post_json_with_token(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send_json("POST", path, token, body).await
    }

    /// Any method with a bearer token and a JSON body.
    pub async fn send_json(&self, method: &str, path: &str, token: &str, body: &Value) -> Reply {
        http_client::send_json(self.addr, method, path, Some(token), body)
            .await
            .unwrap()
    }

    pub async fn put_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        http_client::send_json(self.addr, "PUT", path, Some(token), body)
            .await
            .unwrap()
    }

    /// `DELETE /v1/users/me`, re-authenticating with the password.
    pub async fn delete_account(&self, token: &str, password: &str) -> Reply {
        let body = json!({ "password": password });
        http_client::send_json(self.addr, "DELETE", "/v1/users/me", Some(token), &body)
            .await
            .unwrap()
    }

    pub async fn send(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|v| ("authorization", v.as_str()))
            .collect();
        http_client::send(self.addr, method, path, &headers, None)
            .await
            .unwrap()
    }

    pub async fn with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        http_client::send(self.addr, method, path, headers, body.map(<[u8]>::to_vec))
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str, password: &str) -> Reply {
        self.post_json(
            "/v1/users",
            &json!({
                "username": username,
                "full_name": "Test User",
                "password": password,
                "mothers_favorite_search_engine": "Searx",
            }),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.post_json(
            "/v1/sessions",
            &json!({"username": username, "password": password}),
        )
        .await
    }

    /// Logs in and returns the access token, asserting success.
    pub async fn token(&self, username: &str, password: &str) -> String {
        let reply = self.login(username, password).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        reply.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers `username` with the standard good password and returns a fresh token.
    pub async fn user_with_token(&self, username: &str) -> String {
        let reply = self.register(username, GOOD_PASSWORD).await;
        assert_eq!(reply.status, 201, "{:?}", reply.json());
        self.token(username, GOOD_PASSWORD).await
    }

    /// `POST /v1/sessions/refresh` with this refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_json(
            "/v1/sessions/refresh",
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Logs in and returns the whole grant (access and refresh token, session id), asserting
    /// success.
    pub async fn grant(&self, username: &str, password: &str) -> Value {
        let reply = self.login(username, password).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        reply.json()
    }

    /// Registers `username` with the standard good password and returns a login's grant.
    pub async fn user_with_grant(&self, username: &str) -> Value {
        let reply = self.register(username, GOOD_PASSWORD).await;
        assert_eq!(reply.status, 201, "{:?}", reply.json());
        self.grant(username, GOOD_PASSWORD).await
    }

    pub async fn me(&self, token: &str) -> Reply {
        self.send("GET", "/v1/users/me", Some(token)).await
    }

    /// A codec with this server's keys and validation policy.
    pub fn codec(&self) -> Codec {
        let policy = ValidationPolicy {
            issuer: self.config.issuer.clone(),
            audience: self.config.audience.clone(),
            leeway: self.config.leeway,
            max_lifetime: self.config.auth.token_ttl,
        };
        Codec::new(Keyring::load(&self.keys_path).unwrap(), policy)
    }

    /// The claims a valid token of this server carries.
    pub fn claims_of(&self, token: &str) -> Claims {
        self.codec()
            .verify(token, self.config.clock.now())
            .unwrap()
            .claims()
            .clone()
    }

    /// Sends raw bytes; returns what the server answered and whether it closed the
    /// connection itself (within a generous bound, so a hung server fails the test).
    pub async fn raw(&self, request: &[u8]) -> (String, bool) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        let closed_by_server = matches!(read.await, Ok(Ok(_)));
        (
            String::from_utf8_lossy(&answer).into_owned(),
            closed_by_server,
        )
    }
}

/// The access and refresh token of a grant (a login, refresh or password change body).
pub fn tokens(grant: &Value) -> (String, String) {
    (
        grant["access_token"].as_str().unwrap().to_owned(),
        grant["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Everything a client can observe, minus what differs per request by design.
pub fn observable(reply: &Reply) -> (u16, Vec<(String, String)>, bytes::Bytes) {
    let mut headers: Vec<_> = reply
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (reply.status, headers, reply.body.clone())
}

/// Asserts an RFC 9457 problem response with this status, returning its body.
pub fn assert_problem(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "body: {:?}", reply.json());
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "status {status}"
    );
    let body = reply.json();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tessera:problem:")
    );
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// The `(field, code)` pairs of a problem's `errors`.
pub fn error_codes(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap().to_owned(),
                        e["code"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `condition` until it holds; fails the test after 10 s.
pub async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}
