//! Group commit for refreshes. A refresh is one small UPDATE, and under load its cost is the
//! commit: the fsync, and — with a commit per request — handing SQLite's write lock from one
//! waiting thread to the next. Here one writer thread takes every refresh queued while the
//! previous commit ran and applies them in one transaction: one fsync and one lock hand-off
//! for the batch (BENCHMARKS.md, "Refresh").
//!
//! Nothing about a refresh's meaning changes. Each UPDATE is still conditional on the state its
//! caller judged (counter, generation, not ended); statements of one batch run in queue order,
//! so two refreshes of one session in one batch see each other exactly as two transactions
//! would; and no caller hears its result before the batch has committed. A batch that fails as
//! a whole (busy past the timeout, I/O error) answers "apply alone" to each caller, who then
//! runs its UPDATE on its own connection and gets that precise outcome.

use super::{Result, connect, to_i64};
use crate::domain::ids::{SessionId, UserId};
use crate::store::SessionGrant;
use rusqlite::{CachedStatement, Connection, TransactionBehavior, params};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The conditional UPDATE of a refresh: parameters session, user, expected counter, new
/// counter, generation, now. Shared with the direct path so both mean the same.
pub(super) const GRANT_SQL: &str = "UPDATE sessions SET refresh_counter = ?4,
         rotated_at = CASE WHEN ?4 != ?3 THEN ?6 ELSE rotated_at END,
         last_used_at = ?6
     WHERE id = ?1 AND user_id = ?2 AND refresh_counter = ?3 AND ended_at IS NULL
       AND generation = ?5
       AND generation = (SELECT token_generation FROM users WHERE id = ?2)";

/// Runs [`GRANT_SQL`] for one grant: whether it moved the session.
pub(super) fn execute_grant(
    update: &mut CachedStatement<'_>,
    grant: &SessionGrant<'_>,
) -> rusqlite::Result<bool> {
    let changed = update.execute(params![
        grant.session_id.as_str(),
        grant.user_id.as_str(),
        to_i64(grant.expected_counter),
        to_i64(grant.new_counter),
        to_i64(grant.generation),
        grant.now,
    ])?;
    Ok(changed == 1)
}

/// Most refreshes one transaction carries.
const MAX_BATCH: usize = 64;
/// Refreshes waiting for the writer before senders block.
const QUEUE: usize = 1024;

struct Job {
    session_id: SessionId,
    user_id: UserId,
    generation: u64,
    expected_counter: u64,
    new_counter: u64,
    now: i64,
    /// `Some(moved)` once committed; `None`: the batch failed, apply alone.
    reply: SyncSender<Option<bool>>,
}

/// The writer thread and its queue. Dropping it closes the queue and waits for the thread, so
/// its connection is closed before anything the store drops after it.
#[derive(Debug)]
pub(super) struct GroupCommit {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the writer on its own connection to `path`; it takes `writer` for each batch, as
    /// every other write of the process does.
    pub(super) fn start(
        path: &Path,
        writer: Arc<Mutex<()>>,
        busy_timeout: std::time::Duration,
    ) -> Result<Self> {
        let conn = connect(path, busy_timeout)?;
        let (jobs, queue) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("tessera-group-commit".into())
            .spawn(move || run(conn, &writer, &queue))
            .map_err(|source| super::StoreError::Io {
                path: path.into(),
                source,
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues a grant and waits for its batch to commit: `Some(moved)`, or `None` when it must
    /// be applied alone (the batch failed, or the writer is gone).
    pub(super) fn submit(&self, grant: &SessionGrant<'_>) -> Option<bool> {
        let (reply, answer) = sync_channel(1);
        let job = Job {
            session_id: grant.session_id.clone(),
            user_id: grant.user_id.clone(),
            generation: grant.generation,
            expected_counter: grant.expected_counter,
            new_counter: grant.new_counter,
            now: grant.now,
            reply,
        };
        self.jobs.as_ref()?.send(job).ok()?;
        answer.recv().ok().flatten()
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(mut conn: Connection, writer: &Mutex<()>, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let outcome = {
            let _turn = writer.lock().unwrap_or_else(PoisonError::into_inner);
            apply(&mut conn, &batch)
        };
        match outcome {
            Ok(moved) => {
                for (job, moved) in batch.iter().zip(moved) {
                    let _ = job.reply.send(Some(moved));
                }
            }
            Err(_) => {
                for job in &batch {
                    let _ = job.reply.send(None);
                }
            }
        }
    }
}

/// One transaction for the batch, statements in queue order; whether each moved its session.
fn apply(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut moved = Vec::with_capacity(batch.len());
    {
        let mut update = tx.prepare_cached(GRANT_SQL)?;
        for job in batch {
            let grant = SessionGrant {
                session_id: &job.session_id,
                user_id: &job.user_id,
                generation: job.generation,
                expected_counter: job.expected_counter,
                new_counter: job.new_counter,
                now: job.now,
            };
            moved.push(execute_grant(&mut update, &grant)?);
        }
    }
    tx.commit()?;
    Ok(moved)
}
