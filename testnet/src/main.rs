//! `quip-testnet`: parses flags and runs a local network (`up`), a fault drill (`drill`) or a
//! benchmark (`bench`).

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Runs a local Quip network, benchmarks and fault drills.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts a master and N nodes as real processes on 127.0.0.1 (fresh CA and data
    /// directory), prints how to connect, and shows each node's load live. Keys (type one
    /// and press Enter): k kills a random node (SIGKILL), r restarts killed nodes, m stops or
    /// starts the master, q quits. Ctrl-C stops everything.
    Up(UpArgs),
    /// Fault drill against real processes under steady load: kill -9 a random node every
    /// 5-15 s, the master once for 30 s, Postgres once (with --database-url); then counts
    /// sent, acknowledged, delivered, lost and shown twice. Exits with 1 if anything
    /// acknowledged was lost or shown twice.
    Drill(DrillArgs),
    /// Runs a benchmark scenario against an in-process node, with its bare-QUIC baseline.
    Bench {
        /// The scenario: image, group, fanout (an MLS group's messages through a node), dm,
        /// login, drain, idle, hostile, poison, crypto, mls, or all.
        scenario: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Postgres URL (default: SQLite in a temp directory). With `all`, every scenario runs
        /// on SQLite and `dm` runs once more on Postgres.
        #[arg(long, env = "QUIP_DATABASE_URL")]
        database_url: Option<String>,
        /// Smaller sizes, for a quick check.
        #[arg(long)]
        quick: bool,
        /// Also rewrite the results table in this README (between its bench markers) from
        /// this run's headline figures.
        #[arg(long, value_name = "README")]
        readme: Option<std::path::PathBuf>,
        /// Run nothing: take the reports from this file (saved with --json) instead.
        #[arg(long, value_name = "JSON")]
        from: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// Postgres URL shared by the nodes (default: one SQLite file in the data directory).
    #[arg(long, env = "QUIP_DATABASE_URL")]
    database_url: Option<String>,
    /// Simulated users chatting among themselves (DMs, a group, now and then an image).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=500))]
    users: u16,
    /// Data directory (default: a fresh one under the system temp directory). An existing
    /// one is reused with its CA and data.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The master's port; node i listens on PORT_BASE + i.
    #[arg(long, default_value_t = 7000)]
    port_base: u16,
    /// No live view: run until Ctrl-C (for scripts).
    #[arg(long)]
    no_view: bool,
}

#[derive(Debug, clap::Args)]
struct DrillArgs {
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=3600))]
    secs: u64,
    /// Postgres URL (default: SQLite shared by the nodes); Postgres is restarted once.
    #[arg(long, env = "QUIP_DATABASE_URL")]
    database_url: Option<String>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    nodes: u16,
    /// Simulated users (paired for DMs, all in one group).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(2..=200))]
    users: u16,
    /// Messages per second, all users together.
    #[arg(long, default_value_t = 12.0)]
    rate: f64,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Data directory (default: a fresh one under the system temp directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// With --database-url: do not restart the local Postgres cluster (e.g. when it is
    /// remote, or shared with other work).
    #[arg(long)]
    no_pg_restart: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,quinn=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().command {
        Command::Up(args) => {
            let binaries = quip_testnet::procs::Binaries::beside_current_exe()?;
            let mut config = quip_testnet::network::TestnetConfig::new(args.nodes.into(), binaries);
            config.database_url = args.database_url;
            config.dir = args.dir;
            config.port_base = Some(args.port_base);
            let opts = quip_testnet::up::UpOptions {
                users: args.users.into(),
                view: !args.no_view,
            };
            quip_testnet::up::run(config, opts).await?;
        }
        Command::Drill(args) => {
            if !(args.rate > 0.0 && args.rate <= 1000.0) {
                anyhow::bail!("--rate must be between 0 and 1000 messages per second");
            }
            let config = quip_testnet::drill::DrillConfig {
                secs: args.secs,
                nodes: args.nodes.into(),
                database_url: args.database_url,
                users: args.users.into(),
                rate: args.rate,
                seed: args.seed,
                binaries: quip_testnet::procs::Binaries::beside_current_exe()?,
                dir: args.dir,
                restart_postgres: !args.no_pg_restart,
            };
            // Ctrl-C drops the drill: its child processes are killed on drop.
            let report = tokio::select! {
                report = quip_testnet::drill::run(config, |line| eprintln!("{line}")) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            if report.tally.lost > 0 || report.tally.shown_twice > 0 {
                std::process::exit(1);
            }
        }
        Command::Bench {
            scenario,
            json,
            secs,
            database_url,
            quick,
            readme,
            from,
        } => {
            let opts = quip_testnet::bench::Options {
                secs: secs.clamp(0.5, 600.0),
                database_url,
                quick,
            };
            let reports = match from {
                Some(path) => quip_testnet::bench::load(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                )?,
                None => quip_testnet::bench::run(&scenario, &opts).await?,
            };
            print!("{}", quip_testnet::bench::render(&reports, json)?);
            if let Some(path) = readme {
                use quip_testnet::bench::readme;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                std::fs::write(&path, readme::splice(&text, &readme::table(&reports))?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("results table in {} updated", path.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Args::command().debug_assert();
    }
}
