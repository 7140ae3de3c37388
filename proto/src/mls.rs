//! What travels for MLS (`quip/2`): devices, key packages, group logs. MLS messages
//! themselves (`MlsMessage`, TLS-encoded by openmls) are opaque bytes here: the node reads
//! them with `quip-mls`, the wire only frames them.

use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, DeviceId, GroupId, GroupName, MsgId, UserName};

/// A device of the caller, as the node lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DeviceInfo {
    /// The device.
    pub device: DeviceId,
    /// A session is using it now (on this node or, as far as this node knows, another).
    pub online: bool,
    /// When it enrolled, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Whether its encrypted state is backed up on the server (so another directory can take
    /// it over).
    pub backed_up: bool,
}

/// A key package a device publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KeyPackageUpload {
    /// Its MLS reference (hash), by which a commit that uses it is recognised.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
    pub reference: Vec<u8>,
    /// The key package (`MlsMessage`).
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub data: Vec<u8>,
    /// May be handed out more than once (the device's fallback when the others are gone).
    pub last_resort: bool,
}

/// A key package the node handed out for one device of a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ClaimedKeyPackage {
    /// Whose device.
    pub device: DeviceId,
    /// The key package (`MlsMessage`).
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub data: Vec<u8>,
}

/// What an entry of a group's log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum LogKind {
    /// An application message (ciphertext only the members read).
    Application,
    /// A proposal (a member leaving, say), in the clear for the node to check.
    Proposal,
    /// A commit: the group's next epoch.
    Commit,
}

/// One entry of a group's log, as delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LogEntry {
    /// Position in the group's log: consecutive, from 1.
    pub seq: u64,
    /// The sender's id for it.
    pub id: MsgId,
    /// Who sent it (the node checked the session).
    pub sender: UserName,
    /// From which device.
    pub device: DeviceId,
    /// What it is.
    pub kind: LogKind,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// The MLS message.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub body: Vec<u8>,
    /// An image's encrypted bytes, fetched on a stream of their own (`FetchBlob`), and their
    /// length.
    pub blob: Option<(BlobId, u64)>,
    /// When the node stored it, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A group the caller's device is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct MlsGroupSummary {
    /// The group.
    pub id: GroupId,
    /// Its name (from its policy).
    pub name: GroupName,
    /// Its epoch.
    pub epoch: u64,
}
