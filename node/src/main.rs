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
    /// Most connections from one client address [default: 100].
    #[arg(long, env = "QUIP_MAX_CONNECTIONS_PER_ADDR")]
    max_connections_per_addr: Option<usize>,
    /// Most sessions one account may have open on this node [default: 8].
    #[arg(long, env = "QUIP_MAX_SESSIONS_PER_USER")]
    max_sessions_per_user: Option<usize>,
    /// Seconds a new connection has to log in [default: 30].
    #[arg(long, env = "QUIP_LOGIN_TIMEOUT")]
    login_timeout: Option<u64>,
    /// Seconds one frame may take from its first byte to its last [default: 30].
    #[arg(long, env = "QUIP_FRAME_DEADLINE")]
    frame_deadline: Option<u64>,
    /// Seconds an image upload may send nothing before it is dropped [default: 30].
    #[arg(long, env = "QUIP_UPLOAD_IDLE")]
    upload_idle: Option<u64>,
    /// Requests per connection before login, as PER_SECOND:BURST [default: 2:10].
    #[arg(long, env = "QUIP_REQUESTS_BEFORE_LOGIN")]
    requests_before_login: Option<quip_quic::RateLimit>,
    /// Requests per connection once logged in, as PER_SECOND:BURST [default: 5000:20000].
    #[arg(long, env = "QUIP_REQUESTS_AFTER_LOGIN")]
    requests_after_login: Option<quip_quic::RateLimit>,
    /// Bytes waiting for one slow client before its pushes are dropped and re-read from
    /// storage later [default: 2097152].
    #[arg(long, env = "QUIP_OUTBOX_BYTES")]
    outbox_bytes: Option<usize>,
    /// Signups one client address may make at once; then one more per
    /// --signup-window-secs divided by this.
    #[arg(long, env = "QUIP_SIGNUPS_PER_ADDR", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    signups_per_addr: u32,
    /// The window of --signups-per-addr, in seconds.
    #[arg(long, env = "QUIP_SIGNUP_WINDOW_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    signup_window_secs: u64,
    /// Most times one user may put others into groups (creations with members, adds) per
    /// --group-placement-window-secs, in a burst; more are refused with a retry time.
    #[arg(long, env = "QUIP_MAX_GROUP_PLACEMENTS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    max_group_placements: u32,
    /// How long the group-placement allowance takes to refill, in seconds.
    #[arg(long, env = "QUIP_GROUP_PLACEMENT_WINDOW_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    group_placement_window_secs: u64,
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
    config.signups_per_addr = args.signups_per_addr;
    config.signup_window = std::time::Duration::from_secs(args.signup_window_secs);
    config.advertise = args.advertise;
    fn set<T>(value: Option<T>, field: &mut T) {
        if let Some(value) = value {
            *field = value;
        }
    }
    let secs = std::time::Duration::from_secs;
    set(
        args.max_connections_per_addr,
        &mut config.max_connections_per_addr,
    );
    set(
        args.max_sessions_per_user,
        &mut config.max_sessions_per_user,
    );
    set(args.login_timeout.map(secs), &mut config.login_timeout);
    set(args.frame_deadline.map(secs), &mut config.frame_deadline);
    set(args.upload_idle.map(secs), &mut config.upload_idle);
    set(
        args.requests_before_login,
        &mut config.requests_before_login,
    );
    set(args.requests_after_login, &mut config.requests_after_login);
    set(args.outbox_bytes, &mut config.outbox_bytes);
    config.max_group_placements = args.max_group_placements;
    config.group_placement_window =
        std::time::Duration::from_secs(args.group_placement_window_secs);
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
            _ = quip_quic::parent_gone() => {}
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
