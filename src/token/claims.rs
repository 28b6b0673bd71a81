//! The claim set we issue and the rules a verified token's claims must meet (RFC 7519 §4.1, RFC 8725 §3.8–3.10).

use super::TokenError;
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Factors;
use crate::support::strict_json::ObjectError;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Every claim Tessera issues; all are required on the way in. Field order is the encoding order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Issuer: who minted the token (RFC 7519 §4.1.1).
    pub iss: String,
    /// Audience: the single service that accepts it (§4.1.3). Only a string; we never issue arrays.
    pub aud: String,
    /// Subject: the user's stable opaque id, never the username (usernames can be freed and reused).
    pub sub: UserId,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Token id: 128 random bits, base64url. The denylist key.
    pub jti: TokenId,
    /// Session id: the login session this token was issued in (refreshes keep it). Ending the
    /// session denylists every token issued in it.
    pub sid: SessionId,
    /// The user's token generation at issue; bumping it revokes every earlier token.
    pub r#gen: u64,
    /// Authentication methods (RFC 8176): `["pwd"]`, or `["pwd","otp"]` for a session started
    /// with a second factor. Only these two arrays are accepted.
    #[serde(serialize_with = "serialize_amr")]
    pub amr: Factors,
}

fn serialize_amr<S: serde::Serializer>(factors: &Factors, out: S) -> Result<S::Ok, S::Error> {
    factors.amr().serialize(out)
}

/// What a token must satisfy beyond its MAC. All times in seconds.
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `nbf` and `iat` (RFC 7519 §4.1.4, §4.1.5 "some small leeway"):
    /// a token minted by a replica whose clock runs a little ahead is not "from the future".
    /// Never on `exp`: a token dies at its `exp` by the verifier's clock, so it never outlives
    /// the session end it was cut to.
    pub leeway: i64,
    /// Longest `exp - iat` accepted: a token minted with a stolen key for ten years is refused.
    pub max_lifetime: i64,
}

/// Longest string claim we accept; ours are at most a few dozen characters.
const MAX_STRING_CLAIM: usize = 256;

impl Claims {
    /// Parses a payload's JSON straight into claims: unknown, missing, duplicated and mistyped
    /// claims are refused. Our own encoder's exact layout is read by a byte-level fast path;
    /// anything else — other member order, whitespace, escapes, any doubt — goes through the
    /// strict general parser, which alone decides what is refused and why.
    pub(super) fn parse(json: &[u8]) -> Result<Self, TokenError> {
        match canonical::parse(json) {
            Some(claims) => Ok(claims),
            None => Self::parse_general(json),
        }
    }

    /// The general parser: one serde pass, no intermediate `Value` tree.
    pub(super) fn parse_general(json: &[u8]) -> Result<Self, TokenError> {
        let mut failure = None;
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let parsed = ClaimsSeed {
            failure: &mut failure,
        }
        .deserialize(&mut deserializer)
        .and_then(|builder| deserializer.end().map(|()| builder));
        match (parsed, failure) {
            (_, Some(error)) => Err(error),
            (Ok(builder), None) => builder.build(),
            (Err(_), None) => Err(TokenError::MalformedPayload(ObjectError::Malformed)),
        }
    }

    /// Checks issuer, audience and the time window against `now` (Unix seconds).
    pub(super) fn validate(&self, policy: &ValidationPolicy, now: i64) -> Result<(), TokenError> {
        if self.iss != policy.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if self.aud != policy.audience {
            return Err(TokenError::WrongAudience);
        }
        if self.exp <= self.iat || self.nbf > self.exp {
            return Err(TokenError::InconsistentTimes);
        }
        if self.exp - self.iat > policy.max_lifetime {
            return Err(TokenError::LifetimeTooLong);
        }
        // §4.1.4: reject "on or after" exp. No leeway here: Tessera verifies only tokens it
        // issued, on clocks kept in step (NTP), and a leeway would keep a token working past
        // the session end its `exp` was cut to.
        if now >= self.exp {
            return Err(TokenError::Expired);
        }
        if self.iat > now.saturating_add(policy.leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        if self.nbf > now.saturating_add(policy.leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// The payload exactly as [`super::Codec::sign`] writes it — serde_json, claims in declaration
/// order, no whitespace: `{"iss":"…","aud":"…","sub":"…","iat":1,"nbf":1,"exp":1,"jti":"…","sid":"…","gen":0,"amr":["pwd"]}`.
/// Strings without escapes, integers without sign or leading zeros. Returns `None` for anything
/// else, and for values the general parser would refuse, so it can only ever agree with it
/// (`token::tests::the_canonical_fast_path_agrees_with_the_general_parser`).
pub(super) mod canonical {
    use super::{Claims, Factors, MAX_STRING_CLAIM, SessionId, TokenId, UserId};

    struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn literal(&mut self, expected: &[u8]) -> Option<()> {
            self.rest = self.rest.strip_prefix(expected)?;
            Some(())
        }

        /// A string's contents up to its closing quote, which is consumed: no escapes, no
        /// control characters, valid UTF-8, 1 to `MAX_STRING_CLAIM` bytes.
        fn plain_string(&mut self) -> Option<&'a str> {
            let end = self.rest.iter().position(|b| *b == b'"')?;
            let (text, rest) = self.rest.split_at_checked(end)?;
            if text.is_empty()
                || text.len() > MAX_STRING_CLAIM
                || text.iter().any(|b| *b == b'\\' || *b < 0x20)
            {
                return None;
            }
            self.rest = rest.get(1..)?;
            std::str::from_utf8(text).ok()
        }

        /// A JSON integer without sign, fraction or exponent, and without leading zeros.
        fn unsigned(&mut self) -> Option<u64> {
            let mut value: u64 = 0;
            let mut digits = 0;
            for byte in self.rest {
                let digit = byte.wrapping_sub(b'0');
                if digit > 9 {
                    break;
                }
                value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
                digits += 1;
            }
            if digits == 0 || (digits > 1 && self.rest.first() == Some(&b'0')) {
                return None;
            }
            self.rest = self.rest.get(digits..)?;
            Some(value)
        }

        /// A NumericDate: an integer that fits i64.
        fn time(&mut self) -> Option<i64> {
            i64::try_from(self.unsigned()?).ok()
        }
    }

    pub(in crate::token) fn parse(json: &[u8]) -> Option<Claims> {
        let mut r = Reader { rest: json };
        r.literal(br#"{"iss":""#)?;
        let iss = r.plain_string()?;
        r.literal(br#","aud":""#)?;
        let aud = r.plain_string()?;
        r.literal(br#","sub":""#)?;
        let sub = r.plain_string()?;
        r.literal(br#","iat":"#)?;
        let iat = r.time()?;
        r.literal(br#","nbf":"#)?;
        let nbf = r.time()?;
        r.literal(br#","exp":"#)?;
        let exp = r.time()?;
        r.literal(br#","jti":""#)?;
        let jti = r.plain_string()?;
        r.literal(br#","sid":""#)?;
        let sid = r.plain_string()?;
        r.literal(br#","gen":"#)?;
        let r#gen = r.unsigned()?;
        let amr = if r.literal(br#","amr":["pwd"]}"#).is_some() {
            Factors::Password
        } else {
            r.literal(br#","amr":["pwd","otp"]}"#)?;
            Factors::PasswordAndOtp
        };
        if !r.rest.is_empty() {
            return None;
        }
        Some(Claims {
            iss: iss.to_owned(),
            aud: aud.to_owned(),
            sub: UserId::from_string(sub.to_owned()),
            iat,
            nbf,
            exp,
            jti: TokenId::from_string(jti.to_owned()),
            sid: SessionId::from_string(sid.to_owned()),
            r#gen,
            amr,
        })
    }
}

#[derive(Default)]
struct ClaimsBuilder {
    iss: Option<String>,
    aud: Option<String>,
    sub: Option<String>,
    iat: Option<i64>,
    nbf: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    sid: Option<String>,
    r#gen: Option<u64>,
    amr: Option<Factors>,
}

impl ClaimsBuilder {
    fn set(&mut self, name: &str, value: Scalar) -> Result<(), TokenError> {
        let (slot_filled, result) = match name {
            "iss" => (
                self.iss.is_some(),
                string_claim("iss", value).map(|v| self.iss = Some(v)),
            ),
            "aud" => (
                self.aud.is_some(),
                string_claim("aud", value).map(|v| self.aud = Some(v)),
            ),
            "sub" => (
                self.sub.is_some(),
                string_claim("sub", value).map(|v| self.sub = Some(v)),
            ),
            "jti" => (
                self.jti.is_some(),
                string_claim("jti", value).map(|v| self.jti = Some(v)),
            ),
            "sid" => (
                self.sid.is_some(),
                string_claim("sid", value).map(|v| self.sid = Some(v)),
            ),
            "iat" => (
                self.iat.is_some(),
                time_claim("iat", &value).map(|v| self.iat = Some(v)),
            ),
            "nbf" => (
                self.nbf.is_some(),
                time_claim("nbf", &value).map(|v| self.nbf = Some(v)),
            ),
            "exp" => (
                self.exp.is_some(),
                time_claim("exp", &value).map(|v| self.exp = Some(v)),
            ),
            "gen" => (
                self.r#gen.is_some(),
                generation_claim(&value).map(|v| self.r#gen = Some(v)),
            ),
            "amr" => (
                self.amr.is_some(),
                amr_claim(&value).map(|v| self.amr = Some(v)),
            ),
            _ => return Err(TokenError::UnknownClaim(name.to_owned())),
        };
        if slot_filled {
            return Err(TokenError::MalformedPayload(ObjectError::DuplicateMember(
                name.to_owned(),
            )));
        }
        result
    }

    fn build(self) -> Result<Claims, TokenError> {
        Ok(Claims {
            iss: self.iss.ok_or(TokenError::MissingClaim("iss"))?,
            aud: self.aud.ok_or(TokenError::MissingClaim("aud"))?,
            sub: UserId::from_string(self.sub.ok_or(TokenError::MissingClaim("sub"))?),
            iat: self.iat.ok_or(TokenError::MissingClaim("iat"))?,
            nbf: self.nbf.ok_or(TokenError::MissingClaim("nbf"))?,
            exp: self.exp.ok_or(TokenError::MissingClaim("exp"))?,
            jti: TokenId::from_string(self.jti.ok_or(TokenError::MissingClaim("jti"))?),
            sid: SessionId::from_string(self.sid.ok_or(TokenError::MissingClaim("sid"))?),
            r#gen: self.r#gen.ok_or(TokenError::MissingClaim("gen"))?,
            amr: self.amr.ok_or(TokenError::MissingClaim("amr"))?,
        })
    }
}

/// A claim value as JSON gave it, without building a tree for anything that is not a scalar
/// or a short array of strings (`amr`).
enum Scalar {
    String(String),
    Signed(i64),
    Unsigned(u64),
    Strings(Vec<String>),
    Other,
}

/// Most elements an array claim may have (`amr` has at most two).
const MAX_ARRAY_CLAIM: usize = 4;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::String(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Signed(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Unsigned(v))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        let mut strings = Vec::new();
        let mut only_short_strings = true;
        while let Some(element) = seq.next_element::<Scalar>()? {
            match element {
                Scalar::String(s) if strings.len() < MAX_ARRAY_CLAIM => strings.push(s),
                _ => only_short_strings = false,
            }
        }
        Ok(if only_short_strings {
            Scalar::Strings(strings)
        } else {
            Scalar::Other
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A member name: ours are `'static` (no allocation on the hot path), anything else is kept
/// to be reported as unknown.
struct ClaimName(Cow<'static, str>);

const CLAIM_NAMES: [&str; 10] = [
    "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "gen", "amr",
];

impl<'de> Deserialize<'de> for ClaimName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ClaimNameVisitor)
    }
}

struct ClaimNameVisitor;

impl Visitor<'_> for ClaimNameVisitor {
    type Value = ClaimName;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a claim name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ClaimName, E> {
        let name = match CLAIM_NAMES.iter().find(|known| **known == v) {
            Some(known) => Cow::Borrowed(*known),
            None => Cow::Owned(v.to_owned()),
        };
        Ok(ClaimName(name))
    }
}

/// Deserialises the payload object, parking the precise [`TokenError`] in `failure` (serde's
/// own error type cannot carry it).
struct ClaimsSeed<'a> {
    failure: &'a mut Option<TokenError>,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = ClaimsBuilder;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = ClaimsBuilder;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut builder = ClaimsBuilder::default();
        while let Some(ClaimName(name)) = map.next_key::<ClaimName>()? {
            let value = map.next_value::<Scalar>()?;
            if let Err(error) = builder.set(&name, value) {
                *self.failure = Some(error);
                return Err(de::Error::custom("claim rejected"));
            }
        }
        Ok(builder)
    }
}

fn string_claim(name: &'static str, value: Scalar) -> Result<String, TokenError> {
    match value {
        Scalar::String(s) if !s.is_empty() && s.len() <= MAX_STRING_CLAIM => Ok(s),
        _ => Err(TokenError::InvalidClaim(name)),
    }
}

/// NumericDate as we accept it: a non-negative JSON integer that fits i64. Strings, floats
/// (`1.0`, `1e9`) and out-of-range numbers are refused rather than coerced — jsonwebtoken's past
/// bug of skipping validation for a string `exp` is exactly what coercion invites.
fn time_claim(name: &'static str, value: &Scalar) -> Result<i64, TokenError> {
    match *value {
        Scalar::Signed(seconds) if seconds >= 0 => Ok(seconds),
        Scalar::Unsigned(seconds) => {
            i64::try_from(seconds).map_err(|_| TokenError::InvalidClaim(name))
        }
        _ => Err(TokenError::InvalidClaim(name)),
    }
}

fn generation_claim(value: &Scalar) -> Result<u64, TokenError> {
    match *value {
        Scalar::Unsigned(generation) => Ok(generation),
        Scalar::Signed(generation) => {
            u64::try_from(generation).map_err(|_| TokenError::InvalidClaim("gen"))
        }
        _ => Err(TokenError::InvalidClaim("gen")),
    }
}

/// `amr` as we issue it, exactly: `["pwd"]` or `["pwd","otp"]`.
fn amr_claim(value: &Scalar) -> Result<Factors, TokenError> {
    match value {
        Scalar::Strings(values) => {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            Factors::from_amr(&values).ok_or(TokenError::InvalidClaim("amr"))
        }
        _ => Err(TokenError::InvalidClaim("amr")),
    }
}
