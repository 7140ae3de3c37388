//! Node configuration: everything `quip-node` reads from flags and the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quip_proto::ids::NodeName;

/// Where the node's TLS identity comes from.
#[derive(Debug, Clone)]
pub enum NodeTls {
    /// A standalone node: a CA and a node certificate are created in the data directory on
    /// first start (`ca.pem` is what clients pass as `--ca`, or pin on first use).
    SelfManaged,
    /// Files issued by the cluster CA (`quip-master issue-node`).
    Files {
        /// Certificate chain (PEM), leaf first.
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
        /// The cluster CA certificate (PEM).
        ca: PathBuf,
    },
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name (its certificate's subject).
    pub name: NodeName,
    /// UDP address to serve clients on (port 0 picks one).
    pub listen: SocketAddr,
    /// Where the node keeps its certificates (and the SQLite database by default).
    pub data_dir: PathBuf,
    /// TLS identity.
    pub tls: NodeTls,
    /// Most concurrent client connections; more are refused (clients go elsewhere).
    pub max_connections: usize,
    /// Largest image (ciphertext bytes) accepted.
    pub max_image_bytes: u64,
    /// bcrypt cost for login secrets (≥ 12 outside tests).
    pub bcrypt_cost: u32,
    /// Most bcrypt computations running at once.
    pub bcrypt_parallelism: usize,
    /// How long a session token stays valid.
    pub token_ttl: Duration,
    /// How long a graceful shutdown waits for clients to leave.
    pub drain_timeout: Duration,
    /// Password attempts per account with no wait; after them each attempt makes the next
    /// wait [`Self::login_delay_base`], doubling per attempt (kept in storage, for every node).
    pub max_failures_per_user: u32,
    /// Failed logins per address within the window before it is throttled.
    pub max_failures_per_addr: u32,
    /// Length of the per-address throttling window.
    pub throttle_window: Duration,
    /// The master to register with; `None` serves alone.
    pub master: Option<crate::MasterLink>,
    /// The address clients are told to use (default: the bound address).
    pub advertise: Option<SocketAddr>,
    /// Most open connections from one client address (a NAT shares one address; raise it
    /// for large ones).
    pub max_connections_per_addr: usize,
    /// Most sessions one account may have open on this node at once.
    pub max_sessions_per_user: usize,
    /// A connection that has not logged in this long after its hello is closed.
    pub login_timeout: Duration,
    /// How long one frame may take from its first byte to its last before the connection is
    /// closed (a peer cannot hold a half-sent frame open).
    pub frame_deadline: Duration,
    /// An image upload that sends nothing for this long is abandoned and its blob deleted.
    pub upload_idle: Duration,
    /// Requests per connection before login (signup, login, resume, ping).
    pub requests_before_login: quip_quic::RateLimit,
    /// Requests per connection once logged in (sends, acks and the rest together).
    pub requests_after_login: quip_quic::RateLimit,
    /// Bytes of deliveries and answers waiting for one slow client before its pushes are
    /// dropped (it re-reads them from storage once it catches up).
    pub outbox_bytes: usize,
    /// The first wait between password attempts once an account's free attempts are used.
    pub login_delay_base: Duration,
    /// The longest wait between password attempts on one account.
    pub login_delay_max: Duration,
    /// Signups one address may make at once; then one more per
    /// [`Self::signup_window`] / this.
    pub signups_per_addr: u32,
    /// The window of [`Self::signups_per_addr`].
    pub signup_window: Duration,
    /// Most times one user may put others into groups (a group created with members, an
    /// `Add`) in a burst; the allowance refills over [`Self::group_placement_window`].
    pub max_group_placements: u32,
    /// How long [`Self::max_group_placements`] takes to refill completely.
    pub group_placement_window: Duration,
    /// What may wait unread in one recipient's queue, in all and from one sender.
    pub queue_quota: quip_storage::QueueQuota,
    /// Bytes of messages one MLS group's log may hold that some member device has not yet
    /// read; past it, new application messages to the group are refused (`QuotaExceeded`).
    pub max_group_log_bytes: u64,
    /// A queued message nobody acknowledged within this long expires (its sender is told).
    pub retention: Duration,
    /// An image upload unfinished for this long was abandoned; its blob is deleted.
    pub abandoned_upload: Duration,
    /// How often the sweep looks for expired messages and abandoned uploads.
    pub sweep_every: Duration,
}

impl NodeConfig {
    /// Defaults for a node called `name` serving on `listen` with data in `data_dir`.
    pub fn new(name: NodeName, listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            name,
            listen,
            data_dir,
            tls: NodeTls::SelfManaged,
            max_connections: 50_000,
            max_image_bytes: quip_proto::limits::DEFAULT_MAX_IMAGE,
            bcrypt_cost: 12,
            bcrypt_parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
            token_ttl: Duration::from_secs(30 * 86_400),
            drain_timeout: Duration::from_secs(5),
            max_failures_per_user: 5,
            max_failures_per_addr: 20,
            throttle_window: Duration::from_secs(600),
            master: None,
            advertise: None,
            max_connections_per_addr: 100,
            max_sessions_per_user: 8,
            login_timeout: Duration::from_secs(30),
            frame_deadline: Duration::from_secs(30),
            upload_idle: Duration::from_secs(30),
            requests_before_login: quip_quic::RateLimit {
                per_second: 2,
                burst: 10,
            },
            requests_after_login: quip_quic::RateLimit {
                per_second: 5_000,
                burst: 20_000,
            },
            outbox_bytes: 2 * 1024 * 1024,
            login_delay_base: Duration::from_secs(1),
            login_delay_max: Duration::from_secs(600),
            signups_per_addr: 5,
            signup_window: Duration::from_secs(600),
            max_group_placements: 30,
            group_placement_window: Duration::from_secs(600),
            queue_quota: quip_storage::QueueQuota {
                max_messages: 10_000,
                max_bytes: 512 * 1024 * 1024,
                max_messages_per_sender: 2_000,
                max_bytes_per_sender: 128 * 1024 * 1024,
            },
            max_group_log_bytes: 256 * 1024 * 1024,
            retention: Duration::from_secs(30 * 86_400),
            abandoned_upload: Duration::from_secs(10 * 60),
            sweep_every: Duration::from_secs(60),
        }
    }
}
