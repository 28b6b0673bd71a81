//! Introspection clients: the resource servers allowed to ask `POST /v1/introspect` whether a
//! token stands (RFC 7662 §2.1 requires them to authenticate).
//!
//! A client's secret is 256 bits from the OS CSPRNG, shown once by `tessera client add` and
//! stored only as its SHA-256 digest. A password hash (argon2) would protect a guessable secret;
//! this one cannot be guessed, so a fast digest loses nothing and lets every introspection
//! request check it without a hashing thread.

use super::secret::SecretString;
use crate::crypto::ct::constant_time_eq;
use crate::crypto::random;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Prefix of every client secret: a leaked one is recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "tsc_";
/// The longest client name.
pub const MAX_NAME_LEN: usize = 64;

/// A client's name (its `client_id`): 1–64 of `A–Z a–z 0–9 . _ -`, so it needs no escaping in
/// a Basic credential, a log line or a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a client name is 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -")]
pub struct BadClientName;

impl ClientName {
    pub fn parse(text: &str) -> Result<Self, BadClientName> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if (1..=MAX_NAME_LEN).contains(&text.len()) && text.bytes().all(allowed) {
            Ok(Self(text.to_owned()))
        } else {
            Err(BadClientName)
        }
    }

    /// A name read back from storage, where only parsed names are written.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh secret: the prefix and 32 random bytes, base64url.
pub fn new_secret() -> SecretString {
    SecretString::new(format!("{SECRET_PREFIX}{}", random::base64url_id::<32>()))
}

/// What is stored instead of the secret: its SHA-256, base64url.
pub fn secret_digest(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `presented` is the secret whose digest is `stored`, compared in constant time.
/// `stored` is `None` for a client that does not exist: the same digest and comparison run, so
/// timing does not say which names exist.
pub fn secret_matches(presented: &str, stored: Option<&str>) -> bool {
    const NO_CLIENT: &str = "no client has this digest; it is compared so timing stays flat";
    let presented = secret_digest(presented);
    let matched = constant_time_eq(presented.as_bytes(), stored.unwrap_or(NO_CLIENT).as_bytes());
    matched && stored.is_some()
}

/// One client as the admin CLI lists it (never its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub name: ClientName,
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_and_prints_as_given() {
        let name = ClientName::parse("api.example-2_prod").unwrap();
        assert_eq!(name.as_str(), "api.example-2_prod");
        assert_eq!(name.to_string(), "api.example-2_prod");
    }

    #[test]
    fn names_are_a_small_safe_alphabet() {
        for good in ["billing", "api.example-2_prod", &"a".repeat(64)] {
            assert!(ClientName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "with space",
            "colon:",
            "é",
            "a/b",
            &"a".repeat(65),
            "%41",
        ] {
            assert_eq!(ClientName::parse(bad), Err(BadClientName), "{bad}");
        }
    }

    #[test]
    fn a_secret_is_256_random_bits_and_only_its_digest_matches() {
        let secret = new_secret();
        let text = secret.expose();
        assert!(text.starts_with(SECRET_PREFIX));
        assert_eq!(text.len(), SECRET_PREFIX.len() + 43);
        assert_ne!(text, new_secret().expose());
        let stored = secret_digest(text);
        assert!(!stored.contains(&text[SECRET_PREFIX.len()..]));
        assert!(secret_matches(text, Some(&stored)));
        assert!(!secret_matches(&format!("{text}x"), Some(&stored)));
        assert!(!secret_matches(text, None));
        assert!(!secret_matches(
            "no client has this digest; it is compared so timing stays flat",
            None
        ));
    }
}
