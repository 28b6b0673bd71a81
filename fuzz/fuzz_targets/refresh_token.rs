//! Refresh tokens: any string is opened or refused without panicking, and a token that opens is
//! the one canonical encoding of its session and counter — so a genuine token changed in any
//! byte either still is that very token or is refused.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tessera::domain::ids::SessionId;
use tessera::token::Codec;
use tessera_fuzz::codec;

static CODEC: OnceLock<Codec> = OnceLock::new();

fuzz_target!(|input: (Vec<u8>, [u8; 16], u64, u16, u8)| {
    let (raw, session, counter, at, byte) = input;
    let codec = CODEC.get_or_init(codec);
    let reencodes = |text: &str| {
        if let Ok(opened) = codec.open_refresh_token(text) {
            let minted = codec
                .refresh_token(&opened.session, opened.counter)
                .expect("an opened token's session re-mints");
            assert_eq!(minted.expose(), text, "only the canonical encoding opens");
        }
    };
    if let Ok(text) = std::str::from_utf8(&raw) {
        reencodes(text);
    }
    let session = SessionId::from_string(URL_SAFE_NO_PAD.encode(session));
    let genuine = codec
        .refresh_token(&session, counter)
        .expect("a valid session id");
    let mut changed = genuine.expose().as_bytes().to_vec();
    let index = usize::from(at) % changed.len();
    changed[index] = byte;
    if let Ok(text) = std::str::from_utf8(&changed) {
        reencodes(text);
        let opened = codec.open_refresh_token(text);
        assert_eq!(opened.is_ok(), text == genuine.expose());
    }
});
