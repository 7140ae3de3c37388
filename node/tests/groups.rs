//! Groups end to end: admin powers enforced by the node, the signed membership chain
//! verified by every client, fan-out to members online and offline.

mod common;

use std::time::Duration;

use common::{Backend, TestNode, identity_of, unique};
use quip_cli::{Chat, Client, ClientError, Incoming};
use quip_proto::group::ChangeError;
use quip_proto::ids::{GroupId, GroupName, UserName};
use quip_proto::{Action, Change, ClientToNode, Conversation, ErrorCode};
use quip_storage::{GroupChange, MemberEffect, Storage};

const WAIT: Duration = Duration::from_secs(10);

async fn next_text(client: &mut Client) -> (UserName, String, Conversation) {
    loop {
        match client.next_within(WAIT).await {
            Some(Incoming::Message(m)) => return (m.from, m.text, m.conversation),
            Some(Incoming::GroupChanged(_)) => continue,
            other => panic!("{} expected a message, got {other:?}", client.me()),
        }
    }
}

/// Reads pushes until nothing arrives for a moment; returns the texts.
async fn drain_texts(client: &mut Client) -> Vec<String> {
    let mut texts = Vec::new();
    while let Some(incoming) = client.next_within(Duration::from_millis(500)).await {
        if let Incoming::Message(m) = incoming {
            texts.push(m.text);
        }
    }
    texts
}

fn name(raw: &str) -> GroupName {
    GroupName::new(raw).unwrap()
}

async fn membership_end_to_end(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, c) = (unique("alice"), unique("bob"), unique("carol"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    let mut carol = node.signup(&c, home.path()).await;

    let id = alice
        .create_group(&name("Friends"), std::slice::from_ref(&b))
        .await
        .unwrap();
    let verified = bob.verify_group(&id).await.unwrap();
    assert!(verified.state.is_admin(&a) && !verified.state.is_admin(&b));

    // A non-admin: the client refuses with the original's words; the node refuses too.
    let err = bob
        .change_group(&id, Action::Add(c.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Group(ChangeError::NotAdmin)),
        "{err}"
    );
    assert_eq!(err.to_string(), "Only admin can add/remove partipants");
    let forged = signed_by(home.path(), &mut bob, &id, Action::Add(c.clone())).await;
    let (code, message) = refused(&bob, forged).await;
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::NotAdmin, "Only admin can add/remove partipants")
    );

    alice
        .change_group(&id, Action::Add(c.clone()))
        .await
        .unwrap();
    alice
        .send_text_to(&Chat::Group(id), "welcome carol")
        .await
        .unwrap();
    for member in [&mut bob, &mut carol] {
        let (from, text, conversation) = next_text(member).await;
        assert_eq!((from, text.as_str()), (a.clone(), "welcome carol"));
        assert!(matches!(conversation, Conversation::Group { id: got, .. } if got == id));
    }

    // Promote, then the new admin removes carol; carol gets nothing afterwards.
    alice
        .change_group(&id, Action::Promote(b.clone()))
        .await
        .unwrap();
    bob.change_group(&id, Action::Remove(c.clone()))
        .await
        .unwrap();
    let sent = alice
        .send_text_to(&Chat::Group(id), "carol is gone")
        .await
        .unwrap();
    assert!(sent.left_out.is_empty());
    assert_eq!(next_text(&mut bob).await.1, "carol is gone");
    assert!(
        drain_texts(&mut carol).await.is_empty(),
        "a removed member gets no later message"
    );
    assert_eq!(node.storage.queue_depth(&c).await.unwrap(), 0);
    let err = carol
        .send_text_to(&Chat::Group(id), "let me back")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no group"), "{err}");

    // Leaving: alice leaves (bob is admin too); the last admin may not leave.
    alice.change_group(&id, Action::Leave).await.unwrap();
    let err = bob
        .change_group(&id, Action::Demote(b.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Group(ChangeError::LastAdmin)),
        "{err}"
    );
    let final_state = bob.verify_group(&id).await.unwrap().state;
    assert_eq!(final_state.members.keys().collect::<Vec<_>>(), vec![&b]);
    assert_eq!(final_state.epoch, 4);
}

/// A change signed by `client`'s user at the group's next epoch, made without the client's
/// local checks (to see what the node does with it).
async fn signed_by(
    home: &std::path::Path,
    client: &mut Client,
    id: &GroupId,
    action: Action,
) -> quip_proto::SignedChange {
    let author = client.me().clone();
    let verified = client.verify_group(id).await.unwrap();
    let change = Change {
        group: *id,
        epoch: verified.state.epoch + 1,
        prev: verified.head,
        author: author.clone(),
        action,
        at_ms: 1,
    };
    quip_cli::e2e::sign_change(&identity_of(home, &author), change).unwrap()
}

async fn refused(client: &Client, change: quip_proto::SignedChange) -> (ErrorCode, String) {
    match client
        .connection()
        .request(|req| ClientToNode::ChangeGroup { req, change })
        .await
    {
        Err(quip_cli::ConnectError::Refused { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn injected_member_gets_nothing(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, m) = (unique("alice"), unique("bob"), unique("mallory"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    node.signup(&m, home.path()).await.close().await;
    let id = alice
        .create_group(&name("Secret"), std::slice::from_ref(&b))
        .await
        .unwrap();

    // The server's database gains a member no admin signed for.
    node.inject_member(&id, &m).await;
    let verified = alice.verify_group(&id).await.unwrap();
    assert_eq!(verified.unproven, vec![m.clone()]);
    let sent = alice
        .send_text_to(&Chat::Group(id), "for members only")
        .await
        .unwrap();
    assert_eq!(sent.left_out.len(), 1);
    assert!(
        sent.left_out[0].contains(m.as_str()) && sent.left_out[0].contains("warning"),
        "{:?}",
        sent.left_out
    );
    assert_eq!(next_text(&mut bob).await.1, "for members only");
    assert_eq!(
        node.storage.queue_depth(&m).await.unwrap(),
        0,
        "mallory was given nothing"
    );
    // Bob's client refuses to encrypt to mallory as well.
    let sent = bob.send_text_to(&Chat::Group(id), "me too").await.unwrap();
    assert_eq!(sent.left_out.len(), 1);
    assert_eq!(node.storage.queue_depth(&m).await.unwrap(), 0);
}

async fn forged_chain_refused_by_clients(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, m) = (unique("alice"), unique("bob"), unique("mallory"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    let mallory = node.signup(&m, home.path()).await;
    let id = alice
        .create_group(&name("Club"), std::slice::from_ref(&b))
        .await
        .unwrap();
    let verified = alice.verify_group(&id).await.unwrap();

    // The server appends a link mallory signed, adding herself: validly signed, not allowed.
    let change = Change {
        group: id,
        epoch: 1,
        prev: verified.head,
        author: m.clone(),
        action: Action::Add(m.clone()),
        at_ms: 1,
    };
    let forged = quip_cli::e2e::sign_change(&identity_of(home.path(), &m), change).unwrap();
    node.storage
        .apply_change(&GroupChange {
            group: id,
            epoch: 1,
            signed: forged.to_bytes(),
            effect: MemberEffect::Add(m.clone()),
        })
        .await
        .unwrap();
    let err = alice
        .send_text_to(&Chat::Group(id), "hello?")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadChain { .. }), "{err}");
    assert!(err.to_string().contains("cannot be trusted"), "{err}");
    assert_eq!(node.storage.queue_depth(&m).await.unwrap(), 0);
    assert_eq!(
        node.storage.queue_depth(&b).await.unwrap(),
        0,
        "nothing sent to anyone"
    );
    drop(mallory);
}

async fn offline_members_in_order(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, c) = (unique("alice"), unique("bob"), unique("carol"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    node.signup(&c, home.path()).await.close().await;
    let id = alice
        .create_group(&name("Team"), &[b.clone(), c.clone()])
        .await
        .unwrap();
    let texts: Vec<String> = (0..10).map(|i| format!("update {i}")).collect();
    for text in &texts {
        alice.send_text_to(&Chat::Group(id), text).await.unwrap();
    }
    for user in [&b, &c] {
        let mut client = node.login(user, home.path()).await.unwrap();
        assert_eq!(
            &drain_texts(&mut client).await,
            &texts,
            "{user} gets all, in order"
        );
    }
}

async fn bad_group_requests(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    let ghost = unique("ghost");

    // Unknown member at creation; duplicate name for the same creator.
    let err = alice
        .create_group(&name("G"), std::slice::from_ref(&ghost))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownUser), "{err}");
    let id = alice
        .create_group(&name("G"), std::slice::from_ref(&b))
        .await
        .unwrap();
    let err = alice.create_group(&name("G"), &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GroupNameTaken), "{err}");
    assert!(
        GroupName::new("   ").is_err(),
        "an empty name is refused before anything is sent"
    );

    // Through the node, bypassing the client's own checks.
    let add_ghost = signed_by(home.path(), &mut alice, &id, Action::Add(ghost.clone())).await;
    assert_eq!(refused(&alice, add_ghost).await.0, ErrorCode::UnknownUser);
    let add_bob = signed_by(home.path(), &mut alice, &id, Action::Add(b.clone())).await;
    assert_eq!(refused(&alice, add_bob).await.0, ErrorCode::AlreadyMember);
    let remove_ghost = signed_by(home.path(), &mut alice, &id, Action::Remove(ghost.clone())).await;
    assert_eq!(refused(&alice, remove_ghost).await.0, ErrorCode::NotMember);
    let mut stale = signed_by(home.path(), &mut alice, &id, Action::Promote(b.clone())).await;
    stale.change.epoch = 0;
    assert_eq!(refused(&alice, stale).await.0, ErrorCode::StaleEpoch);
    let mut broken = signed_by(home.path(), &mut alice, &id, Action::Promote(b.clone())).await;
    broken.change.prev = [9; 32];
    assert_eq!(refused(&alice, broken).await.0, ErrorCode::InvalidChange);

    // Unknown group.
    let err = alice
        .send_text_to(&Chat::Group(GroupId([3; 16])), "hi")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownGroup), "{err}");

    // Nothing changed.
    let state = alice.verify_group(&id).await.unwrap().state;
    assert_eq!((state.epoch, state.members.len()), (0, 2));
}

/// Issue 11 item 8: a member appending a link with a forged or missing signature used to
/// wreck the group for everyone (every client refuses the chain from then on). The node now
/// verifies each link against the author's registered key.
async fn unsigned_changes_refused(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, m) = (unique("alice"), unique("bob"), unique("mallory"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    node.signup(&m, home.path()).await.close().await;
    let id = alice
        .create_group(&name("Sturdy"), std::slice::from_ref(&b))
        .await
        .unwrap();

    // Bob's Leave with an all-zero signature, and one signed by someone else's key.
    let mut zero = signed_by(home.path(), &mut bob, &id, Action::Leave).await;
    zero.signature = vec![0; zero.signature.len()];
    let (code, message) = refused(&bob, zero).await;
    assert_eq!(code, ErrorCode::InvalidChange, "{message}");
    assert!(message.contains("not signed"), "{message}");
    let verified = bob.verify_group(&id).await.unwrap();
    let change = Change {
        group: id,
        epoch: verified.state.epoch + 1,
        prev: verified.head,
        author: b.clone(),
        action: Action::Leave,
        at_ms: 1,
    };
    let forged = quip_cli::e2e::sign_change(&identity_of(home.path(), &m), change).unwrap();
    assert_eq!(refused(&bob, forged).await.0, ErrorCode::InvalidChange);

    // An unsigned genesis.
    let genesis = quip_proto::SignedChange {
        change: Change {
            group: GroupId(common::fresh_id()),
            epoch: 0,
            prev: [0; 32],
            author: b.clone(),
            action: Action::Create {
                name: name("Unsigned"),
                members: vec![a.clone()],
            },
            at_ms: 1,
        },
        signature: Vec::new(),
    };
    let err = bob
        .connection()
        .request(|req| ClientToNode::CreateGroup { req, genesis })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            quip_cli::ConnectError::Refused {
                code: ErrorCode::InvalidChange,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        bob.groups()
            .await
            .unwrap()
            .iter()
            .all(|g| g.name.as_str() != "Unsigned"),
        "no group was made"
    );

    // The group still works for everyone, and a properly signed change still goes through.
    alice
        .send_text_to(&Chat::Group(id), "still here")
        .await
        .unwrap();
    assert_eq!(next_text(&mut bob).await.1, "still here");
    bob.send_text_to(&Chat::Group(id), "me too").await.unwrap();
    assert_eq!(next_text(&mut alice).await.1, "me too");
    bob.change_group(&id, Action::Leave).await.unwrap();
    let state = alice.verify_group(&id).await.unwrap().state;
    assert_eq!((state.epoch, state.members.len()), (1, 1));
}

on_both_backends!(
    unsigned_changes_refused,
    membership_end_to_end,
    injected_member_gets_nothing,
    forged_chain_refused_by_clients,
    offline_members_in_order,
    bad_group_requests,
);
