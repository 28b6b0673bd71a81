//! Randomness for secrets and identifiers, straight from the operating system's CSPRNG.
//!
//! Keys, token ids, user ids and salts all come from here. We read the OS generator (getrandom(2)
//! via `rand::rngs::SysRng`) rather than a userspace PRNG so there is no state to fork, snapshot
//! or seed badly.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng as _;
use rand::rngs::SysRng;

/// `N` bytes from the OS CSPRNG.
///
/// # Panics
/// If the kernel cannot supply randomness. That leaves no safe way to mint keys, salts or token
/// ids, so we stop rather than continue with weaker material.
#[allow(clippy::expect_used)]
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buffer = [0u8; N];
    SysRng
        .try_fill_bytes(&mut buffer)
        .expect("the operating system's random number generator failed");
    buffer
}

/// `N` random bytes as unpadded base64url: 16 bytes (128 bits) give a 22-character id.
pub fn base64url_id<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<N>())
}

/// A 16-character request id (96 bits) from the thread-local CSPRNG (ChaCha, seeded from the
/// OS): unpredictable, but not meant for secrets — those come from [`bytes`].
pub fn request_id() -> RequestId {
    use rand::Rng as _;
    let mut random = rand::rng();
    encode_96(u128::from(random.next_u64()) << 32 | u128::from(random.next_u32()))
}

/// The low 96 bits six at a time, most significant first: exactly the base64url of their 12
/// bytes, without the general encoder's set-up, which cost more than the rest of the id.
fn encode_96(bits: u128) -> RequestId {
    const BASE64URL: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = [0u8; 16];
    for (slot, shift) in text.iter_mut().zip((0..16).rev().map(|i| 6 * i)) {
        let sextet = usize::try_from(bits >> shift & 63).unwrap_or(0);
        *slot = BASE64URL.get(sextet).copied().unwrap_or(b'A');
    }
    RequestId(text)
}

/// A request id held on the stack: one is made for every request, and a `String` would be an
/// allocation each time.
#[derive(Clone, Copy)]
pub struct RequestId([u8; 16]);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Always base64url, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_url_safe_and_distinct() {
        let a = super::base64url_id::<16>();
        let b = super::base64url_id::<16>();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    /// The hand-written encoding is base64url's (12 bytes, 16 characters), and every one of
    /// the 96 bits is random: each position takes most of the 64 characters.
    #[test]
    fn request_ids_are_base64url_of_96_random_bits() {
        use base64::Engine as _;
        let mut seen = vec![std::collections::BTreeSet::new(); 16];
        for _ in 0..1024 {
            let id = super::request_id();
            let bytes = super::URL_SAFE_NO_PAD.decode(id.as_str()).unwrap();
            assert_eq!(bytes.len(), 12);
            assert_eq!(super::URL_SAFE_NO_PAD.encode(&bytes), id.as_str());
            for (position, character) in id.as_str().bytes().enumerate() {
                seen[position].insert(character);
            }
        }
        for (position, values) in seen.iter().enumerate() {
            let distinct = values.len();
            assert!(
                distinct > 56,
                "position {position} took only {distinct} values"
            );
        }
    }

    /// The encoding is base64url of the 12 bytes, bit for bit, whatever they are.
    #[test]
    fn the_96_bits_are_encoded_as_their_base64url() {
        use base64::Engine as _;
        for bytes in [
            [0u8; 12],
            [0xff; 12],
            *b"tessera-id!!",
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        ] {
            let mut wide = [0u8; 16];
            wide[4..].copy_from_slice(&bytes);
            let id = super::encode_96(u128::from_be_bytes(wide));
            assert_eq!(id.as_str(), super::URL_SAFE_NO_PAD.encode(bytes));
            assert_eq!(format!("{id:?}"), id.as_str(), "Debug shows the id itself");
        }
    }

    /// Request ids are random: no shared prefix, no order, nothing that counts requests.
    #[test]
    fn request_ids_share_no_prefix_and_do_not_count() {
        let ids: Vec<String> = (0..64)
            .map(|_| super::request_id().as_str().to_owned())
            .collect();
        assert!(
            ids.iter()
                .flat_map(|id| id.bytes())
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(ids.iter().all(|id| id.len() == 16));
        let shared_prefix = ids.windows(2).all(|w| w[0].get(..4) == w[1].get(..4));
        assert!(!shared_prefix);
        let mut sorted = ids.clone();
        sorted.sort();
        assert_ne!(sorted, ids, "not ordered");
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "distinct");
    }
}
