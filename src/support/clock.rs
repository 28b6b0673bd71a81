//! Time as a parameter. Everything below the HTTP layer takes `now` as an argument; the server
//! reads it from the [`Clock`] in its state, so tests drive time with a [`ManualClock`] instead
//! of sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the service gets "now" from: Unix seconds for what is stored and signed, and a
/// monotonic instant for what is measured in fractions of a second (the per-client buckets).
pub trait Clock: Debug + Send + Sync {
    fn now(&self) -> i64;
    fn instant(&self) -> Instant;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to (tests): both of its readings move together.
#[derive(Debug)]
pub struct ManualClock {
    seconds: AtomicI64,
    /// The reading at creation, and the instant it stands for.
    origin: (i64, Instant),
}

impl ManualClock {
    /// Starts at the current wall-clock time, so tokens it stamps look ordinary.
    pub fn starting_now() -> Arc<Self> {
        let start = now();
        Arc::new(Self {
            seconds: AtomicI64::new(start),
            origin: (start, Instant::now()),
        })
    }

    pub fn advance(&self, seconds: i64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.seconds.load(Ordering::SeqCst)
    }

    /// Never before the origin: a clock set back only stands still here, as a monotonic one
    /// would.
    fn instant(&self) -> Instant {
        let elapsed = u64::try_from(self.now().saturating_sub(self.origin.0)).unwrap_or(0);
        self.origin.1 + Duration::from_secs(elapsed)
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Seconds since the Unix epoch, from the wall clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2026-11-25T12:00:00Z` for a Unix time.
pub fn rfc3339(unix_seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_072_000), "2025-11-25T12:00:00Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_now();
        let t0 = clock.now();
        let i0 = clock.instant();
        clock.advance(3600);
        assert_eq!(clock.now(), t0 + 3600);
        assert_eq!(clock.instant() - i0, Duration::from_secs(3600));
    }
}
