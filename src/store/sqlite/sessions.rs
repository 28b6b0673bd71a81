//! Sessions: started by a login, rotated by refreshes, ended by a logout, a reuse detection, an
//! operator — or all at once by a generation bump. Ending a session puts its id on the denylist
//! (`revoked_tokens`, kind `session`) in the same transaction, so the existing change log
//! carries the end to every revocation view and a token check stays one lookup per id: a token
//! is refused if its `jti` or its `sid` is listed. A refresh is one UPDATE of one row.
//!
//! Every write here is conditional on the state the caller judged (counter, generation, not
//! ended), in one IMMEDIATE transaction, so of two racing requests exactly one wins and the
//! other sees `false` and judges again: a refresh and a logout cannot both succeed in a way that
//! leaves a live token in an ended session.

use super::group_commit::{GRANT_SQL, execute_grant};
use super::{Result, SqliteStore, StoreError, to_i64, to_u64};
use crate::domain::ids::{SessionId, UserId};
use crate::domain::session::{Denial, EndReason, SessionRecord};
use crate::store::Sessions;
use crate::store::rows;
use crate::store::{Credentials, NewSession, PasswordChange, PasswordChangeOutcome, SessionGrant};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

impl Sessions for SqliteStore {
    /// A successful login: start the session, clear the failure counter and optionally store a
    /// rehashed password — one transaction, and only if the password hash and generation are
    /// still the ones the login verified. Otherwise the password changed or every session was
    /// revoked while the login was being checked, and [`StoreError::CredentialsChanged`] says
    /// so: nothing must go out.
    fn record_login(
        &self,
        verified: &Credentials,
        rehashed_password: Option<&str>,
        session: &NewSession<'_>,
    ) -> Result<()> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let still_current = tx.execute(
                "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL,
                     password_hash = coalesce(?4, password_hash)
                 WHERE id = ?1 AND password_hash = ?2 AND token_generation = ?3",
                params![
                    verified.user_id.as_str(),
                    verified.password_hash,
                    to_i64(verified.token_generation),
                    rehashed_password
                ],
            )? == 1;
            if !still_current {
                return Err(StoreError::CredentialsChanged);
            }
            tx.execute(
                "INSERT INTO sessions (id, user_id, generation, user_agent, client_address,
                     created_at, last_used_at, expires_at, factors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
                params![
                    session.id.as_str(),
                    verified.user_id.as_str(),
                    to_i64(verified.token_generation),
                    session.origin.user_agent,
                    rows::address_text(session.origin.client_address),
                    session.created_at,
                    session.expires_at,
                    session.factors.as_stored(),
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(select_sessions!("WHERE s.id = ?1"))?;
            stmt.query_row([id.as_str()], |row| Ok(rows::session(row)))
                .optional()?
                .transpose()
        })
    }

    /// Every session of the user still on file, newest first.
    fn sessions_of(&self, user: &UserId) -> Result<Vec<SessionRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(select_sessions!(
                "WHERE s.user_id = ?1 ORDER BY s.created_at DESC, s.id"
            ))?;
            let found = stmt.query_map([user.as_str()], |row| Ok(rows::session(row)))?;
            found.map(|row| row?).collect()
        })
    }

    /// Moves a session's refresh counter — only if the session is still on `expected_counter`,
    /// not ended, and at `generation`, which must also be its user's. False when any of that
    /// changed: the caller judges again. The server's refreshes share commits
    /// ([`super::group_commit`]); an operator's store, or a batch that failed, writes alone.
    fn grant_in_session(&self, grant: &SessionGrant<'_>) -> Result<bool> {
        if let Some(moved) = self.group.as_ref().and_then(|group| group.submit(grant)) {
            self.verify_files()?;
            self.catch_up_after_commit();
            return Ok(moved);
        }
        self.with_write(|conn| Ok(execute_grant(&mut conn.prepare_cached(GRANT_SQL)?, grant)?))
    }

    /// Ends a session not yet ended (of `owner`, if given) and denylists its id until
    /// `tokens_expire_by` (or the session's own end, if sooner): every access token it issued
    /// expires by then. False if there was none to end.
    fn end_session(
        &self,
        id: &SessionId,
        owner: Option<&UserId>,
        reason: EndReason,
        now: i64,
        tokens_expire_by: i64,
    ) -> Result<bool> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ended = tx
                .query_row(
                    "UPDATE sessions SET ended_at = ?3, end_reason = ?4
                     WHERE id = ?1 AND ended_at IS NULL AND (?2 IS NULL OR user_id = ?2)
                     RETURNING user_id, min(expires_at, ?5)",
                    params![
                        id.as_str(),
                        owner.map(UserId::as_str),
                        now,
                        reason.as_str(),
                        tokens_expire_by
                    ],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()?;
            let Some((user_id, denied_until)) = ended else {
                return Ok(false);
            };
            tx.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, user_id, expires_at, kind, reason)
                 VALUES (?1, ?2, ?3, 'session', ?4)",
                params![
                    id.as_str(),
                    user_id,
                    denied_until,
                    Denial::of(reason, owner.is_some()).as_str()
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Replaces the password and bumps the generation — ending every session — then moves the
    /// caller's session to the new generation with a fresh refresh token (the superseded one
    /// gets no grace). One transaction, only if hash and generation are still the verified ones
    /// and the session is not ended.
    fn change_password(&self, change: &PasswordChange<'_>) -> Result<PasswordChangeOutcome> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE users SET password_hash = ?3, token_generation = token_generation + 1,
                     failed_logins = 0, last_failed_login_at = NULL
                 WHERE id = ?1 AND password_hash = ?2 AND token_generation + 1 = ?4",
                params![
                    change.user_id.as_str(),
                    change.verified_hash,
                    change.new_hash,
                    to_i64(change.new_generation),
                ],
            )? == 1;
            if !changed {
                let hash_same: Option<bool> = tx
                    .query_row(
                        "SELECT password_hash = ?2 FROM users WHERE id = ?1",
                        params![change.user_id.as_str(), change.verified_hash],
                        |row| row.get(0),
                    )
                    .optional()?;
                return Ok(PasswordChangeOutcome::user_unchanged(hash_same));
            }
            let kept = tx
                .query_row(
                    "UPDATE sessions SET generation = ?3, refresh_counter = refresh_counter + 1,
                         rotated_at = NULL, last_used_at = ?4
                     WHERE id = ?1 AND user_id = ?2 AND ended_at IS NULL
                     RETURNING refresh_counter, expires_at",
                    params![
                        change.session_id.as_str(),
                        change.user_id.as_str(),
                        to_i64(change.new_generation),
                        change.now,
                    ],
                    |row| Ok((to_u64(row.get(0)?), row.get::<_, i64>(1)?)),
                )
                .optional()?;
            let outcome = PasswordChangeOutcome::after_session_update(kept);
            if outcome.commits() {
                tx.commit()?;
            }
            Ok(outcome)
        })
    }

    /// Sessions live at `now` under an idle timeout of `idle_timeout` seconds.
    fn live_sessions(&self, now: i64, idle_timeout: i64) -> Result<u64> {
        self.with_conn(|conn| {
            Ok(to_u64(conn.query_row(
                "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.ended_at IS NULL AND s.generation = u.token_generation
                   AND s.expires_at > ?1 AND s.last_used_at > ?1 - ?2",
                params![now, idle_timeout],
                |row| row.get(0),
            )?))
        })
    }
}

impl SqliteStore {
    /// Drops sessions that can serve nothing any more: ended, revoked by a generation bump, or
    /// idle, for longer than any access token they issued can live; or past their absolute
    /// end (access tokens never outlive it). Returns how many went.
    pub(super) fn prune_sessions(
        conn: &Connection,
        cutoff: i64,
        longest_token_lifetime: i64,
        idle_timeout: i64,
    ) -> Result<usize> {
        let settled = cutoff.saturating_sub(longest_token_lifetime);
        Ok(conn.execute(
            "DELETE FROM sessions WHERE expires_at < ?1
                OR ended_at < ?2
                OR last_used_at < ?2 - ?3
                OR (last_used_at < ?2 AND generation !=
                    (SELECT token_generation FROM users u WHERE u.id = sessions.user_id))",
            params![cutoff, settled, idle_timeout],
        )?)
    }
}
