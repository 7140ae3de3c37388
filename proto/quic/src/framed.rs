//! Frame I/O on quinn streams: `u32` length + postcard, the length checked before the body
//! buffer is sized.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quip_proto::frame::{self, PREFIX_LEN};
use quip_proto::{DecodeError, StreamOpen};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::FrameError;
use crate::tap::{self, Direction, Link};

/// The sending half of a stream, writing whole frames.
#[derive(Debug)]
pub struct FramedSend {
    inner: quinn::SendStream,
    buf: Vec<u8>,
    /// Set when this end reports what it writes (see [`crate::tap`]).
    tap: Option<Arc<Link>>,
}

impl FramedSend {
    /// Wraps a stream.
    pub fn new(inner: quinn::SendStream) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            tap: None,
        }
    }

    /// Encodes and writes one frame.
    pub async fn send<T: Serialize + Debug + ?Sized>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.buf.clear();
        frame::encode_into(msg, &mut self.buf)?;
        // Reported before the write: the peer cannot answer before it is recorded.
        if let Some(link) = &self.tap {
            tap::report(link, self.inner.id(), Direction::Sent, &msg);
        }
        self.inner.write_all(&self.buf).await?;
        Ok(())
    }

    /// Writes bytes that already hold whole frames (e.g. one encoding shared by many
    /// recipients).
    pub async fn send_encoded(&mut self, frames: &[u8]) -> Result<(), FrameError> {
        if let Some(link) = &self.tap {
            let what = format_args!("<{} bytes of pre-encoded frames>", frames.len());
            tap::report(link, self.inner.id(), Direction::Sent, &what);
        }
        self.inner.write_all(frames).await?;
        Ok(())
    }

    /// Finishes the stream: the peer reads a clean end after the last frame.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        self.inner.finish().map_err(|_| FrameError::Closed)
    }

    /// The underlying stream (to reset it, or set its priority).
    pub fn stream(&mut self) -> &mut quinn::SendStream {
        &mut self.inner
    }
}

/// The receiving half of a stream, reading whole frames. Cancel-safe: a `recv` dropped
/// mid-frame (say, in a `select!`) keeps what it read, and the next call continues the frame.
///
/// Memory follows the bytes that actually arrived, never the length a peer announces: the
/// body grows chunk by chunk as quinn hands them over (at most twice what was received), so
/// a prefix announcing a megabyte costs nothing until the megabyte is sent. With a frame
/// deadline set, a peer that starts a frame and stalls gets [`FrameError::Stalled`].
#[derive(Debug)]
pub struct FramedRecv {
    inner: quinn::RecvStream,
    max: usize,
    prefix: [u8; PREFIX_LEN],
    /// Prefix bytes of the current frame read so far.
    have: usize,
    /// The current frame's body length, once its prefix is complete.
    want: Option<usize>,
    /// The body bytes received so far.
    body: Vec<u8>,
    /// How long a frame may take from its first byte to its last.
    frame_deadline: Option<Duration>,
    /// When the current frame's first byte arrived.
    started: Option<Instant>,
    /// Set when this end reports what it reads (see [`crate::tap`]).
    tap: Option<Arc<Link>>,
}

/// A body buffer larger than this is released after its frame, so an idle connection does not
/// keep a large frame's memory.
const KEEP_BUFFER: usize = 64 * 1024;

impl FramedRecv {
    /// Wraps a stream, refusing frames over `max` bytes (capped at the protocol's maximum).
    pub fn new(inner: quinn::RecvStream, max: usize) -> Self {
        Self {
            inner,
            max,
            prefix: [0; PREFIX_LEN],
            have: 0,
            want: None,
            body: Vec::new(),
            frame_deadline: None,
            started: None,
            tap: None,
        }
    }

    /// Sets how long one frame may take to arrive once its first byte has (servers use it so a
    /// peer cannot hold a half-sent frame open forever). Waiting *between* frames is not
    /// limited here.
    pub fn with_frame_deadline(mut self, deadline: Duration) -> Self {
        self.frame_deadline = Some(deadline);
        self
    }

    /// Changes the largest frame accepted from the next frame on (a server raises it once
    /// the peer has logged in).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The next message; `Ok(None)` when the peer finished the stream between frames.
    /// A stream that ends inside a frame is [`DecodeError::Truncated`].
    pub async fn recv<T: DeserializeOwned + Debug>(&mut self) -> Result<Option<T>, FrameError> {
        if self.have == 0 {
            // Between frames: wait as long as it takes for the next one to start.
            match self.inner.read(&mut self.prefix).await? {
                Some(n) => self.have = n,
                None => return Ok(None),
            }
            self.started = Some(Instant::now());
        }
        let len = match (self.frame_deadline, self.started) {
            (Some(limit), Some(started)) => {
                tokio::time::timeout_at((started + limit).into(), self.rest_of_frame())
                    .await
                    .map_err(|_| FrameError::Stalled(limit))??
            }
            _ => self.rest_of_frame().await?,
        };
        self.have = 0;
        self.want = None;
        self.started = None;
        let msg = frame::decode_body(&self.body[..len]);
        if self.body.capacity() > KEEP_BUFFER {
            self.body = Vec::new();
        } else {
            self.body.clear();
        }
        let msg: T = msg?;
        if let Some(link) = &self.tap {
            tap::report(link, self.inner.id(), Direction::Received, &msg);
        }
        Ok(Some(msg))
    }

    /// Reads the rest of the current frame (cancel-safe: progress lives in `self`); returns
    /// the body length.
    async fn rest_of_frame(&mut self) -> Result<usize, FrameError> {
        while self.have < PREFIX_LEN {
            match self.inner.read(&mut self.prefix[self.have..]).await? {
                Some(n) => self.have += n,
                None => {
                    return Err(DecodeError::Truncated {
                        missing: PREFIX_LEN - self.have,
                    }
                    .into());
                }
            }
        }
        let len = match self.want {
            Some(len) => len,
            None => {
                let len = frame::body_len(self.prefix, self.max)?;
                self.body.clear();
                self.want = Some(len);
                len
            }
        };
        while self.body.len() < len {
            match self.inner.read_chunk(len - self.body.len(), true).await? {
                Some(chunk) => self.body.extend_from_slice(&chunk.bytes),
                None => {
                    return Err(DecodeError::Truncated {
                        missing: len - self.body.len(),
                    }
                    .into());
                }
            }
        }
        Ok(len)
    }

    /// Like [`recv`](Self::recv) but a clean end is an error: for replies that must come.
    pub async fn expect<T: DeserializeOwned + Debug>(&mut self) -> Result<T, FrameError> {
        self.recv()
            .await?
            .ok_or(FrameError::Decode(DecodeError::Truncated {
                missing: PREFIX_LEN,
            }))
    }

    /// The underlying stream (to stop it).
    pub fn stream(&mut self) -> &mut quinn::RecvStream {
        &mut self.inner
    }
}

/// Opens a bidirectional stream and sends its [`StreamOpen`] frame.
pub async fn open_stream(
    conn: &quinn::Connection,
    open: &StreamOpen,
    max_frame: usize,
) -> Result<(FramedSend, FramedRecv), FrameError> {
    // The accepting end does not know the connection: this end reports both ways.
    open_bi(conn, open, max_frame, true).await
}

async fn open_bi(
    conn: &quinn::Connection,
    open: &StreamOpen,
    max_frame: usize,
    report_sent: bool,
) -> Result<(FramedSend, FramedRecv), FrameError> {
    let link = tap::link(conn);
    let (send, recv) = conn.open_bi().await?;
    let mut send = FramedSend::new(send);
    send.tap = link.clone().filter(|_| report_sent);
    send.send(open).await?;
    let mut recv = FramedRecv::new(recv, max_frame);
    recv.tap = link;
    Ok((send, recv))
}

/// Opens the control stream: `StreamOpen::Control(Hello)`, then waits for the peer's hello
/// and checks its version.
pub async fn open_control(
    conn: &quinn::Connection,
    agent: &str,
    max_frame: usize,
) -> Result<(FramedSend, FramedRecv, quip_proto::Hello), FrameError> {
    let ours = quip_proto::Hello::ours(agent);
    // The accepting end reads this stream through `accept_control` and reports what it reads.
    let (send, mut recv) = open_bi(conn, &StreamOpen::Control(ours), max_frame, false).await?;
    let theirs: quip_proto::Hello = recv.expect().await?;
    Ok((send, recv, theirs))
}

/// QUIC application close codes shared by every Quip endpoint for handshake failures.
pub mod close {
    /// The peer broke the protocol (wrong first stream, malformed frame).
    pub const PROTOCOL: u32 = 1;
    /// The peer speaks another protocol version.
    pub const VERSION: u32 = 2;
    /// The peer was too slow: it did not log in in time, or stalled inside a frame.
    pub const TIMEOUT: u32 = 10;
    /// The peer's address already holds as many connections as a server allows.
    pub const LIMIT: u32 = 11;
    /// The peer sent requests past its budget while told to wait.
    pub const FLOOD: u32 = 12;
}

/// How long a new connection may take to open its control stream and say hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long to wait for the peer to read a final frame before closing.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Finishes `send`, waits (briefly) until the peer has read it, then closes the connection
/// with `code` and `reason`: the peer gets the last frame *and* the reason.
pub async fn flush_then_close(
    conn: &quinn::Connection,
    mut send: FramedSend,
    code: u32,
    reason: &str,
) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stream().stopped()).await;
    }
    conn.close(code.into(), reason.as_bytes());
}

/// The server side of the handshake, for every Quip endpoint: accepts the control stream,
/// reads `StreamOpen::Control(hello)`, answers with our hello and checks the version. On a
/// wrong first stream, silence, or a version mismatch, the connection is closed with a reason
/// (the peer still gets our hello, so it can name both versions) and `None` is returned.
pub async fn accept_control(
    conn: &quinn::Connection,
    agent: &str,
    max_frame: usize,
) -> Option<(FramedSend, FramedRecv, quip_proto::Hello)> {
    let accepted = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, recv) = conn.accept_bi().await.ok()?;
        let mut recv = FramedRecv::new(recv, max_frame);
        recv.tap = tap::link(conn);
        let open = recv.expect::<StreamOpen>().await.ok()?;
        Some((FramedSend::new(send), recv, open))
    })
    .await
    .ok()
    .flatten();
    let Some((mut send, recv, open)) = accepted else {
        conn.close(
            close::PROTOCOL.into(),
            b"expected a control stream with a hello",
        );
        return None;
    };
    let StreamOpen::Control(hello) = open else {
        conn.close(
            close::PROTOCOL.into(),
            b"the first stream must be the control stream",
        );
        return None;
    };
    send.send(&quip_proto::Hello::ours(agent)).await.ok()?;
    if let Err(why) = hello.check_version() {
        tracing::info!(peer = hello.version, "version mismatch");
        flush_then_close(conn, send, close::VERSION, &why).await;
        return None;
    }
    Some((send, recv, hello))
}
