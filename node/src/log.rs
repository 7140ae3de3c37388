//! MLS group logs on the node: the groups' public state (cached, checked before every
//! append), appends through storage, and delivery to each member device in the log's order.
//!
//! Appends to one group take that group's lock on this node, so its state moves one commit
//! at a time here; storage's compare-and-set (`state_version`, the epoch) orders them across
//! nodes. Each session with a device has one *pump* task, the only writer of its `Log` and
//! `Welcome` frames: it gets notices of new entries (the entry's frame, encoded once for
//! every recipient), forwards one that follows what it sent last, and reads storage for any
//! gap, so a device sees every entry of every group once, in order, whatever pushes were lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use quip_mls::ds::PublicState;
use quip_mls::policy::Device;
use quip_proto::ids::{DeviceId, GroupId, UserName};
use quip_proto::limits::MAX_LOG_BATCH;
use quip_proto::mls::{LogEntry, LogKind};
use quip_proto::{NodeToClient, frame};
use quip_storage::{MlsKind, MlsLogEntry, Storage};
use tokio::sync::{Mutex, mpsc};

use crate::Node;
use crate::registry::{Outbox, Outgoing};

/// Groups whose public state stays in memory before the least recently used goes.
const CACHED_GROUPS: usize = 1024;
/// Notices a pump holds before it stops taking them and re-reads storage instead.
const PUMP_NOTICES: usize = 1024;

/// One group's state as this node last saw it in storage.
pub(crate) struct Cached {
    /// Storage's compare-and-set value for the state.
    pub(crate) version: u64,
    /// Highest seq appended.
    pub(crate) last_seq: u64,
    /// The public state.
    pub(crate) state: PublicState,
    /// Its devices.
    pub(crate) members: BTreeSet<Device>,
}

impl Cached {
    /// Reads a group from storage; `None` if it does not exist.
    pub(crate) async fn load<S: Storage>(
        storage: &S,
        group: &GroupId,
    ) -> Result<Option<Self>, crate::session::Refusal> {
        let Some(record) = storage
            .mls_group(group)
            .await
            .map_err(crate::session::Refusal::internal)?
        else {
            return Ok(None);
        };
        let state = PublicState::from_bytes(group, &record.state).map_err(|err| {
            tracing::error!(%group, error = %err, "a stored group state does not load");
            crate::session::Refusal::new(
                quip_proto::ErrorCode::Internal,
                "the group's stored state is unreadable",
            )
        })?;
        let members = state.devices().into_values().collect();
        Ok(Some(Self {
            version: record.state_version,
            last_seq: record.last_seq,
            state,
            members,
        }))
    }
}

/// One group's place in the cache: empty until loaded, emptied when it may be stale.
pub(crate) type Slot = Arc<Mutex<Option<Cached>>>;

/// The cache of groups' public states, one lock per group.
#[derive(Default)]
pub(crate) struct Groups {
    /// Each group's slot and when it was last used (a tick).
    slots: std::sync::Mutex<HashMap<GroupId, (u64, Slot)>>,
    tick: std::sync::atomic::AtomicU64,
}

impl Groups {
    /// The group's slot (empty until loaded); hold its lock while reading or changing it.
    pub(crate) fn slot(&self, group: &GroupId) -> Slot {
        let now = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= CACHED_GROUPS && !slots.contains_key(group) {
            // Forget the least recently used group nobody is using.
            if let Some(oldest) = slots
                .iter()
                .filter(|(_, (_, slot))| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, (used, _))| *used)
                .map(|(id, _)| *id)
            {
                slots.remove(&oldest);
            }
        }
        let entry = slots.entry(*group).or_insert_with(|| (now, Arc::default()));
        entry.0 = now;
        entry.1.clone()
    }
}

/// What a pump is told.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A new entry of a group: its seq and its `Log` frame (one entry).
    Entry {
        group: GroupId,
        seq: u64,
        frame: Bytes,
    },
    /// The entry (a commit) that removed this device from `group`: the last of the group it
    /// gets. Storage no longer keeps a cursor for the device there, so a read of storage
    /// would find nothing: what this session has not sent of the group up to this entry goes
    /// now, from the log.
    Removal {
        group: GroupId,
        seq: u64,
        frame: Bytes,
    },
    /// A Welcome for this device, or anything else: read storage.
    Check,
}

/// The sending end a session's pump listens on.
#[derive(Debug, Clone)]
pub(crate) struct Pump {
    tx: mpsc::Sender<Notice>,
    /// Set when a notice could not be queued: the pump re-reads storage.
    missed: Arc<std::sync::atomic::AtomicBool>,
}

impl Pump {
    /// Tells the pump, without waiting; a full pump re-reads storage instead.
    pub(crate) fn notify(&self, notice: Notice) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(notice) {
            self.missed
                .store(true, std::sync::atomic::Ordering::Release);
            let _ = self.tx.try_send(Notice::Check);
        }
    }
}

/// A `Log` frame of one entry, encoded once for every recipient.
pub(crate) fn entry_frame(group: GroupId, entry: LogEntry) -> Option<Bytes> {
    frame::encode(&NodeToClient::Log {
        group,
        entries: vec![entry],
    })
    .map(Bytes::from)
    .map_err(|err| tracing::error!(%group, error = %err, "a log entry does not fit a frame"))
    .ok()
}

/// The wire's kind of a stored entry.
pub(crate) fn wire_kind(kind: MlsKind) -> LogKind {
    match kind {
        MlsKind::Application => LogKind::Application,
        MlsKind::Proposal => LogKind::Proposal,
        MlsKind::Commit => LogKind::Commit,
    }
}

/// Starts the pump of a session that now speaks for `device`: it first delivers everything
/// the device has not acknowledged, then follows notices until the session ends.
pub(crate) fn start_pump<S: Storage>(
    node: Arc<Node<S>>,
    user: UserName,
    device: DeviceId,
    outbox: Outbox,
) -> Pump {
    let (tx, rx) = mpsc::channel(PUMP_NOTICES);
    let missed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pump = Pump {
        tx,
        missed: missed.clone(),
    };
    tokio::spawn(run_pump(node, user, device, outbox, rx, missed));
    pump
}

async fn run_pump<S: Storage>(
    node: Arc<Node<S>>,
    user: UserName,
    device: DeviceId,
    outbox: Outbox,
    mut rx: mpsc::Receiver<Notice>,
    missed: Arc<std::sync::atomic::AtomicBool>,
) {
    // What this session has sent of each group (beyond what the device acknowledged).
    let mut sent: HashMap<GroupId, u64> = HashMap::new();
    let mut welcomes_sent: BTreeSet<u64> = BTreeSet::new();
    let mut catch_up = true;
    loop {
        if catch_up || missed.swap(false, std::sync::atomic::Ordering::AcqRel) {
            catch_up = false;
            if deliver_welcomes(&node, &user, device, &outbox, &mut welcomes_sent)
                .await
                .is_err()
                || deliver_unread(&node, &user, device, &outbox, &mut sent)
                    .await
                    .is_err()
            {
                return;
            }
        }
        let Some(notice) = rx.recv().await else {
            return;
        };
        match notice {
            Notice::Entry { group, seq, frame } => {
                let last = sent.get(&group).copied();
                match last {
                    Some(last) if seq <= last => {}
                    Some(last) if seq == last + 1 => {
                        if outbox.send(Outgoing::Frame(frame)).await.is_err() {
                            return;
                        }
                        sent.insert(group, seq);
                    }
                    // A group this session has not synced (new to it: a Welcome may come
                    // first): catch up on everything.
                    None => catch_up = true,
                    // A gap: read storage.
                    Some(_) => {
                        if deliver_group(&node, &outbox, &mut sent, group, seq, None)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            Notice::Removal { group, seq, frame } => match sent.get(&group).copied() {
                Some(last) if seq <= last => {
                    sent.remove(&group);
                }
                // A gap: the entries before, then this one, and nothing after it.
                Some(last) if seq > last + 1 => {
                    if deliver_group(&node, &outbox, &mut sent, group, seq, Some(seq))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent.remove(&group);
                }
                // It follows what was sent, or this session never had to send anything of the
                // group (the device had acknowledged all of it, or only its own entries
                // followed, which a sender is not pushed).
                _ => {
                    sent.remove(&group);
                    if outbox.send(Outgoing::Frame(frame)).await.is_err() {
                        return;
                    }
                }
            },
            Notice::Check => catch_up = true,
        }
    }
}

/// The session ended.
struct Gone;

async fn deliver_welcomes<S: Storage>(
    node: &Node<S>,
    user: &UserName,
    device: DeviceId,
    outbox: &Outbox,
    sent: &mut BTreeSet<u64>,
) -> Result<(), Gone> {
    let welcomes = match node.storage.mls_welcomes(user, device, MAX_LOG_BATCH).await {
        Ok(w) => w,
        Err(err) => {
            tracing::error!(error = %err, %user, "cannot read welcomes");
            return Ok(());
        }
    };
    for welcome in welcomes {
        if !sent.insert(welcome.id) {
            continue;
        }
        let msg = NodeToClient::Welcome {
            id: welcome.id,
            group: welcome.group,
            body: welcome.body,
        };
        let Ok(bytes) = frame::encode(&msg) else {
            tracing::error!(%user, "a stored welcome does not fit a frame");
            continue;
        };
        outbox
            .send(Outgoing::Frame(Bytes::from(bytes)))
            .await
            .map_err(|_| Gone)?;
    }
    Ok(())
}

/// Every group with entries the device has not acknowledged.
async fn deliver_unread<S: Storage>(
    node: &Node<S>,
    user: &UserName,
    device: DeviceId,
    outbox: &Outbox,
    sent: &mut HashMap<GroupId, u64>,
) -> Result<(), Gone> {
    let mut after = None;
    loop {
        let page = match node
            .storage
            .mls_unread(user, device, after.as_ref(), MAX_LOG_BATCH)
            .await
        {
            Ok(page) => page,
            Err(err) => {
                tracing::error!(error = %err, %user, "cannot list unread groups");
                return Ok(());
            }
        };
        for unread in &page.items {
            let from = sent
                .get(&unread.group)
                .copied()
                .unwrap_or(0)
                .max(unread.delivered);
            sent.insert(unread.group, from);
            deliver_group(node, outbox, sent, unread.group, unread.last_seq, None).await?;
        }
        if !page.more {
            return Ok(());
        }
        after = page.items.last().map(|u| u.group);
    }
}

/// Entries of `group` after what was sent, up to `upto` (at least; exactly with `cap`), in
/// pages.
async fn deliver_group<S: Storage>(
    node: &Node<S>,
    outbox: &Outbox,
    sent: &mut HashMap<GroupId, u64>,
    group: GroupId,
    upto: u64,
    cap: Option<u64>,
) -> Result<(), Gone> {
    let Some(&start) = sent.get(&group) else {
        return Ok(());
    };
    let mut from = start;
    let half = outbox.budget() / 2;
    while from < upto {
        outbox.room_for(half).await.map_err(|_| Gone)?;
        let entries = match node
            .storage
            .mls_log(&group, from, MAX_LOG_BATCH, half)
            .await
        {
            Ok(entries) => entries,
            Err(err) => {
                tracing::error!(error = %err, %group, "cannot read a group's log");
                return Ok(());
            }
        };
        let entries: Vec<MlsLogEntry> = match cap {
            Some(cap) => entries.into_iter().filter(|e| e.seq <= cap).collect(),
            None => entries,
        };
        let Some(last) = entries.last().map(|e| e.seq) else {
            break;
        };
        let mut wire = Vec::with_capacity(entries.len());
        for entry in entries {
            wire.push(to_wire(node, entry).await);
        }
        let msg = NodeToClient::Log {
            group,
            entries: wire,
        };
        match frame::encode(&msg) {
            Ok(bytes) => outbox
                .send(Outgoing::Frame(Bytes::from(bytes)))
                .await
                .map_err(|_| Gone)?,
            Err(err) => tracing::error!(%group, error = %err, "a page of the log does not fit"),
        }
        from = last;
        sent.insert(group, from);
    }
    Ok(())
}

/// A stored entry as the wire carries it.
pub(crate) async fn to_wire<S: Storage>(node: &Node<S>, entry: MlsLogEntry) -> LogEntry {
    let blob = match entry.blob {
        Some(id) => match node.storage.blob_info(&id).await {
            Ok(Some(info)) => Some((id, info.len)),
            _ => None,
        },
        None => None,
    };
    LogEntry {
        seq: entry.seq,
        id: entry.id,
        sender: entry.sender.0,
        device: entry.sender.1,
        kind: wire_kind(entry.kind),
        epoch: entry.epoch,
        body: entry.body,
        blob,
        at_ms: u64::try_from(entry.at).unwrap_or(0),
    }
}
