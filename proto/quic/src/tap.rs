//! A process-wide frame tap, for protocol transcripts (`quip-testnet`'s transcript test):
//! every decoded frame on the streams [`crate::framed`] sets up from a connection, with the
//! connection it travelled on.
//!
//! Not a `tracing` target on purpose: frames carry login secrets, wrapped keys and ciphertext,
//! and `RUST_LOG=trace` must never print them. Only code in the same process can install the
//! tap, so a server never reports a frame. With no tap installed, a stream costs one atomic load
//! when it is set up and one branch per frame.
//!
//! Each frame is reported once, by the end that knows the connection: control streams by the
//! reader at both ends ([`crate::open_control`] and [`crate::accept_control`]); streams opened
//! with [`crate::open_stream`] by the opener, which reports what it writes and what it reads
//! (the accepting end wraps the stream with `FramedRecv::new`, which never reports).

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// The connection a frame travelled on, as the reporting end sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Names the connection, the same at both ends (from the TLS exporter).
    pub id: u64,
    /// The connection's ALPN: `quip/1`, `quip-relay/1` or `quip-discovery/1`.
    pub alpn: String,
    /// The reporting end accepted the connection.
    pub server: bool,
    /// The other end's address.
    pub remote: SocketAddr,
}

/// Which way the frame went, from the reporting end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read from the stream.
    Received,
    /// Written to the stream.
    Sent,
}

/// One frame, as reported to the tap.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The connection.
    pub link: &'a Link,
    /// The QUIC stream id (0 is the client's control stream).
    pub stream: u64,
    /// Received or sent by the reporting end.
    pub direction: Direction,
    /// The decoded message.
    pub message: &'a dyn Debug,
}

type Hook = Box<dyn Fn(&Frame<'_>) + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the tap for the rest of the process; `false` if one was installed already.
/// Install it before the connections to watch are made: streams set up earlier report nothing.
pub fn install(hook: impl Fn(&Frame<'_>) + Send + Sync + 'static) -> bool {
    HOOK.set(Box::new(hook)).is_ok()
}

/// The link of `conn` if a tap is installed.
pub(crate) fn link(conn: &quinn::Connection) -> Option<Arc<Link>> {
    HOOK.get()?;
    let mut id = [0u8; 8];
    conn.export_keying_material(&mut id, b"quip frame tap", b"")
        .ok()?;
    let alpn = conn
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .map(|alpn| String::from_utf8_lossy(&alpn).into_owned())
        .unwrap_or_default();
    Some(Arc::new(Link {
        id: u64::from_be_bytes(id),
        alpn,
        server: conn.side() == quinn::Side::Server,
        remote: conn.remote_address(),
    }))
}

/// Hands one frame to the tap.
pub(crate) fn report(
    link: &Link,
    stream: quinn::StreamId,
    direction: Direction,
    message: &dyn Debug,
) {
    if let Some(hook) = HOOK.get() {
        hook(&Frame {
            link,
            stream: stream.into(),
            direction,
            message,
        });
    }
}
