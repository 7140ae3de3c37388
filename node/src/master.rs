//! The node's link to the master: register (with everyone connected here, so a restarted
//! master rebuilds its directory without any client reconnecting), heartbeat the load, report
//! logins and logouts, hand over messages for users connected elsewhere, and push the messages
//! the master relays here. The link reconnects with backoff whenever it drops.
//!
//! While the link is down, relays wait in the link's queue and go out after the next
//! registration (the master may not have seen the recipient's node yet, but storage has the
//! message either way); meanwhile every session here re-reads its queue each poll interval.
//! Each (re)registration triggers one more re-read. And as a safety net for a relay lost in
//! between (a master that died holding it), every session re-reads its queue every
//! [`SAFETY_REREAD`] even while the link is up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quip_proto::client::deliver_prefix;
use quip_proto::ids::UserName;
use quip_proto::limits::MAX_FRAME;
use quip_proto::relay::{Load, Relayed};
use quip_proto::{MasterToNode, NodeToMaster};
use quip_quic::{Certified, FramedSend, Limits, Trust};
use quip_storage::Storage;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};

use crate::Node;
use crate::registry::Outgoing;

/// Where the master is and how to prove ourselves to it.
#[derive(Debug, Clone)]
pub struct MasterLink {
    /// The master's address.
    pub addr: SocketAddr,
    /// The cluster CA the master's certificate chains to.
    pub ca: CertificateDer<'static>,
    /// This node's CA-signed certificate, presented as the client certificate.
    pub identity: Certified,
    /// How often sessions re-read their queues while the master is unreachable.
    pub poll_interval: Duration,
}

/// What the rest of the node tells the link.
#[derive(Debug)]
pub(crate) enum ToMaster {
    Online(UserName),
    Offline(UserName),
    Relay(Relayed),
    /// A membership change for users not connected here.
    Announce(Vec<UserName>, quip_proto::SignedChange),
    /// A group log entry for members connected elsewhere: (users, group, seq, its frame).
    LogAppended(Vec<UserName>, quip_proto::ids::GroupId, u64, bytes::Bytes),
}

/// The node's handle on its link: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub(crate) struct Uplink {
    tx: mpsc::Sender<ToMaster>,
}

/// How often every session re-reads its queue even while the master link is up.
pub(crate) const SAFETY_REREAD: Duration = Duration::from_secs(15);

/// Events queued for the master before the node drops them (storage holds every message;
/// presence is resent in full at the next registration).
const UPLINK_QUEUE: usize = 16_384;

impl Uplink {
    /// Queues a frame for the master; while the link is down frames wait (up to
    /// [`UPLINK_QUEUE`]) and go out after the next registration.
    pub(crate) fn send(&self, msg: ToMaster) {
        if self.tx.try_send(msg).is_err() {
            tracing::debug!("master link queue full; storage covers it");
        }
    }
}

/// Counts messages accepted, for the load report.
#[derive(Debug)]
pub(crate) struct Counter {
    count: AtomicU32,
    since: std::sync::Mutex<std::time::Instant>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            count: AtomicU32::new(0),
            since: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }
}

impl Counter {
    pub(crate) fn add(&self, n: u32) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages per second since the last call, whatever the heartbeat interval.
    fn per_second(&self) -> u32 {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let secs = since.elapsed().as_secs_f64().max(0.001);
        *since = std::time::Instant::now();
        (f64::from(self.count.swap(0, Ordering::Relaxed)) / secs).round() as u32
    }
}

pub(crate) fn spawn<S: Storage>(
    node: Arc<Node<S>>,
    link: MasterLink,
    client_addr: SocketAddr,
    rx: mpsc::Receiver<ToMaster>,
    connected: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> [tokio::task::JoinHandle<()>; 2] {
    [
        tokio::spawn(poll_while_down(
            node.clone(),
            link.poll_interval,
            connected.clone(),
            stop.clone(),
        )),
        tokio::spawn(run(node, link, client_addr, rx, connected, stop)),
    ]
}

pub(crate) fn uplink() -> (Uplink, mpsc::Receiver<ToMaster>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel(UPLINK_QUEUE);
    let connected = Arc::new(AtomicBool::new(false));
    (Uplink { tx }, rx, connected)
}

async fn run<S: Storage>(
    node: Arc<Node<S>>,
    link: MasterLink,
    client_addr: SocketAddr,
    mut rx: mpsc::Receiver<ToMaster>,
    connected: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = serve(&node, &link, client_addr, &mut rx, &connected, &mut stop);
        match session.await {
            Ok(()) => return,
            Err(why) => {
                connected.store(false, Ordering::Relaxed);
                tracing::warn!(master = %link.addr, %why, retry_in = ?backoff, "master link down");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::stopping(&mut stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One connection to the master, until it drops (`Err`) or the node stops (`Ok`).
async fn serve<S: Storage>(
    node: &Arc<Node<S>>,
    link: &MasterLink,
    client_addr: SocketAddr,
    rx: &mut mpsc::Receiver<ToMaster>,
    connected: &AtomicBool,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let limits = Limits::relay();
    let config = quip_quic::client_config(
        &Trust::Ca(link.ca.clone()),
        quip_proto::ALPN_RELAY,
        Some(&link.identity),
        &limits,
    )
    .map_err(|e| e.to_string())?;
    let bind: SocketAddr = if link.addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("valid");
    let endpoint = quip_quic::client_endpoint(bind, &limits).map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(config, link.addr, quip_quic::names::MASTER)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut send, mut recv, hello) = quip_quic::open_control(&conn, crate::AGENT, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    hello.check_version()?;
    send.send(&NodeToMaster::Register {
        node: node.config.name.clone(),
        client_addr: client_addr.to_string(),
        load: load(node),
        users: node.registry.users(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let heartbeat = match recv
        .expect::<MasterToNode>()
        .await
        .map_err(|e| e.to_string())?
    {
        MasterToNode::Registered { heartbeat_ms } => {
            Duration::from_millis(heartbeat_ms.clamp(100, 10_000).into())
        }
        MasterToNode::Error { message, .. } => {
            return Err(format!("registration refused: {message}"));
        }
        other => return Err(format!("expected Registered, got {}", other.kind())),
    };
    connected.store(true, Ordering::Relaxed);
    tracing::info!(master = %link.addr, "registered with the master");
    // Anything relayed while the master did not know where our users were is in storage.
    node.registry.wake_all();
    let mut beat = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            _ = beat.tick() => send_to(&mut send, &NodeToMaster::Heartbeat(load(node))).await?,
            msg = rx.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                let frame = match msg {
                    ToMaster::Online(user) => NodeToMaster::Online(vec![user]),
                    ToMaster::Offline(user) => NodeToMaster::Offline(vec![user]),
                    ToMaster::Relay(relayed) => NodeToMaster::Relay(relayed),
                    ToMaster::Announce(users, change) => NodeToMaster::Announce { users, change },
                    ToMaster::LogAppended(users, group, seq, frame) => NodeToMaster::LogAppended {
                        users,
                        group,
                        seq,
                        frame: frame.to_vec(),
                    },
                };
                send_to(&mut send, &frame).await?;
            }
            frame = recv.recv::<MasterToNode>() => match frame {
                Ok(Some(MasterToNode::Relay(relayed))) => deliver(node, relayed),
                Ok(Some(MasterToNode::Error { code, message })) => {
                    tracing::warn!(?code, %message, "master refused a frame");
                }
                Ok(Some(MasterToNode::Announce { users, change })) => {
                    node.push_group_change(users, &change);
                }
                Ok(Some(MasterToNode::Presence { snapshot, online, offline })) => {
                    let mut elsewhere = node.elsewhere.lock().unwrap_or_else(|e| e.into_inner());
                    if snapshot {
                        elsewhere.clear();
                    }
                    offline.iter().for_each(|u| { elsewhere.remove(u); });
                    elsewhere.extend(online);
                }
                Ok(Some(MasterToNode::Missed { frames })) => {
                    tracing::warn!(frames, "the master dropped relays for us; every session re-reads its queue");
                    node.registry.wake_all();
                }
                Ok(Some(MasterToNode::LogAppended { users, group, seq, frame })) => {
                    let frame = bytes::Bytes::from(frame);
                    for user in &users {
                        node.registry.with_sessions(user, |s| {
                            if let Some(pump) = s.pump.get() {
                                pump.notify(crate::log::Notice::Entry {
                                    group,
                                    seq,
                                    frame: frame.clone(),
                                });
                            }
                        });
                    }
                }
                Ok(Some(MasterToNode::Registered { .. })) => {}
                Ok(None) => return Err("the master closed the link".into()),
                Err(err) => return Err(err.to_string()),
            },
            _ = crate::stopping(stop) => {
                let _ = send.send(&NodeToMaster::Draining).await;
                conn.close(0u32.into(), b"node stopping");
                return Ok(());
            }
        }
    }
}

async fn send_to(send: &mut FramedSend, msg: &NodeToMaster) -> Result<(), String> {
    send.send(msg).await.map_err(|e| e.to_string())
}

fn load<S: Storage>(node: &Node<S>) -> Load {
    Load {
        clients: node.registry.online_users() as u32,
        // Connections not (yet) logged in: handshaking, signing up, or waiting on bcrypt.
        pending: node
            .active
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(node.registry.sessions()) as u32,
        msgs_per_sec: node.accepted.per_second(),
        max_clients: node.config.max_connections as u32,
    }
}

/// Pushes a relayed message to its recipients connected here.
fn deliver<S: Storage>(node: &Node<S>, relayed: Relayed) {
    let Ok(sealed) = postcard::to_stdvec(&relayed.sealed) else {
        return;
    };
    let sealed = Bytes::from(sealed);
    let id = relayed.sealed.header.id;
    for key in relayed.keys {
        let Ok(prefix) = deliver_prefix(&key.wrapped, sealed.len()) else {
            continue;
        };
        let prefix = Bytes::from(prefix);
        node.registry.with_sessions(&key.recipient, |session| {
            session.push(Outgoing::Deliver {
                id,
                prefix: prefix.clone(),
                sealed: sealed.clone(),
            })
        });
    }
}

/// While the master is unreachable, every session re-reads its queue each interval, so
/// messages from users on other nodes still arrive within seconds.
async fn poll_while_down<S: Storage>(
    node: Arc<Node<S>>,
    every: Duration,
    connected: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    let mut last_reread = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopping(&mut stop) => return,
        }
        if !connected.load(Ordering::Relaxed) || last_reread.elapsed() >= SAFETY_REREAD {
            node.registry.wake_all();
            last_reread = tokio::time::Instant::now();
        }
    }
}
