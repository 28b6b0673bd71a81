//! JSON request bodies: media type, size cap, strict parsing, and typed field extraction with
//! errors that name the field — never serde's messages, which can echo the submitted value.

use super::problem::ApiError;
use crate::domain::secret::SecretString;
use crate::domain::validation::FieldError;
use crate::support::strict_json::{self, Member, ObjectError};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{HeaderMap, Request};
use serde_json::Value;
use std::time::Duration;

/// Request bodies are small objects of short strings; nesting beyond this is an attack.
const MAX_BODY_DEPTH: usize = 4;

/// What a JSON route accepts, as a 415 names it.
const JSON: &str = "application/json (UTF-8)";
/// What a form route accepts (introspection, RFC 7662 §2.1).
const FORM: &str = "application/x-www-form-urlencoded";

/// Reads the body as one JSON object, enforcing media type, size and time limits.
pub async fn read_object(
    request: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<JsonObject, ApiError> {
    check_media_type(request.headers(), "application/json", JSON)?;
    let bytes = collect(request, limit, timeout).await?;
    let members = strict_json::parse_object(&bytes, MAX_BODY_DEPTH).map_err(|e| match e {
        ObjectError::InvalidUtf8 => bad_request("The body is not valid UTF-8."),
        ObjectError::ByteOrderMark => {
            bad_request("The body must not start with a byte order mark.")
        }
        ObjectError::NotAnObject => bad_request("The body must be a JSON object."),
        ObjectError::Malformed => bad_request("The body is not well-formed JSON."),
        ObjectError::TooDeep(_) => bad_request("The body is nested too deeply."),
        ObjectError::DuplicateMember(name) => duplicate(&name),
    })?;
    Ok(JsonObject {
        members,
        errors: Vec::new(),
    })
}

/// Reads a form body (`application/x-www-form-urlencoded`), with the same limits.
pub async fn read_form(
    request: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Form, ApiError> {
    check_media_type(request.headers(), FORM, FORM)?;
    let bytes = collect(request, limit, timeout).await?;
    Form::parse(&bytes)
}

/// The whole body, within `limit` bytes and `timeout`.
async fn collect(
    request: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collect = Limited::new(request.into_body(), limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(_)) => Err(bad_request("The request body could not be read.")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn duplicate(name: &str) -> ApiError {
    ApiError::BadRequest {
        detail: "The body repeats a member; see `errors`.".into(),
        errors: vec![FieldError {
            field: truncate(name, 64).into(),
            code: "duplicate_member",
            detail: "appears more than once".into(),
        }],
    }
}

/// A form body's parameters. None may repeat (RFC 6749 §3.1); one sent without a value counts
/// as omitted, and the caller ignores those it does not know. It may hold tokens, so no
/// `Debug`.
pub struct Form {
    parameters: Vec<(String, String)>,
}

impl Form {
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if std::str::from_utf8(bytes).is_err() {
            return Err(bad_request("The body is not valid UTF-8."));
        }
        let mut parameters: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(bytes) {
            if parameters.iter().any(|(seen, _)| *seen == name) {
                return Err(duplicate(&name));
            }
            parameters.push((name.into_owned(), value.into_owned()));
        }
        parameters.retain(|(_, value)| !value.is_empty());
        Ok(Self { parameters })
    }

    /// The parameters, in the order sent.
    pub fn parameters(&self) -> &[(String, String)] {
        &self.parameters
    }

    /// A parameter's value, if it was sent with one.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let index = self.parameters.iter().position(|(n, _)| n == name)?;
        Some(self.parameters.swap_remove(index).1)
    }
}

/// `essence`, optionally with `charset=utf-8` (RFC 8259 §8.1 mandates UTF-8 for JSON anyway; a
/// form is read as UTF-8). `expected` names it in the 415.
fn check_media_type(
    headers: &HeaderMap,
    essence: &str,
    expected: &'static str,
) -> Result<(), ApiError> {
    let refused = ApiError::UnsupportedMediaType { expected };
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(refused);
    };
    let mut parts = value.split(';').map(str::trim);
    if !parts
        .next()
        .unwrap_or_default()
        .eq_ignore_ascii_case(essence)
    {
        return Err(refused);
    }
    for parameter in parts {
        let (name, val) = parameter.split_once('=').unwrap_or((parameter, ""));
        let utf8 = val.trim_matches('"').eq_ignore_ascii_case("utf-8");
        if !(name.trim().eq_ignore_ascii_case("charset") && utf8) {
            return Err(refused);
        }
    }
    Ok(())
}

fn bad_request(detail: &str) -> ApiError {
    ApiError::BadRequest {
        detail: detail.into(),
        errors: Vec::new(),
    }
}

/// A parsed body from which handlers take typed fields; every problem is collected and
/// reported together by [`JsonObject::finish`]. It may hold passwords, so no `Debug`.
pub struct JsonObject {
    members: Vec<Member>,
    errors: Vec<FieldError>,
}

impl JsonObject {
    /// Takes a required string field. `null` counts as missing (it is not a string).
    pub fn string(&mut self, field: &'static str) -> String {
        let position = self.members.iter().position(|(name, _)| name == field);
        let Some(index) = position else {
            self.error(field, "missing", "is required");
            return String::new();
        };
        match self.members.swap_remove(index).1 {
            Value::String(s) => s,
            Value::Null => {
                self.error(field, "null", "must be a string, not null");
                String::new()
            }
            _ => {
                self.error(field, "wrong_type", "must be a string");
                String::new()
            }
        }
    }

    /// Takes an optional string field: absent is `None`; present, it must be a string.
    pub fn optional_string(&mut self, field: &'static str) -> Option<String> {
        self.members
            .iter()
            .any(|(name, _)| name == field)
            .then(|| self.string(field))
    }

    /// Takes a required string field that is a secret: moved, not copied, into a
    /// [`SecretString`] that wipes it on drop.
    pub fn secret(&mut self, field: &'static str) -> SecretString {
        SecretString::new(self.string(field))
    }

    /// Fails with 400 if any field was missing or mistyped, or any unknown field remains.
    pub fn finish(mut self) -> Result<(), ApiError> {
        for (name, _) in std::mem::take(&mut self.members) {
            self.errors.push(FieldError {
                field: truncate(&name, 64).into(),
                code: "unknown_field",
                detail: "is not a member of this request".into(),
            });
        }
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(ApiError::BadRequest {
            detail: "The body does not match the expected fields; see `errors`.".into(),
            errors: self.errors,
        })
    }

    fn error(&mut self, field: &'static str, code: &'static str, detail: &str) {
        self.errors.push(FieldError {
            field: field.into(),
            code,
            detail: format!("`{field}` {detail}"),
        });
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn media(value: &str) -> Result<(), ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        check_media_type(&headers, "application/json", JSON)
    }

    #[test]
    fn json_media_types_are_accepted() {
        assert!(media("application/json").is_ok());
        assert!(media("Application/JSON; charset=UTF-8").is_ok());
        assert!(media("application/json;charset=\"utf-8\"").is_ok());
    }

    #[test]
    fn other_media_types_and_charsets_are_refused() {
        for bad in [
            "text/plain",
            "application/json; charset=latin1",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            assert!(
                matches!(
                    media(bad),
                    Err(ApiError::UnsupportedMediaType { expected: JSON })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            check_media_type(&HeaderMap::new(), "application/json", JSON),
            Err(ApiError::UnsupportedMediaType { expected: JSON })
        ));
    }

    #[test]
    fn forms_decode_refuse_repeats_and_drop_empty_values() {
        let mut form = Form::parse(b"token=a%2Bb+c&token_type_hint=&other=1").unwrap();
        assert_eq!(form.take("token").as_deref(), Some("a+b c"));
        assert_eq!(
            form.take("token_type_hint"),
            None,
            "empty counts as omitted"
        );
        assert_eq!(form.take("other").as_deref(), Some("1"));
        assert_eq!(form.take("token"), None);
        let Err(ApiError::BadRequest { errors, .. }) = Form::parse(b"token=a&token=b") else {
            panic!("a repeated parameter is refused")
        };
        assert_eq!(errors[0].code, "duplicate_member");
        assert!(Form::parse(b"token=\xff").is_err());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        assert!(check_media_type(&headers, FORM, FORM).is_ok());
    }

    #[test]
    fn fields_report_missing_null_wrong_type_and_unknown_together() {
        let members = strict_json::parse_object(br#"{"a":null,"b":1,"c":"ok","zz":2}"#, 4).unwrap();
        let mut object = JsonObject {
            members,
            errors: Vec::new(),
        };
        object.string("a");
        object.string("b");
        assert_eq!(object.string("c"), "ok");
        object.string("d");
        let Err(ApiError::BadRequest { errors, .. }) = object.finish() else {
            panic!()
        };
        let codes: Vec<_> = errors.iter().map(|e| (e.field.as_ref(), e.code)).collect();
        assert_eq!(
            codes,
            [
                ("a", "null"),
                ("b", "wrong_type"),
                ("d", "missing"),
                ("zz", "unknown_field")
            ]
        );
    }
}
