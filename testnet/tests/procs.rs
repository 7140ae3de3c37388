//! The real binaries as child processes: a master and two nodes sharing one SQLite file, two
//! users on different nodes, a message across nodes, then one node killed with SIGKILL: its
//! user notices, comes back through discovery with its session token, and gets the message
//! sent while it was away, exactly once.
//!
//! The binaries of other crates are not built for this test by `cargo test -p quip-testnet`;
//! `cargo test --workspace` builds them (the node, master and cli crates have integration
//! tests, and cargo builds a package's binaries for its integration tests). Without them the
//! test is skipped with a message, and fails under `CI=true`.

use std::path::Path;
use std::time::{Duration, Instant};

use quip_cli::{Client, Connection, Incoming};
use quip_proto::ids::UserName;
use quip_testnet::network::{Testnet, TestnetConfig};
use quip_testnet::procs::Binaries;

const PASSWORD: &str = "process test password";
const WAIT: Duration = Duration::from_secs(30);

fn binaries() -> Option<Binaries> {
    let exe = Path::new(env!("CARGO_BIN_EXE_quip-testnet"));
    let dir = exe.parent().expect("the executable has a directory");
    match Binaries::in_dir(dir) {
        Ok(binaries) => Some(binaries),
        Err(err) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the binaries are missing: {err}")
        }
        Err(err) => {
            eprintln!("skipped: {err} (run `cargo test --workspace` or `cargo build --bins`)");
            None
        }
    }
}

async fn signup_on(net: &Testnet, node: usize, user: &str, home: &Path) -> Client {
    let node = &net.nodes[node];
    let conn = Connection::connect(node.addr, node.name.as_str(), &net.trust())
        .await
        .unwrap();
    let user = UserName::new(user).unwrap();
    let dir = quip_cli::user_dir(home, "procs", &user);
    Client::signup(conn, &dir, &user, PASSWORD, 2048)
        .await
        .unwrap()
}

async fn next_text(client: &mut Client) -> String {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match client.next_within(WAIT).await {
            Some(Incoming::Message(m)) => return m.text,
            Some(Incoming::GroupChanged(_)) => continue,
            other => panic!("{} expected a message, got {other:?}", client.me()),
        }
    }
    panic!("{} got no message within {WAIT:?}", client.me())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_loses_nothing() {
    let Some(binaries) = binaries() else { return };
    let home = tempfile::tempdir().unwrap();
    let mut config = TestnetConfig::new(2, binaries);
    config.dir = Some(home.path().join("net"));
    config.heartbeat = Duration::from_millis(250);
    config.dead_after = Duration::from_secs(1);
    let mut net = Testnet::create(config).await.unwrap();
    net.start(WAIT).await.unwrap();

    let mut alice = signup_on(&net, 0, "alice", home.path()).await;
    let mut bob = signup_on(&net, 1, "bob", home.path()).await;
    let bob_name = bob.me().clone();
    alice.send_text(&bob_name, "across nodes").await.unwrap();
    assert_eq!(next_text(&mut bob).await, "across nodes");

    // Bob's node dies without a word; alice writes meanwhile (her node stores it).
    let killed = Instant::now();
    net.kill_node(1);
    alice
        .send_text(&bob_name, "while you were away")
        .await
        .unwrap();
    // Bob notices (the QUIC idle timeout) and comes back through discovery.
    match bob.next_within(WAIT).await {
        Some(Incoming::Closed(_) | Incoming::Reconnect { .. }) => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
    let deadline = Instant::now() + WAIT;
    let back_on = loop {
        let attempt = match Connection::via_master(net.master_addr(), &net.trust()).await {
            Ok(conn) => {
                let addr = conn.quic().remote_address();
                bob.resume(conn)
                    .await
                    .map(|()| addr)
                    .map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        };
        match attempt {
            Ok(addr) => break addr,
            Err(why) if Instant::now() > deadline => panic!("bob could not come back: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(back_on, net.nodes[0].addr, "the only live node");
    eprintln!(
        "node death to bob's session resumed: {:?}",
        killed.elapsed()
    );
    assert_eq!(next_text(&mut bob).await, "while you were away");
    assert!(
        bob.next_within(Duration::from_secs(1)).await.is_none(),
        "shown exactly once"
    );

    // The killed node comes back on its address and registers again.
    net.start_node(1).unwrap();
    net.wait_healthy(2, WAIT).await.unwrap();
    alice.close().await;
    bob.close().await;
    net.shutdown(Duration::from_secs(5)).await;
}
