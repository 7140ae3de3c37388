//! The frame codec and every message type decoded from the wire.
//!
//! Input: one byte choosing the type (`quip_fuzz::WIRE_TYPES`), one byte choosing how the
//! stream is cut into reads, then the bytes a peer sent. The stream is decoded twice: as
//! `FramedRecv` does it (prefix → `frame::body_len` → `frame::decode_body`) and through the
//! incremental `FrameDecoder` fed in pieces. Both must agree message for message; every
//! decoded message must encode again and decode to itself.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use quip_proto::frame::{self, FrameDecoder, PREFIX_LEN};
use quip_proto::limits::MAX_FRAME;
use quip_proto::{
    Chunk, ClientToMaster, ClientToNode, Delivery, Envelope, Hello, MasterToClient, MasterToNode,
    NodeToClient, NodeToMaster, Sealed, SignedChange, StreamOpen,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How a stream of frames ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte was part of a whole frame.
    Clean,
    /// Bytes left that are not a whole frame yet.
    Partial,
    /// A frame was refused.
    Refused,
}

/// Decodes `stream` as `FramedRecv` does, stopping at the first refusal.
fn as_framed_recv<T: DeserializeOwned>(mut stream: &[u8]) -> (Vec<T>, End) {
    let mut out = Vec::new();
    loop {
        if stream.is_empty() {
            return (out, End::Clean);
        }
        let Some(prefix) = stream.first_chunk::<PREFIX_LEN>() else {
            return (out, End::Partial);
        };
        let Ok(len) = frame::body_len(*prefix, MAX_FRAME) else {
            return (out, End::Refused);
        };
        let Some(body) = stream.get(PREFIX_LEN..PREFIX_LEN + len) else {
            return (out, End::Partial);
        };
        match frame::decode_body(body) {
            Ok(msg) => out.push(msg),
            Err(_) => return (out, End::Refused),
        }
        stream = &stream[PREFIX_LEN + len..];
    }
}

/// Decodes `stream` with a `FrameDecoder` fed `piece` bytes at a time.
fn as_decoder<T: DeserializeOwned>(stream: &[u8], piece: usize) -> (Vec<T>, End) {
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let mut out = Vec::new();
    for part in stream.chunks(piece) {
        dec.push(part);
        loop {
            match dec.next_message() {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                Err(_) => return (out, End::Refused),
            }
        }
    }
    // At the end of the stream, `finish` says whether a partial frame is left.
    match dec.finish() {
        Ok(()) => (out, End::Clean),
        Err(_) => (out, End::Partial),
    }
}

fn check<T>(stream: &[u8], piece: usize, extra: impl Fn(&T))
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let (framed, end) = as_framed_recv::<T>(stream);
    let (streamed, streamed_end) = as_decoder::<T>(stream, piece);
    assert_eq!(framed, streamed, "both decoders yield the same messages");
    assert_eq!(end, streamed_end, "and end the same way");
    for msg in &framed {
        let again = frame::encode(msg).expect("a decoded message encodes within the limit");
        let (back, used) = frame::decode::<T>(&again, MAX_FRAME)
            .expect("its encoding decodes")
            .expect("as one whole frame");
        assert_eq!(used, again.len());
        assert_eq!(&back, msg, "decode(encode(m)) == m");
        extra(msg);
    }
}

fn none<T>(_: &T) {}

fuzz_target!(|data: &[u8]| {
    let [kind, piece, stream @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece).max(1);
    match usize::from(*kind) % quip_fuzz::WIRE_TYPES.len() {
        0 => check(stream, piece, |m: &ClientToNode| {
            let _ = m.kind();
        }),
        1 => check(stream, piece, |m: &NodeToClient| {
            let _ = m.kind();
        }),
        2 => check(stream, piece, none::<NodeToMaster>),
        3 => check(stream, piece, none::<MasterToNode>),
        4 => check(stream, piece, none::<ClientToMaster>),
        5 => check(stream, piece, none::<MasterToClient>),
        6 => check(stream, piece, |m: &StreamOpen| match m {
            StreamOpen::Control(hello) => {
                let _ = hello.check_version();
            }
            StreamOpen::ImageUpload { envelope, .. } => {
                let _ = envelope.check();
            }
            _ => {}
        }),
        7 => check(stream, piece, none::<Chunk>),
        8 => check(stream, piece, |m: &Hello| {
            let _ = m.check_version();
        }),
        9 => check(stream, piece, |m: &SignedChange| {
            // The stored form round-trips too.
            let stored = m.to_bytes();
            assert_eq!(&SignedChange::from_bytes(&stored).expect("stored form"), m);
            let _ = m.change.signing_bytes();
        }),
        10 => check(stream, piece, none::<Sealed>),
        11 => check(stream, piece, |m: &Envelope| {
            let _ = m.check();
        }),
        _ => check(stream, piece, none::<Delivery>),
    }
});
