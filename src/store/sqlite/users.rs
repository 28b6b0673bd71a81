//! The users table: accounts, credentials and the failed-login counter.

use super::{Result, SqliteStore, StoreError, to_u64};
use crate::domain::ids::UserId;
use crate::domain::lockout::LockoutPolicy;
use crate::domain::user::UserProfile;
use crate::domain::username::Username;
use crate::store::{Accounts, Credentials, NewAccount, UserSummary};
use rusqlite::{ErrorCode, OptionalExtension as _, TransactionBehavior, params};

/// A user's profile, read `FROM users`: the factor's state comes along (`rows::profile`).
pub(super) const PROFILE_COLUMNS: &str =
    "id, username, username_canonical, full_name, mothers_favorite_search_engine, created_at,
     (SELECT CASE active WHEN 1 THEN 'active' ELSE 'pending' END FROM totp_factors
      WHERE totp_factors.user_id = users.id)";
/// Columns a query selects after [`PROFILE_COLUMNS`] start at this index.
pub(super) const PROFILE_COLUMN_COUNT: usize = 7;

impl Accounts for SqliteStore {
    /// Inserts a user. The unique index on the canonical name settles races: of any number of
    /// concurrent registrations of one name, exactly one commits.
    fn create_user(&self, user: &NewAccount<'_>) -> Result<UserProfile> {
        self.with_write(|conn| {
            let inserted = conn.execute(
                "INSERT INTO users (id, username, username_canonical, full_name,
                     mothers_favorite_search_engine, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.id.as_str(),
                    user.username.as_typed(),
                    user.username.canonical(),
                    user.full_name,
                    user.mothers_favorite_search_engine,
                    user.password_hash,
                    user.created_at
                ],
            );
            match inserted {
                Ok(_) => Ok(user.profile()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::UsernameTaken)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn find_credentials(&self, username: &Username) -> Result<Option<Credentials>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT id, password_hash, token_generation
                     FROM users WHERE username_canonical = ?1",
                    [username.canonical()],
                    |row| {
                        Ok(Credentials {
                            user_id: UserId::from_string(row.get(0)?),
                            password_hash: row.get(1)?,
                            token_generation: to_u64(row.get(2)?),
                        })
                    },
                )
                .optional()?)
        })
    }

    fn reserve_attempt(
        &self,
        user_id: &UserId,
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<std::result::Result<(), u64>> {
        self.with_write(|conn| {
            // IMMEDIATE: the read and the increment happen under the write lock, so two
            // guesses cannot both read the same count.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some((failures, last)) = tx
                .query_row(
                    "SELECT failed_logins, last_failed_login_at FROM users WHERE id = ?1",
                    [user_id.as_str()],
                    |row| Ok((row.get::<_, u32>(0)?, row.get::<_, Option<i64>>(1)?)),
                )
                .optional()?
            else {
                return Ok(Ok(())); // deleted meanwhile: the guess fails at the hash check
            };
            if let Some(retry_after) = policy.retry_after(failures, last, now) {
                return Ok(Err(retry_after));
            }
            tx.execute(
                "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login_at = ?2
                 WHERE id = ?1",
                params![user_id.as_str(), now],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// What [`Self::reserve_guess`] costs, for a name with no account: the same write
    /// transaction — lock, read, update, commit with its fsync — on a padding row.
    fn pad_unknown_attempt(&self, now: i64) -> Result<()> {
        let slot = crate::store::padding_slot();
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.query_row(
                "SELECT touched_at FROM softlock_padding WHERE slot = ?1",
                [slot],
                |row| row.get::<_, i64>(0),
            )
            .optional()?;
            tx.execute(
                "UPDATE softlock_padding SET touched_at = ?2 WHERE slot = ?1",
                params![slot, now],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn failed_logins(&self, username: &Username) -> Result<Option<u32>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT failed_logins FROM users WHERE username_canonical = ?1",
                    [username.canonical()],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }

    fn unlock_user(&self, username: &Username) -> Result<bool> {
        self.with_conn(|conn| {
            Ok(conn.execute(
                "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL
                 WHERE username_canonical = ?1",
                [username.canonical()],
            )? == 1)
        })
    }

    /// The sessions, ledger and denylist rows go with the user (ON DELETE CASCADE).
    fn delete_user(&self, user_id: &UserId) -> Result<bool> {
        self.with_write(|conn| {
            Ok(conn.execute("DELETE FROM users WHERE id = ?1", [user_id.as_str()])? == 1)
        })
    }

    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT username, created_at, token_generation, failed_logins
                 FROM users ORDER BY username_canonical",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(UserSummary {
                    username: row.get(0)?,
                    created_at: row.get(1)?,
                    token_generation: to_u64(row.get(2)?),
                    failed_logins: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn revoke_all_of(&self, username: &Username) -> Result<Option<u64>> {
        self.bump_generation_where("username_canonical", username.canonical())
    }
}
