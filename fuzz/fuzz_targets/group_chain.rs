//! The group-change checks: a chain of stored links (`SignedChange::from_bytes`) run through
//! the membership state machine (`Membership::genesis`, then `check`/`apply` per link), as
//! the node does for each change and every client does for the whole chain.
//!
//! Input: frames (`u32` length + body), each body one stored link. Properties: `check` and
//! `apply` agree; a refused change leaves the state untouched; an applied one moves the
//! epoch to the change's; a group with members always has an admin and never more than
//! `MAX_GROUP_MEMBERS`. The `prev` hashes are not required to match (a client refuses such a
//! chain before the rules), so mutated chains still reach the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_proto::SignedChange;
use quip_proto::frame::{self, PREFIX_LEN};
use quip_proto::group::{MemberRole, Membership};
use quip_proto::limits::{MAX_FRAME, MAX_GROUP_MEMBERS};

fn links(mut data: &[u8]) -> impl Iterator<Item = SignedChange> {
    std::iter::from_fn(move || {
        let total = frame::check(data, MAX_FRAME).ok()??;
        let body = &data[PREFIX_LEN..total];
        data = &data[total..];
        // A link that does not decode ends the chain, as it would for a client.
        SignedChange::from_bytes(body).ok()
    })
}

fn invariants(state: &Membership) {
    assert!(state.members.len() <= MAX_GROUP_MEMBERS);
    let admins = state
        .members
        .values()
        .filter(|r| **r == MemberRole::Admin)
        .count();
    assert!(
        state.members.is_empty() || admins > 0,
        "a group with members is never left without an admin: {state:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut chain = links(data);
    let Some(genesis) = chain.next() else {
        return;
    };
    let Ok(mut state) = Membership::genesis(&genesis.change) else {
        return;
    };
    assert_eq!(state.epoch, 0);
    assert!(state.is_admin(&genesis.change.author));
    invariants(&state);
    for link in chain {
        let checked = state.check(&link.change);
        let before = state.clone();
        let applied = state.apply(&link.change);
        assert_eq!(checked, applied, "check and apply agree");
        match applied {
            Ok(()) => assert_eq!(state.epoch, link.change.epoch),
            Err(_) => assert_eq!(state, before, "a refused change changes nothing"),
        }
        invariants(&state);
    }
});
