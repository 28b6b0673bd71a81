//! The claim set we issue and the rules a verified token's claims must meet (RFC 7519 §4.1, RFC 8725 §3.8–3.10).

use super::TokenError;
use serde::Serialize;
use serde_json::Value;

/// Every claim Tessera issues; all are required on the way in. Field order is the encoding order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Issuer: who minted the token (RFC 7519 §4.1.1).
    pub iss: String,
    /// Audience: the single service that accepts it (§4.1.3). Only a string; we never issue arrays.
    pub aud: String,
    /// Subject: the user's stable opaque id, never the username (usernames can be freed and reused).
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Token id: 128 random bits, base64url. The denylist key.
    pub jti: String,
    /// The user's token generation at issue; bumping it revokes every earlier token.
    pub r#gen: u64,
}

/// What a token must satisfy beyond its MAC. All times in seconds.
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (RFC 7519 §4.1.4 "some small leeway").
    pub leeway: i64,
    /// Longest `exp - iat` accepted: a token minted with a stolen key for ten years is refused.
    pub max_lifetime: i64,
}

/// Longest string claim we accept; ours are at most a few dozen characters.
const MAX_STRING_CLAIM: usize = 256;

impl Claims {
    /// Builds claims from an object's members, refusing unknown, missing and mistyped claims.
    pub(super) fn from_members(members: Vec<(String, Value)>) -> Result<Self, TokenError> {
        let mut builder = ClaimsBuilder::default();
        for (name, value) in members {
            builder.set(name, value)?;
        }
        builder.build()
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
        // §4.1.4: reject "on or after" exp; the leeway absorbs clock skew between issuer and verifier.
        if now >= self.exp.saturating_add(policy.leeway) {
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

#[derive(Default)]
struct ClaimsBuilder {
    iss: Option<String>,
    aud: Option<String>,
    sub: Option<String>,
    iat: Option<i64>,
    nbf: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    r#gen: Option<u64>,
}

impl ClaimsBuilder {
    fn set(&mut self, name: String, value: Value) -> Result<(), TokenError> {
        match name.as_str() {
            "iss" => self.iss = Some(string_claim("iss", value)?),
            "aud" => self.aud = Some(string_claim("aud", value)?),
            "sub" => self.sub = Some(string_claim("sub", value)?),
            "jti" => self.jti = Some(string_claim("jti", value)?),
            "iat" => self.iat = Some(time_claim("iat", &value)?),
            "nbf" => self.nbf = Some(time_claim("nbf", &value)?),
            "exp" => self.exp = Some(time_claim("exp", &value)?),
            "gen" => {
                self.r#gen = Some(value.as_u64().ok_or(TokenError::InvalidClaim("gen"))?);
            }
            _ => return Err(TokenError::UnknownClaim(name)),
        }
        Ok(())
    }

    fn build(self) -> Result<Claims, TokenError> {
        Ok(Claims {
            iss: self.iss.ok_or(TokenError::MissingClaim("iss"))?,
            aud: self.aud.ok_or(TokenError::MissingClaim("aud"))?,
            sub: self.sub.ok_or(TokenError::MissingClaim("sub"))?,
            iat: self.iat.ok_or(TokenError::MissingClaim("iat"))?,
            nbf: self.nbf.ok_or(TokenError::MissingClaim("nbf"))?,
            exp: self.exp.ok_or(TokenError::MissingClaim("exp"))?,
            jti: self.jti.ok_or(TokenError::MissingClaim("jti"))?,
            r#gen: self.r#gen.ok_or(TokenError::MissingClaim("gen"))?,
        })
    }
}

fn string_claim(name: &'static str, value: Value) -> Result<String, TokenError> {
    match value {
        Value::String(s) if !s.is_empty() && s.len() <= MAX_STRING_CLAIM => Ok(s),
        _ => Err(TokenError::InvalidClaim(name)),
    }
}

/// NumericDate as we accept it: a non-negative JSON integer that fits i64. Strings, floats
/// (`1.0`, `1e9`) and out-of-range numbers are refused rather than coerced — jsonwebtoken's past
/// bug of skipping validation for a string `exp` is exactly what coercion invites.
fn time_claim(name: &'static str, value: &Value) -> Result<i64, TokenError> {
    match value.as_i64() {
        Some(seconds) if seconds >= 0 => Ok(seconds),
        _ => Err(TokenError::InvalidClaim(name)),
    }
}
