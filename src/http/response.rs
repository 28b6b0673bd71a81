//! Response builders, and the headers every response carries.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, PRAGMA, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};
use serde_json::Value;

pub type HttpResponse = Response<Full<Bytes>>;

/// A constant, so the name is not parsed again for every response.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn json(status: StatusCode, body: &Value) -> HttpResponse {
    with_body(status, "application/json", body.to_string())
}

/// A JSON body already rendered.
pub fn json_bytes(status: StatusCode, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn problem(status: StatusCode, body: &Value) -> HttpResponse {
    with_body(status, "application/problem+json", body.to_string())
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    with_body(status, content_type, body)
}

pub fn no_content() -> HttpResponse {
    empty(StatusCode::NO_CONTENT)
}

/// A status and headers, no body.
pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// RFC 6749 §5.1: responses carrying tokens must not be cached by anyone.
pub fn with_token_cache_headers(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn with_body(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Headers on every response. `no-store` everywhere: almost every response is either
/// authenticated or about credentials, and the few public ones gain nothing from caching.
pub fn add_standard_headers(response: &mut HttpResponse, request_id: &str) {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, id);
    }
}
