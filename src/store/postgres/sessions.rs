//! Sessions on PostgreSQL: each change is one conditional statement or one short transaction,
//! so of racing requests exactly one moves a session (READ COMMITTED re-checks a changed row
//! against the WHERE clause).

use super::{PgStore, col, error, first_count, session_from_row, to_i64, to_u64};
use crate::domain::ids::{SessionId, UserId};
use crate::domain::session::{Denial, EndReason, SessionRecord};
use crate::store::rows;
use crate::store::{
    Credentials, NewSession, PasswordChange, PasswordChangeOutcome, Result, SessionGrant, Sessions,
    StoreError,
};

impl Sessions for PgStore {
    fn record_login(
        &self,
        verified: &Credentials,
        rehashed_password: Option<&str>,
        session: &NewSession<'_>,
    ) -> Result<()> {
        self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            let still_current = tx
                .execute(
                    "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL,
                         password_hash = coalesce($4, password_hash)
                     WHERE id = $1 AND password_hash = $2 AND token_generation = $3",
                    &[
                        &verified.user_id.as_str(),
                        &verified.password_hash,
                        &to_i64(verified.token_generation),
                        &rehashed_password,
                    ],
                )
                .await
                .map_err(error)?
                == 1;
            if !still_current {
                return Err(StoreError::CredentialsChanged);
            }
            tx.execute(
                "INSERT INTO sessions (id, user_id, generation, user_agent, client_address,
                     created_at, last_used_at, expires_at, factors)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
                &[
                    &session.id.as_str(),
                    &verified.user_id.as_str(),
                    &to_i64(verified.token_generation),
                    &session.origin.user_agent,
                    &rows::address_text(session.origin.client_address),
                    &session.created_at,
                    &session.expires_at,
                    &session.factors.as_stored(),
                ],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(())
        })
    }

    fn change_password(&self, change: &PasswordChange<'_>) -> Result<PasswordChangeOutcome> {
        let outcome = self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            let changed = tx
                .execute(
                    "UPDATE users SET password_hash = $3, token_generation = token_generation + 1,
                         failed_logins = 0, last_failed_login_at = NULL
                     WHERE id = $1 AND password_hash = $2 AND token_generation + 1 = $4",
                    &[
                        &change.user_id.as_str(),
                        &change.verified_hash,
                        &change.new_hash,
                        &to_i64(change.new_generation),
                    ],
                )
                .await
                .map_err(error)?
                == 1;
            if !changed {
                let same = tx
                    .query_opt(
                        "SELECT password_hash = $2 FROM users WHERE id = $1",
                        &[&change.user_id.as_str(), &change.verified_hash],
                    )
                    .await
                    .map_err(error)?
                    .map(|row| col::<bool>(&row, 0))
                    .transpose()?;
                return Ok(PasswordChangeOutcome::user_unchanged(same));
            }
            let kept = tx
                .query_opt(
                    "UPDATE sessions SET generation = $3, refresh_counter = refresh_counter + 1,
                         rotated_at = NULL, last_used_at = $4
                     WHERE id = $1 AND user_id = $2 AND ended_at IS NULL
                     RETURNING refresh_counter, expires_at",
                    &[
                        &change.session_id.as_str(),
                        &change.user_id.as_str(),
                        &to_i64(change.new_generation),
                        &change.now,
                    ],
                )
                .await
                .map_err(error)?;
            let kept = match kept {
                Some(row) => Some((to_u64(col(&row, 0)?), col(&row, 1)?)),
                None => None,
            };
            let outcome = PasswordChangeOutcome::after_session_update(kept);
            if outcome.commits() {
                tx.commit().await.map_err(error)?;
            }
            Ok(outcome)
        })?;
        if outcome.commits() {
            self.await_replicas()?;
        }
        Ok(outcome)
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        self.block(async {
            let rows = self
                .query(select_sessions!("WHERE s.id = $1"), &[&id.as_str()])
                .await?;
            rows.first().map(session_from_row).transpose()
        })
    }

    fn sessions_of(&self, user: &UserId) -> Result<Vec<SessionRecord>> {
        self.block(async {
            let rows = self
                .query(
                    select_sessions!("WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id"),
                    &[&user.as_str()],
                )
                .await?;
            rows.iter().map(session_from_row).collect()
        })
    }

    fn grant_in_session(&self, grant: &SessionGrant<'_>) -> Result<bool> {
        // One conditional UPDATE: under READ COMMITTED a row changed meanwhile is re-checked
        // against the WHERE clause, so of two racing refreshes exactly one moves the counter.
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE sessions SET refresh_counter = $4,
                         rotated_at = CASE WHEN $4 <> $3 THEN $6 ELSE rotated_at END,
                         last_used_at = $6
                     WHERE id = $1 AND user_id = $2 AND refresh_counter = $3
                       AND ended_at IS NULL AND generation = $5
                       AND generation = (SELECT token_generation FROM users WHERE id = $2)",
                    &[
                        &grant.session_id.as_str(),
                        &grant.user_id.as_str(),
                        &to_i64(grant.expected_counter),
                        &to_i64(grant.new_counter),
                        &to_i64(grant.generation),
                        &grant.now,
                    ],
                )
                .await?
                == 1)
        })
    }

    fn end_session(
        &self,
        id: &SessionId,
        owner: Option<&UserId>,
        reason: EndReason,
        now: i64,
        tokens_expire_by: i64,
    ) -> Result<bool> {
        let ended = self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            let ended = tx
                .query_opt(
                    "UPDATE sessions SET ended_at = $3, end_reason = $4
                     WHERE id = $1 AND ended_at IS NULL AND ($2::TEXT IS NULL OR user_id = $2)
                     RETURNING user_id, LEAST(expires_at, $5)",
                    &[
                        &id.as_str(),
                        &owner.map(UserId::as_str),
                        &now,
                        &reason.as_str(),
                        &tokens_expire_by,
                    ],
                )
                .await
                .map_err(error)?;
            let Some(row) = ended else {
                return Ok(false);
            };
            let user_id: String = col(&row, 0)?;
            let denied_until: i64 = col(&row, 1)?;
            tx.execute(
                "INSERT INTO revoked_tokens (jti, user_id, expires_at, kind, reason)
                 VALUES ($1, $2, $3, 'session', $4) ON CONFLICT DO NOTHING",
                &[
                    &id.as_str(),
                    &user_id,
                    &denied_until,
                    &Denial::of(reason, owner.is_some()).as_str(),
                ],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(true)
        })?;
        // Also when the session had ended already: a retried logout whose first answer was
        // lost still returns only once every replica refuses the session.
        self.await_replicas()?;
        Ok(ended)
    }

    fn live_sessions(&self, now: i64, idle_timeout: i64) -> Result<u64> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.ended_at IS NULL AND s.generation = u.token_generation
                       AND s.expires_at > $1 AND s.last_used_at > $1 - $2",
                    &[&now, &idle_timeout],
                )
                .await?;
            first_count(&rows)
        })
    }
}
