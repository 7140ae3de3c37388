//! MLS on the node (`quip/2`): devices enrolled with credentials their account key signed,
//! key packages checked and handed out once, groups created only by their creator's device,
//! the state a joining device needs only for members.

mod common;

use common::mls::{Keys, Person, Session};
use common::{Backend, TestNode, identity_of, unique};
use quip_cli::{Client, ConnectError};
use quip_mls::device::Device;
use quip_mls::policy::GroupPolicy;
use quip_proto::ids::{DeviceId, GroupId, GroupName, UserName};
use quip_proto::mls::KeyPackageUpload;
use quip_proto::{ClientToNode, ErrorCode, NodeToClient};

/// Sends a request on the client's connection; the answer, or the refusal's code.
async fn ask(
    client: &Client,
    build: impl FnOnce(u32) -> ClientToNode,
) -> Result<NodeToClient, (ErrorCode, String)> {
    match client.connection().request(build).await {
        Ok(answer) => Ok(answer),
        Err(ConnectError::Refused { code, message, .. }) => Err((code, message)),
        Err(other) => panic!("connection failed: {other}"),
    }
}

/// A user signed up, with a device enrolled on the session.
struct Member {
    user: UserName,
    client: Client,
    device: Device,
}

async fn member(node: &TestNode, home: &std::path::Path, prefix: &str, id: u64) -> Member {
    let user = unique(prefix);
    let client = node.signup(&user, home).await;
    let device = identity_of(home, &user)
        .enroll_device(user.clone(), DeviceId(id))
        .unwrap();
    let (credential, signature_key) = device.enrollment();
    let answer = ask(&client, |req| ClientToNode::EnrollDevice {
        req,
        device: DeviceId(id),
        credential,
        signature_key,
    })
    .await;
    assert!(
        matches!(answer, Ok(NodeToClient::Done { .. })),
        "{answer:?}"
    );
    Member {
        user,
        client,
        device,
    }
}

async fn publish(
    m: &Member,
    count: usize,
    last_resort: bool,
) -> Result<NodeToClient, (ErrorCode, String)> {
    let packages = m
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
    ask(&m.client, |req| ClientToNode::PublishKeyPackages {
        req,
        packages,
    })
    .await
}

async fn devices_are_enrolled_only_with_their_account_keys_word(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let alice = member(&node, home.path(), "al", 1).await;

    // mallory signs a device claiming to be alice's with her own account key.
    let mallory = unique("ma");
    let _mallory_client = node.signup(&mallory, home.path()).await;
    let forged = identity_of(home.path(), &mallory)
        .enroll_device(alice.user.clone(), DeviceId(2))
        .unwrap();
    let (credential, signature_key) = forged.enrollment();
    let second = node.login(&alice.user, home.path()).await.unwrap();
    let refused = ask(&second, |req| ClientToNode::EnrollDevice {
        req,
        device: DeviceId(2),
        credential,
        signature_key,
    })
    .await;
    assert_eq!(refused.unwrap_err().0, ErrorCode::InvalidMls);

    // One session per device: a second session cannot take alice's device 1 while in use.
    let busy = ask(&second, |req| ClientToNode::UseDevice {
        req,
        device: DeviceId(1),
    })
    .await;
    assert_eq!(busy.unwrap_err().0, ErrorCode::DeviceBusy);
    let unknown = ask(&second, |req| ClientToNode::UseDevice {
        req,
        device: DeviceId(9),
    })
    .await;
    assert_eq!(unknown.unwrap_err().0, ErrorCode::UnknownDevice);

    match ask(&second, |req| ClientToNode::ListDevices { req }).await {
        Ok(NodeToClient::Devices { devices, .. }) => {
            assert_eq!(devices.len(), 1, "{devices:?}");
            assert_eq!(devices[0].device, DeviceId(1));
            assert!(devices[0].online);
        }
        other => panic!("{other:?}"),
    }
}

async fn key_packages_are_checked_and_handed_out_once(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let alice = member(&node, home.path(), "al", 1).await;
    let bob = member(&node, home.path(), "bo", 1).await;
    let published = publish(&alice, 2, true).await;
    assert!(
        matches!(published, Ok(NodeToClient::Done { .. })),
        "{published:?}"
    );

    // bob takes alice's packages: two fresh ones, then the last-resort one, again and again.
    let mut seen = Vec::new();
    for _ in 0..4 {
        match ask(&bob.client, |req| ClientToNode::ClaimKeyPackages {
            req,
            user: alice.user.clone(),
        })
        .await
        {
            Ok(NodeToClient::KeyPackages { packages, .. }) => {
                assert_eq!(packages.len(), 1, "one per device");
                assert_eq!(packages[0].device, DeviceId(1));
                seen.push(packages[0].data.clone());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_ne!(seen[0], seen[1], "a key package is handed out once");
    assert_eq!(seen[2], seen[3], "the last-resort package stays");
    assert!(!seen[..2].contains(&seen[2]));

    // alice cannot publish bob's package (another device), a package under a wrong
    // reference, or the same package twice.
    let bobs = bob.device.key_packages(1, false).unwrap().remove(0);
    let theirs = ask(&alice.client, |req| ClientToNode::PublishKeyPackages {
        req,
        packages: vec![KeyPackageUpload {
            reference: bobs.0,
            data: bobs.1,
            last_resort: false,
        }],
    })
    .await;
    assert_eq!(theirs.unwrap_err().0, ErrorCode::InvalidMls);
    let (reference, data) = alice.device.key_packages(1, false).unwrap().remove(0);
    let wrong = ask(&alice.client, |req| ClientToNode::PublishKeyPackages {
        req,
        packages: vec![KeyPackageUpload {
            reference: vec![0; reference.len()],
            data: data.clone(),
            last_resort: false,
        }],
    })
    .await;
    assert_eq!(wrong.unwrap_err().0, ErrorCode::InvalidMls);
    let upload = || KeyPackageUpload {
        reference: reference.clone(),
        data: data.clone(),
        last_resort: false,
    };
    let first = ask(&alice.client, |req| ClientToNode::PublishKeyPackages {
        req,
        packages: vec![upload()],
    })
    .await;
    assert!(matches!(first, Ok(NodeToClient::Done { .. })), "{first:?}");
    let again = ask(&alice.client, |req| ClientToNode::PublishKeyPackages {
        req,
        packages: vec![upload()],
    })
    .await;
    assert_eq!(again.unwrap_err().0, ErrorCode::InvalidMls);
}

async fn groups_are_created_by_their_creators_device_and_shown_to_members_only(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut alice = member(&node, home.path(), "al", 1).await;
    let bob = member(&node, home.path(), "bo", 1).await;
    let id = GroupId(common::fresh_id());
    let policy = GroupPolicy::new(GroupName::new("plans").unwrap(), vec![alice.user.clone()]);
    let created = alice.device.create_group(id, &policy).unwrap();

    // bob's session cannot register alice's group (its one device is alice's).
    let stolen = ask(&bob.client, |req| ClientToNode::CreateMlsGroup {
        req,
        group: id,
        group_info: created.group_info.clone(),
        ratchet_tree: created.ratchet_tree.clone(),
    })
    .await;
    assert_eq!(stolen.unwrap_err().0, ErrorCode::NotMember);
    // A group whose policy makes someone else its admin is refused too.
    let other = GroupId(common::fresh_id());
    let skewed = GroupPolicy::new(GroupName::new("x").unwrap(), vec![bob.user.clone()]);
    let twisted = alice.device.create_group(other, &skewed).unwrap();
    let refused = ask(&alice.client, |req| ClientToNode::CreateMlsGroup {
        req,
        group: other,
        group_info: twisted.group_info,
        ratchet_tree: twisted.ratchet_tree,
    })
    .await;
    assert_eq!(refused.unwrap_err().0, ErrorCode::InvalidMls);

    let ok = ask(&alice.client, |req| ClientToNode::CreateMlsGroup {
        req,
        group: id,
        group_info: created.group_info.clone(),
        ratchet_tree: created.ratchet_tree.clone(),
    })
    .await;
    assert!(matches!(ok, Ok(NodeToClient::Done { .. })), "{ok:?}");
    match ask(&alice.client, |req| ClientToNode::ListMlsGroups {
        req,
        after: None,
        limit: 10,
    })
    .await
    {
        Ok(NodeToClient::MlsGroups { groups, .. }) => {
            assert_eq!(groups.len(), 1);
            assert_eq!((groups[0].id, groups[0].name.as_str()), (id, "plans"));
        }
        other => panic!("{other:?}"),
    }

    // bob is not in it: no state for him.
    let denied = ask(&bob.client, |req| ClientToNode::GroupState {
        req,
        group: id,
        offset: 0,
    })
    .await;
    assert_eq!(denied.unwrap_err().0, ErrorCode::UnknownGroup);
    // alice is: the state lets a new device of hers join by itself.
    let Ok(NodeToClient::GroupState {
        group_info,
        tree,
        tree_len,
        epoch,
        ..
    }) = ask(&alice.client, |req| ClientToNode::GroupState {
        req,
        group: id,
        offset: 0,
    })
    .await
    else {
        panic!("no state");
    };
    assert_eq!((epoch, tree.len() as u64), (0, tree_len));
    let mut laptop = identity_of(home.path(), &alice.user)
        .enroll_device(alice.user.clone(), DeviceId(2))
        .unwrap();
    let (joined, _commit) = laptop.join_external(&group_info, &tree).unwrap();
    assert_eq!(joined, id);
    let _ = &mut alice;
}

on_both_backends!(
    devices_are_enrolled_only_with_their_account_keys_word,
    key_packages_are_checked_and_handed_out_once,
    groups_are_created_by_their_creators_device_and_shown_to_members_only,
    a_group_talks_through_its_log_in_order_and_strangers_are_refused,
);

async fn a_group_talks_through_its_log_in_order_and_strangers_are_refused(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let a = Person::signup(&node, home.path(), "al").await;
    let b = Person::signup(&node, home.path(), "bo").await;
    let e = Person::signup(&node, home.path(), "ev").await;
    let keys = Keys::of(&[&a, &b, &e]);
    let mut alice = Session::open(&node, &a, 1).await;
    let mut bob = Session::open(&node, &b, 1).await;
    let mut eve = Session::open(&node, &e, 1).await;

    // bob publishes a key package; alice creates a group and adds him.
    assert!(bob.publish(1, false).await.is_ok());
    let id = alice.create("plans").await;
    let data = alice.claim(&b.user).await;
    let checked = alice
        .device
        .check_key_packages(&data, keys.pinned())
        .unwrap();
    let out = alice.device.add(&id, checked).unwrap();
    let added = alice.commit(id, &out).await;
    assert!(
        matches!(
            added,
            Ok(NodeToClient::Appended {
                seq: 1,
                epoch: 1,
                fresh: true,
                ..
            })
        ),
        "{added:?}"
    );
    alice.device.confirm(&id).unwrap();

    // bob's device is welcomed and joins.
    assert_eq!(bob.join(keys.pinned()).await, id);

    // Messages arrive in the order the node took them, each once.
    for n in 0..5u8 {
        alice.say(id, &[b'0' + n]).await;
    }
    let mut seqs = Vec::new();
    for (entry, received) in bob.read(id, 5, keys.pinned()).await {
        seqs.push(entry.seq);
        assert_eq!((&entry.sender, entry.device), (&a.user, DeviceId(1)));
        match received {
            quip_mls::device::Received::Message { bytes, .. } => {
                assert_eq!(bytes, [b'0' + seqs.len() as u8 - 1]);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    bob.ack(id, 6).await;

    // eve is not a member: her post is refused (`mls_attacks` tries harder).
    let lookalike = GroupPolicy::new(GroupName::new("x").unwrap(), vec![e.user.clone()]);
    eve.device.create_group(id, &lookalike).unwrap();
    let forged = eve.device.encrypt(&id, b"hi").unwrap();
    assert!(eve.post_raw(id, forged).await.is_err());
}
