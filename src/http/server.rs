//! The accept loop shared by the API and the metrics listener: connection cap, header timeout,
//! back-off on accept errors, graceful shutdown.

use super::HttpSettings;
use super::limits::ClientKey;
use super::response::HttpResponse;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::sync::Semaphore;

/// Headers beyond this never reach a handler: hyper answers a bare 431 and closes. Large
/// enough that an oversized token still gets our own problem+json answer.
const HARD_HEADER_LIMIT: usize = 128 * 1024;

/// Accepts HTTP/1.1 connections and runs `handler` for each request until `shutdown`
/// resolves; then waits up to `shutdown_grace` for in-flight requests.
///
/// The handler's future goes to hyper as it is, with no wrapper: it is moved several times per
/// request, and each wrapper future would hold a second copy of it (BENCHMARKS.md, "The hot
/// path, stage by stage"). So the handler keeps the connection's [`InService`] mark itself,
/// until its response is ready, and answers in hyper's `Result` shape — never an `Err`.
pub async fn accept_loop<H, F>(
    name: &'static str,
    listener: TcpListener,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(SocketAddr, Request<Incoming>, InService) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<HttpResponse, Infallible>> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        // hyper's timer is still what its other timeouts would need; its header-read timeout
        // is off: one timer per request in hyper cost more than the rest of a `/me` in our own
        // code (BENCHMARKS.md, "The hot path, stage by stage"). `close_stalled` keeps that
        // deadline instead, for every connection at once.
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(HARD_HEADER_LIMIT)
        .max_header_size(HARD_HEADER_LIMIT)
        // Copy each response into one buffer and send it with one `write`. Our responses are
        // small, and with the default vectored writes (head and body as separate slices)
        // `/me` served fewer requests/s (BENCHMARKS.md, "One write per response").
        .writev(false);
    let connection_slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let table = Arc::new(ConnectionTable::default());
    let (stopping, stop_requested) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let _sweeper = AbortOnDrop(tokio::spawn(close_stalled(
        table.clone(),
        settings.header_read_timeout,
    )));

    loop {
        let slot = match connection_slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(_) => {
                // At the cap: an idle keep-alive connection goes first, so a client holding
                // many idle connections cannot keep everyone else waiting.
                table.evict_one_idle();
                tokio::select! {
                    slot = connection_slots.clone().acquire_owned() => slot,
                    () = &mut shutdown => break,
                }
            }
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends are transient: back off instead of dying.
                    tracing::warn!(listener = name, %error, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(connection_state) = table.admit(peer.ip(), settings.max_connections_per_client)
        else {
            tracing::warn!(
                listener = name,
                client = %peer.ip(),
                "connection refused: this client holds its connection limit"
            );
            continue; // dropping the stream closes it; the slot is returned
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let in_service = connection_state.clone();
        let service =
            service_fn(move |request| handler(peer, request, InService::start(&in_service)));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let (table, mut stop_requested) = (table.clone(), stop_requested.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _registered = Registered(table, connection_state.clone());
            tokio::pin!(connection);
            let finished = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = connection_state.evict.notified() => None,
                _ = stop_requested.wait_for(|stop| *stop) => None,
            };
            let result = match finished {
                Some(result) => result,
                // Stalled with no request in service: dropping the connection closes it. (A
                // request whose head completed meanwhile is finished gracefully below.)
                None if connection_state.stalled.load(Ordering::SeqCst)
                    && connection_state.in_flight.load(Ordering::SeqCst) == 0 =>
                {
                    tracing::debug!("closed: no request head within the header-read timeout");
                    return;
                }
                None => {
                    // Finish a request in progress, then close; an idle one closes at once.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        listener = name,
        "shutting down: no new connections; waiting for in-flight requests"
    );
    let _ = stopping.send(true);
    let all_slots = u32::try_from(settings.max_connections.max(1)).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connection_slots.acquire_many(all_slots) => {
            tracing::info!(listener = name, "all connections closed");
        }
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(
                listener = name,
                "shutdown grace period over; closing remaining connections"
            );
        }
    }
    Ok(())
}

/// Closes connections that went `timeout` without a request in service: a client that does not
/// finish a request head in time (Slowloris), an idle keep-alive connection, a client that does
/// not read its answer. One task for all connections, on a coarse clock of `timeout / 8` ticks,
/// instead of a timer per request; a connection is closed between `timeout` and `9/8 timeout`
/// after its last request ended (or after it was accepted).
async fn close_stalled(table: Arc<ConnectionTable>, timeout: Duration) {
    let tick = (timeout / TICKS_PER_TIMEOUT as u32).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = table.ticks.fetch_add(1, Ordering::SeqCst) + 1;
        table.close_stalled(now);
    }
}

/// The header-read deadline in ticks of `close_stalled`'s clock.
const TICKS_PER_TIMEOUT: u64 = 8;

/// Whether a connection idle since tick `idle_since` is past the deadline at tick `now`. The
/// connection went idle somewhere inside tick `idle_since`, so only whole ticks after it count.
fn past_deadline(now: u64, idle_since: u64) -> bool {
    now.saturating_sub(idle_since) > TICKS_PER_TIMEOUT
}

/// Stops a spawned task when the owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who holds which connection: counts per client (IPv4 address, or IPv6 /64), and for each
/// connection whether a request is in progress, so the accept loop can cap connections per
/// client and evict an idle keep-alive connection when the global cap is reached.
#[derive(Debug, Default)]
struct ConnectionTable {
    inner: Mutex<Table>,
    /// `close_stalled`'s clock: ticks since the accept loop started.
    ticks: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Table {
    per_client: HashMap<ClientKey, usize>,
    connections: HashMap<u64, Arc<ConnectionState>>,
}

/// One connection, as the accept loop sees it.
#[derive(Debug)]
struct ConnectionState {
    id: u64,
    client: ClientKey,
    /// Requests being served on it right now; zero means idle (between requests or before the
    /// first one).
    in_flight: AtomicUsize,
    /// The tick in which the connection was accepted or its last request ended.
    idle_since: AtomicU64,
    /// The table's clock, read when a request ends.
    ticks: Arc<AtomicU64>,
    /// Set with `evict` when the header-read deadline passed: close, not gracefully.
    stalled: AtomicBool,
    evict: Notify,
}

impl ConnectionTable {
    /// Registers a connection from `ip`, unless that client already holds `per_client_cap`.
    fn admit(&self, ip: IpAddr, per_client_cap: usize) -> Option<Arc<ConnectionState>> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let client = ClientKey::of(ip);
        let mut table = self.lock();
        let held = table.per_client.entry(client).or_insert(0);
        if *held >= per_client_cap.max(1) {
            return None;
        }
        *held += 1;
        let state = Arc::new(ConnectionState {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.ticks.load(Ordering::SeqCst)),
            ticks: self.ticks.clone(),
            stalled: AtomicBool::new(false),
            evict: Notify::new(),
        });
        table.connections.insert(state.id, state.clone());
        Some(state)
    }

    fn remove(&self, state: &ConnectionState) {
        let mut table = self.lock();
        table.connections.remove(&state.id);
        if let Some(held) = table.per_client.get_mut(&state.client) {
            *held -= 1;
            if *held == 0 {
                table.per_client.remove(&state.client);
            }
        }
    }

    /// Asks one idle connection to close: from the client holding the most connections, the
    /// oldest first. Runs only when the server is at its cap.
    fn evict_one_idle(&self) {
        let table = self.lock();
        let victim = table
            .connections
            .values()
            .filter(|c| c.in_flight.load(Ordering::SeqCst) == 0)
            .max_by_key(|c| {
                let held = table.per_client.get(&c.client).copied().unwrap_or(0);
                (held, std::cmp::Reverse(c.id))
            });
        if let Some(victim) = victim {
            victim.evict.notify_one();
        }
    }

    /// Asks every connection past the header-read deadline, with no request in service, to
    /// close.
    fn close_stalled(&self, now: u64) {
        let table = self.lock();
        for connection in table.connections.values() {
            // Acquire: pairs with `InService::drop`, so an idle count comes with its time.
            let idle = connection.in_flight.load(Ordering::Acquire) == 0;
            if idle && past_deadline(now, connection.idle_since.load(Ordering::Relaxed)) {
                connection.stalled.store(true, Ordering::SeqCst);
                connection.evict.notify_one();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unregisters a connection when its task ends, however it ends.
struct Registered(Arc<ConnectionTable>, Arc<ConnectionState>);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Marks a connection busy (not to be evicted as idle) for as long as a request's handler holds
/// it.
pub struct InService(Arc<ConnectionState>);

impl InService {
    fn start(state: &Arc<ConnectionState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(state.clone())
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        // The deadline restarts before the connection counts as idle again: the release
        // publishes the time together with the count. (Not `SeqCst`: a full fence per request
        // showed in profiles.)
        let now = self.0.ticks.load(Ordering::Relaxed);
        self.0.idle_since.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_counts_only_whole_ticks_after_going_idle() {
        // Idle since some moment inside tick 10: by tick 18 only 7 whole ticks have passed.
        assert!(!past_deadline(18, 10));
        assert!(past_deadline(19, 10));
        assert!(
            !past_deadline(3, 10),
            "a connection gone idle after `now` is not late"
        );
    }
}
