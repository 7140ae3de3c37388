//! Shared test harness: an in-process master on 127.0.0.1:0, fake nodes that speak the relay
//! protocol with certificates the master issued, and discovery clients, all over real QUIC.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quip_master::{MasterConfig, MasterHandle};
use quip_proto::ids::{MsgId, NodeName, UserName};
use quip_proto::limits::MAX_FRAME;
use quip_proto::relay::{Load, Relayed};
use quip_proto::{
    ClientToMaster, ContentKind, Conversation, ErrorCode, Header, MasterToClient, MasterToNode,
    NodeToMaster, Sealed, WrappedKey,
};
use quip_quic::{Certified, FramedRecv, FramedSend, Limits, Trust, names};
use tempfile::TempDir;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Long enough for anything that should arrive on loopback to arrive.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// A master with its own directory and a client endpoint for fakes to connect from.
pub struct TestMaster {
    pub handle: MasterHandle,
    pub dir: TempDir,
    pub endpoint: quinn::Endpoint,
}

impl TestMaster {
    /// A master with short heartbeats (100 ms) and death after 500 ms.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A master whose test configuration `adjust` changes before it starts.
    pub async fn start_with(adjust: impl FnOnce(&mut MasterConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        quip_master::init(dir.path()).expect("init");
        let mut config = MasterConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_owned());
        config.heartbeat = Duration::from_millis(100);
        config.dead_after = Duration::from_millis(500);
        adjust(&mut config);
        let handle = quip_master::start(config).await.expect("master starts");
        let endpoint =
            quip_quic::client_endpoint("127.0.0.1:0".parse().unwrap(), &Limits::client())
                .expect("client endpoint");
        Self {
            handle,
            dir,
            endpoint,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn trust(&self) -> Trust {
        Trust::from_ca_file(self.handle.ca_cert_path()).expect("CA file")
    }

    /// A node certificate issued by this master's CA.
    pub fn issue(&self, name: &str) -> Certified {
        quip_master::issue_node(self.dir.path(), &node(name), &["127.0.0.1"]).expect("issue")
    }

    /// Connects with `alpn`, presenting `identity` if given, trusting this master's CA.
    pub async fn connect(
        &self,
        alpn: &[u8],
        identity: Option<&Certified>,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let config = quip_quic::client_config(&self.trust(), alpn, identity, &Limits::relay())
            .expect("client config");
        self.endpoint
            .connect_with(config, self.addr(), names::MASTER)
            .expect("connect starts")
            .await
    }

    /// A discovery client.
    pub async fn discovery(&self) -> Discovery {
        let conn = self
            .connect(quip_proto::ALPN_DISCOVERY, None)
            .await
            .expect("discovery connects");
        let (send, recv, hello) = quip_quic::open_control(&conn, "test-client", MAX_FRAME)
            .await
            .expect("hello answered");
        hello.check_version().expect("same version");
        Discovery { conn, send, recv }
    }

    /// A registered fake node called `name` with `users` online and no load.
    pub async fn node(&self, name: &str, users: &[&str]) -> FakeNode {
        self.node_with_load(name, users, Load::default()).await
    }

    pub async fn node_with_load(&self, name: &str, users: &[&str], load: Load) -> FakeNode {
        let mut fake = FakeNode::connect(self, &self.issue(name)).await;
        let answer = fake.register(name, users, load).await;
        assert!(
            matches!(answer, MasterToNode::Registered { .. }),
            "{name} registers: {answer:?}"
        );
        fake
    }
}

/// A presence frame: (snapshot, online sorted, offline sorted).
pub type Presence = (bool, Vec<String>, Vec<String>);

/// A node as far as the master can tell: a QUIC connection with a cluster certificate.
///
/// The master sends presence changes whenever users come and go on other nodes. They are set
/// aside so [`FakeNode::recv`] and [`FakeNode::expect_nothing`] see everything else; tests of
/// presence read them with [`FakeNode::presence`].
pub struct FakeNode {
    pub name: String,
    pub conn: quinn::Connection,
    send: Arc<Mutex<FramedSend>>,
    recv: FramedRecv,
    heartbeats: Option<JoinHandle<()>>,
    /// Presence frames set aside while waiting for something else.
    presence: VecDeque<Presence>,
    /// Other frames set aside while waiting for presence.
    others: VecDeque<MasterToNode>,
}

impl FakeNode {
    /// Connects with `cert` and says hello.
    pub async fn connect(master: &TestMaster, cert: &Certified) -> Self {
        let conn = master
            .connect(quip_proto::ALPN_RELAY, Some(cert))
            .await
            .expect("node connects");
        let (send, recv, hello) = quip_quic::open_control(&conn, "fake-node", MAX_FRAME)
            .await
            .expect("hello answered");
        hello.check_version().expect("same version");
        Self {
            name: String::new(),
            conn,
            send: Arc::new(Mutex::new(send)),
            recv,
            heartbeats: None,
            presence: VecDeque::new(),
            others: VecDeque::new(),
        }
    }

    /// Sends `Register` and returns the answer.
    pub async fn register(&mut self, name: &str, users: &[&str], load: Load) -> MasterToNode {
        self.name = name.to_owned();
        self.send(NodeToMaster::Register {
            node: node(name),
            client_addr: format!("127.0.0.1:{}", 7000 + name.len()),
            load,
            users: users.iter().map(|u| user(u)).collect(),
        })
        .await;
        self.recv().await.expect("an answer")
    }

    pub async fn send(&self, msg: NodeToMaster) {
        self.send.lock().await.send(&msg).await.expect("frame sent");
    }

    /// The next frame from the master other than presence; `None` if the stream or
    /// connection ended.
    pub async fn recv(&mut self) -> Option<MasterToNode> {
        if let Some(msg) = self.others.pop_front() {
            return Some(msg);
        }
        loop {
            let msg = self
                .recv_raw(PATIENCE)
                .await
                .expect("the master answers in time")?;
            match as_presence(msg) {
                Ok(presence) => self.presence.push_back(presence),
                Err(msg) => return Some(*msg),
            }
        }
    }

    /// The next presence frame, other frames set aside for [`Self::recv`].
    pub async fn presence(&mut self) -> Presence {
        if let Some(presence) = self.presence.pop_front() {
            return presence;
        }
        loop {
            let msg = self
                .recv_raw(PATIENCE)
                .await
                .unwrap_or_else(|| panic!("{} got no presence in time", self.name))
                .unwrap_or_else(|| panic!("{}: the master closed the stream", self.name));
            match as_presence(msg) {
                Ok(presence) => return presence,
                Err(msg) => self.others.push_back(*msg),
            }
        }
    }

    /// Fails if a presence frame arrives within [`QUIET`] (other frames are set aside).
    pub async fn expect_no_presence(&mut self) {
        assert!(
            self.presence.is_empty(),
            "{} got unexpected presence: {:?}",
            self.name,
            self.presence
        );
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Some(Some(msg)) = self
            .recv_raw(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            match as_presence(msg) {
                Ok(presence) => panic!("{} got unexpected presence: {presence:?}", self.name),
                Err(msg) => self.others.push_back(*msg),
            }
        }
    }

    /// The next frame within `wait`: `None` if none came, `Some(None)` if the stream ended.
    async fn recv_raw(&mut self, wait: Duration) -> Option<Option<MasterToNode>> {
        let frame = tokio::time::timeout(wait, self.recv.recv::<MasterToNode>())
            .await
            .ok()?;
        Some(frame.ok().flatten())
    }

    /// A round trip: sends a relay the master refuses and waits for the refusal. The master
    /// handles a node's frames in order, so everything sent before has taken effect.
    pub async fn sync(&mut self) {
        let mut bogus = relayed("sync-user", &["sync-peer"], ContentKind::Text, 0);
        bogus.keys[0].recipient = user("not-a-recipient");
        self.send(NodeToMaster::Relay(bogus)).await;
        match self.recv().await {
            Some(MasterToNode::Error {
                code: ErrorCode::InvalidEnvelope,
                ..
            }) => {}
            other => panic!("{} expected the sync refusal, got {other:?}", self.name),
        }
    }

    /// Fails if the master sends anything but presence within [`QUIET`].
    pub async fn expect_nothing(&mut self) {
        assert!(
            self.others.is_empty(),
            "{} got an unexpected frame: {:?}",
            self.name,
            self.others
        );
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Some(Some(msg)) = self
            .recv_raw(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            match as_presence(msg) {
                Ok(presence) => self.presence.push_back(presence),
                Err(msg) => panic!("{} got an unexpected frame: {msg:?}", self.name),
            }
        }
    }

    /// Sends `Heartbeat(load)` every `every` until dropped or [`Self::stop_heartbeats`].
    pub fn heartbeat_every(&mut self, every: Duration, load: Load) {
        let send = self.send.clone();
        self.heartbeats = Some(tokio::spawn(async move {
            loop {
                if send
                    .lock()
                    .await
                    .send(&NodeToMaster::Heartbeat(load.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }));
    }

    pub fn stop_heartbeats(&mut self) {
        if let Some(task) = self.heartbeats.take() {
            task.abort();
        }
    }

    /// Waits for the master to close the connection; returns the application close code
    /// and reason.
    pub async fn closed(&self) -> (u64, String) {
        closed_reason(&self.conn).await
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop_heartbeats();
    }
}

/// A presence frame as (snapshot, online sorted, offline sorted), or the frame back.
fn as_presence(msg: MasterToNode) -> Result<Presence, Box<MasterToNode>> {
    match msg {
        MasterToNode::Presence {
            snapshot,
            online,
            offline,
        } => Ok((snapshot, sorted(&online), sorted(&offline))),
        other => Err(Box::new(other)),
    }
}

/// User names as sorted strings.
pub fn sorted(users: &[UserName]) -> Vec<String> {
    let mut names: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    names.sort();
    names
}

/// A presence snapshot listing `online`.
pub fn snapshot(online: &[&str]) -> Presence {
    (true, strings(online), vec![])
}

/// A presence change.
pub fn change(online: &[&str], offline: &[&str]) -> Presence {
    (false, strings(online), strings(offline))
}

fn strings(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// The application close code and reason of a connection the master closes.
pub async fn closed_reason(conn: &quinn::Connection) -> (u64, String) {
    let err = tokio::time::timeout(PATIENCE, conn.closed())
        .await
        .expect("the master closes the connection in time");
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("closed without an application reason: {other}"),
    }
}

/// A client on the discovery ALPN.
pub struct Discovery {
    pub conn: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
}

impl Discovery {
    /// Writes raw bytes on the control stream (a hostile client).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.send.stream().write_all(bytes).await.expect("written");
    }

    /// The next answer, if one comes in time.
    pub async fn answer(&mut self) -> Option<MasterToClient> {
        tokio::time::timeout(PATIENCE, self.recv.expect())
            .await
            .ok()?
            .ok()
    }

    pub async fn ask(&mut self, request: ClientToMaster) -> MasterToClient {
        self.send.send(&request).await.expect("request sent");
        tokio::time::timeout(PATIENCE, self.recv.expect())
            .await
            .expect("answer in time")
            .expect("an answer")
    }

    /// The name of the node discovery picks, or `None` for `NoService`.
    pub async fn discover(&mut self) -> Option<String> {
        match self.ask(ClientToMaster::Discover).await {
            MasterToClient::Node { node, .. } => Some(node.to_string()),
            MasterToClient::NoService => None,
            other => panic!("unexpected discovery answer: {other:?}"),
        }
    }
}

pub fn node(name: &str) -> NodeName {
    NodeName::new(name).expect("valid node name")
}

pub fn user(name: &str) -> UserName {
    UserName::new(name).expect("valid user name")
}

pub fn load(clients: u32) -> Load {
    Load {
        clients,
        max_clients: 1000,
        ..Load::default()
    }
}

/// A relayed envelope from `sender` to `recipients` (all of them keyed), with marker bytes
/// `tag` as ciphertext so tests can tell envelopes apart.
pub fn relayed(sender: &str, recipients: &[&str], kind: ContentKind, tag: u8) -> Relayed {
    let mut names: Vec<UserName> = recipients.iter().map(|u| user(u)).collect();
    names.push(user(sender));
    names.sort();
    Relayed {
        sealed: Sealed {
            header: Header {
                id: MsgId([tag; 16]),
                sender: user(sender),
                conversation: Conversation::Direct(user(recipients[0])),
                kind,
                sent_at_ms: 1,
                recipients: names,
            },
            ciphertext: vec![tag; 32],
            signature: vec![7; 16],
        },
        keys: recipients
            .iter()
            .map(|u| WrappedKey {
                recipient: user(u),
                wrapped: u.as_bytes().to_vec(),
            })
            .collect(),
    }
}

/// The recipients of a relay, sorted.
pub fn recipients(relayed: &Relayed) -> Vec<String> {
    let mut names: Vec<String> = relayed
        .keys
        .iter()
        .map(|k| k.recipient.to_string())
        .collect();
    names.sort();
    names
}
