//! The client's end-to-end core for `quip/2`, sans-IO (as quinn-proto is to quinn): it takes
//! what the node sends (answers and pushes, one stream) and what the user wants (send this,
//! start that group), and hands out frames to send, things to show, and when its state must
//! be saved. It never waits: a request is a frame out and, later, an answer in; everything
//! that depends on it waits in the core's own queues.
//!
//! Every conversation is an MLS group ([`quip_mls::device::Device`]). A one-to-one chat is
//! the group whose id both sides derive from the two names ([`direct_group`]). Peers' account
//! keys are pinned on first use; a device is accepted into a conversation only if its
//! credential verifies against its user's pinned key. Log entries are acknowledged only after
//! the state they produced is saved ([`Core::poll_save`], [`Core::saved`]), so a crash
//! replays them rather than losing them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use quip_mls::Refusal;
use quip_mls::device::{Device, Outgoing, Received};
use quip_mls::policy::GroupPolicy;
use quip_proto::ids::{DeviceId, GroupId, GroupName, MsgId, UserName};
use quip_proto::limits::MAX_STATE_UPLOAD;
use quip_proto::mls::LogEntry;
use quip_proto::{ClientToNode, ErrorCode, NodeToClient, ReqId};
use sha2::{Digest, Sha256};

use crate::connection::CORE_REQS;
use crate::e2e::StateKey;

/// The group of the one-to-one chat between `a` and `b`: the same id whoever derives it.
pub fn direct_group(a: &UserName, b: &UserName) -> GroupId {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hash = Sha256::new();
    hash.update(b"quip/2 direct\0");
    hash.update(first.as_str().as_bytes());
    hash.update([0]);
    hash.update(second.as_str().as_bytes());
    let digest = hash.finalize();
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    GroupId(id)
}

/// What the core tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// A message in a conversation.
    Message {
        /// The group.
        group: GroupId,
        /// Who sent it.
        from: UserName,
        /// From which of their devices.
        device: DeviceId,
        /// The plaintext.
        bytes: Vec<u8>,
        /// When the node stored it, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A message this device sent is stored for the group.
    Sent {
        /// The group.
        group: GroupId,
        /// The message.
        id: MsgId,
    },
    /// This device is in a new conversation.
    Joined {
        /// The group.
        group: GroupId,
        /// Its name.
        name: GroupName,
    },
    /// The group's members changed.
    Changed {
        /// The group.
        group: GroupId,
    },
    /// This device was removed from the group.
    Removed {
        /// The group.
        group: GroupId,
    },
    /// A user's account key differs from the pinned one: nothing is accepted from or sent to
    /// their devices until the user accepts the new key.
    KeyChanged {
        /// Whose.
        user: UserName,
    },
    /// Something the user asked for failed.
    Failed {
        /// The group it was for (`None`: the device itself, its key packages or backup).
        group: Option<GroupId>,
        /// Why, for a person.
        why: String,
    },
    /// A log entry could not be read (not for this device's state, or forged); it is skipped.
    Unreadable {
        /// The group.
        group: GroupId,
        /// Its sender, as the node says.
        from: UserName,
        /// Why.
        why: String,
    },
}

/// Work waiting on the node for one group.
#[derive(Debug, Default)]
struct Work {
    /// Messages to post once the group is usable (no commit in flight), in order.
    sends: VecDeque<(MsgId, Vec<u8>)>,
    /// Membership work not started yet, in order.
    ops: VecDeque<Op>,
    /// The op whose commit is at the node (or whose key packages are being claimed).
    current: Option<Current>,
    /// Posts at the node: request → message and the epoch it was encrypted in.
    posting: HashMap<ReqId, (MsgId, Vec<u8>, u64)>,
    /// Refused for a stale epoch: retry once the log has caught up.
    stale: bool,
}

/// A membership change the user asked for.
#[derive(Debug, Clone)]
enum Op {
    /// Create the group (if this device has not) with this policy, then add these users'
    /// devices and this user's other devices.
    Create {
        policy: GroupPolicy,
        members: Vec<UserName>,
    },
    /// Add every device of these users (and, for a group this device just created, this
    /// user's other devices).
    Add {
        users: Vec<UserName>,
        with_mine: bool,
    },
}

#[derive(Debug)]
enum Current {
    /// Waiting for the node to register the new group.
    Creating { members: Vec<UserName> },
    /// Claiming key packages: users still to answer, packages so far.
    Claiming {
        waiting: HashSet<UserName>,
        packages: Vec<Vec<u8>>,
    },
    /// A commit made at `epoch` is at the node.
    Committing { epoch: u64 },
}

/// What the node holds of a device's backup: entry id → hash of the entry uploaded.
pub type Uploaded = HashMap<Vec<u8>, [u8; 32]>;

/// The device's state backup on the node, kept in step entry by entry.
#[derive(Debug)]
struct Backup {
    key: StateKey,
    /// What the node holds: entry id → SHA-256 of the value uploaded.
    uploaded: Uploaded,
    /// Uploads at the node.
    inflight: HashSet<ReqId>,
    /// Acknowledgements waiting for the uploads (entries per group, Welcomes).
    held: (BTreeMap<GroupId, u64>, Vec<u64>),
}

/// What a request was for.
#[derive(Debug)]
enum Request {
    Publish,
    Backup,
    Keys(UserName),
    Claim { group: GroupId, user: UserName },
    Create(GroupId),
    Commit(GroupId),
    Post(GroupId),
}

/// The client's end-to-end core for one device.
pub struct Core {
    device: Device,
    /// Pinned account keys.
    keys: HashMap<UserName, Vec<u8>>,
    /// Users whose key changed: refused until accepted.
    changed: HashSet<UserName>,
    next_req: ReqId,
    requests: HashMap<ReqId, Request>,
    transmit: VecDeque<ClientToNode>,
    events: VecDeque<CoreEvent>,
    /// Keys asked for.
    fetching: HashSet<UserName>,
    /// Entries not yet processed (waiting for keys), per group, in order.
    backlog: BTreeMap<GroupId, VecDeque<LogEntry>>,
    /// Welcomes waiting for keys.
    welcomes: VecDeque<(u64, GroupId, Vec<u8>)>,
    work: BTreeMap<GroupId, Work>,
    /// Processed, to acknowledge once saved.
    unsaved_entries: BTreeMap<GroupId, u64>,
    unsaved_welcomes: Vec<u64>,
    /// The device's state changed since the last save.
    dirty: bool,
    /// The encrypted backup on the node, if this device keeps one.
    backup: Option<Backup>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("device", self.device.me())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core for `device`, with the account keys pinned so far.
    pub fn new(device: Device, pinned: HashMap<UserName, Vec<u8>>) -> Self {
        Self {
            device,
            keys: pinned,
            changed: HashSet::new(),
            next_req: CORE_REQS,
            requests: HashMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            fetching: HashSet::new(),
            backlog: BTreeMap::new(),
            welcomes: VecDeque::new(),
            work: BTreeMap::new(),
            unsaved_entries: BTreeMap::new(),
            unsaved_welcomes: Vec::new(),
            dirty: false,
            backup: None,
        }
    }

    /// Keeps the device's state backed up on the node (encrypted under `key`), so another
    /// directory can take the device over: log entries are acknowledged only once the state
    /// they produced is both saved here and backed up there. `uploaded` is what the node
    /// already holds (entry id → SHA-256 of the sealed value's plaintext), empty for a new
    /// device.
    pub fn with_backup(mut self, key: StateKey, uploaded: Uploaded) -> Self {
        self.backup = Some(Backup {
            key,
            uploaded,
            inflight: HashSet::new(),
            held: (BTreeMap::new(), Vec::new()),
        });
        self.dirty = true;
        self
    }

    /// Restores a device from its backup's entries as the node returned them (a directory
    /// taking the device over); returns it with what the node holds, for [`Self::with_backup`].
    pub fn restore(
        key: &StateKey,
        sealed: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(Device, Uploaded), crate::e2e::E2eError> {
        let mut entries = Vec::with_capacity(sealed.len());
        let mut uploaded = HashMap::with_capacity(sealed.len());
        for (id, value) in sealed {
            let (k, v) = key.open(&id, &value)?;
            uploaded.insert(id, value_hash(&k, &v));
            entries.push((k, v));
        }
        let device =
            Device::from_entries(entries).map_err(|_| crate::e2e::E2eError::CorruptBackup)?;
        Ok((device, uploaded))
    }

    /// This device's user.
    pub fn me(&self) -> &UserName {
        &self.device.me().user
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<ClientToNode> {
        self.transmit.pop_front()
    }

    /// The next thing to show.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// The device's state to save (encrypted, by the shell) if it changed; then call
    /// [`Self::saved`].
    pub fn poll_save(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.dirty).then(|| self.device.export())
    }

    /// The state [`Self::poll_save`] gave is durable here: back it up (if this device keeps
    /// a backup) and acknowledge what produced it once the backup is stored too.
    pub fn saved(&mut self) {
        let entries = std::mem::take(&mut self.unsaved_entries);
        let welcomes = std::mem::take(&mut self.unsaved_welcomes);
        if self.backup.is_none() {
            self.acknowledge(entries, welcomes);
            return;
        }
        let current = self.device.entries();
        let Some(backup) = &mut self.backup else {
            return;
        };
        for (group, seq) in entries {
            let held = backup.held.0.entry(group).or_insert(0);
            *held = (*held).max(seq);
        }
        backup.held.1.extend(welcomes);
        // What changed since the last upload: sealed anew; what is gone: deleted.
        let mut present = HashSet::with_capacity(current.len());
        let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut failed = None;
        for (k, v) in &current {
            let id = backup.key.id(k);
            present.insert(id.clone());
            let hash = value_hash(k, v);
            if backup.uploaded.get(&id) == Some(&hash) {
                continue;
            }
            match backup.key.seal(k, v) {
                Ok((id, sealed)) if sealed.len() + id.len() <= MAX_STATE_UPLOAD => {
                    backup.uploaded.insert(id.clone(), hash);
                    changes.push((id, Some(sealed)));
                }
                Ok(_) => failed = Some("a state entry is too large to back up".to_string()),
                Err(err) => failed = Some(err.to_string()),
            }
        }
        let gone: Vec<Vec<u8>> = backup
            .uploaded
            .keys()
            .filter(|id| !present.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            backup.uploaded.remove(&id);
            changes.push((id, None));
        }
        if let Some(why) = failed {
            self.events.push_back(CoreEvent::Failed {
                group: None,
                why: format!("the device's backup is incomplete: {why}"),
            });
        }
        // Upload in frames of at most MAX_STATE_UPLOAD bytes.
        let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut bytes = 0;
        let mut batches = Vec::new();
        for (id, value) in changes {
            let size = id.len() + value.as_ref().map_or(0, Vec::len);
            if bytes + size > MAX_STATE_UPLOAD && !batch.is_empty() {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += size;
            batch.push((id, value));
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        for entries in batches {
            let req = self.request(Request::Backup, |req| ClientToNode::PutDeviceState {
                req,
                entries,
            });
            if let Some(backup) = &mut self.backup {
                backup.inflight.insert(req);
            }
        }
        self.release_held();
    }

    /// Acknowledges what the backup covers, once no upload is at the node.
    fn release_held(&mut self) {
        let Some(backup) = &mut self.backup else {
            return;
        };
        if !backup.inflight.is_empty() {
            return;
        }
        let (entries, welcomes) = std::mem::take(&mut backup.held);
        self.acknowledge(entries, welcomes);
    }

    fn acknowledge(&mut self, entries: BTreeMap<GroupId, u64>, welcomes: Vec<u64>) {
        if entries.is_empty() && welcomes.is_empty() {
            return;
        }
        self.transmit.push_back(ClientToNode::AckLog {
            entries: entries.into_iter().collect(),
            welcomes,
        });
    }

    /// Every account key pinned so far (those given at start and those learned on first
    /// use), for the shell to keep.
    pub fn pinned(&self) -> &HashMap<UserName, Vec<u8>> {
        &self.keys
    }

    /// Sends a request numbered from the core's own range; its answer comes to
    /// [`Self::handle`] as `what`.
    fn request(&mut self, what: Request, build: impl FnOnce(ReqId) -> ClientToNode) -> ReqId {
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(CORE_REQS);
        self.requests.insert(req, what);
        self.transmit.push_back(build(req));
        req
    }

    fn lookup(&self) -> impl Fn(&UserName) -> Option<Vec<u8>> + '_ {
        lookup(&self.keys, &self.changed)
    }

    fn fetch_keys(&mut self, users: impl IntoIterator<Item = UserName>) {
        for user in users {
            if self.changed.contains(&user) || !self.fetching.insert(user.clone()) {
                continue;
            }
            self.request(Request::Keys(user.clone()), |req| ClientToNode::FetchKeys {
                req,
                user,
            });
        }
    }

    // ---- what the user wants ----

    /// Publishes `count` fresh key packages of this device (and a last-resort one), so others
    /// can add it to groups. Their private keys are in the device's state: it must be saved
    /// before they are used, so the state is marked changed.
    pub fn publish_key_packages(&mut self, count: usize) {
        match self.device.key_packages(count, true) {
            Ok(made) => {
                self.dirty = true;
                let packages = made
                    .into_iter()
                    .enumerate()
                    .map(|(i, (reference, data))| quip_proto::mls::KeyPackageUpload {
                        reference,
                        data,
                        last_resort: i == count,
                    })
                    .collect();
                self.request(Request::Publish, |req| ClientToNode::PublishKeyPackages {
                    req,
                    packages,
                });
            }
            Err(err) => self.events.push_back(CoreEvent::Failed {
                group: None,
                why: format!("key packages could not be made: {err}"),
            }),
        }
    }

    /// Sends `bytes` to the one-to-one chat with `peer`, starting it if needed. Returns the
    /// group and the message's id.
    pub fn send_direct(&mut self, peer: &UserName, bytes: Vec<u8>) -> (GroupId, MsgId) {
        let group = direct_group(self.me(), peer);
        if !self.device.is_in(&group) && !self.work.contains_key(&group) {
            let mut pair = [self.me().as_str(), peer.as_str()];
            pair.sort_unstable();
            let name = GroupName::new(&pair.join(" & "))
                .unwrap_or_else(|_| GroupName::new("chat").expect("a valid name"));
            // Whoever starts the chat is its admin (a group starts with one); in a
            // one-to-one chat nobody adds or removes anyone else anyway.
            let policy = GroupPolicy::new(name, vec![self.me().clone()]);
            self.work
                .entry(group)
                .or_default()
                .ops
                .push_back(Op::Create {
                    policy,
                    members: vec![peer.clone()],
                });
        }
        (group, self.send(group, bytes))
    }

    /// Creates a group named `name` with this user as its admin and `members` in it.
    pub fn create_group(&mut self, group: GroupId, name: GroupName, members: Vec<UserName>) {
        let policy = GroupPolicy::new(name, vec![self.me().clone()]);
        self.work
            .entry(group)
            .or_default()
            .ops
            .push_back(Op::Create { policy, members });
        self.advance(group);
    }

    /// Adds every device of `users` to the group.
    pub fn add(&mut self, group: GroupId, users: Vec<UserName>) {
        self.work.entry(group).or_default().ops.push_back(Op::Add {
            users,
            with_mine: false,
        });
        self.advance(group);
    }

    /// Sends `bytes` to the group once it is usable; the id names it in [`CoreEvent::Sent`].
    pub fn send(&mut self, group: GroupId, bytes: Vec<u8>) -> MsgId {
        let id = crate::client::random_id();
        self.work
            .entry(group)
            .or_default()
            .sends
            .push_back((id, bytes));
        self.advance(group);
        id
    }

    // ---- what the node says ----

    /// Handles one message from the node: an answer to one of the core's requests, or a push.
    pub fn handle(&mut self, msg: NodeToClient) {
        if let Some(req) = msg.req()
            && let Some(what) = self.requests.remove(&req)
        {
            self.answer(req, what, msg);
            return;
        }
        match msg {
            NodeToClient::Log { group, entries } => {
                self.backlog.entry(group).or_default().extend(entries);
                self.process(group);
            }
            NodeToClient::Welcome { id, group, body } => {
                self.welcomes.push_back((id, group, body));
                self.process_welcomes();
            }
            _ => {}
        }
    }

    fn answer(&mut self, req: ReqId, what: Request, msg: NodeToClient) {
        let refusal = match &msg {
            NodeToClient::Error { code, message, .. } => Some((*code, message.clone())),
            _ => None,
        };
        match what {
            Request::Publish => {
                if let Some((_, why)) = refusal {
                    self.events.push_back(CoreEvent::Failed {
                        group: None,
                        why: format!("key packages were refused: {why}"),
                    });
                }
            }
            Request::Backup => {
                if let Some(backup) = &mut self.backup {
                    backup.inflight.remove(&req);
                    if refusal.is_some() {
                        // Send everything again next time: the node's copy is unknown.
                        backup.uploaded.clear();
                        self.dirty = true;
                    }
                }
                if let Some((_, why)) = refusal {
                    self.events.push_back(CoreEvent::Failed {
                        group: None,
                        why: format!("the device's backup failed: {why}"),
                    });
                }
                self.release_held();
            }
            Request::Keys(user) => {
                self.fetching.remove(&user);
                if let NodeToClient::Keys { keys, .. } = msg {
                    match self.keys.get(&user) {
                        Some(pinned) if *pinned != keys.signing => {
                            self.changed.insert(user.clone());
                            self.events.push_back(CoreEvent::KeyChanged { user });
                        }
                        Some(_) => {}
                        None => {
                            self.keys.insert(user, keys.signing);
                        }
                    }
                }
                self.process_welcomes();
                let groups: Vec<GroupId> = self.backlog.keys().copied().collect();
                for group in groups {
                    self.process(group);
                }
                let waiting: Vec<GroupId> = self.work.keys().copied().collect();
                for group in waiting {
                    self.advance(group);
                }
            }
            Request::Create(group) => {
                let work = self.work.entry(group).or_default();
                let Some(Current::Creating { members }) = work.current.take() else {
                    return;
                };
                match refusal {
                    None => {
                        let work = self.work.entry(group).or_default();
                        work.ops.pop_front();
                        work.ops.push_front(Op::Add {
                            users: members,
                            with_mine: true,
                        });
                        self.advance(group);
                    }
                    Some((code, why)) => {
                        self.device.forget(&group);
                        self.dirty = true;
                        self.work.entry(group).or_default().ops.pop_front();
                        // Someone else created it first (a one-to-one chat both started):
                        // their Welcome brings this device in, and the sends wait for it.
                        if code != ErrorCode::GroupNameTaken {
                            self.fail(group, why);
                        }
                    }
                }
            }
            Request::Claim { group, user } => {
                let work = self.work.entry(group).or_default();
                let Some(Current::Claiming { waiting, packages }) = &mut work.current else {
                    return;
                };
                waiting.remove(&user);
                if let NodeToClient::KeyPackages { packages: got, .. } = msg {
                    let mine = self.device.me().device;
                    let me = &self.device.me().user;
                    packages.extend(
                        got.into_iter()
                            .filter(|p| !(user == *me && p.device == mine))
                            .map(|p| p.data),
                    );
                }
                if waiting.is_empty() {
                    self.commit_adds(group);
                }
            }
            Request::Commit(group) => {
                let work = self.work.entry(group).or_default();
                let Some(Current::Committing { epoch, .. }) = work.current.take() else {
                    return;
                };
                match refusal {
                    None => {
                        if let Err(err) = self.device.confirm(&group) {
                            self.fail(group, err.to_string());
                        }
                        self.dirty = true;
                        self.events.push_back(CoreEvent::Changed { group });
                        self.work.entry(group).or_default().ops.pop_front();
                    }
                    Some((ErrorCode::StaleEpoch, _)) => {
                        let _ = self.device.discard(&group);
                        // Try again once the commit that won has been read (now, if it has).
                        self.work.entry(group).or_default().stale = self.epoch(group) == epoch;
                    }
                    Some((_, why)) => {
                        let _ = self.device.discard(&group);
                        self.work.entry(group).or_default().ops.pop_front();
                        self.fail(group, why);
                    }
                }
                self.advance(group);
            }
            Request::Post(group) => {
                let work = self.work.entry(group).or_default();
                let Some((id, bytes, epoch)) = work.posting.remove(&req) else {
                    return;
                };
                match refusal {
                    None => self.events.push_back(CoreEvent::Sent { group, id }),
                    Some((ErrorCode::StaleEpoch, _)) => {
                        // Encrypted for an epoch that has passed: again once caught up.
                        let current = self.epoch(group);
                        let work = self.work.entry(group).or_default();
                        work.sends.push_front((id, bytes));
                        work.stale = current == epoch;
                    }
                    Some((_, why)) => self.fail(group, why),
                }
                self.advance(group);
            }
        }
    }

    /// The group's epoch on this device (0 if it is not in it).
    fn epoch(&self, group: GroupId) -> u64 {
        self.device.epoch(&group).unwrap_or(0)
    }

    fn fail(&mut self, group: GroupId, why: String) {
        self.events.push_back(CoreEvent::Failed {
            group: Some(group),
            why,
        });
    }

    /// Moves a group's work on as far as it can without waiting.
    fn advance(&mut self, group: GroupId) {
        let Some(work) = self.work.get(&group) else {
            return;
        };
        if work.current.is_some() || work.stale {
            return;
        }
        if let Some(op) = work.ops.front().cloned() {
            match op {
                Op::Create { policy, members } => {
                    if self.device.is_in(&group) {
                        // Joined already (the other side started it): nothing to create.
                        self.work.entry(group).or_default().ops.pop_front();
                        return self.advance(group);
                    }
                    match self.device.create_group(group, &policy) {
                        Ok(created) => {
                            self.dirty = true;
                            self.work.entry(group).or_default().current =
                                Some(Current::Creating { members });
                            self.request(Request::Create(group), |req| {
                                ClientToNode::CreateMlsGroup {
                                    req,
                                    group,
                                    group_info: created.group_info,
                                    ratchet_tree: created.ratchet_tree,
                                }
                            });
                        }
                        Err(err) => {
                            self.work.entry(group).or_default().ops.pop_front();
                            self.fail(group, err.to_string());
                        }
                    }
                }
                Op::Add { users, with_mine } => {
                    if !self.device.is_in(&group) {
                        return;
                    }
                    self.claim(group, users, with_mine);
                }
            }
            return;
        }
        if !self.device.is_in(&group) {
            return;
        }
        // Post what waits, in order.
        while let Some((id, bytes)) = self.work.get_mut(&group).and_then(|w| w.sends.pop_front()) {
            let epoch = self.epoch(group);
            match self.device.encrypt(&group, &bytes) {
                Ok(message) => {
                    self.dirty = true;
                    let req = self.request(Request::Post(group), |req| ClientToNode::Post {
                        req,
                        group,
                        id,
                        message,
                        blob: None,
                    });
                    self.work
                        .entry(group)
                        .or_default()
                        .posting
                        .insert(req, (id, bytes, epoch));
                }
                Err(err) => self.fail(group, err.to_string()),
            }
        }
    }

    /// Claims key packages of `users` (and, for a new group, of this user's other devices).
    fn claim(&mut self, group: GroupId, mut users: Vec<UserName>, with_mine: bool) {
        if with_mine {
            users.push(self.me().clone());
        }
        users.sort();
        users.dedup();
        let missing: Vec<UserName> = users
            .iter()
            .filter(|u| !self.keys.contains_key(*u))
            .cloned()
            .collect();
        if !missing.is_empty() {
            // Pin their keys first; the op starts again when they arrive.
            self.fetch_keys(missing);
            return;
        }
        self.work.entry(group).or_default().current = Some(Current::Claiming {
            waiting: users.iter().cloned().collect(),
            packages: Vec::new(),
        });
        for user in users {
            self.request(
                Request::Claim {
                    group,
                    user: user.clone(),
                },
                |req| ClientToNode::ClaimKeyPackages { req, user },
            );
        }
    }

    fn commit_adds(&mut self, group: GroupId) {
        let Some(Current::Claiming { packages, .. }) =
            self.work.get_mut(&group).and_then(|w| w.current.take())
        else {
            return;
        };
        if packages.is_empty() {
            // Nobody to add (no devices with key packages): the op is done.
            self.work.entry(group).or_default().ops.pop_front();
            return self.advance(group);
        }
        let checked = match self.device.check_key_packages(&packages, self.lookup()) {
            Ok(checked) => checked,
            Err(err) => {
                self.work.entry(group).or_default().ops.pop_front();
                self.fail(group, err.to_string());
                return self.advance(group);
            }
        };
        match self.device.add(&group, checked) {
            Ok(out) => self.submit(group, out),
            Err(err) => {
                self.work.entry(group).or_default().ops.pop_front();
                self.fail(group, err.to_string());
                self.advance(group);
            }
        }
    }

    fn submit(&mut self, group: GroupId, out: Outgoing) {
        let id = crate::client::random_id();
        let epoch = self.epoch(group);
        self.work.entry(group).or_default().current = Some(Current::Committing { epoch });
        self.request(Request::Commit(group), |req| ClientToNode::Handshake {
            req,
            group,
            id,
            message: out.commit,
            group_info: Some(out.group_info),
            welcome: out.welcome,
        });
    }

    /// Processes a group's backlog in order, as far as keys allow (and only once this device
    /// has joined, if its Welcome is still waiting).
    fn process(&mut self, group: GroupId) {
        if self.welcomes.iter().any(|(_, g, _)| *g == group) {
            return;
        }
        while let Some(entry) = self
            .backlog
            .get_mut(&group)
            .and_then(|b| b.front().cloned())
        {
            let me = self.device.me();
            let mine = entry.sender == me.user && entry.device == me.device;
            if !mine {
                let result = self
                    .device
                    .receive(&entry.body, lookup(&self.keys, &self.changed));
                match result {
                    Ok(Received::NeedKeys(users)) => {
                        self.fetch_keys(users);
                        return;
                    }
                    Ok(Received::Message { from, bytes, .. }) => {
                        self.events.push_back(CoreEvent::Message {
                            group,
                            from: from.user,
                            device: from.device,
                            bytes,
                            at_ms: entry.at_ms,
                        });
                    }
                    Ok(Received::Commit { removed_me, .. }) => {
                        self.events.push_back(if removed_me {
                            CoreEvent::Removed { group }
                        } else {
                            CoreEvent::Changed { group }
                        });
                    }
                    Ok(Received::Proposal { .. }) => {}
                    Err(err) => self.unreadable(group, &entry, err),
                }
                self.dirty = true;
            }
            self.backlog.get_mut(&group).map(VecDeque::pop_front);
            let seen = self.unsaved_entries.entry(group).or_insert(0);
            *seen = (*seen).max(entry.seq);
        }
        self.backlog.remove(&group);
        if let Some(work) = self.work.get_mut(&group) {
            work.stale = false;
        }
        self.advance(group);
    }

    fn unreadable(&mut self, group: GroupId, entry: &LogEntry, err: Refusal) {
        self.events.push_back(CoreEvent::Unreadable {
            group,
            from: entry.sender.clone(),
            why: err.to_string(),
        });
    }

    fn process_welcomes(&mut self) {
        while let Some((id, group, body)) = self.welcomes.front().cloned() {
            match self.device.join(&body, lookup(&self.keys, &self.changed)) {
                Ok(Ok(joined)) => {
                    self.dirty = true;
                    let name = self
                        .device
                        .policy(&joined)
                        .map(|p| p.name)
                        .unwrap_or_else(|_| GroupName::new("group").expect("a valid name"));
                    self.events.push_back(CoreEvent::Joined {
                        group: joined,
                        name,
                    });
                    self.welcomes.pop_front();
                    self.unsaved_welcomes.push(id);
                    self.process(joined);
                    continue;
                }
                Ok(Err(missing)) => {
                    self.fetch_keys(missing);
                    return;
                }
                Err(err) => {
                    self.events.push_back(CoreEvent::Failed {
                        group: Some(group),
                        why: format!("a Welcome could not be read: {err}"),
                    });
                    self.welcomes.pop_front();
                    self.unsaved_welcomes.push(id);
                    // What waited for it cannot be read now either.
                    self.process(group);
                }
            }
        }
    }
}

/// What an entry's value was when uploaded (to send only changes).
fn value_hash(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((key.len() as u64).to_be_bytes());
    hash.update(key);
    hash.update(value);
    hash.finalize().into()
}

/// Pinned account keys, minus those whose key changed (refused until accepted).
fn lookup<'a>(
    keys: &'a HashMap<UserName, Vec<u8>>,
    changed: &'a HashSet<UserName>,
) -> impl Fn(&UserName) -> Option<Vec<u8>> + 'a {
    move |user| {
        if changed.contains(user) {
            None
        } else {
            keys.get(user).cloned()
        }
    }
}
