//! What the fuzz targets share: one codec under a fixed key and policy, and a token builder that
//! signs arbitrary header and payload bytes with that key, so the targets reach the claim checks
//! behind the MAC instead of stopping at it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use tessera::token::{Codec, Keyring, ValidationPolicy};

pub const SECRET: &[u8; 32] = b"a fixed key the fuzz targets use";
pub const KID: &str = "fuzz";
pub const NOW: i64 = 1_800_000_000;
pub const LEEWAY: i64 = 30;
pub const MAX_LIFETIME: i64 = 900;

pub fn policy() -> ValidationPolicy {
    ValidationPolicy {
        issuer: "tessera".into(),
        audience: "tessera-api".into(),
        leeway: LEEWAY,
        max_lifetime: MAX_LIFETIME,
    }
}

/// The codec the server would build from a key file holding [`SECRET`] under [`KID`] — a
/// fixed, public key of the harness, never one a server loads.
pub fn codec() -> Codec {
    let keyring = Keyring::from_secret(KID, SECRET).expect("a valid keyring");
    Codec::new(keyring, policy())
}

/// `base64url(header).base64url(payload).base64url(HMAC-SHA256)` under [`SECRET`].
pub fn signed(header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    token
}

/// A JSON value the fuzzer shapes: claims near the boundary of what the policy accepts.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum Text {
    Expected,
    Other(String),
}

#[derive(Debug, arbitrary::Arbitrary)]
pub enum Number {
    /// `NOW` plus a small offset: inside and around every time window.
    NearNow(i16),
    Any(i64),
    Float(f64),
    Text(String),
    Missing,
}

/// A claim set, shaped so that most inputs are nearly valid.
#[derive(Debug, arbitrary::Arbitrary)]
pub struct ClaimsInput {
    pub iss: Text,
    pub aud: Text,
    pub sub: Option<String>,
    pub iat: Number,
    pub nbf: Number,
    pub exp: Number,
    pub jti: Option<String>,
    pub sid: Option<String>,
    pub generation: Number,
    pub amr: Amr,
    pub extra: Option<(String, i64)>,
    /// Members in another order than ours, or repeated.
    pub reverse: bool,
    pub repeat_iss: bool,
}

/// The `amr` claim: one of the two arrays we issue, another array, or none.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum Amr {
    Password,
    PasswordAndOtp,
    Other(Vec<String>),
    Missing,
}

#[derive(Debug, arbitrary::Arbitrary)]
pub enum HeaderInput {
    /// The header our codec writes, byte for byte.
    Ours,
    /// The same members in another order, as another library writes them.
    Reordered,
    /// Anything.
    Raw(Vec<u8>),
    /// Chosen members.
    Members {
        alg: Option<String>,
        typ: Option<String>,
        kid: Option<String>,
        extra: Option<String>,
    },
}

impl HeaderInput {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Ours => format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{KID}"}}"#).into_bytes(),
            Self::Reordered => {
                format!(r#"{{"typ":"at+jwt","alg":"HS256","kid":"{KID}"}}"#).into_bytes()
            }
            Self::Raw(bytes) => bytes.clone(),
            Self::Members {
                alg,
                typ,
                kid,
                extra,
            } => {
                let mut object = serde_json::Map::new();
                for (name, value) in [("alg", alg), ("typ", typ), ("kid", kid), ("x5u", extra)] {
                    if let Some(value) = value {
                        object.insert(name.into(), value.clone().into());
                    }
                }
                serde_json::Value::Object(object).to_string().into_bytes()
            }
        }
    }
}

impl ClaimsInput {
    pub fn bytes(&self) -> Vec<u8> {
        let text = |t: &Text, expected: &str| match t {
            Text::Expected => serde_json::Value::from(expected),
            Text::Other(other) => serde_json::Value::from(other.as_str()),
        };
        let number = |n: &Number| match n {
            Number::NearNow(offset) => Some(serde_json::Value::from(NOW + i64::from(*offset))),
            Number::Any(value) => Some(serde_json::Value::from(*value)),
            Number::Float(value) => Some(serde_json::json!(value)),
            Number::Text(text) => Some(serde_json::Value::from(text.as_str())),
            Number::Missing => None,
        };
        let generation = match &self.generation {
            Number::NearNow(offset) => Some(serde_json::Value::from(offset.unsigned_abs())),
            other => number(other),
        };
        let mut members: Vec<(String, serde_json::Value)> = vec![
            ("iss".into(), text(&self.iss, "tessera")),
            ("aud".into(), text(&self.aud, "tessera-api")),
        ];
        let optional = [
            ("sub", self.sub.clone().map(serde_json::Value::from)),
            ("iat", number(&self.iat)),
            ("nbf", number(&self.nbf)),
            ("exp", number(&self.exp)),
            ("jti", self.jti.clone().map(serde_json::Value::from)),
            ("sid", self.sid.clone().map(serde_json::Value::from)),
            ("gen", generation),
            (
                "amr",
                match &self.amr {
                    Amr::Password => Some(serde_json::json!(["pwd"])),
                    Amr::PasswordAndOtp => Some(serde_json::json!(["pwd", "otp"])),
                    Amr::Other(values) => Some(serde_json::json!(values)),
                    Amr::Missing => None,
                },
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                members.push((name.into(), value));
            }
        }
        if let Some((name, value)) = &self.extra {
            members.push((name.clone(), (*value).into()));
        }
        if self.repeat_iss {
            members.push(("iss".into(), "tessera".into()));
        }
        if self.reverse {
            members.reverse();
        }
        // Written by hand so repeated members stay repeated.
        let body: Vec<String> = members
            .iter()
            .map(|(name, value)| format!("{}:{value}", serde_json::Value::from(name.as_str())))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    }
}
