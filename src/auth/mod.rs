//! The use cases — register, log in, authenticate, refresh, list and end sessions, log out (one
//! session or all), change password, delete account — combining the token codec, password
//! hashing and the storage seam. Sessions have their own module, [`sessions`].
//!
//! No HTTP types here, and everything is synchronous: the HTTP layer runs these calls on the
//! blocking pool, because they hash passwords and touch storage — all but
//! [`Auth::authenticate_in_memory`], which never blocks. Time is always passed in, and so is the
//! [`Cancellation`] of whoever waits for a hash.

mod error;
pub mod hash_pool;
mod introspection;
mod sessions;
mod totp;

pub use error::{AuthError, RefreshRejection, Result, TokenRejection};
pub use hash_pool::{Cancellation, HashingStats, Requester};
pub use sessions::{Grant, ListedSession, Refreshed, Rotation};
pub use totp::{Enrolment, SecondFactor, TOTP_OUTCOMES, reseal_all};

use crate::domain::ids::UserId;
use crate::domain::lockout::{LockoutPolicy, PhantomFailures};
use crate::domain::password::{Password, Verification};
use crate::domain::password_policy::PasswordPolicy;
use crate::domain::secret::SecretString;
use crate::domain::session::{Denial, EndReason, Origin, SessionPolicy};
use crate::domain::user::{NewUser, UserProfile};
use crate::domain::username::Username;
use crate::store::{
    Credentials, NewAccount, PasswordChange, PasswordChangeOutcome, Store, StoreError, TokenState,
};
use crate::token::Keyring;
use crate::token::{Codec, VerifiedClaims};
use arc_swap::ArcSwap;
use hash_pool::HashPool;
use std::sync::Arc;

/// Why a new keyring was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum KeyringRefused {
    #[error(
        "key id(s) {0:?} hold different key material on another server of this database: \
         tokens signed there would not verify here (or the reverse); give every server the same \
         key file"
    )]
    Mismatch(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Compare-and-set rounds a password change tries when the stored hash moves under it (each
/// one a login's rehash that landed in between) before answering "busy, retry".
const PASSWORD_CHANGE_ROUNDS: usize = 3;

/// An authenticated request: verified claims and the user they belong to.
#[derive(Debug, Clone)]
pub struct Authenticated {
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
    pub sessions: SessionPolicy,
}

/// The service's core, shared by every request.
#[derive(Debug)]
pub struct Auth {
    store: Arc<dyn Store>,
    /// Replaced whole when the key file changes ([`Auth::replace_keyring`]); every use loads
    /// the current one.
    codec: ArcSwap<Codec>,
    hashing: HashPool,
    settings: AuthSettings,
    /// Softlock counters for names without an account.
    phantoms: PhantomFailures,
    totp: totp::TotpCounters,
}

impl Auth {
    pub fn new(
        store: Arc<dyn Store>,
        codec: Codec,
        hashing: HashPool,
        settings: AuthSettings,
    ) -> Self {
        Self {
            store,
            codec: ArcSwap::from_pointee(codec),
            hashing,
            settings,
            phantoms: PhantomFailures::default(),
            totp: totp::TotpCounters::default(),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The codec in force now: the keyring last loaded, under the service's policy.
    pub(crate) fn codec(&self) -> arc_swap::Guard<Arc<Codec>> {
        self.codec.load()
    }

    /// The key that signs new tokens now.
    pub fn signing_kid(&self) -> String {
        self.codec().keyring().signing_kid().to_owned()
    }

    /// Whether a token signed with `kid` would verify now.
    pub fn verifies_kid(&self, kid: &str) -> bool {
        self.codec().keyring().kids().any(|known| known == kid)
    }

    /// Puts `keyring` in force for every request from the next one on, under the same policy,
    /// once the database agrees that each of its key ids holds this key material (the check
    /// start-up makes). A new codec, so no verification remembered under the old keys answers
    /// for the new ones. Blocking. On error nothing changes.
    pub fn replace_keyring(&self, keyring: Keyring) -> std::result::Result<(), KeyringRefused> {
        let conflicts = self.store.register_keys(&keyring.fingerprints())?;
        if !conflicts.is_empty() {
            return Err(KeyringRefused::Mismatch(conflicts));
        }
        let policy = self.codec().policy().clone();
        self.codec.store(Arc::new(Codec::new(keyring, policy)));
        Ok(())
    }

    /// Records in the database that this server signs with its current key until `until`
    /// (see [`Store::record_signing`]). Blocking.
    pub fn record_signing(&self, until: i64) -> Result<()> {
        Ok(self.store.record_signing(&self.signing_kid(), until)?)
    }

    /// Whether storage answers and is still the one opened (readiness). Blocking.
    pub fn ready(&self) -> Result<()> {
        Ok(self.store.ping()?)
    }

    /// Whether token checks are answered from memory right now (see
    /// [`Store::answers_from_memory`]). Never blocks.
    pub fn answers_from_memory(&self) -> bool {
        self.store.answers_from_memory()
    }

    /// A PostgreSQL replica's view and lease figures, for metrics. Never blocks.
    pub fn replication(&self) -> Option<crate::store::ReplicationStats> {
        self.store.replication()
    }

    /// The hashing pool's queue and counters, for metrics.
    pub fn hashing_stats(&self) -> HashingStats {
        self.hashing.stats()
    }

    /// Occupies every hashing thread until the guard is dropped: requests that need a hash wait
    /// in the queue meanwhile. Lets tests hold requests at a known point instead of sleeping.
    pub fn hold_hashing(&self) -> hash_pool::Held {
        self.hashing.hold()
    }

    /// Leaves storage complete on its own (on shutdown). Blocking.
    pub fn checkpoint(&self) -> Result<()> {
        Ok(self.store.checkpoint()?)
    }

    /// Hashes the new user's password and stores the account.
    pub fn register(&self, user: NewUser, now: i64, cancel: &Cancellation) -> Result<UserProfile> {
        let password_hash = self.hashing.hash(user.password, cancel)?;
        let id = UserId::random();
        let account = NewAccount {
            id: &id,
            username: &user.username,
            full_name: user.full_name.as_str(),
            mothers_favorite_search_engine: user.mothers_favorite_search_engine.as_str(),
            password_hash: &password_hash,
            created_at: now,
        };
        self.store.create_user(&account).map_err(|e| match e {
            StoreError::UsernameTaken => AuthError::UsernameTaken,
            other => other.into(),
        })
    }

    /// Checks a password and starts a session: an access token and a refresh token. Unknown
    /// users and wrong passwords fail identically and cost one argon2 verification each. The
    /// guess is reserved against the softlock before any hashing, so concurrent guesses cannot
    /// exceed the policy; and the session starts only if the credentials it verified are still
    /// current, so a login racing a password change or a log-out-everywhere can neither undo it
    /// nor survive it. `origin` is kept for the session list.
    ///
    /// An account with an active second factor also needs `second`: without it the answer is
    /// [`AuthError::TotpRequired`] (only to someone who knew the password), and a wrong code
    /// is a failed login like a wrong password (the guess stays counted by the softlock).
    pub fn login(
        &self,
        username: &str,
        password: &SecretString,
        second: Option<&SecondFactor>,
        origin: &Origin,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<Grant> {
        let lockout = &self.settings.lockout;
        let name = Username::parse(username).ok();
        let credentials = match &name {
            Some(name) => self.store.find_credentials(name)?,
            None => None,
        };
        let Some(credentials) = credentials else {
            // Same softlock, same hash, same answer as a real account: nothing tells them
            // apart. A name that fails validation cannot be an account and gets no counter.
            if let Some(name) = &name {
                self.phantoms
                    .reserve(lockout, name.canonical(), now)
                    .map_err(|retry_after| AuthError::Throttled { retry_after })?;
                self.store.pad_unknown_attempt(now)?;
            }
            self.hashing.verify_dummy(password.expose(), cancel)?;
            return Err(AuthError::InvalidCredentials);
        };
        self.reserve_attempt(&credentials.user_id, now)?;
        let verified = self.check_password(password, &credentials.password_hash, cancel)?;
        let needs_rehash = match verified {
            Verification::Match { needs_rehash } => needs_rehash,
            Verification::Mismatch => return Err(AuthError::InvalidCredentials),
        };
        let rehashed = match (needs_rehash, Password::normalize(password.expose())) {
            (true, Ok(normalized)) => Some(self.hashing.hash(normalized, cancel)?),
            _ => None,
        };
        let factors = self.second_factor_at_login(&credentials.user_id, second, now)?;
        self.start_session(&credentials, rehashed.as_deref(), origin, factors, now)
            .map_err(|error| match error {
                // The password changed or every token was revoked meanwhile: what was
                // verified is no longer the password.
                AuthError::Store(StoreError::CredentialsChanged) => AuthError::InvalidCredentials,
                other => other,
            })
    }

    /// Verifies a bearer token and checks revocation: one codec pass, one store read.
    pub fn authenticate(&self, token: &str, now: i64) -> Result<Authenticated> {
        let (caller, revoked) = self.check_token(token, now)?;
        match revoked {
            Some(denial) => Err(TokenRejection::Revoked(denial).into()),
            None => Ok(caller),
        }
    }

    /// The request path's first try: the codec plus the in-memory view of token state, with no
    /// blocking work, so it can run on the async reactor. `Ok(None)` means the view lacks this
    /// user: call [`Auth::authenticate`] on the blocking pool instead.
    pub fn authenticate_in_memory(&self, token: &str, now: i64) -> Result<Option<Authenticated>> {
        let claims = self
            .codec()
            .verify_cached(token, now)
            .map_err(TokenRejection::Codec)?;
        let verified = claims.claims();
        let Some(state) =
            self.store
                .cached_token_state(&verified.sub, &verified.jti, &verified.sid)?
        else {
            return Ok(None);
        };
        let (caller, revoked) = judge(claims, state)?;
        match revoked {
            Some(denial) => Err(TokenRejection::Revoked(denial).into()),
            None => Ok(Some(caller)),
        }
    }

    /// Ends the presented token's session: its refresh token and every access token it issued
    /// stop working at once. Idempotent: a genuine token of a session already ended succeeds.
    pub fn logout(&self, token: &str, now: i64) -> Result<()> {
        let (caller, _already_revoked) = self.check_token(token, now)?;
        let claims = caller.claims.claims();
        self.end_session_by(&claims.sid, Some(&claims.sub), EndReason::Logout, now)?;
        Ok(())
    }

    /// Logs out everywhere: every session ends and every token issued so far stops working at
    /// once — one generation bump.
    pub fn logout_everywhere(&self, caller: &Authenticated) -> Result<()> {
        self.store.bump_generation(&caller.profile.id)?;
        Ok(())
    }

    /// Changes the password (current one required, ASVS 6.2.2); every other session ends, and
    /// the caller's session continues with a fresh access and refresh token. The current
    /// password is a guess like any login's: reserved against the softlock before hashing.
    pub fn change_password(
        &self,
        caller: &Authenticated,
        current: &SecretString,
        new: &SecretString,
        second: Option<&SecondFactor>,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<Grant> {
        let credentials =
            self.reauthenticate_with_second_factor(caller, current, second, now, cancel)?;
        let profile = &caller.profile;
        let context = [profile.username.as_typed(), profile.full_name.as_str()];
        let password = self
            .settings
            .password_policy
            .accept("new_password", new, &context)
            .map_err(|e| AuthError::Validation(vec![e]))?;
        let hash = self.hashing.hash(password, cancel)?;
        let session = self.live_session_of(caller, now)?;
        let generation = credentials.token_generation.saturating_add(1);
        let access = self.issue_access(&session, generation, now);
        let mut verified_hash = credentials.password_hash;
        for _ in 0..PASSWORD_CHANGE_ROUNDS {
            let change = PasswordChange {
                user_id: &session.user_id,
                session_id: &session.id,
                new_generation: generation,
                verified_hash: &verified_hash,
                new_hash: &hash,
                now,
            };
            match self.store.change_password(&change)? {
                PasswordChangeOutcome::Changed {
                    refresh_counter,
                    session_expires_at,
                } => return self.grant(access, refresh_counter, session_expires_at, now),
                PasswordChangeOutcome::SessionEnded => {
                    return Err(TokenRejection::EndedMeanwhile.into());
                }
                PasswordChangeOutcome::PasswordChanged => {
                    verified_hash = self.reverify_after_hash_moved(
                        caller,
                        current,
                        credentials.token_generation,
                        cancel,
                    )?;
                }
            }
        }
        Err(
            StoreError::Contended("the password hash kept changing under a password change".into())
                .into(),
        )
    }

    /// The stored hash changed between verifying the current password and replacing it. A
    /// login that rehashed the same password (new argon2 parameters) does that without
    /// revoking anything, and must not make a right password look wrong: the password is
    /// verified against the hash stored now, and that hash is the one to replace. A moved
    /// generation means the password was changed or every session ended meanwhile: this
    /// token's session is gone.
    fn reverify_after_hash_moved(
        &self,
        caller: &Authenticated,
        current: &SecretString,
        generation: u64,
        cancel: &Cancellation,
    ) -> Result<String> {
        let stored = self.stored_credentials(caller)?;
        if stored.token_generation != generation {
            return Err(TokenRejection::StaleGeneration.into());
        }
        match self.check_password(current, &stored.password_hash, cancel)? {
            Verification::Match { .. } => Ok(stored.password_hash),
            Verification::Mismatch => Err(AuthError::WrongCurrentPassword),
        }
    }

    /// Deletes the account after re-authentication with the password (ASVS 5.0 asks for it
    /// before sensitive operations): its tokens die with it and the username is free again.
    pub fn delete_account(
        &self,
        caller: &Authenticated,
        password: &SecretString,
        second: Option<&SecondFactor>,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<()> {
        self.reauthenticate_with_second_factor(caller, password, second, now, cancel)?;
        self.store.delete_user(&caller.profile.id)?;
        Ok(())
    }

    /// The session's user proves they know the password: reserved against the softlock, then
    /// verified. A wrong password is [`AuthError::WrongCurrentPassword`].
    fn reauthenticate(
        &self,
        caller: &Authenticated,
        password: &SecretString,
        now: i64,
        cancel: &Cancellation,
    ) -> Result<Credentials> {
        let credentials = self.stored_credentials(caller)?;
        self.reserve_attempt(&credentials.user_id, now)?;
        let verified = self.check_password(password, &credentials.password_hash, cancel)?;
        if verified == Verification::Mismatch {
            return Err(AuthError::WrongCurrentPassword);
        }
        Ok(credentials)
    }

    /// The caller's credentials as stored now — by name, and only if the name still belongs
    /// to the same account (a deleted and re-registered name is another user).
    fn stored_credentials(&self, caller: &Authenticated) -> Result<Credentials> {
        Ok(self
            .store
            .find_credentials(&caller.profile.username)?
            .filter(|c| c.user_id == caller.profile.id)
            .ok_or(TokenRejection::UnknownUser)?)
    }

    fn reserve_attempt(&self, user_id: &UserId, now: i64) -> Result<()> {
        self.store
            .reserve_attempt(user_id, &self.settings.lockout, now)?
            .map_err(|retry_after| AuthError::Throttled { retry_after })
    }

    /// Drops denylist and ledger rows for tokens past expiry (plus the codec's leeway), and
    /// sessions that can serve nothing any more.
    pub fn prune(&self, now: i64) -> Result<usize> {
        let leeway = self.codec().policy().leeway;
        let cutoff = now.saturating_sub(leeway);
        let longest_lifetime = self.settings.token_ttl.saturating_add(leeway);
        let idle = self.settings.sessions.idle_timeout;
        Ok(self.store.prune_expired(cutoff, longest_lifetime, idle)?)
    }

    /// Verified caller plus whether the token is on the denylist.
    fn check_token(&self, token: &str, now: i64) -> Result<(Authenticated, Option<Denial>)> {
        let claims = self
            .codec()
            .verify(token, now)
            .map_err(TokenRejection::Codec)?;
        check_revocation(self.store.as_ref(), claims)
    }

    /// One argon2 verification on the hashing threads, whatever the input.
    fn check_password(
        &self,
        raw: &SecretString,
        phc: &str,
        cancel: &Cancellation,
    ) -> Result<Verification> {
        match Password::normalize(raw.expose()) {
            Ok(password) => Ok(self.hashing.verify(password, phc.to_owned(), cancel)?),
            Err(_) => {
                self.hashing.verify_dummy(raw.expose(), cancel)?;
                Ok(Verification::Mismatch)
            }
        }
    }
}

/// Whether a token that passed the codec still stands: its user exists and its generation is
/// current. Returns the session and whether the `jti` is denylisted. Shared by the server and
/// `tessera-token verify --db`, so both judge revocation identically.
pub fn check_revocation(
    store: &dyn Store,
    claims: VerifiedClaims,
) -> Result<(Authenticated, Option<Denial>)> {
    let state = store
        .token_state(
            &claims.claims().sub,
            &claims.claims().jti,
            &claims.claims().sid,
        )?
        .ok_or(TokenRejection::UnknownUser)?;
    judge(claims, state)
}

/// A token stands if it carries its user's current generation; says whether it is denylisted.
fn judge(claims: VerifiedClaims, state: TokenState) -> Result<(Authenticated, Option<Denial>)> {
    if claims.claims().r#gen != state.current_generation {
        return Err(TokenRejection::StaleGeneration.into());
    }
    let caller = Authenticated {
        claims,
        profile: state.profile,
    };
    Ok((caller, state.revoked))
}
