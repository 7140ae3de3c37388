//! `bench idle`: N authenticated clients connected to one node and doing nothing (1,000,
//! 10,000 and 50,000 — the last only if the memory measured at 10,000 says it fits; 1,000
//! with `--quick`).
//!
//! The node runs as a **child process** (`quip-node` next to this executable, at bcrypt cost
//! 12, on the same storage kind as the run), so its memory and CPU are its own and not the
//! load generator's: RSS is read from `/proc/<pid>/status` (VmRSS) before and after the
//! clients connect, idle CPU from `/proc/<pid>/stat` (utime + stime, in USER_HZ = 100 ticks
//! per second) over the idle window. Without a `quip-node` binary next to `quip-testnet`, the
//! same `quip_node::start` runs in a child `quip-testnet` instead (said in the notes).
//!
//! Clients share UDP sockets (one `quinn::Endpoint` per [`CLIENTS_PER_ENDPOINT`] clients,
//! each bound to its own loopback address 127.0.x.y, so the node's per-address connection
//! limit holds with its default) rather than one each, so 10,000 clients need no 10,000 file
//! descriptors; each
//! does what `quip_cli::Connection` does — handshake, control stream with hellos, `Resume`
//! with a stored session token — and then only reads (keep-alives keep it open). Sessions
//! are created straight in storage before the node starts.
//!
//! Baseline: a bare quinn server in its own child process (`quip-testnet bench
//! __bare-idle-server`) with the same transport limits, clients connecting and exchanging
//! one byte on a stream, then idling: its RSS per connection, connections/s and idle CPU.

use std::any::Any;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quip_proto::limits::MAX_FRAME;
use quip_proto::{ClientToNode, NodeToClient};
use quip_quic::{ClusterCa, Limits, Trust};
use quip_storage::Store;
use tokio::sync::Semaphore;

use super::Options;
use super::report::{Report, Row};
use super::support::{cpu, storage_name};
use crate::fixtures::users;

/// Clients per shared client endpoint (UDP socket, with its own loopback address): half the
/// node's default per-address connection limit (100).
pub(crate) const CLIENTS_PER_ENDPOINT: usize = 50;
/// Handshakes in flight at once while connecting.
const CONNECTING: usize = 128;
/// The largest size, run only when the memory measured at 10,000 says it fits.
const BIG: usize = 50_000;
/// ALPN of the bare baseline server.
const BARE_ALPN: &[u8] = b"quip-bench-idle/0";
/// The name in the bare server's certificate.
const BARE_NAME: &str = "bench";
/// Hidden scenario names: the child processes this scenario starts.
pub(crate) const BARE_CHILD: &str = "__bare-idle-server";
pub(crate) const NODE_CHILD: &str = "__idle-node";
/// Environment variables the children read.
const CHILD_DIR: &str = "QUIP_BENCH_CHILD_DIR";
const CHILD_DB: &str = "QUIP_BENCH_CHILD_DB";

/// A child process killed when dropped.
pub(crate) struct Process {
    child: Child,
    /// The first line it printed.
    line: String,
}

impl Process {
    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env("RUST_LOG", "warn,quinn=error");
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the child process did not start: {other:?}");
            }
        };
        Ok(Self { child, line })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of `pid`, bytes.
pub(crate) fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What one size measured on one server.
struct Idle {
    connected: usize,
    per_second: f64,
    rss_per_conn: f64,
    rss_before: u64,
    cpu_percent: f64,
    alive_after: usize,
    /// The load generator's own memory per client.
    client_rss_per_conn: f64,
}

/// Connected idle clients; dropping closes them.
pub(crate) struct Clients {
    endpoints: Vec<quinn::Endpoint>,
    /// Each connection, with what its client keeps open (streams).
    pub(crate) held: Vec<(quinn::Connection, Box<dyn Any + Send>)>,
    pub(crate) alive: Arc<AtomicUsize>,
    pub(crate) connected: usize,
    pub(crate) elapsed: Duration,
}

impl Drop for Clients {
    fn drop(&mut self) {
        for endpoint in &self.endpoints {
            endpoint.close(0u32.into(), b"bye");
        }
    }
}

/// What client `i` does on its connection once the handshake is done; it counts itself in
/// `alive` when it is in, and returns what must stay open with the connection.
pub(crate) type Script = Arc<
    dyn Fn(
            usize,
            quinn::Connection,
            Arc<AtomicUsize>,
        ) -> Pin<Box<dyn Future<Output = anyhow::Result<Box<dyn Any + Send>>> + Send>>
        + Send
        + Sync,
>;

/// How each client logs in once connected.
#[derive(Clone)]
pub(crate) enum Login {
    /// Quip: hellos, then `Resume` with the token.
    Resume(Vec<quip_proto::ids::SessionToken>),
    /// Bare: one byte each way.
    Byte,
    /// Anything else (see `hostile`).
    Script(Script),
}

/// The local address of shared client endpoint `k`: 127.0.a.b, a different one each (Linux
/// routes all of 127/8 to the loopback interface).
fn loopback(k: usize) -> SocketAddr {
    let (a, b) = (k / 250, 2 + k % 250);
    let a = u8::try_from(a).expect("at most 64,000 client endpoints");
    SocketAddr::from((Ipv4Addr::new(127, 0, a, b as u8), 0))
}

/// Connects `n` clients to `addr` and runs `login` on each.
pub(crate) async fn connect_all(
    addr: SocketAddr,
    config: quinn::ClientConfig,
    server_name: &'static str,
    n: usize,
    login: Login,
) -> anyhow::Result<Clients> {
    let limits = Limits::client();
    let endpoints: Vec<quinn::Endpoint> = (0..n.div_ceil(CLIENTS_PER_ENDPOINT))
        .map(|k| quip_quic::client_endpoint(loopback(k), &limits))
        .collect::<Result<_, _>>()?;
    let alive = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(CONNECTING));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let endpoint = endpoints[i / CLIENTS_PER_ENDPOINT].clone();
        let (config, alive, login) = (config.clone(), alive.clone(), login.clone());
        tasks.push(tokio::spawn(tokio::time::timeout(
            super::support::OP_TIMEOUT,
            async move {
                let _permit = permit;
                let conn = endpoint.connect_with(config, addr, server_name)?.await?;
                let held = match login {
                    Login::Resume(tokens) => {
                        let (mut send, mut recv, _) =
                            quip_quic::open_control(&conn, quip_cli::connection::AGENT, MAX_FRAME)
                                .await?;
                        let token = tokens[i].clone();
                        send.send(&ClientToNode::Resume { req: 1, token }).await?;
                        match recv.recv::<NodeToClient>().await? {
                            Some(NodeToClient::LoggedIn { .. }) => {}
                            other => anyhow::bail!("resume answered {other:?}"),
                        }
                        alive.fetch_add(1, Ordering::Relaxed);
                        let alive = alive.clone();
                        // Read (and drop) whatever the node pushes until the connection ends.
                        tokio::spawn(async move {
                            while let Ok(Some(_)) = recv.recv::<NodeToClient>().await {}
                            alive.fetch_sub(1, Ordering::Relaxed);
                        });
                        (conn, Box::new(send) as Box<dyn Any + Send>)
                    }
                    Login::Byte => {
                        let (mut send, mut recv) = conn.open_bi().await?;
                        send.write_all(b"h").await?;
                        let mut byte = [0u8; 1];
                        recv.read_exact(&mut byte).await?;
                        alive.fetch_add(1, Ordering::Relaxed);
                        let alive = alive.clone();
                        let watched = conn.clone();
                        tokio::spawn(async move {
                            let _keep = (send, recv);
                            watched.closed().await;
                            alive.fetch_sub(1, Ordering::Relaxed);
                        });
                        (conn, Box::new(()) as Box<dyn Any + Send>)
                    }
                    Login::Script(script) => {
                        let keep = script(i, conn.clone(), alive).await?;
                        (conn, keep)
                    }
                };
                Ok::<_, anyhow::Error>(held)
            },
        )));
    }
    let mut held = Vec::with_capacity(n);
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(Ok(h)) => held.push(h),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("a client did not log in in time"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(err) = first_error {
        tracing::warn!(error = %err, failed = n - held.len(), "some idle clients did not connect");
    }
    Ok(Clients {
        endpoints,
        connected: held.len(),
        held,
        alive,
        elapsed,
    })
}

/// Connects `n` clients to the server in `process`, lets them idle for `idle`, and measures.
async fn measure(
    process: &Process,
    addr: SocketAddr,
    config: quinn::ClientConfig,
    server_name: &'static str,
    n: usize,
    login: Login,
    idle: Duration,
) -> anyhow::Result<Idle> {
    let pid = process.pid();
    let own = std::process::id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, own_before) = (rss(pid)?, rss(own)?);
    let clients = connect_all(addr, config, server_name, n, login).await?;
    // Let handshake buffers and the connect burst settle before looking at memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, own_after) = (rss(pid)?, rss(own)?);
    let cpu_start = cpu(pid)?;
    let idle_start = Instant::now();
    tokio::time::sleep(idle).await;
    let cpu_used = cpu(pid)? - cpu_start;
    let window = idle_start.elapsed();
    let connected = clients.connected.max(1);
    Ok(Idle {
        connected: clients.connected,
        per_second: clients.connected as f64 / clients.elapsed.as_secs_f64().max(1e-9),
        rss_per_conn: after.saturating_sub(before) as f64 / connected as f64,
        rss_before: before,
        cpu_percent: cpu_used.as_secs_f64() / window.as_secs_f64() * 100.0,
        alive_after: clients.alive.load(Ordering::Relaxed),
        client_rss_per_conn: own_after.saturating_sub(own_before) as f64 / connected as f64,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the node in a child process on storage `url`; returns it, its address, trust, and
/// whether it is the real `quip-node` binary.
pub(crate) fn spawn_node(
    dir: &Path,
    url: &str,
    n: usize,
) -> anyhow::Result<(Process, SocketAddr, Trust, bool)> {
    let exe = std::env::current_exe()?;
    let node_exe = exe.with_file_name("quip-node");
    let port = free_port()?;
    let real = node_exe.exists();
    let command = if real {
        let mut c = Command::new(node_exe);
        c.arg(port.to_string())
            .arg("--data-dir")
            .arg(dir)
            .arg("--database-url")
            .arg(url)
            .arg("--bcrypt-cost")
            .arg("12")
            .arg("--max-connections")
            .arg((n + 1000).to_string())
            // Every client comes from 127.0.0.1.
            .arg("--max-connections-per-addr")
            .arg((n + 1000).to_string());
        c
    } else {
        let mut c = Command::new(exe);
        c.args(["bench", NODE_CHILD])
            .env(CHILD_DIR, dir)
            .env(CHILD_DB, url)
            .env("QUIP_BENCH_CHILD_PORT", port.to_string())
            .env("QUIP_BENCH_CHILD_MAX", (n + 1000).to_string());
        c
    };
    let process = Process::spawn(command)?;
    // "quip-node listening on ADDR (clients: quip connect --node ADDR --ca PATH)"
    let line = process.line.clone();
    let addr = line
        .strip_prefix("quip-node listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected first line from the node: {line}"))?;
    let ca = line
        .rsplit_once("--ca ")
        .map(|(_, path)| PathBuf::from(path.trim_end_matches(')')))
        .ok_or_else(|| anyhow::anyhow!("no CA path in: {line}"))?;
    Ok((process, addr, Trust::from_ca_file(&ca)?, real))
}

/// One size against Quip.
async fn quip_idle(opts: &Options, n: usize, idle: Duration) -> anyhow::Result<(Idle, bool)> {
    let dir = tempfile::tempdir()?;
    let url = match &opts.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.path().join("quip.db").display()),
    };
    let store = Store::connect(&url).await?;
    let people = users(&store, "idle", n).await?;
    drop(store);
    let (process, addr, trust, real) = spawn_node(&dir.path().join("node"), &url, n)?;
    let config =
        quip_quic::client_config(&trust, quip_proto::ALPN_CLIENT, None, &Limits::client())?;
    let tokens = people.into_iter().map(|u| u.token).collect();
    let idle = measure(
        &process,
        addr,
        config,
        quip_quic::names::NODE,
        n,
        Login::Resume(tokens),
        idle,
    )
    .await?;
    Ok((idle, real))
}

/// One size against the bare server.
async fn bare_idle(n: usize, idle: Duration) -> anyhow::Result<Idle> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["bench", BARE_CHILD])
        .env(CHILD_DIR, dir.path());
    let process = Process::spawn(command)?;
    let addr: SocketAddr = process.line.trim().parse()?;
    let trust = Trust::from_ca_file(&ClusterCa::cert_path(dir.path()))?;
    let config = quip_quic::client_config(&trust, BARE_ALPN, None, &Limits::client())?;
    measure(&process, addr, config, BARE_NAME, n, Login::Byte, idle).await
}

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("idle");
    let idle = Duration::from_secs(if opts.quick { 3 } else { 10 });
    let sizes = if opts.quick {
        vec![1_000]
    } else {
        vec![1_000, 10_000, BIG]
    };
    let mut per_conn_cost = 0.0;
    for n in sizes {
        if n == BIG {
            let need = per_conn_cost * n as f64 * 1.5;
            let have = mem_available() as f64;
            if need > have {
                report.notes.push(format!(
                    "{n} clients skipped: about {:.1} GB needed, {:.1} GB available",
                    need / 1e9,
                    have / 1e9
                ));
                continue;
            }
        }
        let (quip, real) = quip_idle(opts, n, idle).await?;
        let bare = bare_idle(n, idle).await?;
        // Both servers and their clients live at once only in turn; budget for the largest.
        per_conn_cost = (quip.rss_per_conn + quip.client_rss_per_conn)
            .max(bare.rss_per_conn + bare.client_rss_per_conn);
        let case = format!("{n} idle clients");
        let rows = [
            (
                "connected",
                quip.connected as f64,
                bare.connected as f64,
                "conns",
            ),
            (
                "connects/s (hs + resume)",
                quip.per_second,
                bare.per_second,
                "1/s",
            ),
            (
                "RSS per connection",
                quip.rss_per_conn / 1024.0,
                bare.rss_per_conn / 1024.0,
                "KiB",
            ),
            (
                "RSS before clients",
                quip.rss_before as f64 / 1048576.0,
                bare.rss_before as f64 / 1048576.0,
                "MiB",
            ),
            (
                "idle CPU (% of a core)",
                quip.cpu_percent,
                bare.cpu_percent,
                "%",
            ),
            (
                "still connected after",
                quip.alive_after as f64,
                bare.alive_after as f64,
                "conns",
            ),
        ];
        for (metric, q, b, unit) in rows {
            report.rows.push(Row::new(&case, metric, q, unit).vs(b));
        }
        if !real {
            report.notes.push(
                "no quip-node next to quip-testnet: the node ran as a child quip-testnet \
                 (same quip_node::start); build it with cargo build --release -p quip-node"
                    .into(),
            );
        }
    }
    report.notes.push(format!(
        "node and bare server are child processes; idle CPU over {} s; keep-alive every {:.1} s \
         on both sides (Limits::client); {CLIENTS_PER_ENDPOINT} clients per client UDP socket, \
         each socket on its own loopback address (127.0.x.y); the node is started with --max-connections N + 1000; storage: {}",
        idle.as_secs(),
        Limits::client().keep_alive.as_secs_f64(),
        storage_name(opts.database_url.as_deref())
    ));
    Ok(report)
}

/// Runs a hidden child scenario until its stdin closes.
pub(crate) async fn child(which: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::var(CHILD_DIR)?);
    let endpoint = match which {
        BARE_CHILD => {
            let ca = ClusterCa::generate()?;
            ca.save(&dir)?;
            let identity = ca.issue(&[BARE_NAME])?;
            let limits = Limits::client();
            let config = quip_quic::server_config(&identity, &[BARE_ALPN], None, &limits)?;
            let server = quip_quic::server_endpoint("127.0.0.1:0".parse()?, config, &limits)?;
            println!("{}", server.local_addr()?);
            let accepting = server.clone();
            tokio::spawn(async move {
                while let Some(incoming) = accepting.accept().await {
                    tokio::spawn(async move {
                        let Ok(conn) = incoming.await else { return };
                        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                            return;
                        };
                        let mut byte = [0u8; 1];
                        if recv.read_exact(&mut byte).await.is_ok() {
                            let _ = send.write_all(&byte).await;
                        }
                        let _ = recv.read_to_end(1).await;
                        conn.closed().await;
                    });
                }
            });
            Some(server)
        }
        NODE_CHILD => {
            std::fs::create_dir_all(&dir)?;
            let url = std::env::var(CHILD_DB)?;
            let port: u16 = std::env::var("QUIP_BENCH_CHILD_PORT")?.parse()?;
            let storage = Arc::new(Store::connect(&url).await?);
            let mut config = quip_node::NodeConfig::new(
                "node-idle".parse()?,
                SocketAddr::from(([127, 0, 0, 1], port)),
                dir.clone(),
            );
            config.max_connections = std::env::var("QUIP_BENCH_CHILD_MAX")?.parse()?;
            config.max_connections_per_addr = config.max_connections;
            let node = quip_node::start(config, storage).await?;
            println!(
                "quip-node listening on {} (clients: quip connect --node {} --ca {})",
                node.local_addr(),
                node.local_addr(),
                node.ca_cert_path().display()
            );
            // Keep the handle alive until stdin closes.
            stdin_closed().await;
            node.kill();
            return Ok(());
        }
        other => anyhow::bail!("unknown child {other:?}"),
    };
    stdin_closed().await;
    drop(endpoint);
    Ok(())
}

/// Resolves when the parent closes our stdin (or dies).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
    })
    .await;
}
