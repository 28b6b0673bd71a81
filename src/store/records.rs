//! The plain values that cross the storage seam.

use crate::domain::ids::{TokenId, UserId};
use crate::domain::user::UserProfile;
use crate::domain::username::Username;
use std::sync::Arc;

/// An account to insert: a parsed user with its id, its password already hashed.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub password_hash: String,
    pub token_generation: u64,
}

/// The user behind a token, with what is needed to decide whether the token still stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// Shared with the in-memory view: a hit costs a reference count, not five string copies.
    pub profile: Arc<UserProfile>,
    pub current_generation: u64,
    pub revoked: bool,
}

/// One row of the login ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTokenRecord<'a> {
    pub jti: &'a TokenId,
    pub user_id: &'a UserId,
    pub generation: u64,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// One line of `tessera user list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub username: String,
    pub created_at: i64,
    pub token_generation: u64,
    pub failed_logins: u32,
}
