//! Signed group membership changes: a chain from the creator's genesis, each link signed by
//! an admin and bound to the previous one by epoch and hash.
//!
//! The node checks roles from storage before it accepts a change; every client verifies the
//! whole chain (signatures, epochs, hashes, who was admin when) before it wraps a content key
//! for anyone, so a server that injects a member gains nothing.

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, GroupName, UserName};

/// Domain-separation prefix of the bytes an admin signs.
pub const CHANGE_SIGNING_CONTEXT: &[u8] = b"quip/1 membership change\0";

/// What a change does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Action {
    /// The genesis (epoch 0): the author creates the group and is its first admin.
    Create {
        /// The group's name.
        name: GroupName,
        /// The first members besides the author.
        #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(4)"))]
        members: Vec<UserName>,
    },
    /// An admin adds a member.
    Add(UserName),
    /// An admin removes a member.
    Remove(UserName),
    /// An admin makes a member an admin.
    Promote(UserName),
    /// An admin makes an admin a plain member.
    Demote(UserName),
    /// The author leaves. The last admin must promote someone first.
    Leave,
}

/// One link of the chain, as signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Change {
    /// The group.
    pub group: GroupId,
    /// 0 for the genesis, then previous + 1.
    pub epoch: u64,
    /// SHA-256 of the previous link's [`SignedChange`] encoding; zeros for the genesis.
    pub prev: [u8; 32],
    /// Who made (and signed) the change.
    pub author: UserName,
    /// What it does.
    pub action: Action,
    /// Author's clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Change {
    /// The exact bytes the author signs: a context prefix and the postcard encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = CHANGE_SIGNING_CONTEXT.to_vec();
        // Encoding a value of this type into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }
}

/// A change with its author's RSA-PSS-SHA256 signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SignedChange {
    /// The change.
    pub change: Change,
    /// Signature over [`Change::signing_bytes`].
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub signature: Vec<u8>,
}

impl SignedChange {
    /// Canonical encoding: what storage keeps and what the next link's `prev` hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a stored link, rejecting trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        crate::frame::decode_body(bytes)
    }
}

/// A group as listed to a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupSummary {
    /// Identity.
    pub id: GroupId,
    /// Display name.
    pub name: GroupName,
    /// Creator.
    pub creator: UserName,
    /// Current epoch.
    pub epoch: u64,
}

/// A member's role, as the server stores it (clients derive it from the chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum MemberRole {
    /// May change membership.
    Admin,
    /// May send and leave.
    Member,
}
