//! Master configuration: everything `quip-master serve` reads from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::MasterError;

pub use quip_quic::RateLimit;

/// How a master runs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// UDP address to serve nodes and clients on (port 0 picks one).
    pub listen: SocketAddr,
    /// Directory holding `ca.pem`, `master.pem` and `master.key` (made by [`crate::init`]).
    /// The CA's private key (`ca.key`) is not needed to serve and may be kept elsewhere.
    pub dir: PathBuf,
    /// Heartbeat interval nodes are told to keep.
    pub heartbeat: Duration,
    /// A node silent for this long is dropped from discovery, its directory rows removed and
    /// its connection closed (it reconnects and registers again).
    pub dead_after: Duration,
    /// Most concurrent connections, nodes and clients together.
    pub max_connections: usize,
    /// Connection slots only nodes may use, so a crowd of discovery clients cannot keep a
    /// node from (re)registering.
    pub node_reserve: usize,
    /// Discovery requests per client address.
    pub discovery_per_ip: RateLimit,
    /// Discovery requests per connection (a client needs one per connect).
    pub discovery_per_conn: RateLimit,
    /// Most client addresses tracked by the per-address limiter (bounds its memory).
    pub max_tracked_addrs: usize,
    /// A discovery connection idle this long is closed.
    pub discovery_idle: Duration,
    /// Largest relayed image (ciphertext bytes).
    pub max_image_bytes: u64,
    /// Relay frames queued for one node before further relays to it are dropped (storage
    /// holds every message; the relay is only the fast path).
    pub relay_queue: usize,
}

impl MasterConfig {
    /// Defaults for a master serving on `listen` with its certificates in `dir`.
    pub fn new(listen: SocketAddr, dir: PathBuf) -> Self {
        Self {
            listen,
            dir,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            max_connections: 10_000,
            node_reserve: 256,
            discovery_per_ip: RateLimit {
                per_second: 50,
                burst: 200,
            },
            discovery_per_conn: RateLimit {
                per_second: 5,
                burst: 20,
            },
            max_tracked_addrs: 100_000,
            discovery_idle: Duration::from_secs(30),
            max_image_bytes: quip_proto::limits::DEFAULT_MAX_IMAGE,
            relay_queue: 4096,
        }
    }

    /// Checks the values fit together.
    pub fn validate(&self) -> Result<(), MasterError> {
        let checks = [
            (self.heartbeat.is_zero(), "heartbeat must be positive"),
            (
                self.heartbeat.as_millis() > u128::from(u32::MAX),
                "heartbeat is too long",
            ),
            (
                self.dead_after <= self.heartbeat,
                "dead_after must be longer than the heartbeat interval",
            ),
            (
                self.max_connections == 0,
                "max_connections must be positive",
            ),
            (
                self.discovery_per_ip.burst == 0 || self.discovery_per_conn.burst == 0,
                "discovery bursts must be positive",
            ),
            (
                self.max_tracked_addrs == 0,
                "max_tracked_addrs must be positive",
            ),
            (self.relay_queue == 0, "relay_queue must be positive"),
        ];
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(MasterError::InvalidConfig(why)),
            None => Ok(()),
        }
    }

    /// Most discovery (and stray client) connections at once.
    pub(crate) fn max_client_connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.node_reserve)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let config = MasterConfig::new("127.0.0.1:0".parse().unwrap(), PathBuf::from("x"));
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.dead_after = bad.heartbeat;
        assert!(matches!(
            bad.validate(),
            Err(MasterError::InvalidConfig(why)) if why.contains("dead_after")
        ));
        let mut bad = config;
        bad.relay_queue = 0;
        assert!(bad.validate().is_err());
    }
}
