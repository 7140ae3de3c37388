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

/// A server that pushes `messages` frames of `size` bytes to each of `clients` connections,
/// one after another: deliveries per second and the p99 time to the last client.
pub(crate) async fn fanout(
    clients: usize,
    messages: usize,
    size: usize,
) -> anyhow::Result<(f64, Duration)> {
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
    for _ in 0..clients {
        conns.push(bare.client().await?);
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
    let elapsed = last.iter().max().copied().unwrap_or(started) - started;
    let mut to_last: Vec<Duration> = last.iter().zip(&sent_at).map(|(l, s)| *l - *s).collect();
    let p99 = super::report::Latency::of(&mut to_last).p99_ms;
    for conn in conns {
        conn.close(0u32.into(), b"");
    }
    Ok((
        (clients * messages) as f64 / elapsed.as_secs_f64(),
        Duration::from_secs_f64(p99 / 1e3),
    ))
}
