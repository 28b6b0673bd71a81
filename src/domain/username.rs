//! Usernames, parsed once into a canonical form (RFC 8265 §3.3, UsernameCaseMapped).
//!
//! Parse, don't validate: a [`Username`] always holds a valid name, so code further down never
//! re-checks. The canonical form (width-mapped, lower-cased, NFC) is the identity — `Kvothe`,
//! `kvothe` and fullwidth `ＫＶＯＴＨＥ` are one account — while the name as typed is kept for display.

use precis_core::profile::Profile as _;
use precis_profiles::UsernameCaseMapped;

/// RFC 8265 leaves length to the application; 64 code points is ample and bounds index size.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Canonical names that would collide with a route: `/v1/users/me` is the caller's own
/// account, so an account *named* `me` would get a `Location` that means someone else.
const RESERVED: &[&str] = &["me"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    as_typed: String,
    canonical: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username must not be empty")]
    Empty,
    #[error("username must be at most {MAX_USERNAME_CHARS} characters")]
    TooLong,
    #[error(
        "username may hold letters, digits and punctuation, but no spaces, symbols or emoji, control or invisible characters"
    )]
    DisallowedCharacter,
    #[error("that username is reserved")]
    Reserved,
}

impl UsernameError {
    /// Stable machine-readable code for API clients.
    pub fn code(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::DisallowedCharacter => "disallowed_character",
            Self::Reserved => "reserved",
        }
    }
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if raw.is_empty() {
            return Err(UsernameError::Empty);
        }
        if raw.chars().count() > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong);
        }
        // The IdentifierClass refuses spaces, controls, zero-width and unassigned code points.
        let profile = UsernameCaseMapped::new();
        let canonical = profile
            .enforce(raw)
            .map_err(|_| UsernameError::DisallowedCharacter)?
            .into_owned();
        // RFC 8264 §7 checks the class on the mapped and normalised string; `precis-profiles`
        // checks the input, so a base character and a combining mark that NFC composes into a
        // symbol (`>` + U+0338 → `≯`) would pass. A canonical name must be a fixed point: one
        // that enforces to itself.
        if profile.enforce(&canonical).ok().as_deref() != Some(canonical.as_str()) {
            return Err(UsernameError::DisallowedCharacter);
        }
        if canonical.chars().count() > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong);
        }
        if RESERVED.contains(&canonical.as_str()) {
            return Err(UsernameError::Reserved);
        }
        Ok(Self {
            as_typed: raw.to_owned(),
            canonical,
        })
    }

    /// A name read back from the store, which only ever holds parsed names. Not re-parsed:
    /// rules that tightened since (a newly reserved name) must not make an account unreadable.
    pub fn from_stored(as_typed: String, canonical: String) -> Self {
        Self {
            as_typed,
            canonical,
        }
    }

    /// As the user typed it: for display.
    pub fn as_typed(&self) -> &str {
        &self.as_typed
    }

    /// The identity: unique in the store, compared on login.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `me` names the caller's own account in routes, so no account may be called `me`, in any
    /// case or width.
    /// Found by the `username` fuzz target: `>` + U+0338 passes the class check as typed but
    /// composes into `≯` (a math symbol, outside the IdentifierClass) — a canonical name that
    /// would not parse itself.
    #[test]
    fn a_name_that_normalises_into_a_disallowed_character_is_refused() {
        assert_eq!(
            Username::parse(">\u{338}020"),
            Err(UsernameError::DisallowedCharacter)
        );
        assert_eq!(
            Username::parse("\u{226f}020"),
            Err(UsernameError::DisallowedCharacter)
        );
        let composed = Username::parse("e\u{301}mile").unwrap();
        assert_eq!(
            composed.canonical(),
            "\u{e9}mile",
            "NFC composes letters as before"
        );
    }

    #[test]
    fn names_that_collide_with_routes_are_reserved_in_every_case_and_width() {
        for name in ["me", "ME", "Me", "ｍｅ", "ＭＥ"] {
            assert_eq!(
                Username::parse(name),
                Err(UsernameError::Reserved),
                "{name}"
            );
        }
        assert!(Username::parse("meg").is_ok());
    }

    #[test]
    fn case_and_width_variants_share_one_canonical_form() {
        for variant in ["kvothe", "Kvothe", "KVOTHE", "ＫＶＯＴＨＥ"] {
            assert_eq!(Username::parse(variant).unwrap().canonical(), "kvothe");
        }
        assert_eq!(Username::parse("Kvothe").unwrap().as_typed(), "Kvothe");
    }

    #[test]
    fn the_briefs_usernames_are_accepted() {
        for name in ["gh0st", "jet-setter", "kvothe", "tpratchett", "lmb"] {
            assert_eq!(Username::parse(name).unwrap().canonical(), name);
        }
    }

    #[test]
    fn spaces_controls_and_zero_width_characters_are_rejected() {
        for bad in [
            "a b",
            " kvothe",
            "kvothe\n",
            "kv\u{0}othe",
            "kv\u{200b}othe",
            "kv\u{7f}",
        ] {
            assert_eq!(
                Username::parse(bad),
                Err(UsernameError::DisallowedCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_error_has_its_stable_code() {
        let codes = [
            UsernameError::Empty,
            UsernameError::TooLong,
            UsernameError::DisallowedCharacter,
            UsernameError::Reserved,
        ]
        .map(UsernameError::code);
        assert_eq!(
            codes,
            ["empty", "too_long", "disallowed_character", "reserved"]
        );
    }

    #[test]
    fn length_is_bounded_in_code_points() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert!(Username::parse(&"é".repeat(64)).is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(65)),
            Err(UsernameError::TooLong)
        );
    }

    #[test]
    fn sql_metacharacters_are_just_characters() {
        let name = Username::parse("robert');DROP--").unwrap();
        assert_eq!(name.canonical(), "robert');drop--");
    }
}
