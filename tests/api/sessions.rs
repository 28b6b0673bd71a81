use crate::helpers::*;

#[tokio::test]
async fn login_returns_a_bearer_token_that_must_not_be_cached() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let reply = app.login("kvothe", GOOD_PASSWORD).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900, "15 minutes by default");
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(body["refresh_token"].as_str().unwrap().starts_with("tsr_"));
    assert!(body["refresh_expires_at"].as_str().unwrap().ends_with('Z'));
    let session_id = body["session_id"].as_str().unwrap();
    let claims = app.claims_of(body["access_token"].as_str().unwrap());
    assert_ne!(
        claims.sub, "kvothe",
        "sub is an opaque id, never the username"
    );
    assert_eq!(claims.sid, session_id);
}

#[tokio::test]
async fn me_returns_the_profile_with_no_store() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let reply = app.me(&token).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["username"], "kvothe");
    assert_eq!(body["full_name"], "Test User");
    assert_eq!(body["mothers_favorite_search_engine"], "Searx");
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_identical_answers() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let wrong_password = app.login("kvothe", "not the password at all").await;
    let unknown_user = app.login("nobody", "not the password at all").await;
    let invalid_name = app.login("no body", "not the password at all").await;
    assert_problem(&wrong_password, 401);
    assert_eq!(observable(&wrong_password), observable(&unknown_user));
    assert_eq!(observable(&wrong_password), observable(&invalid_name));
    assert_eq!(
        wrong_password.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
}

#[tokio::test]
async fn logout_current_kills_only_that_token() {
    let app = spawn_app().await;
    let first = app.user_with_token("kvothe").await;
    let second = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(
        app.send("DELETE", "/v1/sessions/current", Some(&first))
            .await
            .status,
        204
    );
    let rejected = app.me(&first).await;
    assert_problem(&rejected, 401);
    assert!(
        rejected
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(app.me(&second).await.status, 200);
}

#[tokio::test]
async fn logout_current_is_idempotent_for_a_genuine_token() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    for _ in 0..2 {
        assert_eq!(
            app.send("DELETE", "/v1/sessions/current", Some(&token))
                .await
                .status,
            204
        );
    }
    assert_eq!(app.store().denylist_len().unwrap(), 1);
}

#[tokio::test]
async fn logout_everywhere_kills_every_token_then_login_works_again() {
    let app = spawn_app().await;
    let first = app.user_with_token("kvothe").await;
    let second = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(
        app.send("DELETE", "/v1/sessions", Some(&first))
            .await
            .status,
        204
    );
    assert_problem(&app.me(&first).await, 401);
    assert_problem(&app.me(&second).await, 401);
    let fresh = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(app.me(&fresh).await.status, 200);
}

#[tokio::test]
async fn logout_everywhere_leaves_other_users_alone() {
    let app = spawn_app().await;
    let mine = app.user_with_token("kvothe").await;
    let theirs = app.user_with_token("tpratchett").await;
    app.send("DELETE", "/v1/sessions", Some(&mine)).await;
    assert_eq!(app.me(&theirs).await.status, 200);
}

#[tokio::test]
async fn reading_a_user_by_name_works_only_for_yourself() {
    let app = spawn_app().await;
    let token = app.user_with_token("Kvothe").await;
    app.register("tpratchett", GOOD_PASSWORD).await;
    let own = app.send("GET", "/v1/users/KVOTHE", Some(&token)).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.json()["username"], "Kvothe");
    let other = app.send("GET", "/v1/users/tpratchett", Some(&token)).await;
    let missing = app.send("GET", "/v1/users/nobody", Some(&token)).await;
    assert_problem(&other, 403);
    assert_eq!(
        other.body, missing.body,
        "403 whether or not the user exists"
    );
    assert_eq!(missing.status, 403);
}

/// An ended session's denylist row lasts until the last access token the session could have
/// issued by its end expires, plus the leeway — then pruning drops it. The clock stands still
/// but for one second between the token and the logout: a second boundary there, on the real
/// clock, is what makes the row outlast the token's own `exp`.
#[tokio::test]
async fn expired_denylist_rows_are_pruned() {
    let clock = tessera::support::clock::ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    let token = app.user_with_token("kvothe").await;
    clock.advance(1);
    app.send("DELETE", "/v1/sessions/current", Some(&token))
        .await;
    let store = app.store();
    assert_eq!(store.denylist_len().unwrap(), 1);
    let claims = app.claims_of(&token);
    let denied_until = app.state.clock.now() + (claims.exp - claims.iat);
    app.state.auth.prune(claims.exp - 1).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 1, "not yet expired");
    app.state.auth.prune(denied_until + 30).unwrap();
    assert_eq!(
        store.denylist_len().unwrap(),
        1,
        "a token the session issued at its end may still be within the leeway"
    );
    app.state.auth.prune(denied_until + 31).unwrap();
    assert_eq!(store.denylist_len().unwrap(), 0, "expired plus leeway");
}

// ---- sessions: list, end, and what logout, password change and deletion end ----

async fn login_as(app: &TestApp, user_agent: &str) -> serde_json::Value {
    let body = serde_json::json!({"username": "kvothe", "password": GOOD_PASSWORD});
    let reply = app
        .with_headers(
            "POST",
            "/v1/sessions",
            &[
                ("content-type", "application/json"),
                ("user-agent", user_agent),
            ],
            Some(body.to_string().as_bytes()),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    reply.json()
}

async fn list(app: &TestApp, token: &str) -> Vec<serde_json::Value> {
    let reply = app.send("GET", "/v1/sessions", Some(token)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.json()["sessions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_session_list_shows_exactly_the_callers_live_sessions() {
    let clock = tessera::support::clock::ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let laptop = login_as(&app, "Firefox/140 laptop").await;
    clock.advance(5);
    let long_agent = format!("Phone\t(beta) {}", "x".repeat(400));
    let phone = login_as(&app, &long_agent).await;
    clock.advance(5);
    let ended = login_as(&app, "curl/8").await;
    app.send(
        "DELETE",
        "/v1/sessions/current",
        Some(tokens(&ended).0.as_str()),
    )
    .await;
    let theirs = app.user_with_grant("tpratchett").await;

    let (phone_token, _) = tokens(&phone);
    let sessions = list(&app, &phone_token).await;
    let ids: Vec<_> = sessions.iter().map(|s| s["id"].clone()).collect();
    assert_eq!(
        ids,
        [phone["session_id"].clone(), laptop["session_id"].clone()],
        "newest first"
    );
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[1]["current"], false);
    let agent = sessions[0]["user_agent"].as_str().unwrap();
    assert_eq!(agent.chars().count(), 256);
    assert!(
        agent.starts_with("Phone(beta) xxx"),
        "control characters removed: {agent}"
    );
    assert_eq!(sessions[1]["user_agent"], "Firefox/140 laptop");
    for field in ["created_at", "last_used_at", "expires_at"] {
        assert!(
            sessions[0][field].as_str().unwrap().ends_with('Z'),
            "{field}"
        );
    }
    // The other user sees only theirs.
    let their_list = list(&app, &tokens(&theirs).0).await;
    assert_eq!(their_list.len(), 1);
    assert_eq!(their_list[0]["id"], theirs["session_id"]);
}

#[tokio::test]
async fn ending_one_of_your_sessions_kills_its_tokens_at_once() {
    let app = spawn_app().await;
    let mine = app.user_with_grant("kvothe").await;
    let other = app.grant("kvothe", GOOD_PASSWORD).await;
    let (my_access, my_refresh) = tokens(&mine);
    let (other_access, other_refresh) = tokens(&other);
    let path = format!("/v1/sessions/{}", other["session_id"].as_str().unwrap());
    assert_eq!(
        app.send("DELETE", &path, Some(&my_access)).await.status,
        204
    );
    assert_problem(&app.me(&other_access).await, 401);
    assert_problem(&app.refresh(&other_refresh).await, 401);
    assert_eq!(app.me(&my_access).await.status, 200);
    assert_eq!(app.refresh(&my_refresh).await.status, 200);
    assert_eq!(list(&app, &my_access).await.len(), 1);
}

/// Someone else's, ended, unknown, malformed: the same 404, and the other user's session lives.
#[tokio::test]
async fn a_session_that_is_not_one_of_yours_is_404_whatever_the_reason() {
    let app = spawn_app().await;
    let (mine, _) = tokens(&app.user_with_grant("kvothe").await);
    let ended = app.grant("kvothe", GOOD_PASSWORD).await;
    app.send(
        "DELETE",
        "/v1/sessions/current",
        Some(tokens(&ended).0.as_str()),
    )
    .await;
    let theirs = app.user_with_grant("tpratchett").await;
    let mut answers = Vec::new();
    for id in [
        theirs["session_id"].as_str().unwrap(),
        ended["session_id"].as_str().unwrap(),
        "AAAAAAAAAAAAAAAAAAAAAA",
        "not%20a%20session",
    ] {
        let reply = app
            .send("DELETE", &format!("/v1/sessions/{id}"), Some(&mine))
            .await;
        let body = assert_problem(&reply, 404);
        assert_eq!(body["type"], "urn:tessera:problem:session-not-found");
        answers.push(observable(&reply));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    let (their_access, their_refresh) = tokens(&theirs);
    assert_eq!(app.me(&their_access).await.status, 200);
    assert_eq!(app.refresh(&their_refresh).await.status, 200);
}

#[tokio::test]
async fn logging_out_ends_the_session_refresh_token_included() {
    let app = spawn_app().await;
    let grant = app.user_with_grant("kvothe").await;
    let (access, refresh) = tokens(&grant);
    let (newer_access, _) = tokens(&app.refresh(&refresh).await.json());
    for _ in 0..2 {
        let reply = app
            .send("DELETE", "/v1/sessions/current", Some(&access))
            .await;
        assert_eq!(reply.status, 204, "idempotent for a genuine token");
    }
    assert_problem(&app.refresh(&refresh).await, 401);
    assert_problem(&app.me(&newer_access).await, 401);
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_session() {
    let app = spawn_app().await;
    let (first_access, first_refresh) = tokens(&app.user_with_grant("kvothe").await);
    let (_, second_refresh) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
    assert_eq!(
        app.send("DELETE", "/v1/sessions", Some(&first_access))
            .await
            .status,
        204
    );
    assert_problem(&app.refresh(&first_refresh).await, 401);
    assert_problem(&app.refresh(&second_refresh).await, 401);
    let (fresh, _) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
    assert_eq!(list(&app, &fresh).await.len(), 1);
}

#[tokio::test]
async fn a_password_change_keeps_only_the_current_session_with_a_fresh_pair() {
    let app = spawn_app().await;
    let current = app.user_with_grant("kvothe").await;
    let other = app.grant("kvothe", GOOD_PASSWORD).await;
    let (access, refresh) = tokens(&current);
    let body = serde_json::json!({"current_password": GOOD_PASSWORD,
                                  "new_password": "an entirely different passphrase"});
    let reply = app.put_json("/v1/users/me/password", &access, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let fresh = reply.json();
    assert_eq!(
        fresh["session_id"], current["session_id"],
        "the same session continues"
    );
    let (fresh_access, fresh_refresh) = tokens(&fresh);
    assert_ne!(fresh_refresh, refresh);
    assert_problem(&app.me(&access).await, 401);
    assert_problem(&app.refresh(&tokens(&other).1).await, 401);
    assert_problem(&app.me(&tokens(&other).0).await, 401);
    assert_eq!(app.me(&fresh_access).await.status, 200);
    let (newest_access, _) = tokens(&app.refresh(&fresh_refresh).await.json());
    assert_eq!(app.me(&newest_access).await.status, 200);
    // The refresh token from before the change is superseded with no grace: presenting it is
    // a replay (whoever made the user change the password may hold it), and the session ends.
    assert_problem(&app.refresh(&refresh).await, 401);
    assert_problem(&app.me(&newest_access).await, 401);
}

#[tokio::test]
async fn deleting_the_account_ends_every_session() {
    let app = spawn_app().await;
    let (access, refresh) = tokens(&app.user_with_grant("kvothe").await);
    let (_, other_refresh) = tokens(&app.grant("kvothe", GOOD_PASSWORD).await);
    assert_eq!(app.delete_account(&access, GOOD_PASSWORD).await.status, 204);
    assert_problem(&app.refresh(&refresh).await, 401);
    assert_problem(&app.refresh(&other_refresh).await, 401);
}

fn admin(app: &TestApp, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .arg("--db")
        .arg(&app.db_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The admin CLI is another process on the database: what it ends is refused by the server on
/// the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_lists_and_ends_sessions() {
    let app = spawn_app().await;
    let first = app.user_with_grant("kvothe").await;
    let second = app.grant("kvothe", GOOD_PASSWORD).await;
    let listed = admin(&app, &["session", "list", "kvothe"]);
    for grant in [&first, &second] {
        let id = grant["session_id"].as_str().unwrap();
        assert!(listed.contains(&format!("{id}\tlive\t")), "{listed}");
    }
    for grant in [&first, &second] {
        let (access, refresh) = tokens(grant);
        assert!(!listed.contains(&access) && !listed.contains(&refresh[4..]));
    }
    admin(
        &app,
        &["session", "revoke", first["session_id"].as_str().unwrap()],
    );
    assert_problem(&app.me(&tokens(&first).0).await, 401);
    assert_problem(&app.refresh(&tokens(&first).1).await, 401);
    assert_eq!(app.me(&tokens(&second).0).await.status, 200);
    let listed = admin(&app, &["session", "list", "kvothe"]);
    assert!(listed.contains("ended (revoked)"), "{listed}");

    admin(&app, &["user", "revoke", "kvothe"]);
    assert_problem(&app.me(&tokens(&second).0).await, 401);
    assert_problem(&app.refresh(&tokens(&second).1).await, 401);
}

/// With an idle timeout shorter than the token lifetime, a session that idles out takes its
/// access tokens with it: they expire at its idle deadline, so there is never a working token
/// of a session the list no longer shows and `DELETE /v1/sessions/{id}` cannot find. A refresh
/// moves the deadline and the new token's expiry together.
#[tokio::test]
async fn an_idle_session_leaves_no_working_access_token() {
    let clock = tessera::support::clock::ManualClock::starting_now();
    let app = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.auth.token_ttl = 900;
        c.auth.sessions.idle_timeout = 60;
    })
    .await;
    let keeper = app.user_with_grant("kvothe").await;
    let idler = app.grant("kvothe", GOOD_PASSWORD).await;
    assert_eq!(idler["expires_in"], 60);
    assert_eq!(idler["expires_at"], idler["refresh_expires_at"]);
    let (idle_access, idle_refresh) = tokens(&idler);

    clock.advance(50);
    let refreshed = app.refresh(&tokens(&keeper).1).await;
    assert_eq!(refreshed.status, 200);
    let keeper_access = refreshed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(9);
    assert_eq!(
        app.me(&idle_access).await.status,
        200,
        "59 s after its last use"
    );
    clock.advance(1);
    assert_eq!(app.me(&idle_access).await.status, 401, "idled out at 60 s");
    assert_eq!(app.refresh(&idle_refresh).await.status, 401);
    let listed: Vec<_> = list(&app, &keeper_access)
        .await
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(listed, [keeper["session_id"].clone()]);
    // Only the caller's live sessions can be ended: an idled-out one is 404 like any other.
    let idle_session = format!("/v1/sessions/{}", idler["session_id"].as_str().unwrap());
    assert_problem(
        &app.send("DELETE", &idle_session, Some(&keeper_access))
            .await,
        404,
    );
    assert_eq!(
        app.me(&keeper_access).await.status,
        200,
        "refreshed 10 s ago"
    );
}

/// A session's absolute end is its tokens' end too, to the second: the clock-skew leeway never
/// keeps a token working past the `expires_at` it was issued with.
#[tokio::test]
async fn no_token_outlives_its_sessions_absolute_end() {
    let clock = tessera::support::clock::ManualClock::starting_now();
    let app = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.auth.sessions.max_age = 60;
    })
    .await;
    let grant = app.user_with_grant("kvothe").await;
    assert_eq!(grant["expires_in"], 60);
    let (access, _) = tokens(&grant);
    clock.advance(59);
    assert_eq!(app.me(&access).await.status, 200);
    clock.advance(1);
    assert_eq!(app.me(&access).await.status, 401, "at the session's end");
}

/// A refused token's reason names how its session really ended — by its user's logout, from
/// the session list, by an operator, or by a replayed refresh token — on both backends, as the
/// server and `tessera-token verify --db` both judge it (`auth::check_revocation`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_names_how_its_session_ended() {
    use tessera::domain::session::Denial;
    use tessera::support::clock::Clock as _;
    let clock = tessera::support::clock::ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let grant = || app.grant("kvothe", GOOD_PASSWORD);
    let (logged_out, ended, revoked, replayed) =
        (grant().await, grant().await, grant().await, grant().await);
    let token = |grant: &serde_json::Value| tokens(grant).0;
    app.send("DELETE", "/v1/sessions/current", Some(&token(&logged_out)))
        .await;
    let id = ended["session_id"].as_str().unwrap();
    let reply = app
        .send(
            "DELETE",
            &format!("/v1/sessions/{id}"),
            Some(&token(&revoked)),
        )
        .await;
    assert_eq!(reply.status, 204);
    admin(
        &app,
        &["session", "revoke", revoked["session_id"].as_str().unwrap()],
    );
    let refresh = tokens(&replayed).1;
    assert_eq!(app.refresh(&refresh).await.status, 200);
    clock.advance(app.config.auth.sessions.reuse_grace + 1);
    assert_eq!(app.refresh(&refresh).await.status, 401);
    let store = app.store();
    for (grant, expected) in [
        (&logged_out, Denial::Logout),
        (&ended, Denial::EndedByUser),
        (&revoked, Denial::RevokedByOperator),
        (&replayed, Denial::Reuse),
    ] {
        let claims = app.codec().verify(&token(grant), clock.now()).unwrap();
        let (_, denial) = tessera::auth::check_revocation(store.as_ref(), claims).unwrap();
        assert_eq!(denial, Some(expected));
        assert_eq!(app.me(&token(grant)).await.status, 401, "{expected:?}");
    }
}

/// The server's own log line for the refused token says how its session ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rejection_log_line_names_how_the_session_ended() {
    use crate::http_client;
    let dir = tempfile::tempdir().unwrap();
    tessera::token::JwkSet::create(&dir.path().join("jwks.json")).unwrap();
    let (mut child, addr, log, reader) =
        crate::crash::start_binary_with(dir.path(), "info", "text", &["--login-rate", "0"]);
    let body = serde_json::json!({"username": "kvothe", "full_name": "Patrick Rothfuss",
        "password": GOOD_PASSWORD, "mothers_favorite_search_engine": "Duck Duck Go"});
    http_client::send_json(addr, "POST", "/v1/users", None, &body)
        .await
        .unwrap();
    let login = serde_json::json!({"username": "kvothe", "password": GOOD_PASSWORD});
    let mut grants = Vec::new();
    for _ in 0..2 {
        let reply = http_client::send_json(addr, "POST", "/v1/sessions", None, &login)
            .await
            .unwrap();
        grants.push(reply.json());
    }
    let (ended, other) = (tokens(&grants[0]).0, tokens(&grants[1]).0);
    let id = grants[0]["session_id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}");
    let reply = http_client::send(
        addr,
        "DELETE",
        &path,
        &[("authorization", &format!("Bearer {other}"))],
        None,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 204);
    let refused = http_client::send(
        addr,
        "GET",
        "/v1/users/me",
        &[("authorization", &format!("Bearer {ended}"))],
        None,
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401);
    let request_id = refused.header("x-request-id").unwrap().to_owned();
    assert_eq!(crate::crash::terminate(&mut child).code(), Some(0));
    reader.join().unwrap();
    let lines = log.lock().unwrap().clone();
    let rejection = lines
        .iter()
        .find(|line| line.contains(&request_id) && line.contains("token rejected"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        rejection.contains("its user ended it from the session list"),
        "{rejection}"
    );
}
