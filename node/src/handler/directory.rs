//! The user list with presence, and public keys.

use quip_proto::client::Presence;
use quip_proto::ids::UserName;
use quip_proto::limits::{MAX_KEY_BACKUP, MAX_LIST_PAGE, MAX_PUBLIC_KEY};
use quip_proto::{ErrorCode, NodeToClient, PublicKeys, ReqId};
use quip_storage::{Storage, StorageError};

use crate::session::{Refusal, Session};

/// One page of users, with presence: at most [`MAX_LIST_PAGE`], so it always fits a frame.
pub(crate) async fn list_users<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    after: Option<UserName>,
    limit: u32,
) -> Result<(), Refusal> {
    session.user()?;
    let node = &session.node;
    let limit = usize::try_from(limit).map_or(MAX_LIST_PAGE, |l| l.clamp(1, MAX_LIST_PAGE));
    let page = node
        .storage
        .list_users(after.as_ref(), limit)
        .await
        .map_err(Refusal::internal)?;
    let users = page
        .items
        .into_iter()
        .map(|user| Presence {
            online: node.is_online(&user),
            user,
        })
        .collect();
    session
        .send(&NodeToClient::Users {
            req,
            users,
            total: page.total,
            more: page.more,
        })
        .await;
    Ok(())
}

pub(crate) async fn fetch_keys<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    user: UserName,
) -> Result<(), Refusal> {
    session.user()?;
    let record = session
        .node
        .storage
        .user(&user)
        .await
        .map_err(Refusal::internal)?
        .ok_or_else(|| Refusal::new(ErrorCode::UnknownUser, format!("no user named {user}")))?;
    session
        .send(&NodeToClient::Keys {
            req,
            user,
            keys: PublicKeys {
                encryption: record.encryption_key,
                signing: record.signing_key,
            },
        })
        .await;
    Ok(())
}

pub(crate) async fn replace_keys<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    keys: PublicKeys,
    backup: Vec<u8>,
) -> Result<(), Refusal> {
    let user = session.user()?.clone();
    if keys.encryption.len() > MAX_PUBLIC_KEY
        || keys.signing.len() > MAX_PUBLIC_KEY
        || backup.len() > MAX_KEY_BACKUP
    {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            "keys or backup over the limit",
        ));
    }
    match session
        .node
        .storage
        .replace_keys(&user, &keys.encryption, &keys.signing, &backup)
        .await
    {
        Ok(()) => {}
        Err(StorageError::NotFound { .. }) => {
            return Err(Refusal::new(
                ErrorCode::UnknownUser,
                "account no longer exists",
            ));
        }
        Err(err) => return Err(Refusal::internal(err)),
    }
    tracing::info!(%user, "replaced keys");
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}
