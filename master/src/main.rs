//! `quip-master` (a shell until the master lands: it only parses flags).

use clap::Parser;

/// The Quip master: registers nodes, sends each new client to the least busy one and relays
/// messages between nodes. Not available in this version.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    Args::parse();
    eprintln!("quip-master: not available in this version; run quip-node directly");
    std::process::exit(1);
}
