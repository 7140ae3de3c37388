//! Accounts and personal chat through one in-process node, with real clients, on both
//! storage backends.

mod common;

use std::time::Duration;

use common::{Backend, PASSWORD, TestNode, unique, user_home};
use quip_cli::e2e::{self, Secrets};
use quip_cli::{Client, ClientError, Connection, Event, Incoming};
use quip_proto::{ClientToNode, Conversation, ErrorCode, NodeToClient};
use quip_storage::Storage;

const WAIT: Duration = Duration::from_secs(10);

async fn next_message(client: &mut Client) -> quip_cli::Message {
    match client.next_within(WAIT).await {
        Some(Incoming::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn accounts(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let alice = unique("alice");
    node.signup(&alice, home.path()).await.close().await;

    // Duplicate in another case.
    let upper = alice.as_str().to_uppercase();
    let again = quip_proto::ids::UserName::new(&upper).unwrap();
    let err = Client::signup(
        node.connect().await,
        &user_home(home.path(), &again),
        &again,
        PASSWORD,
        common::TEST_BITS,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UserExists), "{err}");
    assert!(err.to_string().contains("already taken"), "{err}");

    // Right password.
    let client = node.login(&alice, home.path()).await.expect("login");
    client.close().await;

    // Wrong password and unknown user: the same answer.
    let wrong = Client::login(
        node.connect().await,
        &user_home(home.path(), &alice),
        &alice,
        "wrong",
    )
    .await
    .unwrap_err();
    let nobody = unique("nobody");
    let unknown = Client::login(
        node.connect().await,
        &user_home(home.path(), &nobody),
        &nobody,
        PASSWORD,
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.code(), Some(ErrorCode::InvalidCredentials));
    assert_eq!(wrong.to_string(), unknown.to_string());
}

async fn dm_both_online(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    alice.send_text(&b, "hello bob").await.unwrap();
    let got = next_message(&mut bob).await;
    assert_eq!(
        (got.from.clone(), got.text.as_str()),
        (a.clone(), "hello bob")
    );
    assert_eq!(got.conversation, Conversation::Direct(b.clone()));
    bob.send_text(&a, "hi alice").await.unwrap();
    assert_eq!(next_message(&mut alice).await.text, "hi alice");
    let users = alice.users().await.unwrap();
    assert!(users.iter().any(|p| p.user == b && p.online));
    // Nothing left queued once acknowledged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 0);
}

async fn offline_delivery_in_order_without_plaintext(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    let texts: Vec<String> = (0..20)
        .map(|i| format!("secret-plaintext-{i:03}-zebra"))
        .collect();
    for text in &texts {
        alice.send_text(&b, text).await.unwrap();
    }
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 20);

    // The node's storage never holds a plaintext: not in any queued envelope...
    for queued in node.storage.pending(&b, 0, 100).await.unwrap() {
        assert!(!contains(&queued.sealed, b"zebra"));
    }
    // ...and not anywhere in the database files.
    if let Some(db) = &node.db_path {
        for file in [db.clone(), db.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !contains(&bytes, b"zebra"),
                    "plaintext found in {}",
                    file.display()
                );
                assert!(
                    !contains(&bytes, b"hunter"),
                    "password found in {}",
                    file.display()
                );
            }
        }
    }

    let mut bob = node.login(&b, home.path()).await.unwrap();
    for text in &texts {
        assert_eq!(&next_message(&mut bob).await.text, text);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Logs in with a bare connection, as a client that never acknowledges.
async fn raw_login(node: &TestNode, user: &quip_proto::ids::UserName) -> Connection {
    let conn = node.connect().await;
    let secrets = Secrets::derive(user, PASSWORD, &node.deployment()).unwrap();
    let answer = conn
        .request(|req| ClientToNode::Login {
            req,
            user: user.clone(),
            secret: secrets.login().to_vec(),
        })
        .await
        .unwrap();
    assert!(matches!(answer, NodeToClient::LoggedIn { .. }));
    conn
}

async fn unacked_redelivered_and_shown_once(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    alice.send_text(&b, "are you there?").await.unwrap();

    // Bob's first device receives it but never acknowledges.
    let mut raw = raw_login(&node, &b).await;
    match tokio::time::timeout(WAIT, raw.next_event()).await {
        Ok(Some(Event::Deliver(d))) => assert_eq!(d.sealed.header.sender, a),
        other => panic!("expected a delivery, got {other:?}"),
    }
    raw.close().await;

    // After reconnecting it comes again, and is shown.
    let mut bob = node.login(&b, home.path()).await.unwrap();
    let first = next_message(&mut bob).await;
    assert_eq!(first.text, "are you there?");

    // A replay of an envelope already shown: the node stores it again (the original was
    // acknowledged and deleted) but the client shows it only once.
    let envelope = seal_as(&alice, home.path(), &b, b"only once").await;
    let send = |envelope: quip_proto::Envelope| {
        alice
            .connection()
            .request(move |req| ClientToNode::Send { req, envelope })
    };
    assert!(matches!(
        send(envelope.clone()).await.unwrap(),
        NodeToClient::Stored { fresh: true, .. }
    ));
    assert_eq!(next_message(&mut bob).await.text, "only once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(
            send(envelope).await.unwrap(),
            NodeToClient::Stored { fresh: true, .. }
        ),
        "acknowledged, so stored anew"
    );
    alice.send_text(&b, "after the replay").await.unwrap();
    assert_eq!(
        next_message(&mut bob).await.text,
        "after the replay",
        "the replay was not shown"
    );
}

/// Seals `text` from `client`'s user to `to` with the keys from the key file, so a test can
/// send (and alter, and replay) the exact envelope.
async fn seal_as(
    client: &Client,
    home: &std::path::Path,
    to: &quip_proto::ids::UserName,
    text: &[u8],
) -> quip_proto::Envelope {
    let me = client.me().clone();
    let identity = e2e::KeyStore::new(user_home(home, &me))
        .load(&Secrets::derive(&me, PASSWORD, &client.connection().deployment()).unwrap())
        .unwrap();
    let theirs = e2e::PeerKeys::from_public(&fetch(client, to).await).unwrap();
    let id = common::fresh_id();
    let header = quip_proto::Header {
        id: quip_proto::ids::MsgId(id),
        sender: me.clone(),
        conversation: Conversation::Direct(to.clone()),
        kind: quip_proto::ContentKind::Text,
        sent_at_ms: 1,
        recipients: vec![],
    };
    e2e::seal(
        &identity,
        header,
        &[(me, identity.peer_keys()), (to.clone(), &theirs)],
        text,
    )
    .unwrap()
}

async fn tampered_envelope_refused(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;

    // Alice's client seals properly, then the bytes are altered in transit.
    let mut envelope = seal_as(&alice, home.path(), &b, b"pay 10 euros").await;
    let last = envelope.sealed.ciphertext.len() - 1;
    envelope.sealed.ciphertext[last] ^= 1;
    let answer = alice
        .connection()
        .request(|req| ClientToNode::Send { req, envelope })
        .await
        .unwrap();
    assert!(
        matches!(answer, NodeToClient::Stored { .. }),
        "the node cannot tell"
    );
    match bob.next_within(WAIT).await {
        Some(Incoming::Rejected { from, reason }) => {
            assert_eq!(from, a);
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Rejected deliveries are dropped, not redelivered forever.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 0);
}

async fn fetch(client: &Client, user: &quip_proto::ids::UserName) -> quip_proto::PublicKeys {
    match client
        .connection()
        .request(|req| ClientToNode::FetchKeys {
            req,
            user: user.clone(),
        })
        .await
        .unwrap()
    {
        NodeToClient::Keys { keys, .. } => keys,
        other => panic!("{other:?}"),
    }
}

async fn bad_requests_refused(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;

    // Unknown recipient.
    let ghost = unique("ghost");
    let err = alice.send_text(&ghost, "boo").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownUser), "{err}");

    // A message to oneself.
    let err = alice.send_text(&a, "me").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SelfMessage), "{err}");

    // An envelope whose sender field lies: bob signs as himself but claims alice's session.
    let envelope = seal_as(&bob, home.path(), &a, b"forged").await;
    let err = alice
        .connection()
        .request(|req| ClientToNode::Send { req, envelope })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            quip_cli::ConnectError::Refused {
                code: ErrorCode::SenderMismatch,
                ..
            }
        ),
        "{err}"
    );

    // After all that, normal service continues.
    alice.send_text(&b, "still here").await.unwrap();
    assert_eq!(next_message(&mut bob).await.text, "still here");
}

async fn changed_key_stops_sending_until_accepted(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let bob = node.signup(&b, home.path()).await;
    alice.send_text(&b, "first").await.unwrap();

    // Bob (or a server pretending to be him) presents new keys.
    let new = e2e::Identity::generate(common::TEST_BITS).unwrap();
    let secrets = Secrets::derive(&b, PASSWORD, &node.deployment()).unwrap();
    let backup = e2e::encrypt_backup(&new, &secrets, &b).unwrap();
    bob.connection()
        .request(|req| ClientToNode::ReplaceKeys {
            req,
            keys: new.public_keys(),
            backup,
        })
        .await
        .unwrap();

    let mut fresh = Client::login(
        node.connect().await,
        &user_home(home.path(), &a),
        &a,
        PASSWORD,
    )
    .await
    .unwrap();
    let err = fresh.send_text(&b, "second").await.unwrap_err();
    assert!(matches!(err, ClientError::KeyChanged { .. }), "{err}");
    assert!(err.to_string().contains("quip keys accept"), "{err}");
    fresh.accept_keys(&b).await.unwrap();
    fresh.send_text(&b, "second").await.unwrap();
    drop(alice);
}

async fn fresh_directory_restores_keys_from_backup(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    alice.send_text(&b, "read me anywhere").await.unwrap();

    let elsewhere = tempfile::tempdir().unwrap();
    let mut bob = node
        .login(&b, elsewhere.path())
        .await
        .expect("login from a new directory");
    assert_eq!(next_message(&mut bob).await.text, "read me anywhere");
    assert!(
        e2e::KeyStore::new(user_home(elsewhere.path(), &b)).exists(),
        "keys saved locally"
    );
    bob.close().await;

    // A damaged key file is named, and restored from the backup.
    let store = e2e::KeyStore::new(user_home(elsewhere.path(), &b));
    std::fs::write(
        store.path(),
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\ngarbage\n",
    )
    .unwrap();
    let bob = node
        .login(&b, elsewhere.path())
        .await
        .expect("login despite the damage");
    let notice = bob.notices().join("\n");
    assert!(
        notice.contains("could not be used") && notice.contains("restored"),
        "{notice}"
    );
    assert!(
        store
            .load(&Secrets::derive(&b, PASSWORD, &node.deployment()).unwrap())
            .is_ok(),
        "key file repaired"
    );
}

async fn malformed_frame_does_not_hurt_others(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;

    // A hostile user: logged in (a connection that has not logged in gets no extra stream),
    // then garbage and an oversized length prefix on new streams.
    let mallory = node.signup(&unique("mallory"), home.path()).await;
    let quic = mallory.connection().quic().clone();
    let (mut send, _recv) = quic.open_bi().await.unwrap();
    send.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let (mut send2, _recv2) = quic.open_bi().await.unwrap();
    send2
        .write_all(&[0, 0, 0, 3, 0xde, 0xad, 0xbe])
        .await
        .unwrap();
    drop(mallory);

    alice.send_text(&b, "unaffected").await.unwrap();
    assert_eq!(next_message(&mut bob).await.text, "unaffected");
}

on_both_backends!(
    accounts,
    dm_both_online,
    offline_delivery_in_order_without_plaintext,
    unacked_redelivered_and_shown_once,
    tampered_envelope_refused,
    bad_requests_refused,
    changed_key_stops_sending_until_accepted,
    fresh_directory_restores_keys_from_backup,
    malformed_frame_does_not_hurt_others,
);
