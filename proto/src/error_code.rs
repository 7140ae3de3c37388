//! Stable error codes every server answer uses. Codes only ever get appended; the number
//! of a code never changes (postcard encodes the variant index, pinned by snapshot tests).

use serde::{Deserialize, Serialize};

/// Why a request failed, in a form a program can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ErrorCode {
    /// The frame could not be decoded or breaks a structural rule.
    Malformed,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// The request needs a logged-in session.
    Unauthenticated,
    /// The session is already logged in.
    AlreadyLoggedIn,
    /// The name is taken (in any case).
    UserExists,
    /// Unknown user or wrong password (deliberately indistinguishable).
    InvalidCredentials,
    /// Too many failed attempts; try again later.
    Throttled,
    /// The session token is unknown or expired: log in again.
    SessionExpired,
    /// No such user.
    UnknownUser,
    /// No such group, or the caller is not in it.
    UnknownGroup,
    /// Only admin can add/remove participants.
    NotAdmin,
    /// The caller or target is not a member.
    NotMember,
    /// The user is already a member.
    AlreadyMember,
    /// The membership change is not at the group's next epoch.
    StaleEpoch,
    /// The envelope breaks a structural rule.
    InvalidEnvelope,
    /// The envelope's sender is not the session's user.
    SenderMismatch,
    /// A message to oneself only.
    SelfMessage,
    /// A frame, image or field is over its limit.
    TooLarge,
    /// The last admin cannot leave without promoting someone.
    LastAdmin,
    /// The creator already has a group with this name.
    GroupNameTaken,
    /// The server is overloaded or full; retry later elsewhere.
    Busy,
    /// Something failed on the server; nothing was lost.
    Internal,
    /// The peer spoke a protocol this endpoint does not serve.
    WrongService,
    /// No node is available.
    NoService,
    /// The relay named a node the master does not know.
    UnknownNode,
    /// No such blob, or it is not for the caller.
    UnknownBlob,
    /// A node sent a heartbeat or relay before registering.
    NotRegistered,
    /// The signed change is invalid (bad signature, bad chain link, wrong author).
    InvalidChange,
    /// Too many requests, connections or signups from this client or address; the error's
    /// `retry_after_ms` says when to try again.
    RateLimited,
    /// A quota is full (the recipient's queue, or what one sender may queue for them).
    QuotaExceeded,
    /// The delivery service refused an MLS message: bad signature, not for this group's
    /// state, a device credential that does not verify, or against the group's policy.
    InvalidMls,
    /// No such device of the caller.
    UnknownDevice,
    /// Another session is using that device.
    DeviceBusy,
    /// The session has not said which device it is (`EnrollDevice` or `UseDevice`).
    NoDevice,
}
