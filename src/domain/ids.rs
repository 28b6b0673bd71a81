//! Identifiers, as types: a user id, a token id (`jti`) and a session id (`sid`) cannot be
//! swapped for each other or for a username by mistake. All are 128 random bits from the OS, base64url without padding —
//! opaque, so they reveal neither order nor volume.

use crate::crypto::random;
use serde::Serialize;
use std::fmt;

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh id: 128 bits from the OS CSPRNG.
            pub fn random() -> Self {
                Self(random::base64url_id::<16>())
            }

            /// An id as stored, or as carried by a verified token. Not validated: an id that names
            /// nothing simply matches nothing.
            pub fn from_string(id: String) -> Self {
                Self(id)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        // Derived Hash and Eq are those of the inner String, so lookups by `&str` agree.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// A user's stable id: the token's `sub`, never the username (names can be freed and reused).
    UserId
);
random_id!(
    /// A token's id (`jti`): the denylist key.
    TokenId
);
random_id!(
    /// A session's id (`sid`): what a login starts, its refresh tokens rotate within and its
    /// access tokens carry. Not a secret: it names a session, it does not prove one.
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_22_url_safe_characters_and_distinct() {
        let (a, b) = (UserId::random(), UserId::random());
        assert_eq!(a.as_str().len(), 22);
        assert_ne!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
    }
}
