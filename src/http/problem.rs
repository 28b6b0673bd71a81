//! Every error response, in one place: [`ApiError`] → status, headers and an RFC 9457
//! `application/problem+json` body.
//!
//! Token failures of every kind become one 401 `invalid_token` with one description (RFC 6750
//! §3.1): the distinct reasons go to the log, never to the client. Login failures are likewise
//! one response whether the user exists or not.

use super::response::{self, HttpResponse};
use crate::auth::AuthError;
use crate::domain::validation::FieldError;
use hyper::StatusCode;
use hyper::header::{ALLOW, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};

/// Problem `type` URIs are URNs under our name: stable identifiers, not links to dereference.
const TYPE_PREFIX: &str = "urn:tessera:problem:";
/// Seconds a load balancer should wait before probing an instance that was not ready.
const NOT_READY_RETRY_AFTER: u64 = 5;

/// What went wrong with a Bearer credential (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerProblem {
    /// No credentials at all: 401 with a bare challenge, no error code (§3.1).
    Missing,
    /// Malformed header, two of them, or a token in the query string: 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// Present but not acceptable for any reason: 401 `invalid_token`.
    InvalidToken,
}

#[derive(Debug)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    UnsupportedMediaType,
    PayloadTooLarge {
        limit: usize,
    },
    HeadersTooLarge,
    /// Malformed JSON, wrong types, missing/null/unknown fields.
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    Validation(Vec<FieldError>),
    UsernameTaken,
    InvalidCredentials,
    WrongCurrentPassword,
    Bearer(BearerProblem),
    Forbidden,
    TooManyRequests {
        retry_after: u64,
    },
    Overloaded {
        retry_after: u64,
    },
    /// Readiness failed: the database cannot be used, so load balancers should look elsewhere.
    NotReady,
    RequestTimeout,
    Internal,
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Validation(errors) => Self::Validation(errors),
            AuthError::UsernameTaken => Self::UsernameTaken,
            AuthError::InvalidCredentials => Self::InvalidCredentials,
            AuthError::WrongCurrentPassword => Self::WrongCurrentPassword,
            AuthError::Throttled { retry_after } => Self::TooManyRequests { retry_after },
            AuthError::InvalidToken(_) => Self::Bearer(BearerProblem::InvalidToken),
            // Nobody reads the answer to a client that left; "not done, retry" is the truth.
            AuthError::Overloaded | AuthError::ClientGone => Self::Overloaded { retry_after: 1 },
            AuthError::Store(e) if e.is_unavailable() => Self::NotReady,
            AuthError::Store(_) | AuthError::Hash(_) => Self::Internal,
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest { .. } | Self::Bearer(BearerProblem::InvalidRequest(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UsernameTaken => StatusCode::CONFLICT,
            Self::InvalidCredentials | Self::Bearer(_) => StatusCode::UNAUTHORIZED,
            Self::WrongCurrentPassword | Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short stable slug naming the problem type.
    fn slug(&self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::HeadersTooLarge => "headers-too-large",
            Self::BadRequest { .. } => "malformed-request",
            Self::Validation(_) => "validation-failed",
            Self::UsernameTaken => "username-taken",
            Self::InvalidCredentials => "invalid-credentials",
            Self::WrongCurrentPassword => "wrong-current-password",
            Self::Bearer(BearerProblem::Missing) => "authentication-required",
            Self::Bearer(BearerProblem::InvalidRequest(_)) => "invalid-request",
            Self::Bearer(BearerProblem::InvalidToken) => "invalid-token",
            Self::Forbidden => "forbidden",
            Self::TooManyRequests { .. } => "too-many-requests",
            Self::Overloaded { .. } => "overloaded",
            Self::NotReady => "not-ready",
            Self::RequestTimeout => "request-timeout",
            Self::Internal => "internal-error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::NotFound => "No resource lives at this path.".into(),
            Self::MethodNotAllowed { allow } => format!("This resource supports: {allow}."),
            Self::UnsupportedMediaType => "Send the body as application/json (UTF-8).".into(),
            Self::PayloadTooLarge { limit } => format!("The body exceeds {limit} bytes."),
            Self::HeadersTooLarge => "The request headers are too large.".into(),
            Self::BadRequest { detail, .. } => detail.clone(),
            Self::Validation(_) => "One or more fields are invalid; see `errors`.".into(),
            Self::UsernameTaken => "That username is already registered.".into(),
            Self::InvalidCredentials => "The username or password is incorrect.".into(),
            Self::WrongCurrentPassword => "The current password is incorrect.".into(),
            Self::Bearer(BearerProblem::Missing) => {
                "This resource needs an `Authorization: Bearer` token.".into()
            }
            Self::Bearer(BearerProblem::InvalidRequest(why)) => (*why).into(),
            Self::Bearer(BearerProblem::InvalidToken) => INVALID_TOKEN_DESCRIPTION.into(),
            Self::Forbidden => "You may only read your own account.".into(),
            Self::TooManyRequests { retry_after } => {
                format!("Too many attempts; retry in {retry_after} s.")
            }
            Self::Overloaded { retry_after } => {
                format!("The server is busy; retry in {retry_after} s.")
            }
            Self::NotReady => "The database is unavailable; this instance is not ready.".into(),
            Self::RequestTimeout => "The request took too long to arrive.".into(),
            Self::Internal => "An internal error occurred; it has been logged.".into(),
        }
    }

    fn body(&self) -> Value {
        let status = self.status();
        let mut body = json!({
            "type": format!("{TYPE_PREFIX}{}", self.slug()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        let errors = match self {
            Self::Validation(errors) | Self::BadRequest { errors, .. } => errors.as_slice(),
            _ => &[],
        };
        if !errors.is_empty()
            && let Some(object) = body.as_object_mut()
        {
            let errors = errors
                .iter()
                .map(|e| json!({"field": e.field, "code": e.code, "detail": e.detail}))
                .collect();
            object.insert("errors".into(), errors);
        }
        body
    }

    pub fn into_response(self) -> HttpResponse {
        let mut response = response::problem(self.status(), &self.body());
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge() {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        match self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::TooManyRequests { retry_after } | Self::Overloaded { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            Self::NotReady => {
                headers.insert(RETRY_AFTER, HeaderValue::from(NOT_READY_RETRY_AFTER));
            }
            _ => {}
        }
        response
    }

    /// RFC 6750 §3 challenges; a 401 must carry one (RFC 9110 §15.5.2).
    fn challenge(&self) -> Option<HeaderValue> {
        let value = match self {
            Self::InvalidCredentials | Self::Bearer(BearerProblem::Missing) => {
                r#"Bearer realm="tessera""#.to_string()
            }
            Self::Bearer(BearerProblem::InvalidToken) => format!(
                r#"Bearer realm="tessera", error="invalid_token", error_description="{INVALID_TOKEN_DESCRIPTION}""#
            ),
            Self::Bearer(BearerProblem::InvalidRequest(why)) => format!(
                r#"Bearer realm="tessera", error="invalid_request", error_description="{why}""#
            ),
            _ => return None,
        };
        HeaderValue::from_str(&value).ok()
    }
}

/// The one description every rejected token gets.
const INVALID_TOKEN_DESCRIPTION: &str = "The access token is invalid, expired or revoked";
