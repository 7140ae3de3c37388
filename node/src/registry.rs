//! Who is connected to this node, and each session's outbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quip_proto::ids::{MsgId, UserName};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

/// Something the session's writer task sends to its client.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A whole encoded frame (an answer or a push).
    Frame(Bytes),
    /// A delivery: `prefix` (length, tag, wrapped key) then the shared sealed bytes, written
    /// without copying `sealed` per recipient.
    Deliver {
        id: MsgId,
        prefix: Bytes,
        sealed: Bytes,
    },
    /// The client acknowledged these: forget them.
    Acked(Vec<MsgId>),
}

impl Outgoing {
    /// Bytes this item keeps in memory until it is written.
    fn cost(&self) -> usize {
        match self {
            Self::Frame(bytes) => bytes.len(),
            Self::Deliver { prefix, sealed, .. } => prefix.len() + sealed.len(),
            Self::Acked(ids) => ids.len() * std::mem::size_of::<MsgId>(),
        }
    }
}

/// An item on its way to the writer, holding its share of the outbox's byte budget until it
/// is written (or dropped).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) item: Outgoing,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// What a session's writer task has yet to write, bounded in frames *and* bytes: a client that
/// does not read costs the node at most `bytes` here, however large its messages.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    max: u32,
}

/// The outbox is closed: its session has ended.
#[derive(Debug)]
pub(crate) struct Closed;

impl Outbox {
    /// An outbox of at most `frames` items and `bytes` bytes, and the writer's end.
    pub(crate) fn new(frames: usize, bytes: usize) -> (Self, mpsc::Receiver<Queued>) {
        let max = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        let (tx, rx) = mpsc::channel(frames);
        let bytes = Arc::new(Semaphore::new(max as usize));
        (Self { tx, bytes, max }, rx)
    }

    /// An item's cost in permits: its bytes, capped at the whole budget (so one item larger
    /// than the budget still goes through, alone).
    fn permits(&self, item: &Outgoing) -> u32 {
        u32::try_from(item.cost()).unwrap_or(u32::MAX).min(self.max)
    }

    /// Queues `item`, waiting for room (answers, and drains that read from storage).
    pub(crate) async fn send(&self, item: Outgoing) -> Result<(), Closed> {
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(self.permits(&item))
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Queued {
                item,
                _bytes: Some(permit),
            })
            .await
            .map_err(|_| Closed)
    }

    /// Queues `item` if there is room now; `false` if the outbox is full (or closed).
    pub(crate) fn try_send(&self, item: Outgoing) -> bool {
        let Ok(permit) = self
            .bytes
            .clone()
            .try_acquire_many_owned(self.permits(&item))
        else {
            return false;
        };
        self.tx
            .try_send(Queued {
                item,
                _bytes: Some(permit),
            })
            .is_ok()
    }

    /// Queues a note that costs no budget and must not wait (acknowledged ids); dropped if the
    /// outbox is full, which only costs a duplicate the client drops by id.
    pub(crate) fn note(&self, item: Outgoing) {
        let _ = self.tx.try_send(Queued { item, _bytes: None });
    }

    /// Waits until at least `bytes` of the budget are free (a drain reads its next page from
    /// storage only when the client has taken most of the last one).
    pub(crate) async fn room_for(&self, bytes: usize) -> Result<(), Closed> {
        let want = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.max);
        self.bytes
            .acquire_many(want)
            .await
            .map(drop)
            .map_err(|_| Closed)
    }

    /// The byte budget.
    pub(crate) fn budget(&self) -> usize {
        self.max as usize
    }

    /// Bytes queued and not yet written.
    pub(crate) fn held(&self) -> usize {
        (self.max as usize).saturating_sub(self.bytes.available_permits())
    }
}

/// A handle on one logged-in session.
#[derive(Debug, Clone)]
pub(crate) struct SessionRef {
    pub(crate) conn_id: u64,
    pub(crate) outbox: Outbox,
    /// Set when a live push found the outbox full: the session re-reads its queue.
    pub(crate) lagged: Arc<AtomicBool>,
    pub(crate) wake: Arc<Notify>,
    /// The device the session speaks for, once it has said.
    pub(crate) device: Arc<std::sync::OnceLock<quip_proto::ids::DeviceId>>,
    /// Its log pump, once it has a device.
    pub(crate) pump: Arc<std::sync::OnceLock<crate::log::Pump>>,
}

impl SessionRef {
    /// Queues a push without waiting. A full outbox marks the session lagged: the message is
    /// in storage, and the session's writer re-reads its queue when it catches up.
    pub(crate) fn push(&self, item: Outgoing) {
        if !self.outbox.try_send(item) {
            self.lagged.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }
}

/// The node's online users.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<UserName, Vec<SessionRef>>>,
    /// Sessions being set up, per user (see [`Seat`]).
    reserved: Mutex<HashMap<UserName, usize>>,
}

/// The account already has as many sessions here as the node allows.
#[derive(Debug)]
pub(crate) struct TooManySessions(pub(crate) usize);

/// A place for one more session of a user, held between the login check and the moment the
/// session starts receiving pushes (so `LoggedIn` is always its first frame).
#[derive(Debug)]
pub(crate) struct Seat<'a> {
    registry: &'a Registry,
    user: UserName,
    taken: bool,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        if !self.taken {
            self.registry.unreserve(&self.user);
        }
    }
}

impl Registry {
    /// Reserves a session for `user` unless they already have `max` here (sessions and
    /// reservations together).
    pub(crate) fn reserve(&self, user: &UserName, max: usize) -> Result<Seat<'_>, TooManySessions> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let have = map.get(user).map_or(0, Vec::len) + reserved.get(user).copied().unwrap_or(0);
        if have >= max {
            return Err(TooManySessions(have));
        }
        *reserved.entry(user.clone()).or_default() += 1;
        Ok(Seat {
            registry: self,
            user: user.clone(),
            taken: false,
        })
    }

    fn unreserve(&self, user: &UserName) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = reserved.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                reserved.remove(user);
            }
        }
    }

    /// Seats a session; returns true if it is the user's first one here.
    pub(crate) fn insert(&self, mut seat: Seat<'_>, session: SessionRef) -> bool {
        let first = {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let list = map.entry(seat.user.clone()).or_default();
            list.push(session);
            list.len() == 1
        };
        seat.taken = true;
        self.unreserve(&seat.user);
        first
    }

    /// Removes a session; returns true if it was the user's last one here.
    pub(crate) fn remove(&self, user: &UserName, conn_id: u64) -> bool {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get_mut(user) else {
            return false;
        };
        list.retain(|s| s.conn_id != conn_id);
        if list.is_empty() {
            map.remove(user);
            true
        } else {
            false
        }
    }

    /// Calls `f` for every session of `user` here; returns whether there was any.
    pub(crate) fn with_sessions(&self, user: &UserName, mut f: impl FnMut(&SessionRef)) -> bool {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(user) {
            Some(list) => {
                list.iter().for_each(&mut f);
                true
            }
            None => false,
        }
    }

    /// Everyone connected here.
    pub(crate) fn users(&self) -> Vec<UserName> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.keys().cloned().collect()
    }

    /// Makes every session re-read its queue (after the master was unreachable, or dropped
    /// relays for us).
    pub(crate) fn wake_all(&self) {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for session in map.values().flatten() {
            session.lagged.store(true, Ordering::Release);
            session.wake.notify_one();
            if let Some(pump) = session.pump.get() {
                pump.notify(crate::log::Notice::Check);
            }
        }
    }

    pub(crate) fn is_online(&self, user: &UserName) -> bool {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(user)
    }

    /// Logged-in sessions (a user may have several).
    pub(crate) fn sessions(&self) -> usize {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }

    /// Bytes waiting in every session's outbox here.
    pub(crate) fn buffered(&self) -> usize {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.values().flatten().map(|s| s.outbox.held()).sum()
    }

    pub(crate) fn online_users(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
