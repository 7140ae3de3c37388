//! Images end to end through one in-process node: their own streams, chunked encryption,
//! blob storage for offline recipients, and every kind of bad input.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, TestNode, identity_of, png, unique};
use quip_cli::e2e::{self, ImageEncryptor};
use quip_cli::{Client, ConnectError, Incoming};
use quip_proto::ids::{BlobId, MsgId, UserName};
use quip_proto::{ContentKind, Conversation, Envelope, ErrorCode, Header, NodeToClient};
use quip_storage::Storage;

const WAIT: Duration = Duration::from_secs(20);

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn next_image(client: &mut Client) -> quip_cli::ImageMessage {
    match client.next_within(WAIT).await {
        Some(Incoming::Image(m)) => m,
        other => panic!("expected an image, got {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn round_trip_online_and_offline(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;

    // Online: about 300 KB, five chunks.
    let picture = png(300_000, b"PLAINTEXT-MARKER-ONLINE");
    let path = write(files.path(), "cat.png", &picture);
    let mut seen = Vec::new();
    alice
        .send_image(&b, &path, &mut |done, total| seen.push((done, total)))
        .await
        .unwrap();
    assert_eq!(
        seen.last().map(|(d, t)| d == t),
        Some(true),
        "progress reaches the end"
    );
    let got = next_image(&mut bob).await;
    assert_eq!(got.from, a);
    assert_eq!(got.conversation, Conversation::Direct(b.clone()));
    assert_eq!(std::fs::read(&got.path).unwrap(), picture, "byte for byte");
    assert_eq!(got.path.parent().unwrap(), bob.dir().join("images"));
    assert_eq!(
        got.path.file_name().unwrap().to_str().unwrap(),
        format!("{a}-{}.png", got.id.to_hex())
    );

    // Offline: bob leaves, the image waits as a blob, and only ciphertext is stored.
    bob.close().await;
    let marker = b"PLAINTEXT-MARKER-OFFLINE";
    let picture = png(200_000, marker);
    let path = write(files.path(), "dog.png", &picture);
    alice.send_image(&b, &path, &mut |_, _| {}).await.unwrap();
    let queued = node.storage.pending(&b, 0, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    let blob = queued[0].blob.expect("the message refers to a blob");
    let info = node.storage.blob_info(&blob).await.unwrap().unwrap();
    assert!(info.finished);
    for index in 0..info.chunks {
        let chunk = node
            .storage
            .blob_chunk(&blob, index)
            .await
            .unwrap()
            .unwrap();
        assert!(!contains(&chunk, marker), "plaintext in blob chunk {index}");
    }
    if let Some(db) = &node.db_path {
        for file in [db.clone(), db.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(!contains(&bytes, marker), "plaintext in {}", file.display());
            }
        }
    }
    let mut bob = node.login(&b, home.path()).await.unwrap();
    let got = next_image(&mut bob).await;
    assert_eq!(std::fs::read(&got.path).unwrap(), picture);
    // Acknowledged by its only recipient: the blob is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.storage.blob_info(&blob).await.unwrap(), None);
}

async fn bad_files_refused_before_sending(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    let text = write(files.path(), "notes.png", b"just some text, not a picture");
    let cases = [
        (files.path().join("missing.png"), "not found"),
        (files.path().to_owned(), "directory"),
        (text, "not a PNG, JPEG, GIF or WebP"),
    ];
    for (path, why) in cases {
        let err = alice
            .send_image(&b, &path, &mut |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{}: {err}", path.display());
    }
    assert_eq!(
        node.storage.queue_depth(&b).await.unwrap(),
        0,
        "nothing was sent"
    );
}

async fn node_enforces_its_size_limit(backend: Backend) {
    let Some(node) = TestNode::start_with(backend, |c| c.max_image_bytes = 100_000).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    node.signup(&b, home.path()).await.close().await;
    let path = write(files.path(), "big.png", &png(300_000, b""));
    let err = alice
        .send_image(&b, &path, &mut |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("at most 100000"), "{err}");
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 0);
    // The session goes on.
    alice.send_text(&b, "too big, sorry").await.unwrap();
}

/// Seals an image envelope from `sender` to `to` by hand, returning it with its chunks, so a
/// test can cut, reorder, tamper or lie about them.
async fn raw_image(
    home: &Path,
    sender: &Client,
    to: &UserName,
    picture: &[u8],
) -> (Envelope, Vec<Vec<u8>>) {
    let me = sender.me().clone();
    let identity = identity_of(home, &me);
    let theirs = match sender
        .connection()
        .request(|req| quip_proto::ClientToNode::FetchKeys {
            req,
            user: to.clone(),
        })
        .await
        .unwrap()
    {
        NodeToClient::Keys { keys, .. } => e2e::PeerKeys::from_public(&keys).unwrap(),
        other => panic!("{other:?}"),
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), picture).unwrap();
    let (mut encryptor, key) = ImageEncryptor::open(file.path(), 1 << 30).unwrap();
    let chunks: Vec<Vec<u8>> = std::iter::from_fn(|| encryptor.next_chunk().unwrap()).collect();
    let id = common::fresh_id();
    let header = Header {
        id: MsgId(id),
        sender: me.clone(),
        conversation: Conversation::Direct(to.clone()),
        kind: ContentKind::Image {
            blob: BlobId(id),
            len: key.cipher_len(),
        },
        sent_at_ms: 1,
        recipients: vec![],
    };
    let envelope = e2e::seal(
        &identity,
        header,
        &[(me, identity.peer_keys()), (to.clone(), &theirs)],
        &key.to_plaintext(),
    )
    .unwrap();
    (envelope, chunks)
}

async fn upload(
    sender: &Client,
    envelope: Envelope,
    chunks: Vec<Vec<u8>>,
) -> Result<NodeToClient, ConnectError> {
    let mut chunks = chunks.into_iter();
    sender
        .connection()
        .upload(envelope, || std::future::ready(Ok(chunks.next())))
        .await
}

async fn broken_streams_are_refused(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let alice = node.signup(&a, home.path()).await;
    let mut bob = node.signup(&b, home.path()).await;
    let picture = png(200_000, b"");

    // Cut mid-way: the node refuses, keeps nothing, queues nothing.
    let (envelope, mut chunks) = raw_image(home.path(), &alice, &b, &picture).await;
    let blob = match envelope.sealed.header.kind {
        ContentKind::Image { blob, .. } => blob,
        _ => unreachable!(),
    };
    chunks.truncate(2);
    let err = upload(&alice, envelope, chunks).await.unwrap_err();
    assert!(err.to_string().contains("ended after"), "{err}");
    assert_eq!(
        node.storage.blob_info(&blob).await.unwrap(),
        None,
        "partial blob deleted"
    );
    assert_eq!(node.storage.queue_depth(&b).await.unwrap(), 0);

    // More bytes than announced: stopped while arriving.
    let (envelope, mut chunks) = raw_image(home.path(), &alice, &b, &png(70_000, b"x")).await;
    chunks.push(vec![0; 1000]);
    let err = upload(&alice, envelope, chunks).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Refused {
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{err}"
    );

    // Tampered and reordered chunks reach bob (the node cannot tell) and bob refuses them.
    let (envelope, mut chunks) = raw_image(home.path(), &alice, &b, &png(250_000, b"t")).await;
    chunks[1][10] ^= 1;
    upload(&alice, envelope, chunks).await.unwrap();
    match bob.next_within(WAIT).await {
        Some(Incoming::Rejected { reason, .. }) => {
            assert!(reason.contains("image refused"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (envelope, mut chunks) = raw_image(home.path(), &alice, &b, &png(260_000, b"r")).await;
    chunks.swap(0, 1);
    upload(&alice, envelope, chunks).await.unwrap();
    assert!(matches!(
        bob.next_within(WAIT).await,
        Some(Incoming::Rejected { .. })
    ));
    let images = bob.dir().join("images");
    let kept = std::fs::read_dir(&images).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "nothing kept from broken images");

    // A fetch for someone else's message is refused.
    let err = alice
        .connection()
        .download(MsgId([1; 16]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Refused {
                code: ErrorCode::UnknownBlob,
                ..
            }
        ),
        "{err}"
    );

    // And a normal image still works afterwards.
    let files = tempfile::tempdir().unwrap();
    let path = write(files.path(), "ok.gif", &png(1000, b"ok"));
    let mut alice = alice;
    alice.send_image(&b, &path, &mut |_, _| {}).await.unwrap();
    next_image(&mut bob).await;
}

on_both_backends!(
    round_trip_online_and_offline,
    bad_files_refused_before_sending,
    node_enforces_its_size_limit,
    broken_streams_are_refused,
);
