//! `tessera-token` against tokens from a real running server.
#![allow(clippy::indexing_slicing)] // test code: a bad index is a failed test

#[path = "../../../tests/api/http_client.rs"]
#[allow(dead_code)] // the API tests use more of it
mod http_client;

fn uid(id: &str) -> tessera::domain::ids::UserId {
    tessera::domain::ids::UserId::from_string(id.into())
}

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "correct horse battery staple";

fn run(args: &[&str], stdin: &str) -> Output {
    run_with_env(args, stdin, &[])
}

fn run_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-token"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Logs kvothe in: (access token, refresh token).
async fn login(addr: std::net::SocketAddr) -> (String, String) {
    let login = json!({"username": "kvothe", "password": PASSWORD});
    let reply = http_client::send_json(addr, "POST", "/v1/sessions", None, &login)
        .await
        .unwrap();
    let body = reply.json();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Logs the token's session out through the API: the status.
async fn logout(addr: std::net::SocketAddr, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    http_client::send(
        addr,
        "DELETE",
        "/v1/sessions/current",
        &[("authorization", &bearer)],
        None,
    )
    .await
    .unwrap()
    .status
}

async fn refresh(addr: std::net::SocketAddr, token: &str) -> (u16, Value) {
    let reply = http_client::send_json(
        addr,
        "POST",
        "/v1/sessions/refresh",
        None,
        &json!({"refresh_token": token}),
    )
    .await
    .unwrap();
    (reply.status, reply.json())
}

/// Starts the server on a temp dir, registers and logs in one user; returns the token.
async fn server_and_token(dir: &Path) -> (std::net::SocketAddr, String) {
    use clap::Parser as _;
    let cli = tessera::cli::args::Cli::try_parse_from([
        "tessera",
        "serve",
        "--db",
        dir.join("t.db").to_str().unwrap(),
        "--keys",
        dir.join("jwks.json").to_str().unwrap(),
        "--argon2-memory-kib",
        "256",
        "--argon2-iterations",
        "1",
    ])
    .unwrap();
    let tessera::cli::args::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    tessera::token::JwkSet::create(&dir.join("jwks.json")).unwrap();
    let config = args.to_config();
    let state = tessera::app::build_state(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tessera::app::run(
        listener,
        None,
        state,
        tessera::app::Housekeeping::of(&config),
        std::future::pending(),
    ));
    let body = json!({"username": "kvothe", "full_name": "Patrick Rothfuss", "password": PASSWORD,
                      "mothers_favorite_search_engine": "Duck Duck Go"});
    let created = http_client::send_json(addr, "POST", "/v1/users", None, &body)
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    (addr, login(addr).await.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_verify_a_token_from_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, token) = server_and_token(dir.path()).await;
    let keys = dir.path().join("jwks.json");
    let db = dir.path().join("t.db");

    let inspected = run(&["inspect", "-"], &format!("{token}\n"));
    assert!(inspected.status.success());
    let text = stdout(&inspected);
    assert!(
        text.contains("\"alg\": \"HS256\"") && text.contains("\"typ\": \"at+jwt\""),
        "{text}"
    );
    assert!(
        text.contains("expires in 14m") || text.contains("expires in 15m"),
        "{text}"
    );

    let json_out = run(&["inspect", "--json", "-"], &token);
    let value: Value = serde_json::from_str(&stdout(&json_out)).unwrap();
    assert_eq!(value["problems"], json!([]));
    assert_eq!(value["header"]["alg"], "HS256");
    let sid = value["claims"]["sid"].as_str().unwrap().to_owned();
    assert_eq!(sid.len(), 22);
    // The authentication methods (RFC 8176): a password alone here.
    assert_eq!(value["claims"]["amr"], json!(["pwd"]));
    assert!(text.contains("\"amr\": [\n    \"pwd\"\n  ]"), "{text}");
    assert!(text.contains(&format!("\"sid\": \"{sid}\"")), "{text}");

    let verified = run(
        &[
            "verify",
            "--keys",
            keys.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "-",
        ],
        &token,
    );
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).contains("revocation: active"));
    assert!(stdout(&verified).contains("session: live"));

    // Log out through the API: the CLI now reports the revocation and fails.
    assert_eq!(logout(addr, &token).await, 204);
    let revoked = run(
        &[
            "verify",
            "--json",
            "--keys",
            keys.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "-",
        ],
        &token,
    );
    assert!(!revoked.status.success());
    let value: Value = serde_json::from_str(&stdout(&revoked)).unwrap();
    assert_eq!(value["valid"], false);
    assert!(
        value["reason"]
            .as_str()
            .unwrap()
            .starts_with("token's session was ended"),
        "{value}"
    );
    assert_eq!(value["session"], "ended (logged out)");

    // A replayed refresh token ends its session: the CLI says so.
    let (access, first) = login(addr).await;
    let (status, body) = refresh(addr, &first).await;
    assert_eq!(status, 200);
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(addr, &second).await.0, 200);
    assert_eq!(
        refresh(addr, &first).await.0,
        401,
        "replay of a twice-superseded token"
    );
    let replayed = run(
        &[
            "verify",
            "--keys",
            keys.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "-",
        ],
        &access,
    );
    assert!(!replayed.status.success());
    assert!(
        stdout(&replayed).contains("session: reuse-revoked"),
        "{}",
        stdout(&replayed)
    );
}

#[test]
fn inspect_warns_about_what_the_server_would_reject() {
    // alg none, an unsecured token (RFC 7519 §6.1 style).
    let token = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UifQ.";
    let output = run(&["inspect", token], "");
    assert!(!output.status.success());
    assert!(
        stdout(&output).contains("empty signature"),
        "{}",
        stdout(&output)
    );

    let output = run(&["inspect", "-"], "not a token\n");
    assert!(
        stdout(&output).contains("whitespace"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn verify_with_the_wrong_key_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    let other = tessera::token::Keyring::from_secret("other", &[9u8; 32]).unwrap();
    let policy = tessera::token::ValidationPolicy {
        issuer: "tessera".into(),
        audience: "tessera-api".into(),
        leeway: 30,
        max_lifetime: 3600,
    };
    let token = tessera::token::Codec::new(other, policy)
        .issue(
            &uid("user"),
            &tessera::domain::ids::SessionId::random(),
            0,
            tessera::support::clock::now(),
            3600,
        )
        .token;
    let output = run(&["verify", "--keys", keys.to_str().unwrap(), "-"], &token);
    assert!(!output.status.success());
    assert!(
        stdout(&output).contains("invalid: key id is unknown"),
        "{}",
        stdout(&output)
    );
}

/// The server's settings come from TESSERA_* variables; on its host, `tessera-token` reads the
/// same ones and needs no flags.
#[test]
fn verify_reads_the_servers_tessera_variables() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    let policy = tessera::token::ValidationPolicy {
        issuer: "tessera-staging".into(),
        audience: "staging-api".into(),
        leeway: 30,
        max_lifetime: 600,
    };
    let token = tessera::token::Codec::new(tessera::token::Keyring::load(&keys).unwrap(), policy)
        .issue(
            &uid("user"),
            &tessera::domain::ids::SessionId::random(),
            0,
            tessera::support::clock::now(),
            600,
        )
        .token;
    let env = [
        ("TESSERA_KEYS", keys.to_str().unwrap()),
        ("TESSERA_ISSUER", "tessera-staging"),
        ("TESSERA_AUDIENCE", "staging-api"),
        ("TESSERA_TOKEN_TTL", "600"),
    ];
    let output = run_with_env(&["verify", "--no-db", "-"], &token, &env);
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    // The defaults are the server's own: another issuer is refused.
    let output = run(
        &["verify", "--no-db", "--keys", keys.to_str().unwrap(), "-"],
        &token,
    );
    assert!(!output.status.success());
    assert!(stdout(&output).contains("issuer"), "{}", stdout(&output));
}

/// `TESSERA_DB` may hold a URL with a password: no help screen prints it.
#[test]
fn help_never_prints_the_database_url_from_the_environment() {
    for args in [
        &["-h"][..],
        &["--help"],
        &["verify", "-h"],
        &["verify", "--help"],
        &["inspect", "--help"],
    ] {
        let output = run_with_env(
            args,
            "",
            &[(
                "TESSERA_DB",
                "postgres://tessera:SECRET-IN-URL@db.internal/tessera",
            )],
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(!text.contains("SECRET-IN-URL"), "{args:?}:\n{text}");
    }
}

/// A logged-out token is never "valid" with exit 0 because revocation went unchecked: the
/// database defaults to the server's, `--no-db` is explicit and exits 3, and a database that
/// is not there is an error (2), not a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_never_passes_a_revoked_token_for_want_of_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, token) = server_and_token(dir.path()).await;
    assert_eq!(logout(addr, &token).await, 204);
    let keys = dir.path().join("jwks.json");
    let db = dir.path().join("t.db");
    let env = [
        ("TESSERA_KEYS", keys.to_str().unwrap()),
        ("TESSERA_DB", db.to_str().unwrap()),
    ];
    // The server's database, from the server's variable, with no flag.
    let checked = run_with_env(&["verify", "-"], &token, &env);
    assert_eq!(checked.status.code(), Some(1), "{}", stdout(&checked));
    assert!(stdout(&checked).contains("invalid: token's session was ended"));
    // Asked not to check: never exit 0, never the word "valid" alone.
    let unchecked = run_with_env(&["verify", "--no-db", "-"], &token, &env);
    assert_eq!(unchecked.status.code(), Some(3), "{}", stdout(&unchecked));
    let text = stdout(&unchecked);
    assert!(
        text.starts_with("signature and claims valid, revocation NOT checked"),
        "{text}"
    );
    let json_out = run_with_env(&["verify", "--no-db", "--json", "-"], &token, &env);
    let value: Value = serde_json::from_str(&stdout(&json_out)).unwrap();
    assert_eq!(value["valid"], Value::Null);
    // No database where the default points: an error that says what to pass.
    let missing = run_with_env(
        &["verify", "--keys", keys.to_str().unwrap(), "-"],
        &token,
        &[("TESSERA_DB", dir.path().join("absent.db").to_str().unwrap())],
    );
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("--no-db") && stderr.contains("absent.db"),
        "{stderr}"
    );
}

/// What is not an access token is named: a refresh token, empty input.
#[test]
fn verify_and_inspect_say_what_a_non_token_is() {
    for command in ["verify", "inspect"] {
        let refresh = run(
            &[command, "-"],
            "tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        );
        assert_eq!(refresh.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&refresh.stderr);
        assert!(stderr.contains("refresh token"), "{command}: {stderr}");
        let empty = run(&[command, "-"], "\n");
        assert_eq!(empty.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&empty.stderr);
        assert!(stderr.contains("empty"), "{command}: {stderr}");
    }
}

/// The server refuses a token from its `exp` on, and so does `verify`: no leeway past it.
#[test]
fn verify_refuses_a_token_past_its_exp_like_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    let policy = tessera::token::ValidationPolicy {
        issuer: "tessera".into(),
        audience: "tessera-api".into(),
        leeway: 30,
        max_lifetime: 900,
    };
    let now = tessera::support::clock::now();
    let token = tessera::token::Codec::new(tessera::token::Keyring::load(&keys).unwrap(), policy)
        .issue(
            &uid("user"),
            &tessera::domain::ids::SessionId::random(),
            0,
            now - 70,
            60,
        )
        .token;
    let output = run(
        &["verify", "--no-db", "--keys", keys.to_str().unwrap(), "-"],
        &token,
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("expired"), "{}", stdout(&output));
}
