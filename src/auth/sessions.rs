//! Session use cases: start one at login, rotate its refresh token, list and end sessions.
//!
//! Rotation follows RFC 6819 §5.2.2.3 and the OAuth 2.0 Security BCP §4.14.2: every refresh
//! supersedes the presented token, and a superseded token presented again means it leaked —
//! the whole session ends. The one exception is the token superseded last, presented within the
//! grace window: that is a second tab that refreshed at the same moment, and it gets the
//! session's current refresh token (the very string the first tab got) instead of a logout.
//!
//! Each decision is taken on a fresh read of the session and written only if the session is
//! still as read ([`Store::grant_in_session`]); a lost race reads and judges again, so two
//! refreshes of one token end as one rotation plus one grace, never two rotations.

use super::{Auth, AuthError, Authenticated, RefreshRejection, Result, TokenRejection};
use crate::domain::ids::SessionId;
use crate::domain::ids::UserId;
use crate::domain::secret::SecretString;
use crate::domain::session::{
    EndReason, Factors, Origin, RefreshDecision, SessionRecord, SessionStatus,
};
use crate::store::{Credentials, NewSession, SessionGrant, StoreError};
use crate::token::IssuedToken;
use std::fmt;

/// Rounds of read-judge-write a refresh tries before answering "busy": each lost round means
/// another request changed the session in between, which two tabs do at most once or twice.
const MAX_REFRESH_ROUNDS: usize = 4;

/// What a login, a refresh or a password change hands out. Debug leaves both tokens out.
pub struct Grant {
    pub access: IssuedToken,
    pub refresh: SecretString,
    /// When the refresh token stops working if unused (idle timeout or the session's end).
    pub refresh_expires_at: i64,
    pub session_id: SessionId,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("access", &self.access)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// How a refresh was answered, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current and is now superseded.
    Rotated,
    /// The presented token was superseded moments ago: the current one was handed out again.
    Grace,
}

#[derive(Debug)]
pub struct Refreshed {
    pub grant: Grant,
    pub rotation: Rotation,
}

/// One line of a user's session list.
#[derive(Debug, Clone)]
pub struct ListedSession {
    pub session: SessionRecord,
    /// Whether the caller's token belongs to it.
    pub current: bool,
}

impl Auth {
    /// Starts a session for credentials just verified, with its first access token.
    pub(super) fn start_session(
        &self,
        verified: &Credentials,
        rehashed_password: Option<&str>,
        origin: &Origin,
        factors: Factors,
        now: i64,
    ) -> Result<Grant> {
        let id = SessionId::random();
        let expires_at = now.saturating_add(self.settings.sessions.max_age);
        let generation = verified.token_generation;
        let lifetime = self.access_lifetime(now, expires_at);
        let access =
            self.codec()
                .issue_with(&verified.user_id, &id, generation, now, lifetime, factors);
        let session = NewSession {
            id: &id,
            origin,
            factors,
            created_at: now,
            expires_at,
        };
        self.store
            .record_login(verified, rehashed_password, &session)?;
        self.grant(access, 0, expires_at, now)
    }

    /// Trades a refresh token for a new access token and (usually) a new refresh token. Every
    /// failure is an [`AuthError::InvalidRefreshToken`] with its reason; a replay ends the
    /// session before answering.
    pub fn refresh(&self, token: &SecretString, now: i64) -> Result<Refreshed> {
        let presented = self
            .codec()
            .open_refresh_token(token.expose())
            .map_err(RefreshRejection::NotOurs)?;
        let policy = &self.settings.sessions;
        for _ in 0..MAX_REFRESH_ROUNDS {
            let session = self
                .store
                .session(&presented.session)?
                .ok_or_else(|| RefreshRejection::UnknownSession(presented.session.clone()))?;
            let (rotation, new_counter) =
                match policy.judge_refresh(&session, presented.counter, now) {
                    RefreshDecision::Rotate => {
                        (Rotation::Rotated, session.refresh_counter.saturating_add(1))
                    }
                    RefreshDecision::Grace => (Rotation::Grace, session.refresh_counter),
                    RefreshDecision::Reuse => {
                        self.end_session_by(&session.id, None, EndReason::Reuse, now)?;
                        return Err(RefreshRejection::Reused(session.id).into());
                    }
                    RefreshDecision::Refuse(status) => {
                        return Err(RefreshRejection::NotLive {
                            session: session.id,
                            status,
                        }
                        .into());
                    }
                };
            let access = self.issue_access(&session, session.generation, now);
            let grant = SessionGrant {
                session_id: &session.id,
                user_id: &session.user_id,
                generation: session.generation,
                expected_counter: session.refresh_counter,
                new_counter,
                now,
            };
            if self.store.grant_in_session(&grant)? {
                let grant = self.grant(access, new_counter, session.expires_at, now)?;
                return Ok(Refreshed { grant, rotation });
            }
        }
        Err(AuthError::Overloaded)
    }

    /// The caller's live sessions, newest first, the caller's own marked `current`.
    pub fn list_sessions(&self, caller: &Authenticated, now: i64) -> Result<Vec<ListedSession>> {
        let current = &caller.claims.claims().sid;
        Ok(self
            .store
            .sessions_of(&caller.profile.id)?
            .into_iter()
            .filter(|s| self.settings.sessions.status(s, now) == SessionStatus::Live)
            .map(|session| ListedSession {
                current: &session.id == current,
                session,
            })
            .collect())
    }

    /// Ends one of the caller's live sessions. Anything else — another user's, ended, unknown,
    /// malformed — is [`AuthError::SessionNotFound`], indistinguishably.
    pub fn end_session(&self, caller: &Authenticated, id: &str, now: i64) -> Result<()> {
        let id = SessionId::from_string(id.to_owned());
        let owned_and_live = self.store.session(&id)?.is_some_and(|s| {
            s.user_id == caller.profile.id
                && self.settings.sessions.status(&s, now) == SessionStatus::Live
        });
        if !owned_and_live {
            return Err(AuthError::SessionNotFound);
        }
        let ended = self.end_session_by(&id, Some(&caller.profile.id), EndReason::Revoked, now)?;
        if ended {
            Ok(())
        } else {
            Err(AuthError::SessionNotFound)
        }
    }

    /// Ends a session (of `owner`, if given); its id stays denylisted until every access token
    /// it can have issued — at `now` at the latest, living `--token-ttl` — has expired.
    pub(super) fn end_session_by(
        &self,
        id: &SessionId,
        owner: Option<&UserId>,
        reason: EndReason,
        now: i64,
    ) -> Result<bool> {
        let tokens_expire_by = now.saturating_add(self.settings.token_ttl);
        Ok(self
            .store
            .end_session(id, owner, reason, now, tokens_expire_by)?)
    }

    /// Live sessions in the whole store (for the metrics gauge). Blocking.
    pub fn live_sessions(&self, now: i64) -> Result<u64> {
        let idle = self.settings.sessions.idle_timeout;
        Ok(self.store.live_sessions(now, idle)?)
    }

    /// The caller's session, if it is still live (a password change continues it).
    pub(super) fn live_session_of(
        &self,
        caller: &Authenticated,
        now: i64,
    ) -> Result<SessionRecord> {
        self.store
            .session(&caller.claims.claims().sid)?
            .filter(|s| s.user_id == caller.profile.id)
            .ok_or(TokenRejection::EndedMeanwhile)
            .and_then(|s| match self.settings.sessions.status(&s, now) {
                SessionStatus::Live => Ok(s),
                status => Err(TokenRejection::SessionNotLive(status)),
            })
            .map_err(Into::into)
    }

    /// An access token in `session` at `generation`, never outliving the session.
    pub(super) fn issue_access(
        &self,
        session: &SessionRecord,
        generation: u64,
        now: i64,
    ) -> IssuedToken {
        let lifetime = self.access_lifetime(now, session.expires_at);
        self.codec().issue_with(
            &session.user_id,
            &session.id,
            generation,
            now,
            lifetime,
            session.factors,
        )
    }

    /// The token lifetime, cut short by the session's ends: its absolute end, and its idle
    /// deadline. Every token is issued as the session is used (a login, a refresh, a password
    /// change all set `last_used_at` to `now`), so a token issued now expires no later than the
    /// moment the session would idle out: an ended session — which the session list no longer
    /// shows and `DELETE /v1/sessions/{id}` can no longer find — never leaves a working access
    /// token behind.
    fn access_lifetime(&self, now: i64, session_expires_at: i64) -> i64 {
        self.settings
            .token_ttl
            .min(self.settings.sessions.idle_timeout)
            .min(session_expires_at.saturating_sub(now))
            .max(1)
    }

    /// Pairs an access token with the session's refresh token at `counter`.
    pub(super) fn grant(
        &self,
        access: IssuedToken,
        counter: u64,
        session_expires_at: i64,
        now: i64,
    ) -> Result<Grant> {
        let session_id = access.claims.sid.clone();
        let refresh = self
            .codec()
            .refresh_token(&session_id, counter)
            .ok_or(AuthError::Store(StoreError::Corrupt(
                "a session id is not one of ours".into(),
            )))?;
        let idle_deadline = now.saturating_add(self.settings.sessions.idle_timeout);
        Ok(Grant {
            access,
            refresh,
            refresh_expires_at: session_expires_at.min(idle_deadline),
            session_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Codec, Keyring, ValidationPolicy};

    /// A grant in a log line names its session and expiry, and never either token.
    #[test]
    fn a_grants_debug_names_the_session_and_leaves_both_tokens_out() {
        let policy = ValidationPolicy {
            issuer: "tessera".into(),
            audience: "tessera-api".into(),
            leeway: 30,
            max_lifetime: 3600,
        };
        let codec = Codec::new(Keyring::from_secret("k", &[7; 32]).unwrap(), policy);
        let session_id = SessionId::random();
        let access = codec.issue(&UserId::random(), &session_id, 0, 1_764_000_000, 900);
        let grant = Grant {
            refresh: codec.refresh_token(&session_id, 1).unwrap(),
            access: access.clone(),
            refresh_expires_at: 1_764_086_400,
            session_id: session_id.clone(),
        };
        let printed = format!("{grant:?}");
        assert!(printed.contains(session_id.as_str()), "{printed}");
        assert!(printed.contains("1764086400"), "{printed}");
        assert!(!printed.contains(&access.token), "{printed}");
        assert!(!printed.contains(grant.refresh.expose()), "{printed}");
    }
}
