//! How a field fails validation: one shape, shared by every parser of client input and rendered
//! by the HTTP layer as an entry of problem+json's `errors`.

use std::borrow::Cow;

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The member's name: ours, or for an unknown or repeated member the client's (truncated).
    pub field: Cow<'static, str>,
    /// Stable machine-readable code (`too_short`, `disallowed_character`, …).
    pub code: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: &'static str, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: Cow::Borrowed(field),
            code,
            detail: detail.into(),
        }
    }
}
