//! Discovery through a real master: least-loaded choice, an even spread of a burst, no node,
//! dead and draining nodes, status, and rate limits.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{PATIENCE, TestMaster, load};
use quip_proto::relay::Load;
use quip_proto::{ClientToMaster, ErrorCode, MasterToClient, NodeToMaster};

#[tokio::test]
async fn discovery_picks_the_least_loaded_node() {
    let master = TestMaster::start_with(|c| c.dead_after = Duration::from_secs(30)).await;
    let _a = master.node_with_load("node-a", &[], load(10)).await;
    let _b = master.node_with_load("node-b", &[], load(2)).await;
    let _c = master.node_with_load("node-c", &[], load(5)).await;
    let mut client = master.discovery().await;
    assert_eq!(client.discover().await.as_deref(), Some("node-b"));
    let answer = client.ask(ClientToMaster::Discover).await;
    let MasterToClient::Node { node, addr } = answer else {
        panic!("unexpected {answer:?}");
    };
    assert_eq!(node.as_str(), "node-b");
    assert_eq!(addr, "127.0.0.1:7006", "the address the node registered");
}

#[tokio::test]
async fn a_burst_of_new_clients_spreads_evenly_between_heartbeats() {
    // No heartbeat lands during the burst: the spread comes from counting assignments.
    let master = TestMaster::start_with(|c| {
        c.heartbeat = Duration::from_secs(10);
        c.dead_after = Duration::from_secs(60);
    })
    .await;
    let _nodes = [
        master.node("node-a", &[]).await,
        master.node("node-b", &[]).await,
        master.node("node-c", &[]).await,
    ];
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let client = master.discovery();
        // Each new client connects and asks once, all at the same time.
        let mut client = client.await;
        burst.spawn(async move { client.discover().await });
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(pick) = burst.join_next().await {
        let pick = pick.expect("client task").expect("a node");
        *counts.entry(pick).or_default() += 1;
    }
    let mut sizes: Vec<usize> = counts.values().copied().collect();
    sizes.sort();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(
        sizes.len() == 3 && sizes.iter().all(|n| (30..=37).contains(n)),
        "within ±10% of even: {counts:?}"
    );
    assert_eq!(sizes, vec![33, 33, 34], "exactly even: {counts:?}");
}

#[tokio::test]
async fn no_node_means_no_service() {
    let master = TestMaster::start().await;
    let mut client = master.discovery().await;
    assert_eq!(client.discover().await, None);
    assert_eq!(
        client.ask(ClientToMaster::Status).await,
        MasterToClient::Status(vec![])
    );
}

#[tokio::test]
async fn a_silent_node_leaves_discovery_within_dead_after() {
    let master = TestMaster::start().await; // heartbeat 100 ms, dead after 500 ms
    let mut alive = master.node("node-a", &[]).await;
    alive.heartbeat_every(Duration::from_millis(100), load(50));
    let silent = master.node("node-b", &["bob"]).await;
    let mut client = master.discovery().await;
    // b is idle, a is busy: b gets the clients while it is alive.
    assert_eq!(client.discover().await.as_deref(), Some("node-b"));
    let started = Instant::now();
    let deadline = started + Duration::from_millis(500) + Duration::from_secs(1);
    loop {
        let names: Vec<String> = master
            .handle
            .status()
            .iter()
            .map(|s| s.node.to_string())
            .collect();
        if names == ["node-a"] {
            break;
        }
        assert!(Instant::now() < deadline, "node-b still listed: {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.discover().await.as_deref(), Some("node-a"));
    assert_eq!(
        master.handle.online_users(),
        0,
        "its directory rows went with it"
    );
    let (code, reason) = silent.closed().await;
    assert_eq!(code, u64::from(quip_master::close::DEAD));
    assert!(reason.contains("heartbeat"), "{reason}");
}

#[tokio::test]
async fn a_draining_node_gets_no_new_clients_and_status_shows_it() {
    let master = TestMaster::start_with(|c| c.dead_after = Duration::from_secs(30)).await;
    let _a = master.node_with_load("node-a", &[], load(40)).await;
    let b = master.node_with_load("node-b", &[], load(1)).await;
    b.send(NodeToMaster::Draining).await;
    let mut client = master.discovery().await;
    // The master handles frames in order, so poll until the Draining has landed.
    let deadline = Instant::now() + common::PATIENCE;
    while master
        .handle
        .status()
        .iter()
        .any(|s| s.healthy && s.node.as_str() == "node-b")
    {
        assert!(Instant::now() < deadline, "Draining never took effect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.discover().await.as_deref(), Some("node-a"));
    let MasterToClient::Status(nodes) = client.ask(ClientToMaster::Status).await else {
        panic!("no status");
    };
    let summary: Vec<(String, u32, bool)> = nodes
        .iter()
        .map(|s| (s.node.to_string(), s.load.clients, s.healthy))
        .collect();
    assert_eq!(
        summary,
        [("node-a".into(), 40, true), ("node-b".into(), 1, false)]
    );
}

#[tokio::test]
async fn quip_master_status_query_reads_the_table() {
    let master = TestMaster::start_with(|c| c.dead_after = Duration::from_secs(30)).await;
    let _b = master
        .node_with_load(
            "node-b",
            &[],
            Load {
                clients: 3,
                pending: 1,
                msgs_per_sec: 12,
                max_clients: 10,
            },
        )
        .await;
    let _a = master.node("node-a", &[]).await;
    let nodes = quip_master::query_status(&master.addr().to_string(), &master.trust(), PATIENCE)
        .await
        .expect("status");
    let table = quip_master::format_status(&nodes);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("node-a"), "{table}");
    assert!(
        lines[2].starts_with("node-b") && lines[2].contains(" 12 "),
        "{table}"
    );
    let quick = Duration::from_millis(300);
    let unreachable = quip_master::query_status("127.0.0.1:1", &master.trust(), quick).await;
    let err = unreachable.expect_err("nobody listens on port 1");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn a_flooding_connection_gets_busy_while_other_clients_are_answered() {
    let master = TestMaster::start_with(|c| c.dead_after = Duration::from_secs(30)).await;
    let _a = master.node("node-a", &[]).await;
    let mut flood = master.discovery().await;
    let mut busy = 0;
    for _ in 0..100 {
        match flood.ask(ClientToMaster::Discover).await {
            MasterToClient::Node { .. } => {}
            MasterToClient::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(_),
                ..
            } => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(busy >= 50, "only {busy} of 100 flood requests were refused");
    // Another client from the same address still gets its answer.
    let mut other = master.discovery().await;
    assert_eq!(other.discover().await.as_deref(), Some("node-a"));
    // And the flooder is still connected, just limited.
    assert!(flood.conn.close_reason().is_none());
}

#[tokio::test]
async fn an_address_over_its_limit_is_busy_across_connections() {
    let master = TestMaster::start_with(|c| {
        c.dead_after = Duration::from_secs(30);
        c.discovery_per_ip = quip_master::RateLimit {
            per_second: 1,
            burst: 5,
        };
    })
    .await;
    let mut answers = Vec::new();
    // Five answers, then one more per second: twelve quick connections see Busy.
    for _ in 0..12 {
        let mut client = master.discovery().await;
        answers.push(client.ask(ClientToMaster::Discover).await);
    }
    let busy = answers
        .iter()
        .filter(|a| {
            matches!(
                a,
                MasterToClient::Error {
                    code: ErrorCode::RateLimited,
                    retry_after_ms: Some(_),
                    ..
                }
            )
        })
        .count();
    assert!(busy >= 2, "{answers:?}");
    assert!(answers[..5].iter().all(|a| *a == MasterToClient::NoService));
}

#[tokio::test]
async fn a_discovery_client_cannot_make_the_master_reserve_a_large_frame() {
    let master = TestMaster::start_with(|c| c.dead_after = Duration::from_secs(30)).await;
    let _a = master.node("node-a", &[]).await;
    // The attack: announce a 1 MiB frame and send nothing more. Discovery requests are a few
    // bytes, so anything over 1 KiB is refused at once, before any buffer is sized.
    let mut hostile = master.discovery().await;
    hostile.write_raw(&(1024u32 * 1024).to_be_bytes()).await;
    match hostile.answer().await {
        Some(MasterToClient::Error {
            code: ErrorCode::Malformed,
            message,
            ..
        }) => assert!(message.contains("frame"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), hostile.conn.closed())
        .await
        .expect("the master closes the connection");
    // Honest clients are answered as before.
    let mut other = master.discovery().await;
    assert_eq!(other.discover().await.as_deref(), Some("node-a"));
}
