//! What the `quip` program writes is owner-only whatever the umask: the real binary runs
//! under umask 022 (which would make new files 0644 and directories 0755), registers two
//! users, sends and receives an image, and every directory under its data root is 0700 and
//! every file 0600.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use quip_node::NodeConfig;

const PASSWORD: &str = "a long and uncommon passphrase for quip tests";

/// Runs `quip ARGS` with a permissive umask and the password in the environment.
async fn quip(node: &str, root: &Path, args: &[&str]) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_quip"))
        .args(["--node", node, "--data-dir"])
        .arg(root)
        .args(args)
        .env("QUIP_PASSWORD", PASSWORD)
        .kill_on_drop(true)
        .status()
        .await
        .expect("quip runs");
    assert!(status.success(), "quip {args:?}: {status}");
}

/// Every directory and file under `dir`, with its permission bits.
fn modes(dir: &Path, out: &mut Vec<(std::path::PathBuf, bool, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        out.push((
            entry.path(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            modes(&entry.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_data_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(
        quip_storage::Store::connect(&format!("sqlite://{}", dir.path().join("q.db").display()))
            .await
            .unwrap(),
    );
    let mut config = NodeConfig::new(
        "node-files".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("node"),
    );
    config.bcrypt_cost = 4;
    let node = quip_node::start(config, storage).await.unwrap();
    let addr = node.local_addr().to_string();
    let root = dir.path().join("home").join("quip");
    let picture = dir.path().join("picture.png");
    std::fs::write(
        &picture,
        hex("89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d000000154944415478da633c2127c7c0c0c0c0c0c0c4000300132e0108db1b58a20000000049454e44ae426082"),
    )
    .unwrap();

    quip(&addr, &root, &["register", "--user", "fileann"]).await;
    quip(&addr, &root, &["register", "--user", "fileben"]).await;
    let picture = picture.to_str().unwrap();
    quip(
        &addr,
        &root,
        &[
            "send", "--user", "fileann", "--to", "fileben", "--image", picture,
        ],
    )
    .await;
    quip(&addr, &root, &["recv", "--user", "fileben", "--wait", "2"]).await;

    let mut found = vec![(
        root.clone(),
        true,
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
    )];
    modes(&root, &mut found);
    assert!(
        found.iter().any(|(path, ..)| path.ends_with("known_cas")),
        "the CA was pinned: {found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(path, ..)| path.extension().is_some_and(|e| e == "png")),
        "the image was saved: {found:?}"
    );
    for (path, is_dir, mode) in &found {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }
    node.shutdown().await;
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
