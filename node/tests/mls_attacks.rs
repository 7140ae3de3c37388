//! The attacks issue 12 names, against the node's MLS path through real QUIC and real storage:
//! each is refused with the code a client shows (or leaves a removed or stranger's device
//! unable to read), and the honest members keep talking. Each check here fails if the
//! protection it names were taken out of the node (or of `quip_mls`).

mod common;

use std::path::Path;

use common::mls::{Keys, Person, Session, WAIT, appended, from, refusal};
use common::{Backend, TestNode};
use quip_mls::device::Received;
use quip_mls::policy::GroupPolicy;
use quip_proto::ids::{DeviceId, GroupId, GroupName};
use quip_proto::mls::LogKind;
use quip_proto::{ClientToNode, ErrorCode, NodeToClient};
use quip_storage::Storage;

on_both_backends!(
    a_non_admin_cannot_add_or_remove_others_and_the_group_keeps_talking,
    a_removed_member_cannot_post_at_the_old_epoch_nor_read_what_follows,
    a_stranger_cannot_post_to_a_group_nor_join_it_by_itself,
    a_bogus_leave_is_refused_and_a_real_one_is_committed_by_another_member,
    a_device_not_signed_by_its_account_key_enters_neither_the_node_nor_a_group,
    a_key_package_is_used_once_but_a_last_resort_one_again,
    of_two_commits_from_one_epoch_one_wins_and_the_loser_retries,
    a_reconnecting_device_gets_what_it_did_not_acknowledge_and_nothing_else,
    every_device_of_a_user_gets_every_message_from_when_it_joined,
);

/// alice (the admin), bob and carol, one device each, in one group; each device has read
/// everything (the commit that added bob and carol is `added`).
struct Trio {
    a: Person,
    b: Person,
    c: Person,
    alice: Session,
    bob: Session,
    carol: Session,
    group: GroupId,
    added: u64,
}

impl Trio {
    async fn start(node: &TestNode, home: &Path) -> Self {
        let a = Person::signup(node, home, "al").await;
        let b = Person::signup(node, home, "bo").await;
        let c = Person::signup(node, home, "ca").await;
        let keys = Keys::of(&[&a, &b, &c]);
        let mut alice = Session::open(node, &a, 1).await;
        let mut bob = Session::open(node, &b, 1).await;
        let mut carol = Session::open(node, &c, 1).await;
        for s in [&bob, &carol] {
            assert!(matches!(
                s.publish(1, true).await,
                Ok(NodeToClient::Done { .. })
            ));
        }
        let group = alice.create("friends").await;
        let added = alice.add(group, &[&b.user, &c.user], keys.pinned()).await;
        assert_eq!(bob.join(keys.pinned()).await, group);
        assert_eq!(carol.join(keys.pinned()).await, group);
        Self {
            a,
            b,
            c,
            alice,
            bob,
            carol,
            group,
            added,
        }
    }

    fn keys(&self) -> Keys {
        Keys::of(&[&self.a, &self.b, &self.c])
    }
}

/// The group's devices, as storage has them.
async fn members(node: &TestNode, group: &GroupId) -> Vec<(String, u64)> {
    node.storage
        .mls_members(group)
        .await
        .unwrap()
        .into_iter()
        .map(|(u, d)| (u.to_string(), d.0))
        .collect()
}

async fn a_non_admin_cannot_add_or_remove_others_and_the_group_keeps_talking(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let Trio {
        a,
        b,
        c,
        mut alice,
        mut bob,
        mut carol,
        group,
        added,
    } = Trio::start(&node, home.path()).await;
    let d = Person::signup(&node, home.path(), "da").await;
    let dave = Session::open(&node, &d, 1).await;
    assert!(dave.publish(1, false).await.is_ok());
    let keys = Keys::of(&[&a, &b, &c, &d]);

    // bob (not an admin) adds dave.
    let package = bob.claim(&d.user).await;
    let checked = bob
        .device
        .check_key_packages(&package, keys.pinned())
        .unwrap();
    let out = bob.device.add(&group, checked).unwrap();
    let (code, message) = bob.commit(group, &out).await.unwrap_err();
    assert_eq!(code, ErrorCode::NotAdmin, "{message}");
    assert_eq!(message, quip_mls::policy::ONLY_ADMIN);
    bob.device.discard(&group).unwrap();

    // bob removes carol's device.
    let out = bob
        .device
        .remove(&group, &[carol.device.me().clone()])
        .unwrap();
    assert_eq!(refusal(bob.commit(group, &out).await), ErrorCode::NotAdmin);
    bob.device.discard(&group).unwrap();

    // Neither reached the log: the next entry everyone reads is alice's, right after the
    // commit that added bob and carol, and it decrypts.
    let seq = alice.say(group, b"still here").await;
    assert_eq!(seq, added + 1);
    for s in [&mut bob, &mut carol] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"still here".to_vec())
        );
    }
    // And bob, still a member, still talks.
    let seq = bob.say(group, b"sorry").await;
    for s in [&mut alice, &mut carol] {
        assert_eq!(s.text(group, keys.pinned()).await, (seq, b"sorry".to_vec()));
    }
    // dave got nothing, and the group is as the admin made it.
    assert!(
        node.storage
            .mls_welcomes(&d.user, DeviceId(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(members(&node, &group).await.len(), 3);
}

async fn a_removed_member_cannot_post_at_the_old_epoch_nor_read_what_follows(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let t = Trio::start(&node, home.path()).await;
    let keys = t.keys();
    let Trio {
        c,
        mut alice,
        mut bob,
        mut carol,
        group,
        ..
    } = t;

    let out = alice
        .device
        .remove(&group, &[carol.device.me().clone()])
        .unwrap();
    let removal = appended(alice.commit(group, &out).await);
    alice.device.confirm(&group).unwrap();
    let (entry, received) = bob.read(group, 1, keys.pinned()).await.remove(0);
    assert_eq!((entry.seq, entry.kind), (removal, LogKind::Commit));
    assert!(
        matches!(
            received,
            Received::Commit {
                removed_me: false,
                ..
            }
        ),
        "{received:?}"
    );

    // carol has not processed her removal: she still writes at the old epoch.
    let stale = carol.device.encrypt(&group, b"I am still here").unwrap();
    let code = refusal(carol.post_raw(group, stale.clone()).await);
    assert!(
        matches!(code, ErrorCode::StaleEpoch | ErrorCode::NotMember),
        "{code:?}"
    );
    // A node that forwarded it anyway: members cannot open it (the old epoch's keys are gone).
    assert!(bob.device.receive(&stale, keys.pinned()).is_err());
    assert!(alice.device.receive(&stale, keys.pinned()).is_err());

    // carol, still connected, hears the commit that removed her; her device leaves the group.
    let (entry, received) = carol.read(group, 1, keys.pinned()).await.remove(0);
    assert_eq!(entry.seq, removal);
    assert!(
        matches!(
            received,
            Received::Commit {
                removed_me: true,
                ..
            }
        ),
        "{received:?}"
    );
    assert!(!carol.device.is_in(&group));

    // What follows is for bob alone; carol's device cannot open it, whoever hands it over.
    let seq = alice.say(group, b"carol is gone").await;
    let entry = bob.entries(group, 1).await.remove(0);
    assert_eq!(entry.seq, seq);
    assert!(carol.device.receive(&entry.body, keys.pinned()).is_err());
    match bob.device.receive(&entry.body, keys.pinned()).unwrap() {
        Received::Message { bytes, .. } => assert_eq!(bytes, b"carol is gone"),
        other => panic!("{other:?}"),
    }
    // The node keeps nothing for her device: not a leaf, nothing to read.
    assert!(
        !members(&node, &group)
            .await
            .contains(&(c.user.to_string(), 1))
    );
    let unread = node
        .storage
        .mls_unread(&c.user, DeviceId(1), None, 10)
        .await
        .unwrap();
    assert!(unread.items.iter().all(|u| u.group != group), "{unread:?}");
    // Her old message, sent again, is still refused.
    let code = refusal(carol.post_raw(group, stale).await);
    assert!(
        matches!(code, ErrorCode::StaleEpoch | ErrorCode::NotMember),
        "{code:?}"
    );
}

async fn a_stranger_cannot_post_to_a_group_nor_join_it_by_itself(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let t = Trio::start(&node, home.path()).await;
    let e = Person::signup(&node, home.path(), "ev").await;
    let keys = Keys::of(&[&t.a, &t.b, &t.c, &e]);
    let Trio {
        mut alice,
        mut bob,
        mut carol,
        group,
        added,
        ..
    } = t;
    let mut eve = Session::open(&node, &e, 1).await;

    // eve builds a lookalike group under the same id and brings it to the group's epoch, so
    // her ciphertext names the current epoch.
    let lookalike = GroupPolicy::new(GroupName::new("friends").unwrap(), vec![e.user.clone()]);
    eve.device.create_group(group, &lookalike).unwrap();
    let epoch = alice.device.epoch(&group).unwrap();
    while eve.device.epoch(&group).unwrap() < epoch {
        eve.device.update(&group).unwrap();
        eve.device.confirm(&group).unwrap();
    }
    let forged = eve.device.encrypt(&group, b"hi, it's alice").unwrap();
    assert_eq!(
        refusal(eve.post_raw(group, forged.clone()).await),
        ErrorCode::NotMember
    );
    // Had a node forwarded it, members could not open it.
    assert!(bob.device.receive(&forged, keys.pinned()).is_err());

    // She gets no state to join by herself; handed the group's state by a member, her
    // external commit is refused (only a member's own device joins by itself).
    let denied = eve
        .ask(|req| ClientToNode::GroupState {
            req,
            group,
            offset: 0,
        })
        .await;
    assert_eq!(refusal(denied), ErrorCode::UnknownGroup);
    let Ok(NodeToClient::GroupState {
        group_info, tree, ..
    }) = alice
        .ask(|req| ClientToNode::GroupState {
            req,
            group,
            offset: 0,
        })
        .await
    else {
        panic!("no state for alice");
    };
    let mut joiner = e.device(1);
    let (_, out) = joiner.join_external(&group_info, &tree).unwrap();
    assert_eq!(
        refusal(eve.commit(group, &out).await),
        ErrorCode::InvalidMls
    );

    // None of it is in the log; the group talks on.
    let seq = alice.say(group, b"just us").await;
    assert_eq!(seq, added + 1);
    for s in [&mut bob, &mut carol] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"just us".to_vec())
        );
    }
    assert_eq!(members(&node, &group).await.len(), 3);
}

async fn a_bogus_leave_is_refused_and_a_real_one_is_committed_by_another_member(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let t = Trio::start(&node, home.path()).await;
    let keys = t.keys();
    let Trio {
        c,
        mut alice,
        mut bob,
        mut carol,
        group,
        added,
        ..
    } = t;

    let good = carol.device.leave(&group).unwrap();
    // A public message from a member ends with its signature (64 bytes and a length byte),
    // then the membership tag (32 bytes and a length byte): flip a byte of the signature.
    let n = good.len();
    let mut bad = good.clone();
    bad[n - 33 - 10] ^= 0x40;
    assert_eq!(
        refusal(carol.propose(group, &bad).await),
        ErrorCode::InvalidMls
    );

    // The real one is taken, and it is the next entry of the log.
    let leave = appended(carol.propose(group, &good).await);
    assert_eq!(leave, added + 1);
    for s in [&mut alice, &mut bob] {
        let (entry, received) = s.read(group, 1, keys.pinned()).await.remove(0);
        assert_eq!((entry.seq, entry.kind), (leave, LogKind::Proposal));
        assert_eq!(from(&entry), (&c.user, DeviceId(1)));
        assert!(
            matches!(received, Received::Proposal { .. }),
            "{received:?}"
        );
    }

    // alice commits it.
    let out = alice.device.commit_pending(&group).unwrap();
    let commit = appended(alice.commit(group, &out).await);
    alice.device.confirm(&group).unwrap();
    let (entry, received) = bob.read(group, 1, keys.pinned()).await.remove(0);
    assert_eq!(entry.seq, commit);
    match received {
        Received::Commit {
            summary,
            removed_me: false,
            ..
        } => assert_eq!(
            summary
                .removed
                .iter()
                .map(|(d, _)| d)
                .cloned()
                .collect::<Vec<_>>(),
            vec![carol.device.me().clone()]
        ),
        other => panic!("{other:?}"),
    }
    let (entry, received) = carol.read(group, 1, keys.pinned()).await.remove(0);
    assert_eq!(entry.seq, commit);
    assert!(
        matches!(
            received,
            Received::Commit {
                removed_me: true,
                ..
            }
        ),
        "{received:?}"
    );
    assert_eq!(members(&node, &group).await.len(), 2);

    // alice and bob talk on.
    let seq = bob.say(group, b"bye carol").await;
    assert_eq!(
        alice.text(group, keys.pinned()).await,
        (seq, b"bye carol".to_vec())
    );
}

async fn a_device_not_signed_by_its_account_key_enters_neither_the_node_nor_a_group(
    backend: Backend,
) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let a = Person::signup(&node, home.path(), "al").await;
    let b = Person::signup(&node, home.path(), "bo").await;
    let m = Person::signup(&node, home.path(), "ma").await;
    let alice = Session::open(&node, &a, 1).await;
    let bob = Session::open(&node, &b, 1).await;
    assert!(bob.publish(1, false).await.is_ok());

    // A device of alice's whose credential mallory's account key signed.
    let forged = m
        .identity
        .enroll_device(a.user.clone(), DeviceId(2))
        .unwrap();
    let (credential, signature_key) = forged.enrollment();
    let session = Session::login(&node, &a).await;
    let refused = session
        .request(|req| ClientToNode::EnrollDevice {
            req,
            device: DeviceId(2),
            credential,
            signature_key,
        })
        .await;
    assert!(
        matches!(
            refused,
            Err(quip_cli::ConnectError::Refused {
                code: ErrorCode::InvalidMls,
                ..
            })
        ),
        "{refused:?}"
    );
    match alice.ask(|req| ClientToNode::ListDevices { req }).await {
        Ok(NodeToClient::Devices { devices, .. }) => {
            assert_eq!(devices.len(), 1, "{devices:?}");
        }
        other => panic!("{other:?}"),
    }

    // mallory makes a key package for "bob's device 1" (bob's real device id) under her own
    // key, and adds it to her group with a client that checks nothing.
    let mut mallory = Session::open(&node, &m, 1).await;
    let group = mallory.create("trap").await;
    let impostor = m
        .identity
        .enroll_device(b.user.clone(), DeviceId(1))
        .unwrap();
    let package = impostor.key_packages(1, false).unwrap().remove(0).1;
    let hers = |_: &quip_proto::ids::UserName| Some(m.key());
    let unchecked = mallory
        .device
        .check_key_packages(std::slice::from_ref(&package), hers)
        .unwrap();
    // An honest client checks it against bob's pinned key and refuses it.
    let honest = Keys::of(&[&a, &b, &m]);
    assert!(
        alice
            .device
            .check_key_packages(&[package], honest.pinned())
            .is_err()
    );
    let out = mallory.device.add(&group, unchecked).unwrap();
    let (code, message) = mallory.commit(group, &out).await.unwrap_err();
    assert_eq!(code, ErrorCode::InvalidMls, "{message}");
    mallory.device.discard(&group).unwrap();
    // bob's device got no Welcome; the group is mallory's device alone.
    assert!(
        node.storage
            .mls_welcomes(&b.user, DeviceId(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(members(&node, &group).await, [(m.user.to_string(), 1)]);
}

async fn a_key_package_is_used_once_but_a_last_resort_one_again(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let a = Person::signup(&node, home.path(), "al").await;
    let b = Person::signup(&node, home.path(), "bo").await;
    let keys = Keys::of(&[&a, &b]);
    let mut alice = Session::open(&node, &a, 1).await;
    let mut bob = Session::open(&node, &b, 1).await;
    assert!(bob.publish(1, false).await.is_ok());

    // alice adds bob to one group with his one package, and keeps it.
    let kept = alice.claim(&b.user).await;
    assert_eq!(kept.len(), 1);
    let first = alice.create("first").await;
    let checked = alice
        .device
        .check_key_packages(&kept, keys.pinned())
        .unwrap();
    let out = alice.device.add(&first, checked).unwrap();
    appended(alice.commit(first, &out).await);
    alice.device.confirm(&first).unwrap();
    assert_eq!(bob.join(keys.pinned()).await, first);

    // The same package for a second group is refused.
    let second = alice.create("second").await;
    let checked = alice
        .device
        .check_key_packages(&kept, keys.pinned())
        .unwrap();
    let out = alice.device.add(&second, checked).unwrap();
    let (code, message) = alice.commit(second, &out).await.unwrap_err();
    assert_eq!(code, ErrorCode::InvalidMls, "{message}");
    assert!(message.contains("used before"), "{message}");
    alice.device.discard(&second).unwrap();
    assert_eq!(members(&node, &second).await.len(), 1);
    assert!(alice.claim(&b.user).await.is_empty(), "no package left");

    // A last-resort package may serve twice: bob joins both groups with it.
    assert!(bob.publish(0, true).await.is_ok());
    let last = alice.claim(&b.user).await;
    assert_eq!(
        alice.claim(&b.user).await,
        last,
        "the last-resort package stays"
    );
    let third = alice.create("third").await;
    for group in [second, third] {
        let checked = alice
            .device
            .check_key_packages(&last, keys.pinned())
            .unwrap();
        let out = alice.device.add(&group, checked).unwrap();
        appended(alice.commit(group, &out).await);
        alice.device.confirm(&group).unwrap();
        assert_eq!(bob.join(keys.pinned()).await, group);
        let seq = alice.say(group, b"welcome").await;
        assert_eq!(
            bob.text(group, keys.pinned()).await,
            (seq, b"welcome".to_vec())
        );
    }
    let seq = alice.say(first, b"and here").await;
    assert_eq!(
        bob.text(first, keys.pinned()).await,
        (seq, b"and here".to_vec())
    );
}

async fn of_two_commits_from_one_epoch_one_wins_and_the_loser_retries(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let t = Trio::start(&node, home.path()).await;
    let keys = t.keys();
    let Trio {
        mut alice,
        mut bob,
        mut carol,
        group,
        added,
        ..
    } = t;

    // alice and bob both refresh their leaves from the same epoch, at once.
    let a_out = alice.device.update(&group).unwrap();
    let b_out = bob.device.update(&group).unwrap();
    let (a_answer, b_answer) = tokio::join!(alice.commit(group, &a_out), bob.commit(group, &b_out));
    let (winner, loser) = match (a_answer, b_answer) {
        (Ok(_), Err((ErrorCode::StaleEpoch, _))) => (&mut alice, &mut bob),
        (Err((ErrorCode::StaleEpoch, _)), Ok(_)) => (&mut bob, &mut alice),
        other => panic!("one commit wins, the other is stale: {other:?}"),
    };
    winner.device.confirm(&group).unwrap();
    let winning = added + 1;

    // The loser forgets its commit, reads the winner's (pushed like any entry), and retries.
    loser.device.discard(&group).unwrap();
    for s in [&mut *loser, &mut carol] {
        let (entry, received) = s.read(group, 1, keys.pinned()).await.remove(0);
        assert_eq!((entry.seq, entry.kind), (winning, LogKind::Commit));
        assert!(matches!(received, Received::Commit { .. }), "{received:?}");
    }
    let retry = loser.device.update(&group).unwrap();
    assert_eq!(appended(loser.commit(group, &retry).await), winning + 1);
    loser.device.confirm(&group).unwrap();
    for s in [&mut *winner, &mut carol] {
        let (entry, received) = s.read(group, 1, keys.pinned()).await.remove(0);
        assert_eq!(entry.seq, winning + 1);
        assert!(matches!(received, Received::Commit { .. }), "{received:?}");
    }

    // All three are at the same epoch and read each other.
    let epoch = carol.device.epoch(&group).unwrap();
    assert_eq!(epoch, alice.device.epoch(&group).unwrap());
    assert_eq!(epoch, bob.device.epoch(&group).unwrap());
    let seq = carol.say(group, b"both done").await;
    for s in [&mut alice, &mut bob] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"both done".to_vec())
        );
    }
}

/// Waits until storage has `user`'s device 1 with nothing unread in `group`.
async fn until_read(node: &TestNode, who: &Person, group: GroupId) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let unread = node
            .storage
            .mls_unread(&who.user, DeviceId(1), None, 100)
            .await
            .unwrap();
        if unread.items.iter().all(|u| u.group != group) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the acknowledgement never landed: {unread:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_reconnecting_device_gets_what_it_did_not_acknowledge_and_nothing_else(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let t = Trio::start(&node, home.path()).await;
    let keys = t.keys();
    let Trio {
        b,
        c,
        mut alice,
        mut bob,
        mut carol,
        group,
        added,
        ..
    } = t;

    let mut said = Vec::new();
    for text in [b"one", b"two", b"six"] {
        said.push(alice.say(group, text).await);
    }
    assert_eq!(said, [added + 1, added + 2, added + 3]);
    // bob reads and acknowledges all three; carol reads them and acknowledges nothing.
    for (entry, _) in bob.read(group, 3, keys.pinned()).await {
        bob.ack(group, entry.seq).await;
    }
    let first_time: Vec<_> = carol
        .read(group, 3, keys.pinned())
        .await
        .into_iter()
        .map(|(entry, _)| (entry.seq, entry.body))
        .collect();
    until_read(&node, &b, group).await;
    let (bob_device, carol_device) = (bob.device, carol.device);
    bob.conn.close().await;
    carol.conn.close().await;

    // Meanwhile alice writes on.
    let later = [
        alice.say(group, b"four").await,
        alice.say(group, b"five").await,
    ];

    // bob is back: only what came after his acknowledgement, and it decrypts.
    let mut bob = Session::resume(&node, &b, bob_device).await;
    let got: Vec<_> = bob
        .read(group, 2, keys.pinned())
        .await
        .into_iter()
        .map(|(entry, received)| match received {
            Received::Message { bytes, .. } => (entry.seq, bytes),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [(later[0], b"four".to_vec()), (later[1], b"five".to_vec())]
    );

    // carol is back: everything she did not acknowledge again, byte for byte, then the rest.
    let mut carol = Session::resume(&node, &c, carol_device).await;
    let again = carol.entries(group, 5).await;
    let seqs: Vec<u64> = again.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [said[0], said[1], said[2], later[0], later[1]]);
    for (entry, (seq, body)) in again.iter().zip(&first_time) {
        assert_eq!((&entry.seq, &entry.body), (seq, body));
    }
    for (entry, text) in again[3..].iter().zip([b"four", b"five"]) {
        match carol.device.receive(&entry.body, keys.pinned()).unwrap() {
            Received::Message { bytes, .. } => assert_eq!(bytes, text),
            other => panic!("{other:?}"),
        }
    }
}

async fn every_device_of_a_user_gets_every_message_from_when_it_joined(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let a = Person::signup(&node, home.path(), "al").await;
    let b = Person::signup(&node, home.path(), "bo").await;
    let keys = Keys::of(&[&a, &b]);
    let mut alice = Session::open(&node, &a, 1).await;
    let mut phone = Session::open(&node, &b, 1).await;
    let mut laptop = Session::open(&node, &b, 2).await;
    for s in [&phone, &laptop] {
        assert!(s.publish(1, false).await.is_ok());
    }
    let group = alice.create("duo").await;
    alice.add(group, &[&b.user], keys.pinned()).await;
    assert_eq!(phone.join(keys.pinned()).await, group);
    assert_eq!(laptop.join(keys.pinned()).await, group);

    // Both of bob's devices, online at once, get every message.
    let seq = alice.say(group, b"to both").await;
    for s in [&mut phone, &mut laptop] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"to both".to_vec())
        );
    }
    let seq = laptop.say(group, b"from the laptop").await;
    for s in [&mut alice, &mut phone] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"from the laptop".to_vec())
        );
    }
    let before = alice.say(group, b"before the tablet").await;
    for s in [&mut phone, &mut laptop] {
        assert_eq!(s.text(group, keys.pinned()).await.0, before);
    }

    // A third device joins by itself from the group's public state.
    let mut tablet = Session::open(&node, &b, 3).await;
    let Ok(NodeToClient::GroupState {
        group_info,
        tree,
        tree_len,
        ..
    }) = tablet
        .ask(|req| ClientToNode::GroupState {
            req,
            group,
            offset: 0,
        })
        .await
    else {
        panic!("no state for bob's tablet");
    };
    assert_eq!(tree.len() as u64, tree_len);
    let (joined, out) = tablet.device.join_external(&group_info, &tree).unwrap();
    assert_eq!(joined, group);
    let join = appended(tablet.commit(group, &out).await);
    for s in [&mut alice, &mut phone, &mut laptop] {
        let (entry, received) = s.read(group, 1, keys.pinned()).await.remove(0);
        assert_eq!(entry.seq, join);
        assert_eq!(from(&entry), (&b.user, DeviceId(3)));
        assert!(matches!(received, Received::Commit { .. }), "{received:?}");
    }
    assert_eq!(members(&node, &group).await.len(), 4);

    // From then on it gets everything, starting right after its join: nothing from before.
    let seq = alice.say(group, b"to all four").await;
    assert_eq!(seq, join + 1);
    for s in [&mut phone, &mut laptop, &mut tablet] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"to all four".to_vec())
        );
    }
    let seq = tablet.say(group, b"from the tablet").await;
    for s in [&mut alice, &mut phone, &mut laptop] {
        assert_eq!(
            s.text(group, keys.pinned()).await,
            (seq, b"from the tablet".to_vec())
        );
    }
}
