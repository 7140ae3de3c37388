//! Accounts, devices and a delivery service in memory: the node's checks without the node.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::OnceLock;

use quip_mls::Refusal;
use quip_mls::device::{Device, Outgoing, Received};
use quip_mls::ds::{Accepted, Incoming, PublicState};
use quip_mls::policy::{Device as Leaf, GroupPolicy};
use quip_proto::ids::{DeviceId, GroupId, GroupName, UserName};
use rsa::PrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::sha2::Sha256;

/// A user's account key (RSA-2048 in tests), made once per test binary.
pub struct Account {
    pub user: UserName,
    key: PrivateKey,
    pub spki: Vec<u8>,
}

impl Account {
    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.key.pss_sign::<Sha256>(bytes).expect("sign")
    }

    pub fn device(&self, id: u64) -> Device {
        Device::enroll(self.user.clone(), DeviceId(id), |b| {
            Ok::<_, std::convert::Infallible>(self.sign(b))
        })
        .expect("enroll")
    }
}

pub fn account(name: &str) -> &'static Account {
    static ACCOUNTS: OnceLock<std::sync::Mutex<HashMap<String, &'static Account>>> =
        OnceLock::new();
    let mut map = ACCOUNTS.get_or_init(Default::default).lock().unwrap();
    map.entry(name.to_string()).or_insert_with(|| {
        let key = PrivateKey::new(&mut rand::rng(), 2048).expect("generate");
        let spki = key.as_public_key().to_public_key_der().unwrap().into_vec();
        Box::leak(Box::new(Account {
            user: UserName::new(name).unwrap(),
            key,
            spki,
        }))
    })
}

/// Every account key, as the node has them registered (and clients have them pinned).
pub fn keys(user: &UserName) -> Option<Vec<u8>> {
    Some(account(user.as_str()).spki.clone())
}

pub fn leaf(d: &Device) -> Leaf {
    d.me().clone()
}

pub fn gid(n: u8) -> GroupId {
    GroupId([n; 16])
}

/// The delivery service for one group.
pub struct Ds {
    pub state: PublicState,
    pub id: GroupId,
}

impl Ds {
    /// `creator` makes a group named `name`; the service starts tracking it.
    pub fn create(creator: &mut Device, id: GroupId, name: &str) -> Ds {
        let policy = GroupPolicy::new(
            GroupName::new(name).unwrap(),
            vec![creator.me().user.clone()],
        );
        let created = creator.create_group(id, &policy).expect("create");
        let me = leaf(creator);
        let (state, got) = PublicState::create(
            &id,
            &created.group_info,
            &created.ratchet_tree,
            &me,
            &account(me.user.as_str()).spki,
        )
        .expect("the service accepts the new group");
        assert_eq!(got, policy);
        Ds { state, id }
    }

    /// A commit `from` a device: checked, then accepted with its group info.
    pub fn commit(&mut self, out: &Outgoing, from: &Leaf) -> Result<Accepted, Refusal> {
        match self.state.read(&out.commit, from)? {
            Incoming::Commit(pending) => {
                let checked = pending.check(keys)?;
                self.state.accept_commit(checked, &out.group_info)
            }
            other => panic!("not a commit: {other:?}"),
        }
    }

    /// An application message or proposal `from` a device.
    pub fn message(&mut self, bytes: &[u8], from: &Leaf) -> Result<(), Refusal> {
        match self.state.read(bytes, from)? {
            Incoming::Application => Ok(()),
            Incoming::Proposal(p) => self.state.accept_proposal(*p),
            Incoming::Commit(_) => panic!("a commit"),
        }
    }
}

/// A device's commit through the service; the device confirms it once accepted.
pub fn commit(ds: &mut Ds, device: &mut Device, out: &Outgoing) -> Accepted {
    let accepted = ds
        .commit(out, &leaf(device))
        .expect("the service accepts the commit");
    device.confirm(&ds.id).expect("confirm");
    accepted
}

/// Adds `new` devices' key packages (one each) by `by`, welcomes them, and has `others`
/// process the commit.
pub fn add(ds: &mut Ds, by: &mut Device, new: &mut [&mut Device], others: &mut [&mut Device]) {
    let packages: Vec<Vec<u8>> = new
        .iter()
        .map(|d| d.key_packages(1, false).unwrap().remove(0).1)
        .collect();
    let checked = by
        .check_key_packages(&packages, keys)
        .expect("key packages verify");
    let out = by.add(&ds.id, checked).expect("add");
    commit(ds, by, &out);
    let welcome = out.welcome.expect("a welcome");
    for d in new.iter_mut() {
        d.join(&welcome, keys).unwrap().expect("keys known");
    }
    for d in others.iter_mut() {
        receive(d, &out.commit);
    }
}

pub fn receive(d: &mut Device, bytes: &[u8]) -> Received {
    match d.receive(bytes, keys).expect("received") {
        Received::NeedKeys(users) => panic!("needs keys of {users:?}"),
        r => r,
    }
}

pub fn text(d: &mut Device, bytes: &[u8]) -> (Leaf, Vec<u8>) {
    match receive(d, bytes) {
        Received::Message { from, bytes, .. } => (from, bytes),
        other => panic!("not a message: {other:?}"),
    }
}
