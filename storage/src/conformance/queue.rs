//! Conformance checks for message queues, including concurrent writers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use quip_proto::ids::{MsgId, UserName};

use super::{DAY, Fixture, wrapped_key};
use crate::{
    Ack, Committed, Enqueued, NewMessage, QueueQuota, QueuedMessage, QuotaLimit, Refused, Storage,
    limits,
};

/// Everything waiting for `user`.
async fn all_pending(store: &impl Storage, user: &UserName) -> Vec<QueuedMessage> {
    store
        .pending(user, 0, limits::MAX_PENDING_BATCH)
        .await
        .unwrap()
}

/// The ids of everything waiting for `user`, in queue order.
async fn pending_ids(store: &impl Storage, user: &UserName) -> Vec<MsgId> {
    all_pending(store, user)
        .await
        .iter()
        .map(|m| m.id)
        .collect()
}

/// enqueue, pending, ack, queue_depth.
pub(super) async fn delivery(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat] = fx.users(store, ["q-ann", "q-ben", "q-cat"]).await;

    // One stored copy serves every recipient, each with their own key.
    let m1 = fx.message(&[&ann, &ben], "m1");
    assert_eq!(
        store.enqueue(std::slice::from_ref(&m1)).await.unwrap(),
        [Enqueued::Stored]
    );
    for user in [&ann, &ben] {
        let queued = all_pending(store, user).await;
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, m1.id);
        assert_eq!(queued[0].sealed, m1.sealed);
        assert_eq!(queued[0].key, wrapped_key("m1", user));
        assert_eq!(queued[0].blob, None);
    }

    // The same id again changes nothing, whatever it carries.
    let mut again = fx.message(&[&ann, &cat], "m1 again");
    again.id = m1.id;
    let before = all_pending(store, &ann).await;
    assert_eq!(
        store.enqueue(&[again]).await.unwrap(),
        [Enqueued::Duplicate]
    );
    assert_eq!(all_pending(store, &ann).await, before);
    assert_eq!(store.queue_depth(&cat).await.unwrap(), 0);

    // Order is kept within a batch and across calls; a repeat inside a batch is a duplicate.
    let m2 = fx.message(&[&ann], "m2");
    let m3 = fx.message(&[&ann], "m3");
    let m4 = fx.message(&[&ann], "m4");
    assert_eq!(
        store
            .enqueue(&[m2.clone(), m3.clone(), m2.clone()])
            .await
            .unwrap(),
        [Enqueued::Stored, Enqueued::Stored, Enqueued::Duplicate]
    );
    assert_eq!(
        store.enqueue(std::slice::from_ref(&m4)).await.unwrap(),
        [Enqueued::Stored]
    );
    let queued = all_pending(store, &ann).await;
    let ids: Vec<MsgId> = queued.iter().map(|m| m.id).collect();
    assert_eq!(ids, [m1.id, m2.id, m3.id, m4.id]);
    assert!(
        queued.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq increases"
    );
    assert_eq!(store.enqueue(&[]).await.unwrap(), []);

    // `after` and `limit`.
    assert_eq!(
        store.pending(&ann, queued[0].seq, 2).await.unwrap(),
        queued[1..3]
    );
    assert_eq!(store.pending(&ann, queued[3].seq, 10).await.unwrap(), []);
    assert_eq!(store.pending(&ann, 0, 0).await.unwrap(), []);
    assert_eq!(store.pending(&ann, 0, u32::MAX).await.unwrap(), queued);
    assert_eq!(store.queue_depth(&ann).await.unwrap(), 4);
    assert_eq!(store.queue_depth(&ben).await.unwrap(), 1);
    assert_eq!(store.queue_depth(&fx.name("q-nobody")).await.unwrap(), 0);

    // An ack removes only that recipient's copy; unknown or repeated ids are ignored.
    assert_eq!(store.ack(&ann, &[m1.id]).await.unwrap(), 1);
    assert_eq!(pending_ids(store, &ann).await, [m2.id, m3.id, m4.id]);
    assert_eq!(pending_ids(store, &ben).await, [m1.id]);
    assert_eq!(store.ack(&ann, &[m1.id]).await.unwrap(), 0);
    assert_eq!(store.ack(&ann, &[fx.msg_id()]).await.unwrap(), 0);
    assert_eq!(store.ack(&cat, &[m2.id]).await.unwrap(), 0);
    assert_eq!(store.ack(&ann, &[]).await.unwrap(), 0);
    assert_eq!(pending_ids(store, &ann).await, [m2.id, m3.id, m4.id]);

    // When the last recipient acks, the message is deleted: its id is new again.
    assert_eq!(store.ack(&ben, &[m1.id, m1.id]).await.unwrap(), 1);
    assert_eq!(store.queue_depth(&ben).await.unwrap(), 0);
    assert_eq!(
        store.enqueue(std::slice::from_ref(&m1)).await.unwrap(),
        [Enqueued::Stored]
    );
    assert_eq!(store.ack(&ann, &[m1.id]).await.unwrap(), 1);
    assert_eq!(store.ack(&ben, &[m1.id]).await.unwrap(), 1);

    // Several at once, with an unknown one among them.
    assert_eq!(
        store
            .ack(&ann, &[m4.id, fx.msg_id(), m2.id, m3.id])
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.queue_depth(&ann).await.unwrap(), 0);

    // A recipient listed twice is queued once, with the first key.
    let mut twice = fx.message(&[&ann], "twice");
    twice.recipients.push((ann.clone(), b"second key".to_vec()));
    assert_eq!(
        store.enqueue(&[twice.clone()]).await.unwrap(),
        [Enqueued::Stored]
    );
    let queued = all_pending(store, &ann).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].key, wrapped_key("twice", &ann));
    assert_eq!(store.ack(&ann, &[twice.id]).await.unwrap(), 1);
}

/// A failing message is refused on its own: the rest of its batch is stored.
pub(super) async fn one_bad_message_alone(store: &impl Storage, fx: &Fixture) {
    let [ann] = fx.users(store, ["n-ann"]).await;
    let ghost = fx.name("n-ghost");

    let mut big_sealed = fx.message(&[&ann], "big sealed");
    big_sealed.sealed = vec![0; limits::MAX_SEALED + 1];
    let mut big_key = fx.message(&[&ann], "big key");
    big_key.recipients[0].1 = vec![0; limits::MAX_WRAPPED_KEY + 1];
    let crowd: Vec<UserName> = (0..=limits::MAX_RECIPIENTS)
        .map(|i| fx.name(&format!("n-crowd{i}")))
        .collect();
    let crowded = fx.message(&crowd.iter().collect::<Vec<_>>(), "crowded");
    let unknown = fx.message(&[&ann, &ghost], "unknown");

    type Expect = fn(&Enqueued) -> bool;
    let cases: [(&str, NewMessage, Expect); 4] = [
        ("oversized envelope", big_sealed, |r| {
            matches!(
                r,
                Enqueued::Refused(Refused::TooLarge {
                    what: "sealed envelope",
                    ..
                })
            )
        }),
        ("oversized key", big_key, |r| {
            matches!(
                r,
                Enqueued::Refused(Refused::TooLarge {
                    what: "wrapped key",
                    ..
                })
            )
        }),
        ("too many recipients", crowded, |r| {
            matches!(
                r,
                Enqueued::Refused(Refused::TooLarge {
                    what: "recipients",
                    ..
                })
            )
        }),
        ("unknown recipient", unknown, |r| {
            matches!(r, Enqueued::Refused(Refused::UnknownRecipient(_)))
        }),
    ];
    for (case, bad, expect) in cases {
        let good = fx.message(&[&ann], "good");
        let result = store.enqueue(&[good.clone(), bad.clone()]).await.unwrap();
        assert_eq!(result[0], Enqueued::Stored, "{case}");
        assert!(expect(&result[1]), "{case}: unexpected {result:?}");
        assert_eq!(pending_ids(store, &ann).await, [good.id], "{case}");
        assert_eq!(store.ack(&ann, &[good.id]).await.unwrap(), 1, "{case}");
        // Nothing of the refused message was stored, so it is not a duplicate now.
        assert!(!matches!(
            store.enqueue(&[bad]).await.unwrap()[0],
            Enqueued::Duplicate | Enqueued::Stored
        ));
    }
    let good = fx.message(&[&ann], "good");
    assert_eq!(
        store.enqueue(std::slice::from_ref(&good)).await.unwrap(),
        [Enqueued::Stored]
    );

    // At the limits is fine.
    let mut roomy = fx.message(&[&ann], "roomy");
    roomy.sealed = vec![1; limits::MAX_SEALED];
    roomy.recipients[0].1 = vec![2; limits::MAX_WRAPPED_KEY];
    assert_eq!(
        store.enqueue(&[roomy.clone()]).await.unwrap(),
        [Enqueued::Stored]
    );
    let queued = all_pending(store, &ann).await;
    assert_eq!(queued[1].sealed, roomy.sealed);
    assert_eq!(queued[1].key, roomy.recipients[0].1);

    // No recipients: nothing to store.
    let lonely = fx.message(&[], "lonely");
    assert_eq!(store.enqueue(&[lonely]).await.unwrap(), [Enqueued::Stored]);
    assert_eq!(store.ack(&ann, &[good.id, roomy.id]).await.unwrap(), 2);
}

/// `commit`: one transaction enqueues and acknowledges for many users at once.
pub(super) async fn group_commit(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat] = fx.users(store, ["gc-ann", "gc-ben", "gc-cat"]).await;
    let m1 = fx.message(&[&ann, &ben], "c1");
    let m2 = fx.message(&[&ann, &ben, &cat], "c2");
    store.enqueue(&[m1.clone(), m2.clone()]).await.unwrap();

    // Fresh messages, a repeat, and three users' acks (one of them for nothing queued).
    let m3 = fx.message(&[&ann, &cat], "c3");
    let m4 = fx.message(&[&ben], "c4");
    let acks = [
        Ack {
            user: ann.clone(),
            ids: vec![m1.id, m2.id, m1.id],
        },
        Ack {
            user: ben.clone(),
            ids: vec![m1.id],
        },
        Ack {
            user: cat.clone(),
            ids: vec![m1.id, fx.msg_id()],
        },
    ];
    let committed = store
        .commit(
            &[m3.clone(), m1.clone(), m4.clone()],
            &acks,
            &QueueQuota::UNLIMITED,
        )
        .await
        .unwrap();
    assert_eq!(
        committed.enqueued,
        [Enqueued::Stored, Enqueued::Duplicate, Enqueued::Stored],
        "messages are written before the acks, so m1 was still stored"
    );
    assert_eq!(committed.acked, 3, "ann's m1 and m2, ben's m1");
    assert_eq!(pending_ids(store, &ann).await, [m3.id]);
    assert_eq!(pending_ids(store, &ben).await, [m2.id, m4.id]);
    assert_eq!(pending_ids(store, &cat).await, [m2.id, m3.id]);
    // m1 had no one left, so it is gone and its id is new again.
    assert_eq!(
        store.enqueue(std::slice::from_ref(&m1)).await.unwrap(),
        [Enqueued::Stored]
    );

    // A bad message is refused alone; the acks of the same commit still apply.
    let mut bad = fx.message(&[&ann], "c-bad");
    bad.sealed = vec![0; limits::MAX_SEALED + 1];
    let m5 = fx.message(&[&ann], "c5");
    let ack = Ack {
        user: ann.clone(),
        ids: vec![m3.id],
    };
    let committed = store
        .commit(
            &[bad, m5.clone()],
            std::slice::from_ref(&ack),
            &QueueQuota::UNLIMITED,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            committed.enqueued[0],
            Enqueued::Refused(Refused::TooLarge { .. })
        ),
        "{committed:?}"
    );
    assert_eq!(committed.enqueued[1], Enqueued::Stored);
    assert_eq!(committed.acked, 1);
    assert_eq!(pending_ids(store, &ann).await, [m1.id, m5.id]);
    assert_eq!(store.ack(&ann, &[m5.id]).await.unwrap(), 1);
    assert_eq!(
        store
            .commit(&[], &[], &QueueQuota::UNLIMITED)
            .await
            .unwrap(),
        Committed::default()
    );

    // Clean up, many users in one commit.
    let everything = [
        Ack {
            user: ann.clone(),
            ids: vec![m3.id, m1.id],
        },
        Ack {
            user: ben.clone(),
            ids: vec![m2.id, m4.id, m1.id],
        },
        Ack {
            user: cat.clone(),
            ids: vec![m2.id, m3.id],
        },
    ];
    assert_eq!(
        store
            .commit(&[], &everything, &QueueQuota::UNLIMITED)
            .await
            .unwrap()
            .acked,
        6,
        "ann's m1 (m3 went above); ben's m2, m4, m1; cat's m2, m3"
    );
    for user in [&ann, &ben, &cat] {
        assert_eq!(store.queue_depth(user).await.unwrap(), 0);
    }
}

/// A message's image blob is deleted with the message, after its last recipient's ack.
pub(super) async fn blob_follows_message(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat] = fx.users(store, ["b-ann", "b-ben", "b-cat"]).await;
    let blob = fx.blob_id();
    store.blob_create(&blob, &ann, fx.now + DAY).await.unwrap();
    store.blob_append(&blob, 0, b"image bytes").await.unwrap();
    store.blob_finish(&blob).await.unwrap();
    let mut message = fx.message(&[&ben, &cat], "picture");
    message.blob = Some(blob);
    store.enqueue(std::slice::from_ref(&message)).await.unwrap();
    assert_eq!(all_pending(store, &ben).await[0].blob, Some(blob));
    let found = store
        .queued(&ben, &message.id)
        .await
        .unwrap()
        .expect("queued for ben");
    assert_eq!((found.id, found.blob), (message.id, Some(blob)));
    assert_eq!(
        store.queued(&ann, &message.id).await.unwrap(),
        None,
        "not for the sender"
    );

    assert_eq!(store.ack(&ben, &[message.id]).await.unwrap(), 1);
    assert_eq!(
        store.queued(&ben, &message.id).await.unwrap(),
        None,
        "gone once acked"
    );
    assert!(
        store.blob_info(&blob).await.unwrap().is_some(),
        "cat still needs it"
    );
    assert_eq!(store.ack(&cat, &[message.id]).await.unwrap(), 1);
    assert_eq!(store.blob_info(&blob).await.unwrap(), None);
    assert_eq!(store.blob_chunk(&blob, 0).await.unwrap(), None);
}

/// Messages each producer enqueues.
const PER_PRODUCER: usize = 200;
/// Messages per enqueue call.
const BATCH: usize = 10;
/// How long the consumers may take to see everything.
const PATIENCE: Duration = Duration::from_secs(20);

/// Enqueues [`PER_PRODUCER`] messages to `to`, [`BATCH`] per call; returns their ids in order.
async fn produce(store: &impl Storage, fx: &Fixture, to: [&UserName; 2], tag: &str) -> Vec<MsgId> {
    let mut ids = Vec::with_capacity(PER_PRODUCER);
    for batch in 0..PER_PRODUCER / BATCH {
        let messages: Vec<NewMessage> = (0..BATCH)
            .map(|i| fx.message(&to, &format!("{tag} {batch}.{i}")))
            .collect();
        let outcome = store.enqueue(&messages).await.expect("enqueue");
        assert_eq!(outcome, vec![Enqueued::Stored; BATCH]);
        ids.extend(messages.iter().map(|m| m.id));
    }
    ids
}

/// Follows `user`'s queue with a `seq > after` cursor, acking each page, until `total`
/// messages were seen; returns their ids in the order seen.
async fn consume(store: &impl Storage, user: &UserName, total: usize) -> Vec<MsgId> {
    let started = Instant::now();
    let (mut seen, mut after) = (Vec::new(), 0);
    while seen.len() < total {
        let page = store.pending(user, after, 64).await.expect("pending");
        let Some(last) = page.last() else {
            if started.elapsed() > PATIENCE {
                let missed = store.queue_depth(user).await.expect("depth");
                panic!(
                    "{user}: saw {} of {total} messages; {missed} wait behind the cursor",
                    seen.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        after = last.seq;
        let ids: Vec<MsgId> = page.iter().map(|m| m.id).collect();
        let acked = store.ack(user, &ids).await.expect("ack");
        assert_eq!(
            acked,
            ids.len() as u64,
            "{user}: acked what pending returned"
        );
        seen.extend(ids);
    }
    seen
}

/// Two producers enqueue to the same two recipients through `first` and `second` (the same
/// store, or two handles on one database as two node processes would have), while a consumer
/// per recipient follows its queue with a `seq > after` cursor and acks as it goes. Nothing is
/// lost, nothing is seen twice, each producer's order is kept, and every message is deleted
/// once both recipients have acked it.
pub async fn concurrent_queues(first: &impl Storage, second: &impl Storage) {
    let fx = Fixture::new();
    concurrent_quota(first, second, &fx).await;
    let [x, y] = fx.users(first, ["cc-x", "cc-y"]).await;
    let total = 2 * PER_PRODUCER;
    let (from_a, from_b, seen_x, seen_y) = tokio::join!(
        produce(first, &fx, [&x, &y], "a"),
        produce(second, &fx, [&x, &y], "b"),
        consume(first, &x, total),
        consume(second, &y, total),
    );

    for (user, seen) in [(&x, &seen_x), (&y, &seen_y)] {
        assert_eq!(seen.len(), total, "{user}: count");
        let unique: HashSet<&MsgId> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{user}: a message was delivered twice"
        );
        for produced in [&from_a, &from_b] {
            let in_order: Vec<MsgId> = seen
                .iter()
                .copied()
                .filter(|id| produced.contains(id))
                .collect();
            assert_eq!(
                &in_order, produced,
                "{user}: a producer's order was not kept"
            );
        }
        assert_eq!(first.queue_depth(user).await.unwrap(), 0);
    }

    // Both recipients acked everything (often at the same moment): every message is gone, so
    // every id is new again.
    let again: Vec<NewMessage> = from_a
        .iter()
        .chain(&from_b)
        .map(|id| NewMessage {
            id: *id,
            ..fx.message(&[&x], "again")
        })
        .collect();
    let outcome = second.enqueue(&again).await.unwrap();
    assert!(
        outcome.iter().all(|o| *o == Enqueued::Stored),
        "a message outlived its last ack"
    );
    let ids: Vec<MsgId> = again.iter().map(|m| m.id).collect();
    assert_eq!(first.ack(&x, &ids).await.unwrap(), ids.len() as u64);
}

/// `commit` with a quota: a message that would take a recipient's queue past a limit is
/// refused alone (counting the earlier messages of its batch), naming the recipient and the
/// limit; its image blob goes; `queue_room` agrees; an ack makes room again.
pub(super) async fn quotas(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat, dan] = fx
        .users(store, ["qt-ann", "qt-ben", "qt-cat", "qt-dan"])
        .await;
    let quota = QueueQuota {
        max_messages: 5,
        max_bytes: u64::MAX,
        max_messages_per_sender: 3,
        max_bytes_per_sender: u64::MAX,
    };
    let from = |sender: &UserName, to: &UserName, body: &str| {
        let mut message = fx.message(&[to], body);
        message.sender = sender.clone();
        message
    };
    let commit = |messages: Vec<NewMessage>, quota: QueueQuota| async move {
        store
            .commit(&messages, &[], &quota)
            .await
            .expect("commit")
            .enqueued
    };
    let full = |recipient: &UserName, limit| {
        Enqueued::Refused(Refused::QueueFull {
            recipient: recipient.clone(),
            limit,
        })
    };

    // Per sender, within one batch: ben's fourth is refused, the rest of the batch is not.
    let bens: Vec<NewMessage> = (0..4).map(|i| from(&ben, &ann, &format!("b{i}"))).collect();
    let cats = from(&cat, &ann, "c0");
    let mut batch = bens.clone();
    batch.push(cats.clone());
    assert_eq!(
        commit(batch, quota).await,
        [
            Enqueued::Stored,
            Enqueued::Stored,
            Enqueued::Stored,
            full(&ann, QuotaLimit::MessagesFromSender(3)),
            Enqueued::Stored,
        ]
    );
    assert_eq!(store.queue_depth(&ann).await.unwrap(), 4);
    // Another sender still gets through, up to the recipient's limit.
    assert_eq!(
        commit(vec![from(&cat, &ann, "c1"), from(&cat, &ann, "c2")], quota).await,
        [Enqueued::Stored, full(&ann, QuotaLimit::Messages(5))]
    );
    assert_eq!(
        store
            .queue_room(&dan, std::slice::from_ref(&ann), 1, &quota)
            .await
            .unwrap(),
        Some(Refused::QueueFull {
            recipient: ann.clone(),
            limit: QuotaLimit::Messages(5),
        })
    );
    assert_eq!(
        store
            .queue_room(&dan, std::slice::from_ref(&dan), 1, &quota)
            .await
            .unwrap(),
        None
    );
    // Reading makes room.
    assert_eq!(store.ack(&ann, &[bens[0].id]).await.unwrap(), 1);
    assert_eq!(
        commit(vec![from(&ben, &ann, "b4")], quota).await,
        [Enqueued::Stored]
    );

    // Bytes: a row is its envelope and key, plus its image.
    let one = from(&ben, &dan, "bytes");
    let size = (one.sealed.len() + one.recipients[0].1.len()) as u64;
    let by_bytes = QueueQuota {
        max_messages: u64::MAX,
        max_bytes: 3 * size,
        max_messages_per_sender: u64::MAX,
        max_bytes_per_sender: 2 * size,
    };
    assert_eq!(
        commit(
            vec![
                from(&ben, &dan, "bytes"),
                from(&ben, &dan, "bytes"),
                from(&ben, &dan, "bytes")
            ],
            by_bytes
        )
        .await,
        [
            Enqueued::Stored,
            Enqueued::Stored,
            full(&dan, QuotaLimit::BytesFromSender(2 * size)),
        ]
    );
    let blob = fx.blob_id();
    store.blob_create(&blob, &cat, fx.now + DAY).await.unwrap();
    store
        .blob_append(&blob, 0, &vec![7; 2 * size as usize])
        .await
        .unwrap();
    store.blob_finish(&blob).await.unwrap();
    let mut image = from(&cat, &dan, "bytes");
    image.blob = Some(blob);
    assert_eq!(
        commit(vec![image], by_bytes).await,
        [full(&dan, QuotaLimit::Bytes(3 * size))]
    );
    assert_eq!(
        store.blob_info(&blob).await.unwrap(),
        None,
        "a refused image's blob goes"
    );
    assert_eq!(
        commit(vec![from(&cat, &dan, "bytes")], by_bytes).await,
        [Enqueued::Stored]
    );
    assert_eq!(store.queue_depth(&dan).await.unwrap(), 3);

    for user in [&ann, &dan] {
        let ids: Vec<MsgId> = pending_ids(store, user).await;
        store.ack(user, &ids).await.unwrap();
    }
}

/// `expire`: copies nobody acknowledged before the cut-off go, with their message and blob;
/// the sender gets one notice per copy, taken once.
pub(super) async fn expiry(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat] = fx.users(store, ["ex-ann", "ex-ben", "ex-cat"]).await;
    // Far in the past, so no other run's live messages are in range of this sweep.
    let (long_ago, cut_off) = (500, 1_000);
    let blob = fx.blob_id();
    store.blob_create(&blob, &ben, fx.now + DAY).await.unwrap();
    store.blob_finish(&blob).await.unwrap();
    let mut old = fx.message(&[&ann, &cat], "old");
    old.sender = ben.clone();
    old.created_at = long_ago;
    old.blob = Some(blob);
    let mut new = fx.message(&[&ann], "new");
    new.sender = ben.clone();
    store.enqueue(&[old.clone(), new.clone()]).await.unwrap();
    assert_eq!(store.ack(&cat, &[old.id]).await.unwrap(), 1, "cat read it");

    // (Another run's sweep on a shared database may expire it first: the notice is the same
    // but for the time, which is that run's clock.)
    store.expire(cut_off, fx.now).await.unwrap();
    assert_eq!(pending_ids(store, &ann).await, [new.id]);
    assert_eq!(store.blob_info(&blob).await.unwrap(), None);
    let notices = store.take_expiry_notices(&ben, 10).await.unwrap();
    let [notice] = notices.as_slice() else {
        panic!("one notice per unread copy: {notices:?}");
    };
    assert_eq!((notice.id, &notice.recipient), (old.id, &ann));
    assert!(
        (fx.now - DAY..=fx.now + DAY).contains(&notice.expired_at),
        "{notice:?} is stamped with the sweep's clock"
    );
    assert_eq!(store.take_expiry_notices(&ben, 10).await.unwrap(), []);
    assert!(!store.expire(cut_off, fx.now).await.unwrap().contains(&ben));
    // The id is free again: the message is gone.
    assert_eq!(store.enqueue(&[old]).await.unwrap(), [Enqueued::Stored]);
    store.ack(&ann, &[new.id]).await.unwrap();
    let left = pending_ids(store, &ann).await;
    store.ack(&ann, &left).await.unwrap();
    store
        .ack(&cat, &pending_ids(store, &cat).await)
        .await
        .unwrap();
}

/// Two handles committing to one recipient at once never take its queue past the quota: the
/// check runs inside the writing transaction, after the queue is locked.
async fn concurrent_quota(first: &impl Storage, second: &impl Storage, fx: &Fixture) {
    const LIMIT: u64 = 10;
    let [ann, ben, cat] = fx.users(first, ["cq-ann", "cq-ben", "cq-cat"]).await;
    let quota = QueueQuota {
        max_messages: LIMIT,
        max_bytes: u64::MAX,
        max_messages_per_sender: u64::MAX,
        max_bytes_per_sender: u64::MAX,
    };
    let send = |sender: &UserName, label: &str| {
        (0..LIMIT)
            .map(|i| {
                let mut message = fx.message(&[&ann], &format!("{label}{i}"));
                message.sender = sender.clone();
                message
            })
            .collect::<Vec<_>>()
    };
    let (ben_says, cat_says) = (send(&ben, "b"), send(&cat, "c"));
    let (a, b) = tokio::join!(
        one_by_one(first, ben_says, &quota),
        one_by_one(second, cat_says, &quota)
    );
    assert_eq!(a + b, LIMIT, "exactly the quota was stored");
    assert_eq!(first.queue_depth(&ann).await.unwrap(), LIMIT);
    let ids = pending_ids(first, &ann).await;
    first.ack(&ann, &ids).await.unwrap();
}

/// Commits `messages` one per transaction; returns how many were stored.
async fn one_by_one(store: &impl Storage, messages: Vec<NewMessage>, quota: &QueueQuota) -> u64 {
    let mut stored = 0;
    for message in messages {
        let outcome = store
            .commit(std::slice::from_ref(&message), &[], quota)
            .await
            .unwrap();
        stored += u64::from(outcome.enqueued == [Enqueued::Stored]);
    }
    stored
}
