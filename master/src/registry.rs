//! The node registry: every registered node with its load, health and link, the user
//! directory beside it, and the discovery choice (least loaded, spread between heartbeats).
//!
//! Every directory change also updates the other nodes' presence views (see
//! [`crate::presence`]): the frames are queued while the lock is held, so each node sees the
//! changes in the order they happened.
//!
//! Generic over the link (how to reach a node's session) so the choice logic and presence
//! are tested without sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quip_proto::WrappedKey;
use quip_proto::ids::{NodeName, UserName};
use quip_proto::relay::{Load, NodeStatus};

use crate::directory::{Addressed, Audience, Directory};
use crate::presence::{self, Outbox};

/// The caller's connection is no longer the node's registered one (it was replaced by a
/// newer registration, or dropped as dead): its session should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

/// A node joining (or rejoining) the cluster.
#[derive(Debug)]
pub(crate) struct Registration<L> {
    pub(crate) node: NodeName,
    pub(crate) conn_id: u64,
    pub(crate) client_addr: String,
    pub(crate) load: Load,
    pub(crate) users: Vec<UserName>,
    pub(crate) link: L,
}

#[derive(Debug)]
struct NodeEntry<L> {
    conn_id: u64,
    client_addr: String,
    load: Load,
    last_seen: Instant,
    /// Discovery answers naming this node since its last heartbeat.
    assigned: u32,
    draining: bool,
    /// A presence frame did not fit its queue: changes are skipped until a fresh snapshot
    /// gets through.
    presence_stale: bool,
    link: L,
}

impl<L> NodeEntry<L> {
    fn healthy(&self, now: Instant, dead_after: Duration) -> bool {
        !self.draining && now.saturating_duration_since(self.last_seen) < dead_after
    }

    fn full(&self) -> bool {
        let max = self.load.max_clients;
        max > 0 && self.load.clients.saturating_add(self.load.pending) >= max
    }

    fn score(&self) -> u64 {
        u64::from(self.load.clients) + u64::from(self.load.pending) + u64::from(self.assigned)
    }
}

#[derive(Debug)]
struct State<L> {
    nodes: BTreeMap<NodeName, NodeEntry<L>>,
    directory: Directory,
    /// Advances on every discovery answer; breaks exact ties in turn.
    rotation: usize,
}

/// Every node the master knows, and who is connected where.
#[derive(Debug)]
pub(crate) struct Registry<L> {
    state: Mutex<State<L>>,
    dead_after: Duration,
}

/// One destination of a relay (or announcement): the node, its link and its recipients'
/// keys (or users).
pub(crate) type Destination<L, T = WrappedKey> = (NodeName, L, Vec<T>);

impl<L: Outbox> State<L> {
    /// Queues a snapshot of everyone connected to another node for `node`; a full queue
    /// marks it stale (retried by [`Registry::resync_presence`]).
    fn send_snapshot(&mut self, node: &NodeName) {
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        let online = self.directory.elsewhere(node);
        let frames = presence::frames(true, &online, &[]);
        let fits = entry.link.push(&frames).is_ok();
        if entry.presence_stale && fits {
            tracing::info!(%node, users = online.len(), "presence snapshot caught up");
        } else if !fits && !entry.presence_stale {
            tracing::warn!(%node, "control queue full; presence snapshot postponed");
        }
        entry.presence_stale = !fits;
    }

    /// Tells every registered node but `origin` of the users in `online` who arrived and
    /// those in `offline` who left, each node only what changes its view. One encoding serves
    /// every node not singled out in either audience.
    fn broadcast(&mut self, origin: Option<&NodeName>, online: &Audience, offline: &Audience) {
        if online.is_empty() && offline.is_empty() {
            return;
        }
        let mut common: Option<Vec<Bytes>> = None;
        for (name, entry) in &mut self.nodes {
            if Some(name) == origin || entry.presence_stale {
                continue;
            }
            let (on, off) = (online.only.get(name), offline.only.get(name));
            let pushed = if on.is_none() && off.is_none() {
                let frames = common
                    .get_or_insert_with(|| presence::frames(false, &online.all, &offline.all));
                if frames.is_empty() {
                    continue;
                }
                entry.link.push(frames)
            } else {
                let with = |all: &[UserName], own: Option<&Vec<UserName>>| -> Vec<UserName> {
                    all.iter()
                        .chain(own.into_iter().flatten())
                        .cloned()
                        .collect()
                };
                let frames =
                    presence::frames(false, &with(&online.all, on), &with(&offline.all, off));
                entry.link.push(&frames)
            };
            if pushed.is_err() {
                tracing::warn!(node = %name, "control queue full; presence resent as a snapshot later");
                entry.presence_stale = true;
            }
        }
    }
}

impl<L: Outbox> Registry<L> {
    pub(crate) fn new(dead_after: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                nodes: BTreeMap::new(),
                directory: Directory::default(),
                rotation: 0,
            }),
            dead_after,
        }
    }

    fn state(&self) -> MutexGuard<'_, State<L>> {
        // The state stays consistent at every await-free step; a panic elsewhere cannot
        // leave it half-changed, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or replaces the node. Its directory rows become exactly `users`. The node gets
    /// a presence snapshot; the others hear its users as online, and as offline the users it
    /// no longer has. Returns the link of the connection it replaces, if that was another one
    /// (to be closed).
    pub(crate) fn register(&self, reg: Registration<L>, now: Instant) -> Option<L> {
        let mut state = self.state();
        let removed = state.directory.replace(&reg.node, reg.users);
        let entry = NodeEntry {
            conn_id: reg.conn_id,
            client_addr: reg.client_addr,
            load: reg.load,
            last_seen: now,
            assigned: 0,
            draining: false,
            presence_stale: false,
            link: reg.link,
        };
        let old = state.nodes.insert(reg.node.clone(), entry);
        state.send_snapshot(&reg.node);
        let origin = Some(&reg.node);
        let online = state
            .directory
            .audience(origin, &state.directory.users_of(&reg.node));
        let offline = state.directory.audience(origin, &removed);
        state.broadcast(origin, &online, &offline);
        let old = old?;
        (old.conn_id != reg.conn_id).then_some(old.link)
    }

    fn with_state<T>(
        &self,
        node: &NodeName,
        conn_id: u64,
        f: impl FnOnce(&mut State<L>) -> T,
    ) -> Result<T, Stale> {
        let mut state = self.state();
        match state.nodes.get(node) {
            Some(entry) if entry.conn_id == conn_id => Ok(f(&mut state)),
            _ => Err(Stale),
        }
    }

    fn with_entry<T>(
        &self,
        node: &NodeName,
        conn_id: u64,
        f: impl FnOnce(&mut NodeEntry<L>) -> T,
    ) -> Result<T, Stale> {
        match self.state().nodes.get_mut(node) {
            Some(entry) if entry.conn_id == conn_id => Ok(f(entry)),
            _ => Err(Stale),
        }
    }

    /// A heartbeat: new load, seen now, assignments since the last one forgotten.
    pub(crate) fn heartbeat(
        &self,
        node: &NodeName,
        conn_id: u64,
        load: Load,
        now: Instant,
    ) -> Result<(), Stale> {
        self.with_entry(node, conn_id, |entry| {
            entry.load = load;
            entry.last_seen = now;
            entry.assigned = 0;
        })
    }

    /// `users` logged in on `node`; the other nodes hear of those it did not have yet.
    pub(crate) fn online(
        &self,
        node: &NodeName,
        conn_id: u64,
        users: Vec<UserName>,
    ) -> Result<(), Stale> {
        self.with_state(node, conn_id, |state| {
            let added = state.directory.online(node, users);
            let online = state.directory.audience(Some(node), &added);
            state.broadcast(Some(node), &online, &Audience::default());
        })
    }

    /// `users` left `node`; the other nodes hear of those now connected nowhere else.
    pub(crate) fn offline(
        &self,
        node: &NodeName,
        conn_id: u64,
        users: &[UserName],
    ) -> Result<(), Stale> {
        self.with_state(node, conn_id, |state| {
            let removed = state.directory.offline(node, users);
            let offline = state.directory.audience(Some(node), &removed);
            state.broadcast(Some(node), &Audience::default(), &offline);
        })
    }

    /// The node is shutting down: no more clients for it (it still gets relays for the users
    /// it has until they move).
    pub(crate) fn draining(&self, node: &NodeName, conn_id: u64) -> Result<(), Stale> {
        self.with_entry(node, conn_id, |entry| entry.draining = true)
    }

    /// Where a relay (keys) or an announcement (users) from `origin` goes, and how many
    /// recipients are connected nowhere else.
    pub(crate) fn route<T: Addressed + Clone>(
        &self,
        origin: &NodeName,
        conn_id: u64,
        keys: &[T],
    ) -> Result<(Vec<Destination<L, T>>, usize), Stale> {
        let state = self.state();
        match state.nodes.get(origin) {
            Some(entry) if entry.conn_id == conn_id => {}
            _ => return Err(Stale),
        }
        let route = state.directory.route(origin, keys);
        let destinations = route
            .groups
            .into_iter()
            .filter_map(|(node, keys)| {
                let link = state.nodes.get(&node)?.link.clone();
                Some((node, link, keys))
            })
            .collect();
        Ok((destinations, route.unrouted))
    }

    /// Drops the node if `conn_id` is still its registered connection; the other nodes hear
    /// of its users now connected nowhere else.
    pub(crate) fn remove(&self, node: &NodeName, conn_id: u64) -> bool {
        self.with_state(node, conn_id, |state| {
            state.nodes.remove(node);
            let removed = state.directory.remove_node(node);
            let offline = state.directory.audience(None, &removed);
            state.broadcast(None, &Audience::default(), &offline);
        })
        .is_ok()
    }

    /// Drops every node silent for `dead_after` and returns them (their links to be closed);
    /// the remaining nodes hear of their users now connected nowhere else.
    pub(crate) fn reap(&self, now: Instant) -> Vec<(NodeName, L)> {
        let mut state = self.state();
        let dead: Vec<NodeName> = state
            .nodes
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) >= self.dead_after)
            .map(|(name, _)| name.clone())
            .collect();
        let mut removed = BTreeSet::new();
        let reaped = dead
            .into_iter()
            .filter_map(|name| {
                let entry = state.nodes.remove(&name)?;
                removed.extend(state.directory.remove_node(&name));
                Some((name, entry.link))
            })
            .collect::<Vec<_>>();
        let offline = state.directory.audience(None, &removed);
        state.broadcast(None, &Audience::default(), &offline);
        reaped
    }

    /// Sends a fresh presence snapshot to every node that missed a change because its queue
    /// was full, if its queue has room now.
    pub(crate) fn resync_presence(&self) {
        let mut state = self.state();
        let stale: Vec<NodeName> = state
            .nodes
            .iter()
            .filter(|(_, e)| e.presence_stale)
            .map(|(name, _)| name.clone())
            .collect();
        for node in stale {
            state.send_snapshot(&node);
        }
    }

    /// The node a new client should use: the healthy, non-full node with the lowest
    /// `clients + pending + assigned`; ties go to the fewest assigned, then in turn.
    pub(crate) fn discover(&self, now: Instant) -> Option<(NodeName, String)> {
        let mut state = self.state();
        let dead_after = self.dead_after;
        let eligible = |e: &NodeEntry<L>| e.healthy(now, dead_after) && !e.full();
        let best = state
            .nodes
            .values()
            .filter(|e| eligible(e))
            .map(|e| (e.score(), e.assigned))
            .min()?;
        let ties: Vec<NodeName> = state
            .nodes
            .iter()
            .filter(|(_, e)| eligible(e) && (e.score(), e.assigned) == best)
            .map(|(name, _)| name.clone())
            .collect();
        let pick = ties[state.rotation % ties.len()].clone();
        state.rotation = state.rotation.wrapping_add(1);
        let entry = state.nodes.get_mut(&pick)?;
        entry.assigned = entry.assigned.saturating_add(1);
        Some((pick, entry.client_addr.clone()))
    }

    /// Every node, sorted by name.
    pub(crate) fn status(&self, now: Instant) -> Vec<NodeStatus> {
        let state = self.state();
        state
            .nodes
            .iter()
            .map(|(name, e)| NodeStatus {
                node: name.clone(),
                client_addr: e.client_addr.clone(),
                load: e.load.clone(),
                healthy: e.healthy(now, self.dead_after),
                last_seen_ms: u64::try_from(now.saturating_duration_since(e.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Online users, each counted once.
    pub(crate) fn users(&self) -> usize {
        self.state().directory.users()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use quip_proto::{MasterToNode, frame};

    use crate::presence::Full;

    use super::*;

    /// Links that only carry an id (presence frames go nowhere).
    impl Outbox for u64 {
        fn push(&self, _: &[Bytes]) -> Result<(), Full> {
            Ok(())
        }
    }

    /// A link that decodes what it is sent, with room for `room` frames.
    #[derive(Clone, Debug, Default)]
    struct Inbox(Arc<Mutex<(Vec<MasterToNode>, usize)>>);

    impl Inbox {
        fn with_room(room: usize) -> Self {
            Self(Arc::new(Mutex::new((Vec::new(), room))))
        }

        fn set_room(&self, room: usize) {
            self.0.lock().unwrap().1 = room;
        }

        /// Everything received since the last call, as (snapshot, online, offline), sorted.
        fn take(&self) -> Vec<(bool, Vec<String>, Vec<String>)> {
            let sorted = |users: Vec<UserName>| {
                let mut names: Vec<String> = users.iter().map(|u| u.to_string()).collect();
                names.sort();
                names
            };
            std::mem::take(&mut self.0.lock().unwrap().0)
                .into_iter()
                .map(|msg| match msg {
                    MasterToNode::Presence {
                        snapshot,
                        online,
                        offline,
                    } => (snapshot, sorted(online), sorted(offline)),
                    other => panic!("not presence: {other:?}"),
                })
                .collect()
        }
    }

    impl Outbox for Inbox {
        fn push(&self, frames: &[Bytes]) -> Result<(), Full> {
            let mut inbox = self.0.lock().unwrap();
            if frames.len() > inbox.1 {
                return Err(Full);
            }
            inbox.1 -= frames.len();
            for f in frames {
                let msg = frame::decode_body(&f[frame::PREFIX_LEN..]).unwrap();
                inbox.0.push(msg);
            }
            Ok(())
        }
    }

    fn user(u: &str) -> UserName {
        UserName::new(u).unwrap()
    }

    fn names(users: &[&str]) -> Vec<String> {
        users.iter().map(|u| u.to_string()).collect()
    }

    /// A snapshot listing `online`.
    fn snapshot(online: &[&str]) -> (bool, Vec<String>, Vec<String>) {
        (true, names(online), vec![])
    }

    /// A change.
    fn change(online: &[&str], offline: &[&str]) -> (bool, Vec<String>, Vec<String>) {
        (false, names(online), names(offline))
    }

    fn join(registry: &Registry<Inbox>, name: &str, conn_id: u64, users: &[&str]) -> Inbox {
        let inbox = Inbox::with_room(100);
        registry.register(
            Registration {
                node: node(name),
                conn_id,
                client_addr: "127.0.0.1:7000".into(),
                load: load(0),
                users: users.iter().map(|u| user(u)).collect(),
                link: inbox.clone(),
            },
            Instant::now(),
        );
        inbox
    }

    #[test]
    fn registration_sends_a_snapshot_of_the_others_and_tells_them() {
        let registry = Registry::new(Duration::from_secs(3));
        let a = join(&registry, "a", 1, &["alice", "amy"]);
        assert_eq!(a.take(), [snapshot(&[])]);
        let b = join(&registry, "b", 2, &["bob", "alice"]);
        assert_eq!(b.take(), [snapshot(&["alice", "amy"])]);
        assert_eq!(a.take(), [change(&["alice", "bob"], &[])]);
        let c = join(&registry, "c", 3, &[]);
        assert_eq!(c.take(), [snapshot(&["alice", "amy", "bob"])]);
        assert!(a.take().is_empty() && b.take().is_empty(), "nothing new");
        // b registers again without alice and bob: alice is still on a, so only a (for
        // which she is now nowhere else) hears she left; bob left everywhere.
        let b2 = Inbox::with_room(100);
        registry.register(
            Registration {
                node: node("b"),
                conn_id: 4,
                client_addr: "x:1".into(),
                load: load(0),
                users: vec![user("ben")],
                link: b2.clone(),
            },
            Instant::now(),
        );
        assert_eq!(b2.take(), [snapshot(&["alice", "amy"])]);
        assert_eq!(a.take(), [change(&["ben"], &["alice", "bob"])]);
        assert_eq!(c.take(), [change(&["ben"], &["bob"])]);
        assert!(b.take().is_empty(), "the replaced link hears nothing");
    }

    #[test]
    fn online_and_offline_reach_the_other_nodes_only() {
        let registry = Registry::new(Duration::from_secs(3));
        let a = join(&registry, "a", 1, &[]);
        let b = join(&registry, "b", 2, &[]);
        let c = join(&registry, "c", 3, &["cat"]);
        for inbox in [&a, &b, &c] {
            inbox.take();
        }
        registry.online(&node("a"), 1, vec![user("alice")]).unwrap();
        registry.online(&node("a"), 1, vec![user("alice")]).unwrap();
        assert!(a.take().is_empty());
        assert_eq!(
            b.take(),
            [change(&["alice"], &[])],
            "once: a had her already"
        );
        assert_eq!(c.take(), [change(&["alice"], &[])]);
        registry.online(&node("b"), 2, vec![user("alice")]).unwrap();
        b.take();
        assert_eq!(a.take(), [change(&["alice"], &[])]);
        // alice leaves a but stays on b: for b she is now on no other node.
        registry.offline(&node("a"), 1, &[user("alice")]).unwrap();
        assert_eq!(b.take(), [change(&[], &["alice"])]);
        assert!(c.take().is_empty(), "c still sees her on b");
        assert!(a.take().is_empty());
        // A user a never had changes nothing.
        registry.offline(&node("a"), 1, &[user("zed")]).unwrap();
        // alice leaves b too: a and c hear it; cat's node goes.
        registry.offline(&node("b"), 2, &[user("alice")]).unwrap();
        assert_eq!(a.take(), [change(&[], &["alice"])]);
        assert_eq!(c.take(), [change(&[], &["alice"])]);
        assert!(registry.remove(&node("c"), 3));
        assert_eq!(a.take(), [change(&[], &["cat"])]);
        assert_eq!(b.take(), [change(&[], &["cat"])]);
        assert_eq!(registry.online(&node("c"), 3, vec![]), Err(Stale));
    }

    #[test]
    fn reaped_nodes_take_their_users_along() {
        let registry = Registry::new(Duration::from_secs(3));
        let start = Instant::now();
        let a = join(&registry, "a", 1, &["alice", "sam"]);
        let b = join(&registry, "b", 2, &["bob", "sam"]);
        let c = join(&registry, "c", 3, &["cat"]);
        for inbox in [&a, &b, &c] {
            inbox.take();
        }
        let later = start + Duration::from_secs(4);
        registry.heartbeat(&node("c"), 3, load(0), later).unwrap();
        assert_eq!(registry.reap(later).len(), 2);
        assert_eq!(c.take(), [change(&[], &["alice", "bob", "sam"])]);
        assert!(a.take().is_empty() && b.take().is_empty());
    }

    #[test]
    fn a_full_queue_skips_changes_until_a_snapshot_gets_through() {
        let registry = Registry::new(Duration::from_secs(3));
        let a = join(&registry, "a", 1, &[]);
        a.take();
        a.set_room(0);
        let b = join(&registry, "b", 2, &["bob"]);
        registry.online(&node("b"), 2, vec![user("bea")]).unwrap();
        registry.resync_presence();
        assert!(a.take().is_empty(), "no room, nothing queued");
        a.set_room(1);
        registry.online(&node("b"), 2, vec![user("ben")]).unwrap();
        assert!(a.take().is_empty(), "changes wait for the snapshot");
        registry.resync_presence();
        assert_eq!(a.take(), [snapshot(&["bea", "ben", "bob"])]);
        a.set_room(10);
        registry.offline(&node("b"), 2, &[user("bob")]).unwrap();
        assert_eq!(a.take(), [change(&[], &["bob"])]);
        registry.resync_presence();
        assert!(a.take().is_empty(), "in step again");
        assert_eq!(b.take(), [snapshot(&[])]);
    }

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn load(clients: u32) -> Load {
        Load {
            clients,
            ..Load::default()
        }
    }

    fn registry(nodes: &[(&str, u32)], now: Instant) -> Registry<u64> {
        let registry = Registry::new(Duration::from_secs(3));
        for (id, (name, clients)) in nodes.iter().enumerate() {
            let conn_id = id as u64;
            registry.register(
                Registration {
                    node: node(name),
                    conn_id,
                    client_addr: format!("127.0.0.1:{}", 7001 + id),
                    load: load(*clients),
                    users: vec![],
                    link: conn_id,
                },
                now,
            );
        }
        registry
    }

    fn picks(registry: &Registry<u64>, n: usize, now: Instant) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let (name, _) = registry.discover(now).expect("a node");
            *counts.entry(name.to_string()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn least_loaded_first_then_spread_evenly() {
        let now = Instant::now();
        let registry = registry(&[("a", 10), ("b", 2), ("c", 5)], now);
        // b takes new clients until it catches up with c (3), then b and c alternate up to a.
        let counts = picks(&registry, 3, now);
        assert_eq!(counts.get("b"), Some(&3));
        let counts = picks(&registry, 100, now);
        let total: usize = counts.values().sum();
        assert_eq!(total, 100);
        // After 103 picks everyone sits at (10 + 2 + 5 + 103) / 3 = 40.
        assert_eq!(counts.get("a"), Some(&30));
    }

    #[test]
    fn equal_nodes_split_a_burst_evenly() {
        let now = Instant::now();
        let registry = registry(&[("a", 0), ("b", 0), ("c", 0)], now);
        let counts = picks(&registry, 100, now);
        let mut sizes: Vec<usize> = counts.values().copied().collect();
        sizes.sort();
        assert_eq!(sizes, vec![33, 33, 34]);
    }

    #[test]
    fn unhealthy_draining_and_full_nodes_are_skipped() {
        let now = Instant::now();
        let registry = registry(&[("a", 0), ("b", 50), ("c", 9)], now);
        registry.draining(&node("a"), 0).unwrap();
        registry
            .heartbeat(
                &node("c"),
                2,
                Load {
                    clients: 9,
                    pending: 1,
                    max_clients: 10,
                    ..Load::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(registry.discover(now).unwrap().0, node("b"));
        // Nobody heartbeats: after dead_after nobody is eligible, and reaping drops all.
        let later = now + Duration::from_secs(4);
        assert_eq!(registry.discover(later), None);
        assert_eq!(registry.reap(later).len(), 3);
        assert!(registry.status(later).is_empty());
    }

    #[test]
    fn a_replaced_connection_is_stale() {
        let now = Instant::now();
        let registry = registry(&[("a", 0)], now);
        let old = registry.register(
            Registration {
                node: node("a"),
                conn_id: 9,
                client_addr: "x:1".into(),
                load: load(0),
                users: vec![],
                link: 9,
            },
            now,
        );
        assert_eq!(old, Some(0));
        assert_eq!(registry.heartbeat(&node("a"), 0, load(1), now), Err(Stale));
        assert!(!registry.remove(&node("a"), 0));
        assert_eq!(registry.status(now)[0].client_addr, "x:1");
        assert!(registry.remove(&node("a"), 9));
    }
}
