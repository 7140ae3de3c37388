//! Groups: creation from a signed genesis, membership changes, listing, and the checks for
//! group messages. The node enforces roles from storage with the same state machine the
//! clients run over the signed chain (`quip_proto::group::Membership`), and verifies every
//! link's RSA-PSS signature against its author's registered public key before storing it (so
//! no member can append a link the others' clients would reject, which would wreck the group
//! for everyone). Verification only, with `ring`: the node holds no private key and links no
//! `rsa`. Every client still verifies the whole chain itself before it wraps a key.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use quip_proto::client::GroupMember;
use quip_proto::group::{ChangeError, GroupCursor, GroupSummary, MemberRole, Membership};
use quip_proto::ids::{GroupId, UserName};
use quip_proto::limits::{MAX_CHAIN_PAGE_BYTES, MAX_GROUP_MEMBERS, MAX_LIST_PAGE};
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

/// Checks `signed`'s RSA-PSS-SHA256 signature (salt as long as the digest, as the client's
/// `rsa` signs) against the author's registered signing key.
async fn check_signature<S: Storage>(node: &Node<S>, signed: &SignedChange) -> Result<(), Refusal> {
    let author = &signed.change.author;
    let record = node
        .storage
        .user(author)
        .await
        .map_err(Refusal::internal)?
        .ok_or_else(|| Refusal::new(ErrorCode::UnknownUser, format!("no user named {author}")))?;
    signature::verify(
        &record.signing_key,
        &signed.change.signing_bytes(),
        &signed.signature,
    )
    .map_err(|why| {
        Refusal::new(
            ErrorCode::InvalidChange,
            format!("the change is not signed with {author}'s registered key ({why})"),
        )
    })
}

/// RSA-PSS verification with `ring` from the SPKI DER keys clients register (one place for it:
/// `quip_mls::account`).
mod signature {
    pub(super) use quip_mls::account::verify;

    #[cfg(test)]
    mod tests {
        use super::*;

        /// ring accepts exactly what the client's `rsa` signs (PSS, MGF1-SHA256, 32-byte salt),
        /// for the smallest and the default key size, and nothing altered.
        #[test]
        fn client_signatures_verify() {
            use quip_cli::e2e::{DEFAULT_KEY_BITS, Identity, MIN_KEY_BITS, sign_change};
            use quip_proto::ids::{GroupId, UserName};
            use quip_proto::{Action, Change};

            let other = Identity::generate(MIN_KEY_BITS).unwrap();
            for bits in [MIN_KEY_BITS, DEFAULT_KEY_BITS] {
                let me = Identity::generate(bits).unwrap();
                let change = Change {
                    group: GroupId([5; 16]),
                    epoch: 3,
                    prev: [7; 32],
                    author: UserName::new("alice").unwrap(),
                    action: Action::Leave,
                    at_ms: 1_700_000_000_000,
                };
                let signed = sign_change(&me, change).unwrap();
                let spki = me.public_keys().signing;
                let message = signed.change.signing_bytes();
                assert_eq!(verify(&spki, &message, &signed.signature), Ok(()), "{bits}");
                let mut flipped = signed.signature.clone();
                flipped[20] ^= 1;
                assert!(verify(&spki, &message, &flipped).is_err());
                assert!(verify(&spki, &message[1..], &signed.signature).is_err());
                assert!(verify(&spki, &message, &vec![0; signed.signature.len()]).is_err());
                let wrong = other.public_keys().signing;
                assert!(verify(&wrong, &message, &signed.signature).is_err());
                // The encryption key is an RSA key too, but not the one that signs.
                let enc = me.public_keys().encryption;
                assert!(verify(&enc, &message, &signed.signature).is_err());
            }
        }
    }
}

/// How fast each user may put others into groups (a genesis with members, an `Add`): a
/// keyed GCRA limit per author, so one account cannot flood someone's group list (one
/// account once put a user into 3,928 groups in 3.4 s). One creation counts once however many
/// members it names. Per node: a user spread over n nodes gets n times the allowance.
pub(crate) struct Placements(DefaultKeyedRateLimiter<UserName>);

/// Authors remembered before forgetting those whose allowance is full again.
const PLACEMENT_AUTHORS: usize = 10_000;

impl Placements {
    pub(crate) fn new(config: &crate::NodeConfig) -> Self {
        let burst = NonZeroU32::new(config.max_group_placements).unwrap_or(NonZeroU32::MIN);
        let period = config.group_placement_window / burst.get();
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self(RateLimiter::keyed(quota))
    }

    /// Takes one placement from `author`'s allowance, or says when there will be one.
    fn take(&self, author: &UserName) -> Result<(), Refusal> {
        if self.0.len() > PLACEMENT_AUTHORS {
            self.0.retain_recent();
        }
        self.0.check_key(author).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.0.clock().now());
            Refusal::new(
                ErrorCode::RateLimited,
                format!(
                    "you are adding people to groups too fast; try again in {} s",
                    wait.as_secs().max(1)
                ),
            )
            .retry_after(wait)
        })
    }
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
    check_signature(node, &genesis).await?;
    let others: Vec<UserName> = state
        .members
        .keys()
        .filter(|m| *m != user)
        .cloned()
        .collect();
    if !others.is_empty() {
        node.placements.take(user)?;
    }
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
    let last = node
        .storage
        .chain(&change.group, state.epoch, 1)
        .await
        .map_err(Refusal::internal)?;
    let head: [u8; 32] = last
        .first()
        .map(|last| Sha256::digest(last).into())
        .unwrap_or_default();
    if change.prev != head {
        return Err(Refusal::new(
            ErrorCode::InvalidChange,
            "the change does not follow the group's last change",
        ));
    }
    check_signature(node, &signed).await?;
    let effect = match &change.action {
        Action::Add(target) => {
            check_users_exist(node, &[target]).await?;
            node.placements.take(user)?;
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

/// One page of the caller's groups: at most [`MAX_LIST_PAGE`], so it always fits a frame.
pub(crate) async fn list<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    after: Option<GroupCursor>,
    limit: u32,
) -> Result<(), Refusal> {
    let user = session.user()?;
    let limit = usize::try_from(limit).map_or(MAX_LIST_PAGE, |l| l.clamp(1, MAX_LIST_PAGE));
    let page = session
        .node
        .storage
        .groups_of(user, after.as_ref().map(|c| (&c.name, &c.id)), limit)
        .await
        .map_err(Refusal::internal)?;
    let groups = page.items.into_iter().map(summary).collect();
    session
        .send(&NodeToClient::Groups {
            req,
            groups,
            total: page.total,
            more: page.more,
        })
        .await;
    Ok(())
}

/// Links read from storage per `GroupInfo` answer, before the byte budget trims them.
const CHAIN_PAGE_LINKS: usize = 128;

/// A group's members and one page of its chain from `from_epoch`: links up to
/// [`MAX_CHAIN_PAGE_BYTES`] (at least one), so the answer always fits a frame.
pub(crate) async fn info<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    id: GroupId,
    from_epoch: u64,
) -> Result<(), Refusal> {
    let user = session.user()?;
    let node = &session.node;
    let state = membership(node, &id, user).await?;
    let stored = node
        .storage
        .chain(&id, from_epoch, CHAIN_PAGE_LINKS)
        .await
        .map_err(Refusal::internal)?;
    let mut chain = Vec::new();
    let mut bytes = 0;
    for link in &stored {
        bytes += link.len();
        if bytes > MAX_CHAIN_PAGE_BYTES && !chain.is_empty() {
            break;
        }
        chain.push(SignedChange::from_bytes(link).map_err(Refusal::internal)?);
    }
    let more = chain
        .last()
        .is_some_and(|last: &SignedChange| last.change.epoch < state.epoch);
    let members = state
        .members
        .iter()
        .take(MAX_GROUP_MEMBERS)
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
            more,
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
