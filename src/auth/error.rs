//! What a use case can answer instead of success.

use super::hash_pool::PoolError;
use crate::domain::ids::SessionId;
use crate::domain::session::{Denial, SessionStatus};
use crate::domain::validation::FieldError;
use crate::store::StoreError;
use crate::token::{RefreshTokenError, TokenError};

/// Why a presented token does not authenticate anyone. Kept apart for logs and tests; clients
/// all get the same 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("{0}")]
    Codec(TokenError),
    /// Its `sid` (or `jti`) is on the denylist: the session ended, for the reason recorded.
    #[error("token's session was ended: {0}")]
    Revoked(Denial),
    /// Its session is on file but not live: ended, expired, or revoked with all the user's.
    #[error("token's session is not live: {0}")]
    SessionNotLive(SessionStatus),
    /// Its session ended, or every session of the user was revoked, while the request that
    /// needed it was being served.
    #[error("token's session ended, or all the user's sessions were revoked, during the request")]
    EndedMeanwhile,
    #[error(
        "token predates the user's last log-out-everywhere, password change or \
         `tessera user revoke`"
    )]
    StaleGeneration,
    #[error("token's user no longer exists")]
    UnknownUser,
}

/// Why a presented refresh token earns nothing. Kept apart for logs, metrics and tests; clients
/// all get the same 401. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshRejection {
    #[error("{0}")]
    NotOurs(RefreshTokenError),
    #[error("session {0} is not on file")]
    UnknownSession(SessionId),
    #[error("session {session} is not live: {status}")]
    NotLive {
        session: SessionId,
        status: SessionStatus,
    },
    #[error("superseded refresh token replayed: session {0} ended")]
    Reused(SessionId),
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
    #[error("the account has a second factor: a code is required")]
    TotpRequired,
    #[error("the second-factor code is missing, wrong or already used")]
    WrongSecondFactor,
    #[error("the code does not confirm the pending second factor")]
    WrongTotpCode,
    #[error("a second factor is already active")]
    TotpAlreadyActive,
    #[error("no second factor is waiting for confirmation")]
    NoPendingTotp,
    #[error("the account has no second factor")]
    NoActiveTotp,
    #[error("too many failed attempts; retry in {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("invalid token: {0}")]
    InvalidToken(TokenRejection),
    #[error("invalid refresh token: {0}")]
    InvalidRefreshToken(RefreshRejection),
    #[error("no such live session of this user")]
    SessionNotFound,
    /// An introspection client's name or secret is wrong, or missing: one answer for all.
    #[error("unknown introspection client or wrong secret")]
    InvalidClient,
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

impl From<RefreshRejection> for AuthError {
    fn from(rejection: RefreshRejection) -> Self {
        Self::InvalidRefreshToken(rejection)
    }
}

impl From<TokenRejection> for AuthError {
    fn from(rejection: TokenRejection) -> Self {
        Self::InvalidToken(rejection)
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;
