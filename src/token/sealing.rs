//! Secrets at rest, sealed under the keyring: a database dump without `keys/` reveals none.
//!
//! Construction: XChaCha20-Poly1305 (the `chacha20poly1305` crate, RustCrypto) with a random
//! 192-bit nonce per seal — large enough that random nonces never repeat in practice. The key is
//! HMAC-SHA256(signing key, "tessera sealing key v1"): HKDF-Expand's single block with the
//! keyring's key as the pseudorandom key, the same derivation refresh-token tags use under
//! another label, so one key file holds every secret and no key is used for two purposes. The
//! associated data binds a ciphertext to its purpose and owner: a sealed secret copied to another
//! user's row does not open.
//!
//! Format: `v1.KID.BASE64URL(nonce ‖ ciphertext ‖ tag)`. The key id says which key opens it, so
//! a rotation leaves old seals readable while the old key is in the file; `tessera keys retire`
//! reseals everything under the current key before it drops one.

use super::keys::Keyring;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const VERSION: &str = "v1";
const NONCE_BYTES: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is not in the v1.KID.DATA format")]
    Malformed,
    #[error("the key {0:?} that sealed it is not in the key file")]
    UnknownKey(String),
    #[error("the sealed value does not open under its key: altered, or another owner's")]
    Rejected,
}

/// Seals `plaintext` for `purpose` and `owner` under the keyring's signing key.
pub fn seal(
    keyring: &Keyring,
    purpose: &str,
    owner: &str,
    plaintext: &[u8],
) -> Result<String, SealError> {
    let kid = keyring.signing_kid();
    let cipher = cipher(keyring, kid).ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
    let nonce_bytes = crate::crypto::random::bytes::<NONCE_BYTES>();
    let aad = associated_data(purpose, owner);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce_bytes),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Rejected)?;
    let mut data = Vec::with_capacity(NONCE_BYTES + sealed.len());
    data.extend_from_slice(&nonce_bytes);
    data.extend_from_slice(&sealed);
    Ok(format!("{VERSION}.{kid}.{}", URL_SAFE_NO_PAD.encode(data)))
}

/// Opens what [`seal`] made for the same purpose and owner.
pub fn open(
    keyring: &Keyring,
    purpose: &str,
    owner: &str,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut parts = sealed.splitn(3, '.');
    let (Some(VERSION), Some(kid), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SealError::Malformed);
    };
    let data = URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| SealError::Malformed)?;
    if data.len() < NONCE_BYTES + 16 {
        return Err(SealError::Malformed);
    }
    let (nonce, ciphertext) = data.split_at(NONCE_BYTES);
    let nonce = <[u8; NONCE_BYTES]>::try_from(nonce).map_err(|_| SealError::Malformed)?;
    let cipher = cipher(keyring, kid).ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
    let aad = associated_data(purpose, owner);
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Rejected)
}

/// The key id a sealed value names, if it is well formed.
pub fn sealed_by(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    (parts.next() == Some(VERSION))
        .then(|| parts.next())
        .flatten()
}

fn cipher(keyring: &Keyring, kid: &str) -> Option<XChaCha20Poly1305> {
    let key = keyring.derive(kid, b"tessera sealing key v1")?;
    XChaCha20Poly1305::new_from_slice(key.as_slice()).ok()
}

fn associated_data(purpose: &str, owner: &str) -> Vec<u8> {
    // Lengths first, so no two (purpose, owner) pairs give the same bytes.
    let mut aad = Vec::with_capacity(16 + purpose.len() + owner.len());
    aad.extend_from_slice(&(purpose.len() as u64).to_be_bytes());
    aad.extend_from_slice(purpose.as_bytes());
    aad.extend_from_slice(&(owner.len() as u64).to_be_bytes());
    aad.extend_from_slice(owner.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(kid: &str, byte: u8) -> Keyring {
        Keyring::from_secret(kid, &[byte; 32]).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_for_its_owner_and_purpose_only() {
        let keys = keyring("k1", 7);
        let sealed = seal(&keys, "totp", "user-1", b"twenty bytes secret!").unwrap();
        assert_eq!(sealed_by(&sealed), Some("k1"));
        assert!(!sealed.contains("twenty"));
        assert_eq!(
            open(&keys, "totp", "user-1", &sealed).unwrap().as_slice(),
            b"twenty bytes secret!"
        );
        assert_eq!(
            open(&keys, "totp", "user-2", &sealed),
            Err(SealError::Rejected)
        );
        assert_eq!(
            open(&keys, "other", "user-1", &sealed),
            Err(SealError::Rejected)
        );
    }

    #[test]
    fn each_seal_is_fresh_and_any_altered_byte_is_refused() {
        let keys = keyring("k1", 7);
        let one = seal(&keys, "totp", "u", b"same").unwrap();
        assert_ne!(
            one,
            seal(&keys, "totp", "u", b"same").unwrap(),
            "random nonce"
        );
        let data = one.rsplit('.').next().unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(data).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let altered = format!("v1.k1.{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(
                open(&keys, "totp", "u", &altered),
                Err(SealError::Rejected),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        // Shorter than a nonce and a tag: malformed, whatever the bytes (20 and 39 of them).
        let short = format!("v1.k1.{}", URL_SAFE_NO_PAD.encode([0u8; 20]));
        let almost = format!("v1.k1.{}", URL_SAFE_NO_PAD.encode([0u8; 39]));
        let cases = [
            "",
            "v1",
            "v1.k1",
            "v2.k1.AAAA",
            "v1.k1.!!",
            "v1.k1.AAAA",
            &short,
            &almost,
        ];
        for malformed in cases {
            assert_eq!(
                open(&keys, "totp", "u", malformed),
                Err(SealError::Malformed)
            );
        }
    }

    #[test]
    fn an_empty_secret_seals_to_a_nonce_and_a_tag_and_opens() {
        let keys = keyring("k1", 7);
        let sealed = seal(&keys, "totp", "u", b"").unwrap();
        let data = URL_SAFE_NO_PAD
            .decode(sealed.rsplit('.').next().unwrap())
            .unwrap();
        assert_eq!(data.len(), NONCE_BYTES + 16);
        assert!(open(&keys, "totp", "u", &sealed).unwrap().is_empty());
    }

    #[test]
    fn another_key_file_opens_nothing_and_an_unknown_kid_is_named() {
        let sealed = seal(&keyring("k1", 7), "totp", "u", b"secret").unwrap();
        assert_eq!(
            open(&keyring("k1", 8), "totp", "u", &sealed),
            Err(SealError::Rejected),
            "same kid, other key material"
        );
        assert_eq!(
            open(&keyring("k2", 7), "totp", "u", &sealed),
            Err(SealError::UnknownKey("k1".into()))
        );
    }
}
