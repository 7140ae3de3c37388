//! Limits every Quip server applies to its peers, in one place: request budgets per
//! connection (governor's GCRA, so a budget costs a few bytes whatever the rate), and open
//! connections per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

/// A rate: `per_second` requests sustained, `burst` at once after a quiet period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `PER_SECOND:BURST`, e.g. `5000:20000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rate, burst) = s
            .split_once(':')
            .ok_or_else(|| format!("expected PER_SECOND:BURST, got {s:?}"))?;
        let number = |n: &str| {
            n.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{n:?} is not a positive whole number"))
        };
        Ok(Self {
            per_second: number(rate)?,
            burst: number(burst)?,
        })
    }
}

impl RateLimit {
    /// The governor quota for this rate (zeros count as one: a limit never forbids everything).
    pub fn quota(self) -> Quota {
        let one = NonZeroU32::MIN;
        Quota::per_second(NonZeroU32::new(self.per_second).unwrap_or(one))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(one))
    }
}

/// One connection's request budget.
#[derive(Debug)]
pub struct Budget {
    limiter: RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        DefaultClock,
        governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
    >,
}

impl Budget {
    /// A full budget at `rate`.
    pub fn new(rate: RateLimit) -> Self {
        Self {
            limiter: RateLimiter::direct(rate.quota()),
        }
    }

    /// Spends one request; `Err(wait)` says how long until the next one is allowed.
    pub fn spend(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Budgets per key (a client address, an account), for limits that span connections. The
/// keys tracked are bounded: when `max_keys` are, keys whose budget has refilled are
/// forgotten; if every one is still active, requests are refused until some refill (fail
/// closed: under that much load, refusing is the safe answer).
#[derive(Debug)]
pub struct KeyedBudget<K: std::hash::Hash + Eq + Clone> {
    limiter: RateLimiter<
        K,
        governor::state::keyed::HashMapStateStore<K>,
        DefaultClock,
        governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
    >,
    max_keys: usize,
    /// How long a refused new key waits when the map is full.
    full_wait: Duration,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedBudget<K> {
    /// `rate` for each key, at most `max_keys` keys tracked at once.
    pub fn new(rate: RateLimit, max_keys: usize) -> Self {
        Self {
            limiter: RateLimiter::hashmap(rate.quota()),
            max_keys: max_keys.max(1),
            full_wait: Duration::from_secs(1),
        }
    }

    /// Spends one request of `key`'s budget; `Err(wait)` says how long until it may.
    pub fn spend(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
            if self.limiter.len() >= self.max_keys {
                return Err(self.full_wait);
            }
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Open connections per client address, each held by a [`Seat`] that frees it on drop.
#[derive(Debug, Clone)]
pub struct PerAddress {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection counted against its address.
#[derive(Debug)]
pub struct Seat {
    addr: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// At most `max` connections from one address.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// Counts a new connection from `addr`, or `None` if it already has `max` open. The map
    /// holds only addresses with open connections, so it is bounded by the connection cap.
    pub fn enter(&self, addr: IpAddr) -> Option<Seat> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(addr).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Seat {
            addr,
            open: self.open.clone(),
        })
    }

    /// The most connections one address may hold.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_past_its_burst_and_says_how_long_to_wait() {
        let budget = Budget::new(RateLimit {
            per_second: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(budget.spend().is_ok());
        }
        let wait = budget.spend().unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn keys_are_limited_separately_and_the_map_is_bounded() {
        let limit = RateLimit {
            per_second: 1000,
            burst: 5,
        };
        let budget = KeyedBudget::new(limit, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!((0..8).filter(|_| budget.spend(&a).is_ok()).count(), 5);
        assert!(budget.spend(&b).is_ok());
        // Full of active keys: a third is refused rather than tracked.
        assert!(budget.spend(&c).is_err());
        assert!(budget.spend(&b).is_err(), "fail closed while full");
        assert_eq!(budget.tracked(), 2);
        // Once the others have refilled (5 ms at 1000/s) they are forgotten and make room.
        std::thread::sleep(Duration::from_millis(20));
        assert!(budget.spend(&c).is_ok());
        assert!(budget.tracked() <= 2);
    }

    #[test]
    fn rates_parse_from_flags() {
        let rate: RateLimit = "5000:20000".parse().unwrap();
        assert_eq!(
            rate,
            RateLimit {
                per_second: 5000,
                burst: 20000
            }
        );
        assert!("5000".parse::<RateLimit>().is_err());
        assert!("0:1".parse::<RateLimit>().is_err());
        assert!("a:1".parse::<RateLimit>().is_err());
    }

    #[test]
    fn seats_per_address_are_counted_and_freed() {
        let limit = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = limit.enter(a).unwrap();
        let _two = limit.enter(a).unwrap();
        assert!(
            limit.enter(a).is_none(),
            "a third connection from one address"
        );
        assert!(limit.enter(b).is_some(), "another address is not affected");
        drop(one);
        assert!(
            limit.enter(a).is_some(),
            "a closed connection frees its seat"
        );
    }
}
