//! Prometheus metrics (text exposition format 0.0.4), served on their own listener so they are
//! never exposed on the public port by accident. Hand-written: a few counters and histograms do
//! not justify a metrics framework.

use super::problem::ApiError;
use super::response;
use super::router::ROUTES;
use super::{AppState, HttpSettings, server};
use crate::auth::HashingStats;
use crate::store::{ACK_BUCKETS, ReplicationStats};
use crate::support::shards::Sharded;
use hyper::{Method, StatusCode};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;

/// Latency histogram bucket bounds, seconds: from a token check to a slow login.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Status codes counted without a lock; anything else goes to a small locked map.
const STATUSES: [u16; 18] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 431, 500, 503, 504,
];

/// How a login attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    Succeeded,
    Failed,
    Throttled,
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy)]
pub enum RefreshOutcome {
    Rotated,
    /// The token superseded last, within the grace window: the current one handed out again.
    Grace,
    /// Unknown, malformed, expired, ended: refused with nothing else happening.
    Rejected,
    /// A superseded token replayed: refused, and its session ended.
    Reused,
}

const REFRESH_OUTCOMES: [&str; 4] = ["rotated", "grace", "rejected", "reused"];

/// Per-route counters, all atomics: two workers counting the same hot route never wait on
/// each other (a mutex here showed up as futex wake-ups in profiles). One set per shard, so
/// they do not share cache lines either (`support::shards`); `/metrics` adds the shards up.
#[derive(Debug, Default)]
struct RouteStats {
    statuses: [AtomicU64; STATUSES.len()],
    /// Non-cumulative count per bucket; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

#[derive(Debug)]
pub struct Metrics {
    /// Route names in `router::ROUTES` order, then "unmatched".
    route_names: Vec<String>,
    /// Per shard: per route, in `route_names` order.
    routes: Sharded<Vec<RouteStats>>,
    rare_statuses: Mutex<BTreeMap<(usize, u16), u64>>,
    logins: [AtomicU64; 3],
    refreshes: [AtomicU64; REFRESH_OUTCOMES.len()],
    tokens_issued: AtomicU64,
    logouts: AtomicU64,
    logouts_everywhere: AtomicU64,
    /// Key-file reloads: [applied, refused].
    keyring_reloads: [AtomicU64; 2],
    /// Per shard: requests started there minus requests finished there. A request may finish
    /// on another thread than it started on, so one shard can go below zero; the sum is right.
    requests_in_flight: Sharded<AtomicI64>,
}

/// A request being served; dropping it (the response went out, or the client hung up and
/// hyper dropped the request's future) takes it off the in-flight gauge.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Sharded<AtomicI64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.local().fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut route_names: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
        route_names.push("unmatched".into());
        let routes = Sharded::new(|| route_names.iter().map(|_| RouteStats::default()).collect());
        Self {
            route_names,
            routes,
            rare_statuses: Mutex::new(BTreeMap::new()),
            logins: Default::default(),
            refreshes: Default::default(),
            tokens_issued: AtomicU64::new(0),
            logouts: AtomicU64::new(0),
            logouts_everywhere: AtomicU64::new(0),
            keyring_reloads: [AtomicU64::new(0), AtomicU64::new(0)],
            requests_in_flight: Sharded::default(),
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        // Unknown names count as "unmatched", the last slot.
        let index = self
            .route_names
            .iter()
            .position(|name| name == route)
            .unwrap_or(self.route_names.len().saturating_sub(1));
        let Some(stats) = self.routes.local().get(index) else {
            return;
        };
        match STATUSES
            .iter()
            .zip(&stats.statuses)
            .find(|(s, _)| **s == status)
        {
            Some((_, count)) => {
                count.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                *lock(&self.rare_statuses)
                    .entry((index, status))
                    .or_default() += 1
            }
        }
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .zip(&stats.buckets)
            .find(|(bound, _)| seconds <= **bound)
            .map(|(_, count)| count)
            .or(stats.buckets.last()); // +Inf
        if let Some(count) = bucket {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        stats.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts a request as in flight until the guard drops.
    pub fn request_started(&self) -> InFlight<'_> {
        self.requests_in_flight
            .local()
            .fetch_add(1, Ordering::Relaxed);
        InFlight(&self.requests_in_flight)
    }

    /// Requests being served right now.
    pub fn requests_in_flight(&self) -> u64 {
        let sum: i64 = self
            .requests_in_flight
            .iter()
            .map(|shard| shard.load(Ordering::Relaxed))
            .sum();
        // Shards are read one after another while requests move: never report below zero.
        u64::try_from(sum).unwrap_or(0)
    }

    pub fn login(&self, outcome: LoginOutcome) {
        if let Some(count) = self.logins.get(outcome as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refresh(&self, outcome: RefreshOutcome) {
        if let Some(count) = self.refreshes.get(outcome as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn token_issued(&self) {
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    /// A key-file reload: put in force, or refused (the keyring in force stayed).
    pub fn keyring_reload(&self, applied: bool) {
        let index = usize::from(!applied);
        if let Some(counter) = self.keyring_reloads.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Key-file reloads so far: (applied, refused).
    pub fn keyring_reloads(&self) -> (u64, u64) {
        let [applied, refused] = &self.keyring_reloads;
        (
            applied.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
        )
    }

    pub fn logout(&self, everywhere: bool) {
        let counter = if everywhere {
            &self.logouts_everywhere
        } else {
            &self.logouts
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; the hashing pool's figures and the live sessions (`None` when the
    /// database could not be read) are sampled by the caller.
    pub fn render(&self, hashing: HashingStats, live_sessions: Option<u64>) -> String {
        let HashingStats {
            queue_depth: hash_queue_depth,
            abandoned: hashes_abandoned,
            padded: hashes_padded,
        } = hashing;
        let mut out = String::new();
        out.push_str("# HELP tessera_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE tessera_http_requests_total counter\n");
        let mut counts = BTreeMap::new();
        for shard in self.routes.iter() {
            for (index, stats) in shard.iter().enumerate() {
                for (status, count) in STATUSES.iter().zip(&stats.statuses) {
                    let count = count.load(Ordering::Relaxed);
                    if count > 0 {
                        *counts.entry((index, *status)).or_default() += count;
                    }
                }
            }
        }
        counts.extend(lock(&self.rare_statuses).iter());
        for ((index, status), count) in counts {
            let route = self
                .route_names
                .get(index)
                .map_or("unmatched", String::as_str);
            let _ = writeln!(
                out,
                "tessera_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP tessera_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE tessera_http_request_duration_seconds histogram\n");
        for (index, route) in self.route_names.iter().enumerate() {
            let shards = self.routes.iter().filter_map(|shard| shard.get(index));
            render_histogram(&mut out, route, shards);
        }
        out.push_str("# HELP tessera_logins_total Login attempts by outcome.\n");
        out.push_str("# TYPE tessera_logins_total counter\n");
        for (outcome, counter) in ["succeeded", "failed", "throttled"]
            .iter()
            .zip(&self.logins)
        {
            let _ = writeln!(
                out,
                "tessera_logins_total{{outcome=\"{outcome}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tessera_refreshes_total Refresh attempts by outcome.\n");
        out.push_str("# TYPE tessera_refreshes_total counter\n");
        for (outcome, counter) in REFRESH_OUTCOMES.iter().zip(&self.refreshes) {
            let _ = writeln!(
                out,
                "tessera_refreshes_total{{outcome=\"{outcome}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        if let Some(reused) = self.refreshes.get(RefreshOutcome::Reused as usize) {
            counter(
                &mut out,
                "tessera_refresh_reuse_total",
                "Superseded refresh tokens replayed after the grace window (each ended its session).",
                reused,
            );
        }
        if let Some(live) = live_sessions {
            let _ = writeln!(
                out,
                "# HELP tessera_sessions_live Sessions live now (not ended, revoked or expired).\n\
                 # TYPE tessera_sessions_live gauge\n\
                 tessera_sessions_live {live}"
            );
        }
        counter(
            &mut out,
            "tessera_tokens_issued_total",
            "Access tokens issued.",
            &self.tokens_issued,
        );
        counter(
            &mut out,
            "tessera_logouts_total",
            "Sessions ended by logout (DELETE /v1/sessions/current).",
            &self.logouts,
        );
        counter(
            &mut out,
            "tessera_logouts_everywhere_total",
            "Log-out-everywhere generation bumps.",
            &self.logouts_everywhere,
        );
        let (applied, refused) = self.keyring_reloads();
        let _ = writeln!(
            out,
            "# HELP tessera_keyring_reloads_total Key-file reloads, by outcome: applied, or \
             refused (the keyring in force stayed).\n\
             # TYPE tessera_keyring_reloads_total counter\n\
             tessera_keyring_reloads_total{{outcome=\"applied\"}} {applied}\n\
             tessera_keyring_reloads_total{{outcome=\"refused\"}} {refused}"
        );
        let _ = writeln!(
            out,
            "# HELP tessera_http_requests_in_flight Requests being served.\n\
             # TYPE tessera_http_requests_in_flight gauge\n\
             tessera_http_requests_in_flight {}",
            self.requests_in_flight()
        );
        out.push_str("# HELP tessera_argon2_queue_depth Requests waiting for an argon2 slot.\n");
        out.push_str("# TYPE tessera_argon2_queue_depth gauge\n");
        let _ = writeln!(out, "tessera_argon2_queue_depth {hash_queue_depth}");
        let _ = writeln!(
            out,
            "# HELP tessera_argon2_abandoned_total Queued hashes skipped because the client left.\n\
             # TYPE tessera_argon2_abandoned_total counter\n\
             tessera_argon2_abandoned_total {hashes_abandoned}"
        );
        let _ = writeln!(
            out,
            "# HELP tessera_argon2_padded_total Verifications of old-parameter hashes, each held to at least the current parameters' cost.\n\
             # TYPE tessera_argon2_padded_total counter\n\
             tessera_argon2_padded_total {hashes_padded}"
        );
        out
    }
}

/// What the hashing threads report to `/metrics`.
fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
}

/// One route's histogram, its shards added up.
fn render_histogram<'a>(
    out: &mut String,
    route: &str,
    shards: impl Iterator<Item = &'a RouteStats>,
) {
    let name = "tessera_http_request_duration_seconds";
    let mut buckets = [0u64; BUCKETS.len() + 1];
    let mut sum_nanos = 0u64;
    for stats in shards {
        for (total, count) in buckets.iter_mut().zip(&stats.buckets) {
            *total += count.load(Ordering::Relaxed);
        }
        sum_nanos = sum_nanos.saturating_add(stats.sum_nanos.load(Ordering::Relaxed));
    }
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return;
    }
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(&buckets) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}"
    );
    let sum = sum_nanos as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {total}");
}

/// Second-factor code checks by outcome: accepted, rejected (wrong), replayed (a step already
/// used), recovery (a recovery code consumed).
fn render_totp(out: &mut String, counts: [u64; 4]) {
    out.push_str(
        "# HELP tessera_totp_verifications_total Second-factor codes checked, by outcome.\n\
         # TYPE tessera_totp_verifications_total counter\n",
    );
    for (outcome, count) in crate::auth::TOTP_OUTCOMES.iter().zip(counts) {
        let _ = writeln!(
            out,
            "tessera_totp_verifications_total{{outcome=\"{outcome}\"}} {count}"
        );
    }
}

/// A PostgreSQL replica's figures: where token checks were answered, its leases, how far its
/// view lags the change feed, and how long this process's revocations waited for every replica.
fn render_replication(out: &mut String, stats: &ReplicationStats) {
    let _ = write!(
        out,
        "# HELP tessera_replica_token_checks_total Token checks by where they were answered.\n\
         # TYPE tessera_replica_token_checks_total counter\n\
         tessera_replica_token_checks_total{{answered=\"memory\"}} {}\n\
         tessera_replica_token_checks_total{{answered=\"database\"}} {}\n\
         # HELP tessera_replica_leases_total Leases on answering from memory, taken and lost.\n\
         # TYPE tessera_replica_leases_total counter\n\
         tessera_replica_leases_total{{event=\"taken\"}} {}\n\
         tessera_replica_leases_total{{event=\"lost\"}} {}\n\
         # HELP tessera_replica_lease_held 1 while this replica answers token checks from memory.\n\
         # TYPE tessera_replica_lease_held gauge\n\
         tessera_replica_lease_held {}\n\
         # HELP tessera_replica_view_lag_positions Changes announced but not yet applied.\n\
         # TYPE tessera_replica_view_lag_positions gauge\n\
         tessera_replica_view_lag_positions {}\n",
        stats.checks_from_memory,
        stats.checks_from_database,
        stats.leases_taken,
        stats.leases_lost,
        u8::from(stats.from_memory_now),
        stats.lag,
    );
    let name = "tessera_revocation_ack_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long revocations waited for every live replica to acknowledge.\n\
         # TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (bound, count) in ACK_BUCKETS.iter().zip(&stats.ack_buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = stats.ack_buckets.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {}", stats.ack_sum_seconds);
    let _ = writeln!(out, "{name}_count {total}");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful even if a panic interrupted an update.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `GET /metrics` on its own listener until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let settings = HttpSettings {
        max_connections: 16,
        ..state.settings.clone()
    };
    server::accept_loop(
        "metrics",
        listener,
        &settings,
        shutdown,
        move |_peer, request, in_service| {
            let state = state.clone();
            async move {
                let _in_service = in_service;
                let mut response = if request.uri().path() != "/metrics" {
                    ApiError::NotFound.into_response()
                } else if request.method() != Method::GET {
                    ApiError::MethodNotAllowed { allow: "GET" }.into_response()
                } else {
                    let auth = state.auth.clone();
                    let now = state.clock.now();
                    let live = tokio::task::spawn_blocking(move || auth.live_sessions(now).ok())
                        .await
                        .ok()
                        .flatten();
                    let mut body = state.metrics.render(state.auth.hashing_stats(), live);
                    render_totp(&mut body, state.auth.totp_counters());
                    if let Some(replication) = state.auth.replication() {
                        render_replication(&mut body, &replication);
                    }
                    response::text(StatusCode::OK, "text/plain; version=0.0.4", body)
                };
                response::add_standard_headers(&mut response, "metrics");
                Ok(response)
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_second_factor_checks_by_outcome() {
        let mut out = String::new();
        render_totp(&mut out, [5, 2, 1, 3]);
        for line in [
            "tessera_totp_verifications_total{outcome=\"accepted\"} 5",
            "tessera_totp_verifications_total{outcome=\"rejected\"} 2",
            "tessera_totp_verifications_total{outcome=\"replayed\"} 1",
            "tessera_totp_verifications_total{outcome=\"recovery\"} 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn renders_a_replicas_figures_with_a_cumulative_acknowledgement_histogram() {
        let mut buckets = vec![0; ACK_BUCKETS.len() + 1];
        buckets[0] = 2; // ≤ 1 ms
        buckets[3] = 1; // ≤ 10 ms
        buckets[ACK_BUCKETS.len()] = 1; // beyond every bound
        let stats = ReplicationStats {
            from_memory_now: true,
            checks_from_memory: 41,
            checks_from_database: 3,
            leases_taken: 2,
            leases_lost: 1,
            lag: 5,
            ack_buckets: buckets,
            ack_sum_seconds: 9.5,
        };
        let mut out = String::new();
        render_replication(&mut out, &stats);
        for line in [
            "tessera_replica_token_checks_total{answered=\"memory\"} 41",
            "tessera_replica_token_checks_total{answered=\"database\"} 3",
            "tessera_replica_leases_total{event=\"taken\"} 2",
            "tessera_replica_leases_total{event=\"lost\"} 1",
            "tessera_replica_lease_held 1",
            "tessera_replica_view_lag_positions 5",
            "tessera_revocation_ack_seconds_bucket{le=\"0.001\"} 2",
            "tessera_revocation_ack_seconds_bucket{le=\"0.005\"} 2",
            "tessera_revocation_ack_seconds_bucket{le=\"0.01\"} 3",
            "tessera_revocation_ack_seconds_bucket{le=\"5\"} 3",
            "tessera_revocation_ack_seconds_bucket{le=\"+Inf\"} 4",
            "tessera_revocation_ack_seconds_sum 9.5",
            "tessera_revocation_ack_seconds_count 4",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let metrics = Metrics::default();
        metrics.observe_request("GET /v1/users/me", 200, Duration::from_micros(200));
        metrics.observe_request("GET /v1/users/me", 200, Duration::from_millis(30));
        metrics.observe_request("GET /v1/users/me", 401, Duration::from_secs(3));
        metrics.login(LoginOutcome::Throttled);
        metrics.refresh(RefreshOutcome::Reused);
        metrics.refresh(RefreshOutcome::Rotated);
        metrics.refresh(RefreshOutcome::Rotated);
        let text = metrics.render(
            HashingStats {
                queue_depth: 4,
                abandoned: 2,
                padded: 3,
            },
            Some(7),
        );
        assert!(
            text.contains(
                "tessera_http_requests_total{route=\"GET /v1/users/me\",status=\"200\"} 2"
            )
        );
        assert!(text.contains("le=\"0.00025\"} 1"));
        assert!(text.contains("le=\"0.05\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 3"));
        assert!(text.contains("tessera_logins_total{outcome=\"throttled\"} 1"));
        assert!(text.contains("tessera_argon2_queue_depth 4"));
        assert!(text.contains("tessera_refreshes_total{outcome=\"rotated\"} 2"));
        assert!(text.contains("tessera_refresh_reuse_total 1"));
        assert!(text.contains("tessera_sessions_live 7"));
        assert!(text.contains("tessera_argon2_abandoned_total 2"));
        assert!(text.contains("tessera_argon2_padded_total 3"));
    }

    /// Each thread counts into its own shard; `/metrics` shows the sums.
    #[test]
    fn counts_from_many_threads_add_up_and_in_flight_returns_to_zero() {
        let metrics = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let _in_flight = metrics.request_started();
                        metrics.observe_request("GET /v1/users/me", 200, Duration::from_millis(2));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // A request started on one thread and finished on another.
        let started = metrics.request_started();
        assert_eq!(metrics.requests_in_flight(), 1);
        std::thread::scope(|scope| {
            scope.spawn(move || drop(started));
        });
        assert_eq!(metrics.requests_in_flight(), 0);
        let hashing = HashingStats {
            queue_depth: 0,
            abandoned: 0,
            padded: 0,
        };
        let text = metrics.render(hashing, None);
        assert!(text.contains(
            "tessera_http_requests_total{route=\"GET /v1/users/me\",status=\"200\"} 6000"
        ));
        assert!(text.contains("route=\"GET /v1/users/me\",le=\"0.001\"} 0"));
        assert!(text.contains("route=\"GET /v1/users/me\",le=\"0.0025\"} 6000"));
        assert!(text.contains("_sum{route=\"GET /v1/users/me\"} 12\n"));
        assert!(text.contains("tessera_http_requests_in_flight 0"));
    }
}
