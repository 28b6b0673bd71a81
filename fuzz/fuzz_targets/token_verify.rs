//! Any bytes as an access token: the codec answers (never panics), the request path's
//! remembering verifier answers exactly as the full one, and keyless inspection (the CLI's)
//! never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tessera::token::Codec;
use tessera_fuzz::{NOW, codec, policy};

static CODEC: OnceLock<Codec> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let codec = CODEC.get_or_init(codec);
    let full = codec.verify(token, NOW);
    assert_eq!(codec.verify_cached(token, NOW), full);
    assert_eq!(codec.verify_cached(token, NOW), full, "remembered");
    let _ = tessera::token::inspect::inspect(token, NOW, &policy());
});
