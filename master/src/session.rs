//! What every connection to the master shares: the control-stream handshake, QUIC close
//! codes, the negotiated ALPN and the peer's certificate, and the answer to clients that
//! speak the node protocol to the master.

use std::time::Duration;

use quip_proto::{ErrorCode, NodeToClient};
use quip_quic::{FramedRecv, FramedSend};
use rustls::pki_types::CertificateDer;

/// How long a new connection may take to open its control stream and say hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refusal may take to reach the peer before the connection closes anyway.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The reason given to a client that speaks the client ↔ node protocol to the master.
pub const WRONG_SERVICE_REASON: &str = "this is a Quip master; clients connect with discovery (quip connect --master ADDR), not to the master as a node";

/// QUIC application close codes the master uses; the reason text says the same in words.
pub mod close {
    /// Clean end (the peer finished its control stream).
    pub const DONE: u32 = 0;
    /// Protocol violation (malformed frame, wrong first stream, extra stream).
    pub const PROTOCOL: u32 = 1;
    /// Version mismatch.
    pub const VERSION: u32 = 2;
    /// The master is shutting down; nodes reconnect and register again when it is back.
    pub const SHUTDOWN: u32 = 3;
    /// The peer spoke a protocol the master does not serve (a client on ALPN `quip/1`).
    pub const WRONG_SERVICE: u32 = 4;
    /// A node connection without a client certificate, or registering under a name its
    /// certificate does not carry.
    pub const UNAUTHENTICATED: u32 = 5;
    /// The node missed heartbeats for `dead_after`; reconnect and register again.
    pub const DEAD: u32 = 6;
    /// A newer connection registered the same node name.
    pub const REPLACED: u32 = 7;
    /// The master is full.
    pub const BUSY: u32 = 8;
    /// A discovery connection sat idle too long.
    pub const IDLE: u32 = 9;
}

/// The ALPN the peer and the master agreed on.
pub(crate) fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The peer's certificate chain (leaf first), if it presented one. rustls has verified it
/// chains to the cluster CA.
pub(crate) fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
        .filter(|chain| !chain.is_empty())
}

/// Largest frame a discovery client may send (its requests are a few bytes).
pub(crate) const DISCOVERY_FRAME: usize = 1024;
/// How long one frame may take to arrive once it has started, on any master connection.
pub(crate) const FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// Accepts the control stream and exchanges hellos (see [`quip_quic::accept_control`]);
/// frames over `max_frame` are refused, and a frame that stalls closes the connection.
pub(crate) async fn handshake(
    conn: &quinn::Connection,
    max_frame: usize,
) -> Option<(FramedSend, FramedRecv)> {
    quip_quic::accept_control(conn, crate::AGENT, max_frame)
        .await
        .map(|(send, recv, _)| (send, recv.with_frame_deadline(FRAME_DEADLINE)))
}

pub(crate) use quip_quic::flush_then_close;

/// A client speaking the client ↔ node protocol (`quip/1`) reached the master. It gets its
/// hello answered (so it can read what follows), then one
/// `NodeToClient::Error { code: WrongService }` carrying [`WRONG_SERVICE_REASON`], then the
/// connection closes with [`close::WRONG_SERVICE`] and the same reason.
pub(crate) async fn wrong_service(conn: quinn::Connection) {
    let Some((mut send, _recv)) = handshake(&conn, DISCOVERY_FRAME).await else {
        return;
    };
    tracing::info!("a client spoke the node protocol to the master; closing");
    let _ = send
        .send(&NodeToClient::Error {
            retry_after_ms: None,
            req: None,
            code: ErrorCode::WrongService,
            message: WRONG_SERVICE_REASON.into(),
        })
        .await;
    flush_then_close(&conn, send, close::WRONG_SERVICE, WRONG_SERVICE_REASON).await;
}
