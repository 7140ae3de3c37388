//! The physical limits each scenario is compared with: bare quinn doing the same transfer with
//! no Quip logic (no storage, no sessions, no routing), over the same transport settings
//! (`quip_quic::Limits`) on the same loopback, in the same run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quip_quic::{ClusterCa, Limits, Trust};

const ALPN: &[u8] = b"quip-bench/0";

/// A bare QUIC server and a way to make clients for it.
struct Bare {
    server: quinn::Endpoint,
    client_config: quinn::ClientConfig,
}

impl Bare {
    fn new() -> anyhow::Result<Self> {
        let ca = ClusterCa::generate()?;
        let identity = ca.issue(&["bench"])?;
        let limits = Limits::client();
        let server_config = quip_quic::server_config(&identity, &[ALPN], None, &limits)?;
        let server = quip_quic::server_endpoint("127.0.0.1:0".parse()?, server_config, &limits)?;
        let client_config =
            quip_quic::client_config(&Trust::Ca(ca.cert().clone()), ALPN, None, &limits)?;
        Ok(Self {
            server,
            client_config,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr().expect("bound")
    }

    async fn client(&self) -> anyhow::Result<quinn::Connection> {
        let endpoint = quip_quic::client_endpoint("127.0.0.1:0".parse()?, &Limits::client())?;
        self.client_on(&endpoint).await
    }

    /// A client connection on a (shared) client endpoint.
    async fn client_on(&self, endpoint: &quinn::Endpoint) -> anyhow::Result<quinn::Connection> {
        Ok(endpoint
            .connect_with(self.client_config.clone(), self.addr(), "bench")?
            .await?)
    }
}

/// Uploads `total` bytes in `chunk`-sized writes on one stream to a server that reads them
/// to the end: MB/s.
pub(crate) async fn bulk(total: usize, chunk: usize) -> anyhow::Result<f64> {
    let bare = Bare::new()?;
    let server = bare.server.clone();
    tokio::spawn(async move {
        if let Some(incoming) = server.accept().await
            && let Ok(conn) = incoming.await
            && let Ok((mut send, mut recv)) = conn.accept_bi().await
        {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(Some(_)) = recv.read(&mut buf).await {}
            let _ = send.write_all(b"k").await;
            let _ = send.finish();
            let _ = conn.closed().await;
        }
    });
    let conn = bare.client().await?;
    let data = vec![0xabu8; chunk];
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut sent = 0;
    while sent < total {
        send.write_all(&data).await?;
        sent += chunk;
    }
    send.finish()?;
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await?;
    let secs = started.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"");
    Ok(sent as f64 / secs / 1e6)
}

/// A server that pushes `messages` frames of `size` bytes to each of `clients` connections
/// (sharing a few client sockets), one after another: deliveries per second and
/// the p99 time to the last client.
pub(crate) async fn fanout(clients: usize, messages: usize, size: usize) -> anyhow::Result<Fanout> {
    let bare = Bare::new()?;
    let mut conns = Vec::with_capacity(clients);
    let server = bare.server.clone();
    let accept = tokio::spawn(async move {
        let mut accepted = Vec::with_capacity(clients);
        while accepted.len() < clients {
            let Some(incoming) = server.accept().await else {
                break;
            };
            if let Ok(conn) = incoming.await {
                accepted.push(conn);
            }
        }
        accepted
    });
    let endpoints = super::support::shared_endpoints(clients)?;
    for i in 0..clients {
        let endpoint = &endpoints[i % endpoints.len()];
        conns.push(bare.client_on(endpoint).await?);
    }
    let served = accept.await?;
    // Each client opens one stream and reads frames of `size` bytes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut streams = Vec::with_capacity(clients);
    for conn in &conns {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"h").await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; size];
            let mut n = 0;
            while recv.read_exact(&mut buf).await.is_ok() {
                let _ = tx.send((n, Instant::now()));
                n += 1;
            }
        });
    }
    for conn in &served {
        let (send, mut recv) = conn.accept_bi().await?;
        let mut hello = [0u8; 1];
        recv.read_exact(&mut hello).await?;
        streams.push(send);
    }
    let frame = bytes::Bytes::from(vec![0x42u8; size]);
    let started = Instant::now();
    let cpu_start = super::support::own_cpu();
    let mut sent_at = Vec::with_capacity(messages);
    let mut last = vec![started; messages];
    let mut received = 0;
    for _ in 0..messages {
        sent_at.push(Instant::now());
        for stream in &mut streams {
            stream.write_chunk(frame.clone()).await?;
        }
    }
    while received < clients * messages {
        let Ok(Some((n, at))) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await
        else {
            anyhow::bail!("bare fan-out stalled after {received} deliveries");
        };
        last[n] = last[n].max(at);
        received += 1;
    }
    let cpu = super::support::own_cpu().saturating_sub(cpu_start);
    let elapsed = last.iter().max().copied().unwrap_or(started) - started;
    let mut to_last: Vec<Duration> = last.iter().zip(&sent_at).map(|(l, s)| *l - *s).collect();
    let p99 = super::report::Latency::of(&mut to_last).p99_ms;
    for conn in conns {
        conn.close(0u32.into(), b"");
    }
    Ok(Fanout {
        rate: (clients * messages) as f64 / elapsed.as_secs_f64(),
        p99_ms: p99,
        cpu_us: cpu.as_secs_f64() * 1e6 / (clients * messages) as f64,
    })
}

/// What a bare fan-out measured.
pub(crate) struct Fanout {
    /// Deliveries per second.
    pub(crate) rate: f64,
    /// p99 of the time from a frame's first write to its last arrival.
    pub(crate) p99_ms: f64,
    /// CPU this process used per delivery (server and clients), microseconds.
    pub(crate) cpu_us: f64,
}

/// A bare server that answers one byte on the first stream of every connection: what a QUIC
/// handshake plus one round trip costs with no Quip logic.
fn spawn_hello_server(bare: &Bare) {
    let server = bare.server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await
                    && let Ok((mut send, mut recv)) = conn.accept_bi().await
                {
                    let mut hello = [0u8; 1];
                    if recv.read_exact(&mut hello).await.is_ok() {
                        let _ = send.write_all(&hello).await;
                        let _ = send.finish();
                    }
                    let _ = conn.closed().await;
                }
            });
        }
    });
}

/// `clients` concurrent clients each connecting (a fresh endpoint, as `quip_cli::Connection`
/// makes), exchanging one byte on a stream and closing, back to back for `secs`: handshakes
/// per second and the time each took.
pub(crate) async fn handshakes(clients: usize, secs: f64) -> anyhow::Result<super::support::Churn> {
    let bare = std::sync::Arc::new(Bare::new()?);
    spawn_hello_server(&bare);
    Ok(super::support::churn(clients, secs, 1_000_000, move |_| {
        let bare = bare.clone();
        async move {
            let conn = bare.client().await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(b"h").await?;
            let mut hello = [0u8; 1];
            recv.read_exact(&mut hello).await?;
            conn.close(0u32.into(), b"");
            Ok(())
        }
    })
    .await)
}

/// What one rate step of an open-loop run measured.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// Offered messages per second.
    pub(crate) rate: u32,
    /// Messages scheduled (and sent).
    pub(crate) sent: usize,
    /// Distinct messages that arrived in time.
    pub(crate) delivered: usize,
    /// Requests the server refused or that failed.
    pub(crate) refused: usize,
    /// Messages that arrived more than once.
    pub(crate) duplicates: usize,
    /// Latency from each message's intended send time to its arrival.
    pub(crate) latency: super::report::Latency,
    /// From the intended send time to the sender's `Stored` (durable) answer, where there is
    /// one.
    pub(crate) stored: Option<super::report::Latency>,
    /// How late the load generator started each send (its own lag), where measured.
    pub(crate) lag: Option<super::report::Latency>,
    /// CPU the whole process (server, clients and load generator) used per message sent,
    /// microseconds.
    pub(crate) cpu_us: f64,
}

impl Step {
    /// Scheduled but not delivered in time.
    pub(crate) fn lost(&self) -> usize {
        self.sent.saturating_sub(self.delivered)
    }

    /// Nothing lost or refused and p99 under `p99_ms`.
    pub(crate) fn holds(&self, p99_ms: f64) -> bool {
        self.lost() == 0 && self.refused == 0 && self.latency.p99_ms < p99_ms
    }

    /// One line for the notes.
    pub(crate) fn describe(&self) -> String {
        let mut line = format!(
            "{}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} sent, {} lost, {} refused, {} dup",
            self.rate,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.sent,
            self.lost(),
            self.refused,
            self.duplicates
        );
        if let Some(stored) = self.stored {
            line += &format!(
                "; Stored p50 {:.1} ms, p99 {:.1} ms",
                stored.p50_ms, stored.p99_ms
            );
        }
        if let Some(lag) = self.lag {
            line += &format!("; sender lag p99 {:.1} ms", lag.p99_ms);
        }
        line += &format!("; {:.0} us CPU/msg", self.cpu_us);
        line
    }
}

/// The open-loop schedule shared by Quip and its baselines: message `g` (0-based over all
/// pairs) is due at `start + g / rate`, and pair `g % pairs` sends it, so the aggregate rate
/// is exact and evenly spaced. Pair `i` sends `count(i)` messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) start: Instant,
    pub(crate) rate: u32,
    pub(crate) pairs: usize,
    pub(crate) total: usize,
}

impl Schedule {
    pub(crate) fn new(rate: u32, pairs: usize, secs: f64) -> Self {
        Self {
            start: Instant::now() + Duration::from_millis(50),
            rate,
            pairs,
            total: (f64::from(rate) * secs).round() as usize,
        }
    }

    /// When message `g` is due.
    pub(crate) fn due(&self, g: u64) -> Instant {
        self.start + Duration::from_secs_f64(g as f64 / f64::from(self.rate))
    }

    /// The global indices pair `pair` sends, in order.
    pub(crate) fn of(&self, pair: usize) -> impl Iterator<Item = u64> + use<> {
        (pair..self.total).step_by(self.pairs).map(|g| g as u64)
    }

    /// How many messages pair `pair` sends.
    pub(crate) fn count(&self, pair: usize) -> usize {
        self.of(pair).count()
    }

    /// When receivers give up on what has not arrived.
    pub(crate) fn deadline(&self, grace: Duration) -> Instant {
        self.due(self.total as u64) + grace
    }
}

/// Which bare transfer stands in for Quip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Client → server → the same client, on one stream (same-node DM).
    Echo,
    /// Client → relay → another client (cross-node DM).
    Relay,
}

/// Reads one `u32`-length-prefixed frame into `buf` (which keeps the prefix).
async fn read_frame(recv: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> bool {
    let mut len = [0u8; 4];
    if recv.read_exact(&mut len).await.is_err() {
        return false;
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > 1 << 20 {
        return false;
    }
    buf.clear();
    buf.extend_from_slice(&len);
    buf.resize(4 + n, 0);
    recv.read_exact(&mut buf[4..]).await.is_ok()
}

fn spawn_bare_server(bare: &Bare, path: Path) {
    type Outlets = std::sync::Arc<
        std::sync::Mutex<
            std::collections::HashMap<u16, std::sync::Arc<tokio::sync::Mutex<quinn::SendStream>>>,
        >,
    >;
    let outlets = Outlets::default();
    let server = bare.server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let outlets = outlets.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                    return;
                };
                let mut hello = [0u8; 3];
                if recv.read_exact(&mut hello).await.is_err() {
                    return;
                }
                let pair = u16::from_be_bytes([hello[1], hello[2]]);
                let mut buf = Vec::with_capacity(2048);
                match (path, hello[0]) {
                    (Path::Echo, _) => {
                        while read_frame(&mut recv, &mut buf).await {
                            if send.write_all(&buf).await.is_err() {
                                break;
                            }
                        }
                    }
                    // A receiver: register its stream, confirm, then hold the connection.
                    (Path::Relay, 1) => {
                        let outlet = std::sync::Arc::new(tokio::sync::Mutex::new(send));
                        outlets.lock().unwrap().insert(pair, outlet.clone());
                        let _ = outlet.lock().await.write_all(b"k").await;
                        let _ = conn.closed().await;
                    }
                    (Path::Relay, _) => {
                        let outlet = outlets.lock().unwrap().get(&pair).cloned();
                        let Some(outlet) = outlet else { return };
                        while read_frame(&mut recv, &mut buf).await {
                            if outlet.lock().await.write_all(&buf).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = conn.closed().await;
            });
        }
    });
}

/// One open-loop step of a bare transfer: `pairs` sender/receiver pairs (each its own QUIC
/// connection; for [`Path::Echo`] the sender is its own receiver), `rate` frames of `size`
/// bytes per second in all for `secs`, latency from each frame's intended send time.
pub(crate) async fn step(
    path: Path,
    pairs: usize,
    size: usize,
    rate: u32,
    secs: f64,
    grace: Duration,
) -> anyhow::Result<Step> {
    let bare = Bare::new()?;
    spawn_bare_server(&bare, path);
    let size = size.max(16);
    let mut links = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let hello = |role: u8| {
            let p = (pair as u16).to_be_bytes();
            [role, p[0], p[1]]
        };
        // The receiver first, so the relay knows where to forward before frames arrive.
        let rx = match path {
            Path::Echo => None,
            Path::Relay => {
                let rx = bare.client().await?;
                let (mut rsend, mut rrecv) = rx.open_bi().await?;
                rsend.write_all(&hello(1)).await?;
                let mut ok = [0u8; 1];
                rrecv.read_exact(&mut ok).await?;
                Some((rx, rsend, rrecv))
            }
        };
        let tx = bare.client().await?;
        let (mut send, recv) = tx.open_bi().await?;
        send.write_all(&hello(0)).await?;
        let (rx, recv) = match rx {
            None => (None, recv),
            Some((rx, rsend, rrecv)) => (Some((rx, rsend)), rrecv),
        };
        links.push((tx, send, rx, recv));
    }
    let schedule = Schedule::new(rate, pairs, secs);
    let deadline = schedule.deadline(grace);
    let cpu_before = super::support::own_cpu();
    let mut senders = Vec::with_capacity(pairs);
    let mut receivers = Vec::with_capacity(pairs);
    let mut conns = Vec::with_capacity(pairs);
    for (pair, (tx, mut send, rx, mut recv)) in links.into_iter().enumerate() {
        conns.push((tx, rx));
        senders.push(tokio::spawn(async move {
            let mut frame = vec![0x42u8; size];
            frame[..4].copy_from_slice(&((size - 4) as u32).to_be_bytes());
            for g in schedule.of(pair) {
                tokio::time::sleep_until(schedule.due(g).into()).await;
                frame[4..12].copy_from_slice(&g.to_be_bytes());
                if send.write_all(&frame).await.is_err() {
                    return false;
                }
            }
            true
        }));
        let expected = schedule.count(pair);
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected);
            let mut buf = Vec::with_capacity(size);
            while latencies.len() < expected {
                let read =
                    tokio::time::timeout_at(deadline.into(), read_frame(&mut recv, &mut buf));
                let (Ok(true), Some(bytes)) = (read.await, buf.get(4..12)) else {
                    break;
                };
                let g = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                latencies.push(Instant::now().saturating_duration_since(schedule.due(g)));
            }
            latencies
        }));
    }
    let mut refused = 0;
    for sender in senders {
        if !sender.await.unwrap_or(false) {
            refused += 1;
        }
    }
    let mut latencies = Vec::with_capacity(schedule.total);
    for receiver in receivers {
        latencies.extend(receiver.await.unwrap_or_default());
    }
    let cpu = super::support::own_cpu().saturating_sub(cpu_before);
    for (tx, rx) in conns {
        tx.close(0u32.into(), b"");
        if let Some((rx, _)) = rx {
            rx.close(0u32.into(), b"");
        }
    }
    Ok(Step {
        rate,
        sent: schedule.total,
        delivered: latencies.len(),
        refused,
        duplicates: 0,
        latency: super::report::Latency::of(&mut latencies),
        stored: None,
        lag: None,
        cpu_us: cpu.as_secs_f64() * 1e6 / schedule.total.max(1) as f64,
    })
}
