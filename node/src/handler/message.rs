//! Sending, acknowledging and draining messages. The node checks what it can see (the
//! sender is the session's user, the recipients are real and match the wrapped keys), stores
//! the envelope in every recipient's queue, answers `Stored`, and pushes to whoever is online.
//! It never sees a plaintext.

use std::sync::Arc;

use bytes::Bytes;
use quip_proto::client::deliver_prefix;
use quip_proto::envelope::EnvelopeError;
use quip_proto::ids::{BlobId, MsgId, UserName};
use quip_proto::{ContentKind, Conversation, Envelope, ErrorCode, NodeToClient, ReqId};
use quip_storage::{Enqueued, ExpiryNotice, NewMessage, Refused, Storage};
use tokio::sync::oneshot;

use quip_proto::limits::MAX_SEALED;

use super::now_ms;
use crate::Node;
use crate::queue::Job;
use crate::registry::{Outbox, Outgoing};
use crate::session::{Refusal, Session};

/// Messages read from storage per page when draining a queue.
const DRAIN_PAGE: u32 = 512;
/// Fewest rows a drain reads at once (the first page, and pages of very large messages).
const DRAIN_MIN_PAGE: usize = 8;
/// Most ids in one acknowledgement.
const MAX_ACK: usize = 4096;

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::InvalidEnvelope, message)
}

/// Which stream an envelope arrived on: text on the control stream, images on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    Control,
    ImageStream,
}

/// Checks the routing a server can see: sender, kind, recipients.
pub(crate) async fn check_route<S: Storage>(
    node: &Node<S>,
    sender: &UserName,
    envelope: &Envelope,
    carrier: Carrier,
) -> Result<(), Refusal> {
    envelope.check().map_err(|e| match e {
        EnvelopeError::TooLarge { .. } => Refusal::new(ErrorCode::TooLarge, e.to_string()),
        e => invalid(e.to_string()),
    })?;
    let header = &envelope.sealed.header;
    if &header.sender != sender {
        return Err(Refusal::new(
            ErrorCode::SenderMismatch,
            format!(
                "envelope claims sender {} but you are {sender}",
                header.sender
            ),
        ));
    }
    match (&header.kind, carrier) {
        (ContentKind::Text, Carrier::Control)
        | (ContentKind::Image { .. }, Carrier::ImageStream) => {}
        (ContentKind::Image { .. }, Carrier::Control) => {
            return Err(invalid("images travel on their own stream"));
        }
        _ => return Err(invalid("this stream does not carry that kind of message")),
    }
    match &header.conversation {
        Conversation::Direct(peer) => {
            if peer == sender {
                return Err(Refusal::new(
                    ErrorCode::SelfMessage,
                    "you cannot message yourself",
                ));
            }
            if header.recipients.len() != 2 || !header.recipients.contains(peer) {
                return Err(invalid("a direct message goes to exactly you and the peer"));
            }
            node.require_user(peer).await?;
            Ok(())
        }
        Conversation::Group { id, epoch } => {
            super::group::check_message(node, header, id, *epoch).await
        }
    }
}

pub(crate) async fn send<S: Storage>(
    session: &Session<S>,
    req: ReqId,
    envelope: Envelope,
) -> Result<(), Refusal> {
    let sender = session.user()?.clone();
    let node = session.node.clone();
    check_route(&node, &sender, &envelope, Carrier::Control).await?;
    let stored = submit(&node, &sender, envelope, None).await?;
    // Answer from a task so the session keeps reading while the batch commits; the order of
    // storage and pushes is fixed by the writer already.
    let outbox = session.outbox.clone();
    tokio::spawn(async move {
        if let Ok(bytes) = quip_proto::frame::encode(&stored.answer(req).await) {
            let _ = outbox.send(Outgoing::Frame(Bytes::from(bytes))).await;
        }
    });
    Ok(())
}

/// A message handed to the writer, waiting for its commit.
pub(crate) struct Pending {
    id: MsgId,
    done: oneshot::Receiver<Result<Enqueued, String>>,
}

impl Pending {
    /// Waits for the commit: `Stored`, or an error saying nothing was accepted (and why,
    /// when it is this message's own fault or a full queue).
    pub(crate) async fn answer(self, req: ReqId) -> NodeToClient {
        match self.done.await {
            Ok(Ok(Enqueued::Refused(refused))) => refusal(refused).into_error(Some(req)),
            Ok(Ok(outcome)) => NodeToClient::Stored {
                req,
                id: self.id,
                fresh: outcome == Enqueued::Stored,
            },
            _ => NodeToClient::Error {
                req: Some(req),
                code: ErrorCode::Internal,
                message: "could not store the message; it was not accepted, send it again".into(),
                retry_after_ms: None,
            },
        }
    }
}

/// What the sender is told when storage refuses their message.
pub(crate) fn refusal(refused: Refused) -> Refusal {
    match refused {
        Refused::QueueFull { recipient, limit } => Refusal::new(
            ErrorCode::QuotaExceeded,
            format!(
                "{recipient} has too much unread: their queue holds at most {limit}; \
                 nothing was sent, try again once they have read some"
            ),
        ),
        Refused::UnknownRecipient(user) => {
            Refusal::new(ErrorCode::UnknownUser, format!("no user {user}"))
        }
        Refused::TooLarge { what, len, max } => Refusal::new(
            ErrorCode::TooLarge,
            format!("{what} of {len} bytes exceeds the limit of {max}"),
        ),
    }
}

/// Hands a checked envelope to the writer: stored once, queued for every recipient but the
/// sender, pushed to those online after the commit.
pub(crate) async fn submit<S: Storage>(
    node: &Node<S>,
    sender: &UserName,
    envelope: Envelope,
    blob: Option<BlobId>,
) -> Result<Pending, Refusal> {
    let id = envelope.sealed.header.id;
    let sealed = Bytes::from(postcard::to_stdvec(&envelope.sealed).map_err(Refusal::internal)?);
    // `check_route` counted this size already; the bytes storage will store are the proof.
    if sealed.len() > MAX_SEALED {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "sealed envelope of {} bytes exceeds the limit of {MAX_SEALED}",
                sealed.len()
            ),
        ));
    }
    let mut recipients = Vec::with_capacity(envelope.keys.len());
    let mut prefixes = Vec::with_capacity(envelope.keys.len());
    for key in envelope.keys.into_iter().filter(|k| &k.recipient != sender) {
        let prefix = deliver_prefix(&key.wrapped, sealed.len()).map_err(Refusal::internal)?;
        prefixes.push((key.recipient.clone(), Bytes::from(prefix)));
        recipients.push((key.recipient, key.wrapped));
    }
    let (done, stored) = oneshot::channel();
    let job = Job {
        message: NewMessage {
            id,
            sender: sender.clone(),
            sealed: sealed.to_vec(),
            blob,
            recipients,
            created_at: now_ms(),
        },
        sealed,
        prefixes,
        done,
    };
    if node.writer.submit(job).await.is_err() {
        return Err(Refusal::new(ErrorCode::Busy, "node is shutting down"));
    }
    Ok(Pending { id, done: stored })
}

pub(crate) async fn ack<S: Storage>(session: &Session<S>, ids: Vec<MsgId>) -> Result<(), Refusal> {
    let user = session.user()?;
    if ids.len() > MAX_ACK {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_ACK} ids per ack"),
        ));
    }
    // Committed with whatever else gathers meanwhile; the session reads on.
    session
        .node
        .writer
        .ack(user.clone(), ids, session.outbox.clone())
        .await
        .map_err(|()| Refusal::new(ErrorCode::Busy, "node is shutting down"))
}

/// Expiry notices handed to a session per storage read.
const NOTICE_PAGE: u32 = 512;

/// The frames telling a sender their messages expired unread.
pub(crate) fn expiry_frames(notices: Vec<ExpiryNotice>) -> Vec<Bytes> {
    notices
        .into_iter()
        .filter_map(|notice| {
            let expired = NodeToClient::Expired {
                id: notice.id,
                recipient: notice.recipient,
                expired_at_ms: notice.expired_at.max(0) as u64,
            };
            quip_proto::frame::encode(&expired).ok().map(Bytes::from)
        })
        .collect()
}

/// Hands `user`'s expiry notices to the session (each is taken from storage once).
async fn tell_expired<S: Storage>(node: &Node<S>, user: &UserName, outbox: &Outbox) {
    loop {
        let notices = match node.storage.take_expiry_notices(user, NOTICE_PAGE).await {
            Ok(notices) => notices,
            Err(err) => {
                tracing::warn!(error = %err, %user, "cannot read expiry notices");
                return;
            }
        };
        let full = notices.len() == NOTICE_PAGE as usize;
        for frame in expiry_frames(notices) {
            if outbox.send(Outgoing::Frame(frame)).await.is_err() {
                return;
            }
        }
        if !full {
            return;
        }
    }
}

/// Pushes everything waiting in `user`'s queue, oldest first, into the session's outbox,
/// then the notices of the user's messages that expired unread.
pub(crate) async fn drain<S: Storage>(node: Arc<Node<S>>, user: UserName, outbox: Outbox) {
    drain_queue(&node, &user, &outbox).await;
    tell_expired(&node, &user, &outbox).await;
}

/// Memory stays within about twice the outbox's byte budget whatever the queue holds: each
/// page is read only once the outbox has room for half a budget, and pages are sized (from
/// the rows seen so far) to about half a budget of bytes.
async fn drain_queue<S: Storage>(node: &Node<S>, user: &UserName, outbox: &Outbox) {
    let half = outbox.budget() / 2;
    let (mut after, mut rows, mut bytes) = (0, 0usize, 0usize);
    loop {
        let page_rows = match bytes.checked_div(rows) {
            Some(avg) => (half / avg.max(1)).clamp(DRAIN_MIN_PAGE, DRAIN_PAGE as usize) as u32,
            None => DRAIN_MIN_PAGE as u32,
        };
        if outbox.room_for(half).await.is_err() {
            return;
        }
        let page = match node.storage.pending(user, after, page_rows).await {
            Ok(page) => page,
            Err(err) => {
                tracing::error!(error = %err, %user, "cannot read queue");
                return;
            }
        };
        let full = page.len() == page_rows as usize;
        for queued in page {
            after = queued.seq;
            rows += 1;
            bytes += queued.sealed.len() + queued.key.len();
            let Ok(prefix) = deliver_prefix(&queued.key, queued.sealed.len()) else {
                tracing::error!(id = %queued.id, "stored message does not fit a frame");
                continue;
            };
            let item = Outgoing::Deliver {
                id: queued.id,
                prefix: Bytes::from(prefix),
                sealed: Bytes::from(queued.sealed),
            };
            if outbox.send(item).await.is_err() {
                return;
            }
        }
        if !full {
            return;
        }
    }
}
