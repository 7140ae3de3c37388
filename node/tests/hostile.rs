//! A hostile client against a real node over real QUIC: connections that never log in,
//! frames that stall, floods of requests, one address taking every slot, one account opening
//! session after session, a client that never reads. Each gets a clear refusal and costs the
//! node a bounded amount; honest clients are not affected.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Backend, TestNode, unique};
use quip_proto::limits::MAX_FRAME;
use quip_proto::{ClientToNode, ErrorCode, NodeToClient};
use quip_quic::{FramedRecv, FramedSend, Limits};

/// A client speaking the wire protocol by hand, from a chosen local address.
struct Raw {
    conn: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    _endpoint: quinn::Endpoint,
}

impl Raw {
    async fn connect(node: &TestNode, bind: &str) -> Result<Self, String> {
        let limits = Limits::client();
        let config =
            quip_quic::client_config(&node.trust(), quip_proto::ALPN_CLIENT, None, &limits)
                .unwrap();
        let bind: SocketAddr = bind.parse().unwrap();
        let endpoint = quip_quic::client_endpoint(bind, &limits).unwrap();
        let conn = endpoint
            .connect_with(config, node.handle.local_addr(), quip_quic::names::NODE)
            .unwrap()
            .await
            .map_err(|e| e.to_string())?;
        let (send, recv, _) = quip_quic::open_control(&conn, "hostile/0", MAX_FRAME)
            .await
            .map_err(|e| format!("{e}: {:?}", conn.close_reason()))?;
        Ok(Self {
            conn,
            send,
            recv,
            _endpoint: endpoint,
        })
    }

    async fn ask(&mut self, msg: &ClientToNode) -> NodeToClient {
        self.send.send(msg).await.unwrap();
        match self.recv.expect().await {
            Ok(answer) => answer,
            Err(err) => panic!("{err}; closed: {:?}", self.conn.close_reason()),
        }
    }

    /// Waits (up to a generous deadline) for the node to close the connection; its code and
    /// reason.
    async fn closed(&self) -> (u64, String) {
        let err = tokio::time::timeout(Duration::from_secs(20), self.conn.closed())
            .await
            .expect("the node closes the connection");
        match err {
            quinn::ConnectionError::ApplicationClosed(close) => (
                close.error_code.into_inner(),
                String::from_utf8_lossy(&close.reason).into_owned(),
            ),
            other => panic!("closed otherwise: {other}"),
        }
    }
}

async fn a_connection_that_never_logs_in_is_closed(backend: Backend) {
    let Some(node) = TestNode::start_with(backend, |c| {
        c.login_timeout = Duration::from_secs(4);
    })
    .await
    else {
        return;
    };
    let idle = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    let (code, reason) = idle.closed().await;
    assert_eq!(code, u64::from(quip_quic::close::TIMEOUT));
    assert!(reason.contains("not logged in within 4 s"), "{reason}");

    // A client that logs in within the deadline stays.
    let home = tempfile::tempdir().unwrap();
    let alice = node.signup(&unique("alice"), home.path()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(alice.connection().quic().close_reason().is_none());
}

async fn a_frame_that_stalls_closes_the_connection(backend: Backend) {
    let Some(node) = TestNode::start_with(backend, |c| {
        c.frame_deadline = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let mut raw = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    // A frame announcing 1000 bytes, 10 of them sent, then nothing.
    let mut partial = 1000u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0; 10]);
    raw.send.stream().write_all(&partial).await.unwrap();
    let (code, reason) = raw.closed().await;
    assert_eq!(code, u64::from(quip_quic::close::TIMEOUT));
    assert!(reason.contains("frame"), "{reason}");
}

async fn before_login_only_small_frames_and_no_streams(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    // A 1 MiB prefix before login: refused at once, nothing allocated for it.
    let mut raw = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    raw.send
        .stream()
        .write_all(&(MAX_FRAME as u32).to_be_bytes())
        .await
        .unwrap();
    match raw.recv.expect::<NodeToClient>().await.unwrap() {
        NodeToClient::Error {
            code: ErrorCode::Malformed,
            message,
            ..
        } => assert!(message.contains("frame"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    // No second stream before login: the node grants none.
    let raw = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(500), raw.conn.open_bi()).await;
    assert!(extra.is_err(), "a stream was granted before login");
}

async fn a_ping_flood_is_paced(backend: Backend) {
    let Some(node) = TestNode::start_with(backend, |c| {
        c.requests_before_login = quip_quic::RateLimit {
            per_second: 1,
            burst: 5,
        };
    })
    .await
    else {
        return;
    };
    let mut raw = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    for req in 0..50 {
        raw.send.send(&ClientToNode::Ping { req }).await.unwrap();
    }
    let mut pongs = 0;
    let retry = loop {
        match raw.recv.expect::<NodeToClient>().await.unwrap() {
            NodeToClient::Pong { .. } => pongs += 1,
            NodeToClient::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            } => break retry_after_ms.expect("a retry time"),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        pongs <= 6,
        "{pongs} pings answered before the budget ran out"
    );
    assert!(retry > 0 && retry <= 1000, "retry after {retry} ms");
    // An honest client from the same address is answered meanwhile.
    let mut other = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    assert!(matches!(
        other.ask(&ClientToNode::Ping { req: 1 }).await,
        NodeToClient::Pong { req: 1 }
    ));
}

async fn one_address_cannot_take_every_slot(backend: Backend) {
    let Some(node) = TestNode::start_with(backend, |c| {
        c.max_connections = 10;
        c.max_connections_per_addr = 3;
    })
    .await
    else {
        return;
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Raw::connect(&node, "127.0.0.2:0").await.unwrap());
    }
    // The fourth from that address is closed with the reason.
    let refused = Raw::connect(&node, "127.0.0.2:0").await;
    let reason = match refused {
        Err(err) => err,
        Ok(raw) => raw.closed().await.1,
    };
    assert!(
        reason.contains("too many connections from your address"),
        "{reason}"
    );
    // Another address still gets in and is served.
    let mut other = Raw::connect(&node, "127.0.0.3:0").await.unwrap();
    assert!(matches!(
        other.ask(&ClientToNode::Ping { req: 7 }).await,
        NodeToClient::Pong { req: 7 }
    ));
    // A closed connection frees its slot.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        if let Ok(raw) = Raw::connect(&node, "127.0.0.2:0").await
            && tokio::time::timeout(Duration::from_millis(200), raw.conn.closed())
                .await
                .is_err()
        {
            again = Some(raw);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot was never given back");
}

async fn sessions_per_account_are_bounded(backend: Backend) {
    let Some(node) = TestNode::start_with(backend, |c| c.max_sessions_per_user = 2).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let user = unique("alice");
    let first = node.signup(&user, home.path()).await;
    let _second = node.login(&user, home.path()).await.unwrap();
    let token = first.token().clone();
    let mut third = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    match third
        .ask(&ClientToNode::Resume {
            req: 1,
            token: token.clone(),
        })
        .await
    {
        NodeToClient::Error {
            code: ErrorCode::QuotaExceeded,
            message,
            ..
        } => assert!(message.contains("at most 2"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    // Once one session ends, there is room again.
    first.close().await;
    let mut resumed = false;
    for req in 2..200 {
        if let NodeToClient::LoggedIn { .. } = third
            .ask(&ClientToNode::Resume {
                req,
                token: token.clone(),
            })
            .await
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "no room after a session ended");
}

async fn a_client_that_never_reads_costs_a_bounded_outbox(backend: Backend) {
    const BUDGET: usize = 256 * 1024;
    let Some(node) = TestNode::start_with(backend, |c| c.outbox_bytes = BUDGET).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (unique("alice"), unique("bob"));
    let mut alice = node.signup(&a, home.path()).await;
    let bob = node.signup(&b, home.path()).await;
    let token = bob.token().clone();
    bob.close().await;
    // Bob's second machine logs in and never reads.
    let mut lazy = Raw::connect(&node, "127.0.0.1:0").await.unwrap();
    lazy.send
        .send(&ClientToNode::Resume { req: 1, token })
        .await
        .unwrap();
    let text = "x".repeat(60_000);
    let mut sent = std::collections::HashSet::new();
    for _ in 0..120 {
        sent.insert(alice.send_text(&b, &text).await.unwrap());
        assert!(
            node.handle.buffered_bytes() <= BUDGET,
            "{} bytes held for a client that does not read",
            node.handle.buffered_bytes()
        );
    }
    // When it reads at last, everything arrives (re-read from storage), each message once
    // per read of the queue.
    let mut got = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < sent.len() {
        let frame = tokio::time::timeout_at(deadline, lazy.recv.expect::<NodeToClient>())
            .await
            .expect("every message arrives")
            .unwrap();
        if let NodeToClient::Deliver(delivery) = frame {
            got.insert(delivery.sealed.header.id);
        }
    }
    assert_eq!(got, sent);
}

on_both_backends!(
    a_client_that_never_reads_costs_a_bounded_outbox,
    a_connection_that_never_logs_in_is_closed,
    a_frame_that_stalls_closes_the_connection,
    before_login_only_small_frames_and_no_streams,
    a_ping_flood_is_paced,
    one_address_cannot_take_every_slot,
    sessions_per_account_are_bounded,
);
