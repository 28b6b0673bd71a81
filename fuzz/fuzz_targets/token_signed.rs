//! Tokens correctly signed with the key, over fuzzer-shaped headers and claims: whatever the
//! codec accepts satisfies the policy stated again here, re-signs to a token with the same
//! claims, and stops verifying when any byte of its signature changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tessera::token::Codec;
use tessera_fuzz::{ClaimsInput, HeaderInput, LEEWAY, MAX_LIFETIME, NOW, codec, signed};

static CODEC: OnceLock<Codec> = OnceLock::new();

fuzz_target!(|input: (HeaderInput, ClaimsInput, i16, u8)| {
    let (header, claims, later, flip) = input;
    let codec = CODEC.get_or_init(codec);
    let token = signed(&header.bytes(), &claims.bytes());
    let now = NOW + i64::from(later);
    let Ok(verified) = codec.verify(&token, now) else {
        return;
    };
    let claims = verified.claims();
    assert_eq!(claims.iss, "tessera");
    assert_eq!(claims.aud, "tessera-api");
    assert!(claims.exp > now, "refused from its exp on");
    assert!(claims.nbf <= now + LEEWAY && claims.iat <= now + LEEWAY);
    assert!(claims.exp - claims.iat <= MAX_LIFETIME);
    let again = codec.sign(claims);
    assert_eq!(
        codec.verify(&again, now).expect("our own token").claims(),
        claims
    );
    let mut tampered = token.into_bytes();
    let at = tampered.len() - 1 - usize::from(flip) % 43;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    assert!(
        codec.verify(&tampered, now).is_err(),
        "a changed signature verifies"
    );
});
