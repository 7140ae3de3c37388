//! `quip-testnet`: a local Quip network, benchmarks against bare QUIC, fault drills and
//! protocol transcripts. Library-first: the binary only parses flags.

pub mod bench;
pub mod cluster;
pub mod drill;
mod fixtures;
pub mod ledger;
pub mod network;
pub mod procs;
pub mod sim;
pub mod transcript;
pub mod up;
