//! Conformance checks for groups, members and the membership chain.

use quip_proto::ids::{GroupId, UserName};

use super::{Fixture, assert_err};
use crate::{
    GroupChange, GroupRecord, Member, MemberEffect, NewGroup, Role, Storage, StorageError, limits,
};

fn admin(user: &UserName) -> Member {
    Member {
        user: user.clone(),
        role: Role::Admin,
    }
}

fn member(user: &UserName) -> Member {
    Member {
        user: user.clone(),
        role: Role::Member,
    }
}

/// Every group of `user`, walked two at a time (so paging is exercised everywhere), checking
/// each page's `more` and `total`.
async fn all_groups(store: &impl Storage, user: &UserName) -> Vec<GroupRecord> {
    let mut all: Vec<GroupRecord> = Vec::new();
    loop {
        let after = all.last().map(|g| (&g.name, &g.id));
        let page = store.groups_of(user, after, 2).await.unwrap();
        assert!(page.items.len() <= 2);
        let more = page.more;
        let total = page.total;
        assert!(!more || page.items.len() == 2, "a short page says more");
        all.extend(page.items);
        if !more {
            assert_eq!(total, all.len() as u64, "total of {user}'s groups");
            return all;
        }
    }
}

/// A group's whole chain, read two links at a time.
async fn whole_chain(store: &impl Storage, id: &GroupId) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    loop {
        let page = store.chain(id, all.len() as u64, 2).await.unwrap();
        let done = page.len() < 2;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// A group by `creator` named `label`, with `members` and a genesis naming it.
fn new_group(fx: &Fixture, creator: &UserName, label: &str, members: &[&UserName]) -> NewGroup {
    NewGroup {
        id: fx.group_id(),
        name: fx.group_name(label),
        creator: creator.clone(),
        members: members.iter().map(|m| (*m).clone()).collect(),
        genesis: format!("genesis of {label}").into_bytes(),
        created_at: fx.now,
    }
}

/// create_group, group, groups_of, members, chain.
pub(super) async fn creation(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat, dan, eve] = fx
        .users(store, ["g-ann", "g-ben", "g-cat", "g-dan", "g-eve"])
        .await;

    // The creator may be listed, and names may repeat: each is stored once.
    let friends = new_group(fx, &ann, "friends", &[&ben, &ann, &cat, &ben]);
    store.create_group(&friends).await.unwrap();
    let record = GroupRecord {
        id: friends.id,
        name: friends.name.clone(),
        creator: ann.clone(),
        epoch: 0,
    };
    assert_eq!(
        store.group(&friends.id).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store.members(&friends.id).await.unwrap(),
        [admin(&ann), member(&ben), member(&cat)]
    );
    assert_eq!(
        whole_chain(store, &friends.id).await,
        std::slice::from_ref(&friends.genesis)
    );

    // An existing id, or a name its creator already uses, is taken; another creator may
    // reuse the name.
    let mut same_id = new_group(fx, &dan, "other", &[]);
    same_id.id = friends.id;
    assert_err!(
        store.create_group(&same_id).await,
        StorageError::AlreadyExists { what: "group" }
    );
    let same_name = new_group(fx, &ann, "friends", &[&dan]);
    assert_err!(
        store.create_group(&same_name).await,
        StorageError::AlreadyExists { .. }
    );
    assert_eq!(store.group(&same_name.id).await.unwrap(), None);
    let dans_friends = new_group(fx, &dan, "friends", &[]);
    store.create_group(&dans_friends).await.unwrap();
    assert_eq!(
        store.members(&dans_friends.id).await.unwrap(),
        [admin(&dan)]
    );

    // Unknown members or creators: nothing is created.
    let ghost = fx.name("g-ghost");
    for group in [
        new_group(fx, &ann, "ghostly", &[&ben, &ghost]),
        new_group(fx, &ghost, "haunted", &[&ben]),
    ] {
        assert_err!(
            store.create_group(&group).await,
            StorageError::NotFound { what: "user" }
        );
        assert_eq!(store.group(&group.id).await.unwrap(), None);
        assert!(
            all_groups(store, &ben)
                .await
                .iter()
                .all(|g| g.id != group.id)
        );
    }

    // Limits.
    let crowd: Vec<UserName> = (0..limits::MAX_GROUP_MEMBERS)
        .map(|i| fx.name(&format!("crowd{i}")))
        .collect();
    let crowded = NewGroup {
        members: crowd,
        ..new_group(fx, &ann, "crowded", &[])
    };
    assert_err!(
        store.create_group(&crowded).await,
        StorageError::TooLarge {
            what: "group members",
            ..
        }
    );
    let verbose = NewGroup {
        genesis: vec![0; limits::MAX_GROUP_CHANGE + 1],
        ..new_group(fx, &ann, "verbose", &[])
    };
    assert_err!(
        store.create_group(&verbose).await,
        StorageError::TooLarge {
            what: "genesis",
            ..
        }
    );
    assert_eq!(store.group(&verbose.id).await.unwrap(), None);

    // groups_of, sorted by name.
    let book_club = new_group(fx, &ben, "book club", &[&ann]);
    store.create_group(&book_club).await.unwrap();
    let of_ann: Vec<GroupId> = all_groups(store, &ann).await.iter().map(|g| g.id).collect();
    assert_eq!(of_ann, [book_club.id, friends.id]);
    let of_cat = all_groups(store, &cat).await;
    assert_eq!(of_cat, [record]);
    assert_eq!(all_groups(store, &eve).await, []);
    assert_eq!(all_groups(store, &ghost).await, []);

    let unknown = fx.group_id();
    assert_eq!(store.group(&unknown).await.unwrap(), None);
    assert_err!(
        store.members(&unknown).await,
        StorageError::NotFound { what: "group" }
    );
    assert_err!(
        store.chain(&unknown, 0, 10).await,
        StorageError::NotFound { what: "group" }
    );
    assert_err!(
        store.chain(&unknown, 3, 10).await,
        StorageError::NotFound { what: "group" }
    );
    assert!(store.chain(&friends.id, 1, 10).await.unwrap().is_empty());
    assert_eq!(store.chain(&friends.id, 0, 0).await.unwrap().len(), 0);

    // Pages: names that tie are ordered by id, and a page boundary between them loses none.
    let mut twins = Vec::new();
    for creator in [&cat, &dan, &ben] {
        let twin = new_group(fx, creator, "twin", &[&eve]);
        store.create_group(&twin).await.unwrap();
        twins.push(twin.id);
    }
    twins.sort_unstable();
    let of_eve: Vec<GroupId> = all_groups(store, &eve).await.iter().map(|g| g.id).collect();
    assert_eq!(of_eve, twins);
    let first = store.groups_of(&eve, None, 1).await.unwrap();
    assert_eq!((first.items.len(), first.more, first.total), (1, true, 3));
    let last = &first.items[0];
    let rest = store
        .groups_of(&eve, Some((&last.name, &last.id)), 10)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.more, rest.total), (2, false, 3));
}

/// apply_change: the epoch compare-and-set, each effect, and all-or-nothing failures.
pub(super) async fn changes(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat, dan] = fx.users(store, ["c-ann", "c-ben", "c-cat", "c-dan"]).await;
    let group = new_group(fx, &ann, "changing", &[&ben]);
    store.create_group(&group).await.unwrap();
    let change = |epoch: u64, effect: MemberEffect| GroupChange {
        group: group.id,
        epoch,
        signed: format!("change {epoch}: {effect:?}").into_bytes(),
        effect,
    };
    let state = || async {
        (
            store.group(&group.id).await.unwrap().expect("group").epoch,
            store.members(&group.id).await.unwrap(),
            whole_chain(store, &group.id).await,
        )
    };

    let add_cat = change(1, MemberEffect::Add(cat.clone()));
    store.apply_change(&add_cat).await.unwrap();
    let before = state().await;
    assert_eq!(before.0, 1);
    assert_eq!(before.1, [admin(&ann), member(&ben), member(&cat)]);
    assert_eq!(before.2, [group.genesis.clone(), add_cat.signed.clone()]);

    // Every failure leaves the group exactly as it was.
    let ghost = fx.name("c-ghost");
    let mut oversized = change(2, MemberEffect::Add(dan.clone()));
    oversized.signed = vec![0; limits::MAX_GROUP_CHANGE + 1];
    type Expect = fn(&crate::Result<()>) -> bool;
    let conflict: Expect = |r| {
        matches!(
            r,
            Err(StorageError::Conflict {
                what: "group epoch",
                ..
            })
        )
    };
    let not_member: Expect = |r| matches!(r, Err(StorageError::NotFound { what: "member" }));
    let failures: [(&str, GroupChange, Expect); 9] = [
        (
            "stale epoch",
            change(1, MemberEffect::Add(dan.clone())),
            conflict,
        ),
        (
            "skipped epoch",
            change(3, MemberEffect::Add(dan.clone())),
            conflict,
        ),
        (
            "epoch 0",
            change(0, MemberEffect::Add(dan.clone())),
            conflict,
        ),
        (
            "huge epoch",
            change(u64::MAX, MemberEffect::Add(dan.clone())),
            conflict,
        ),
        (
            "adding a member",
            change(2, MemberEffect::Add(ben.clone())),
            |r| matches!(r, Err(StorageError::AlreadyExists { what: "member" })),
        ),
        (
            "adding an unknown user",
            change(2, MemberEffect::Add(ghost.clone())),
            |r| matches!(r, Err(StorageError::NotFound { what: "user" })),
        ),
        (
            "removing a non-member",
            change(2, MemberEffect::Remove(dan.clone())),
            not_member,
        ),
        (
            "re-roling a non-member",
            change(2, MemberEffect::SetRole(dan.clone(), Role::Admin)),
            not_member,
        ),
        ("oversized change", oversized, |r| {
            matches!(
                r,
                Err(StorageError::TooLarge {
                    what: "group change",
                    ..
                })
            )
        }),
    ];
    for (case, bad, expect) in &failures {
        let result = store.apply_change(bad).await;
        assert!(expect(&result), "{case}: unexpected {result:?}");
        assert_eq!(state().await, before, "{case} changed the group");
    }
    let mut elsewhere = change(1, MemberEffect::Add(dan.clone()));
    elsewhere.group = fx.group_id();
    assert_err!(
        store.apply_change(&elsewhere).await,
        StorageError::NotFound { what: "group" }
    );

    // Two admins race for epoch 2: exactly one wins.
    let promote_ben = change(2, MemberEffect::SetRole(ben.clone(), Role::Admin));
    let add_dan = change(2, MemberEffect::Add(dan.clone()));
    let (first, second) = tokio::join!(
        store.apply_change(&promote_ben),
        store.apply_change(&add_dan)
    );
    let winner = match (first, second) {
        (Ok(()), Err(StorageError::Conflict { .. })) => &promote_ben,
        (Err(StorageError::Conflict { .. }), Ok(())) => &add_dan,
        other => panic!("racing changes: expected one Ok and one Conflict, got {other:?}"),
    };
    let mut chain = before.2.clone();
    chain.push(winner.signed.clone());
    assert_eq!(whole_chain(store, &group.id).await, chain);

    // Apply the loser at the next epoch, then remove and demote.
    let loser = if std::ptr::eq(winner, &promote_ben) {
        &add_dan
    } else {
        &promote_ben
    };
    let later = [
        change(3, loser.effect.clone()),
        change(4, MemberEffect::Remove(cat.clone())),
        change(5, MemberEffect::SetRole(ann.clone(), Role::Member)),
    ];
    for next in &later {
        store.apply_change(next).await.unwrap();
        chain.push(next.signed.clone());
    }
    let (epoch, members, stored_chain) = state().await;
    assert_eq!(epoch, 5);
    assert_eq!(members, [member(&ann), admin(&ben), member(&dan)]);
    assert_eq!(
        stored_chain, chain,
        "chain is in epoch order, genesis first"
    );
    assert!(all_groups(store, &cat).await.is_empty());
    assert_eq!(all_groups(store, &dan).await.len(), 1);

    // A removed member may be added back.
    store
        .apply_change(&change(6, MemberEffect::Add(cat.clone())))
        .await
        .unwrap();
    assert!(
        store
            .members(&group.id)
            .await
            .unwrap()
            .contains(&member(&cat))
    );
}

/// Groups each side creates in [`concurrent_groups`].
const GROUPS_PER_SIDE: usize = 25;

/// One side of [`concurrent_groups`]: creates groups, and between creations races the other
/// side to move `shared` on by one change, retrying on [`StorageError::Conflict`]. Returns the
/// groups it created and the epochs it won.
async fn group_side(
    store: &impl Storage,
    fx: &Fixture,
    [ann, ben]: [&UserName; 2],
    shared: &GroupId,
    tag: &str,
) -> (Vec<GroupId>, Vec<u64>) {
    let (mut created, mut won) = (Vec::new(), Vec::new());
    for i in 0..GROUPS_PER_SIDE {
        let group = new_group(fx, ann, &format!("{tag} {i}"), &[ben]);
        store.create_group(&group).await.expect("create group");
        created.push(group.id);
        loop {
            // Read the epoch first: if the members read below is newer, the epoch has moved
            // and the change is refused as a conflict.
            let epoch = store
                .group(shared)
                .await
                .unwrap()
                .expect("shared group")
                .epoch
                + 1;
            let effect = if store.members(shared).await.unwrap().contains(&member(ben)) {
                MemberEffect::Remove(ben.clone())
            } else {
                MemberEffect::Add(ben.clone())
            };
            let change = GroupChange {
                group: *shared,
                epoch,
                signed: format!("{tag} change {epoch}").into_bytes(),
                effect,
            };
            match store.apply_change(&change).await {
                Ok(()) => {
                    won.push(epoch);
                    break;
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => panic!("{tag}: change at epoch {epoch}: {e:?}"),
            }
        }
    }
    (created, won)
}

/// Two handles (the same store, or two on one database as two node processes would have)
/// create groups and race to change one shared group at the same time: every write succeeds
/// or is a clean epoch conflict, and the shared chain has no gap and no epoch twice.
pub async fn concurrent_groups(first: &impl Storage, second: &impl Storage) {
    let fx = Fixture::new();
    let [ann, ben] = fx.users(first, ["cg-ann", "cg-ben"]).await;
    let shared = new_group(&fx, &ann, "shared", &[]);
    first.create_group(&shared).await.unwrap();
    let ((created_a, won_a), (created_b, won_b)) = tokio::join!(
        group_side(first, &fx, [&ann, &ben], &shared.id, "a"),
        group_side(second, &fx, [&ann, &ben], &shared.id, "b"),
    );

    let mut won: Vec<u64> = won_a.into_iter().chain(won_b).collect();
    won.sort_unstable();
    let changes = 2 * GROUPS_PER_SIDE as u64;
    assert_eq!(
        won,
        (1..=changes).collect::<Vec<_>>(),
        "each epoch won exactly once"
    );
    assert_eq!(
        first.group(&shared.id).await.unwrap().unwrap().epoch,
        changes
    );
    assert_eq!(
        whole_chain(second, &shared.id).await.len() as u64,
        changes + 1
    );
    for id in created_a.iter().chain(&created_b) {
        assert_eq!(
            second.members(id).await.unwrap(),
            [admin(&ann), member(&ben)]
        );
    }
    assert_eq!(all_groups(first, &ben).await.len(), 2 * GROUPS_PER_SIDE);
}
