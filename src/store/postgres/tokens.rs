//! Token state on PostgreSQL: every check reads the database (in shared batches,
//! [`super::token_checks`]); revocations are committed before they are acknowledged.

use super::{PgStore, col, first_count, to_u64};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::store::{Result, Revocation, TokenState};

impl Revocation for PgStore {
    /// Read with the other checks queued meanwhile, in one statement that starts after this
    /// one was queued ([`token_checks`]).
    fn token_state(
        &self,
        user: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        self.checks.check(user, jti, sid)
    }

    /// Never from memory: every check reads the database (see the module comment).
    fn cached_token_state(
        &self,
        _user: &UserId,
        _jti: &TokenId,
        _sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        Ok(None)
    }

    fn bump_generation(&self, user: &UserId) -> Result<Option<u64>> {
        self.block(async {
            let rows = self
                .query(
                    "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1
                     RETURNING token_generation",
                    &[&user.as_str()],
                )
                .await?;
            rows.first().map(|row| col(row, 0).map(to_u64)).transpose()
        })
    }

    fn prune_expired(
        &self,
        cutoff: i64,
        longest_token_lifetime: i64,
        session_idle: i64,
    ) -> Result<usize> {
        let settled = cutoff.saturating_sub(longest_token_lifetime);
        self.block(async {
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
            Ok(usize::try_from(sessions + revoked).unwrap_or(usize::MAX))
        })
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
