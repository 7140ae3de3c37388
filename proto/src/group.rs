//! Signed group membership changes: a chain from the creator's genesis, each link signed by
//! an admin and bound to the previous one by epoch and hash.
//!
//! The node checks roles from storage and the author's signature before it accepts a change;
//! every client verifies the whole chain (signatures, epochs, hashes, who was admin when)
//! before it wraps a content key for anyone, so a server that injects a member gains nothing.

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

/// Where a page of groups starts: after this group, in (name, id) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct GroupCursor {
    /// The last group's name.
    pub name: GroupName,
    /// The last group's id.
    pub id: GroupId,
}

impl From<&GroupSummary> for GroupCursor {
    fn from(group: &GroupSummary) -> Self {
        Self {
            name: group.name.clone(),
            id: group.id,
        }
    }
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

/// Why a membership change is not allowed in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The first link must be a `Create` at epoch 0 with a zero `prev`.
    #[error("a group starts with a Create at epoch 0")]
    BadGenesis,
    /// `Create` after the genesis.
    #[error("a group is created only once")]
    CreateAgain,
    /// The change names another group.
    #[error("the change is for another group")]
    WrongGroup,
    /// The change is not at the next epoch.
    #[error("the change is at epoch {got}, the group is at {current}")]
    StaleEpoch {
        /// The group's epoch.
        current: u64,
        /// The change's epoch.
        got: u64,
    },
    /// Only admins may add, remove, promote and demote.
    #[error("Only admin can add/remove partipants")]
    NotAdmin,
    /// The author is not in the group.
    #[error("{0} is not a member of this group")]
    AuthorNotMember(UserName),
    /// The target is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(UserName),
    /// The target is not a member.
    #[error("{0} is not a member")]
    NotMember(UserName),
    /// The target already has that role.
    #[error("{0} already has that role")]
    SameRole(UserName),
    /// The change would leave the group without an admin.
    #[error("the last admin cannot leave or step down; promote someone first")]
    LastAdmin,
    /// Adding would exceed the member limit.
    #[error("a group has at most {max} members")]
    TooManyMembers {
        /// The limit.
        max: usize,
    },
    /// Use `Leave` to remove yourself.
    #[error("to remove yourself, leave the group")]
    RemoveSelf,
}

/// The membership a chain of changes proves: who is in the group, with which role. Both the
/// node (against storage) and every client (against the signed chain) run changes through
/// this one state machine, so they agree on what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group: GroupId,
    /// Its name.
    pub name: GroupName,
    /// Its creator.
    pub creator: UserName,
    /// Epoch of the last applied change.
    pub epoch: u64,
    /// Members and roles.
    pub members: std::collections::BTreeMap<UserName, MemberRole>,
}

impl Membership {
    /// The state after a genesis change (epoch 0, zero `prev`, `Create` by its author).
    pub fn genesis(change: &Change) -> Result<Self, ChangeError> {
        let Action::Create { name, members } = &change.action else {
            return Err(ChangeError::BadGenesis);
        };
        if change.epoch != 0 || change.prev != [0; 32] {
            return Err(ChangeError::BadGenesis);
        }
        let mut all = std::collections::BTreeMap::new();
        all.insert(change.author.clone(), MemberRole::Admin);
        for member in members {
            all.entry(member.clone()).or_insert(MemberRole::Member);
        }
        if all.len() > crate::limits::MAX_GROUP_MEMBERS {
            return Err(ChangeError::TooManyMembers {
                max: crate::limits::MAX_GROUP_MEMBERS,
            });
        }
        Ok(Self {
            group: change.group,
            name: name.clone(),
            creator: change.author.clone(),
            epoch: 0,
            members: all,
        })
    }

    /// Whether `user` is an admin.
    pub fn is_admin(&self, user: &UserName) -> bool {
        self.members.get(user) == Some(&MemberRole::Admin)
    }

    fn admins(&self) -> usize {
        self.members
            .values()
            .filter(|r| **r == MemberRole::Admin)
            .count()
    }

    /// Checks `change` against this state without applying it.
    pub fn check(&self, change: &Change) -> Result<(), ChangeError> {
        if change.group != self.group {
            return Err(ChangeError::WrongGroup);
        }
        if change.epoch != self.epoch + 1 {
            return Err(ChangeError::StaleEpoch {
                current: self.epoch,
                got: change.epoch,
            });
        }
        let author = &change.author;
        let Some(role) = self.members.get(author) else {
            return Err(ChangeError::AuthorNotMember(author.clone()));
        };
        let admin_only = !matches!(change.action, Action::Leave);
        if admin_only && *role != MemberRole::Admin {
            return Err(ChangeError::NotAdmin);
        }
        match &change.action {
            Action::Create { .. } => Err(ChangeError::CreateAgain),
            Action::Add(user) if self.members.contains_key(user) => {
                Err(ChangeError::AlreadyMember(user.clone()))
            }
            Action::Add(_) if self.members.len() >= crate::limits::MAX_GROUP_MEMBERS => {
                Err(ChangeError::TooManyMembers {
                    max: crate::limits::MAX_GROUP_MEMBERS,
                })
            }
            Action::Add(_) => Ok(()),
            Action::Remove(user) if user == author => Err(ChangeError::RemoveSelf),
            Action::Remove(user) | Action::Promote(user) | Action::Demote(user) => {
                match (self.members.get(user), &change.action) {
                    (None, _) => Err(ChangeError::NotMember(user.clone())),
                    (Some(MemberRole::Admin), Action::Promote(_))
                    | (Some(MemberRole::Member), Action::Demote(_)) => {
                        Err(ChangeError::SameRole(user.clone()))
                    }
                    (Some(MemberRole::Admin), Action::Demote(_)) if self.admins() == 1 => {
                        Err(ChangeError::LastAdmin)
                    }
                    _ => Ok(()),
                }
            }
            Action::Leave
                if *role == MemberRole::Admin && self.admins() == 1 && self.members.len() > 1 =>
            {
                Err(ChangeError::LastAdmin)
            }
            Action::Leave => Ok(()),
        }
    }

    /// Checks and applies `change`.
    pub fn apply(&mut self, change: &Change) -> Result<(), ChangeError> {
        self.check(change)?;
        match &change.action {
            Action::Add(user) => {
                self.members.insert(user.clone(), MemberRole::Member);
            }
            Action::Remove(user) => {
                self.members.remove(user);
            }
            Action::Promote(user) => {
                self.members.insert(user.clone(), MemberRole::Admin);
            }
            Action::Demote(user) => {
                self.members.insert(user.clone(), MemberRole::Member);
            }
            Action::Leave => {
                self.members.remove(&change.author);
            }
            Action::Create { .. } => {}
        }
        self.epoch = change.epoch;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserName {
        UserName::new(name).unwrap()
    }

    fn change(epoch: u64, author: &str, action: Action) -> Change {
        Change {
            group: GroupId([1; 16]),
            epoch,
            prev: [0; 32],
            author: user(author),
            action,
            at_ms: 0,
        }
    }

    fn group() -> Membership {
        Membership::genesis(&change(
            0,
            "alice",
            Action::Create {
                name: GroupName::new("g").unwrap(),
                members: vec![user("bob"), user("alice")],
            },
        ))
        .unwrap()
    }

    /// Applies `action` by `author` at the next epoch; the expected result.
    fn check(state: &mut Membership, author: &str, action: Action, want: Result<(), ChangeError>) {
        let next = change(state.epoch + 1, author, action.clone());
        assert_eq!(state.apply(&next), want, "{author} {action:?}");
    }

    #[test]
    fn genesis_makes_the_author_admin() {
        let g = group();
        assert!(g.is_admin(&user("alice")));
        assert_eq!(g.members.len(), 2);
        let mut bad = change(0, "alice", Action::Leave);
        assert_eq!(Membership::genesis(&bad), Err(ChangeError::BadGenesis));
        bad = change(
            1,
            "alice",
            Action::Create {
                name: GroupName::new("g").unwrap(),
                members: vec![],
            },
        );
        assert_eq!(Membership::genesis(&bad), Err(ChangeError::BadGenesis));
    }

    #[test]
    fn rules() {
        use Action::*;
        let mut g = group();
        check(
            &mut g,
            "bob",
            Add(user("carol")),
            Err(ChangeError::NotAdmin),
        );
        check(
            &mut g,
            "mallory",
            Add(user("carol")),
            Err(ChangeError::AuthorNotMember(user("mallory"))),
        );
        check(
            &mut g,
            "alice",
            Add(user("bob")),
            Err(ChangeError::AlreadyMember(user("bob"))),
        );
        check(
            &mut g,
            "alice",
            Remove(user("carol")),
            Err(ChangeError::NotMember(user("carol"))),
        );
        check(
            &mut g,
            "alice",
            Remove(user("alice")),
            Err(ChangeError::RemoveSelf),
        );
        check(
            &mut g,
            "alice",
            Demote(user("alice")),
            Err(ChangeError::LastAdmin),
        );
        check(&mut g, "alice", Leave, Err(ChangeError::LastAdmin));
        check(&mut g, "alice", Promote(user("bob")), Ok(()));
        check(
            &mut g,
            "alice",
            Promote(user("bob")),
            Err(ChangeError::SameRole(user("bob"))),
        );
        check(&mut g, "bob", Add(user("carol")), Ok(()));
        check(&mut g, "alice", Leave, Ok(()));
        check(&mut g, "carol", Leave, Ok(()));
        check(&mut g, "bob", Leave, Ok(()));
        assert!(g.members.is_empty());
        assert_eq!(g.epoch, 5);
    }

    #[test]
    fn epochs_must_follow() {
        let mut g = group();
        let skipped = change(2, "alice", Action::Add(user("carol")));
        assert_eq!(
            g.apply(&skipped),
            Err(ChangeError::StaleEpoch { current: 0, got: 2 })
        );
        let stale = change(0, "alice", Action::Add(user("carol")));
        assert!(matches!(
            g.apply(&stale),
            Err(ChangeError::StaleEpoch { .. })
        ));
        let mut other = change(1, "alice", Action::Add(user("carol")));
        other.group = GroupId([2; 16]);
        assert_eq!(g.apply(&other), Err(ChangeError::WrongGroup));
        assert_eq!(g.epoch, 0, "nothing applied");
    }
}
