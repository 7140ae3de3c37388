//! Frame I/O on quinn streams: `u32` length + postcard, the length checked before the body
//! buffer is sized.

use quip_proto::frame::{self, PREFIX_LEN};
use quip_proto::{DecodeError, StreamOpen};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::FrameError;

/// The sending half of a stream, writing whole frames.
#[derive(Debug)]
pub struct FramedSend {
    inner: quinn::SendStream,
    buf: Vec<u8>,
}

impl FramedSend {
    /// Wraps a stream.
    pub fn new(inner: quinn::SendStream) -> Self {
        Self {
            inner,
            buf: Vec::new(),
        }
    }

    /// Encodes and writes one frame.
    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.buf.clear();
        frame::encode_into(msg, &mut self.buf)?;
        self.inner.write_all(&self.buf).await?;
        Ok(())
    }

    /// Writes bytes that already hold whole frames (e.g. one encoding shared by many
    /// recipients).
    pub async fn send_encoded(&mut self, frames: &[u8]) -> Result<(), FrameError> {
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

/// The receiving half of a stream, reading whole frames.
#[derive(Debug)]
pub struct FramedRecv {
    inner: quinn::RecvStream,
    max: usize,
    buf: Vec<u8>,
}

impl FramedRecv {
    /// Wraps a stream, refusing frames over `max` bytes (capped at the protocol's maximum).
    pub fn new(inner: quinn::RecvStream, max: usize) -> Self {
        Self {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream between frames.
    /// A stream that ends inside a frame is [`DecodeError::Truncated`].
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let mut prefix = [0u8; PREFIX_LEN];
        if !self.fill(&mut prefix, true).await? {
            return Ok(None);
        }
        let len = frame::body_len(prefix, self.max)?;
        self.buf.resize(len, 0);
        let mut body = std::mem::take(&mut self.buf);
        let filled = self.fill(&mut body, false).await;
        self.buf = body;
        filled?;
        Ok(Some(frame::decode_body(&self.buf)?))
    }

    /// Like [`recv`](Self::recv) but a clean end is an error: for replies that must come.
    pub async fn expect<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        self.recv()
            .await?
            .ok_or(FrameError::Decode(DecodeError::Truncated {
                missing: PREFIX_LEN,
            }))
    }

    /// Reads exactly `out.len()` bytes. Returns `false` if the stream ended before the first
    /// byte and `clean_end_ok`.
    async fn fill(&mut self, out: &mut [u8], clean_end_ok: bool) -> Result<bool, FrameError> {
        match self.inner.read_exact(out).await {
            Ok(()) => Ok(true),
            Err(quinn::ReadExactError::FinishedEarly(0)) if clean_end_ok => Ok(false),
            Err(quinn::ReadExactError::FinishedEarly(got)) => Err(DecodeError::Truncated {
                missing: out.len() - got,
            }
            .into()),
            Err(quinn::ReadExactError::ReadError(err)) => Err(err.into()),
        }
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
    let (send, recv) = conn.open_bi().await?;
    let mut send = FramedSend::new(send);
    send.send(open).await?;
    Ok((send, FramedRecv::new(recv, max_frame)))
}

/// Opens the control stream: `StreamOpen::Control(Hello)`, then waits for the peer's hello
/// and checks its version.
pub async fn open_control(
    conn: &quinn::Connection,
    agent: &str,
    max_frame: usize,
) -> Result<(FramedSend, FramedRecv, quip_proto::Hello), FrameError> {
    let ours = quip_proto::Hello::ours(agent);
    let (send, mut recv) = open_stream(conn, &StreamOpen::Control(ours), max_frame).await?;
    let theirs: quip_proto::Hello = recv.expect().await?;
    Ok((send, recv, theirs))
}
