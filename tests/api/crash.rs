//! Crash safety: SIGKILL the real binary in the middle of concurrent writes, restart it on the
//! same database, and check that everything it acknowledged is still there.

use crate::helpers::{GOOD_PASSWORD, wait_for};
use crate::http_client;
use serde_json::json;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts `tessera serve` on an ephemeral port with JSON logs; returns it and its address.
fn start_binary(dir: &Path) -> (Child, SocketAddr) {
    let (child, addr, _log) = start_binary_logged(dir);
    (child, addr)
}

/// The same, also collecting every log line the server writes.
fn start_binary_logged(dir: &Path) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (child, addr, log, _reader) = start_binary_logging_at(dir, "info");
    (child, addr, log)
}

fn start_binary_logging_at(
    dir: &Path,
    filter: &str,
) -> (
    Child,
    SocketAddr,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    start_binary_with(dir, filter, "json", &["--login-rate", "0"])
}

/// The binary with `RUST_LOG=filter`, its stderr collected line by line by the returned thread,
/// which ends when the child has exited and its last line is read.
pub(crate) fn start_binary_with(
    dir: &Path,
    filter: &str,
    format: &str,
    extra: &[&str],
) -> (
    Child,
    SocketAddr,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env("RUST_LOG", filter)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", format])
        .args(["--argon2-memory-kib", "256", "--argon2-iterations", "1"])
        .args(["--register-rate", "0"])
        .args(extra)
        .arg("--db")
        .arg(dir.join("tessera.db"))
        .arg("--keys")
        .arg(dir.join("jwks.json"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    // Keep draining the log so the child never blocks on a full pipe.
    let collected = log.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            collected.lock().unwrap().push(line.clone());
            if !line.contains("\"fields\"") && line.contains("tessera listening") {
                let address = line.split("address=").nth(1).unwrap().trim();
                let _ = found.send(address.parse().unwrap());
                continue;
            }
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "tessera listening" {
                let addr: SocketAddr = entry["fields"]["address"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let _ = found.send(addr);
            }
        }
    });
    let addr = address.recv_timeout(Duration::from_secs(30)).unwrap();
    (child, addr, log, reader)
}

#[derive(Default)]
struct Acknowledged {
    users: Vec<String>,
    revoked_tokens: Vec<String>,
}

/// Register, log in, log out, over and over, recording what the server acknowledged.
async fn churn(addr: SocketAddr, worker: usize, acked: Arc<Mutex<Acknowledged>>) {
    for i in 0.. {
        let name = format!("w{worker}-u{i}");
        let body = json!({"username": name, "full_name": "Crash Test", "password": GOOD_PASSWORD,
                          "mothers_favorite_search_engine": "Searx"});
        let Ok(reply) = http_client::send_json(addr, "POST", "/v1/users", None, &body).await else {
            return;
        };
        if reply.status != 201 {
            return;
        }
        acked.lock().unwrap().users.push(name.clone());
        let login = json!({"username": name, "password": GOOD_PASSWORD});
        let Ok(reply) = http_client::send_json(addr, "POST", "/v1/sessions", None, &login).await
        else {
            return;
        };
        let Some(token) = reply.json()["access_token"].as_str().map(str::to_owned) else {
            return;
        };
        let bearer = format!("Bearer {token}");
        let headers = [("authorization", bearer.as_str())];
        let Ok(reply) =
            http_client::send(addr, "DELETE", "/v1/sessions/current", &headers, None).await
        else {
            return;
        };
        if reply.status == 204 {
            acked.lock().unwrap().revoked_tokens.push(token);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr) = start_binary(dir.path());

    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let workers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(churn(addr, w, acked.clone())))
        .collect();
    // Kill once a good number of writes were acknowledged (and more are in flight).
    let enough = || {
        let acked = acked.lock().unwrap();
        acked.users.len() >= 40 && acked.revoked_tokens.len() >= 20
    };
    wait_for(enough).await;
    child.kill().unwrap(); // SIGKILL: no shutdown hook, no checkpoint.
    child.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }

    let (mut restarted, addr) = start_binary(dir.path());
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        !acked.users.is_empty() && !acked.revoked_tokens.is_empty(),
        "nothing happened before the kill"
    );

    let store = tessera::store::open_existing(&tessera::store::DbLocation::Sqlite(
        dir.path().join("tessera.db"),
    ))
    .unwrap();
    assert_eq!(store.integrity_check().unwrap(), ["ok"]);
    for user in &acked.users {
        assert!(
            store
                .find_credentials(&tessera::domain::username::Username::parse(user).unwrap())
                .unwrap()
                .is_some(),
            "user {user} was lost"
        );
    }
    for token in &acked.revoked_tokens {
        let reply = me(addr, token).await;
        assert_eq!(reply.status, 401, "a logged-out token came back to life");
    }
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_checkpoints_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr) = start_binary(dir.path());
    let body = json!({"username": "kvothe", "full_name": "Patrick Rothfuss", "password": GOOD_PASSWORD,
                      "mothers_favorite_search_engine": "Duck Duck Go"});
    let reply = http_client::send_json(addr, "POST", "/v1/users", None, &body)
        .await
        .unwrap();
    assert_eq!(reply.status, 201);
    // Another process has the database open, so the server's connections closing are not the
    // last ones, which SQLite would checkpoint on its own: the server must do it.
    let other = rusqlite::Connection::open(dir.path().join("tessera.db")).unwrap();
    let users: i64 = other
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(users, 1);
    let exit = terminate(&mut child);
    assert!(exit.success(), "{exit:?}");
    // The WAL was folded into the database file on the way out.
    let wal = dir.path().join("tessera.db-wal");
    assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
    drop(other);
}

/// `GET /v1/users/me` on the binary at `addr` with `token` as the Bearer.
async fn me(addr: SocketAddr, token: &str) -> http_client::Reply {
    let bearer = format!("Bearer {token}");
    http_client::send(
        addr,
        "GET",
        "/v1/users/me",
        &[("authorization", &bearer)],
        None,
    )
    .await
    .unwrap()
}

/// Sends SIGTERM and waits for the child's exit.
pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

/// Registers kvothe on the binary at `addr` and logs in: the login's body.
async fn kvothe_logged_in(addr: SocketAddr) -> serde_json::Value {
    let body = json!({"username": "kvothe", "full_name": "Patrick Rothfuss", "password": GOOD_PASSWORD,
                      "mothers_favorite_search_engine": "Duck Duck Go"});
    http_client::send_json(addr, "POST", "/v1/users", None, &body)
        .await
        .unwrap();
    let login = json!({"username": "kvothe", "password": GOOD_PASSWORD});
    http_client::send_json(addr, "POST", "/v1/sessions", None, &login)
        .await
        .unwrap()
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_one_json_line_per_request_and_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log) = start_binary_logged(dir.path());
    let token = kvothe_logged_in(addr).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    me(addr, &token).await;
    me(addr, &format!("{token}x")).await;
    // Lines reach stderr from a background writer, just after their responses.
    let request_lines = || {
        let lines = log.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("tessera::request"))
            .count()
    };
    wait_for(|| request_lines() == 4).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let lines = log.lock().unwrap().clone();
    let requests: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|entry| entry["target"] == "tessera::request")
        .collect();
    assert_eq!(requests.len(), 4, "{lines:#?}");
    let fields = &requests[2]["fields"];
    assert_eq!(fields["route"], "GET /v1/users/me");
    assert_eq!(fields["status"], 200);
    // Numbers are JSON numbers; every line carries its request's id.
    assert!(fields["latency_ms"].is_f64(), "{fields}");
    let request_id =
        |entry: &serde_json::Value| entry["fields"]["request_id"].as_str().map(str::to_owned);
    assert!(
        request_id(&requests[2]).is_some_and(|id| id.len() == 16),
        "{:?}",
        requests[2]
    );
    // Every line written while serving a request carries its id: the tampered token's
    // rejection is logged under the id of the fourth request.
    let rejected: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|entry| entry["fields"]["message"] == "token rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{lines:#?}");
    assert_eq!(request_id(&rejected[0]), request_id(&requests[3]));
    let secret_key = tessera::token::JwkSet::load(&dir.path().join("jwks.json"))
        .unwrap()
        .keys[0]
        .k
        .clone();
    let everything = lines.join("\n");
    for secret in [
        GOOD_PASSWORD,
        token.as_str(),
        &token[token.len() - 43..],
        "$argon2id$",
        secret_key.as_str(),
    ] {
        assert!(!everything.contains(secret), "log leaked {secret}");
    }
}

/// `RUST_LOG` decides whether requests are logged, read once at start-up: with
/// `tessera::request` off, the server logs its other lines (a rejected token's warning) but no
/// request line, up to its graceful exit, which writes every line queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_follow_rust_log() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log, reader) =
        start_binary_logging_at(dir.path(), "info,tessera::request=off");
    let token = kvothe_logged_in(addr).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(addr, &format!("{token}x")).await.status, 401);
    assert!(terminate(&mut child).success());
    reader.join().unwrap();

    let lines = log.lock().unwrap().clone();
    let messages: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    assert!(
        messages
            .iter()
            .any(|entry| entry["fields"]["message"] == "token rejected"),
        "{lines:#?}"
    );
    assert!(
        !messages
            .iter()
            .any(|entry| entry["target"] == "tessera::request"),
        "{lines:#?}"
    );
}

/// Refresh tokens are secrets: never logged, whatever happens to them. A replay is logged as a
/// warning naming the session it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_never_reach_the_logs_and_a_replay_names_its_session() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log) = start_binary_logged(dir.path());
    let grant = kvothe_logged_in(addr).await;
    let refresh = |token: String| async move {
        http_client::send_json(
            addr,
            "POST",
            "/v1/sessions/refresh",
            None,
            &json!({ "refresh_token": token }),
        )
        .await
        .unwrap()
    };
    let first = grant["refresh_token"].as_str().unwrap().to_owned();
    let second = refresh(first.clone()).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let third = refresh(second.clone()).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refresh(first.clone()).await.status, 401, "replay");
    assert_eq!(refresh(format!("{third}x")).await.status, 401, "malformed");
    let request_lines = || {
        let lines = log.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("tessera::request"))
            .count()
    };
    wait_for(|| request_lines() == 6).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let lines = log.lock().unwrap().clone();
    let everything = lines.join("\n");
    for token in [&first, &second, &third] {
        let secret = token.strip_prefix("tsr_").unwrap();
        assert!(!everything.contains(secret), "log leaked a refresh token");
        assert!(!everything.contains(&secret[secret.len() - 24..]));
    }
    let reuse: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|entry| entry["fields"]["message"] == "refresh token reuse: session ended")
        .collect();
    assert_eq!(reuse.len(), 1, "{lines:#?}");
    assert_eq!(reuse[0]["level"], "WARN");
    assert_eq!(reuse[0]["fields"]["session_id"], grant["session_id"]);
}

/// Text logs, as an operator greps them. Every line written for a request carries
/// `request_id=ID` in the one same form, so one grep finds them all; authentication events name
/// the client's address and the account name as typed — escaped, so a name cannot forge a
/// line — never the password; a per-client refusal names the address; and the two listeners'
/// shutdown lines say which is which, then the server says it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_attribute_every_authentication_event_to_a_client() {
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log, reader) = start_binary_with(
        dir.path(),
        "info",
        "text",
        &[
            "--login-burst",
            "3",
            "--login-rate",
            "0.001",
            "--metrics-listen",
            "127.0.0.1:0",
            "--trusted-proxy",
            "127.0.0.1",
        ],
    );
    let body = json!({"username": "kvothe", "full_name": "Patrick Rothfuss", "password": GOOD_PASSWORD,
                      "mothers_favorite_search_engine": "Duck Duck Go"});
    http_client::send_json(addr, "POST", "/v1/users", None, &body)
        .await
        .unwrap();
    let login = |name: &'static str, password: &'static str| async move {
        let body = json!({"username": name, "password": password});
        http_client::send_json(addr, "POST", "/v1/sessions", None, &body)
            .await
            .unwrap()
    };
    let wrong = login("kvothe", "a wrong password, typed twice").await;
    assert_eq!(wrong.status, 401);
    // Through a trusted proxy (the test's own address here), the client it forwarded is named.
    let proxied = http_client::send(
        addr,
        "POST",
        "/v1/sessions",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "6.6.6.6, 198.51.100.9"),
        ],
        Some(
            json!({"username": "kvothe", "password": "wrong again"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(proxied.status, 401);
    let forged = login(
        "nobody\n2026-01-01T00:00:00Z  INFO forged: admin logged in",
        "x",
    )
    .await;
    assert_eq!(forged.status, 401);
    assert_eq!(login("kvothe", GOOD_PASSWORD).await.status, 200);
    assert_eq!(
        login("kvothe", GOOD_PASSWORD).await.status,
        429,
        "the per-client budget"
    );
    assert_eq!(terminate(&mut child).code(), Some(0));
    reader.join().unwrap();
    let lines = log.lock().unwrap().clone();
    let everything = lines.join("\n");

    let id = wrong.header("x-request-id").unwrap();
    let of_request: Vec<&String> = lines
        .iter()
        .filter(|line| {
            line.contains(&format!("request_id={id} "))
                || line.ends_with(&format!("request_id={id}"))
        })
        .collect();
    assert_eq!(
        of_request.len(),
        2,
        "the request line and the login line: {lines:#?}"
    );
    assert!(
        of_request
            .iter()
            .all(|line| line.contains("client=127.0.0.1")),
        "{of_request:#?}"
    );
    let failed = of_request
        .iter()
        .find(|line| line.contains("login failed"))
        .unwrap();
    assert!(failed.contains("username=\"kvothe\""), "{failed}");
    let proxied_id = proxied.header("x-request-id").unwrap();
    let proxied_lines: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains(proxied_id))
        .collect();
    assert_eq!(proxied_lines.len(), 2, "{lines:#?}");
    assert!(
        proxied_lines
            .iter()
            .all(|line| line.contains("client=198.51.100.9")),
        "{proxied_lines:#?}"
    );
    assert!(
        !everything.contains("typed twice"),
        "a password reached the log"
    );
    assert!(
        !everything.contains(GOOD_PASSWORD),
        "a password reached the log"
    );
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with("2026-01-01T00:00:00Z")),
        "a typed name forged a line: {lines:#?}"
    );
    assert!(
        everything.contains(r#"username="nobody\n2026-01-01"#),
        "{everything}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("login succeeded") && line.contains("session_id=")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("refused by the per-client rate limit")
                && line.contains("client=127.0.0.1")
                && line.contains("budget=\"login\"")),
        "{lines:#?}"
    );
    for listener in ["api", "metrics"] {
        let shutting_down = lines
            .iter()
            .filter(|line| {
                line.contains("shutting down") && line.contains(&format!("listener=\"{listener}\""))
            })
            .count();
        assert_eq!(shutting_down, 1, "{listener}: {lines:#?}");
    }
    assert!(
        lines
            .last()
            .is_some_and(|line| line.contains("tessera stopped")),
        "{lines:#?}"
    );
}
