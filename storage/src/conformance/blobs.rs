//! Conformance checks for image blobs.

use super::{DAY, Fixture, assert_err};
use crate::{BlobInfo, Storage, StorageError, limits};

/// blob_create, blob_append, blob_finish, blob_info, blob_chunk, blob_delete.
pub(super) async fn upload(store: &impl Storage, fx: &Fixture) {
    let owner = fx.user(store, "uploader").await;
    // Created a day ahead, so no concurrent run's purge of unfinished blobs can take it.
    let later = fx.now + DAY;
    let id = fx.blob_id();
    store.blob_create(&id, &owner, later).await.unwrap();
    assert_err!(
        store.blob_create(&id, &owner, later).await,
        StorageError::AlreadyExists { what: "blob" }
    );
    let orphan = fx.blob_id();
    assert_err!(
        store.blob_create(&orphan, &fx.name("ghost"), later).await,
        StorageError::NotFound { what: "user" }
    );
    assert_eq!(store.blob_info(&orphan).await.unwrap(), None);
    let mut info = BlobInfo {
        id,
        owner: owner.clone(),
        chunks: 0,
        len: 0,
        finished: false,
    };
    assert_eq!(store.blob_info(&id).await.unwrap(), Some(info.clone()));

    // Chunks arrive in order; anything else is a conflict and changes nothing.
    store.blob_append(&id, 0, b"first").await.unwrap();
    store.blob_append(&id, 1, b"second").await.unwrap();
    for index in [0, 1, 3, u32::MAX] {
        assert_err!(
            store.blob_append(&id, index, b"stray").await,
            StorageError::Conflict {
                what: "blob chunk",
                ..
            }
        );
    }
    let big = vec![7; limits::MAX_BLOB_CHUNK + 1];
    assert_err!(
        store.blob_append(&id, 2, &big).await,
        StorageError::TooLarge {
            what: "blob chunk",
            ..
        }
    );
    info.chunks = 2;
    info.len = 11;
    assert_eq!(store.blob_info(&id).await.unwrap(), Some(info.clone()));
    let full = vec![9; limits::MAX_BLOB_CHUNK];
    store.blob_append(&id, 2, &full).await.unwrap();
    info.chunks = 3;
    info.len += full.len() as u64;

    assert_eq!(
        store.blob_chunk(&id, 0).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(
        store.blob_chunk(&id, 1).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(store.blob_chunk(&id, 2).await.unwrap(), Some(full));
    assert_eq!(store.blob_chunk(&id, 3).await.unwrap(), None);
    assert_eq!(store.blob_chunk(&orphan, 0).await.unwrap(), None);

    // Finishing (twice is fine) closes the upload.
    store.blob_finish(&id).await.unwrap();
    store.blob_finish(&id).await.unwrap();
    info.finished = true;
    assert_eq!(store.blob_info(&id).await.unwrap(), Some(info.clone()));
    assert_err!(
        store.blob_append(&id, 3, b"late").await,
        StorageError::Conflict { what: "blob", .. }
    );
    assert_eq!(store.blob_info(&id).await.unwrap(), Some(info));

    // Unknown blobs.
    assert_err!(
        store.blob_finish(&orphan).await,
        StorageError::NotFound { what: "blob" }
    );
    assert_err!(
        store.blob_append(&orphan, 0, b"x").await,
        StorageError::NotFound { what: "blob" }
    );

    // Delete takes the chunks with it.
    assert!(store.blob_delete(&id).await.unwrap());
    assert_eq!(store.blob_info(&id).await.unwrap(), None);
    assert_eq!(store.blob_chunk(&id, 0).await.unwrap(), None);
    assert!(!store.blob_delete(&id).await.unwrap());
    // The id is free again.
    store.blob_create(&id, &owner, later).await.unwrap();
    assert_eq!(store.blob_chunk(&id, 0).await.unwrap(), None);
    assert!(store.blob_delete(&id).await.unwrap());
}

/// purge_unfinished_blobs removes unfinished uploads older than the cut-off, with their chunks,
/// and nothing else.
pub(super) async fn purge(store: &impl Storage, fx: &Fixture) {
    let owner = fx.user(store, "purger").await;
    let (old, old_finished, fresh) = (fx.blob_id(), fx.blob_id(), fx.blob_id());
    store.blob_create(&old, &owner, fx.now - DAY).await.unwrap();
    store.blob_append(&old, 0, b"abandoned").await.unwrap();
    store
        .blob_create(&old_finished, &owner, fx.now - DAY)
        .await
        .unwrap();
    store.blob_finish(&old_finished).await.unwrap();
    store
        .blob_create(&fresh, &owner, fx.now + DAY)
        .await
        .unwrap();

    // The count may include other runs' blobs: see `purge_counts`.
    store.purge_unfinished_blobs(fx.now).await.unwrap();
    assert_eq!(store.blob_info(&old).await.unwrap(), None);
    assert_eq!(store.blob_chunk(&old, 0).await.unwrap(), None);
    assert!(store.blob_info(&old_finished).await.unwrap().is_some());
    assert!(store.blob_info(&fresh).await.unwrap().is_some());
    for id in [old_finished, fresh] {
        assert!(store.blob_delete(&id).await.unwrap());
    }
}
