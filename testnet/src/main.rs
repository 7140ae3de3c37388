//! `quip-testnet` (a shell until the testnet lands: it only parses flags).

use clap::Parser;

/// Runs a local Quip network, benchmarks and fault drills. Not available in this version.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    Args::parse();
    eprintln!("quip-testnet: not available in this version; run quip-node directly");
    std::process::exit(1);
}
