//! Conformance checks for MLS devices, key packages, backed-up device state and group state.

use std::collections::HashSet;

use quip_proto::ids::{GroupId, UserName};

use super::{DAY, Fixture, assert_err};
use crate::{
    Appended, DeviceId, DeviceRecord, KeyPackageRecord, MlsChange, MlsEntry, MlsGroupRecord,
    MlsGroupSummary, MlsKind, NewDevice, NewKeyPackage, NewMlsGroup, Storage, StorageError, limits,
};

/// A leaf: a user's device.
pub(super) type Leaf = (UserName, DeviceId);

/// One write of [`Storage::put_device_state`]: an entry and its value, or `None` to delete it.
type StateWrite = (Vec<u8>, Option<Vec<u8>>);

pub(super) fn leaf(user: &UserName, device: u64) -> Leaf {
    (user.clone(), DeviceId(device))
}

/// Device `device` of `user`, with a signature key no other run or device has.
fn new_device(fx: &Fixture, user: &UserName, device: u64) -> NewDevice {
    NewDevice {
        user: user.clone(),
        device: DeviceId(device),
        credential: format!("credential of {user} device {device}").into_bytes(),
        signature_key: fx.id16().to_vec(),
        created_at: fx.now,
    }
}

/// Registers device `device` of `user`.
pub(super) async fn device(
    store: &impl Storage,
    fx: &Fixture,
    user: &UserName,
    device: u64,
) -> DeviceRecord {
    let new = new_device(fx, user, device);
    store.add_device(&new).await.expect("add test device");
    record_of(&new)
}

/// A key package with a reference no other run has.
pub(super) fn key_package(fx: &Fixture, last_resort: bool) -> NewKeyPackage {
    let kp_ref = fx.id16().to_vec();
    NewKeyPackage {
        data: [b"key package ".as_slice(), &kp_ref].concat(),
        kp_ref,
        last_resort,
        created_at: fx.now,
    }
}

/// What [`Storage::take_key_packages`] returns for `package` of `device`.
fn handed_out(device: u64, package: &NewKeyPackage) -> KeyPackageRecord {
    KeyPackageRecord {
        device: DeviceId(device),
        kp_ref: package.kp_ref.clone(),
        data: package.data.clone(),
        last_resort: package.last_resort,
    }
}

/// A group named `label` at epoch 0 with `members`.
pub(super) fn new_group(fx: &Fixture, label: &str, members: &[Leaf]) -> NewMlsGroup {
    NewMlsGroup {
        id: fx.group_id(),
        name: fx.group_name(label),
        epoch: 0,
        state: format!("state of {label} at 0").into_bytes(),
        group_info: format!("group info of {label} at 0").into_bytes(),
        members: members.to_vec(),
        created_at: fx.now,
    }
}

/// The record `group` was stored as.
pub(super) fn record(group: &NewMlsGroup) -> MlsGroupRecord {
    MlsGroupRecord {
        id: group.id,
        name: group.name.clone(),
        epoch: group.epoch,
        state_version: 0,
        last_seq: 0,
        state: group.state.clone(),
        group_info: group.group_info.clone(),
    }
}

/// A commit by `sender` of `group` (as it is now) to the next epoch that changes nothing but
/// the state.
pub(super) fn commit(fx: &Fixture, group: &MlsGroupRecord, sender: &Leaf, tag: &str) -> MlsEntry {
    let next = group.epoch + 1;
    MlsEntry {
        group: group.id,
        id: fx.msg_id(),
        sender: sender.clone(),
        kind: MlsKind::Commit,
        epoch: group.epoch,
        body: format!("commit to {next} by {tag}").into_bytes(),
        blob: None,
        change: Some(MlsChange {
            state_version: group.state_version,
            epoch: next,
            name: group.name.clone(),
            state: format!("state at {next} by {tag}").into_bytes(),
            group_info: format!("group info at {next} by {tag}").into_bytes(),
            added: Vec::new(),
            removed: Vec::new(),
            used_key_packages: Vec::new(),
            welcomes: Vec::new(),
        }),
        // A day ahead: clear of other runs' retention.
        at: fx.now + DAY,
    }
}

/// `entry` with its change edited by `edit`.
pub(super) fn with_change(mut entry: MlsEntry, edit: impl FnOnce(&mut MlsChange)) -> MlsEntry {
    edit(entry.change.as_mut().expect("an entry with a change"));
    entry
}

/// The record of `group` after its change `entry` was stored at `seq`.
pub(super) fn after(group: &MlsGroupRecord, entry: &MlsEntry, seq: u64) -> MlsGroupRecord {
    let change = entry.change.as_ref().expect("an entry with a change");
    MlsGroupRecord {
        id: group.id,
        name: change.name.clone(),
        epoch: change.epoch,
        state_version: change.state_version + 1,
        last_seq: seq,
        state: change.state.clone(),
        group_info: change.group_info.clone(),
    }
}

/// Appends one entry; returns its outcome.
pub(super) async fn append_one(store: &impl Storage, entry: &MlsEntry) -> Appended {
    let mut outcomes = store
        .append_mls(std::slice::from_ref(entry), u64::MAX)
        .await
        .expect("append");
    assert_eq!(outcomes.len(), 1, "one outcome per entry");
    outcomes.remove(0)
}

/// The group's record and leaves.
pub(super) async fn snapshot(store: &impl Storage, id: &GroupId) -> (MlsGroupRecord, Vec<Leaf>) {
    (
        store.mls_group(id).await.unwrap().expect("mls group"),
        store.mls_members(id).await.unwrap(),
    )
}

/// Every MLS group of `user`, walked two at a time, checking each page's `more` and `total`.
async fn all_groups(store: &impl Storage, user: &UserName) -> Vec<MlsGroupSummary> {
    let mut all: Vec<MlsGroupSummary> = Vec::new();
    loop {
        let after = all.last().map(|g| g.id);
        let page = store.mls_groups_of(user, after.as_ref(), 2).await.unwrap();
        assert!(page.items.len() <= 2);
        assert!(
            !page.more || page.items.len() == 2,
            "a short page says more"
        );
        let (more, total) = (page.more, page.total);
        all.extend(page.items);
        if !more {
            assert_eq!(total, all.len() as u64, "total of {user}'s mls groups");
            return all;
        }
    }
}

/// A device's whole state, walked `limit` entries at a time, checking `more` and `total`.
async fn all_state(
    store: &impl Storage,
    user: &UserName,
    device: u64,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .device_state(user, DeviceId(device), after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.items.len() <= limit);
        let values: usize = page.items.iter().map(|(_, v)| v.len()).sum();
        assert!(
            page.items.len() <= 1 || values <= limits::MAX_STATE_PAGE_BYTES,
            "a page of {values} value bytes"
        );
        let (more, total) = (page.more, page.total);
        all.extend(page.items);
        after = all.last().map(|(entry, _)| entry.clone());
        if !more {
            assert_eq!(total, all.len() as u64, "total of the device's entries");
            return all;
        }
    }
}

/// add_device, devices, remove_device (and what removal takes along).
pub(super) async fn devices(store: &impl Storage, fx: &Fixture) {
    let [ann, ben] = fx.users(store, ["md-ann", "md-ben"]).await;
    let ghost = fx.name("md-ghost");

    // Any u64 is an id; devices come back by id.
    let mut anns = Vec::new();
    for id in [u64::MAX, 2, 1 << 63, 1] {
        anns.push(device(store, fx, &ann, id).await);
    }
    anns.sort_unstable_by_key(|d| d.device);
    assert_eq!(store.devices(&ann).await.unwrap(), anns);
    assert_eq!(store.devices(&ben).await.unwrap(), []);
    assert_eq!(store.devices(&ghost).await.unwrap(), []);

    // Taken ids and signature keys, unknown users, oversized fields: nothing stored.
    let mut again = new_device(fx, &ann, 2);
    assert_err!(
        store.add_device(&again).await,
        StorageError::AlreadyExists { what: "device" }
    );
    again.user = ben.clone();
    again.signature_key = anns[0].signature_key.clone();
    assert_err!(
        store.add_device(&again).await,
        StorageError::AlreadyExists {
            what: "device signature key"
        }
    );
    assert_err!(
        store.add_device(&new_device(fx, &ghost, 1)).await,
        StorageError::NotFound { what: "user" }
    );
    let roomy = NewDevice {
        credential: vec![1; limits::MAX_CREDENTIAL],
        signature_key: vec![0xee; limits::MAX_SIGNATURE_KEY - 16]
            .into_iter()
            .chain(fx.id16())
            .collect(),
        ..new_device(fx, &ben, 7)
    };
    store
        .add_device(&roomy)
        .await
        .expect("fields at their limits");
    let big_credential = NewDevice {
        credential: vec![1; limits::MAX_CREDENTIAL + 1],
        ..new_device(fx, &ben, 8)
    };
    assert_err!(
        store.add_device(&big_credential).await,
        StorageError::TooLarge {
            what: "device credential",
            ..
        }
    );
    let big_key = NewDevice {
        signature_key: vec![2; limits::MAX_SIGNATURE_KEY + 1],
        ..new_device(fx, &ben, 9)
    };
    assert_err!(
        store.add_device(&big_key).await,
        StorageError::TooLarge {
            what: "device signature key",
            ..
        }
    );
    assert_eq!(store.devices(&ben).await.unwrap().len(), 1);
    assert_eq!(store.devices(&ann).await.unwrap(), anns);

    // The cap, and room again after a removal.
    for id in 10..(10 + limits::MAX_DEVICES_PER_USER - anns.len()) as u64 {
        device(store, fx, &ann, id).await;
    }
    assert_eq!(
        store.devices(&ann).await.unwrap().len(),
        limits::MAX_DEVICES_PER_USER
    );
    assert_err!(
        store.add_device(&new_device(fx, &ann, 99)).await,
        StorageError::Full {
            what: "devices",
            max: limits::MAX_DEVICES_PER_USER
        }
    );
    assert!(store.remove_device(&ann, DeviceId(2)).await.unwrap());
    assert!(!store.remove_device(&ann, DeviceId(2)).await.unwrap());
    assert!(!store.remove_device(&ghost, DeviceId(1)).await.unwrap());
    device(store, fx, &ann, 99).await;

    // Removal takes the device's key packages, state and leaves along, in one go; the
    // references its used packages left stay used, and its id and key are free again.
    let gone = device(store, fx, &ben, 1).await;
    let kept = device(store, fx, &ben, 2).await;
    for (id, state) in [(1, "ben 1's"), (2, "ben 2's")] {
        let packages = [key_package(fx, false), key_package(fx, true)];
        store
            .put_key_packages(&ben, DeviceId(id), &packages)
            .await
            .unwrap();
        let entry = (b"entry".to_vec(), Some(state.as_bytes().to_vec()));
        store
            .put_device_state(&ben, DeviceId(id), &[entry])
            .await
            .unwrap();
    }
    let group = new_group(
        fx,
        "removal",
        &[leaf(&ann, 1), leaf(&ben, 1), leaf(&ben, 2)],
    );
    store.create_mls_group(&group).await.unwrap();
    let used = key_package(fx, false);
    store
        .put_key_packages(&ben, DeviceId(1), std::slice::from_ref(&used))
        .await
        .unwrap();
    let change = with_change(
        commit(fx, &record(&group), &leaf(&ann, 1), "removal"),
        |c| {
            c.used_key_packages = vec![used.kp_ref.clone()];
            c.welcomes = vec![(ben.clone(), DeviceId(1), b"welcome".to_vec())];
        },
    );
    assert_eq!(
        append_one(store, &change).await,
        Appended::Stored { seq: 1 }
    );
    assert_eq!(
        store
            .mls_welcomes(&ben, DeviceId(1), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    assert!(store.remove_device(&ben, DeviceId(1)).await.unwrap());
    assert_eq!(
        store.devices(&ben).await.unwrap(),
        [kept, record_of(&roomy)]
    );
    assert_err!(
        store.key_package_count(&ben, DeviceId(1)).await,
        StorageError::NotFound { what: "device" }
    );
    assert_err!(
        store.device_state(&ben, DeviceId(1), None, 10).await,
        StorageError::NotFound { what: "device" }
    );
    assert_eq!(
        store.mls_members(&group.id).await.unwrap(),
        [leaf(&ann, 1), leaf(&ben, 2)]
    );
    assert_eq!(store.key_package_count(&ben, DeviceId(2)).await.unwrap(), 1);
    assert_eq!(all_state(store, &ben, 2, 10).await.len(), 1);
    let taken = store.take_key_packages(&ben).await.unwrap();
    assert_eq!(taken.len(), 1, "only device 2 has packages left");
    assert_eq!(taken[0].device, DeviceId(2));

    let back = NewDevice {
        signature_key: gone.signature_key.clone(),
        ..new_device(fx, &ben, 1)
    };
    store
        .add_device(&back)
        .await
        .expect("id and key free again");
    assert_eq!(store.key_package_count(&ben, DeviceId(1)).await.unwrap(), 0);
    assert_eq!(all_state(store, &ben, 1, 10).await, []);
    assert_eq!(store.mls_welcomes(&ben, DeviceId(1), 10).await.unwrap(), []);
    assert_err!(
        store
            .put_key_packages(&ben, DeviceId(1), std::slice::from_ref(&used))
            .await,
        StorageError::AlreadyExists {
            what: "key package"
        }
    );
}

/// The record `add_device(device)` stored.
fn record_of(device: &NewDevice) -> DeviceRecord {
    DeviceRecord {
        user: device.user.clone(),
        device: device.device,
        credential: device.credential.clone(),
        signature_key: device.signature_key.clone(),
        created_at: device.created_at,
    }
}

/// put_key_packages, take_key_packages, key_package_count.
pub(super) async fn key_packages(store: &impl Storage, fx: &Fixture) {
    let [ann, ben] = fx.users(store, ["mk-ann", "mk-ben"]).await;
    let ghost = fx.name("mk-ghost");
    for id in [1, 2, 3] {
        device(store, fx, &ann, id).await;
    }
    assert_eq!(store.take_key_packages(&ann).await.unwrap(), []);
    assert_eq!(store.take_key_packages(&ben).await.unwrap(), []);
    assert_eq!(store.take_key_packages(&ghost).await.unwrap(), []);

    let ones: Vec<NewKeyPackage> = (0..3).map(|_| key_package(fx, false)).collect();
    let last_one = key_package(fx, true);
    let mut batch = ones.clone();
    batch.insert(1, last_one.clone());
    store
        .put_key_packages(&ann, DeviceId(1), &batch)
        .await
        .unwrap();
    let two = key_package(fx, false);
    store
        .put_key_packages(&ann, DeviceId(2), std::slice::from_ref(&two))
        .await
        .unwrap();
    store
        .put_key_packages(&ann, DeviceId(3), &[])
        .await
        .unwrap();
    let count = |id: u64| {
        let ann = ann.clone();
        async move { store.key_package_count(&ann, DeviceId(id)).await.unwrap() }
    };
    assert_eq!((count(1).await, count(2).await, count(3).await), (3, 1, 0));

    // Oldest first, one per device, deleted as taken; then the last-resort one, which stays.
    assert_eq!(
        store.take_key_packages(&ann).await.unwrap(),
        [handed_out(1, &ones[0]), handed_out(2, &two)]
    );
    assert_eq!((count(1).await, count(2).await), (2, 0));
    assert_eq!(
        store.take_key_packages(&ann).await.unwrap(),
        [handed_out(1, &ones[1])]
    );
    let last_two = key_package(fx, true);
    store
        .put_key_packages(&ann, DeviceId(2), std::slice::from_ref(&last_two))
        .await
        .unwrap();
    assert_eq!(count(2).await, 0, "a last-resort package is not counted");
    assert_eq!(
        store.take_key_packages(&ann).await.unwrap(),
        [handed_out(1, &ones[2]), handed_out(2, &last_two)]
    );
    for _ in 0..2 {
        assert_eq!(
            store.take_key_packages(&ann).await.unwrap(),
            [handed_out(1, &last_one), handed_out(2, &last_two)]
        );
    }
    // A new last-resort package replaces the old one.
    let newer = key_package(fx, true);
    store
        .put_key_packages(&ann, DeviceId(1), std::slice::from_ref(&newer))
        .await
        .unwrap();
    assert_eq!(
        store.take_key_packages(&ann).await.unwrap(),
        [handed_out(1, &newer), handed_out(2, &last_two)]
    );

    // Refusals store nothing of their batch.
    let fresh = key_package(fx, false);
    let refused: [(&str, u64, Vec<NewKeyPackage>); 4] = [
        ("stored reference", 1, vec![fresh.clone(), last_two.clone()]),
        (
            "reference listed twice",
            1,
            vec![fresh.clone(), fresh.clone()],
        ),
        (
            "stored last-resort reference",
            2,
            vec![NewKeyPackage {
                last_resort: false,
                ..newer.clone()
            }],
        ),
        (
            "replaced last-resort reference",
            3,
            vec![fresh.clone(), last_one.clone()],
        ),
    ];
    for (case, id, batch) in &refused {
        let result = store.put_key_packages(&ann, DeviceId(*id), batch).await;
        if *case == "replaced last-resort reference" {
            // The replaced package was deleted, not used: its reference is free again.
            result.unwrap_or_else(|e| panic!("{case}: {e:?}"));
            continue;
        }
        assert!(
            matches!(
                result,
                Err(StorageError::AlreadyExists {
                    what: "key package"
                })
            ),
            "{case}: unexpected {result:?}"
        );
        assert_eq!((count(1).await, count(2).await), (0, 0), "{case}");
    }
    assert_eq!(
        count(3).await,
        1,
        "fresh waits; last_one is device 3's last resort"
    );
    for (id, batch) in [(9, vec![key_package(fx, false)]), (1, vec![])] {
        for user in [&ghost, &ben] {
            assert_err!(
                store.put_key_packages(user, DeviceId(id), &batch).await,
                StorageError::NotFound { what: "device" }
            );
        }
    }
    assert_err!(
        store.put_key_packages(&ann, DeviceId(9), &[]).await,
        StorageError::NotFound { what: "device" }
    );
    assert_err!(
        store.key_package_count(&ann, DeviceId(9)).await,
        StorageError::NotFound { what: "device" }
    );
    assert_err!(
        store.key_package_count(&ghost, DeviceId(1)).await,
        StorageError::NotFound { what: "device" }
    );
    type Grow = fn(&mut Vec<NewKeyPackage>);
    let oversized: [(&str, Grow); 3] = [
        ("key package", |b| {
            b[0].data = vec![0; limits::MAX_KEY_PACKAGE + 1]
        }),
        ("key package reference", |b| {
            b[0].kp_ref = vec![0; limits::MAX_KEY_PACKAGE_REF + 1]
        }),
        ("last-resort key packages", |b| {
            b[0].last_resort = true;
            b[1].last_resort = true;
        }),
    ];
    for (what, grow) in oversized {
        let mut batch = vec![key_package(fx, false), key_package(fx, false)];
        grow(&mut batch);
        let result = store.put_key_packages(&ann, DeviceId(1), &batch).await;
        assert!(
            matches!(result, Err(StorageError::TooLarge { what: w, .. }) if w == what),
            "{what}: unexpected {result:?}"
        );
        assert_eq!(count(1).await, 0, "{what}");
    }
    let roomy = NewKeyPackage {
        kp_ref: [fx.id16().as_slice(), &[7; limits::MAX_KEY_PACKAGE_REF - 16]].concat(),
        data: vec![1; limits::MAX_KEY_PACKAGE],
        ..key_package(fx, false)
    };
    store
        .put_key_packages(&ann, DeviceId(1), std::slice::from_ref(&roomy))
        .await
        .expect("fields at their limits");
    assert_eq!(
        store.take_key_packages(&ann).await.unwrap()[0],
        handed_out(1, &roomy)
    );

    // The cap counts what waits; the last-resort package is extra.
    let full = limits::MAX_KEY_PACKAGES_PER_DEVICE;
    let too_many: Vec<NewKeyPackage> = (0..=full).map(|_| key_package(fx, false)).collect();
    assert_err!(
        store.put_key_packages(&ann, DeviceId(2), &too_many).await,
        StorageError::Full {
            what: "key packages",
            max: limits::MAX_KEY_PACKAGES_PER_DEVICE
        }
    );
    assert_eq!(count(2).await, 0);
    store
        .put_key_packages(&ann, DeviceId(2), &too_many[..full])
        .await
        .unwrap();
    assert_err!(
        store
            .put_key_packages(&ann, DeviceId(2), &too_many[full..])
            .await,
        StorageError::Full { .. }
    );
    store
        .put_key_packages(&ann, DeviceId(2), &[key_package(fx, true)])
        .await
        .expect("a last-resort package on top of a full batch");
    assert_eq!(count(2).await, full as u64);
    assert_eq!(
        store.take_key_packages(&ann).await.unwrap()[1],
        handed_out(2, &too_many[0])
    );
    store
        .put_key_packages(&ann, DeviceId(2), &too_many[full..])
        .await
        .expect("room for one again");
}

/// create_mls_group, mls_group, mls_groups_of, mls_members, and the changes of append_mls.
pub(super) async fn groups(store: &impl Storage, fx: &Fixture) {
    let [ann, ben, cat, dan] = fx
        .users(store, ["mg-ann", "mg-ben", "mg-cat", "mg-dan"])
        .await;
    let ghost = fx.name("mg-ghost");
    for (user, id) in [(&ann, 1), (&ann, 2), (&ben, 1), (&cat, 1), (&cat, 2)] {
        device(store, fx, user, id).await;
    }

    // Leaves listed twice are stored once; leaves come back sorted.
    let team = new_group(
        fx,
        "team",
        &[leaf(&ben, 1), leaf(&ann, 2), leaf(&ann, 1), leaf(&ben, 1)],
    );
    store.create_mls_group(&team).await.unwrap();
    assert_eq!(
        store.mls_group(&team.id).await.unwrap(),
        Some(record(&team))
    );
    assert_eq!(
        store.mls_members(&team.id).await.unwrap(),
        [leaf(&ann, 1), leaf(&ann, 2), leaf(&ben, 1)]
    );
    let empty = new_group(fx, "empty", &[]);
    store.create_mls_group(&empty).await.unwrap();
    assert_eq!(store.mls_members(&empty.id).await.unwrap(), []);

    // Refusals create nothing.
    let refusals: [(&str, NewMlsGroup); 7] = [
        (
            "existing id",
            NewMlsGroup {
                id: team.id,
                ..new_group(fx, "again", &[])
            },
        ),
        (
            "unknown device",
            new_group(fx, "ghostly", &[leaf(&ann, 1), leaf(&ben, 2)]),
        ),
        ("unknown user", new_group(fx, "haunted", &[leaf(&ghost, 1)])),
        (
            "oversized state",
            NewMlsGroup {
                state: vec![0; limits::MAX_GROUP_STATE + 1],
                ..new_group(fx, "big", &[leaf(&ann, 1)])
            },
        ),
        (
            "oversized group info",
            NewMlsGroup {
                group_info: vec![0; limits::MAX_GROUP_STATE + 1],
                ..new_group(fx, "big info", &[leaf(&ann, 1)])
            },
        ),
        (
            "too many leaves",
            new_group(
                fx,
                "crowd",
                &(0..=limits::MAX_GROUP_LEAVES as u64)
                    .map(|i| leaf(&ann, i))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "epoch out of range",
            NewMlsGroup {
                epoch: u64::MAX,
                ..new_group(fx, "late", &[leaf(&ann, 1)])
            },
        ),
    ];
    for (case, group) in &refusals {
        let result = store.create_mls_group(group).await;
        let expected = match *case {
            "existing id" => matches!(
                result,
                Err(StorageError::AlreadyExists { what: "mls group" })
            ),
            "unknown device" | "unknown user" => {
                matches!(result, Err(StorageError::NotFound { what: "device" }))
            }
            "epoch out of range" => matches!(result, Err(StorageError::Conflict { .. })),
            _ => matches!(result, Err(StorageError::TooLarge { .. })),
        };
        assert!(expected, "{case}: unexpected {result:?}");
        if group.id != team.id {
            assert_eq!(store.mls_group(&group.id).await.unwrap(), None, "{case}");
        }
    }
    assert_eq!(snapshot(store, &team.id).await.0, record(&team));
    let unknown = fx.group_id();
    assert_eq!(store.mls_group(&unknown).await.unwrap(), None);
    assert_err!(
        store.mls_members(&unknown).await,
        StorageError::NotFound { what: "mls group" }
    );

    // Listing: each group once however many of the user's devices are leaves, by id.
    let mut anns = vec![team.id];
    for i in 0..3 {
        let group = new_group(fx, &format!("more {i}"), &[leaf(&ann, 2), leaf(&cat, 1)]);
        store.create_mls_group(&group).await.unwrap();
        anns.push(group.id);
    }
    anns.sort_unstable();
    let listed: Vec<GroupId> = all_groups(store, &ann).await.iter().map(|g| g.id).collect();
    assert_eq!(listed, anns);
    assert_eq!(
        all_groups(store, &ben).await,
        [MlsGroupSummary {
            id: team.id,
            name: team.name.clone(),
            epoch: 0
        }]
    );
    assert_eq!(all_groups(store, &dan).await, []);
    assert_eq!(all_groups(store, &ghost).await, []);
    let first = store.mls_groups_of(&ann, None, 1).await.unwrap();
    assert_eq!((first.items.len(), first.more, first.total), (1, true, 4));
    let rest = store
        .mls_groups_of(&ann, Some(&first.items[0].id), 10)
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.more, rest.total), (3, false, 4));

    // A commit: new name, state and leaves; the key package it used is spent; the device it
    // adds gets its Welcome and starts reading the log after the commit.
    let cats = key_package(fx, false);
    store
        .put_key_packages(&cat, DeviceId(1), std::slice::from_ref(&cats))
        .await
        .unwrap();
    assert_eq!(store.take_key_packages(&cat).await.unwrap().len(), 1);
    let renamed = fx.group_name("team renamed");
    let first_change = with_change(commit(fx, &record(&team), &leaf(&ann, 1), "first"), |c| {
        c.name = renamed.clone();
        c.added = vec![leaf(&cat, 1), leaf(&ann, 1)];
        c.removed = vec![leaf(&ben, 1), leaf(&dan, 5)];
        c.used_key_packages = vec![cats.kp_ref.clone()];
        c.welcomes = vec![(cat.clone(), DeviceId(1), b"welcome cat".to_vec())];
    });
    assert_eq!(
        append_one(store, &first_change).await,
        Appended::Stored { seq: 1 }
    );
    let at_one = after(&record(&team), &first_change, 1);
    assert_eq!(
        (at_one.name.clone(), at_one.epoch, at_one.state_version),
        (renamed.clone(), 1, 1)
    );
    let before = (
        at_one.clone(),
        vec![leaf(&ann, 1), leaf(&ann, 2), leaf(&cat, 1)],
    );
    assert_eq!(snapshot(store, &team.id).await, before);
    assert_eq!(all_groups(store, &ben).await, []);
    assert_eq!(
        all_groups(store, &cat)
            .await
            .iter()
            .find(|g| g.id == team.id),
        Some(&MlsGroupSummary {
            id: team.id,
            name: renamed.clone(),
            epoch: 1
        })
    );
    let welcomes = store.mls_welcomes(&cat, DeviceId(1), 10).await.unwrap();
    assert_eq!(welcomes.len(), 1);
    assert_eq!(
        (
            welcomes[0].group,
            welcomes[0].body.as_slice(),
            welcomes[0].at
        ),
        (team.id, b"welcome cat".as_slice(), fx.now + DAY)
    );
    let unread = store
        .mls_unread(&cat, DeviceId(1), None, 100)
        .await
        .unwrap();
    assert!(
        !unread.items.iter().any(|u| u.group == team.id),
        "an added device starts after its commit"
    );
    assert_err!(
        store
            .put_key_packages(&cat, DeviceId(1), std::slice::from_ref(&cats))
            .await,
        StorageError::AlreadyExists {
            what: "key package"
        }
    );

    // Refused changes change nothing: not the group, not its leaves or log, not the spent
    // references (the fresh one below is still free afterwards), no Welcome.
    let fresh = key_package(fx, false);
    let at = |edit: fn(&mut MlsEntry, &mut MlsChange)| {
        let mut entry = commit(fx, &at_one, &leaf(&ann, 1), "refused");
        let mut change = entry.change.take().expect("change");
        change.used_key_packages = vec![fresh.kp_ref.clone()];
        change.added = vec![leaf(&ben, 1)];
        change.welcomes = vec![(ben.clone(), DeviceId(1), b"welcome ben".to_vec())];
        edit(&mut entry, &mut change);
        entry.change = Some(change);
        entry
    };
    type Expect = fn(&crate::Result<Vec<Appended>>) -> bool;
    let conflict: Expect = |r| {
        matches!(
            r.as_deref(),
            Ok([Appended::Conflict {
                state_version: 1,
                epoch: 1
            }])
        )
    };
    let too_large: Expect = |r| matches!(r, Err(StorageError::TooLarge { .. }));
    let malformed: Expect = |r| matches!(r, Err(StorageError::Conflict { .. }));
    let no_device: Expect = |r| matches!(r, Err(StorageError::NotFound { what: "device" }));
    let reused: Expect = |r| matches!(r.as_deref(), Ok([Appended::KeyPackageReused(_)]));
    let spent_ref = cats.kp_ref.clone();
    let refused: Vec<(&str, MlsEntry, Expect)> = vec![
        ("stale version", at(|_, c| c.state_version = 0), conflict),
        ("future version", at(|_, c| c.state_version = 2), conflict),
        (
            "wrong epoch",
            at(|e, c| {
                e.epoch = 0;
                c.epoch = 1;
            }),
            |r| matches!(r.as_deref(), Ok([Appended::WrongEpoch { current: 1 }])),
        ),
        (
            "sender not a leaf",
            at(|e, c| {
                e.sender.1 = DeviceId(7);
                c.added.clear();
            }),
            |r| matches!(r.as_deref(), Ok([Appended::NotMember])),
        ),
        (
            "spent key package",
            {
                let mut entry = at(|_, _| {});
                let change = entry.change.as_mut().expect("change");
                change.used_key_packages.push(spent_ref.clone());
                entry
            },
            reused,
        ),
        (
            "key package listed twice",
            at(|_, c| c.used_key_packages.push(c.used_key_packages[0].clone())),
            reused,
        ),
        (
            "unknown device",
            at(|_, c| c.added.push((c.added[0].0.clone(), DeviceId(99)))),
            no_device,
        ),
        (
            "unknown welcomed device",
            at(|_, c| c.welcomes[0].1 = DeviceId(99)),
            no_device,
        ),
        (
            "oversized state",
            at(|_, c| c.state = vec![0; limits::MAX_GROUP_STATE + 1]),
            too_large,
        ),
        (
            "oversized group info",
            at(|_, c| c.group_info = vec![0; limits::MAX_GROUP_STATE + 1]),
            too_large,
        ),
        (
            "oversized welcome",
            at(|_, c| c.welcomes[0].2 = vec![0; limits::MAX_WELCOME + 1]),
            too_large,
        ),
        (
            "oversized body",
            at(|e, _| e.body = vec![0; limits::MAX_SEALED + 1]),
            too_large,
        ),
        (
            "too many added leaves",
            at(|e, c| {
                c.added = (0..=limits::MAX_GROUP_LEAVES as u64)
                    .map(|i| (e.sender.0.clone(), DeviceId(i)))
                    .collect()
            }),
            too_large,
        ),
        (
            "too many references",
            at(|_, c| {
                c.used_key_packages = (0..=limits::MAX_GROUP_LEAVES)
                    .map(|i| i.to_be_bytes().to_vec())
                    .collect()
            }),
            too_large,
        ),
        (
            "commit that stays in its epoch",
            at(|e, c| c.epoch = e.epoch),
            malformed,
        ),
        (
            "proposal that moves the epoch",
            at(|e, _| e.kind = MlsKind::Proposal),
            malformed,
        ),
        (
            "application message with a change",
            at(|e, _| e.kind = MlsKind::Application),
            malformed,
        ),
        (
            "commit without a change",
            {
                let mut entry = at(|_, _| {});
                entry.change = None;
                entry
            },
            malformed,
        ),
        (
            "epoch out of range",
            at(|e, c| {
                e.epoch = u64::MAX - 1;
                c.epoch = u64::MAX;
            }),
            malformed,
        ),
        (
            "version out of range",
            at(|_, c| c.state_version = u64::MAX),
            malformed,
        ),
    ];
    for (case, entry, expect) in &refused {
        let result = store
            .append_mls(std::slice::from_ref(entry), u64::MAX)
            .await;
        assert!(expect(&result), "{case}: unexpected {result:?}");
        assert_eq!(snapshot(store, &team.id).await, before, "{case}");
        assert_eq!(
            store.mls_welcomes(&ben, DeviceId(1), 10).await.unwrap(),
            [],
            "{case}"
        );
    }
    let (_, spent, _) = refused
        .iter()
        .find(|(case, ..)| *case == "spent key package")
        .expect("case");
    assert_eq!(
        append_one(store, spent).await,
        Appended::KeyPackageReused(cats.kp_ref.clone()),
        "the reused reference is named"
    );
    let mut elsewhere = at(|_, _| {});
    elsewhere.group = unknown;
    assert_eq!(append_one(store, &elsewhere).await, Appended::NotFound);
    store
        .put_key_packages(&ben, DeviceId(1), std::slice::from_ref(&fresh))
        .await
        .expect("a refused change spent nothing");

    // A package used while still stored is spent and never handed out; a last-resort
    // package serves any number of changes and stays. Removing and adding one device in one
    // change: removals go first, so the leaf stays (its cursor starts again).
    let bens_last = key_package(fx, true);
    store
        .put_key_packages(&ben, DeviceId(1), std::slice::from_ref(&bens_last))
        .await
        .unwrap();
    let mut now = at_one.clone();
    for used in [&fresh.kp_ref, &bens_last.kp_ref, &bens_last.kp_ref] {
        let change = with_change(commit(fx, &now, &leaf(&ann, 1), "re-add"), |c| {
            c.added = vec![leaf(&ben, 1)];
            c.removed = vec![leaf(&ben, 1)];
            c.used_key_packages = vec![used.clone()];
        });
        let seq = now.last_seq + 1;
        assert_eq!(
            append_one(store, &change).await,
            Appended::Stored { seq },
            "version {}",
            now.state_version
        );
        now = after(&now, &change, seq);
    }
    assert_eq!(snapshot(store, &team.id).await.0, now);
    assert_eq!(store.key_package_count(&ben, DeviceId(1)).await.unwrap(), 0);
    assert_eq!(
        store.take_key_packages(&ben).await.unwrap(),
        [handed_out(1, &bens_last)]
    );
    assert!(
        store
            .mls_members(&team.id)
            .await
            .unwrap()
            .contains(&leaf(&ben, 1))
    );
    // Removing a non-leaf and adding a leaf change nothing of the leaves.
    let noop = with_change(commit(fx, &now, &leaf(&ann, 1), "noop"), |c| {
        c.added = vec![leaf(&ann, 1)];
        c.removed = vec![leaf(&cat, 2)];
    });
    let leaves = store.mls_members(&team.id).await.unwrap();
    assert!(matches!(
        append_one(store, &noop).await,
        Appended::Stored { .. }
    ));
    assert_eq!(store.mls_members(&team.id).await.unwrap(), leaves);
    now = after(&now, &noop, now.last_seq + 1);
    let roomy = with_change(commit(fx, &now, &leaf(&ann, 1), "roomy"), |c| {
        c.state = vec![1; limits::MAX_GROUP_STATE];
        c.group_info = vec![2; limits::MAX_GROUP_STATE];
    });
    assert!(
        matches!(append_one(store, &roomy).await, Appended::Stored { .. }),
        "state and group info at their limits"
    );
    let stored = store.mls_group(&team.id).await.unwrap().unwrap();
    let change = roomy.change.expect("change");
    assert_eq!(
        (stored.state, stored.group_info),
        (change.state, change.group_info)
    );
}

/// put_device_state and device_state: upserts and deletes, byte order, pages.
pub(super) async fn device_state(store: &impl Storage, fx: &Fixture) {
    let [ann, ben] = fx.users(store, ["ms-ann", "ms-ben"]).await;
    let ghost = fx.name("ms-ghost");
    device(store, fx, &ann, 1).await;
    device(store, fx, &ann, 2).await;
    assert_eq!(all_state(store, &ann, 1, 10).await, []);

    let entry = |name: &[u8], value: &str| (name.to_vec(), Some(value.as_bytes().to_vec()));
    store
        .put_device_state(
            &ann,
            DeviceId(1),
            &[
                entry(&[2], "two"),
                entry(&[0, 0xff], "zero ff"),
                entry(&[], "empty"),
                entry(&[1], "one"),
                entry(&[0xff], "ff"),
            ],
        )
        .await
        .unwrap();
    let expect = |pairs: &[(&[u8], &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_vec(), value.as_bytes().to_vec()))
            .collect()
    };
    let sorted = expect(&[
        (&[], "empty"),
        (&[0, 0xff], "zero ff"),
        (&[1], "one"),
        (&[2], "two"),
        (&[0xff], "ff"),
    ]);
    for limit in [1, 2, 10] {
        assert_eq!(
            all_state(store, &ann, 1, limit).await,
            sorted,
            "limit {limit}"
        );
    }
    let after_empty = store
        .device_state(&ann, DeviceId(1), Some(&[]), 10)
        .await
        .unwrap();
    assert_eq!(after_empty.items, sorted[1..], "after the empty entry");
    let none = store
        .device_state(&ann, DeviceId(1), None, 0)
        .await
        .unwrap();
    assert_eq!((none.items.len(), none.more, none.total), (0, true, 5));
    assert_eq!(all_state(store, &ann, 2, 10).await, [], "per device");

    // Replace, delete (also what is not there), and the last listing of an entry wins.
    store
        .put_device_state(
            &ann,
            DeviceId(1),
            &[
                entry(&[1], "uno"),
                (vec![2], None),
                (vec![9], None),
                entry(&[3], "three"),
                (vec![3], None),
                (vec![0xff], None),
                entry(&[0xff], "FF"),
            ],
        )
        .await
        .unwrap();
    let changed = expect(&[
        (&[], "empty"),
        (&[0, 0xff], "zero ff"),
        (&[1], "uno"),
        (&[0xff], "FF"),
    ]);
    assert_eq!(all_state(store, &ann, 1, 3).await, changed);

    // Refusals write nothing of their batch.
    let roomy_name = vec![7; limits::MAX_STATE_KEY];
    let refusals: [(&str, Vec<StateWrite>); 2] = [
        (
            "state entry name",
            vec![
                entry(&[1], "lost"),
                (vec![7; limits::MAX_STATE_KEY + 1], None),
            ],
        ),
        (
            "state entry",
            vec![
                (vec![], None),
                (
                    roomy_name.clone(),
                    Some(vec![0; limits::MAX_STATE_ENTRY + 1]),
                ),
            ],
        ),
    ];
    for (what, batch) in &refusals {
        let result = store.put_device_state(&ann, DeviceId(1), batch).await;
        assert!(
            matches!(result, Err(StorageError::TooLarge { what: w, .. }) if w == *what),
            "{what}: unexpected {result:?}"
        );
        assert_eq!(all_state(store, &ann, 1, 10).await, changed, "{what}");
    }
    for (user, id) in [(&ann, 3), (&ben, 1), (&ghost, 1)] {
        assert_err!(
            store
                .put_device_state(user, DeviceId(id), &[entry(&[1], "x")])
                .await,
            StorageError::NotFound { what: "device" }
        );
        assert_err!(
            store.put_device_state(user, DeviceId(id), &[]).await,
            StorageError::NotFound { what: "device" }
        );
        assert_err!(
            store.device_state(user, DeviceId(id), None, 10).await,
            StorageError::NotFound { what: "device" }
        );
    }

    // Pages stop at the byte budget (the first entry always fits): five full-size entries
    // come four and one, whatever the limit.
    let full: Vec<StateWrite> = (0..5u8)
        .map(|i| (vec![i], Some(vec![i; limits::MAX_STATE_ENTRY])))
        .chain([(roomy_name.clone(), Some(b"small".to_vec()))])
        .collect();
    store
        .put_device_state(&ann, DeviceId(2), &full)
        .await
        .expect("entries at their limits");
    let per_page = limits::MAX_STATE_PAGE_BYTES / limits::MAX_STATE_ENTRY;
    let first = store
        .device_state(&ann, DeviceId(2), None, 100)
        .await
        .unwrap();
    assert_eq!(
        (first.items.len(), first.more, first.total),
        (per_page, true, 6)
    );
    let all = all_state(store, &ann, 2, 100).await;
    let stored: Vec<(Vec<u8>, Vec<u8>)> = full
        .into_iter()
        .map(|(name, value)| (name, value.expect("value")))
        .collect();
    assert_eq!(all, stored);
}

/// Devices, and batches of key packages, each side tries to add in [`concurrent_mls`].
const ATTEMPTS_PER_SIDE: usize = 12;
/// Commits each side wins in [`concurrent_mls`].
const CHANGES_PER_SIDE: u64 = 20;
/// Key packages per device in the take race of [`concurrent_mls`].
const PACKAGES_PER_DEVICE: usize = 30;

/// Registers [`ATTEMPTS_PER_SIDE`] devices of `user` from id `base` on; returns each outcome.
async fn add_side(
    store: &impl Storage,
    fx: &Fixture,
    user: &UserName,
    base: u64,
) -> Vec<crate::Result<()>> {
    let mut outcomes = Vec::new();
    for i in 0..ATTEMPTS_PER_SIDE as u64 {
        outcomes.push(store.add_device(&new_device(fx, user, base + i)).await);
    }
    outcomes
}

/// Stores [`ATTEMPTS_PER_SIDE`] batches of ten key packages for `device`, each stored or
/// refused as full; returns how many packages were stored.
async fn put_side(
    store: &impl Storage,
    fx: &Fixture,
    user: &UserName,
    device: DeviceId,
    tag: &str,
) -> usize {
    let mut stored = 0;
    for _ in 0..ATTEMPTS_PER_SIDE {
        let batch: Vec<NewKeyPackage> = (0..10).map(|_| key_package(fx, false)).collect();
        match store.put_key_packages(user, device, &batch).await {
            Ok(()) => stored += batch.len(),
            Err(StorageError::Full { .. }) => {}
            Err(e) => panic!("{tag}: {e:?}"),
        }
    }
    stored
}

/// Commits to `group` until it has won [`CHANGES_PER_SIDE`] times, reading the group again
/// after each [`Appended::Conflict`]; returns the state versions it committed from.
async fn commit_side(
    store: &impl Storage,
    fx: &Fixture,
    group: &GroupId,
    sender: &Leaf,
    tag: &str,
) -> Vec<u64> {
    let mut won = Vec::new();
    while (won.len() as u64) < CHANGES_PER_SIDE {
        let now = store.mls_group(group).await.unwrap().expect("group");
        match append_one(store, &commit(fx, &now, sender, tag)).await {
            Appended::Stored { seq } => {
                assert_eq!(seq, now.last_seq + 1, "{tag}: seqs are gap-free");
                won.push(now.state_version);
            }
            Appended::Conflict { state_version, .. } => {
                assert!(
                    state_version > now.state_version,
                    "{tag}: the version went back"
                );
            }
            other => panic!("{tag}: {other:?}"),
        }
    }
    won
}

/// Takes `user`'s key packages until no device has any but a last-resort one; returns the
/// references of the others it got.
async fn take_side(store: &impl Storage, user: &UserName) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let taken = store.take_key_packages(user).await.expect("take");
        let before = got.len();
        got.extend(
            taken
                .into_iter()
                .filter(|p| !p.last_resort)
                .map(|p| p.kp_ref),
        );
        if got.len() == before {
            return got;
        }
    }
}

/// Two handles (the same store, or two on one database as two node processes would have)
/// race where MLS state must stay consistent: registering devices past the cap, storing key
/// packages past the cap, taking key packages, moving a group from one epoch, and spending
/// one key package in two groups. Every race has exactly the outcome one-at-a-time calls
/// would have had.
pub async fn concurrent_mls(first: &impl Storage, second: &impl Storage) {
    let fx = Fixture::new();
    let [ann, ben] = fx.users(first, ["cm-ann", "cm-ben"]).await;

    // Devices: the cap holds.
    let (a, b) = tokio::join!(
        add_side(first, &fx, &ann, 0),
        add_side(second, &fx, &ann, 100)
    );
    let added = a.iter().chain(&b).filter(|o| o.is_ok()).count();
    assert_eq!(added, limits::MAX_DEVICES_PER_USER, "devices registered");
    for outcome in a.iter().chain(&b) {
        assert!(
            matches!(outcome, Ok(()) | Err(StorageError::Full { .. })),
            "{outcome:?}"
        );
    }
    let devices = second.devices(&ann).await.unwrap();
    assert_eq!(devices.len(), limits::MAX_DEVICES_PER_USER);
    let (one, two) = (devices[0].device, devices[1].device);

    // Key packages: the cap holds.
    let (a, b) = tokio::join!(
        put_side(first, &fx, &ann, one, "a"),
        put_side(second, &fx, &ann, one, "b")
    );
    assert_eq!(a + b, limits::MAX_KEY_PACKAGES_PER_DEVICE);
    assert_eq!(
        first.key_package_count(&ann, one).await.unwrap(),
        limits::MAX_KEY_PACKAGES_PER_DEVICE as u64
    );

    // Taking: no package twice, none lost.
    let mut all: HashSet<Vec<u8>> = HashSet::new();
    for _ in 0..limits::MAX_KEY_PACKAGES_PER_DEVICE - PACKAGES_PER_DEVICE {
        // Trim device one to PACKAGES_PER_DEVICE and fill device two alike.
        let taken = first.take_key_packages(&ann).await.unwrap();
        assert_eq!(taken.len(), 1);
    }
    let batch: Vec<NewKeyPackage> = (0..PACKAGES_PER_DEVICE)
        .map(|_| key_package(&fx, false))
        .chain([key_package(&fx, true)])
        .collect();
    first.put_key_packages(&ann, two, &batch).await.unwrap();
    all.extend(
        batch
            .iter()
            .filter(|p| !p.last_resort)
            .map(|p| p.kp_ref.clone()),
    );
    let (a, b) = tokio::join!(take_side(first, &ann), take_side(second, &ann));
    let taken: Vec<&Vec<u8>> = a.iter().chain(&b).collect();
    let unique: HashSet<&Vec<u8>> = taken.iter().copied().collect();
    assert_eq!(
        unique.len(),
        taken.len(),
        "a key package was handed out twice"
    );
    assert_eq!(
        taken.len(),
        2 * PACKAGES_PER_DEVICE,
        "every package handed out"
    );
    assert!(all.iter().all(|r| unique.contains(r)));
    assert_eq!(first.key_package_count(&ann, one).await.unwrap(), 0);
    assert_eq!(first.key_package_count(&ann, two).await.unwrap(), 0);

    // One state version, two commits: exactly one is stored, the other is a Conflict.
    let group = new_group(&fx, "race", &[(ann.clone(), one)]);
    first.create_mls_group(&group).await.unwrap();
    let stored = record(&group);
    let sender = (ann.clone(), one);
    let (by_a, by_b) = (
        commit(&fx, &stored, &sender, "a"),
        commit(&fx, &stored, &sender, "b"),
    );
    let (a, b) = tokio::join!(append_one(first, &by_a), append_one(second, &by_b));
    let conflict = Appended::Conflict {
        state_version: 1,
        epoch: 1,
    };
    let winner = match (a, b) {
        (Appended::Stored { seq: 1 }, b) if b == conflict => &by_a,
        (a, Appended::Stored { seq: 1 }) if a == conflict => &by_b,
        other => panic!("racing commits: expected one Stored and one Conflict, got {other:?}"),
    };
    let at_one = after(&stored, winner, 1);
    assert_eq!(second.mls_group(&group.id).await.unwrap().unwrap(), at_one);
    let (a, b) = tokio::join!(
        commit_side(first, &fx, &group.id, &sender, "a"),
        commit_side(second, &fx, &group.id, &sender, "b"),
    );
    let mut won: Vec<u64> = a.into_iter().chain(b).collect();
    won.sort_unstable();
    assert_eq!(
        won,
        (1..1 + 2 * CHANGES_PER_SIDE).collect::<Vec<_>>(),
        "each state version won exactly once"
    );
    let end = first.mls_group(&group.id).await.unwrap().unwrap();
    assert_eq!(
        (end.epoch, end.state_version, end.last_seq),
        (
            1 + 2 * CHANGES_PER_SIDE,
            1 + 2 * CHANGES_PER_SIDE,
            1 + 2 * CHANGES_PER_SIDE
        )
    );

    // One key package, two groups: exactly one change spends it.
    let other = new_group(&fx, "other", &[(ann.clone(), two)]);
    second.create_mls_group(&other).await.unwrap();
    device(first, &fx, &ben, 1).await;
    let bens = key_package(&fx, false);
    first
        .put_key_packages(&ben, DeviceId(1), std::slice::from_ref(&bens))
        .await
        .unwrap();
    let adding_ben = |group: &MlsGroupRecord, sender: &Leaf| {
        with_change(commit(&fx, group, sender, "ben"), |c| {
            c.added = vec![leaf(&ben, 1)];
            c.used_key_packages = vec![bens.kp_ref.clone()];
        })
    };
    let (in_group, in_other) = (
        adding_ben(&end, &sender),
        adding_ben(&record(&other), &(ann.clone(), two)),
    );
    let (a, b) = tokio::join!(append_one(first, &in_group), append_one(second, &in_other));
    let loser = match (a, b) {
        (Appended::Stored { .. }, Appended::KeyPackageReused(r)) if r == bens.kp_ref => other.id,
        (Appended::KeyPackageReused(r), Appended::Stored { .. }) if r == bens.kp_ref => group.id,
        other => panic!("spending one package twice: {other:?}"),
    };
    assert!(
        !first
            .mls_members(&loser)
            .await
            .unwrap()
            .contains(&leaf(&ben, 1)),
        "the refused change added nobody"
    );
    assert_eq!(all_groups(second, &ben).await.len(), 1);
    assert_eq!(first.key_package_count(&ben, DeviceId(1)).await.unwrap(), 0);
}
