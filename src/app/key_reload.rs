//! A running server follows its key file: `tessera keys rotate | promote | retire` take effect
//! without a restart, and the server records in the database which key it signs with, so that
//! `keys retire` can tell when no server has signed with a key for one token lifetime.
//!
//! **How a change is noticed: both ways.** The file is polled (`stat`, once a second) and
//! SIGHUP reloads at once. Polling needs no operator step — the admin CLI's word "signs from now
//! on" is true within a second for every server on that file — and works where inotify does
//! not (network and container mounts, a file replaced by rename, which is how the CLI writes
//! it). SIGHUP is the conventional "reload now" for orchestrators and scripts that copied a file
//! in and want it in force before they go on. A stat a second costs nothing next to requests.
//!
//! **A file that cannot be used is refused whole**, loudly: unreadable, not a JWK Set, no
//! signing key, readable by group or others, or holding other key material under a key id than
//! the database has on record. The keyring in force stays, and the log says which key still
//! signs; the next change of the file is tried again.
//!
//! **The signing lease.** While a server signs with a key it renews, every
//! [`LEASE_RENEWAL`], a record in the database that it may sign with that key until
//! [`SIGNING_LEASE`] from now. The record only moves later, so across replicas it is the last
//! one's. A server that stops signing with the key (it reloaded, stopped or died) stops renewing,
//! and the record stands: every token signed with the key expires by that moment plus one token
//! lifetime, which is what `keys retire` waits for.

use crate::http::AppState;
use crate::store::cause_chain;
use crate::token::Keyring;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the key file is looked at.
const POLL: Duration = Duration::from_secs(1);
/// How far ahead a server records that it may sign with its key, in seconds.
pub const SIGNING_LEASE: i64 = 60;
/// How often the record is renewed: well inside the lease, so one failed renewal (the database
/// busy for a moment) never lets the record fall behind a key still in use.
const LEASE_RENEWAL: Duration = Duration::from_secs(20);

/// What identifies a version of the file: a rename gives a new inode, an edit in place a new
/// modification time or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i64,
    mode: u32,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        device: metadata.dev(),
        inode: metadata.ino(),
        size: metadata.size(),
        modified_ns: metadata
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(metadata.mtime_nsec()),
        mode: metadata.mode(),
    })
}

/// Takes over SIGHUP for the process (whose default action would end it): call before the
/// server says it is listening, so a SIGHUP sent from then on is always a reload.
pub(crate) fn hangups() -> Option<tokio::signal::unix::Signal> {
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    if hangup.is_none() {
        tracing::warn!("cannot listen for SIGHUP; the key file is still watched");
    }
    hangup
}

/// Follows `path` until the task is dropped: reloads it when it changes or on SIGHUP, and
/// renews the signing lease.
pub(crate) async fn follow(
    state: Arc<AppState>,
    path: PathBuf,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(LEASE_RENEWAL);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = stamp(&path);
    loop {
        let trigger = tokio::select! {
            _ = poll.tick() => "file changed",
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = renew.tick() => {
                renew_lease(&state).await;
                continue;
            }
        };
        let now_seen = stamp(&path);
        if trigger == "SIGHUP" || now_seen != seen {
            seen = now_seen;
            reload(&state, &path, trigger).await;
        }
    }
}

/// Loads the file and puts it in force, or leaves the keyring in force and says why.
async fn reload(state: &Arc<AppState>, path: &Path, trigger: &'static str) {
    let (auth, file) = (state.auth.clone(), path.to_path_buf());
    let outcome = tokio::task::spawn_blocking(move || {
        let keyring = Keyring::load(&file).map_err(|e| cause_chain(&e))?;
        auth.replace_keyring(keyring).map_err(|e| cause_chain(&e))
    })
    .await
    .unwrap_or_else(|join_error| Err(join_error.to_string()));
    let signing_kid = state.auth.signing_kid();
    match outcome {
        Ok(()) => {
            state.metrics.keyring_reload(true);
            tracing::info!(
                path = %path.display(),
                trigger,
                signing_kid,
                "keyring reloaded"
            );
            renew_lease(state).await;
        }
        Err(error) => {
            state.metrics.keyring_reload(false);
            tracing::error!(
                path = %path.display(),
                trigger,
                %error,
                signing_kid,
                "key file refused; the keyring in force stays"
            );
        }
    }
}

/// Records the signing lease (see the module comment). A failure is logged and retried at the
/// next renewal, well before the lease runs out.
async fn renew_lease(state: &Arc<AppState>) {
    let (auth, clock) = (state.auth.clone(), state.clock.clone());
    let renewed = tokio::task::spawn_blocking(move || {
        auth.record_signing(clock.now().saturating_add(SIGNING_LEASE))
    })
    .await;
    match renewed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not record the signing key's lease"),
        Err(error) => tracing::warn!(%error, "signing-lease task failed"),
    }
}
