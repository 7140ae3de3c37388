//! The node's data directory is owner-only whatever the umask: the real `quip-node` binary
//! runs under umask 022 (which would make new files 0644 and directories 0755) and creates
//! its data directory 0700, its SQLite database with the WAL and shared-memory files 0600,
//! and its private keys 0600.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the node when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn node_data_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var").join("quip");
    let mut node = Running(
        Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_quip-node"))
            .arg("0")
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("quip-node starts"),
    );
    // It prints a line once it listens, or exits (end of output) if it cannot start.
    let out = BufReader::new(node.0.stdout.take().unwrap());
    let listening = out
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("listening"));
    assert!(listening, "quip-node did not start");

    for dir in ["", "ca"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "directory {dir:?}");
    }
    let files = [
        "quip.db",
        "quip.db-wal",
        "quip.db-shm",
        "ca/ca.key",
        "node-node-0.key",
    ];
    for file in files {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}
