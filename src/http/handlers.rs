//! Handlers: parse the request into domain input, call `auth` off the reactor, render.

use super::metrics::{LoginOutcome, RefreshOutcome};
use super::problem::ApiError;
use super::response::{self, HttpResponse};
use super::router::Route;
use super::{AppState, bearer};
use super::{body, forward_auth, introspection, profile_view, second_factor};
use crate::auth::{
    AuthError, Authenticated, Cancellation, Grant, ListedSession, RefreshRejection, Requester,
    Rotation, TokenRejection,
};
use crate::domain::secret::SecretString;
use crate::domain::session;
use crate::domain::user::{NewUser, RegistrationForm, UserProfile};
use crate::domain::username::Username;
use crate::domain::validation::FieldError;
use crate::support::clock;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::json;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

/// Characters escaped in a path segment (RFC 3986 §3.3 pchar complement).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// One request's context: the shared state, the client's address (the TCP peer, or the address
/// a trusted proxy forwarded) and the request id that every line logged on its behalf carries.
pub struct Call<'a> {
    pub state: &'a Arc<AppState>,
    pub client: IpAddr,
    pub request_id: &'a str,
}

/// Every route but `/me` runs in its own boxed future: the future of this `match` is as large
/// as its largest arm, and it is moved several times per request on its way into hyper's
/// connection task — the hot path should not carry (and copy) a login's state. A plain function
/// returning an `async` block, so the request is not held twice (see `dispatch`).
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold its arguments twice"
)]
pub fn handle<'a>(
    call: &'a Call<'a>,
    route: Route,
    request: Request<Incoming>,
) -> impl Future<Output = Result<HttpResponse, ApiError>> + Send + 'a {
    async move {
        match route {
            Route::Register => Box::pin(register(call, request)).await,
            Route::Login => Box::pin(login(call, request)).await,
            Route::Refresh => Box::pin(refresh(call, request)).await,
            Route::Introspect => Box::pin(introspect(call, request)).await,
            Route::ListSessions => Box::pin(list_sessions(call, &request)).await,
            Route::EndSession(id) => Box::pin(end_session(call, &request, id)).await,
            Route::Me => {
                let caller = authenticate(call, &request).await?;
                Ok(shared_user_view(&caller.profile))
            }
            Route::ForwardAuth => {
                let caller = authenticate(call, &request).await?;
                Ok(forward_auth::allowed(&caller))
            }
            Route::UserByName(name) => Box::pin(user_by_name(call, &request, &name)).await,
            Route::LogoutCurrent => Box::pin(logout_current(call, &request)).await,
            Route::LogoutEverywhere => Box::pin(logout_everywhere(call, &request)).await,
            Route::ChangePassword => Box::pin(change_password(call, request)).await,
            Route::DeleteMe => Box::pin(delete_account(call, request)).await,
            Route::EnrolTotp => Box::pin(second_factor::enrol(call, request)).await,
            Route::ConfirmTotp => Box::pin(second_factor::confirm(call, request)).await,
            Route::ReplaceRecoveryCodes => {
                Box::pin(second_factor::replace_recovery_codes(call, request)).await
            }
            Route::RemoveTotp => Box::pin(second_factor::remove(call, request)).await,
            Route::Health => Ok(response::json(StatusCode::OK, &json!({"status": "ok"}))),
            Route::Ready => Box::pin(ready(call)).await,
            Route::OpenApi => Ok(response::text(
                StatusCode::OK,
                "application/json",
                super::OPENAPI_JSON.to_owned(),
            )),
        }
    }
}

/// `DELETE /v1/sessions`: every session of the caller ends (one generation bump).
async fn logout_everywhere(
    call: &Call<'_>,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(call, request).await?;
    let auth = call.state.auth.clone();
    blocking(call, move |_| auth.logout_everywhere(&caller)).await?;
    call.state.metrics.logout(true);
    Ok(response::no_content())
}

async fn register(call: &Call<'_>, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    within_budget(call, &state.register_limiter, "register")?;
    let mut body = read_body(state, request).await?;
    let form = RegistrationForm {
        username: body.string("username"),
        full_name: body.string("full_name"),
        password: body.secret("password"),
        mothers_favorite_search_engine: body.string("mothers_favorite_search_engine"),
    };
    body.finish()?;
    let policy = state.auth.settings().password_policy;
    // The policy's guessability estimate is CPU work; it runs off the reactor with the rest.
    let auth = state.auth.clone();
    let now = state.clock.now();
    let profile = blocking(call, move |cancel| {
        let user = NewUser::parse(form, &policy).map_err(AuthError::Validation)?;
        auth.register(user, now, &cancel)
    })
    .await?;
    let mut response = user_view(StatusCode::CREATED, &profile);
    let location = format!(
        "/v1/users/{}",
        utf8_percent_encode(profile.username.as_typed(), PATH_SEGMENT)
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

async fn login(call: &Call<'_>, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    within_budget(call, &state.login_limiter, "login")?;
    let origin = session::Origin {
        user_agent: request
            .headers()
            .get(USER_AGENT)
            .map_or_else(String::new, |agent| session::user_agent(agent.as_bytes())),
        client_address: Some(call.client),
    };
    let mut body = read_body(state, request).await?;
    let username = body.string("username");
    let password = body.secret("password");
    let second = second_factor::finish_with_code(body)?;
    let typed = as_typed(&username);
    let auth = state.auth.clone();
    let now = state.clock.now();
    let result = blocking(call, move |cancel| {
        auth.login(&username, &password, second.as_ref(), &origin, now, &cancel)
    })
    .await;
    let (request_id, client) = (call.request_id, call.client);
    let outcome = match &result {
        Ok(grant) => {
            let session_id = &grant.session_id;
            tracing::info!(request_id = %request_id, %client, username = ?typed, %session_id, "login succeeded");
            LoginOutcome::Succeeded
        }
        Err(ApiError::TooManyRequests { retry_after }) => {
            tracing::warn!(request_id = %request_id, %client, username = ?typed, retry_after, "login refused by the softlock");
            LoginOutcome::Throttled
        }
        Err(ApiError::InvalidCredentials) => {
            tracing::warn!(request_id = %request_id, %client, username = ?typed, "login failed: unknown user, wrong password or wrong second factor");
            LoginOutcome::Failed
        }
        Err(ApiError::TotpRequired) => {
            tracing::info!(request_id = %request_id, %client, username = ?typed, "login needs a second factor");
            LoginOutcome::Failed
        }
        Err(_) => LoginOutcome::Failed,
    };
    state.metrics.login(outcome);
    let grant = result?;
    state.metrics.token_issued();
    Ok(grant_response(&grant))
}

/// `POST /v1/sessions/refresh`: a refresh token for a new access token and (usually) a new
/// refresh token. No Authorization header: the access token may have expired.
async fn refresh(call: &Call<'_>, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    within_budget(call, &state.refresh_limiter, "refresh")?;
    let mut body = read_body(state, request).await?;
    let token = body.secret("refresh_token");
    body.finish()?;
    let auth = state.auth.clone();
    let now = state.clock.now();
    // The use case's own error is kept (not yet an HTTP answer) to tell a replay from the rest.
    let result = blocking(call, move |_| Ok(auth.refresh(&token, now))).await?;
    let outcome = match &result {
        Ok(refreshed) if refreshed.rotation == Rotation::Grace => RefreshOutcome::Grace,
        Ok(_) => RefreshOutcome::Rotated,
        Err(AuthError::InvalidRefreshToken(RefreshRejection::Reused(_))) => RefreshOutcome::Reused,
        Err(_) => RefreshOutcome::Rejected,
    };
    state.metrics.refresh(outcome);
    let refreshed = result.map_err(|error| {
        log_auth_error(call, &error);
        ApiError::from(error)
    })?;
    state.metrics.token_issued();
    Ok(grant_response(&refreshed.grant))
}

/// `POST /v1/introspect`: the client's credentials first (no body is read without them), then
/// the form, then — on the blocking pool, since the client check reads storage — the client and
/// the token.
async fn introspect(call: &Call<'_>, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    let (name, secret) = introspection::client_credentials(request.headers()).inspect_err(|_| {
        tracing::warn!(request_id = %call.request_id, client = %call.client, "introspection refused: no client credentials");
    })?;
    let mut form = body::read_form(
        request,
        state.settings.body_limit,
        state.settings.body_timeout,
    )
    .await?;
    let token = form
        .take("token")
        .map(SecretString::new)
        .ok_or_else(|| ApiError::BadRequest {
            detail: "Send the token to introspect as the form parameter `token`.".into(),
            errors: vec![FieldError::new("token", "missing", "is required")],
        })?;
    // `token_type_hint` only says where to look first (RFC 7662 §2.1): every token is looked
    // up the same way here, so it changes nothing.
    let _hint = form.take("token_type_hint");
    let auth = state.auth.clone();
    let now = state.clock.now();
    let typed = as_typed(&name);
    let (client, answer) = blocking(call, move |_| {
        let client = auth.authenticate_client(&name, &secret)?;
        Ok((client, auth.introspect(token.expose(), now)?))
    })
    .await
    .inspect_err(|error| {
        if matches!(error, ApiError::InvalidClient) {
            tracing::warn!(request_id = %call.request_id, client = %call.client, introspection_client = ?typed, "introspection refused: unknown client or wrong secret");
        }
    })?;
    Ok(match answer {
        Ok(caller) => introspection::active(&caller),
        Err(reason) => {
            tracing::info!(request_id = %call.request_id, client = %call.client, introspection_client = %client, reason = %reason, "introspection: token not active");
            introspection::inactive()
        }
    })
}

/// `GET /v1/sessions`: the caller's live sessions, newest first.
async fn list_sessions(
    call: &Call<'_>,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(call, request).await?;
    let auth = call.state.auth.clone();
    let now = call.state.clock.now();
    let sessions = blocking(call, move |_| auth.list_sessions(&caller, now)).await?;
    let sessions: Vec<_> = sessions.iter().map(session_view).collect();
    Ok(response::json(
        StatusCode::OK,
        &json!({ "sessions": sessions }),
    ))
}

/// `DELETE /v1/sessions/{id}`: ends one of the caller's sessions.
async fn end_session(
    call: &Call<'_>,
    request: &Request<Incoming>,
    id: String,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(call, request).await?;
    let auth = call.state.auth.clone();
    let now = call.state.clock.now();
    blocking(call, move |_| auth.end_session(&caller, &id, now)).await?;
    Ok(response::no_content())
}

async fn user_by_name(
    call: &Call<'_>,
    request: &Request<Incoming>,
    name: &str,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(call, request).await?;
    // 403 for anyone else, whether or not they exist: the answer must not reveal accounts.
    let requested = Username::parse(name).map_err(|_| ApiError::Forbidden)?;
    if requested.canonical() != caller.profile.username.canonical() {
        return Err(ApiError::Forbidden);
    }
    Ok(shared_user_view(&caller.profile))
}

async fn logout_current(
    call: &Call<'_>,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    let token = bearer::extract(request.headers(), request.uri())?.to_owned();
    let auth = state.auth.clone();
    let now = state.clock.now();
    blocking(call, move |_| auth.logout(&token, now)).await?;
    state.metrics.logout(false);
    Ok(response::no_content())
}

async fn change_password(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    let fields = &["current_password", "new_password"];
    let (caller, mut body) = reauthentication(call, request, fields).await?;
    let current = body.secret("current_password");
    let new = body.secret("new_password");
    let second = second_factor::finish_with_code(body)?;
    let auth = state.auth.clone();
    let now = state.clock.now();
    let grant = blocking(call, move |cancel| {
        auth.change_password(&caller, &current, &new, second.as_ref(), now, &cancel)
    })
    .await?;
    state.metrics.token_issued();
    Ok(grant_response(&grant))
}

/// The start of every request that re-checks the password: the token, then the per-IP budget
/// that every endpoint hashing a password draws from (the same as login's), then the body.
pub(super) async fn reauthentication(
    call: &Call<'_>,
    request: Request<Incoming>,
    fields: &[&'static str],
) -> Result<(Authenticated, body::JsonObject), ApiError> {
    let caller = authenticate(call, &request).await?;
    within_budget(call, &call.state.login_limiter, "login")?;
    if !has_body(&request) {
        return Err(ApiError::BadRequest {
            detail: format!(
                "This request needs a JSON body with {}: it re-checks your password.",
                fields.join(" and ")
            ),
            errors: fields
                .iter()
                .map(|field| FieldError::new(field, "missing", "is required"))
                .collect(),
        });
    }
    let body = read_body(call.state, request).await?;
    Ok((caller, body))
}

/// Account deletion re-authenticates: `{"password": "…"}` in the body (ASVS 5.0).
async fn delete_account(
    call: &Call<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let state = call.state;
    let (caller, mut body) = reauthentication(call, request, &["password"]).await?;
    let password = body.secret("password");
    let second = second_factor::finish_with_code(body)?;
    let auth = state.auth.clone();
    let now = state.clock.now();
    blocking(call, move |cancel| {
        auth.delete_account(&caller, &password, second.as_ref(), now, &cancel)
    })
    .await?;
    Ok(response::no_content())
}

async fn ready(call: &Call<'_>) -> Result<HttpResponse, ApiError> {
    let auth = call.state.auth.clone();
    let ping = tokio::task::spawn_blocking(move || {
        auth.ready().map_err(|e| crate::store::cause_chain(&e))
    })
    .await
    .unwrap_or_else(|join_error| Err(join_error.to_string()));
    match ping {
        Ok(()) => {
            // Where token checks are answered: a PostgreSQL replica without its lease reads
            // the database for each (exact, slower); operators watch for it.
            let checks = if call.state.auth.answers_from_memory() {
                "memory"
            } else {
                "database"
            };
            Ok(response::json(
                StatusCode::OK,
                &json!({"status": "ready", "token_checks": checks}),
            ))
        }
        Err(error) => {
            tracing::error!(request_id = %call.request_id, %error, "readiness check failed");
            Err(ApiError::NotReady)
        }
    }
}

/// Bearer token → session, checked against revocation: in memory on the reactor when the
/// revocation view is current and has the user (the common case), otherwise on the blocking pool.
pub(super) async fn authenticate(
    call: &Call<'_>,
    request: &Request<Incoming>,
) -> Result<Authenticated, ApiError> {
    let state = call.state;
    let token = bearer::extract(request.headers(), request.uri())?;
    let now = state.clock.now();
    match state.auth.authenticate_in_memory(token, now) {
        Ok(Some(session)) => return Ok(session),
        Ok(None) => {}
        Err(error) => {
            log_auth_error(call, &error);
            return Err(error.into());
        }
    }
    let token = token.to_owned();
    let auth = state.auth.clone();
    blocking(call, move |_| auth.authenticate(&token, now)).await
}

pub(super) async fn read_body(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<body::JsonObject, ApiError> {
    body::read_object(
        request,
        state.settings.body_limit,
        state.settings.body_timeout,
    )
    .await
}

/// Runs a use case on the blocking pool (argon2 and storage must not stall the reactor) and
/// logs what the client will not be told. The use case gets this request's [`Cancellation`]: if
/// the client hangs up, hyper drops this future and with it `requester`, so hashes the use case
/// still has queued are skipped. The layers below do not log: they return errors, and this is
/// where those are logged, with the request's id.
pub(super) async fn blocking<T: Send + 'static>(
    call: &Call<'_>,
    work: impl FnOnce(Cancellation) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    let requester = Requester::new();
    let cancel = requester.cancellation();
    match tokio::task::spawn_blocking(move || work(cancel)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            log_auth_error(call, &error);
            Err(error.into())
        }
        Err(join_error) => {
            let request_id = call.request_id;
            tracing::error!(request_id = %request_id, client = %call.client, error = %join_error, "use case panicked or was cancelled");
            Err(ApiError::Internal)
        }
    }
}

/// What the client is not told, for the operator: under the request's id, with the client's
/// address (OWASP ASVS 5.0 V16: who, from where, what, and the outcome). Never a password,
/// token or refresh token; the login handler adds the account name as typed to its own lines.
fn log_auth_error(call: &Call<'_>, error: &AuthError) {
    let (request_id, client) = (call.request_id, call.client);
    match error {
        AuthError::InvalidToken(TokenRejection::Codec(reason)) => {
            tracing::info!(request_id = %request_id, %client, reason = %reason, "token rejected");
        }
        AuthError::InvalidToken(reason) => {
            tracing::info!(request_id = %request_id, %client, reason = %reason, "token rejected");
        }
        AuthError::InvalidRefreshToken(reason @ RefreshRejection::Reused(session)) => {
            tracing::warn!(
                request_id = %request_id,
                %client,
                session_id = %session,
                reason = %reason,
                "refresh token reuse: session ended"
            );
        }
        AuthError::InvalidRefreshToken(reason) => {
            tracing::info!(request_id = %request_id, %client, reason = %reason, "refresh token rejected");
        }
        AuthError::Throttled { retry_after } => {
            tracing::warn!(request_id = %request_id, %client, retry_after, "password guess refused by the softlock");
        }
        AuthError::WrongCurrentPassword => {
            tracing::warn!(request_id = %request_id, %client, "re-authentication failed: wrong password");
        }
        AuthError::Overloaded => {
            tracing::warn!(request_id = %request_id, %client, "hashing queue full; answered 503");
        }
        AuthError::ClientGone => {
            tracing::info!(request_id = %request_id, %client, "client left while queued for hashing; skipped");
        }
        AuthError::Store(e) => {
            let error = crate::store::cause_chain(e);
            tracing::error!(request_id = %request_id, %client, %error, "storage failure");
        }
        AuthError::Hash(e) => {
            tracing::error!(request_id = %request_id, %client, error = %e, "hashing failure");
        }
        _ => {}
    }
}

/// The client's per-address budget for `what`; a refusal is logged with the address, so an
/// operator can see who is being throttled.
fn within_budget(
    call: &Call<'_>,
    limiter: &super::limits::RateLimiter,
    what: &'static str,
) -> Result<(), ApiError> {
    let client = call.client;
    limiter
        .check(client, call.state.clock.instant())
        .inspect_err(|_| {
            tracing::warn!(
                request_id = %call.request_id,
                %client,
                budget = what,
                "refused by the per-client rate limit"
            );
        })
}

/// A name as the client typed it, for a log line: at most 128 characters, and written with
/// `?` (quoted, control characters escaped) so it can never forge a line.
fn as_typed(name: &str) -> String {
    const MAX: usize = 128;
    match name.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", name.get(..cut).unwrap_or_default()),
        None => name.to_owned(),
    }
}

/// Whether a body may follow the head: a `Content-Length` above zero, or a transfer coding.
fn has_body(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

fn user_view(status: StatusCode, profile: &UserProfile) -> HttpResponse {
    response::json_bytes(status, profile_view::render(profile))
}

/// A session's profile is shared with the revocation view: its body is rendered once.
fn shared_user_view(profile: &Arc<UserProfile>) -> HttpResponse {
    response::json_bytes(StatusCode::OK, profile_view::shared(profile))
}

/// The body of a login, a refresh and a password change: the same shape for all three.
fn grant_response(grant: &Grant) -> HttpResponse {
    let claims = &grant.access.claims;
    response::with_token_cache_headers(response::json(
        StatusCode::OK,
        &json!({
            "access_token": grant.access.token,
            "token_type": "Bearer",
            "expires_in": claims.exp - claims.iat,
            "expires_at": clock::rfc3339(claims.exp),
            "refresh_token": grant.refresh.expose(),
            "refresh_expires_at": clock::rfc3339(grant.refresh_expires_at),
            "session_id": grant.session_id,
        }),
    ))
}

fn session_view(listed: &ListedSession) -> serde_json::Value {
    let s = &listed.session;
    json!({
        "id": s.id,
        "created_at": clock::rfc3339(s.created_at),
        "last_used_at": clock::rfc3339(s.last_used_at),
        "expires_at": clock::rfc3339(s.expires_at),
        "user_agent": s.user_agent,
        "client_address": s.client_address.map(|address| address.to_string()),
        "factors": s.factors.amr(),
        "current": listed.current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The request handler's future is copied several times per request; only `/me`'s own
    /// state belongs in it (see `handle`).
    #[test]
    fn the_handler_future_carries_no_cold_route_state() {
        let handle_size = future_size(|(call, request): (&Call<'_>, Request<Incoming>)| {
            handle(call, Route::Me, request)
        });
        let login_size =
            future_size(|(call, request): (&Call<'_>, Request<Incoming>)| login(call, request));
        assert!(
            login_size > handle_size,
            "the handler's future ({handle_size} bytes) holds a login's ({login_size} bytes)"
        );
    }
}
