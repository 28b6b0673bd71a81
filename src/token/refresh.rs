//! Refresh tokens: opaque to clients, derived from the keyring, never stored.
//!
//! A refresh token names a session and which of its rotations is current, and proves it came
//! from us: `tsr_` + base64url(version ‖ session id (16 bytes) ‖ rotation counter (u64, big
//! endian) ‖ HMAC-SHA256 tag of those 25 bytes). The tag's key is derived from each signing key
//! of the keyring and used for nothing else, so a refresh token can never pass for an access
//! token's signature or the reverse.
//!
//! Why derived rather than random and hashed: the database then holds no token material at all
//! — a dump gives a session id and a counter, and without `keys/` nobody can compute the tag
//! (256 bits). And the server can hand the *current* token to a second tab refreshing at the
//! same moment (the reuse grace) without ever having stored it. The prefix lets secret scanners
//! spot a leaked token.

use super::Codec;
use super::keys::KeyEntry;
use crate::crypto::ct::constant_time_eq;
use crate::domain::ids::SessionId;
use crate::domain::secret::SecretString;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;

/// Every refresh token starts with this, so a leaked one is recognisable.
pub const REFRESH_TOKEN_PREFIX: &str = "tsr_";
const VERSION: u8 = 1;
const SESSION_ID_BYTES: usize = 16;
const BODY_BYTES: usize = 1 + SESSION_ID_BYTES + 8;
const TAG_BYTES: usize = 32;
const RAW_BYTES: usize = BODY_BYTES + TAG_BYTES;
/// 57 bytes are exactly 76 base64url characters: no padding, no spare bits.
const ENCODED_BYTES: usize = RAW_BYTES / 3 * 4;
/// The label the refresh-tag key is derived under (HMAC of the signing key over it).
pub(super) const KEY_LABEL: &[u8] = b"tessera refresh-token tag key v1";

/// Why a presented refresh token is not one of ours. The client hears one answer for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshTokenError {
    #[error("refresh token is not in our format")]
    Malformed,
    #[error("refresh token's tag does not match any key")]
    BadTag,
}

/// What a genuine refresh token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshClaims {
    pub session: SessionId,
    pub counter: u64,
}

impl Codec {
    /// The refresh token of `session` at rotation `counter`, tagged with the signing key.
    /// `None` if `session` is not one of our 128-bit ids.
    pub fn refresh_token(&self, session: &SessionId, counter: u64) -> Option<SecretString> {
        let mut raw = [0u8; RAW_BYTES];
        let mut id = [0u8; SESSION_ID_BYTES];
        let decoded = URL_SAFE_NO_PAD
            .decode_slice(session.as_str(), &mut id)
            .ok()?;
        if decoded != SESSION_ID_BYTES {
            return None;
        }
        let (body, tag) = raw.split_at_mut(BODY_BYTES);
        let (version, rest) = body.split_at_mut(1);
        let (id_slot, counter_slot) = rest.split_at_mut(SESSION_ID_BYTES);
        version.copy_from_slice(&[VERSION]);
        id_slot.copy_from_slice(&id);
        counter_slot.copy_from_slice(&counter.to_be_bytes());
        tag.copy_from_slice(&refresh_tag(self.keyring().signing_key(), body));
        let mut token = String::with_capacity(REFRESH_TOKEN_PREFIX.len() + ENCODED_BYTES);
        token.push_str(REFRESH_TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut token);
        Some(SecretString::new(token))
    }

    /// Checks a presented refresh token: shape, then the tag against every key of the ring
    /// (in constant time), before anything it says is believed.
    pub fn open_refresh_token(&self, token: &str) -> Result<RefreshClaims, RefreshTokenError> {
        let encoded = token
            .strip_prefix(REFRESH_TOKEN_PREFIX)
            .filter(|rest| rest.len() == ENCODED_BYTES)
            .ok_or(RefreshTokenError::Malformed)?;
        let mut raw = [0u8; RAW_BYTES];
        // The engine refuses padding and non-canonical spellings.
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut raw) {
            Ok(RAW_BYTES) => {}
            _ => return Err(RefreshTokenError::Malformed),
        }
        let (body, tag) = raw.split_at(BODY_BYTES);
        let genuine = self.keyring().entries().fold(false, |found, key| {
            found | constant_time_eq(&refresh_tag(key, body), tag)
        });
        if !genuine {
            return Err(RefreshTokenError::BadTag);
        }
        let (version, rest) = body.split_at(1);
        let (id, counter) = rest.split_at(SESSION_ID_BYTES);
        if version != [VERSION] {
            return Err(RefreshTokenError::Malformed);
        }
        let counter = <[u8; 8]>::try_from(counter).map_err(|_| RefreshTokenError::Malformed)?;
        Ok(RefreshClaims {
            session: SessionId::from_string(URL_SAFE_NO_PAD.encode(id)),
            counter: u64::from_be_bytes(counter),
        })
    }
}

fn refresh_tag(key: &KeyEntry, body: &[u8]) -> [u8; TAG_BYTES] {
    let mut mac = key.refresh_mac.clone();
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Keyring, ValidationPolicy};
    use proptest::prelude::*;

    fn codec(secret: &[u8]) -> Codec {
        Codec::new(
            Keyring::from_secret("k1", secret).unwrap(),
            ValidationPolicy {
                issuer: "i".into(),
                audience: "a".into(),
                leeway: 0,
                max_lifetime: 900,
            },
        )
    }

    /// Any key of the ring whose tag matches opens the token — also when two key ids hold the
    /// same material, so both match (a key copied under a new id must not lock sessions out).
    #[test]
    fn a_tag_that_several_keys_match_still_opens() {
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let set: crate::token::JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "k1", "alg": "HS256", "use": "sig", "k": secret},
            {"kty": "oct", "kid": "copy", "alg": "HS256", "use": "sig", "k": secret},
        ]}))
        .unwrap();
        let both = Codec::new(
            Keyring::from_set(&set, std::path::Path::new("test")).unwrap(),
            codec(&[7; 32]).policy().clone(),
        );
        let session = SessionId::random();
        let token = both.refresh_token(&session, 3).unwrap();
        assert_eq!(
            both.open_refresh_token(token.expose()).unwrap(),
            RefreshClaims {
                session,
                counter: 3
            }
        );
    }

    #[test]
    fn a_minted_token_opens_to_its_session_and_counter() {
        let codec = codec(&[7; 32]);
        let session = SessionId::random();
        let token = codec.refresh_token(&session, 41).unwrap();
        assert!(token.expose().starts_with("tsr_"));
        assert_eq!(token.expose().len(), 80);
        let opened = codec.open_refresh_token(token.expose()).unwrap();
        assert_eq!(
            opened,
            RefreshClaims {
                session,
                counter: 41
            }
        );
    }

    #[test]
    fn the_same_session_and_counter_give_the_same_token_and_others_differ() {
        let codec = codec(&[7; 32]);
        let session = SessionId::random();
        let a = codec.refresh_token(&session, 1).unwrap();
        assert_eq!(
            a.expose(),
            codec.refresh_token(&session, 1).unwrap().expose()
        );
        assert_ne!(
            a.expose(),
            codec.refresh_token(&session, 2).unwrap().expose()
        );
    }

    #[test]
    fn another_key_or_a_foreign_session_id_is_refused() {
        let token = codec(&[7; 32])
            .refresh_token(&SessionId::random(), 0)
            .unwrap();
        assert_eq!(
            codec(&[8; 32]).open_refresh_token(token.expose()),
            Err(RefreshTokenError::BadTag)
        );
        let foreign = SessionId::from_string("not-ours".into());
        assert!(codec(&[7; 32]).refresh_token(&foreign, 0).is_none());
    }

    #[test]
    fn shape_errors_are_malformed() {
        let codec = codec(&[7; 32]);
        let good = codec.refresh_token(&SessionId::random(), 0).unwrap();
        let good = good.expose();
        for bad in [
            "",
            "tsr_",
            &good[4..],
            &format!("TSR_{}", &good[4..]),
            &format!("{good}A"),
            &good[..79],
            &format!("{}=", &good[..79]),
        ] {
            assert_eq!(
                codec.open_refresh_token(bad),
                Err(RefreshTokenError::Malformed),
                "{bad}"
            );
        }
    }

    proptest! {
        /// Any text is refused or opened without panicking, and what opens is the one canonical
        /// encoding of its session and counter.
        #[test]
        fn any_input_is_refused_or_opened_as_its_canonical_encoding(input in ".{0,120}") {
            let codec = codec(&[7; 32]);
            if let Ok(opened) = codec.open_refresh_token(&input) {
                let minted = codec.refresh_token(&opened.session, opened.counter).unwrap();
                prop_assert_eq!(minted.expose(), input.as_str());
            }
        }

        #[test]
        fn any_single_byte_change_is_refused(position in 0usize..80, byte in any::<u8>()) {
            let codec = codec(&[7; 32]);
            let token = codec.refresh_token(&SessionId::random(), 3).unwrap();
            let mut bytes = token.expose().as_bytes().to_vec();
            prop_assume!(bytes[position] != byte);
            bytes[position] = byte;
            let changed = String::from_utf8_lossy(&bytes);
            prop_assert!(codec.open_refresh_token(&changed).is_err());
        }
    }
}
