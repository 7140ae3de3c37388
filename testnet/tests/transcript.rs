//! The protocol transcript: a scripted session on an in-process cluster (a master, node-0 and
//! node-1) with real clients and real end-to-end crypto, every frame on every link recorded,
//! redacted and pinned as an insta snapshot (`snapshots/transcript__protocol.snap`). A wire
//! change shows up here first; review it with `cargo insta review`.
//!
//! alice lives on node-0, bob and carol on node-1, so every message between them crosses the
//! master. Each step waits for all its effects before the next one starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quip_cli::{Chat, Client, Connection, Incoming, Message};
use quip_proto::Action;
use quip_proto::ids::{GroupName, MsgId, UserName};
use quip_testnet::cluster::{Cluster, ClusterConfig};
use quip_testnet::transcript::{Names, Recorder};

const PASSWORD: &str = "transcript password";
const WAIT: Duration = Duration::from_secs(20);
/// Key size: the wire shape is the same at 3072 bits, and 2048 keeps the test quick.
const BITS: usize = 2048;

/// A valid 3×2 PNG followed by filler: 70,000 bytes, so the image takes two chunks.
fn image(dir: &Path) -> PathBuf {
    const PNG: &str = "89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d000000154944415478da633c2127c7c0c0c0c0c0c0c4000300132e0108db1b58a20000000049454e44ae426082";
    let mut bytes: Vec<u8> = (0..PNG.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PNG[i..i + 2], 16).unwrap())
        .collect();
    let filler = 70_000 - bytes.len();
    bytes.extend((0..filler as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let path = dir.join("harbour.png");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

struct Script {
    cluster: Cluster,
    recorder: &'static Recorder,
    home: tempfile::TempDir,
}

impl Script {
    fn dir(&self, user: &UserName) -> PathBuf {
        quip_cli::user_dir(self.home.path(), "transcript", user)
    }

    async fn on_node(&self, index: usize) -> Connection {
        let node = self.cluster.node(index).expect("node running");
        Connection::connect(
            node.local_addr(),
            quip_quic::names::NODE,
            &self.cluster.trust(),
        )
        .await
        .unwrap()
    }

    async fn via_master(&self) -> Connection {
        Connection::via_master(self.cluster.master_addr(), &self.cluster.trust())
            .await
            .unwrap()
    }

    async fn signup(&self, conn: Connection, name: &UserName) -> Client {
        Client::signup(conn, &self.dir(name), name, PASSWORD, BITS)
            .await
            .unwrap()
    }

    /// Waits until the node has the client's `Ack` for `id`.
    async fn acked(&self, id: &MsgId) {
        let id = format!("MsgId({})", id.to_hex());
        let seen = self
            .recorder
            .wait_for(WAIT, |f| {
                f.by_server && f.received && f.text.starts_with("Ack {") && f.text.contains(&id)
            })
            .await;
        assert!(seen, "no Ack for {id}");
    }

    /// The next message `client` shows, once the node has its acknowledgement.
    async fn shown(&self, client: &mut Client) -> Message {
        let message = loop {
            match client.next_within(WAIT).await {
                Some(Incoming::Message(message)) => break message,
                // Membership changes arrive as pushes of their own; the transcript shows them.
                Some(Incoming::GroupChanged(_)) => continue,
                other => panic!("{} expected a message, got {other:?}", client.me()),
            }
        };
        self.acked(&message.id).await;
        message
    }

    /// Waits until node `index` has `count` users logged in.
    async fn online(&self, index: usize, count: usize) {
        let node = self.cluster.node(index).expect("node running");
        let deadline = tokio::time::Instant::now() + WAIT;
        while node.online_users() != count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node-{index} has {} users online, expected {count}",
                node.online_users()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol() {
    let recorder = Recorder::install();
    let mut config = ClusterConfig::for_tests(2);
    // Heartbeats flush the node → master links at the end of every step; nothing times out.
    config.heartbeat = Duration::from_millis(100);
    config.dead_after = Duration::from_secs(3600);

    recorder.step("node-0 and node-1 join the cluster", None);
    let cluster = Cluster::start(config).await.unwrap();
    assert!(
        cluster.wait_for_nodes(2, WAIT).await,
        "both nodes registered"
    );
    recorder.settle().await;
    let s = Script {
        cluster,
        recorder,
        home: tempfile::tempdir().unwrap(),
    };
    let (a, b, c) = (user("alice"), user("bob"), user("carol"));

    recorder.step(
        "alice signs up; discovery sends her to node-0",
        Some("alice"),
    );
    let mut alice = s.signup(s.via_master().await, &a).await;
    s.online(0, 1).await;
    recorder.settle().await;

    recorder.step("bob signs up; discovery sends him to node-1", Some("bob"));
    let mut bob = s.signup(s.via_master().await, &b).await;
    s.online(1, 1).await;
    recorder.settle().await;

    recorder.step(
        "carol signs up on node-1 directly, without discovery",
        Some("carol"),
    );
    let mut carol = s.signup(s.on_node(1).await, &c).await;
    s.online(1, 2).await;
    recorder.settle().await;

    recorder.step(
        "alice writes to bob: node-0 relays through the master",
        Some("alice"),
    );
    alice.send_text(&b, "hi bob").await.unwrap();
    assert_eq!(s.shown(&mut bob).await.text, "hi bob");
    recorder.settle().await;

    recorder.step("bob answers", Some("bob"));
    bob.send_text(&a, "hi alice").await.unwrap();
    assert_eq!(s.shown(&mut alice).await.text, "hi alice");
    recorder.settle().await;

    recorder.step("bob goes offline", Some("bob"));
    bob.close().await;
    s.online(1, 1).await;
    recorder.settle().await;

    recorder.step("alice writes to bob while he is away", Some("alice"));
    alice.send_text(&b, "are you there?").await.unwrap();
    recorder.settle().await;

    recorder.step(
        "bob logs in again on node-1 and gets the queued message",
        Some("bob"),
    );
    let conn = s.on_node(1).await;
    let mut bob = Client::login(conn, &s.dir(&b), &b, PASSWORD).await.unwrap();
    assert_eq!(s.shown(&mut bob).await.text, "are you there?");
    s.online(1, 2).await;
    recorder.settle().await;

    recorder.step("alice creates the group trip with bob", Some("alice"));
    let trip = alice
        .create_group(&GroupName::new("trip").unwrap(), std::slice::from_ref(&b))
        .await
        .unwrap();
    recorder.settle().await;

    recorder.step("alice adds carol", Some("alice"));
    alice
        .change_group(&trip, Action::Add(c.clone()))
        .await
        .unwrap();
    recorder.settle().await;

    recorder.step("alice writes to the group", Some("alice"));
    let sent = alice
        .send_text_to(&Chat::Group(trip), "we leave at nine")
        .await
        .unwrap();
    assert!(sent.left_out.is_empty(), "{:?}", sent.left_out);
    assert_eq!(s.shown(&mut bob).await.text, "we leave at nine");
    assert_eq!(s.shown(&mut carol).await.text, "we leave at nine");
    recorder.settle().await;

    recorder.step("alice removes carol", Some("alice"));
    alice
        .change_group(&trip, Action::Remove(c.clone()))
        .await
        .unwrap();
    recorder.settle().await;

    recorder.step("bob sends the group an image", Some("bob"));
    let path = image(s.home.path());
    let sent = bob
        .send_image_to(&Chat::Group(trip), &path, &mut |_, _| {})
        .await
        .unwrap();
    let received = match alice.next_within(WAIT).await {
        Some(Incoming::Image(image)) => image,
        other => panic!("alice expected an image, got {other:?}"),
    };
    assert_eq!(received.id, sent.id);
    assert_eq!(
        std::fs::read(&received.path).unwrap(),
        std::fs::read(&path).unwrap()
    );
    s.acked(&sent.id).await;
    recorder.settle().await;

    recorder.step("alice lists the users", Some("alice"));
    let users = alice.users().await.unwrap();
    assert_eq!(users.len(), 3);
    recorder.settle().await;

    insta::assert_snapshot!("protocol", recorder.render(&Names::of(&s.cluster)));
}
