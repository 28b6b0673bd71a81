//! Assembly: configuration → keyring, store, hasher → `Auth` → HTTP state; and the running
//! server with its background pruning, key-file following and signal handling.

mod key_reload;

pub use key_reload::SIGNING_LEASE;

use crate::auth::Auth;
use crate::auth::hash_pool::HashPool;
use crate::config::Config;
use crate::domain::password::{HashError, Hasher};
use crate::http::limits::RateLimiter;
use crate::http::metrics::Metrics;
use crate::http::{self, AppState};
use crate::store::{self, StoreError};
use crate::token::{Codec, JwkSet, KeyError, Keyring, ValidationPolicy};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "key id(s) {0:?} hold different key material on another server of this database: \
         tokens signed there would not verify here (or the reverse); give every server the same \
         key file"
    )]
    KeyMismatch(Vec<String>),
    #[error(
        "key file {} does not exist; create it with `tessera keys generate --keys {}` (a path \
         given with --keys or TESSERA_KEYS is never created)",
        .0.display(),
        .0.display()
    )]
    MissingKeys(PathBuf),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("cannot start hashing threads: {0}")]
    Threads(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Builds everything a request needs. Fails closed on any key or storage problem.
pub fn build_state(config: &Config) -> Result<Arc<AppState>, StartupError> {
    let keyring = load_or_create_keys(config)?;
    let store = store::open_for_serving(&config.db, config.db_timeout, config.replica_lease)?;
    let mismatched = store.register_keys(&keyring.fingerprints())?;
    if !mismatched.is_empty() {
        return Err(StartupError::KeyMismatch(mismatched));
    }
    // Before the first token is signed, as every renewal is (see `key_reload`).
    store.record_signing(
        keyring.signing_kid(),
        config.clock.now().saturating_add(SIGNING_LEASE),
    )?;
    let hashing = HashPool::new(
        Hasher::new(config.hash)?,
        config.hash_permits,
        config.hash_queue,
        config.hash_nice,
    )
    .map_err(StartupError::Threads)?;
    let policy = ValidationPolicy {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        leeway: config.leeway,
        max_lifetime: config.auth.token_ttl,
    };
    let auth = Auth::new(store, Codec::new(keyring, policy), hashing, config.auth);
    Ok(Arc::new(AppState {
        auth: Arc::new(auth),
        settings: config.http.clone(),
        login_limiter: RateLimiter::new(config.login_limit.0, config.login_limit.1),
        register_limiter: RateLimiter::new(config.register_limit.0, config.register_limit.1),
        refresh_limiter: RateLimiter::new(config.refresh_limit.0, config.refresh_limit.1),
        metrics: Metrics::default(),
        clock: config.clock.clone(),
        access_log: config.access_log.clone(),
    }))
}

fn load_or_create_keys(config: &Config) -> Result<Keyring, StartupError> {
    let path = &config.keys_path;
    if config.create_missing_keys && !path.exists() {
        JwkSet::create(path)?;
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        tracing::warn!(
            path = %absolute.display(),
            "DEVELOPMENT SETUP: no key file existed, so a new signing key was generated. \
             Tokens from any other instance will not verify here. In production, create keys \
             with `tessera keys generate` and pass --keys explicitly."
        );
    }
    if !path.exists() {
        return Err(StartupError::MissingKeys(path.clone()));
    }
    Ok(Keyring::load(path)?)
}

/// The background work beside serving: pruning expired rows, and following the key file.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    pub prune_every: std::time::Duration,
    pub keys_path: PathBuf,
}

impl Housekeeping {
    pub fn of(config: &Config) -> Self {
        Self {
            prune_every: config.prune_interval,
            keys_path: config.keys_path.clone(),
        }
    }
}

/// Runs the API on `listener` (and metrics on `metrics`, if given) until `shutdown` resolves,
/// pruning expired revocation rows and following the key file in the background; then
/// checkpoints the WAL.
pub async fn run(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: Arc<AppState>,
    housekeeping: Housekeeping,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let pruner = tokio::spawn(prune_periodically(state.clone(), housekeeping.prune_every));
    let hangups = key_reload::hangups();
    let key_follower = tokio::spawn(key_reload::follow(
        state.clone(),
        housekeeping.keys_path,
        hangups,
    ));
    // Said once everything that reacts to outside events is in place.
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "tessera listening");
    }
    if let Some(address) = metrics.as_ref().and_then(|m| m.local_addr().ok()) {
        tracing::info!(%address, "metrics listening");
    }
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = metrics.map(|listener| {
        let stopped = async {
            let _ = metrics_stopped.await;
        };
        tokio::spawn(http::metrics::serve_metrics(
            listener,
            state.clone(),
            stopped,
        ))
    });
    let served = http::serve(listener, state.clone(), shutdown).await;
    pruner.abort();
    key_follower.abort();
    let _ = stop_metrics.send(());
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    let auth = state.auth.clone();
    let checkpoint = tokio::task::spawn_blocking(move || auth.checkpoint()).await;
    if let Ok(Err(error)) = checkpoint {
        let error = store::cause_chain(&error);
        tracing::warn!(%error, "WAL checkpoint on shutdown failed");
    }
    tracing::info!("tessera stopped");
    served.map_err(StartupError::Serve)
}

/// Binds the API (and metrics) addresses and serves until SIGINT or SIGTERM.
pub async fn serve_until_signalled(
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    config: &Config,
) -> Result<(), StartupError> {
    let state = build_state(config)?;
    let (backend, database) = (config.db.backend(), &config.db);
    let keys =
        std::fs::canonicalize(&config.keys_path).unwrap_or_else(|_| config.keys_path.clone());
    tracing::info!(
        backend,
        %database,
        keys = %keys.display(),
        signing_kid = %state.auth.signing_kid(),
        "tessera starting"
    );
    let listener = bind(addr).await?;
    let metrics = match metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    run(
        listener,
        metrics,
        state,
        Housekeeping::of(config),
        shutdown_signal(),
    )
    .await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

async fn prune_periodically(state: Arc<AppState>, every: std::time::Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        let auth = state.auth.clone();
        let now = state.clock.now();
        match tokio::task::spawn_blocking(move || auth.prune(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(pruned)) => tracing::info!(pruned, "pruned expired revocation rows"),
            Ok(Err(error)) => {
                let error = store::cause_chain(&error);
                tracing::warn!(%error, "pruning failed");
            }
            Err(error) => tracing::warn!(%error, "pruning task failed"),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what orchestrators send).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}
