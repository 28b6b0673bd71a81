//! Token checks in batches. Every check must read the database after its request arrived —
//! that is what keeps revocation exact across replicas — but it need not read alone: checks
//! that arrive while a read is under way queue here and share the next one, a single statement
//! for all of them. Each is answered from a statement that started after it was queued, so the
//! guarantee is unchanged; a busy replica pays one round trip per batch instead of one per
//! request (BENCHMARKS.md, "PostgreSQL").

use super::{Client, error, profile_from_row, to_u64};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::store::{Result, StoreError, TokenState};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use tokio::sync::mpsc;

/// Most checks one statement carries.
const MAX_BATCH: usize = 256;

/// One statement for a batch: for each (user, jti, sid), the user's profile and generation if
/// the user exists (NULLs if not), whether either id is denylisted, and the check's ordinal.
const BATCH_SQL: &str = "
    SELECT u.id, u.username, u.username_canonical, u.full_name,
           u.mothers_favorite_search_engine, u.created_at, u.token_generation,
           EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti IN (w.jti, w.sid)), w.n
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
}

impl TokenChecks {
    pub(super) fn start(runtime: &tokio::runtime::Runtime, pool: Pool) -> Self {
        let (queue, checks) = mpsc::unbounded_channel();
        runtime.spawn(run(pool, checks));
        Self { queue }
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
        let gone = || StoreError::Unreachable("the token-check queue stopped".into());
        self.queue.send(check).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

async fn run(pool: Pool, mut checks: mpsc::UnboundedReceiver<Check>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while checks.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match answer(&pool, &batch).await {
            Ok(states) => {
                for (check, state) in batch.drain(..).zip(states) {
                    let _ = check.reply.send(Ok(state));
                }
            }
            Err(failure) => {
                let message = failure.to_string();
                let unavailable = failure.is_unavailable();
                for check in batch.drain(..) {
                    let failure = if unavailable {
                        StoreError::Unreachable(message.clone())
                    } else {
                        StoreError::Postgres(message.clone())
                    };
                    let _ = check.reply.send(Err(failure));
                }
            }
        }
    }
}

/// One statement for the whole batch; the answers in the batch's order.
async fn answer(pool: &Pool, batch: &[Check]) -> Result<Vec<Option<TokenState>>> {
    let client: Client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unreachable(e.to_string()))?;
    let statement = client.prepare_cached(BATCH_SQL).await.map_err(error)?;
    let users: Vec<&str> = batch.iter().map(|c| c.user.as_str()).collect();
    let jtis: Vec<&str> = batch.iter().map(|c| c.jti.as_str()).collect();
    let sids: Vec<&str> = batch.iter().map(|c| c.sid.as_str()).collect();
    let rows = client
        .query(&statement, &[&users, &jtis, &sids])
        .await
        .map_err(error)?;
    let mut states: Vec<Option<TokenState>> = (0..batch.len()).map(|_| None).collect();
    for row in &rows {
        let ordinal: i64 = row.get(8);
        let user_exists = row.get::<_, Option<String>>(0).is_some();
        let slot = usize::try_from(ordinal - 1)
            .ok()
            .and_then(|index| states.get_mut(index));
        if let (Some(slot), true) = (slot, user_exists) {
            *slot = Some(TokenState {
                profile: Arc::new(profile_from_row(row)),
                current_generation: to_u64(row.get(6)),
                revoked: row.get(7),
            });
        }
    }
    Ok(states)
}
