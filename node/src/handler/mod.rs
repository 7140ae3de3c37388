//! Request handlers, one file per family: accounts, the user directory and keys, messages,
//! images, groups.

pub(crate) mod auth;
pub(crate) mod directory;
pub(crate) mod group;
pub(crate) mod image;
pub(crate) mod message;
pub(crate) mod mls;

use quip_proto::{ClientToNode, EncodeError, ErrorCode, NodeToClient};
use quip_storage::Storage;

use crate::session::{Refusal, Session};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What to send instead of an answer that does not fit a frame: an error for the request it
/// answers, so the client is never left waiting for nothing.
pub(crate) fn unsendable(msg: &NodeToClient, err: EncodeError) -> Result<Vec<u8>, EncodeError> {
    tracing::error!(error = %err, kind = msg.kind(), "answer does not fit a frame");
    let refusal = Refusal::new(
        ErrorCode::TooLarge,
        "the answer does not fit a frame; ask for a smaller page",
    );
    quip_proto::frame::encode(&refusal.into_error(msg.req()))
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
        ListUsers { req, after, limit } => directory::list_users(session, req, after, limit).await,
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
        ListGroups { req, after, limit } => group::list(session, req, after, limit).await,
        GroupInfo {
            req,
            group,
            from_epoch,
        } => group::info(session, req, group, from_epoch).await,
        FetchBlob { req, msg } => image::fetch(session, req, msg).await,
        EnrollDevice {
            req,
            device,
            credential,
            signature_key,
        } => mls::enroll_device(session, req, device, credential, signature_key).await,
        UseDevice { req, device } => mls::use_device(session, req, device).await,
        ListDevices { req } => mls::list_devices(session, req).await,
        RemoveDevice { req, device } => mls::remove_device(session, req, device).await,
        PublishKeyPackages { req, packages } => {
            mls::publish_key_packages(session, req, packages).await
        }
        ClaimKeyPackages { req, user } => mls::claim_key_packages(session, req, user).await,
        CreateMlsGroup {
            req,
            group,
            group_info,
            ratchet_tree,
        } => mls::create_group(session, req, group, group_info, ratchet_tree).await,
        GroupState { req, group, offset } => mls::group_state(session, req, group, offset).await,
        ListMlsGroups { req, after, limit } => mls::list_groups(session, req, after, limit).await,
        Handshake {
            req,
            group,
            id,
            message,
            group_info,
            welcome,
        } => mls::handshake(session, req, group, id, message, group_info, welcome).await,
        Post {
            req,
            group,
            id,
            message,
            blob,
        } => mls::post(session, req, group, id, message, blob).await,
        AckLog { entries, welcomes } => mls::ack_log(session, entries, welcomes).await,
        PutDeviceState { req, entries } => mls::put_device_state(session, req, entries).await,
        GetDeviceState { req, device, after } => {
            mls::get_device_state(session, req, device, after).await
        }
    }
}
