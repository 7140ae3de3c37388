//! Who is connected to this node, and each session's outbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quip_proto::ids::{MsgId, UserName};
use tokio::sync::{Notify, mpsc};

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

/// A handle on one logged-in session.
#[derive(Debug, Clone)]
pub(crate) struct SessionRef {
    pub(crate) conn_id: u64,
    pub(crate) outbox: mpsc::Sender<Outgoing>,
    /// Set when a live push found the outbox full: the session re-reads its queue.
    pub(crate) lagged: Arc<AtomicBool>,
    pub(crate) wake: Arc<Notify>,
}

impl SessionRef {
    /// Queues a push without waiting. A full outbox marks the session lagged: the message is
    /// in storage, and the session's writer re-reads its queue when it catches up.
    pub(crate) fn push(&self, item: Outgoing) {
        if self.outbox.try_send(item).is_err() {
            self.lagged.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }
}

/// The node's online users.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<UserName, Vec<SessionRef>>>,
}

impl Registry {
    pub(crate) fn insert(&self, user: &UserName, session: SessionRef) -> bool {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(user.clone()).or_default();
        list.push(session);
        list.len() == 1
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

    pub(crate) fn online_users(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
