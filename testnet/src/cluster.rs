//! A cluster in one process: a master with a fresh CA and N nodes registered with it, all on
//! 127.0.0.1, sharing one storage (SQLite file or Postgres). Tests and benchmarks use it; it
//! can kill a node the hard way and stop and restart the master on the same address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quip_master::{MasterConfig, MasterHandle, RateLimit};
use quip_node::{MasterLink, NodeConfig, NodeHandle, NodeTls};
use quip_proto::ids::NodeName;
use quip_quic::{Certified, Trust};
use quip_storage::Store;
use rustls::pki_types::CertificateDer;

/// How a cluster is tuned for tests: quick heartbeats, quick death detection, cheap bcrypt.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Nodes to start.
    pub nodes: usize,
    /// Storage URL; SQLite in the cluster's directory without one.
    pub database_url: Option<String>,
    /// Master heartbeat interval.
    pub heartbeat: Duration,
    /// Silence after which the master drops a node.
    pub dead_after: Duration,
    /// How often nodes re-read queues while the master is away.
    pub poll_interval: Duration,
    /// bcrypt cost on the nodes.
    pub bcrypt_cost: u32,
}

impl ClusterConfig {
    /// A cluster of `nodes` tuned for tests.
    pub fn for_tests(nodes: usize) -> Self {
        Self {
            nodes,
            database_url: None,
            heartbeat: Duration::from_millis(200),
            dead_after: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            bcrypt_cost: 4,
        }
    }
}

/// A running cluster.
pub struct Cluster {
    config: ClusterConfig,
    dir: tempfile::TempDir,
    master: Option<MasterHandle>,
    master_addr: SocketAddr,
    ca: CertificateDer<'static>,
    /// The shared storage.
    pub storage: Arc<Store>,
    nodes: Vec<Option<NodeHandle>>,
}

impl Cluster {
    /// Starts a master and the configured nodes.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let master_dir = dir.path().join("master");
        quip_master::init(&master_dir)?;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", dir.path().join("quip.db").display()),
        };
        let storage = Arc::new(Store::connect(&url).await?);
        let ca = match Trust::from_ca_file(&master_dir.join("ca.pem"))? {
            Trust::Ca(ca) => ca,
            Trust::Pinned { .. } => anyhow::bail!("no CA certificate"),
        };
        let mut cluster = Self {
            master: None,
            master_addr: "127.0.0.1:0".parse()?,
            ca,
            storage,
            nodes: Vec::new(),
            config,
            dir,
        };
        cluster.start_master().await?;
        for _ in 0..cluster.config.nodes {
            cluster.start_node().await?;
        }
        Ok(cluster)
    }

    fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    /// (Re)starts the master on its address (a fresh port the first time).
    pub async fn start_master(&mut self) -> anyhow::Result<()> {
        let mut config = MasterConfig::new(self.master_addr, self.master_dir());
        config.heartbeat = self.config.heartbeat;
        config.dead_after = self.config.dead_after;
        // Every simulated user comes from 127.0.0.1.
        config.discovery_per_ip = RateLimit {
            per_second: 100_000,
            burst: 100_000,
        };
        let master = quip_master::start(config).await?;
        self.master_addr = master.local_addr();
        self.master = Some(master);
        Ok(())
    }

    /// Stops the master (its nodes keep serving and poll storage meanwhile).
    pub async fn stop_master(&mut self) {
        if let Some(master) = self.master.take() {
            master.shutdown().await;
        }
    }

    /// The running master.
    pub fn master(&self) -> Option<&MasterHandle> {
        self.master.as_ref()
    }

    /// Where clients discover nodes.
    pub fn master_addr(&self) -> SocketAddr {
        self.master_addr
    }

    /// Starts one more node; returns its index.
    pub async fn start_node(&mut self) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let name = NodeName::new(&format!("node-{index}"))?;
        let certs = self.dir.path().join("nodes");
        let identity = quip_master::issue_node(&self.master_dir(), &name, &["127.0.0.1"])?;
        identity.save(&certs, name.as_str())?;
        let mut config = NodeConfig::new(
            name.clone(),
            "127.0.0.1:0".parse()?,
            certs.join(name.as_str()),
        );
        config.bcrypt_cost = self.config.bcrypt_cost;
        config.drain_timeout = Duration::from_millis(500);
        // Every client of a local test network comes from 127.0.0.1.
        config.max_connections_per_addr = config.max_connections;
        // Every simulated user signs up from 127.0.0.1.
        config.signups_per_addr = u32::MAX;
        config.tls = NodeTls::Files {
            cert: certs.join(format!("{name}.pem")),
            key: certs.join(format!("{name}.key")),
            ca: self.master_dir().join("ca.pem"),
        };
        config.master = Some(MasterLink {
            addr: self.master_addr,
            ca: self.ca.clone(),
            identity: Certified::load_from(&certs, name.as_str())?,
            poll_interval: self.config.poll_interval,
        });
        let node = quip_node::start(config, self.storage.clone()).await?;
        self.nodes.push(Some(node));
        Ok(index)
    }

    /// Node `index`, if it is running.
    pub fn node(&self, index: usize) -> Option<&NodeHandle> {
        self.nodes.get(index).and_then(Option::as_ref)
    }

    /// Stops node `index` gracefully: its clients are told to reconnect elsewhere.
    pub async fn stop_node(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index).and_then(Option::take) {
            node.shutdown().await;
        }
    }

    /// Kills node `index` without a graceful shutdown.
    pub fn kill_node(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index).and_then(Option::take) {
            node.kill();
        }
    }

    /// How clients trust the cluster.
    pub fn trust(&self) -> Trust {
        Trust::Ca(self.ca.clone())
    }

    /// Waits until the master lists `count` healthy nodes (or `within` passes).
    pub async fn wait_for_nodes(&self, count: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(master) = &self.master
                && master.status().iter().filter(|n| n.healthy).count() == count
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}
