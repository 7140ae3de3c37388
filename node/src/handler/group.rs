//! Groups: creation from a signed genesis, membership changes, listing, and the checks for
//! group messages. The node enforces roles from storage with the same state machine the
//! clients run over the signed chain (`quip_proto::group::Membership`); it cannot check
//! signatures (it holds no end-to-end crypto) — every client does that before it wraps a key.

use std::collections::BTreeMap;

use quip_proto::client::GroupMember;
use quip_proto::group::{ChangeError, GroupSummary, MemberRole, Membership};
use quip_proto::ids::{GroupId, UserName};
use quip_proto::{Action, ErrorCode, Header, NodeToClient, ReqId, SignedChange};
use quip_storage::{GroupChange, GroupRecord, MemberEffect, NewGroup, Role, Storage, StorageError};
use sha2::{Digest, Sha256};

use super::now_ms;
use crate::Node;
use crate::session::{Refusal, Session};

fn refusal(err: ChangeError) -> Refusal {
    let code = match &err {
        ChangeError::NotAdmin => ErrorCode::NotAdmin,
        ChangeError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
        ChangeError::AlreadyMember(_) => ErrorCode::AlreadyMember,
        ChangeError::NotMember(_) | ChangeError::AuthorNotMember(_) => ErrorCode::NotMember,
        ChangeError::LastAdmin => ErrorCode::LastAdmin,
        ChangeError::TooManyMembers { .. } => ErrorCode::TooLarge,
        ChangeError::BadGenesis
        | ChangeError::CreateAgain
        | ChangeError::WrongGroup
        | ChangeError::SameRole(_)
        | ChangeError::RemoveSelf => ErrorCode::InvalidChange,
    };
    Refusal::new(code, err.to_string())
}

fn unknown_group(id: &GroupId) -> Refusal {
    Refusal::new(
        ErrorCode::UnknownGroup,
        format!("no group {id} that you are in"),
    )
}

fn role(role: Role) -> MemberRole {
    match role {
        Role::Admin => MemberRole::Admin,
        Role::Member => MemberRole::Member,
    }
}

fn summary(group: GroupRecord) -> GroupSummary {
    GroupSummary {
        id: group.id,
        name: group.name,
        creator: group.creator,
        epoch: group.epoch,
    }
}

/// The group's membership as storage has it, if `user` is in it.
pub(crate) async fn membership<S: Storage>(
    node: &Node<S>,
    id: &GroupId,
    user: &UserName,
) -> Result<Membership, Refusal> {
    let group = node
        .storage
        .group(id)
        .await
        .map_err(Refusal::internal)?
        .ok_or_else(|| unknown_group(id))?;
    let members: BTreeMap<UserName, MemberRole> = match node.storage.members(id).await {
        Ok(members) => members
            .into_iter()
            .map(|m| (m.user, role(m.role)))
            .collect(),
        Err(StorageError::NotFound { .. }) => return Err(unknown_group(id)),
        Err(err) => return Err(Refusal::internal(err)),
    };
    if !members.contains_key(user) {
        return Err(unknown_group(id));
    }
    Ok(Membership {
        group: group.id,
        name: group.name,
        creator: group.creator,
        epoch: group.epoch,
        members,
    })
}

/// Pushes a change to every listed user online here, and through the master to the others.
fn announce<S: Storage>(
    node: &Node<S>,
    users: impl IntoIterator<Item = UserName>,
    change: &SignedChange,
) {
    let remote = node.push_group_change(users, change);
    if !remote.is_empty()
        && let Some(uplink) = &node.uplink
    {
        uplink.send(crate::master::ToMaster::Announce(remote, change.clone()));
    }
}

async fn check_users_exist<S: Storage>(node: &Node<S>, users: &[&UserName]) -> Result<(), Refusal> {
    for user in users {
        node.require_user(user).await?;
    }
    Ok(())
}

pub(crate) async fn create<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    genesis: SignedChange,
) -> Result<(), Refusal> {
    let user = session.user()?;
    let node = &session.node;
    let change = &genesis.change;
    if &change.author != user {
        return Err(Refusal::new(
            ErrorCode::SenderMismatch,
            "the genesis must be yours",
        ));
    }
    let state = Membership::genesis(change).map_err(refusal)?;
    let others: Vec<UserName> = state
        .members
        .keys()
        .filter(|m| *m != user)
        .cloned()
        .collect();
    check_users_exist(node, &others.iter().collect::<Vec<_>>()).await?;
    let created = node
        .storage
        .create_group(&NewGroup {
            id: state.group,
            name: state.name.clone(),
            creator: user.clone(),
            members: others.clone(),
            genesis: genesis.to_bytes(),
            created_at: now_ms(),
        })
        .await;
    match created {
        Ok(()) => {}
        Err(StorageError::AlreadyExists { .. }) => {
            return Err(Refusal::new(
                ErrorCode::GroupNameTaken,
                format!("you already have a group called {}", state.name),
            ));
        }
        Err(StorageError::NotFound { .. }) => {
            return Err(Refusal::new(
                ErrorCode::UnknownUser,
                "a member does not exist",
            ));
        }
        Err(err) => return Err(Refusal::internal(err)),
    }
    tracing::info!(group = %state.group, members = state.members.len(), "group created");
    session.send(&NodeToClient::Done { req }).await;
    announce(node, others, &genesis);
    Ok(())
}

pub(crate) async fn change<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    signed: SignedChange,
) -> Result<(), Refusal> {
    let user = session.user()?;
    let node = &session.node;
    let change = &signed.change;
    if &change.author != user {
        return Err(Refusal::new(
            ErrorCode::SenderMismatch,
            "a change must be yours",
        ));
    }
    let state = membership(node, &change.group, user).await?;
    state.check(change).map_err(refusal)?;
    // The link must follow the stored chain.
    let chain = node
        .storage
        .chain(&change.group)
        .await
        .map_err(Refusal::internal)?;
    let head: [u8; 32] = chain
        .last()
        .map(|last| Sha256::digest(last).into())
        .unwrap_or_default();
    if change.prev != head {
        return Err(Refusal::new(
            ErrorCode::InvalidChange,
            "the change does not follow the group's last change",
        ));
    }
    let effect = match &change.action {
        Action::Add(target) => {
            check_users_exist(node, &[target]).await?;
            MemberEffect::Add(target.clone())
        }
        Action::Remove(target) => MemberEffect::Remove(target.clone()),
        Action::Promote(target) => MemberEffect::SetRole(target.clone(), Role::Admin),
        Action::Demote(target) => MemberEffect::SetRole(target.clone(), Role::Member),
        Action::Leave => MemberEffect::Remove(user.clone()),
        Action::Create { .. } => return Err(refusal(ChangeError::CreateAgain)),
    };
    let applied = node
        .storage
        .apply_change(&GroupChange {
            group: change.group,
            epoch: change.epoch,
            signed: signed.to_bytes(),
            effect,
        })
        .await;
    match applied {
        Ok(()) => {}
        Err(StorageError::Conflict { .. }) => {
            return Err(refusal(ChangeError::StaleEpoch {
                current: state.epoch,
                got: change.epoch,
            }));
        }
        Err(err) => return Err(Refusal::internal(err)),
    }
    session.send(&NodeToClient::Done { req }).await;
    // Everyone before and after the change hears of it (a removed member learns it too).
    let mut told: Vec<UserName> = state.members.into_keys().filter(|m| m != user).collect();
    if let Action::Add(target) = &change.action {
        told.push(target.clone());
    }
    announce(node, told, &signed);
    Ok(())
}

pub(crate) async fn list<S: Storage>(session: &Session<S>, req: ReqId) -> Result<(), Refusal> {
    let user = session.user()?;
    let groups = session
        .node
        .storage
        .groups_of(user)
        .await
        .map_err(Refusal::internal)?;
    let groups = groups.into_iter().map(summary).collect();
    session.send(&NodeToClient::Groups { req, groups }).await;
    Ok(())
}

pub(crate) async fn info<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    id: GroupId,
) -> Result<(), Refusal> {
    let user = session.user()?;
    let node = &session.node;
    let state = membership(node, &id, user).await?;
    let chain = node
        .storage
        .chain(&id)
        .await
        .map_err(Refusal::internal)?
        .iter()
        .map(|bytes| SignedChange::from_bytes(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Refusal::internal)?;
    let members = state
        .members
        .iter()
        .map(|(user, role)| GroupMember {
            user: user.clone(),
            role: *role,
        })
        .collect();
    session
        .send(&NodeToClient::Group {
            req,
            summary: GroupSummary {
                id,
                name: state.name,
                creator: state.creator,
                epoch: state.epoch,
            },
            members,
            chain,
        })
        .await;
    Ok(())
}

/// A group message may come only from a member, to members, at an epoch that exists.
pub(crate) async fn check_message<S: Storage>(
    node: &Node<S>,
    header: &Header,
    id: &GroupId,
    epoch: u64,
) -> Result<(), Refusal> {
    let state = membership(node, id, &header.sender).await?;
    if epoch > state.epoch {
        return Err(Refusal::new(
            ErrorCode::StaleEpoch,
            "the group has no such epoch yet",
        ));
    }
    if let Some(outsider) = header
        .recipients
        .iter()
        .find(|r| !state.members.contains_key(*r))
    {
        return Err(Refusal::new(
            ErrorCode::NotMember,
            format!(
                "{outsider} is not a member of {}; refresh the group",
                state.name
            ),
        ));
    }
    Ok(())
}
