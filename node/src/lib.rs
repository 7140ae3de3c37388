//! `quip-node`: the client-facing QUIC server. It authenticates users, keeps their sessions,
//! stores every message in its recipients' durable queues before acknowledging it, and pushes
//! it to whoever is online. It handles ciphertext only: this crate does not link any
//! end-to-end crypto.
//!
//! [`start`] runs a node in-process (tests, testnet); `main.rs` only parses flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use quip_quic::{Certified, ClusterCa, Limits, names};
use quip_storage::Storage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod auth;
mod config;
mod handler;
mod log;
mod master;
mod queue;
mod registry;
mod session;
mod sweep;

pub use config::{NodeConfig, NodeTls};
pub use master::MasterLink;

/// Software name sent in hellos.
pub const AGENT: &str = concat!("quip-node/", env!("CARGO_PKG_VERSION"));

/// Starting a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Certificates could not be made or loaded.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] quip_quic::TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// State shared by every session of a node.
pub(crate) struct Node<S: Storage> {
    pub(crate) config: NodeConfig,
    pub(crate) storage: Arc<S>,
    pub(crate) registry: Arc<registry::Registry>,
    pub(crate) auth: auth::Auth,
    pub(crate) writer: queue::Writer,
    /// The link to the master, if this node is part of a cluster.
    pub(crate) uplink: Option<master::Uplink>,
    /// Messages accepted since the last load report.
    pub(crate) accepted: Arc<master::Counter>,
    /// Names known to exist (accounts are never deleted), so routing a message does not cost
    /// a storage read per message.
    pub(crate) known_users: std::sync::Mutex<std::collections::HashSet<quip_proto::ids::UserName>>,
    /// Users connected to other nodes, as the master reports them.
    pub(crate) elsewhere: std::sync::Mutex<std::collections::HashSet<quip_proto::ids::UserName>>,
    /// Open client connections, logged in or not.
    pub(crate) active: Arc<AtomicUsize>,
    /// Open connections per client address.
    pub(crate) per_addr: quip_quic::PerAddress,
    /// Transport limits of a logged-in client connection (a new one starts smaller).
    pub(crate) limits: Limits,
    /// How fast each user may put others into groups.
    pub(crate) placements: handler::group::Placements,
    /// MLS groups' public state, one lock per group.
    pub(crate) groups: log::Groups,
}

/// Most names kept in [`Node::known_users`] before it starts over.
const KNOWN_USERS: usize = 100_000;

impl<S: Storage> Node<S> {
    /// Pushes a membership change to the listed users connected here; returns the others.
    pub(crate) fn push_group_change(
        &self,
        users: impl IntoIterator<Item = quip_proto::ids::UserName>,
        change: &quip_proto::SignedChange,
    ) -> Vec<quip_proto::ids::UserName> {
        let frame = quip_proto::frame::encode(&quip_proto::NodeToClient::GroupChanged {
            change: change.clone(),
        })
        .map(bytes::Bytes::from);
        let Ok(frame) = frame else {
            return Vec::new();
        };
        users
            .into_iter()
            .filter(|user| {
                !self
                    .registry
                    .with_sessions(user, |s| s.push(registry::Outgoing::Frame(frame.clone())))
            })
            .collect()
    }

    /// Whether `user` is connected here or (as the master last said) to another node.
    pub(crate) fn is_online(&self, user: &quip_proto::ids::UserName) -> bool {
        self.registry.is_online(user)
            || self
                .elsewhere
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(user)
    }

    /// `Ok` if `user` has an account; `UnknownUser` otherwise.
    pub(crate) async fn require_user(
        &self,
        user: &quip_proto::ids::UserName,
    ) -> Result<(), session::Refusal> {
        let cached = || self.known_users.lock().unwrap_or_else(|e| e.into_inner());
        if cached().contains(user) {
            return Ok(());
        }
        match self.storage.user(user).await {
            Ok(Some(_)) => {
                let mut known = cached();
                if known.len() >= KNOWN_USERS {
                    known.clear();
                }
                known.insert(user.clone());
                Ok(())
            }
            Ok(None) => Err(session::Refusal::new(
                quip_proto::ErrorCode::UnknownUser,
                format!("no user named {user}"),
            )),
            Err(err) => Err(session::Refusal::internal(err)),
        }
    }

    /// Tells the master (if any) that `user` is now connected here, or no longer.
    pub(crate) fn presence(&self, user: &quip_proto::ids::UserName, online: bool) {
        if let Some(uplink) = &self.uplink {
            uplink.send(if online {
                master::ToMaster::Online(user.clone())
            } else {
                master::ToMaster::Offline(user.clone())
            });
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    addr: SocketAddr,
    ca_cert: PathBuf,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    active: Arc<AtomicUsize>,
    registry: Arc<registry::Registry>,
    endpoint: quinn::Endpoint,
    background: Vec<JoinHandle<()>>,
    bcrypt_checks: Arc<std::sync::atomic::AtomicU64>,
}

impl NodeHandle {
    /// Stops the node the hard way, as a crash would: every connection is cut at once, no
    /// client is told to reconnect, the master is not told it is leaving. Storage keeps what
    /// was acknowledged.
    pub fn kill(self) {
        self.endpoint
            .close(session::close::KILLED.into(), b"node killed");
        self.task.abort();
        self.background.iter().for_each(JoinHandle::abort);
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate clients should trust (`--ca`).
    pub fn ca_cert_path(&self) -> &std::path::Path {
        &self.ca_cert
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Users logged in here.
    pub fn online_users(&self) -> usize {
        self.registry.online_users()
    }

    /// Bytes of answers and deliveries waiting for slow clients, over all sessions.
    pub fn buffered_bytes(&self) -> usize {
        self.registry.buffered()
    }

    /// Graceful stop: refuse new connections, tell every client to reconnect elsewhere, wait
    /// for them (up to the drain timeout), close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the node stops (after a signal-triggered shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A sender that triggers the graceful stop (for signal handlers).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

fn identity(config: &NodeConfig) -> Result<(Certified, PathBuf), NodeError> {
    match &config.tls {
        NodeTls::Files { cert, key, ca } => Ok((Certified::load(cert, key)?, ca.clone())),
        NodeTls::SelfManaged => {
            let ca_dir = config.data_dir.join("ca");
            let ca = ClusterCa::load_or_create(&ca_dir)?;
            let stem = format!("node-{}", config.name);
            let certified = match Certified::load_from(&config.data_dir, &stem) {
                Ok(certified) => certified,
                Err(_) => {
                    let certified = ca.issue(&[
                        config.name.as_str(),
                        names::NODE,
                        "localhost",
                        "127.0.0.1",
                        "::1",
                    ])?;
                    certified.save(&config.data_dir, &stem)?;
                    certified
                }
            };
            Ok((certified, ClusterCa::cert_path(&ca_dir)))
        }
    }
}

/// Starts a node: binds its endpoint and serves until [`NodeHandle::shutdown`].
pub async fn start<S: Storage>(
    config: NodeConfig,
    storage: Arc<S>,
) -> Result<NodeHandle, NodeError> {
    let (certified, ca_cert) = identity(&config)?;
    let limits = Limits::client();
    // Until it logs in, a connection has its control stream only and a small receive window:
    // a client that never logs in can make the node buffer almost nothing.
    let prelogin = Limits {
        max_bi_streams: 1,
        conn_window: session::PRELOGIN_WINDOW,
        ..limits.clone()
    };
    let server = quip_quic::server_config(&certified, &[quip_proto::ALPN_CLIENT], None, &prelogin)?;
    let endpoint =
        quip_quic::server_endpoint(config.listen, server, &limits).map_err(|source| {
            NodeError::Bind {
                addr: config.listen,
                source,
            }
        })?;
    let addr = endpoint.local_addr().map_err(|source| NodeError::Bind {
        addr: config.listen,
        source,
    })?;
    let registry = Arc::new(registry::Registry::default());
    let accepted = Arc::new(master::Counter::default());
    let (uplink, uplink_rx, connected) = master::uplink();
    let uplink = config.master.as_ref().map(|_| uplink);
    let active = Arc::new(AtomicUsize::new(0));
    let node = Arc::new(Node {
        active: active.clone(),
        auth: auth::Auth::new(&config),
        placements: handler::group::Placements::new(&config),
        groups: log::Groups::default(),
        writer: queue::Writer::spawn(
            storage.clone(),
            registry.clone(),
            uplink.clone(),
            accepted.clone(),
            config.queue_quota,
        ),
        registry: registry.clone(),
        storage,
        uplink,
        accepted,
        known_users: Default::default(),
        elsewhere: Default::default(),
        per_addr: quip_quic::PerAddress::new(config.max_connections_per_addr),
        limits,
        config,
    });
    let (shutdown, stop) = watch::channel(false);
    let mut background = vec![tokio::spawn(janitor(node.clone(), stop.clone()))];
    background.push(tokio::spawn(sweep::run(node.clone(), stop.clone())));
    if let Some(link) = node.config.master.clone() {
        let advertised = node.config.advertise.unwrap_or(addr);
        background.extend(master::spawn(
            node.clone(),
            link,
            advertised,
            uplink_rx,
            connected,
            stop.clone(),
        ));
    }
    let bcrypt_checks = node.auth.hasher.checks.clone();
    let task = tokio::spawn(accept_loop(node, endpoint.clone(), stop, active.clone()));
    tracing::info!(%addr, "node listening");
    Ok(NodeHandle {
        addr,
        ca_cert,
        shutdown,
        task,
        active,
        registry,
        endpoint,
        background,
        bcrypt_checks,
    })
}

/// Resolves once the node starts shutting down (holds no borrow of the channel across the
/// await, so the future stays `Send`).
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// How often expired sessions are purged.
const JANITOR_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Purges expired sessions until the node stops (messages and uploads: [`sweep`]).
async fn janitor<S: Storage>(node: Arc<Node<S>>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(JANITOR_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping(&mut stop) => return,
        }
        let now = handler::now_ms();
        if let Err(err) = node.storage.purge_sessions(now).await {
            tracing::warn!(error = %err, "cannot purge sessions");
        }
    }
}

/// Decrements the connection count when a session ends, however it ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop<S: Storage>(
    node: Arc<Node<S>>,
    endpoint: quinn::Endpoint,
    mut stop: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    let next_id = AtomicU64::new(1);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stopping(&mut stop) => None,
        };
        let Some(incoming) = incoming else { break };
        if active.load(Ordering::Relaxed) >= node.config.max_connections {
            tracing::warn!("connection cap reached; refusing");
            incoming.refuse();
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let guard = Active(active.clone());
        let seat = node.per_addr.enter(incoming.remote_address().ip());
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (node, stop) = (node.clone(), stop.clone());
        sessions.spawn(async move {
            let _guard = guard;
            session::serve(node, incoming, id, seat, stop).await;
        });
        // Reap finished sessions so the set does not grow with history.
        while sessions.try_join_next().is_some() {}
    }
    tracing::info!(sessions = sessions.len(), "draining");
    endpoint.set_server_config(None);
    let drained = tokio::time::timeout(
        node.config.drain_timeout + std::time::Duration::from_secs(1),
        async { while sessions.join_next().await.is_some() {} },
    )
    .await;
    if drained.is_err() {
        sessions.abort_all();
    }
    endpoint.close(session::close::DRAINING.into(), b"node shutting down");
    endpoint.wait_idle().await;
    tracing::info!("node stopped");
}
