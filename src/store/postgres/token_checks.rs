//! Token checks in batches. Every check must read the database after its request arrived —
//! that is what keeps revocation exact across replicas — but it need not read alone: checks
//! that arrive while reads are under way queue here and share the next one, a single statement
//! for all of them. Each is answered from a statement that started after it was queued, so the
//! guarantee is unchanged; a busy replica pays one round trip per batch instead of one per
//! request (BENCHMARKS.md, "PostgreSQL").
//!
//! A few batches may be in flight at once, each on its own connection and in its own task, so
//! one connection that stops answering delays only the checks of its batch, and only until the
//! store's timeout detaches it; a batch that fails, or whose task panics, answers its own
//! checks with an error and leaves the queue serving. Every waiting caller gives up after a
//! bound of its own as well, so no thread waits on a batch forever.

use super::{col, on_connection, profile_from_row, timed_out, to_u64};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Denial;
use crate::store::{Result, StoreError, TokenState};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// Most checks one statement carries.
const MAX_BATCH: usize = 256;
/// Batches in flight at once: enough that one stuck connection does not stall the others,
/// few enough that batching still gathers the checks of a busy replica.
const MAX_IN_FLIGHT: usize = 4;

/// One statement for a batch: for each (user, jti, sid), the user's profile and generation if
/// the user exists (NULLs if not), why either id is denylisted (NULL if neither is), and the
/// check's ordinal.
const BATCH_SQL: &str = "
    SELECT u.id, u.username, u.username_canonical, u.full_name,
           u.mothers_favorite_search_engine, u.created_at,
           (SELECT CASE t.active WHEN 1 THEN 'active' ELSE 'pending' END FROM totp_factors t
            WHERE t.user_id = u.id),
           u.token_generation,
           (SELECT coalesce(r.reason, '') FROM revoked_tokens r WHERE r.jti IN (w.jti, w.sid)
            LIMIT 1), w.n
    FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS w(user_id, jti, sid, n)
    LEFT JOIN users u ON u.id = w.user_id";

struct Check {
    user: UserId,
    jti: TokenId,
    sid: SessionId,
    reply: SyncSender<Result<Option<TokenState>>>,
}

/// The queue of checks; the batching task runs on the store's runtime.
#[derive(Debug)]
pub(super) struct TokenChecks {
    /// Unbounded, yet bounded in practice: each sender waits for its answer, so at most one
    /// check per blocked thread is queued.
    queue: mpsc::UnboundedSender<Check>,
    /// How long a caller waits for its answer: a batch may wait for a connection, then run,
    /// each within the store's timeout.
    patience: Duration,
}

impl TokenChecks {
    pub(super) fn start(
        runtime: &tokio::runtime::Runtime,
        pool: deadpool_postgres::Pool,
        timeout: Duration,
    ) -> Self {
        let (queue, checks) = mpsc::unbounded_channel();
        runtime.spawn(gather(pool, checks, timeout));
        Self {
            queue,
            patience: timeout.saturating_mul(2) + Duration::from_secs(1),
        }
    }

    /// Queues a check and waits for the batch that answers it (blocking the calling thread).
    pub(super) fn check(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        let (reply, answer) = sync_channel(1);
        let check = Check {
            user: user.clone(),
            jti: jti.clone(),
            sid: sid.clone(),
            reply,
        };
        let gone =
            || StoreError::Unreachable("the token-check batch ended without an answer".into());
        self.queue.send(check).map_err(|_| gone())?;
        match answer.recv_timeout(self.patience) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => Err(timed_out(self.patience)),
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }
}

/// Gathers queued checks into batches and starts each in a task of its own, at most
/// [`MAX_IN_FLIGHT`] at once.
async fn gather(
    pool: deadpool_postgres::Pool,
    mut checks: mpsc::UnboundedReceiver<Check>,
    timeout: Duration,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if checks.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            answer_all(&pool, batch, timeout).await;
            drop(permit);
        });
    }
}

async fn answer_all(pool: &deadpool_postgres::Pool, mut batch: Vec<Check>, timeout: Duration) {
    match read(pool, &batch, timeout).await {
        Ok(states) => {
            for (check, state) in batch.drain(..).zip(states) {
                let _ = check.reply.send(Ok(state));
            }
        }
        Err(failure) => {
            let failure = Arc::new(failure);
            for check in batch.drain(..) {
                let _ = check.reply.send(Err(StoreError::Shared(failure.clone())));
            }
        }
    }
}

/// One statement for the whole batch, on a connection of the store's pool and within its
/// timeout; the answers in the batch's order.
async fn read(
    pool: &deadpool_postgres::Pool,
    batch: &[Check],
    timeout: Duration,
) -> Result<Vec<Option<TokenState>>> {
    let users: Vec<&str> = batch.iter().map(|c| c.user.as_str()).collect();
    let jtis: Vec<&str> = batch.iter().map(|c| c.jti.as_str()).collect();
    let sids: Vec<&str> = batch.iter().map(|c| c.sid.as_str()).collect();
    let rows = on_connection(pool, timeout, async |client| {
        let statement = client
            .prepare_cached(BATCH_SQL)
            .await
            .map_err(super::error)?;
        client
            .query(&statement, &[&users, &jtis, &sids])
            .await
            .map_err(super::error)
    })
    .await?;
    let mut states: Vec<Option<TokenState>> = (0..batch.len()).map(|_| None).collect();
    for row in &rows {
        let ordinal: i64 = col(row, 9)?;
        let user_exists = col::<Option<String>>(row, 0)?.is_some();
        let slot = usize::try_from(ordinal - 1)
            .ok()
            .and_then(|index| states.get_mut(index));
        if let (Some(slot), true) = (slot, user_exists) {
            *slot = Some(TokenState {
                profile: Arc::new(profile_from_row(row)?),
                current_generation: to_u64(col(row, 7)?),
                revoked: col::<Option<String>>(row, 8)?
                    .map(|reason| Denial::from_stored(Some(&reason))),
            });
        }
    }
    Ok(states)
}
