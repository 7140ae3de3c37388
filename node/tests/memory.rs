//! What announced-but-unsent frames cost a node: nothing but the bytes that arrive. A test
//! binary of its own, so no other test's allocations move the process's memory meanwhile.
//! (`quip-testnet bench hostile` measures the same against a real `quip-node` process.)

mod common;

use std::time::Duration;

use common::{Backend, TestNode, unique};
use quip_proto::limits::MAX_FRAME;
use quip_proto::{ClientToNode, NodeToClient};
use quip_quic::Limits;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const CONNECTIONS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_frames_cost_only_the_bytes_sent() {
    let node = TestNode::start_with(Backend::Sqlite, |c| {
        c.max_sessions_per_user = 1000;
        c.max_connections_per_addr = 1000;
    })
    .await
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let mallory = node.signup(&unique("mallory"), home.path()).await;
    let token = mallory.token().clone();

    let limits = Limits::client();
    let config =
        quip_quic::client_config(&node.trust(), quip_proto::ALPN_CLIENT, None, &limits).unwrap();
    let endpoint = quip_quic::client_endpoint("127.0.0.1:0".parse().unwrap(), &limits).unwrap();
    let before = rss();
    let mut held = Vec::new();
    // Logged-in connections, each announcing a 1 MiB frame on its control stream and on seven
    // more streams, and sending a few bytes of each. Before the fix: 8 MiB of zeroes each.
    let prefix = {
        let mut p = (MAX_FRAME as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&[0; 16]);
        p
    };
    for _ in 0..CONNECTIONS {
        let conn = endpoint
            .connect_with(
                config.clone(),
                node.handle.local_addr(),
                quip_quic::names::NODE,
            )
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv, _) = quip_quic::open_control(&conn, "hostile/0", MAX_FRAME)
            .await
            .unwrap();
        send.send(&ClientToNode::Resume {
            req: 1,
            token: token.clone(),
        })
        .await
        .unwrap();
        let answer: NodeToClient = recv.expect().await.unwrap();
        assert!(
            matches!(answer, NodeToClient::LoggedIn { .. }),
            "{answer:?}"
        );
        send.stream().write_all(&prefix).await.unwrap();
        let mut streams = Vec::new();
        for _ in 0..7 {
            let (mut s, r) = conn.open_bi().await.unwrap();
            s.write_all(&prefix).await.unwrap();
            streams.push((s, r));
        }
        held.push((conn, send, recv, streams));
    }
    // Give the node every chance to allocate: watch its memory for a while.
    let mut peak = rss();
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = peak.saturating_sub(before);
    // 800 announced megabytes; what the node may keep is the connections themselves.
    assert!(
        grown < 96 * 1024 * 1024,
        "{} MiB for {CONNECTIONS} connections announcing 1 MiB frames on 8 streams each",
        grown / (1024 * 1024)
    );
    // Every connection is still served (nothing was refused to make the number small).
    assert_eq!(node.handle.connections(), CONNECTIONS + 1);
    drop(held);
}
