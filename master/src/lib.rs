//! `quip-master`: the cluster CA, the node registry, load-balancing discovery, the user→node
//! directory and the relay between nodes. It handles ciphertext only and links no
//! end-to-end crypto.
//!
//! [`start`] runs a master in-process (tests, testnet); `main.rs` only parses flags.
//!
//! ## One endpoint, three ALPNs
//!
//! | ALPN | peer | what happens |
//! |---|---|---|
//! | `quip-relay/1` | a node, with a certificate issued by the cluster CA (mutual TLS) | hello, `Register` (the name must be one the certificate carries), then heartbeats, presence and relays; a stream per relayed image |
//! | `quip-discovery/1` | a client or an operator | hello, then any number of `Discover` / `Status` requests, rate-limited per connection and per address |
//! | `quip/1` | a client that took the master for a node | hello, one `NodeToClient::Error { code: WrongService }` with [`WRONG_SERVICE_REASON`], then the connection closes with [`close::WRONG_SERVICE`] and the same reason |
//!
//! ## Node link
//!
//! The node's first frame after the hello must be `Register`; anything else is answered
//! with `Error { NotRegistered }` and the master waits for a `Register` (10 s at most). A name
//! the certificate does not carry gets `Error { UnknownNode }` and the connection closes. The
//! answer is `Registered { heartbeat_ms }`. A node silent for `dead_after` is dropped from
//! discovery, its directory rows removed and its connection closed with [`close::DEAD`]:
//! it reconnects and registers again, exactly as after a master restart (the `users` of a
//! `Register` rebuild its directory rows). A newer connection registering the same name
//! replaces the older one, which is closed with [`close::REPLACED`].
//!
//! A text relay (`NodeToMaster::Relay`) goes out as one `MasterToNode::Relay` per
//! destination node carrying only that node's recipients' keys; the origin gets nothing back,
//! and recipients connected nowhere else are dropped (storage holds their copy). An image
//! relay is a bi stream opened by the node: `StreamOpen::RelayImage`, then `Chunk` frames
//! until the node finishes it. The master opens one stream per destination node, sends the
//! same opening with that node's keys and pipes the chunks one at a time (never the whole
//! image), then finishes. It writes nothing back to the origin on that stream; when it will
//! not relay the image it stops reading with a [`stream_code`].
//!
//! A group announcement (`NodeToMaster::Announce { users, change }`) goes out the same way:
//! one `MasterToNode::Announce` per destination node listing only that node's users, never
//! back to the origin; users connected nowhere else are dropped (their clients re-verify the
//! chain when they next use the group). More than `MAX_GROUP_MEMBERS` users, or a change
//! over its limits, is answered with `Error { TooLarge }`.
//!
//! ## Presence
//!
//! Each node learns who is connected to the *other* nodes. Right after `Registered` it gets
//! `Presence { snapshot: true, online }` (every user on another node, once each; split over
//! several frames if need be, only the first a snapshot). Then, whenever users arrive on or
//! leave another node (`Online`, `Offline`, a registration, a node closing, dying or being
//! replaced), each node whose view changes gets `Presence { snapshot: false, online,
//! offline }`: `offline` lists users now connected to no node but the receiver. Changes are
//! queued in the order the directory changed; a node whose queue is full skips them and gets
//! a fresh snapshot once it has room.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use quip_proto::relay::NodeStatus;
use quip_quic::{ClusterCa, Limits};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod certs;
mod config;
mod directory;
mod discovery;
mod error;
mod image;
mod listener;
mod presence;
mod query;
mod registry;
mod relay;
mod session;

pub use certs::{MASTER_STEM, init, init_with_hosts, issue_node, split_host_port};
pub use config::{MasterConfig, RateLimit};
pub use error::MasterError;
pub use image::stream_code;
pub use query::{format_status, query_status};
pub use session::{WRONG_SERVICE_REASON, close};

/// Software name sent in hellos.
pub const AGENT: &str = concat!("quip-master/", env!("CARGO_PKG_VERSION"));

/// State shared by every connection of a master.
pub(crate) struct Master {
    pub(crate) config: MasterConfig,
    pub(crate) registry: registry::Registry<relay::NodeLink>,
    pub(crate) limiter: quip_quic::KeyedBudget<std::net::IpAddr>,
    /// Open discovery (and stray client) connections.
    pub(crate) clients: Arc<AtomicUsize>,
}

/// A running master. Dropping the handle stops it as [`MasterHandle::shutdown`] would,
/// without waiting.
#[derive(Debug)]
pub struct MasterHandle {
    addr: SocketAddr,
    ca_cert: PathBuf,
    master: Arc<Master>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    active: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl MasterHandle {
    /// Where nodes and clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster CA certificate clients and nodes trust (`--ca`).
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert
    }

    /// Every registered node, sorted by name (what `Status` answers).
    pub fn status(&self) -> Vec<NodeStatus> {
        self.master.registry.status(Instant::now())
    }

    /// Users online on any node, each counted once.
    pub fn online_users(&self) -> usize {
        self.master.registry.users()
    }

    /// Open connections, nodes and clients together.
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Graceful stop: refuse new connections, close every connection with
    /// [`close::SHUTDOWN`] (nodes keep serving and re-register when a master is back), wait
    /// for the sessions to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the master stops (after a signal-triggered shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A sender that triggers the graceful stop (for signal handlers).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts a master: loads its certificates from `config.dir`, binds the endpoint and serves
/// until [`MasterHandle::shutdown`].
pub async fn start(config: MasterConfig) -> Result<MasterHandle, MasterError> {
    config.validate()?;
    let (identity, ca) = certs::load_identity(&config.dir)?;
    // One transport configuration for all three ALPNs: QUIC sends its transport parameters
    // in the same flight that settles the ALPN, so they cannot differ per ALPN. The relay
    // limits fit nodes; discovery sessions refuse any stream beyond their control stream.
    let limits = Limits::relay();
    let alpns = [
        quip_proto::ALPN_RELAY,
        quip_proto::ALPN_DISCOVERY,
        quip_proto::ALPN_CLIENT,
    ];
    let server = quip_quic::server_config(&identity, &alpns, Some(&ca), &limits)?;
    let bind = |source| MasterError::Bind {
        addr: config.listen,
        source,
    };
    let endpoint = quip_quic::server_endpoint(config.listen, server, &limits).map_err(bind)?;
    let addr = endpoint.local_addr().map_err(bind)?;
    let ca_cert = ClusterCa::cert_path(&config.dir);
    let master = Arc::new(Master {
        registry: registry::Registry::new(config.dead_after),
        limiter: quip_quic::KeyedBudget::new(config.discovery_per_ip, config.max_tracked_addrs),
        clients: Arc::default(),
        config,
    });
    let (shutdown, stop) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(listener::accept_loop(
        master.clone(),
        endpoint,
        stop,
        active.clone(),
    ));
    tracing::info!(%addr, "master listening");
    Ok(MasterHandle {
        addr,
        ca_cert,
        master,
        shutdown,
        task,
        active,
    })
}
