//! Second factors on SQLite: the TOTP factor, its last used step and recovery codes. A code is
//! accepted by one conditional UPDATE (`last_step < step`, `used_at IS NULL`): SQLite runs one
//! writer at a time, so of two requests presenting one code only one changes the row.

use super::{Result, SqliteStore};
use crate::domain::ids::UserId;
use crate::domain::session::Denial;
use crate::store::{SecondFactors, TotpChange, TotpFactor};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

impl SecondFactors for SqliteStore {
    fn totp_factor(&self, user: &UserId) -> Result<Option<TotpFactor>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT sealed_secret, active, last_step FROM totp_factors WHERE user_id = ?1",
                    [user.as_str()],
                    |row| {
                        Ok(TotpFactor {
                            sealed_secret: row.get(0)?,
                            active: row.get::<_, i64>(1)? == 1,
                            last_step: row.get(2)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn enrol_totp(&self, user: &UserId, sealed_secret: &str, now: i64) -> Result<bool> {
        self.with_write(|conn| {
            Ok(conn.execute(
                "INSERT INTO totp_factors (user_id, sealed_secret, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                     created_at = excluded.created_at, last_step = NULL
                 WHERE totp_factors.active = 0",
                params![user.as_str(), sealed_secret, now],
            )? == 1)
        })
    }

    fn confirm_totp(&self, confirm: &TotpChange<'_>) -> Result<bool> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let activated = tx.execute(
                "UPDATE totp_factors SET active = 1, last_step = ?2
                 WHERE user_id = ?1 AND active = 0 AND (last_step IS NULL OR last_step < ?2)",
                params![confirm.user.as_str(), confirm.step],
            )? == 1;
            if !activated {
                return Ok(false);
            }
            store_recovery_codes(&tx, confirm.user, confirm.recovery_digests)?;
            end_other_sessions(&tx, confirm)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn use_totp_step(&self, user: &UserId, step: i64) -> Result<bool> {
        self.with_write(|conn| {
            Ok(conn.execute(
                "UPDATE totp_factors SET last_step = ?2
                 WHERE user_id = ?1 AND active = 1 AND (last_step IS NULL OR last_step < ?2)",
                params![user.as_str(), step],
            )? == 1)
        })
    }

    fn use_recovery_code(&self, user: &UserId, digest: &str, now: i64) -> Result<bool> {
        self.with_write(|conn| {
            Ok(conn.execute(
                "UPDATE recovery_codes SET used_at = ?3
                 WHERE user_id = ?1 AND digest = ?2 AND used_at IS NULL",
                params![user.as_str(), digest, now],
            )? == 1)
        })
    }

    fn replace_recovery_codes(&self, user: &UserId, digests: &[String]) -> Result<bool> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let active: bool = tx
                .query_row(
                    "SELECT active = 1 FROM totp_factors WHERE user_id = ?1",
                    [user.as_str()],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(false);
            if !active {
                return Ok(false);
            }
            store_recovery_codes(&tx, user, digests)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn remove_totp(&self, change: &TotpChange<'_>) -> Result<bool> {
        self.with_write(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let removed = tx.execute(
                "DELETE FROM totp_factors WHERE user_id = ?1",
                [change.user.as_str()],
            )? == 1;
            tx.execute(
                "DELETE FROM recovery_codes WHERE user_id = ?1",
                [change.user.as_str()],
            )?;
            if removed {
                end_other_sessions(&tx, change)?;
            }
            tx.commit()?;
            Ok(removed)
        })
    }

    fn sealed_secrets(&self) -> Result<Vec<(UserId, String)>> {
        self.with_conn(|conn| {
            let mut statement =
                conn.prepare("SELECT user_id, sealed_secret FROM totp_factors ORDER BY user_id")?;
            let rows = statement.query_map([], |row| {
                Ok((UserId::from_string(row.get(0)?), row.get(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn reseal_secret(&self, user: &UserId, old: &str, new: &str) -> Result<bool> {
        self.with_write(|conn| {
            Ok(conn.execute(
                "UPDATE totp_factors SET sealed_secret = ?3
                 WHERE user_id = ?1 AND sealed_secret = ?2",
                params![user.as_str(), old, new],
            )? == 1)
        })
    }
}

fn store_recovery_codes(conn: &Connection, user: &UserId, digests: &[String]) -> Result<()> {
    conn.execute(
        "DELETE FROM recovery_codes WHERE user_id = ?1",
        [user.as_str()],
    )?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO recovery_codes (user_id, digest) VALUES (?1, ?2)")?;
    for digest in digests {
        insert.execute(params![user.as_str(), digest])?;
    }
    Ok(())
}

/// Ends every live session of the user but `keep`, denylisting each id — the user's own doing
/// when they keep their session, an operator's when none is kept.
fn end_other_sessions(conn: &Connection, change: &TotpChange<'_>) -> Result<()> {
    let denial = if change.keep.is_some() {
        Denial::EndedByUser
    } else {
        Denial::RevokedByOperator
    };
    let keep = change.keep.map(|id| id.as_str());
    conn.execute(
        "INSERT OR IGNORE INTO revoked_tokens (jti, user_id, expires_at, kind, reason)
         SELECT id, user_id, min(expires_at, ?3), 'session', ?4 FROM sessions
         WHERE user_id = ?1 AND ended_at IS NULL AND id IS NOT ?2",
        params![
            change.user.as_str(),
            keep,
            change.tokens_expire_by,
            denial.as_str()
        ],
    )?;
    conn.execute(
        "UPDATE sessions SET ended_at = ?3, end_reason = 'revoked'
         WHERE user_id = ?1 AND ended_at IS NULL AND id IS NOT ?2",
        params![change.user.as_str(), keep, change.now],
    )?;
    Ok(())
}
