//! Relay between fake nodes through a real master: one frame per destination node with only
//! its recipients' keys, the directory kept by presence and registration, and image streams.

mod common;

use std::time::Duration;

use common::{FakeNode, TestMaster, recipients, relayed, user};
use quip_proto::ids::BlobId;
use quip_proto::limits::MAX_FRAME;
use quip_proto::{Chunk, ContentKind, MasterToNode, NodeToMaster, StreamOpen};
use quip_quic::FramedRecv;

fn text() -> ContentKind {
    ContentKind::Text
}

/// Receives one relay and returns its recipients.
async fn relay_to(node: &mut FakeNode) -> Vec<String> {
    match node.recv().await {
        Some(MasterToNode::Relay(relayed)) => recipients(&relayed),
        other => panic!("{} expected a relay, got {other:?}", node.name),
    }
}

/// A master where nodes stay registered without heartbeats for the length of a test.
async fn patient_master() -> TestMaster {
    TestMaster::start_with(|c| c.dead_after = Duration::from_secs(60)).await
}

#[tokio::test]
async fn a_relay_reaches_only_the_node_of_its_online_recipient() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["ulla"]).await;
    let msg = relayed("alice", &["ulla", "vic"], text(), 1);
    a.send(NodeToMaster::Relay(msg.clone())).await;
    let Some(MasterToNode::Relay(got)) = b.recv().await else {
        panic!("node-b got no relay");
    };
    assert_eq!(
        got.sealed, msg.sealed,
        "the sealed part is passed on untouched"
    );
    assert_eq!(got.keys, msg.keys[..1], "only ulla's key; vic is offline");
    b.expect_nothing().await;
    a.expect_nothing().await;
}

#[tokio::test]
async fn a_group_relay_is_one_frame_per_destination_node() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["bob", "bea", "ben"]).await;
    let mut c = master.node("node-c", &["cat", "cid"]).await;
    let members = ["bob", "bea", "ben", "cat", "cid", "alice"];
    a.send(NodeToMaster::Relay(relayed("alice", &members, text(), 2)))
        .await;
    assert_eq!(relay_to(&mut b).await, ["bea", "ben", "bob"]);
    assert_eq!(relay_to(&mut c).await, ["cat", "cid"]);
    b.expect_nothing().await;
    c.expect_nothing().await;
    a.expect_nothing().await;
}

#[tokio::test]
async fn presence_updates_the_directory() {
    let master = patient_master().await;
    let a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &[]).await;
    let mut c = master.node("node-c", &[]).await;
    b.send(NodeToMaster::Online(vec![user("ulla")])).await;
    b.sync().await;
    a.send(NodeToMaster::Relay(relayed("alice", &["ulla"], text(), 3)))
        .await;
    assert_eq!(relay_to(&mut b).await, ["ulla"]);
    // ulla moves from b to c.
    b.send(NodeToMaster::Offline(vec![user("ulla")])).await;
    c.send(NodeToMaster::Online(vec![user("ulla")])).await;
    b.sync().await;
    c.sync().await;
    a.send(NodeToMaster::Relay(relayed("alice", &["ulla"], text(), 4)))
        .await;
    assert_eq!(relay_to(&mut c).await, ["ulla"]);
    b.expect_nothing().await;
}

#[tokio::test]
async fn re_register_replaces_the_directory() {
    let master = patient_master().await;
    let a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["ulla", "vic"]).await;
    // The same connection registers again (the node lost track): ulla is gone, vic stays.
    let answer = b.register("node-b", &["vic"], Default::default()).await;
    assert!(
        matches!(answer, MasterToNode::Registered { .. }),
        "{answer:?}"
    );
    // A restarted node-c connects anew and brings ulla.
    let mut c = master.node("node-c", &["ulla"]).await;
    a.send(NodeToMaster::Relay(relayed(
        "alice",
        &["ulla", "vic"],
        text(),
        5,
    )))
    .await;
    assert_eq!(relay_to(&mut c).await, ["ulla"]);
    assert_eq!(relay_to(&mut b).await, ["vic"]);
    // A new connection under the same name replaces the old one, which is closed.
    let mut b2 = master.node("node-b", &["wes"]).await;
    let (code, _) = b.closed().await;
    assert_eq!(code, u64::from(quip_master::close::REPLACED));
    a.send(NodeToMaster::Relay(relayed(
        "alice",
        &["vic", "wes"],
        text(),
        6,
    )))
    .await;
    assert_eq!(relay_to(&mut b2).await, ["wes"]);
    c.expect_nothing().await;
}

#[tokio::test]
async fn a_node_that_leaves_takes_its_directory_rows() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice"]).await;
    let b = master.node("node-b", &["ulla"]).await;
    assert_eq!(master.handle.online_users(), 2);
    b.conn.close(0u32.into(), b"bye");
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while master.handle.status().len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-b still registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(master.handle.online_users(), 1);
    // A relay for ulla now goes nowhere, and nobody complains.
    a.send(NodeToMaster::Relay(relayed("alice", &["ulla"], text(), 7)))
        .await;
    a.expect_nothing().await;
}

#[tokio::test]
async fn an_image_relay_pipes_its_chunks_in_order() {
    let master = patient_master().await;
    let a = master.node("node-a", &["alice"]).await;
    let b = master.node("node-b", &["ulla"]).await;
    let chunks: Vec<Vec<u8>> = vec![vec![1; 1000], vec![2; 64 * 1024], vec![3; 10]];
    let len: usize = chunks.iter().map(Vec::len).sum();
    let kind = ContentKind::Image {
        blob: BlobId([9; 16]),
        len: len as u64,
    };
    let msg = relayed("alice", &["ulla", "vic"], kind, 8);
    let (mut up, _) =
        quip_quic::open_stream(&a.conn, &StreamOpen::RelayImage(msg.clone()), MAX_FRAME)
            .await
            .expect("image stream opens");
    for data in &chunks {
        up.send(&Chunk { data: data.clone() })
            .await
            .expect("chunk sent");
    }
    up.finish().expect("finish");

    let (_, down) = tokio::time::timeout(common::PATIENCE, b.conn.accept_bi())
        .await
        .expect("the master opens a stream to node-b in time")
        .expect("stream");
    let mut down = FramedRecv::new(down, MAX_FRAME);
    let StreamOpen::RelayImage(opened) = down.expect::<StreamOpen>().await.expect("opening") else {
        panic!("not an image relay");
    };
    assert_eq!(opened.sealed, msg.sealed);
    assert_eq!(recipients(&opened), ["ulla"]);
    let mut got = Vec::new();
    while let Some(chunk) = down.recv::<Chunk>().await.expect("chunk") {
        got.push(chunk.data);
    }
    assert_eq!(got, chunks, "same chunks, same order, then a clean end");
}

#[tokio::test]
async fn an_image_larger_than_announced_is_cut_off() {
    let master = patient_master().await;
    let a = master.node("node-a", &["alice"]).await;
    let b = master.node("node-b", &["ulla"]).await;
    let kind = ContentKind::Image {
        blob: BlobId([9; 16]),
        len: 100,
    };
    let msg = relayed("alice", &["ulla"], kind, 9);
    let (mut up, _) = quip_quic::open_stream(&a.conn, &StreamOpen::RelayImage(msg), MAX_FRAME)
        .await
        .expect("image stream opens");
    up.send(&Chunk { data: vec![1; 80] }).await.expect("chunk");
    up.send(&Chunk { data: vec![2; 80] }).await.expect("chunk");
    let stopped = tokio::time::timeout(common::PATIENCE, up.stream().stopped())
        .await
        .expect("the master stops the upload in time");
    assert_eq!(
        stopped.ok().flatten().map(|c| c.into_inner()),
        Some(u64::from(quip_master::stream_code::TOO_LARGE))
    );
    let (_, down) = b.conn.accept_bi().await.expect("stream");
    let mut down = FramedRecv::new(down, MAX_FRAME);
    // The reset may land before the opening or the first chunk is read; the end is never
    // a clean finish, and nothing beyond the announced length gets through.
    let mut received = 0;
    let end = match down.expect::<StreamOpen>().await {
        Err(err) => Err(err),
        Ok(_) => loop {
            match down.recv::<Chunk>().await {
                Ok(Some(chunk)) => received += chunk.data.len(),
                Ok(None) => break Ok(()),
                Err(err) => break Err(err),
            }
        },
    };
    assert!(
        end.is_err(),
        "the destination stream is reset, not finished: {end:?}"
    );
    assert!(received <= 80, "nothing beyond the announced length passed");
}

#[tokio::test]
async fn relays_dropped_for_a_slow_node_are_reported_once_it_catches_up() {
    // A tiny relay queue, and relays far bigger than node-b's stream window, so that node-b,
    // not reading, soon has its queue full.
    let master = TestMaster::start_with(|c| {
        c.dead_after = Duration::from_secs(60);
        c.relay_queue = 4;
    })
    .await;
    let mut a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["ulla"]).await;
    const SENT: u64 = 100;
    for tag in 0..SENT {
        let mut msg = relayed("alice", &["ulla"], text(), tag as u8);
        msg.sealed.ciphertext = vec![1; 60 * 1024];
        a.send(NodeToMaster::Relay(msg)).await;
    }
    a.sync().await;

    // node-b now reads: relays and, once its queue has room again, one report of how many it
    // missed. A few relays still queued may follow the report; a marker relay, sent once the
    // report is in (so there is room for it), comes after them.
    let (mut relays, mut missed) = (0, Vec::new());
    loop {
        match b.recv().await {
            Some(MasterToNode::Relay(r)) if r.sealed.header.id.0[0] == 200 => break,
            Some(MasterToNode::Relay(_)) => relays += 1,
            Some(MasterToNode::Missed { frames }) => {
                missed.push(frames);
                a.send(NodeToMaster::Relay(relayed(
                    "alice",
                    &["ulla"],
                    text(),
                    200,
                )))
                .await;
            }
            other => panic!("expected relays and Missed, got {other:?}"),
        }
    }
    assert_eq!(missed.len(), 1, "one report: {missed:?}");
    assert!(missed[0] > 0, "the queue of 4 overflowed");
    assert_eq!(
        relays + missed[0],
        SENT,
        "every relay arrived or was counted as missed"
    );
    b.expect_nothing().await;
}
