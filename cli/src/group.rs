//! Groups on the client: the signed membership chain is verified link by link (signature by
//! the author's pinned key, epoch, hash of the previous link, and the author's right to make
//! the change) before any content key is wrapped. A member the server lists but the chain does
//! not prove gets nothing, and the user is told.

use std::collections::BTreeSet;

use quip_proto::group::{GroupSummary, Membership};
use quip_proto::ids::{GroupId, GroupName, UserName};
use quip_proto::{Action, Change, ClientToNode, Conversation, NodeToClient, SignedChange};
use sha2::{Digest, Sha256};

use crate::client::{Client, ClientError, now_ms};
use crate::e2e::{self, PeerKeys};

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
    /// The groups we are in.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        match self
            .conn
            .request(|req| ClientToNode::ListGroups { req })
            .await?
        {
            NodeToClient::Groups { groups, .. } => Ok(groups),
            _ => Err(ClientError::Unexpected),
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

    /// Fetches a group's chain and members from the node and verifies the chain: every link
    /// signed by its author's pinned key, each following the previous by epoch and hash, each
    /// allowed by the membership before it.
    pub async fn verify_group(&mut self, id: &GroupId) -> Result<VerifiedGroup, ClientError> {
        let answer = self
            .conn
            .request(|req| ClientToNode::GroupInfo { req, group: *id })
            .await?;
        let NodeToClient::Group { members, chain, .. } = answer else {
            return Err(ClientError::Unexpected);
        };
        let mut links = chain.iter();
        let genesis = links
            .next()
            .ok_or_else(|| bad_chain(id, 0, "the chain is empty"))?;
        if genesis.change.group != *id {
            return Err(bad_chain(id, 0, "the genesis is for another group"));
        }
        self.check_signature(genesis).await?;
        let mut state = Membership::genesis(&genesis.change).map_err(|e| bad_chain(id, 0, e))?;
        let mut head = link_hash(genesis);
        for link in links {
            let epoch = link.change.epoch;
            if link.change.prev != head {
                return Err(bad_chain(id, epoch, "does not follow the previous link"));
            }
            self.check_signature(link).await?;
            state
                .apply(&link.change)
                .map_err(|e| bad_chain(id, epoch, e))?;
            head = link_hash(link);
        }
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
        };
        self.groups.insert(*id, verified.clone());
        Ok(verified)
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
        self.conn
            .request(|req| ClientToNode::CreateGroup { req, genesis })
            .await?;
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
        self.conn
            .request(|req| ClientToNode::ChangeGroup { req, change })
            .await?;
        self.groups.remove(id);
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
        let cached = self
            .groups
            .get(id)
            .filter(|g| g.state.epoch >= epoch)
            .cloned();
        let verified = match cached {
            Some(verified) => verified,
            None => self.verify_group(id).await?,
        };
        // A member removed since may have sent it while still in: accept members at any
        // point up to now only if they are in now, or the message predates their removal.
        if verified.state.members.contains_key(sender) || epoch < verified.state.epoch {
            Ok(verified.state.name.to_string())
        } else {
            Err(ClientError::UnknownGroup(format!(
                "{sender} is not a member of {}",
                verified.state.name
            )))
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
