//! Per-account softlock against online guessing (NIST SP 800-63B §3.2.2; Kanidm's softlock).
//!
//! The first few failures are free. After that, each further attempt must wait a delay that
//! doubles with every consecutive failure, up to a cap; attempts inside the window are refused
//! without checking the password, so guessing gets no feedback. The counter lives in SQLite
//! (survives restarts) and resets on success. Because the delay is capped and always ends, nobody
//! can lock a victim out for good — at worst they slow the victim to one try per `max_delay`,
//! while a guesser gets about 100 tries a day, within NIST's "no more than 100 consecutive
//! failed attempts" guidance for long enough windows.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// When consecutive failures start to cost time, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures allowed before any delay.
    pub free_attempts: u32,
    /// Delay after the first counted failure, in seconds; doubles per further failure.
    pub base_delay: u64,
    /// Longest delay, in seconds.
    pub max_delay: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            free_attempts: 5,
            base_delay: 2,
            max_delay: 900,
        }
    }
}

impl LockoutPolicy {
    /// Seconds the account must still wait, or `None` when an attempt may go ahead.
    pub fn retry_after(&self, failures: u32, last_failure: Option<i64>, now: i64) -> Option<u64> {
        let delay = self.delay_after(failures);
        let last = last_failure?;
        let unlock_at = last.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        (delay > 0 && now < unlock_at).then(|| u64::try_from(unlock_at - now).unwrap_or(1))
    }

    /// The waiting time imposed after `failures` consecutive failures.
    pub fn delay_after(&self, failures: u32) -> u64 {
        if failures < self.free_attempts {
            return 0;
        }
        let doublings = (failures - self.free_attempts).min(32);
        self.base_delay
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay)
    }
}

/// Failed-login counters for usernames that have no account, kept in memory.
///
/// Without them a locked real account would answer 429 while an unknown name keeps answering
/// 401 — telling a guesser which names exist after a handful of tries. Unknown names therefore
/// get the same softlock, on the same policy, reserved before hashing exactly like an
/// account's. (They are not persisted: after a restart a real account's lock survives and an
/// unknown name's does not; that is the remaining difference.)
///
/// Memory is bounded in bytes, not just in entries: a key is a fixed 16-byte digest of the
/// canonical name, however long the name was, and only names that pass username validation
/// get a counter at all — a name that cannot be an account needs none, and the per-IP budget
/// limits how often it can be tried.
#[derive(Debug, Default)]
pub struct PhantomFailures {
    counters: Mutex<HashMap<PhantomKey, (u32, i64)>>,
}

type PhantomKey = [u8; 16];

/// Unknown names tracked at most (each entry a fixed size, so this bounds the bytes too);
/// beyond it, entries whose delay has passed are dropped first.
pub const MAX_PHANTOMS: usize = 100_000;

impl PhantomFailures {
    /// Reserves one guess for `canonical_name`, or says how many seconds it must wait.
    pub fn reserve(
        &self,
        policy: &LockoutPolicy,
        canonical_name: &str,
        now: i64,
    ) -> Result<(), u64> {
        let key = phantom_key(canonical_name);
        let mut counters = self.lock();
        if let Some((failures, last)) = counters.get(&key).copied()
            && let Some(retry_after) = policy.retry_after(failures, Some(last), now)
        {
            return Err(retry_after);
        }
        if counters.len() >= MAX_PHANTOMS && !counters.contains_key(&key) {
            // Amortised: a full sweep happens at most once per MAX_PHANTOMS new names.
            counters.retain(|_, (failures, last)| {
                policy.retry_after(*failures, Some(*last), now).is_some()
            });
            if counters.len() >= MAX_PHANTOMS {
                counters.clear();
            }
        }
        let entry = counters.entry(key).or_insert((0, now));
        *entry = (entry.0.saturating_add(1), now);
        Ok(())
    }

    /// Names tracked right now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PhantomKey, (u32, i64)>> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn phantom_key(canonical_name: &str) -> PhantomKey {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(canonical_name.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_lock_exactly_like_accounts() {
        let policy = LockoutPolicy::default();
        let phantoms = PhantomFailures::default();
        for _ in 0..5 {
            assert_eq!(phantoms.reserve(&policy, "nobody", 100), Ok(()));
        }
        let expected = policy.retry_after(5, Some(100), 100).unwrap();
        assert_eq!(phantoms.reserve(&policy, "nobody", 100), Err(expected));
        assert_eq!(phantoms.reserve(&policy, "somebody-else", 100), Ok(()));
    }

    /// Counters for names without an account are bounded in number and in bytes: a key is a
    /// fixed-size digest, however long the name.
    #[test]
    fn phantom_counters_are_bounded_in_entries_and_bytes() {
        let policy = LockoutPolicy::default();
        let phantoms = PhantomFailures::default();
        let long = "x".repeat(10_000);
        for i in 0..(MAX_PHANTOMS + 10) {
            let _ = phantoms.reserve(&policy, &format!("{long}{i}"), 100);
        }
        assert!(phantoms.len() <= MAX_PHANTOMS);
        // Keys are 16-byte digests whatever the name's length.
        assert_eq!(std::mem::size_of::<PhantomKey>(), 16);
    }

    /// A name's counter survives guesses at other names, and a locked name stays locked when
    /// the map fills and is swept: only counters whose delay has passed are dropped.
    #[test]
    fn other_names_neither_reset_nor_unlock_a_name() {
        let policy = LockoutPolicy::default();
        let phantoms = PhantomFailures::default();
        assert!(phantoms.is_empty());
        for _ in 0..3 {
            assert_eq!(phantoms.reserve(&policy, "nobody", 100), Ok(()));
        }
        assert_eq!(phantoms.reserve(&policy, "somebody-else", 100), Ok(()));
        assert_eq!((phantoms.len(), phantoms.is_empty()), (2, false));
        for _ in 0..2 {
            assert_eq!(phantoms.reserve(&policy, "nobody", 100), Ok(()));
        }
        assert!(
            phantoms.reserve(&policy, "nobody", 100).is_err(),
            "the sixth guess waits"
        );
        for i in 0..MAX_PHANTOMS {
            let _ = phantoms.reserve(&policy, &format!("other-{i}"), 100);
        }
        assert!(
            phantoms.reserve(&policy, "nobody", 100).is_err(),
            "still locked"
        );
    }

    #[test]
    fn first_failures_are_free() {
        let policy = LockoutPolicy::default();
        for failures in 0..5 {
            assert_eq!(policy.retry_after(failures, Some(100), 100), None);
        }
    }

    #[test]
    fn delay_doubles_and_is_capped() {
        let policy = LockoutPolicy::default();
        let delays: Vec<u64> = (5..12).map(|f| policy.delay_after(f)).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(policy.delay_after(1000), 900);
    }

    #[test]
    fn the_window_ends() {
        let policy = LockoutPolicy::default();
        assert_eq!(policy.retry_after(6, Some(100), 101), Some(3));
        assert_eq!(policy.retry_after(6, Some(100), 104), None);
        assert_eq!(policy.retry_after(u32::MAX, Some(100), 100 + 900), None);
        // Free attempts stay free even if the last failure is dated after now (a clock that
        // went back).
        assert_eq!(policy.retry_after(2, Some(200), 100), None);
    }
}
