//! Frames: a big-endian `u32` body length, then the postcard body.
//!
//! The length is checked against the limit *before* any buffer is sized by it, so a hostile
//! prefix costs nothing. Decoding is strict: a body must decode to exactly one message with no
//! trailing bytes. Nothing here panics on any input.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, EncodeError};
use crate::limits::MAX_FRAME;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Appends one frame (prefix and body) for `msg` to `out`. A body over `MAX_FRAME` is an
/// error and leaves `out` as it was.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    let taken = std::mem::take(out);
    let mut buf = match postcard::to_extend(msg, taken) {
        Ok(buf) => buf,
        Err(err) => {
            // postcard consumed the buffer; the caller's bytes are lost only if it fails,
            // which it cannot for our types, but keep the contract anyway.
            return Err(err.into());
        }
    };
    let len = buf.len() - start - PREFIX_LEN;
    if len > MAX_FRAME {
        buf.truncate(start);
        *out = buf;
        return Err(EncodeError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    // `len <= MAX_FRAME < u32::MAX`, so the cast is lossless.
    buf[start..start + PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    *out = buf;
    Ok(())
}

/// One frame for `msg`, as a new buffer.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Reads a length prefix and checks it against `max` (at most [`MAX_FRAME`]). An async reader
/// reads the prefix, calls this, then reads exactly the returned number of bytes.
pub fn body_len(prefix: [u8; PREFIX_LEN], max: usize) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(DecodeError::FrameTooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a whole body into exactly one `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: rest.len() });
    }
    Ok(msg)
}

/// If `buf` starts with a whole frame, its total length (prefix + body); `Ok(None)` if more
/// bytes are needed. Errors as soon as the prefix is over `max`.
pub fn check(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*prefix, max)?;
    Ok((buf.len() >= PREFIX_LEN + len).then_some(PREFIX_LEN + len))
}

/// Decodes the first frame of `buf`: `Ok(Some((msg, consumed)))`, or `Ok(None)` if the frame
/// is not complete yet.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, DecodeError> {
    match check(buf, max)? {
        None => Ok(None),
        Some(total) => decode_body(&buf[PREFIX_LEN..total]).map(|msg| Some((msg, total))),
    }
}

/// An incremental decoder for a byte stream: push bytes as they arrive, pull whole messages.
/// Holds at most one partial frame plus what was pushed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames over `max` (capped at [`MAX_FRAME`]).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.min(MAX_FRAME),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, or `Ok(None)` until more bytes arrive. After an error the
    /// stream is unusable (framing is lost) and the caller should close it.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        match decode(&self.buf, self.max)? {
            None => Ok(None),
            Some((msg, used)) => {
                self.buf.drain(..used);
                Ok(Some(msg))
            }
        }
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let missing = match self.buf.first_chunk::<PREFIX_LEN>() {
            Some(prefix) => (u32::from_be_bytes(*prefix) as usize + PREFIX_LEN) - self.buf.len(),
            None => PREFIX_LEN - self.buf.len(),
        };
        Err(DecodeError::Truncated { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Hello;

    fn hello() -> Hello {
        Hello {
            version: 1,
            agent: "t".into(),
        }
    }

    #[test]
    fn round_trip_and_partial() {
        let bytes = encode(&hello()).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode::<Hello>(&bytes[..cut], MAX_FRAME).unwrap(), None);
        }
        let (msg, used) = decode::<Hello>(&bytes, MAX_FRAME).unwrap().unwrap();
        assert_eq!((msg, used), (hello(), bytes.len()));
    }

    #[test]
    fn oversized_prefix_refused_before_body_arrives() {
        let prefix = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            decode::<Hello>(&prefix, MAX_FRAME),
            Err(DecodeError::FrameTooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
        assert!(matches!(
            body_len(100u32.to_be_bytes(), 99),
            Err(DecodeError::FrameTooLarge { len: 100, max: 99 })
        ));
    }

    #[test]
    fn trailing_bytes_and_garbage() {
        let mut body = postcard::to_stdvec(&hello()).unwrap();
        body.push(0);
        assert_eq!(
            decode_body::<Hello>(&body),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        assert!(matches!(
            decode_body::<Hello>(&[0xff; 3]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn encode_refuses_oversized() {
        let big = vec![0u8; MAX_FRAME + 1];
        let mut out = vec![7];
        assert!(matches!(
            encode_into(&big, &mut out),
            Err(EncodeError::FrameTooLarge { .. })
        ));
        assert_eq!(out, vec![7], "a refused frame leaves the buffer as it was");
    }

    #[test]
    fn decoder_streams_and_reports_truncation() {
        let mut wire = encode(&hello()).unwrap();
        wire.extend(encode(&hello()).unwrap());
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for byte in &wire[..wire.len() - 1] {
            dec.push(&[*byte]);
            while let Some(msg) = dec.next_message::<Hello>().unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(dec.finish(), Err(DecodeError::Truncated { missing: 1 }));
        dec.push(&wire[wire.len() - 1..]);
        assert_eq!(dec.next_message::<Hello>().unwrap(), Some(hello()));
        assert_eq!(dec.finish(), Ok(()));
    }
}
