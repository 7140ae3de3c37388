//! MLS (`quip/2`) helpers shared by the node's MLS tests: users whose keys are read once, and a
//! device's own raw connection logged in with the password (no RSA-era client on it), so a
//! test reads every push the node sends that device.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use quip_cli::connection::Event;
use quip_cli::e2e::{Identity, KeyStore, Secrets};
use quip_cli::{ConnectError, Connection};
use quip_mls::device::{Device, Outgoing, Received};
use quip_mls::policy::GroupPolicy;
use quip_proto::ids::{DeviceId, GroupId, GroupName, MsgId, UserName};
use quip_proto::mls::{KeyPackageUpload, LogEntry, LogKind};
use quip_proto::{ClientToNode, ErrorCode, NodeToClient};

use super::{PASSWORD, TestNode, fresh_id, unique, user_home};

/// How long a test waits for something the node must do (a push, a session to end).
pub const WAIT: Duration = Duration::from_secs(10);

/// What the node answered: the answer, or the refusal's code and message.
pub type Answer = Result<NodeToClient, (ErrorCode, String)>;

/// A user signed up on the node, with their account key and login secret (each derived once:
/// the password hash is deliberately slow).
pub struct Person {
    pub user: UserName,
    pub identity: Identity,
    login: Vec<u8>,
}

impl Person {
    /// Signs a new user up (name `prefix` made unique).
    pub async fn signup(node: &TestNode, home: &Path, prefix: &str) -> Self {
        let user = unique(prefix);
        drop(node.signup(&user, home).await);
        let secrets = Secrets::derive(&user, PASSWORD, &node.deployment()).unwrap();
        let identity = KeyStore::new(user_home(home, &user))
            .load(&secrets)
            .expect("key file loads");
        Self {
            user,
            identity,
            login: secrets.login().to_vec(),
        }
    }

    /// A new device of this user, its credential signed by the account key.
    pub fn device(&self, id: u64) -> Device {
        self.identity
            .enroll_device(self.user.clone(), DeviceId(id))
            .unwrap()
    }

    /// The account key peers pin (RSA-PSS, SPKI DER).
    pub fn key(&self) -> Vec<u8> {
        self.identity.public_keys().signing
    }
}

/// The account keys a client has pinned.
#[derive(Clone, Debug, Default)]
pub struct Keys(HashMap<UserName, Vec<u8>>);

impl Keys {
    /// These people's keys.
    pub fn of(people: &[&Person]) -> Self {
        Self(people.iter().map(|p| (p.user.clone(), p.key())).collect())
    }

    /// What `quip_mls` asks for: a user's pinned key, if any.
    pub fn pinned(&self) -> impl Fn(&UserName) -> Option<Vec<u8>> + Clone + '_ {
        move |user: &UserName| self.0.get(user).cloned()
    }
}

/// Which device sent an entry.
pub fn from(entry: &LogEntry) -> (&UserName, DeviceId) {
    (&entry.sender, entry.device)
}

/// A device's own connection to the node.
pub struct Session {
    pub conn: Connection,
    pub device: Device,
}

impl Session {
    /// A new connection logged in as `who` (no device yet).
    pub async fn login(node: &TestNode, who: &Person) -> Connection {
        let conn = node.connect().await;
        let login = conn
            .request(|req| ClientToNode::Login {
                req,
                user: who.user.clone(),
                secret: who.login.clone(),
            })
            .await;
        assert!(
            matches!(login, Ok(NodeToClient::LoggedIn { .. })),
            "{login:?}"
        );
        conn
    }

    /// Logs in and enrolls a new device `id` of `who`.
    pub async fn open(node: &TestNode, who: &Person, id: u64) -> Self {
        let conn = Self::login(node, who).await;
        let device = who.device(id);
        let (credential, signature_key) = device.enrollment();
        let enrolled = conn
            .request(|req| ClientToNode::EnrollDevice {
                req,
                device: DeviceId(id),
                credential,
                signature_key,
            })
            .await;
        assert!(
            matches!(enrolled, Ok(NodeToClient::Done { .. })),
            "{enrolled:?}"
        );
        Self { conn, device }
    }

    /// A new connection for a device enrolled before (`UseDevice`), once the node has seen
    /// the device's previous connection end.
    pub async fn resume(node: &TestNode, who: &Person, device: Device) -> Self {
        let conn = Self::login(node, who).await;
        let id = device.me().device;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match conn
                .request(|req| ClientToNode::UseDevice { req, device: id })
                .await
            {
                Ok(NodeToClient::Done { .. }) => return Self { conn, device },
                Err(ConnectError::Refused {
                    code: ErrorCode::DeviceBusy,
                    ..
                }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("UseDevice: {other:?}"),
            }
        }
    }

    /// Sends a request; the answer, or the refusal's code.
    pub async fn ask(&self, build: impl FnOnce(u32) -> ClientToNode) -> Answer {
        match self.conn.request(build).await {
            Ok(answer) => Ok(answer),
            Err(ConnectError::Refused { code, message, .. }) => Err((code, message)),
            Err(other) => panic!("connection failed: {other}"),
        }
    }

    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.conn.next_event())
            .await
            .expect("a push within 10 s")
            .expect("connection open")
    }

    /// The next log entries pushed for `group`.
    pub async fn log(&mut self, group: GroupId) -> Vec<LogEntry> {
        loop {
            if let Event::Mls(NodeToClient::Log { group: g, entries }) = self.next_event().await
                && g == group
            {
                return entries;
            }
        }
    }

    /// The next `n` log entries pushed for `group` from other devices, checking that every
    /// entry follows the one before. Entries this device sent itself are skipped, as a client
    /// does: the node does not push a sender its own entry as it is appended, but a read of
    /// the log from storage (a gap, a new session) includes it with the rest.
    pub async fn entries(&mut self, group: GroupId, n: usize) -> Vec<LogEntry> {
        let me = self.device.me().clone();
        let mut out: Vec<LogEntry> = Vec::with_capacity(n);
        let mut last: Option<u64> = None;
        while out.len() < n {
            for entry in self.log(group).await {
                if let Some(last) = last {
                    assert_eq!(entry.seq, last + 1, "entries come in order, once");
                }
                last = Some(entry.seq);
                if (&entry.sender, entry.device) != (&me.user, me.device) {
                    out.push(entry);
                }
            }
        }
        assert_eq!(out.len(), n, "{out:?}");
        out
    }

    /// The next `n` entries of `group`, each processed by this device.
    pub async fn read(
        &mut self,
        group: GroupId,
        n: usize,
        keys: impl Fn(&UserName) -> Option<Vec<u8>> + Clone,
    ) -> Vec<(LogEntry, Received)> {
        let entries = self.entries(group, n).await;
        entries
            .into_iter()
            .map(|entry| {
                let received = self
                    .device
                    .receive(&entry.body, keys.clone())
                    .unwrap_or_else(|err| panic!("entry {}: {err}", entry.seq));
                (entry, received)
            })
            .collect()
    }

    /// The next entry of `group`, an application message: its seq and its text.
    pub async fn text(
        &mut self,
        group: GroupId,
        keys: impl Fn(&UserName) -> Option<Vec<u8>> + Clone,
    ) -> (u64, Vec<u8>) {
        let (entry, received) = self.read(group, 1, keys).await.remove(0);
        assert_eq!(entry.kind, LogKind::Application, "{entry:?}");
        match received {
            Received::Message { bytes, from, .. } => {
                assert_eq!((&from.user, from.device), (&entry.sender, entry.device));
                (entry.seq, bytes)
            }
            other => panic!("{other:?}"),
        }
    }

    /// The next Welcome pushed: its id, group and body.
    pub async fn welcome(&mut self) -> (u64, GroupId, Vec<u8>) {
        loop {
            if let Event::Mls(NodeToClient::Welcome { id, group, body }) = self.next_event().await {
                return (id, group, body);
            }
        }
    }

    /// Takes the next Welcome, joins its group and acknowledges it.
    pub async fn join(&mut self, keys: impl Fn(&UserName) -> Option<Vec<u8>>) -> GroupId {
        let (id, group, body) = self.welcome().await;
        assert_eq!(self.device.join(&body, keys).unwrap(), Ok(group));
        self.conn
            .send(&ClientToNode::AckLog {
                entries: Vec::new(),
                welcomes: vec![id],
            })
            .await
            .unwrap();
        group
    }

    /// Acknowledges `group`'s entries up to `seq`.
    pub async fn ack(&self, group: GroupId, seq: u64) {
        self.conn
            .send(&ClientToNode::AckLog {
                entries: vec![(group, seq)],
                welcomes: Vec::new(),
            })
            .await
            .unwrap();
    }

    /// Publishes `count` key packages (and a last-resort one).
    pub async fn publish(&self, count: usize, last_resort: bool) -> Answer {
        let packages = self
            .device
            .key_packages(count, last_resort)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, (reference, data))| KeyPackageUpload {
                reference,
                data,
                last_resort: last_resort && i == count,
            })
            .collect();
        self.ask(|req| ClientToNode::PublishKeyPackages { req, packages })
            .await
    }

    /// Creates a group with this device alone in it and its user the one admin.
    pub async fn create(&mut self, name: &str) -> GroupId {
        let id = GroupId(fresh_id());
        let policy = GroupPolicy::new(
            GroupName::new(name).unwrap(),
            vec![self.device.me().user.clone()],
        );
        let created = self.device.create_group(id, &policy).unwrap();
        let answer = self
            .ask(|req| ClientToNode::CreateMlsGroup {
                req,
                group: id,
                group_info: created.group_info,
                ratchet_tree: created.ratchet_tree,
            })
            .await;
        assert!(
            matches!(answer, Ok(NodeToClient::Done { .. })),
            "{answer:?}"
        );
        id
    }

    /// Takes one key package of each of `user`'s devices.
    pub async fn claim(&self, user: &UserName) -> Vec<Vec<u8>> {
        match self
            .ask(|req| ClientToNode::ClaimKeyPackages {
                req,
                user: user.clone(),
            })
            .await
        {
            Ok(NodeToClient::KeyPackages { packages, .. }) => {
                packages.into_iter().map(|p| p.data).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    /// Sends a commit (with its group info and Welcome) through `Handshake`.
    pub async fn commit(&self, group: GroupId, out: &Outgoing) -> Answer {
        self.ask(|req| ClientToNode::Handshake {
            req,
            group,
            id: MsgId(fresh_id()),
            message: out.commit.clone(),
            group_info: Some(out.group_info.clone()),
            welcome: out.welcome.clone(),
        })
        .await
    }

    /// Sends a proposal through `Handshake`.
    pub async fn propose(&self, group: GroupId, proposal: &[u8]) -> Answer {
        self.ask(|req| ClientToNode::Handshake {
            req,
            group,
            id: MsgId(fresh_id()),
            message: proposal.to_vec(),
            group_info: None,
            welcome: None,
        })
        .await
    }

    /// Posts an application message (already encrypted).
    pub async fn post_raw(&self, group: GroupId, message: Vec<u8>) -> Answer {
        self.ask(|req| ClientToNode::Post {
            req,
            group,
            id: MsgId(fresh_id()),
            message,
            blob: None,
        })
        .await
    }

    /// Encrypts `text` for the group's current epoch and posts it; the seq it got.
    pub async fn say(&mut self, group: GroupId, text: &[u8]) -> u64 {
        let message = self.device.encrypt(&group, text).unwrap();
        match self.post_raw(group, message).await {
            Ok(NodeToClient::Appended {
                seq, fresh: true, ..
            }) => seq,
            other => panic!("{other:?}"),
        }
    }

    /// Adds every device of `users` that published a key package (checked against the pinned
    /// keys), as admin; the commit's seq. Members other than this device must still read it.
    pub async fn add(
        &mut self,
        group: GroupId,
        users: &[&UserName],
        keys: impl Fn(&UserName) -> Option<Vec<u8>> + Clone,
    ) -> u64 {
        let mut data = Vec::new();
        for user in users {
            data.extend(self.claim(user).await);
        }
        let checked = self.device.check_key_packages(&data, keys).unwrap();
        let out = self.device.add(&group, checked).unwrap();
        let seq = appended(self.commit(group, &out).await);
        self.device.confirm(&group).unwrap();
        seq
    }
}

/// The seq of a fresh append, or a panic naming the answer.
pub fn appended(answer: Answer) -> u64 {
    match answer {
        Ok(NodeToClient::Appended {
            seq, fresh: true, ..
        }) => seq,
        other => panic!("expected Appended, got {other:?}"),
    }
}

/// The refusal's code, or a panic naming what was accepted.
pub fn refusal(answer: Answer) -> ErrorCode {
    match answer {
        Err((code, _)) => code,
        Ok(other) => panic!("expected a refusal, got {other:?}"),
    }
}
