//! Admission control: a bounded gate in front of argon2, and per-IP token buckets.

use super::problem::ApiError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// argon2 is memory-bandwidth bound: more concurrent hashes than cores only add latency and
/// memory (19 MiB each). So hashing runs under `permits` slots, at most `max_waiting` requests
/// queue for one, and beyond that login and registration get a fast 503 instead of piling up.
/// Token-only endpoints never touch the gate and keep their latency.
#[derive(Debug)]
pub struct HashGate {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl HashGate {
    pub fn new(permits: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Waits for a hashing slot, or refuses at once when the queue is full.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Overloaded { retry_after: 1 });
        }
        let _waiting = Waiting(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal)
    }

    /// Requests currently queued for a slot (a metric).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Leaves the queue when dropped, including when the waiting request is cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A token bucket per client IP: `burst` requests at once, refilled at `per_second`.
/// `per_second <= 0` disables the limiter.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Above this many tracked clients, buckets that have refilled completely are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

impl RateLimiter {
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`, or says how many seconds until one is available.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_CLIENTS {
            buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.per_second).ceil();
        // `wait` is positive and small: burst and rate come from configuration.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let retry_after = wait.max(1.0) as u64;
        Err(ApiError::TooManyRequests { retry_after })
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let limiter = RateLimiter::new(3, 1.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
        }
        match limiter.check(ip, t0) {
            Err(ApiError::TooManyRequests { retry_after }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        assert!(limiter.check(ip, t0 + Duration::from_secs(1)).is_ok());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.check(other, t0).is_ok(), "buckets are per client");
    }

    #[test]
    fn zero_rate_disables_the_limiter() {
        let limiter = RateLimiter::new(1, 0.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(limiter.check(ip, Instant::now()).is_ok());
        }
    }

    #[tokio::test]
    async fn full_queue_is_refused_quickly() {
        let gate = Arc::new(HashGate::new(1, 1));
        let held = gate.enter().await.unwrap();
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.map(drop) }
        });
        while gate.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            gate.enter().await,
            Err(ApiError::Overloaded { .. })
        ));
        drop(held);
        assert!(queued.await.unwrap().is_ok());
        assert_eq!(gate.queue_depth(), 0);
    }
}
