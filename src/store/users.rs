//! The users table: accounts, credentials and the failed-login counter.

use super::{Result, Store, StoreError, to_u64};
use crate::lockout::LockoutPolicy;
use rusqlite::{ErrorCode, OptionalExtension as _, Row, TransactionBehavior, params};

/// A user to insert; every field already validated by the caller.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub username_canonical: &'a str,
    pub full_name: &'a str,
    pub mothers_favorite_search_engine: &'a str,
    pub password_hash: &'a str,
    pub created_at: i64,
}

/// What a user may read about themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub id: String,
    pub username: String,
    pub full_name: String,
    pub mothers_favorite_search_engine: String,
    pub created_at: i64,
}

/// What login needs: the hash and the generation, read together. A token is issued only if
/// both are still the stored ones when it is recorded (see [`Store::record_login`]).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: String,
    pub password_hash: String,
    pub token_generation: u64,
}

/// One line of `tessera user list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub username: String,
    pub created_at: i64,
    pub token_generation: u64,
    pub failed_logins: u32,
}

pub(super) const PROFILE_COLUMNS: &str =
    "id, username, full_name, mothers_favorite_search_engine, created_at";

pub(super) fn profile_from_row(row: &Row<'_>) -> rusqlite::Result<UserProfile> {
    Ok(UserProfile {
        id: row.get(0)?,
        username: row.get(1)?,
        full_name: row.get(2)?,
        mothers_favorite_search_engine: row.get(3)?,
        created_at: row.get(4)?,
    })
}

impl Store {
    /// Inserts a user. The unique index on the canonical name settles races: of any number of
    /// concurrent registrations of one name, exactly one commits.
    pub fn create_user(&self, user: &NewUser<'_>) -> Result<UserProfile> {
        self.with_write(|conn| {
            let inserted = conn.execute(
                "INSERT INTO users (id, username, username_canonical, full_name,
                     mothers_favorite_search_engine, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.id,
                    user.username,
                    user.username_canonical,
                    user.full_name,
                    user.mothers_favorite_search_engine,
                    user.password_hash,
                    user.created_at
                ],
            );
            match inserted {
                Ok(_) => Ok(UserProfile {
                    id: user.id.into(),
                    username: user.username.into(),
                    full_name: user.full_name.into(),
                    mothers_favorite_search_engine: user.mothers_favorite_search_engine.into(),
                    created_at: user.created_at,
                }),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::UsernameTaken)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    pub fn find_credentials(&self, username_canonical: &str) -> Result<Option<Credentials>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT id, password_hash, token_generation
                     FROM users WHERE username_canonical = ?1",
                    [username_canonical],
                    |row| {
                        Ok(Credentials {
                            user_id: row.get(0)?,
                            password_hash: row.get(1)?,
                            token_generation: to_u64(row.get(2)?),
                        })
                    },
                )
                .optional()?)
        })
    }

    pub fn find_profile_by_canonical(
        &self,
        username_canonical: &str,
    ) -> Result<Option<UserProfile>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {PROFILE_COLUMNS} FROM users WHERE username_canonical = ?1"),
                    [username_canonical],
                    profile_from_row,
                )
                .optional()?)
        })
    }

    /// Reserves one password guess against the softlock, atomically, *before* any hashing: the
    /// attempt is counted as a failure now and forgiven by a successful login. Of any number of
    /// concurrent guesses, only as many as the policy allows get through; the rest get the
    /// seconds to wait. `Ok(Err(_))` for a refused guess, `Ok(Ok(()))` for a reserved one.
    pub fn reserve_attempt(
        &self,
        user_id: &str,
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
                    [user_id],
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
                params![user_id, now],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// The failed-login counter: guesses reserved and not yet forgiven by a successful login.
    pub fn failed_logins(&self, username_canonical: &str) -> Result<Option<u32>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT failed_logins FROM users WHERE username_canonical = ?1",
                    [username_canonical],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }

    /// Clears the failed-login counter (`tessera user unlock`). False if no such user.
    pub fn unlock_user(&self, username_canonical: &str) -> Result<bool> {
        self.with_conn(|conn| {
            Ok(conn.execute(
                "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL
                 WHERE username_canonical = ?1",
                [username_canonical],
            )? == 1)
        })
    }

    /// Replaces the password hash and bumps the generation, so every earlier token dies —
    /// only if the stored hash is still `verified_hash`, the one the caller checked the
    /// current password against. Returns the new generation, or `None` if the password
    /// changed meanwhile (or the user is gone).
    pub fn change_password(
        &self,
        user_id: &str,
        verified_hash: &str,
        new_hash: &str,
    ) -> Result<Option<u64>> {
        self.with_write(|conn| {
            Ok(conn
                .query_row(
                    "UPDATE users SET password_hash = ?3, token_generation = token_generation + 1
                     WHERE id = ?1 AND password_hash = ?2 RETURNING token_generation",
                    params![user_id, verified_hash, new_hash],
                    |row| row.get::<_, i64>(0),
                )
                .optional()?
                .map(to_u64))
        })
    }

    /// Deletes a user; the ledger and denylist rows go with it (ON DELETE CASCADE).
    /// True if a user was deleted.
    pub fn delete_user(&self, user_id: &str) -> Result<bool> {
        self.with_write(|conn| Ok(conn.execute("DELETE FROM users WHERE id = ?1", [user_id])? == 1))
    }

    pub fn list_users(&self) -> Result<Vec<UserSummary>> {
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
}
