//! A group's policy — its name and admins, a group context extension — and the rules every
//! commit must follow. The node (on the public state) and every client (on its own state)
//! run the same [`CommitSummary::check`], so a commit one honest party accepts, all do.
//!
//! The rules:
//! - only an admin adds or removes another user's devices;
//! - anyone may remove their own devices (leaving is removing all of them, or a self-remove);
//! - a user may add their own devices, by an Add or by an external commit that joins the
//!   device itself (which may only remove that user's own devices);
//! - only an admin changes the policy; afterwards there is at least one admin, and every admin
//!   still has a device in the group;
//! - every leaf that enters or changes has a device credential that verifies against its
//!   user's account key, and a leaf never changes user or device;
//! - pre-shared keys, re-initialisation and custom proposals are refused.

use std::collections::{BTreeMap, BTreeSet};

use openmls::prelude::{
    Extension, Extensions, GroupContext, LeafNode, LeafNodeIndex, Proposal, Sender, StagedCommit,
    UnknownExtension,
};
use quip_proto::ids::{DeviceId, GroupName, UserName};
use quip_proto::limits::MAX_GROUP_MEMBERS;
use serde::{Deserialize, Serialize};

use crate::credential::DeviceCredential;
use crate::{POLICY_EXTENSION, Refusal, required_capabilities};

/// What non-admins are told when they try an admin's change. The interactive program shows
/// exactly this line (the seed's wording, misspelling included).
pub const ONLY_ADMIN: &str = "Only admin can add/remove partipants";

/// A group's name and admins, carried in its context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPolicy {
    /// Display name.
    pub name: GroupName,
    /// The admins, sorted, no repeats.
    pub admins: Vec<UserName>,
}

impl GroupPolicy {
    /// A policy with `admins` sorted and deduplicated.
    pub fn new(name: GroupName, mut admins: Vec<UserName>) -> Self {
        admins.sort();
        admins.dedup();
        Self { name, admins }
    }

    /// Whether `user` is an admin.
    pub fn is_admin(&self, user: &UserName) -> bool {
        self.admins.binary_search(user).is_ok()
    }

    /// The group context extensions that carry this policy (with the required capabilities).
    pub fn extensions(&self) -> Extensions<GroupContext> {
        let bytes = postcard::to_stdvec(self).expect("a policy always encodes");
        Extensions::from_vec(vec![
            required_capabilities(),
            Extension::Unknown(POLICY_EXTENSION, UnknownExtension(bytes)),
        ])
        .expect("two distinct extensions")
    }

    /// Reads the policy from a group context.
    pub fn from_context(context: &GroupContext) -> Result<Self, Refusal> {
        let Some(Extension::Unknown(_, UnknownExtension(bytes))) =
            context.extensions().iter().find(|e| {
                e.extension_type() == openmls::prelude::ExtensionType::Unknown(POLICY_EXTENSION)
            })
        else {
            return Err(Refusal::Policy("the group has no policy".into()));
        };
        let (policy, rest) = postcard::take_from_bytes::<Self>(bytes)
            .map_err(|e| Refusal::Policy(format!("unreadable policy: {e}")))?;
        if !rest.is_empty() {
            return Err(Refusal::Policy("trailing bytes after the policy".into()));
        }
        if policy.admins.len() > MAX_GROUP_MEMBERS || policy.admins.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Refusal::Policy(
                "the admin list is not sorted and unique".into(),
            ));
        }
        Ok(policy)
    }
}

/// One leaf: whose device it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Device {
    /// The user.
    pub user: UserName,
    /// The device.
    pub device: DeviceId,
}

impl Device {
    /// The device a leaf node's credential names (not yet verified against the account key).
    pub fn of_leaf(leaf: &LeafNode) -> Result<(Self, DeviceCredential), Refusal> {
        Self::of_leaf_credential(leaf.credential())
    }

    /// The device an MLS credential names (not yet verified against the account key).
    pub fn of_leaf_credential(
        credential: &openmls::prelude::Credential,
    ) -> Result<(Self, DeviceCredential), Refusal> {
        let credential = DeviceCredential::from_credential(credential)?;
        Ok((
            Self {
                user: credential.user.clone(),
                device: credential.device,
            },
            credential,
        ))
    }
}

/// A leaf that enters the group or changes, with what must verify against its account key.
#[derive(Clone, Debug)]
pub struct NewLeaf {
    /// Whose device.
    pub device: Device,
    /// Its credential.
    pub credential: DeviceCredential,
    /// Its MLS signature key (what the account key signed).
    pub signature_key: Vec<u8>,
}

/// Who made a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committer {
    /// A member, at its leaf.
    Member(Device),
    /// A device joining by external commit.
    Joiner(Device),
}

impl Committer {
    /// The committing device.
    pub fn device(&self) -> &Device {
        match self {
            Self::Member(d) | Self::Joiner(d) => d,
        }
    }
}

/// What a commit does, read from its staged form and the state before it: enough to check
/// the policy and to route (who joined, who left).
#[derive(Clone, Debug)]
pub struct CommitSummary {
    /// Who commits.
    pub committer: Committer,
    /// Devices added by Add proposals, with who proposed each and its key package reference.
    pub added: Vec<(Device, Device, Vec<u8>)>,
    /// Devices removed, with who proposed each removal.
    pub removed: Vec<(Device, Device)>,
    /// Every leaf that enters or changes.
    pub new_leaves: Vec<NewLeaf>,
    /// Whether the policy changes, and who proposed it.
    pub policy_change: Option<Device>,
    /// Policy before.
    pub policy_before: GroupPolicy,
    /// Policy after.
    pub policy_after: GroupPolicy,
    /// Every device in the group after the commit.
    pub members_after: BTreeSet<Device>,
    /// Every device in the group before.
    pub members_before: BTreeSet<Device>,
}

impl CommitSummary {
    /// Reads a staged commit. `leaf_before` looks up a leaf of the state the commit applies
    /// to; `members_before` lists that state's devices by leaf index.
    pub fn read(
        staged: &StagedCommit,
        sender: &Sender,
        context_before: &GroupContext,
        members_before: &BTreeMap<LeafNodeIndex, Device>,
        key_package_ref: impl Fn(&openmls::prelude::KeyPackage) -> Option<Vec<u8>>,
    ) -> Result<Self, Refusal> {
        let device_at = |index: LeafNodeIndex| {
            members_before
                .get(&index)
                .cloned()
                .ok_or_else(|| Refusal::NotMember(format!("no member at leaf {}", index.u32())))
        };
        let mut new_leaves = Vec::new();
        let committer = match sender {
            Sender::Member(index) => {
                let device = device_at(*index)?;
                if let Some(leaf) = staged.update_path_leaf_node() {
                    let entering = new_leaf(leaf)?;
                    if entering.device != device {
                        return Err(Refusal::Credential(
                            "a leaf may not change its user or device".into(),
                        ));
                    }
                    new_leaves.push(entering);
                }
                Committer::Member(device)
            }
            Sender::NewMemberCommit => {
                let leaf = staged
                    .update_path_leaf_node()
                    .ok_or_else(|| Refusal::Invalid("an external commit without a path".into()))?;
                let entering = new_leaf(leaf)?;
                let device = entering.device.clone();
                new_leaves.push(entering);
                Committer::Joiner(device)
            }
            _ => {
                return Err(Refusal::Policy(
                    "only members and joining devices commit".into(),
                ));
            }
        };
        let proposer = |sender: &Sender| match sender {
            Sender::Member(index) => device_at(*index),
            Sender::NewMemberCommit => Ok(committer.device().clone()),
            _ => Err(Refusal::Policy("proposals come from members only".into())),
        };

        let policy_before = GroupPolicy::from_context(context_before)?;
        let policy_after = GroupPolicy::from_context(staged.group_context())?;
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut policy_change = None;
        for queued in staged.queued_proposals() {
            let by = proposer(queued.sender())?;
            match queued.proposal() {
                Proposal::Add(add) => {
                    let entering = new_leaf(add.key_package().leaf_node())?;
                    let reference = key_package_ref(add.key_package())
                        .ok_or_else(|| Refusal::Invalid("no key package reference".into()))?;
                    added.push((entering.device.clone(), by, reference));
                    new_leaves.push(entering);
                }
                Proposal::Update(update) => {
                    let entering = new_leaf(update.leaf_node())?;
                    if entering.device != by {
                        return Err(Refusal::Credential(
                            "a leaf may not change its user or device".into(),
                        ));
                    }
                    new_leaves.push(entering);
                }
                Proposal::Remove(remove) => removed.push((device_at(remove.removed())?, by)),
                Proposal::SelfRemove => removed.push((by.clone(), by)),
                Proposal::GroupContextExtensions(_) => policy_change = Some(by),
                Proposal::ExternalInit(_) => {}
                Proposal::PreSharedKey(_) | Proposal::ReInit(_) | Proposal::Custom(_) => {
                    return Err(Refusal::Policy(
                        "pre-shared keys, re-init and custom proposals are not used".into(),
                    ));
                }
            }
        }
        if policy_change.is_none() && policy_after != policy_before {
            return Err(Refusal::Policy(
                "the policy changed without a proposal".into(),
            ));
        }

        let members_before_set: BTreeSet<Device> = members_before.values().cloned().collect();
        let mut members_after = members_before_set.clone();
        for (device, _) in &removed {
            members_after.remove(device);
        }
        for (device, _, _) in &added {
            if !members_after.insert(device.clone()) {
                return Err(Refusal::Policy(format!(
                    "device {} of {} is already in the group",
                    device.device, device.user
                )));
            }
        }
        if let Committer::Joiner(device) = &committer
            && !members_after.insert(device.clone())
        {
            {
                return Err(Refusal::Policy(
                    "the joining device is already in the group".into(),
                ));
            }
        }
        Ok(Self {
            committer,
            added,
            removed,
            new_leaves,
            policy_change,
            policy_before,
            policy_after,
            members_after,
            members_before: members_before_set,
        })
    }

    /// Checks the policy, and every new leaf's credential against its user's account key
    /// (`account_key` answers SPKI DER, or `None` for a user it does not know).
    pub fn check(&self, account_key: impl Fn(&UserName) -> Option<Vec<u8>>) -> Result<(), Refusal> {
        let admin = |d: &Device| self.policy_before.is_admin(&d.user);
        let users_before: BTreeSet<&UserName> =
            self.members_before.iter().map(|d| &d.user).collect();
        match &self.committer {
            Committer::Member(_) => {
                for (device, by, _) in &self.added {
                    if device.user != by.user && !admin(by) {
                        return Err(Refusal::Policy(ONLY_ADMIN.into()));
                    }
                }
                for (device, by) in &self.removed {
                    if device.user != by.user && !admin(by) {
                        return Err(Refusal::Policy(ONLY_ADMIN.into()));
                    }
                }
            }
            Committer::Joiner(joiner) => {
                if !users_before.contains(&joiner.user) {
                    return Err(Refusal::Policy(format!(
                        "{} is not in the group: only a member's own device may join by itself",
                        joiner.user
                    )));
                }
                if !self.added.is_empty() || self.policy_change.is_some() {
                    return Err(Refusal::Policy(
                        "a joining device may not add members or change the policy".into(),
                    ));
                }
                if self.removed.iter().any(|(d, _)| d.user != joiner.user) {
                    return Err(Refusal::Policy(
                        "a joining device may only remove its own user's devices".into(),
                    ));
                }
            }
        }
        if let Some(by) = &self.policy_change
            && !admin(by)
        {
            return Err(Refusal::Policy("only an admin changes the group".into()));
        }
        if self.policy_after.admins.is_empty() {
            return Err(Refusal::Policy("a group keeps at least one admin".into()));
        }
        let users_after: BTreeSet<&UserName> = self.members_after.iter().map(|d| &d.user).collect();
        if !users_after.is_empty()
            && let Some(gone) = self
                .policy_after
                .admins
                .iter()
                .find(|a| !users_after.contains(a))
        {
            return Err(Refusal::Policy(format!(
                "{gone} would stay admin without being in the group: name another admin first"
            )));
        }
        if users_after.len() > MAX_GROUP_MEMBERS {
            return Err(Refusal::Policy(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        for leaf in &self.new_leaves {
            let key = account_key(&leaf.device.user).ok_or_else(|| {
                Refusal::Credential(format!("{} has no account key", leaf.device.user))
            })?;
            leaf.credential.verify(&leaf.signature_key, &key)?;
        }
        Ok(())
    }

    /// Users whose account keys [`Self::check`] needs.
    pub fn users_to_verify(&self) -> BTreeSet<UserName> {
        self.new_leaves
            .iter()
            .map(|l| l.device.user.clone())
            .collect()
    }
}

fn new_leaf(leaf: &LeafNode) -> Result<NewLeaf, Refusal> {
    let (device, credential) = Device::of_leaf(leaf)?;
    Ok(NewLeaf {
        device,
        credential,
        signature_key: leaf.signature_key().as_slice().to_vec(),
    })
}
