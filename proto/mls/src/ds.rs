//! The node's side of MLS: a *validating delivery service*.
//!
//! [`PublicState`] is one group's public state (openmls `PublicGroup`: ratchet tree, context,
//! transcript hashes, pending proposals — no secrets) plus the latest signed group info a
//! joining device needs. Every message a member submits goes through [`PublicState::read`]
//! before anything is stored: group, epoch, signatures and membership by openmls, the sender
//! against the session's device, and for commits the group policy
//! ([`crate::policy::CommitSummary::check`]). Only then does the node store it and
//! [`PublicState::accept_commit`] (or [`PublicState::accept_proposal`]) moves the state on.
//! All of it runs on [`VerifyOnly`] crypto.

use std::collections::{BTreeMap, BTreeSet};

use crate::ds_store::DsStore;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::tls_codec::{DeserializeBytes, Serialize as _};
use openmls::prelude::{
    ContentType, GroupEpoch, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn,
    OpenMlsSignaturePublicKey, ProcessedMessageContent, Proposal, ProposalStore, ProtocolMessage,
    PublicGroup, QueuedProposal, RatchetTreeIn, Sender, SignatureScheme, StagedCommit, Verifiable,
};
use quip_proto::ids::{GroupId, UserName};

use crate::policy::{CommitSummary, Committer, Device, GroupPolicy, ONLY_ADMIN};
use crate::{CIPHERSUITE, MAX_MESSAGE, Refusal, VerifyOnly};

/// One record of the delivery service's store: kind, key, value.
type Record = (u8, Vec<u8>, Vec<u8>);

/// Largest serialized public state accepted back from storage.
pub const MAX_STATE: usize = 8 * 1024 * 1024;

/// One group's public state and latest group info.
#[derive(Debug)]
pub struct PublicState {
    group: PublicGroup,
    storage: DsStore,
    group_info: Vec<u8>,
}

/// A message that passed [`PublicState::read`], ready to be stored and then accepted.
#[derive(Debug)]
pub enum Incoming {
    /// A commit: the next epoch.
    Commit(Box<PendingCommit>),
    /// A standalone proposal (a member removing itself or, as admin, another's device), kept
    /// until a commit covers it.
    Proposal(Box<QueuedProposal>),
    /// An application message (ciphertext) for the current epoch.
    Application,
}

/// A commit openmls accepted against the public state; the policy and the new devices'
/// credentials are checked next ([`PendingCommit::check`]).
#[derive(Debug)]
pub struct PendingCommit {
    staged: StagedCommit,
    /// What it does.
    pub summary: CommitSummary,
}

/// A commit that passed every check but the group info that must come with it.
#[derive(Debug)]
pub struct CheckedCommit(PendingCommit);

impl PendingCommit {
    /// Users whose account keys [`Self::check`] needs (fetch them first).
    pub fn users_to_verify(&self) -> std::collections::BTreeSet<UserName> {
        self.summary.users_to_verify()
    }

    /// Checks the group policy and every new device's credential against its user's account
    /// key.
    pub fn check(
        self,
        account_key: impl Fn(&UserName) -> Option<Vec<u8>>,
    ) -> Result<CheckedCommit, Refusal> {
        self.summary.check(account_key)?;
        Ok(CheckedCommit(self))
    }
}

impl CheckedCommit {
    /// What it does.
    pub fn summary(&self) -> &CommitSummary {
        &self.0.summary
    }
}

/// What an accepted commit changed.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The new epoch.
    pub epoch: u64,
    /// Devices added by Add proposals, with their key package references (they get the
    /// Welcome).
    pub added: Vec<(Device, Vec<u8>)>,
    /// A device that joined by itself (external commit).
    pub joined: Option<Device>,
    /// Devices removed.
    pub removed: Vec<Device>,
    /// Every device in the group now.
    pub members: BTreeSet<Device>,
    /// The policy now.
    pub policy: GroupPolicy,
}

impl PublicState {
    /// Starts tracking a new group from its creator's signed group info (epoch 0) and ratchet
    /// tree. The group must have exactly one device, `creator`, whose credential verifies
    /// against `account_key`, and a policy naming the creator its one admin.
    pub fn create(
        group_id: &GroupId,
        group_info: &[u8],
        ratchet_tree: &[u8],
        creator: &Device,
        account_key: &[u8],
    ) -> Result<(Self, GroupPolicy), Refusal> {
        let info = read_group_info(group_info)?;
        if info.group_id().as_slice() != group_id.0 {
            return Err(Refusal::WrongGroup);
        }
        if info.ciphersuite() != CIPHERSUITE {
            return Err(Refusal::Invalid("not Quip's ciphersuite".into()));
        }
        if info.epoch() != GroupEpoch::from(0) {
            return Err(Refusal::Invalid("a new group starts at epoch 0".into()));
        }
        let tree = read_exact::<RatchetTreeIn>(ratchet_tree)?;
        let storage = DsStore::default();
        let (group, _) =
            PublicGroup::from_external(&VerifyOnly, &storage, tree, info, ProposalStore::new())
                .map_err(Refusal::invalid)?;
        let members: Vec<_> = group.members().collect();
        let [only] = members.as_slice() else {
            return Err(Refusal::Policy(
                "a new group has exactly its creator's device".into(),
            ));
        };
        let leaf = group
            .leaf(only.index)
            .ok_or_else(|| Refusal::Invalid("no creator leaf".into()))?;
        let (device, credential) = Device::of_leaf(leaf)?;
        if &device != creator {
            return Err(Refusal::NotMember(
                "the group's one device is not the creator's".into(),
            ));
        }
        credential.verify(leaf.signature_key().as_slice(), account_key)?;
        let policy = GroupPolicy::from_context(group.group_context())?;
        if policy.admins != [creator.user.clone()] {
            return Err(Refusal::Policy(
                "a new group's one admin is its creator".into(),
            ));
        }
        let state = Self {
            group,
            storage,
            group_info: group_info.to_vec(),
        };
        Ok((state, policy))
    }

    /// The group's epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The group's policy.
    pub fn policy(&self) -> Result<GroupPolicy, Refusal> {
        GroupPolicy::from_context(self.group.group_context())
    }

    /// The group's devices, by leaf.
    pub fn devices(&self) -> BTreeMap<LeafNodeIndex, Device> {
        self.group
            .members()
            .filter_map(|m| {
                let leaf = self.group.leaf(m.index)?;
                Some((m.index, Device::of_leaf(leaf).ok()?.0))
            })
            .collect()
    }

    /// The latest signed group info (`MlsMessage`), for a device that joins.
    pub fn group_info(&self) -> &[u8] {
        &self.group_info
    }

    /// The ratchet tree, serialized, for a device that joins.
    pub fn ratchet_tree(&self) -> Vec<u8> {
        self.group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .expect("a tree always serializes")
    }

    /// Checks a message `from` a session's device. Commits and proposals are checked against
    /// the public state and the policy; application messages for their group and epoch and
    /// that `from` is a member. Nothing changes until `accept_*`.
    pub fn read(&self, message: &[u8], from: &Device) -> Result<Incoming, Refusal> {
        if message.len() > MAX_MESSAGE {
            return Err(Refusal::Malformed(format!(
                "{} bytes is over the limit of {MAX_MESSAGE}",
                message.len()
            )));
        }
        let message = read_exact::<MlsMessageIn>(message)?;
        let protocol: ProtocolMessage = match message.extract() {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            _ => return Err(Refusal::Malformed("not a group message".into())),
        };
        if protocol.group_id() != self.group.group_id() {
            return Err(Refusal::WrongGroup);
        }
        if protocol.epoch() != self.group.group_context().epoch() {
            return Err(Refusal::WrongEpoch {
                current: self.epoch(),
                got: protocol.epoch().as_u64(),
            });
        }
        let devices = self.devices();
        let ProtocolMessage::PublicMessage(public) = protocol else {
            if protocol.content_type() != ContentType::Application {
                return Err(Refusal::Policy(
                    "proposals and commits travel in the clear".into(),
                ));
            }
            if !devices.values().any(|d| d == from) {
                return Err(Refusal::NotMember(format!(
                    "device {} of {} is not in the group",
                    from.device, from.user
                )));
            }
            return Ok(Incoming::Application);
        };
        let processed = self
            .group
            .process_message(&VerifyOnly, *public)
            .map_err(Refusal::invalid)?;
        let sender = processed.sender().clone();
        if let Sender::Member(index) = &sender
            && devices.get(index) != Some(from)
        {
            {
                return Err(Refusal::NotMember(
                    "the message is signed by another device".into(),
                ));
            }
        }
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let summary = CommitSummary::read(
                    &staged,
                    &sender,
                    self.group.group_context(),
                    &devices,
                    |kp| kp.hash_ref(&VerifyOnly).ok().map(|r| r.as_slice().to_vec()),
                )?;
                if summary.committer.device() != from {
                    return Err(Refusal::NotMember("the commit is by another device".into()));
                }
                Ok(Incoming::Commit(Box::new(PendingCommit {
                    staged: *staged,
                    summary,
                })))
            }
            ProcessedMessageContent::ProposalMessage(queued) => {
                let Sender::Member(index) = queued.sender() else {
                    return Err(Refusal::Policy("proposals come from members only".into()));
                };
                let by = devices
                    .get(index)
                    .ok_or_else(|| Refusal::NotMember("no such leaf".into()))?;
                match queued.proposal() {
                    Proposal::SelfRemove => {}
                    Proposal::Remove(remove) => {
                        let gone = devices
                            .get(&remove.removed())
                            .ok_or_else(|| Refusal::NotMember("no such leaf".into()))?;
                        let policy = self.policy()?;
                        if gone.user != by.user && !policy.is_admin(&by.user) {
                            return Err(Refusal::Policy(ONLY_ADMIN.into()));
                        }
                    }
                    _ => {
                        return Err(Refusal::Policy(
                            "only removals are proposed on their own; commit the rest".into(),
                        ));
                    }
                }
                Ok(Incoming::Proposal(queued))
            }
            ProcessedMessageContent::ApplicationMessage(_) => {
                Err(Refusal::Policy("application messages are encrypted".into()))
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
                Err(Refusal::Policy("external proposals are not used".into()))
            }
            // Only a member's own group reports its own messages; a public group never does.
            _ => Err(Refusal::Invalid("unexpected message content".into())),
        }
    }

    /// Moves the group to the commit's epoch. `group_info` is the committer's signed group
    /// info for the new epoch (what a device joining later needs); it must be signed by the
    /// committer and describe exactly the state the commit leads to.
    pub fn accept_commit(
        &mut self,
        checked: CheckedCommit,
        group_info: &[u8],
    ) -> Result<Accepted, Refusal> {
        let PendingCommit { staged, summary } = checked.0;
        let info = read_group_info(group_info)?;
        if info.group_context() != staged.group_context() {
            return Err(Refusal::Invalid(
                "the group info does not describe the commit's new epoch".into(),
            ));
        }
        let signer_key = match staged.update_path_leaf_node() {
            Some(leaf) => leaf.signature_key().as_slice().to_vec(),
            None => {
                let Committer::Member(device) = &summary.committer else {
                    return Err(Refusal::Invalid("an external commit without a path".into()));
                };
                let index = self
                    .devices()
                    .into_iter()
                    .find(|(_, d)| d == device)
                    .map(|(i, _)| i)
                    .ok_or_else(|| Refusal::NotMember("the committer left".into()))?;
                self.group
                    .leaf(index)
                    .ok_or_else(|| Refusal::NotMember("the committer left".into()))?
                    .signature_key()
                    .as_slice()
                    .to_vec()
            }
        };
        let key = OpenMlsSignaturePublicKey::new(signer_key.into(), SignatureScheme::ED25519)
            .map_err(Refusal::invalid)?;
        info.verify(&VerifyOnly, &key).map_err(|_| {
            Refusal::Invalid("the group info is not signed by the committer".into())
        })?;
        self.group
            .merge_commit(&self.storage, staged)
            .map_err(Refusal::invalid)?;
        self.group_info = group_info.to_vec();
        let joined = match &summary.committer {
            Committer::Joiner(d) => Some(d.clone()),
            Committer::Member(_) => None,
        };
        Ok(Accepted {
            epoch: self.epoch(),
            added: summary
                .added
                .into_iter()
                .map(|(device, _, reference)| (device, reference))
                .collect(),
            joined,
            removed: summary.removed.into_iter().map(|(d, _)| d).collect(),
            members: summary.members_after,
            policy: summary.policy_after,
        })
    }

    /// Keeps a checked standalone proposal until a commit covers it.
    pub fn accept_proposal(&mut self, proposal: QueuedProposal) -> Result<(), Refusal> {
        self.group
            .add_proposal(&self.storage, proposal)
            .map_err(Refusal::invalid)
    }

    /// The state as bytes, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&(self.storage.records(), &self.group_info))
            .expect("state always encodes")
    }

    /// Reads a state [`Self::to_bytes`] wrote. Storage is trusted no more than the network:
    /// a state that does not load is an error, never a panic.
    pub fn from_bytes(group_id: &GroupId, bytes: &[u8]) -> Result<Self, Refusal> {
        if bytes.len() > MAX_STATE {
            return Err(Refusal::Malformed(
                "the stored group state is too large".into(),
            ));
        }
        let (records, group_info): (Vec<Record>, Vec<u8>) =
            postcard::from_bytes(bytes).map_err(Refusal::malformed)?;
        let storage = DsStore::from_records(records);
        let id = openmls::prelude::GroupId::from_slice(&group_id.0);
        let group = PublicGroup::load(&storage, &id)
            .map_err(Refusal::malformed)?
            .ok_or_else(|| Refusal::Malformed("no group in the stored state".into()))?;
        Ok(Self {
            group,
            storage,
            group_info,
        })
    }
}

/// Checks a key package a device publishes: well formed, Quip's suite and capabilities,
/// signed by its leaf, naming exactly `device`, whose credential verifies against the user's
/// `account_key`. Returns its reference (what a commit that uses it names).
pub fn check_key_package(
    bytes: &[u8],
    device: &Device,
    account_key: &[u8],
) -> Result<Vec<u8>, Refusal> {
    if bytes.len() > quip_proto::limits::MAX_KEY_PACKAGE {
        return Err(Refusal::Malformed("the key package is too large".into()));
    }
    let MlsMessageBodyIn::KeyPackage(package) = read_exact::<MlsMessageIn>(bytes)?.extract() else {
        return Err(Refusal::Malformed("not a key package".into()));
    };
    let package = package
        .validate(&VerifyOnly, openmls::prelude::ProtocolVersion::Mls10)
        .map_err(Refusal::invalid)?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(Refusal::Invalid("not Quip's ciphersuite".into()));
    }
    let leaf = package.leaf_node();
    let (named, credential) = Device::of_leaf(leaf)?;
    if &named != device {
        return Err(Refusal::Credential(format!(
            "the key package is for device {} of {}",
            named.device, named.user
        )));
    }
    credential.verify(leaf.signature_key().as_slice(), account_key)?;
    Ok(package
        .hash_ref(&VerifyOnly)
        .map_err(Refusal::invalid)?
        .as_slice()
        .to_vec())
}

/// Reads one TLS-encoded value that must fill `bytes` exactly.
fn read_exact<T: DeserializeBytes>(bytes: &[u8]) -> Result<T, Refusal> {
    let (value, rest) = T::tls_deserialize_bytes(bytes).map_err(Refusal::malformed)?;
    if !rest.is_empty() {
        return Err(Refusal::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

fn read_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, Refusal> {
    if bytes.len() > MAX_STATE {
        return Err(Refusal::Malformed("the group info is too large".into()));
    }
    match read_exact::<MlsMessageIn>(bytes)?.extract() {
        MlsMessageBodyIn::GroupInfo(info) => Ok(info),
        _ => Err(Refusal::Malformed("not a group info".into())),
    }
}
