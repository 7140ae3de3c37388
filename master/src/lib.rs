//! `quip-master`: node registry, load-balancing discovery, user→node directory and relay
//! between nodes. Arrives with issue 6; the binary is a `--help` shell until then.
