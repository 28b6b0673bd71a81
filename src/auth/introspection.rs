//! Token introspection (RFC 7662) for resource servers: the client authenticates, then learns
//! whether a token stands — by the same checks every request of ours makes.

use super::{Auth, AuthError, Authenticated, Result, TokenRejection};
use crate::domain::client::{self, ClientName};
use crate::domain::secret::SecretString;

impl Auth {
    /// The client whose name and secret these are. Every failure is the same
    /// [`AuthError::InvalidClient`]; an unknown name costs the same digest and comparison as a
    /// wrong secret. Reads storage each time, so a removed client is refused at once.
    pub fn authenticate_client(&self, name: &str, secret: &SecretString) -> Result<ClientName> {
        let name = ClientName::parse(name).ok();
        let stored = match &name {
            Some(name) => self.store.client_secret_digest(name)?,
            None => None,
        };
        let matched = client::secret_matches(secret.expose(), stored.as_deref());
        match name {
            Some(name) if matched => Ok(name),
            _ => Err(AuthError::InvalidClient),
        }
    }

    /// Whether `token` stands now: the caller it names, or why not. Only storage failures are
    /// errors — RFC 7662 answers every token that does not stand with the same `active: false`.
    pub fn introspect(
        &self,
        token: &str,
        now: i64,
    ) -> Result<std::result::Result<Authenticated, TokenRejection>> {
        match self.authenticate(token, now) {
            Ok(caller) => Ok(Ok(caller)),
            Err(AuthError::InvalidToken(reason)) => Ok(Err(reason)),
            Err(other) => Err(other),
        }
    }
}
