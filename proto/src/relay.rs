//! Node ↔ master messages (ALPN [`crate::ALPN_RELAY`], mutual TLS) and client ↔ master
//! discovery (ALPN [`crate::ALPN_DISCOVERY`]).
//!
//! A node opens one long-lived control stream to the master: `Hello`, `Register`, then
//! heartbeats, presence changes and text relays in both directions. Each relayed image gets
//! a stream of its own.

use serde::{Deserialize, Serialize};

use crate::envelope::{Sealed, WrappedKey};
use crate::error_code::ErrorCode;
use crate::group::SignedChange;
use crate::ids::{GroupId, NodeName, UserName};

/// A node's load as reported on each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Load {
    /// Connected, logged-in clients.
    pub clients: u32,
    /// Connections still handshaking or logging in.
    pub pending: u32,
    /// Messages accepted per second over the last interval.
    pub msgs_per_sec: u32,
    /// The node's connection cap.
    pub max_clients: u32,
}

/// An envelope on its way to the recipients connected to another node. Storage already holds
/// it: the relay is only the fast path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Relayed {
    /// Header, ciphertext, signature.
    pub sealed: Sealed,
    /// The recipients on the destination node, each with their wrapped key.
    #[cfg_attr(test, proptest(strategy = "crate::testing::wrapped_keys(3)"))]
    pub keys: Vec<WrappedKey>,
}

/// Node → master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum NodeToMaster {
    /// Joins (or rejoins) the cluster. The name must match the node's certificate.
    Register {
        /// The node's name.
        node: NodeName,
        /// Where clients reach it (`host:port`).
        #[cfg_attr(test, proptest(strategy = "crate::testing::text(21)"))]
        client_addr: String,
        /// Current load.
        load: Load,
        /// Everyone connected to it now (rebuilds the directory after a master restart).
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        users: Vec<UserName>,
    },
    /// Periodic load report; missing a few marks the node dead.
    Heartbeat(Load),
    /// These users logged in here.
    Online(#[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))] Vec<UserName>),
    /// These users left.
    Offline(#[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))] Vec<UserName>),
    /// Forward to the recipients' nodes.
    Relay(Relayed),
    /// The node is draining: stop sending it clients.
    Draining,
    /// Push this membership change to these users, wherever they are connected.
    Announce {
        /// Who should hear of it.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        users: Vec<UserName>,
        /// The signed change.
        change: SignedChange,
    },
    /// A group's log grew: tell these users' devices wherever they are connected.
    LogAppended {
        /// Members connected elsewhere.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        users: Vec<UserName>,
        /// The group.
        group: GroupId,
        /// The new entry's seq.
        seq: u64,
        /// The entry's `NodeToClient::Log` frame, forwarded as it is.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        frame: Vec<u8>,
    },
}

/// Master → node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum MasterToNode {
    /// Registration accepted.
    Registered {
        /// Heartbeat interval the master expects, in milliseconds.
        heartbeat_ms: u32,
    },
    /// Deliver to these recipients, who are connected to this node.
    Relay(Relayed),
    /// Something the node sent was refused.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Explanation.
        #[cfg_attr(test, proptest(strategy = "crate::testing::text(24)"))]
        message: String,
    },
    /// A membership change for these users, who are connected to this node.
    Announce {
        /// Who should hear of it.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        users: Vec<UserName>,
        /// The signed change.
        change: SignedChange,
    },
    /// Who is connected to *other* nodes. With `snapshot`, `online` replaces everything the
    /// node knew (sent after each registration); otherwise it is a change.
    Presence {
        /// Replace rather than update.
        snapshot: bool,
        /// Users now connected elsewhere.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        online: Vec<UserName>,
        /// Users no longer connected anywhere else.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        offline: Vec<UserName>,
    },
    /// The master dropped this many relays and announcements for this node because its queue
    /// was full (the node read too slowly). The messages are in storage: the node re-reads
    /// the queue of everyone connected to it.
    Missed {
        /// How many frames were dropped.
        frames: u64,
    },
    /// A group's log grew; these users, connected to this node, are members.
    LogAppended {
        /// Who should hear of it.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(3)"))]
        users: Vec<UserName>,
        /// The group.
        group: GroupId,
        /// The new entry's seq.
        seq: u64,
        /// The entry's `NodeToClient::Log` frame.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        frame: Vec<u8>,
    },
}

/// A node as the master sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct NodeStatus {
    /// Name.
    pub node: NodeName,
    /// Client-facing address.
    #[cfg_attr(test, proptest(strategy = "crate::testing::text(21)"))]
    pub client_addr: String,
    /// Last reported load.
    pub load: Load,
    /// Heartbeats arriving and not draining.
    pub healthy: bool,
    /// Milliseconds since the last heartbeat.
    pub last_seen_ms: u64,
}

/// Client (or operator) → master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ClientToMaster {
    /// Which node should I use?
    Discover,
    /// Every node and its health.
    Status,
}

/// Master → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum MasterToClient {
    /// Use this node.
    Node {
        /// Its name (the certificate's subject).
        node: NodeName,
        /// Where to connect.
        #[cfg_attr(test, proptest(strategy = "crate::testing::text(21)"))]
        addr: String,
    },
    /// No node is alive.
    NoService,
    /// Answer to `Status`.
    Status(#[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(3)"))] Vec<NodeStatus>),
    /// The request was refused.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Explanation.
        #[cfg_attr(test, proptest(strategy = "crate::testing::text(24)"))]
        message: String,
        /// When waiting helps (rate limits): milliseconds until a retry can succeed.
        retry_after_ms: Option<u32>,
    },
}

impl NodeToMaster {
    /// This message's variant name (safe to log: no secrets).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Register { .. } => "Register",
            Self::Heartbeat(_) => "Heartbeat",
            Self::Online(_) => "Online",
            Self::Offline(_) => "Offline",
            Self::Relay(_) => "Relay",
            Self::Draining => "Draining",
            Self::Announce { .. } => "Announce",
            Self::LogAppended { .. } => "LogAppended",
        }
    }
}

impl MasterToNode {
    /// This message's variant name (safe to log: no secrets).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "Registered",
            Self::Relay(_) => "Relay",
            Self::Error { .. } => "Error",
            Self::Announce { .. } => "Announce",
            Self::Presence { .. } => "Presence",
            Self::Missed { .. } => "Missed",
            Self::LogAppended { .. } => "LogAppended",
        }
    }
}
