//! An introspection request's form body and Basic credentials: any bytes parse or give a 4xx,
//! never a panic; a parsed form has no repeated parameter and no empty value.
#![no_main]

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tessera::http::parsers::{client_credentials, form};

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (body, authorization) = input;
    if let Ok(parsed) = form(&body) {
        let names: std::collections::HashSet<&str> = parsed
            .parameters()
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(
            names.len(),
            parsed.parameters().len(),
            "a repeated parameter"
        );
        assert!(
            parsed
                .parameters()
                .iter()
                .all(|(_, value)| !value.is_empty())
        );
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(&authorization) {
        headers.insert(AUTHORIZATION, value);
    }
    let _ = client_credentials(&headers);
});
