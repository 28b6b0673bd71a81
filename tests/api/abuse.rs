//! Brute force, rate limits and overload.

use crate::helpers::*;
use std::sync::Arc;
use std::time::Duration;
use tessera::support::clock::ManualClock;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const WRONG: &str = "definitely not the password";

#[tokio::test]
async fn softlock_refuses_even_the_right_password_inside_the_window() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    // Five failures are free; the fifth starts a 2 s window in which nothing is checked.
    for _ in 0..5 {
        assert_problem(&app.login("kvothe", WRONG).await, 401);
    }
    let reply = app.login("kvothe", GOOD_PASSWORD).await;
    assert_problem(&reply, 429);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn softlock_survives_a_restart_and_ends() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock.clone()).await;
    app.register("kvothe", GOOD_PASSWORD).await;
    for _ in 0..5 {
        app.login("kvothe", WRONG).await;
    }
    let app = app.restart(|_| {}).await;
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 429);
    // The delay after 5 failures is the base, 2 s; a second short of it, still locked...
    clock.advance(1);
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 429);
    // ...and then the account opens again.
    clock.advance(1);
    app.token("kvothe", GOOD_PASSWORD).await;
    // Success reset the counter: one more failure is free again.
    assert_problem(&app.login("kvothe", WRONG).await, 401);
    app.token("kvothe", GOOD_PASSWORD).await;
}

#[tokio::test]
async fn the_softlock_does_not_reveal_which_names_exist() {
    // A clock that stands still: on the real one, a second boundary between the two accounts'
    // failures made their `retry-after` differ by one for a reason that is not the softlock.
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| c.clock = clock).await;
    app.register("kvothe", GOOD_PASSWORD).await;
    for _ in 0..5 {
        assert_problem(&app.login("kvothe", WRONG).await, 401);
        assert_problem(&app.login("nobody", WRONG).await, 401);
    }
    let real = app.login("kvothe", WRONG).await;
    let phantom = app.login("nobody", WRONG).await;
    assert_problem(&real, 429);
    assert_eq!(real.body, phantom.body);
    assert_eq!(real.header("retry-after"), phantom.header("retry-after"));
}

#[tokio::test]
async fn admin_unlock_clears_the_softlock() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    for _ in 0..8 {
        app.login("kvothe", WRONG).await;
    }
    assert_problem(&app.login("kvothe", GOOD_PASSWORD).await, 429);
    let action = tessera::cli::args::UserAction::Unlock {
        username: "KVOTHE".into(),
    };
    tessera::cli::admin::user(&action, &app.db).unwrap();
    app.token("kvothe", GOOD_PASSWORD).await;
}

#[tokio::test]
async fn per_ip_bucket_limits_logins_and_registrations() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with(|c| {
        c.clock = clock.clone();
        c.login_limit = (3, 0.01);
        c.register_limit = (2, 0.01);
    })
    .await;
    assert_eq!(app.register("a1", GOOD_PASSWORD).await.status, 201);
    assert_eq!(app.register("a2", GOOD_PASSWORD).await.status, 201);
    let reply = app.register("a3", GOOD_PASSWORD).await;
    assert_problem(&reply, 429);
    assert!(reply.header("retry-after").is_some());
    for _ in 0..3 {
        assert_eq!(app.login("a1", GOOD_PASSWORD).await.status, 200);
    }
    let reply = app.login("a1", GOOD_PASSWORD).await;
    assert_problem(&reply, 429);
    let retry_after: i64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // The buckets run on the server's injected clock: time that passes there refills them.
    clock.advance(retry_after - 1);
    assert_problem(&app.login("a1", GOOD_PASSWORD).await, 429);
    clock.advance(1);
    assert_eq!(app.login("a1", GOOD_PASSWORD).await.status, 200);
}

/// The hashing thread is held and its one queue slot taken: the next login is refused at once
/// (503, `Retry-After: 1`) instead of waiting, token checks answer meanwhile, and the queued
/// login completes once the thread is free. Staged with `hold_hashing`, not by racing logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_hash_queue_gets_fast_503_while_token_endpoints_keep_working() {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.hash_permits = 1;
            c.hash_queue = 1;
        })
        .await,
    );
    let token = app.user_with_token("kvothe").await;
    let held = app.state.auth.hold_hashing();
    let queued = {
        let app = app.clone();
        tokio::spawn(async move { app.login("kvothe", GOOD_PASSWORD).await })
    };
    wait_for(|| app.state.auth.hashing_stats().queue_depth == 1).await;
    let refused = app.login("kvothe", GOOD_PASSWORD).await;
    assert_problem(&refused, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        app.me(&token).await.status,
        200,
        "token checks need no hashing"
    );
    drop(held);
    assert_eq!(queued.await.unwrap().status, 200);
}

#[tokio::test]
async fn slow_clients_are_disconnected_after_the_header_timeout() {
    let app =
        spawn_app_with(|c| c.http.header_read_timeout = std::time::Duration::from_millis(300))
            .await;
    // Headers never finish: the server must hang up on its own.
    let (answer, closed) = app.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(closed, "the server held the connection open");
    assert!(!answer.contains("200 OK"), "{answer}");
}

/// The header-read deadline is kept for all connections by one task, not by a timer per
/// request: a client that keeps sending header bytes, slowly, is cut all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_disconnected_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.http.header_read_timeout = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = async {
        // A header byte every 50 ms, for far longer than the timeout, until the server hangs up.
        // The pause paces the client (bytes keep arriving inside every deadline window); the
        // verdict waits on the server closing, not on any sleep being long enough.
        for byte in b"X-Slow: ".iter().cycle().take(400) {
            if stream.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let cut = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    assert_eq!(cut, Ok(true), "the server kept reading a trickling header");
}

/// A keep-alive connection is closed once it has sat idle for the header timeout — and is
/// served normally until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| c.http.header_read_timeout = Duration::from_millis(300)).await;
    let mut stream = idle_keep_alive(&app, "127.0.0.1").await;
    assert!(closed_by_server(&mut stream).await);
}

/// A registration whose head is sent at once and whose body waits: the request is in service
/// (its handler reads the body) for as long as the caller likes.
struct HeldRegistration(TcpStream, String);

impl HeldRegistration {
    async fn start(app: &TestApp, username: &str) -> Self {
        let body = format!(
            r#"{{"username":"{username}","password":"{GOOD_PASSWORD}","full_name":"K","mothers_favorite_search_engine":"S"}}"#
        );
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        Self(stream, body)
    }

    /// Sends the body and returns the answer.
    async fn finish(self) -> String {
        let Self(mut stream, body) = self;
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// Connections that go idle now, each closed by the server once the header deadline passed.
async fn idle_connections_are_closed(app: &Arc<TestApp>, count: usize) {
    let idle: Vec<_> = (0..count)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut stream = idle_keep_alive(&app, "127.0.0.1").await;
                closed_by_server(&mut stream).await
            })
        })
        .collect();
    for closed in idle {
        assert!(closed.await.unwrap(), "an idle connection stayed open");
    }
}

/// The deadline is for the request head: a request in service is never cut by it. Its body is
/// held until a connection that went idle after the request entered service was closed — so the
/// deadline has passed for it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_service_outlives_the_header_timeout() {
    let app =
        Arc::new(spawn_app_with(|c| c.http.header_read_timeout = Duration::from_millis(300)).await);
    let held = HeldRegistration::start(&app, "kvothe").await;
    wait_for(|| app.state.metrics.requests_in_flight() == 1).await;
    idle_connections_are_closed(&app, 1).await;
    let answer = held.finish().await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// Many connections at once: those with a request in service are answered, however long their
/// bodies wait, while the idle ones beside them are closed by the same deadline keeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrency_only_connections_without_a_request_in_service_are_closed() {
    let app =
        Arc::new(spawn_app_with(|c| c.http.header_read_timeout = Duration::from_millis(300)).await);
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(HeldRegistration::start(&app, &format!("slow{i}")).await);
    }
    wait_for(|| app.state.metrics.requests_in_flight() == 4).await;
    idle_connections_are_closed(&app, 4).await;
    let answers: Vec<_> = held
        .into_iter()
        .map(|registration| tokio::spawn(registration.finish()))
        .collect();
    for answer in answers {
        let answer = answer.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408() {
    let app = spawn_app_with(|c| c.http.body_timeout = std::time::Duration::from_millis(300)).await;
    let request = b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user";
    let (answer, _) = app.raw(request).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// A keep-alive connection from `source` that has been served one request and now sits idle.
async fn idle_keep_alive(app: &TestApp, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("\"ok\"}") {
        let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer)
            .await
            .unwrap();
        assert!(read > 0, "closed before answering");
        seen.extend_from_slice(&buffer[..read]);
    }
    stream
}

/// Whether the server has closed `stream` (EOF within a generous bound).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(stream, &mut buffer),
    )
    .await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

/// `GET /healthz` from `source`, with a bound so a server that never answers fails the test.
async fn healthz_from(app: &TestApp, source: &str) -> Option<String> {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(app.addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
}

/// At the connection cap an idle keep-alive connection makes room, so one client's idle
/// connections cannot keep everyone else waiting for the header timeout.
#[tokio::test]
async fn at_the_connection_cap_idle_keep_alive_connections_make_room() {
    let app = spawn_app_with(|c| {
        c.http.max_connections = 4;
        c.http.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(idle_keep_alive(&app, "127.0.0.1").await);
    }
    let answer = healthz_from(&app, "127.0.0.2").await.expect("served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The oldest idle connection of the client holding the most was the one closed.
    assert!(closed_by_server(&mut idle[0]).await);
}

/// One client address may hold only so many connections; others are unaffected.
#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share_of_connections() {
    let app = spawn_app_with(|c| c.http.max_connections_per_client = 2).await;
    let _held = [
        idle_keep_alive(&app, "127.0.0.1").await,
        idle_keep_alive(&app, "127.0.0.1").await,
    ];
    let refused = healthz_from(&app, "127.0.0.1")
        .await
        .expect("closed, not hung");
    assert!(refused.is_empty(), "closed without an answer: {refused}");
    let other = healthz_from(&app, "127.0.0.3").await.expect("served");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_client_hangs_up_while_queued_costs_no_hash() {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.hash_permits = 1;
            c.hash_queue = 4;
        })
        .await,
    );
    app.register("kvothe", GOOD_PASSWORD).await;
    let hashing = || app.state.auth.hashing_stats();
    // Occupy the only hashing thread.
    let held = app.state.auth.hold_hashing();
    // A login (with a wrong password) queues behind it, then its client hangs up.
    let body = format!(r#"{{"username":"kvothe","password":"{WRONG}"}}"#);
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = TcpStream::connect(app.addr).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    wait_for(|| hashing().queue_depth == 1).await;
    drop(client);
    // hyper notices the hang-up and drops the request, with the handle its hash carries.
    wait_for(|| app.state.metrics.requests_in_flight() == 0).await;
    drop(held);
    wait_for(|| hashing().abandoned == 1 && hashing().queue_depth == 0).await;
    // The wrong password was never checked, but the guess was reserved against the softlock
    // before it queued (concurrent guesses must not outrun the policy), so it counts.
    let users = app.store().list_users().unwrap();
    assert_eq!(users[0].failed_logins, 1);
    let metrics = crate::http_client::send(app.metrics_addr, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&metrics.body).contains("tessera_argon2_abandoned_total 1"));
    // Clients that stay get their answers as usual.
    assert_eq!(app.login("kvothe", GOOD_PASSWORD).await.status, 200);
}

/// Sends `count` concurrent requests while the hashing threads are held, releasing them only
/// once every request has either been refused or queued for its hash; returns the statuses.
async fn concurrently_while_held<F>(
    app: &Arc<TestApp>,
    count: usize,
    send: impl Fn(Arc<TestApp>) -> F,
) -> Vec<u16>
where
    F: std::future::Future<Output = crate::http_client::Reply> + Send + 'static,
{
    let held = app.state.auth.hold_hashing();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (request, answered) = (send(app.clone()), answered.clone());
            tokio::spawn(async move {
                let reply = request.await;
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                reply.status
            })
        })
        .collect();
    let hashing = || app.state.auth.hashing_stats();
    wait_for(|| {
        answered.load(std::sync::atomic::Ordering::SeqCst) + hashing().queue_depth == count
    })
    .await;
    drop(held);
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Guesses are reserved against the softlock before hashing, atomically: simultaneous guesses
/// get no more tries than the policy allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_login_guesses_cannot_outrun_the_softlock() {
    let app = Arc::new(spawn_app_with(|c| c.hash_queue = 64).await);
    app.register("kvothe", GOOD_PASSWORD).await;
    let statuses =
        concurrently_while_held(
            &app,
            20,
            |app| async move { app.login("kvothe", WRONG).await },
        )
        .await;
    // Five free attempts; every other guess refused before any hashing.
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
    let failed = app
        .store()
        .failed_logins(&tessera::domain::username::Username::parse("kvothe").unwrap())
        .unwrap();
    assert_eq!(failed, Some(5));
}

/// The same through the password-change endpoint's `current_password`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_current_password_guesses_cannot_outrun_the_softlock() {
    let app = Arc::new(spawn_app_with(|c| c.hash_queue = 64).await);
    let token = app.user_with_token("kvothe").await;
    let statuses = concurrently_while_held(&app, 20, move |app| {
        let token = token.clone();
        async move {
            let body = serde_json::json!({
                "current_password": WRONG,
                "new_password": "an entirely different passphrase",
            });
            app.put_json("/v1/users/me/password", &token, &body).await
        }
    })
    .await;
    assert_eq!(count(&statuses, 403), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
}

/// Password changes and deletions hash a password, so they draw from the per-IP login budget:
/// one address cannot keep the hashing threads busy for everyone.
#[tokio::test]
async fn password_changes_and_deletions_draw_from_the_per_ip_budget() {
    let app = spawn_app_with(|c| c.login_limit = (3, 0.01)).await;
    let token = app.user_with_token("kvothe").await; // one login: one unit of the budget
    let body = serde_json::json!({
        "current_password": WRONG,
        "new_password": "an entirely different passphrase",
    });
    assert_problem(
        &app.put_json("/v1/users/me/password", &token, &body).await,
        403,
    );
    assert_problem(&app.delete_account(&token, WRONG).await, 403);
    let reply = app.put_json("/v1/users/me/password", &token, &body).await;
    assert_problem(&reply, 429);
    assert!(reply.header("retry-after").is_some());
}

/// A wrong guess at a real account reserves it against the softlock in a write transaction
/// (with its fsync) before hashing; a guess at a name with no account pays the same write, so
/// the storage side of a login cannot tell them apart either. Seen from another connection,
/// both commit.
#[tokio::test]
async fn a_guess_at_an_unknown_name_commits_a_write_as_a_real_accounts_does() {
    let app = spawn_sqlite_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let observer = rusqlite::Connection::open(&app.db_path).unwrap();
    let version = || -> i64 {
        observer
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .unwrap()
    };
    for name in ["kvothe", "nobody-by-this-name"] {
        let before = version();
        assert_problem(&app.login(name, "not the password at all").await, 401);
        assert_ne!(version(), before, "{name}: no write was committed");
    }
}
