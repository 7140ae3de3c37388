//! The directory: which node each online user is connected to (a user may be on several),
//! the grouping of a relay's keys (or an announcement's users) by destination node, and the
//! presence questions the registry asks when rows change.

use std::collections::{BTreeMap, HashMap, HashSet};

use quip_proto::WrappedKey;
use quip_proto::ids::{NodeName, UserName};

/// User → nodes, and node → users so a node's rows go in one step.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    by_user: HashMap<UserName, Vec<NodeName>>,
    by_node: HashMap<NodeName, HashSet<UserName>>,
}

/// Something addressed to one user: a relay's wrapped key, or the user of an announcement.
pub(crate) trait Addressed {
    fn user(&self) -> &UserName;
}

impl Addressed for WrappedKey {
    fn user(&self) -> &UserName {
        &self.recipient
    }
}

impl Addressed for UserName {
    fn user(&self) -> &UserName {
        self
    }
}

/// Where one relayed envelope (or announcement) goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route<T = WrappedKey> {
    /// Each destination node (never the origin) with the items of its users.
    pub(crate) groups: BTreeMap<NodeName, Vec<T>>,
    /// Items whose user is connected to no node but the origin, or to none (storage holds
    /// their copy).
    pub(crate) unrouted: usize,
}

impl<T> Default for Route<T> {
    fn default() -> Self {
        Self {
            groups: BTreeMap::new(),
            unrouted: 0,
        }
    }
}

/// Who must hear that some users arrived on (or left) a node, for presence. A node's view is
/// the users connected to any node but itself, so a user's arrival or departure changes the
/// views of the nodes it leaves alone on the other side: all of them when the user is now on
/// no other node, one node when it is on exactly one other, none when on two or more.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Audience {
    /// Users every node (but the origin) must hear of.
    pub(crate) all: Vec<UserName>,
    /// Users only this node must hear of.
    pub(crate) only: BTreeMap<NodeName, Vec<UserName>>,
}

impl Audience {
    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_empty() && self.only.is_empty()
    }
}

impl Directory {
    /// `users` are connected to `node`; returns those that were not already.
    pub(crate) fn online(
        &mut self,
        node: &NodeName,
        users: impl IntoIterator<Item = UserName>,
    ) -> Vec<UserName> {
        let here = self.by_node.entry(node.clone()).or_default();
        let mut added = Vec::new();
        for user in users {
            if here.insert(user.clone()) {
                self.by_user
                    .entry(user.clone())
                    .or_default()
                    .push(node.clone());
                added.push(user);
            }
        }
        added
    }

    /// `users` left `node`; returns those that were connected to it.
    pub(crate) fn offline<'a>(
        &mut self,
        node: &NodeName,
        users: impl IntoIterator<Item = &'a UserName>,
    ) -> Vec<UserName> {
        let Some(here) = self.by_node.get_mut(node) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for user in users {
            if here.remove(user) {
                unlink(&mut self.by_user, user, node);
                removed.push(user.clone());
            }
        }
        if here.is_empty() {
            self.by_node.remove(node);
        }
        removed
    }

    /// Forgets every row of `node`; returns its users.
    pub(crate) fn remove_node(&mut self, node: &NodeName) -> Vec<UserName> {
        let Some(users) = self.by_node.remove(node) else {
            return Vec::new();
        };
        for user in &users {
            unlink(&mut self.by_user, user, node);
        }
        users.into_iter().collect()
    }

    /// `node`'s users are exactly `users` (a registration); returns those it no longer has.
    pub(crate) fn replace(
        &mut self,
        node: &NodeName,
        users: impl IntoIterator<Item = UserName>,
    ) -> Vec<UserName> {
        let old = self.by_node.remove(node).unwrap_or_default();
        let new: HashSet<UserName> = users.into_iter().collect();
        for user in old.difference(&new) {
            unlink(&mut self.by_user, user, node);
        }
        for user in new.difference(&old) {
            self.by_user
                .entry(user.clone())
                .or_default()
                .push(node.clone());
        }
        let removed = old.difference(&new).cloned().collect();
        if !new.is_empty() {
            self.by_node.insert(node.clone(), new);
        }
        removed
    }

    /// The users connected to `node` now.
    pub(crate) fn users_of(&self, node: &NodeName) -> Vec<UserName> {
        self.by_node
            .get(node)
            .map(|users| users.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every user connected to some node other than `node`, once each.
    pub(crate) fn elsewhere(&self, node: &NodeName) -> Vec<UserName> {
        self.by_user
            .iter()
            .filter(|(_, nodes)| nodes.iter().any(|n| n != node))
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Who must hear that `users` just arrived on or left `origin` (see [`Audience`]); with
    /// no origin (nodes removed), who must hear that they left.
    pub(crate) fn audience<'a>(
        &self,
        origin: Option<&NodeName>,
        users: impl IntoIterator<Item = &'a UserName>,
    ) -> Audience {
        let mut audience = Audience::default();
        for user in users {
            let nodes = self
                .by_user
                .get(user)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut others = nodes.iter().filter(|n| Some(*n) != origin);
            match (others.next(), others.next()) {
                (None, _) => audience.all.push(user.clone()),
                (Some(node), None) => audience
                    .only
                    .entry(node.clone())
                    .or_default()
                    .push(user.clone()),
                (Some(_), Some(_)) => {}
            }
        }
        audience
    }

    /// Groups `items` by the nodes their users are connected to, leaving out `origin` (it
    /// delivers to its own users). A user on two other nodes goes to both.
    pub(crate) fn route<T: Addressed + Clone>(&self, origin: &NodeName, items: &[T]) -> Route<T> {
        let mut route = Route::default();
        for item in items {
            let mut routed = false;
            for node in self.by_user.get(item.user()).into_iter().flatten() {
                if node != origin {
                    route
                        .groups
                        .entry(node.clone())
                        .or_default()
                        .push(item.clone());
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
        assert_eq!(dir.remove_node(&node("b")).len(), 2);
        check(&dir, "c", &["alice", "bob"], &[("a", &["alice"])]);
        assert_eq!(dir.users(), 1);
        dir.offline(&node("a"), &[user("alice")]);
        assert_eq!(dir.users(), 0);
    }

    #[test]
    fn changes_report_which_rows_moved() {
        let mut dir = Directory::default();
        assert_eq!(
            dir.online(&node("a"), [user("amy"), user("amy")]),
            [user("amy")]
        );
        assert!(dir.online(&node("a"), [user("amy")]).is_empty());
        assert_eq!(
            dir.offline(&node("a"), &[user("amy"), user("zed")]),
            [user("amy")]
        );
        dir.online(&node("a"), [user("amy"), user("ann")]);
        let mut removed = dir.replace(&node("a"), [user("ann"), user("abe")]);
        removed.sort();
        assert_eq!(removed, [user("amy")]);
        let mut users = dir.users_of(&node("a"));
        users.sort();
        assert_eq!(users, [user("abe"), user("ann")]);
    }

    #[test]
    fn the_audience_is_whoever_the_user_leaves_alone_on_the_other_side() {
        let mut dir = Directory::default();
        dir.online(&node("a"), [user("solo"), user("pair"), user("trio")]);
        dir.online(&node("b"), [user("pair"), user("trio")]);
        dir.online(&node("c"), [user("trio")]);
        let users = [user("solo"), user("pair"), user("trio"), user("gone")];
        let audience = dir.audience(Some(&node("a")), &users);
        assert_eq!(audience.all, [user("solo"), user("gone")]);
        assert_eq!(
            audience.only,
            BTreeMap::from([(node("b"), vec![user("pair")])])
        );
        let mut everyone: Vec<_> = dir.elsewhere(&node("c"));
        everyone.sort();
        assert_eq!(everyone, [user("pair"), user("solo"), user("trio")]);
        assert_eq!(dir.elsewhere(&node("a")).len(), 2, "solo is only on a");
        dir.remove_node(&node("a"));
        let audience = dir.audience(None, &users);
        assert_eq!(audience.all, [user("solo"), user("gone")]);
        assert_eq!(
            audience.only,
            BTreeMap::from([(node("b"), vec![user("pair")])])
        );
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
