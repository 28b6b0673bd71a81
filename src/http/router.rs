//! Routing: `(method, path)` → [`Route`], or 404 / 405 with `Allow`. No framework, no regex —
//! the API is small enough for a `match` on path segments.

use super::problem::ApiError;
use hyper::Method;
use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Register,
    Me,
    /// A reverse proxy's auth subrequest, with whatever method the original request had.
    ForwardAuth,
    /// RFC 7662 token introspection for resource servers.
    Introspect,
    DeleteMe,
    ChangePassword,
    EnrolTotp,
    ConfirmTotp,
    ReplaceRecoveryCodes,
    RemoveTotp,
    UserByName(String),
    Login,
    Refresh,
    ListSessions,
    LogoutEverywhere,
    LogoutCurrent,
    EndSession(String),
    Health,
    Ready,
    OpenApi,
}

/// Every route as `(method, path template)`: the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/users"),
    ("GET", "/v1/users/me"),
    ("GET", "/v1/forward-auth"),
    ("POST", "/v1/introspect"),
    ("DELETE", "/v1/users/me"),
    ("PUT", "/v1/users/me/password"),
    ("POST", "/v1/users/me/totp"),
    ("DELETE", "/v1/users/me/totp"),
    ("POST", "/v1/users/me/totp/confirm"),
    ("POST", "/v1/users/me/totp/recovery-codes"),
    ("GET", "/v1/users/{username}"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions"),
    ("DELETE", "/v1/sessions"),
    ("POST", "/v1/sessions/refresh"),
    ("DELETE", "/v1/sessions/current"),
    ("DELETE", "/v1/sessions/{id}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

impl Route {
    /// A low-cardinality name for logs and metrics (never the raw path).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register => "POST /v1/users",
            Self::Me => "GET /v1/users/me",
            // Every method shares one name: the method is in the request line, and a metric
            // per method would only split one route's figures.
            Self::ForwardAuth => "GET /v1/forward-auth",
            Self::Introspect => "POST /v1/introspect",
            Self::DeleteMe => "DELETE /v1/users/me",
            Self::ChangePassword => "PUT /v1/users/me/password",
            Self::EnrolTotp => "POST /v1/users/me/totp",
            Self::RemoveTotp => "DELETE /v1/users/me/totp",
            Self::ConfirmTotp => "POST /v1/users/me/totp/confirm",
            Self::ReplaceRecoveryCodes => "POST /v1/users/me/totp/recovery-codes",
            Self::UserByName(_) => "GET /v1/users/{username}",
            Self::Login => "POST /v1/sessions",
            Self::ListSessions => "GET /v1/sessions",
            Self::LogoutEverywhere => "DELETE /v1/sessions",
            Self::Refresh => "POST /v1/sessions/refresh",
            Self::LogoutCurrent => "DELETE /v1/sessions/current",
            Self::EndSession(_) => "DELETE /v1/sessions/{id}",
            Self::Health => "GET /healthz",
            Self::Ready => "GET /readyz",
            Self::OpenApi => "GET /openapi.json",
        }
    }
}

pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    // The route nearly every request takes, without splitting the path (the tests below hold
    // it to the same answers as the table).
    if path == "/v1/users/me" && (method == Method::GET || method == Method::HEAD) {
        return Ok(Route::Me);
    }
    // Proxies send the original request's method (nginx) or GET (Caddy): all are answered
    // alike, and no body is ever read.
    if path == "/v1/forward-auth" {
        return Ok(Route::ForwardAuth);
    }
    // At most five segments matter; a longer path is not ours. No allocation per request.
    let mut segments = [""; 5];
    let mut count = 0;
    for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
        let slot = segments.get_mut(count).ok_or(ApiError::NotFound)?;
        *slot = segment;
        count += 1;
    }
    let m = method;
    let (route, allow) = match segments.get(..count).unwrap_or_default() {
        ["v1", "users"] => (pick(m, &[(Method::POST, Route::Register)]), "POST"),
        ["v1", "introspect"] => (pick(m, &[(Method::POST, Route::Introspect)]), "POST"),
        ["v1", "users", "me"] => (
            pick(
                m,
                &[(Method::GET, Route::Me), (Method::DELETE, Route::DeleteMe)],
            ),
            "GET, HEAD, DELETE",
        ),
        ["v1", "users", "me", "password"] => {
            (pick(m, &[(Method::PUT, Route::ChangePassword)]), "PUT")
        }
        ["v1", "users", "me", "totp"] => (
            pick(
                m,
                &[
                    (Method::POST, Route::EnrolTotp),
                    (Method::DELETE, Route::RemoveTotp),
                ],
            ),
            "POST, DELETE",
        ),
        ["v1", "users", "me", "totp", "confirm"] => {
            (pick(m, &[(Method::POST, Route::ConfirmTotp)]), "POST")
        }
        ["v1", "users", "me", "totp", "recovery-codes"] => (
            pick(m, &[(Method::POST, Route::ReplaceRecoveryCodes)]),
            "POST",
        ),
        ["v1", "users", name] if !name.is_empty() => {
            let name = percent_decode_str(name)
                .decode_utf8()
                .map_err(|_| ApiError::NotFound)?
                .into_owned();
            (
                pick(m, &[(Method::GET, Route::UserByName(name))]),
                "GET, HEAD",
            )
        }
        ["v1", "sessions"] => (
            pick(
                m,
                &[
                    (Method::POST, Route::Login),
                    (Method::GET, Route::ListSessions),
                    (Method::DELETE, Route::LogoutEverywhere),
                ],
            ),
            "GET, HEAD, POST, DELETE",
        ),
        ["v1", "sessions", "refresh"] => (pick(m, &[(Method::POST, Route::Refresh)]), "POST"),
        ["v1", "sessions", "current"] => {
            (pick(m, &[(Method::DELETE, Route::LogoutCurrent)]), "DELETE")
        }
        // Session ids are base64url: nothing to decode, and anything else names no session.
        ["v1", "sessions", id] if !id.is_empty() => (
            pick(m, &[(Method::DELETE, Route::EndSession((*id).to_owned()))]),
            "DELETE",
        ),
        ["healthz"] => (pick(m, &[(Method::GET, Route::Health)]), "GET, HEAD"),
        ["readyz"] => (pick(m, &[(Method::GET, Route::Ready)]), "GET, HEAD"),
        ["openapi.json"] => (pick(m, &[(Method::GET, Route::OpenApi)]), "GET, HEAD"),
        _ => return Err(ApiError::NotFound),
    };
    route.ok_or(ApiError::MethodNotAllowed { allow })
}

/// HEAD is served wherever GET is (RFC 9110 §9.3.2); hyper sends the headers without the body.
fn pick(method: &Method, candidates: &[(Method, Route)]) -> Option<Route> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    candidates
        .iter()
        .find(|(m, _)| m == method)
        .map(|(_, route)| route.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_route_resolves_to_its_own_name() {
        for (method, template) in ROUTES {
            let path = template
                .replace("{username}", "kvothe")
                .replace("{id}", "abc");
            let method: Method = method.parse().unwrap();
            let route = route(&method, &path).unwrap();
            assert_eq!(route.name(), format!("{method} {template}"));
        }
    }

    #[test]
    fn forward_auth_takes_every_method() {
        for method in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
        ] {
            let method: Method = method.parse().unwrap();
            assert_eq!(
                route(&method, "/v1/forward-auth").unwrap(),
                Route::ForwardAuth
            );
        }
    }

    #[test]
    fn head_routes_like_get() {
        assert_eq!(route(&Method::HEAD, "/v1/users/me").unwrap(), Route::Me);
        assert_eq!(route(&Method::HEAD, "/healthz").unwrap(), Route::Health);
    }

    #[test]
    fn usernames_in_paths_are_percent_decoded() {
        assert_eq!(
            route(&Method::GET, "/v1/users/%EF%BC%AB%EF%BC%B6").unwrap(),
            Route::UserByName("ＫＶ".into())
        );
    }

    #[test]
    fn wrong_method_gives_405_with_allow() {
        for (method, path, allow) in [
            (Method::PATCH, "/v1/users/me", "GET, HEAD, DELETE"),
            (Method::TRACE, "/v1/sessions", "GET, HEAD, POST, DELETE"),
            (Method::GET, "/v1/sessions/refresh", "POST"),
            (Method::GET, "/v1/sessions/abc", "DELETE"),
            (Method::GET, "/v1/users", "POST"),
            (Method::PUT, "/v1/sessions", "GET, HEAD, POST, DELETE"),
        ] {
            match route(&method, path) {
                Err(ApiError::MethodNotAllowed { allow: a }) => assert_eq!(a, allow),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unknown_paths_give_404() {
        for path in [
            "/",
            "/v1",
            "/v1/users/",
            "/v1/users/a/b",
            "/v2/users",
            "/v1/users/%ff",
        ] {
            assert!(
                matches!(route(&Method::GET, path), Err(ApiError::NotFound)),
                "{path}"
            );
        }
    }
}
