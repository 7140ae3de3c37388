//! Validated identifiers: user names, group names, node names and opaque ids.
//!
//! Every type here checks its invariant on construction *and* on decode
//! (`#[serde(try_from = …)]`), so a value that exists is a valid one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidId;

/// Shortest user name accepted.
pub const USER_NAME_MIN: usize = 3;
/// Longest user name accepted.
pub const USER_NAME_MAX: usize = 32;
/// Longest group name accepted, in characters.
pub const GROUP_NAME_MAX: usize = 64;
/// Longest node name accepted.
pub const NODE_NAME_MAX: usize = 63;

/// A user's name: 3–32 characters of `a-z`, `0-9`, `_`, `-`, `.`, starting with a letter.
///
/// Names are case-insensitive: input is lowercased on construction, so `Alice` and `alice`
/// are the same account and the stored form is always lowercase.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    /// Validates and lowercases `raw`.
    pub fn new(raw: &str) -> Result<Self, InvalidId> {
        let name = raw.trim().to_ascii_lowercase();
        let len = name.len();
        if !(USER_NAME_MIN..=USER_NAME_MAX).contains(&len) {
            return Err(InvalidId::Length {
                what: "user name",
                min: USER_NAME_MIN,
                max: USER_NAME_MAX,
                len,
            });
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(InvalidId::Charset {
                what: "user name",
                allowed: "must start with a letter",
            });
        }
        if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        }) {
            return Err(InvalidId::Charset {
                what: "user name",
                allowed: "letters, digits, '_', '-' and '.'",
            });
        }
        Ok(Self(name))
    }

    /// The canonical (lowercase) form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group's display name: 1–64 printable characters, trimmed. Group names are unique per
/// creator (two people may each have a group called "family"); the group's identity is its
/// [`GroupId`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

impl GroupName {
    /// Validates `raw` (trimmed; no control characters).
    pub fn new(raw: &str) -> Result<Self, InvalidId> {
        let name = raw.trim();
        let len = name.chars().count();
        if !(1..=GROUP_NAME_MAX).contains(&len) {
            return Err(InvalidId::Length {
                what: "group name",
                min: 1,
                max: GROUP_NAME_MAX,
                len,
            });
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidId::Charset {
                what: "group name",
                allowed: "printable characters",
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node's name, as written in its certificate: 1–63 characters of `a-z`, `0-9`, `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Validates `raw` as a DNS-label-like name.
    pub fn new(raw: &str) -> Result<Self, InvalidId> {
        let len = raw.len();
        if !(1..=NODE_NAME_MAX).contains(&len) {
            return Err(InvalidId::Length {
                what: "node name",
                min: 1,
                max: NODE_NAME_MAX,
                len,
            });
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(InvalidId::Charset {
                what: "node name",
                allowed: "lowercase letters, digits and '-'",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_id_impls {
    ($($ty:ident),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = InvalidId;
            fn try_from(raw: String) -> Result<Self, InvalidId> {
                Self::new(&raw)
            }
        }
        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }
        impl std::str::FromStr for $ty {
            type Err = InvalidId;
            fn from_str(raw: &str) -> Result<Self, InvalidId> {
                Self::new(raw)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    )*};
}
string_id_impls!(UserName, GroupName, NodeName);

macro_rules! byte_ids {
    ($($(#[$doc:meta])* $ty:ident($n:literal);)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $ty(pub [u8; $n]);

        impl $ty {
            /// Length in bytes.
            pub const LEN: usize = $n;

            /// Builds the id from a slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidId> {
                bytes.try_into().map(Self).map_err(|_| InvalidId::Bytes {
                    what: stringify!($ty),
                    expected: $n,
                    len: bytes.len(),
                })
            }

            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                self.0.iter().map(|b| format!("{b:02x}")).collect()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.to_hex())
            }
        }
    )*};
}

byte_ids! {
    /// A message's id: 16 random bytes chosen by the sender. Queues are idempotent by it and
    /// clients drop repeats by it.
    MsgId(16);
    /// A group's id: 16 random bytes chosen by the creator and bound into the signed genesis.
    GroupId(16);
    /// An image blob's id: 16 random bytes chosen by the uploader.
    BlobId(16);
}

/// One installation of the client (a *device*) of a user: a random number the device picks
/// when it enrolls, unique per user. Every device is its own member (leaf) of each MLS group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(pub u64);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A resumable session token: 32 random bytes from the node. Only its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionToken(pub [u8; 32]);

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        let ok = |raw: &str, want: &str| assert_eq!(UserName::new(raw).unwrap().as_str(), want);
        let bad = |raw: &str| assert!(UserName::new(raw).is_err(), "{raw:?} accepted");
        ok("alice", "alice");
        ok("Alice", "alice");
        ok("  bob.smith_2-x ", "bob.smith_2-x");
        bad("al");
        bad(&"a".repeat(33));
        bad("1alice");
        bad("al ice");
        bad("../etc");
        bad("alicé");
        bad("");
    }

    #[test]
    fn group_and_node_names() {
        assert_eq!(GroupName::new("  Family  ").unwrap().as_str(), "Family");
        assert!(GroupName::new("   ").is_err());
        assert!(GroupName::new("a\nb").is_err());
        assert!(GroupName::new(&"é".repeat(64)).is_ok());
        assert!(GroupName::new(&"é".repeat(65)).is_err());
        assert!(NodeName::new("node-1").is_ok());
        assert!(NodeName::new("Node_1").is_err());
    }

    #[test]
    fn decoding_validates() {
        let bytes = postcard::to_stdvec("1nvalid").unwrap();
        assert!(postcard::from_bytes::<UserName>(&bytes).is_err());
        let bytes = postcard::to_stdvec("Alice").unwrap();
        assert_eq!(
            postcard::from_bytes::<UserName>(&bytes).unwrap().as_str(),
            "alice"
        );
    }
}
