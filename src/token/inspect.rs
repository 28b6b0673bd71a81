//! Keyless inspection for the `tessera-token` CLI: decode a token for a human and list every
//! reason the service would refuse it, except the MAC (that needs the key: `verify` does it).
//!
//! The output is plain JSON values, never [`super::VerifiedClaims`]: inspection cannot be used
//! to authenticate anything.

use super::{Segments, TokenError, ValidationPolicy, decode_segment, parse_claims, parse_header};
use serde_json::Value;

/// What a token says about itself, and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub header: Option<Value>,
    pub claims: Option<Value>,
    /// Every rejection found without the key, in verification order.
    pub problems: Vec<TokenError>,
}

/// Decodes `token` without a key and checks structure, header and claims against `policy`
/// at `now`.
pub fn inspect(token: &str, now: i64, policy: &ValidationPolicy) -> Inspection {
    let mut inspection = Inspection {
        header: None,
        claims: None,
        problems: Vec::new(),
    };
    let segments = match Segments::split(token) {
        Ok(segments) => segments,
        Err(error) => {
            inspection.problems.push(error);
            return inspection;
        }
    };
    inspection.header = lenient_json(segments.header);
    inspection.claims = lenient_json(segments.payload);
    if let Err(error) = parse_header(segments.header) {
        inspection.problems.push(error);
    }
    match parse_claims(segments.payload) {
        Ok(claims) => {
            if let Err(error) = claims.validate(policy, now) {
                inspection.problems.push(error);
            }
        }
        Err(error) => inspection.problems.push(error),
    }
    inspection
}

fn lenient_json(segment: &str) -> Option<Value> {
    serde_json::from_slice(&decode_segment(segment).ok()?).ok()
}
