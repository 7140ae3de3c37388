//! `quip-node PORT`: parses flags, sets up logging, runs a node until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use quip_node::{MasterLink, NodeConfig, NodeTls};
use quip_proto::ids::NodeName;

/// A Quip node: serves clients over QUIC, stores their encrypted messages.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// UDP port to serve clients on (run as many nodes as you like, one port each).
    port: u16,
    /// Address to bind.
    #[arg(long, env = "QUIP_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The node's name (defaults to `node-PORT`).
    #[arg(long, env = "QUIP_NODE_NAME")]
    name: Option<NodeName>,
    /// Data directory (certificates, SQLite database). Defaults to the user's data
    /// directory, `quip/node-PORT`.
    #[arg(long, env = "QUIP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Storage URL: `sqlite://PATH` (default: `quip.db` in the data directory) or
    /// `postgres://USER@HOST/DB`.
    #[arg(long, env = "QUIP_DATABASE_URL")]
    database_url: Option<String>,
    /// Certificate chain issued by the cluster CA (with --key and --ca). Without these the
    /// node makes its own CA in the data directory.
    #[arg(long, env = "QUIP_CERT", requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// Private key of --cert.
    #[arg(long, env = "QUIP_KEY")]
    key: Option<PathBuf>,
    /// The cluster CA certificate.
    #[arg(long, env = "QUIP_CA")]
    ca: Option<PathBuf>,
    /// The master to register with (`HOST:PORT`); needs --cert, --key and --ca from
    /// `quip-master issue-node`. Without it the node serves alone.
    #[arg(long, env = "QUIP_MASTER", requires_all = ["cert", "key", "ca"])]
    master: Option<SocketAddr>,
    /// The address clients should be sent to, if not the bound one.
    #[arg(long, env = "QUIP_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Most concurrent client connections.
    #[arg(long, env = "QUIP_MAX_CONNECTIONS", default_value_t = 50_000)]
    max_connections: usize,
    /// Largest image accepted, in bytes.
    #[arg(long, env = "QUIP_MAX_IMAGE", default_value_t = quip_proto::limits::DEFAULT_MAX_IMAGE)]
    max_image: u64,
    /// bcrypt cost for login secrets (at least 12).
    #[arg(long, env = "QUIP_BCRYPT_COST", default_value_t = 12, value_parser = clap::value_parser!(u32).range(12..=31))]
    bcrypt_cost: u32,
    /// Most unread messages waiting for one recipient [default: 10000].
    #[arg(long, env = "QUIP_QUEUE_MAX_MESSAGES")]
    queue_max_messages: Option<u64>,
    /// Most unread MiB waiting for one recipient, images included [default: 512].
    #[arg(long, env = "QUIP_QUEUE_MAX_MIB")]
    queue_max_mib: Option<u64>,
    /// Most unread messages from one sender waiting for one recipient [default: 2000].
    #[arg(long, env = "QUIP_QUEUE_MAX_MESSAGES_PER_SENDER")]
    queue_max_messages_per_sender: Option<u64>,
    /// Most unread MiB from one sender waiting for one recipient [default: 128].
    #[arg(long, env = "QUIP_QUEUE_MAX_MIB_PER_SENDER")]
    queue_max_mib_per_sender: Option<u64>,
    /// Days an unread message waits before it expires and its sender is told [default: 30].
    #[arg(long, env = "QUIP_RETENTION_DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    retention_days: Option<u64>,
    /// Minutes after which an unfinished image upload is deleted [default: 10].
    #[arg(long, env = "QUIP_ABANDONED_UPLOAD_MINUTES", value_parser = clap::value_parser!(u64).range(1..))]
    abandoned_upload_minutes: Option<u64>,
}

fn default_data_dir(port: u16) -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "quip")
        .context("cannot find a home directory; pass --data-dir")?;
    Ok(dirs.data_dir().join(format!("node-{port}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .init();
    let args = Args::parse();
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir(args.port)?,
    };
    // Owner-only whatever the umask: it holds the node's keys and (by default) its database.
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("cannot make {} owner-only", data_dir.display()))?;
    let name = match args.name {
        Some(name) => name,
        None => NodeName::new(&format!("node-{}", args.port))?,
    };
    let mut config = NodeConfig::new(
        name,
        SocketAddr::new(args.bind, args.port),
        data_dir.clone(),
    );
    config.max_connections = args.max_connections;
    config.max_image_bytes = args.max_image;
    config.bcrypt_cost = args.bcrypt_cost;
    config.advertise = args.advertise;
    let quota = &mut config.queue_quota;
    const MIB: u64 = 1024 * 1024;
    quota.max_messages = args.queue_max_messages.unwrap_or(quota.max_messages);
    quota.max_bytes = args
        .queue_max_mib
        .map_or(quota.max_bytes, |m| m.saturating_mul(MIB));
    quota.max_messages_per_sender = args
        .queue_max_messages_per_sender
        .unwrap_or(quota.max_messages_per_sender);
    quota.max_bytes_per_sender = args
        .queue_max_mib_per_sender
        .map_or(quota.max_bytes_per_sender, |m| m.saturating_mul(MIB));
    if let Some(days) = args.retention_days {
        config.retention = std::time::Duration::from_secs(days * 86_400);
    }
    if let Some(minutes) = args.abandoned_upload_minutes {
        config.abandoned_upload = std::time::Duration::from_secs(minutes.saturating_mul(60));
    }
    if let (Some(cert), Some(key), Some(ca)) = (args.cert, args.key, args.ca) {
        if let Some(addr) = args.master {
            config.master = Some(MasterLink {
                addr,
                ca: quip_quic::Trust::from_ca_file(&ca)
                    .ok()
                    .and_then(|t| match t {
                        quip_quic::Trust::Ca(cert) => Some(cert),
                        quip_quic::Trust::Pinned { .. } => None,
                    })
                    .with_context(|| format!("no CA certificate in {}", ca.display()))?,
                identity: quip_quic::Certified::load(&cert, &key)
                    .with_context(|| format!("cannot load {}", cert.display()))?,
                poll_interval: std::time::Duration::from_secs(2),
            });
        }
        config.tls = NodeTls::Files { cert, key, ca };
    }
    let url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("quip.db").display()));
    let storage = quip_storage::Store::connect(&url)
        .await
        .with_context(|| format!("cannot open storage {}", redact(&url)))?;
    let node = quip_node::start(config, Arc::new(storage)).await?;
    println!(
        "quip-node listening on {} (clients: quip connect --node {} --ca {})",
        node.local_addr(),
        node.local_addr(),
        node.ca_cert_path().display()
    );
    let stop = node.stopper();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: telling clients to reconnect");
        let _ = stop.send(true);
    });
    node.wait().await;
    Ok(())
}

/// A storage URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Args::command().debug_assert();
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact("postgres://quip:hunter2@db/quip"),
            "postgres://quip:***@db/quip"
        );
        assert_eq!(super::redact("sqlite:///tmp/q.db"), "sqlite:///tmp/q.db");
    }
}
