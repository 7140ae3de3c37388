//! Wire tests for every message type: property round trips, hex snapshots of one example of
//! each variant (so any change to the encoding is seen in review), and a decoder fed random
//! and mutated bytes that must never panic.

use std::collections::BTreeSet;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::GroupMember;
use crate::group::{GroupCursor, GroupSummary, MemberRole};
use crate::ids::{BlobId, DeviceId, GroupId, GroupName, MsgId, NodeName, SessionToken, UserName};
use crate::mls::{
    ClaimedKeyPackage, DeviceInfo, KeyPackageUpload, LogEntry, LogKind, MlsGroupSummary,
};
use crate::relay::{Load, NodeStatus, Relayed};
use crate::*;

/// Encodes a frame, decodes it back and checks equality.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(msg: &T) {
    let frame = frame::encode(msg).expect("examples fit in a frame");
    let (back, used) = frame::decode::<T>(&frame, limits::MAX_FRAME)
        .expect("decodes")
        .expect("whole frame");
    assert_eq!(used, frame.len());
    assert_eq!(&back, msg);
}

/// The variant name from the derived `Debug` output (`Signup { .. }` → `Signup`).
fn variant<T: Debug>(msg: &T) -> String {
    format!("{msg:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// One line per example: `Variant  <hex of the whole frame>`.
fn hex_lines<T: Serialize + Debug>(examples: &[T]) -> String {
    examples
        .iter()
        .map(|m| {
            format!(
                "{:<14} {}",
                variant(m),
                hex::encode(frame::encode(m).unwrap())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks that `examples` contain every variant proptest can generate (sampled with a fixed
/// seed), so a newly appended variant without an example fails here.
fn covers_all_variants<T: Arbitrary + Debug>(examples: &[T]) {
    let have: BTreeSet<String> = examples.iter().map(variant).collect();
    let mut runner = TestRunner::deterministic();
    let strategy = any::<T>();
    for _ in 0..2_000 {
        let sample = strategy.new_tree(&mut runner).unwrap().current();
        let name = variant(&sample);
        assert!(have.contains(&name), "no wire example for variant {name}");
    }
}

fn alice() -> UserName {
    UserName::new("alice").unwrap()
}
fn bob() -> UserName {
    UserName::new("bob").unwrap()
}
fn keys() -> PublicKeys {
    PublicKeys {
        encryption: vec![0xe1; 4],
        signing: vec![0x51; 4],
    }
}
fn sealed() -> Sealed {
    Sealed {
        header: Header {
            id: MsgId([0x11; 16]),
            sender: alice(),
            conversation: Conversation::Direct(bob()),
            kind: ContentKind::Text,
            sent_at_ms: 1_700_000_000_000,
            recipients: vec![alice(), bob()],
        },
        ciphertext: vec![0xc1; 6],
        signature: vec![0x5e; 4],
    }
}
fn wrapped(user: UserName) -> WrappedKey {
    WrappedKey {
        recipient: user,
        wrapped: vec![0x77; 4],
    }
}
fn envelope() -> Envelope {
    Envelope {
        sealed: sealed(),
        keys: vec![wrapped(alice()), wrapped(bob())],
    }
}
fn delivery() -> Delivery {
    Delivery {
        key: vec![0x77; 4],
        sealed: sealed(),
    }
}
fn change(action: Action, epoch: u64) -> SignedChange {
    SignedChange {
        change: Change {
            group: GroupId([0x22; 16]),
            epoch,
            prev: [epoch as u8; 32],
            author: alice(),
            action,
            at_ms: 1_700_000_000_000,
        },
        signature: vec![0x5e; 4],
    }
}
fn summary() -> GroupSummary {
    GroupSummary {
        id: GroupId([0x22; 16]),
        name: GroupName::new("Friends").unwrap(),
        creator: alice(),
        epoch: 1,
    }
}
fn load() -> Load {
    Load {
        clients: 12,
        pending: 1,
        msgs_per_sec: 340,
        max_clients: 50_000,
    }
}
fn relayed() -> Relayed {
    Relayed {
        sealed: sealed(),
        keys: vec![wrapped(bob())],
    }
}
fn node() -> NodeName {
    NodeName::new("node-1").unwrap()
}

fn client_to_node() -> Vec<ClientToNode> {
    use ClientToNode::*;
    vec![
        Signup {
            req: 1,
            user: alice(),
            secret: vec![0xaa; 4],
            keys: keys(),
            backup: vec![0xbb; 4],
        },
        Login {
            req: 2,
            user: alice(),
            secret: vec![0xaa; 4],
        },
        Resume {
            req: 3,
            token: SessionToken([0x70; 32]),
        },
        Logout { req: 4 },
        ListUsers {
            req: 5,
            after: Some(alice()),
            limit: 100,
        },
        FetchKeys {
            req: 6,
            user: bob(),
        },
        ReplaceKeys {
            req: 7,
            keys: keys(),
            backup: vec![0xbb; 4],
        },
        Send {
            req: 8,
            envelope: envelope(),
        },
        Ack {
            ids: vec![MsgId([0x11; 16])],
        },
        CreateGroup {
            req: 9,
            genesis: change(
                Action::Create {
                    name: GroupName::new("Friends").unwrap(),
                    members: vec![bob()],
                },
                0,
            ),
        },
        ChangeGroup {
            req: 10,
            change: change(Action::Add(bob()), 1),
        },
        ListGroups {
            req: 11,
            after: Some(GroupCursor::from(&summary())),
            limit: 100,
        },
        GroupInfo {
            req: 12,
            group: GroupId([0x22; 16]),
            from_epoch: 1,
        },
        FetchBlob {
            req: 13,
            msg: MsgId([0x11; 16]),
        },
        Ping { req: 14 },
        EnrollDevice {
            req: 15,
            device: DeviceId(0x0123_4567_89ab_cdef),
            credential: vec![0xc0; 4],
            signature_key: vec![0x5e; 4],
        },
        UseDevice {
            req: 16,
            device: DeviceId(7),
        },
        ListDevices { req: 17 },
        RemoveDevice {
            req: 18,
            device: DeviceId(7),
        },
        PublishKeyPackages {
            req: 19,
            packages: vec![KeyPackageUpload {
                reference: vec![0x4b; 4],
                data: vec![0xd0; 4],
                last_resort: false,
            }],
        },
        ClaimKeyPackages {
            req: 20,
            user: bob(),
        },
        CreateMlsGroup {
            req: 21,
            group: GroupId([0x33; 16]),
            group_info: vec![0x61; 4],
            ratchet_tree: vec![0x72; 4],
        },
        Handshake {
            req: 22,
            group: GroupId([0x33; 16]),
            id: MsgId([0x44; 16]),
            message: vec![0xc0; 4],
            group_info: Some(vec![0x61; 4]),
            welcome: Some(vec![0x77; 4]),
        },
        Post {
            req: 23,
            group: GroupId([0x33; 16]),
            id: MsgId([0x45; 16]),
            message: vec![0xa0; 4],
            blob: Some(BlobId([0x22; 16])),
        },
        GroupState {
            req: 24,
            group: GroupId([0x33; 16]),
            offset: 0,
        },
        ListMlsGroups {
            req: 25,
            after: Some(GroupId([0x33; 16])),
            limit: 100,
        },
        AckLog {
            entries: vec![(GroupId([0x33; 16]), 12)],
            welcomes: vec![3],
        },
        PutDeviceState {
            req: 26,
            entries: vec![(vec![0xe1; 4], Some(vec![0x5a; 4])), (vec![0xe2; 4], None)],
        },
        GetDeviceState {
            req: 27,
            device: DeviceId(7),
            after: Some(vec![0xe1; 4]),
        },
    ]
}

fn node_to_client() -> Vec<NodeToClient> {
    use NodeToClient::*;
    vec![
        LoggedIn {
            req: 1,
            user: alice(),
            token: SessionToken([0x70; 32]),
            expires_at_ms: 1_700_000_000_000,
            backup: vec![0xbb; 4],
            node: node(),
        },
        Done { req: 2 },
        Users {
            req: 3,
            users: vec![client::Presence {
                user: bob(),
                online: true,
            }],
            total: 2,
            more: true,
        },
        Keys {
            req: 4,
            user: bob(),
            keys: keys(),
        },
        Stored {
            req: 5,
            id: MsgId([0x11; 16]),
            fresh: true,
        },
        Deliver(delivery()),
        Presence(client::Presence {
            user: bob(),
            online: false,
        }),
        Groups {
            req: 6,
            groups: vec![summary()],
            total: 1,
            more: false,
        },
        Group {
            req: 7,
            summary: summary(),
            members: vec![GroupMember {
                user: alice(),
                role: MemberRole::Admin,
            }],
            chain: vec![change(Action::Promote(bob()), 1)],
            more: false,
        },
        GroupChanged {
            change: change(Action::Remove(bob()), 2),
        },
        Pong { req: 8 },
        Error {
            req: Some(9),
            code: ErrorCode::NotAdmin,
            message: "Only admin can add/remove partipants".into(),
            retry_after_ms: None,
        },
        Error {
            req: Some(10),
            code: ErrorCode::RateLimited,
            message: "too many requests".into(),
            retry_after_ms: Some(1500),
        },
        Reconnect {
            after_ms: 250,
            reason: "node draining".into(),
        },
        Expired {
            id: MsgId([7; 16]),
            recipient: bob(),
            expired_at_ms: 1_700_000_000_000,
        },
        Devices {
            req: 17,
            devices: vec![DeviceInfo {
                device: DeviceId(7),
                online: true,
                created_at_ms: 1_700_000_000_000,
                backed_up: true,
            }],
        },
        KeyPackages {
            req: 20,
            user: bob(),
            packages: vec![ClaimedKeyPackage {
                device: DeviceId(9),
                data: vec![0xd0; 4],
            }],
        },
        Appended {
            req: 22,
            group: GroupId([0x33; 16]),
            seq: 12,
            epoch: 3,
            fresh: true,
        },
        GroupState {
            req: 24,
            group: GroupId([0x33; 16]),
            epoch: 3,
            group_info: vec![0x61; 4],
            tree_len: 4,
            tree: vec![0x72; 4],
            last_seq: 12,
        },
        MlsGroups {
            req: 25,
            groups: vec![MlsGroupSummary {
                id: GroupId([0x33; 16]),
                name: GroupName::new("friends").unwrap(),
                epoch: 3,
            }],
            more: false,
        },
        Log {
            group: GroupId([0x33; 16]),
            entries: vec![LogEntry {
                seq: 12,
                id: MsgId([0x45; 16]),
                sender: alice(),
                device: DeviceId(7),
                kind: LogKind::Application,
                epoch: 3,
                body: vec![0xa0; 4],
                blob: Some((BlobId([0x22; 16]), 1234)),
                at_ms: 1_700_000_000_000,
            }],
        },
        Welcome {
            id: 3,
            group: GroupId([0x33; 16]),
            body: vec![0x77; 4],
        },
        DeviceState {
            req: 27,
            device: DeviceId(7),
            entries: vec![(vec![0xe1; 4], vec![0x5a; 4])],
            more: false,
        },
    ]
}

fn node_to_master() -> Vec<NodeToMaster> {
    use NodeToMaster::*;
    vec![
        Register {
            node: node(),
            client_addr: "127.0.0.1:7001".into(),
            load: load(),
            users: vec![alice()],
        },
        Heartbeat(load()),
        Online(vec![alice()]),
        Offline(vec![bob()]),
        Relay(relayed()),
        Draining,
        Announce {
            users: vec![bob()],
            change: change(Action::Add(bob()), 1),
        },
        LogAppended {
            users: vec![bob()],
            group: GroupId([0x33; 16]),
            seq: 12,
            frame: vec![0, 0, 0, 1, 0x1d],
        },
    ]
}

fn master_to_node() -> Vec<MasterToNode> {
    vec![
        MasterToNode::Registered { heartbeat_ms: 1000 },
        MasterToNode::Relay(relayed()),
        MasterToNode::Error {
            code: ErrorCode::NotRegistered,
            message: "register first".into(),
        },
        MasterToNode::Announce {
            users: vec![bob()],
            change: change(Action::Remove(bob()), 2),
        },
        MasterToNode::Presence {
            snapshot: true,
            online: vec![alice()],
            offline: vec![bob()],
        },
        MasterToNode::Missed { frames: 300 },
        MasterToNode::LogAppended {
            users: vec![bob()],
            group: GroupId([0x33; 16]),
            seq: 12,
            frame: vec![0, 0, 0, 1, 0x1d],
        },
    ]
}

fn client_to_master() -> Vec<ClientToMaster> {
    vec![ClientToMaster::Discover, ClientToMaster::Status]
}

fn master_to_client() -> Vec<MasterToClient> {
    vec![
        MasterToClient::Node {
            node: node(),
            addr: "127.0.0.1:7001".into(),
        },
        MasterToClient::NoService,
        MasterToClient::Status(vec![NodeStatus {
            node: node(),
            client_addr: "127.0.0.1:7001".into(),
            load: load(),
            healthy: true,
            last_seen_ms: 420,
        }]),
        MasterToClient::Error {
            code: ErrorCode::WrongService,
            message: "this is a master".into(),
            retry_after_ms: None,
        },
    ]
}

fn stream_open() -> Vec<StreamOpen> {
    vec![
        StreamOpen::Control(Hello::ours("quip/0.1.0")),
        StreamOpen::ImageUpload {
            req: 1,
            envelope: Envelope {
                sealed: Sealed {
                    header: Header {
                        kind: ContentKind::Image {
                            blob: BlobId([0x33; 16]),
                            len: 20_000_000,
                        },
                        ..sealed().header
                    },
                    ..sealed()
                },
                keys: vec![wrapped(alice()), wrapped(bob())],
            },
        },
        StreamOpen::ImageDownload {
            msg: MsgId([0x11; 16]),
            delivery: delivery(),
        },
        StreamOpen::RelayImage(relayed()),
    ]
}

fn chunks() -> Vec<Chunk> {
    vec![Chunk {
        data: vec![0xd0; 8],
    }]
}

macro_rules! wire_suite {
    ($($name:ident: $ty:ty = $examples:expr;)*) => {$(
        mod $name {
            use super::*;

            #[test]
            fn examples_cover_every_variant_and_round_trip() {
                let examples: Vec<$ty> = $examples;
                covers_all_variants(&examples);
                examples.iter().for_each(round_trip);
            }

            #[test]
            fn encoded_bytes_are_pinned() {
                insta::assert_snapshot!(hex_lines(&$examples));
            }

            proptest! {
                #[test]
                fn any_value_round_trips(msg in any::<$ty>()) {
                    round_trip(&msg);
                }
            }

            #[test]
            fn random_and_mutated_bytes_never_panic() {
                fuzz::<$ty>(&$examples);
            }
        }
    )*};
}

wire_suite! {
    client_to_node: ClientToNode = client_to_node();
    node_to_client: NodeToClient = node_to_client();
    node_to_master: NodeToMaster = node_to_master();
    master_to_node: MasterToNode = master_to_node();
    client_to_master: ClientToMaster = client_to_master();
    master_to_client: MasterToClient = master_to_client();
    stream_open: StreamOpen = stream_open();
    chunk: Chunk = chunks();
}

/// Random inputs per message type: half pure noise, half valid frames with bytes flipped,
/// cut or extended. Any result is fine except a panic. Seeded xorshift so runs repeat.
const FUZZ_INPUTS: usize = 100_000;

fn fuzz<T: DeserializeOwned + Serialize>(examples: &[T]) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let frames: Vec<Vec<u8>> = examples.iter().map(|m| frame::encode(m).unwrap()).collect();
    let mut decoded = 0usize;
    for i in 0..FUZZ_INPUTS {
        let input: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 96) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut bytes = frames[(next() as usize) % frames.len()].clone();
            for _ in 0..1 + next() % 4 {
                let r = next();
                match r % 3 {
                    0 if !bytes.is_empty() => {
                        let at = (r >> 8) as usize % bytes.len();
                        bytes[at] ^= (r >> 32) as u8 | 1;
                    }
                    1 => bytes.truncate((r >> 8) as usize % (bytes.len() + 1)),
                    _ => bytes.push((r >> 8) as u8),
                }
            }
            bytes
        };
        if let Ok(Some(_)) = frame::decode::<T>(&input, limits::MAX_FRAME) {
            decoded += 1;
        }
        let mut dec = frame::FrameDecoder::default();
        dec.push(&input);
        while let Ok(Some(_)) = dec.next_message::<T>() {}
    }
    // Mutations that keep a frame valid exist, but most must be refused.
    assert!(decoded < FUZZ_INPUTS, "the decoder accepted every input");
}

/// The largest page of each list answer fits in half a frame, so the node never has an
/// answer it cannot send.
#[test]
fn largest_pages_fit() {
    let longest_user = UserName::new(&"u".repeat(crate::ids::USER_NAME_MAX)).unwrap();
    let widest_group = GroupName::new(&"\u{1F600}".repeat(crate::ids::GROUP_NAME_MAX)).unwrap();
    let group = GroupSummary {
        id: GroupId([0xff; 16]),
        name: widest_group,
        creator: longest_user.clone(),
        epoch: u64::MAX,
    };
    let answers = [
        NodeToClient::Groups {
            req: u32::MAX,
            groups: vec![group.clone(); limits::MAX_LIST_PAGE],
            total: u64::MAX,
            more: true,
        },
        NodeToClient::Users {
            req: u32::MAX,
            users: vec![
                client::Presence {
                    user: longest_user.clone(),
                    online: true,
                };
                limits::MAX_LIST_PAGE
            ],
            total: u64::MAX,
            more: true,
        },
        NodeToClient::Group {
            req: u32::MAX,
            summary: group,
            members: vec![
                GroupMember {
                    user: longest_user,
                    role: MemberRole::Member,
                };
                limits::MAX_GROUP_MEMBERS
            ],
            chain: Vec::new(),
            more: true,
        },
    ];
    for answer in answers {
        let len = frame::encode(&answer).unwrap().len();
        assert!(len < limits::MAX_FRAME / 2, "{}: {len}", answer.kind());
    }
}
