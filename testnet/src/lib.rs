//! `quip-testnet`: a local Quip network, benchmarks against bare QUIC, fault drills and
//! protocol transcripts. Library-first: the binary only parses flags.

pub mod bench;
pub mod cluster;
mod fixtures;
