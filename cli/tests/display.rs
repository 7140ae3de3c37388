//! What reaches the terminal: hostile text sent through a real node, printed by the real
//! `quip recv`, never controls the terminal nor passes for another sender's line.

use std::path::Path;
use std::sync::Arc;

use quip_cli::{Chat, Client};
use quip_node::NodeConfig;
use quip_proto::ids::{GroupName, UserName};
use quip_quic::Trust;
use tokio::process::Command;

const BOB_PASSWORD: &str = "tangerine-orbit-cascade-42";
const ALICE_PASSWORD: &str = "pelican-velvet-harbour-17";

/// The spoof of the issue: a carriage return and "erase line", then a fake sender.
const SPOOF: &str = "x\r\x1b[Kcarol: please send the door code";

/// Characters a terminal acts on or that reorder a line (a newline only ends a line).
fn dangerous(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

async fn node(dir: &Path) -> quip_node::NodeHandle {
    let storage = Arc::new(
        quip_storage::Store::connect(&format!("sqlite://{}", dir.join("q.db").display()))
            .await
            .unwrap(),
    );
    let mut config = NodeConfig::new(
        "node-display".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.join("node"),
    );
    config.bcrypt_cost = 4;
    quip_node::start(config, storage).await.unwrap()
}

async fn signup(node: &quip_node::NodeHandle, home: &Path, name: &str, password: &str) -> Client {
    let trust = Trust::from_ca_file(node.ca_cert_path()).unwrap();
    let conn = quip_cli::Connection::connect(node.local_addr(), quip_quic::names::NODE, &trust)
        .await
        .unwrap();
    let user = UserName::new(name).unwrap();
    let dir = quip_cli::user_dir(home, &node.local_addr().to_string(), &user);
    Client::signup(conn, &dir, &user, password, 2048)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_prints_hostile_text_as_inert_text_from_its_real_sender() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let home = tempfile::tempdir().unwrap();
    signup(&node, home.path(), "bob", BOB_PASSWORD)
        .await
        .close()
        .await;
    let mut alice = signup(&node, home.path(), "alice", ALICE_PASSWORD).await;
    let bob = UserName::new("bob").unwrap();

    // Each is stored in bob's queue before `send_text` returns.
    alice.send_text(&bob, SPOOF).await.unwrap();
    alice
        .send_text(&bob, "first line\ncarol: second line")
        .await
        .unwrap();
    alice
        .send_text(&bob, "title\x1b]0;pwned\x07 clear\x1b[2J csi\u{9b}2J")
        .await
        .unwrap();
    // A group name and text that reorder themselves (Trojan Source).
    let group = alice
        .create_group(
            &GroupName::new("fam\u{202E}ylim").unwrap(),
            std::slice::from_ref(&bob),
        )
        .await
        .unwrap();
    alice
        .send_text_to(&Chat::Group(group), "admin\u{2067}\u{2066}ok")
        .await
        .unwrap();
    alice.close().await;

    let out = Command::new(env!("CARGO_BIN_EXE_quip"))
        .args(["--node", &node.local_addr().to_string(), "--ca"])
        .arg(node.ca_cert_path())
        .arg("--data-dir")
        .arg(home.path())
        .args(["recv", "--user", "bob", "--wait", "1"])
        .env("QUIP_PASSWORD", BOB_PASSWORD)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "quip recv failed: {stderr}");
    assert!(
        !stdout.chars().chain(stderr.chars()).any(dangerous),
        "control characters reached the terminal:\n{stdout:?}\n{stderr:?}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "alice: x^M^[[Kcarol: please send the door code",
            "alice: first line",
            "  carol: second line",
            "alice: title^[]0;pwned^G clear^[[2J csi<U+009B>2J",
        ],
        "{stdout}"
    );
    assert!(
        lines.contains(&"[fam<U+202E>ylim] alice: admin<U+2067><U+2066>ok"),
        "{stdout}"
    );
    // No line passes for a message from anyone but alice.
    for line in lines {
        assert!(
            line.starts_with("alice: ")
                || line.starts_with("alice created the group fam<U+202E>ylim ")
                || line.starts_with("[fam<U+202E>ylim] ")
                || line.starts_with("  "),
            "{line:?} in\n{stdout}"
        );
    }
}
