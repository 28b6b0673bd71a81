//! `tessera-demo`: rebuild `data/tessera-dump.sql` from the seed users (`data/seed-users.csv`), through the
//! real HTTP API of a real server (fresh database and keys in a temporary directory, default
//! settings), so the dump shows exactly what the service does with that data.
//!
//! Steps: register every CSV row; log in kvothe and tpratchett (the two whose passwords pass
//! the policy), each a live session, and refresh tpratchett's once (its session has rotated);
//! tpratchett turns on a second factor (TOTP, its secret sealed under the keys, which stay
//! behind); log kvothe in a second time and log that session out, so an ended session and the
//! denylist show; dump. Tokens, refresh tokens and keys never leave the temporary directory.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The tests' HTTP client, shared rather than copied: one request per connection, whole bodies.
#[path = "../../../tests/api/http_client.rs"]
#[allow(dead_code)] // the tests use more of it than the demo
mod http_client;

use http_client::Reply;
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use tessera::config::Config;

/// One row of the seed CSV, verbatim (no trimming: what the service does with the values
/// is the point).
#[derive(Debug, Clone, Deserialize)]
struct SeedUser {
    username: String,
    full_name: String,
    password: String,
    mothers_favorite_search_engine: String,
}

/// The users the demo logs in.
const LOGGED_IN: [&str; 2] = ["kvothe", "tpratchett"];

#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("cannot read {path}: {reason}")]
    Seed { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("server: {0}")]
    Startup(#[from] tessera::app::StartupError),
    #[error("http: {0}")]
    Client(#[from] http_client::ClientError),
    #[error("store: {0}")]
    Store(#[from] tessera::store::StoreError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let seed = args.next().unwrap_or_else(|| "data/seed-users.csv".into());
    let out = args
        .next()
        .unwrap_or_else(|| "data/tessera-dump.sql".into());
    match regenerate(Path::new(&seed), Path::new(&out)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tessera-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read_seed(path: &Path) -> Result<Vec<SeedUser>, DemoError> {
    let seed_error = |reason: String| DemoError::Seed {
        path: path.display().to_string(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::None)
        .from_path(path)
        .map_err(|e| seed_error(e.to_string()))?;
    reader
        .deserialize()
        .collect::<Result<Vec<SeedUser>, _>>()
        .map_err(|e| seed_error(e.to_string()))
}

/// Regenerates the dump at `out` from the CSV at `seed`; returns a report of what happened.
fn regenerate(seed: &Path, out: &Path) -> Result<String, DemoError> {
    let users = read_seed(seed)?;
    let workdir = tempfile::tempdir()?;
    let db = workdir.path().join("tessera.db");
    let keys = workdir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).map_err(tessera::app::StartupError::from)?;
    let config = Config::for_paths(&db, &keys);

    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let state = tessera::app::build_state(&config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tessera::app::run(
            listener,
            None,
            state.clone(),
            tessera::app::Housekeeping::of(&config),
            async {
                let _ = stopped.await;
            },
        ));
        let report = drive(addr, &users).await;
        let _ = stop.send(());
        let _ = server.await;
        report
    })?;

    // Read back as an operator would, after the server stopped and checkpointed.
    let dump = tessera::store::open_existing(&tessera::store::DbLocation::Sqlite(db))?.dump()?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, &dump)?;
    Ok(format!("{report}wrote {}\n", out.display()))
}

/// The HTTP conversation itself.
async fn drive(addr: SocketAddr, users: &[SeedUser]) -> Result<String, DemoError> {
    let mut report = String::new();
    for user in users {
        let reply = http_client::send_json(
            addr,
            "POST",
            "/v1/users",
            None,
            &json!({
                "username": user.username,
                "full_name": user.full_name,
                "password": user.password,
                "mothers_favorite_search_engine": user.mothers_favorite_search_engine,
            }),
        )
        .await?;
        let _ = writeln!(
            report,
            "register {:<12} -> {}",
            user.username,
            describe(&reply)
        );
    }
    let mut grants = Vec::new();
    for name in LOGGED_IN {
        let grant = login(addr, users, name).await?;
        let token = field(&grant, "access_token")?;
        let authorization = format!("Bearer {token}");
        let me = http_client::send(
            addr,
            "GET",
            "/v1/users/me",
            &[("authorization", &authorization)],
            None,
        )
        .await?;
        let _ = writeln!(
            report,
            "login    {name:<12} -> 200, GET /v1/users/me -> {}",
            me.status
        );
        grants.push(grant);
    }
    let last = grants
        .last()
        .ok_or_else(|| DemoError::Unexpected("nobody logged in".into()))?;
    let refreshed = http_client::send_json(
        addr,
        "POST",
        "/v1/sessions/refresh",
        None,
        &json!({ "refresh_token": field(last, "refresh_token")? }),
    )
    .await?;
    expect(&refreshed, 200)?;
    let _ = writeln!(
        report,
        "refresh  {:<12} -> 200 (the session's refresh token rotated)",
        LOGGED_IN.last().unwrap_or(&"")
    );
    // The last user turns on a second factor, with the code an authenticator app would show.
    let token = field(&refreshed.json(), "access_token")?;
    let authorization = format!("Bearer {token}");
    let user = users
        .iter()
        .find(|u| Some(&u.username.as_str()) == LOGGED_IN.last())
        .ok_or_else(|| DemoError::Unexpected("no last user".into()))?;
    let enrolled = http_client::send_json(
        addr,
        "POST",
        "/v1/users/me/totp",
        Some(&token),
        &json!({ "password": user.password }),
    )
    .await?;
    expect(&enrolled, 201)?;
    let secret =
        tessera::domain::totp::TotpSecret::from_base32(&field(&enrolled.json(), "secret")?)
            .ok_or_else(|| DemoError::Unexpected("the enrolment's secret is not base32".into()))?;
    let code = secret.code_at(tessera::domain::totp::step_at(
        tessera::support::clock::now(),
    ));
    let confirmed = http_client::send(
        addr,
        "POST",
        "/v1/users/me/totp/confirm",
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        Some(json!({ "code": code }).to_string().into_bytes()),
    )
    .await?;
    expect(&confirmed, 200)?;
    let _ = writeln!(
        report,
        "totp     {:<12} -> 201, confirmed -> 200 (second factor active)",
        user.username
    );
    let extra = field(&login(addr, users, LOGGED_IN[0]).await?, "access_token")?;
    let logout = http_client::send(
        addr,
        "DELETE",
        "/v1/sessions/current",
        &[("authorization", &format!("Bearer {extra}"))],
        None,
    )
    .await?;
    expect(&logout, 204)?;
    let _ = writeln!(
        report,
        "login    {:<12} -> 200, then logged out -> 204",
        LOGGED_IN[0]
    );
    Ok(report)
}

/// Logs `name` in; the grant (access and refresh token, session id).
async fn login(
    addr: SocketAddr,
    users: &[SeedUser],
    name: &str,
) -> Result<serde_json::Value, DemoError> {
    let user = users
        .iter()
        .find(|u| u.username == name)
        .ok_or_else(|| DemoError::Unexpected(format!("{name} is not in the seed file")))?;
    let reply = http_client::send_json(
        addr,
        "POST",
        "/v1/sessions",
        None,
        &json!({"username": user.username, "password": user.password}),
    )
    .await?;
    expect(&reply, 200)?;
    Ok(reply.json())
}

fn field(grant: &serde_json::Value, name: &str) -> Result<String, DemoError> {
    grant
        .get(name)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| DemoError::Unexpected(format!("no {name} in the grant")))
}

fn expect(reply: &Reply, status: u16) -> Result<(), DemoError> {
    if reply.status == status {
        return Ok(());
    }
    Err(DemoError::Unexpected(format!(
        "expected {status}, got {}",
        describe(reply)
    )))
}

/// `201` or `422 password: too_short` — status and the problem's field codes.
fn describe(reply: &Reply) -> String {
    let body = reply.json();
    let text = |error: &serde_json::Value, key: &str| {
        error
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let codes: Vec<String> = body
        .get("errors")
        .and_then(serde_json::Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| format!("{}: {}", text(e, "field"), text(e, "code")))
                .collect()
        })
        .unwrap_or_default();
    if codes.is_empty() {
        reply.status.to_string()
    } else {
        format!("{} {}", reply.status, codes.join(", "))
    }
}
