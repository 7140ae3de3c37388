//! Frame I/O over real QUIC on loopback.

use std::time::Duration;

use quip_proto::Hello;
use quip_quic::{ClusterCa, FramedRecv, Limits, Trust};

const ALPN: &[u8] = b"quip-test/0";

/// A connected pair: (client side, server side).
async fn pair() -> (quinn::Connection, quinn::Connection) {
    let ca = ClusterCa::generate().unwrap();
    let id = ca.issue(&["t"]).unwrap();
    let limits = Limits::client();
    let server_config = quip_quic::server_config(&id, &[ALPN], None, &limits).unwrap();
    let server =
        quip_quic::server_endpoint("127.0.0.1:0".parse().unwrap(), server_config, &limits).unwrap();
    let addr = server.local_addr().unwrap();
    let client = quip_quic::client_endpoint("127.0.0.1:0".parse().unwrap(), &limits).unwrap();
    let config =
        quip_quic::client_config(&Trust::Ca(ca.cert().clone()), ALPN, None, &limits).unwrap();
    let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
    let conn = client
        .connect_with(config, addr, "t")
        .unwrap()
        .await
        .unwrap();
    (conn, accept.await.unwrap())
}

#[tokio::test]
async fn a_recv_cancelled_mid_frame_loses_nothing() {
    let (client, server) = pair().await;
    let frame = quip_proto::frame::encode(&Hello::ours("a fairly long agent string")).unwrap();
    let (mut send, _) = client.open_bi().await.unwrap();
    send.write_all(&frame[..7]).await.unwrap();
    let (_, recv) = server.accept_bi().await.unwrap();
    let mut recv = FramedRecv::new(recv, 1024);

    // The first attempt gives up while only part of the frame has arrived...
    let first = tokio::time::timeout(Duration::from_millis(100), recv.recv::<Hello>()).await;
    assert!(first.is_err(), "nothing whole to read yet");
    // ...and the frame completes on the next call.
    send.write_all(&frame[7..]).await.unwrap();
    let hello: Hello = recv.recv().await.unwrap().unwrap();
    assert_eq!(hello, Hello::ours("a fairly long agent string"));
    send.finish().unwrap();
    assert!(
        recv.recv::<Hello>().await.unwrap().is_none(),
        "clean end between frames"
    );
}

#[tokio::test]
async fn oversized_and_truncated_frames_are_errors() {
    let (client, server) = pair().await;
    let (mut send, _) = client.open_bi().await.unwrap();
    send.write_all(&[0, 0, 4, 0]).await.unwrap(); // announces 1024 bytes
    let (_, recv) = server.accept_bi().await.unwrap();
    let mut recv = FramedRecv::new(recv, 100);
    let err = recv.recv::<Hello>().await.unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");

    let (mut send, _) = client.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
    send.finish().unwrap();
    let (_, recv) = server.accept_bi().await.unwrap();
    let mut recv = FramedRecv::new(recv, 100);
    let err = recv.recv::<Hello>().await.unwrap_err();
    assert!(err.to_string().contains("short of a whole frame"), "{err}");
}
