//! Limits on what a sender can make the node store: the envelope size checked where it enters
//! (one bad envelope never fails another sender's), per-recipient and per-sender queue quotas,
//! and the expiry sweep — real clients over QUIC, on both storage backends (the sweep tests
//! on SQLite only: a sweep with a tiny retention on the shared Postgres database would expire
//! other tests' messages; the storage half of expiry runs on both in the conformance suite).

mod common;

use std::time::Duration;

use common::{Backend, TestNode, png, unique};
use quip_cli::{ClientError, ConnectError, Incoming};
use quip_proto::ids::{MsgId, UserName};
use quip_proto::limits::{MAX_SEALED, MAX_TEXT};
use quip_proto::{
    ClientToNode, ContentKind, Conversation, Envelope, ErrorCode, Header, NodeToClient, Sealed,
    WrappedKey,
};
use quip_storage::{QueueQuota, Storage};

const WAIT: Duration = Duration::from_secs(20);

/// An envelope from `from` to `to` whose encoded sealed part is `MAX_SEALED + over` bytes.
/// The node cannot verify signatures, so made-up bytes are a well-formed envelope to it.
fn sized(from: &UserName, to: &UserName, over: isize) -> Envelope {
    let mut recipients = vec![from.clone(), to.clone()];
    recipients.sort();
    let mut sealed = Sealed {
        header: Header {
            id: MsgId(common::fresh_id()),
            sender: from.clone(),
            conversation: Conversation::Direct(to.clone()),
            kind: ContentKind::Text,
            sent_at_ms: 1,
            recipients: recipients.clone(),
        },
        ciphertext: Vec::new(),
        signature: vec![1; 256],
    };
    let target = (MAX_SEALED as isize + over) as usize;
    sealed.ciphertext = vec![0; target - sealed.encoded_len()];
    while sealed.encoded_len() > target {
        sealed.ciphertext.pop();
    }
    assert_eq!(
        sealed.encoded_len(),
        target,
        "the length prefix grew by a byte"
    );
    Envelope {
        sealed,
        keys: recipients
            .into_iter()
            .map(|recipient| WrappedKey {
                recipient,
                wrapped: vec![2; 256],
            })
            .collect(),
    }
}

fn refused_with(result: Result<NodeToClient, ConnectError>, code: ErrorCode) -> String {
    match result {
        Err(ConnectError::Refused {
            code: got, message, ..
        }) if got == code => message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn quota_refusal(result: Result<MsgId, ClientError>) -> String {
    match result {
        Err(ClientError::Connect(ConnectError::Refused {
            code: ErrorCode::QuotaExceeded,
            message,
            ..
        })) => message,
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
}

/// An envelope one byte over the limit (its ciphertext well under it) is refused where it
/// enters, with `TooLarge`; one at the limit is stored; and honest sends in the same moment
/// all succeed.
async fn poison_envelopes_refused_at_entry(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (m, b, c) = (unique("mallory"), unique("bob"), unique("carol"));
    let mallory = node.signup(&m, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    let mut carol = node.signup(&c, home.path()).await;

    let at_limit = sized(&m, &b, 0);
    assert!(matches!(
        mallory
            .connection()
            .request(|req| ClientToNode::Send {
                req,
                envelope: at_limit
            })
            .await,
        Ok(NodeToClient::Stored { fresh: true, .. })
    ));

    const POISON: usize = 30;
    const HONEST: usize = 30;
    let mallory = std::sync::Arc::new(mallory);
    let mut poisoned = tokio::task::JoinSet::new();
    for _ in 0..POISON {
        let envelope = sized(&m, &b, 1);
        assert!(envelope.sealed.ciphertext.len() < MAX_SEALED);
        let mallory = mallory.clone();
        poisoned.spawn(async move {
            mallory
                .connection()
                .request(move |req| ClientToNode::Send { req, envelope })
                .await
        });
    }
    let honest = async {
        let mut ids = Vec::with_capacity(HONEST);
        for i in 0..HONEST {
            ids.push(carol.send_text(&b, &format!("honest {i}")).await);
        }
        ids
    };
    let (poisoned, honest) = tokio::join!(poisoned.join_all(), honest);
    for result in poisoned {
        let message = refused_with(result, ErrorCode::TooLarge);
        assert!(message.contains("sealed envelope"), "{message}");
    }
    for result in &honest {
        assert!(result.is_ok(), "an honest send failed: {result:?}");
    }
    assert_eq!(
        node.storage.queue_depth(&b).await.unwrap(),
        1 + HONEST as u64
    );
}

#[tokio::test]
async fn poison_envelopes_refused_at_entry_sqlite() {
    poison_envelopes_refused_at_entry(Backend::Sqlite).await;
}

#[tokio::test]
async fn poison_envelopes_refused_at_entry_postgres() {
    poison_envelopes_refused_at_entry(Backend::Postgres).await;
}

/// A text of exactly MAX_TEXT bytes is sealed, stored and read; one byte more is refused by
/// the client before sealing.
async fn longest_text_round_trips(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    let longest = "é".repeat(MAX_TEXT / 2);
    assert_eq!(longest.len(), MAX_TEXT);
    alice.send_text(&b, &longest).await.unwrap();
    match bob.next_within(WAIT).await {
        Some(Incoming::Message(message)) => assert_eq!(message.text, longest),
        other => panic!("expected the text, got {other:?}"),
    }
    let over = format!("{longest}!");
    match alice.send_text(&b, &over).await {
        Err(err @ ClientError::TextTooLong { len, max }) => {
            assert_eq!((len, max), (MAX_TEXT + 1, MAX_TEXT));
            assert!(err.to_string().contains("the most one message can carry"));
        }
        other => panic!("expected TextTooLong, got {other:?}"),
    }
}

#[tokio::test]
async fn longest_text_round_trips_sqlite() {
    longest_text_round_trips(Backend::Sqlite).await;
}

#[tokio::test]
async fn longest_text_round_trips_postgres() {
    longest_text_round_trips(Backend::Postgres).await;
}

/// An offline user's queue stops at its limits with `QuotaExceeded` naming them: one sender
/// cannot fill it alone (another still gets through), it has a byte limit, and an image over
/// the byte limit is refused before it is uploaded.
async fn queue_quotas(backend: Backend) {
    const KIB: u64 = 1024;
    let Some(node) = TestNode::start_with(backend, |config| {
        config.queue_quota = QueueQuota {
            max_messages: 5,
            max_bytes: 1024 * KIB,
            max_messages_per_sender: 3,
            max_bytes_per_sender: 150 * KIB,
        };
    })
    .await
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (
        unique("alice"),
        unique("bob"),
        unique("carol"),
        unique("dave"),
    );
    let mut alice = node.signup(&a, home.path()).await;
    let mut carol = node.signup(&c, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    node.signup(&d, home.path()).await.close().await;

    // Messages: alice's fourth to bob is refused, carol still gets through, until bob's five.
    for i in 0..3 {
        alice.send_text(&b, &format!("a{i}")).await.unwrap();
    }
    let why = quota_refusal(alice.send_text(&b, "a3").await);
    assert!(why.contains(b.as_str()), "{why}");
    assert!(why.contains("from one sender"), "{why}");
    carol.send_text(&b, "c0").await.unwrap();
    carol.send_text(&b, "c1").await.unwrap();
    let why = quota_refusal(carol.send_text(&b, "c2").await);
    assert!(
        why.contains(b.as_str()) && why.contains("5 waiting messages"),
        "{why}"
    );
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 5);

    // Bytes: two 60 KiB texts fit alice's 150 KiB toward dave, a third does not.
    let big = "x".repeat(60 * 1024);
    alice.send_text(&d, &big).await.unwrap();
    alice.send_text(&d, &big).await.unwrap();
    let why = quota_refusal(alice.send_text(&d, &big).await);
    assert!(why.contains(d.as_str()) && why.contains("bytes"), "{why}");
    // An image larger than what is left is refused before a byte of it is stored.
    let picture = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(picture.path(), png(200 * 1024, b"")).unwrap();
    let sent = carol.send_image(&d, picture.path(), &mut |_, _| {}).await;
    let why = quota_refusal(sent);
    assert!(why.contains(d.as_str()), "{why}");
    assert_eq!(node.storage.queue_depth(&d).await.unwrap(), 2);
}

#[tokio::test]
async fn queue_quotas_sqlite() {
    queue_quotas(Backend::Sqlite).await;
}

#[tokio::test]
async fn queue_quotas_postgres() {
    queue_quotas(Backend::Postgres).await;
}

/// Polls `check` every 20 ms until it holds, failing after [`WAIT`].
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message nobody fetched within the retention is removed by the sweep, and its sender is
/// told: at once when connected, else at the next login. An upload that never finished is
/// deleted too.
#[tokio::test]
async fn sweep_expires_unread_messages_and_tells_the_sender() {
    let Some(node) = TestNode::start_with(Backend::Sqlite, |config| {
        config.retention = Duration::from_millis(300);
        config.abandoned_upload = Duration::from_millis(300);
        config.sweep_every = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;

    // Connected sender: pushed.
    let first = alice.send_text(&b, "anyone?").await.unwrap();
    match alice.next_within(WAIT).await {
        Some(Incoming::Expired { id, recipient }) => {
            assert_eq!((id, recipient), (first, b.clone()))
        }
        other => panic!("expected an expiry notice, got {other:?}"),
    }
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 0);

    // Disconnected sender: told at the next login.
    let second = alice.send_text(&b, "still there?").await.unwrap();
    alice.close().await;
    eventually("the message expires", || async {
        node.storage.queue_depth(&b).await.unwrap() == 0
    })
    .await;
    let mut alice = node.login(&a, home.path()).await.unwrap();
    match alice.next_within(WAIT).await {
        Some(Incoming::Expired { id, recipient }) => {
            assert_eq!((id, recipient), (second, b.clone()))
        }
        other => panic!("expected an expiry notice, got {other:?}"),
    }

    // An upload that never finished.
    let blob = quip_proto::ids::BlobId(common::fresh_id());
    node.storage
        .blob_create(&blob, &a, common_now())
        .await
        .unwrap();
    node.storage
        .blob_append(&blob, 0, b"half an image")
        .await
        .unwrap();
    eventually("the abandoned upload is deleted", || async {
        node.storage.blob_info(&blob).await.unwrap().is_none()
    })
    .await;
}

fn common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The receiving client saves at most its cap of images from one sender; the next waits on
/// the server, unacknowledged, and is saved in a later session once there is room.
async fn auto_save_is_capped_per_sender(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b, c) = (unique("alice"), unique("bob"), unique("carol"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut carol = node.signup(&c, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    let cap = quip_cli::AutoSave {
        max_images: 2,
        max_bytes: 1024 * 1024,
    };
    bob.set_auto_save(cap);
    let picture = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(picture.path(), png(1000, b"")).unwrap();
    for _ in 0..3 {
        alice
            .send_image(&b, picture.path(), &mut |_, _| {})
            .await
            .unwrap();
    }
    carol
        .send_image(&b, picture.path(), &mut |_, _| {})
        .await
        .unwrap();
    let mut saved = Vec::new();
    for _ in 0..4 {
        match bob.next_within(WAIT).await {
            Some(Incoming::Image(image)) => saved.push((image.from, image.path)),
            Some(Incoming::Rejected { from, reason }) => {
                assert_eq!(from, a);
                assert!(reason.contains("image not saved"), "{reason}");
            }
            other => panic!("expected an image or a refusal, got {other:?}"),
        }
    }
    let from_alice: Vec<_> = saved.iter().filter(|(from, _)| *from == a).collect();
    assert_eq!(from_alice.len(), 2, "{saved:?}");
    assert_eq!(
        saved.len(),
        3,
        "carol's image is saved: the cap is per sender"
    );
    // Acknowledgements are committed in the background: wait for the three saved ones.
    eventually("only the refused image is still queued", || async {
        node.storage.queue_depth(&b).await.unwrap() == 1
    })
    .await;

    // Room again: the waiting image is saved in the next session.
    std::fs::remove_file(&from_alice[0].1).unwrap();
    bob.close().await;
    let mut bob = node.login(&b, home.path()).await.unwrap();
    bob.set_auto_save(cap);
    match bob.next_within(WAIT).await {
        Some(Incoming::Image(image)) => assert_eq!(image.from, a),
        other => panic!("expected the waiting image, got {other:?}"),
    }
}

#[tokio::test]
async fn auto_save_is_capped_per_sender_sqlite() {
    auto_save_is_capped_per_sender(Backend::Sqlite).await;
}

#[tokio::test]
async fn auto_save_is_capped_per_sender_postgres() {
    auto_save_is_capped_per_sender(Backend::Postgres).await;
}
