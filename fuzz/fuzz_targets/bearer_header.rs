//! The `Authorization` header and the query string, as the request path reads them: any bytes
//! give a token or a 4xx, never a panic; a token comes only from exactly one header, is
//! non-empty and holds no space, and never when the query string carries an `access_token`
//! parameter in any spelling — as the WHATWG form parser reads the query's parameters, with `;`
//! separating them too.
#![no_main]

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tessera::http::parsers::bearer_token;

fuzz_target!(|input: (Vec<u8>, Option<Vec<u8>>, String)| {
    let (first, second, query) = input;
    let mut headers = HeaderMap::new();
    for value in std::iter::once(&first).chain(second.as_ref()) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(AUTHORIZATION, value);
        }
    }
    let Ok(uri) = format!("/v1/users/me?{query}").parse::<hyper::Uri>() else {
        return;
    };
    let Ok(token) = bearer_token(&headers, &uri) else {
        return;
    };
    assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
    assert!(!token.is_empty() && !token.contains(' '));
    let header = headers[AUTHORIZATION]
        .to_str()
        .expect("the token came from text");
    assert!(header.ends_with(token));
    assert!(
        header
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer"))
    );
    let separated = query.replace(';', "&");
    let mut parameters = form_urlencoded::parse(separated.as_bytes());
    assert!(
        !parameters.any(|(key, _)| key.eq_ignore_ascii_case("access_token")),
        "a token was taken from a request that also carries one in its query"
    );
});
