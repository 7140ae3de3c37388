//! MLS groups through the delivery service's checks: the honest flow, every attack the
//! issue names, forward secrecy and post-compromise security.

mod common;

use common::*;
use quip_mls::Refusal;
use quip_mls::device::{Device, Received};
use quip_mls::policy::{GroupPolicy, ONLY_ADMIN};
use quip_proto::ids::{DeviceId, GroupName};

/// alice (admin) with bob's two devices and carol, all talking.
fn four() -> (Ds, Device, Device, Device, Device) {
    let mut alice = account("alice").device(1);
    let mut bob1 = account("bob").device(1);
    let mut bob2 = account("bob").device(2);
    let mut carol = account("carol").device(1);
    let mut ds = Ds::create(&mut alice, gid(1), "friends");
    add(
        &mut ds,
        &mut alice,
        &mut [&mut bob1, &mut bob2, &mut carol],
        &mut [],
    );
    (ds, alice, bob1, bob2, carol)
}

#[test]
fn every_device_of_every_member_reads_every_message() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    assert_eq!(ds.state.devices().len(), 4);
    let m = alice.encrypt(&ds.id, b"hello all").unwrap();
    ds.message(&m, &leaf(&alice)).unwrap();
    for d in [&mut bob1, &mut bob2, &mut carol] {
        let (from, bytes) = text(d, &m);
        assert_eq!(from, leaf(&alice));
        assert_eq!(bytes, b"hello all");
    }
    // One ciphertext whatever the group size: the message carries no member list.
    assert!(m.len() < 200, "{} bytes", m.len());
    let reply = bob2.encrypt(&ds.id, b"hi from bob's laptop").unwrap();
    ds.message(&reply, &leaf(&bob2)).unwrap();
    assert_eq!(text(&mut alice, &reply).0, leaf(&bob2));
}

#[test]
fn a_non_admin_cannot_add_or_remove_others_but_can_add_and_remove_own_devices() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    // carol tries to add dave.
    let dave = account("dave").device(1);
    let kp = dave.key_packages(1, false).unwrap().remove(0).1;
    let checked = carol.check_key_packages(&[kp], keys).unwrap();
    let out = carol.add(&ds.id, checked).unwrap();
    assert_eq!(
        ds.commit(&out, &leaf(&carol)).unwrap_err(),
        Refusal::Policy(ONLY_ADMIN.into())
    );
    carol.discard(&ds.id).unwrap();
    // A hostile service forwards it anyway: every client refuses it too.
    let err = alice.receive(&out.commit, keys).unwrap_err();
    assert_eq!(err, Refusal::Policy(ONLY_ADMIN.into()));

    // carol tries to remove bob's laptop.
    let out = carol.remove(&ds.id, &[leaf(&bob2)]).unwrap();
    assert_eq!(
        ds.commit(&out, &leaf(&carol)).unwrap_err(),
        Refusal::Policy(ONLY_ADMIN.into())
    );
    carol.discard(&ds.id).unwrap();

    // bob removes his own laptop: allowed.
    let out = bob1.remove(&ds.id, &[leaf(&bob2)]).unwrap();
    let accepted = commit(&mut ds, &mut bob1, &out);
    assert_eq!(accepted.removed, vec![leaf(&bob2)]);
    for d in [&mut alice, &mut carol] {
        receive(d, &out.commit);
    }
    match receive(&mut bob2, &out.commit) {
        Received::Commit { removed_me, .. } => assert!(removed_me),
        other => panic!("{other:?}"),
    }
    // bob adds a new device of his own: allowed.
    let mut bob3 = account("bob").device(3);
    add(
        &mut ds,
        &mut bob1,
        &mut [&mut bob3],
        &mut [&mut alice, &mut carol],
    );
    let m = alice.encrypt(&ds.id, b"welcome, bob's phone").unwrap();
    ds.message(&m, &leaf(&alice)).unwrap();
    assert_eq!(text(&mut bob3, &m).1, b"welcome, bob's phone");
}

#[test]
fn a_device_not_signed_by_its_account_key_is_refused_by_the_service_and_by_clients() {
    let (mut ds, mut alice, _bob1, _bob2, mut carol) = four();
    // mallory's device claims to be bob's, signed by mallory's account key.
    let forged = Device::enroll(account("bob").user.clone(), DeviceId(66), |b| {
        Ok::<_, std::convert::Infallible>(account("mallory").sign(b))
    })
    .unwrap();
    let kp = forged.key_packages(1, false).unwrap().remove(0).1;
    // The client checks the key package against bob's pinned key and refuses.
    let err = alice
        .check_key_packages(std::slice::from_ref(&kp), keys)
        .unwrap_err();
    assert!(matches!(err, Refusal::Credential(_)), "{err:?}");
    // A client that skipped that (a hostile one) is refused by the service.
    let unchecked = mallory_reads(&kp);
    let out = alice.add(&ds.id, unchecked).unwrap();
    let err = ds.commit(&out, &leaf(&alice)).unwrap_err();
    assert!(matches!(err, Refusal::Credential(_)), "{err:?}");
    // And a hostile service that forwards it is refused by every client.
    let err = carol.receive(&out.commit, keys).unwrap_err();
    assert!(matches!(err, Refusal::Credential(_)), "{err:?}");
    alice.discard(&ds.id).unwrap();
    // The group carries on.
    let m = alice.encrypt(&ds.id, b"still here").unwrap();
    ds.message(&m, &leaf(&alice)).unwrap();
    assert_eq!(text(&mut carol, &m).1, b"still here");
}

/// Reads a key package the way a client that checks nothing would: against whatever key the
/// credential's own signer has.
fn mallory_reads(kp: &[u8]) -> Vec<openmls::prelude::KeyPackage> {
    let forged_keys = |_: &quip_proto::ids::UserName| Some(account("mallory").spki.clone());
    account("alice")
        .device(99)
        .check_key_packages(&[kp.to_vec()], forged_keys)
        .expect("verifies against mallory's key")
}

#[test]
fn a_removed_member_and_a_stranger_cannot_post_and_cannot_read() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let epoch_before = ds.state.epoch();
    let out = alice.remove(&ds.id, &[leaf(&carol)]).unwrap();
    commit(&mut ds, &mut alice, &out);
    for d in [&mut bob1, &mut bob2] {
        receive(d, &out.commit);
    }
    // carol never processed her removal: she still writes at the old epoch.
    let old = carol.encrypt(&ds.id, b"I am still here").unwrap();
    assert_eq!(
        ds.message(&old, &leaf(&carol)).unwrap_err(),
        Refusal::WrongEpoch {
            current: epoch_before + 1,
            got: epoch_before
        }
    );
    // A service rolled back, or one that forwards it anyway: clients cannot open it (the
    // old epoch's keys are gone).
    assert!(bob1.receive(&old, keys).is_err());
    // After processing her removal, carol is out: her group is gone.
    match receive(&mut carol, &out.commit) {
        Received::Commit { removed_me, .. } => assert!(removed_me),
        other => panic!("{other:?}"),
    }
    assert!(!carol.is_in(&ds.id));
    // New messages are unreadable to her, whatever the service does.
    let m = alice.encrypt(&ds.id, b"carol is gone").unwrap();
    ds.message(&m, &leaf(&alice)).unwrap();
    assert!(carol.receive(&m, keys).is_err());
    assert_eq!(text(&mut bob2, &m).1, b"carol is gone");

    // A stranger's device, naming the current epoch of a group it is not in.
    let mut dave = account("dave").device(1);
    let mut other = Ds::create(&mut dave, ds.id, "lookalike");
    let _ = &mut other;
    let forged = dave.encrypt(&ds.id, b"hi").unwrap();
    let err = ds.message(&forged, &leaf(&dave)).unwrap_err();
    assert!(
        matches!(err, Refusal::NotMember(_) | Refusal::WrongEpoch { .. }),
        "{err:?}"
    );
    // Posing as a member's device does not help: clients cannot open it.
    assert!(bob1.receive(&forged, keys).is_err());
}

#[test]
fn a_bogus_leave_is_refused_and_the_group_keeps_working() {
    let (mut ds, mut alice, mut bob1, _bob2, mut carol) = four();
    let good = carol.leave(&ds.id).unwrap();
    // A public message from a member ends with its signature (64 bytes and a length byte),
    // then the membership tag (32 bytes and a length byte).
    let n = good.len();
    let mut bad_signature = good.clone();
    bad_signature[n - 33 - 10] ^= 0x40;
    let err = ds.message(&bad_signature, &leaf(&carol)).unwrap_err();
    assert!(matches!(err, Refusal::Invalid(_)), "{err:?}");
    // Clients refuse it too, as they refuse a bad membership tag (which only members can
    // check: the service holds no group secret).
    assert!(alice.receive(&bad_signature, keys).is_err());
    let mut bad_tag = good.clone();
    bad_tag[n - 3] ^= 0x40;
    assert!(alice.receive(&bad_tag, keys).is_err());
    assert!(bob1.receive(&bad_tag, keys).is_err());
    let m = bob1.encrypt(&ds.id, b"still fine").unwrap();
    ds.message(&m, &leaf(&bob1)).unwrap();
    assert_eq!(text(&mut alice, &m).1, b"still fine");
    assert_eq!(text(&mut carol, &m).1, b"still fine");
}

#[test]
fn a_real_leave_is_committed_by_another_member() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let leave = carol.leave(&ds.id).unwrap();
    ds.message(&leave, &leaf(&carol)).unwrap();
    for d in [&mut alice, &mut bob1, &mut bob2] {
        assert!(matches!(receive(d, &leave), Received::Proposal { .. }));
    }
    // bob (not an admin) commits it: removing carol is her own wish.
    let out = bob1.commit_pending(&ds.id).unwrap();
    let accepted = commit(&mut ds, &mut bob1, &out);
    assert_eq!(accepted.removed, vec![leaf(&carol)]);
    for d in [&mut alice, &mut bob2] {
        receive(d, &out.commit);
    }
    assert_eq!(ds.state.devices().len(), 3);
}

#[test]
fn policy_changes_are_admin_only_and_keep_an_admin_in_the_group() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let name = GroupName::new("friends").unwrap();
    // carol makes herself admin: refused.
    let grab = GroupPolicy::new(name.clone(), vec![account("carol").user.clone()]);
    let out = carol.set_policy(&ds.id, &grab).unwrap();
    assert!(matches!(
        ds.commit(&out, &leaf(&carol)),
        Err(Refusal::Policy(_))
    ));
    carol.discard(&ds.id).unwrap();
    // alice hands admin to bob, then may leave.
    let handover = GroupPolicy::new(name, vec![account("bob").user.clone()]);
    let out = alice.set_policy(&ds.id, &handover).unwrap();
    commit(&mut ds, &mut alice, &out);
    for d in [&mut bob1, &mut bob2, &mut carol] {
        receive(d, &out.commit);
    }
    assert_eq!(bob1.policy(&ds.id).unwrap(), handover);
    // bob, now admin, removes carol; then cannot remove himself entirely while admin.
    let out = bob1.remove(&ds.id, &[leaf(&carol)]).unwrap();
    commit(&mut ds, &mut bob1, &out);
    receive(&mut alice, &out.commit);
    receive(&mut bob2, &out.commit);
    let out = bob2.remove(&ds.id, &[leaf(&bob1)]).unwrap();
    commit(&mut ds, &mut bob2, &out); // bob still has bob2
    receive(&mut alice, &out.commit);
    // alice (no longer admin) cannot remove bob's last device.
    let out = alice.remove(&ds.id, &[leaf(&bob2)]).unwrap();
    assert_eq!(
        ds.commit(&out, &leaf(&alice)).unwrap_err(),
        Refusal::Policy(ONLY_ADMIN.into())
    );
}

#[test]
fn concurrent_commits_one_wins_the_other_retries_on_the_new_epoch() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let a = alice.update(&ds.id).unwrap();
    let b = bob1.update(&ds.id).unwrap();
    commit(&mut ds, &mut alice, &a);
    let err = ds.commit(&b, &leaf(&bob1)).unwrap_err();
    assert!(matches!(err, Refusal::WrongEpoch { .. }), "{err:?}");
    bob1.discard(&ds.id).unwrap();
    for d in [&mut bob1, &mut bob2, &mut carol] {
        receive(d, &a.commit);
    }
    let b = bob1.update(&ds.id).unwrap();
    commit(&mut ds, &mut bob1, &b);
    for d in [&mut alice, &mut bob2, &mut carol] {
        receive(d, &b.commit);
    }
    let m = carol.encrypt(&ds.id, b"in sync").unwrap();
    ds.message(&m, &leaf(&carol)).unwrap();
    assert_eq!(text(&mut bob1, &m).1, b"in sync");
}

#[test]
fn forward_secrecy_a_state_taken_after_an_epoch_change_cannot_read_earlier_messages() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let early = alice.encrypt(&ds.id, b"before the change").unwrap();
    ds.message(&early, &leaf(&alice)).unwrap();
    assert_eq!(text(&mut bob1, &early).1, b"before the change");
    let out = carol.update(&ds.id).unwrap();
    commit(&mut ds, &mut carol, &out);
    for d in [&mut alice, &mut bob1, &mut bob2] {
        receive(d, &out.commit);
    }
    // An attacker takes bob's whole state now.
    let mut stolen = Device::restore(&bob1.export()).unwrap();
    assert!(
        stolen.receive(&early, keys).is_err(),
        "an earlier epoch's message opened"
    );
    // Even bob2, who never read it, lost the old epoch's keys with the change.
    assert!(bob2.receive(&early, keys).is_err());
    // The stolen copy works for the present (it is a full copy).
    let now = alice.encrypt(&ds.id, b"now").unwrap();
    assert_eq!(text(&mut stolen, &now).1, b"now");
}

#[test]
fn post_compromise_security_an_update_locks_out_an_old_copy() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let stolen_bytes = bob1.export();
    let out = bob1.update(&ds.id).unwrap();
    commit(&mut ds, &mut bob1, &out);
    for d in [&mut alice, &mut bob2, &mut carol] {
        receive(d, &out.commit);
    }
    let secret = alice.encrypt(&ds.id, b"after bob healed").unwrap();
    ds.message(&secret, &leaf(&alice)).unwrap();
    assert_eq!(text(&mut bob1, &secret).1, b"after bob healed");
    let mut stolen = Device::restore(&stolen_bytes).unwrap();
    // The copy cannot follow bob's update, nor read what came after it.
    assert!(stolen.receive(&out.commit, keys).is_err());
    assert!(stolen.receive(&secret, keys).is_err());
}

#[test]
fn a_users_new_device_joins_by_itself_a_stranger_cannot() {
    let (mut ds, mut alice, mut bob1, mut bob2, mut carol) = four();
    let mut bob3 = account("bob").device(3);
    let (id, out) = bob3
        .join_external(ds.state.group_info(), &ds.state.ratchet_tree())
        .unwrap();
    assert_eq!(id, ds.id);
    let accepted = ds
        .commit(&out, &leaf(&bob3))
        .expect("bob's own device may join");
    assert_eq!(accepted.joined, Some(leaf(&bob3)));
    for d in [&mut alice, &mut bob1, &mut bob2, &mut carol] {
        receive(d, &out.commit);
    }
    let m = carol.encrypt(&ds.id, b"hi bob3").unwrap();
    ds.message(&m, &leaf(&carol)).unwrap();
    assert_eq!(text(&mut bob3, &m).1, b"hi bob3");

    let mut dave = account("dave").device(1);
    let (_, out) = dave
        .join_external(ds.state.group_info(), &ds.state.ratchet_tree())
        .unwrap();
    let err = ds.commit(&out, &leaf(&dave)).unwrap_err();
    assert!(matches!(err, Refusal::Policy(_)), "{err:?}");
    // Clients refuse it too.
    assert!(matches!(
        alice.receive(&out.commit, keys),
        Err(Refusal::Policy(_))
    ));
}

#[test]
fn states_survive_a_round_trip_and_a_corrupt_one_is_an_error() {
    let (mut ds, mut alice, mut bob1, _bob2, _carol) = four();
    let bytes = ds.state.to_bytes();
    ds.state = quip_mls::ds::PublicState::from_bytes(&ds.id, &bytes).unwrap();
    let mut alice2 = Device::restore(&alice.export()).unwrap();
    let out = alice2.update(&ds.id).unwrap();
    commit(&mut ds, &mut alice2, &out);
    receive(&mut bob1, &out.commit);
    let m = alice2.encrypt(&ds.id, b"restored").unwrap();
    ds.message(&m, &leaf(&alice2)).unwrap();
    assert_eq!(text(&mut bob1, &m).1, b"restored");
    let _ = &mut alice;
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(quip_mls::ds::PublicState::from_bytes(&ds.id, &bytes[..cut]).is_err());
    }
    let exported = bob1.export();
    assert!(Device::restore(&exported[..exported.len() / 2]).is_err());
}

#[test]
fn a_stored_state_an_operator_edited_is_an_error_not_a_panic() {
    let (ds, ..) = four();
    let bytes = ds.state.to_bytes();
    type Record = (u8, Vec<u8>, Vec<u8>);
    let (records, info): (Vec<Record>, Vec<u8>) = postcard::from_bytes(&bytes).unwrap();
    for victim in 0..records.len() {
        for garbage in [&b"{"[..], b"[]", b"null", b"\"\"", b"[1,2,3]"] {
            let mut edited = records.clone();
            edited[victim].2 = garbage.to_vec();
            let edited = postcard::to_stdvec(&(edited, &info)).unwrap();
            // Never a panic; what does not decode is an error; what decodes but is not the
            // group's state fails the checks that use it.
            let loaded = quip_mls::ds::PublicState::from_bytes(&ds.id, &edited);
            if garbage == b"{" {
                assert!(loaded.is_err(), "record {victim}: broken JSON accepted");
            }
            if let Ok(state) = loaded {
                let _ = state.read(
                    &[0; 64],
                    &quip_mls::policy::Device {
                        user: account("alice").user.clone(),
                        device: quip_proto::ids::DeviceId(1),
                    },
                );
            }
        }
    }
}
