//! The second factor's routes: enrol (`POST /v1/users/me/totp`), confirm
//! (`POST /v1/users/me/totp/confirm`), new recovery codes
//! (`POST /v1/users/me/totp/recovery-codes`), remove (`DELETE /v1/users/me/totp`); and reading a
//! second factor from any body that carries one (login, re-authentication). Secrets and codes
//! go into response bodies only, never into a log line.

use super::body::JsonObject;
use super::handlers::{Call, authenticate, blocking, read_body, reauthentication};
use super::problem::ApiError;
use super::response::{self, HttpResponse};
use crate::auth::{Authenticated, SecondFactor};
use crate::domain::secret::SecretString;
use crate::domain::totp::{self, RecoveryCode, TotpCode};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

/// The last fields of a body that may carry a second factor: `totp_code` or `recovery_code`,
/// then no other field left. The body's shape is judged first (400), then the code's (422).
pub(super) fn finish_with_code(mut body: JsonObject) -> Result<Option<SecondFactor>, ApiError> {
    let second = from_body(&mut body);
    body.finish()?;
    second
}

/// `totp_code` or `recovery_code` from `body`, if either is there (not both).
fn from_body(body: &mut JsonObject) -> Result<Option<SecondFactor>, ApiError> {
    let totp_code = body.optional_string("totp_code");
    let recovery_code = body.optional_string("recovery_code");
    match (totp_code, recovery_code) {
        (None, None) => Ok(None),
        (Some(code), None) => TotpCode::parse("totp_code", &code)
            .map(|code| Some(SecondFactor::Totp(code)))
            .map_err(|e| ApiError::Validation(vec![e])),
        (None, Some(code)) => RecoveryCode::parse("recovery_code", &code)
            .map(|code| Some(SecondFactor::Recovery(code)))
            .map_err(|e| ApiError::Validation(vec![e])),
        (Some(_), Some(_)) => Err(ApiError::BadRequest {
            detail: "Send either `totp_code` or `recovery_code`, not both.".into(),
            errors: Vec::new(),
        }),
    }
}

/// `POST /v1/users/me/totp` with the password: a pending factor's secret, shown once.
pub(super) async fn enrol(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (caller, mut body) = reauthentication(call, request, &["password"]).await?;
    let password = body.secret("password");
    body.finish()?;
    let auth = call.state.auth.clone();
    let now = call.state.clock.now();
    let enrolment = blocking(call, move |cancel| {
        auth.enrol_totp(&caller, &password, now, &cancel)
    })
    .await?;
    Ok(response::json(
        StatusCode::CREATED,
        &json!({
            "secret": enrolment.secret.as_str(),
            "otpauth_uri": enrolment.otpauth_uri.as_str(),
            "algorithm": "SHA1",
            "digits": totp::DIGITS,
            "period": totp::PERIOD,
        }),
    ))
}

/// `POST /v1/users/me/totp/confirm` with a current code: the factor is active; ten recovery
/// codes, shown once.
pub(super) async fn confirm(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(call, &request).await?;
    let mut body = read_body(call.state, request).await?;
    let code = body.string("code");
    body.finish()?;
    let code = TotpCode::parse("code", &code).map_err(|e| ApiError::Validation(vec![e]))?;
    let auth = call.state.auth.clone();
    let now = call.state.clock.now();
    let codes = blocking(call, move |_| auth.confirm_totp(&caller, &code, now)).await?;
    Ok(recovery_codes_response(&codes))
}

/// `POST /v1/users/me/totp/recovery-codes` with the password and a code: ten new codes; the
/// old ones stop working.
pub(super) async fn replace_recovery_codes(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (caller, password, second) = password_and_second_factor(call, request).await?;
    let auth = call.state.auth.clone();
    let now = call.state.clock.now();
    let codes = blocking(call, move |cancel| {
        auth.replace_recovery_codes(&caller, &password, second.as_ref(), now, &cancel)
    })
    .await?;
    Ok(recovery_codes_response(&codes))
}

/// `DELETE /v1/users/me/totp` with the password and a code: the factor goes, and every other
/// session ends.
pub(super) async fn remove(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (caller, password, second) = password_and_second_factor(call, request).await?;
    let auth = call.state.auth.clone();
    let now = call.state.clock.now();
    blocking(call, move |cancel| {
        auth.remove_totp(&caller, &password, second.as_ref(), now, &cancel)
    })
    .await?;
    Ok(response::no_content())
}

/// The caller, and the `{"password", "totp_code" | "recovery_code"}` body that changes to the
/// factor itself carry.
async fn password_and_second_factor(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<(Authenticated, SecretString, Option<SecondFactor>), ApiError> {
    let (caller, mut body) = reauthentication(call, request, &["password", "totp_code"]).await?;
    let password = body.secret("password");
    let second = finish_with_code(body)?;
    Ok((caller, password, second))
}

fn recovery_codes_response(codes: &[zeroize::Zeroizing<String>]) -> HttpResponse {
    let codes: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
    response::json(StatusCode::OK, &json!({ "recovery_codes": codes }))
}
