//! Token buckets for discovery: one per connection and one per client address, the address
//! map bounded so a crowd of addresses cannot grow it without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// One token bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            updated: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
        self.updated = now;
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full again by `now` (so forgetting it changes nothing).
    fn is_refilled(&self, limit: RateLimit, now: Instant) -> bool {
        let missing = f64::from(limit.burst) - self.tokens;
        let per_second = f64::from(limit.per_second.max(1));
        now.saturating_duration_since(self.updated) >= Duration::from_secs_f64(missing / per_second)
    }
}

/// Per-address buckets, at most `max` of them.
#[derive(Debug)]
pub(crate) struct AddressLimiter {
    limit: RateLimit,
    max: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AddressLimiter {
    pub(crate) fn new(limit: RateLimit, max: usize) -> Self {
        Self {
            limit,
            max,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `addr`. When the map is full, buckets that have refilled are
    /// forgotten first; if every tracked address is still active, a new address is refused
    /// (fail closed: under that much load, refusing is the safe answer).
    pub(crate) fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if let Some(bucket) = buckets.get_mut(&addr) {
            return bucket.take(self.limit, now);
        }
        if buckets.len() >= self.max {
            let limit = self.limit;
            buckets.retain(|_, bucket| !bucket.is_refilled(limit, now));
            if buckets.len() >= self.max {
                return false;
            }
        }
        let mut bucket = Bucket::full(self.limit, now);
        let allowed = bucket.take(self.limit, now);
        buckets.insert(addr, bucket);
        allowed
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 5,
    };

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::full(LIMIT, start);
        assert_eq!((0..8).filter(|_| bucket.take(LIMIT, start)).count(), 5);
        // 10/s: one token per 100 ms.
        assert!(!bucket.take(LIMIT, start + Duration::from_millis(50)));
        assert!(bucket.take(LIMIT, start + Duration::from_millis(110)));
        // Never more than the burst, however long the pause.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| bucket.take(LIMIT, later)).count(), 5);
    }

    #[test]
    fn addresses_are_limited_separately_and_the_map_is_bounded() {
        let limiter = AddressLimiter::new(LIMIT, 2);
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!((0..8).filter(|_| limiter.allow(a, now)).count(), 5);
        assert!(limiter.allow(b, now));
        // Full of active addresses: a third is refused rather than tracked.
        assert!(!limiter.allow(c, now));
        assert_eq!(limiter.tracked(), 2);
        // Once the others have refilled they are forgotten and make room.
        assert!(limiter.allow(c, now + Duration::from_secs(2)));
        assert_eq!(limiter.tracked(), 1);
    }
}
