//! A connection to a node: QUIC with a verified certificate, the control-stream handshake,
//! request/answer matching by request id, and a stream of pushes (deliveries, group changes,
//! reconnect requests). No end-to-end crypto here: see [`crate::client`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quip_proto::ids::{MsgId, NodeName, UserName};
use quip_proto::limits::MAX_FRAME;
use quip_proto::{
    Chunk, ClientToNode, Delivery, Envelope, ErrorCode, NodeToClient, ReqId, SignedChange,
    StreamOpen,
};
use quip_proto::{ClientToMaster, MasterToClient};
use quip_quic::{FrameError, FramedRecv, FramedSend, Limits, Trust};
use tokio::sync::{mpsc, oneshot};

use crate::e2e::Deployment;

/// Software name sent in hellos.
pub const AGENT: &str = concat!("quip/", env!("CARGO_PKG_VERSION"));

/// Pushes waiting to be read before the connection stops reading the stream.
const EVENTS: usize = 8192;

/// Talking to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered at the address, or the handshake failed.
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server's certificate chain is not the pinned cluster CA.
    #[error(transparent)]
    Pin(#[from] quip_quic::PinError),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] quip_quic::TlsError),
    /// The node speaks another protocol version.
    #[error("{0}")]
    Version(String),
    /// The node refused the request.
    #[error("{message}{}", retry_hint(*retry_after_ms))]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
        /// When waiting helps: milliseconds until a retry can succeed.
        retry_after_ms: Option<u32>,
    },
    /// The connection broke.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The node answered with something unexpected.
    #[error("unexpected answer from the node: {0}")]
    Unexpected(&'static str),
    /// The master knows no live node.
    #[error("Sorry, No services available")]
    NoService,
}

impl From<FrameError> for ConnectError {
    fn from(err: FrameError) -> Self {
        Self::Lost(err.to_string())
    }
}

/// An `Error` answer as [`ConnectError::Refused`]; any other answer as it is.
fn refused(answer: NodeToClient) -> Result<NodeToClient, ConnectError> {
    match answer {
        NodeToClient::Error {
            code,
            message,
            retry_after_ms,
            ..
        } => Err(ConnectError::Refused {
            code,
            message,
            retry_after_ms,
        }),
        answer => Ok(answer),
    }
}

/// The reason the peer gave for closing `conn`, if it closed it.
fn closed_why(conn: &quinn::Connection) -> Option<String> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close) => {
            Some(String::from_utf8_lossy(&close.reason).into_owned())
        }
        other => Some(other.to_string()),
    }
}

/// " (try again in 3 s)" after a refusal that says when a retry can succeed.
fn retry_hint(retry_after_ms: Option<u32>) -> String {
    match retry_after_ms {
        Some(ms) => format!(" (try again in {} s)", ms.div_ceil(1000).max(1)),
        None => String::new(),
    }
}

/// A push from the node.
#[derive(Debug)]
pub enum Event {
    /// A message for us.
    Deliver(Delivery),
    /// A group we are in changed.
    GroupChanged(SignedChange),
    /// Someone's presence changed.
    Presence(quip_proto::client::Presence),
    /// The node is draining: reconnect after `after_ms`.
    Reconnect {
        /// Delay before reconnecting.
        after_ms: u32,
        /// Why.
        reason: String,
    },
    /// The connection ended.
    Closed(String),
    /// A message we sent expired unread in `recipient`'s queue.
    Expired {
        /// The message.
        id: MsgId,
        /// Who never read it.
        recipient: UserName,
    },
    /// For the MLS core ([`crate::core::Core::handle`]): answers to its requests (numbered
    /// from [`CORE_REQS`]), group log entries and Welcomes, as the node sent them.
    Mls(NodeToClient),
}

type Pending = Arc<Mutex<HashMap<ReqId, oneshot::Sender<NodeToClient>>>>;
type Downloads = Arc<Mutex<HashMap<MsgId, oneshot::Sender<FramedRecv>>>>;

/// Request ids from here up are a sans-IO core's own ([`Event::Answer`]); the connection's
/// [`Connection::request`] numbers below.
pub const CORE_REQS: ReqId = 0x8000_0000;

/// How long to wait for the master to answer a discovery.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// How long to wait for an image stream the node announced.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(30);

/// An open, version-checked connection to a node.
#[derive(Debug)]
pub struct Connection {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    send: tokio::sync::Mutex<FramedSend>,
    pending: Pending,
    downloads: Downloads,
    next_req: AtomicU32,
    events: mpsc::Receiver<Event>,
    deployment: Deployment,
}

impl Connection {
    /// Connects to the node at `addr`, verifying its certificate per `trust` for
    /// `server_name`, and exchanges hellos.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        trust: &Trust,
    ) -> Result<Self, ConnectError> {
        let limits = Limits::client();
        let config = quip_quic::client_config(trust, quip_proto::ALPN_CLIENT, None, &limits)?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("valid")
        } else {
            "0.0.0.0:0".parse().expect("valid")
        };
        let endpoint =
            quip_quic::client_endpoint(bind, &limits).map_err(|e| ConnectError::Unreachable {
                addr,
                reason: e.to_string(),
            })?;
        let unreachable = |reason: String| ConnectError::Unreachable { addr, reason };
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = match connecting.await {
            Ok(conn) => conn,
            Err(err) => {
                if let Trust::Pinned { known, .. } = trust
                    && let Some(pin) = known.take_error()
                {
                    return Err(pin.into());
                }
                return Err(unreachable(err.to_string()));
            }
        };
        let deployment = deployment_of(trust, &conn)?;
        let (send, mut recv, hello) = match quip_quic::open_control(&conn, AGENT, MAX_FRAME).await {
            Ok(opened) => opened,
            // A node that refuses us at once (too many connections from this address) says
            // why in its close reason.
            Err(err) => {
                return Err(ConnectError::Lost(
                    closed_why(&conn).unwrap_or(err.to_string()),
                ));
            }
        };
        hello.check_version().map_err(ConnectError::Version)?;
        let pending = Pending::default();
        let (tx, events) = mpsc::channel(EVENTS);
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let end = loop {
                match recv.recv::<NodeToClient>().await {
                    Ok(Some(msg)) => route(msg, &reader_pending, &tx).await,
                    Ok(None) => break "the node closed the connection".to_owned(),
                    Err(err) => break err.to_string(),
                }
            };
            // Fail every request still waiting.
            reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let _ = tx.send(Event::Closed(end)).await;
        });
        let downloads = Downloads::default();
        tokio::spawn(accept_downloads(conn.clone(), downloads.clone()));
        Ok(Self {
            conn,
            endpoint,
            send: tokio::sync::Mutex::new(send),
            pending,
            downloads,
            next_req: AtomicU32::new(1),
            events,
            deployment,
        })
    }

    /// The deployment this node belongs to (its cluster CA), which the password's secrets
    /// are bound to.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// Discovers the least busy node through the master and connects to it; the node's
    /// certificate must carry the name the master gave.
    pub async fn via_master(master: SocketAddr, trust: &Trust) -> Result<Self, ConnectError> {
        let (node, addr) = discover(master, trust).await?;
        Self::connect(addr, node.as_str(), trust).await
    }

    /// Sends a request built around a fresh request id and waits for its answer. An `Error`
    /// answer becomes [`ConnectError::Refused`].
    pub async fn request(
        &self,
        build: impl FnOnce(ReqId) -> ClientToNode,
    ) -> Result<NodeToClient, ConnectError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req, tx);
        self.send(&build(req)).await?;
        match rx.await {
            Ok(answer) => refused(answer),
            Err(_) => Err(ConnectError::Lost(self.close_reason())),
        }
    }

    /// Uploads an image on a stream of its own: the envelope announcing it, then every chunk
    /// `next_chunk` yields, then the node's answer (`Stored`, or a refusal).
    pub async fn upload<F, Fut>(
        &self,
        envelope: Envelope,
        mut next_chunk: F,
    ) -> Result<NodeToClient, ConnectError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<Vec<u8>>, ConnectError>>,
    {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let open = StreamOpen::ImageUpload { req, envelope };
        let (mut send, mut recv) = quip_quic::open_stream(&self.conn, &open, MAX_FRAME).await?;
        let sent = async {
            while let Some(data) = next_chunk().await? {
                send.send(&Chunk { data }).await?;
            }
            send.finish()?;
            Ok::<_, ConnectError>(())
        }
        .await;
        // The node may refuse mid-way (too large): its answer says why.
        match recv.expect::<NodeToClient>().await {
            Ok(answer) => refused(answer).and_then(|answer| sent.map(|()| answer)),
            Err(err) => Err(sent.err().unwrap_or(err.into())),
        }
    }

    /// Asks the node for the image of message `msg` and returns the stream it arrives on
    /// (positioned at the first chunk).
    pub async fn download(&self, msg: MsgId) -> Result<FramedRecv, ConnectError> {
        let (tx, rx) = oneshot::channel();
        self.downloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(msg, tx);
        let answer = self
            .request(|req| ClientToNode::FetchBlob { req, msg })
            .await;
        let forget = || {
            self.downloads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&msg);
        };
        if let Err(err) = answer {
            forget();
            return Err(err);
        }
        match tokio::time::timeout(DOWNLOAD_WAIT, rx).await {
            Ok(Ok(stream)) => Ok(stream),
            _ => {
                forget();
                Err(ConnectError::Lost("the image stream did not arrive".into()))
            }
        }
    }

    /// Sends a message that has no answer (acknowledgements).
    pub async fn send(&self, msg: &ClientToNode) -> Result<(), ConnectError> {
        self.send.lock().await.send(msg).await?;
        Ok(())
    }

    /// The next push; `None` once the connection is gone and every push was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The underlying QUIC connection (for image streams).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    fn close_reason(&self) -> String {
        closed_why(&self.conn).unwrap_or_else(|| "the connection closed".to_owned())
    }

    /// Closes the connection and waits until the node has been told.
    pub async fn close(self) {
        // Finish the control stream and let the node read it to the end first: a close
        // frame would otherwise discard what is still in flight (the last acknowledgements).
        let mut send = self.send.into_inner();
        if send.finish().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stream().stopped()).await;
        }
        self.conn.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

/// The deployment of a verified connection: the CA the client trusts, or, when pinning, the
/// CA certificate at the end of the chain (the verifier checked that it is the pinned one and
/// that the server's certificate chains to it).
fn deployment_of(trust: &Trust, conn: &quinn::Connection) -> Result<Deployment, ConnectError> {
    match trust {
        Trust::Ca(ca) => Ok(Deployment::of_ca(ca.as_ref())),
        Trust::Pinned { .. } => conn
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.last().map(|ca| Deployment::of_ca(ca.as_ref())))
            .ok_or(ConnectError::Unexpected(
                "the server sent no CA certificate",
            )),
    }
}

/// Accepts the streams the node opens (image downloads) and hands each to its waiter.
async fn accept_downloads(conn: quinn::Connection, downloads: Downloads) {
    while let Ok((_send, recv)) = conn.accept_bi().await {
        let downloads = downloads.clone();
        tokio::spawn(async move {
            let mut recv = FramedRecv::new(recv, MAX_FRAME);
            if let Ok(StreamOpen::ImageDownload { msg, .. }) = recv.expect::<StreamOpen>().await {
                let waiter = downloads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&msg);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(recv);
                    return;
                }
            }
            let _ = recv.stream().stop(0u32.into());
        });
    }
}

fn any_addr(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv6() {
        "[::]:0".parse().expect("valid")
    } else {
        "0.0.0.0:0".parse().expect("valid")
    }
}

/// Asks the master at `master` which node to use: the least busy live one.
pub async fn discover(
    master: SocketAddr,
    trust: &Trust,
) -> Result<(NodeName, SocketAddr), ConnectError> {
    let limits = Limits::client();
    let config = quip_quic::client_config(trust, quip_proto::ALPN_DISCOVERY, None, &limits)?;
    let unreachable = |reason: String| ConnectError::Unreachable {
        addr: master,
        reason: format!("the master does not answer: {reason}"),
    };
    let endpoint = quip_quic::client_endpoint(any_addr(master), &limits)
        .map_err(|e| unreachable(e.to_string()))?;
    let connecting = endpoint
        .connect_with(config, master, quip_quic::names::MASTER)
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = match tokio::time::timeout(DISCOVERY_WAIT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            if let Trust::Pinned { known, .. } = trust
                && let Some(pin) = known.take_error()
            {
                return Err(pin.into());
            }
            return Err(unreachable(err.to_string()));
        }
        Err(_) => return Err(unreachable("timed out".into())),
    };
    let (mut send, mut recv, hello) = quip_quic::open_control(&conn, AGENT, MAX_FRAME).await?;
    hello.check_version().map_err(ConnectError::Version)?;
    send.send(&ClientToMaster::Discover).await?;
    let answer = recv.expect::<MasterToClient>().await?;
    conn.close(0u32.into(), b"thanks");
    match answer {
        MasterToClient::Node { node, addr } => {
            let addr = addr
                .parse()
                .map_err(|_| ConnectError::Unexpected("a node address that does not parse"))?;
            Ok((node, addr))
        }
        MasterToClient::NoService => Err(ConnectError::NoService),
        MasterToClient::Error {
            code,
            message,
            retry_after_ms,
        } => Err(ConnectError::Refused {
            code,
            message,
            retry_after_ms,
        }),
        MasterToClient::Status(_) => Err(ConnectError::Unexpected("a status table")),
    }
}

async fn route(msg: NodeToClient, pending: &Pending, events: &mpsc::Sender<Event>) {
    use NodeToClient::*;
    let req = msg.req();
    if let Some(req) = req {
        let waiter = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&req);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(msg);
            }
            None if req >= CORE_REQS => {
                let _ = events.send(Event::Mls(msg)).await;
            }
            None => {}
        }
        return;
    }
    let event = match msg {
        Deliver(delivery) => Event::Deliver(delivery),
        Presence(presence) => Event::Presence(presence),
        GroupChanged { change } => Event::GroupChanged(change),
        Reconnect { after_ms, reason } => Event::Reconnect { after_ms, reason },
        Expired { id, recipient, .. } => Event::Expired { id, recipient },
        msg @ (Log { .. } | Welcome { .. }) => Event::Mls(msg),
        Error { message, .. } => Event::Closed(message),
        _ => return,
    };
    let _ = events.send(event).await;
}
