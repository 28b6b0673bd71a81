//! The second factor end to end: enrol, confirm, log in with a code, replays refused (also when
//! two logins race with one code), recovery codes single use, re-authentication asking for it,
//! removal, the operator's reset, and no secret in the dump. Time is the injected clock.

use crate::helpers::*;
use crate::http_client::Reply;
use serde_json::{Value, json};
use std::sync::Arc;
use tessera::domain::totp::{TotpSecret, step_at};
use tessera::support::clock::{Clock as _, ManualClock};

struct Enrolled {
    app: TestApp,
    clock: Arc<ManualClock>,
    /// The enrolling session's access token.
    token: String,
    secret: TotpSecret,
    recovery_codes: Vec<String>,
}

impl Enrolled {
    /// The code the app shows now.
    fn code(&self) -> String {
        self.secret.code_at(step_at(self.clock.now()))
    }

    /// Moves to the next 30-second step, whose code was never used.
    fn next_step(&self) {
        self.clock.advance(30);
    }

    async fn login_with(&self, extra: Value) -> Reply {
        let mut body = json!({"username": "kvothe", "password": GOOD_PASSWORD});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.app.post_json("/v1/sessions", &body).await
    }
}

async fn enrolled() -> Enrolled {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with({
        let clock = clock.clone();
        move |config| config.clock = clock
    })
    .await;
    let token = app.user_with_token("kvothe").await;
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp",
            &token,
            &json!({"password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let body = reply.json();
    let secret = TotpSecret::from_base32(body["secret"].as_str().unwrap()).unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Tessera:kvothe?secret="),
        "{uri}"
    );
    assert!(
        uri.ends_with("&issuer=Tessera&algorithm=SHA1&digits=6&period=30"),
        "{uri}"
    );
    assert_eq!(
        (
            body["algorithm"].as_str(),
            body["digits"].as_u64(),
            body["period"].as_u64()
        ),
        (Some("SHA1"), Some(6), Some(30))
    );
    assert_eq!(app.me(&token).await.json()["totp"], "pending");
    let code = secret.code_at(step_at(clock.now()));
    let reply = app
        .post_json_with_token("/v1/users/me/totp/confirm", &token, &json!({"code": code}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let recovery_codes: Vec<String> = reply.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery_codes.len(), 10);
    Enrolled {
        app,
        clock,
        token,
        secret,
        recovery_codes,
    }
}

#[tokio::test]
async fn a_pending_factor_is_not_asked_for_and_a_wrong_code_leaves_it_pending() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp",
            &token,
            &json!({"password": "wrong password!"}),
        )
        .await;
    assert_problem(&reply, 403);
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp",
            &token,
            &json!({"password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, 201);
    // Never confirmed: logging in needs the password alone.
    assert_eq!(app.login("kvothe", GOOD_PASSWORD).await.status, 200);
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp/confirm",
            &token,
            &json!({"code": "000000"}),
        )
        .await;
    // One in a million that 000000 is right; a second wrong code makes that one in 10^12.
    if reply.status != 200 {
        let problem = assert_problem(&reply, 422);
        assert_eq!(problem["type"], "urn:tessera:problem:wrong-totp-code");
        assert_eq!(app.me(&token).await.json()["totp"], "pending");
    }
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp/confirm",
            &token,
            &json!({"code": "12345"}),
        )
        .await;
    assert_problem(&reply, 422);
}

/// One more of each outcome of `tessera_totp_verifications_total`, in its order: accepted,
/// rejected, replayed, recovery.
const ACCEPTED: [u64; 4] = [1, 0, 0, 0];
const REJECTED: [u64; 4] = [0, 1, 0, 0];
const REPLAYED: [u64; 4] = [0, 0, 1, 0];
const RECOVERY: [u64; 4] = [0, 0, 0, 1];

/// What the code-check counters counted since `before`.
fn counted_since(app: &TestApp, before: [u64; 4]) -> [u64; 4] {
    let now = app.state.auth.totp_counters();
    std::array::from_fn(|i| now[i] - before[i])
}

#[tokio::test]
async fn an_active_factor_asks_for_a_code_refuses_replays_and_marks_the_session() {
    let e = enrolled().await;
    let app = &e.app;
    assert_eq!(app.me(&e.token).await.json()["totp"], "active");
    assert_eq!(
        app.me(&e.token).await.status,
        200,
        "the enrolling session stays"
    );

    // Right password, no code: told a code is needed (only a password holder learns it).
    let reply = e.login_with(json!({})).await;
    let problem = assert_problem(&reply, 401);
    assert_eq!(problem["type"], "urn:tessera:problem:totp-required");
    // Wrong password, with or without a code: the usual answer.
    for extra in [json!({}), json!({"totp_code": e.code()})] {
        let mut body = json!({"username": "kvothe", "password": "not the password at all"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let problem = assert_problem(&app.post_json("/v1/sessions", &body).await, 401);
        assert_eq!(problem["type"], "urn:tessera:problem:invalid-credentials");
    }
    // The confirmation used this step's code: inside its window it is refused, as a replay.
    let before = app.state.auth.totp_counters();
    let problem = assert_problem(&e.login_with(json!({"totp_code": e.code()})).await, 401);
    assert_eq!(problem["type"], "urn:tessera:problem:invalid-credentials");
    assert_eq!(counted_since(app, before), REPLAYED);

    e.next_step();
    let before = app.state.auth.totp_counters();
    let reply = e.login_with(json!({"totp_code": e.code()})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(counted_since(app, before), ACCEPTED);
    let grant = reply.json();
    let (access, refresh) = tokens(&grant);
    assert_eq!(app.claims_of(&access).amr.amr(), ["pwd", "otp"]);
    // Once more with the same code: a replay.
    let before = app.state.auth.totp_counters();
    assert_problem(&e.login_with(json!({"totp_code": e.code()})).await, 401);
    assert_eq!(counted_since(app, before), REPLAYED);
    // A refresh keeps the session's factors.
    let refreshed = app.refresh(&refresh).await.json();
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(app.claims_of(access).amr.amr(), ["pwd", "otp"]);
    let sessions = app.send("GET", "/v1/sessions", Some(access)).await.json();
    let factors: Vec<Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["factors"].clone())
        .collect();
    assert!(factors.contains(&json!(["pwd", "otp"])), "{sessions}");
    assert!(
        factors.contains(&json!(["pwd"])),
        "the enrolling session: {sessions}"
    );
}

#[tokio::test]
async fn confirming_ends_every_other_session_started_with_one_factor() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with({
        let clock = clock.clone();
        move |config| config.clock = clock
    })
    .await;
    let token = app.user_with_token("kvothe").await;
    let other = app.token("kvothe", GOOD_PASSWORD).await;
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp",
            &token,
            &json!({"password": GOOD_PASSWORD}),
        )
        .await;
    let secret = TotpSecret::from_base32(reply.json()["secret"].as_str().unwrap()).unwrap();
    let code = secret.code_at(step_at(clock.now()));
    let reply = app
        .post_json_with_token("/v1/users/me/totp/confirm", &token, &json!({"code": code}))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        app.me(&other).await.status,
        401,
        "a one-factor session ended"
    );
    assert_eq!(app.me(&token).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_logins_racing_with_one_code_give_exactly_one_session() {
    let e = enrolled().await;
    e.next_step();
    for round in 0..5 {
        let code = e.code();
        let body = json!({"username": "kvothe", "password": GOOD_PASSWORD, "totp_code": code});
        let (a, b) = tokio::join!(
            e.app.post_json("/v1/sessions", &body),
            e.app.post_json("/v1/sessions", &body)
        );
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 401], "round {round}");
        e.next_step();
    }
}

#[tokio::test]
async fn a_recovery_code_logs_in_once_and_a_wrong_code_counts_against_the_softlock() {
    let e = enrolled().await;
    let code = e.recovery_codes[3].clone();
    let counted = e.app.state.auth.totp_counters();
    let reply = e
        .login_with(json!({"recovery_code": code.to_uppercase()}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(counted_since(&e.app, counted), RECOVERY);
    assert_eq!(
        e.app.claims_of(&tokens(&reply.json()).0).amr.amr(),
        ["pwd", "otp"]
    );
    let counted = e.app.state.auth.totp_counters();
    assert_problem(&e.login_with(json!({"recovery_code": code})).await, 401);
    assert_eq!(counted_since(&e.app, counted), REJECTED, "a used code");

    let store = e.app.store();
    let name = tessera::domain::username::Username::parse("kvothe").unwrap();
    let before = store.failed_logins(&name).unwrap().unwrap();
    e.next_step();
    let wrong = format!("{:06}", (e.code().parse::<u32>().unwrap() + 1) % 1_000_000);
    let counted = e.app.state.auth.totp_counters();
    assert_problem(&e.login_with(json!({"totp_code": wrong})).await, 401);
    assert_eq!(counted_since(&e.app, counted), REJECTED);
    assert_eq!(store.failed_logins(&name).unwrap().unwrap(), before + 1);
    // A right code forgives the guesses, like a successful password login.
    assert_eq!(
        e.login_with(json!({"totp_code": e.code()})).await.status,
        200
    );
    assert_eq!(store.failed_logins(&name).unwrap().unwrap(), 0);
}

#[tokio::test]
async fn changing_the_password_or_deleting_the_account_needs_a_code_too() {
    let e = enrolled().await;
    let app = &e.app;
    e.next_step();
    let change = json!({"current_password": GOOD_PASSWORD,
                        "new_password": "an entirely different passphrase"});
    let problem = assert_problem(
        &app.put_json("/v1/users/me/password", &e.token, &change)
            .await,
        403,
    );
    assert_eq!(problem["type"], "urn:tessera:problem:wrong-second-factor");
    let reply = app
        .send_json(
            "DELETE",
            "/v1/users/me",
            &e.token,
            &json!({"password": GOOD_PASSWORD}),
        )
        .await;
    assert_problem(&reply, 403);
    // A wrong code is no better than none.
    let mut with_wrong_code = change.clone();
    with_wrong_code["totp_code"] = json!(format!(
        "{:06}",
        (e.code().parse::<u32>().unwrap() + 1) % 1_000_000
    ));
    let problem = assert_problem(
        &app.put_json("/v1/users/me/password", &e.token, &with_wrong_code)
            .await,
        403,
    );
    assert_eq!(problem["type"], "urn:tessera:problem:wrong-second-factor");
    let mut with_code = change.clone();
    with_code["totp_code"] = json!(e.code());
    let changed = app
        .put_json("/v1/users/me/password", &e.token, &with_code)
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.json());
    let token = tokens(&changed.json()).0;
    let reply = app
        .send_json(
            "DELETE",
            "/v1/users/me",
            &token,
            &json!({"password": "an entirely different passphrase", "recovery_code": e.recovery_codes[0]}),
        )
        .await;
    assert_eq!(reply.status, 204, "{:?}", reply.json());
}

#[tokio::test]
async fn new_recovery_codes_replace_the_old_and_removal_ends_other_sessions() {
    let e = enrolled().await;
    let app = &e.app;
    e.next_step();
    let other = tokens(&e.login_with(json!({"totp_code": e.code()})).await.json()).0;
    e.next_step();
    let reply = app
        .post_json_with_token(
            "/v1/users/me/totp/recovery-codes",
            &e.token,
            &json!({"password": GOOD_PASSWORD, "totp_code": e.code()}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let fresh = reply.json()["recovery_codes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_problem(
        &e.login_with(json!({"recovery_code": e.recovery_codes[1]}))
            .await,
        401,
    );

    let reply = app
        .send_json(
            "DELETE",
            "/v1/users/me/totp",
            &e.token,
            &json!({"password": GOOD_PASSWORD, "recovery_code": fresh}),
        )
        .await;
    assert_eq!(reply.status, 204, "{:?}", reply.json());
    assert_eq!(app.me(&e.token).await.json()["totp"], "off");
    assert_eq!(
        app.me(&other).await.status,
        401,
        "every other session ended"
    );
    assert_eq!(app.login("kvothe", GOOD_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn the_operators_reset_removes_the_factor_and_ends_every_session() {
    let e = enrolled().await;
    let output = tokio::task::spawn_blocking({
        let db = e.app.db_path.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["user", "totp-reset", "kvothe"])
                .env("TESSERA_DB", db)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(e.app.me(&e.token).await.status, 401);
    let token = e.app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(e.app.me(&token).await.json()["totp"], "off");
}

#[tokio::test]
async fn the_dump_holds_no_secret_and_no_recovery_code() {
    let e = enrolled().await;
    let dump = e.app.store().dump().unwrap();
    assert!(dump.contains("totp_factors"), "the table is dumped");
    let base32 = e.secret.base32();
    assert!(!dump.contains(base32.as_str()));
    assert!(!dump.to_uppercase().contains(&base32.as_str()[..16]));
    for code in &e.recovery_codes {
        assert!(!dump.contains(code.as_str()));
        assert!(!dump.contains(&code.replace('-', "").to_uppercase()));
    }
}

#[tokio::test]
async fn enrolling_again_while_active_is_a_conflict() {
    let e = enrolled().await;
    let reply = e
        .app
        .post_json_with_token(
            "/v1/users/me/totp",
            &e.token,
            &json!({"password": GOOD_PASSWORD}),
        )
        .await;
    let problem = assert_problem(&reply, 409);
    assert_eq!(problem["type"], "urn:tessera:problem:totp-already-active");
    let reply = e
        .app
        .post_json_with_token(
            "/v1/users/me/totp/confirm",
            &e.token,
            &json!({"code": e.code()}),
        )
        .await;
    assert_eq!(
        assert_problem(&reply, 409)["type"],
        "urn:tessera:problem:no-pending-totp"
    );
}

/// A key rotation, then the old key retired: `keys retire` reseals every secret under the
/// signing key first, so codes keep working after the key that sealed them is gone.
#[tokio::test]
async fn retiring_the_key_that_sealed_a_secret_reseals_it_first() {
    let e = enrolled().await;
    let before = e.app.store().sealed_secrets().unwrap();
    let old_kid = tessera::token::sealing::sealed_by(&before[0].1)
        .unwrap()
        .to_owned();
    let cli = |args: Vec<String>| {
        let (db, keys) = (e.app.db_path.clone(), e.app.keys_path.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(&args)
                .arg("--keys")
                .arg(&keys)
                .env("TESSERA_DB", &db)
                .output()
                .unwrap()
        })
    };
    let rotated = cli(vec!["keys".into(), "rotate".into()]).await.unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let retired = cli(vec![
        "keys".into(),
        "retire".into(),
        old_kid.clone(),
        "--force".into(),
    ])
    .await
    .unwrap();
    assert!(retired.status.success(), "{retired:?}");
    let said = String::from_utf8_lossy(&retired.stdout);
    assert!(
        said.contains("resealed 1 second-factor secret(s)"),
        "{said}"
    );
    let after = e.app.store().sealed_secrets().unwrap();
    let new_kid = tessera::token::sealing::sealed_by(&after[0].1).unwrap();
    assert_ne!(new_kid, old_kid, "resealed under the new signing key");
    // The server takes the new key file (restarted here: a reload is within a second); a code
    // still logs in.
    let Enrolled {
        app, clock, secret, ..
    } = e;
    let app = app.restart(|_| {}).await;
    clock.advance(30);
    let code = secret.code_at(step_at(clock.now()));
    let reply = app
        .post_json(
            "/v1/sessions",
            &json!({"username": "kvothe", "password": GOOD_PASSWORD, "totp_code": code}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
}
