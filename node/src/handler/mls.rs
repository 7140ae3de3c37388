//! MLS (`quip/2`): devices, key packages, group creation and the state a joining device
//! needs. Every MLS message is checked with `quip_mls` (public state, verify-only crypto)
//! before anything is stored.

use std::collections::{BTreeSet, HashMap};

use quip_mls::Refusal as MlsRefusal;
use quip_mls::credential::DeviceCredential;
use quip_mls::ds::{Incoming, PublicState, check_key_package};
use quip_mls::policy::Device;
use quip_proto::ids::{DeviceId, GroupId, MsgId, UserName};
use quip_proto::limits::{
    MAX_DEVICES, MAX_KEY_PACKAGE_UPLOAD, MAX_LIST_PAGE, MAX_MLS_MESSAGE, MAX_TREE_PAGE, MAX_WELCOME,
};
use quip_proto::mls::{ClaimedKeyPackage, DeviceInfo, KeyPackageUpload, LogEntry, MlsGroupSummary};
use quip_proto::{ErrorCode, NodeToClient, ReqId};
use quip_storage::limits::MAX_SIGNATURE_KEY;
use quip_storage::{
    Appended, MlsChange, MlsEntry, MlsKind, NewDevice, NewKeyPackage, NewMlsGroup, Storage,
    StorageError,
};
use tokio::sync::OwnedMutexGuard;

use super::now_ms;
use crate::log::{Cached, Notice, entry_frame, wire_kind};
use crate::session::{Refusal, Session};

/// The delivery service's refusal as a wire error.
pub(crate) fn refused(err: MlsRefusal) -> Refusal {
    let code = match &err {
        MlsRefusal::WrongEpoch { .. } => ErrorCode::StaleEpoch,
        MlsRefusal::NotMember(_) => ErrorCode::NotMember,
        MlsRefusal::Policy(text) if text == quip_mls::policy::ONLY_ADMIN => ErrorCode::NotAdmin,
        MlsRefusal::WrongGroup => ErrorCode::UnknownGroup,
        _ => ErrorCode::InvalidMls,
    };
    Refusal::new(code, err.to_string())
}

impl<S: Storage> Session<S> {
    /// The session's user and device, or a refusal naming what is missing.
    pub(crate) fn device(&self) -> Result<Device, Refusal> {
        let user = self.user()?.clone();
        let device = *self.device.get().ok_or_else(|| {
            Refusal::new(
                ErrorCode::NoDevice,
                "say which device this is first (UseDevice)",
            )
        })?;
        Ok(Device { user, device })
    }

    /// Whether another session on this node speaks for `user`'s `device`.
    fn used_elsewhere(&self, user: &UserName, device: DeviceId) -> bool {
        let mut busy = false;
        self.node.registry.with_sessions(user, |s| {
            busy |= s.conn_id != self.conn_id && s.device.get() == Some(&device);
        });
        busy
    }

    /// Makes `device` this session's device, unless another session here is using it.
    fn bind(&self, user: &UserName, device: DeviceId) -> Result<(), Refusal> {
        if self.device.get().is_some() {
            return Err(Refusal::new(
                ErrorCode::Malformed,
                "this session already has a device",
            ));
        }
        if self.used_elsewhere(user, device) {
            return Err(Refusal::new(
                ErrorCode::DeviceBusy,
                format!("device {device} is in use by another session"),
            ));
        }
        self.device
            .set(device)
            .map_err(|_| Refusal::new(ErrorCode::Malformed, "this session already has a device"))?;
        let pump =
            crate::log::start_pump(self.node.clone(), user.clone(), device, self.outbox.clone());
        let _ = self.pump.set(pump);
        Ok(())
    }
}

/// The account key (RSA-PSS, SPKI DER) of `user`, as registered.
async fn account_key<S: Storage>(
    node: &crate::Node<S>,
    user: &UserName,
) -> Result<Vec<u8>, Refusal> {
    Ok(node
        .storage
        .user(user)
        .await
        .map_err(Refusal::internal)?
        .ok_or_else(|| Refusal::new(ErrorCode::UnknownUser, format!("no user named {user}")))?
        .signing_key)
}

pub(crate) async fn enroll_device<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    device: DeviceId,
    credential: Vec<u8>,
    signature_key: Vec<u8>,
) -> Result<(), Refusal> {
    let user = session.user()?.clone();
    if signature_key.len() > MAX_SIGNATURE_KEY {
        return Err(Refusal::new(ErrorCode::TooLarge, "the key is too large"));
    }
    let named = DeviceCredential::from_identity(&credential).map_err(refused)?;
    if named.user != user || named.device != device {
        return Err(Refusal::new(
            ErrorCode::InvalidMls,
            "the credential names another user or device",
        ));
    }
    let key = account_key(&session.node, &user).await?;
    named.verify(&signature_key, &key).map_err(refused)?;
    session
        .node
        .storage
        .add_device(&NewDevice {
            user: user.clone(),
            device,
            credential,
            signature_key,
            created_at: now_ms(),
        })
        .await
        .map_err(|err| match err {
            StorageError::AlreadyExists { .. } => Refusal::new(
                ErrorCode::InvalidMls,
                "that device or key is already enrolled",
            ),
            StorageError::Full { .. } => Refusal::new(
                ErrorCode::QuotaExceeded,
                format!("an account has at most {MAX_DEVICES} devices: remove one first"),
            ),
            other => Refusal::internal(other),
        })?;
    session.bind(&user, device)?;
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}

pub(crate) async fn use_device<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    device: DeviceId,
) -> Result<(), Refusal> {
    let user = session.user()?.clone();
    let devices = session
        .node
        .storage
        .devices(&user)
        .await
        .map_err(Refusal::internal)?;
    if !devices.iter().any(|d| d.device == device) {
        return Err(Refusal::new(
            ErrorCode::UnknownDevice,
            format!("{user} has no device {device}"),
        ));
    }
    session.bind(&user, device)?;
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}

pub(crate) async fn list_devices<S: Storage>(
    session: &Session<S>,
    req: ReqId,
) -> Result<(), Refusal> {
    let user = session.user()?.clone();
    let node = &session.node;
    let records = node
        .storage
        .devices(&user)
        .await
        .map_err(Refusal::internal)?;
    let mut devices = Vec::with_capacity(records.len());
    for record in records.into_iter().take(MAX_DEVICES) {
        let mut online = false;
        node.registry.with_sessions(&user, |s| {
            online |= s.device.get() == Some(&record.device);
        });
        let backed_up = !node
            .storage
            .device_state(&user, record.device, None, 1)
            .await
            .map_err(Refusal::internal)?
            .items
            .is_empty();
        devices.push(DeviceInfo {
            device: record.device,
            online,
            created_at_ms: u64::try_from(record.created_at).unwrap_or(0),
            backed_up,
        });
    }
    session.send(&NodeToClient::Devices { req, devices }).await;
    Ok(())
}

pub(crate) async fn remove_device<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    device: DeviceId,
) -> Result<(), Refusal> {
    let user = session.user()?.clone();
    if session.used_elsewhere(&user, device) {
        return Err(Refusal::new(
            ErrorCode::DeviceBusy,
            format!("device {device} is connected: it cannot be removed while in use"),
        ));
    }
    let removed = session
        .node
        .storage
        .remove_device(&user, device)
        .await
        .map_err(Refusal::internal)?;
    if !removed {
        return Err(Refusal::new(
            ErrorCode::UnknownDevice,
            format!("{user} has no device {device}"),
        ));
    }
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}

pub(crate) async fn publish_key_packages<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    packages: Vec<KeyPackageUpload>,
) -> Result<(), Refusal> {
    let me = session.device()?;
    if packages.len() > MAX_KEY_PACKAGE_UPLOAD {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_KEY_PACKAGE_UPLOAD} key packages at a time"),
        ));
    }
    let key = account_key(&session.node, &me.user).await?;
    let now = now_ms();
    let mut checked = Vec::with_capacity(packages.len());
    for package in packages {
        let reference = check_key_package(&package.data, &me, &key).map_err(refused)?;
        if reference != package.reference {
            return Err(Refusal::new(
                ErrorCode::InvalidMls,
                "a key package's reference is not its hash",
            ));
        }
        checked.push(NewKeyPackage {
            kp_ref: reference,
            data: package.data,
            last_resort: package.last_resort,
            created_at: now,
        });
    }
    session
        .node
        .storage
        .put_key_packages(&me.user, me.device, &checked)
        .await
        .map_err(|err| match err {
            StorageError::AlreadyExists { .. } => {
                Refusal::new(ErrorCode::InvalidMls, "a key package was published before")
            }
            StorageError::Full { max, .. } => Refusal::new(
                ErrorCode::QuotaExceeded,
                format!("a device keeps at most {max} key packages"),
            ),
            StorageError::TooLarge { .. } => Refusal::new(ErrorCode::TooLarge, err.to_string()),
            other => Refusal::internal(other),
        })?;
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}

pub(crate) async fn claim_key_packages<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    user: UserName,
) -> Result<(), Refusal> {
    session.device()?;
    let taken = session
        .node
        .storage
        .take_key_packages(&user)
        .await
        .map_err(Refusal::internal)?;
    let packages = taken
        .into_iter()
        .map(|p| ClaimedKeyPackage {
            device: p.device,
            data: p.data,
        })
        .collect();
    session
        .send(&NodeToClient::KeyPackages {
            req,
            user,
            packages,
        })
        .await;
    Ok(())
}

pub(crate) async fn create_group<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    group: GroupId,
    group_info: Vec<u8>,
    ratchet_tree: Vec<u8>,
) -> Result<(), Refusal> {
    let me = session.device()?;
    if group_info.len() > MAX_WELCOME || ratchet_tree.len() > MAX_WELCOME {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            "the group info or tree is too large",
        ));
    }
    let key = account_key(&session.node, &me.user).await?;
    let (state, policy) =
        PublicState::create(&group, &group_info, &ratchet_tree, &me, &key).map_err(refused)?;
    session
        .node
        .storage
        .create_mls_group(&NewMlsGroup {
            id: group,
            name: policy.name.clone(),
            epoch: 0,
            state: state.to_bytes(),
            group_info,
            members: vec![(me.user.clone(), me.device)],
            created_at: now_ms(),
        })
        .await
        .map_err(|err| match err {
            StorageError::AlreadyExists { .. } => {
                Refusal::new(ErrorCode::GroupNameTaken, "a group with this id exists")
            }
            other => Refusal::internal(other),
        })?;
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}

/// What a device joining by itself needs: for members' own devices only.
pub(crate) async fn group_state<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    group: GroupId,
    offset: u64,
) -> Result<(), Refusal> {
    let me = session.device()?;
    let storage = &session.node.storage;
    let unknown = || {
        Refusal::new(
            ErrorCode::UnknownGroup,
            "no such group, or you are not in it",
        )
    };
    let members = storage.mls_members(&group).await.map_err(|err| match err {
        StorageError::NotFound { .. } => unknown(),
        other => Refusal::internal(other),
    })?;
    if !members.iter().any(|(user, _)| *user == me.user) {
        return Err(unknown());
    }
    let record = storage
        .mls_group(&group)
        .await
        .map_err(Refusal::internal)?
        .ok_or_else(unknown)?;
    let state = PublicState::from_bytes(&group, &record.state).map_err(|err| {
        tracing::error!(%group, error = %err, "a stored group state does not load");
        Refusal::new(
            ErrorCode::Internal,
            "the group's stored state is unreadable",
        )
    })?;
    let tree = state.ratchet_tree();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(tree.len());
    let end = start.saturating_add(MAX_TREE_PAGE).min(tree.len());
    session
        .send(&NodeToClient::GroupState {
            req,
            group,
            epoch: record.epoch,
            group_info: record.group_info,
            tree_len: tree.len() as u64,
            tree: tree[start..end].to_vec(),
            last_seq: record.last_seq,
        })
        .await;
    Ok(())
}

pub(crate) async fn list_groups<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    after: Option<GroupId>,
    limit: u32,
) -> Result<(), Refusal> {
    let user = session.user()?.clone();
    let limit = usize::try_from(limit).map_or(MAX_LIST_PAGE, |l| l.clamp(1, MAX_LIST_PAGE));
    let page = session
        .node
        .storage
        .mls_groups_of(&user, after.as_ref(), limit)
        .await
        .map_err(Refusal::internal)?;
    let groups = page
        .items
        .into_iter()
        .map(|g| MlsGroupSummary {
            id: g.id,
            name: g.name,
            epoch: g.epoch,
        })
        .collect();
    session
        .send(&NodeToClient::MlsGroups {
            req,
            groups,
            more: page.more,
        })
        .await;
    Ok(())
}

/// The group's cached state, locked (loaded from storage first if this node has none): one
/// change of a group at a time here.
async fn lock_group<S: Storage>(
    node: &crate::Node<S>,
    group: &GroupId,
) -> Result<OwnedMutexGuard<Option<Cached>>, Refusal> {
    let mut guard = node.groups.slot(group).lock_owned().await;
    if guard.is_none() {
        *guard = Cached::load(&*node.storage, group).await?;
    }
    if guard.is_none() {
        return Err(unknown_group());
    }
    Ok(guard)
}

fn unknown_group() -> Refusal {
    Refusal::new(
        ErrorCode::UnknownGroup,
        "no such group, or you are not in it",
    )
}

/// A proposal or commit: checked against the group's public state and policy, then appended
/// to its log with the state it leads to.
pub(crate) async fn handshake<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    group: GroupId,
    id: MsgId,
    message: Vec<u8>,
    group_info: Option<Vec<u8>>,
    welcome: Option<Vec<u8>>,
) -> Result<(), Refusal> {
    let me = session.device()?;
    if message.len() > MAX_MLS_MESSAGE
        || group_info.as_ref().is_some_and(|g| g.len() > MAX_WELCOME)
        || welcome.as_ref().is_some_and(|w| w.len() > MAX_WELCOME)
    {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            "the message is too large",
        ));
    }
    let node = &session.node;
    let mut guard = lock_group(node, &group).await?;
    let cached = guard.as_mut().ok_or_else(unknown_group)?;
    let epoch = cached.state.epoch();
    let (kind, change, added) = match cached.state.read(&message, &me).map_err(refused)? {
        Incoming::Commit(pending) => {
            let Some(group_info) = group_info else {
                return Err(Refusal::new(
                    ErrorCode::InvalidMls,
                    "a commit comes with the new epoch's group info",
                ));
            };
            let mut keys = HashMap::new();
            for user in pending.users_to_verify() {
                if let Ok(key) = account_key(node, &user).await {
                    keys.insert(user, key);
                }
            }
            let checked = pending.check(|u| keys.get(u).cloned()).map_err(refused)?;
            let adds_devices = !checked.summary().added.is_empty();
            if adds_devices != welcome.is_some() {
                return Err(Refusal::new(
                    ErrorCode::InvalidMls,
                    "a commit that adds devices comes with their Welcome, and only then",
                ));
            }
            let accepted = match cached.state.accept_commit(checked, &group_info) {
                Ok(accepted) => accepted,
                Err(err) => {
                    // The state may be half moved: read it again next time.
                    *guard = None;
                    return Err(refused(err));
                }
            };
            let mut added: Vec<(UserName, DeviceId)> = accepted
                .added
                .iter()
                .map(|(d, _)| (d.user.clone(), d.device))
                .collect();
            let welcomes = match &welcome {
                Some(w) => added
                    .iter()
                    .map(|(u, d)| (u.clone(), *d, w.clone()))
                    .collect(),
                None => Vec::new(),
            };
            if let Some(d) = &accepted.joined {
                added.push((d.user.clone(), d.device));
            }
            let change = MlsChange {
                state_version: cached.version,
                epoch: accepted.epoch,
                name: accepted.policy.name.clone(),
                state: cached.state.to_bytes(),
                group_info,
                added: added.clone(),
                removed: accepted
                    .removed
                    .iter()
                    .map(|d| (d.user.clone(), d.device))
                    .collect(),
                used_key_packages: accepted.added.iter().map(|(_, r)| r.clone()).collect(),
                welcomes,
            };
            cached.members = accepted.members.clone();
            (MlsKind::Commit, change, added)
        }
        Incoming::Proposal(proposal) => {
            // Read before the state moves: a refusal after it would leave the cache ahead.
            let name = cached.state.policy().map_err(refused)?.name;
            if let Err(err) = cached.state.accept_proposal(*proposal) {
                *guard = None;
                return Err(refused(err));
            }
            let change = MlsChange {
                state_version: cached.version,
                epoch,
                name,
                state: cached.state.to_bytes(),
                group_info: cached.state.group_info().to_vec(),
                added: Vec::new(),
                removed: Vec::new(),
                used_key_packages: Vec::new(),
                welcomes: Vec::new(),
            };
            (MlsKind::Proposal, change, Vec::new())
        }
        Incoming::Application => {
            return Err(Refusal::new(
                ErrorCode::InvalidMls,
                "application messages are posted, not handshakes",
            ));
        }
    };
    let new_epoch = change.epoch;
    let entry = MlsEntry {
        group,
        id,
        sender: (me.user.clone(), me.device),
        kind,
        epoch,
        body: message,
        blob: None,
        change: Some(change),
        at: super::now_ms(),
    };
    let outcome = append(session, &entry).await;
    let result = answer(session, req, group, new_epoch, outcome, &mut guard, entry).await;
    for (user, device) in added {
        notify(node, &user, device, Notice::Check);
    }
    result
}

/// An application message: for the group's current epoch, from a member device.
pub(crate) async fn post<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    group: GroupId,
    id: MsgId,
    message: Vec<u8>,
    blob: Option<quip_proto::ids::BlobId>,
) -> Result<(), Refusal> {
    let me = session.device()?;
    if message.len() > MAX_MLS_MESSAGE {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            "the message is too large",
        ));
    }
    if blob.is_some() {
        return Err(Refusal::new(
            ErrorCode::InvalidMls,
            "images on group logs are not served by this node yet",
        ));
    }
    let node = &session.node;
    let mut guard = lock_group(node, &group).await?;
    let cached = guard.as_mut().ok_or_else(unknown_group)?;
    let epoch = cached.state.epoch();
    match cached.state.read(&message, &me).map_err(refused)? {
        Incoming::Application => {}
        _ => {
            return Err(Refusal::new(
                ErrorCode::InvalidMls,
                "proposals and commits go through Handshake",
            ));
        }
    }
    let entry = MlsEntry {
        group,
        id,
        sender: (me.user.clone(), me.device),
        kind: MlsKind::Application,
        epoch,
        body: message,
        blob,
        change: None,
        at: super::now_ms(),
    };
    let outcome = append(session, &entry).await;
    answer(session, req, group, epoch, outcome, &mut guard, entry).await
}

async fn append<S: Storage>(session: &Session<S>, entry: &MlsEntry) -> Result<Appended, Refusal> {
    let mut outcome = session
        .node
        .storage
        .append_mls(
            std::slice::from_ref(entry),
            session.node.config.max_group_log_bytes,
        )
        .await
        .map_err(|err| match err {
            StorageError::NotFound { .. } => Refusal::new(
                ErrorCode::InvalidMls,
                "a device this commit adds is not enrolled, or the image is unknown",
            ),
            StorageError::TooLarge { .. } => Refusal::new(ErrorCode::TooLarge, err.to_string()),
            other => Refusal::internal(other),
        })?;
    outcome
        .pop()
        .ok_or_else(|| Refusal::new(ErrorCode::Internal, "storage answered nothing"))
}

/// Answers the sender, updates the cache, and tells the members' pumps.
async fn answer<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    group: GroupId,
    epoch: u64,
    outcome: Result<Appended, Refusal>,
    guard: &mut Option<Cached>,
    entry: MlsEntry,
) -> Result<(), Refusal> {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            *guard = None;
            return Err(err);
        }
    };
    let seq = match outcome {
        Appended::Stored { seq } => seq,
        Appended::Duplicate { seq } => {
            *guard = None;
            session
                .send(&NodeToClient::Appended {
                    req,
                    group,
                    seq,
                    epoch,
                    fresh: false,
                })
                .await;
            return Ok(());
        }
        other => {
            // Whatever this node believed of the group is stale or was moved ahead.
            *guard = None;
            return Err(match other {
                Appended::WrongEpoch { current } => Refusal::new(
                    ErrorCode::StaleEpoch,
                    format!("the group is at epoch {current}: catch up and try again"),
                ),
                Appended::Conflict { epoch, .. } => Refusal::new(
                    ErrorCode::StaleEpoch,
                    format!(
                        "another change won; the group is at epoch {epoch}: catch up and try again"
                    ),
                ),
                Appended::KeyPackageReused(_) => Refusal::new(
                    ErrorCode::InvalidMls,
                    "a key package in this commit was used before",
                ),
                Appended::NotMember => {
                    Refusal::new(ErrorCode::NotMember, "you are not in this group")
                }
                Appended::LogFull { log_bytes } => Refusal::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "the group's log holds {log_bytes} unread bytes: wait for members to read"
                    ),
                ),
                _ => unknown_group(),
            });
        }
    };
    let cached = guard.as_mut().expect("held since the check");
    if entry.change.is_some() {
        cached.version += 1;
    }
    cached.last_seq = seq;
    session
        .send(&NodeToClient::Appended {
            req,
            group,
            seq,
            epoch,
            fresh: true,
        })
        .await;
    let wire = LogEntry {
        seq,
        id: entry.id,
        sender: entry.sender.0.clone(),
        device: entry.sender.1,
        kind: wire_kind(entry.kind),
        epoch: entry.epoch,
        body: entry.body,
        blob: None,
        at_ms: u64::try_from(entry.at).unwrap_or(0),
    };
    let Some(frame) = entry_frame(group, wire) else {
        return Ok(());
    };
    let (me, my_device) = &entry.sender;
    // A removed device hears the commit that removed it, if it is connected to this node.
    // (One connected elsewhere does not: the master's news does not say who was removed, and
    // storage no longer has a cursor of the device for that node's pump to read.)
    let removed = entry.change.as_ref().map_or(&[][..], |c| &c.removed[..]);
    let elsewhere: BTreeSet<UserName> = {
        let remote = session
            .node
            .elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cached
            .members
            .iter()
            .map(|d| &d.user)
            .chain(removed.iter().map(|(u, _)| u))
            .filter(|u| remote.contains(*u))
            .cloned()
            .collect()
    };
    if !elsewhere.is_empty()
        && let Some(uplink) = &session.node.uplink
    {
        uplink.send(crate::master::ToMaster::LogAppended(
            elsewhere.into_iter().collect(),
            group,
            seq,
            frame.clone(),
        ));
    }
    for member in &cached.members {
        if member.user != *me || member.device != *my_device {
            let notice = Notice::Entry {
                group,
                seq,
                frame: frame.clone(),
            };
            notify(&session.node, &member.user, member.device, notice);
        }
    }
    for (user, device) in removed {
        let notice = Notice::Removal {
            group,
            seq,
            frame: frame.clone(),
        };
        notify(&session.node, user, *device, notice);
    }
    Ok(())
}

/// Tells the pump of the session speaking for this device, if it is connected here.
fn notify<S: Storage>(node: &crate::Node<S>, user: &UserName, device: DeviceId, notice: Notice) {
    let mut notice = Some(notice);
    node.registry.with_sessions(user, |s| {
        if s.device.get() == Some(&device)
            && let (Some(pump), Some(n)) = (s.pump.get(), notice.take())
        {
            pump.notify(n);
        }
    });
}

/// The device handled these entries and Welcomes.
pub(crate) async fn ack_log<S: Storage>(
    session: &Session<S>,
    entries: Vec<(GroupId, u64)>,
    welcomes: Vec<u64>,
) -> Result<(), Refusal> {
    let me = session.device()?;
    if entries.len() > MAX_LIST_PAGE || welcomes.len() > MAX_LIST_PAGE {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            "too many acknowledgements at once",
        ));
    }
    let storage = &session.node.storage;
    if !entries.is_empty() {
        storage
            .ack_mls(&me.user, me.device, &entries)
            .await
            .map_err(Refusal::internal)?;
    }
    if !welcomes.is_empty() {
        storage
            .ack_welcomes(&me.user, me.device, &welcomes)
            .await
            .map_err(Refusal::internal)?;
    }
    Ok(())
}

/// Stores entries of this session's device's (client-encrypted) state backup.
pub(crate) async fn put_device_state<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<(), Refusal> {
    use quip_proto::limits::{MAX_STATE_ID, MAX_STATE_UPLOAD};
    let me = session.device()?;
    let bytes: usize = entries
        .iter()
        .map(|(id, value)| id.len() + value.as_ref().map_or(0, Vec::len))
        .sum();
    if bytes > MAX_STATE_UPLOAD || entries.iter().any(|(id, _)| id.len() > MAX_STATE_ID) {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_STATE_UPLOAD} bytes of state per request"),
        ));
    }
    session
        .node
        .storage
        .put_device_state(&me.user, me.device, &entries)
        .await
        .map_err(|err| match err {
            StorageError::TooLarge { .. } => Refusal::new(ErrorCode::TooLarge, err.to_string()),
            other => Refusal::internal(other),
        })?;
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}

/// One page of the state backup of a device of the caller's that nobody is using.
pub(crate) async fn get_device_state<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    device: DeviceId,
    after: Option<Vec<u8>>,
) -> Result<(), Refusal> {
    use quip_proto::limits::MAX_STATE_UPLOAD;
    let user = session.user()?.clone();
    if session.used_elsewhere(&user, device) {
        return Err(Refusal::new(
            ErrorCode::DeviceBusy,
            format!("device {device} is in use: it cannot be taken over now"),
        ));
    }
    let page = session
        .node
        .storage
        .device_state(&user, device, after.as_deref(), 256)
        .await
        .map_err(|err| match err {
            StorageError::NotFound { .. } => Refusal::new(
                ErrorCode::UnknownDevice,
                format!("{user} has no device {device}"),
            ),
            other => Refusal::internal(other),
        })?;
    // Fit the answer in a frame: stop before the entry that would overflow (the first one
    // always fits: uploads are bounded the same way).
    let mut entries = Vec::new();
    let mut bytes = 0;
    let total = page.items.len();
    for (id, value) in page.items {
        bytes += id.len() + value.len();
        if !entries.is_empty() && bytes > MAX_STATE_UPLOAD {
            break;
        }
        entries.push((id, value));
    }
    let more = page.more || entries.len() < total;
    session
        .send(&NodeToClient::DeviceState {
            req,
            device,
            entries,
            more,
        })
        .await;
    Ok(())
}
