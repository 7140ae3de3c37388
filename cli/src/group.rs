//! Groups on the client: the signed membership chain is verified link by link (signature by
//! the author's pinned key, epoch, hash of the previous link, and the author's right to make
//! the change) before any content key is wrapped. A member the server lists but the chain does
//! not prove gets nothing, and the user is told. The highest verified point of each chain is
//! remembered on disk ([`crate::e2e::ChainHeads`]): a server that shows an older or different
//! chain (to undo a removal) is refused. A group message is accepted only from someone the
//! chain shows as a member at the message's own epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use quip_proto::group::{GroupCursor, GroupSummary, Membership};
use quip_proto::ids::{GroupId, GroupName, UserName};
use quip_proto::{Action, Change, ClientToNode, Conversation, NodeToClient, SignedChange};
use sha2::{Digest, Sha256};

use crate::client::{Client, ClientError, Listing, now_ms};
use crate::e2e::{self, ChainHead, PeerKeys};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chat {
    /// One person.
    Direct(UserName),
    /// Every member of a group.
    Group(GroupId),
}

/// A message the node has stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its id.
    pub id: quip_proto::ids::MsgId,
    /// Warnings about people in the conversation who were given no key (a group member whose
    /// keys changed, or one the server lists but the signed chain does not prove).
    pub left_out: Vec<String>,
}

/// A group as this client verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGroup {
    /// Who is in it, with which role, as the signed chain proves.
    pub state: Membership,
    /// SHA-256 of the last link: the next change's `prev`.
    pub head: [u8; 32],
    /// Members the server lists that the chain does not prove (a server injecting members).
    pub unproven: Vec<UserName>,
    /// For everyone who was ever a member, the epochs they were one (`end` is the epoch of
    /// the change that removed them; `u64::MAX` while still in).
    pub tenure: BTreeMap<UserName, Vec<Range<u64>>>,
}

impl VerifiedGroup {
    /// Whether the chain shows `user` as a member at `epoch`.
    pub fn was_member(&self, user: &UserName, epoch: u64) -> bool {
        self.tenure
            .get(user)
            .is_some_and(|spans| spans.iter().any(|span| span.contains(&epoch)))
    }
}

/// Ends `user`'s current membership at `epoch`.
fn leave(tenure: &mut BTreeMap<UserName, Vec<Range<u64>>>, user: &UserName, epoch: u64) {
    if let Some(span) = tenure.get_mut(user).and_then(|spans| spans.last_mut()) {
        span.end = epoch;
    }
}

/// Records who joined and left with the change at `change.epoch`.
fn record_tenure(tenure: &mut BTreeMap<UserName, Vec<Range<u64>>>, change: &Change) {
    let epoch = change.epoch;
    let mut join = |user: &UserName| {
        let spans = tenure.entry(user.clone()).or_default();
        // A genesis may name its author or a member twice: one membership each.
        if spans.last().is_none_or(|span| span.end != u64::MAX) {
            spans.push(epoch..u64::MAX);
        }
    };
    match &change.action {
        Action::Create { members, .. } => {
            join(&change.author);
            members.iter().for_each(join);
        }
        Action::Add(user) => join(user),
        Action::Remove(user) => leave(tenure, user, epoch),
        Action::Leave => leave(tenure, &change.author, epoch),
        Action::Promote(_) | Action::Demote(_) => {}
    }
}

fn bad_chain(group: &GroupId, epoch: u64, reason: impl std::fmt::Display) -> ClientError {
    ClientError::BadChain {
        group: *group,
        reason: format!("link at epoch {epoch}: {reason}"),
    }
}

/// SHA-256 of a link as stored: what the next link's `prev` must be.
pub fn link_hash(link: &SignedChange) -> [u8; 32] {
    Sha256::digest(link.to_bytes()).into()
}

impl Client {
    /// One page of the groups we are in (by name), after `after`; the node caps `limit`.
    pub async fn groups_page(
        &self,
        after: Option<GroupCursor>,
        limit: u32,
    ) -> Result<Listing<GroupSummary>, ClientError> {
        match self
            .conn
            .request(|req| ClientToNode::ListGroups { req, after, limit })
            .await?
        {
            NodeToClient::Groups {
                groups,
                total,
                more,
                ..
            } => Ok(Listing {
                items: groups,
                total,
                more,
            }),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Every group we are in, fetched page by page.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let mut all: Vec<GroupSummary> = Vec::new();
        loop {
            let page = self
                .groups_page(all.last().map(GroupCursor::from), u32::MAX)
                .await?;
            let done = !page.more || page.items.is_empty();
            all.extend(page.items);
            if done {
                return Ok(all);
            }
        }
    }

    /// Our group called `name` (if two creators used the same name, say `name@creator`).
    pub async fn group_named(&self, name: &str) -> Result<GroupSummary, ClientError> {
        let (name, creator) = match name.rsplit_once('@') {
            Some((name, creator)) => (name, Some(creator)),
            None => (name, None),
        };
        let matching: Vec<GroupSummary> = self
            .groups()
            .await?
            .into_iter()
            .filter(|g| g.name.as_str() == name.trim())
            .filter(|g| creator.is_none_or(|c| g.creator.as_str() == c))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ClientError::UnknownGroup(name.to_owned())),
            many => Err(ClientError::UnknownGroup(format!(
                "{name} is ambiguous: say {}",
                many.iter()
                    .map(|g| format!("{}@{}", g.name, g.creator))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
        }
    }

    /// Fetches a group's chain (page by page) and members from the node and verifies the
    /// chain: every link signed by its author's pinned key, each following the previous by
    /// epoch and hash, each allowed by the membership before it. The chain must reach the
    /// highest point this client verified before, through the same link
    /// ([`ClientError::RolledBack`] otherwise); the new highest point is remembered.
    pub async fn verify_group(&mut self, id: &GroupId) -> Result<VerifiedGroup, ClientError> {
        let (members, chain) = self.fetch_chain(id).await?;
        let mut links = chain.iter();
        let genesis = links
            .next()
            .ok_or_else(|| bad_chain(id, 0, "the chain is empty"))?;
        if genesis.change.group != *id {
            return Err(bad_chain(id, 0, "the genesis is for another group"));
        }
        self.check_signature(genesis).await?;
        let mut state = Membership::genesis(&genesis.change).map_err(|e| bad_chain(id, 0, e))?;
        let mut tenure = BTreeMap::new();
        record_tenure(&mut tenure, &genesis.change);
        let mut heads = vec![link_hash(genesis)];
        for link in links {
            let epoch = link.change.epoch;
            if heads.last() != Some(&link.change.prev) {
                return Err(bad_chain(id, epoch, "does not follow the previous link"));
            }
            self.check_signature(link).await?;
            state
                .apply(&link.change)
                .map_err(|e| bad_chain(id, epoch, e))?;
            record_tenure(&mut tenure, &link.change);
            heads.push(link_hash(link));
        }
        // Epochs run 0, 1, 2, … (each link was checked to follow), so `heads[e]` is epoch e's.
        if let Some(seen) = self.heads.get(id) {
            let same = usize::try_from(seen.epoch)
                .ok()
                .and_then(|e| heads.get(e))
                .is_some_and(|head| *head == seen.head);
            if !same {
                return Err(ClientError::RolledBack {
                    group: *id,
                    name: state.name.to_string(),
                    seen: seen.epoch,
                    shown: state.epoch,
                });
            }
        }
        let head = heads.last().copied().unwrap_or_default();
        self.heads.advance(
            id,
            ChainHead {
                epoch: state.epoch,
                head,
            },
        )?;
        let proven: BTreeSet<&UserName> = state.members.keys().collect();
        let unproven = members
            .into_iter()
            .map(|m| m.user)
            .filter(|u| !proven.contains(u))
            .collect();
        let verified = VerifiedGroup {
            state,
            head,
            unproven,
            tenure,
        };
        self.groups.insert(*id, verified.clone());
        Ok(verified)
    }

    /// The members the node lists and the whole chain, fetched a page of links at a time.
    async fn fetch_chain(
        &self,
        id: &GroupId,
    ) -> Result<(Vec<quip_proto::client::GroupMember>, Vec<SignedChange>), ClientError> {
        let mut chain: Vec<SignedChange> = Vec::new();
        loop {
            let from_epoch = chain.last().map_or(0, |l| l.change.epoch.saturating_add(1));
            let answer = self
                .conn
                .request(|req| ClientToNode::GroupInfo {
                    req,
                    group: *id,
                    from_epoch,
                })
                .await?;
            let NodeToClient::Group {
                members,
                chain: page,
                more,
                ..
            } = answer
            else {
                return Err(ClientError::Unexpected);
            };
            if page.first().is_some_and(|l| l.change.epoch != from_epoch) {
                return Err(bad_chain(id, from_epoch, "the server skipped links"));
            }
            let empty = page.is_empty();
            chain.extend(page);
            if !more {
                return Ok((members, chain));
            }
            if empty {
                return Err(bad_chain(id, from_epoch, "the server promised more links"));
            }
        }
    }

    async fn check_signature(&mut self, link: &SignedChange) -> Result<(), ClientError> {
        let author = &link.change.author;
        let keys = self.peer_keys(author).await?;
        e2e::verify_change(link, &keys).map_err(|_| {
            bad_chain(
                &link.change.group,
                link.change.epoch,
                format!("not signed by {author}"),
            )
        })
    }

    /// Creates a group with us as its admin and `members` in it.
    pub async fn create_group(
        &mut self,
        name: &GroupName,
        members: &[UserName],
    ) -> Result<GroupId, ClientError> {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        let change = Change {
            group: GroupId(id),
            epoch: 0,
            prev: [0; 32],
            author: self.me.clone(),
            action: Action::Create {
                name: name.clone(),
                members: members.to_vec(),
            },
            at_ms: now_ms(),
        };
        Membership::genesis(&change)?;
        let genesis = e2e::sign_change(&self.identity, change)?;
        let head = ChainHead {
            epoch: 0,
            head: link_hash(&genesis),
        };
        self.conn
            .request(|req| ClientToNode::CreateGroup { req, genesis })
            .await?;
        self.heads.advance(&GroupId(id), head)?;
        Ok(GroupId(id))
    }

    /// Makes a membership change (add, remove, promote, demote, leave), signed by us, after
    /// checking locally that the verified chain allows it.
    pub async fn change_group(&mut self, id: &GroupId, action: Action) -> Result<(), ClientError> {
        let verified = self.verify_group(id).await?;
        let change = Change {
            group: *id,
            epoch: verified.state.epoch + 1,
            prev: verified.head,
            author: self.me.clone(),
            action,
            at_ms: now_ms(),
        };
        verified.state.check(&change)?;
        let change = e2e::sign_change(&self.identity, change)?;
        // Our own change, accepted: a chain without it is a rollback.
        let head = ChainHead {
            epoch: change.change.epoch,
            head: link_hash(&change),
        };
        self.conn
            .request(|req| ClientToNode::ChangeGroup { req, change })
            .await?;
        self.groups.remove(id);
        self.heads.advance(id, head)?;
        Ok(())
    }

    /// Who gets a key for a message to `chat`, and who is left out and why.
    pub(crate) async fn recipients(
        &mut self,
        chat: &Chat,
    ) -> Result<(Conversation, Vec<(UserName, PeerKeys)>, Vec<String>), ClientError> {
        let mine = (self.me.clone(), self.identity.peer_keys().clone());
        match chat {
            Chat::Direct(to) => {
                let theirs = self.peer_keys(to).await?;
                Ok((
                    Conversation::Direct(to.clone()),
                    vec![mine, (to.clone(), theirs)],
                    Vec::new(),
                ))
            }
            Chat::Group(id) => {
                let verified = self.verify_group(id).await?;
                if !verified.state.members.contains_key(&self.me) {
                    return Err(ClientError::UnknownGroup(format!(
                        "you are not in {}",
                        verified.state.name
                    )));
                }
                let mut left_out: Vec<String> = verified
                    .unproven
                    .iter()
                    .map(|u| {
                        format!("warning: the server lists {u} as a member of {}, but no admin signed that; {u} was not given the message", verified.state.name)
                    })
                    .collect();
                let mut recipients = vec![mine];
                let me = self.me.clone();
                for member in verified.state.members.keys().filter(|m| **m != me) {
                    match self.peer_keys(member).await {
                        Ok(keys) => recipients.push((member.clone(), keys)),
                        Err(err @ ClientError::KeyChanged { .. }) => {
                            left_out.push(format!("{member} was left out: {err}"))
                        }
                        Err(err) => return Err(err),
                    }
                }
                let conversation = Conversation::Group {
                    id: *id,
                    epoch: verified.state.epoch,
                };
                Ok((conversation, recipients, left_out))
            }
        }
    }

    /// Checks that a group message's sender was a member at the epoch it names (refreshing
    /// the verified chain when the message is newer than what we verified).
    pub(crate) async fn check_group_sender(
        &mut self,
        id: &GroupId,
        epoch: u64,
        sender: &UserName,
    ) -> Result<String, ClientError> {
        // The cached chain decides only for a sender still in the group; anyone else is
        // judged on a fresh chain, so a server that rolled back their removal is caught.
        let cached = self
            .groups
            .get(id)
            .filter(|g| g.state.epoch >= epoch && g.state.members.contains_key(sender))
            .cloned();
        let verified = match cached {
            Some(verified) => verified,
            None => self.verify_group(id).await?,
        };
        // Only someone the chain shows in the group at the message's own epoch (which must
        // exist) may have sent it.
        if epoch <= verified.state.epoch && verified.was_member(sender, epoch) {
            Ok(verified.state.name.to_string())
        } else {
            Err(ClientError::NotAMember {
                sender: sender.clone(),
                group: verified.state.name.to_string(),
                epoch,
            })
        }
    }

    /// Describes a membership change pushed by the node, and forgets the verified state so
    /// the next use re-verifies.
    pub(crate) fn describe_change(&mut self, change: &SignedChange) -> String {
        let c = &change.change;
        let group = self
            .groups
            .remove(&c.group)
            .map(|g| g.state.name.to_string())
            .unwrap_or_else(|| match &c.action {
                Action::Create { name, .. } => name.to_string(),
                _ => "a group".to_owned(),
            });
        let who = &c.author;
        match &c.action {
            Action::Create { name, .. } => format!("{who} created the group {name} with you in it"),
            Action::Add(u) => format!("[{group}] {who} added {u}"),
            Action::Remove(u) => format!("[{group}] {who} removed {u}"),
            Action::Promote(u) => format!("[{group}] {who} made {u} an admin"),
            Action::Demote(u) => format!("[{group}] {who} made {u} a plain member"),
            Action::Leave => format!("[{group}] {who} left"),
        }
    }
}

#[cfg(test)]
mod tests {
    use quip_proto::ids::GroupName;

    use super::*;

    fn user(name: &str) -> UserName {
        UserName::new(name).unwrap()
    }

    #[test]
    fn tenure_follows_joins_and_leaves() {
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let change = |epoch, author: &UserName, action| Change {
            group: GroupId([1; 16]),
            epoch,
            prev: [0; 32],
            author: author.clone(),
            action,
            at_ms: 0,
        };
        let mut tenure = BTreeMap::new();
        for c in [
            change(
                0,
                &alice,
                Action::Create {
                    name: GroupName::new("g").unwrap(),
                    members: vec![bob.clone(), alice.clone(), bob.clone()],
                },
            ),
            change(1, &alice, Action::Add(carol.clone())),
            change(2, &alice, Action::Remove(carol.clone())),
            change(3, &alice, Action::Promote(bob.clone())),
            change(4, &alice, Action::Add(carol.clone())),
            change(5, &alice, Action::Leave),
        ] {
            record_tenure(&mut tenure, &c);
        }
        let group = VerifiedGroup {
            state: Membership {
                group: GroupId([1; 16]),
                name: GroupName::new("g").unwrap(),
                creator: alice.clone(),
                epoch: 5,
                members: BTreeMap::new(),
            },
            head: [0; 32],
            unproven: Vec::new(),
            tenure,
        };
        let at = |who: &UserName| {
            (0..7)
                .filter(|e| group.was_member(who, *e))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(&alice), [0, 1, 2, 3, 4]);
        assert_eq!(at(&bob), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(at(&carol), [1, 4, 5, 6]);
        assert!(!group.was_member(&user("mallory"), 0));
    }
}
