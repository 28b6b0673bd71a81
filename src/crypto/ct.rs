//! Constant-time equality for MACs — written here rather than taken from a crate, so the one
//! comparison every token's security rests on is small enough to audit in place.
//!
//! A byte-by-byte `==` returns at the first difference, so its running time tells an attacker how
//! many leading bytes of a forged MAC were right; repeated guesses then recover a valid MAC one
//! byte at a time. Here every byte is always visited and differences are OR-ed together, so the
//! time depends only on the length — which is public (32 bytes for HS256).

use std::hint::black_box;

/// True when `a` and `b` are equal. Runs in time that depends only on the lengths.
#[inline(never)]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Eight bytes at a time, then the rest one by one: every byte is visited either way.
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut difference = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        // `black_box` keeps the optimiser from proving that `difference` can only grow and
        // turning the loop back into an early exit.
        difference |= black_box(u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y));
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        difference |= black_box(u64::from(x ^ y));
    }
    black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_slices_compare_equal() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(&[7; 32], &[7; 32]));
    }

    /// Whole words and the bytes after them: a 32-byte tag, a 43-character encoded tag, and
    /// lengths shorter than a word.
    #[test]
    fn any_single_bit_difference_is_detected() {
        for length in [32, 43, 7, 1] {
            let mac = vec![0x5au8; length];
            assert!(constant_time_eq(&mac, &mac.clone()));
            for byte in 0..length {
                for bit in 0..8 {
                    let mut other = mac.clone();
                    other[byte] ^= 1 << bit;
                    assert!(
                        !constant_time_eq(&mac, &other),
                        "length {length} byte {byte} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn different_lengths_are_unequal() {
        assert!(!constant_time_eq(&[1, 2, 3], &[1, 2]));
        assert!(!constant_time_eq(&[], &[0]));
    }
}
