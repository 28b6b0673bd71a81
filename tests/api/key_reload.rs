//! A running server follows its key file: what `tessera keys …` says is what the server does,
//! without a restart. Waits are on the server's own count of reloads, never on a sleep.

use crate::helpers::*;
use std::os::unix::fs::PermissionsExt as _;
use tessera::cli::admin;
use tessera::cli::args::KeysAction;

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let json =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap();
    serde_json::from_slice::<serde_json::Value>(&json).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the server has applied (or refused) `count` reloads of its key file.
async fn reloads_reach(app: &TestApp, applied: u64, refused: u64) {
    wait_for(|| {
        let (a, r) = app.state.metrics.keyring_reloads();
        a >= applied && r >= refused
    })
    .await;
}

fn retire(kid: &str, force: bool, app: &TestApp) -> KeysAction {
    KeysAction::Retire {
        kid: kid.to_owned(),
        force,
        token_ttl: 900,
        leeway: 30,
        db: app.db.clone(),
    }
}

#[tokio::test]
async fn after_a_rotation_the_next_login_signs_with_the_new_key_without_a_restart() {
    let app = spawn_app().await;
    let before = app.user_with_token("kvothe").await;
    let said = admin::keys(&KeysAction::Rotate, &app.keys_path).unwrap();
    let new_kid = said.split_whitespace().nth(1).unwrap().to_owned();
    assert!(said.contains("within a second"), "{said}");
    reloads_reach(&app, 1, 0).await;
    assert_eq!(app.state.auth.signing_kid(), new_kid);
    // The server records that it signs with the new key, as retiring a key later relies on.
    wait_for(|| {
        app.store()
            .signing_until(&new_kid)
            .unwrap()
            .is_some_and(|until| until > tessera::support::clock::now())
    })
    .await;
    let after = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(kid_of(&after), new_kid);
    assert_ne!(kid_of(&before), new_kid);
    assert_eq!(
        app.me(&before).await.status,
        200,
        "the old key still verifies"
    );
    assert_eq!(app.me(&after).await.status, 200);
}

#[tokio::test]
async fn after_a_retirement_the_old_keys_token_is_refused_on_the_next_request() {
    let app = spawn_app().await;
    let old_token = app.user_with_token("kvothe").await;
    let old_kid = kid_of(&old_token);
    admin::keys(&KeysAction::Rotate, &app.keys_path).unwrap();
    reloads_reach(&app, 1, 0).await;
    let new_token = app.token("kvothe", GOOD_PASSWORD).await;
    // The verification cache has seen the old token on this thread; the reload must not let it
    // answer for the new keyring.
    assert_eq!(app.me(&old_token).await.status, 200);
    assert!(
        app.state.auth.verifies_kid(&old_kid),
        "rotated, not yet retired"
    );
    let said = admin::keys(&retire(&old_kid, true, &app), &app.keys_path).unwrap();
    assert!(said.contains("refuses tokens it signed"), "{said}");
    reloads_reach(&app, 2, 0).await;
    assert!(!app.state.auth.verifies_kid(&old_kid));
    assert!(app.state.auth.verifies_kid(&kid_of(&new_token)));
    assert_problem(&app.me(&old_token).await, 401);
    assert_eq!(app.me(&new_token).await.status, 200);
}

/// A key file that cannot be used — not JSON, or readable by others — is refused whole: the
/// server goes on signing and verifying with the keyring in force, counts and logs the
/// refusal, and takes the next good version of the file.
#[tokio::test]
async fn a_broken_key_file_leaves_the_server_signing_with_the_keyring_in_force() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let kid = kid_of(&token);
    let good = std::fs::read(&app.keys_path).unwrap();

    std::fs::write(&app.keys_path, b"{ not a key set").unwrap();
    reloads_reach(&app, 0, 1).await;
    assert_eq!(app.state.auth.signing_kid(), kid);
    assert_eq!(kid_of(&app.token("kvothe", GOOD_PASSWORD).await), kid);
    assert_eq!(app.me(&token).await.status, 200);

    std::fs::write(&app.keys_path, &good).unwrap();
    std::fs::set_permissions(&app.keys_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    reloads_reach(&app, 0, 2).await;
    assert_eq!(app.me(&token).await.status, 200);
    assert_eq!(app.state.metrics.keyring_reloads().0, 0, "nothing applied");

    std::fs::set_permissions(&app.keys_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    reloads_reach(&app, 1, 2).await;
    assert_eq!(app.state.auth.signing_kid(), kid);
    assert_eq!(app.me(&token).await.status, 200);
}

/// `keys retire` counts its wait from the last moment a server may have signed with the key,
/// as the servers record it in the database — not from the rotation in the file, which a
/// server that has not loaded it yet does not know about.
#[tokio::test]
async fn retire_waits_one_token_lifetime_past_the_servers_record_of_signing() {
    let app = spawn_app().await;
    let old_kid = app.state.auth.signing_kid();
    // The server recorded at start that it may sign with its key for the lease ahead.
    let recorded = app.store().signing_until(&old_kid).unwrap().unwrap();
    let now = tessera::support::clock::now();
    assert!(
        recorded >= now + tessera::app::SIGNING_LEASE - 5,
        "{recorded} vs {now}"
    );
    admin::keys(&KeysAction::Rotate, &app.keys_path).unwrap();
    let refused = admin::keys(&retire(&old_kid, false, &app), &app.keys_path).unwrap_err();
    let text = refused.to_string();
    let wait: i64 = text
        .split("Retry in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // 900 s of tokens plus 30 s leeway from the rotation would be 930; the record adds its
    // lease on top.
    assert!(wait > 930 + tessera::app::SIGNING_LEASE - 10, "{text}");
    assert!(wait <= 930 + tessera::app::SIGNING_LEASE, "{text}");
    // A database it cannot read is no excuse: refused, unless forced.
    let mut elsewhere = retire(&old_kid, false, &app);
    if let KeysAction::Retire { db, .. } = &mut elsewhere {
        *db = tessera::store::DbLocation::Sqlite(app.keys_path.with_file_name("no-such.db"));
    }
    let unreadable = admin::keys(&elsewhere, &app.keys_path).unwrap_err();
    assert!(unreadable.to_string().contains("--force"), "{unreadable}");
}

/// SIGHUP reloads the key file at once, whether or not it changed, and says so in the log.
#[tokio::test]
async fn sighup_reloads_the_key_file_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwks.json");
    tessera::token::JwkSet::create(&keys).unwrap();
    let db = dir.path().join("tessera.db");
    let server = crate::replicas::start_replica_with(db.to_str().unwrap(), &keys, &[]);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reloaded = || {
        server.log_lines().iter().any(|line| {
            line.contains("keyring reloaded") && line.contains("\"trigger\":\"SIGHUP\"")
        })
    };
    wait_for(reloaded).await;
    assert_eq!(
        crate::http_client::send(server.addr, "GET", "/healthz", &[], None)
            .await
            .unwrap()
            .status,
        200,
        "still serving"
    );
}
