//! `quip-testnet`: parses flags and runs a benchmark.

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
    /// Runs a benchmark scenario against an in-process node, with its bare-QUIC baseline.
    Bench {
        /// The scenario: image, group.
        scenario: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Postgres URL (default: SQLite in a temp directory).
        #[arg(long, env = "QUIP_DATABASE_URL")]
        database_url: Option<String>,
        /// Smaller sizes, for a quick check.
        #[arg(long)]
        quick: bool,
    },
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
        Command::Bench {
            scenario,
            json,
            secs,
            database_url,
            quick,
        } => {
            let opts = quip_testnet::bench::Options {
                secs: secs.clamp(0.5, 600.0),
                database_url,
                quick,
            };
            print!(
                "{}",
                quip_testnet::bench::run(&scenario, &opts, json).await?
            );
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
