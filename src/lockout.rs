//! Per-account softlock against online guessing (NIST SP 800-63B §3.2.2; Kanidm's softlock).
//!
//! The first few failures are free. After that, each further attempt must wait a delay that
//! doubles with every consecutive failure, up to a cap; attempts inside the window are refused
//! without checking the password, so guessing gets no feedback. The counter lives in SQLite
//! (survives restarts) and resets on success. Because the delay is capped and always ends, nobody
//! can lock a victim out for good — at worst they slow the victim to one try per `max_delay`,
//! while a guesser gets about 100 tries a day, within NIST's "no more than 100 consecutive
//! failed attempts" guidance for long enough windows.

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
