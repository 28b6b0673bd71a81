//! Free-text profile fields (full name, mother's favourite search engine).
//!
//! Names do not split into first/last ("William L. Simon"), so a full name is one field. We store
//! NFC with surrounding whitespace trimmed — the seed data's "Duck Duck Go " and "Google " arrive
//! with trailing spaces that are data-entry noise, not meaning — and refuse control characters
//! (they corrupt logs and terminals) and absurd lengths.

use super::validation::FieldError;
use unicode_normalization::UnicodeNormalization as _;

pub const MAX_PROFILE_TEXT_CHARS: usize = 256;

/// Cleaned profile text: trimmed, NFC, no control or invisible characters, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileText(String);

impl ProfileText {
    /// Cleans `raw`, reporting a failure against `field`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldError> {
        clean(field, raw).map(Self)
    }

    /// Text read back from the store, which only ever holds parsed text.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn clean(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let error = |code, detail: &str| FieldError::new(field, code, detail);
    let text: String = raw.trim().nfc().collect();
    if text.is_empty() {
        return Err(error("empty", "must not be empty"));
    }
    if text.chars().count() > MAX_PROFILE_TEXT_CHARS {
        return Err(error("too_long", "must be at most 256 characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(error(
            "disallowed_character",
            "must not contain control or invisible formatting characters",
        ));
    }
    Ok(text)
}

/// Bidirectional overrides and zero-width characters: invisible, and used to spoof text.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn surrounding_whitespace_is_trimmed_inner_kept() {
        assert_eq!(clean("f", "Duck Duck Go ").unwrap(), "Duck Duck Go");
        assert_eq!(clean("f", "William L. Simon").unwrap(), "William L. Simon");
    }

    #[test]
    fn empty_control_and_overlong_are_refused() {
        assert_eq!(clean("f", "   ").unwrap_err().code, "empty");
        assert_eq!(
            clean("f", "a\u{7}b").unwrap_err().code,
            "disallowed_character"
        );
        assert_eq!(
            clean("f", "a\u{202e}b").unwrap_err().code,
            "disallowed_character"
        );
        assert_eq!(clean("f", &"x".repeat(257)).unwrap_err().code, "too_long");
    }

    #[test]
    fn exactly_the_longest_text_is_kept_counting_characters() {
        let longest = "é".repeat(super::MAX_PROFILE_TEXT_CHARS);
        assert_eq!(clean("f", &longest).unwrap(), longest);
    }

    #[test]
    fn text_is_stored_in_nfc() {
        assert_eq!(clean("f", "Jose\u{301}").unwrap(), "Jos\u{e9}");
    }
}
