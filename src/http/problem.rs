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
    /// The body is not of the one media type this route reads.
    UnsupportedMediaType {
        expected: &'static str,
    },
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
    /// Any refresh token that earns nothing: one answer whatever the reason.
    InvalidRefreshToken,
    /// Not one of the caller's live sessions: one answer whatever the reason.
    SessionNotFound,
    WrongCurrentPassword,
    /// The password was right; the account also needs a second-factor code.
    TotpRequired,
    /// Re-authentication with an active factor: its code missing, wrong or used.
    WrongSecondFactor,
    WrongTotpCode,
    TotpAlreadyActive,
    NoPendingTotp,
    NoActiveTotp,
    Bearer(BearerProblem),
    /// Introspection without a registered client's valid Basic credentials: one answer for
    /// all (RFC 7662 §2.1, RFC 6749 §5.2 `invalid_client`).
    InvalidClient,
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
            AuthError::TotpRequired => Self::TotpRequired,
            AuthError::WrongSecondFactor => Self::WrongSecondFactor,
            AuthError::WrongTotpCode => Self::WrongTotpCode,
            AuthError::TotpAlreadyActive => Self::TotpAlreadyActive,
            AuthError::NoPendingTotp => Self::NoPendingTotp,
            AuthError::NoActiveTotp => Self::NoActiveTotp,
            AuthError::Throttled { retry_after } => Self::TooManyRequests { retry_after },
            AuthError::InvalidToken(_) => Self::Bearer(BearerProblem::InvalidToken),
            AuthError::InvalidRefreshToken(_) => Self::InvalidRefreshToken,
            AuthError::SessionNotFound => Self::SessionNotFound,
            AuthError::InvalidClient => Self::InvalidClient,
            // Nobody reads the answer to a client that left; "not done, retry" is the truth.
            AuthError::Overloaded | AuthError::ClientGone => Self::Overloaded { retry_after: 1 },
            AuthError::Store(e) if e.is_unavailable() => Self::NotReady,
            AuthError::Store(_) | AuthError::Hash(_) => Self::Internal,
        }
    }
}

/// A request that outran `--request-timeout` while being handled: the work is dropped and the
/// client is told to retry, as for any other overload.
impl From<tokio::time::error::Elapsed> for ApiError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Self::Overloaded { retry_after: 1 }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest { .. } | Self::Bearer(BearerProblem::InvalidRequest(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Validation(_) | Self::WrongTotpCode => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UsernameTaken
            | Self::TotpAlreadyActive
            | Self::NoPendingTotp
            | Self::NoActiveTotp => StatusCode::CONFLICT,
            Self::InvalidCredentials
            | Self::TotpRequired
            | Self::InvalidRefreshToken
            | Self::Bearer(_)
            | Self::InvalidClient => StatusCode::UNAUTHORIZED,
            Self::WrongCurrentPassword | Self::WrongSecondFactor | Self::Forbidden => {
                StatusCode::FORBIDDEN
            }
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
            Self::UnsupportedMediaType { .. } => "unsupported-media-type",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::HeadersTooLarge => "headers-too-large",
            Self::BadRequest { .. } => "malformed-request",
            Self::Validation(_) => "validation-failed",
            Self::UsernameTaken => "username-taken",
            Self::InvalidCredentials => "invalid-credentials",
            Self::InvalidRefreshToken => "invalid-refresh-token",
            Self::SessionNotFound => "session-not-found",
            Self::WrongCurrentPassword => "wrong-current-password",
            Self::TotpRequired => "totp-required",
            Self::WrongSecondFactor => "wrong-second-factor",
            Self::WrongTotpCode => "wrong-totp-code",
            Self::TotpAlreadyActive => "totp-already-active",
            Self::NoPendingTotp => "no-pending-totp",
            Self::NoActiveTotp => "no-active-totp",
            Self::Bearer(BearerProblem::Missing) => "authentication-required",
            Self::Bearer(BearerProblem::InvalidRequest(_)) => "invalid-request",
            Self::Bearer(BearerProblem::InvalidToken) => "invalid-token",
            Self::InvalidClient => "invalid-client",
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
            Self::UnsupportedMediaType { expected } => format!("Send the body as {expected}."),
            Self::PayloadTooLarge { limit } => format!("The body exceeds {limit} bytes."),
            Self::HeadersTooLarge => "The request headers are too large.".into(),
            Self::BadRequest { detail, .. } => detail.clone(),
            Self::Validation(_) => "One or more fields are invalid; see `errors`.".into(),
            Self::UsernameTaken => "That username is already registered.".into(),
            Self::InvalidCredentials => "The username or password is incorrect.".into(),
            Self::InvalidRefreshToken => {
                "The refresh token is invalid, expired or revoked; log in again.".into()
            }
            Self::SessionNotFound => "You have no live session with this id.".into(),
            Self::WrongCurrentPassword => "The current password is incorrect.".into(),
            Self::TotpRequired => {
                "This account has a second factor: send `totp_code` (or a `recovery_code`) \
                 with the username and password."
                    .into()
            }
            Self::WrongSecondFactor => {
                "This account has a second factor: send a current `totp_code` (or an unused \
                 `recovery_code`) with the password."
                    .into()
            }
            Self::WrongTotpCode => {
                "The code does not match the pending factor (or was already used); enter the \
                 code your app shows now."
                    .into()
            }
            Self::TotpAlreadyActive => {
                "A second factor is already active; remove it before enrolling again.".into()
            }
            Self::NoPendingTotp => {
                "No second factor is waiting for confirmation; enrol first.".into()
            }
            Self::NoActiveTotp => "This account has no second factor.".into(),
            Self::Bearer(BearerProblem::Missing) => {
                "This resource needs an `Authorization: Bearer` token.".into()
            }
            Self::Bearer(BearerProblem::InvalidRequest(why)) => (*why).into(),
            Self::Bearer(BearerProblem::InvalidToken) => INVALID_TOKEN_DESCRIPTION.into(),
            Self::InvalidClient => {
                "Authenticate as an introspection client: HTTP Basic with the name and secret \
                 `tessera client add` printed."
                    .into()
            }
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
            Self::InvalidCredentials
            | Self::TotpRequired
            | Self::InvalidRefreshToken
            | Self::Bearer(BearerProblem::Missing) => r#"Bearer realm="tessera""#.to_string(),
            Self::Bearer(BearerProblem::InvalidToken) => format!(
                r#"Bearer realm="tessera", error="invalid_token", error_description="{INVALID_TOKEN_DESCRIPTION}""#
            ),
            Self::Bearer(BearerProblem::InvalidRequest(why)) => format!(
                r#"Bearer realm="tessera", error="invalid_request", error_description="{why}""#
            ),
            Self::InvalidClient => r#"Basic realm="tessera", charset="UTF-8""#.to_string(),
            _ => return None,
        };
        HeaderValue::from_str(&value).ok()
    }
}

/// The one description every rejected token gets.
const INVALID_TOKEN_DESCRIPTION: &str = "The access token is invalid, expired or revoked";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_pool::PoolError;
    use crate::auth::{RefreshRejection, TokenRejection};
    use crate::domain::ids::SessionId;
    use crate::domain::session::Denial;
    use crate::store::StoreError;
    use crate::token::TokenError;
    use http_body_util::BodyExt as _;

    fn field_error() -> FieldError {
        FieldError::new("password", "too_short", "must be at least 15 characters")
    }

    /// A variant, its status, its problem slug and the headers it must carry (name, value).
    type Expectation = (ApiError, u16, &'static str, Vec<(&'static str, String)>);

    fn expectations() -> Vec<Expectation> {
        let invalid_token = format!(
            r#"Bearer realm="tessera", error="invalid_token", error_description="{INVALID_TOKEN_DESCRIPTION}""#
        );
        vec![
            (ApiError::NotFound, 404, "not-found", vec![]),
            (
                ApiError::MethodNotAllowed { allow: "GET, HEAD" },
                405,
                "method-not-allowed",
                vec![("allow", "GET, HEAD".into())],
            ),
            (
                ApiError::UnsupportedMediaType {
                    expected: "application/json",
                },
                415,
                "unsupported-media-type",
                vec![],
            ),
            (ApiError::PayloadTooLarge { limit: 16 }, 413, "payload-too-large", vec![]),
            (ApiError::HeadersTooLarge, 431, "headers-too-large", vec![]),
            (
                ApiError::BadRequest {
                    detail: "bad".into(),
                    errors: vec![field_error()],
                },
                400,
                "malformed-request",
                vec![],
            ),
            (ApiError::Validation(vec![field_error()]), 422, "validation-failed", vec![]),
            (ApiError::UsernameTaken, 409, "username-taken", vec![]),
            (
                ApiError::InvalidCredentials,
                401,
                "invalid-credentials",
                vec![("www-authenticate", r#"Bearer realm="tessera""#.into())],
            ),
            (ApiError::WrongCurrentPassword, 403, "wrong-current-password", vec![]),
            (
                ApiError::Bearer(BearerProblem::Missing),
                401,
                "authentication-required",
                vec![("www-authenticate", r#"Bearer realm="tessera""#.into())],
            ),
            (
                ApiError::Bearer(BearerProblem::InvalidRequest("two Authorization headers")),
                400,
                "invalid-request",
                vec![(
                    "www-authenticate",
                    r#"Bearer realm="tessera", error="invalid_request", error_description="two Authorization headers""#.into(),
                )],
            ),
            (
                ApiError::Bearer(BearerProblem::InvalidToken),
                401,
                "invalid-token",
                vec![("www-authenticate", invalid_token)],
            ),
            (
                ApiError::InvalidClient,
                401,
                "invalid-client",
                vec![(
                    "www-authenticate",
                    r#"Basic realm="tessera", charset="UTF-8""#.into(),
                )],
            ),
            (ApiError::Forbidden, 403, "forbidden", vec![]),
            // A 401 carries a challenge (RFC 9110 §15.5.2), the bare one.
            (
                ApiError::InvalidRefreshToken,
                401,
                "invalid-refresh-token",
                vec![("www-authenticate", r#"Bearer realm="tessera""#.into())],
            ),
            (ApiError::SessionNotFound, 404, "session-not-found", vec![]),
            (
                ApiError::TooManyRequests { retry_after: 7 },
                429,
                "too-many-requests",
                vec![("retry-after", "7".into())],
            ),
            (
                ApiError::Overloaded { retry_after: 0 },
                503,
                "overloaded",
                vec![("retry-after", "1".into())],
            ),
            (
                ApiError::NotReady,
                503,
                "not-ready",
                vec![("retry-after", NOT_READY_RETRY_AFTER.to_string())],
            ),
            (ApiError::RequestTimeout, 408, "request-timeout", vec![]),
            (ApiError::Internal, 500, "internal-error", vec![]),
            (
                ApiError::TotpRequired,
                401,
                "totp-required",
                vec![("www-authenticate", r#"Bearer realm="tessera""#.into())],
            ),
            (ApiError::WrongSecondFactor, 403, "wrong-second-factor", vec![]),
            (ApiError::WrongTotpCode, 422, "wrong-totp-code", vec![]),
            (ApiError::TotpAlreadyActive, 409, "totp-already-active", vec![]),
            (ApiError::NoPendingTotp, 409, "no-pending-totp", vec![]),
            (ApiError::NoActiveTotp, 409, "no-active-totp", vec![]),
        ]
    }

    #[tokio::test]
    async fn every_variant_renders_its_status_headers_and_problem_body() {
        let all = expectations();
        // Exhaustive on purpose, with no `_` arm: a new variant does not compile until it has
        // an expectation, and each variant is listed (the Bearer problems once per kind).
        let mut seen = std::collections::BTreeSet::new();
        for (error, ..) in &all {
            let kind = match error {
                ApiError::NotFound => "NotFound",
                ApiError::MethodNotAllowed { .. } => "MethodNotAllowed",
                ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
                ApiError::PayloadTooLarge { .. } => "PayloadTooLarge",
                ApiError::HeadersTooLarge => "HeadersTooLarge",
                ApiError::BadRequest { .. } => "BadRequest",
                ApiError::Validation(_) => "Validation",
                ApiError::UsernameTaken => "UsernameTaken",
                ApiError::InvalidCredentials => "InvalidCredentials",
                ApiError::InvalidRefreshToken => "InvalidRefreshToken",
                ApiError::SessionNotFound => "SessionNotFound",
                ApiError::WrongCurrentPassword => "WrongCurrentPassword",
                ApiError::TotpRequired => "TotpRequired",
                ApiError::WrongSecondFactor => "WrongSecondFactor",
                ApiError::WrongTotpCode => "WrongTotpCode",
                ApiError::TotpAlreadyActive => "TotpAlreadyActive",
                ApiError::NoPendingTotp => "NoPendingTotp",
                ApiError::NoActiveTotp => "NoActiveTotp",
                ApiError::Bearer(BearerProblem::Missing) => "Bearer::Missing",
                ApiError::Bearer(BearerProblem::InvalidRequest(_)) => "Bearer::InvalidRequest",
                ApiError::Bearer(BearerProblem::InvalidToken) => "Bearer::InvalidToken",
                ApiError::InvalidClient => "InvalidClient",
                ApiError::Forbidden => "Forbidden",
                ApiError::TooManyRequests { .. } => "TooManyRequests",
                ApiError::Overloaded { .. } => "Overloaded",
                ApiError::NotReady => "NotReady",
                ApiError::RequestTimeout => "RequestTimeout",
                ApiError::Internal => "Internal",
            };
            seen.insert(kind);
        }
        assert_eq!(seen.len(), 28, "every variant has an expectation: {seen:?}");
        for (error, status, slug, headers) in all {
            let name = format!("{error:?}");
            let has_errors = matches!(error, ApiError::Validation(_) | ApiError::BadRequest { .. });
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{name}"
            );
            for (header, value) in &headers {
                assert_eq!(response.headers()[*header], value.as_str(), "{name}");
            }
            let challenged = response.headers().contains_key("www-authenticate");
            assert_eq!(
                challenged,
                headers.iter().any(|(h, _)| *h == "www-authenticate"),
                "{name}"
            );
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                body["type"],
                format!("urn:tessera:problem:{slug}"),
                "{name}"
            );
            assert_eq!(body["status"], status, "{name}");
            assert!(
                body["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{name}"
            );
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}"
            );
            if has_errors {
                assert_eq!(
                    body["errors"],
                    json!([{"field": "password", "code": "too_short",
                            "detail": "must be at least 15 characters"}]),
                    "{name}"
                );
            } else {
                assert!(body.get("errors").is_none(), "{name}");
            }
        }
    }

    #[test]
    fn every_auth_error_maps_to_one_problem() {
        let unavailable = StoreError::Unprovable;
        let broken = StoreError::SchemaTooNew { found: 9, known: 1 };
        let contended = StoreError::Contended("lost a race".into());
        let cases = [
            (
                AuthError::Validation(vec![field_error()]),
                "validation-failed",
            ),
            (AuthError::UsernameTaken, "username-taken"),
            (AuthError::InvalidCredentials, "invalid-credentials"),
            (AuthError::WrongCurrentPassword, "wrong-current-password"),
            (AuthError::Throttled { retry_after: 3 }, "too-many-requests"),
            // Every rejection reason is the same 401: clients learn nothing of which.
            (
                AuthError::InvalidToken(TokenRejection::Revoked(Denial::Logout)),
                "invalid-token",
            ),
            (
                AuthError::InvalidToken(TokenRejection::StaleGeneration),
                "invalid-token",
            ),
            (
                AuthError::InvalidToken(TokenRejection::UnknownUser),
                "invalid-token",
            ),
            (
                AuthError::InvalidToken(TokenRejection::Codec(TokenError::Expired)),
                "invalid-token",
            ),
            (
                AuthError::InvalidRefreshToken(RefreshRejection::Reused(SessionId::random())),
                "invalid-refresh-token",
            ),
            (
                AuthError::InvalidRefreshToken(RefreshRejection::UnknownSession(
                    SessionId::random(),
                )),
                "invalid-refresh-token",
            ),
            (AuthError::SessionNotFound, "session-not-found"),
            (AuthError::InvalidClient, "invalid-client"),
            (AuthError::Overloaded, "overloaded"),
            (AuthError::ClientGone, "overloaded"),
            (AuthError::Store(unavailable), "not-ready"),
            (AuthError::Store(contended), "not-ready"),
            (AuthError::Store(broken), "internal-error"),
            (AuthError::Hash(PoolError::Stopped), "internal-error"),
            (AuthError::TotpRequired, "totp-required"),
            (AuthError::WrongSecondFactor, "wrong-second-factor"),
            (AuthError::WrongTotpCode, "wrong-totp-code"),
            (AuthError::TotpAlreadyActive, "totp-already-active"),
            (AuthError::NoPendingTotp, "no-pending-totp"),
            (AuthError::NoActiveTotp, "no-active-totp"),
        ];
        // Exhaustive on purpose, with no `_` arm: a new variant does not compile until it has a
        // case above.
        for (error, _) in &cases {
            match error {
                AuthError::Validation(_)
                | AuthError::UsernameTaken
                | AuthError::InvalidCredentials
                | AuthError::WrongCurrentPassword
                | AuthError::TotpRequired
                | AuthError::WrongSecondFactor
                | AuthError::WrongTotpCode
                | AuthError::TotpAlreadyActive
                | AuthError::NoPendingTotp
                | AuthError::NoActiveTotp
                | AuthError::Throttled { .. }
                | AuthError::InvalidToken(_)
                | AuthError::InvalidRefreshToken(_)
                | AuthError::SessionNotFound
                | AuthError::InvalidClient
                | AuthError::Overloaded
                | AuthError::ClientGone
                | AuthError::Store(_)
                | AuthError::Hash(_) => {}
            }
        }
        for (error, slug) in cases {
            let name = format!("{error:?}");
            assert_eq!(ApiError::from(error).slug(), slug, "{name}");
        }
    }
}
