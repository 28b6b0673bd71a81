//! Our codec against `jsonwebtoken` with the same key and validation, on correctly signed
//! fuzzer-shaped tokens: whatever ours accepts, `jsonwebtoken` accepts too, with the same
//! claims. Equivalently, every token `jsonwebtoken` refuses — bad signature, another algorithm,
//! wrong issuer or audience, a missing or mistyped claim, malformed JSON or base64 — ours
//! refuses as well. Ours is stricter on purpose (pinned header, no unknown or repeated members,
//! lifetime cap, no leeway on `exp`), so the other direction is not asserted. Time is left to
//! ours: `jsonwebtoken` reads the wall clock, so its `exp`/`nbf` checks are off here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tessera::token::Codec;
use tessera_fuzz::{ClaimsInput, HeaderInput, NOW, SECRET, codec, signed};

static CODEC: OnceLock<Codec> = OnceLock::new();

#[derive(Debug, serde::Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    sid: String,
    r#gen: u64,
    amr: Vec<String>,
}

fuzz_target!(|input: (HeaderInput, ClaimsInput)| {
    let (header, claims) = input;
    let codec = CODEC.get_or_init(codec);
    let token = signed(&header.bytes(), &claims.bytes());
    let Ok(ours) = codec.verify(&token, NOW) else {
        return;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["tessera"]);
    validation.set_audience(&["tessera-api"]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    let theirs = jsonwebtoken::decode::<Claims>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET),
        &validation,
    )
    .unwrap_or_else(|e| panic!("ours accepted what jsonwebtoken refuses ({e}): {token}"));
    let (ours, theirs) = (ours.claims(), theirs.claims);
    assert_eq!(
        (
            ours.iss.as_str(),
            ours.aud.as_str(),
            ours.sub.as_str(),
            ours.jti.as_str(),
            ours.sid.as_str()
        ),
        (
            theirs.iss.as_str(),
            theirs.aud.as_str(),
            theirs.sub.as_str(),
            theirs.jti.as_str(),
            theirs.sid.as_str()
        )
    );
    assert_eq!(
        (ours.iat, ours.nbf, ours.exp, ours.r#gen),
        (theirs.iat, theirs.nbf, theirs.exp, theirs.r#gen)
    );
    assert_eq!(ours.amr.amr(), theirs.amr.as_slice());
});
