//! One task per client connection: the control-stream handshake, the request loop, and a
//! writer task that owns the stream's sending half and never writes a delivery twice.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quip_proto::ids::{MsgId, SessionToken, UserName};
use quip_proto::limits::MAX_FRAME;
use quip_proto::{ClientToNode, ErrorCode, NodeToClient, ReqId, frame};
use quip_quic::{Budget, FrameError, FramedSend};
use quip_storage::Storage;
use tokio::sync::{Notify, mpsc, watch};

use tracing::Instrument;

use crate::Node;
use crate::registry::{Outbox, Outgoing, Queued, SessionRef};

/// Frames waiting to be written to one client before its producers wait (answers) or mark
/// it lagged (pushes).
const OUTBOX: usize = 4096;
/// QUIC application close codes.
pub(crate) mod close {
    pub(crate) use quip_quic::close::PROTOCOL;
    /// The node is shutting down; reconnect elsewhere.
    pub(crate) const DRAINING: u32 = 3;
    /// The node was killed (tests and drills).
    pub(crate) const KILLED: u32 = 4;
}

/// A request failed: the code and text go back to the client.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// When waiting helps: how long until a retry can succeed.
    pub(crate) retry_after: Option<Duration>,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A refusal that tells the client when to try again (rate limits, throttling).
    pub(crate) fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The error frame answering `req` (the retry time in milliseconds, saturating).
    pub(crate) fn into_error(self, req: Option<ReqId>) -> NodeToClient {
        NodeToClient::Error {
            req,
            code: self.code,
            message: self.message,
            retry_after_ms: self
                .retry_after
                .map(|d| u32::try_from(d.as_millis().max(1)).unwrap_or(u32::MAX)),
        }
    }

    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "request failed inside the node");
        Self::new(
            ErrorCode::Internal,
            "internal error; nothing was lost, try again",
        )
    }
}

/// The logged-in part of a session.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub(crate) user: UserName,
    pub(crate) token: SessionToken,
}

/// State of one connection.
pub(crate) struct Session<S: Storage> {
    pub(crate) node: Arc<Node<S>>,
    pub(crate) conn: quinn::Connection,
    pub(crate) conn_id: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) login: Option<Login>,
    pub(crate) outbox: Outbox,
    pub(crate) lagged: Arc<AtomicBool>,
    pub(crate) wake: Arc<Notify>,
    /// The device this session speaks for (`EnrollDevice`/`UseDevice`), set once.
    pub(crate) device: Arc<std::sync::OnceLock<quip_proto::ids::DeviceId>>,
    /// The device's log pump, once it has a device.
    pub(crate) pump: Arc<std::sync::OnceLock<crate::log::Pump>>,
    /// The drain re-reading this session's queue, if one runs (never two at once: each holds
    /// a page of messages).
    pub(crate) drain: Option<tokio::task::JoinHandle<()>>,
}

impl<S: Storage> Session<S> {
    /// Queues an answer (waits if this client's outbox is full).
    pub(crate) async fn send(&self, msg: &NodeToClient) {
        match frame::encode(msg).or_else(|err| crate::handler::unsendable(msg, err)) {
            Ok(bytes) => {
                let _ = self.outbox.send(Outgoing::Frame(Bytes::from(bytes))).await;
            }
            Err(err) => tracing::error!(error = %err, "answer does not fit a frame"),
        }
    }

    pub(crate) async fn refuse(&self, req: Option<ReqId>, refusal: Refusal) {
        self.send(&refusal.into_error(req)).await;
    }

    pub(crate) fn user(&self) -> Result<&UserName, Refusal> {
        self.login
            .as_ref()
            .map(|l| &l.user)
            .ok_or_else(|| Refusal::new(ErrorCode::Unauthenticated, "log in first"))
    }

    pub(crate) fn session_ref(&self) -> SessionRef {
        SessionRef {
            conn_id: self.conn_id,
            outbox: self.outbox.clone(),
            lagged: self.lagged.clone(),
            wake: self.wake.clone(),
            device: self.device.clone(),
            pump: self.pump.clone(),
        }
    }

    /// Re-reads the user's queue into the outbox (at login, and after lagging). If a drain
    /// is already running, the session is marked lagged and drains again when it ends.
    pub(crate) fn spawn_drain(&mut self) {
        if self.drain.as_ref().is_some_and(|d| !d.is_finished()) {
            self.lagged.store(true, Ordering::Release);
            return;
        }
        if let Some(login) = &self.login {
            self.drain = Some(tokio::spawn(crate::handler::message::drain(
                self.node.clone(),
                login.user.clone(),
                self.outbox.clone(),
            )));
        }
    }

    async fn handle(&mut self, msg: ClientToNode) {
        let req = msg.req();
        if let Err(refusal) = crate::handler::dispatch(self, msg).await {
            self.refuse(req, refusal).await;
        }
    }
}

/// Largest frame a client may send before it has logged in (a signup with the largest keys
/// and backup fits several times over).
pub(crate) const PRELOGIN_FRAME: usize = 32 * 1024;
/// Bytes a client that has not logged in can make the node buffer on its connection.
pub(crate) const PRELOGIN_WINDOW: u32 = 64 * 1024;

/// Serves one connection until the client leaves, breaks the protocol, or the node drains.
/// `seat` is the connection's place in its address's allowance; `None` means the address is
/// over it, and the connection is closed with the reason once the handshake is done.
pub(crate) async fn serve<S: Storage>(
    node: Arc<Node<S>>,
    incoming: quinn::Incoming,
    conn_id: u64,
    seat: Option<quip_quic::Seat>,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!("session", conn = conn_id, %remote);
    async move {
        let conn = match incoming.await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(error = %err, "handshake failed");
                return;
            }
        };
        let Some(_seat) = seat else {
            tracing::info!("too many connections from this address; refusing");
            let reason = format!(
                "too many connections from your address (at most {}); close one, or try again in 10 s",
                node.config.max_connections_per_addr
            );
            conn.close(quip_quic::close::LIMIT.into(), reason.as_bytes());
            return;
        };
        let Some((send, recv, _)) =
            quip_quic::accept_control(&conn, crate::AGENT, PRELOGIN_FRAME).await
        else {
            return;
        };
        let mut recv = recv.with_frame_deadline(node.config.frame_deadline);
        let (outbox, rx) = Outbox::new(OUTBOX, node.config.outbox_bytes);
        let writer = tokio::spawn(write_loop(send, rx));
        let mut session = Session {
            node: node.clone(),
            conn: conn.clone(),
            conn_id,
            remote,
            login: None,
            outbox,
            lagged: Arc::default(),
            wake: Arc::default(),
            device: Arc::default(),
            pump: Arc::default(),
            drain: None,
        };
        let wake = session.wake.clone();
        let mut budget = Budget::new(node.config.requests_before_login);
        // While set, the client spent its budget: nothing is read until then.
        let mut paused: Option<Instant> = None;
        // While set, the client must log in by then.
        let mut login_by = Some(Instant::now() + node.config.login_timeout);
        loop {
            tokio::select! {
                frame = recv.recv::<ClientToNode>(), if paused.is_none() => match frame {
                    Ok(Some(msg)) => {
                        tracing::trace!(kind = msg.kind(), "request");
                        if let Err(wait) = budget.spend() {
                            tracing::debug!(?wait, "request budget spent");
                            if let Some(req) = msg.req() {
                                let refusal = Refusal::new(
                                    ErrorCode::RateLimited,
                                    "too many requests on this connection",
                                );
                                session.refuse(Some(req), refusal.retry_after(wait)).await;
                            }
                            paused = Some(Instant::now() + wait);
                            continue;
                        }
                        let was_in = session.login.is_some();
                        session.handle(msg).await;
                        match (was_in, session.login.is_some()) {
                            (false, true) => {
                                login_by = None;
                                budget = Budget::new(node.config.requests_after_login);
                                // Only now may the client open image streams and send
                                // full-size frames.
                                let limits = &node.limits;
                                conn.set_max_concurrent_bi_streams(limits.max_bi_streams.into());
                                conn.set_receive_window(limits.conn_window.into());
                                recv.set_max(MAX_FRAME);
                            }
                            (true, false) => {
                                login_by = Some(Instant::now() + node.config.login_timeout);
                            }
                            _ => {}
                        }
                    }
                    Ok(None) => break,
                    Err(FrameError::Decode(err)) => {
                        tracing::info!(error = %err, "malformed frame; closing");
                        session.refuse(None, Refusal::new(ErrorCode::Malformed, err.to_string())).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        conn.close(close::PROTOCOL.into(), b"malformed frame");
                        break;
                    }
                    Err(FrameError::Stalled(limit)) => {
                        tracing::info!(?limit, "client stalled inside a frame; closing");
                        let reason = format!("a frame took longer than {} s", limit.as_secs());
                        conn.close(quip_quic::close::TIMEOUT.into(), reason.as_bytes());
                        break;
                    }
                    Err(_) => break,
                },
                () = sleep_until(paused), if paused.is_some() => paused = None,
                () = sleep_until(login_by), if login_by.is_some() => {
                    tracing::info!("no login in time; closing");
                    let reason = format!(
                        "not logged in within {} s; reconnect when ready",
                        node.config.login_timeout.as_secs()
                    );
                    conn.close(quip_quic::close::TIMEOUT.into(), reason.as_bytes());
                    break;
                }
                stream = conn.accept_bi() => match stream {
                    Ok((mut send, mut recv)) => match &session.login {
                        Some(login) => {
                            tokio::spawn(crate::handler::image::serve_stream(
                                node.clone(),
                                login.user.clone(),
                                send,
                                recv,
                            ));
                        }
                        None => {
                            // Never read before login: not even the stream's first frame.
                            let _ = recv.stop(crate::handler::image::STREAM_REFUSED.into());
                            let _ = send.reset(crate::handler::image::STREAM_REFUSED.into());
                        }
                    },
                    Err(_) => break,
                },
                _ = wake.notified() => {
                    if session.drain.is_none() && session.lagged.swap(false, Ordering::AcqRel) {
                        session.spawn_drain();
                    }
                }
                _ = drain_ended(&mut session.drain), if session.drain.is_some() => {
                    session.drain = None;
                    if session.lagged.swap(false, Ordering::AcqRel) {
                        session.spawn_drain();
                    }
                }
                _ = crate::stopping(&mut shutdown) => {
                    session.send(&NodeToClient::Reconnect {
                        after_ms: jitter_ms(conn_id),
                        reason: "this node is shutting down".into(),
                    }).await;
                    // Let the writer flush; the client closes, or the drain timeout does.
                    let _ = tokio::time::timeout(node.config.drain_timeout, conn.closed()).await;
                    conn.close(close::DRAINING.into(), b"node shutting down");
                    break;
                }
            }
        }
        if let Some(login) = &session.login {
            if node.registry.remove(&login.user, conn_id) {
                node.presence(&login.user, false);
            }
            tracing::info!(user = %login.user, "logged out");
        }
        if let Some(drain) = session.drain.take() {
            drain.abort();
        }
        drop(session);
        let _ = writer.await;
    }
    .instrument(span)
    .await
}

/// Waits for the running drain to end.
async fn drain_ended(drain: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = drain {
        let _ = task.await;
    }
}

/// Sleeps until `at` (forever if `None`; the branch using it is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Spreads reconnects of a draining node's clients over half a second.
fn jitter_ms(conn_id: u64) -> u32 {
    (conn_id.wrapping_mul(0x9e37_79b9) % 500) as u32
}

/// Owns the sending half: writes answers and pushes in order, and skips a delivery it has
/// already written and the client has not acknowledged (a drain and a live push can both
/// carry the same message).
async fn write_loop(mut send: FramedSend, mut rx: mpsc::Receiver<Queued>) {
    let mut unacked: HashSet<MsgId> = HashSet::new();
    // Each item's share of the byte budget is released once it is written (dropped).
    while let Some(queued) = rx.recv().await {
        let written = match queued.item {
            Outgoing::Frame(bytes) => send.stream().write_chunk(bytes).await,
            Outgoing::Deliver { id, prefix, sealed } => {
                if !unacked.insert(id) {
                    continue;
                }
                send.stream().write_all_chunks(&mut [prefix, sealed]).await
            }
            Outgoing::Acked(ids) => {
                ids.iter().for_each(|id| {
                    unacked.remove(id);
                });
                continue;
            }
        };
        if written.is_err() {
            break;
        }
    }
    let _ = send.finish();
}
