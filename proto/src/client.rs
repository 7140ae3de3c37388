//! Client ↔ node messages (ALPN [`crate::ALPN_CLIENT`]).
//!
//! The client opens one bidirectional *control* stream and sends [`Hello`] first. Requests
//! carry a `req` id the node echoes in its answer; pushes (`Deliver`, `Presence`,
//! `GroupChanged`, `Reconnect`, `Expired`) carry none. Every image travels on its own stream
//! (see [`crate::stream`]).

use serde::{Deserialize, Serialize};

use crate::envelope::{Delivery, Envelope};
use crate::error_code::ErrorCode;
use crate::group::{GroupCursor, GroupSummary, MemberRole, SignedChange};
use crate::ids::{BlobId, DeviceId, GroupId, MsgId, NodeName, SessionToken, UserName};
use crate::mls::{ClaimedKeyPackage, DeviceInfo, KeyPackageUpload, LogEntry, MlsGroupSummary};

/// Request id chosen by the client, echoed by the node.
pub type ReqId = u32;

/// First frame on every connection, in both directions of the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Hello {
    /// Protocol version spoken; see [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// Free text naming the software (`quip/0.1.0`), for logs.
    #[cfg_attr(test, proptest(strategy = "crate::testing::text(16)"))]
    pub agent: String,
}

/// A user's two public keys, SPKI DER.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PublicKeys {
    /// RSA-OAEP-SHA256 key-wrapping key.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
    pub encryption: Vec<u8>,
    /// RSA-PSS-SHA256 signing key.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
    pub signing: Vec<u8>,
}

/// A user and whether they are connected anywhere in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Presence {
    /// The user.
    pub user: UserName,
    /// Connected now.
    pub online: bool,
}

/// A member of a group and their role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupMember {
    /// The member.
    pub user: UserName,
    /// Their role.
    pub role: MemberRole,
}

/// Client → node, on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ClientToNode {
    /// Creates an account and logs in.
    Signup {
        /// Request id.
        req: ReqId,
        /// Wanted name (case-insensitive).
        user: UserName,
        /// The login secret the client derived from the password (never the password).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        secret: Vec<u8>,
        /// The new user's public keys.
        keys: PublicKeys,
        /// The private keys encrypted under a secret the server never sees.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        backup: Vec<u8>,
    },
    /// Logs in with the login secret.
    Login {
        /// Request id.
        req: ReqId,
        /// Account name.
        user: UserName,
        /// The login secret.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        secret: Vec<u8>,
    },
    /// Resumes a session with a token from an earlier login; no password hashing.
    Resume {
        /// Request id.
        req: ReqId,
        /// The token.
        token: SessionToken,
    },
    /// Ends the session and invalidates its token.
    Logout {
        /// Request id.
        req: ReqId,
    },
    /// Asks for one page of users and their presence, by name.
    ListUsers {
        /// Request id.
        req: ReqId,
        /// Start after this name (`None`: from the first).
        after: Option<UserName>,
        /// Most users wanted; the node caps it at [`crate::limits::MAX_LIST_PAGE`].
        limit: u32,
    },
    /// Asks for a user's public keys.
    FetchKeys {
        /// Request id.
        req: ReqId,
        /// Whose keys.
        user: UserName,
    },
    /// Replaces the caller's public keys and backup (key rotation).
    ReplaceKeys {
        /// Request id.
        req: ReqId,
        /// New public keys.
        keys: PublicKeys,
        /// New encrypted backup.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        backup: Vec<u8>,
    },
    /// Submits an envelope; answered by `Stored` once it is durable for every recipient.
    Send {
        /// Request id.
        req: ReqId,
        /// The envelope.
        envelope: Envelope,
    },
    /// Acknowledges deliveries: they leave the caller's queue.
    Ack {
        /// The acknowledged messages.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(4)"))]
        ids: Vec<MsgId>,
    },
    /// Creates a group from a signed genesis.
    CreateGroup {
        /// Request id.
        req: ReqId,
        /// The genesis (epoch 0).
        genesis: SignedChange,
    },
    /// Applies a signed membership change.
    ChangeGroup {
        /// Request id.
        req: ReqId,
        /// The change.
        change: SignedChange,
    },
    /// Lists one page of the caller's groups, by name then id.
    ListGroups {
        /// Request id.
        req: ReqId,
        /// Start after this group (`None`: from the first).
        after: Option<GroupCursor>,
        /// Most groups wanted; the node caps it at [`crate::limits::MAX_LIST_PAGE`].
        limit: u32,
    },
    /// Asks for a group's members and one page of its signed chain.
    GroupInfo {
        /// Request id.
        req: ReqId,
        /// The group.
        group: GroupId,
        /// The first link wanted (0: from the genesis).
        from_epoch: u64,
    },
    /// Asks for a blob (an image) to be streamed on a new stream.
    FetchBlob {
        /// Request id.
        req: ReqId,
        /// The message that refers to the blob (must be queued for the caller).
        msg: MsgId,
    },
    /// Keep-alive at the application level; answered by `Pong`.
    Ping {
        /// Request id.
        req: ReqId,
    },
    /// Enrolls a new device of the caller and makes it this session's device. The node checks
    /// the credential against the caller's account key.
    EnrollDevice {
        /// Request id.
        req: ReqId,
        /// The new device's id (random, unique per user).
        device: DeviceId,
        /// Its credential (`quip-mls` `DeviceCredential`, encoded).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
        credential: Vec<u8>,
        /// Its MLS signature public key (Ed25519).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        signature_key: Vec<u8>,
    },
    /// Makes an enrolled device this session's device (one session per device at a time).
    UseDevice {
        /// Request id.
        req: ReqId,
        /// The device.
        device: DeviceId,
    },
    /// Lists the caller's devices.
    ListDevices {
        /// Request id.
        req: ReqId,
    },
    /// Removes one of the caller's devices (its key packages and backed-up state go too).
    RemoveDevice {
        /// Request id.
        req: ReqId,
        /// The device.
        device: DeviceId,
    },
    /// Stores key packages of this session's device.
    PublishKeyPackages {
        /// Request id.
        req: ReqId,
        /// At most [`crate::limits::MAX_KEY_PACKAGE_UPLOAD`].
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        packages: Vec<KeyPackageUpload>,
    },
    /// Takes one key package per device of `user` (each handed out once, but a last-resort
    /// one), to add them to a group.
    ClaimKeyPackages {
        /// Request id.
        req: ReqId,
        /// Whose.
        user: UserName,
    },
    /// Creates an MLS group with this session's device alone in it.
    CreateMlsGroup {
        /// Request id.
        req: ReqId,
        /// The group's id (the MLS group id).
        group: GroupId,
        /// Signed group info at epoch 0 (`MlsMessage`).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
        group_info: Vec<u8>,
        /// The ratchet tree (one leaf).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
        ratchet_tree: Vec<u8>,
    },
    /// Submits a proposal or commit; a commit carries the group info of the epoch it leads
    /// to and, if it adds devices, their Welcome. Answered by `Appended`, or `StaleEpoch` when
    /// another commit won the epoch (catch up, then retry).
    Handshake {
        /// Request id.
        req: ReqId,
        /// The group.
        group: GroupId,
        /// The sender's id for it.
        id: MsgId,
        /// The proposal or commit (`MlsMessage`, a public message).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
        message: Vec<u8>,
        /// For a commit: the new epoch's signed group info.
        #[cfg_attr(
            test,
            proptest(strategy = "proptest::option::of(crate::testing::bytes(32))")
        )]
        group_info: Option<Vec<u8>>,
        /// For a commit that adds devices: their Welcome (with the ratchet tree).
        #[cfg_attr(
            test,
            proptest(strategy = "proptest::option::of(crate::testing::bytes(32))")
        )]
        welcome: Option<Vec<u8>>,
    },
    /// Posts an application message to a group's log; answered by `Appended`.
    Post {
        /// Request id.
        req: ReqId,
        /// The group.
        group: GroupId,
        /// The sender's id for it (a retry with the same id is stored once).
        id: MsgId,
        /// The MLS application message.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
        message: Vec<u8>,
        /// An image uploaded before on its own stream, that this message's key opens.
        blob: Option<BlobId>,
    },
    /// Asks for what a device joining a group by itself needs: the group info and one page
    /// of the ratchet tree.
    GroupState {
        /// Request id.
        req: ReqId,
        /// The group.
        group: GroupId,
        /// Byte offset into the serialized tree.
        offset: u64,
    },
    /// Lists one page of the groups this session's device is in, by id.
    ListMlsGroups {
        /// Request id.
        req: ReqId,
        /// Start after this group.
        after: Option<GroupId>,
        /// Most wanted; the node caps it at [`crate::limits::MAX_LIST_PAGE`].
        limit: u32,
    },
    /// Writes entries of this session's device's encrypted state backup (`None` deletes):
    /// what another directory needs to take the device over. At most
    /// [`crate::limits::MAX_STATE_UPLOAD`] bytes of values per request.
    PutDeviceState {
        /// Request id.
        req: ReqId,
        /// (entry id, sealed value or `None`).
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Reads one page of the state backup of one of the caller's devices that no session is
    /// using (to take it over).
    GetDeviceState {
        /// Request id.
        req: ReqId,
        /// The device.
        device: DeviceId,
        /// Start after this entry id.
        #[cfg_attr(
            test,
            proptest(strategy = "proptest::option::of(crate::testing::bytes(32))")
        )]
        after: Option<Vec<u8>>,
    },
    /// Acknowledges log entries (every entry of each group up to the seq given) and
    /// Welcomes: they are not delivered to this device again.
    AckLog {
        /// (group, highest seq handled).
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        entries: Vec<(GroupId, u64)>,
        /// Welcome ids handled.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        welcomes: Vec<u64>,
    },
}

/// Node → client, on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum NodeToClient {
    /// Signup, login or resume succeeded.
    LoggedIn {
        /// Request id.
        req: ReqId,
        /// Canonical name.
        user: UserName,
        /// Token for `Resume`.
        token: SessionToken,
        /// Token expiry, milliseconds since the Unix epoch.
        expires_at_ms: u64,
        /// The encrypted private-key backup stored at signup (after `Login` only; empty after
        /// `Signup` and `Resume`, whose clients already hold their keys).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        backup: Vec<u8>,
        /// Which node this is.
        node: NodeName,
    },
    /// A request succeeded with nothing to return.
    Done {
        /// Request id.
        req: ReqId,
    },
    /// Answer to `ListUsers`: one page.
    Users {
        /// Request id.
        req: ReqId,
        /// Users, by name.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(3)"))]
        users: Vec<Presence>,
        /// How many users there are in all.
        total: u64,
        /// More follow: ask again after the last one.
        more: bool,
    },
    /// Answer to `FetchKeys`.
    Keys {
        /// Request id.
        req: ReqId,
        /// Whose.
        user: UserName,
        /// The keys.
        keys: PublicKeys,
    },
    /// The envelope is durable in every recipient's queue.
    Stored {
        /// Request id.
        req: ReqId,
        /// The message.
        id: MsgId,
        /// False if it had been stored before (a retry); nothing was queued twice.
        fresh: bool,
    },
    /// A message for the client. Acknowledge it with `Ack` once handled.
    Deliver(Delivery),
    /// Someone came online or went offline.
    Presence(Presence),
    /// Answer to `ListGroups`: one page.
    Groups {
        /// Request id.
        req: ReqId,
        /// The caller's groups, by name then id.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(3)"))]
        groups: Vec<GroupSummary>,
        /// How many groups the caller is in.
        total: u64,
        /// More follow: ask again after the last one.
        more: bool,
    },
    /// Answer to `GroupInfo`.
    Group {
        /// Request id.
        req: ReqId,
        /// The group.
        summary: GroupSummary,
        /// Members and roles as stored (at most [`crate::limits::MAX_GROUP_MEMBERS`], so
        /// they always fit).
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(3)"))]
        members: Vec<GroupMember>,
        /// Links of the signed chain from the epoch asked for, in order.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        chain: Vec<SignedChange>,
        /// More links follow: ask again from the epoch after the last one.
        more: bool,
    },
    /// A group the client belongs to (or just left) changed.
    GroupChanged {
        /// The new link.
        change: SignedChange,
    },
    /// Answer to `Ping`.
    Pong {
        /// Request id.
        req: ReqId,
    },
    /// The request failed, or (with no `req`) the connection is about to close.
    Error {
        /// The failed request, if the error answers one.
        req: Option<ReqId>,
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        #[cfg_attr(test, proptest(strategy = "crate::testing::text(24)"))]
        message: String,
        /// When waiting helps (rate limits, throttling): milliseconds until a retry can succeed.
        retry_after_ms: Option<u32>,
    },
    /// The node is draining: reconnect through discovery after the given delay.
    Reconnect {
        /// Milliseconds to wait before reconnecting (spreads the herd).
        after_ms: u32,
        /// Why.
        #[cfg_attr(test, proptest(strategy = "crate::testing::text(24)"))]
        reason: String,
    },
    /// A message this client's user sent expired unread in `recipient`'s queue (the node's
    /// retention passed); pushed by the sweep, or at the next login.
    Expired {
        /// The message.
        id: MsgId,
        /// Who never read it.
        recipient: UserName,
        /// When it was removed, milliseconds since the Unix epoch.
        expired_at_ms: u64,
    },
    /// Answer to `ListDevices`.
    Devices {
        /// Request id.
        req: ReqId,
        /// The caller's devices, by id (at most [`crate::limits::MAX_DEVICES`]).
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        devices: Vec<DeviceInfo>,
    },
    /// Answer to `ClaimKeyPackages`: one per device that had one.
    KeyPackages {
        /// Request id.
        req: ReqId,
        /// Whose.
        user: UserName,
        /// The packages.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        packages: Vec<ClaimedKeyPackage>,
    },
    /// A handshake or post is stored in the group's log at `seq`.
    Appended {
        /// Request id.
        req: ReqId,
        /// The group.
        group: GroupId,
        /// Its position in the log.
        seq: u64,
        /// The group's epoch now.
        epoch: u64,
        /// False if it had been stored before (a retry); nothing was stored twice.
        fresh: bool,
    },
    /// Answer to `GroupState`.
    GroupState {
        /// Request id.
        req: ReqId,
        /// The group.
        group: GroupId,
        /// Its epoch.
        epoch: u64,
        /// The epoch's signed group info (`MlsMessage`).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        group_info: Vec<u8>,
        /// The serialized tree's length.
        tree_len: u64,
        /// Bytes of the tree from the offset asked for.
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(32)"))]
        tree: Vec<u8>,
        /// The log's last seq: a device joining now starts after it.
        last_seq: u64,
    },
    /// Answer to `ListMlsGroups`.
    MlsGroups {
        /// Request id.
        req: ReqId,
        /// One page, by id.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        groups: Vec<MlsGroupSummary>,
        /// More follow: ask again after the last one.
        more: bool,
    },
    /// Entries of a group's log for this device, in order, without gaps after what it
    /// acknowledged or was sent before. Acknowledge with `AckLog`.
    Log {
        /// The group.
        group: GroupId,
        /// Consecutive entries.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        entries: Vec<LogEntry>,
    },
    /// Answer to `GetDeviceState`: one page of the device's encrypted state.
    DeviceState {
        /// Request id.
        req: ReqId,
        /// The device.
        device: DeviceId,
        /// (entry id, sealed value), by entry id.
        #[cfg_attr(test, proptest(strategy = "crate::testing::vec_of(2)"))]
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        /// More follow: ask again after the last entry.
        more: bool,
    },
    /// This device was added to a group: the Welcome (with the ratchet tree). The group's log
    /// follows from the commit that added it. Acknowledge with `AckLog`.
    Welcome {
        /// Its id, for `AckLog`.
        id: u64,
        /// The group.
        group: GroupId,
        /// The Welcome (`MlsMessage`).
        #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
        body: Vec<u8>,
    },
}

impl ClientToNode {
    /// The request id this message carries (`None` for `Ack` and `AckLog`, which get no
    /// answer).
    pub fn req(&self) -> Option<ReqId> {
        match self {
            Self::Signup { req, .. }
            | Self::Login { req, .. }
            | Self::Resume { req, .. }
            | Self::Logout { req }
            | Self::ListUsers { req, .. }
            | Self::FetchKeys { req, .. }
            | Self::ReplaceKeys { req, .. }
            | Self::Send { req, .. }
            | Self::CreateGroup { req, .. }
            | Self::ChangeGroup { req, .. }
            | Self::ListGroups { req, .. }
            | Self::GroupInfo { req, .. }
            | Self::FetchBlob { req, .. }
            | Self::Ping { req }
            | Self::EnrollDevice { req, .. }
            | Self::UseDevice { req, .. }
            | Self::ListDevices { req }
            | Self::RemoveDevice { req, .. }
            | Self::PublishKeyPackages { req, .. }
            | Self::ClaimKeyPackages { req, .. }
            | Self::CreateMlsGroup { req, .. }
            | Self::Handshake { req, .. }
            | Self::Post { req, .. }
            | Self::GroupState { req, .. }
            | Self::ListMlsGroups { req, .. }
            | Self::PutDeviceState { req, .. }
            | Self::GetDeviceState { req, .. } => Some(*req),
            Self::Ack { .. } | Self::AckLog { .. } => None,
        }
    }

    /// This message's variant name (safe to log: no secrets).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Signup { .. } => "Signup",
            Self::Login { .. } => "Login",
            Self::Resume { .. } => "Resume",
            Self::Logout { .. } => "Logout",
            Self::ListUsers { .. } => "ListUsers",
            Self::FetchKeys { .. } => "FetchKeys",
            Self::ReplaceKeys { .. } => "ReplaceKeys",
            Self::Send { .. } => "Send",
            Self::Ack { .. } => "Ack",
            Self::CreateGroup { .. } => "CreateGroup",
            Self::ChangeGroup { .. } => "ChangeGroup",
            Self::ListGroups { .. } => "ListGroups",
            Self::GroupInfo { .. } => "GroupInfo",
            Self::FetchBlob { .. } => "FetchBlob",
            Self::Ping { .. } => "Ping",
            Self::EnrollDevice { .. } => "EnrollDevice",
            Self::UseDevice { .. } => "UseDevice",
            Self::ListDevices { .. } => "ListDevices",
            Self::RemoveDevice { .. } => "RemoveDevice",
            Self::PublishKeyPackages { .. } => "PublishKeyPackages",
            Self::ClaimKeyPackages { .. } => "ClaimKeyPackages",
            Self::CreateMlsGroup { .. } => "CreateMlsGroup",
            Self::Handshake { .. } => "Handshake",
            Self::Post { .. } => "Post",
            Self::GroupState { .. } => "GroupState",
            Self::ListMlsGroups { .. } => "ListMlsGroups",
            Self::AckLog { .. } => "AckLog",
            Self::PutDeviceState { .. } => "PutDeviceState",
            Self::GetDeviceState { .. } => "GetDeviceState",
        }
    }
}

impl NodeToClient {
    /// The request this message answers (`None` for pushes).
    pub fn req(&self) -> Option<ReqId> {
        match self {
            Self::LoggedIn { req, .. }
            | Self::Done { req }
            | Self::Users { req, .. }
            | Self::Keys { req, .. }
            | Self::Stored { req, .. }
            | Self::Groups { req, .. }
            | Self::Group { req, .. }
            | Self::Pong { req }
            | Self::Devices { req, .. }
            | Self::KeyPackages { req, .. }
            | Self::Appended { req, .. }
            | Self::GroupState { req, .. }
            | Self::MlsGroups { req, .. }
            | Self::DeviceState { req, .. } => Some(*req),
            Self::Error { req, .. } => *req,
            Self::Deliver(_)
            | Self::Presence(_)
            | Self::GroupChanged { .. }
            | Self::Reconnect { .. }
            | Self::Expired { .. }
            | Self::Log { .. }
            | Self::Welcome { .. } => None,
        }
    }

    /// This message's variant name (safe to log: no secrets).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LoggedIn { .. } => "LoggedIn",
            Self::Done { .. } => "Done",
            Self::Users { .. } => "Users",
            Self::Keys { .. } => "Keys",
            Self::Stored { .. } => "Stored",
            Self::Deliver(_) => "Deliver",
            Self::Presence(_) => "Presence",
            Self::Groups { .. } => "Groups",
            Self::Group { .. } => "Group",
            Self::GroupChanged { .. } => "GroupChanged",
            Self::Pong { .. } => "Pong",
            Self::Error { .. } => "Error",
            Self::Reconnect { .. } => "Reconnect",
            Self::Expired { .. } => "Expired",
            Self::Devices { .. } => "Devices",
            Self::KeyPackages { .. } => "KeyPackages",
            Self::Appended { .. } => "Appended",
            Self::GroupState { .. } => "GroupState",
            Self::MlsGroups { .. } => "MlsGroups",
            Self::Log { .. } => "Log",
            Self::Welcome { .. } => "Welcome",
            Self::DeviceState { .. } => "DeviceState",
        }
    }
}

/// postcard's index of [`NodeToClient::Deliver`].
const DELIVER_TAG: u8 = 5;

/// The bytes that precede an encoded [`crate::Sealed`] in the frame of
/// `NodeToClient::Deliver(Delivery { key, sealed })`: length prefix, variant tag and the
/// wrapped key. A node fanning one message out writes this small prefix per recipient and
/// the sealed bytes (stored and encoded once) after it, so nothing large is copied per
/// recipient. The result is byte-for-byte the frame `frame::encode` would produce.
pub fn deliver_prefix(key: &[u8], sealed_len: usize) -> Result<Vec<u8>, crate::EncodeError> {
    let mut body = vec![DELIVER_TAG];
    let mut n = key.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    body.extend_from_slice(key);
    let len = body.len() + sealed_len;
    if len > crate::limits::MAX_FRAME {
        return Err(crate::EncodeError::FrameTooLarge {
            len,
            max: crate::limits::MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(crate::frame::PREFIX_LEN + body.len());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::envelope::{Delivery, Sealed};

    proptest! {
        #[test]
        fn deliver_prefix_matches_postcard(key in crate::testing::bytes(600), sealed in any::<Sealed>()) {
            let sealed_bytes = postcard::to_stdvec(&sealed).unwrap();
            let mut manual = deliver_prefix(&key, sealed_bytes.len()).unwrap();
            manual.extend_from_slice(&sealed_bytes);
            let real = crate::frame::encode(&NodeToClient::Deliver(Delivery { key, sealed })).unwrap();
            prop_assert_eq!(manual, real);
        }
    }
}
