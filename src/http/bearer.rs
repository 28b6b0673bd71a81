//! Bearer credentials from the `Authorization` header (RFC 6750 §2.1), and nowhere else.
//!
//! Query-string tokens (§2.3) leak into logs, history and Referer headers, so a request that
//! carries one is refused outright rather than silently ignored.

use super::problem::{ApiError, BearerProblem};
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{HeaderMap, Uri};

/// The token from `Authorization: Bearer <token>`.
pub fn extract<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<&'a str, ApiError> {
    if query_has_token(uri) {
        return Err(invalid_request(
            "Send the token in the Authorization header, never in the URL",
        ));
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::Bearer(BearerProblem::Missing));
    };
    if values.next().is_some() {
        return Err(invalid_request("Send exactly one Authorization header"));
    }
    match plain_bearer(value.as_bytes()) {
        Some(token) => Ok(token),
        None => credentials(value),
    }
}

/// The general reading of the header's value, naming what is wrong with it.
fn credentials(value: &HeaderValue) -> Result<&str, ApiError> {
    let value = value
        .to_str()
        .map_err(|_| invalid_request("The Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    // The scheme is case-insensitive (RFC 9110 §11.1); another scheme means no Bearer
    // credentials were offered at all (RFC 6750 §3.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Bearer(BearerProblem::Missing));
    }
    if token.is_empty() || token.contains(' ') {
        return Err(invalid_request("Use `Authorization: Bearer <token>`"));
    }
    Ok(token)
}

/// The common shape, `Bearer <token>` with the token all visible ASCII and no spaces, in one
/// branch-free pass (vectorised). Anything else takes the general path, which tells the
/// client what is wrong; whatever this accepts, the general path accepts identically.
fn plain_bearer(value: &[u8]) -> Option<&str> {
    const PREFIX: usize = "Bearer ".len();
    let (scheme, token) = (value.get(..PREFIX)?, value.get(PREFIX..)?);
    let visible = token.iter().fold(!token.is_empty(), |ok, &byte| {
        ok & (b'!'..=b'~').contains(&byte)
    });
    if !(visible && scheme.eq_ignore_ascii_case(b"bearer ")) {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// Any spelling of `access_token` as a query key: percent-decoded (`access%5Ftoken`) and
/// compared without regard to case (`ACCESS_TOKEN`), so no variant slips through to a handler.
fn query_has_token(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        query.split(['&', ';']).any(|pair| {
            let key = pair.split('=').next().unwrap_or_default().replace('+', " ");
            percent_encoding::percent_decode_str(&key)
                .decode_utf8_lossy()
                .eq_ignore_ascii_case("access_token")
        })
    })
}

fn invalid_request(why: &'static str) -> ApiError {
    ApiError::Bearer(BearerProblem::InvalidRequest(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn problem(result: Result<&str, ApiError>) -> BearerProblem {
        match result {
            Err(ApiError::Bearer(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bearer_token_is_extracted_case_insensitively() {
        let h = headers(&["bearer abc.def.ghi"]);
        assert_eq!(extract(&h, &uri("/v1/users/me")).unwrap(), "abc.def.ghi");
    }

    #[test]
    fn no_header_or_another_scheme_is_missing_credentials() {
        assert_eq!(
            problem(extract(&headers(&[]), &uri("/"))),
            BearerProblem::Missing
        );
        assert_eq!(
            problem(extract(&headers(&["Basic dTpw"]), &uri("/"))),
            BearerProblem::Missing
        );
    }

    #[test]
    fn malformed_or_duplicate_headers_are_invalid_requests() {
        for bad in [
            &["Bearer"][..],
            &["Bearer "],
            &["Bearer a b"],
            &["Bearer a", "Bearer b"],
        ] {
            assert!(matches!(
                problem(extract(&headers(bad), &uri("/"))),
                BearerProblem::InvalidRequest(_)
            ));
        }
    }

    /// A token in the query string is refused under any spelling of the key (percent-encoded,
    /// any case), never passed to the handler.
    #[test]
    fn query_string_tokens_are_refused_in_every_spelling() {
        let h = headers(&["Bearer a.b.c"]);
        for query in [
            "access_token=a.b.c",
            "ACCESS_TOKEN=a.b.c",
            "Access_Token=a.b.c",
            "access%5Ftoken=a.b.c",
            "access%5ftoken=a.b.c",
            "%61ccess_token=a.b.c",
            "x=1&access_token",
            "x=1;access_token=a",
        ] {
            assert!(
                matches!(
                    problem(extract(&h, &uri(&format!("/v1/users/me?{query}")))),
                    BearerProblem::InvalidRequest(_)
                ),
                "{query}"
            );
        }
        assert!(extract(&h, &uri("/v1/users/me?access=1&token=2")).is_ok());
    }

    /// Only a parameter named `access_token` is refused: a key or a value that merely holds the
    /// name is another parameter, as every form parser reads the query.
    #[test]
    fn names_that_only_contain_access_token_are_other_parameters() {
        let h = headers(&["Bearer a.b.c"]);
        for query in [
            "xaccess_token=1",
            "access_token_hint=1",
            "q=access_token",
            "VV0(access%5ftoken11%-.",
            "access%5Ftoken%3Da.b.c",
        ] {
            assert_eq!(
                extract(&h, &uri(&format!("/v1/users/me?{query}"))).unwrap(),
                "a.b.c",
                "{query}"
            );
        }
    }

    proptest! {
        /// The fast path is only a shortcut: whatever it accepts, the general reading accepts
        /// as the same token; and every well-formed Bearer header takes it.
        #[test]
        fn the_fast_path_agrees_with_the_general_reading(
            scheme in "(Bearer|bearer|BEARER|Basic|Bearer\\t|Bearerx|)",
            separator in "( |  |\\t|)",
            token in "[ -~\\t\\x80-\\xff]{0,40}",
        ) {
            let text = format!("{scheme}{separator}{token}");
            let Ok(value) = HeaderValue::from_bytes(text.as_bytes()) else { return Ok(()) };
            let general = credentials(&value).ok();
            if let Some(fast) = plain_bearer(value.as_bytes()) {
                prop_assert_eq!(Some(fast), general);
            }
            if let Some(token) = general
                && token.bytes().all(|b| b.is_ascii_graphic())
            {
                prop_assert_eq!(plain_bearer(value.as_bytes()), Some(token));
            }
        }
    }
}
