//! The use cases — register, log in, authenticate, log out (one token or all), change password,
//! delete account — combining the token codec, password hashing and the store.
//!
//! No HTTP types here, and everything is synchronous: the HTTP layer runs these calls on the
//! blocking pool, because they hash passwords and touch SQLite. Time is always passed in.

use crate::hash_pool::{HashPool, PoolError};
use crate::lockout::{LockoutPolicy, PhantomFailures};
use crate::password::{Password, Verification};
use crate::password_policy::{PasswordPolicy, PolicyViolation};
use crate::store::{
    Credentials, IssuedTokenRecord, NewUser, Store, StoreError, TokenState, UserProfile,
};
use crate::token::{Codec, IssuedToken, TokenError, VerifiedClaims};
use crate::username::Username;
use crate::{profile_text, random};
use std::sync::Arc;

/// What registration needs. Strings are raw client input; `register` validates every field.
#[derive(Debug, Clone)]
pub struct Registration {
    pub username: String,
    pub full_name: String,
    pub password: String,
    pub mothers_favorite_search_engine: String,
}

/// A field that failed validation, in the shape problem+json reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The member's name: ours, or for an unknown or repeated member the client's (truncated).
    pub field: std::borrow::Cow<'static, str>,
    pub code: &'static str,
    pub detail: String,
}

/// Why a presented token does not authenticate anyone. Kept apart for logs and tests; clients
/// all get the same 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("{0}")]
    Codec(TokenError),
    #[error("token was logged out")]
    Revoked,
    #[error("token predates the user's last log-out-everywhere or password change")]
    StaleGeneration,
    #[error("token's user no longer exists")]
    UnknownUser,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("username is taken")]
    UsernameTaken,
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("current password is incorrect")]
    WrongCurrentPassword,
    #[error("too many failed attempts; retry in {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("invalid token: {0}")]
    InvalidToken(TokenRejection),
    #[error("the password hashing queue is full")]
    Overloaded,
    #[error("the client left before its password was hashed")]
    ClientGone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(PoolError),
}

impl From<PoolError> for AuthError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Overloaded => Self::Overloaded,
            PoolError::Abandoned => Self::ClientGone,
            other => Self::Hash(other),
        }
    }
}

impl From<TokenRejection> for AuthError {
    fn from(rejection: TokenRejection) -> Self {
        Self::InvalidToken(rejection)
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;

/// An authenticated request: verified claims and the user they belong to.
#[derive(Debug, Clone)]
pub struct Session {
    pub claims: VerifiedClaims,
    pub profile: Arc<UserProfile>,
}

/// Tunables of the use cases.
#[derive(Debug, Clone, Copy)]
pub struct AuthSettings {
    /// Access-token lifetime in seconds; also the longest lifetime the codec accepts.
    pub token_ttl: i64,
    pub password_policy: PasswordPolicy,
    pub lockout: LockoutPolicy,
}

/// The service's core, shared by every request.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    codec: Codec,
    hashing: HashPool,
    settings: AuthSettings,
    /// Softlock counters for names without an account.
    phantoms: PhantomFailures,
}

impl Auth {
    pub fn new(store: Store, codec: Codec, hashing: HashPool, settings: AuthSettings) -> Self {
        Self {
            store,
            codec,
            hashing,
            settings,
            phantoms: PhantomFailures::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn hashing(&self) -> &HashPool {
        &self.hashing
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Validates every field (reporting all failures at once), hashes and stores the user.
    pub fn register(&self, input: &Registration, now: i64) -> Result<UserProfile> {
        let mut errors = Vec::new();
        let username = Username::parse(&input.username)
            .map_err(|e| errors.push(field_error("username", e.code(), e.to_string())))
            .ok();
        let full_name = profile_text::clean("full_name", &input.full_name)
            .map_err(|e| errors.push(e))
            .ok();
        let engine = profile_text::clean(
            "mothers_favorite_search_engine",
            &input.mothers_favorite_search_engine,
        )
        .map_err(|e| errors.push(e))
        .ok();
        let context = [input.username.as_str(), input.full_name.as_str()];
        let password = self
            .acceptable_password("password", &input.password, &context)
            .map_err(|e| errors.push(e))
            .ok();
        let (Some(username), Some(full_name), Some(engine), Some(password)) =
            (username, full_name, engine, password)
        else {
            return Err(AuthError::Validation(errors));
        };

        let password_hash = self.hashing.hash(password)?;
        let id = random::base64url_id::<16>();
        let user = NewUser {
            id: &id,
            username: username.as_typed(),
            username_canonical: username.canonical(),
            full_name: &full_name,
            mothers_favorite_search_engine: &engine,
            password_hash: &password_hash,
            created_at: now,
        };
        self.store.create_user(&user).map_err(|e| match e {
            StoreError::UsernameTaken => AuthError::UsernameTaken,
            other => other.into(),
        })
    }

    /// Checks a password and mints a token. Unknown users and wrong passwords fail identically
    /// and cost one argon2 verification each. The guess is reserved against the softlock
    /// before any hashing, so concurrent guesses cannot exceed the policy; and the token is
    /// issued only if the credentials it verified are still current, so a login racing a
    /// password change or a log-out-everywhere can neither undo it nor survive it.
    pub fn login(&self, username: &str, password: &str, now: i64) -> Result<IssuedToken> {
        let lockout = &self.settings.lockout;
        let name = Username::parse(username).ok();
        let credentials = match &name {
            Some(name) => self.store.find_credentials(name.canonical())?,
            None => None,
        };
        let Some(credentials) = credentials else {
            // Same softlock, same hash, same answer as a real account: nothing tells them
            // apart. A name that fails validation cannot be an account and gets no counter.
            if let Some(name) = &name {
                self.phantoms
                    .reserve(lockout, name.canonical(), now)
                    .map_err(|retry_after| AuthError::Throttled { retry_after })?;
            }
            self.hashing.verify_dummy(password.to_owned())?;
            return Err(AuthError::InvalidCredentials);
        };
        self.reserve_attempt(&credentials.user_id, now)?;
        let needs_rehash = match self.check_password(password, &credentials.password_hash)? {
            Verification::Match { needs_rehash } => needs_rehash,
            Verification::Mismatch => return Err(AuthError::InvalidCredentials),
        };
        let rehashed = match (needs_rehash, Password::normalize(password)) {
            (true, Ok(normalized)) => Some(self.hashing.hash(normalized)?),
            _ => None,
        };
        self.issue_token(&credentials, rehashed.as_deref(), now)
            .map_err(|error| match error {
                // The password changed or every token was revoked meanwhile: what was
                // verified is no longer the password.
                AuthError::Store(StoreError::CredentialsChanged) => AuthError::InvalidCredentials,
                other => other,
            })
    }

    /// Verifies a bearer token and checks revocation: one codec pass, one store read.
    pub fn authenticate(&self, token: &str, now: i64) -> Result<Session> {
        let (session, revoked) = self.check_token(token, now)?;
        if revoked {
            return Err(TokenRejection::Revoked.into());
        }
        Ok(session)
    }

    /// The request path's first try: the codec plus the in-memory view of token state, with no
    /// blocking work, so it can run on the async reactor. `Ok(None)` means the view lacks this
    /// user: call [`Auth::authenticate`] on the blocking pool instead.
    pub fn authenticate_in_memory(&self, token: &str, now: i64) -> Result<Option<Session>> {
        let claims = self
            .codec
            .verify(token, now)
            .map_err(TokenRejection::Codec)?;
        let verified = claims.claims();
        let Some(state) = self
            .store
            .cached_token_state(&verified.sub, &verified.jti)?
        else {
            return Ok(None);
        };
        let (session, revoked) = judge(claims, state)?;
        if revoked {
            return Err(TokenRejection::Revoked.into());
        }
        Ok(Some(session))
    }

    /// Logs out the presented token. Idempotent: a genuine token already logged out succeeds.
    pub fn logout(&self, token: &str, now: i64) -> Result<()> {
        let (session, _already_revoked) = self.check_token(token, now)?;
        let claims = session.claims.claims();
        self.store
            .revoke_token(&claims.jti, &claims.sub, claims.exp)?;
        Ok(())
    }

    /// Logs out everywhere: every token issued so far stops working at once.
    pub fn logout_everywhere(&self, session: &Session) -> Result<()> {
        self.store.bump_generation(&session.profile.id)?;
        Ok(())
    }

    /// Changes the password (current one required, ASVS 6.2.2); every other token dies and a
    /// fresh token is returned. The current password is a guess like any login's: reserved
    /// against the softlock before hashing.
    pub fn change_password(
        &self,
        session: &Session,
        current: &str,
        new: &str,
        now: i64,
    ) -> Result<IssuedToken> {
        let credentials = self.reauthenticate(session, current, now)?;
        let context = [
            session.profile.username.as_str(),
            session.profile.full_name.as_str(),
        ];
        let password = self
            .acceptable_password("new_password", new, &context)
            .map_err(|e| AuthError::Validation(vec![e]))?;
        let hash = self.hashing.hash(password)?;
        let generation = self
            .store
            .change_password(&credentials.user_id, &credentials.password_hash, &hash)?
            // Changed by a concurrent request since we verified it: ours is not current.
            .ok_or(AuthError::WrongCurrentPassword)?;
        let changed = Credentials {
            password_hash: hash,
            token_generation: generation,
            ..credentials
        };
        self.issue_token(&changed, None, now)
    }

    /// Deletes the account after re-authentication with the password (ASVS 5.0 asks for it
    /// before sensitive operations): its tokens die with it and the username is free again.
    pub fn delete_account(&self, session: &Session, password: &str, now: i64) -> Result<()> {
        self.reauthenticate(session, password, now)?;
        self.store.delete_user(&session.profile.id)?;
        Ok(())
    }

    /// The session's user proves they know the password: reserved against the softlock, then
    /// verified. A wrong password is [`AuthError::WrongCurrentPassword`].
    fn reauthenticate(&self, session: &Session, password: &str, now: i64) -> Result<Credentials> {
        let canonical = Username::parse(&session.profile.username)
            .map(|u| u.canonical().to_owned())
            .unwrap_or_default();
        let credentials = self
            .store
            .find_credentials(&canonical)?
            .filter(|c| c.user_id == session.profile.id)
            .ok_or(TokenRejection::UnknownUser)?;
        self.reserve_attempt(&credentials.user_id, now)?;
        if self.check_password(password, &credentials.password_hash)? == Verification::Mismatch {
            return Err(AuthError::WrongCurrentPassword);
        }
        Ok(credentials)
    }

    fn reserve_attempt(&self, user_id: &str, now: i64) -> Result<()> {
        self.store
            .reserve_attempt(user_id, &self.settings.lockout, now)?
            .map_err(|retry_after| AuthError::Throttled { retry_after })
    }

    /// Drops denylist and ledger rows for tokens past expiry (plus the codec's leeway).
    pub fn prune(&self, now: i64) -> Result<usize> {
        let leeway = self.codec.policy().leeway;
        let cutoff = now.saturating_sub(leeway);
        let longest_lifetime = self.settings.token_ttl.saturating_add(leeway);
        Ok(self.store.prune_expired(cutoff, longest_lifetime)?)
    }

    /// Verified session plus whether the token is on the denylist.
    fn check_token(&self, token: &str, now: i64) -> Result<(Session, bool)> {
        let claims = self
            .codec
            .verify(token, now)
            .map_err(TokenRejection::Codec)?;
        check_revocation(&self.store, claims)
    }

    /// One argon2 verification on the hashing threads, whatever the input.
    fn check_password(&self, raw: &str, phc: &str) -> Result<Verification> {
        match Password::normalize(raw) {
            Ok(password) => Ok(self.hashing.verify(password, phc.to_owned())?),
            Err(_) => {
                self.hashing.verify_dummy(raw.to_owned())?;
                Ok(Verification::Mismatch)
            }
        }
    }

    /// Length is checked on the raw input first, so an over-long password is refused before
    /// any normalisation or hashing work.
    fn acceptable_password(
        &self,
        field: &'static str,
        raw: &str,
        context: &[&str],
    ) -> std::result::Result<Password, FieldError> {
        let policy = &self.settings.password_policy;
        let violation = |v: PolicyViolation| field_error(field, v.code(), v.to_string());
        policy
            .check_length(raw.chars().count())
            .map_err(violation)?;
        let password = Password::normalize(raw).map_err(|e| {
            let code = match e {
                crate::password::NormalizationError::Empty => "too_short",
                crate::password::NormalizationError::DisallowedCharacter => "disallowed_character",
            };
            field_error(field, code, e.to_string())
        })?;
        policy.check(&password, context).map_err(violation)?;
        Ok(password)
    }

    /// Mints a token at the verified generation and records it — only if `verified` is still
    /// what the store holds.
    fn issue_token(
        &self,
        verified: &Credentials,
        rehashed_password: Option<&str>,
        now: i64,
    ) -> Result<IssuedToken> {
        let user_id = verified.user_id.as_str();
        let generation = verified.token_generation;
        let issued = self
            .codec
            .issue(user_id, generation, now, self.settings.token_ttl);
        self.store.record_login(
            &IssuedTokenRecord {
                jti: &issued.claims.jti,
                user_id,
                generation,
                issued_at: issued.claims.iat,
                expires_at: issued.claims.exp,
            },
            verified,
            rehashed_password,
        )?;
        Ok(issued)
    }
}

/// Whether a token that passed the codec still stands: its user exists and its generation is
/// current. Returns the session and whether the `jti` is denylisted. Shared by the server and
/// `tessera-token verify --db`, so both judge revocation identically.
pub fn check_revocation(store: &Store, claims: VerifiedClaims) -> Result<(Session, bool)> {
    let state = store
        .token_state(&claims.claims().sub, &claims.claims().jti)?
        .ok_or(TokenRejection::UnknownUser)?;
    judge(claims, state)
}

/// A token stands if it carries its user's current generation; says whether it is denylisted.
fn judge(claims: VerifiedClaims, state: TokenState) -> Result<(Session, bool)> {
    if claims.claims().r#gen != state.current_generation {
        return Err(TokenRejection::StaleGeneration.into());
    }
    let session = Session {
        claims,
        profile: state.profile,
    };
    Ok((session, state.revoked))
}

fn field_error(field: &'static str, code: &'static str, detail: String) -> FieldError {
    FieldError {
        field: field.into(),
        code,
        detail,
    }
}
