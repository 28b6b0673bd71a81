//! The token codec: our HS256 compact JWS (RFC 7515 §7.1) carrying JWT claims (RFC 7519).
//!
//! Pure: no I/O and no clock — `now` is always passed in. Every rejection has its own
//! [`TokenError`] variant for logs and tests; the HTTP layer collapses them into one 401.
//!
//! Design (RFC 8725, the JWT BCP): there is no algorithm agility. The header must be exactly
//! `{"alg":"HS256","typ":"at+jwt","kid":"<known kid>"}` — no `none`, no other algorithm, no
//! `jwk`/`jku`/`x5u`/`crit`. Our encoder writes those bytes in one canonical order, so the common
//! case is a byte comparison against a precomputed header segment; any other encoding is parsed
//! strictly and must contain exactly those members. The MAC is compared in constant time
//! ([`ct`]) **before** a single byte of the payload is parsed, so attacker-controlled JSON only
//! ever reaches the parser once it is known to be ours.

mod claims;
mod recent;

pub mod inspect;
pub mod keys;
pub mod refresh;
pub mod sealing;

pub use claims::{Claims, ValidationPolicy};
pub use keys::{JwkSet, KeyError, KeyInfo, Keyring};
pub use refresh::{REFRESH_TOKEN_PREFIX, RefreshClaims, RefreshTokenError};

use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Factors;
use crate::support::strict_json::{self, ObjectError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use keys::KeyEntry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The only algorithm we sign with or accept.
pub const ALG: &str = "HS256";
/// RFC 9068 §2.1 access-token type; explicit typing keeps other JWTs from being replayed as ours
/// (RFC 8725 §3.11).
pub const TYP: &str = "at+jwt";
/// Longest token we look at. Ours are ~300 bytes; the cap is checked before any decoding, so a
/// 100 KB token costs a length comparison.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Claims are all scalars, so the payload object needs one level; one more lets a nested unknown
/// claim be reported as unknown rather than as too deep.
const MAX_PAYLOAD_DEPTH: usize = 2;
/// Decoded payloads up to this size are parsed from the stack.
const SMALL_PAYLOAD_BYTES: usize = 512;
/// Base64url length of a 32-byte HMAC-SHA256 tag.
const SIGNATURE_SEGMENT_LEN: usize = 43;

/// Why a token was refused. One variant per rejection class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token contains whitespace or a line break")]
    Whitespace,
    #[error("token contains base64 padding `=`")]
    Padding,
    #[error("token contains a character outside the base64url alphabet")]
    InvalidCharacter,
    #[error("token does not have exactly three segments")]
    SegmentCount,
    #[error("token has an empty header or payload")]
    EmptySegment,
    #[error("token has an empty signature")]
    EmptySignature,
    #[error("a segment is not canonical base64url")]
    NonCanonicalBase64,
    #[error("signature is not a 256-bit HMAC")]
    SignatureLength,
    #[error("header is malformed: {0}")]
    MalformedHeader(ObjectError),
    #[error("header algorithm is not HS256")]
    UnsupportedAlgorithm,
    #[error("header typ is not at+jwt")]
    WrongType,
    #[error("header lacks `{0}`")]
    MissingHeaderMember(&'static str),
    #[error("header has unexpected member `{0}`")]
    UnexpectedHeaderMember(String),
    #[error("key id is unknown")]
    UnknownKid,
    #[error("signature does not match")]
    BadSignature,
    #[error("payload is malformed: {0}")]
    MalformedPayload(ObjectError),
    #[error("claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("claim `{0}` has the wrong type or range")]
    InvalidClaim(&'static str),
    #[error("claim `{0}` is not one we issue")]
    UnknownClaim(String),
    #[error("issuer is wrong")]
    WrongIssuer,
    #[error("audience is wrong")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    #[error("token times are inconsistent (exp before iat or nbf)")]
    InconsistentTimes,
}

/// Claims that passed MAC and claim validation. Only the codec builds one ([`Codec::verify`],
/// or [`Codec::verify_cached`] answering from an earlier `verify` of the same bytes), so nothing
/// downstream can act on unverified claims by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims(Arc<Claims>);

impl VerifiedClaims {
    pub fn claims(&self) -> &Claims {
        &self.0
    }
}

/// A token just minted, with the claims it carries. The token is a bearer credential, so
/// Debug shows only the claims.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("claims", &self.claims)
            .finish()
    }
}

/// Signs and verifies tokens with a keyring under a validation policy.
#[derive(Debug)]
pub struct Codec {
    keyring: Keyring,
    policy: ValidationPolicy,
    /// Unique in the process: what [`recent`] verifications are remembered under.
    id: u64,
}

impl Codec {
    pub fn new(keyring: Keyring, policy: ValidationPolicy) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            keyring,
            policy,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn policy(&self) -> &ValidationPolicy {
        &self.policy
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Mints a password-only token for `subject` in `session` at `generation`, valid from `now`
    /// for `lifetime` seconds, with a fresh 128-bit `jti`.
    pub fn issue(
        &self,
        subject: &UserId,
        session: &SessionId,
        generation: u64,
        now: i64,
        lifetime: i64,
    ) -> IssuedToken {
        self.issue_with(
            subject,
            session,
            generation,
            now,
            lifetime,
            Factors::Password,
        )
    }

    /// [`Codec::issue`] for a session started with `factors` (the `amr` claim).
    pub fn issue_with(
        &self,
        subject: &UserId,
        session: &SessionId,
        generation: u64,
        now: i64,
        lifetime: i64,
        factors: Factors,
    ) -> IssuedToken {
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: subject.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(lifetime),
            jti: TokenId::random(),
            sid: session.clone(),
            r#gen: generation,
            amr: factors,
        };
        IssuedToken {
            token: self.sign(&claims),
            claims,
        }
    }

    /// Signs any claim set with the current signing key. `issue` is the normal entry point;
    /// this one lets tests and tools mint tokens with chosen claims.
    pub fn sign(&self, claims: &Claims) -> String {
        let key = self.keyring.signing_key();
        // Sized for our claims so neither buffer grows; serialising strings and integers
        // cannot fail.
        let mut payload = Vec::with_capacity(256);
        let _ = serde_json::to_writer(&mut payload, claims);
        let mut token = String::with_capacity(
            key.header_segment.len() + payload.len() * 4 / 3 + SIGNATURE_SEGMENT_LEN + 8,
        );
        token.push_str(&key.header_segment);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let tag = mac(key, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut token);
        token
    }

    /// Verifies a compact token at time `now` (Unix seconds). Revocation is the store's job.
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedClaims, TokenError> {
        let segments = Segments::split(token)?;
        let key = self.key_for(segments.header)?;
        check_signature(key, &segments)?;
        let claims = parse_claims(segments.payload)?;
        claims.validate(&self.policy, now)?;
        Ok(VerifiedClaims(Arc::new(claims)))
    }

    /// [`Self::verify`], answered from this thread's recent verifications when this codec
    /// verified these very bytes before (see [`recent`]): the same result, cheaper on a token's
    /// second and later uses. For the request path; tools and one-off checks use `verify`.
    pub fn verify_cached(&self, token: &str, now: i64) -> Result<VerifiedClaims, TokenError> {
        recent::verify(self, token, now)
    }

    /// Fast path: our own canonical header bytes. Otherwise a strict parse, then a kid lookup.
    fn key_for(&self, header_segment: &str) -> Result<&KeyEntry, TokenError> {
        if let Some(key) = self.keyring.by_header_segment(header_segment.as_bytes()) {
            return Ok(key);
        }
        let kid = parse_header(header_segment)?;
        self.keyring.by_kid(&kid).ok_or(TokenError::UnknownKid)
    }
}

/// The canonical header we write, member order fixed.
pub(crate) fn canonical_header(kid: &str) -> Vec<u8> {
    // Serialising through serde_json keeps the kid correctly escaped whatever it holds.
    let kid = serde_json::Value::from(kid).to_string();
    format!(r#"{{"alg":"{ALG}","typ":"{TYP}","kid":{kid}}}"#).into_bytes()
}

/// The three segments of a compact JWS, checked for shape only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segments<'a> {
    token: &'a str,
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

impl<'a> Segments<'a> {
    /// Length cap, alphabet and segment count — all before any decoding.
    pub(crate) fn split(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        // Branch-free over the whole token (vectorised); only a bad token pays for finding out
        // which byte is wrong.
        let all_allowed = token
            .bytes()
            .fold(true, |ok, byte| ok & is_token_byte(byte));
        if !all_allowed {
            return Err(classify_bad_byte(token));
        }
        // Exactly two separators: the first, the last, and none between them.
        let bytes = token.as_bytes();
        let separator = |byte: &u8| *byte == b'.';
        let (Some(first), Some(last)) = (
            bytes.iter().position(separator),
            bytes.iter().rposition(separator),
        ) else {
            return Err(TokenError::SegmentCount);
        };
        let between = bytes.get(first + 1..last).unwrap_or_default();
        if last == first || between.contains(&b'.') {
            return Err(TokenError::SegmentCount);
        }
        let header = token.get(..first).unwrap_or_default();
        let payload = token.get(first + 1..last).unwrap_or_default();
        let signature = token.get(last + 1..).unwrap_or_default();
        if signature.is_empty() {
            return Err(TokenError::EmptySignature);
        }
        if header.is_empty() || payload.is_empty() {
            return Err(TokenError::EmptySegment);
        }
        Ok(Self {
            token,
            header,
            payload,
            signature,
        })
    }

    /// The bytes the MAC covers: `header '.' payload` (RFC 7515 §5.1 step 5).
    fn signing_input(&self) -> &'a str {
        let end = self.header.len() + 1 + self.payload.len();
        self.token.get(..end).unwrap_or_default()
    }
}

/// The base64url alphabet plus the segment separator.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.'
}

/// Names the first byte outside the token alphabet.
fn classify_bad_byte(token: &str) -> TokenError {
    match token.bytes().find(|&byte| !is_token_byte(byte)) {
        Some(b'=') => TokenError::Padding,
        Some(b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c') => TokenError::Whitespace,
        _ => TokenError::InvalidCharacter,
    }
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    // The engine refuses padding and non-zero trailing bits, so exactly one encoding of each
    // byte string is accepted: a re-encoded token cannot dodge the denylist (RFC 7515 §2).
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::NonCanonicalBase64)
}

/// Strictly parses a header that is not byte-identical to one of ours; returns its kid.
pub(crate) fn parse_header(segment: &str) -> Result<String, TokenError> {
    let bytes = decode_segment(segment)?;
    let members = strict_json::parse_object(&bytes, 1).map_err(TokenError::MalformedHeader)?;
    let (mut alg, mut typ, mut kid) = (None, None, None);
    for (name, value) in members {
        match name.as_str() {
            "alg" => alg = Some(value),
            "typ" => typ = Some(value),
            "kid" => kid = Some(value),
            _ => return Err(TokenError::UnexpectedHeaderMember(name)),
        }
    }
    // Exact, case-sensitive comparisons: `none`, `None`, `hs256`, `HS512`, `RS256` all fail here.
    match alg.ok_or(TokenError::MissingHeaderMember("alg"))? {
        serde_json::Value::String(s) if s == ALG => {}
        _ => return Err(TokenError::UnsupportedAlgorithm),
    }
    match typ.ok_or(TokenError::MissingHeaderMember("typ"))? {
        serde_json::Value::String(s) if s == TYP => {}
        _ => return Err(TokenError::WrongType),
    }
    match kid.ok_or(TokenError::MissingHeaderMember("kid"))? {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(TokenError::UnknownKid),
    }
}

/// Compares the presented signature segment with the encoding of the expected tag, in constant
/// time. Base64url without padding has one canonical spelling per tag, so equal text means an
/// equal, canonically encoded tag — and nothing needs decoding on the way to success. Only a
/// mismatch is decoded, to say whether it was a bad tag or a non-canonical spelling.
fn check_signature(key: &KeyEntry, segments: &Segments<'_>) -> Result<(), TokenError> {
    if segments.signature.len() != SIGNATURE_SEGMENT_LEN {
        return Err(TokenError::SignatureLength);
    }
    let tag = mac(key, segments.signing_input().as_bytes());
    let mut expected = [0u8; SIGNATURE_SEGMENT_LEN];
    let written = URL_SAFE_NO_PAD
        .encode_slice(tag, &mut expected)
        .unwrap_or_default();
    let presented = segments.signature.as_bytes();
    if written == SIGNATURE_SEGMENT_LEN && crate::crypto::ct::constant_time_eq(&expected, presented)
    {
        return Ok(());
    }
    let mut decoded = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(presented, &mut decoded) {
        Ok(32) => Err(TokenError::BadSignature),
        _ => Err(TokenError::NonCanonicalBase64),
    }
}

/// Parses a payload segment into claims. Only called after the MAC matched (or by `inspect`).
pub(crate) fn parse_claims(segment: &str) -> Result<Claims, TokenError> {
    // Our payloads decode to ~200 bytes: they go to a small stack buffer (no allocation, and a
    // cheap zeroing); anything longer to the heap.
    let mut small = [0u8; SMALL_PAYLOAD_BYTES];
    let heap;
    let bytes: &[u8] = if segment.len() / 4 * 3 + 3 <= SMALL_PAYLOAD_BYTES {
        let length = URL_SAFE_NO_PAD
            .decode_slice(segment, &mut small)
            .map_err(|_| TokenError::NonCanonicalBase64)?;
        small.get(..length).unwrap_or_default()
    } else {
        heap = decode_segment(segment)?;
        &heap
    };
    // Fast path: a well-formed claim set parses in one pass (serde_json validates the UTF-8 of
    // every string it reads). Only a failure pays for the precise diagnosis: encoding, BOM,
    // shape and depth first, then whatever the claim parser found.
    Claims::parse(bytes).or_else(|error| {
        strict_json::precheck(bytes, MAX_PAYLOAD_DEPTH).map_err(TokenError::MalformedPayload)?;
        Err(error)
    })
}

fn mac(key: &KeyEntry, signing_input: &[u8]) -> [u8; 32] {
    let mut mac = key.mac.clone();
    mac.update(signing_input);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests;
