//! Second factors on PostgreSQL, as on SQLite (`store/sqlite/factors.rs`): a code is accepted
//! by one conditional UPDATE, which READ COMMITTED re-checks against a row another transaction
//! changed meanwhile — so of two replicas presenting one code, only one records its step.

use super::{PgStore, col, error};
use crate::domain::ids::UserId;
use crate::domain::session::Denial;
use crate::store::{Result, SecondFactors, TotpChange, TotpFactor};

impl SecondFactors for PgStore {
    fn totp_factor(&self, user: &UserId) -> Result<Option<TotpFactor>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT sealed_secret, active, last_step FROM totp_factors WHERE user_id = $1",
                    &[&user.as_str()],
                )
                .await?;
            rows.first()
                .map(|row| {
                    Ok(TotpFactor {
                        sealed_secret: col(row, 0)?,
                        active: col::<i32>(row, 1)? == 1,
                        last_step: col(row, 2)?,
                    })
                })
                .transpose()
        })
    }

    fn enrol_totp(&self, user: &UserId, sealed_secret: &str, now: i64) -> Result<bool> {
        let enrolled = self.block(async {
            Ok(self
                .execute(
                    "INSERT INTO totp_factors (user_id, sealed_secret, created_at)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (user_id) DO UPDATE SET sealed_secret = EXCLUDED.sealed_secret,
                         created_at = EXCLUDED.created_at, last_step = NULL
                     WHERE totp_factors.active = 0",
                    &[&user.as_str(), &sealed_secret, &now],
                )
                .await?
                == 1)
        })?;
        // The factor's state is part of the profile every replica holds (`/me` shows it).
        self.await_replicas()?;
        Ok(enrolled)
    }

    fn confirm_totp(&self, confirm: &TotpChange<'_>) -> Result<bool> {
        let confirmed = self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            let activated = tx
                .execute(
                    "UPDATE totp_factors SET active = 1, last_step = $2
                     WHERE user_id = $1 AND active = 0 AND (last_step IS NULL OR last_step < $2)",
                    &[&confirm.user.as_str(), &confirm.step],
                )
                .await
                .map_err(error)?
                == 1;
            if !activated {
                return Ok(false);
            }
            store_recovery_codes(&tx, confirm.user, confirm.recovery_digests).await?;
            end_other_sessions(&tx, confirm).await?;
            tx.commit().await.map_err(error)?;
            Ok(true)
        })?;
        // Other sessions ended: answered only once every replica refuses them.
        self.await_replicas()?;
        Ok(confirmed)
    }

    fn use_totp_step(&self, user: &UserId, step: i64) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE totp_factors SET last_step = $2
                     WHERE user_id = $1 AND active = 1 AND (last_step IS NULL OR last_step < $2)",
                    &[&user.as_str(), &step],
                )
                .await?
                == 1)
        })
    }

    fn use_recovery_code(&self, user: &UserId, digest: &str, now: i64) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE recovery_codes SET used_at = $3
                     WHERE user_id = $1 AND digest = $2 AND used_at IS NULL",
                    &[&user.as_str(), &digest, &now],
                )
                .await?
                == 1)
        })
    }

    fn replace_recovery_codes(&self, user: &UserId, digests: &[String]) -> Result<bool> {
        self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            let active = tx
                .query_opt(
                    "SELECT 1 FROM totp_factors WHERE user_id = $1 AND active = 1 FOR UPDATE",
                    &[&user.as_str()],
                )
                .await
                .map_err(error)?
                .is_some();
            if !active {
                return Ok(false);
            }
            store_recovery_codes(&tx, user, digests).await?;
            tx.commit().await.map_err(error)?;
            Ok(true)
        })
    }

    fn remove_totp(&self, change: &TotpChange<'_>) -> Result<bool> {
        let removed = self.run(async |client| {
            let tx = client.transaction().await.map_err(error)?;
            let removed = tx
                .execute(
                    "DELETE FROM totp_factors WHERE user_id = $1",
                    &[&change.user.as_str()],
                )
                .await
                .map_err(error)?
                == 1;
            tx.execute(
                "DELETE FROM recovery_codes WHERE user_id = $1",
                &[&change.user.as_str()],
            )
            .await
            .map_err(error)?;
            if removed {
                end_other_sessions(&tx, change).await?;
            }
            tx.commit().await.map_err(error)?;
            Ok(removed)
        })?;
        self.await_replicas()?;
        Ok(removed)
    }

    fn sealed_secrets(&self) -> Result<Vec<(UserId, String)>> {
        self.block(async {
            let rows = self
                .query(
                    "SELECT user_id, sealed_secret FROM totp_factors ORDER BY user_id",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| Ok((UserId::from_string(col(row, 0)?), col(row, 1)?)))
                .collect()
        })
    }

    fn reseal_secret(&self, user: &UserId, old: &str, new: &str) -> Result<bool> {
        self.block(async {
            Ok(self
                .execute(
                    "UPDATE totp_factors SET sealed_secret = $3
                     WHERE user_id = $1 AND sealed_secret = $2",
                    &[&user.as_str(), &old, &new],
                )
                .await?
                == 1)
        })
    }
}

async fn store_recovery_codes(
    tx: &tokio_postgres::Transaction<'_>,
    user: &UserId,
    digests: &[String],
) -> Result<()> {
    tx.execute(
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[&user.as_str()],
    )
    .await
    .map_err(error)?;
    tx.execute(
        "INSERT INTO recovery_codes (user_id, digest) SELECT $1, d FROM unnest($2::TEXT[]) d
         ON CONFLICT DO NOTHING",
        &[&user.as_str(), &digests],
    )
    .await
    .map_err(error)?;
    Ok(())
}

/// Ends every live session of the user but `keep`, denylisting each id (see the SQLite twin).
async fn end_other_sessions(
    tx: &tokio_postgres::Transaction<'_>,
    change: &TotpChange<'_>,
) -> Result<()> {
    let denial = if change.keep.is_some() {
        Denial::EndedByUser
    } else {
        Denial::RevokedByOperator
    };
    let keep = change.keep.map(|id| id.as_str());
    tx.execute(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at, kind, reason)
         SELECT id, user_id, LEAST(expires_at, $3), 'session', $4 FROM sessions
         WHERE user_id = $1 AND ended_at IS NULL AND id IS DISTINCT FROM $2
         ON CONFLICT DO NOTHING",
        &[
            &change.user.as_str(),
            &keep,
            &change.tokens_expire_by,
            &denial.as_str(),
        ],
    )
    .await
    .map_err(error)?;
    tx.execute(
        "UPDATE sessions SET ended_at = $3, end_reason = 'revoked'
         WHERE user_id = $1 AND ended_at IS NULL AND id IS DISTINCT FROM $2",
        &[&change.user.as_str(), &keep, &change.now],
    )
    .await
    .map_err(error)?;
    Ok(())
}
