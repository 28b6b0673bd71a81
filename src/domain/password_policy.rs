//! The password policy (NIST SP 800-63B rev 4 §3.1.1.2; OWASP ASVS 5.0 V6.2).
//!
//! Length is the rule that matters; no composition rules, no truncation. On top of length we
//! refuse passwords an attacker guesses first: common and breached ones (zxcvbn's frequency
//! lists and pattern matching) and *context* passwords — the username, the full name or the
//! service's name, or nothing but their words repeated. Containing a name word is fine:
//! "Thats Sir Terry to you!" for Terry Pratchett is a good password.

use super::password::{NormalizationError, Password};
use super::secret::SecretString;
use super::validation::FieldError;

/// How strong a password must be, with the context it must not be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in code points. NIST: 15 for single-factor authentication.
    pub min_chars: usize,
    /// Maximum length in code points; NIST asks that at least 64 be allowed.
    pub max_chars: usize,
}

/// Never configurable below this: NIST's floor when a password is one factor of several.
pub const ABSOLUTE_MIN_CHARS: usize = 8;

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 15,
            max_chars: 1024,
        }
    }
}

/// zxcvbn looks at this many leading code points: its matchers are superlinear, and a prefix
/// this long already reveals a common password or a repetition.
const ESTIMATOR_PREFIX_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("password must be at least {0} characters")]
    TooShort(usize),
    #[error("password must be at most {0} characters")]
    TooLong(usize),
    #[error("password is too common or too easy to guess")]
    TooCommon,
    #[error("password must not be made of your username, your name or the service's name")]
    ContextSpecific,
}

impl PolicyViolation {
    /// Stable machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "too_short",
            Self::TooLong(_) => "too_long",
            Self::TooCommon => "too_common",
            Self::ContextSpecific => "context_specific",
        }
    }
}

impl PasswordPolicy {
    /// Turns a client's password into an acceptable [`Password`], reporting the failure against
    /// `field`. Length is checked on the raw input first, so an over-long password is refused
    /// before any normalisation or estimation work.
    pub fn accept(
        &self,
        field: &'static str,
        raw: &SecretString,
        context: &[&str],
    ) -> Result<Password, FieldError> {
        let violation = |v: PolicyViolation| FieldError::new(field, v.code(), v.to_string());
        self.check_length(raw.expose().chars().count())
            .map_err(violation)?;
        let password = Password::normalize(raw.expose()).map_err(|e| {
            let code = match e {
                NormalizationError::Empty => "too_short",
                NormalizationError::DisallowedCharacter => "disallowed_character",
            };
            FieldError::new(field, code, e.to_string())
        })?;
        self.check(&password, context).map_err(violation)?;
        Ok(password)
    }

    /// Checks length first (cheap, and the only check for an over-long password), then
    /// context, then guessability. `context` holds the username, full name and so on.
    pub fn check(&self, password: &Password, context: &[&str]) -> Result<(), PolicyViolation> {
        self.check_length(password.chars())?;
        if is_built_from_context(password.as_str(), context) {
            return Err(PolicyViolation::ContextSpecific);
        }
        let prefix: String = password
            .as_str()
            .chars()
            .take(ESTIMATOR_PREFIX_CHARS)
            .collect();
        // Score 3 means more than 10^8 guesses by zxcvbn's estimate: out of reach of an online
        // attack and of the top of every breached-password list.
        if zxcvbn::zxcvbn(&prefix, &[]).score() < zxcvbn::Score::Three {
            return Err(PolicyViolation::TooCommon);
        }
        Ok(())
    }

    /// Length alone, on a count of code points: usable before normalisation to refuse a huge
    /// input without doing any work on it.
    pub fn check_length(&self, chars: usize) -> Result<(), PolicyViolation> {
        if chars < self.min_chars {
            return Err(PolicyViolation::TooShort(self.min_chars));
        }
        if chars > self.max_chars {
            return Err(PolicyViolation::TooLong(self.max_chars));
        }
        Ok(())
    }
}

/// True when `password`, ignoring case, spaces and punctuation, is one of the context strings
/// or a sequence made only of their words (each usable any number of times).
fn is_built_from_context(password: &str, context: &[&str]) -> bool {
    let target = squash(password);
    if target.is_empty() {
        return true;
    }
    let mut words: Vec<String> = context
        .iter()
        .chain(&["tessera"])
        .flat_map(|text| {
            let whole = squash(text);
            text.split(|c: char| !c.is_alphanumeric())
                .map(squash)
                .chain(std::iter::once(whole))
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    words.sort();
    words.dedup();
    can_segment(&target, &words)
}

/// Lower-cased letters and digits only.
fn squash(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Word-break by dynamic programming: can `target` be split entirely into `words`?
fn can_segment(target: &str, words: &[String]) -> bool {
    let bytes = target.as_bytes();
    // reachable[i]: the first i bytes split into words. The empty prefix always does.
    let mut reachable = vec![false; bytes.len() + 1];
    if let Some(empty) = reachable.first_mut() {
        *empty = true;
    }
    for start in 0..bytes.len() {
        if reachable.get(start) != Some(&true) {
            continue;
        }
        let rest = bytes.get(start..).unwrap_or_default();
        for word in words {
            if rest.starts_with(word.as_bytes())
                && let Some(end) = reachable.get_mut(start + word.len())
            {
                *end = true;
            }
        }
    }
    reachable.last() == Some(&true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(password: &str, context: &[&str]) -> Result<(), PolicyViolation> {
        PasswordPolicy::default().check(&Password::normalize(password).unwrap(), context)
    }

    #[test]
    fn the_briefs_good_passwords_pass() {
        assert_eq!(
            check("3##Heel7sa*9-zRwT", &["kvothe", "Patrick Rothfuss"]),
            Ok(())
        );
        assert_eq!(
            check(
                "Thats Sir Terry to you!",
                &["tpratchett", "Terry Pratchett"]
            ),
            Ok(())
        );
    }

    #[test]
    fn a_password_scored_exactly_three_passes_and_one_scored_two_does_not() {
        assert_eq!(
            zxcvbn::zxcvbn("sunshine12345678!", &[]).score(),
            zxcvbn::Score::Three
        );
        assert_eq!(check("sunshine12345678!", &[]), Ok(()));
        assert_eq!(
            zxcvbn::zxcvbn("monkey123monkey1", &[]).score(),
            zxcvbn::Score::Two
        );
        assert_eq!(
            check("monkey123monkey1", &[]),
            Err(PolicyViolation::TooCommon)
        );
    }

    #[test]
    fn both_length_bounds_are_inclusive() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.check_length(policy.min_chars), Ok(()));
        assert_eq!(policy.check_length(policy.max_chars), Ok(()));
        assert_eq!(
            policy.check_length(policy.min_chars - 1),
            Err(PolicyViolation::TooShort(policy.min_chars))
        );
        assert_eq!(
            policy.check_length(policy.max_chars + 1),
            Err(PolicyViolation::TooLong(policy.max_chars))
        );
    }

    #[test]
    fn each_violation_has_its_stable_code() {
        let codes = [
            PolicyViolation::TooShort(15),
            PolicyViolation::TooLong(1024),
            PolicyViolation::TooCommon,
            PolicyViolation::ContextSpecific,
        ]
        .map(|violation| violation.code());
        assert_eq!(
            codes,
            ["too_short", "too_long", "too_common", "context_specific"]
        );
    }

    #[test]
    fn the_briefs_short_passwords_fail_on_length() {
        assert_eq!(check("r0u7!nG", &[]), Err(PolicyViolation::TooShort(15)));
        assert_eq!(check("null", &[]), Err(PolicyViolation::TooShort(15)));
    }

    #[test]
    fn length_counts_code_points_not_bytes() {
        // 15 three-byte characters: 45 bytes but exactly the minimum in code points.
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check_length("日本語".repeat(5).chars().count()),
            Ok(())
        );
        assert_eq!(policy.check_length(14), Err(PolicyViolation::TooShort(15)));
        assert_eq!(
            policy.check_length(1025),
            Err(PolicyViolation::TooLong(1024))
        );
    }

    #[test]
    fn common_and_repetitive_passwords_are_refused() {
        for weak in [
            "passwordpassword",
            "aaaaaaaaaaaaaaaa",
            "123456789012345",
            "qwertyuiopasdfgh",
        ] {
            assert_eq!(check(weak, &[]), Err(PolicyViolation::TooCommon), "{weak}");
        }
    }

    #[test]
    fn passwords_made_of_context_words_are_refused() {
        let context = ["tpratchett", "Terry Pratchett"];
        for bad in [
            "Terry Pratchett!",
            "terrypratchettterrypratchett",
            "Pratchett Terry Terry",
            "TPRATCHETT tpratchett",
            "tessera tessera tessera",
        ] {
            assert_eq!(
                check(bad, &context),
                Err(PolicyViolation::ContextSpecific),
                "{bad}"
            );
        }
    }

    #[test]
    fn containing_a_name_word_is_fine() {
        assert_eq!(
            check(
                "terry likes long walks at dusk",
                &["tpratchett", "Terry Pratchett"]
            ),
            Ok(())
        );
    }
}
