//! The user list with presence, and public keys.

use quip_proto::client::Presence;
use quip_proto::ids::UserName;
use quip_proto::limits::{MAX_KEY_BACKUP, MAX_PUBLIC_KEY};
use quip_proto::{ErrorCode, NodeToClient, PublicKeys, ReqId};
use quip_storage::{Storage, StorageError};

use crate::session::{Refusal, Session};

/// Most users listed in one answer (the frame limit bounds it anyway).
const MAX_LISTED: usize = 10_000;

pub(crate) async fn list_users<S: Storage>(
    session: &Session<S>,
    req: ReqId,
) -> Result<(), Refusal> {
    session.user()?;
    let node = &session.node;
    let names = node.storage.list_users().await.map_err(Refusal::internal)?;
    let users = names
        .into_iter()
        .take(MAX_LISTED)
        .map(|user| Presence {
            online: node.is_online(&user),
            user,
        })
        .collect();
    session.send(&NodeToClient::Users { req, users }).await;
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
