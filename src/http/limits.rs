//! Admission control: per-IP token buckets (the argon2 queue bound lives in `hash_pool`).

use super::problem::ApiError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// A token bucket per client: `burst` requests at once, refilled at `per_second`.
/// `per_second <= 0` disables the limiter.
///
/// Clients are keyed by IPv4 address, or by IPv6 /64 — one host usually holds a whole /64, so
/// keying by full address would hand an attacker as many buckets as it likes.
///
/// Memory is bounded and cleanup is amortised O(1): buckets live in two generations. Each
/// request looks in the current one, then the previous one (moving its bucket forward). When
/// the current generation fills half the capacity, or one full refill time has passed, the
/// previous generation is dropped whole and the current one becomes previous. A bucket dropped
/// that way went untouched for a whole generation; if the rotation was by time it had refilled
/// completely anyway, so forgetting it changes nothing. Only when more than half the capacity
/// of distinct clients arrive within one refill time (an attacker with many addresses, who
/// gets fresh buckets from new addresses regardless) can a partly drained bucket be forgotten
/// early.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    capacity: usize,
    buckets: Mutex<Generations>,
}

/// Who a request comes from, for per-client limits (buckets here, connection caps in
/// `server.rs`): an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
}

impl ClientKey {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.into()),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<ClientKey, Bucket>,
    previous: HashMap<ClientKey, Bucket>,
    rotated_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Clients tracked at most, per limiter.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

impl RateLimiter {
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self::with_capacity(burst, per_second, MAX_TRACKED_CLIENTS)
    }

    fn with_capacity(burst: u32, per_second: f64, capacity: usize) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second,
            capacity: capacity.max(2),
            buckets: Mutex::new(Generations::default()),
        }
    }

    /// Takes one token for `ip`, or says how many seconds until one is available.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let key = ClientKey::of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = self.rotate_if_due(&mut buckets, now);
        let bucket = match buckets.previous.remove(&key) {
            Some(moved) => buckets.current.entry(key).or_insert(moved),
            None => buckets.current.entry(key).or_insert(Bucket {
                tokens: self.burst,
                updated: now,
            }),
        };
        bucket.tokens = self.refilled(*bucket, now);
        bucket.updated = now;
        let outcome = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / self.per_second).ceil();
            // `wait` is positive and small: burst and rate come from configuration.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let retry_after = wait.max(1.0) as u64;
            Err(ApiError::TooManyRequests { retry_after })
        };
        drop(buckets);
        drop(expired); // freeing a generation happens outside the lock
        outcome
    }

    /// Clients tracked right now (both generations).
    pub fn tracked(&self) -> usize {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.current.len() + buckets.previous.len()
    }

    /// Starts a new generation when due; returns the one dropped, to be freed by the caller.
    fn rotate_if_due(
        &self,
        buckets: &mut Generations,
        now: Instant,
    ) -> Option<HashMap<ClientKey, Bucket>> {
        let refill_time = std::time::Duration::from_secs_f64(self.burst / self.per_second);
        let rotated_at = *buckets.rotated_at.get_or_insert(now);
        let full = buckets.current.len() >= self.capacity / 2;
        let aged = now.saturating_duration_since(rotated_at) >= refill_time;
        if !(full || aged) {
            return None;
        }
        buckets.rotated_at = Some(now);
        let current = std::mem::take(&mut buckets.current);
        Some(std::mem::replace(&mut buckets.previous, current))
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

    /// The map is bounded by its capacity however many clients arrive, cleanup never sweeps every
    /// entry per request, and a client seen in every generation keeps its drained bucket.
    #[test]
    fn the_bucket_map_stays_bounded_and_a_busy_client_keeps_its_bucket() {
        let limiter = RateLimiter::with_capacity(2, 0.001, 1_000);
        let t0 = Instant::now();
        let busy: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check(busy, t0).is_ok());
        assert!(limiter.check(busy, t0).is_ok());
        for i in 0..60_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.check(ip, t0);
            assert!(limiter.tracked() <= 1_000);
            if i % 100 == 0 {
                // The busy client, seen in every generation, stays drained.
                assert!(limiter.check(busy, t0).is_err(), "reset at {i}");
            }
        }
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_v4_is_v4() {
        let limiter = RateLimiter::new(1, 0.001);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(a, t0).is_ok());
        assert!(limiter.check(b, t0).is_err(), "same /64");
        assert!(limiter.check(other, t0).is_ok(), "another /64");
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert!(limiter.check(v4, t0).is_ok());
        assert!(
            limiter.check(mapped, t0).is_err(),
            "mapped address is the v4 client"
        );
    }

    #[test]
    fn zero_rate_disables_the_limiter() {
        let limiter = RateLimiter::new(1, 0.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(limiter.check(ip, Instant::now()).is_ok());
        }
    }
}
