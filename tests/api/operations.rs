//! Health, the contract, graceful shutdown, and the operator commands.

use crate::helpers::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use tessera::cli::args::{DbAction, KeysAction, UserAction};
use tessera::domain::password::HashParams;

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let app = spawn_app().await;
    let health = app.send("GET", "/healthz", None).await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = app.send("GET", "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    // SQLite's view proves itself on every check; a PostgreSQL replica answers from memory once
    // it holds its lease, a moment after start. Either way token checks come from memory.
    let mut checks = ready.json()["token_checks"].clone();
    for _ in 0..500 {
        if checks == "memory" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        checks = app.send("GET", "/readyz", None).await.json()["token_checks"].clone();
    }
    assert_eq!(checks, "memory");
}

#[tokio::test]
async fn readiness_fails_with_503_once_the_database_file_is_gone() {
    let app = spawn_sqlite_app().await;
    // Open connections would keep working on the unlinked file: readiness must notice anyway.
    std::fs::remove_file(&app.db_path).unwrap();
    let ready = app.send("GET", "/readyz", None).await;
    let problem = assert_problem(&ready, 503);
    assert_eq!(problem["type"], "urn:tessera:problem:not-ready");
    assert_eq!(ready.header("retry-after"), Some("5"));
    // Liveness is about the process, which is still up.
    assert_eq!(app.send("GET", "/healthz", None).await.status, 200);
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routers_routes() {
    let app = spawn_app().await;
    let reply = app.send("GET", "/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let spec = reply.json();
    assert_eq!(spec["openapi"].as_str().unwrap(), "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<_> = tessera::http::router::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, routed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut app = spawn_app_with(|c| {
        c.hash = HashParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    })
    .await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let addr = app.addr;
    let in_flight = tokio::spawn(async move {
        crate::http_client::send_json(
            addr,
            "POST",
            "/v1/sessions",
            None,
            &serde_json::json!({"username": "kvothe", "password": GOOD_PASSWORD}),
        )
        .await
    });
    // Shut down only once the login is being served.
    wait_for(|| app.state.metrics.requests_in_flight() == 1).await;
    app.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap().status, 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn admin_user_commands_list_revoke_and_check() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let list = tessera::cli::admin::user(&UserAction::List, &app.db).unwrap();
    assert!(list.contains("kvothe\t"), "{list}");
    assert!(!list.contains("argon2"), "never hashes");
    let revoke = UserAction::Revoke {
        username: "Kvothe".into(),
    };
    tessera::cli::admin::user(&revoke, &app.db).unwrap();
    assert_problem(&app.me(&token).await, 401);
    let missing = UserAction::Revoke {
        username: "nobody".into(),
    };
    assert!(tessera::cli::admin::user(&missing, &app.db).is_err());
    assert_eq!(
        tessera::cli::admin::db(&DbAction::Check, &app.db).unwrap(),
        "ok\n"
    );
    let dump = tessera::cli::admin::db(&DbAction::Dump, &app.db).unwrap();
    assert!(dump.contains("INSERT INTO \"users\""));
    assert!(!dump.contains(&token));
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_until_retired() {
    let app = spawn_app().await;
    let old_token = app.user_with_token("kvothe").await;
    let old_kid = tessera::token::JwkSet::load(&app.keys_path).unwrap().keys[0]
        .kid
        .clone();
    tessera::cli::admin::keys(&KeysAction::Rotate, &app.keys_path).unwrap();
    let listed = tessera::cli::admin::keys(&KeysAction::List, &app.keys_path).unwrap();
    assert_eq!(listed.lines().count(), 2);
    assert!(listed.lines().nth(1).unwrap().starts_with(&old_kid));

    let app = app.restart(|_| {}).await;
    assert_eq!(
        app.me(&old_token).await.status,
        200,
        "old key still verifies"
    );
    let new_token = app.token("kvothe", GOOD_PASSWORD).await;
    assert_ne!(app.claims_of(&new_token).jti, "");
    // Right after the rotation, tokens the old key signed are live: refused without --force.
    let retire = |force| KeysAction::Retire {
        kid: old_kid.clone(),
        force,
        token_ttl: 3600,
        leeway: 30,
        db: app.db.clone(),
    };
    let refused = tessera::cli::admin::keys(&retire(false), &app.keys_path).unwrap_err();
    assert!(refused.to_string().contains("--force"), "{refused}");
    assert_eq!(app.me(&old_token).await.status, 200);
    tessera::cli::admin::keys(&retire(true), &app.keys_path).unwrap();
    let app = app.restart(|_| {}).await;
    assert_problem(&app.me(&old_token).await, 401);
    assert_eq!(app.me(&new_token).await.status, 200);
}

#[test]
fn serve_fails_closed_naming_a_group_readable_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--listen", "127.0.0.1:0", "--keys"])
        .arg(&keys)
        .arg("--db")
        .arg(dir.path().join("t.db"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("jwks.json") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_missing_explicit_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--listen", "127.0.0.1:0", "--keys"])
        .arg(dir.path().join("absent.json"))
        .arg("--db")
        .arg(dir.path().join("t.db"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absent.json"), "{stderr}");
    assert!(stderr.contains("tessera keys generate --keys"), "{stderr}");
}

#[test]
fn keys_generate_writes_a_private_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["keys", "generate", "--keys"])
            .arg(&keys)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success());
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = &tessera::token::JwkSet::load(&keys).unwrap().keys[0].k;
    assert!(!String::from_utf8_lossy(&first.stdout).contains(secret.as_str()));
    assert!(!run().status.success());
}

#[tokio::test]
async fn metrics_count_requests_logins_and_tokens_on_their_own_port() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    app.login("kvothe", "wrong wrong wrong wrong").await;
    app.me(&token).await;
    app.send("DELETE", "/v1/sessions/current", Some(&token))
        .await;
    let reply = crate::http_client::send(app.metrics_addr, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = String::from_utf8_lossy(&reply.body);
    for line in [
        "tessera_http_requests_total{route=\"GET /v1/users/me\",status=\"200\"} 1",
        "tessera_http_requests_total{route=\"POST /v1/sessions\",status=\"401\"} 1",
        "tessera_logins_total{outcome=\"succeeded\"} 1",
        "tessera_logins_total{outcome=\"failed\"} 1",
        "tessera_tokens_issued_total 1",
        "tessera_logouts_total 1",
        "tessera_argon2_queue_depth 0",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    assert!(text.contains(
        "tessera_http_request_duration_seconds_bucket{route=\"GET /v1/users/me\",le=\"+Inf\"} 1"
    ));
    // Not on the API port.
    assert_problem(&app.send("GET", "/metrics", None).await, 404);
}

/// Only `serve` creates a database: every other command refuses a missing file (a typo in
/// `--db` must not yield an empty database and exit 0).
#[test]
fn admin_commands_refuse_a_database_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.db");
    for args in [
        &["user", "list"][..],
        &["user", "revoke", "kvothe"],
        &["user", "unlock", "kvothe"],
        &["db", "dump"],
        &["db", "check"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .arg("--db")
            .arg(&typo)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("no database at"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created the file");
    }
}

/// Every admin argument has a help line.
#[test]
fn every_admin_argument_has_a_help_line() {
    for args in [
        &["keys", "retire", "--help"][..],
        &["user", "revoke", "--help"],
        &["user", "unlock", "--help"],
        &["db", "dump", "--help"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        for line in help.lines() {
            let trimmed = line.trim_start();
            let is_argument = trimmed.starts_with("--") || trimmed.starts_with('<');
            if is_argument && !trimmed.starts_with("-h") {
                let described = trimmed.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
                assert!(described, "{args:?}: {line:?} has no help text");
            }
        }
    }
}

/// Session ids are base64url, so one in 32 starts with `-`: the admin CLI must take it as the
/// id, not as a flag (CI met one in `races::the_admin_cli_ends_a_session_while_others_refresh`).
#[tokio::test]
async fn admin_commands_take_ids_and_names_that_start_with_a_hyphen() {
    let app = spawn_app().await;
    for args in [
        ["session", "revoke", "-AAAAAAAAAAAAAAAAAAAAA"],
        ["user", "revoke", "-kvothe"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .arg("--db")
            .arg(&app.db_path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("no live session") || stderr.contains("no user"),
            "{stderr}"
        );
    }
}

/// Two servers on one database with different key material under one key id would each refuse
/// the other's tokens: the second refuses to start, naming the kid.
#[tokio::test]
async fn a_server_whose_key_id_holds_other_key_material_refuses_to_start() {
    let app = spawn_app().await;
    let mut set = tessera::token::JwkSet::load(&app.keys_path).unwrap();
    let kid = set.keys[0].kid.clone();
    let impostor = tessera::token::JwkSet::generate();
    set.keys[0].k = impostor.keys[0].k.clone();
    let other_keys = app.keys_path.with_file_name("other.json");
    set.save(&other_keys).unwrap();
    let mut config = app.config.clone();
    config.keys_path = other_keys;
    let error = tessera::app::build_state(&config).unwrap_err().to_string();
    assert!(error.contains(&kid), "{error}");
    // The same keys again are fine (a restart, or a second replica).
    tessera::app::build_state(&app.config).unwrap();
}

/// A database URL carries a password: no error, log line or exit message may repeat it —
/// whether the URL is malformed, the server unreachable, or the serve command fails at start.
#[test]
fn a_database_urls_password_never_appears_in_errors() {
    let secret = "hunter2-never-print-me";
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    for url in [
        format!("postgres://tessera:{secret}@127.0.0.1:1/tessera"),
        format!("postgresql://tessera:{secret}@[::1/tessera"),
    ] {
        let admin = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["user", "list"])
            .env("TESSERA_DB", &url)
            .output()
            .unwrap();
        let serve = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--listen", "127.0.0.1:0", "--keys"])
            .arg(&keys)
            .env("TESSERA_DB", &url)
            .output()
            .unwrap();
        for output in [admin, serve] {
            assert!(!output.status.success(), "{url}");
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!printed.contains(secret), "{printed}");
            assert!(printed.contains("database"), "{printed}");
        }
    }
}

/// `TESSERA_DB` may hold a URL with a password (the README's PostgreSQL setup): no help screen
/// of any subcommand prints its value, with `-h` or `--help`.
#[test]
fn no_help_screen_prints_the_database_url_from_the_environment() {
    use clap::CommandFactory as _;
    fn paths(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        out.push(prefix.to_vec());
        for sub in command.get_subcommands() {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_owned());
            paths(sub, &path, out);
        }
    }
    let mut all = Vec::new();
    paths(&tessera::cli::args::Cli::command(), &[], &mut all);
    assert!(all.len() > 10, "{all:?}");
    for path in all {
        for flag in ["-h", "--help"] {
            let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(&path)
                .arg(flag)
                .env(
                    "TESSERA_DB",
                    "postgres://tessera:SECRET-IN-URL@db.internal/tessera",
                )
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{path:?} {flag}: {output:?}");
            assert!(
                !text.contains("SECRET-IN-URL"),
                "{path:?} {flag} prints the URL:\n{text}"
            );
        }
    }
}
