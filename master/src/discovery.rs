//! Discovery sessions: a client (or `quip-master status`) asks which node to use, or for
//! every node's status, as often as its rate limits allow.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use quip_proto::{ClientToMaster, ErrorCode, MasterToClient};
use quip_quic::{Budget, FrameError};
use tokio::sync::watch;

use crate::Master;
use crate::session::{self, close};

/// Serves one discovery connection. Discovery uses the control stream only: a client that
/// opens another stream is closed (so it cannot make the master buffer data on it).
pub(crate) async fn serve(
    master: Arc<Master>,
    conn: quinn::Connection,
    mut stop: watch::Receiver<bool>,
) {
    let Some((mut send, mut recv)) = session::handshake(&conn, session::DISCOVERY_FRAME).await
    else {
        return;
    };
    let ip = conn.remote_address().ip();
    let bucket = Budget::new(master.config.discovery_per_conn);
    loop {
        // Every branch but the first ends the session, so dropping a half-read frame is moot.
        let frame = tokio::select! {
            frame = tokio::time::timeout(master.config.discovery_idle, recv.recv::<ClientToMaster>()) => frame,
            extra = conn.accept_bi() => {
                if extra.is_ok() {
                    tracing::info!("discovery client opened a second stream; closing");
                    conn.close(close::PROTOCOL.into(), b"discovery uses one stream");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        let request = match frame {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => {
                session::flush_then_close(&conn, send, close::DONE, "bye").await;
                return;
            }
            Ok(Err(FrameError::Decode(err))) => {
                tracing::info!(error = %err, "malformed discovery request; closing");
                let _ = send
                    .send(&MasterToClient::Error {
                        code: ErrorCode::Malformed,
                        message: err.to_string(),
                        retry_after_ms: None,
                    })
                    .await;
                session::flush_then_close(&conn, send, close::PROTOCOL, "malformed frame").await;
                return;
            }
            Ok(Err(_)) => return,
            Err(_idle) => {
                conn.close(close::IDLE.into(), b"idle discovery connection");
                return;
            }
        };
        let answer = answer(&master, &bucket, ip, request);
        if send.send(&answer).await.is_err() {
            return;
        }
    }
}

/// The answer to one request, after both rate limits: the connection's bucket first (so a
/// flooding connection does not use up its address's allowance), then the address's.
fn answer(master: &Master, bucket: &Budget, ip: IpAddr, request: ClientToMaster) -> MasterToClient {
    let now = Instant::now();
    if let Err(wait) = bucket.spend().and_then(|()| master.limiter.spend(&ip)) {
        tracing::debug!("discovery rate limit; busy");
        return MasterToClient::Error {
            code: ErrorCode::RateLimited,
            message: "too many discovery requests; slow down and retry".into(),
            retry_after_ms: Some(u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX)),
        };
    }
    match request {
        ClientToMaster::Discover => match master.registry.discover(now) {
            Some((node, addr)) => {
                tracing::debug!(%node, "discovery answered");
                MasterToClient::Node { node, addr }
            }
            None => {
                tracing::info!("discovery: no healthy node");
                MasterToClient::NoService
            }
        },
        ClientToMaster::Status => MasterToClient::Status(master.registry.status(now)),
    }
}
