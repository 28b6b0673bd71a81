//! Token state on PostgreSQL: from a serving replica's view while it holds a lease
//! ([`super::replica`]), otherwise read from the database in shared batches
//! ([`super::token_checks`]). Revocations are committed, then acknowledged by every live lease,
//! before they are answered.

use super::{PgStore, col, first_count, to_u64};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::store::{Result, Revocation, TokenState};

/// Least seconds of change-log history kept (as on SQLite: `sqlite/tokens.rs`).
const MIN_CHANGE_LOG_RETENTION: i64 = 3600;

impl Revocation for PgStore {
    /// From the view when it may answer; otherwise read with the other checks queued meanwhile,
    /// in one statement that starts after this one was queued ([`token_checks`]).
    fn token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        match &self.replica {
            Some(replica) => {
                replica.token_state(user, jti, sid, || self.checks.check(user, jti, sid))
            }
            None => self.checks.check(user, jti, sid),
        }
    }

    /// From memory only while this replica holds a lease and has the user.
    fn cached_token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        Ok(self
            .replica
            .as_ref()
            .and_then(|replica| replica.cached(user, jti, sid)))
    }

    fn bump_generation(&self, user: &UserId) -> Result<Option<u64>> {
        let bumped = self.block(async {
            let rows = self
                .query(
                    "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1
                     RETURNING token_generation",
                    &[&user.as_str()],
                )
                .await?;
            rows.first().map(|row| col(row, 0).map(to_u64)).transpose()
        })?;
        self.await_replicas()?;
        Ok(bumped)
    }

    fn prune_expired(
        &self,
        cutoff: i64,
        longest_token_lifetime: i64,
        session_idle: i64,
    ) -> Result<usize> {
        let settled = cutoff.saturating_sub(longest_token_lifetime);
        let pruned = self.block(async {
            let sessions = self
                .execute(
                    "DELETE FROM sessions s WHERE s.expires_at < $1
                        OR s.ended_at < $2
                        OR s.last_used_at < $2 - $3
                        OR (s.last_used_at < $2 AND s.generation <>
                            (SELECT token_generation FROM users u WHERE u.id = s.user_id))",
                    &[&cutoff, &settled, &session_idle],
                )
                .await?;
            let revoked = self
                .execute(
                    "DELETE FROM revoked_tokens WHERE expires_at < $1",
                    &[&cutoff],
                )
                .await?;
            // History a replica may still need to catch up by applying, rather than
            // rebuilding; and leases whose replicas are long gone.
            let retention = longest_token_lifetime.max(MIN_CHANGE_LOG_RETENTION);
            self.execute(
                "DELETE FROM token_changes WHERE changed_at < $1",
                &[&cutoff.saturating_sub(retention)],
            )
            .await?;
            self.execute(
                "DELETE FROM replica_leases WHERE expires_at < now() - INTERVAL '1 hour'",
                &[],
            )
            .await?;
            Ok(usize::try_from(sessions + revoked).unwrap_or(usize::MAX))
        })?;
        if let Some(replica) = &self.replica {
            replica.prune(cutoff);
        }
        Ok(pruned)
    }

    fn denylist_len(&self) -> Result<u64> {
        self.block(async {
            let rows = self
                .query("SELECT count(*) FROM revoked_tokens", &[])
                .await?;
            first_count(&rows)
        })
    }
}
