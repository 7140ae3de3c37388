//! Conformance checks for MLS group logs: appending, reading, cursors, pruning, Welcomes.

use quip_proto::ids::{BlobId, GroupId, UserName};

use super::mls::{
    Leaf, after, append_one, commit, device, key_package, leaf, new_group, record, with_change,
};
use super::{DAY, Fixture, assert_err};
use crate::{
    Appended, DeviceId, MlsEntry, MlsGroupRecord, MlsKind, MlsLogEntry, MlsUnread, Storage,
    StorageError, UnixMillis,
};

/// An application message of `sender` to `group` in `epoch`.
fn message(fx: &Fixture, group: &GroupId, sender: &Leaf, epoch: u64, body: &str) -> MlsEntry {
    MlsEntry {
        group: *group,
        id: fx.msg_id(),
        sender: sender.clone(),
        kind: MlsKind::Application,
        epoch,
        body: body.as_bytes().to_vec(),
        blob: None,
        change: None,
        // A day ahead: clear of other runs' retention.
        at: fx.now + DAY,
    }
}

/// What [`Storage::mls_log`] returns for `entry` stored at `seq`.
fn logged(entry: &MlsEntry, seq: u64) -> MlsLogEntry {
    MlsLogEntry {
        seq,
        id: entry.id,
        sender: entry.sender.clone(),
        kind: entry.kind,
        epoch: entry.epoch,
        body: entry.body.clone(),
        blob: entry.blob,
        at: entry.at,
    }
}

/// The seqs of the group's log entries after `after`, read all at once.
async fn seqs(store: &impl Storage, group: &GroupId, after: u64) -> Vec<u64> {
    let entries = store
        .mls_log(group, after, 10_000, usize::MAX)
        .await
        .unwrap();
    entries.iter().map(|e| e.seq).collect()
}

/// The group's record.
async fn group_now(store: &impl Storage, group: &GroupId) -> MlsGroupRecord {
    store.mls_group(group).await.unwrap().expect("mls group")
}

/// The bytes of bodies in the group's log, as [`Appended::LogFull`] reports them to an
/// application entry `sender` tries with no room.
async fn log_bytes(store: &impl Storage, fx: &Fixture, group: &GroupId, sender: &Leaf) -> u64 {
    let epoch = group_now(store, group).await.epoch;
    let probe = message(fx, group, sender, epoch, "probe");
    match store.append_mls(&[probe], 0).await.unwrap().as_slice() {
        [Appended::LogFull { log_bytes }] => *log_bytes,
        other => panic!("expected LogFull, got {other:?}"),
    }
}

/// A finished blob of `owner`, created at `at`.
async fn finished_blob(store: &impl Storage, fx: &Fixture, owner: &UserName) -> BlobId {
    let id = fx.blob_id();
    store.blob_create(&id, owner, fx.now + DAY).await.unwrap();
    store.blob_append(&id, 0, b"image").await.unwrap();
    store.blob_finish(&id).await.unwrap();
    id
}

/// append_mls (each outcome, batches, retries, changes within a batch, external commits,
/// blobs, LogFull) and mls_log (order, fields, paging by count and bytes).
pub(super) async fn log(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat, dan] = fx
        .users(store, ["ml-ann", "ml-ben", "ml-cat", "ml-dan"])
        .await;
    for (user, id) in [(&ann, 1), (&ann, 2), (&ben, 1), (&cat, 1), (&dan, 1)] {
        device(store, fx, user, id).await;
    }
    let (ann1, ann2, ben1, cat1, dan1) = (
        leaf(&ann, 1),
        leaf(&ann, 2),
        leaf(&ben, 1),
        leaf(&cat, 1),
        leaf(&dan, 1),
    );
    let group = new_group(fx, "log", &[ann1.clone(), ann2.clone(), ben1.clone()]);
    store.create_mls_group(&group).await.unwrap();
    let id = group.id;
    assert_eq!(group_now(store, &id).await, record(&group));
    assert_eq!(seqs(store, &id, 0).await, [] as [u64; 0]);
    assert_err!(
        store.mls_log(&fx.group_id(), 0, 10, 100).await,
        StorageError::NotFound { what: "mls group" }
    );
    assert_eq!(store.append_mls(&[], u64::MAX).await.unwrap(), []);

    // Each entry on its own, in order; a retry within the batch is a Duplicate.
    let m1 = message(fx, &id, &ann1, 0, "first message");
    let m2 = message(fx, &id, &ben1, 0, "second");
    let mut again = message(fx, &id, &ann2, 0, "the first again");
    again.id = m1.id;
    let batch = [
        m1.clone(),
        m2.clone(),
        message(fx, &id, &cat1, 0, "not a member"),
        message(fx, &fx.group_id(), &ann1, 0, "no such group"),
        message(fx, &id, &ann1, 5, "wrong epoch"),
        again,
    ];
    assert_eq!(
        store.append_mls(&batch, u64::MAX).await.unwrap(),
        [
            Appended::Stored { seq: 1 },
            Appended::Stored { seq: 2 },
            Appended::NotMember,
            Appended::NotFound,
            Appended::WrongEpoch { current: 0 },
            Appended::Duplicate { seq: 1 },
        ]
    );
    assert_eq!(
        store.mls_log(&id, 0, 10, usize::MAX).await.unwrap(),
        [logged(&m1, 1), logged(&m2, 2)]
    );
    // A retry in a later batch changes nothing.
    assert_eq!(append_one(store, &m2).await, Appended::Duplicate { seq: 2 });
    assert_eq!(group_now(store, &id).await.last_seq, 2);

    // Entries after a change in the same batch see the new epoch and version; a commit's
    // removed device is no longer a member, its added one is.
    let at_zero = group_now(store, &id).await;
    let cats_package = key_package(fx, false);
    store
        .put_key_packages(&cat, DeviceId(1), std::slice::from_ref(&cats_package))
        .await
        .unwrap();
    let c1 = with_change(commit(fx, &at_zero, &ann1, "c1"), |c| {
        c.added = vec![cat1.clone()];
        c.removed = vec![ben1.clone()];
        c.used_key_packages = vec![cats_package.kp_ref.clone()];
        c.welcomes = vec![(cat.clone(), DeviceId(1), b"welcome".to_vec())];
    });
    let stale = commit(fx, &at_zero, &ann2, "stale");
    let at_one = after(&at_zero, &c1, 3);
    let mut proposal = commit(fx, &at_one, &ann2, "p1");
    proposal.kind = MlsKind::Proposal;
    proposal.change.as_mut().expect("change").epoch = 1;
    let late = message(fx, &id, &ann2, 0, "late");
    let m4 = message(fx, &id, &ann2, 1, "fourth");
    let m5 = message(fx, &id, &cat1, 1, "fifth, by the new member");
    let batch = [
        c1.clone(),
        late,
        m4.clone(),
        message(fx, &id, &ben1, 1, "removed"),
        m5.clone(),
        stale,
        proposal.clone(),
    ];
    assert_eq!(
        store.append_mls(&batch, u64::MAX).await.unwrap(),
        [
            Appended::Stored { seq: 3 },
            Appended::WrongEpoch { current: 1 },
            Appended::Stored { seq: 4 },
            Appended::NotMember,
            Appended::Stored { seq: 5 },
            Appended::Conflict {
                state_version: 1,
                epoch: 1
            },
            Appended::Stored { seq: 6 },
        ]
    );
    let at_six = after(&at_one, &proposal, 6);
    assert_eq!(
        (at_six.epoch, at_six.state_version, at_six.last_seq),
        (1, 2, 6)
    );
    assert_eq!(group_now(store, &id).await, at_six);
    let bens = store
        .mls_unread(&ben, DeviceId(1), None, 100)
        .await
        .unwrap();
    assert!(
        !bens.items.iter().any(|u| u.group == id),
        "a removed device's cursor is gone"
    );
    let cats = store
        .mls_unread(&cat, DeviceId(1), None, 100)
        .await
        .unwrap();
    assert_eq!(
        cats.items.iter().find(|u| u.group == id),
        Some(&MlsUnread {
            group: id,
            delivered: 3,
            last_seq: 6
        }),
        "an added device reads from after its commit"
    );
    let all = store.mls_log(&id, 0, 100, usize::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            MlsKind::Application,
            MlsKind::Application,
            MlsKind::Commit,
            MlsKind::Application,
            MlsKind::Application,
            MlsKind::Proposal
        ]
    );
    assert_eq!(all[2], logged(&c1, 3));
    assert_eq!(all[4], logged(&m5, 5));
    assert_eq!(all[5], logged(&proposal, 6));

    // Paging: by count, and by bytes (always at least one entry).
    assert_eq!(seqs(store, &id, 4).await, [5, 6]);
    let page = |after: u64, limit: usize, max_bytes: usize| async move {
        let entries = store.mls_log(&id, after, limit, max_bytes).await.unwrap();
        entries.iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    assert_eq!(page(0, 2, usize::MAX).await, [1, 2]);
    assert_eq!(page(2, 2, usize::MAX).await, [3, 4]);
    assert_eq!(page(6, 2, usize::MAX).await, [] as [u64; 0]);
    assert_eq!(page(u64::MAX, 2, usize::MAX).await, [] as [u64; 0]);
    let (len1, len2) = (m1.body.len(), m2.body.len());
    assert_eq!(page(0, 10, len1).await, [1]);
    assert_eq!(page(0, 10, len1 + len2 - 1).await, [1]);
    assert_eq!(page(0, 10, len1 + len2).await, [1, 2]);
    assert_eq!(page(0, 10, 0).await, [1], "one entry whatever the budget");
    assert_eq!(page(3, 10, 1).await, [4]);

    // An external commit: its sender is one of the devices it adds.
    let external = with_change(commit(fx, &at_six, &dan1, "external"), |c| {
        c.added = vec![dan1.clone()];
    });
    assert_eq!(
        append_one(store, &external).await,
        Appended::Stored { seq: 7 }
    );
    let at_seven = after(&at_six, &external, 7);
    assert!(store.mls_members(&id).await.unwrap().contains(&dan1));

    // Room: only application entries are refused for it, and the count is exact.
    let bodies: usize = store
        .mls_log(&id, 0, 100, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.body.len())
        .sum();
    assert_eq!(log_bytes(store, fx, &id, &ann1).await, bodies as u64);
    let fits = message(fx, &id, &ann1, 2, "just fits");
    let room = bodies as u64 + fits.body.len() as u64;
    let over = message(fx, &id, &ann1, 2, "one byte over");
    assert_eq!(
        store
            .append_mls(
                std::slice::from_ref(&over),
                bodies as u64 + over.body.len() as u64 - 1
            )
            .await
            .unwrap(),
        [Appended::LogFull {
            log_bytes: bodies as u64
        }]
    );
    assert_eq!(
        store
            .append_mls(std::slice::from_ref(&fits), room)
            .await
            .unwrap(),
        [Appended::Stored { seq: 8 }]
    );
    let full_commit = commit(fx, &at_seven, &ann1, "in a full log");
    assert_eq!(
        store
            .append_mls(std::slice::from_ref(&full_commit), 0)
            .await
            .unwrap(),
        [Appended::Stored { seq: 9 }],
        "a commit is never refused for room"
    );
    let at_nine = after(&at_seven, &full_commit, 9);

    // Blobs: a finished one is stored with its entry; an unfinished or unknown one fails the
    // call and nothing of the batch is written.
    let unfinished = fx.blob_id();
    store
        .blob_create(&unfinished, &ann, fx.now + DAY)
        .await
        .unwrap();
    let image = finished_blob(store, fx, &ann).await;
    for blob in [unfinished, fx.blob_id()] {
        let mut with_blob = message(fx, &id, &ann1, 3, "image");
        with_blob.blob = Some(blob);
        let batch = [message(fx, &id, &ann1, 3, "before the image"), with_blob];
        assert_err!(
            store.append_mls(&batch, u64::MAX).await,
            StorageError::NotFound {
                what: "finished blob"
            }
        );
        assert_eq!(group_now(store, &id).await, at_nine);
    }
    let mut with_blob = message(fx, &id, &ann1, 3, "image");
    with_blob.blob = Some(image);
    assert_eq!(
        append_one(store, &with_blob).await,
        Appended::Stored { seq: 10 }
    );
    assert_eq!(
        store.mls_log(&id, 9, 10, usize::MAX).await.unwrap(),
        [logged(&with_blob, 10)]
    );
    assert!(store.blob_delete(&unfinished).await.unwrap());
}

/// mls_unread and ack_mls: listing, paging, forward-only and clamped cursors.
pub(super) async fn cursors(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat] = fx.users(store, ["mc-ann", "mc-ben", "mc-cat"]).await;
    for user in [&ann, &ben, &cat] {
        device(store, fx, user, 1).await;
    }
    let (ann1, ben1) = (leaf(&ann, 1), leaf(&ben, 1));
    let mut ids = Vec::new();
    for label in ["c1", "c2", "c3"] {
        let group = new_group(fx, label, &[ann1.clone(), ben1.clone()]);
        store.create_mls_group(&group).await.unwrap();
        ids.push(group.id);
    }
    ids.sort_unstable();
    let [g1, g2, g3] = [ids[0], ids[1], ids[2]];
    let batch = [
        message(fx, &g1, &ann1, 0, "one"),
        message(fx, &g3, &ben1, 0, "three"),
        message(fx, &g1, &ben1, 0, "one again"),
    ];
    let outcomes = store.append_mls(&batch, u64::MAX).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Appended::Stored { .. }))
    );

    let unread = |user: &UserName, after: Option<GroupId>, limit: usize| {
        let user = user.clone();
        async move {
            store
                .mls_unread(&user, DeviceId(1), after.as_ref(), limit)
                .await
                .unwrap()
        }
    };
    let entry = |group: GroupId, delivered: u64, last_seq: u64| MlsUnread {
        group,
        delivered,
        last_seq,
    };
    let page = unread(&ann, None, 10).await;
    assert_eq!(page.items, [entry(g1, 0, 2), entry(g3, 0, 1)]);
    assert_eq!((page.more, page.total), (false, 2));
    let first = unread(&ann, None, 1).await;
    assert_eq!(first.items, [entry(g1, 0, 2)]);
    assert_eq!((first.more, first.total), (true, 2));
    let rest = unread(&ann, Some(g1), 1).await;
    assert_eq!(rest.items, [entry(g3, 0, 1)]);
    assert_eq!((rest.more, rest.total), (false, 2));
    assert_eq!(unread(&cat, None, 10).await.items, []);
    assert_eq!(unread(&fx.name("mc-ghost"), None, 10).await.items, []);

    // Forward only, clamped to the log, other groups ignored; a group listed twice moves to
    // the larger seq.
    let acks = [(g1, 1), (g3, 99), (g2, 5), (fx.group_id(), 3), (g1, 0)];
    assert_eq!(store.ack_mls(&ann, DeviceId(1), &acks).await.unwrap(), 2);
    assert_eq!(unread(&ann, None, 10).await.items, [entry(g1, 1, 2)]);
    assert_eq!(
        store
            .ack_mls(&ann, DeviceId(1), &[(g1, 0), (g3, 5)])
            .await
            .unwrap(),
        0,
        "never back, never past the log"
    );
    assert_eq!(
        store
            .ack_mls(&ann, DeviceId(1), &[(g1, 2), (g1, 2)])
            .await
            .unwrap(),
        1
    );
    let done = unread(&ann, None, 10).await;
    assert_eq!((done.items.len(), done.more, done.total), (0, false, 0));
    assert_eq!(store.ack_mls(&ann, DeviceId(1), &[]).await.unwrap(), 0);
    assert_eq!(
        store.ack_mls(&cat, DeviceId(1), &[(g1, 2)]).await.unwrap(),
        0,
        "not a leaf"
    );
    assert_eq!(
        store.ack_mls(&ann, DeviceId(9), &[(g1, 2)]).await.unwrap(),
        0,
        "not a device"
    );
    // Each device has its own cursor; the clamp left room for what comes next.
    assert_eq!(
        unread(&ben, None, 10).await.items,
        [entry(g1, 0, 2), entry(g3, 0, 1)]
    );
    append_one(store, &message(fx, &g3, &ben1, 0, "later")).await;
    assert_eq!(unread(&ann, None, 10).await.items, [entry(g3, 1, 2)]);
}

/// prune_mls: by cursors (removed leaves no longer count, added ones start after their
/// commit, a group without leaves keeps nothing) and by retention, with blobs and exact
/// log_bytes. Entries that must survive other runs' prunes are stamped a day ahead.
pub(super) async fn prune(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat] = fx.users(store, ["mp-ann", "mp-ben", "mp-cat"]).await;
    for user in [&ann, &ben, &cat] {
        device(store, fx, user, 1).await;
    }
    let (ann1, ben1, cat1) = (leaf(&ann, 1), leaf(&ben, 1), leaf(&cat, 1));
    let ahead = |mut entry: MlsEntry| {
        entry.at = fx.now + DAY;
        entry
    };
    let now = fx.now;

    // By cursors: what every leaf delivered goes, with its blob.
    let group = new_group(fx, "by cursors", &[ann1.clone(), ben1.clone()]);
    store.create_mls_group(&group).await.unwrap();
    let id = group.id;
    let image = finished_blob(store, fx, &ann).await;
    let mut m1 = ahead(message(fx, &id, &ann1, 0, "one, with an image"));
    m1.blob = Some(image);
    let m2 = ahead(message(fx, &id, &ben1, 0, "two"));
    let m3 = ahead(message(fx, &id, &ann1, 0, "three!"));
    let batch = [m1, m2.clone(), m3.clone()];
    store.append_mls(&batch, u64::MAX).await.unwrap();
    store.ack_mls(&ann, DeviceId(1), &[(id, 2)]).await.unwrap();
    store.ack_mls(&ben, DeviceId(1), &[(id, 1)]).await.unwrap();
    store.prune_mls(now).await.unwrap();
    assert_eq!(seqs(store, &id, 0).await, [2, 3]);
    assert_eq!(
        store.blob_info(&image).await.unwrap(),
        None,
        "the image went"
    );
    assert_eq!(
        log_bytes(store, fx, &id, &ann1).await,
        (m2.body.len() + m3.body.len()) as u64
    );
    store.ack_mls(&ann, DeviceId(1), &[(id, 3)]).await.unwrap();
    store.ack_mls(&ben, DeviceId(1), &[(id, 3)]).await.unwrap();
    store.prune_mls(now).await.unwrap();
    assert_eq!(seqs(store, &id, 0).await, [] as [u64; 0]);
    assert_eq!(log_bytes(store, fx, &id, &ann1).await, 0);
    assert_eq!(
        append_one(store, &ahead(message(fx, &id, &ann1, 0, "four"))).await,
        Appended::Stored { seq: 4 },
        "seqs go on after a prune"
    );

    // A removed leaf no longer holds entries back; an added one starts after its commit.
    let group = new_group(fx, "membership", &[ann1.clone(), ben1.clone()]);
    store.create_mls_group(&group).await.unwrap();
    let id = group.id;
    append_one(store, &ahead(message(fx, &id, &ann1, 0, "before"))).await;
    store.ack_mls(&ann, DeviceId(1), &[(id, 1)]).await.unwrap();
    store.prune_mls(now).await.unwrap();
    assert_eq!(seqs(store, &id, 0).await, [1], "ben has not read it");
    let change = ahead(with_change(
        commit(fx, &record(&group), &ann1, "swap"),
        |c| {
            c.removed = vec![ben1.clone()];
            c.added = vec![cat1.clone()];
        },
    ));
    assert_eq!(
        append_one(store, &change).await,
        Appended::Stored { seq: 2 }
    );
    store.prune_mls(now).await.unwrap();
    assert_eq!(
        seqs(store, &id, 0).await,
        [2],
        "ann has not read the commit"
    );
    store.ack_mls(&ann, DeviceId(1), &[(id, 2)]).await.unwrap();
    store.prune_mls(now).await.unwrap();
    assert_eq!(seqs(store, &id, 0).await, [] as [u64; 0]);
    assert_eq!(log_bytes(store, fx, &id, &ann1).await, 0);

    // A group without leaves keeps nothing.
    let group = new_group(fx, "left", std::slice::from_ref(&ann1));
    store.create_mls_group(&group).await.unwrap();
    let id = group.id;
    append_one(store, &ahead(message(fx, &id, &ann1, 0, "last words"))).await;
    let leave = ahead(with_change(
        commit(fx, &record(&group), &ann1, "leave"),
        |c| c.removed = vec![ann1.clone()],
    ));
    assert_eq!(append_one(store, &leave).await, Appended::Stored { seq: 2 });
    assert_eq!(store.mls_members(&id).await.unwrap(), []);
    store.prune_mls(now).await.unwrap();
    assert_eq!(seqs(store, &id, 0).await, [] as [u64; 0]);
    assert_eq!(group_now(store, &id).await.last_seq, 2);

    // Retention: entries older than `before` go whatever the cursors, with their blobs.
    let group = new_group(fx, "retention", &[ann1.clone(), ben1.clone()]);
    store.create_mls_group(&group).await.unwrap();
    let id = group.id;
    let old_image = finished_blob(store, fx, &ann).await;
    let mut old = message(fx, &id, &ann1, 0, "old");
    old.at = now - DAY;
    old.blob = Some(old_image);
    let young = ahead(message(fx, &id, &ben1, 0, "young"));
    store
        .append_mls(&[old, young.clone()], u64::MAX)
        .await
        .unwrap();
    store.prune_mls(now).await.unwrap();
    assert_eq!(seqs(store, &id, 0).await, [2]);
    assert_eq!(store.blob_info(&old_image).await.unwrap(), None);
    assert_eq!(
        log_bytes(store, fx, &id, &ann1).await,
        young.body.len() as u64
    );
    let unread = store
        .mls_unread(&ann, DeviceId(1), None, 100)
        .await
        .unwrap();
    assert_eq!(
        unread.items.iter().find(|u| u.group == id),
        Some(&MlsUnread {
            group: id,
            delivered: 0,
            last_seq: 2
        }),
        "cursors stay where they were"
    );
    let got = store.mls_log(&id, 0, 10, usize::MAX).await.unwrap();
    assert_eq!(got, [logged(&young, 2)]);
}

/// The count `prune_mls` returns, on a database nothing else prunes meanwhile: entries gone
/// by retention and by cursors, each counted once.
pub(super) async fn prune_counts(store: &impl Storage, fx: &Fixture) {
    let now = fx.now;
    store.prune_mls(now).await.unwrap();
    assert_eq!(store.prune_mls(now).await.unwrap(), 0);
    let [ann] = fx.users(store, ["pc-ann"]).await;
    device(store, fx, &ann, 1).await;
    let ann1 = leaf(&ann, 1);
    let group = new_group(fx, "prune counts", std::slice::from_ref(&ann1));
    store.create_mls_group(&group).await.unwrap();
    let mut batch: Vec<MlsEntry> = (0..5)
        .map(|i| message(fx, &group.id, &ann1, 0, &format!("m{i}")))
        .collect();
    batch[0].at = now - DAY;
    batch[1].at = now - DAY;
    store.append_mls(&batch, u64::MAX).await.unwrap();
    store
        .ack_mls(&ann, DeviceId(1), &[(group.id, 3)])
        .await
        .unwrap();
    assert_eq!(store.prune_mls(now).await.unwrap(), 3);
    assert_eq!(store.prune_mls(now).await.unwrap(), 0);
    assert_eq!(seqs(store, &group.id, 0).await, [4, 5]);
}

/// mls_welcomes and ack_welcomes, and Welcomes' retention.
pub(super) async fn welcomes(store: &impl Storage, fx: &Fixture) {
    let [ann, ben] = fx.users(store, ["mw-ann", "mw-ben"]).await;
    device(store, fx, &ann, 1).await;
    device(store, fx, &ben, 1).await;
    device(store, fx, &ben, 2).await;
    let ann1 = leaf(&ann, 1);
    let (g1, g2, g3) = (
        new_group(fx, "w1", std::slice::from_ref(&ann1)),
        new_group(fx, "w2", std::slice::from_ref(&ann1)),
        new_group(fx, "w3", std::slice::from_ref(&ann1)),
    );
    for group in [&g1, &g2, &g3] {
        store.create_mls_group(group).await.unwrap();
    }
    let welcoming = |group: &MlsGroupRecord, at: UnixMillis, devices: &[u64]| {
        let mut entry = with_change(commit(fx, group, &ann1, "welcome"), |c| {
            c.added = devices.iter().map(|d| leaf(&ben, *d)).collect();
            c.welcomes = devices
                .iter()
                .map(|d| {
                    (
                        ben.clone(),
                        DeviceId(*d),
                        format!("welcome {d}").into_bytes(),
                    )
                })
                .collect();
        });
        entry.at = at;
        entry
    };
    let batch = [
        welcoming(&record(&g1), fx.now + DAY, &[1, 2]),
        welcoming(&record(&g2), fx.now + DAY, &[1]),
    ];
    let outcomes = store.append_mls(&batch, u64::MAX).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == Appended::Stored { seq: 1 }));

    let ones = store.mls_welcomes(&ben, DeviceId(1), 10).await.unwrap();
    assert_eq!(
        ones.iter()
            .map(|w| (w.group, w.body.as_slice(), w.at))
            .collect::<Vec<_>>(),
        [
            (g1.id, b"welcome 1".as_slice(), fx.now + DAY),
            (g2.id, b"welcome 1".as_slice(), fx.now + DAY),
        ]
    );
    assert!(ones.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert_eq!(
        store.mls_welcomes(&ben, DeviceId(1), 1).await.unwrap(),
        ones[..1]
    );
    let twos = store.mls_welcomes(&ben, DeviceId(2), 10).await.unwrap();
    assert_eq!(twos.len(), 1);
    assert_eq!(store.mls_welcomes(&ann, DeviceId(1), 10).await.unwrap(), []);
    assert_eq!(store.mls_welcomes(&ben, DeviceId(9), 10).await.unwrap(), []);

    // Acks take the device's own Welcomes only.
    assert_eq!(
        store
            .ack_welcomes(&ben, DeviceId(1), &[ones[0].id, twos[0].id, u64::MAX])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.mls_welcomes(&ben, DeviceId(1), 10).await.unwrap(),
        ones[1..]
    );
    assert_eq!(
        store.mls_welcomes(&ben, DeviceId(2), 10).await.unwrap(),
        twos
    );
    assert_eq!(
        store
            .ack_welcomes(&ben, DeviceId(1), &[ones[0].id])
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.ack_welcomes(&ben, DeviceId(1), &[]).await.unwrap(), 0);

    // Retention takes Welcomes older than `before` (another run's prune may come first).
    let old = welcoming(&record(&g3), fx.now - DAY, &[1]);
    assert_eq!(append_one(store, &old).await, Appended::Stored { seq: 1 });
    store.prune_mls(fx.now).await.unwrap();
    assert_eq!(
        store.mls_welcomes(&ben, DeviceId(1), 10).await.unwrap(),
        ones[1..]
    );
}

/// Messages each side appends in [`concurrent_mls_log`].
const MESSAGES_PER_SIDE: usize = 24;
/// Entries per batch in [`concurrent_mls_log`].
const BATCH: usize = 3;

/// Appends [`MESSAGES_PER_SIDE`] messages to each of `groups`, [`BATCH`] at a time, each
/// batch touching the groups in the order given; returns the seqs each group gave, in order.
async fn append_side(
    store: &impl Storage,
    fx: &Fixture,
    groups: [GroupId; 2],
    sender: &Leaf,
    tag: &str,
) -> [Vec<u64>; 2] {
    let mut got: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..MESSAGES_PER_SIDE / BATCH {
        let mut batch = Vec::new();
        for i in 0..BATCH {
            for group in &groups {
                let body = format!("{tag} {}", round * BATCH + i);
                batch.push(message(fx, group, sender, 0, &body));
            }
        }
        let outcomes = store.append_mls(&batch, u64::MAX).await.expect("append");
        for (n, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Appended::Stored { seq } => got[n % 2].push(seq),
                other => panic!("{tag}: {other:?}"),
            }
        }
    }
    got
}

/// Reads `group`'s log as it grows until it holds `total` entries, checking that it only
/// ever grows at its end: a reader never sees seq n + 1 before n.
async fn read_side(store: &impl Storage, group: &GroupId, total: u64) {
    let mut last = 0;
    while last < total {
        let entries = store.mls_log(group, last, 5, usize::MAX).await.unwrap();
        for entry in &entries {
            assert_eq!(entry.seq, last + 1, "the log has a gap after {last}");
            last = entry.seq;
        }
        if entries.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

/// Two handles (the same store, or two on one database as two node processes would have)
/// append to two groups at once, each batch touching both groups, in opposite orders, while
/// a reader follows one log; then commits race with messages. Seqs stay gap-free and unique,
/// each side's messages keep their order, no batch deadlocks, and a message for the epoch a
/// commit ended is refused.
pub async fn concurrent_mls_log(first: &impl Storage, second: &impl Storage) {
    let fx = Fixture::new();
    let [ann] = fx.users(first, ["cl-ann"]).await;
    device(first, &fx, &ann, 1).await;
    device(first, &fx, &ann, 2).await;
    let (ann1, ann2) = (leaf(&ann, 1), leaf(&ann, 2));
    let (x, y) = (
        new_group(&fx, "x", &[ann1.clone(), ann2.clone()]),
        new_group(&fx, "y", &[ann1.clone(), ann2.clone()]),
    );
    first.create_mls_group(&x).await.unwrap();
    first.create_mls_group(&y).await.unwrap();
    let total = 2 * MESSAGES_PER_SIDE as u64;
    let (a, b, ()) = tokio::join!(
        append_side(first, &fx, [x.id, y.id], &ann1, "a"),
        append_side(second, &fx, [y.id, x.id], &ann2, "b"),
        read_side(second, &x.id, total),
    );
    // `b` appended to y first in each batch: its lists are [y, x].
    for (group, a_seqs, b_seqs) in [(&x, &a[0], &b[1]), (&y, &a[1], &b[0])] {
        for seqs in [a_seqs, b_seqs] {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a side's order");
        }
        let mut all: Vec<u64> = a_seqs.iter().chain(b_seqs).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=total).collect::<Vec<_>>(), "gap-free, unique");
        assert_eq!(seqs(first, &group.id, 0).await, all);
        let log = first.mls_log(&group.id, 0, 1000, usize::MAX).await.unwrap();
        for (tag, sender) in [("a", &ann1), ("b", &ann2)] {
            let bodies: Vec<String> = log
                .iter()
                .filter(|e| e.sender == *sender)
                .map(|e| String::from_utf8(e.body.clone()).expect("utf-8"))
                .collect();
            let sent: Vec<String> = (0..MESSAGES_PER_SIDE)
                .map(|i| format!("{tag} {i}"))
                .collect();
            assert_eq!(bodies, sent, "{tag}'s messages in the order sent");
        }
        assert_eq!(group_now(first, &group.id).await.last_seq, total);
    }

    // A commit and messages for the epoch it ends, racing: each message is stored before
    // the commit or refused after it, never after it in the log.
    let now = group_now(first, &x.id).await;
    let end = with_change(commit(&fx, &now, &ann1, "end"), |_| {});
    let messages: Vec<MlsEntry> = (0..BATCH)
        .map(|i| message(&fx, &x.id, &ann2, now.epoch, &format!("racing {i}")))
        .collect();
    let (c, m) = tokio::join!(
        append_one(first, &end),
        second.append_mls(&messages, u64::MAX)
    );
    let Appended::Stored { seq: commit_seq } = c else {
        panic!("the commit: {c:?}")
    };
    for outcome in m.unwrap() {
        match outcome {
            Appended::Stored { seq } => assert!(seq < commit_seq, "stored after its epoch ended"),
            Appended::WrongEpoch { current } => assert_eq!(current, now.epoch + 1),
            other => panic!("racing message: {other:?}"),
        }
    }
    let late = message(&fx, &x.id, &ann2, now.epoch, "late");
    assert_eq!(
        append_one(second, &late).await,
        Appended::WrongEpoch {
            current: now.epoch + 1
        }
    );
}
