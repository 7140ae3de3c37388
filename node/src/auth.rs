//! Accounts and sessions: bcrypt on blocking threads behind a semaphore, the same answer and
//! the same work for an unknown user and a wrong password, throttling of password attempts,
//! signup limits per address, and resumable session tokens (random, stored as SHA-256,
//! expiring) so a reconnect never pays bcrypt again.
//!
//! **Password attempts are counted before bcrypt, not after.** An attempt reserves its place
//! first — in storage per account ([`LoginDelays`]; every node sharing the storage sees it),
//! in memory per address ([`AddrThrottle`]) — and only then waits for the bcrypt pool, so
//! parallel guesses cannot all slip past a check that has not yet seen their failures. A
//! success resets the account and gives the address its attempt back. Each account gets a
//! few attempts with no wait; after that every attempt makes the next one wait twice as long
//! as the last (capped), rather than locking the account: the owner can still get in after
//! the wait, and a session token (`Resume`) is never throttled at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use quip_proto::ids::SessionToken;
use quip_storage::{LoginThrottle, UnixMillis};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::NodeConfig;

/// A bcrypt hash of a random secret at the node's cost, verified against when the user does
/// not exist, so both failures cost the same.
fn decoy_hash(cost: u32) -> String {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the OS random source works");
    bcrypt::non_truncating_hash(secret, cost).expect("bcrypt of 32 bytes at a valid cost")
}

/// Password hashing with bounded parallelism, off the async runtime.
#[derive(Debug)]
pub(crate) struct Hasher {
    cost: u32,
    permits: Semaphore,
    decoy: String,
    /// bcrypt verifications run so far (what [`crate::NodeHandle::bcrypt_checks`] reports).
    pub(crate) checks: Arc<AtomicU64>,
}

impl Hasher {
    pub(crate) fn new(cost: u32, parallelism: usize) -> Self {
        Self {
            cost,
            permits: Semaphore::new(parallelism.max(1)),
            decoy: decoy_hash(cost),
            checks: Arc::default(),
        }
    }

    /// bcrypt-hashes a login secret (random salt). Secrets over 72 bytes are refused by
    /// `non_truncating_hash` rather than silently cut.
    pub(crate) async fn hash(&self, secret: Vec<u8>) -> Result<String, bcrypt::BcryptError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let cost = self.cost;
        tokio::task::spawn_blocking(move || bcrypt::non_truncating_hash(secret, cost))
            .await
            .expect("bcrypt task does not panic")
    }

    /// Verifies `secret` against `hash`, or against the decoy when the user is unknown.
    pub(crate) async fn verify(&self, secret: Vec<u8>, hash: Option<String>) -> bool {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.clone());
        self.checks.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::non_truncating_verify(secret, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

impl crate::NodeHandle {
    /// How many bcrypt verifications (password logins, right or wrong, known user or not)
    /// this node has run.
    pub fn bcrypt_checks(&self) -> u64 {
        self.bcrypt_checks.load(Ordering::Relaxed)
    }
}

/// A name whose last attempt is this old starts over with its free attempts.
const LOGIN_FORGET_MS: i64 = 24 * 60 * 60 * 1000;
/// How often a node prunes names quiet for [`LOGIN_FORGET_MS`] from storage.
const LOGIN_PRUNE_EVERY_MS: i64 = 60 * 60 * 1000;

/// The per-account delay policy applied to the state in storage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoginDelays {
    /// Attempts before any wait.
    free: u32,
    /// The first wait; each further attempt doubles it.
    base_ms: i64,
    /// The longest wait.
    max_ms: i64,
}

impl LoginDelays {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        Self {
            free: config.max_failures_per_user.max(1),
            base_ms: config.login_delay_base.as_millis().max(1) as i64,
            max_ms: config.login_delay_max.as_millis().max(1) as i64,
        }
    }

    /// The wait that follows the `attempts`-th counted attempt.
    fn wait_after(&self, attempts: u32) -> i64 {
        if attempts < self.free {
            return 0;
        }
        let doublings = (attempts - self.free).min(40);
        self.base_ms
            .saturating_mul(1i64 << doublings)
            .min(self.max_ms)
    }

    /// Counts one password attempt at `now` if the account may try now (`Ok`), else says
    /// how many milliseconds it must wait (`Err`, nothing counted).
    pub(crate) fn reserve(
        &self,
        state: LoginThrottle,
        now: UnixMillis,
    ) -> (LoginThrottle, Result<(), i64>) {
        let state = if now.saturating_sub(state.last_at) >= LOGIN_FORGET_MS {
            LoginThrottle::default()
        } else {
            state
        };
        if now < state.next_at {
            return (state, Err(state.next_at - now));
        }
        let failures = state.failures.saturating_add(1);
        let next = LoginThrottle {
            failures,
            next_at: now + self.wait_after(failures),
            last_at: now,
        };
        (next, Ok(()))
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

/// Entries kept before old windows are swept.
const THROTTLE_SWEEP_AT: usize = 100_000;

/// Counts failed password logins per address over a window, in this node's memory.
#[derive(Debug)]
pub(crate) struct AddrThrottle {
    window: Duration,
    max: u32,
    addrs: Mutex<HashMap<IpAddr, Window>>,
}

impl AddrThrottle {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        Self {
            window: config.throttle_window,
            max: config.max_failures_per_addr,
            addrs: Mutex::default(),
        }
    }

    /// Counts one attempt from `addr` before it is checked, or says how long until the
    /// address may try again.
    pub(crate) fn reserve(&self, addr: IpAddr) -> Result<(), Duration> {
        let mut map = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= THROTTLE_SWEEP_AT {
            map.retain(|_, w| w.started.elapsed() < self.window);
        }
        let entry = map.entry(addr).or_insert(Window {
            started: Instant::now(),
            attempts: 0,
        });
        if entry.started.elapsed() >= self.window {
            *entry = Window {
                started: Instant::now(),
                attempts: 0,
            };
        }
        if entry.attempts >= self.max {
            return Err(self.window.saturating_sub(entry.started.elapsed()));
        }
        entry.attempts += 1;
        Ok(())
    }

    /// Gives back the attempt of a login that succeeded.
    pub(crate) fn refund(&self, addr: IpAddr) {
        let mut map = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&addr) {
            entry.attempts = entry.attempts.saturating_sub(1);
        }
    }
}

/// Signups per address: a keyed token bucket (burst, then one per `window / burst`).
#[derive(Debug)]
pub(crate) struct SignupLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// Addresses tracked before idle ones are dropped.
const SIGNUP_SWEEP_AT: usize = 100_000;

impl SignupLimit {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        let burst = NonZeroU32::new(config.signups_per_addr.max(1)).expect("at least 1");
        let period = (config.signup_window / burst.get()).max(Duration::from_millis(1));
        let quota = Quota::with_period(period)
            .expect("period is at least 1 ms")
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Takes one signup for `addr`, or says how long until the next is allowed.
    pub(crate) fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() >= SIGNUP_SWEEP_AT {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&addr)
            .map_err(|until| until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A fresh random session token.
pub(crate) fn new_token() -> SessionToken {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    SessionToken(bytes)
}

/// What storage keeps of a token.
pub(crate) fn token_hash(token: &SessionToken) -> [u8; 32] {
    Sha256::digest(token.0).into()
}

/// Shared auth state of a node.
#[derive(Debug)]
pub(crate) struct Auth {
    pub(crate) hasher: Arc<Hasher>,
    pub(crate) delays: LoginDelays,
    pub(crate) addrs: AddrThrottle,
    pub(crate) signups: SignupLimit,
    /// When this node last pruned quiet names from the login throttle table.
    last_prune: AtomicI64,
}

impl Auth {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        Self {
            hasher: Arc::new(Hasher::new(config.bcrypt_cost, config.bcrypt_parallelism)),
            delays: LoginDelays::new(config),
            addrs: AddrThrottle::new(config),
            signups: SignupLimit::new(config),
            last_prune: AtomicI64::new(0),
        }
    }

    /// Whether it is time to prune the login throttle table (true for one caller per period).
    pub(crate) fn prune_due(&self, now: UnixMillis) -> Option<UnixMillis> {
        let last = self.last_prune.load(Ordering::Relaxed);
        (now - last >= LOGIN_PRUNE_EVERY_MS
            && self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
        .then_some(now - LOGIN_FORGET_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig::new(
            "n".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            ".".into(),
        )
    }

    #[tokio::test]
    async fn hash_verify_and_decoy() {
        let hasher = Hasher::new(4, 2);
        let hash = hasher.hash(b"secret".to_vec()).await.unwrap();
        assert!(hasher.verify(b"secret".to_vec(), Some(hash.clone())).await);
        assert!(!hasher.verify(b"wrong".to_vec(), Some(hash.clone())).await);
        assert!(!hasher.verify(b"secret".to_vec(), None).await);
        assert_eq!(hasher.checks.load(Ordering::Relaxed), 3);
        let again = hasher.hash(b"secret".to_vec()).await.unwrap();
        assert_ne!(hash, again, "every hash has its own random salt");
        assert!(
            hasher.hash(vec![b'x'; 73]).await.is_err(),
            "no silent truncation"
        );
    }

    #[test]
    fn delays_free_then_doubling_then_capped_then_forgotten() {
        let mut config = config();
        config.max_failures_per_user = 3;
        config.login_delay_base = Duration::from_secs(1);
        config.login_delay_max = Duration::from_secs(10);
        let delays = LoginDelays::new(&config);
        let mut state = LoginThrottle::default();
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (next, ok) = delays.reserve(state, now);
            assert_eq!(ok, Ok(()), "allowed once the wait is over");
            state = next;
            waits.push(state.next_at - now);
            // Trying again before the wait is over is refused with the rest of the wait.
            if state.next_at > now {
                let (same, refused) = delays.reserve(state, now + 1);
                assert_eq!(same, state, "a refused attempt is not counted");
                assert_eq!(refused, Err(state.next_at - now - 1));
            }
            now = state.next_at;
        }
        assert_eq!(
            waits,
            [0, 0, 1000, 2000, 4000, 8000, 10_000, 10_000],
            "free attempts, then doubling waits up to the cap"
        );
        let (fresh, ok) = delays.reserve(state, now + LOGIN_FORGET_MS);
        assert_eq!(ok, Ok(()));
        assert_eq!(fresh.failures, 1, "a day of quiet starts over");
    }

    #[test]
    fn addresses_reserve_before_checking_and_successes_refund() {
        let mut config = config();
        config.max_failures_per_addr = 2;
        let t = AddrThrottle::new(&config);
        let (ip, other): (IpAddr, IpAddr) =
            ("127.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap());
        assert!(t.reserve(ip).is_ok());
        assert!(t.reserve(ip).is_ok());
        assert!(t.reserve(ip).is_err(), "two attempts in flight use it up");
        assert!(t.reserve(other).is_ok(), "per address");
        t.refund(ip);
        assert!(t.reserve(ip).is_ok(), "a success gives its attempt back");
    }

    #[test]
    fn signups_burst_then_wait() {
        let mut config = config();
        config.signups_per_addr = 3;
        config.signup_window = Duration::from_secs(600);
        let limit = SignupLimit::new(&config);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(ip).is_ok());
        }
        let wait = limit.check(ip).unwrap_err();
        assert!(wait > Duration::from_secs(150) && wait <= Duration::from_secs(200));
        assert!(limit.check("10.0.0.1".parse().unwrap()).is_ok());
    }
}
