//! Prometheus metrics (text exposition format 0.0.4), served on their own listener so they are
//! never exposed on the public port by accident. Hand-written: a few counters and histograms do
//! not justify a metrics framework.

use super::problem::ApiError;
use super::response;
use super::{AppState, HttpSettings, server};
use hyper::{Method, StatusCode};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;

/// Latency histogram bucket bounds, seconds: from a token check (~100 µs) to a slow login.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative count per bucket; the last slot is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    Succeeded,
    Failed,
    Throttled,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    logins: [AtomicU64; 3],
    tokens_issued: AtomicU64,
    logouts: AtomicU64,
    logouts_everywhere: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        *lock(&self.requests).entry((route, status)).or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let mut latency = lock(&self.latency);
        let histogram = latency.entry(route).or_default();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        histogram.counts[bucket] += 1;
        histogram.sum += seconds;
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn token_issued(&self) {
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn logout(&self, everywhere: bool) {
        let counter = if everywhere {
            &self.logouts_everywhere
        } else {
            &self.logouts
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; gauges sampled by the caller.
    pub fn render(&self, hash_queue_depth: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP tessera_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE tessera_http_requests_total counter\n");
        for ((route, status), count) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "tessera_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP tessera_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE tessera_http_request_duration_seconds histogram\n");
        for (route, histogram) in lock(&self.latency).iter() {
            render_histogram(&mut out, route, histogram);
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
        counter(
            &mut out,
            "tessera_tokens_issued_total",
            "Access tokens issued.",
            &self.tokens_issued,
        );
        counter(
            &mut out,
            "tessera_logouts_total",
            "Single tokens revoked by logout.",
            &self.logouts,
        );
        counter(
            &mut out,
            "tessera_logouts_everywhere_total",
            "Log-out-everywhere generation bumps.",
            &self.logouts_everywhere,
        );
        out.push_str("# HELP tessera_argon2_queue_depth Requests waiting for an argon2 slot.\n");
        out.push_str("# TYPE tessera_argon2_queue_depth gauge\n");
        let _ = writeln!(out, "tessera_argon2_queue_depth {hash_queue_depth}");
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
}

fn render_histogram(out: &mut String, route: &str, histogram: &Histogram) {
    let name = "tessera_http_request_duration_seconds";
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(&histogram.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += histogram.counts[BUCKETS.len()];
    let _ = writeln!(
        out,
        "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", histogram.sum);
    let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {cumulative}");
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
    server::accept_loop(listener, &settings, shutdown, move |_peer, request| {
        let state = state.clone();
        async move {
            let mut response = if request.uri().path() != "/metrics" {
                ApiError::NotFound.into_response()
            } else if request.method() != Method::GET {
                ApiError::MethodNotAllowed { allow: "GET" }.into_response()
            } else {
                let body = state.metrics.render(state.auth.hashing().queue_depth());
                response::text(StatusCode::OK, "text/plain; version=0.0.4", body)
            };
            response::add_standard_headers(&mut response, "metrics");
            response
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let metrics = Metrics::default();
        metrics.observe_request("GET /v1/users/me", 200, Duration::from_micros(200));
        metrics.observe_request("GET /v1/users/me", 200, Duration::from_millis(30));
        metrics.observe_request("GET /v1/users/me", 401, Duration::from_secs(3));
        metrics.login(LoginOutcome::Throttled);
        let text = metrics.render(4);
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
    }
}
