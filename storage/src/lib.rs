//! Quip's durable state behind one async trait, [`Storage`], with two backends chosen by URL:
//! SQLite (`sqlite://path`, the embedded default) and Postgres (`postgres://…`).
//!
//! Storage is the source of truth: a node persists a message to every recipient's queue
//! before it acknowledges the sender, and a message leaves a queue only when the recipient
//! acknowledges it. Everything stored here is either public (names, public keys, roles, MLS
//! credentials, key packages and groups' public state) or opaque ciphertext the servers cannot
//! read (sealed envelopes, wrapped keys, key backups, image blobs, devices' MLS state).
//!
//! Every backend passes the same [`conformance`] suite.

use std::future::Future;

use quip_proto::ids::{BlobId, GroupId, GroupName, MsgId, UserName};

/// A device of a user (one MLS leaf of its own); the wire's id, re-exported.
pub use quip_proto::ids::DeviceId;

pub mod conformance;
mod error;
mod postgres;
mod sql;
mod sqlite;
mod store;

pub use error::StorageError;
pub use postgres::PostgresStorage;
pub use sqlite::SqliteStorage;
pub use store::Store;

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch. Callers pass the clock in, so tests control time.
pub type UnixMillis = i64;

/// Size limits every backend enforces before writing. They mirror the wire limits in
/// `quip_proto::limits`, so nothing the protocol accepts is refused here and nothing larger is
/// ever stored.
pub mod limits {
    pub use quip_proto::limits::{
        MAX_BLOB_CHUNK, MAX_GROUP_MEMBERS, MAX_KEY_BACKUP, MAX_PUBLIC_KEY, MAX_RECIPIENTS,
        MAX_SEALED, MAX_WRAPPED_KEY,
    };
    /// Largest signed membership change (genesis included) stored in a group's chain. A
    /// genesis lists up to [`MAX_GROUP_MEMBERS`] names, so this is the frame limit.
    pub const MAX_GROUP_CHANGE: usize = quip_proto::limits::MAX_FRAME;
    /// Longest password hash accepted (bcrypt's modular-crypt string is 60 bytes).
    pub const MAX_PASSWORD_HASH: usize = 128;
    /// Most rows one `pending` call returns.
    pub const MAX_PENDING_BATCH: u32 = 10_000;

    /// Most MLS devices one user may register.
    pub const MAX_DEVICES_PER_USER: usize = 16;
    /// Most key packages (last-resort one not counted) waiting for one device.
    pub const MAX_KEY_PACKAGES_PER_DEVICE: usize = 100;
    /// Largest device credential (an encoded MLS credential).
    pub const MAX_CREDENTIAL: usize = 4096;
    /// Largest device signature public key (Ed25519 keys are 32 bytes).
    pub const MAX_SIGNATURE_KEY: usize = 64;
    /// Largest encoded key package.
    pub const MAX_KEY_PACKAGE: usize = 16 * 1024;
    /// Longest key package reference (a hash: 32 bytes for Quip's suite).
    pub const MAX_KEY_PACKAGE_REF: usize = 64;
    /// Longest name of a device state entry.
    pub const MAX_STATE_KEY: usize = 64;
    /// Largest value of a device state entry.
    pub const MAX_STATE_ENTRY: usize = 1024 * 1024;
    /// Most value bytes one page of device state holds (a page always holds at least one
    /// entry, and no entry is larger than this).
    pub const MAX_STATE_PAGE_BYTES: usize = 4 * 1024 * 1024;
    /// Largest MLS group public state, and largest GroupInfo.
    pub const MAX_GROUP_STATE: usize = 8 * 1024 * 1024;
    /// Largest Welcome message stored for one device (it carries a GroupInfo).
    pub const MAX_WELCOME: usize = MAX_GROUP_STATE;
    /// Most leaves (member devices) an MLS group has, and most devices or key package
    /// references one group change names in each of its lists.
    pub const MAX_GROUP_LEAVES: usize = 4096;
}

/// A new account.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Canonical (lowercase) name; unique regardless of case.
    pub name: UserName,
    /// bcrypt hash (modular-crypt string) of the client's login secret.
    pub password_hash: String,
    /// SPKI DER of the RSA-OAEP encryption key.
    pub encryption_key: Vec<u8>,
    /// SPKI DER of the RSA-PSS signing key.
    pub signing_key: Vec<u8>,
    /// The private keys, encrypted by the client under a secret the server never sees.
    pub key_backup: Vec<u8>,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// A stored account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Canonical name.
    pub name: UserName,
    /// bcrypt hash of the login secret.
    pub password_hash: String,
    /// SPKI DER of the encryption key.
    pub encryption_key: Vec<u8>,
    /// SPKI DER of the signing key.
    pub signing_key: Vec<u8>,
    /// Encrypted private-key backup.
    pub key_backup: Vec<u8>,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// A live session, found by the SHA-256 of its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose session it is.
    pub user: UserName,
    /// When it stops being accepted.
    pub expires_at: UnixMillis,
}

/// The password-login throttle state of one account name ([`Storage::update_login_throttle`]).
/// The default (nothing recorded) is all zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Attempts counted since the state was last reset.
    pub failures: u32,
    /// Earliest time the next attempt may be checked.
    pub next_at: UnixMillis,
    /// When the last attempt was counted.
    pub last_at: UnixMillis,
}

/// A member's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// May add, remove, promote and demote.
    Admin,
    /// May send and leave.
    Member,
}

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// Identity chosen by the creator.
    pub id: GroupId,
    /// Display name; unique per creator.
    pub name: GroupName,
    /// Who created it (its first admin).
    pub creator: UserName,
    /// Epoch of the latest membership change (the genesis is epoch 0).
    pub epoch: u64,
}

/// One member and their role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub user: UserName,
    /// Their role.
    pub role: Role,
}

/// A new group: its genesis change (already checked by the caller) and first members.
#[derive(Clone, Debug)]
pub struct NewGroup {
    /// Identity chosen by the creator.
    pub id: GroupId,
    /// Display name.
    pub name: GroupName,
    /// The creator; stored as the only admin.
    pub creator: UserName,
    /// The other first members (the creator may be listed too; it is not stored twice).
    pub members: Vec<UserName>,
    /// The encoded, signed genesis change: epoch 0 of the membership chain.
    pub genesis: Vec<u8>,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// What a membership change does to the member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEffect {
    /// Adds `0` as a plain member.
    Add(UserName),
    /// Removes `0` (also used when a member leaves).
    Remove(UserName),
    /// Sets `0`'s role.
    SetRole(UserName, Role),
}

/// A membership change to append to a group's chain.
#[derive(Clone, Debug)]
pub struct GroupChange {
    /// The group.
    pub group: GroupId,
    /// Must be exactly the group's current epoch + 1, else [`StorageError::Conflict`].
    pub epoch: u64,
    /// The encoded, signed change.
    pub signed: Vec<u8>,
    /// Its effect on the member table, applied in the same transaction.
    pub effect: MemberEffect,
}

/// A message to persist: stored once, queued once per recipient.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Sender-chosen id; enqueueing the same id again changes nothing.
    pub id: MsgId,
    /// Who sent it (the session's user): counted against the per-sender quota and told when
    /// the message expires unread.
    pub sender: UserName,
    /// The encoded sealed envelope (header, ciphertext, signature), the same for every
    /// recipient.
    pub sealed: Vec<u8>,
    /// An image blob this message refers to; deleted with the message.
    pub blob: Option<BlobId>,
    /// Each recipient with the content key wrapped for them (a name listed twice is queued
    /// once, with its first key).
    pub recipients: Vec<(UserName, Vec<u8>)>,
    /// Arrival time.
    pub created_at: UnixMillis,
}

/// What [`Storage::enqueue`] did with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored and queued for every recipient.
    Stored,
    /// A message with this id is still stored (some recipient has not acknowledged it);
    /// nothing changed.
    Duplicate,
    /// Not stored, for a reason of its own; the other messages of the batch are unaffected.
    Refused(Refused),
}

/// Why one message of a batch was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Storing it would take `recipient`'s queue past `limit`.
    QueueFull {
        /// Whose queue is full.
        recipient: UserName,
        /// Which limit it would pass.
        limit: QuotaLimit,
    },
    /// A recipient has no account.
    UnknownRecipient(UserName),
    /// The envelope, a key, or the recipient list is larger than [`limits`] allow.
    TooLarge {
        /// Which value.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// One limit of a [`QueueQuota`], with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaLimit {
    /// [`QueueQuota::max_messages`].
    Messages(u64),
    /// [`QueueQuota::max_bytes`].
    Bytes(u64),
    /// [`QueueQuota::max_messages_per_sender`].
    MessagesFromSender(u64),
    /// [`QueueQuota::max_bytes_per_sender`].
    BytesFromSender(u64),
}

impl std::fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Messages(n) => write!(f, "{n} waiting messages"),
            Self::Bytes(n) => write!(f, "{n} waiting bytes"),
            Self::MessagesFromSender(n) => write!(f, "{n} waiting messages from one sender"),
            Self::BytesFromSender(n) => write!(f, "{n} waiting bytes from one sender"),
        }
    }
}

/// What may wait, unacknowledged, in one recipient's queue. A queue row's size is its sealed
/// envelope, its wrapped key and its image blob. Checked by [`Storage::commit`] inside the
/// transaction that writes, after the recipients' queues are locked, so concurrent commits
/// (from any node sharing the storage) never overshoot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueQuota {
    /// Most messages waiting for one recipient.
    pub max_messages: u64,
    /// Most bytes waiting for one recipient.
    pub max_bytes: u64,
    /// Most messages from one sender waiting for one recipient.
    pub max_messages_per_sender: u64,
    /// Most bytes from one sender waiting for one recipient.
    pub max_bytes_per_sender: u64,
}

impl QueueQuota {
    /// No limits (what [`Storage::enqueue`] uses: fixtures and tools, not senders).
    pub const UNLIMITED: Self = Self {
        max_messages: u64::MAX,
        max_bytes: u64::MAX,
        max_messages_per_sender: u64::MAX,
        max_bytes_per_sender: u64::MAX,
    };
}

/// A sender's message that expired in a recipient's queue before it was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryNotice {
    /// The message.
    pub id: MsgId,
    /// Who never acknowledged it.
    pub recipient: UserName,
    /// When it was removed.
    pub expired_at: UnixMillis,
}

/// A recipient's acknowledgement: these messages may leave their queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Whose queue.
    pub user: UserName,
    /// Which messages (ids not queued for `user` are ignored).
    pub ids: Vec<MsgId>,
}

/// What one [`Storage::commit`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// One outcome per message, in the order given.
    pub enqueued: Vec<Enqueued>,
    /// How many queue entries the acks removed.
    pub acked: u64,
}

/// A message waiting in one recipient's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Position in the queue; increases with enqueue order.
    pub seq: i64,
    /// The message id.
    pub id: MsgId,
    /// The sealed envelope.
    pub sealed: Vec<u8>,
    /// The content key wrapped for this recipient.
    pub key: Vec<u8>,
    /// The image blob it refers to, if any.
    pub blob: Option<BlobId>,
}

/// One page of a list, in a stable order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// More entries follow the last one.
    pub more: bool,
    /// How many entries the whole list has.
    pub total: u64,
}

/// An image blob's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob.
    pub id: BlobId,
    /// Who uploaded it.
    pub owner: UserName,
    /// Number of chunks written.
    pub chunks: u32,
    /// Total bytes written.
    pub len: u64,
    /// Whether the upload completed; an unfinished blob is never delivered.
    pub finished: bool,
}

/// A new device.
#[derive(Clone, Debug)]
pub struct NewDevice {
    /// Whose device it is.
    pub user: UserName,
    /// Its id, unique per user.
    pub device: DeviceId,
    /// Its MLS credential (opaque here; the node verifies it before calling).
    pub credential: Vec<u8>,
    /// Its MLS signature public key; unique across every device of every user.
    pub signature_key: Vec<u8>,
    /// Registration time.
    pub created_at: UnixMillis,
}

/// A stored device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Whose device it is.
    pub user: UserName,
    /// Its id.
    pub device: DeviceId,
    /// Its MLS credential.
    pub credential: Vec<u8>,
    /// Its MLS signature public key.
    pub signature_key: Vec<u8>,
    /// Registration time.
    pub created_at: UnixMillis,
}

/// A key package a device uploads for others to add it to groups.
#[derive(Clone, Debug)]
pub struct NewKeyPackage {
    /// Its reference (the MLS `KeyPackageRef`), unique forever: never stored twice, never
    /// stored again once a group change used it.
    pub kp_ref: Vec<u8>,
    /// The encoded key package.
    pub data: Vec<u8>,
    /// Whether it is the device's last-resort package: handed out, without being deleted,
    /// only when the device has no other left. At most one per device.
    pub last_resort: bool,
    /// Upload time.
    pub created_at: UnixMillis,
}

/// A key package handed out by [`Storage::take_key_packages`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackageRecord {
    /// The device it adds.
    pub device: DeviceId,
    /// Its reference.
    pub kp_ref: Vec<u8>,
    /// The encoded key package.
    pub data: Vec<u8>,
    /// Whether it is the device's last-resort package (which stays stored).
    pub last_resort: bool,
}

/// A new MLS group, as its creator's first commit leaves it.
#[derive(Clone, Debug)]
pub struct NewMlsGroup {
    /// The group's id.
    pub id: GroupId,
    /// Its display name (from its policy extension).
    pub name: GroupName,
    /// Its epoch.
    pub epoch: u64,
    /// Its public state (opaque here).
    pub state: Vec<u8>,
    /// Its GroupInfo, for external joins (opaque here).
    pub group_info: Vec<u8>,
    /// The devices that are its leaves (one listed twice is stored once).
    pub members: Vec<(UserName, DeviceId)>,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// An MLS group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsGroupRecord {
    /// The group's id.
    pub id: GroupId,
    /// Its display name.
    pub name: GroupName,
    /// Its current epoch.
    pub epoch: u64,
    /// Bumped by every proposal or commit ([`MlsChange::state_version`]); 0 at creation.
    pub state_version: u64,
    /// The highest seq appended to its log (0 before the first); never goes back, even once
    /// entries are pruned.
    pub last_seq: u64,
    /// Its public state.
    pub state: Vec<u8>,
    /// Its GroupInfo.
    pub group_info: Vec<u8>,
}

/// An MLS group in a list: what [`Storage::mls_groups_of`] returns (no state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsGroupSummary {
    /// The group's id.
    pub id: GroupId,
    /// Its display name.
    pub name: GroupName,
    /// Its current epoch.
    pub epoch: u64,
}

/// What an MLS message of a group's log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MlsKind {
    /// An application message (a `PrivateMessage` the node cannot read).
    Application,
    /// A proposal (a `PublicMessage`).
    Proposal,
    /// A commit (a `PublicMessage`): moves the group to the next epoch.
    Commit,
}

/// A change of the group's public state that a proposal or commit makes, applied with its
/// entry by [`Storage::append_mls`] only if the group is still at `state_version`.
#[derive(Clone, Debug)]
pub struct MlsChange {
    /// The group's state version the node read (and checked the message against): the
    /// compare-and-set's expected value. Stored, it becomes `state_version + 1`.
    pub state_version: u64,
    /// The group's epoch afterwards: the entry's epoch + 1 for a commit, the entry's epoch for
    /// a proposal.
    pub epoch: u64,
    /// The display name afterwards.
    pub name: GroupName,
    /// The public state afterwards (at most [`limits::MAX_GROUP_STATE`]).
    pub state: Vec<u8>,
    /// The GroupInfo afterwards (at most [`limits::MAX_GROUP_STATE`]).
    pub group_info: Vec<u8>,
    /// Devices that become leaves (one that already is changes nothing). Each starts reading
    /// the log after this entry: it joins from its Welcome.
    pub added: Vec<(UserName, DeviceId)>,
    /// Devices that stop being leaves, with their cursors (one that is not changes nothing:
    /// `remove_device` may have removed it first). Removals apply before additions.
    pub removed: Vec<(UserName, DeviceId)>,
    /// References of the key packages the change used (to add `added`): each is spent for
    /// ever (and its package deleted) except a last-resort package still stored, which may
    /// serve again.
    pub used_key_packages: Vec<Vec<u8>>,
    /// One Welcome per added device, kept for it until it acknowledges it
    /// ([`Storage::mls_welcomes`]); each at most [`limits::MAX_WELCOME`].
    pub welcomes: Vec<(UserName, DeviceId, Vec<u8>)>,
}

/// An MLS message to append to its group's log ([`Storage::append_mls`]).
#[derive(Clone, Debug)]
pub struct MlsEntry {
    /// The group.
    pub group: GroupId,
    /// Chosen by the sender; `(group, id)` is unique, so a retry is found.
    pub id: MsgId,
    /// The sending device: a leaf of the group (or, for an external commit, one of
    /// `change.added`).
    pub sender: (UserName, DeviceId),
    /// What it is.
    pub kind: MlsKind,
    /// The epoch the message is for: must be the group's epoch when it is appended.
    pub epoch: u64,
    /// The encoded MLS message (at most [`limits::MAX_SEALED`]).
    pub body: Vec<u8>,
    /// An image blob it refers to: a finished upload, deleted with the entry.
    pub blob: Option<BlobId>,
    /// `Some` for a proposal or commit, `None` for an application message.
    pub change: Option<MlsChange>,
    /// Arrival time.
    pub at: UnixMillis,
}

/// What [`Storage::append_mls`] did with one entry. Every outcome but `Stored` changed
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended at `seq`.
    Stored {
        /// Its place in the group's log.
        seq: u64,
    },
    /// `(group, id)` was appended before and is still in the log (a retry); nothing changed.
    Duplicate {
        /// Where the first one was appended.
        seq: u64,
    },
    /// The entry's epoch is not the group's.
    WrongEpoch {
        /// The group's epoch.
        current: u64,
    },
    /// The change's `state_version` is stale: another proposal or commit came first.
    Conflict {
        /// The group's state version.
        state_version: u64,
        /// The group's epoch.
        epoch: u64,
    },
    /// The change uses a key package a change used before (this reference), or lists one
    /// twice.
    KeyPackageReused(Vec<u8>),
    /// The sender is not a leaf of the group (nor added by the entry's own change).
    NotMember,
    /// An application entry would take the group's log past `max_log_bytes`.
    LogFull {
        /// The bytes of bodies in the log now.
        log_bytes: u64,
    },
    /// No such group.
    NotFound,
}

/// An entry of a group's log, as [`Storage::mls_log`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsLogEntry {
    /// Its place in the group's log.
    pub seq: u64,
    /// The sender's id for it.
    pub id: MsgId,
    /// The sending device.
    pub sender: (UserName, DeviceId),
    /// What it is.
    pub kind: MlsKind,
    /// The epoch it is for.
    pub epoch: u64,
    /// The encoded MLS message.
    pub body: Vec<u8>,
    /// The image blob it refers to, if any.
    pub blob: Option<BlobId>,
    /// When it was appended.
    pub at: UnixMillis,
}

/// A group in which a device has log entries it has not acknowledged
/// ([`Storage::mls_unread`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsUnread {
    /// The group.
    pub group: GroupId,
    /// The highest seq the device acknowledged.
    pub delivered: u64,
    /// The highest seq in the group's log.
    pub last_seq: u64,
}

/// A Welcome waiting for a device ([`Storage::mls_welcomes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsWelcome {
    /// Its id, for [`Storage::ack_welcomes`]; increases with arrival.
    pub id: u64,
    /// The group it welcomes the device to.
    pub group: GroupId,
    /// The encoded Welcome.
    pub body: Vec<u8>,
    /// When the commit that made it was appended.
    pub at: UnixMillis,
}

/// Quip's durable state. Every method is one atomic operation; contracts are in the docs and
/// checked by [`conformance::run_all`].
pub trait Storage: Send + Sync + 'static {
    // ---- users ----

    /// Creates an account. A name that exists in any case → [`StorageError::AlreadyExists`].
    /// Oversized fields → [`StorageError::TooLarge`].
    fn create_user(&self, user: &NewUser) -> impl Future<Output = Result<()>> + Send;

    /// The account with this name, if any.
    fn user(&self, name: &UserName) -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// One page of account names: up to `limit` names after `after` (from the first when
    /// `None`), in the database's order for names (byte order on SQLite; the collation's on
    /// Postgres). Walking the pages lists every account once.
    fn list_users(
        &self,
        after: Option<&UserName>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<UserName>>> + Send;

    /// Replaces a user's public keys and key backup (key rotation or recovery).
    /// Unknown user → [`StorageError::NotFound`]; oversized fields → [`StorageError::TooLarge`].
    fn replace_keys(
        &self,
        name: &UserName,
        encryption_key: &[u8],
        signing_key: &[u8],
        key_backup: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    // ---- sessions ----

    /// Stores a session under the SHA-256 of its token. A hash that exists →
    /// [`StorageError::AlreadyExists`]; unknown user → [`StorageError::NotFound`].
    fn create_session(
        &self,
        token_hash: &[u8; 32],
        user: &UserName,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The session with this token hash if it has not expired at `now`.
    fn session(
        &self,
        token_hash: &[u8; 32],
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<SessionRecord>>> + Send;

    /// Ends one session (logout). Returns whether it existed.
    fn delete_session(&self, token_hash: &[u8; 32]) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes every session expired at `now`; returns how many.
    fn purge_sessions(&self, now: UnixMillis) -> impl Future<Output = Result<u64>> + Send;

    // ---- login throttle ----

    /// Reads the login throttle state of `user` (the default if none is stored) and replaces
    /// it with the state `update` returns, atomically: concurrent updates of one name, from
    /// any node on this storage, run one after the other and each sees the previous one's
    /// result. Returning the default state deletes the row. Returns `update`'s second value.
    fn update_login_throttle<F, T>(
        &self,
        user: &UserName,
        update: F,
    ) -> impl Future<Output = Result<T>> + Send
    where
        F: FnOnce(LoginThrottle) -> (LoginThrottle, T) + Send,
        T: Send;

    /// Deletes the login throttle state of every name whose last attempt was before
    /// `before`; returns how many.
    fn prune_login_throttle(&self, before: UnixMillis) -> impl Future<Output = Result<u64>> + Send;

    // ---- groups ----

    /// Creates a group with its genesis (epoch 0), the creator as admin and the other first
    /// members. An existing id, or a name the creator already uses →
    /// [`StorageError::AlreadyExists`]; an unknown creator or member →
    /// [`StorageError::NotFound`]; a genesis over [`limits::MAX_GROUP_CHANGE`] or more than
    /// [`limits::MAX_GROUP_MEMBERS`] members → [`StorageError::TooLarge`].
    fn create_group(&self, group: &NewGroup) -> impl Future<Output = Result<()>> + Send;

    /// The group, if it exists.
    fn group(&self, id: &GroupId) -> impl Future<Output = Result<Option<GroupRecord>>> + Send;

    /// One page of the groups `user` belongs to: up to `limit` after the group `after` names
    /// (name, id), ordered by name (in the database's order for text) then id. Walking the
    /// pages lists every group once.
    fn groups_of(
        &self,
        user: &UserName,
        after: Option<(&GroupName, &GroupId)>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<GroupRecord>>> + Send;

    /// The group's members and roles, sorted by name. Unknown group → [`StorageError::NotFound`].
    fn members(&self, id: &GroupId) -> impl Future<Output = Result<Vec<Member>>> + Send;

    /// Atomically appends a signed change at `epoch` and applies its effect. A stale or
    /// skipped epoch → [`StorageError::Conflict`] and nothing changes; unknown group or
    /// (for `Add`) unknown user → [`StorageError::NotFound`]; adding a member →
    /// [`StorageError::AlreadyExists`]; removing or re-roling a non-member →
    /// [`StorageError::NotFound`]; an oversized change or a full group →
    /// [`StorageError::TooLarge`].
    fn apply_change(&self, change: &GroupChange) -> impl Future<Output = Result<()>> + Send;

    /// Up to `limit` links of the signed membership chain from epoch `from` on, in order
    /// (empty past the last). Unknown group → [`StorageError::NotFound`].
    fn chain(
        &self,
        id: &GroupId,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;

    // ---- message queues ----

    /// Persists messages in one transaction: each stored once and queued for each of its
    /// recipients, in order. A message whose id is already stored is
    /// [`Enqueued::Duplicate`] and changes nothing. One message never fails the others: an
    /// unknown recipient, an oversized envelope or key, or too many recipients make that
    /// message [`Enqueued::Refused`] and nothing of it is written. A message without
    /// recipients would never be acknowledged, so it is not stored (it is reported
    /// [`Enqueued::Stored`]). No quota applies (see [`Storage::commit`]).
    fn enqueue(
        &self,
        messages: &[NewMessage],
    ) -> impl Future<Output = Result<Vec<Enqueued>>> + Send;

    /// Up to `limit` (at most [`limits::MAX_PENDING_BATCH`]) messages waiting for `user` with
    /// `seq > after`, oldest first. A message enqueued later never gets a smaller `seq` than
    /// one already visible here, so `after` can be the last `seq` seen.
    fn pending(
        &self,
        user: &UserName,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<QueuedMessage>>> + Send;

    /// The message `id` if it waits in `user`'s queue (how a node checks that a recipient
    /// may fetch an image blob).
    fn queued(
        &self,
        user: &UserName,
        id: &MsgId,
    ) -> impl Future<Output = Result<Option<QueuedMessage>>> + Send;

    /// Removes these messages from `user`'s queue (ids not queued are ignored) and returns how
    /// many were removed. A message no longer queued for anyone is deleted, with its blob.
    fn ack(&self, user: &UserName, ids: &[MsgId]) -> impl Future<Output = Result<u64>> + Send;

    /// Enqueues `messages` (as [`Storage::enqueue`]) and applies `acks` (as [`Storage::ack`])
    /// in one transaction: the group commit a node uses, so one commit serves every sender and
    /// receiver that gathered meanwhile. Messages are written before acks. A message that
    /// would take any recipient's queue past `quota` (counting what waits there and the
    /// earlier messages of this batch) is [`Enqueued::Refused`] with
    /// [`Refused::QueueFull`], and its image blob is deleted. An `Err` means nothing was
    /// written (the database failed, not a message).
    fn commit(
        &self,
        messages: &[NewMessage],
        acks: &[Ack],
        quota: &QueueQuota,
    ) -> impl Future<Output = Result<Committed>> + Send;

    /// Whether a message of `bytes` from `sender` to `recipients` would fit `quota` now:
    /// `Some` names the first recipient whose queue it would overflow. A read-only early check
    /// (an image upload asks before receiving the image); [`Storage::commit`] checks again.
    fn queue_room(
        &self,
        sender: &UserName,
        recipients: &[UserName],
        bytes: u64,
        quota: &QueueQuota,
    ) -> impl Future<Output = Result<Option<Refused>>> + Send;

    /// Removes every queued copy of the messages that arrived before `before` (nobody
    /// acknowledged them in time), with the messages and their image blobs, and records an
    /// [`ExpiryNotice`] for each copy's sender, stamped `now`. Notices older than `before`
    /// are dropped too. Returns the senders who have new notices.
    fn expire(
        &self,
        before: UnixMillis,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<UserName>>> + Send;

    /// Removes and returns up to `limit` of `sender`'s expiry notices, oldest first.
    fn take_expiry_notices(
        &self,
        sender: &UserName,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ExpiryNotice>>> + Send;

    /// How many messages wait for `user`.
    fn queue_depth(&self, user: &UserName) -> impl Future<Output = Result<u64>> + Send;

    // ---- image blobs ----

    /// Starts an upload. Existing id → [`StorageError::AlreadyExists`]; unknown owner →
    /// [`StorageError::NotFound`].
    fn blob_create(
        &self,
        id: &BlobId,
        owner: &UserName,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Appends chunk `index` (0, 1, 2, … in order; anything else →
    /// [`StorageError::Conflict`]). Appending to a finished blob → [`StorageError::Conflict`],
    /// to an unknown one → [`StorageError::NotFound`]; an oversized chunk →
    /// [`StorageError::TooLarge`].
    fn blob_append(
        &self,
        id: &BlobId,
        index: u32,
        data: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Marks the upload complete (again is fine). Unknown blob → [`StorageError::NotFound`].
    fn blob_finish(&self, id: &BlobId) -> impl Future<Output = Result<()>> + Send;

    /// The blob's metadata, if it exists.
    fn blob_info(&self, id: &BlobId) -> impl Future<Output = Result<Option<BlobInfo>>> + Send;

    /// Chunk `index` of a blob, if it exists.
    fn blob_chunk(
        &self,
        id: &BlobId,
        index: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Deletes a blob and its chunks (e.g. an upload cut mid-way). Returns whether it existed.
    fn blob_delete(&self, id: &BlobId) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes unfinished blobs created before `before`; returns how many.
    fn purge_unfinished_blobs(
        &self,
        before: UnixMillis,
    ) -> impl Future<Output = Result<u64>> + Send;

    // ---- MLS devices, key packages and group state ----

    /// Registers a device. Unknown user → [`StorageError::NotFound`]; a device id the user
    /// already has, or a signature key any device has → [`StorageError::AlreadyExists`]; a user
    /// with [`limits::MAX_DEVICES_PER_USER`] devices already → [`StorageError::Full`] (checked
    /// under a lock on the user, so concurrent registrations from any node never overshoot);
    /// oversized fields → [`StorageError::TooLarge`].
    fn add_device(&self, device: &NewDevice) -> impl Future<Output = Result<()>> + Send;

    /// The user's devices, by id (empty for an unknown user). Bounded by
    /// [`limits::MAX_DEVICES_PER_USER`], so not paged.
    fn devices(&self, user: &UserName) -> impl Future<Output = Result<Vec<DeviceRecord>>> + Send;

    /// Removes a device with its key packages, its state entries, its group memberships (and
    /// their cursors) and its Welcomes, in one transaction. (The references its used key packages left stay used.) Returns
    /// whether it existed.
    fn remove_device(
        &self,
        user: &UserName,
        device: DeviceId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Stores key packages for a device, all or none. Unknown device →
    /// [`StorageError::NotFound`]; a reference already stored, listed twice, or used by a
    /// group change before → [`StorageError::AlreadyExists`]; more than
    /// [`limits::MAX_KEY_PACKAGES_PER_DEVICE`] waiting afterwards (last-resort one not
    /// counted; checked under a lock on the user) → [`StorageError::Full`]; more than one
    /// last-resort package or oversized fields → [`StorageError::TooLarge`]. A last-resort
    /// package replaces the device's previous one.
    fn put_key_packages(
        &self,
        user: &UserName,
        device: DeviceId,
        packages: &[NewKeyPackage],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Hands out one key package per device of `user`, by device id: the device's oldest
    /// package, deleted as it is taken, or, when it has none left, its last-resort package
    /// (which stays). Devices with neither are left out; an unknown user has none. Atomic:
    /// concurrent takers, from any node, never get the same (non-last-resort) package.
    fn take_key_packages(
        &self,
        user: &UserName,
    ) -> impl Future<Output = Result<Vec<KeyPackageRecord>>> + Send;

    /// How many key packages wait for the device, its last-resort one not counted. Unknown
    /// device → [`StorageError::NotFound`].
    fn key_package_count(
        &self,
        user: &UserName,
        device: DeviceId,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Creates an MLS group with its first state and leaves, at state version 0 with an empty
    /// log (every leaf's cursor at 0). An existing id →
    /// [`StorageError::AlreadyExists`]; a member that is not a registered device →
    /// [`StorageError::NotFound`]; oversized state or GroupInfo, or more than
    /// [`limits::MAX_GROUP_LEAVES`] members → [`StorageError::TooLarge`]; an epoch past
    /// `i64::MAX` → [`StorageError::Conflict`].
    fn create_mls_group(&self, group: &NewMlsGroup) -> impl Future<Output = Result<()>> + Send;

    /// The MLS group, if it exists.
    fn mls_group(
        &self,
        id: &GroupId,
    ) -> impl Future<Output = Result<Option<MlsGroupRecord>>> + Send;

    /// One page of the MLS groups any of `user`'s devices is a leaf of, each once: up to
    /// `limit` with ids after `after` (from the first when `None`), by id (byte order).
    /// Walking the pages lists every group once.
    fn mls_groups_of(
        &self,
        user: &UserName,
        after: Option<&GroupId>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<MlsGroupSummary>>> + Send;

    /// The devices that are leaves of the group, sorted by user then device id. Unknown group
    /// → [`StorageError::NotFound`].
    fn mls_members(
        &self,
        id: &GroupId,
    ) -> impl Future<Output = Result<Vec<(UserName, DeviceId)>>> + Send;

    /// Writes backed-up state entries of a device atomically: each `(entry, Some(value))`
    /// stores or replaces the entry, each `(entry, None)` deletes it (an entry not stored is
    /// fine); an entry listed twice ends as its last listing says. Unknown device →
    /// [`StorageError::NotFound`]; an entry name over [`limits::MAX_STATE_KEY`] or a value
    /// over [`limits::MAX_STATE_ENTRY`] → [`StorageError::TooLarge`].
    fn put_device_state(
        &self,
        user: &UserName,
        device: DeviceId,
        entries: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> impl Future<Output = Result<()>> + Send;

    /// One page of a device's state entries, `(entry, value)` by entry (byte order): those
    /// after `after` (from the first when `None`), at most `limit` of them and, past the
    /// first, no more than fit in [`limits::MAX_STATE_PAGE_BYTES`] of values together (so a
    /// page is at most 4 MiB of values whatever `limit` says; `more` tells when the budget
    /// cut it short). Walking the pages lists every entry once. Unknown device →
    /// [`StorageError::NotFound`].
    fn device_state(
        &self,
        user: &UserName,
        device: DeviceId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<(Vec<u8>, Vec<u8>)>>> + Send;

    // ---- MLS group logs ----

    /// Appends entries to their groups' logs, in order, in one transaction (the node's
    /// writer gathers many senders' messages into one commit, as with [`Storage::commit`]).
    /// Each entry is judged on its own — a refused one changes nothing and does not refuse the
    /// others — against its group as the earlier entries of the batch left it (an entry after
    /// a commit sees the new epoch and state version). In that order:
    ///
    /// - an unknown group → [`Appended::NotFound`];
    /// - `(group, id)` appended before and still in the log (also earlier in the batch) →
    ///   [`Appended::Duplicate`];
    /// - a sender that is not a leaf (nor in the entry's own `change.added`: an external
    ///   commit) → [`Appended::NotMember`];
    /// - a proposal or commit whose `state_version` is not the group's →
    ///   [`Appended::Conflict`] (of concurrent changes from one version, from any node,
    ///   exactly one is stored);
    /// - an epoch that is not the group's → [`Appended::WrongEpoch`];
    /// - an application entry that would take the bytes of bodies in the log past
    ///   `max_log_bytes` → [`Appended::LogFull`] (proposals and commits are never refused for
    ///   room: they let the group move on);
    /// - a change spending a key package that was spent before (or listing one twice) →
    ///   [`Appended::KeyPackageReused`].
    ///
    /// A stored entry gets the group's next seq: seqs of a group are gap-free and increase in
    /// commit order, so a reader never sees seq n + 1 before n. A change replaces the group's
    /// public state, bumps its state version, removes the `removed` leaves with their
    /// cursors, adds the `added` ones with their cursors at this entry's seq, spends the key
    /// packages and stores the Welcomes. A refused entry's image blob stays (a retry may use
    /// it).
    ///
    /// `Err` means nothing of the batch was written: the database failed, or an entry is
    /// malformed — the caller checks these before, so they are not per-entry outcomes: a body
    /// over [`limits::MAX_SEALED`], oversized state, GroupInfo, Welcome or lists, or more
    /// than [`limits::MAX_GROUP_LEAVES`] leaves afterwards → [`StorageError::TooLarge`]; a
    /// kind without its change (or an application entry with one), a change's epoch that is
    /// not the entry's (+1 for a commit), or an epoch or version past `i64::MAX` →
    /// [`StorageError::Conflict`]; an added or welcomed device that is not registered, or a
    /// blob that is not a finished upload → [`StorageError::NotFound`].
    fn append_mls(
        &self,
        entries: &[MlsEntry],
        max_log_bytes: u64,
    ) -> impl Future<Output = Result<Vec<Appended>>> + Send;

    /// The group's log entries with `seq > after`, in order: at most `limit`, and only as
    /// many as fit in `max_bytes` of bodies together — but always the first one, if any (so
    /// a reader moves on whatever the sizes). Unknown group → [`StorageError::NotFound`].
    fn mls_log(
        &self,
        group: &GroupId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<MlsLogEntry>>> + Send;

    /// One page of the groups where this device has log entries it has not acknowledged
    /// (`delivered < last_seq`): up to `limit` with ids after `after` (from the first when
    /// `None`), by id (byte order); `total` counts them all.
    fn mls_unread(
        &self,
        user: &UserName,
        device: DeviceId,
        after: Option<&GroupId>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<MlsUnread>>> + Send;

    /// Moves the device's cursors forward to the seqs given, in one transaction: never back,
    /// and never past the group's `last_seq` (a larger seq is clamped to it). Groups the
    /// device is not a leaf of are ignored; a group listed twice moves to the larger seq.
    /// Returns how many cursors moved.
    fn ack_mls(
        &self,
        user: &UserName,
        device: DeviceId,
        acks: &[(GroupId, u64)],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes the log entries every current leaf of their group has delivered (all of a
    /// group without leaves), and every entry appended before `before` whatever the cursors
    /// (retention), with their image blobs; the groups' `log_bytes` follow exactly. Welcomes
    /// that arrived before `before` go too. Returns how many log entries were deleted.
    fn prune_mls(&self, before: UnixMillis) -> impl Future<Output = Result<u64>> + Send;

    /// Up to `limit` Welcomes waiting for the device, oldest first (empty for an unknown
    /// device). They stay until [`Storage::ack_welcomes`].
    fn mls_welcomes(
        &self,
        user: &UserName,
        device: DeviceId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<MlsWelcome>>> + Send;

    /// Deletes these Welcomes of the device (ids not waiting for it are ignored); returns how
    /// many.
    fn ack_welcomes(
        &self,
        user: &UserName,
        device: DeviceId,
        ids: &[u64],
    ) -> impl Future<Output = Result<u64>> + Send;
}
