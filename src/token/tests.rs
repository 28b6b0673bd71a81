//! Codec tests: one named test per rejection class, RFC vectors, jsonwebtoken interop, and
//! property tests (round trip, single-byte tampering, no panics, non-canonical re-encodings).

use super::*;
use crate::domain::session::Factors;
use proptest::prelude::*;
use serde_json::{Value, json};

fn uid(id: &str) -> UserId {
    UserId::from_string(id.into())
}

fn sid() -> SessionId {
    SessionId::from_string("session-1".into())
}

const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const KID: &str = "test-key";
const NOW: i64 = 1_764_000_000;
const HOUR: i64 = 3600;

fn policy() -> ValidationPolicy {
    ValidationPolicy {
        issuer: "tessera".into(),
        audience: "tessera-api".into(),
        leeway: 30,
        max_lifetime: HOUR,
    }
}

fn codec() -> Codec {
    Codec::new(Keyring::from_secret(KID, SECRET).unwrap(), policy())
}

fn claims_json() -> Value {
    json!({"iss":"tessera","aud":"tessera-api","sub":"user-1","iat":NOW,"nbf":NOW,
           "exp":NOW + HOUR,"jti":"abcdefghijklmnopqrstuv","sid":"session-1","gen":0,
           "amr":["pwd"]})
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary header and payload text with the test key: lets a test reach every check
/// behind the MAC.
fn forge(header: &str, payload: &str) -> String {
    forge_with(SECRET, header, payload)
}

fn forge_with(secret: &[u8], header: &str, payload: &str) -> String {
    let ring = Keyring::from_secret(KID, secret).unwrap();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let tag = mac(ring.signing_key(), input.as_bytes());
    format!("{input}.{}", b64(&tag))
}

fn our_header() -> String {
    String::from_utf8(canonical_header(KID)).unwrap()
}

fn with_claim(name: &str, value: Value) -> String {
    let mut claims = claims_json();
    claims[name] = value;
    claims.to_string()
}

fn verify(token: &str) -> Result<VerifiedClaims, TokenError> {
    codec().verify(token, NOW + 60)
}

#[test]
fn issued_token_verifies_and_carries_its_claims() {
    let codec = codec();
    let issued = codec.issue(&uid("user-1"), &sid(), 7, NOW, HOUR);
    let verified = codec.verify(&issued.token, NOW + 1).unwrap();
    assert_eq!(verified.claims(), &issued.claims);
    assert_eq!(verified.claims().r#gen, 7);
    assert_eq!(
        verified.claims().jti.as_str().len(),
        22,
        "128-bit jti, base64url"
    );
}

#[test]
fn encoder_writes_the_pinned_header_in_canonical_order() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    let header = token.split('.').next().unwrap();
    let decoded = URL_SAFE_NO_PAD.decode(header).unwrap();
    assert_eq!(
        decoded,
        br#"{"alg":"HS256","typ":"at+jwt","kid":"test-key"}"#
    );
}

#[test]
fn each_jti_is_fresh() {
    let codec = codec();
    let a = codec.issue(&uid("u"), &sid(), 0, NOW, HOUR).claims.jti;
    let b = codec.issue(&uid("u"), &sid(), 0, NOW, HOUR).claims.jti;
    assert_ne!(a, b);
}

#[test]
fn reordered_header_with_exactly_our_members_is_accepted() {
    let header = r#"{"kid":"test-key","typ":"at+jwt","alg":"HS256"}"#;
    assert!(verify(&forge(header, &claims_json().to_string())).is_ok());
}

// ---- shape, checked before decoding ----

#[test]
fn token_over_the_size_cap_is_rejected_before_decoding() {
    let token = format!("{}.{}.{}", "a".repeat(3000), "b".repeat(3000), "c");
    assert_eq!(verify(&token), Err(TokenError::TooLong));
}

#[test]
fn token_of_exactly_the_size_cap_is_read_past_the_cap() {
    let token = format!("{}.{}.{}", "a".repeat(2000), "b".repeat(2093), "c");
    assert_eq!(token.len(), MAX_TOKEN_BYTES);
    let refused = verify(&token).unwrap_err();
    assert_ne!(refused, TokenError::TooLong, "{refused:?}");
}

#[test]
fn an_issued_token_debugs_its_claims_but_never_the_token() {
    let issued = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR);
    let shown = format!("{issued:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains(issued.claims.jti.as_str()), "{shown}");
    assert!(!shown.contains(&issued.token), "{shown}");
}

#[test]
fn wrong_segment_counts_are_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    let two: Vec<_> = token.split('.').take(2).collect();
    assert_eq!(verify(&two.join(".")), Err(TokenError::SegmentCount));
    assert_eq!(verify(&format!("{token}.x")), Err(TokenError::SegmentCount));
    assert_eq!(verify(""), Err(TokenError::SegmentCount));
}

#[test]
fn empty_signature_is_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    let stripped = &token[..token.rfind('.').unwrap() + 1];
    assert_eq!(verify(stripped), Err(TokenError::EmptySignature));
}

#[test]
fn stripped_signature_segment_is_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    let stripped = &token[..token.rfind('.').unwrap()];
    assert_eq!(verify(stripped), Err(TokenError::SegmentCount));
}

#[test]
fn empty_header_or_payload_is_rejected() {
    assert_eq!(verify("..abc"), Err(TokenError::EmptySegment));
    assert_eq!(verify(".abc.def"), Err(TokenError::EmptySegment));
    assert_eq!(verify("abc..def"), Err(TokenError::EmptySegment));
}

#[test]
fn characters_outside_base64url_are_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    assert_eq!(
        verify(&token.replacen('A', "+", 1)),
        Err(TokenError::InvalidCharacter)
    );
    assert_eq!(
        verify(&format!("{token}/")),
        Err(TokenError::InvalidCharacter)
    );
    assert_eq!(
        verify(&format!("{token}é")),
        Err(TokenError::InvalidCharacter)
    );
}

#[test]
fn padding_is_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    assert_eq!(verify(&format!("{token}=")), Err(TokenError::Padding));
}

#[test]
fn whitespace_and_line_breaks_are_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    for ws in [" ", "\t", "\r", "\n", "\r\n"] {
        assert_eq!(verify(&format!("{token}{ws}")), Err(TokenError::Whitespace));
        let (head, tail) = token.split_at(10);
        assert_eq!(
            verify(&format!("{head}{ws}{tail}")),
            Err(TokenError::Whitespace)
        );
    }
}

#[test]
fn non_canonical_base64_trailing_bits_are_rejected() {
    // A 32-byte MAC is 43 characters whose last one carries 2 unused bits; setting them
    // decodes to the same bytes in a lenient decoder, so it must be refused.
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    let tampered = flip_trailing_bits(&token, 2);
    assert_ne!(tampered, token);
    assert_eq!(verify(&tampered), Err(TokenError::NonCanonicalBase64));
}

#[test]
fn signature_of_the_wrong_length_is_rejected() {
    let token = codec().issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    assert_eq!(
        verify(&format!("{token}AAAA")),
        Err(TokenError::SignatureLength)
    );
}

// ---- header ----

#[test]
fn alg_none_in_any_case_is_rejected() {
    for alg in ["none", "None", "nOnE", "NONE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"test-key"}}"#);
        let unsigned = format!(
            "{}.{}.",
            b64(header.as_bytes()),
            b64(claims_json().to_string().as_bytes())
        );
        assert_eq!(verify(&unsigned), Err(TokenError::EmptySignature), "{alg}");
        let signed = forge(&header, &claims_json().to_string());
        assert_eq!(
            verify(&signed),
            Err(TokenError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
}

#[test]
fn other_algorithms_and_wrong_case_are_rejected() {
    for alg in [
        "hs256", "Hs256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "",
    ] {
        let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"test-key"}}"#);
        assert_eq!(
            verify(&forge(&header, &claims_json().to_string())),
            Err(TokenError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
}

#[test]
fn wrong_or_missing_typ_is_rejected() {
    for header in [
        r#"{"alg":"HS256","typ":"JWT","kid":"test-key"}"#,
        r#"{"alg":"HS256","typ":"AT+JWT","kid":"test-key"}"#,
    ] {
        assert_eq!(
            verify(&forge(header, &claims_json().to_string())),
            Err(TokenError::WrongType)
        );
    }
    let header = r#"{"alg":"HS256","kid":"test-key"}"#;
    assert_eq!(
        verify(&forge(header, &claims_json().to_string())),
        Err(TokenError::MissingHeaderMember("typ"))
    );
}

#[test]
fn unknown_kid_is_rejected() {
    for kid in ["other", "../../dev/null", "' OR 1=1 --", ""] {
        let header = json!({"alg":"HS256","typ":"at+jwt","kid":kid}).to_string();
        assert_eq!(
            verify(&forge(&header, &claims_json().to_string())),
            Err(TokenError::UnknownKid),
            "{kid}"
        );
    }
}

#[test]
fn extra_header_members_are_rejected() {
    for extra in ["crit", "jku", "jwk", "x5u", "x5c", "cty", "b64"] {
        let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"test-key","{extra}":"x"}}"#);
        assert_eq!(
            verify(&forge(&header, &claims_json().to_string())),
            Err(TokenError::UnexpectedHeaderMember(extra.into()))
        );
    }
}

#[test]
fn duplicated_header_member_is_rejected() {
    let header = r#"{"alg":"HS256","alg":"HS256","typ":"at+jwt","kid":"test-key"}"#;
    assert_eq!(
        verify(&forge(header, &claims_json().to_string())),
        Err(TokenError::MalformedHeader(ObjectError::DuplicateMember(
            "alg".into()
        )))
    );
}

#[test]
fn header_that_is_not_an_object_is_rejected() {
    for header in ["[]", "\"HS256\"", "null", "{", "{\"alg\":[\"HS256\"]}"] {
        assert!(
            matches!(
                verify(&forge(header, &claims_json().to_string())),
                Err(TokenError::MalformedHeader(_))
            ),
            "{header}"
        );
    }
}

// ---- MAC ----

#[test]
fn mac_from_another_key_is_rejected() {
    let token = forge_with(&[9u8; 32], &our_header(), &claims_json().to_string());
    assert_eq!(verify(&token), Err(TokenError::BadSignature));
}

#[test]
fn tampered_claims_fail_the_mac() {
    let token = codec().issue(&uid("user-1"), &sid(), 0, NOW, HOUR).token;
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    for (name, value) in [
        ("sub", json!("admin")),
        ("gen", json!(99)),
        ("exp", json!(NOW + 100 * HOUR)),
    ] {
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims[name] = value;
        parts[1] = b64(claims.to_string().as_bytes());
        assert_eq!(
            verify(&parts.join(".")),
            Err(TokenError::BadSignature),
            "{name}"
        );
    }
}

#[test]
fn payload_is_not_parsed_before_the_mac_matches() {
    // Garbage payload with a wrong MAC must report the MAC, proving parse order.
    let token = format!(
        "{}.{}.{}",
        b64(our_header().as_bytes()),
        b64(b"\xff\xfe"),
        "A".repeat(43)
    );
    assert_eq!(verify(&token), Err(TokenError::BadSignature));
}

// ---- payload ----

#[test]
fn payload_with_invalid_utf8_is_rejected() {
    let mut ring_input = format!("{}.", b64(our_header().as_bytes()));
    ring_input.push_str(&b64(b"{\"iss\":\"\xff\"}"));
    let ring = Keyring::from_secret(KID, SECRET).unwrap();
    let token = format!(
        "{ring_input}.{}",
        b64(&mac(ring.signing_key(), ring_input.as_bytes()))
    );
    assert_eq!(
        verify(&token),
        Err(TokenError::MalformedPayload(ObjectError::InvalidUtf8))
    );
}

#[test]
fn payload_with_bom_is_rejected() {
    let payload = format!("\u{feff}{}", claims_json());
    assert_eq!(
        verify(&forge(&our_header(), &payload)),
        Err(TokenError::MalformedPayload(ObjectError::ByteOrderMark))
    );
}

#[test]
fn payload_with_duplicate_claims_is_rejected() {
    let payload = claims_json()
        .to_string()
        .replacen('{', r#"{"sub":"admin","#, 1);
    assert_eq!(
        verify(&forge(&our_header(), &payload)),
        Err(TokenError::MalformedPayload(ObjectError::DuplicateMember(
            "sub".into()
        )))
    );
}

#[test]
fn payload_that_is_not_an_object_is_rejected() {
    assert_eq!(
        verify(&forge(&our_header(), "[1,2]")),
        Err(TokenError::MalformedPayload(ObjectError::NotAnObject))
    );
}

#[test]
fn deeply_nested_payload_is_rejected() {
    let payload = format!(r#"{{"x":{}1{}}}"#, "[".repeat(500), "]".repeat(500));
    assert_eq!(
        verify(&forge(&our_header(), &payload)),
        Err(TokenError::MalformedPayload(ObjectError::TooDeep(2)))
    );
}

#[test]
fn non_integer_times_are_rejected() {
    for value in [
        json!("1764003600"),
        json!(1_764_003_600.0),
        json!(1.5),
        json!(-1),
        json!(u64::MAX),
        json!(null),
        json!(true),
    ] {
        for claim in ["exp", "nbf", "iat"] {
            assert_eq!(
                verify(&forge(&our_header(), &with_claim(claim, value.clone()))),
                Err(TokenError::InvalidClaim(match claim {
                    "exp" => "exp",
                    "nbf" => "nbf",
                    _ => "iat",
                })),
                "{claim} = {value}"
            );
        }
    }
    // Beyond u64 too: serde_json reads it as a float.
    let payload = claims_json()
        .to_string()
        .replace(&(NOW + HOUR).to_string(), "99999999999999999999999");
    assert_eq!(
        verify(&forge(&our_header(), &payload)),
        Err(TokenError::InvalidClaim("exp"))
    );
}

#[test]
fn missing_required_claims_are_rejected() {
    for claim in [
        "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "gen", "amr",
    ] {
        let mut claims = claims_json();
        claims.as_object_mut().unwrap().remove(claim);
        let error = verify(&forge(&our_header(), &claims.to_string())).unwrap_err();
        assert!(
            matches!(error, TokenError::MissingClaim(c) if c == claim),
            "{claim}"
        );
    }
}

#[test]
fn unknown_claims_are_rejected() {
    assert_eq!(
        verify(&forge(&our_header(), &with_claim("admin", json!(true)))),
        Err(TokenError::UnknownClaim("admin".into()))
    );
}

#[test]
fn wrong_issuer_or_audience_is_rejected() {
    assert_eq!(
        verify(&forge(&our_header(), &with_claim("iss", json!("evil")))),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        verify(&forge(
            &our_header(),
            &with_claim("aud", json!("other-api"))
        )),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        verify(&forge(
            &our_header(),
            &with_claim("aud", json!(["tessera-api"]))
        )),
        Err(TokenError::InvalidClaim("aud"))
    );
}

/// A token dies at its `exp` (RFC 7519 §4.1.4: "on or after"), whatever the leeway: the
/// leeway forgives a fast clock on `iat` and `nbf`, never extends a token's life past the end
/// its issuer cut it to.
#[test]
fn a_token_is_refused_from_its_exp_on_whatever_the_leeway() {
    let codec = codec();
    let token = codec.issue(&uid("u"), &sid(), 0, NOW, HOUR).token;
    let exp = NOW + HOUR;
    assert!(codec.verify(&token, exp - 1).is_ok());
    assert_eq!(codec.verify(&token, exp), Err(TokenError::Expired));
    assert_eq!(codec.verify_cached(&token, exp - 1).map(|_| ()), Ok(()));
    assert_eq!(
        codec.verify_cached(&token, exp).map(|_| ()),
        Err(TokenError::Expired)
    );
    let ahead = codec.issue(&uid("u"), &sid(), 0, NOW + 29, 60).token;
    assert!(
        codec.verify(&ahead, NOW).is_ok(),
        "a clock 29 s ahead is forgiven"
    );
}

#[test]
fn token_not_yet_valid_is_rejected() {
    let mut claims = claims_json();
    claims["nbf"] = json!(NOW + 600);
    assert_eq!(
        codec().verify(&forge(&our_header(), &claims.to_string()), NOW),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn token_issued_in_the_future_is_rejected() {
    let codec = codec();
    let token = codec.issue(&uid("u"), &sid(), 0, NOW + 600, 60).token;
    assert_eq!(codec.verify(&token, NOW), Err(TokenError::IssuedInFuture));
}

#[test]
fn lifetime_beyond_the_maximum_is_rejected() {
    assert_eq!(
        verify(&forge(
            &our_header(),
            &with_claim("exp", json!(NOW + HOUR + 1))
        )),
        Err(TokenError::LifetimeTooLong)
    );
}

#[test]
fn exp_before_iat_is_rejected() {
    assert_eq!(
        verify(&forge(&our_header(), &with_claim("exp", json!(NOW - 1)))),
        Err(TokenError::InconsistentTimes)
    );
}

/// A token that becomes valid only after it has expired is refused as inconsistent, whenever it
/// is presented (found by mutation testing: no test had `nbf` after `exp`).
#[test]
fn nbf_after_exp_is_rejected() {
    assert_eq!(
        verify(&forge(
            &our_header(),
            &with_claim("nbf", json!(NOW + HOUR + 1))
        )),
        Err(TokenError::InconsistentTimes)
    );
    // `nbf` at `exp` is not inconsistent (the token is simply never valid).
    assert_ne!(
        verify(&forge(&our_header(), &with_claim("nbf", json!(NOW + HOUR)))),
        Err(TokenError::InconsistentTimes)
    );
}

// ---- RFC vectors ----

const RFC7515_A1_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[test]
fn rfc7515_appendix_a1_mac_matches_at_the_mac_layer() {
    let secret = URL_SAFE_NO_PAD.decode(RFC7515_A1_KEY).unwrap();
    let ring = Keyring::from_secret(KID, &secret).unwrap();
    let segments = Segments::split(RFC7515_A1_TOKEN).unwrap();
    assert!(check_signature(ring.signing_key(), &segments).is_ok());
}

#[test]
fn rfc7515_appendix_a1_fails_full_verification_on_its_header() {
    let secret = URL_SAFE_NO_PAD.decode(RFC7515_A1_KEY).unwrap();
    let codec = Codec::new(Keyring::from_secret(KID, &secret).unwrap(), policy());
    // Its header is {"typ":"JWT","alg":"HS256"}: no kid, and the wrong typ.
    assert_eq!(
        codec.verify(RFC7515_A1_TOKEN, 1_300_000_000),
        Err(TokenError::WrongType)
    );
}

#[test]
fn rfc7519_section_6_1_unsecured_jwt_is_rejected() {
    let unsecured = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    assert_eq!(verify(unsecured), Err(TokenError::EmptySignature));
}

// ---- interop with an independent implementation ----

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct InteropClaims {
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

fn jwt_validation() -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["tessera"]);
    validation.set_audience(&["tessera-api"]);
    validation
}

#[test]
fn jsonwebtoken_verifies_our_tokens() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let issued = codec().issue(&uid("user-1"), &sid(), 3, now, HOUR);
    let decoded = jsonwebtoken::decode::<InteropClaims>(
        &issued.token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET),
        &jwt_validation(),
    )
    .unwrap();
    assert_eq!(decoded.header.kid.as_deref(), Some(KID));
    assert_eq!(decoded.claims.jti, issued.claims.jti.as_str());
    assert_eq!(decoded.claims.r#gen, 3);
}

#[test]
fn we_verify_jsonwebtoken_tokens() {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(KID.into());
    let claims = InteropClaims {
        iss: "tessera".into(),
        aud: "tessera-api".into(),
        sub: "user-9".into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + HOUR,
        jti: "jti-from-elsewhere".into(),
        sid: "session-from-elsewhere".into(),
        r#gen: 1,
        amr: vec!["pwd".into(), "otp".into()],
    };
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let verified = verify(&token).unwrap();
    assert_eq!(verified.claims().sub, "user-9");
    assert_eq!(verified.claims().amr, Factors::PasswordAndOtp);
    assert_eq!(verified.claims().jti, "jti-from-elsewhere");
}

// ---- inspection ----

#[test]
fn inspect_decodes_without_a_key_and_lists_problems() {
    let token = codec().issue(&uid("user-1"), &sid(), 0, NOW, HOUR).token;
    let fine = inspect::inspect(&token, NOW + 1, &policy());
    assert!(fine.problems.is_empty());
    assert_eq!(fine.claims.unwrap()["sub"], "user-1");
    assert_eq!(fine.header.unwrap()["kid"], KID);

    let late = inspect::inspect(&token, NOW + 2 * HOUR, &policy());
    assert_eq!(late.problems, vec![TokenError::Expired]);

    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims_json().to_string().as_bytes())
    );
    assert_eq!(
        inspect::inspect(&none, NOW, &policy()).problems,
        vec![TokenError::EmptySignature]
    );
}

// ---- properties ----

/// Sets the unused low bits of the last character of the last segment whose length leaves
/// some (`unused` = 2 for a 43-character MAC).
fn flip_trailing_bits(token: &str, unused: u32) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 1;
    let index = ALPHABET.iter().position(|&c| c == bytes[last]).unwrap();
    bytes[last] = ALPHABET[index ^ ((1 << unused) - 1)];
    String::from_utf8(bytes).unwrap()
}

fn segment_variants(segment: &str) -> Vec<String> {
    let mut variants = vec![format!("{segment}="), format!("{segment}==")];
    let unused = match segment.len() % 4 {
        2 => 4,
        3 => 2,
        _ => 0,
    };
    if unused > 0 {
        variants.push(flip_trailing_bits(segment, unused));
    }
    variants
}

#[test]
fn our_own_payloads_take_the_canonical_fast_path() {
    let issued = codec().issue(&uid("Ibe-mlq6Vrc_p1FJYaRCnA"), &sid(), 7, NOW, HOUR);
    let payload = issued.token.split('.').nth(1).unwrap();
    let json = URL_SAFE_NO_PAD.decode(payload).unwrap();
    assert_eq!(claims::canonical::parse(&json), Some(issued.claims));
    // Whitespace is still JSON, but not ours: the general parser takes it.
    let spaced = String::from_utf8(json).unwrap().replacen(':', ": ", 1);
    assert_eq!(claims::canonical::parse(spaced.as_bytes()), None);
    assert!(Claims::parse(spaced.as_bytes()).is_ok());
}

/// Claims with any strings (quotes, backslashes, controls, non-ASCII) and any numbers.
fn arbitrary_claims() -> impl Strategy<Value = Claims> {
    (
        (
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
        ),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<u64>()),
    )
        .prop_map(
            |((iss, aud, sub, jti, sid), (iat, nbf, exp, r#gen))| Claims {
                iss,
                aud,
                sub: uid(&sub),
                iat,
                nbf,
                exp,
                jti: TokenId::from_string(jti),
                sid: SessionId::from_string(sid),
                r#gen,
                amr: if r#gen % 2 == 0 {
                    Factors::Password
                } else {
                    Factors::PasswordAndOtp
                },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The byte-level fast path may only ever agree with the general parser: on our encoder's
    /// output for any claim values, and on any single-byte change or insertion in it.
    #[test]
    fn the_canonical_fast_path_agrees_with_the_general_parser(
        claims in arbitrary_claims(),
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        insert in any::<bool>(),
    ) {
        let json = serde_json::to_vec(&claims).unwrap();
        prop_assert_eq!(Claims::parse(&json), Claims::parse_general(&json));
        let mut changed = json.clone();
        let at = index.index(changed.len());
        if insert { changed.insert(at, byte) } else { changed[at] = byte }
        if let Some(fast) = claims::canonical::parse(&changed) {
            prop_assert_eq!(Ok(fast), Claims::parse_general(&changed));
        }
    }

    #[test]
    fn round_trip_preserves_every_claim(
        sub in "[a-zA-Z0-9_-]{1,64}",
        generation in any::<u64>(),
        now in 0i64..4_000_000_000,
        lifetime in 1i64..=HOUR,
    ) {
        let codec = codec();
        let issued = codec.issue(&uid(&sub), &sid(), generation, now, lifetime);
        let verified = codec.verify(&issued.token, now).unwrap();
        prop_assert_eq!(verified.claims(), &issued.claims);
        prop_assert_eq!(verified.claims().sub.as_str(), sub.as_str());
        prop_assert_eq!(verified.claims().r#gen, generation);
    }

    #[test]
    fn changing_any_single_byte_is_rejected(index in any::<prop::sample::Index>(), replacement in any::<u8>()) {
        let token = codec().issue(&uid("user-1"), &sid(), 0, NOW, HOUR).token;
        let mut bytes = token.clone().into_bytes();
        let i = index.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        let tampered = String::from_utf8_lossy(&bytes);
        prop_assert!(verify(&tampered).is_err(), "accepted a change at {}", i);
    }

    #[test]
    fn verify_never_panics_on_arbitrary_strings(input in any::<String>()) {
        let _ = verify(&input);
    }

    #[test]
    fn verify_never_panics_on_token_shaped_strings(input in "[A-Za-z0-9_=.-]{0,400}") {
        let _ = verify(&input);
    }

    #[test]
    fn verify_never_panics_on_arbitrary_signed_payloads(payload in any::<Vec<u8>>()) {
        let input = format!("{}.{}", b64(our_header().as_bytes()), b64(&payload));
        let ring = Keyring::from_secret(KID, SECRET).unwrap();
        let token = format!("{input}.{}", b64(&mac(ring.signing_key(), input.as_bytes())));
        let _ = verify(&token);
    }

    #[test]
    fn non_canonical_reencodings_never_verify(segment in 0usize..3) {
        let token = codec().issue(&uid("user-1"), &sid(), 0, NOW, HOUR).token;
        let parts: Vec<&str> = token.split('.').collect();
        for variant in segment_variants(parts[segment]) {
            let mut changed: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            changed[segment] = variant;
            prop_assert!(verify(&changed.join(".")).is_err());
        }
    }
}

#[test]
fn amr_is_exactly_one_of_the_two_arrays_we_issue() {
    for (value, expected) in [
        (json!(["pwd"]), Some(Factors::Password)),
        (json!(["pwd", "otp"]), Some(Factors::PasswordAndOtp)),
        (json!(["otp", "pwd"]), None),
        (json!(["otp"]), None),
        (json!(["pwd", "pwd"]), None),
        (json!(["pwd", "otp", "mfa"]), None),
        (json!([]), None),
        (json!("pwd"), None),
        (json!(null), None),
    ] {
        let mut claims = claims_json();
        claims["amr"] = value.clone();
        let outcome = verify(&forge(&our_header(), &claims.to_string()));
        match expected {
            Some(factors) => assert_eq!(outcome.unwrap().claims().amr, factors, "{value}"),
            None => assert_eq!(
                outcome.unwrap_err(),
                TokenError::InvalidClaim("amr"),
                "{value}"
            ),
        }
    }
    // Nested arrays never reach the claim: the strict reader refuses the depth.
    let mut claims = claims_json();
    claims["amr"] = json!([["pwd"]]);
    assert!(verify(&forge(&our_header(), &claims.to_string())).is_err());
}

#[test]
fn a_token_issued_with_a_second_factor_carries_it_through_the_fast_path() {
    let issued = codec().issue_with(
        &uid("user-1"),
        &sid(),
        0,
        NOW,
        HOUR,
        Factors::PasswordAndOtp,
    );
    let payload = URL_SAFE_NO_PAD
        .decode(issued.token.split('.').nth(1).unwrap())
        .unwrap();
    assert!(payload.ends_with(br#","gen":0,"amr":["pwd","otp"]}"#));
    assert!(
        claims::canonical::parse(&payload).is_some(),
        "our layout is the fast path's"
    );
    assert_eq!(
        verify(&issued.token).unwrap().claims().amr,
        Factors::PasswordAndOtp
    );
}

/// The fast path's readers at their edges: every claim value it must decline — empty, escaped,
/// control characters, too long, signed, fractional, exponent, leading zeros, overflowing — is
/// declined or read exactly as the general parser reads it, never accepted differently.
#[test]
fn the_fast_path_declines_or_agrees_at_every_edge_of_its_readers() {
    let base = serde_json::to_string(&claims_json()).unwrap();
    let canonical = String::from_utf8(
        serde_json::to_vec(&Claims::parse_general(base.as_bytes()).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(claims::canonical::parse(canonical.as_bytes()).is_some());
    let long = "a".repeat(257);
    let strings = [
        String::new(),
        r#"a\"b"#.to_owned(),
        r"a\nb".to_owned(),
        r"a\u0062".to_owned(),
        "a\u{1}b".to_owned(),
        long,
        "a".repeat(256),
        "é".to_owned(),
    ];
    let numbers = [
        "01",
        "00",
        "-1",
        "1.0",
        "1e3",
        "",
        "18446744073709551616",
        "9223372036854775808",
        "0",
        "7",
    ];
    let mut checked = 0;
    for claim in ["iss", "aud", "sub", "jti", "sid"] {
        let value = Claims::parse_general(canonical.as_bytes()).unwrap();
        let current = match claim {
            "iss" => value.iss.clone(),
            "aud" => value.aud.clone(),
            "sub" => value.sub.to_string(),
            "jti" => value.jti.to_string(),
            _ => value.sid.to_string(),
        };
        for replacement in &strings {
            let json = canonical.replacen(
                &format!(r#""{claim}":"{current}""#),
                &format!(r#""{claim}":"{replacement}""#),
                1,
            );
            assert_ne!(json, canonical, "{claim}");
            if let Some(fast) = claims::canonical::parse(json.as_bytes()) {
                assert_eq!(Ok(fast), Claims::parse_general(json.as_bytes()), "{json}");
            }
            assert_eq!(
                Claims::parse(json.as_bytes()),
                Claims::parse_general(json.as_bytes()),
                "{json}"
            );
            checked += 1;
        }
    }
    for claim in ["iat", "nbf", "exp", "gen"] {
        let start = canonical.find(&format!(r#""{claim}":"#)).unwrap() + claim.len() + 3;
        let end = start + canonical[start..].find(',').unwrap();
        for replacement in numbers {
            let json = format!("{}{replacement}{}", &canonical[..start], &canonical[end..]);
            if let Some(fast) = claims::canonical::parse(json.as_bytes()) {
                assert_eq!(Ok(fast), Claims::parse_general(json.as_bytes()), "{json}");
            }
            assert_eq!(
                Claims::parse(json.as_bytes()),
                Claims::parse_general(json.as_bytes()),
                "{json}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * strings.len() + 4 * numbers.len());
}

/// String claims are 1 to 256 bytes: an empty one or a longer one is refused by name, in any
/// member order (the general parser's rule, not only the fast path's).
#[test]
fn empty_and_overlong_string_claims_are_refused_by_name() {
    for claim in ["iss", "aud", "sub", "jti", "sid"] {
        for value in [String::new(), "a".repeat(257)] {
            let mut claims = claims_json();
            claims[claim] = json!(value);
            let mut members: Vec<(String, Value)> =
                claims.as_object().unwrap().clone().into_iter().collect();
            members.reverse();
            let reordered: serde_json::Map<String, Value> = members.into_iter().collect();
            for payload in [claims.to_string(), Value::Object(reordered).to_string()] {
                assert_eq!(
                    verify(&forge(&our_header(), &payload)),
                    Err(TokenError::InvalidClaim(claim)),
                    "{claim} of {} bytes",
                    value.len()
                );
            }
        }
        let mut claims = claims_json();
        claims[claim] = json!("a".repeat(256));
        let outcome = verify(&forge(&our_header(), &claims.to_string()));
        assert_ne!(
            outcome,
            Err(TokenError::InvalidClaim(claim)),
            "256 bytes is allowed"
        );
    }
}
