//! A master and several nodes in one process with real clients: discovery, cross-node
//! messages, a node killed mid-conversation, the master down and back.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quip_cli::{Chat, Client, ConnectError, Connection, Incoming};
use quip_proto::ids::{GroupName, UserName};
use quip_testnet::cluster::{Cluster, ClusterConfig};

const PASSWORD: &str = "cluster test password";
const WAIT: Duration = Duration::from_secs(15);

fn name(prefix: &str) -> UserName {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    UserName::new(&format!("{prefix}{nanos}")).unwrap()
}

async fn on_node(cluster: &Cluster, index: usize) -> Connection {
    let node = cluster.node(index).expect("node running");
    Connection::connect(node.local_addr(), quip_quic::names::NODE, &cluster.trust())
        .await
        .unwrap()
}

async fn signup_on(cluster: &Cluster, index: usize, user: &UserName, home: &Path) -> Client {
    let dir = quip_cli::user_dir(home, "cluster", user);
    Client::signup(on_node(cluster, index).await, &dir, user, PASSWORD, 2048)
        .await
        .unwrap()
}

async fn next_text(client: &mut Client) -> String {
    loop {
        match client.next_within(WAIT).await {
            Some(Incoming::Message(m)) => return m.text,
            Some(Incoming::GroupChanged(_)) => continue,
            other => panic!("{} expected a message, got {other:?}", client.me()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_spreads_and_messages_cross_nodes() {
    let cluster = Cluster::start(ClusterConfig::for_tests(3)).await.unwrap();
    assert!(
        cluster.wait_for_nodes(3, WAIT).await,
        "three nodes registered"
    );

    // A burst of 100 new clients spreads within ±10% of even.
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let (node, _) = quip_cli::discover(cluster.master_addr(), &cluster.trust())
            .await
            .unwrap();
        *per_node.entry(node.to_string()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(
        per_node.values().all(|n| (30..=37).contains(n)),
        "{per_node:?}"
    );

    // Alice, bob and carol on three different nodes.
    let home = tempfile::tempdir().unwrap();
    let (a, b, c) = (name("alice"), name("bob"), name("carol"));
    let mut alice = signup_on(&cluster, 0, &a, home.path()).await;
    let mut bob = signup_on(&cluster, 1, &b, home.path()).await;
    let mut carol = signup_on(&cluster, 2, &c, home.path()).await;
    alice.send_text(&b, "across nodes").await.unwrap();
    assert_eq!(next_text(&mut bob).await, "across nodes");

    // Presence is cluster-wide: alice on node 0 sees bob and carol online elsewhere.
    let users = alice.users().await.unwrap();
    for other in [&b, &c] {
        assert!(
            users.iter().any(|p| &p.user == other && p.online),
            "{other} online: {users:?}"
        );
    }

    let group = alice
        .create_group(&GroupName::new("Spread").unwrap(), &[b.clone(), c.clone()])
        .await
        .unwrap();
    // Members on other nodes hear of the group (through the master).
    match carol.next_within(WAIT).await {
        Some(Incoming::GroupChanged(what)) => assert!(what.contains("created"), "{what}"),
        other => panic!("carol expected the group's creation, got {other:?}"),
    }
    alice
        .send_text_to(&Chat::Group(group), "to everyone")
        .await
        .unwrap();
    assert_eq!(next_text(&mut bob).await, "to everyone");
    assert_eq!(next_text(&mut carol).await, "to everyone");
}

/// Reconnects through discovery (with backoff) and resumes the session, as `quip` does.
async fn recover(cluster: &Cluster, client: &mut Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = match Connection::via_master(cluster.master_addr(), &cluster.trust()).await {
            Ok(conn) => client.resume(conn).await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match attempt {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("could not recover: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing() {
    let cluster_config = ClusterConfig::for_tests(2);
    let mut cluster = Cluster::start(cluster_config).await.unwrap();
    assert!(cluster.wait_for_nodes(2, WAIT).await);
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (name("alice"), name("bob"));
    let mut alice = signup_on(&cluster, 0, &a, home.path()).await;
    let mut bob = signup_on(&cluster, 1, &b, home.path()).await;
    for i in 0..5 {
        alice.send_text(&b, &format!("m{i}")).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_text(&mut bob).await);
    }

    // Bob's node dies mid-conversation; alice keeps writing.
    let killed = Instant::now();
    cluster.kill_node(1);
    for i in 5..10 {
        alice.send_text(&b, &format!("m{i}")).await.unwrap();
    }
    // Bob reads what was already on its way, notices, moves to a live node.
    loop {
        match bob.next_within(WAIT).await {
            Some(Incoming::Message(m)) => seen.push(m.text),
            Some(Incoming::Closed(_) | Incoming::Reconnect { .. }) => break,
            other => panic!("expected messages then a close, got {other:?}"),
        }
    }
    recover(&cluster, &mut bob).await;
    let recovered = killed.elapsed();
    while seen.len() < 10 {
        seen.push(next_text(&mut bob).await);
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want, "every message exactly once, in order");
    assert!(
        bob.next_within(Duration::from_millis(500)).await.is_none(),
        "no repeats shown"
    );
    eprintln!("node death to recovered session: {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_sends_its_clients_elsewhere() {
    let mut cluster = Cluster::start(ClusterConfig::for_tests(2)).await.unwrap();
    assert!(cluster.wait_for_nodes(2, WAIT).await);
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (name("alice"), name("bob"));
    let mut alice = signup_on(&cluster, 0, &a, home.path()).await;
    let mut bob = signup_on(&cluster, 1, &b, home.path()).await;
    let stopping = cluster.stop_node(1);
    let told = async {
        loop {
            match bob.next_within(WAIT).await {
                Some(Incoming::Reconnect { .. }) => return true,
                Some(Incoming::Closed(_)) | None => return false,
                Some(_) => continue,
            }
        }
    };
    let (_, told) = tokio::join!(stopping, told);
    assert!(told, "the draining node told bob to move");
    recover(&cluster, &mut bob).await;
    alice.send_text(&b, "found you").await.unwrap();
    assert_eq!(next_text(&mut bob).await, "found you");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_down_and_back() {
    let mut cluster = Cluster::start(ClusterConfig::for_tests(2)).await.unwrap();
    assert!(cluster.wait_for_nodes(2, WAIT).await);
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (name("alice"), name("bob"));
    let mut alice = signup_on(&cluster, 0, &a, home.path()).await;
    let mut bob = signup_on(&cluster, 1, &b, home.path()).await;

    cluster.stop_master().await;
    let sent = Instant::now();
    alice
        .send_text(&b, "while the master is away")
        .await
        .unwrap();
    assert_eq!(next_text(&mut bob).await, "while the master is away");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "arrives within seconds via storage"
    );

    // Back on the same address: nodes re-register with their users; nobody reconnects.
    cluster.start_master().await.unwrap();
    assert!(cluster.wait_for_nodes(2, WAIT).await, "nodes re-registered");
    let master = cluster.master().unwrap();
    let deadline = Instant::now() + WAIT;
    while master.online_users() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        master.online_users(),
        2,
        "directory rebuilt without client reconnects"
    );
    let sent = Instant::now();
    alice.send_text(&b, "relayed again").await.unwrap();
    assert_eq!(next_text(&mut bob).await, "relayed again");
    // Well under the storage poll interval (500 ms; and polling is off while connected).
    assert!(
        sent.elapsed() < Duration::from_millis(450),
        "took {:?}",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_no_service() {
    let cluster = Cluster::start(ClusterConfig::for_tests(0)).await.unwrap();
    let err = Connection::via_master(cluster.master_addr(), &cluster.trust())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::NoService), "{err}");
    assert_eq!(err.to_string(), "Sorry, No services available");
    // An unreachable master names the address tried.
    let nowhere = "127.0.0.1:9".parse().unwrap();
    let err = Connection::via_master(nowhere, &cluster.trust())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}
