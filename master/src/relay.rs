//! One task per node connection: the certificate check, `Register`, then heartbeats,
//! presence, text relays and group announcements on the control stream, with a writer task
//! owning the stream's sending half so relays from other nodes never wait for this node's
//! reader.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quip_proto::ids::{GroupId, NodeName, UserName};
use quip_proto::limits::{
    MAX_GROUP_MEMBERS, MAX_RECIPIENTS, MAX_SEALED, MAX_SIGNATURE, MAX_WRAPPED_KEY,
};
use quip_proto::relay::Relayed;
use quip_proto::{Action, ErrorCode, MasterToNode, NodeToMaster, SignedChange, frame};
use quip_quic::{FrameError, FramedRecv, FramedSend};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::Master;
use crate::presence::{Full, Outbox};
use crate::registry::{Registration, Stale};
use crate::session::{self, FLUSH_TIMEOUT, close};

/// How long a node may take to register after its hello.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// How the master reaches one node's session.
#[derive(Debug, Clone)]
pub(crate) struct NodeLink {
    /// The node's connection (image streams are opened on it; closed when it is dropped).
    pub(crate) conn: quinn::Connection,
    /// Encoded `MasterToNode` frames for its control stream.
    pub(crate) outbox: mpsc::Sender<Bytes>,
    /// Relays and announcements dropped because `outbox` was full, not yet reported to the
    /// node (the writer reports them with `Missed` once the queue has room again).
    pub(crate) missed: Arc<AtomicU64>,
}

impl NodeLink {
    /// Queues a relayed frame without waiting: a node that reads too slowly must not hold up
    /// the node sending to it. A dropped frame is counted; storage holds the message.
    fn relay(&self, frame: Bytes, node: &NodeName) {
        match self.outbox.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.missed.fetch_add(1, Ordering::AcqRel) == 0 {
                    tracing::warn!(to = %node, "relay queue of the node is full; dropping relays until it catches up, then it re-reads storage");
                }
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

impl Outbox for NodeLink {
    fn push(&self, frames: &[Bytes]) -> Result<(), Full> {
        match self.outbox.try_reserve_many(frames.len()) {
            Ok(permits) => {
                for (permit, frame) in permits.zip(frames) {
                    permit.send(frame.clone());
                }
                Ok(())
            }
            Err(TrySendError::Full(())) => Err(Full),
            // The session is ending; its node registers again with a fresh snapshot.
            Err(TrySendError::Closed(())) => Ok(()),
        }
    }
}

/// Why a node session ends: the QUIC close code and reason.
type End = (u32, String);

/// A registered node's session.
struct NodeSession {
    master: Arc<Master>,
    name: NodeName,
    conn_id: u64,
    link: NodeLink,
}

/// Serves one node connection until it closes, breaks the protocol, is replaced or dropped,
/// or the master shuts down.
pub(crate) async fn serve(
    master: Arc<Master>,
    conn: quinn::Connection,
    conn_id: u64,
    mut stop: watch::Receiver<bool>,
) {
    let Some(leaf) = session::peer_chain(&conn).and_then(|chain| chain.into_iter().next()) else {
        tracing::warn!("node connection without a client certificate; refusing");
        conn.close(
            close::UNAUTHENTICATED.into(),
            b"nodes must present a certificate issued by the cluster CA (quip-master issue-node)",
        );
        return;
    };
    let Some((send, mut recv)) = session::handshake(&conn, quip_proto::limits::MAX_FRAME).await
    else {
        return;
    };
    let (outbox, rx) = mpsc::channel(master.config.relay_queue);
    let missed = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_loop(send, rx, missed.clone()));
    let link = NodeLink {
        conn: conn.clone(),
        outbox,
        missed,
    };
    let registered = tokio::time::timeout(
        REGISTER_TIMEOUT,
        await_register(&master, &link, &leaf, &mut recv, conn_id),
    )
    .await
    .unwrap_or_else(|_| {
        Err((
            close::PROTOCOL,
            format!("no Register within {REGISTER_TIMEOUT:?}"),
        ))
    });
    let (code, reason) = match registered {
        Ok(name) => {
            let session = NodeSession {
                master: master.clone(),
                name,
                conn_id,
                link,
            };
            let images = tokio::spawn(
                crate::image::accept_images(
                    master.clone(),
                    session.name.clone(),
                    conn_id,
                    conn.clone(),
                )
                .instrument(tracing::Span::current()),
            );
            let end = tokio::select! {
                end = session.run(&mut recv) => end,
                _ = stop.wait_for(|s| *s) => (close::SHUTDOWN, "master shutting down".into()),
            };
            if master.registry.remove(&session.name, conn_id) {
                tracing::info!(reason = %end.1, "node left; dropped from discovery");
            }
            images.abort();
            end
        }
        Err(end) => {
            drop(link);
            end
        }
    };
    // The registry and every relay in flight let go of the outbox; the writer flushes what
    // is queued (a refusal, say), finishes, and then the connection closes.
    let _ = tokio::time::timeout(FLUSH_TIMEOUT * 2, writer).await;
    conn.close(code.into(), reason.as_bytes());
}

/// Waits for `Register`, answering anything else with `NotRegistered`.
async fn await_register(
    master: &Arc<Master>,
    link: &NodeLink,
    leaf: &CertificateDer<'static>,
    recv: &mut FramedRecv,
    conn_id: u64,
) -> Result<NodeName, End> {
    loop {
        let msg = next_frame(recv, link).await?;
        let NodeToMaster::Register {
            node,
            client_addr,
            load,
            users,
        } = msg
        else {
            tracing::info!(kind = msg.kind(), "frame before Register");
            let message = format!("register first: got {} before Register", msg.kind());
            reply(link, ErrorCode::NotRegistered, message).await;
            continue;
        };
        if !crate::certs::node_name_matches(leaf, &node) {
            tracing::warn!(%node, "Register under a name the certificate does not carry");
            let message = format!(
                "node name {node} is not in this certificate; issue one with quip-master issue-node {node}"
            );
            reply(link, ErrorCode::UnknownNode, message.clone()).await;
            return Err((close::UNAUTHENTICATED, message));
        }
        if let Err(err) = crate::certs::split_host_port(&client_addr) {
            reply(link, ErrorCode::Malformed, format!("client address: {err}")).await;
            continue;
        }
        tracing::Span::current().record("node", node.as_str());
        send_frame(
            link,
            &MasterToNode::Registered {
                heartbeat_ms: heartbeat_ms(master),
            },
        )
        .await;
        tracing::info!(%client_addr, users = users.len(), "node registered");
        let replaced = master.registry.register(
            Registration {
                node: node.clone(),
                conn_id,
                client_addr,
                load,
                users,
                link: link.clone(),
            },
            Instant::now(),
        );
        if let Some(old) = replaced {
            tracing::warn!("replacing an older connection of the same node");
            old.conn.close(
                close::REPLACED.into(),
                b"a newer connection registered this node",
            );
        }
        return Ok(node);
    }
}

impl NodeSession {
    async fn run(&self, recv: &mut FramedRecv) -> End {
        loop {
            let msg = match next_frame(recv, &self.link).await {
                Ok(msg) => msg,
                Err(end) => return end,
            };
            if self.handle(msg).await.is_err() {
                return (
                    close::REPLACED,
                    "this node is registered on another connection".into(),
                );
            }
        }
    }

    async fn handle(&self, msg: NodeToMaster) -> Result<(), Stale> {
        let registry = &self.master.registry;
        let (name, id) = (&self.name, self.conn_id);
        match msg {
            NodeToMaster::Heartbeat(load) => registry.heartbeat(name, id, load, Instant::now()),
            NodeToMaster::Online(users) => registry.online(name, id, users),
            NodeToMaster::Offline(users) => registry.offline(name, id, &users),
            NodeToMaster::Relay(relayed) => self.relay(relayed).await,
            NodeToMaster::Announce { users, change } => self.announce(users, change).await,
            NodeToMaster::LogAppended {
                users,
                group,
                seq,
                frame,
            } => self.log_appended(users, group, seq, frame).await,
            NodeToMaster::Draining => {
                tracing::info!("node draining; no more clients for it");
                registry.draining(name, id)
            }
            NodeToMaster::Register {
                node,
                client_addr,
                load,
                users,
            } => {
                if node != self.name {
                    let message = format!("this connection is registered as {}", self.name);
                    reply(&self.link, ErrorCode::UnknownNode, message).await;
                    return Ok(());
                }
                if let Err(err) = crate::certs::split_host_port(&client_addr) {
                    reply(
                        &self.link,
                        ErrorCode::Malformed,
                        format!("client address: {err}"),
                    )
                    .await;
                    return Ok(());
                }
                let heartbeat_ms = heartbeat_ms(&self.master);
                send_frame(&self.link, &MasterToNode::Registered { heartbeat_ms }).await;
                tracing::info!(users = users.len(), "node registered again");
                registry.register(
                    Registration {
                        node,
                        conn_id: id,
                        client_addr,
                        load,
                        users,
                        link: self.link.clone(),
                    },
                    Instant::now(),
                );
                Ok(())
            }
        }
    }

    /// Forwards one envelope: one frame per destination node with only its recipients' keys.
    async fn relay(&self, relayed: Relayed) -> Result<(), Stale> {
        if let Err(why) = check_relayed(&relayed) {
            reply(&self.link, ErrorCode::InvalidEnvelope, why).await;
            return Ok(());
        }
        let msg = relayed.sealed.header.id;
        let (destinations, unrouted) =
            self.master
                .registry
                .route(&self.name, self.conn_id, &relayed.keys)?;
        if unrouted > 0 {
            tracing::debug!(%msg, unrouted, "recipients connected nowhere else; storage holds their copy");
        }
        for (node, link, keys) in destinations {
            let out = MasterToNode::Relay(Relayed {
                sealed: relayed.sealed.clone(),
                keys,
            });
            let frame = match frame::encode(&out) {
                Ok(frame) => Bytes::from(frame),
                Err(err) => {
                    tracing::warn!(%msg, to = %node, error = %err, "relay does not fit a frame");
                    continue;
                }
            };
            tracing::trace!(%msg, to = %node, "relaying");
            link.relay(frame, &node);
        }
        Ok(())
    }

    /// Forwards a membership change: one frame per destination node listing only its users.
    /// Users connected nowhere else are dropped (their clients re-verify the chain when they
    /// next use the group).
    async fn announce(&self, mut users: Vec<UserName>, change: SignedChange) -> Result<(), Stale> {
        if let Err(why) = check_announce(&users, &change) {
            reply(&self.link, ErrorCode::TooLarge, why).await;
            return Ok(());
        }
        users.sort_unstable();
        users.dedup();
        let (group, epoch) = (change.change.group, change.change.epoch);
        let (destinations, unrouted) =
            self.master
                .registry
                .route(&self.name, self.conn_id, &users)?;
        if unrouted > 0 {
            tracing::debug!(%group, epoch, unrouted, "announcement for users connected nowhere else; dropped");
        }
        for (node, link, users) in destinations {
            let out = MasterToNode::Announce {
                users,
                change: change.clone(),
            };
            let frame = match frame::encode(&out) {
                Ok(frame) => Bytes::from(frame),
                Err(err) => {
                    tracing::warn!(%group, to = %node, error = %err, "announcement does not fit a frame");
                    continue;
                }
            };
            tracing::trace!(%group, epoch, to = %node, "announcing");
            link.relay(frame, &node);
        }
        Ok(())
    }
}

impl NodeSession {
    /// Forwards news of a group log entry: one frame per destination node listing only its
    /// users. Users connected nowhere are dropped (their devices read the log at login).
    async fn log_appended(
        &self,
        mut users: Vec<UserName>,
        group: GroupId,
        seq: u64,
        entry: Vec<u8>,
    ) -> Result<(), Stale> {
        if users.len() > MAX_GROUP_MEMBERS || entry.len() > MAX_LOG_FRAME {
            let why = format!(
                "log news for {} users with a {}-byte frame; at most {MAX_GROUP_MEMBERS} and {MAX_LOG_FRAME}",
                users.len(),
                entry.len()
            );
            reply(&self.link, ErrorCode::TooLarge, why).await;
            return Ok(());
        }
        users.sort_unstable();
        users.dedup();
        let (destinations, _unrouted) =
            self.master
                .registry
                .route(&self.name, self.conn_id, &users)?;
        for (node, link, users) in destinations {
            let out = MasterToNode::LogAppended {
                users,
                group,
                seq,
                frame: entry.clone(),
            };
            match frame::encode(&out) {
                Ok(bytes) => link.relay(Bytes::from(bytes), &node),
                Err(err) => {
                    tracing::warn!(%group, to = %node, error = %err, "log news does not fit a frame");
                }
            }
        }
        Ok(())
    }
}

/// Largest log-entry frame forwarded: one MLS message and its framing.
const MAX_LOG_FRAME: usize = quip_proto::limits::MAX_MLS_MESSAGE + 4096;

/// Size checks on an announcement: at most a full group of users, and a change whose
/// signature and member list are within their limits (the master cannot verify the
/// signature: clients do).
pub(crate) fn check_announce(users: &[UserName], change: &SignedChange) -> Result<(), String> {
    if users.len() > MAX_GROUP_MEMBERS {
        return Err(format!(
            "announcement for {} users; at most {MAX_GROUP_MEMBERS}",
            users.len()
        ));
    }
    if change.signature.len() > MAX_SIGNATURE {
        return Err("change signature over its limit".into());
    }
    if let Action::Create { members, .. } = &change.change.action
        && members.len() > MAX_GROUP_MEMBERS
    {
        return Err(format!(
            "group created with more than {MAX_GROUP_MEMBERS} members"
        ));
    }
    Ok(())
}

/// Structural checks on a relay the master can make without keys: every key is for a listed
/// recipient, at most once, and every field is within its limit.
pub(crate) fn check_relayed(relayed: &Relayed) -> Result<(), String> {
    let header = &relayed.sealed.header;
    if relayed.keys.len() > MAX_RECIPIENTS {
        return Err(format!("more than {MAX_RECIPIENTS} keys"));
    }
    if relayed.sealed.ciphertext.len() > MAX_SEALED
        || relayed.sealed.signature.len() > MAX_SIGNATURE
    {
        return Err("ciphertext or signature over its limit".into());
    }
    let listed: HashSet<_> = header.recipients.iter().collect();
    let mut seen = HashSet::new();
    for key in &relayed.keys {
        if !listed.contains(&key.recipient) {
            return Err(format!("key for {} who is not a recipient", key.recipient));
        }
        if !seen.insert(&key.recipient) {
            return Err(format!("two keys for {}", key.recipient));
        }
        if key.wrapped.len() > MAX_WRAPPED_KEY {
            return Err(format!("wrapped key for {} over its limit", key.recipient));
        }
    }
    Ok(())
}

/// The next frame, or how the session ends (a malformed frame is answered first).
async fn next_frame(recv: &mut FramedRecv, link: &NodeLink) -> Result<NodeToMaster, End> {
    match recv.recv::<NodeToMaster>().await {
        Ok(Some(msg)) => Ok(msg),
        Ok(None) => Err((close::DONE, "control stream finished".into())),
        Err(FrameError::Decode(err)) => {
            tracing::info!(error = %err, "malformed frame; closing");
            reply(link, ErrorCode::Malformed, err.to_string()).await;
            Err((close::PROTOCOL, format!("malformed frame: {err}")))
        }
        Err(err) => Err((close::DONE, format!("connection lost: {err}"))),
    }
}

fn heartbeat_ms(master: &Master) -> u32 {
    u32::try_from(master.config.heartbeat.as_millis()).unwrap_or(u32::MAX)
}

async fn reply(link: &NodeLink, code: ErrorCode, message: String) {
    send_frame(link, &MasterToNode::Error { code, message }).await;
}

/// Queues a frame for this node, waiting if its queue is full (its own answers).
async fn send_frame(link: &NodeLink, msg: &MasterToNode) {
    match frame::encode(msg) {
        Ok(bytes) => {
            let _ = link.outbox.send(Bytes::from(bytes)).await;
        }
        Err(err) => tracing::error!(error = %err, "answer does not fit a frame"),
    }
}

/// Owns the control stream's sending half: writes queued frames in order, then finishes the
/// stream once every sender is gone and waits briefly for the node to receive the rest.
async fn write_loop(mut send: FramedSend, mut rx: mpsc::Receiver<Bytes>, missed: Arc<AtomicU64>) {
    while let Some(frame) = rx.recv().await {
        if send.stream().write_chunk(frame).await.is_err() {
            return;
        }
        // Frames were dropped while the queue was full: once it is half empty again (the node
        // caught up), tell the node to re-read its users' queues from storage.
        if rx.len() <= rx.max_capacity() / 2 {
            let frames = missed.swap(0, Ordering::AcqRel);
            if frames > 0 {
                tracing::info!(
                    frames,
                    "node caught up; told it to re-read the relays it missed from storage"
                );
                let Ok(resync) = frame::encode(&MasterToNode::Missed { frames }) else {
                    continue;
                };
                if send
                    .stream()
                    .write_chunk(Bytes::from(resync))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stream().stopped()).await;
    }
}
