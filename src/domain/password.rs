//! Passwords: one normalisation, argon2id hashing to PHC strings, verification and rehash.
//!
//! Normalisation follows RFC 8265's OpaqueString profile (the PRECIS profile for passwords):
//! non-ASCII spaces become U+0020, then NFC. NFC rather than NIST's suggested NFKC because NFKC
//! folds distinct characters together (`ﬁ` → `fi`, `²` → `2`), silently shrinking the password
//! space, while NFC only unifies different encodings of the *same* text — what a user typing on
//! another keyboard produces. The same function runs at registration and at login.
//!
//! Which characters are allowed is decided on a current Unicode table (`unicode-properties`),
//! not PRECIS's: precis-core's tables stop at Unicode 6.3, which made every newer emoji
//! "unassigned" — and NIST SP 800-63B §3.1.1.2 asks that all printing characters, emoji
//! included, be accepted. Refused: controls, unassigned and private-use code points, and the
//! line and paragraph separators; format characters stay (emoji sequences need U+200D).

use crate::crypto::ct::constant_time_eq;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::cell::RefCell;
use std::fmt;
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
use zeroize::Zeroizing;

/// A password after normalisation: zeroed on drop, and Debug never shows it.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a string cannot be a password at all (before any policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizationError {
    #[error("password must not be empty")]
    Empty,
    #[error("password holds control, private-use or unassigned characters")]
    DisallowedCharacter,
}

impl Password {
    pub fn normalize(raw: &str) -> Result<Self, NormalizationError> {
        if raw.is_empty() {
            return Err(NormalizationError::Empty);
        }
        let mut mapped = String::with_capacity(raw.len());
        for c in raw.chars() {
            match c.general_category() {
                GeneralCategory::Control
                | GeneralCategory::Unassigned
                | GeneralCategory::PrivateUse
                | GeneralCategory::Surrogate
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator => {
                    return Err(NormalizationError::DisallowedCharacter);
                }
                // RFC 8265 §4.2.1: non-ASCII spaces map to U+0020.
                GeneralCategory::SpaceSeparator => mapped.push(' '),
                _ => mapped.push(c),
            }
        }
        let normalized = Zeroizing::new(mapped.nfc().collect::<String>());
        // The unnormalised copy is a secret too.
        drop(Zeroizing::new(mapped));
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in Unicode code points, as NIST SP 800-63B §3.1.1.2 counts it.
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

/// argon2id cost parameters. Defaults are OWASP's minimum for argon2id (m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("cannot encode the PHC string: {0}")]
    Encoding(String),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Mismatch,
    /// Matched; `needs_rehash` is true when the stored parameters differ from the configured ones.
    Match {
        needs_rehash: bool,
    },
}

/// Hashes and verifies with one configured parameter set.
pub struct Hasher {
    argon2: Argon2<'static>,
    params: Params,
    /// A real hash of a random password with the current parameters: verifying against it costs
    /// exactly what verifying a real user costs, so unknown usernames take as long as known ones.
    dummy_hash: String,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Output length of our hashes: 256 bits.
const HASH_BYTES: usize = 32;

thread_local! {
    /// argon2's working memory (19 MiB at the defaults), kept per thread and reused: allocating
    /// it per hash made the allocator hold on to many such buffers across threads.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 with this thread's reusable memory.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    BLOCKS.with_borrow_mut(|blocks| {
        let needed = argon2.params().block_count();
        // Exactly the blocks these parameters use: argon2 refuses a different amount.
        if blocks.len() != needed {
            blocks.resize(needed, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, blocks.as_mut_slice())
    })
}

impl Hasher {
    pub fn new(config: HashParams) -> Result<Self, HashError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            Some(HASH_BYTES),
        )
        .map_err(HashError::Params)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut hasher = Self {
            argon2,
            params,
            dummy_hash: String::new(),
        };
        let dummy = Password(Zeroizing::new(crate::crypto::random::base64url_id::<16>()));
        hasher.dummy_hash = hasher.hash(&dummy)?;
        // The constructing thread hashes nothing else: give its working memory back.
        BLOCKS.with_borrow_mut(|blocks| *blocks = Vec::new());
        Ok(hasher)
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a fresh 128-bit salt.
    pub fn hash(&self, password: &Password) -> Result<String, HashError> {
        let salt = crate::crypto::random::bytes::<16>();
        let mut out = [0u8; HASH_BYTES];
        compute(&self.argon2, password.as_str().as_bytes(), &salt, &mut out)
            .map_err(HashError::Params)?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(encoding)?,
            salt: Some(Salt::new(&salt).map_err(encoding)?),
            hash: Some(Output::new(&out).map_err(encoding)?),
        };
        Ok(phc.to_string())
    }

    /// Checks `password` against a stored PHC string, using the parameters stored in it.
    pub fn verify(&self, password: &Password, phc: &str) -> Verification {
        let Some((stored, argon2)) = parse_phc(phc) else {
            return Verification::Mismatch;
        };
        let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
            return Verification::Mismatch;
        };
        let mut out = vec![0u8; expected.len()];
        let computed = compute(
            &argon2,
            password.as_str().as_bytes(),
            salt.as_ref(),
            &mut out,
        );
        if computed.is_ok() && constant_time_eq(&out, expected.as_bytes()) {
            Verification::Match {
                needs_rehash: self.needs_rehash(&stored),
            }
        } else {
            Verification::Mismatch
        }
    }

    /// Spends one verification's worth of work and always fails: for unknown users and
    /// passwords that could not even be normalised.
    pub fn verify_dummy(&self, raw_password: &str) {
        let _ = self.verify(
            &Password(Zeroizing::new(raw_password.to_owned())),
            &self.dummy_hash,
        );
    }

    /// Whether `phc` was made with exactly the configured parameters (so verifying it costs
    /// what verifying the dummy hash costs). False for anything unparsable.
    pub fn has_current_params(&self, phc: &str) -> bool {
        PasswordHash::new(phc).is_ok_and(|stored| !self.needs_rehash(&stored))
    }

    fn needs_rehash(&self, stored: &PasswordHash) -> bool {
        let same_algorithm = stored.algorithm == argon2::ARGON2ID_IDENT
            && stored.version == Some(Version::V0x13.into());
        let same_params = Params::try_from(stored).is_ok_and(|p| {
            p.m_cost() == self.params.m_cost()
                && p.t_cost() == self.params.t_cost()
                && p.p_cost() == self.params.p_cost()
        });
        !(same_algorithm && same_params)
    }
}

fn encoding(error: impl fmt::Display) -> HashError {
    HashError::Encoding(error.to_string())
}

/// A stored PHC string and an `Argon2` configured exactly as it says.
fn parse_phc(phc: &str) -> Option<(PasswordHash, Argon2<'static>)> {
    let stored = PasswordHash::new(phc).ok()?;
    let algorithm = Algorithm::try_from(stored.algorithm.as_str()).ok()?;
    let version = Version::try_from(stored.version.unwrap_or(0x13)).ok()?;
    let params = Params::try_from(&stored).ok()?;
    Some((stored, Argon2::new(algorithm, version, params)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashParams {
        HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn pw(s: &str) -> Password {
        Password::normalize(s).unwrap()
    }

    #[test]
    fn hash_is_an_argon2id_phc_string_with_a_random_salt() {
        let hasher = Hasher::new(cheap()).unwrap();
        let a = hasher.hash(&pw("correct horse battery staple")).unwrap();
        let b = hasher.hash(&pw("correct horse battery staple")).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "salts differ");
    }

    #[test]
    fn verify_accepts_the_password_and_rejects_others() {
        let hasher = Hasher::new(cheap()).unwrap();
        let phc = hasher.hash(&pw("correct horse battery staple")).unwrap();
        assert_eq!(
            hasher.verify(&pw("correct horse battery staple"), &phc),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            hasher.verify(&pw("correct horse battery stapl"), &phc),
            Verification::Mismatch
        );
        assert_eq!(hasher.verify(&pw("x"), "not a phc"), Verification::Mismatch);
    }

    #[test]
    fn changed_parameters_ask_for_a_rehash() {
        let old = Hasher::new(cheap()).unwrap();
        let phc = old.hash(&pw("correct horse battery staple")).unwrap();
        let new = Hasher::new(HashParams {
            memory_kib: 128,
            ..cheap()
        })
        .unwrap();
        assert_eq!(
            new.verify(&pw("correct horse battery staple"), &phc),
            Verification::Match { needs_rehash: true }
        );
    }

    #[test]
    fn our_phc_strings_interoperate_with_the_argon2_crates_own() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = Hasher::new(cheap()).unwrap();
        let ours = hasher.hash(&pw("correct horse battery staple")).unwrap();
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        reference
            .verify_password(b"correct horse battery staple", ours.as_str())
            .unwrap();
        let theirs = reference
            .hash_password_with_salt(b"correct horse battery staple", &[3u8; 16])
            .unwrap()
            .to_string();
        assert_eq!(
            hasher.verify(&pw("correct horse battery staple"), &theirs),
            Verification::Match {
                needs_rehash: false
            }
        );
    }

    #[test]
    fn another_argon2_variant_or_version_verifies_and_asks_for_a_rehash() {
        use argon2::PasswordHasher as _;
        let hasher = Hasher::new(cheap()).unwrap();
        for (algorithm, version) in [
            (Algorithm::Argon2i, Version::V0x13),
            (Algorithm::Argon2d, Version::V0x13),
            (Algorithm::Argon2id, Version::V0x10),
        ] {
            let phc = Argon2::new(algorithm, version, Params::new(64, 1, 1, None).unwrap())
                .hash_password_with_salt(b"correct horse battery staple", &[3u8; 16])
                .unwrap()
                .to_string();
            assert_eq!(
                hasher.verify(&pw("correct horse battery staple"), &phc),
                Verification::Match { needs_rehash: true },
                "{phc}"
            );
            assert!(!hasher.has_current_params(&phc), "{phc}");
        }
    }

    #[test]
    fn current_params_are_recognised_and_nothing_else_is() {
        let hasher = Hasher::new(cheap()).unwrap();
        let current = hasher.hash(&pw("correct horse battery staple")).unwrap();
        assert!(hasher.has_current_params(&current));
        let other = Hasher::new(HashParams {
            iterations: 2,
            ..cheap()
        })
        .unwrap()
        .hash(&pw("correct horse battery staple"))
        .unwrap();
        assert!(!hasher.has_current_params(&other));
        assert!(!hasher.has_current_params("not a phc"));
    }

    #[test]
    fn a_hasher_debugs_its_parameters_but_not_its_dummy_hash() {
        let hasher = Hasher::new(cheap()).unwrap();
        let shown = format!("{hasher:?}");
        assert!(shown.contains("m_cost: 64"), "{shown}");
        assert!(!shown.contains(&hasher.dummy_hash), "{shown}");
    }

    #[test]
    fn defaults_meet_owasp_minimums_for_argon2id() {
        let d = HashParams::default();
        assert!(d.memory_kib >= 19_456 && d.iterations >= 2 && d.parallelism >= 1);
    }

    #[test]
    fn normalisation_unifies_encodings_but_not_compatibility_forms() {
        // "é" precomposed vs e + combining acute: one password.
        assert_eq!(pw("caf\u{e9}").as_str(), pw("cafe\u{301}").as_str());
        // A non-ASCII space becomes an ASCII one.
        assert_eq!(pw("a\u{3000}b").as_str(), "a b");
        // NFC keeps the ligature: NFKC would have folded it into "fi".
        assert_eq!(pw("\u{fb01}").as_str(), "\u{fb01}");
        assert!(matches!(
            Password::normalize(""),
            Err(NormalizationError::Empty)
        ));
        assert!(Password::normalize("a\u{0}b").is_err());
    }

    /// Every assigned printable character of a current Unicode is accepted, emoji newer than
    /// the PRECIS tables (Unicode 6.3) included.
    #[test]
    fn every_assigned_printable_character_is_accepted_emoji_included() {
        for raw in [
            "correct-horse-battery-🦄🦄",
            "🛸🧊🪐🔥",
            "👩\u{200D}💻 family 👨\u{200D}👩\u{200D}👧",
            "Thats Sir Terry to you!",
        ] {
            assert!(Password::normalize(raw).is_ok(), "{raw}");
        }
        assert_eq!(Password::normalize("a\u{3000}b").unwrap().as_str(), "a b");
        for raw in [
            "tab\there",
            "nul\0",
            "private\u{E000}",
            "unassigned\u{0378}",
            "line\u{2028}",
        ] {
            assert_eq!(
                Password::normalize(raw).unwrap_err(),
                NormalizationError::DisallowedCharacter,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        assert_eq!(
            format!("{:?}", pw("hunter2hunter2")),
            "Password(<redacted>)"
        );
    }
}
