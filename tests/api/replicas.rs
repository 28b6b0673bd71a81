//! Several replicas on one PostgreSQL database: two real `tessera serve` processes. A
//! revocation answered by one is refused by the other on the very next request; a name races
//! across both; the database going away mid-traffic gives 503s — never a 200 for a token
//! revoked before — and both recover when it returns, without a restart. They need a PostgreSQL
//! server (`TESSERA_TEST_POSTGRES`), so they are ignored unless asked for; `.ci/run` runs them.

use crate::helpers::GOOD_PASSWORD;
use crate::http_client::{self, Reply};
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NEW_PASSWORD: &str = "an entirely different passphrase";

/// One `tessera serve` on `db`, with the keys every replica shares; stopped on drop. Its log
/// lines are kept for the test to read.
pub(crate) struct Replica {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The JSON log lines written so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn start_replica(db: &str, keys: &Path, password: Option<&str>) -> Replica {
    let password = password.map(|password| ("PGPASSWORD", password));
    start_replica_with(db, keys, password.as_slice())
}

/// A replica with extra environment variables (the password, `TESSERA_*` settings).
pub(crate) fn start_replica_with(db: &str, keys: &Path, env: &[(&str, &str)]) -> Replica {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--argon2-memory-kib", "256", "--argon2-iterations", "1"])
        .args([
            "--login-rate",
            "0",
            "--register-rate",
            "0",
            "--refresh-rate",
            "0",
        ])
        .arg("--keys")
        .arg(keys)
        // The URL goes in the environment, as operators are told to: never in argv.
        .env("TESSERA_DB", db)
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let log = log.clone();
        move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if entry["fields"]["message"] == "tessera listening" {
                    let _ = found.send(
                        entry["fields"]["address"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap(),
                    );
                }
            }
        }
    });
    let addr = address.recv_timeout(Duration::from_secs(30)).unwrap();
    Replica { child, addr, log }
}

/// `tessera ARGS` as a separate process with `env`, off the test's reactor.
pub(crate) async fn admin_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Two replicas on a fresh database of the test server, sharing one key file.
async fn two_replicas() -> (Replica, Replica, tempfile::TempDir, String) {
    let db = crate::helpers::fresh_postgres_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    let a = start_replica(&db, &keys, None);
    let b = start_replica(&db, &keys, None);
    // Revocations are then checked against the replicas' in-memory views, not the database.
    crate::replica_view::wait_for_memory(&a).await;
    crate::replica_view::wait_for_memory(&b).await;
    (a, b, dir, db)
}

pub(crate) async fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    http_client::send_json(addr, "POST", path, None, body)
        .await
        .unwrap()
}

pub(crate) async fn send(addr: SocketAddr, method: &str, path: &str, token: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    http_client::send(addr, method, path, &[("authorization", &bearer)], None)
        .await
        .unwrap()
}

pub(crate) async fn register(addr: SocketAddr, name: &str, password: &str) -> Reply {
    post(
        addr,
        "/v1/users",
        &json!({"username": name, "full_name": "Replica User", "password": password,
                "mothers_favorite_search_engine": "Searx"}),
    )
    .await
}

pub(crate) async fn login(addr: SocketAddr, name: &str, password: &str) -> String {
    let reply = post(
        addr,
        "/v1/sessions",
        &json!({"username": name, "password": password}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

pub(crate) async fn me(addr: SocketAddr, token: &str) -> u16 {
    send(addr, "GET", "/v1/users/me", token).await.status
}

const ROUNDS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn a_logout_on_one_replica_is_refused_by_the_other_on_the_next_request() {
    let (a, b, _dir, _db) = two_replicas().await;
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    for round in 0..ROUNDS {
        let token = login(a.addr, "kvothe", GOOD_PASSWORD).await;
        assert_eq!(me(b.addr, &token).await, 200, "round {round}");
        assert_eq!(
            send(a.addr, "DELETE", "/v1/sessions/current", &token)
                .await
                .status,
            204
        );
        assert_eq!(
            me(b.addr, &token).await,
            401,
            "round {round}: B accepted a logged-out token"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn logging_out_everywhere_on_one_replica_is_refused_by_the_other() {
    let (a, b, _dir, _db) = two_replicas().await;
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    for round in 0..ROUNDS {
        let token = login(b.addr, "kvothe", GOOD_PASSWORD).await;
        assert_eq!(
            send(a.addr, "DELETE", "/v1/sessions", &token).await.status,
            204
        );
        assert_eq!(me(b.addr, &token).await, 401, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn password_changes_and_deletions_on_one_replica_are_refused_by_the_other() {
    let (a, b, _dir, _db) = two_replicas().await;
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    let mut password = GOOD_PASSWORD;
    for round in 0..ROUNDS {
        let old = login(a.addr, "kvothe", password).await;
        let next = if password == GOOD_PASSWORD {
            NEW_PASSWORD
        } else {
            GOOD_PASSWORD
        };
        let body = json!({"current_password": password, "new_password": next});
        let changed =
            http_client::send_json(a.addr, "PUT", "/v1/users/me/password", Some(&old), &body)
                .await
                .unwrap();
        assert_eq!(changed.status, 200, "{:?}", changed.json());
        assert_eq!(
            me(b.addr, &old).await,
            401,
            "round {round}: password change"
        );
        password = next;
    }
    for round in 0..ROUNDS {
        let name = format!("leaver{round}");
        assert_eq!(register(b.addr, &name, GOOD_PASSWORD).await.status, 201);
        let token = login(b.addr, &name, GOOD_PASSWORD).await;
        let body = json!({"password": GOOD_PASSWORD});
        let deleted = http_client::send_json(a.addr, "DELETE", "/v1/users/me", Some(&token), &body)
            .await
            .unwrap();
        assert_eq!(deleted.status, 204);
        assert_eq!(
            me(b.addr, &token).await,
            401,
            "round {round}: account deletion"
        );
    }
}

/// The admin CLI is a third process on the database: when it returns, no replica accepts the
/// tokens it revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn the_admin_clis_revoke_is_refused_by_every_replica() {
    let (a, b, _dir, db) = two_replicas().await;
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    for round in 0..ROUNDS {
        let token = login(a.addr, "kvothe", GOOD_PASSWORD).await;
        let output = admin_cli(&["user", "revoke", "kvothe"], &[("TESSERA_DB", &db)]).await;
        assert!(output.status.success(), "{output:?}");
        assert_eq!(me(a.addr, &token).await, 401, "round {round}: A");
        assert_eq!(me(b.addr, &token).await, 401, "round {round}: B");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn fifty_registrations_of_one_name_across_two_replicas_yield_one_account() {
    let (a, b, _dir, _db) = two_replicas().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            tokio::spawn(async move { register(addr, "kvothe", GOOD_PASSWORD).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
}

/// A cluster of its own (stopping the suite's would break the other tests), started with the
/// same script CI uses.
pub(crate) struct OwnCluster {
    folder: String,
    password: String,
    url: String,
}

impl OwnCluster {
    pub(crate) fn start() -> Self {
        let output = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tools/postgres-throwaway.sh"
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let exports = String::from_utf8(output.stdout).unwrap();
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap()
                .to_owned()
        };
        Self {
            folder: value("PG_THROWAWAY"),
            password: value("PGPASSWORD"),
            url: value("TESSERA_TEST_POSTGRES"),
        }
    }

    pub(crate) fn pg_ctl(&self, action: &str) {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .map(|entry| entry.unwrap().path().join("bin/pg_ctl"))
            .max()
            .unwrap();
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin)
            .args(["-D", &format!("{}/data", self.folder), "-w", "-m", "fast"])
            .args(["-l", &format!("{}/server.log", self.folder), action])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action}");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tools/postgres-throwaway.sh"
            ))
            .arg("stop")
            .env("PG_THROWAWAY", &self.folder)
            .status();
    }
}

/// The database goes away under traffic: every replica fails closed (503 with Retry-After, never
/// a 200 for a token revoked just before), and recovers alone when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn replicas_fail_closed_while_the_database_is_down_and_recover_alone() {
    let cluster = OwnCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    let db = format!("{}/postgres", cluster.url);
    let a = start_replica(&db, &keys, Some(&cluster.password));
    let b = start_replica(&db, &keys, Some(&cluster.password));
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    let revoked = login(a.addr, "kvothe", GOOD_PASSWORD).await;
    let kept = login(b.addr, "kvothe", GOOD_PASSWORD).await;
    assert_eq!(
        send(a.addr, "DELETE", "/v1/sessions/current", &revoked)
            .await
            .status,
        204
    );

    // Traffic with the revoked token runs on both replicas through the outage and the recovery:
    // whatever each answer is, it is never 200.
    let stop_traffic = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| {
            let (stop, token) = (stop_traffic.clone(), revoked.clone());
            tokio::spawn(async move {
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    *statuses.entry(me(addr, &token).await).or_default() += 1;
                }
                statuses
            })
        })
        .collect();

    cluster.pg_ctl("stop");
    for replica in [&a, &b] {
        for token in [&revoked, &kept] {
            let reply = send(replica.addr, "GET", "/v1/users/me", token).await;
            assert_eq!(reply.status, 503, "{:?}", reply.json());
            assert!(reply.header("retry-after").is_some());
        }
        let ready = http_client::send(replica.addr, "GET", "/readyz", &[], None)
            .await
            .unwrap();
        assert_eq!(ready.status, 503);
        let body = json!({"username": "kvothe", "password": GOOD_PASSWORD});
        assert_eq!(post(replica.addr, "/v1/sessions", &body).await.status, 503);
        assert_eq!(
            register(replica.addr, "other", GOOD_PASSWORD).await.status,
            503
        );
    }

    cluster.pg_ctl("start");
    for replica in [&a, &b] {
        // Each replica reconnects on its own; poll until it says it is ready again.
        let mut ready = false;
        for _ in 0..300 {
            let reply = http_client::send(replica.addr, "GET", "/readyz", &[], None)
                .await
                .unwrap();
            if reply.status == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "a replica did not recover within 30 s");
        assert_eq!(me(replica.addr, &kept).await, 200);
        assert_eq!(me(replica.addr, &revoked).await, 401);
    }
    stop_traffic.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in traffic {
        let statuses = task.await.unwrap();
        assert!(
            !statuses.contains_key(&200),
            "a revoked token got 200: {statuses:?}"
        );
        assert!(statuses.contains_key(&503), "{statuses:?}");
    }
}

/// The documented rotation across replicas: add the key everywhere, then promote it, then
/// retire the old one — at no step does a token signed by one replica fail on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn a_key_rotation_rolled_out_replica_by_replica_never_strands_a_token() {
    use tessera::cli::admin;
    use tessera::cli::args::KeysAction;
    let db = crate::helpers::fresh_postgres_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = |name: &str| dir.path().join(name);
    tessera::token::JwkSet::create(&keys("v1.json")).unwrap();
    let mut a = start_replica(&db, &keys("v1.json"), None);
    let mut b = start_replica(&db, &keys("v1.json"), None);
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    let cross_check = |a: SocketAddr, b: SocketAddr| async move {
        let from_a = login(a, "kvothe", GOOD_PASSWORD).await;
        let from_b = login(b, "kvothe", GOOD_PASSWORD).await;
        assert_eq!(me(b, &from_a).await, 200, "B verifies A's token");
        assert_eq!(me(a, &from_b).await, 200, "A verifies B's token");
    };
    // Step 1: a verify-only key, rolled out one replica at a time.
    std::fs::copy(keys("v1.json"), keys("v2.json")).unwrap();
    let added = admin::keys(&KeysAction::Add, &keys("v2.json")).unwrap();
    let new_kid = added.split_whitespace().nth(1).unwrap().to_owned();
    drop(b);
    b = start_replica(&db, &keys("v2.json"), None);
    cross_check(a.addr, b.addr).await;
    drop(a);
    a = start_replica(&db, &keys("v2.json"), None);
    cross_check(a.addr, b.addr).await;
    // Step 2: promote it, again one replica at a time: A signs with it while B still has v2.
    std::fs::copy(keys("v2.json"), keys("v3.json")).unwrap();
    admin::keys(
        &KeysAction::Promote {
            kid: new_kid.clone(),
        },
        &keys("v3.json"),
    )
    .unwrap();
    drop(a);
    a = start_replica(&db, &keys("v3.json"), None);
    cross_check(a.addr, b.addr).await;
    drop(b);
    b = start_replica(&db, &keys("v3.json"), None);
    cross_check(a.addr, b.addr).await;
    let token = login(b.addr, "kvothe", GOOD_PASSWORD).await;
    let kid = tessera::token::inspect::inspect(
        &token,
        0,
        &tessera::token::ValidationPolicy {
            issuer: "tessera".into(),
            audience: "tessera-api".into(),
            leeway: 30,
            max_lifetime: 900,
        },
    )
    .header
    .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(kid, new_kid, "the promoted key signs");
}

/// Token checks share statements under load: each must still get its own user's answer. Forty
/// users, half logged out, all forty asking `/me` at once, ten times over both replicas: every
/// answer is the caller's own profile or, for a logged-out token, 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn batched_token_checks_answer_each_request_with_its_own_user() {
    let (a, b, _dir, _db) = two_replicas().await;
    let mut users = Vec::new();
    for i in 0..40 {
        let name = format!("user{i}");
        assert_eq!(register(a.addr, &name, GOOD_PASSWORD).await.status, 201);
        let token = login(b.addr, &name, GOOD_PASSWORD).await;
        let logged_out = i % 2 == 1;
        if logged_out {
            assert_eq!(
                send(a.addr, "DELETE", "/v1/sessions/current", &token)
                    .await
                    .status,
                204
            );
        }
        users.push((name, token, logged_out));
    }
    // Forty at a time (a client may hold 128 connections per replica).
    for round in 0..10 {
        let addr = if round % 2 == 0 { a.addr } else { b.addr };
        let tasks: Vec<_> = users
            .iter()
            .cloned()
            .map(|(name, token, logged_out)| {
                tokio::spawn(async move {
                    let reply = send(addr, "GET", "/v1/users/me", &token).await;
                    (
                        name,
                        logged_out,
                        reply.status,
                        reply.json()["username"].clone(),
                    )
                })
            })
            .collect();
        for task in tasks {
            let (name, logged_out, status, username) = task.await.unwrap();
            if logged_out {
                assert_eq!(status, 401, "{name}");
            } else {
                assert_eq!(
                    (status, username),
                    (200, Value::from(name.clone())),
                    "{name}"
                );
            }
        }
    }
}

/// The softlock counts failures in the database: guesses spread over two replicas meet it as if
/// they had gone to one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (TESSERA_TEST_POSTGRES); .ci/run runs it"]
async fn the_softlock_holds_across_replicas() {
    let (a, b, _dir, _db) = two_replicas().await;
    assert_eq!(register(a.addr, "kvothe", GOOD_PASSWORD).await.status, 201);
    let wrong = json!({"username": "kvothe", "password": "not the password at all"});
    for attempt in 0..5 {
        let addr = if attempt % 2 == 0 { a.addr } else { b.addr };
        assert_eq!(
            post(addr, "/v1/sessions", &wrong).await.status,
            401,
            "attempt {attempt}"
        );
    }
    let right = json!({"username": "kvothe", "password": GOOD_PASSWORD});
    for replica in [&a, &b] {
        let reply = post(replica.addr, "/v1/sessions", &right).await;
        assert_eq!(reply.status, 429, "{:?}", reply.json());
        assert!(reply.header("retry-after").is_some());
    }
}
