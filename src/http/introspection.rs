//! `POST /v1/introspect` (RFC 7662) for resource servers that cannot check a token themselves:
//! HTTP Basic client credentials (§2.1; RFC 6749 §2.3.1), a form body with `token`, and an
//! answer that is `{"active": true, …}` for a live access token and the identical
//! `{"active": false}` for everything else — revoked, expired, malformed, a refresh token,
//! another issuer's — so the answer tells nothing about why.

use super::problem::ApiError;
use super::response::{self, HttpResponse};
use crate::auth::Authenticated;
use crate::domain::secret::SecretString;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;
use zeroize::Zeroizing;

/// A client's name and secret from `Authorization: Basic …`. Anything else — no header, two,
/// another scheme, bad base64, no colon — is the one [`ApiError::InvalidClient`].
pub fn client_credentials(headers: &HeaderMap) -> Result<(String, SecretString), ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::InvalidClient);
    };
    let value = value.to_str().map_err(|_| ApiError::InvalidClient)?;
    let (scheme, encoded) = value.split_once(' ').ok_or(ApiError::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::InvalidClient);
    }
    let decoded = Zeroizing::new(
        STANDARD
            .decode(encoded.trim())
            .map_err(|_| ApiError::InvalidClient)?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| ApiError::InvalidClient)?;
    let (name, secret) = text.split_once(':').ok_or(ApiError::InvalidClient)?;
    // RFC 6749 §2.3.1: each part is form-urlencoded before the two are joined.
    let decode = |part: &str| {
        percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| ApiError::InvalidClient)
    };
    Ok((decode(name)?, SecretString::new(decode(secret)?)))
}

/// The answer for a token that stands.
pub fn active(caller: &Authenticated) -> HttpResponse {
    let claims = caller.claims.claims();
    response::json(
        StatusCode::OK,
        &json!({
            "active": true,
            "sub": claims.sub.as_str(),
            "username": caller.profile.username.canonical(),
            "sid": claims.sid.as_str(),
            "exp": claims.exp,
            "iat": claims.iat,
            "iss": claims.iss,
            "aud": claims.aud,
            "token_type": "Bearer",
        }),
    )
}

/// The one answer for every token that does not stand, whatever the reason.
pub fn inactive() -> HttpResponse {
    response::json_bytes(StatusCode::OK, Bytes::from_static(br#"{"active":false}"#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn basic(value: &str) -> Result<(String, String), ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        client_credentials(&headers).map(|(name, secret)| (name, secret.expose().to_owned()))
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_parts() {
        let encoded = STANDARD.encode("billing:tsc_abc");
        assert_eq!(
            basic(&format!("Basic {encoded}")).unwrap(),
            ("billing".into(), "tsc_abc".into())
        );
        let encoded = STANDARD.encode("a%3Ab+c:s%25e:cret");
        assert_eq!(
            basic(&format!("basic {encoded}")).unwrap(),
            ("a:b c".into(), "s%e:cret".into())
        );
    }

    #[test]
    fn anything_but_one_basic_credential_is_invalid_client() {
        for bad in [
            "Bearer abc",
            "Basic",
            "Basic !!!",
            &format!("Basic {}", STANDARD.encode("no-colon")),
            &format!("Basic {}", STANDARD.encode([0xff, b':', b'x'])),
        ] {
            assert!(matches!(basic(bad), Err(ApiError::InvalidClient)), "{bad}");
        }
        assert!(matches!(
            client_credentials(&HeaderMap::new()),
            Err(ApiError::InvalidClient)
        ));
        let mut two = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("a:b"))).unwrap();
        two.append(AUTHORIZATION, value.clone());
        two.append(AUTHORIZATION, value);
        assert!(matches!(
            client_credentials(&two),
            Err(ApiError::InvalidClient)
        ));
    }
}
