//! Group announcements through a real master: one frame per destination node listing only
//! its users, never back to the origin, nothing for users connected nowhere else, and size
//! limits enforced.

mod common;

use std::time::Duration;

use common::{FakeNode, TestMaster, sorted, user};
use quip_proto::ids::{GroupId, UserName};
use quip_proto::limits::MAX_GROUP_MEMBERS;
use quip_proto::{Action, Change, ErrorCode, MasterToNode, NodeToMaster, SignedChange};

async fn patient_master() -> TestMaster {
    TestMaster::start_with(|c| c.dead_after = Duration::from_secs(60)).await
}

fn signed(epoch: u64, action: Action) -> SignedChange {
    SignedChange {
        change: Change {
            group: GroupId([3; 16]),
            epoch,
            prev: [epoch as u8; 32],
            author: user("alice"),
            action,
            at_ms: 1,
        },
        signature: vec![9; 256],
    }
}

fn users(names: &[&str]) -> Vec<UserName> {
    names.iter().map(|n| user(n)).collect()
}

/// The next announcement: its users (sorted) and change.
async fn announced(node: &mut FakeNode) -> (Vec<String>, SignedChange) {
    match node.recv().await {
        Some(MasterToNode::Announce { users, change }) => (sorted(&users), change),
        other => panic!("{} expected an announcement, got {other:?}", node.name),
    }
}

#[tokio::test]
async fn an_announcement_reaches_only_the_nodes_of_its_users_with_only_their_users() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice", "amy"]).await;
    let mut b = master.node("node-b", &["bob", "bea"]).await;
    let mut c = master.node("node-c", &["cat", "amy"]).await;
    let mut d = master.node("node-d", &["dan"]).await;
    let change = signed(4, Action::Add(user("cat")));
    a.send(NodeToMaster::Announce {
        users: users(&["alice", "amy", "bob", "cat", "zed", "bob"]),
        change: change.clone(),
    })
    .await;
    assert_eq!(
        announced(&mut b).await,
        (vec!["bob".into()], change.clone())
    );
    assert_eq!(
        announced(&mut c).await,
        (vec!["amy".into(), "cat".into()], change.clone()),
        "amy is on a as well, and on c"
    );
    b.expect_nothing().await;
    c.expect_nothing().await;
    d.expect_nothing().await;
    a.expect_nothing().await;
}

#[tokio::test]
async fn an_announcement_for_users_connected_nowhere_else_goes_nowhere() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["bob"]).await;
    a.send(NodeToMaster::Announce {
        users: users(&["alice", "zed"]),
        change: signed(1, Action::Remove(user("zed"))),
    })
    .await;
    a.sync().await;
    a.expect_nothing().await;
    b.expect_nothing().await;
}

#[tokio::test]
async fn an_oversized_announcement_is_refused_and_the_session_goes_on() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["bob"]).await;
    let crowd: Vec<UserName> = (0..=MAX_GROUP_MEMBERS)
        .map(|i| user(&format!("member{i}")))
        .collect();
    a.send(NodeToMaster::Announce {
        users: crowd,
        change: signed(2, Action::Leave),
    })
    .await;
    let answer = a.recv().await;
    assert!(
        matches!(&answer, Some(MasterToNode::Error { code: ErrorCode::TooLarge, message }) if message.contains("users")),
        "{answer:?}"
    );
    let mut bad = signed(3, Action::Leave);
    bad.signature = vec![0; quip_proto::limits::MAX_SIGNATURE + 1];
    a.send(NodeToMaster::Announce {
        users: users(&["bob"]),
        change: bad,
    })
    .await;
    let answer = a.recv().await;
    assert!(
        matches!(
            &answer,
            Some(MasterToNode::Error {
                code: ErrorCode::TooLarge,
                ..
            })
        ),
        "{answer:?}"
    );
    b.expect_nothing().await;
    // Still registered: a good one goes through.
    let change = signed(4, Action::Promote(user("bob")));
    a.send(NodeToMaster::Announce {
        users: users(&["bob"]),
        change: change.clone(),
    })
    .await;
    assert_eq!(announced(&mut b).await, (vec!["bob".into()], change));
}
