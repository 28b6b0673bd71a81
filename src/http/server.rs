//! The accept loop shared by the API and the metrics listener: connection cap, header timeout,
//! back-off on accept errors, graceful shutdown.

use super::HttpSettings;
use super::response::HttpResponse;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Headers beyond this never reach a handler: hyper answers a bare 431 and closes. Large
/// enough that an oversized token still gets our own problem+json answer.
const HARD_HEADER_LIMIT: usize = 128 * 1024;

/// Accepts HTTP/1.1 connections and runs `handler` for each request until `shutdown`
/// resolves; then waits up to `shutdown_grace` for in-flight requests.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        // Without a timer the header-read timeout does nothing (and hyper panics).
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(HARD_HEADER_LIMIT)
        .max_header_size(HARD_HEADER_LIMIT)
        // Copy each response into one buffer and send it with one `write`. Our responses are
        // small, and with the default vectored writes (head and body as separate slices)
        // `/me` measured 2–4% fewer requests/s (BENCHMARKS.md, section 2).
        .writev(false);
    let graceful = GracefulShutdown::new();
    let connection_slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            slot = connection_slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends are transient: back off instead of dying.
                    tracing::warn!(%error, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(peer, request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}
