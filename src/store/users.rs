//! The users table: accounts, credentials and the failed-login counter.

use super::{Result, Store, StoreError, to_u64};
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

/// What login needs: the hash and the softlock state.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: String,
    pub password_hash: String,
    pub failed_logins: u32,
    pub last_failed_login_at: Option<i64>,
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
        self.with_conn(|conn| {
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
                    "SELECT id, password_hash, failed_logins, last_failed_login_at
                     FROM users WHERE username_canonical = ?1",
                    [username_canonical],
                    |row| {
                        Ok(Credentials {
                            user_id: row.get(0)?,
                            password_hash: row.get(1)?,
                            failed_logins: row.get(2)?,
                            last_failed_login_at: row.get(3)?,
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

    /// Counts a failed login. Returns the new consecutive-failure count.
    pub fn record_failed_login(&self, user_id: &str, now: i64) -> Result<u32> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login_at = ?2
                     WHERE id = ?1 RETURNING failed_logins",
                    params![user_id, now],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(0))
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

    /// Replaces the password hash and bumps the generation, so every earlier token dies.
    /// Returns the new generation.
    pub fn change_password(&self, user_id: &str, password_hash: &str) -> Result<u64> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let generation: i64 = tx.query_row(
                "UPDATE users SET password_hash = ?2, token_generation = token_generation + 1,
                     failed_logins = 0, last_failed_login_at = NULL
                 WHERE id = ?1 RETURNING token_generation",
                params![user_id, password_hash],
                |row| row.get(0),
            )?;
            tx.commit()?;
            Ok(to_u64(generation))
        })
    }

    /// Deletes a user; the ledger and denylist rows go with it (ON DELETE CASCADE).
    /// True if a user was deleted.
    pub fn delete_user(&self, user_id: &str) -> Result<bool> {
        self.with_conn(|conn| Ok(conn.execute("DELETE FROM users WHERE id = ?1", [user_id])? == 1))
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
