//! Images on their own streams. Uploads: the node checks the envelope, stores the ciphertext
//! chunk by chunk as a blob (never the whole image in memory), stops a stream that grows past
//! the announced or configured size, and queues the envelope only once the blob is complete.
//! Downloads: a recipient asks for the blob of a message queued for them and the node streams
//! it back on a new stream. The node never sees an image's plaintext.

use std::sync::Arc;

use quip_proto::ids::{MsgId, UserName};
use quip_proto::limits::{MAX_BLOB_CHUNK, MAX_FRAME};
use quip_proto::{
    Chunk, ContentKind, Delivery, Envelope, ErrorCode, NodeToClient, ReqId, Sealed, StreamOpen,
};
use quip_quic::{FrameError, FramedRecv, FramedSend};
use quip_storage::{Storage, StorageError};

use super::message::{Carrier, Pending, check_route, submit};
use super::now_ms;
use crate::Node;
use crate::session::{Refusal, Session};

/// QUIC error code for a stream the node stops (over the limit, malformed, before login).
pub(crate) const STREAM_REFUSED: u32 = 1;

/// Serves one stream a logged-in client opened (an image upload).
pub(crate) async fn serve_stream<S: Storage>(
    node: Arc<Node<S>>,
    user: UserName,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, MAX_FRAME).with_frame_deadline(node.config.frame_deadline);
    let first = tokio::time::timeout(node.config.upload_idle, recv.expect::<StreamOpen>()).await;
    let (req, answer) = match first {
        Ok(Ok(StreamOpen::ImageUpload { req, envelope })) => {
            let result = match upload(&node, &user, envelope, &mut recv).await {
                Ok(pending) => Ok(pending.answer(req).await),
                Err(refusal) => Err(refusal),
            };
            (Some(req), result)
        }
        Err(_idle) => (None, Err(idle(node.config.upload_idle))),
        Ok(Ok(_)) => (
            None,
            Err(Refusal::new(
                ErrorCode::Malformed,
                "clients open image uploads only",
            )),
        ),
        Ok(Err(err)) => (
            None,
            Err(Refusal::new(ErrorCode::Malformed, err.to_string())),
        ),
    };
    let answer = match answer {
        Ok(stored) => stored,
        Err(refusal) => {
            let _ = recv.stream().stop(STREAM_REFUSED.into());
            refusal.into_error(req)
        }
    };
    if send.send(&answer).await.is_ok() {
        let _ = send.finish();
        // Wait until the client has the answer before the stream is dropped.
        let _ = send.stream().stopped().await;
    }
}

async fn upload<S: Storage>(
    node: &Node<S>,
    user: &UserName,
    envelope: Envelope,
    recv: &mut FramedRecv,
) -> Result<Pending, Refusal> {
    check_route(node, user, &envelope, Carrier::ImageStream).await?;
    let ContentKind::Image { blob, len } = envelope.sealed.header.kind else {
        return Err(Refusal::new(
            ErrorCode::InvalidEnvelope,
            "not an image envelope",
        ));
    };
    let max = node.config.max_image_bytes;
    if len > max {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("the image is {len} bytes; this node accepts at most {max}"),
        ));
    }
    // Quotas before a byte of the image is stored (the commit checks again, race-safe).
    let recipients: Vec<UserName> = envelope
        .keys
        .iter()
        .map(|key| key.recipient.clone())
        .filter(|name| name != user)
        .collect();
    let key = envelope
        .keys
        .iter()
        .map(|k| k.wrapped.len())
        .max()
        .unwrap_or(0);
    let bytes = len + (envelope.sealed.encoded_len() + key) as u64;
    let quota = &node.config.queue_quota;
    if let Some(refused) = node
        .storage
        .queue_room(user, &recipients, bytes, quota)
        .await
        .map_err(Refusal::internal)?
    {
        return Err(super::message::refusal(refused));
    }
    match node.storage.blob_create(&blob, user, now_ms()).await {
        Ok(()) => {}
        Err(StorageError::AlreadyExists { .. }) => {
            return Err(Refusal::new(
                ErrorCode::InvalidEnvelope,
                "that image id is already in use",
            ));
        }
        Err(err) => return Err(Refusal::internal(err)),
    }
    let received = receive(node, &blob, len, recv).await;
    if let Err(refusal) = received {
        // A cut or refused stream is never kept as if whole.
        let _ = node.storage.blob_delete(&blob).await;
        return Err(refusal);
    }
    node.storage
        .blob_finish(&blob)
        .await
        .map_err(Refusal::internal)?;
    submit(node, user, envelope, Some(blob)).await
}

/// An upload that sent nothing for `limit`: abandoned.
fn idle(limit: std::time::Duration) -> Refusal {
    Refusal::new(
        ErrorCode::Malformed,
        format!(
            "the upload sent nothing for {} s; it was dropped, send the image again",
            limit.as_secs()
        ),
    )
}

/// Streams chunks into the blob, enforcing the announced length while the bytes arrive.
async fn receive<S: Storage>(
    node: &Node<S>,
    blob: &quip_proto::ids::BlobId,
    len: u64,
    recv: &mut FramedRecv,
) -> Result<(), Refusal> {
    let mut total: u64 = 0;
    let mut index: u32 = 0;
    loop {
        let next = tokio::time::timeout(node.config.upload_idle, recv.recv::<Chunk>()).await;
        let Ok(next) = next else {
            return Err(idle(node.config.upload_idle));
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(FrameError::Decode(err)) => {
                return Err(Refusal::new(ErrorCode::Malformed, err.to_string()));
            }
            Err(err) => {
                return Err(Refusal::new(
                    ErrorCode::Malformed,
                    format!("image stream cut: {err}"),
                ));
            }
        };
        if chunk.data.len() > MAX_BLOB_CHUNK {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "image chunk of {} bytes; at most {MAX_BLOB_CHUNK}",
                    chunk.data.len()
                ),
            ));
        }
        total += chunk.data.len() as u64;
        if total > len {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("the image stream is longer than the {len} bytes announced"),
            ));
        }
        node.storage
            .blob_append(blob, index, &chunk.data)
            .await
            .map_err(Refusal::internal)?;
        index += 1;
    }
    if total != len {
        return Err(Refusal::new(
            ErrorCode::Malformed,
            format!("the image stream ended after {total} of {len} bytes"),
        ));
    }
    Ok(())
}

/// `FetchBlob`: streams the image of a message queued for the caller on a new stream,
/// answering `Done` once the stream has started.
pub(crate) async fn fetch<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    msg: MsgId,
) -> Result<(), Refusal> {
    let user = session.user()?;
    let node = session.node.clone();
    let unknown = || {
        Refusal::new(
            ErrorCode::UnknownBlob,
            format!("no image {msg} is waiting for you"),
        )
    };
    let queued = node
        .storage
        .queued(user, &msg)
        .await
        .map_err(Refusal::internal)?
        .ok_or_else(unknown)?;
    let blob = queued.blob.ok_or_else(unknown)?;
    let info = node
        .storage
        .blob_info(&blob)
        .await
        .map_err(Refusal::internal)?
        .filter(|info| info.finished)
        .ok_or_else(unknown)?;
    let sealed: Sealed =
        quip_proto::frame::decode_body(&queued.sealed).map_err(Refusal::internal)?;
    let open = StreamOpen::ImageDownload {
        msg,
        delivery: Delivery {
            key: queued.key,
            sealed,
        },
    };
    let mut send = quip_quic::open_stream(&session.conn, &open, MAX_FRAME)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("cannot open a stream: {e}")))?
        .0;
    session.send(&NodeToClient::Done { req }).await;
    tokio::spawn(async move {
        for index in 0..info.chunks {
            let data = match node.storage.blob_chunk(&blob, index).await {
                Ok(Some(data)) => data,
                Ok(None) | Err(_) => {
                    tracing::warn!(%blob, index, "blob chunk missing; resetting download");
                    let _ = send.stream().reset(STREAM_REFUSED.into());
                    return;
                }
            };
            if send.send(&Chunk { data }).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
        let _ = send.stream().stopped().await;
    });
    Ok(())
}
