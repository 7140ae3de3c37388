//! Request handlers, one file per family: accounts, the user directory and keys, messages,
//! images, groups.

pub(crate) mod auth;
pub(crate) mod directory;
pub(crate) mod group;
pub(crate) mod image;
pub(crate) mod message;

use quip_proto::{ClientToNode, NodeToClient};
use quip_storage::Storage;

use crate::session::{Refusal, Session};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Routes one request to its handler.
pub(crate) async fn dispatch<S: Storage>(
    session: &mut Session<S>,
    msg: ClientToNode,
) -> Result<(), Refusal> {
    use ClientToNode::*;
    match msg {
        Signup {
            req,
            user,
            secret,
            keys,
            backup,
        } => auth::signup(session, req, user, secret, keys, backup).await,
        Login { req, user, secret } => auth::login(session, req, user, secret).await,
        Resume { req, token } => auth::resume(session, req, token).await,
        Logout { req } => auth::logout(session, req).await,
        ListUsers { req } => directory::list_users(session, req).await,
        FetchKeys { req, user } => directory::fetch_keys(session, req, user).await,
        ReplaceKeys { req, keys, backup } => {
            directory::replace_keys(session, req, keys, backup).await
        }
        Send { req, envelope } => message::send(session, req, envelope).await,
        Ack { ids } => message::ack(session, ids).await,
        Ping { req } => {
            session.send(&NodeToClient::Pong { req }).await;
            Ok(())
        }
        CreateGroup { req, genesis } => group::create(session, req, genesis).await,
        ChangeGroup { req, change } => group::change(session, req, change).await,
        ListGroups { req } => group::list(session, req).await,
        GroupInfo { req, group } => group::info(session, req, group).await,
        FetchBlob { req, msg } => image::fetch(session, req, msg).await,
    }
}
