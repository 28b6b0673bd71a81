//! The HTTP edge: raw hyper 1.x on tokio. Accept loop, connection limits, per-request
//! dispatch and logging live here; routing, bodies, Bearer extraction and error rendering each
//! have their own module. Handlers stay thin: parse, call `auth`, render.

pub mod access_log;
mod bearer;
mod body;
pub mod client_address;
pub mod forward_auth;
mod handlers;
mod introspection;
pub mod limits;
pub mod metrics;
pub mod parsers;
pub mod problem;
mod profile_view;
mod response;
pub mod router;
mod second_factor;
mod server;

use crate::auth::Auth;
use access_log::{AccessLog, RequestLine};
use hyper::Request;
use hyper::body::Incoming;
use limits::RateLimiter;
use metrics::Metrics;
use problem::ApiError;
use response::HttpResponse;
use server::InService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The OpenAPI 3.1 contract, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// HTTP-level limits and timeouts.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// Time allowed for a body to arrive (408 beyond).
    pub body_timeout: Duration,
    /// Time allowed for a whole request, body included (503 beyond).
    pub request_timeout: Duration,
    /// Time a connection may go without a request in service (a slow request head, an idle
    /// keep-alive connection) before it is closed.
    pub header_read_timeout: Duration,
    /// Total header bytes we answer (431 problem+json beyond). hyper itself drops the
    /// connection with a bare 431 past `HARD_HEADER_LIMIT`.
    pub max_header_bytes: usize,
    /// Simultaneous connections; at the cap an idle keep-alive connection is closed to make
    /// room, and when none is idle further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Simultaneous connections from one client (IPv4 address or IPv6 /64); beyond it a new
    /// connection is closed at once.
    pub max_connections_per_client: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` names the client (per-client limits, logs, sessions);
    /// the per-client connection cap counts TCP peers whatever this says.
    pub trusted_proxies: client_address::TrustedProxies,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 16 * 1024,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            max_connections_per_client: 128,
            shutdown_grace: Duration::from_secs(10),
            trusted_proxies: client_address::TrustedProxies::default(),
        }
    }
}

/// Everything a request may need.
#[derive(Debug)]
pub struct AppState {
    pub auth: Arc<Auth>,
    pub settings: HttpSettings,
    pub login_limiter: RateLimiter,
    pub register_limiter: RateLimiter,
    pub refresh_limiter: RateLimiter,
    pub metrics: Metrics,
    /// The one source of "now" for every request.
    pub clock: Arc<dyn crate::support::clock::Clock>,
    /// One line per request.
    pub access_log: AccessLog,
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests `shutdown_grace` to finish. Tests and `main` share this entry point.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let settings = state.settings.clone();
    server::accept_loop(
        "api",
        listener,
        &settings,
        shutdown,
        move |peer, request, in_service| dispatch(state.clone(), peer, request, in_service),
    )
    .await
}

/// One request: route, handle under the request timeout, add standard headers, log one line.
///
/// A plain function returning an `async` block, not an `async fn`: an `async fn` keeps its
/// arguments and its own copies of them, and the request alone is 248 bytes in a future that is
/// moved several times per request.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold its arguments twice"
)]
fn dispatch(
    state: Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
    in_service: InService,
) -> impl Future<Output = Result<HttpResponse, Infallible>> {
    async move {
        let started = Instant::now();
        let _in_flight = state.metrics.request_started();
        let request_id = next_request_id();
        let request_id = request_id.as_str();
        let client = state
            .settings
            .trusted_proxies
            .client(peer.ip(), request.headers());
        let call = handlers::Call {
            state: &state,
            client,
            request_id,
        };
        let method = request.method().clone();
        let (route_name, result) = match router::route(&method, request.uri().path()) {
            Err(error) => ("unmatched", Err(error)),
            Ok(route) => {
                let name = route.name();
                let result = if header_bytes(&request) > state.settings.max_header_bytes {
                    Err(ApiError::HeadersTooLarge)
                } else {
                    tokio::time::timeout(
                        state.settings.request_timeout,
                        handlers::handle(&call, route, request),
                    )
                    .await
                    .unwrap_or_else(|elapsed| Err(elapsed.into()))
                };
                (name, result)
            }
        };
        let mut response = result.unwrap_or_else(ApiError::into_response);
        response::add_standard_headers(&mut response, request_id);
        let finished = Instant::now();
        let elapsed = finished.saturating_duration_since(started);
        let status = response.status().as_u16();
        state.metrics.observe_request(route_name, status, elapsed);
        // The route template, never the raw path or any header value.
        state.access_log.record(&RequestLine {
            method: method.as_str(),
            route: route_name,
            status,
            elapsed,
            finished,
            request_id,
            client,
        });
        drop(in_service);
        Ok(response)
    }
}

/// 96 random bits, unguessable and unordered, so ids reveal nothing about request volume.
/// From the thread's userspace CSPRNG, seeded from the OS: a system call per
/// request would cost more than the rest of the id.
fn next_request_id() -> crate::crypto::random::RequestId {
    crate::crypto::random::request_id()
}

fn header_bytes(request: &Request<Incoming>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves each request's future several times on its way into the connection task, and
    /// every copy of it costs instructions on the hot path. A size budget, not behaviour: a
    /// compiler upgrade may move it, so it is not part of the suite; `tools/bench-callgrind.sh`
    /// runs it beside the instruction counts it protects (BENCHMARKS.md).
    #[test]
    #[ignore = "a size budget for the hot path, not behaviour: tools/bench-callgrind.sh runs it"]
    fn a_request_future_is_held_once_and_holds_the_request_once() {
        let size = future_size(
            |(state, peer, request, in_service): (
                Arc<AppState>,
                SocketAddr,
                Request<Incoming>,
                InService,
            )| dispatch(state, peer, request, in_service),
        );
        let request = std::mem::size_of::<Request<Incoming>>();
        assert!(size > request, "the probe measures something");
        assert!(size < 1200, "{size} bytes");
    }
}
