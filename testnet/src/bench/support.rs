//! Helpers the scenarios share beyond `crate::fixtures`: users with a chosen password hash,
//! resuming a session on any node, and a bounded "as many as possible" loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quip_cli::Connection;
use quip_proto::ids::{SessionToken, UserName};
use quip_proto::{ClientToNode, NodeToClient};
use quip_quic::Trust;
use quip_storage::{NewUser, Storage, Store};
use sha2::{Digest, Sha256};

use crate::fixtures::BenchUser;

/// Random bytes from the OS.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes
}

/// A short random tag, so names from two runs on one database never collide.
pub(crate) fn run_tag() -> String {
    random::<3>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `count` users `<prefix><tag>x<i>` whose password hash is `hash`, each with a live
/// session, straight in storage (one transaction each).
pub(crate) async fn users_with_hash(
    storage: &Store,
    prefix: &str,
    count: usize,
    hash: &str,
) -> anyhow::Result<Vec<BenchUser>> {
    users_with_keys(storage, prefix, count, hash, &[2; 420]).await
}

/// As [`users_with_hash`], with `signing_key` (SPKI DER) as every user's account key: for
/// scenarios where the node verifies MLS credentials against it.
pub(crate) async fn users_with_keys(
    storage: &Store,
    prefix: &str,
    count: usize,
    hash: &str,
    signing_key: &[u8],
) -> anyhow::Result<Vec<BenchUser>> {
    let tag = run_tag();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let name = UserName::new(&format!("{prefix}{tag}x{i}"))?;
        storage
            .create_user(&NewUser {
                name: name.clone(),
                password_hash: hash.to_owned(),
                encryption_key: vec![1; 420],
                signing_key: signing_key.to_vec(),
                key_backup: vec![3; 64],
                created_at: 0,
            })
            .await?;
        let token = SessionToken(random());
        let digest: [u8; 32] = Sha256::digest(token.0).into();
        storage.create_session(&digest, &name, i64::MAX / 2).await?;
        out.push(BenchUser { name, token });
    }
    Ok(out)
}

/// Connects to the node at `addr` and resumes `user`'s session (no bcrypt).
pub(crate) async fn resume_on(
    addr: SocketAddr,
    trust: &Trust,
    user: &BenchUser,
) -> anyhow::Result<Connection> {
    tokio::time::timeout(OP_TIMEOUT, async {
        let conn = Connection::connect(addr, quip_quic::names::NODE, trust).await?;
        let token = user.token.clone();
        match conn
            .request(|req| ClientToNode::Resume { req, token })
            .await?
        {
            NodeToClient::LoggedIn { .. } => Ok(conn),
            other => anyhow::bail!("resume answered {other:?}"),
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("resume: no answer within {OP_TIMEOUT:?}"))?
}

/// The longest one connect-and-log-in may take before it counts as failed.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`churn`] measured.
pub(crate) struct Churn {
    /// Operations that succeeded.
    pub(crate) done: usize,
    /// Operations that failed.
    pub(crate) failed: usize,
    /// From the start to the end of the last operation.
    pub(crate) elapsed: Duration,
    /// Duration of each successful operation.
    pub(crate) latencies: Vec<Duration>,
    /// The first error seen, for the notes.
    pub(crate) first_error: Option<String>,
}

impl Churn {
    /// Successful operations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op(client)` back to back on `clients` concurrent clients until `secs` have passed
/// or `max` operations have started, whichever comes first (an operation started before the
/// deadline finishes).
pub(crate) async fn churn<F, Fut>(clients: usize, secs: f64, max: usize, op: F) -> Churn
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(max));
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (op, budget) = (op.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = (Vec::new(), 0usize, None::<String>, started);
            while Instant::now() < deadline
                && budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
            {
                let t = Instant::now();
                match tokio::time::timeout(OP_TIMEOUT, op(client)).await {
                    Ok(Ok(())) => out.0.push(t.elapsed()),
                    Ok(Err(err)) => {
                        out.1 += 1;
                        out.2.get_or_insert_with(|| format!("{err:#}"));
                    }
                    Err(_) => {
                        out.1 += 1;
                        out.2
                            .get_or_insert_with(|| format!("no answer within {OP_TIMEOUT:?}"));
                    }
                }
                out.3 = Instant::now();
            }
            out
        }));
    }
    let mut churn = Churn {
        done: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        first_error: None,
    };
    for task in tasks {
        let Ok((latencies, failed, error, last)) = task.await else {
            churn.failed += 1;
            continue;
        };
        churn.done += latencies.len();
        churn.latencies.extend(latencies);
        churn.failed += failed;
        if churn.first_error.is_none() {
            churn.first_error = error;
        }
        churn.elapsed = churn.elapsed.max(last - started);
    }
    churn
}

/// The storage this run uses, for the notes.
pub(crate) fn storage_name(database_url: Option<&str>) -> &'static str {
    database_url.map_or("sqlite (temp file)", |_| "postgres")
}

/// How long a 4 KiB write + fsync takes in a temp directory (where the SQLite benchmarks
/// keep their database), median and p99 of 20: with `synchronous = FULL` every commit waits
/// for one, so it bounds how many commits per second SQLite can make.
pub(crate) fn fsync_probe() -> anyhow::Result<super::report::Latency> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("probe"))?;
    let block = [0x5au8; 4096];
    let mut samples = Vec::with_capacity(20);
    for _ in 0..20 {
        file.write_all(&block)?;
        let started = Instant::now();
        file.sync_all()?;
        samples.push(started.elapsed());
    }
    Ok(super::report::Latency::of(&mut samples))
}

/// A note on the storage a run used, with the temp directory's fsync latency for SQLite.
pub(crate) fn storage_note(database_url: Option<&str>) -> String {
    match (database_url, fsync_probe()) {
        (Some(_), _) => "storage: postgres (queue tables vacuumed before the run)".into(),
        (None, Ok(fsync)) => format!(
            "storage: sqlite in {} (synchronous=FULL; fsync there: p50 {:.1} ms, p99 {:.1} ms)",
            std::env::temp_dir().display(),
            fsync.p50_ms,
            fsync.p99_ms
        ),
        (None, Err(_)) => "storage: sqlite (temp file)".into(),
    }
}

/// Before a run on Postgres: vacuum the queue tables, so one run's dead rows (on a server
/// without autovacuum they are never cleared) do not slow the next.
pub(crate) async fn vacuum_postgres(database_url: Option<&str>) -> anyhow::Result<()> {
    if let Some(url) = database_url {
        let store = quip_storage::PostgresStorage::connect(url).await?;
        store.vacuum_queues().await?;
        store.close().await;
    }
    Ok(())
}

/// CPU time process `pid` has used so far (user + system), from `/proc/<pid>/stat` in
/// USER_HZ ticks (100 per second on Linux).
pub(crate) fn cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

/// CPU this process has used so far.
pub(crate) fn own_cpu() -> Duration {
    cpu(std::process::id()).unwrap_or_default()
}

/// Client endpoints (UDP sockets) that simulated users share when there are many: at most
/// this many, with users assigned round robin. Enough to spread receive work over the
/// runtime's threads; few enough that a thousand users do not cost a thousand sockets and
/// endpoint drivers in the process that measures.
pub(crate) const SHARED_ENDPOINTS: usize = 16;

/// Client endpoints for `clients` connections (see [`SHARED_ENDPOINTS`]); connection `i`
/// uses `endpoints[i % endpoints.len()]`.
pub(crate) fn shared_endpoints(clients: usize) -> anyhow::Result<Vec<quinn::Endpoint>> {
    let limits = quip_quic::Limits::client();
    (0..clients.clamp(1, SHARED_ENDPOINTS))
        .map(|_| Ok(quip_quic::client_endpoint("127.0.0.1:0".parse()?, &limits)?))
        .collect()
}

/// A logged-in client without `quip_cli::Connection`'s tasks: the QUIC connection and both
/// halves of its control stream.
pub(crate) struct Lean {
    pub(crate) conn: quinn::Connection,
    pub(crate) send: quip_quic::FramedSend,
    pub(crate) recv: quip_quic::FramedRecv,
}

impl Lean {
    /// Closes the connection.
    pub(crate) fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// Connects on `endpoint` to the node at `addr` and resumes `token`'s session, exchanging
/// the same frames `quip_cli::Connection` does (hellos on the control stream, `Resume`).
pub(crate) async fn lean_resume(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    token: SessionToken,
) -> anyhow::Result<Lean> {
    tokio::time::timeout(OP_TIMEOUT, lean_resume_now(endpoint, config, addr, token))
        .await
        .map_err(|_| anyhow::anyhow!("resume: no answer within {OP_TIMEOUT:?}"))?
}

async fn lean_resume_now(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    token: SessionToken,
) -> anyhow::Result<Lean> {
    let conn = endpoint
        .connect_with(config, addr, quip_quic::names::NODE)?
        .await?;
    let (mut send, mut recv, _) = quip_quic::open_control(
        &conn,
        quip_cli::connection::AGENT,
        quip_proto::limits::MAX_FRAME,
    )
    .await?;
    send.send(&ClientToNode::Resume { req: 1, token }).await?;
    match recv.recv::<NodeToClient>().await? {
        Some(NodeToClient::LoggedIn { .. }) => Ok(Lean { conn, send, recv }),
        other => anyhow::bail!("resume answered {other:?}"),
    }
}

/// Reads deliveries on a [`Lean`] client until `expected` arrived or `deadline`, calling
/// `seen` with each id and arrival time and acknowledging in batches of 64.
pub(crate) async fn lean_receive(
    client: &mut Lean,
    expected: usize,
    deadline: Instant,
    mut seen: impl FnMut(quip_proto::ids::MsgId, Instant),
) -> usize {
    let mut got = 0;
    let mut acks = Vec::new();
    while got < expected {
        let next = tokio::time::timeout_at(deadline.into(), client.recv.recv::<NodeToClient>());
        match next.await {
            Ok(Ok(Some(NodeToClient::Deliver(delivery)))) => {
                let id = delivery.sealed.header.id;
                seen(id, Instant::now());
                acks.push(id);
                got += 1;
                if acks.len() >= 64 {
                    let ids = std::mem::take(&mut acks);
                    let msg = ClientToNode::Ack { ids };
                    let ack = client.send.send(&msg);
                    if tokio::time::timeout_at(deadline.into(), ack).await.is_err() {
                        break;
                    }
                }
            }
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
    if !acks.is_empty() {
        let msg = ClientToNode::Ack { ids: acks };
        let ack = client.send.send(&msg);
        let _ = tokio::time::timeout(Duration::from_secs(5), ack).await;
    }
    got
}

/// The wall clock in milliseconds since the Unix epoch, as nodes stamp messages.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
