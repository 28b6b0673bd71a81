//! Secret text — passwords as they arrive, before normalisation — that is wiped from memory
//! when dropped and never printed.
//!
//! We use `zeroize` directly rather than `secrecy`: every secret here is already a type of ours
//! with a narrow accessor and no `Debug`, so `secrecy`'s wrapper would only add a second layer
//! of the same idea; what we need from a crate is a write the optimiser cannot remove.

use zeroize::Zeroizing;

/// A client-supplied secret string. No `Debug`, no `Display`, no `Clone`: reading it takes an
/// explicit [`SecretString::expose`], and the bytes are zeroed on drop.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<&str> for SecretString {
    fn from(text: &str) -> Self {
        Self::new(text.to_owned())
    }
}
