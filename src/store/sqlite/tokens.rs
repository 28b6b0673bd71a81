//! Token state: the denylist and the per-user token generation.
//!
//! Revocation has two levers. Ending a session puts its id (`sid`) on the denylist until every
//! token it issued has expired (after which the MAC check refuses them anyway, so the row can
//! go); the denylist takes token ids (`jti`) the same way. Logging out everywhere bumps the
//! user's generation: every token carries the generation it was minted at, and any token below
//! the current one is dead — one UPDATE, however many tokens exist.

use super::users::{PROFILE_COLUMN_COUNT, PROFILE_COLUMNS};
use super::{Result, SqliteStore, to_u64};
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Denial;
use crate::store::Revocation;
use crate::store::TokenState;
use crate::store::revocation_view::Lookup;
use crate::store::rows::{self, Columns as _};
use rusqlite::{OptionalExtension as _, params};
use std::sync::Arc;

/// Least seconds of change-log history kept. The view stays exact whatever the log holds (it
/// rebuilds when it finds a gap); keeping at least a token lifetime of history means a view
/// that was idle that long still catches up by applying the log rather than rebuilding.
const MIN_CHANGE_LOG_RETENTION: i64 = 3600;

impl Revocation for SqliteStore {
    /// The token's user, its current generation and whether this `jti` is denylisted: from the
    /// revocation view when it has the user (catching it up first if anything was committed),
    /// otherwise with one indexed read that then fills the view. `None` when the user no longer
    /// exists. Blocking: runs SQL whenever the view is stale.
    fn token_state(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        let Some(view) = &self.view else {
            return self.load_token_state(user_id, jti, sid);
        };
        let mut lookup = view.lookup(user_id, jti, sid)?;
        if let Lookup::Stale = lookup {
            self.with_conn(|conn| view.catch_up(conn))?;
            lookup = view.lookup(user_id, jti, sid)?;
        }
        match lookup {
            Lookup::Hit(state) => Ok(Some(state)),
            Lookup::Miss { version } => {
                let state = self.load_token_state(user_id, jti, sid)?;
                if let Some(state) = &state {
                    view.remember(version, &state.profile, state.current_generation);
                }
                Ok(state)
            }
            // Commits keep landing: the tables themselves are exact.
            Lookup::Stale => self.load_token_state(user_id, jti, sid),
        }
    }

    /// The same from memory only, with no SQL and no blocking: `Ok(None)` when the view is
    /// stale or lacks the user, and the caller must use [`Store::token_state`] off the async
    /// reactor. An error when the view cannot prove it is current.
    fn cached_token_state(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        let Some(view) = &self.view else {
            return Ok(None);
        };
        Ok(match view.lookup_remembering(user_id, jti, sid)? {
            Lookup::Hit(state) => Some(state),
            Lookup::Miss { .. } | Lookup::Stale => None,
        })
    }

    /// Drops denylist rows whose tokens have expired (such tokens fail the codec's
    /// `exp` check, so the rows protect nothing) and sessions that can serve nothing any more.
    /// `now` should include the codec's leeway;
    /// `longest_token_lifetime` sets how much change-log history is kept. Returns how many
    /// session and denylist rows went.
    fn prune_expired(
        &self,
        now: i64,
        longest_token_lifetime: i64,
        session_idle: i64,
    ) -> Result<usize> {
        let pruned = self.with_conn(|conn| {
            let sessions = Self::prune_sessions(conn, now, longest_token_lifetime, session_idle)?;
            let revoked =
                conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", [now])?;
            let retention = longest_token_lifetime.max(MIN_CHANGE_LOG_RETENTION);
            conn.execute(
                "DELETE FROM token_changes WHERE changed_at < ?1",
                [now.saturating_sub(retention)],
            )?;
            Ok(sessions + revoked)
        })?;
        if let Some(view) = &self.view {
            view.prune(now);
        }
        Ok(pruned)
    }

    fn denylist_len(&self) -> Result<u64> {
        self.with_conn(|conn| {
            Ok(to_u64(conn.query_row(
                "SELECT count(*) FROM revoked_tokens",
                [],
                |row| row.get(0),
            )?))
        })
    }

    fn bump_generation(&self, user: &UserId) -> Result<Option<u64>> {
        self.bump_generation_where("id", user.as_str())
    }
}

impl SqliteStore {
    pub(super) fn load_token_state(
        &self,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Result<Option<TokenState>> {
        self.with_conn(|conn| {
            let sql = format!(
                "SELECT {PROFILE_COLUMNS}, token_generation,
                        (SELECT coalesce(reason, '') FROM revoked_tokens WHERE jti IN (?2, ?3)
                         LIMIT 1)
                 FROM users WHERE id = ?1"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let state = stmt
                .query_row(
                    params![user_id.as_str(), jti.as_str(), sid.as_str()],
                    |row| {
                        Ok((|| {
                            Ok(TokenState {
                                profile: Arc::new(rows::profile(row, 0)?),
                                current_generation: to_u64(row.int(PROFILE_COLUMN_COUNT)?),
                                revoked: row
                                    .opt_text(PROFILE_COLUMN_COUNT + 1)?
                                    .map(|reason| Denial::from_stored(Some(&reason))),
                            })
                        })())
                    },
                )
                .optional()?;
            state.transpose()
        })
    }

    /// Denylists one token id directly (tests of the view; the service ends sessions instead).
    #[cfg(test)]
    pub(super) fn denylist(&self, jti: &TokenId, user_id: &UserId, expires_at: i64) -> Result<()> {
        self.with_write(|conn| {
            conn.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, user_id, expires_at) VALUES (?1, ?2, ?3)",
                params![jti.as_str(), user_id.as_str(), expires_at],
            )?;
            Ok(())
        })
    }

    /// `column` is one of the two fixed names above, never input.
    pub(super) fn bump_generation_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<u64>> {
        self.with_write(|conn| {
            let sql = format!(
                "UPDATE users SET token_generation = token_generation + 1
                 WHERE {column} = ?1 RETURNING token_generation"
            );
            Ok(conn
                .query_row(&sql, [value], |row| row.get::<_, i64>(0))
                .optional()?
                .map(to_u64))
        })
    }
}
