//! `quip-testnet`: a local master and nodes, simulated users, benchmarks, fault drills and
//! protocol transcripts. Arrives with issue 7; the binary is a `--help` shell until then.
