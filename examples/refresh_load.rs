//! Refresh throughput beside the rate SQLite itself commits a one-row UPDATE per transaction
//! under the server's pragmas (WAL, `synchronous=FULL`), measured in alternating rounds on the
//! same filesystem (BENCHMARKS.md, "Refresh"). Run by `tools/bench-refresh.sh`; not a test.
//!
//!     refresh_load URL DIR [CLIENTS] [SECONDS] [ROUNDS]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/api/http_client.rs"]
#[allow(dead_code)]
mod http_client;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";

/// Commits per second of `UPDATE t SET n = n + 1 WHERE id = 1`, one per transaction, on one
/// connection, with the pragmas `store/sqlite` sets.
fn sqlite_commit_rate(dir: &Path, seconds: u64) -> f64 {
    let path = dir.join("baseline.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT;
         INSERT OR IGNORE INTO t VALUES (1, 0);",
    )
    .unwrap();
    let mut update = conn.prepare("UPDATE t SET n = n + 1 WHERE id = 1").unwrap();
    let start = Instant::now();
    let mut commits = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        update.execute([]).unwrap();
        commits += 1;
    }
    commits as f64 / start.elapsed().as_secs_f64()
}

/// One client's keep-alive connection, as wrk keeps for `/me`.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    async fn refresh(&mut self, token: &str) -> (u16, String) {
        let body = json!({ "refresh_token": token }).to_string();
        let request = hyper::Request::post("/v1/sessions/refresh")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let next = value["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (status, next)
    }
}

/// Refreshes per second with `tokens.len()` clients, each rotating its own session.
async fn refresh_rate(addr: SocketAddr, tokens: &mut [String], seconds: u64) -> f64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = tokens
        .iter()
        .cloned()
        .map(|mut token| {
            let (done, count) = (done.clone(), count.clone());
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await;
                while !done.load(Ordering::Relaxed) {
                    let (status, next) = connection.refresh(&token).await;
                    assert_eq!(status, 200, "a refresh failed");
                    token = next;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                token
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    for (slot, task) in tokens.iter_mut().zip(tasks) {
        *slot = task.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("URL");
    let dir = Path::new(args.get(2).expect("DIR"));
    let clients: usize = args.get(3).map_or(32, |a| a.parse().unwrap());
    let seconds: u64 = args.get(4).map_or(5, |a| a.parse().unwrap());
    let rounds: usize = args.get(5).map_or(5, |a| a.parse().unwrap());
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    let user = json!({"username": "refresher", "full_name": "Bench Mark", "password": PASSWORD,
                      "mothers_favorite_search_engine": "Searx"});
    http_client::send_json(addr, "POST", "/v1/users", None, &user)
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..clients {
        let login = json!({"username": "refresher", "password": PASSWORD});
        let reply = http_client::send_json(addr, "POST", "/v1/sessions", None, &login)
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "login failed: {:?}", reply.json());
        tokens.push(reply.json()["refresh_token"].as_str().unwrap().to_owned());
    }
    // Warm both paths once.
    refresh_rate(addr, &mut tokens, 1).await;
    let mut baseline = Vec::new();
    let mut refreshes = Vec::new();
    let mut ratios = Vec::new();
    println!("round\tsqlite commits/s\trefreshes/s ({clients} clients)\tratio");
    for round in 1..=rounds {
        let dir = dir.to_path_buf();
        let commits = tokio::task::spawn_blocking(move || sqlite_commit_rate(&dir, seconds))
            .await
            .unwrap();
        let rate = refresh_rate(addr, &mut tokens, seconds).await;
        println!("{round}\t{commits:.0}\t{rate:.0}\t{:.2}", rate / commits);
        baseline.push(commits);
        refreshes.push(rate);
        ratios.push(rate / commits);
    }
    println!(
        "median\t{:.0}\t{:.0}\t{:.2}",
        median(&mut baseline),
        median(&mut refreshes),
        median(&mut ratios)
    );
}
