//! A device's end of its MLS groups (feature `device`; the node never builds it): the
//! device's signature key, its key packages, and every group it is in. Sans-IO: each call
//! takes bytes and returns bytes to send, or what to show; nothing here waits on a network.
//!
//! A device proposes a commit, sends it, and only [`Device::confirm`]s it once the delivery
//! service accepted it (or [`Device::discard`]s it on a conflict, processes the winner and
//! tries again): the node's order is the group's order.

use std::collections::BTreeMap;

use openmls::group::{MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, StagedWelcome};
use openmls::prelude::tls_codec::{DeserializeBytes, Serialize as _};
use openmls::prelude::{
    CredentialWithKey, KeyPackage, KeyPackageIn, LeafNodeIndex, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY,
    MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProcessedMessageContent, Proposal,
    ProtocolMessage, ProtocolVersion, RatchetTreeIn, Sender, SenderRatchetConfiguration,
    StagedCommit,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use openmls_traits::types::SignatureScheme;
use quip_proto::ids::{DeviceId, GroupId, UserName};

use crate::credential::DeviceCredential;
use crate::policy::{CommitSummary, Device as Leaf, GroupPolicy};
use crate::{CIPHERSUITE, Refusal, capabilities};

/// openmls's provider for one device: RustCrypto over an in-memory store this module can
/// export (for the encrypted backup) and restore.
#[derive(Debug, Default)]
struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

/// Messages a device may receive out of order within an epoch, and how far ahead.
fn ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(32, 1000)
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .sender_ratchet_configuration(ratchet())
        .max_past_epochs(0)
        .use_ratchet_tree_extension(false)
        .build()
}

/// A key package for the delivery service: its reference and its bytes (`MlsMessage`).
pub type KeyPackageOut = (Vec<u8>, Vec<u8>);

/// What a commit a device made carries to the delivery service.
#[derive(Debug)]
pub struct Outgoing {
    /// The commit (`MlsMessage`, a public message).
    pub commit: Vec<u8>,
    /// The Welcome for devices it adds, if any.
    pub welcome: Option<Vec<u8>>,
    /// The signed group info of the epoch the commit leads to.
    pub group_info: Vec<u8>,
}

/// A new group's first state, for the delivery service.
#[derive(Debug)]
pub struct Created {
    /// Signed group info at epoch 0.
    pub group_info: Vec<u8>,
    /// The ratchet tree (one leaf).
    pub ratchet_tree: Vec<u8>,
}

/// What a received message did.
#[derive(Debug)]
pub enum Received {
    /// A member's message.
    Message {
        /// The group.
        group: GroupId,
        /// Who sent it.
        from: Leaf,
        /// The plaintext.
        bytes: Vec<u8>,
    },
    /// A commit moved the group on.
    Commit {
        /// The group.
        group: GroupId,
        /// What it did.
        summary: Box<CommitSummary>,
        /// Whether this device was removed by it (the group is gone from this device).
        removed_me: bool,
    },
    /// A proposal was kept, to be covered by the next commit.
    Proposal {
        /// The group.
        group: GroupId,
    },
    /// The message needs these users' account keys first: fetch (and pin) them and call
    /// again. Nothing changed.
    NeedKeys(Vec<UserName>),
}

/// A device: its signature key, its credential, and its groups.
pub struct Device {
    provider: Provider,
    signer: SignatureKeyPair,
    me: Leaf,
    credential: CredentialWithKey,
    groups: BTreeMap<GroupId, MlsGroup>,
    /// Welcomes staged but waiting for account keys, by the SHA-256 of their bytes (staging
    /// spends the key package, so a retry must reuse the staged one).
    staged: BTreeMap<[u8; 32], StagedWelcome>,
}

/// The key of the entry that names the device and its groups (openmls's own keys never
/// start with a zero byte followed by this label).
pub const META_ENTRY: &[u8] = b"\0quip/2 device";

/// Welcomes kept staged while their members' keys are fetched.
const MAX_STAGED: usize = 64;

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Enrolls a new device of `user`: a fresh Ed25519 key, and a credential the account key
    /// signs (`sign` gets the bytes to sign with it).
    pub fn enroll<E: std::fmt::Display>(
        user: UserName,
        device: DeviceId,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Self, Refusal> {
        let provider = Provider::default();
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(Refusal::invalid)?;
        signer.store(provider.storage()).map_err(Refusal::invalid)?;
        let account_signature = sign(&DeviceCredential::signed_bytes(
            &user,
            device,
            signer.public(),
        ))
        .map_err(|e| Refusal::Credential(format!("the account key did not sign: {e}")))?;
        let credential = DeviceCredential {
            user: user.clone(),
            device,
            account_signature,
        };
        Ok(Self {
            credential: CredentialWithKey {
                credential: credential.to_credential(),
                signature_key: signer.public().into(),
            },
            provider,
            signer,
            me: Leaf { user, device },
            groups: BTreeMap::new(),
            staged: BTreeMap::new(),
        })
    }

    /// Who this device is.
    pub fn me(&self) -> &Leaf {
        &self.me
    }

    /// This device's credential (`DeviceCredential`, encoded) and MLS signature key: what
    /// `EnrollDevice` registers.
    pub fn enrollment(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.credential.credential.serialized_content().to_vec(),
            self.signer.public().to_vec(),
        )
    }

    /// `count` fresh key packages (plus, with `last_resort`, one that may be used more than
    /// once), each as (reference, bytes).
    pub fn key_packages(
        &self,
        count: usize,
        last_resort: bool,
    ) -> Result<Vec<KeyPackageOut>, Refusal> {
        let mut out = Vec::with_capacity(count + 1);
        for i in 0..count + usize::from(last_resort) {
            let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
            if i == count {
                builder = builder.mark_as_last_resort();
            }
            let bundle = builder
                .build(
                    CIPHERSUITE,
                    &self.provider,
                    &self.signer,
                    self.credential.clone(),
                )
                .map_err(Refusal::invalid)?;
            let package = bundle.key_package();
            let reference = package
                .hash_ref(self.provider.crypto())
                .map_err(Refusal::invalid)?
                .as_slice()
                .to_vec();
            out.push((reference, serialize(&MlsMessageOut::from(package.clone()))?));
        }
        Ok(out)
    }

    /// Creates a group with this device alone in it and `policy`.
    pub fn create_group(&mut self, id: GroupId, policy: &GroupPolicy) -> Result<Created, Refusal> {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .capabilities(capabilities())
            .with_group_context_extensions(policy.extensions())
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .sender_ratchet_configuration(ratchet())
            .max_past_epochs(0)
            .use_ratchet_tree_extension(false)
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            openmls::prelude::GroupId::from_slice(&id.0),
            self.credential.clone(),
        )
        .map_err(Refusal::invalid)?;
        let group_info = group
            .export_group_info(self.provider.crypto(), &self.signer, false)
            .map_err(Refusal::invalid)?;
        let created = Created {
            group_info: serialize(&group_info)?,
            ratchet_tree: group
                .export_ratchet_tree()
                .tls_serialize_detached()
                .map_err(Refusal::invalid)?,
        };
        self.groups.insert(id, group);
        Ok(created)
    }

    /// Reads key packages the delivery service handed out and checks each device's credential
    /// against its user's pinned account key.
    pub fn check_key_packages(
        &self,
        packages: &[Vec<u8>],
        account_key: impl Fn(&UserName) -> Option<Vec<u8>>,
    ) -> Result<Vec<KeyPackage>, Refusal> {
        packages
            .iter()
            .map(|bytes| {
                let MlsMessageBodyIn::KeyPackage(package) = read::<MlsMessageIn>(bytes)?.extract()
                else {
                    return Err(Refusal::Malformed("not a key package".into()));
                };
                let package: KeyPackage =
                    KeyPackageIn::validate(package, self.provider.crypto(), ProtocolVersion::Mls10)
                        .map_err(Refusal::invalid)?;
                let leaf = package.leaf_node();
                let (device, credential) = Leaf::of_leaf(leaf)?;
                let key = account_key(&device.user).ok_or_else(|| {
                    Refusal::Credential(format!("{} has no account key", device.user))
                })?;
                credential.verify(leaf.signature_key().as_slice(), &key)?;
                Ok(package)
            })
            .collect()
    }

    /// Proposes adding these (checked) key packages' devices.
    pub fn add(&mut self, group: &GroupId, packages: Vec<KeyPackage>) -> Result<Outgoing, Refusal> {
        self.commit(group, |b| b.propose_adds(packages))
    }

    /// Proposes removing these devices.
    pub fn remove(&mut self, group: &GroupId, devices: &[Leaf]) -> Result<Outgoing, Refusal> {
        let leaves = self.leaves(group)?;
        let indexes: Vec<LeafNodeIndex> = leaves
            .iter()
            .filter(|(_, d)| devices.contains(d))
            .map(|(i, _)| *i)
            .collect();
        if indexes.len() != devices.len() {
            return Err(Refusal::NotMember(
                "a device to remove is not in the group".into(),
            ));
        }
        self.commit(group, |b| b.propose_removals(indexes))
    }

    /// Proposes a new policy (admins, name).
    pub fn set_policy(
        &mut self,
        group: &GroupId,
        policy: &GroupPolicy,
    ) -> Result<Outgoing, Refusal> {
        let extensions = policy.extensions();
        self.commit(group, |b| {
            b.propose_group_context_extensions(extensions)
                .expect("policy extensions are valid group context extensions")
        })
    }

    /// Refreshes this device's leaf (new keys): after the commit, an old copy of this
    /// device's state can no longer read the group (post-compromise security). Covers any
    /// pending proposals too.
    pub fn update(&mut self, group: &GroupId) -> Result<Outgoing, Refusal> {
        self.commit(group, |b| b.force_self_update(true))
    }

    /// Commits the proposals this device has kept (a member's leave, say).
    pub fn commit_pending(&mut self, group: &GroupId) -> Result<Outgoing, Refusal> {
        self.commit(group, |b| b)
    }

    fn commit(
        &mut self,
        group: &GroupId,
        propose: impl FnOnce(
            openmls::group::CommitBuilder<'_, openmls::group::Initial>,
        ) -> openmls::group::CommitBuilder<'_, openmls::group::Initial>,
    ) -> Result<Outgoing, Refusal> {
        let provider = &self.provider;
        let signer = &self.signer;
        let mls = self.groups.get_mut(group).ok_or_else(not_in_group)?;
        let bundle = propose(mls.commit_builder())
            .load_psks(provider.storage())
            .map_err(Refusal::invalid)?
            .create_group_info(true)
            // The Welcome carries the tree: a device added now joins whatever the group does
            // later, without asking anyone for the tree of that epoch.
            .use_ratchet_tree_extension(true)
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .map_err(Refusal::invalid)?
            .stage_commit(provider)
            .map_err(Refusal::invalid)?;
        let (commit, welcome, group_info) = bundle.into_messages();
        Ok(Outgoing {
            commit: serialize(&commit)?,
            welcome: welcome.map(|w| serialize(&w)).transpose()?,
            group_info: serialize(
                &group_info.ok_or_else(|| Refusal::Invalid("no group info".into()))?,
            )?,
        })
    }

    /// The delivery service accepted this device's pending commit: move to the new epoch.
    pub fn confirm(&mut self, group: &GroupId) -> Result<(), Refusal> {
        let mls = self.groups.get_mut(group).ok_or_else(not_in_group)?;
        mls.merge_pending_commit(&self.provider)
            .map_err(Refusal::invalid)
    }

    /// The delivery service refused this device's pending commit (another won the epoch):
    /// forget it.
    pub fn discard(&mut self, group: &GroupId) -> Result<(), Refusal> {
        let mls = self.groups.get_mut(group).ok_or_else(not_in_group)?;
        mls.clear_pending_commit(self.provider.storage())
            .map_err(Refusal::invalid)
    }

    /// Proposes leaving (a self-remove); another member's next commit covers it.
    pub fn leave(&mut self, group: &GroupId) -> Result<Vec<u8>, Refusal> {
        let mls = self.groups.get_mut(group).ok_or_else(not_in_group)?;
        let out = mls
            .leave_group_via_self_remove(&self.provider, &self.signer)
            .map_err(Refusal::invalid)?;
        serialize(&out)
    }

    /// Encrypts an application message for the group's current epoch.
    pub fn encrypt(&mut self, group: &GroupId, plaintext: &[u8]) -> Result<Vec<u8>, Refusal> {
        let mls = self.groups.get_mut(group).ok_or_else(not_in_group)?;
        let out = mls
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(Refusal::invalid)?;
        serialize(&out)
    }

    /// Joins a group from a Welcome for one of this device's key packages (the Welcome
    /// carries the ratchet tree). Every device in the group must verify against its user's
    /// account key before the group is accepted; missing keys are named, nothing changes.
    pub fn join(
        &mut self,
        welcome: &[u8],
        account_key: impl Fn(&UserName) -> Option<Vec<u8>>,
    ) -> Result<Result<GroupId, Vec<UserName>>, Refusal> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, welcome)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        let staged = match self.staged.remove(&digest) {
            Some(staged) => staged,
            None => {
                let MlsMessageBodyIn::Welcome(welcome) = read::<MlsMessageIn>(welcome)?.extract()
                else {
                    return Err(Refusal::Malformed("not a welcome".into()));
                };
                StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
                    .map_err(Refusal::invalid)?
            }
        };
        let mut missing = Vec::new();
        let mut checks = Vec::new();
        for member in staged.members() {
            let (device, credential) = Leaf::of_leaf_credential(&member.credential)?;
            match account_key(&device.user) {
                Some(key) => checks.push((credential, member.signature_key.clone(), key)),
                None => missing.push(device.user),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            if self.staged.len() >= MAX_STAGED
                && let Some(oldest) = self.staged.keys().next().copied()
            {
                self.staged.remove(&oldest);
            }
            self.staged.insert(digest, staged);
            return Ok(Err(missing));
        }
        for (credential, signature_key, key) in checks {
            credential.verify(&signature_key, &key)?;
        }
        GroupPolicy::from_context(staged.group_context())?;
        let group = staged
            .into_group(&self.provider)
            .map_err(Refusal::invalid)?;
        let id = GroupId::from_slice(group.group_id().as_slice()).map_err(Refusal::malformed)?;
        self.groups.insert(id, group);
        Ok(Ok(id))
    }

    /// Joins a group this device's user is already in, by itself (an external commit from the
    /// delivery service's group info and tree). The returned commit goes to the delivery
    /// service like any other; [`Self::confirm`] is not needed (the group is joined).
    pub fn join_external(
        &mut self,
        group_info: &[u8],
        ratchet_tree: &[u8],
    ) -> Result<(GroupId, Outgoing), Refusal> {
        let MlsMessageBodyIn::GroupInfo(info) = read::<MlsMessageIn>(group_info)?.extract() else {
            return Err(Refusal::Malformed("not a group info".into()));
        };
        let tree = read::<RatchetTreeIn>(ratchet_tree)?;
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_ratchet_tree(tree)
            .with_config(join_config())
            .build_group(&self.provider, info, self.credential.clone())
            .map_err(Refusal::invalid)?
            .leaf_node_parameters(
                openmls::treesync::LeafNodeParameters::builder()
                    .with_capabilities(capabilities())
                    .build(),
            )
            .load_psks(self.provider.storage())
            .map_err(Refusal::invalid)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(Refusal::invalid)?
            .finalize(&self.provider)
            .map_err(Refusal::invalid)?;
        let id = GroupId::from_slice(group.group_id().as_slice()).map_err(Refusal::malformed)?;
        let (commit, _, _) = bundle.into_messages();
        let info = group
            .export_group_info(self.provider.crypto(), &self.signer, false)
            .map_err(Refusal::invalid)?;
        self.groups.insert(id, group);
        Ok((
            id,
            Outgoing {
                commit: serialize(&commit)?,
                welcome: None,
                group_info: serialize(&info)?,
            },
        ))
    }

    /// Processes a message from the delivery service: an application message is decrypted
    /// and attributed; a commit is checked against the policy and every new device against
    /// its user's account key, then applied; a proposal is kept.
    pub fn receive(
        &mut self,
        message: &[u8],
        account_key: impl Fn(&UserName) -> Option<Vec<u8>>,
    ) -> Result<Received, Refusal> {
        let protocol: ProtocolMessage = match read::<MlsMessageIn>(message)?.extract() {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            _ => return Err(Refusal::Malformed("not a group message".into())),
        };
        let id = GroupId::from_slice(protocol.group_id().as_slice()).map_err(Refusal::malformed)?;
        let leaves = self.leaves(&id)?;
        let mls = self.groups.get_mut(&id).ok_or_else(not_in_group)?;
        let context_before = mls.public_group().group_context().clone();
        let processed = mls
            .process_message(&self.provider, protocol)
            .map_err(Refusal::invalid)?;
        let sender = processed.sender().clone();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let Sender::Member(index) = sender else {
                    return Err(Refusal::NotMember("not from a member".into()));
                };
                let from = leaves
                    .get(&index)
                    .cloned()
                    .ok_or_else(|| Refusal::NotMember("no such leaf".into()))?;
                Ok(Received::Message {
                    group: id,
                    from,
                    bytes: app.into_bytes(),
                })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let crypto = self.provider.crypto();
                let summary =
                    CommitSummary::read(&staged, &sender, &context_before, &leaves, |kp| {
                        kp.hash_ref(crypto).ok().map(|r| r.as_slice().to_vec())
                    })?;
                let mut missing: Vec<UserName> = summary
                    .users_to_verify()
                    .into_iter()
                    .filter(|u| account_key(u).is_none())
                    .collect();
                if !missing.is_empty() {
                    missing.dedup();
                    // Nothing merged: the same message can be processed again.
                    return Ok(Received::NeedKeys(missing));
                }
                summary.check(&account_key)?;
                let removed_me = staged.self_removed();
                self.merge(&id, *staged)?;
                if removed_me {
                    self.groups.remove(&id);
                }
                Ok(Received::Commit {
                    group: id,
                    summary: Box::new(summary),
                    removed_me,
                })
            }
            ProcessedMessageContent::ProposalMessage(queued) => {
                if !matches!(
                    queued.proposal(),
                    Proposal::SelfRemove | Proposal::Remove(_)
                ) {
                    return Err(Refusal::Policy(
                        "only removals are proposed on their own".into(),
                    ));
                }
                let mls = self.groups.get_mut(&id).ok_or_else(not_in_group)?;
                mls.store_pending_proposal(self.provider.storage(), *queued)
                    .map_err(Refusal::invalid)?;
                Ok(Received::Proposal { group: id })
            }
            _ => Err(Refusal::Invalid("unexpected message content".into())),
        }
    }

    fn merge(&mut self, id: &GroupId, staged: StagedCommit) -> Result<(), Refusal> {
        let mls = self.groups.get_mut(id).ok_or_else(not_in_group)?;
        mls.merge_staged_commit(&self.provider, staged)
            .map_err(Refusal::invalid)
    }

    /// The group's devices by leaf.
    fn leaves(&self, group: &GroupId) -> Result<BTreeMap<LeafNodeIndex, Leaf>, Refusal> {
        let mls = self.groups.get(group).ok_or_else(not_in_group)?;
        Ok(mls
            .members()
            .filter_map(|m| Some((m.index, Leaf::of_leaf_credential(&m.credential).ok()?.0)))
            .collect())
    }

    /// The group's devices.
    pub fn members(&self, group: &GroupId) -> Result<Vec<Leaf>, Refusal> {
        Ok(self.leaves(group)?.into_values().collect())
    }

    /// The group's policy.
    pub fn policy(&self, group: &GroupId) -> Result<GroupPolicy, Refusal> {
        let mls = self.groups.get(group).ok_or_else(not_in_group)?;
        GroupPolicy::from_context(mls.public_group().group_context())
    }

    /// The group's epoch.
    pub fn epoch(&self, group: &GroupId) -> Result<u64, Refusal> {
        let mls = self.groups.get(group).ok_or_else(not_in_group)?;
        Ok(mls.epoch().as_u64())
    }

    /// Forgets a group (one created here that the delivery service refused): its state is
    /// deleted, and a Welcome can bring this device into a group of that id later.
    pub fn forget(&mut self, group: &GroupId) {
        if let Some(mut mls) = self.groups.remove(group) {
            let _ = mls.delete(self.provider.storage());
        }
    }

    /// Whether this device is in the group.
    pub fn is_in(&self, group: &GroupId) -> bool {
        self.groups.contains_key(group)
    }

    /// The device's whole state (keys and groups) as entries: the openmls store's, and one
    /// [`META_ENTRY`] naming the device and its groups. What its encrypted backup holds, entry
    /// by entry, so a change re-sends only the entries that changed.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let values = self.provider.storage.values.read().expect("storage lock");
        let groups: Vec<&GroupId> = self.groups.keys().collect();
        let meta = postcard::to_stdvec(&(
            &self.me.user,
            self.me.device,
            self.signer.public(),
            &self.credential.credential.serialized_content(),
            groups,
        ))
        .expect("state always encodes");
        let mut out: Vec<(Vec<u8>, Vec<u8>)> =
            values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.push((META_ENTRY.to_vec(), meta));
        out
    }

    /// The device's whole state as one value ([`Self::entries`], encoded).
    pub fn export(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.entries()).expect("state always encodes")
    }

    /// Restores a device from [`Self::export`]ed bytes.
    pub fn restore(bytes: &[u8]) -> Result<Self, Refusal> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            postcard::from_bytes(bytes).map_err(Refusal::malformed)?;
        Self::from_entries(entries)
    }

    /// Restores a device from its [`Self::entries`] (a backup, read back).
    pub fn from_entries(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Self, Refusal> {
        let at = entries
            .iter()
            .position(|(k, _)| k == META_ENTRY)
            .ok_or_else(|| Refusal::Malformed("the state names no device".into()))?;
        let (_, meta) = entries.swap_remove(at);
        #[allow(clippy::type_complexity)]
        let (user, device, public, identity, groups): (
            UserName,
            DeviceId,
            Vec<u8>,
            Vec<u8>,
            Vec<GroupId>,
        ) = postcard::from_bytes(&meta).map_err(Refusal::malformed)?;
        let provider = Provider::default();
        provider
            .storage
            .values
            .write()
            .expect("storage lock")
            .extend(entries);
        let signer = SignatureKeyPair::read(provider.storage(), &public, SignatureScheme::ED25519)
            .ok_or_else(|| Refusal::Malformed("the backup has no signature key".into()))?;
        let credential = DeviceCredential::from_credential(
            &openmls::prelude::BasicCredential::new(identity).into(),
        )?;
        if credential.user != user || credential.device != device {
            return Err(Refusal::Malformed(
                "the backup's credential is another device's".into(),
            ));
        }
        let mut loaded = BTreeMap::new();
        for id in groups {
            let group = MlsGroup::load(
                provider.storage(),
                &openmls::prelude::GroupId::from_slice(&id.0),
            )
            .map_err(Refusal::malformed)?
            .ok_or_else(|| Refusal::Malformed("a group is missing from the backup".into()))?;
            loaded.insert(id, group);
        }
        Ok(Self {
            credential: CredentialWithKey {
                credential: credential.to_credential(),
                signature_key: public.into(),
            },
            provider,
            signer,
            me: Leaf { user, device },
            groups: loaded,
            staged: BTreeMap::new(),
        })
    }
}

fn not_in_group() -> Refusal {
    Refusal::NotMember("this device is not in the group".into())
}

fn serialize(message: &impl openmls::prelude::tls_codec::Serialize) -> Result<Vec<u8>, Refusal> {
    message.tls_serialize_detached().map_err(Refusal::invalid)
}

fn read<T: DeserializeBytes>(bytes: &[u8]) -> Result<T, Refusal> {
    let (value, rest) = T::tls_deserialize_bytes(bytes).map_err(Refusal::malformed)?;
    if !rest.is_empty() {
        return Err(Refusal::Malformed("trailing bytes".into()));
    }
    Ok(value)
}
