//! `quip-master`: parses flags, sets up logging, and runs one of `init`, `issue-node`,
//! `serve` (the default) or `status`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand};
use quip_master::MasterConfig;
use quip_proto::ids::NodeName;

/// The Quip master: registers nodes, sends each new client to the least busy one and relays
/// messages between nodes. Without a subcommand it serves (`quip-master serve`).
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the cluster CA and the master's certificate.
    Init(InitArgs),
    /// Issue a node's certificate (signed by the cluster CA) and print how to start it.
    IssueNode(IssueArgs),
    /// Serve nodes and clients (the default).
    Serve(ServeArgs),
    /// Ask a running master for every node's address, load and health.
    Status(StatusArgs),
}

/// Where the master keeps its CA and certificate.
#[derive(Debug, ClapArgs)]
struct DirArg {
    /// Directory holding ca.pem, ca.key, master.pem and master.key. Defaults to the user's
    /// data directory, `quip/master`.
    #[arg(long, env = "QUIP_MASTER_DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Another name or IP the master is reached by (repeatable); localhost, 127.0.0.1, ::1
    /// and quip-master are always included.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
}

#[derive(Debug, ClapArgs)]
struct IssueArgs {
    /// The node's name: lowercase letters, digits and '-', at most 63.
    name: NodeName,
    /// Where clients will reach the node, HOST:PORT (the host goes into the certificate).
    #[arg(long, value_name = "HOST:PORT")]
    addr: String,
    #[command(flatten)]
    dir: DirArg,
    /// Where to write NAME.pem and NAME.key (default: DIR/nodes).
    #[arg(long, value_name = "OUTDIR")]
    out: Option<PathBuf>,
    /// The master's address, for the printed quip-node command.
    #[arg(long, default_value = "127.0.0.1:7000")]
    master: String,
}

#[derive(Debug, ClapArgs)]
struct ServeArgs {
    /// UDP address to serve nodes and clients on.
    #[arg(long, env = "QUIP_MASTER_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    #[command(flatten)]
    dir: DirArg,
    /// Heartbeat interval nodes are told to keep, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_ms: u64,
    /// A node silent this long is dropped from discovery, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(20..=600_000))]
    dead_after_ms: u64,
    /// Most concurrent connections, nodes and clients together.
    #[arg(long, env = "QUIP_MASTER_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
}

#[derive(Debug, ClapArgs)]
struct StatusArgs {
    /// The master's address, HOST:PORT.
    #[arg(long, env = "QUIP_MASTER", default_value = "127.0.0.1:7000")]
    master: String,
    /// The cluster CA certificate (ca.pem from quip-master init).
    #[arg(long, env = "QUIP_CA")]
    ca: PathBuf,
    /// How long to wait for the master, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

impl DirArg {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let dirs = directories::ProjectDirs::from("", "", "quip")
            .context("cannot find a home directory; pass --dir")?;
        Ok(dirs.data_dir().join("master"))
    }
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
    match args.command {
        Some(Command::Init(init)) => run_init(init),
        Some(Command::IssueNode(issue)) => run_issue(issue),
        Some(Command::Status(status)) => run_status(status).await,
        Some(Command::Serve(serve)) => run_serve(serve).await,
        None => run_serve(args.serve).await,
    }
}

fn run_init(args: InitArgs) -> anyhow::Result<()> {
    let dir = args.dir.resolve()?;
    let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
    let ca = quip_master::init_with_hosts(&dir, &hosts)?;
    println!(
        "Cluster CA and master certificate written to {}",
        dir.display()
    );
    println!(
        "  ca.pem        the cluster CA: give it to clients (quip connect --master ADDR --ca {})",
        ca.display()
    );
    println!("  ca.key        keep it secret: whoever holds it can admit nodes");
    println!("  master.pem    the master's certificate (and master.key)");
    println!(
        "Next: quip-master issue-node NAME --addr HOST:PORT --dir {}",
        dir.display()
    );
    println!("      quip-master serve --dir {}", dir.display());
    Ok(())
}

fn run_issue(args: IssueArgs) -> anyhow::Result<()> {
    let dir = args.dir.resolve()?;
    let (host, port) = quip_master::split_host_port(&args.addr)?;
    let certified = quip_master::issue_node(&dir, &args.name, &[&host])?;
    let out = args.out.unwrap_or_else(|| dir.join("nodes"));
    certified
        .save(&out, args.name.as_str())
        .with_context(|| format!("cannot write the certificate into {}", out.display()))?;
    let file = |ext: &str| out.join(format!("{}.{ext}", args.name));
    println!("Issued {} for {host}; start the node with:", args.name);
    let bind = match host.parse::<IpAddr>() {
        Ok(ip) if !ip.is_loopback() => format!(" --bind {ip}"),
        _ => String::new(),
    };
    println!(
        "quip-node {port} --name {}{bind} --cert {} --key {} --ca {} --master {}",
        args.name,
        file("pem").display(),
        file("key").display(),
        quip_quic::ClusterCa::cert_path(&dir).display(),
        args.master
    );
    Ok(())
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = args.dir.resolve()?;
    let mut config = MasterConfig::new(args.listen, dir.clone());
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);
    config.dead_after = Duration::from_millis(args.dead_after_ms);
    config.max_connections = args.max_connections;
    let master = quip_master::start(config).await?;
    print_serving(master.local_addr(), &dir, master.ca_cert_path());
    let stop = master.stopper();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop.send(true);
    });
    master.wait().await;
    Ok(())
}

fn print_serving(addr: SocketAddr, dir: &Path, ca: &Path) {
    println!("quip-master listening on {addr}");
    println!(
        "  nodes:   quip-master issue-node NAME --addr HOST:PORT --dir {} --master {addr}",
        dir.display()
    );
    println!(
        "  clients: quip connect --master {addr} --ca {}",
        ca.display()
    );
}

async fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let trust = quip_quic::Trust::from_ca_file(&args.ca)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let nodes = quip_master::query_status(&args.master, &trust, timeout).await?;
    print!("{}", quip_master::format_status(&nodes));
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = quip_quic::parent_gone() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Args, Command};

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        let args = Args::try_parse_from(["quip-master", "--listen", "127.0.0.1:7100"]).unwrap();
        assert!(args.command.is_none());
        assert_eq!(args.serve.listen.port(), 7100);
        let args =
            Args::try_parse_from(["quip-master", "issue-node", "node-1", "--addr", "h:1"]).unwrap();
        assert!(matches!(args.command, Some(Command::IssueNode(_))));
        assert!(
            Args::try_parse_from(["quip-master", "issue-node", "Bad_Name", "--addr", "h:1"])
                .is_err()
        );
    }
}
