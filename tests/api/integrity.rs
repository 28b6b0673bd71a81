//! Revocation and data integrity under real operations: other processes on the database,
//! pruned change logs, symbolic links, files deleted under the server, locks held elsewhere. Time is driven by a manual clock, never by sleeping.

use crate::helpers::*;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tessera::cli::args::UserAction;
use tessera::support::clock::{Clock as _, ManualClock};

/// `tessera user list --db PATH` as a separate process.
fn admin_cli_lists_users(db: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["user", "list", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// A plain SQLite client in another process (Python's sqlite3 module): opens, reads, closes.
fn plain_sqlite_reads(db: &Path) {
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1])\n\
                  c.execute('SELECT count(*) FROM users').fetchone()\n\
                  c.close()";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether this process holds a POSIX lock on the file, per /proc/locks.
fn this_process_locks(path: &Path) -> bool {
    let inode = std::fs::metadata(path).unwrap().ino();
    let pid = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.contains(&pid.as_str())
                && fields
                    .iter()
                    .any(|f| f.rsplit(':').next() == Some(&inode.to_string()))
        })
}

fn sibling(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `GET /v1/users/me` from a spawned load task, which cannot borrow the app.
async fn me_at(addr: std::net::SocketAddr, token: &str) -> crate::http_client::Reply {
    let auth = format!("Bearer {token}");
    crate::http_client::send(
        addr,
        "GET",
        "/v1/users/me",
        &[("authorization", auth.as_str())],
        None,
    )
    .await
    .unwrap()
}

/// Other processes opening the database while the server is loaded leave it up: the server
/// never closes a descriptor of the `-shm` (closing one drops SQLite's shared lock on it, and
/// the next process to open the database would truncate the `-shm` under the server's map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_opening_the_database_under_load_leave_the_server_up() {
    let app = spawn_sqlite_app().await;
    let token = app.user_with_token("kvothe").await;
    let shm = sibling(&app.db_path, "-shm");
    assert!(
        this_process_locks(&shm),
        "SQLite's lock on the -shm is held"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served, token, addr) =
                (stop.clone(), served.clone(), token.clone(), app.addr);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(me_at(addr, &token).await.status, 200);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let db = app.db_path.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..20 {
            admin_cli_lists_users(&db);
            plain_sqlite_reads(&db);
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 0);
    assert!(
        this_process_locks(&shm),
        "the -shm lock survives other processes"
    );
    assert_eq!(app.me(&token).await.status, 200);
    // And a revocation by another process is still seen at once.
    let status = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["user", "revoke", "kvothe", "--db"])
        .arg(&app.db_path)
        .status()
        .unwrap();
    assert!(status.success());
    assert_problem(&app.me(&token).await, 401);
}

/// The verification cache (`token/recent.rs`) under concurrency and another process: while
/// every worker thread answers the same token from memory, the admin CLI — a second process —
/// revokes its user. Every request sent after the CLI returned is refused, on every thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_every_worker_remembers_is_refused_once_another_process_revokes_it() {
    let app = spawn_app().await;
    let token = app.user_with_token("kvothe").await;
    let revoked = Arc::new(AtomicBool::new(false));
    let (served, refused_after) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (revoked, served, refused_after) =
                (revoked.clone(), served.clone(), refused_after.clone());
            let (token, addr) = (token.clone(), app.addr);
            tokio::spawn(async move {
                let mut refused_here = 0;
                while refused_here < 20 {
                    let after_revocation = revoked.load(Ordering::SeqCst);
                    let reply = me_at(addr, &token).await;
                    if after_revocation {
                        assert_problem(&reply, 401);
                        refused_here += 1;
                        refused_after.fetch_add(1, Ordering::SeqCst);
                    } else if reply.status == 200 {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Every worker has answered the token many times before the revocation.
    wait_for(|| served.load(Ordering::SeqCst) >= 400).await;
    let db = app.db_path.clone();
    tokio::task::spawn_blocking(move || {
        let status = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["user", "revoke", "kvothe", "--db"])
            .arg(&db)
            .status()
            .unwrap();
        assert!(status.success());
    })
    .await
    .unwrap();
    revoked.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(refused_after.load(Ordering::SeqCst), 8 * 20);
}

/// How a token can be revoked, each by a different path through the system.
#[derive(Debug, Clone, Copy)]
enum Revocation {
    Logout,
    LogoutEverywhere,
    PasswordChange,
    AccountDeletion,
    AdminRevoke,
}

const EVERY_REVOCATION: [Revocation; 5] = [
    Revocation::Logout,
    Revocation::LogoutEverywhere,
    Revocation::PasswordChange,
    Revocation::AccountDeletion,
    Revocation::AdminRevoke,
];

async fn revoke(app: &TestApp, token: &str, how: Revocation) {
    let status = match how {
        Revocation::Logout => {
            app.send("DELETE", "/v1/sessions/current", Some(token))
                .await
                .status
        }
        Revocation::LogoutEverywhere => {
            app.send("DELETE", "/v1/sessions", Some(token)).await.status
        }
        Revocation::PasswordChange => {
            app.put_json(
                "/v1/users/me/password",
                token,
                &serde_json::json!({
                    "current_password": GOOD_PASSWORD,
                    "new_password": "an entirely different passphrase",
                }),
            )
            .await
            .status
        }
        Revocation::AccountDeletion => app.delete_account(token, GOOD_PASSWORD).await.status,
        Revocation::AdminRevoke => {
            let action = UserAction::Revoke {
                username: "kvothe".into(),
            };
            tessera::cli::admin::user(&action, &app.db).unwrap();
            204
        }
    };
    assert!(matches!(status, 200 | 204), "{how:?}: {status}");
}

/// The change log is kept at least one token lifetime, whatever that lifetime, and a view that
/// finds it pruned past what it applied rebuilds: no revocation is forgotten.
#[tokio::test]
async fn revocations_hold_after_the_change_log_is_pruned_with_long_token_lifetimes() {
    for how in EVERY_REVOCATION {
        let clock = ManualClock::starting_now();
        let app = spawn_app_with(|c| {
            c.auth.token_ttl = 86_400;
            c.clock = clock.clone();
        })
        .await;
        let token = app.user_with_token("kvothe").await;
        assert_eq!(
            app.me(&token).await.status,
            200,
            "{how:?}: view holds the user"
        );
        revoke(&app, &token, how).await;
        // An hour and more without any token-affecting change, then the pruner runs.
        clock.advance(3_700);
        app.state.auth.prune(clock.now()).unwrap();
        assert_problem(&app.me(&token).await, 401);
    }
}

/// With `--db` a symbolic link (and a stale `-shm` beside the link), the server watches the
/// real database's files and sees every revocation.
#[tokio::test]
async fn a_symlinked_database_path_sees_every_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    std::fs::write(&real, b"").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::fs::write(sibling(&link, "-shm"), vec![0u8; 32 * 1024]).unwrap();
    let app = spawn_app_with(|c| c.db = tessera::store::DbLocation::Sqlite(link.clone())).await;
    let first = app.user_with_token("kvothe").await;
    let second = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(app.me(&first).await.status, 200);
    let action = UserAction::Revoke {
        username: "kvothe".into(),
    };
    tessera::cli::admin::user(&action, &tessera::store::DbLocation::Sqlite(link.clone())).unwrap();
    assert_problem(&app.me(&first).await, 401);
    assert_problem(&app.me(&second).await, 401);
    let third = app.token("kvothe", GOOD_PASSWORD).await;
    assert_eq!(app.me(&third).await.status, 200);
    assert_eq!(
        app.send("DELETE", "/v1/sessions/current", Some(&third))
            .await
            .status,
        204
    );
    assert_problem(&app.me(&third).await, 401);
}

/// A deleted `-shm` would hide revocations committed by others, so token checks and readiness
/// fail closed.
#[tokio::test]
async fn a_deleted_shm_fails_token_checks_and_readiness_closed() {
    let app = spawn_sqlite_app().await;
    let token = app.user_with_token("kvothe").await;
    assert_eq!(app.me(&token).await.status, 200);
    std::fs::remove_file(sibling(&app.db_path, "-shm")).unwrap();
    let reply = app.me(&token).await;
    assert_problem(&reply, 503);
    assert!(reply.header("retry-after").is_some());
    assert_problem(&app.send("GET", "/readyz", None).await, 503);
}

/// A deleted `-wal` would swallow writes: readiness fails, no write is acknowledged, and no
/// token check answers 200.
#[tokio::test]
async fn a_deleted_wal_fails_readiness_and_writes_are_not_acknowledged() {
    let app = spawn_sqlite_app().await;
    let token = app.user_with_token("kvothe").await;
    std::fs::remove_file(sibling(&app.db_path, "-wal")).unwrap();
    assert_problem(&app.send("GET", "/readyz", None).await, 503);
    // A logout that would land in the orphaned WAL is not acknowledged...
    assert_problem(
        &app.send("DELETE", "/v1/sessions/current", Some(&token))
            .await,
        503,
    );
    // ...and from then on no token check answers 200.
    assert_problem(&app.me(&token).await, 503);
}

/// Another process holding SQLite's write lock longer than `--db-timeout` (a long admin
/// transaction, a backup tool): writes answer 503 with `Retry-After` — contention, as
/// PostgreSQL's is — never 500; token checks, which only read, keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_by_another_process_answers_503_and_reads_go_on() {
    use std::io::{BufRead as _, Write as _};
    let app = spawn_sqlite_app_with(|config| {
        config.db_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let token = app.user_with_token("kvothe").await;
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                  c.execute('BEGIN IMMEDIATE')\n\
                  print('locked', flush=True)\n\
                  sys.stdin.readline()\n\
                  c.execute('ROLLBACK')";
    let mut holder = Command::new("python3")
        .args(["-c", script])
        .arg(&app.db_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said.trim(), "locked");

    let login = app.login("kvothe", GOOD_PASSWORD).await;
    let problem = assert_problem(&login, 503);
    assert!(login.header("retry-after").is_some(), "{problem}");
    let logout = app
        .send("DELETE", "/v1/sessions/current", Some(&token))
        .await;
    assert_problem(&logout, 503);
    assert_eq!(app.me(&token).await.status, 200, "reads need no lock");

    holder.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(holder.wait().unwrap().success());
    assert_eq!(app.login("kvothe", GOOD_PASSWORD).await.status, 200);
    let logout = app
        .send("DELETE", "/v1/sessions/current", Some(&token))
        .await;
    assert_eq!(logout.status, 204);
}
