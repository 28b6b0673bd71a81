//! The HTTP edge's parsers of untrusted input, exactly as the handlers call them, for the fuzz
//! targets in `fuzz/` (each asserts properties of what these accept) and for tests. Nothing here
//! is a second implementation: each function forwards to the one the request path uses.

use super::problem::ApiError;
use crate::domain::secret::SecretString;
use hyper::{HeaderMap, Uri};

pub use super::body::Form;

/// The Bearer token of a request (`http::bearer`): the `Authorization` header, with any
/// query-string token refused.
pub fn bearer_token<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<&'a str, ApiError> {
    super::bearer::extract(headers, uri)
}

/// A form body's parameters (introspection): repeats refused, empty values dropped.
pub fn form(bytes: &[u8]) -> Result<Form, ApiError> {
    Form::parse(bytes)
}

/// An introspection client's name and secret from `Authorization: Basic`.
pub fn client_credentials(headers: &HeaderMap) -> Result<(String, SecretString), ApiError> {
    super::introspection::client_credentials(headers)
}
