//! The client's sans-IO MLS core against a real node: one-to-one chats started from either
//! side (or both at once), several devices of a user, group creation, in order and once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Backend, TestNode, identity_of, unique};
use quip_cli::Connection;
use quip_cli::connection::Event;
use quip_cli::core::{Core, CoreEvent, direct_group};
use quip_proto::ids::{DeviceId, GroupId, GroupName, UserName};
use quip_proto::{ClientToNode, NodeToClient};

const WAIT: Duration = Duration::from_secs(30);

/// One device: its connection and its core, driven by the test as the program's shell would.
struct Peer {
    user: UserName,
    conn: Connection,
    core: Core,
}

/// A connection logged in as `user` with the password.
async fn login(node: &TestNode, user: &UserName) -> Connection {
    let conn = node.connect().await;
    let secrets =
        quip_cli::e2e::Secrets::derive(user, common::PASSWORD, &node.deployment()).unwrap();
    let login = conn
        .request(|req| ClientToNode::Login {
            req,
            user: user.clone(),
            secret: secrets.login().to_vec(),
        })
        .await;
    assert!(
        matches!(login, Ok(NodeToClient::LoggedIn { .. })),
        "{login:?}"
    );
    conn
}

fn state_key(node: &TestNode, user: &UserName, device: u64) -> quip_cli::e2e::StateKey {
    let secrets =
        quip_cli::e2e::Secrets::derive(user, common::PASSWORD, &node.deployment()).unwrap();
    quip_cli::e2e::StateKey::new(&secrets, user, DeviceId(device))
}

impl Peer {
    /// A new device whose state is backed up on the node.
    async fn start_backed_up(
        node: &TestNode,
        home: &std::path::Path,
        user: &UserName,
        id: u64,
    ) -> Self {
        Self::start_with(node, home, user, id, Some(state_key(node, user, id))).await
    }

    /// Another directory logging in as `user`: takes over device `id` (not connected) from
    /// its backup.
    async fn take_over(node: &TestNode, home: &std::path::Path, user: &UserName, id: u64) -> Self {
        let conn = login(node, user).await;
        let Ok(NodeToClient::Devices { devices, .. }) =
            conn.request(|req| ClientToNode::ListDevices { req }).await
        else {
            panic!("no device list");
        };
        let listed = devices
            .iter()
            .find(|d| d.device == DeviceId(id))
            .expect("listed");
        assert!(listed.backed_up, "{listed:?}");
        // The old session may still be closing: wait until the device is free.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut sealed = Vec::new();
        let mut after = None;
        loop {
            match conn
                .request(|req| ClientToNode::GetDeviceState {
                    req,
                    device: DeviceId(id),
                    after: after.clone(),
                })
                .await
            {
                Ok(NodeToClient::DeviceState { entries, more, .. }) => {
                    after = entries.last().map(|(k, _)| k.clone());
                    sealed.extend(entries);
                    if !more {
                        break;
                    }
                }
                Err(quip_cli::ConnectError::Refused { code, .. })
                    if code == quip_proto::ErrorCode::DeviceBusy
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::task::yield_now().await;
                }
                other => panic!("{other:?}"),
            }
        }
        let key = state_key(node, user, id);
        let (device, uploaded) = Core::restore(&key, sealed).expect("the backup opens");
        let used = conn
            .request(|req| ClientToNode::UseDevice {
                req,
                device: DeviceId(id),
            })
            .await;
        assert!(matches!(used, Ok(NodeToClient::Done { .. })), "{used:?}");
        let pinned = HashMap::from([(user.clone(), identity_of(home, user).public_keys().signing)]);
        let mut peer = Self {
            user: user.clone(),
            conn,
            core: Core::new(device, pinned).with_backup(key, uploaded),
        };
        peer.flush().await;
        peer
    }

    async fn start(node: &TestNode, home: &std::path::Path, user: &UserName, id: u64) -> Self {
        Self::start_with(node, home, user, id, None).await
    }

    async fn start_with(
        node: &TestNode,
        home: &std::path::Path,
        user: &UserName,
        id: u64,
        backup: Option<quip_cli::e2e::StateKey>,
    ) -> Self {
        let conn = login(node, user).await;
        let identity = identity_of(home, user);
        let device = identity.enroll_device(user.clone(), DeviceId(id)).unwrap();
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
        let pinned = HashMap::from([(user.clone(), identity.public_keys().signing)]);
        let mut core = Core::new(device, pinned);
        if let Some(key) = backup {
            core = core.with_backup(key, HashMap::new());
        }
        core.publish_key_packages(3);
        let mut peer = Self {
            user: user.clone(),
            conn,
            core,
        };
        peer.flush().await;
        peer
    }

    /// Sends what the core has to send; "saves" (tests keep state in memory) and acks.
    async fn flush(&mut self) {
        loop {
            while let Some(msg) = self.core.poll_transmit() {
                self.conn.send(&msg).await.expect("send");
            }
            if self.core.poll_save().is_some() {
                self.core.saved();
                continue;
            }
            return;
        }
    }

    /// Drives the core until it reports an event `want` accepts; returns it.
    async fn until(&mut self, mut want: impl FnMut(&CoreEvent) -> bool) -> CoreEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.flush().await;
            while let Some(event) = self.core.poll_event() {
                assert!(
                    !matches!(
                        event,
                        CoreEvent::Failed { .. } | CoreEvent::Unreadable { .. }
                    ),
                    "{}: {event:?}",
                    self.user
                );
                if want(&event) {
                    return event;
                }
            }
            let next = tokio::time::timeout_at(deadline, self.conn.next_event())
                .await
                .unwrap_or_else(|_| panic!("{}: nothing wanted within {WAIT:?}", self.user))
                .expect("connection open");
            if let Event::Mls(msg) = next {
                self.core.handle(msg);
            }
        }
    }

    async fn message(&mut self) -> (GroupId, UserName, String) {
        match self.until(|e| matches!(e, CoreEvent::Message { .. })).await {
            CoreEvent::Message {
                group, from, bytes, ..
            } => (group, from, String::from_utf8(bytes).unwrap()),
            _ => unreachable!(),
        }
    }

    async fn sent(&mut self) {
        self.until(|e| matches!(e, CoreEvent::Sent { .. })).await;
    }
}

async fn users(node: &TestNode, home: &std::path::Path, prefixes: &[&str]) -> Vec<UserName> {
    let mut names = Vec::new();
    for prefix in prefixes {
        let user = unique(prefix);
        drop(node.signup(&user, home).await);
        names.push(user);
    }
    names
}

async fn a_one_to_one_chat_starts_from_either_side(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let names = users(&node, home.path(), &["al", "bo"]).await;
    let mut alice = Peer::start(&node, home.path(), &names[0], 1).await;
    let mut bob = Peer::start(&node, home.path(), &names[1], 1).await;

    let (group, _) = alice.core.send_direct(&names[1], b"hi bob".to_vec());
    assert_eq!(group, direct_group(&names[1], &names[0]));
    alice.sent().await;
    assert_eq!(
        bob.message().await,
        (group, names[0].clone(), "hi bob".into())
    );
    bob.core.send_direct(&names[0], b"hi alice".to_vec());
    bob.sent().await;
    assert_eq!(
        alice.message().await,
        (group, names[1].clone(), "hi alice".into())
    );
    // Many, in order.
    for n in 0..20 {
        alice.core.send(group, format!("m{n}").into_bytes());
    }
    alice.flush().await;
    for n in 0..20 {
        assert_eq!(bob.message().await.2, format!("m{n}"));
    }
}

async fn every_device_of_a_user_gets_every_message(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let names = users(&node, home.path(), &["al", "bo"]).await;
    let mut bob_phone = Peer::start(&node, home.path(), &names[1], 1).await;
    let mut bob_laptop = Peer::start(&node, home.path(), &names[1], 2).await;
    let mut alice = Peer::start(&node, home.path(), &names[0], 1).await;
    let (group, _) = alice.core.send_direct(&names[1], b"to both".to_vec());
    alice.sent().await;
    assert_eq!(
        bob_phone.message().await,
        (group, names[0].clone(), "to both".into())
    );
    assert_eq!(
        bob_laptop.message().await,
        (group, names[0].clone(), "to both".into())
    );
    // What one of bob's devices says, the other sees too.
    bob_laptop.core.send(group, b"from the laptop".to_vec());
    bob_laptop.sent().await;
    assert_eq!(alice.message().await.2, "from the laptop");
    assert_eq!(bob_phone.message().await.2, "from the laptop");
}

async fn both_sides_starting_at_once_end_in_one_chat(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let names = users(&node, home.path(), &["al", "bo"]).await;
    let mut alice = Peer::start(&node, home.path(), &names[0], 1).await;
    let mut bob = Peer::start(&node, home.path(), &names[1], 1).await;
    alice.core.send_direct(&names[1], b"from alice".to_vec());
    bob.core.send_direct(&names[0], b"from bob".to_vec());
    alice.flush().await;
    bob.flush().await;
    // Whoever lost the race joins the winner's group, and its message follows.
    let (a, b) = tokio::join!(alice.message(), bob.message());
    assert_eq!(a.2, "from bob");
    assert_eq!(b.2, "from alice");
    assert_eq!(a.0, b.0);
}

async fn a_group_of_three(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let names = users(&node, home.path(), &["al", "bo", "ca"]).await;
    let mut alice = Peer::start(&node, home.path(), &names[0], 1).await;
    let mut bob = Peer::start(&node, home.path(), &names[1], 1).await;
    let mut carol = Peer::start(&node, home.path(), &names[2], 1).await;
    let group = GroupId(common::fresh_id());
    alice.core.create_group(
        group,
        GroupName::new("plans").unwrap(),
        vec![names[1].clone(), names[2].clone()],
    );
    alice.core.send(group, b"welcome".to_vec());
    alice.sent().await;
    for peer in [&mut bob, &mut carol] {
        let joined = peer.until(|e| matches!(e, CoreEvent::Joined { .. })).await;
        assert_eq!(
            joined,
            CoreEvent::Joined {
                group,
                name: GroupName::new("plans").unwrap()
            }
        );
        assert_eq!(
            peer.message().await,
            (group, names[0].clone(), "welcome".into())
        );
    }
}

async fn logging_in_elsewhere_takes_over_an_idle_device_with_everything_sent_meanwhile(
    backend: Backend,
) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let names = users(&node, home.path(), &["al", "bo"]).await;
    let mut alice = Peer::start_backed_up(&node, home.path(), &names[0], 1).await;
    let mut bob = Peer::start(&node, home.path(), &names[1], 1).await;
    let (group, _) = alice.core.send_direct(&names[1], b"hello".to_vec());
    alice.sent().await;
    assert_eq!(bob.message().await.2, "hello");
    // alice's machine goes away; bob writes meanwhile.
    drop(alice);
    for n in 0..3 {
        bob.core
            .send(group, format!("while you were away {n}").into_bytes());
    }
    bob.flush().await;
    for _ in 0..3 {
        bob.sent().await;
    }
    // alice logs in from another directory: her device, restored from its backup, gets it all.
    let mut elsewhere = Peer::take_over(&node, home.path(), &names[0], 1).await;
    for n in 0..3 {
        assert_eq!(
            elsewhere.message().await,
            (group, names[1].clone(), format!("while you were away {n}"))
        );
    }
    // And the conversation goes on from there.
    elsewhere.core.send(group, b"back".to_vec());
    elsewhere.sent().await;
    assert_eq!(bob.message().await.2, "back");
}

on_both_backends!(
    logging_in_elsewhere_takes_over_an_idle_device_with_everything_sent_meanwhile,
    a_one_to_one_chat_starts_from_either_side,
    every_device_of_a_user_gets_every_message,
    both_sides_starting_at_once_end_in_one_chat,
    a_group_of_three,
);
