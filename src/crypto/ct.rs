//! Constant-time equality for MACs — ours, as the brief requires, and small enough to audit.
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
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        // `black_box` keeps the optimiser from proving that `difference` can only grow and
        // turning the loop back into an early exit.
        difference |= black_box(x ^ y);
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

    #[test]
    fn any_single_bit_difference_is_detected() {
        let mac = [0x5au8; 32];
        for byte in 0..32 {
            for bit in 0..8 {
                let mut other = mac;
                other[byte] ^= 1 << bit;
                assert!(!constant_time_eq(&mac, &other), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn different_lengths_are_unequal() {
        assert!(!constant_time_eq(&[1, 2, 3], &[1, 2]));
        assert!(!constant_time_eq(&[], &[0]));
    }
}
