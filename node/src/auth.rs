//! Accounts and sessions: bcrypt on blocking threads behind a semaphore, the same answer and
//! the same work for an unknown user and a wrong password, throttling of repeated failures,
//! and resumable session tokens (random, stored as SHA-256, expiring) so a reconnect never
//! pays bcrypt again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quip_proto::ids::{SessionToken, UserName};
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
}

impl Hasher {
    pub(crate) fn new(cost: u32, parallelism: usize) -> Self {
        Self {
            cost,
            permits: Semaphore::new(parallelism.max(1)),
            decoy: decoy_hash(cost),
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
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::non_truncating_verify(secret, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failed logins per account and per address over a window.
#[derive(Debug)]
pub(crate) struct Throttle {
    window: Duration,
    max_user: u32,
    max_addr: u32,
    users: Mutex<HashMap<UserName, Window>>,
    addrs: Mutex<HashMap<IpAddr, Window>>,
}

/// Entries kept per map before old windows are swept.
const THROTTLE_SWEEP_AT: usize = 100_000;

fn active<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Window>>,
    key: &K,
    window: Duration,
) -> Option<Window> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .copied()
        .filter(|w| w.started.elapsed() < window)
}

fn record<K: std::hash::Hash + Eq + Clone>(
    map: &Mutex<HashMap<K, Window>>,
    key: &K,
    window: Duration,
) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= THROTTLE_SWEEP_AT {
        map.retain(|_, w| w.started.elapsed() < window);
    }
    let entry = map.entry(key.clone()).or_insert(Window {
        started: Instant::now(),
        failures: 0,
    });
    if entry.started.elapsed() >= window {
        *entry = Window {
            started: Instant::now(),
            failures: 0,
        };
    }
    entry.failures += 1;
}

impl Throttle {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        Self {
            window: config.throttle_window,
            max_user: config.max_failures_per_user,
            max_addr: config.max_failures_per_addr,
            users: Mutex::default(),
            addrs: Mutex::default(),
        }
    }

    /// How long until `user` from `addr` may try again, if throttled.
    pub(crate) fn blocked_for(&self, user: &UserName, addr: IpAddr) -> Option<Duration> {
        let over = |w: Option<Window>, max: u32| {
            w.filter(|w| w.failures >= max)
                .map(|w| self.window.saturating_sub(w.started.elapsed()))
        };
        over(active(&self.users, user, self.window), self.max_user)
            .max(over(active(&self.addrs, &addr, self.window), self.max_addr))
    }

    pub(crate) fn fail(&self, user: &UserName, addr: IpAddr) {
        record(&self.users, user, self.window);
        record(&self.addrs, &addr, self.window);
    }

    pub(crate) fn succeed(&self, user: &UserName) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
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
    pub(crate) throttle: Throttle,
}

impl Auth {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        Self {
            hasher: Arc::new(Hasher::new(config.bcrypt_cost, config.bcrypt_parallelism)),
            throttle: Throttle::new(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verify_and_decoy() {
        let hasher = Hasher::new(4, 2);
        let hash = hasher.hash(b"secret".to_vec()).await.unwrap();
        assert!(hasher.verify(b"secret".to_vec(), Some(hash.clone())).await);
        assert!(!hasher.verify(b"wrong".to_vec(), Some(hash.clone())).await);
        assert!(!hasher.verify(b"secret".to_vec(), None).await);
        let again = hasher.hash(b"secret".to_vec()).await.unwrap();
        assert_ne!(hash, again, "every hash has its own random salt");
        assert!(
            hasher.hash(vec![b'x'; 73]).await.is_err(),
            "no silent truncation"
        );
    }

    #[test]
    fn throttle_counts_per_user_and_address() {
        let mut config = NodeConfig::new(
            "n".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            ".".into(),
        );
        config.max_failures_per_user = 2;
        config.max_failures_per_addr = 3;
        let t = Throttle::new(&config);
        let (a, b) = (
            UserName::new("alice").unwrap(),
            UserName::new("bob").unwrap(),
        );
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        t.fail(&a, ip);
        assert!(t.blocked_for(&a, ip).is_none());
        t.fail(&a, ip);
        assert!(t.blocked_for(&a, ip).is_some());
        assert!(t.blocked_for(&b, "10.0.0.1".parse().unwrap()).is_none());
        t.fail(&b, ip);
        assert!(
            t.blocked_for(&b, ip).is_some(),
            "the address is over its limit"
        );
        t.succeed(&a);
        assert!(t.blocked_for(&a, "10.0.0.1".parse().unwrap()).is_none());
    }
}
