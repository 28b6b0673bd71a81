//! Rows into records, once for both backends: each driver's row answers [`Columns`], and the
//! mappers here read the column order the shared queries select (`select_sessions!`, the
//! profile columns), so a schema or record change is made in one place.

use super::{Result, StoreError};
use crate::domain::ids::{SessionId, UserId};
use crate::domain::profile_text::ProfileText;
use crate::domain::session::{EndReason, Factors, SessionRecord};
use crate::domain::totp::TotpStatus;
use crate::domain::user::UserProfile;
use crate::domain::username::Username;

/// Typed columns by index, as both drivers give them. A missing column or one of another type
/// is [`StoreError::Corrupt`]: what the database holds is outside input, and a surprise there
/// fails the one call, never panics a thread or a task.
pub(super) trait Columns {
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
}

fn corrupt(i: usize, error: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Corrupt(format!("column {i}: {}", super::cause_chain(error)))
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String> {
        self.get(i).map_err(|e| corrupt(i, &e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.get(i).map_err(|e| corrupt(i, &e))
    }
    fn int(&self, i: usize) -> Result<i64> {
        self.get(i).map_err(|e| corrupt(i, &e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.get(i).map_err(|e| corrupt(i, &e))
    }
}

impl Columns for tokio_postgres::Row {
    fn text(&self, i: usize) -> Result<String> {
        self.try_get(i).map_err(|e| corrupt(i, &e))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.try_get(i).map_err(|e| corrupt(i, &e))
    }
    /// `BIGINT` for every integer the records carry, `INTEGER` for the softlock's counter.
    fn int(&self, i: usize) -> Result<i64> {
        self.try_get::<_, i64>(i)
            .or_else(|_| self.try_get::<_, i32>(i).map(i64::from))
            .map_err(|e| corrupt(i, &e))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.try_get::<_, Option<i64>>(i)
            .or_else(|_| self.try_get::<_, Option<i32>>(i).map(|v| v.map(i64::from)))
            .map_err(|e| corrupt(i, &e))
    }
}

/// A profile from six columns starting at `at`: id, username, username_canonical, full_name,
/// mothers_favorite_search_engine, created_at. What the store holds was parsed on the way in,
/// so it is not parsed again.
pub(super) fn profile(row: &impl Columns, at: usize) -> Result<UserProfile> {
    Ok(UserProfile {
        id: UserId::from_string(row.text(at)?),
        username: Username::from_stored(row.text(at + 1)?, row.text(at + 2)?),
        full_name: ProfileText::from_stored(row.text(at + 3)?),
        mothers_favorite_search_engine: ProfileText::from_stored(row.text(at + 4)?),
        created_at: row.int(at + 5)?,
        totp: TotpStatus::from_stored(row.opt_text(at + 6)?.as_deref()),
    })
}

/// A session from the columns `select_sessions!` selects, in its order.
pub(super) fn session(row: &impl Columns) -> Result<SessionRecord> {
    let ended_at = row.opt_int(9)?;
    let reason = row.opt_text(10)?;
    Ok(SessionRecord {
        id: SessionId::from_string(row.text(0)?),
        user_id: UserId::from_string(row.text(1)?),
        generation: to_u64(row.int(2)?),
        current_generation: to_u64(row.int(3)?),
        refresh_counter: to_u64(row.int(4)?),
        rotated_at: row.opt_int(5)?,
        created_at: row.int(6)?,
        last_used_at: row.int(7)?,
        expires_at: row.int(8)?,
        ended: ended_at.map(|at| (at, EndReason::from_stored(reason.as_deref().unwrap_or("")))),
        user_agent: row.text(11)?,
        client_address: row.text(12)?.parse().ok(),
        factors: Factors::from_stored(&row.text(13)?),
    })
}

/// A session's client address as stored: the address's standard text, or empty when unknown.
pub(super) fn address_text(address: Option<std::net::IpAddr>) -> String {
    address.map(|a| a.to_string()).unwrap_or_default()
}

/// Both databases keep integers as signed 64-bit; generations and counters are `u64` in tokens
/// and records. Both stay far below 2^63.
pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The other way, for parameters.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
