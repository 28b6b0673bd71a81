//! Tokens this thread verified recently, so a client presenting the same token again skips the
//! MAC, the base64 decoding and the claims parsing (BENCHMARKS.md, "The hot path, stage by
//! stage"). A client uses one access token for many requests; verifying it is a pure function
//! of its bytes and the codec's keys and policy, except for the time checks, which run again
//! on every use.
//!
//! What makes a hit safe:
//! - **Same bytes.** The presented signature segment is compared with the remembered one in
//!   constant time, and only when it matches is the rest compared: the time taken reveals
//!   nothing about a remembered signature to someone who does not already hold it.
//! - **Same codec.** Each [`super::Codec`] has an id no other codec in the process ever gets;
//!   an entry answers only the codec that verified it, so a token is never accepted under keys
//!   or a policy other than those that verified it.
//! - **Now.** The claims' time window is checked against the caller's `now` on every hit.
//!
//! Revocation is not the codec's business and is untouched: the caller checks the denylist
//! and the generation on every request, hit or miss.
//!
//! Why per thread and direct-mapped: no lock and no shared cache line on the hot path; memory
//! is bounded by the slot count times the worker threads that call it (the reactor's, not the
//! blocking pool's); a newer token simply takes an older one's slot.

use super::claims::Claims;
use super::{Codec, TokenError, VerifiedClaims};
use std::cell::RefCell;
use std::sync::Arc;

/// Slots per thread. A miss only costs a full verification. Sized for thousands of clients' tokens
/// presented in turn: a token keeps its slot while no other live token maps there, so the hit
/// rate is about e^(-tokens/SLOTS) (BENCHMARKS.md, "Forward auth and many tokens").
const SLOTS: usize = 16_384;

struct Entry {
    codec: u64,
    /// Where the signature segment starts in `token`.
    signature_at: usize,
    token: Box<str>,
    claims: Arc<Claims>,
}

thread_local! {
    static RECENT: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// Verifies `token` at `now`, answering from this thread's recent verifications when the very
/// same token was verified by this very codec; otherwise verifies it in full and remembers it.
pub(super) fn verify(codec: &Codec, token: &str, now: i64) -> Result<VerifiedClaims, TokenError> {
    let Some(last_separator) = token.bytes().rposition(|byte| byte == b'.') else {
        return codec.verify(token, now);
    };
    let signing_input = token.get(..last_separator).unwrap_or_default();
    let signature = token.get(last_separator + 1..).unwrap_or_default();
    let slot = slot_of(signature.as_bytes());
    let remembered = RECENT.with_borrow(|recent| {
        let entry = recent.get(slot)?.as_ref()?;
        let (their_input, their_signature) = entry.token.split_at(entry.signature_at);
        let same = entry.codec == codec.id
            && crate::crypto::ct::constant_time_eq(
                their_signature.as_bytes(),
                signature.as_bytes(),
            )
            && their_input.strip_suffix('.') == Some(signing_input);
        same.then(|| entry.claims.clone())
    });
    if let Some(claims) = remembered {
        claims.validate(codec.policy(), now)?;
        return Ok(VerifiedClaims(claims));
    }
    let verified = codec.verify(token, now)?;
    RECENT.with_borrow_mut(|recent| {
        if recent.is_empty() {
            recent.resize_with(SLOTS, || None);
        }
        if let Some(place) = recent.get_mut(slot) {
            *place = Some(Entry {
                codec: codec.id,
                signature_at: signing_input.len() + 1,
                token: token.into(),
                claims: verified.0.clone(),
            });
        }
    });
    Ok(verified)
}

/// A slot from the signature's first characters: a valid signature is an HMAC tag, uniformly
/// spread; an attacker who picks the slot gains nothing, since every hit is confirmed in full.
fn slot_of(signature: &[u8]) -> usize {
    let mut word = [0u8; 8];
    for (into, byte) in word.iter_mut().zip(signature) {
        *into = *byte;
    }
    let spread = u64::from_le_bytes(word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The top bits of a multiplicative hash are its best mixed; SLOTS is a power of two.
    usize::try_from(spread >> (64 - SLOTS.trailing_zeros())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{SessionId, TokenId, UserId};
    use crate::token::claims::ValidationPolicy;
    use crate::token::keys::Keyring;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000;

    fn codec() -> Codec {
        Codec::new(
            Keyring::from_set(
                &crate::token::JwkSet::generate(),
                std::path::Path::new("test"),
            )
            .unwrap(),
            ValidationPolicy {
                issuer: "tessera".into(),
                audience: "tessera-api".into(),
                leeway: 0,
                max_lifetime: 3600,
            },
        )
    }

    fn token(codec: &Codec) -> String {
        codec
            .issue(&UserId::random(), &SessionId::random(), 0, NOW, 900)
            .token
    }

    #[test]
    fn tokens_in_different_slots_are_remembered_side_by_side() {
        let codec = codec();
        let first = token(&codec);
        let slot = |token: &str| slot_of(token.rsplit('.').next().unwrap().as_bytes());
        let second = std::iter::repeat_with(|| token(&codec))
            .take(1000)
            .find(|other| slot(other) != slot(&first))
            .unwrap();
        let remembered = verify(&codec, &first, NOW).unwrap();
        verify(&codec, &second, NOW).unwrap();
        let again = verify(&codec, &first, NOW).unwrap();
        assert!(
            Arc::ptr_eq(&remembered.0, &again.0),
            "the first is still remembered after the second"
        );
    }

    #[test]
    fn a_second_use_answers_the_same_claims() {
        let codec = codec();
        let token = token(&codec);
        let first = verify(&codec, &token, NOW).unwrap();
        let second = verify(&codec, &token, NOW + 1).unwrap();
        assert_eq!(first, second);
        assert!(
            Arc::ptr_eq(&first.0, &second.0),
            "the second came from memory"
        );
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let codec = codec();
        let token = token(&codec);
        verify(&codec, &token, NOW).unwrap();
        assert_eq!(
            verify(&codec, &token, NOW + 900),
            Err(TokenError::Expired),
            "same answer as a full verification"
        );
        assert_eq!(codec.verify(&token, NOW + 900), Err(TokenError::Expired));
    }

    /// Two codecs on one thread (another key, another process's keyring in a test): a token
    /// remembered by one is never accepted by the other on the strength of the memory.
    #[test]
    fn an_entry_answers_only_the_codec_that_verified_it() {
        let (ours, theirs) = (codec(), codec());
        let token = token(&ours);
        verify(&ours, &token, NOW).unwrap();
        assert_eq!(verify(&theirs, &token, NOW), theirs.verify(&token, NOW));
        assert!(verify(&theirs, &token, NOW).is_err());
    }

    /// A token whose signature is remembered but whose payload was changed: the slot matches,
    /// the confirmation does not, and the full verification refuses it.
    #[test]
    fn the_same_signature_over_other_claims_is_refused() {
        let codec = codec();
        let token = token(&codec);
        verify(&codec, &token, NOW).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let other = codec.sign(&Claims {
            jti: TokenId::random(),
            ..codec.verify(&token, NOW).unwrap().claims().clone()
        });
        let (other_input, _) = other.rsplit_once('.').unwrap();
        assert_ne!(input, other_input);
        let forged = format!("{other_input}.{signature}");
        assert_eq!(verify(&codec, &forged, NOW), Err(TokenError::BadSignature));
    }

    fn mutations() -> impl Strategy<Value = (usize, u8)> {
        (0usize..400, prop::sample::select(b"AZaz09-_.=+/ ".to_vec()))
    }

    proptest! {
        /// Whatever was remembered before, the answer is the full verification's.
        #[test]
        fn answers_agree_with_a_full_verification(
            edits in prop::collection::vec(mutations(), 0..4),
            truncate in prop::option::of(0usize..400),
            later in 0i64..1000,
        ) {
            let codec = codec();
            let valid = token(&codec);
            verify(&codec, &valid, NOW).unwrap();
            let mut bytes = valid.clone().into_bytes();
            for (at, byte) in edits {
                if let Some(place) = bytes.get_mut(at % valid.len()) {
                    *place = byte;
                }
            }
            if let Some(length) = truncate {
                bytes.truncate(length);
            }
            let presented = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(
                verify(&codec, &presented, NOW + later),
                codec.verify(&presented, NOW + later)
            );
            prop_assert_eq!(verify(&codec, &valid, NOW + later), codec.verify(&valid, NOW + later));
        }
    }
}
