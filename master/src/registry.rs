//! The node registry: every registered node with its load, health and link, the user
//! directory beside it, and the discovery choice (least loaded, spread between heartbeats).
//!
//! Generic over the link (how to reach a node's session) so the choice logic is tested
//! without sockets.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use quip_proto::WrappedKey;
use quip_proto::ids::{NodeName, UserName};
use quip_proto::relay::{Load, NodeStatus};

use crate::directory::Directory;

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

/// One destination of a relay: the node, its link and its recipients' keys.
pub(crate) type Destination<L> = (NodeName, L, Vec<WrappedKey>);

impl<L: Clone> Registry<L> {
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

    /// Adds or replaces the node. Its directory rows become exactly `users`. Returns the link
    /// of the connection it replaces, if that was another one (to be closed).
    pub(crate) fn register(&self, reg: Registration<L>, now: Instant) -> Option<L> {
        let mut state = self.state();
        state.directory.replace(&reg.node, reg.users);
        let entry = NodeEntry {
            conn_id: reg.conn_id,
            client_addr: reg.client_addr,
            load: reg.load,
            last_seen: now,
            assigned: 0,
            draining: false,
            link: reg.link,
        };
        let old = state.nodes.insert(reg.node, entry)?;
        (old.conn_id != reg.conn_id).then_some(old.link)
    }

    fn with_entry<T>(
        &self,
        node: &NodeName,
        conn_id: u64,
        f: impl FnOnce(&mut NodeEntry<L>, &mut Directory) -> T,
    ) -> Result<T, Stale> {
        let mut state = self.state();
        let State {
            nodes, directory, ..
        } = &mut *state;
        match nodes.get_mut(node) {
            Some(entry) if entry.conn_id == conn_id => Ok(f(entry, directory)),
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
        self.with_entry(node, conn_id, |entry, _| {
            entry.load = load;
            entry.last_seen = now;
            entry.assigned = 0;
        })
    }

    /// `users` logged in on `node`.
    pub(crate) fn online(
        &self,
        node: &NodeName,
        conn_id: u64,
        users: Vec<UserName>,
    ) -> Result<(), Stale> {
        self.with_entry(node, conn_id, |_, dir| dir.online(node, users))
    }

    /// `users` left `node`.
    pub(crate) fn offline(
        &self,
        node: &NodeName,
        conn_id: u64,
        users: &[UserName],
    ) -> Result<(), Stale> {
        self.with_entry(node, conn_id, |_, dir| dir.offline(node, users))
    }

    /// The node is shutting down: no more clients for it (it still gets relays for the users
    /// it has until they move).
    pub(crate) fn draining(&self, node: &NodeName, conn_id: u64) -> Result<(), Stale> {
        self.with_entry(node, conn_id, |entry, _| entry.draining = true)
    }

    /// Where a relay from `origin` goes, and how many recipients are connected nowhere else.
    pub(crate) fn route(
        &self,
        origin: &NodeName,
        conn_id: u64,
        keys: &[WrappedKey],
    ) -> Result<(Vec<Destination<L>>, usize), Stale> {
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

    /// Drops the node if `conn_id` is still its registered connection.
    pub(crate) fn remove(&self, node: &NodeName, conn_id: u64) -> bool {
        let mut state = self.state();
        match state.nodes.get(node) {
            Some(entry) if entry.conn_id == conn_id => {
                state.nodes.remove(node);
                state.directory.remove_node(node);
                true
            }
            _ => false,
        }
    }

    /// Drops every node silent for `dead_after` and returns them (their links to be closed).
    pub(crate) fn reap(&self, now: Instant) -> Vec<(NodeName, L)> {
        let mut state = self.state();
        let dead: Vec<NodeName> = state
            .nodes
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) >= self.dead_after)
            .map(|(name, _)| name.clone())
            .collect();
        dead.into_iter()
            .filter_map(|name| {
                let entry = state.nodes.remove(&name)?;
                state.directory.remove_node(&name);
                Some((name, entry.link))
            })
            .collect()
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

    use super::*;

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
