//! The accept loop: the connection cap, routing each connection by its negotiated ALPN, the
//! reaper that drops silent nodes, and the graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::Master;
use crate::session::{self, close};

/// How long the shutdown waits for sessions and the endpoint before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Decrements a connection count when a session ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a slot if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn accept_loop(
    master: Arc<Master>,
    endpoint: quinn::Endpoint,
    mut stop: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    let reaper = tokio::spawn(reap_loop(master.clone(), stop.clone()));
    let next_id = AtomicU64::new(1);
    let mut sessions = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(incoming) = incoming else { break };
        let Some(slot) = Slot::take(&active, master.config.max_connections) else {
            tracing::warn!("connection cap reached; refusing");
            incoming.refuse();
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (master, stop) = (master.clone(), stop.clone());
        sessions.spawn(async move {
            let _slot = slot;
            connection(master, incoming, id, stop).await;
        });
        // Reap finished sessions so the set does not grow with history.
        while sessions.try_join_next().is_some() {}
    }
    tracing::info!(sessions = sessions.len(), "master shutting down");
    reaper.abort();
    endpoint.close(close::SHUTDOWN.into(), b"master shutting down");
    let ended = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        sessions.abort_all();
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
    tracing::info!("master stopped");
}

/// One connection: finishes the TLS handshake and hands it to the session for its ALPN.
async fn connection(
    master: Arc<Master>,
    incoming: quinn::Incoming,
    id: u64,
    stop: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!(
        "conn",
        id,
        %remote,
        alpn = tracing::field::Empty,
        node = tracing::field::Empty,
    );
    async move {
        let conn = match incoming.await {
            Ok(conn) => conn,
            Err(err) => {
                // A node certificate from another CA ends here: rustls refused it.
                tracing::info!(error = %err, "handshake failed");
                return;
            }
        };
        let alpn = session::alpn(&conn).unwrap_or_default();
        let span = tracing::Span::current();
        span.record("alpn", String::from_utf8_lossy(&alpn).as_ref());
        if alpn == quip_proto::ALPN_RELAY {
            crate::relay::serve(master, conn, id, stop).await;
            return;
        }
        if alpn != quip_proto::ALPN_DISCOVERY && alpn != quip_proto::ALPN_CLIENT {
            conn.close(close::PROTOCOL.into(), b"no supported ALPN");
            return;
        }
        let max = master.config.max_client_connections();
        let Some(_slot) = Slot::take(&master.clients, max) else {
            tracing::warn!("client connection cap reached; refusing");
            conn.close(close::BUSY.into(), b"the master is busy; try again shortly");
            return;
        };
        if alpn == quip_proto::ALPN_DISCOVERY {
            crate::discovery::serve(master, conn, stop).await;
        } else {
            session::wrong_service(conn).await;
        }
    }
    .instrument(span)
    .await
}

/// Drops nodes that stopped heartbeating and closes their connections: they reconnect and
/// register again if they are still alive. Also resends presence snapshots that did not fit
/// a node's queue.
async fn reap_loop(master: Arc<Master>, mut stop: watch::Receiver<bool>) {
    let period =
        (master.config.dead_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for (node, link) in master.registry.reap(Instant::now()) {
            tracing::warn!(%node, "no heartbeat for {:?}; dropped from discovery", master.config.dead_after);
            link.conn.close(
                close::DEAD.into(),
                b"missed heartbeats; dropped from discovery, register again",
            );
        }
        // Nodes that missed presence changes to a full queue get a snapshot once it drains.
        master.registry.resync_presence();
    }
}
