//! The plain values that cross the storage seam.

use crate::domain::ids::{SessionId, UserId};
use crate::domain::profile_text::ProfileText;
use crate::domain::session::{Denial, Factors, Origin};
use crate::domain::totp::TotpStatus;
use crate::domain::user::UserProfile;
use crate::domain::username::Username;
use std::fmt;
use std::sync::Arc;

/// An account to insert: a parsed user with its id, its password already hashed. Debug leaves
/// the hash out (offline guessing starts from a leaked hash).
#[derive(Clone)]
pub struct NewAccount<'a> {
    pub id: &'a UserId,
    pub username: &'a Username,
    pub full_name: &'a str,
    pub mothers_favorite_search_engine: &'a str,
    /// A PHC string (argon2id): not a secret in itself, and never logged either.
    pub password_hash: &'a str,
    pub created_at: i64,
}

/// What login needs: the hash and the generation, read together. A token is issued only if
/// both are still the stored ones when it is recorded (see [`super::Store::record_login`]).
/// Debug leaves the hash out.
#[derive(Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub password_hash: String,
    pub token_generation: u64,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user_id", &self.user_id)
            .field("token_generation", &self.token_generation)
            .finish_non_exhaustive()
    }
}

impl NewAccount<'_> {
    /// The profile the account has once stored (what `create_user` returns).
    pub fn profile(&self) -> UserProfile {
        UserProfile {
            id: self.id.clone(),
            username: self.username.clone(),
            full_name: ProfileText::from_stored(self.full_name.to_owned()),
            mothers_favorite_search_engine: ProfileText::from_stored(
                self.mothers_favorite_search_engine.to_owned(),
            ),
            created_at: self.created_at,
            totp: TotpStatus::Off,
        }
    }
}

impl fmt::Debug for NewAccount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("id", self.id)
            .field("username", self.username)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The user behind a token, with what is needed to decide whether the token still stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// Shared with the in-memory view: a hit costs a reference count, not five string copies.
    pub profile: Arc<UserProfile>,
    pub current_generation: u64,
    /// Why the token's id or its session's is on the denylist; `None` while it is not.
    pub revoked: Option<Denial>,
}

/// A session a login starts, at the generation the login verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession<'a> {
    pub id: &'a SessionId,
    pub origin: &'a Origin,
    /// What the login presented: the session's tokens carry it as `amr`.
    pub factors: Factors,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A refresh's write: the session's refresh counter moves from `expected_counter` to
/// `new_counter` (the same, for a grace answer) — only if the session is still where the caller
/// judged it: not ended, at `generation`, and its user too. A moved counter supersedes a token
/// and starts its grace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant<'a> {
    pub session_id: &'a SessionId,
    pub user_id: &'a UserId,
    pub generation: u64,
    pub expected_counter: u64,
    pub new_counter: u64,
    pub now: i64,
}

/// A password change in the caller's session: the new hash, and the generation the user and
/// the session move to (one above the verified one). Debug leaves the hashes out.
pub struct PasswordChange<'a> {
    pub user_id: &'a UserId,
    pub session_id: &'a SessionId,
    pub new_generation: u64,
    pub verified_hash: &'a str,
    pub new_hash: &'a str,
    pub now: i64,
}

impl fmt::Debug for PasswordChange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordChange")
            .field("user_id", self.user_id)
            .field("session_id", self.session_id)
            .field("new_generation", &self.new_generation)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// What became of a [`PasswordChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChangeOutcome {
    /// Changed; the session's refresh token is now the one at `refresh_counter`.
    Changed {
        refresh_counter: u64,
        session_expires_at: i64,
    },
    /// Someone changed the password first: what was verified is not current.
    PasswordChanged,
    /// The session ended, or all sessions were revoked, meanwhile (or the user is gone).
    SessionEnded,
}

/// The rules that choose an outcome, once for both backends: each runs the same two
/// compare-and-set statements in one transaction and asks these what the rows it got mean.
impl PasswordChangeOutcome {
    /// The user's compare-and-set (hash and generation as verified) changed nothing. If the
    /// stored hash is another one, someone changed the password first: what was verified is not
    /// current. If it is the same, the generation moved — every session was revoked — or the
    /// user is gone (`None`): either way this session has ended. Nothing is committed.
    pub fn user_unchanged(hash_still_verified: Option<bool>) -> Self {
        match hash_still_verified {
            Some(false) => Self::PasswordChanged,
            Some(true) | None => Self::SessionEnded,
        }
    }

    /// The user was changed; `kept` is the caller's session after moving it to the new
    /// generation — its refresh counter and absolute end — or `None` when it had ended
    /// meanwhile, in which case nothing may be committed: the change must not go out without
    /// the session it was made in.
    pub fn after_session_update(kept: Option<(u64, i64)>) -> Self {
        match kept {
            Some((refresh_counter, session_expires_at)) => Self::Changed {
                refresh_counter,
                session_expires_at,
            },
            None => Self::SessionEnded,
        }
    }

    /// Whether the transaction that found this outcome commits.
    pub fn commits(self) -> bool {
        matches!(self, Self::Changed { .. })
    }
}

/// One line of `tessera user list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub username: String,
    pub created_at: i64,
    pub token_generation: u64,
    pub failed_logins: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_password_hash() {
        let credentials = Credentials {
            user_id: UserId::from_string("u1".into()),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$salt$hash".into(),
            token_generation: 3,
        };
        let printed = format!("{credentials:?}");
        assert!(
            printed.contains("u1") && !printed.contains("argon2id"),
            "{printed}"
        );
        let username = Username::parse("kvothe").unwrap();
        let account = NewAccount {
            id: &credentials.user_id,
            username: &username,
            full_name: "Patrick Rothfuss",
            mothers_favorite_search_engine: "Duck Duck Go",
            password_hash: &credentials.password_hash,
            created_at: 0,
        };
        assert!(!format!("{account:?}").contains("argon2id"));
    }
}

#[cfg(test)]
mod outcome_rules {
    use super::*;

    /// The outcome rules both backends share: only a change whose session was kept commits,
    /// and a right password is never reported as changed by someone else unless the stored
    /// hash really is another one.
    #[test]
    fn a_password_change_commits_only_with_its_session_and_blames_only_another_hash() {
        use PasswordChangeOutcome::*;
        assert_eq!(
            PasswordChangeOutcome::user_unchanged(Some(false)),
            PasswordChanged
        );
        assert_eq!(
            PasswordChangeOutcome::user_unchanged(Some(true)),
            SessionEnded
        );
        assert_eq!(PasswordChangeOutcome::user_unchanged(None), SessionEnded);
        let kept = PasswordChangeOutcome::after_session_update(Some((3, 99)));
        assert_eq!(
            kept,
            Changed {
                refresh_counter: 3,
                session_expires_at: 99
            }
        );
        assert!(kept.commits());
        let ended = PasswordChangeOutcome::after_session_update(None);
        assert_eq!(ended, SessionEnded);
        assert!(!ended.commits());
        assert!(!PasswordChanged.commits());
    }
}

/// A user's TOTP factor as stored.
#[derive(Clone)]
pub struct TotpFactor {
    /// The secret, sealed (`token::sealing`): opening it needs the key file.
    pub sealed_secret: String,
    /// Confirmed with a code; a pending factor is not asked for at login.
    pub active: bool,
    /// The last time step accepted; no step at or before it is accepted again.
    pub last_step: Option<i64>,
}

impl fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpFactor")
            .field("active", &self.active)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// Turning a factor on or off, with what it does to the user's other sessions: every session
/// but `keep` ends (all of them when `None`), its id denylisted until `tokens_expire_by`.
#[derive(Debug)]
pub struct TotpChange<'a> {
    pub user: &'a UserId,
    /// Confirming: the step of the code presented. Removing: unused.
    pub step: i64,
    /// Confirming: the new recovery codes' digests. Removing: unused.
    pub recovery_digests: &'a [String],
    pub keep: Option<&'a SessionId>,
    pub now: i64,
    pub tokens_expire_by: i64,
}
