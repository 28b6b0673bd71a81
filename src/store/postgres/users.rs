//! Accounts on PostgreSQL: users, the softlock's counters (row-locked, so two replicas' guesses
//! cannot read the same count) and the admin CLI's account commands.

use super::{PgStore, col, error, to_u64};
use crate::domain::ids::UserId;
use crate::domain::lockout::LockoutPolicy;
use crate::domain::user::UserProfile;
use crate::domain::username::Username;
use crate::store::{Accounts, Credentials, NewAccount, Result, StoreError, UserSummary};
use tokio_postgres::error::SqlState;

impl Accounts for PgStore {
    fn create_user(&self, user: &NewAccount<'_>) -> Result<UserProfile> {
        self.run(async |client| {
            let statement = client
                .prepare_cached(
                    "INSERT INTO users (id, username, username_canonical, full_name,
                         mothers_favorite_search_engine, password_hash, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await
                .map_err(error)?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &user.id.as_str(),
                        &user.username.as_typed(),
                        &user.username.canonical(),
                        &user.full_name,
                        &user.mothers_favorite_search_engine,
                        &user.password_hash,
                        &user.created_at,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(user.profile()),
                // The unique index on the canonical name settles races, across replicas too.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(StoreError::UsernameTaken)
                }
                Err(e) => Err(error(e)),
            }
        })
    }

    fn find_credentials(&self, username: &Username) -> Result<Option<Credentials>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT id, password_hash, token_generation FROM users
                     WHERE username_canonical = $1",
                    &[&username.canonical()],
                )
                .await?;
            rows.first()
                .map(|row| {
                    Ok(Credentials {
                        user_id: UserId::from_string(col(row, 0)?),
                        password_hash: col(row, 1)?,
                        token_generation: to_u64(col(row, 2)?),
                    })
                })
                .transpose()
        })
    }

    fn reserve_attempt(
        &self,
        user: &UserId,
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<std::result::Result<(), u64>> {
        self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            // FOR UPDATE: two replicas' guesses cannot both read the same count.
            let Some(row) = tx
                .query_opt(
                    "SELECT failed_logins, last_failed_login_at FROM users WHERE id = $1
                     FOR UPDATE",
                    &[&user.as_str()],
                )
                .await
                .map_err(error)?
            else {
                return Ok(Ok(()));
            };
            let failures: i32 = col(&row, 0)?;
            let last: Option<i64> = col(&row, 1)?;
            let failures = u32::try_from(failures).unwrap_or(0);
            if let Some(retry_after) = policy.retry_after(failures, last, now) {
                return Ok(Err(retry_after));
            }
            tx.execute(
                "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login_at = $2
                 WHERE id = $1",
                &[&user.as_str(), &now],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(Ok(()))
        })
    }

    fn pad_unknown_attempt(&self, now: i64) -> Result<()> {
        let slot = i32::from(crate::store::padding_slot());
        self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            tx.query_opt(
                "SELECT touched_at FROM softlock_padding WHERE slot = $1 FOR UPDATE",
                &[&slot],
            )
            .await
            .map_err(error)?;
            tx.execute(
                "UPDATE softlock_padding SET touched_at = $2 WHERE slot = $1",
                &[&slot, &now],
            )
            .await
            .map_err(error)?;
            tx.commit().await.map_err(error)?;
            Ok(())
        })
    }

    fn delete_user(&self, user: &UserId) -> Result<bool> {
        let deleted = self.block(async {
            Ok(self
                .execute("DELETE FROM users WHERE id = $1", &[&user.as_str()])
                .await?
                == 1)
        })?;
        self.await_replicas()?;
        Ok(deleted)
    }

    fn revoke_all_of(&self, username: &Username) -> Result<Option<u64>> {
        let bumped = self.block(async {
            let rows = self
                .query(
                    "UPDATE users SET token_generation = token_generation + 1
                     WHERE username_canonical = $1 RETURNING token_generation",
                    &[&username.canonical()],
                )
                .await?;
            rows.first().map(|row| col(row, 0).map(to_u64)).transpose()
        })?;
        self.await_replicas()?;
        Ok(bumped)
    }

    fn unlock_user(&self, username: &Username) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL
                     WHERE username_canonical = $1",
                    &[&username.canonical()],
                )
                .await?
                == 1)
        })
    }

    fn failed_logins(&self, username: &Username) -> Result<Option<u32>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT failed_logins FROM users WHERE username_canonical = $1",
                    &[&username.canonical()],
                )
                .await?;
            rows.first()
                .map(|row| col::<i32>(row, 0).map(|n| u32::try_from(n).unwrap_or(0)))
                .transpose()
        })
    }

    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT username, created_at, token_generation, failed_logins
                     FROM users ORDER BY username_canonical",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(UserSummary {
                        username: col(row, 0)?,
                        created_at: col(row, 1)?,
                        token_generation: to_u64(col(row, 2)?),
                        failed_logins: u32::try_from(col::<i32>(row, 3)?).unwrap_or(0),
                    })
                })
                .collect()
        })
    }
}
