//! Sessions: what a login starts, what its refresh tokens rotate within, and the rules that say
//! whether one is still live and what a presented refresh token earns. Pure: the records come
//! from storage, `now` from the caller.

use super::ids::{SessionId, UserId};
use std::fmt;
use std::net::IpAddr;

/// Longest user agent kept, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// How long sessions live and how forgiving rotation is. All in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session not refreshed for this long is over.
    pub idle_timeout: i64,
    /// A session is over this long after the login that started it, refreshed or not.
    pub max_age: i64,
    /// A refresh token superseded less than this long ago still gets the session's current
    /// one: two tabs refreshing at once are not mistaken for a replay.
    pub reuse_grace: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: 14 * 24 * 3600,
            max_age: 30 * 24 * 3600,
            reuse_grace: 10,
        }
    }
}

/// Why a session was ended on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its user logged out of it.
    Logout,
    /// Ended from the session list, or by an operator.
    Revoked,
    /// A superseded refresh token was replayed after the grace window.
    Reuse,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Revoked => "revoked",
            Self::Reuse => "reuse",
        }
    }

    /// The stored spelling back; anything unknown reads as `Revoked` (ended, whatever the cause).
    pub fn from_stored(text: &str) -> Self {
        match text {
            "logout" => Self::Logout,
            "reuse" => Self::Reuse,
            _ => Self::Revoked,
        }
    }
}

/// Why a token's session (or the token itself) is on the denylist: what a rejection names in the
/// log. Recorded with the denylist row, so it reaches every process's view with the revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Its user logged out of the session.
    Logout,
    /// Its user ended the session from the session list.
    EndedByUser,
    /// An operator ended it (`tessera session revoke`).
    RevokedByOperator,
    /// A superseded refresh token of the session was replayed after the grace window.
    Reuse,
    /// A row from before reasons were recorded.
    Unrecorded,
}

impl Denial {
    /// Why a session ended by `reason` is denylisted; `by_owner` tells the user's own ending
    /// from an operator's, which end with the same [`EndReason`].
    pub fn of(reason: EndReason, by_owner: bool) -> Self {
        match (reason, by_owner) {
            (EndReason::Logout, _) => Self::Logout,
            (EndReason::Reuse, _) => Self::Reuse,
            (EndReason::Revoked, true) => Self::EndedByUser,
            (EndReason::Revoked, false) => Self::RevokedByOperator,
        }
    }

    /// The stored spelling (`revoked_tokens.reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::EndedByUser => "ended",
            Self::RevokedByOperator => "revoked",
            Self::Reuse => "reuse",
            Self::Unrecorded => "",
        }
    }

    pub fn from_stored(text: Option<&str>) -> Self {
        match text {
            Some("logout") => Self::Logout,
            Some("ended") => Self::EndedByUser,
            Some("revoked") => Self::RevokedByOperator,
            Some("reuse") => Self::Reuse,
            _ => Self::Unrecorded,
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Logout => "its user logged out",
            Self::EndedByUser => "its user ended it from the session list",
            Self::RevokedByOperator => "an operator ended it (`tessera session revoke`)",
            Self::Reuse => "a superseded refresh token of it was replayed",
            Self::Unrecorded => "it was ended (no reason on record)",
        })
    }
}

/// A session as stored, with its user's current token generation read alongside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    /// The user's token generation when the session started (or last changed its password).
    pub generation: u64,
    /// The user's token generation now: a bump ends every session started below it.
    pub current_generation: u64,
    /// Which refresh token is current: the n-th rotation's.
    pub refresh_counter: u64,
    /// When the current refresh token superseded the one before; `None` when the one before
    /// gets no grace (the first, or a password change).
    pub rotated_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: i64,
    /// The absolute end: `created_at` + the policy's `max_age` at login.
    pub expires_at: i64,
    pub ended: Option<(i64, EndReason)>,
    pub user_agent: String,
    /// The client's address at login; `None` for sessions recorded before addresses were.
    pub client_address: Option<IpAddr>,
    /// The factors the login presented.
    pub factors: Factors,
}

/// The authentication factors a session was started with: its tokens' `amr` claim (RFC 8176),
/// kept by every refresh, and shown in the session list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Factors {
    /// A password alone.
    #[default]
    Password,
    /// A password and a TOTP code (or a recovery code, which stands in for the device).
    PasswordAndOtp,
}

impl Factors {
    /// RFC 8176 method values, in the order the claim lists them.
    pub fn amr(self) -> &'static [&'static str] {
        match self {
            Self::Password => &["pwd"],
            Self::PasswordAndOtp => &["pwd", "otp"],
        }
    }

    /// The stored form: the values space-separated.
    pub fn as_stored(self) -> &'static str {
        match self {
            Self::Password => "pwd",
            Self::PasswordAndOtp => "pwd otp",
        }
    }

    /// From the stored form; anything unknown is one factor (the claim never over-states).
    pub fn from_stored(text: &str) -> Self {
        match text {
            "pwd otp" => Self::PasswordAndOtp,
            _ => Self::Password,
        }
    }

    /// From an `amr` claim's values: exactly what [`Factors::amr`] gives, or `None`.
    pub fn from_amr(values: &[&str]) -> Option<Self> {
        match values {
            ["pwd"] => Some(Self::Password),
            ["pwd", "otp"] => Some(Self::PasswordAndOtp),
            _ => None,
        }
    }
}

/// Where a login came from, kept with its session for the session list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// As [`user_agent`] cleaned it.
    pub user_agent: String,
    /// The client's address: the TCP peer, or what a trusted proxy forwarded.
    pub client_address: Option<IpAddr>,
}

/// Where a session stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Live,
    Ended(EndReason),
    /// Ended with all of its user's sessions: log out everywhere, a password change elsewhere,
    /// an operator's `user revoke`.
    AllRevoked,
    Expired,
    IdleExpired,
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Live => "live",
            Self::Ended(EndReason::Logout) => "ended (logged out)",
            Self::Ended(EndReason::Revoked) => "ended (revoked)",
            Self::Ended(EndReason::Reuse) => {
                "reuse-revoked (a superseded refresh token was replayed)"
            }
            Self::AllRevoked => "ended (all the user's sessions were revoked)",
            Self::Expired => "expired (absolute lifetime)",
            Self::IdleExpired => "expired (idle)",
        })
    }
}

/// What a genuine refresh token earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The current token: rotate to the next.
    Rotate,
    /// The one just superseded, within the grace window: hand out the current one again.
    Grace,
    /// An older token, or the last one after the grace window: end the session.
    Reuse,
    /// The session is not live.
    Refuse(SessionStatus),
}

impl SessionPolicy {
    pub fn status(&self, session: &SessionRecord, now: i64) -> SessionStatus {
        if let Some((_, reason)) = session.ended {
            return SessionStatus::Ended(reason);
        }
        if session.generation != session.current_generation {
            return SessionStatus::AllRevoked;
        }
        if now >= session.expires_at {
            return SessionStatus::Expired;
        }
        if now >= session.last_used_at.saturating_add(self.idle_timeout) {
            return SessionStatus::IdleExpired;
        }
        SessionStatus::Live
    }

    /// When the current refresh token stops working if unused: the idle deadline, or the
    /// absolute end if that comes first.
    pub fn refresh_expires_at(&self, session: &SessionRecord) -> i64 {
        session
            .expires_at
            .min(session.last_used_at.saturating_add(self.idle_timeout))
    }

    /// What presenting the refresh token of rotation `counter` earns at `now`.
    pub fn judge_refresh(
        &self,
        session: &SessionRecord,
        counter: u64,
        now: i64,
    ) -> RefreshDecision {
        match self.status(session, now) {
            SessionStatus::Live => {}
            other => return RefreshDecision::Refuse(other),
        }
        let current = session.refresh_counter;
        if counter == current {
            return RefreshDecision::Rotate;
        }
        let just_superseded = counter.checked_add(1) == Some(current);
        let within_grace = session
            .rotated_at
            .is_some_and(|at| now.saturating_sub(at) < self.reuse_grace);
        if just_superseded && within_grace {
            RefreshDecision::Grace
        } else {
            // Older than current (a replay), or newer (we never minted it, yet it bears our tag):
            // either way someone holds a token they should not.
            RefreshDecision::Reuse
        }
    }
}

/// A login's `User-Agent` as shown in the session list: control characters removed, cut to
/// [`MAX_USER_AGENT_CHARS`] characters.
pub fn user_agent(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn every_end_reason_reads_back_from_its_stored_spelling() {
        for reason in [EndReason::Logout, EndReason::Revoked, EndReason::Reuse] {
            assert_eq!(EndReason::from_stored(reason.as_str()), reason);
        }
        assert_eq!(EndReason::from_stored("something else"), EndReason::Revoked);
    }

    #[test]
    fn factors_read_back_from_their_stored_form_and_their_amr() {
        for factors in [Factors::Password, Factors::PasswordAndOtp] {
            assert_eq!(Factors::from_stored(factors.as_stored()), factors);
            assert_eq!(Factors::from_amr(factors.amr()), Some(factors));
        }
        assert_eq!(Factors::PasswordAndOtp.as_stored(), "pwd otp");
        assert_eq!(Factors::Password.as_stored(), "pwd");
        // Anything unknown on file is one factor: the claim never over-states.
        assert_eq!(Factors::from_stored("otp"), Factors::Password);
    }

    #[test]
    fn rejections_and_statuses_say_what_happened() {
        assert_eq!(Denial::Logout.to_string(), "its user logged out");
        assert_eq!(
            SessionStatus::Ended(EndReason::Reuse).to_string(),
            "reuse-revoked (a superseded refresh token was replayed)"
        );
        assert_eq!(SessionStatus::IdleExpired.to_string(), "expired (idle)");
    }

    fn session() -> SessionRecord {
        SessionRecord {
            id: SessionId::random(),
            user_id: UserId::random(),
            generation: 2,
            current_generation: 2,
            refresh_counter: 5,
            rotated_at: Some(NOW - 3),
            created_at: NOW - 100,
            last_used_at: NOW - 3,
            expires_at: NOW + 1000,
            ended: None,
            user_agent: String::new(),
            client_address: None,
            factors: Factors::Password,
        }
    }

    #[test]
    fn the_current_token_rotates_and_the_one_before_gets_grace_only_briefly() {
        let policy = SessionPolicy::default();
        let s = session();
        assert_eq!(policy.judge_refresh(&s, 5, NOW), RefreshDecision::Rotate);
        assert_eq!(policy.judge_refresh(&s, 4, NOW), RefreshDecision::Grace);
        assert_eq!(policy.judge_refresh(&s, 4, NOW + 7), RefreshDecision::Reuse);
        assert_eq!(policy.judge_refresh(&s, 3, NOW), RefreshDecision::Reuse);
        assert_eq!(policy.judge_refresh(&s, 6, NOW), RefreshDecision::Reuse);
        let no_grace = SessionRecord {
            rotated_at: None,
            ..session()
        };
        assert_eq!(
            policy.judge_refresh(&no_grace, 4, NOW),
            RefreshDecision::Reuse
        );
    }

    #[test]
    fn ended_revoked_expired_and_idle_sessions_refuse() {
        let policy = SessionPolicy {
            idle_timeout: 50,
            ..SessionPolicy::default()
        };
        let refused = |s: &SessionRecord, now| match policy.judge_refresh(s, 5, now) {
            RefreshDecision::Refuse(status) => status,
            other => panic!("{other:?}"),
        };
        let ended = SessionRecord {
            ended: Some((NOW, EndReason::Reuse)),
            ..session()
        };
        assert_eq!(refused(&ended, NOW), SessionStatus::Ended(EndReason::Reuse));
        let bumped = SessionRecord {
            current_generation: 3,
            ..session()
        };
        assert_eq!(refused(&bumped, NOW), SessionStatus::AllRevoked);
        assert_eq!(refused(&session(), NOW + 1000), SessionStatus::Expired);
        assert_eq!(refused(&session(), NOW + 47), SessionStatus::IdleExpired);
        assert_eq!(policy.status(&session(), NOW + 46), SessionStatus::Live);
        assert_eq!(policy.refresh_expires_at(&session()), NOW + 47);
    }

    #[test]
    fn a_denial_names_who_ended_the_session_and_round_trips() {
        assert_eq!(Denial::of(EndReason::Revoked, true), Denial::EndedByUser);
        assert_eq!(
            Denial::of(EndReason::Revoked, false),
            Denial::RevokedByOperator
        );
        assert_eq!(Denial::of(EndReason::Logout, false), Denial::Logout);
        assert_eq!(Denial::of(EndReason::Reuse, true), Denial::Reuse);
        for denial in [
            Denial::Logout,
            Denial::EndedByUser,
            Denial::RevokedByOperator,
            Denial::Reuse,
            Denial::Unrecorded,
        ] {
            assert_eq!(Denial::from_stored(Some(denial.as_str())), denial);
        }
        assert_eq!(Denial::from_stored(None), Denial::Unrecorded);
    }

    #[test]
    fn user_agents_lose_control_characters_and_stop_at_256() {
        assert_eq!(user_agent(b"curl/8\r\n\x1b[31mx\x7f"), "curl/8[31mx");
        assert_eq!(user_agent("é".repeat(300).as_bytes()).chars().count(), 256);
        assert_eq!(user_agent(b"\xff ok"), "\u{fffd} ok");
    }
}
