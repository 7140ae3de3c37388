//! The directory: which node each online user is connected to (a user may be on several),
//! and the grouping of a relayed envelope's keys by destination node.

use std::collections::{BTreeMap, HashMap, HashSet};

use quip_proto::WrappedKey;
use quip_proto::ids::{NodeName, UserName};

/// User → nodes, and node → users so a node's rows go in one step.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    by_user: HashMap<UserName, Vec<NodeName>>,
    by_node: HashMap<NodeName, HashSet<UserName>>,
}

/// Where one relayed envelope goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Route {
    /// Each destination node (never the origin) with the keys of its recipients.
    pub(crate) groups: BTreeMap<NodeName, Vec<WrappedKey>>,
    /// Recipients connected to no node but the origin, or to none (storage holds their copy).
    pub(crate) unrouted: usize,
}

impl Directory {
    /// `users` are connected to `node`.
    pub(crate) fn online(&mut self, node: &NodeName, users: impl IntoIterator<Item = UserName>) {
        let here = self.by_node.entry(node.clone()).or_default();
        for user in users {
            if here.insert(user.clone()) {
                self.by_user.entry(user).or_default().push(node.clone());
            }
        }
    }

    /// `users` left `node`.
    pub(crate) fn offline<'a>(
        &mut self,
        node: &NodeName,
        users: impl IntoIterator<Item = &'a UserName>,
    ) {
        let Some(here) = self.by_node.get_mut(node) else {
            return;
        };
        for user in users {
            if here.remove(user) {
                unlink(&mut self.by_user, user, node);
            }
        }
    }

    /// Forgets every row of `node`; returns how many there were.
    pub(crate) fn remove_node(&mut self, node: &NodeName) -> usize {
        let Some(users) = self.by_node.remove(node) else {
            return 0;
        };
        for user in &users {
            unlink(&mut self.by_user, user, node);
        }
        users.len()
    }

    /// `node`'s users are exactly `users` (a registration).
    pub(crate) fn replace(&mut self, node: &NodeName, users: impl IntoIterator<Item = UserName>) {
        self.remove_node(node);
        self.online(node, users);
    }

    /// Groups `keys` by the nodes their recipients are connected to, leaving out `origin`
    /// (it delivers to its own users). A recipient on two other nodes goes to both.
    pub(crate) fn route(&self, origin: &NodeName, keys: &[WrappedKey]) -> Route {
        let mut route = Route::default();
        for key in keys {
            let mut routed = false;
            for node in self.by_user.get(&key.recipient).into_iter().flatten() {
                if node != origin {
                    route
                        .groups
                        .entry(node.clone())
                        .or_default()
                        .push(key.clone());
                    routed = true;
                }
            }
            if !routed {
                route.unrouted += 1;
            }
        }
        route
    }

    /// Online users, counted once however many nodes they are on.
    pub(crate) fn users(&self) -> usize {
        self.by_user.len()
    }
}

fn unlink(by_user: &mut HashMap<UserName, Vec<NodeName>>, user: &UserName, node: &NodeName) {
    if let Some(nodes) = by_user.get_mut(user) {
        nodes.retain(|n| n != node);
        if nodes.is_empty() {
            by_user.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }
    fn user(u: &str) -> UserName {
        UserName::new(u).unwrap()
    }
    fn key(u: &str) -> WrappedKey {
        WrappedKey {
            recipient: user(u),
            wrapped: vec![1, 2, 3],
        }
    }

    /// Routes keys for `recipients` from `origin`; returns node → recipient names.
    fn check(dir: &Directory, origin: &str, recipients: &[&str], expect: &[(&str, &[&str])]) {
        let keys: Vec<_> = recipients.iter().map(|u| key(u)).collect();
        let route = dir.route(&node(origin), &keys);
        let got: Vec<(String, Vec<String>)> = route
            .groups
            .iter()
            .map(|(n, keys)| {
                let users = keys.iter().map(|k| k.recipient.to_string()).collect();
                (n.to_string(), users)
            })
            .collect();
        let expect: Vec<(String, Vec<String>)> = expect
            .iter()
            .map(|(n, users)| (n.to_string(), users.iter().map(|u| u.to_string()).collect()))
            .collect();
        assert_eq!(got, expect, "route of {recipients:?} from {origin}");
    }

    #[test]
    fn routes_group_by_node_and_skip_origin_and_offline() {
        let mut dir = Directory::default();
        dir.online(&node("a"), [user("alice")]);
        dir.online(&node("b"), [user("bob"), user("bea"), user("ben")]);
        dir.online(&node("c"), [user("cat"), user("cid")]);
        check(&dir, "a", &["bob", "zed"], &[("b", &["bob"])]);
        check(
            &dir,
            "a",
            &["alice", "bob", "bea", "ben", "cat", "cid"],
            &[("b", &["bob", "bea", "ben"]), ("c", &["cat", "cid"])],
        );
        check(&dir, "b", &["bob", "alice"], &[("a", &["alice"])]);
        let route = dir.route(&node("a"), &[key("zed"), key("alice")]);
        assert_eq!(route.unrouted, 2);
    }

    #[test]
    fn a_user_on_two_nodes_gets_both_and_rows_go_with_their_node() {
        let mut dir = Directory::default();
        dir.online(&node("a"), [user("alice")]);
        dir.online(&node("b"), [user("alice"), user("bob")]);
        check(
            &dir,
            "c",
            &["alice"],
            &[("a", &["alice"]), ("b", &["alice"])],
        );
        assert_eq!(dir.remove_node(&node("b")), 2);
        check(&dir, "c", &["alice", "bob"], &[("a", &["alice"])]);
        assert_eq!(dir.users(), 1);
        dir.offline(&node("a"), &[user("alice")]);
        assert_eq!(dir.users(), 0);
    }

    #[test]
    fn replace_moves_users() {
        let mut dir = Directory::default();
        dir.online(&node("a"), [user("alice"), user("amy")]);
        dir.replace(&node("a"), [user("amy")]);
        dir.online(&node("b"), [user("alice")]);
        check(
            &dir,
            "c",
            &["alice", "amy"],
            &[("a", &["amy"]), ("b", &["alice"])],
        );
    }
}
