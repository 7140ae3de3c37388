//! The MLS decoders that meet untrusted bytes: the node's delivery service reading a message
//! against a real group's public state (`PublicState::read`, then the policy check), a
//! published key package (`check_key_package`), a stored public state (`from_bytes`, which an
//! operator could edit), and on the client a device receiving a log entry or a Welcome. (A
//! device's own state is only ever loaded after it authenticates: AES-GCM under a key from
//! the password, `quip_cli::e2e::StateKey`; openmls's in-memory store, which the client
//! uses, panics on values it cannot decode.)
//!
//! Input: one mode byte, then the bytes. Every refusal is a `Refusal`, never a panic, and
//! nothing a fuzzer can forge moves the group to another epoch.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use quip_mls::device::Device;
use quip_mls::ds::{Incoming, PublicState, check_key_package};
use quip_mls::policy::{Device as Leaf, GroupPolicy};
use quip_proto::ids::{DeviceId, GroupId, GroupName, UserName};

struct World {
    me: Leaf,
    key: Vec<u8>,
    state: PublicState,
    device: Device,
    group: GroupId,
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let user = quip_fuzz::user();
        let identity =
            quip_cli::e2e::Identity::generate(quip_cli::e2e::MIN_KEY_BITS).expect("an identity");
        let mut device = identity
            .enroll_device(user.clone(), DeviceId(1))
            .expect("a device");
        let group = GroupId([7; 16]);
        let policy = GroupPolicy::new(GroupName::new("fuzz").expect("name"), vec![user.clone()]);
        let created = device.create_group(group, &policy).expect("a group");
        let key = identity.public_keys().signing;
        let me = device.me().clone();
        let (state, _) = PublicState::create(
            &group,
            &created.group_info,
            &created.ratchet_tree,
            &me,
            &key,
        )
        .expect("the service takes the group");
        Mutex::new(World {
            me,
            key,
            state,
            device,
            group,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, bytes)) = data.split_first() else {
        return;
    };
    let mut world = world().lock().unwrap_or_else(|e| e.into_inner());
    let key = world.key.clone();
    let keys = |_: &UserName| Some(key.clone());
    let epoch = world.state.epoch();
    match mode % 4 {
        0 => {
            if let Ok(Incoming::Commit(pending)) = world.state.read(bytes, &world.me) {
                let _ = pending.check(keys);
            }
        }
        1 => {
            let me = world.me.clone();
            let _ = check_key_package(bytes, &me, &key);
        }
        2 => {
            let group = world.group;
            let _ = PublicState::from_bytes(&group, bytes);
        }
        _ => {
            let _ = world.device.receive(bytes, keys);
            let _ = world.device.join(bytes, keys);
        }
    }
    assert_eq!(
        world.state.epoch(),
        epoch,
        "forged bytes moved the group on"
    );
});
