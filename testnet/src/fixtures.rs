//! Benchmark fixtures: nodes in-process, users and sessions written straight to storage (no
//! bcrypt per user: a benchmark of the network should not spend minutes hashing), clients that
//! resume those sessions, and pre-built envelopes (crypto is measured on its own, in `crypto`).

use std::sync::Arc;
use std::time::Instant;

use quip_cli::{Connection, Event};
use quip_node::{NodeConfig, NodeHandle};
use quip_proto::ids::{MsgId, SessionToken, UserName};
use quip_proto::{ClientToNode, ContentKind, Conversation, Envelope, Header, Sealed, WrappedKey};
use quip_quic::Trust;
use quip_storage::Store;

/// RSA-3072 sizes, so envelopes weigh what real ones do.
pub(crate) const WRAPPED_KEY_LEN: usize = 384;
/// Bytes of a signature.
pub(crate) const SIGNATURE_LEN: usize = 384;

/// A node running in this process over its own storage.
pub(crate) struct BenchNode {
    pub(crate) handle: NodeHandle,
    pub(crate) storage: Arc<Store>,
    pub(crate) trust: Trust,
    _dir: tempfile::TempDir,
}

impl BenchNode {
    /// Starts a node on SQLite in a temp directory, or on `database_url`.
    pub(crate) async fn start(database_url: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = match database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.path().join("bench.db").display()),
        };
        let storage = Arc::new(Store::connect(&url).await?);
        let mut config = NodeConfig::new(
            "node-bench".parse()?,
            "127.0.0.1:0".parse()?,
            dir.path().join("node"),
        );
        // Every benchmark client comes from 127.0.0.1.
        config.max_connections_per_addr = config.max_connections;
        let handle = quip_node::start(config, storage.clone()).await?;
        let trust = Trust::from_ca_file(handle.ca_cert_path())?;
        Ok(Self {
            handle,
            storage,
            trust,
            _dir: dir,
        })
    }

    /// A logged-in connection for `user` (resuming its session: no bcrypt).
    pub(crate) async fn connect(&self, user: &BenchUser) -> anyhow::Result<Connection> {
        crate::bench::support::resume_on(self.handle.local_addr(), &self.trust, user).await
    }
}

/// A user created for a benchmark, with a live session token.
#[derive(Clone)]
pub(crate) struct BenchUser {
    pub(crate) name: UserName,
    pub(crate) token: SessionToken,
}

/// Creates `count` users named `<prefix><i>` with sessions, straight in storage.
pub(crate) async fn users(
    storage: &Store,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<BenchUser>> {
    // These users resume sessions and never log in with a password (logins are benchmarked
    // on their own), so the hash is a well-formed placeholder no secret matches.
    let hash = format!("$2b$12${}", "x".repeat(53));
    crate::bench::support::users_with_hash(storage, prefix, count, &hash).await
}

/// A fresh message id.
pub(crate) fn msg_id() -> MsgId {
    MsgId(crate::bench::support::random())
}

/// An envelope of realistic size from `sender` to `recipients` (sender included), with
/// `payload` ciphertext bytes. The node checks structure, not cryptography, so one template
/// with fresh ids measures the network and not the load generator.
pub(crate) fn envelope(
    sender: &UserName,
    conversation: Conversation,
    kind: ContentKind,
    recipients: &[UserName],
    payload: usize,
) -> Envelope {
    let mut names: Vec<UserName> = recipients.to_vec();
    if !names.contains(sender) {
        names.push(sender.clone());
    }
    names.sort();
    let keys = names
        .iter()
        .map(|name| WrappedKey {
            recipient: name.clone(),
            wrapped: vec![0x5a; WRAPPED_KEY_LEN],
        })
        .collect();
    Envelope {
        sealed: Sealed {
            header: Header {
                id: msg_id(),
                sender: sender.clone(),
                conversation,
                kind,
                sent_at_ms: 0,
                recipients: names,
            },
            ciphertext: vec![0xc1; payload + 28],
            signature: vec![0x51; SIGNATURE_LEN],
        },
        keys,
    }
}

/// A 120-byte text from `from` to `to`, as [`envelope`] builds it.
pub(crate) fn dm_envelope(from: &BenchUser, to: &BenchUser) -> Envelope {
    envelope(
        &from.name,
        Conversation::Direct(to.name.clone()),
        ContentKind::Text,
        std::slice::from_ref(&to.name),
        120,
    )
}

/// Reads deliveries on `conn` until `expected` arrived or the deadline passes, acknowledging
/// them in batches; calls `seen` with each message id and its arrival time.
pub(crate) async fn receive(
    conn: &mut Connection,
    expected: usize,
    deadline: Instant,
    mut seen: impl FnMut(MsgId, Instant),
) -> usize {
    let mut got = 0;
    let mut acks = Vec::new();
    while got < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(event)) = tokio::time::timeout(left, conn.next_event()).await else {
            break;
        };
        if let Event::Deliver(delivery) = event {
            let id = delivery.sealed.header.id;
            seen(id, Instant::now());
            acks.push(id);
            got += 1;
            if acks.len() >= 64 {
                let _ = conn
                    .send(&ClientToNode::Ack {
                        ids: std::mem::take(&mut acks),
                    })
                    .await;
            }
        }
    }
    if !acks.is_empty() {
        let _ = conn.send(&ClientToNode::Ack { ids: acks }).await;
    }
    got
}
