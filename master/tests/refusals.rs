//! Bad input gets a clear refusal and the master keeps serving: rogue certificates, missing
//! certificates, names the certificate does not carry, frames before `Register`, clients on
//! the node protocol, malformed relays.

mod common;

use std::time::Duration;

use common::{FakeNode, TestMaster, closed_reason, relayed, user};
use quip_master::close;
use quip_proto::limits::MAX_FRAME;
use quip_proto::relay::Load;
use quip_proto::{
    ClientToNode, ContentKind, ErrorCode, MasterToNode, NodeToClient, NodeToMaster, ReqId,
};
use quip_quic::ClusterCa;

async fn patient_master() -> TestMaster {
    TestMaster::start_with(|c| c.dead_after = Duration::from_secs(60)).await
}

#[tokio::test]
async fn a_node_certificate_from_another_ca_is_refused_and_the_master_keeps_serving() {
    let master = patient_master().await;
    let mut good = master.node("node-a", &["alice"]).await;
    let rogue_ca = ClusterCa::generate().expect("another CA");
    let rogue = rogue_ca
        .issue(&["node-b", "quip-node", "127.0.0.1"])
        .expect("rogue cert");
    let refused = match master.connect(quip_proto::ALPN_RELAY, Some(&rogue)).await {
        // TLS 1.3: the client may finish its side before the server rejects its certificate.
        Ok(conn) => quip_quic::open_control(&conn, "rogue", MAX_FRAME)
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "a certificate from another CA must not get a session"
    );
    assert_eq!(master.handle.status().len(), 1);
    good.sync().await;
    let mut client = master.discovery().await;
    assert_eq!(client.discover().await.as_deref(), Some("node-a"));
}

#[tokio::test]
async fn a_relay_connection_without_a_certificate_is_closed_with_a_reason() {
    let master = patient_master().await;
    let conn = master
        .connect(quip_proto::ALPN_RELAY, None)
        .await
        .expect("TLS lets clients without a certificate in");
    let (code, reason) = closed_reason(&conn).await;
    assert_eq!(code, u64::from(close::UNAUTHENTICATED));
    assert!(
        reason.contains("certificate issued by the cluster CA"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_register_name_the_certificate_does_not_carry_is_unknown_node() {
    let master = patient_master().await;
    let cert = master.issue("node-a");
    for name in ["node-b", "quip-node"] {
        let mut fake = FakeNode::connect(&master, &cert).await;
        let answer = fake.register(name, &[], Load::default()).await;
        let MasterToNode::Error { code, message } = answer else {
            panic!("{name}: expected a refusal, got {answer:?}");
        };
        assert_eq!(code, ErrorCode::UnknownNode);
        assert!(message.contains(name), "{message}");
        let (code, _) = fake.closed().await;
        assert_eq!(code, u64::from(close::UNAUTHENTICATED));
    }
    assert!(master.handle.status().is_empty());
}

#[tokio::test]
async fn frames_before_register_are_not_registered_and_register_still_works() {
    let master = patient_master().await;
    let mut fake = FakeNode::connect(&master, &master.issue("node-a")).await;
    fake.send(NodeToMaster::Heartbeat(Load::default())).await;
    fake.send(NodeToMaster::Relay(relayed(
        "alice",
        &["bob"],
        ContentKind::Text,
        1,
    )))
    .await;
    for _ in 0..2 {
        let answer = fake.recv().await;
        assert!(
            matches!(
                answer,
                Some(MasterToNode::Error {
                    code: ErrorCode::NotRegistered,
                    ..
                })
            ),
            "{answer:?}"
        );
    }
    assert!(master.handle.status().is_empty());
    let answer = fake.register("node-a", &["alice"], Load::default()).await;
    assert!(
        matches!(answer, MasterToNode::Registered { .. }),
        "{answer:?}"
    );
    assert_eq!(master.handle.status().len(), 1);
}

#[tokio::test]
async fn a_malformed_relay_is_refused_and_the_node_keeps_its_session() {
    let master = patient_master().await;
    let mut a = master.node("node-a", &["alice"]).await;
    let mut b = master.node("node-b", &["bob"]).await;
    let mut twice = relayed("alice", &["bob"], ContentKind::Text, 2);
    twice.keys.push(twice.keys[0].clone());
    a.send(NodeToMaster::Relay(twice)).await;
    let answer = a.recv().await;
    assert!(
        matches!(&answer, Some(MasterToNode::Error { code: ErrorCode::InvalidEnvelope, message }) if message.contains("bob")),
        "{answer:?}"
    );
    // A relay for a user nobody has online is not an error: storage holds it.
    a.send(NodeToMaster::Relay(relayed(
        "alice",
        &["zed"],
        ContentKind::Text,
        3,
    )))
    .await;
    a.send(NodeToMaster::Relay(relayed(
        "alice",
        &["bob"],
        ContentKind::Text,
        4,
    )))
    .await;
    let Some(MasterToNode::Relay(got)) = b.recv().await else {
        panic!("node-b got no relay");
    };
    assert_eq!(got.keys[0].recipient, user("bob"));
    a.expect_nothing().await;
}

#[tokio::test]
async fn a_client_speaking_the_node_protocol_is_told_this_is_a_master() {
    let master = patient_master().await;
    let conn = master
        .connect(quip_proto::ALPN_CLIENT, None)
        .await
        .expect("connects");
    let (mut send, mut recv, hello) = quip_quic::open_control(&conn, "quip", MAX_FRAME)
        .await
        .expect("hello answered");
    hello.check_version().expect("same version");
    // Whatever it asks, the next frame is the refusal.
    let _ = send.send(&ClientToNode::Ping { req: 1 as ReqId }).await;
    let answer = recv.expect::<NodeToClient>().await.expect("one answer");
    let NodeToClient::Error { code, message, .. } = answer else {
        panic!("expected WrongService, got {answer:?}");
    };
    assert_eq!(code, ErrorCode::WrongService);
    assert_eq!(message, quip_master::WRONG_SERVICE_REASON);
    let (code, reason) = closed_reason(&conn).await;
    assert_eq!(code, u64::from(close::WRONG_SERVICE));
    assert!(reason.contains("quip connect --master"), "{reason}");
}

#[tokio::test]
async fn a_discovery_client_opening_a_second_stream_is_closed() {
    let master = patient_master().await;
    let client = master.discovery().await;
    let (mut extra, _) = client.conn.open_bi().await.expect("stream");
    let _ = extra.write_all(&[0; 64]).await;
    let (code, _) = closed_reason(&client.conn).await;
    assert_eq!(code, u64::from(close::PROTOCOL));
}

#[tokio::test]
async fn shutdown_closes_nodes_with_a_reason() {
    let master = patient_master().await;
    let a = master.node("node-a", &[]).await;
    let TestMaster {
        handle,
        dir,
        endpoint,
    } = master;
    handle.shutdown().await;
    let (code, _) = a.closed().await;
    assert_eq!(code, u64::from(close::SHUTDOWN));
    drop((dir, endpoint));
}
