//! A Quip network of real processes on 127.0.0.1: one `quip-master` and N `quip-node`
//! children ([`crate::procs`]), a fresh cluster CA, one shared database. `quip-testnet up`,
//! the fault drills and `tests/procs.rs` are built on it.
//!
//! Layout of the data directory:
//!
//! ```text
//! DIR/master/        ca.pem, ca.key, master.pem, master.key
//! DIR/certs/         node-N.pem, node-N.key (issued by the cluster CA)
//! DIR/nodes/node-N/  each node's data directory
//! DIR/logs/          master.log, node-N.log (stdout and stderr, appended across restarts)
//! DIR/quip.db        the SQLite database every node shares (unless a database URL is given)
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quip_proto::ids::{MsgId, NodeName, UserName};
use quip_proto::relay::NodeStatus;
use quip_quic::Trust;
use quip_storage::{Storage, Store};

use crate::procs::{Binaries, Child, TestnetError, io};

/// How a process testnet is laid out.
#[derive(Debug, Clone)]
pub struct TestnetConfig {
    /// How many nodes.
    pub nodes: usize,
    /// Postgres URL; SQLite in the data directory without one.
    pub database_url: Option<String>,
    /// The data directory; a fresh one under the system temp directory without one.
    pub dir: Option<PathBuf>,
    /// The master's port; node `i` (from 1) listens on `port_base + i`. Free ports without.
    pub port_base: Option<u16>,
    /// Heartbeat interval the master asks of nodes.
    pub heartbeat: Duration,
    /// Silence after which the master drops a node.
    pub dead_after: Duration,
    /// bcrypt cost on the nodes (the binary refuses less than 12).
    pub bcrypt_cost: u32,
    /// The executables.
    pub binaries: Binaries,
}

impl TestnetConfig {
    /// `nodes` nodes with the binaries' defaults (1 s heartbeat, dead after 3 s, cost 12).
    pub fn new(nodes: usize, binaries: Binaries) -> Self {
        Self {
            nodes,
            database_url: None,
            dir: None,
            port_base: None,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            bcrypt_cost: 12,
            binaries,
        }
    }
}

/// One node of the testnet and its process, if running.
#[derive(Debug)]
pub struct NodeProc {
    /// Its name (also the name in its certificate).
    pub name: NodeName,
    /// Where clients reach it.
    pub addr: SocketAddr,
    /// The process, while it runs.
    pub child: Option<Child>,
    /// When it was last killed or stopped, while it is down.
    pub down_since: Option<Instant>,
}

/// A running (or partly stopped) network of processes.
#[derive(Debug)]
pub struct Testnet {
    config: TestnetConfig,
    dir: PathBuf,
    url: String,
    master_addr: SocketAddr,
    master: Option<Child>,
    /// The nodes, in order.
    pub nodes: Vec<NodeProc>,
    trust: Trust,
}

fn free_ports(count: usize) -> Result<Vec<u16>, TestnetError> {
    let sockets = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("cannot find a free UDP port"))?;
    sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(io("cannot find a free UDP port"))
}

impl Testnet {
    /// Prepares the data directory (CA, node certificates, database schema) without starting
    /// anything. An existing directory is reused as it is.
    pub async fn create(config: TestnetConfig) -> Result<Self, TestnetError> {
        if config.nodes > 64 {
            return Err(TestnetError::Invalid("at most 64 nodes".into()));
        }
        let dir = match &config.dir {
            Some(dir) => dir.clone(),
            None => tempfile::Builder::new()
                .prefix("quip-testnet-")
                .tempdir()
                .map_err(io("cannot create a temporary directory"))?
                .keep(),
        };
        for sub in ["master", "certs", "nodes", "logs"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("cannot create {}", dir.join(sub).display())))?;
        }
        let master_dir = dir.join("master");
        if !quip_quic::ClusterCa::cert_path(&master_dir).exists() {
            quip_master::init(&master_dir)?;
        }
        let ports = match config.port_base {
            Some(base) => (0..=config.nodes)
                .map(|i| base.checked_add(i as u16))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| TestnetError::Invalid("--port-base is too high".into()))?,
            None => free_ports(config.nodes + 1)?,
        };
        let mut nodes = Vec::with_capacity(config.nodes);
        for (i, port) in ports.iter().skip(1).enumerate() {
            let name = NodeName::new(&format!("node-{}", i + 1))
                .map_err(|e| TestnetError::Invalid(e.to_string()))?;
            if !dir.join("certs").join(format!("{name}.pem")).exists() {
                quip_master::issue_node(&master_dir, &name, &["127.0.0.1"])?
                    .save(&dir.join("certs"), name.as_str())?;
            }
            nodes.push(NodeProc {
                name,
                addr: SocketAddr::from(([127, 0, 0, 1], *port)),
                child: None,
                down_since: None,
            });
        }
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", dir.join("quip.db").display()),
        };
        // Migrate once here, so nodes starting together do not race to create the schema.
        quip_storage::Store::connect(&url).await?.close().await;
        let trust = Trust::from_ca_file(&quip_quic::ClusterCa::cert_path(&master_dir))?;
        Ok(Self {
            master_addr: SocketAddr::from(([127, 0, 0, 1], ports[0])),
            config,
            dir,
            url,
            master: None,
            nodes,
            trust,
        })
    }

    /// Starts the master and every node, and waits until the master lists them all healthy.
    pub async fn start(&mut self, within: Duration) -> Result<(), TestnetError> {
        self.start_master()?;
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        self.wait_healthy(self.nodes.len(), within).await
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The storage URL the nodes share.
    pub fn database_url(&self) -> &str {
        &self.url
    }

    /// Where clients discover nodes.
    pub fn master_addr(&self) -> SocketAddr {
        self.master_addr
    }

    /// The cluster CA certificate clients pass as `--ca`.
    pub fn ca_path(&self) -> PathBuf {
        quip_quic::ClusterCa::cert_path(&self.dir.join("master"))
    }

    /// How clients trust the cluster.
    pub fn trust(&self) -> Trust {
        self.trust.clone()
    }

    /// The line a user pastes into another terminal to chat on this network.
    pub fn connect_line(&self) -> String {
        format!(
            "quip --master {} --ca {} connect",
            self.master_addr,
            self.ca_path().display()
        )
    }

    /// The master's log file.
    pub fn master_log(&self) -> PathBuf {
        self.dir.join("logs").join("master.log")
    }

    /// Node `index`'s log file.
    pub fn node_log(&self, index: usize) -> PathBuf {
        let name = self.nodes.get(index).map_or("node", |n| n.name.as_str());
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// The master's process id, if it runs.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::pid)
    }

    /// Starts the master (again) on its address; a no-op if it runs.
    pub fn start_master(&mut self) -> Result<(), TestnetError> {
        if self.master.is_some() {
            return Ok(());
        }
        let args = [
            "serve".to_owned(),
            "--listen".to_owned(),
            self.master_addr.to_string(),
            "--dir".to_owned(),
            self.dir.join("master").display().to_string(),
            "--heartbeat-ms".to_owned(),
            self.config.heartbeat.as_millis().to_string(),
            "--dead-after-ms".to_owned(),
            self.config.dead_after.as_millis().to_string(),
        ];
        let log = self.master_log();
        self.master = Some(Child::spawn(
            "quip-master",
            &self.config.binaries.master,
            &args,
            &log,
        )?);
        Ok(())
    }

    /// Stops the master gracefully (SIGTERM; SIGKILL after `grace`). Nodes keep serving.
    pub async fn stop_master(&mut self, grace: Duration) {
        if let Some(mut master) = self.master.take() {
            master.stop(grace).await;
        }
    }

    /// Kills the master with SIGKILL. Nodes keep serving and reconnect when it is back.
    pub fn kill_master(&mut self) {
        if let Some(mut master) = self.master.take() {
            master.kill();
        }
    }

    /// Starts node `index` (again) on its address; a no-op if it runs.
    pub fn start_node(&mut self, index: usize) -> Result<(), TestnetError> {
        let log = self.node_log(index);
        let certs = self.dir.join("certs");
        let Some(node) = self.nodes.get_mut(index) else {
            return Err(TestnetError::Invalid(format!("no node {index}")));
        };
        if node.child.is_some() {
            return Ok(());
        }
        let name = node.name.as_str();
        let data = self.dir.join("nodes").join(name);
        let path = |p: PathBuf| p.display().to_string();
        let args = [
            node.addr.port().to_string(),
            "--name".to_owned(),
            name.to_owned(),
            "--data-dir".to_owned(),
            path(data),
            "--database-url".to_owned(),
            self.url.clone(),
            "--cert".to_owned(),
            path(certs.join(format!("{name}.pem"))),
            "--key".to_owned(),
            path(certs.join(format!("{name}.key"))),
            "--ca".to_owned(),
            path(quip_quic::ClusterCa::cert_path(&self.dir.join("master"))),
            "--master".to_owned(),
            self.master_addr.to_string(),
            "--bcrypt-cost".to_owned(),
            self.config.bcrypt_cost.to_string(),
            // Every simulated user signs up from 127.0.0.1.
            "--signups-per-addr".to_owned(),
            u32::MAX.to_string(),
        ];
        node.child = Some(Child::spawn(name, &self.config.binaries.node, &args, &log)?);
        node.down_since = None;
        Ok(())
    }

    /// Kills node `index` with SIGKILL: no goodbye to its clients or the master.
    pub fn kill_node(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index)
            && let Some(mut child) = node.child.take()
        {
            child.kill();
            node.down_since = Some(Instant::now());
        }
    }

    /// Indexes of the nodes whose process runs.
    pub fn running_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// Children that exited on their own since the last call, as errors (their process
    /// slot is cleared, so they show as down and can be restarted).
    pub fn reap_exited(&mut self) -> Vec<TestnetError> {
        let mut gone = Vec::new();
        if let Some(err) = self.master.as_mut().and_then(Child::exit_error) {
            self.master = None;
            gone.push(err);
        }
        for node in &mut self.nodes {
            if let Some(err) = node.child.as_mut().and_then(Child::exit_error) {
                node.child = None;
                node.down_since = Some(Instant::now());
                gone.push(err);
            }
        }
        gone
    }

    /// Asks the master for every node's status (`within` for the whole exchange).
    pub async fn status(&self, within: Duration) -> Result<Vec<NodeStatus>, TestnetError> {
        let addr = self.master_addr.to_string();
        Ok(quip_master::query_status(&addr, &self.trust, within).await?)
    }

    /// Waits until the master lists at least `count` healthy nodes, failing early if a
    /// child exits.
    pub async fn wait_healthy(
        &mut self,
        count: usize,
        within: Duration,
    ) -> Result<(), TestnetError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(err) = self.reap_exited().into_iter().next() {
                return Err(err);
            }
            if let Ok(nodes) = self.status(Duration::from_millis(500)).await
                && nodes.iter().filter(|n| n.healthy).count() >= count
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(TestnetError::NotReady {
            what: format!("{count} healthy nodes"),
            within,
        })
    }

    /// Stops everything: nodes first (SIGTERM to all at once, SIGKILL after `grace`), then
    /// the master.
    pub async fn shutdown(&mut self, grace: Duration) {
        let mut stopping: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|node| node.child.take())
            .collect();
        stopping.iter_mut().for_each(Child::terminate);
        let deadline = Instant::now() + grace;
        for child in &mut stopping {
            child.reap_by(deadline).await;
        }
        self.stop_master(grace).await;
    }

    /// How many of `pairs` (recipient, message) are still waiting in the recipient's queue.
    pub async fn still_queued(&self, pairs: Vec<(UserName, MsgId)>) -> u64 {
        if pairs.is_empty() {
            return 0;
        }
        let Ok(store) = Store::connect(&self.url).await else {
            return 0;
        };
        let mut found = 0;
        for (user, id) in pairs {
            let mut after = 0;
            // Bounded: the drill's queues hold at most a few thousand messages.
            for _ in 0..100 {
                let Ok(page) = store.pending(&user, after, 500).await else {
                    break;
                };
                if page.iter().any(|m| m.id == id) {
                    found += 1;
                    break;
                }
                match page.last() {
                    Some(last) => after = last.seq,
                    None => break,
                }
            }
        }
        store.close().await;
        found
    }
}
