//! Cluster-wide presence through a real master: each node gets a snapshot of the users on
//! the other nodes after it registers, then a change whenever a user arrives on another node
//! or is left on no node but it.

mod common;

use std::time::Duration;

use common::{TestMaster, change, snapshot, user};
use quip_proto::NodeToMaster;

/// A master where nodes stay registered without heartbeats for the length of a test.
async fn patient_master() -> TestMaster {
    TestMaster::start_with(|c| c.dead_after = Duration::from_secs(60)).await
}

#[tokio::test]
async fn a_registered_node_gets_a_snapshot_of_the_users_on_the_other_nodes() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice", "amy"]).await;
    assert_eq!(a.presence().await, snapshot(&[]), "nobody else yet");
    let mut b = master.node("node-b", &["bob", "alice"]).await;
    assert_eq!(b.presence().await, snapshot(&["alice", "amy"]));
    // a learns of bob; alice is on a itself, but she is on b as well: elsewhere for a too.
    assert_eq!(a.presence().await, change(&["alice", "bob"], &[]));
    let mut c = master.node("node-c", &[]).await;
    assert_eq!(
        c.presence().await,
        snapshot(&["alice", "amy", "bob"]),
        "each user once"
    );
    a.expect_no_presence().await;
    b.expect_no_presence().await;
    // Registering again on the same connection brings a fresh snapshot.
    b.register("node-b", &["bob"], Default::default()).await;
    assert_eq!(b.presence().await, snapshot(&["alice", "amy"]));
    // Everyone hears b's users again. alice left b but is still on a: only a, for which she
    // is now nowhere else, hears she left.
    assert_eq!(a.presence().await, change(&["bob"], &["alice"]));
    assert_eq!(c.presence().await, change(&["bob"], &[]));
}

#[tokio::test]
async fn online_on_one_node_is_seen_by_the_others() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &[]).await;
    let mut b = master.node("node-b", &[]).await;
    let mut c = master.node("node-c", &[]).await;
    for node in [&mut a, &mut b, &mut c] {
        assert_eq!(node.presence().await, snapshot(&[]));
    }
    a.send(NodeToMaster::Online(vec![user("alice"), user("amy")]))
        .await;
    assert_eq!(b.presence().await, change(&["alice", "amy"], &[]));
    assert_eq!(c.presence().await, change(&["alice", "amy"], &[]));
    // Again from a: nothing new for anyone.
    a.send(NodeToMaster::Online(vec![user("alice")])).await;
    a.sync().await;
    a.expect_no_presence().await;
    b.expect_no_presence().await;
    c.expect_no_presence().await;
}

#[tokio::test]
async fn offline_is_seen_only_for_users_connected_nowhere_else() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice", "sam", "solo"]).await;
    let mut b = master.node("node-b", &["sam"]).await;
    let mut c = master.node("node-c", &[]).await;
    a.presence().await;
    a.presence().await;
    assert_eq!(b.presence().await, snapshot(&["alice", "sam", "solo"]));
    assert_eq!(c.presence().await, snapshot(&["alice", "sam", "solo"]));
    a.send(NodeToMaster::Offline(vec![
        user("solo"),
        user("sam"),
        user("zed"),
    ]))
    .await;
    // solo is gone everywhere; sam is still on b, so only b (where he is now the only
    // copy) hears he is nowhere else; zed was never on a.
    assert_eq!(b.presence().await, change(&[], &["sam", "solo"]));
    assert_eq!(c.presence().await, change(&[], &["solo"]));
    a.expect_no_presence().await;
    c.expect_no_presence().await;
}

#[tokio::test]
async fn a_node_that_closes_takes_its_users_offline_for_the_others() {
    let master = patient_master().await;
    let a = master.node("node-a", &["alice", "sam"]).await;
    let mut b = master.node("node-b", &["sam"]).await;
    let mut c = master.node("node-c", &[]).await;
    b.presence().await;
    c.presence().await;
    a.send(NodeToMaster::Draining).await;
    a.conn.close(0u32.into(), b"bye");
    assert_eq!(b.presence().await, change(&[], &["alice", "sam"]));
    assert_eq!(c.presence().await, change(&[], &["alice"]), "sam is on b");
}

#[tokio::test]
async fn a_dead_node_takes_its_users_offline_for_the_others() {
    // Short death; b keeps heartbeating, a falls silent.
    let master = TestMaster::start().await;
    let a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["bob"]).await;
    b.heartbeat_every(Duration::from_millis(50), Default::default());
    assert_eq!(b.presence().await, snapshot(&["alice"]));
    let (code, _) = a.closed().await;
    assert_eq!(code, u64::from(quip_master::close::DEAD));
    assert_eq!(b.presence().await, change(&[], &["alice"]));
}

#[tokio::test]
async fn a_replacing_connection_gets_its_own_snapshot_and_the_others_catch_up() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice", "amy"]).await;
    let mut b = master.node("node-b", &["bob"]).await;
    a.presence().await;
    assert_eq!(a.presence().await, change(&["bob"], &[]));
    b.presence().await;
    // node-a restarts: the new connection has only amy.
    let mut a2 = master.node("node-a", &["amy", "ann"]).await;
    assert_eq!(a2.presence().await, snapshot(&["bob"]));
    assert_eq!(b.presence().await, change(&["amy", "ann"], &["alice"]));
    let (code, _) = a.closed().await;
    assert_eq!(code, u64::from(quip_master::close::REPLACED));
    // The old session's end takes nothing away: amy and ann stay.
    b.expect_no_presence().await;
}
