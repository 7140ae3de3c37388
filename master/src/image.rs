//! Image relay: a node opens a bi stream with `StreamOpen::RelayImage` and `Chunk` frames;
//! the master opens one stream per destination node and pipes the chunks one at a time, so
//! memory per relay is one chunk whatever the image size, and the slowest destination sets
//! the pace (QUIC flow control pushes back to the origin).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quip_proto::ids::NodeName;
use quip_proto::limits::{MAX_BLOB_CHUNK, MAX_FRAME};
use quip_proto::relay::Relayed;
use quip_proto::{Chunk, ContentKind, StreamOpen, frame};
use quip_quic::{FramedRecv, FramedSend};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::Master;
use crate::session::HELLO_TIMEOUT;

/// How long one chunk may wait for a destination to take it before that destination is
/// given up (its node reads the image from storage instead).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC stream error codes on image relay streams (`STOP_SENDING` towards the origin,
/// `RESET_STREAM` towards a destination).
pub mod stream_code {
    /// The stream did not start with `StreamOpen::RelayImage`, or a frame was malformed.
    pub const PROTOCOL: u32 = 1;
    /// No recipient is connected to another node: nothing to relay.
    pub const NO_RECIPIENTS: u32 = 10;
    /// The image is larger than announced or than the master's limit, or a chunk is too big.
    pub const TOO_LARGE: u32 = 11;
    /// The origin's stream failed mid-way; the destination must discard what it got.
    pub const ORIGIN_FAILED: u32 = 12;
    /// Every destination failed.
    pub const DESTINATIONS_FAILED: u32 = 13;
    /// The envelope breaks a structural rule, or the origin is no longer registered.
    pub const REFUSED: u32 = 14;
}

/// Accepts the image streams a registered node opens, one task each, until its connection
/// ends.
pub(crate) async fn accept_images(
    master: Arc<Master>,
    origin: NodeName,
    conn_id: u64,
    conn: quinn::Connection,
) {
    let mut relays = JoinSet::new();
    while let Ok((send, recv)) = conn.accept_bi().await {
        let relay = relay_image(master.clone(), origin.clone(), conn_id, send, recv);
        relays.spawn(relay.instrument(tracing::Span::current()));
        while relays.try_join_next().is_some() {}
    }
}

/// One destination stream.
struct Out {
    node: NodeName,
    send: FramedSend,
}

async fn relay_image(
    master: Arc<Master>,
    origin: NodeName,
    conn_id: u64,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    // Nothing goes back to the origin on an image stream.
    let _ = FramedSend::new(send).finish();
    let mut recv = FramedRecv::new(recv, MAX_FRAME);
    let refuse = |recv: &mut FramedRecv, code: u32| {
        let _ = recv.stream().stop(code.into());
    };
    let opened = tokio::time::timeout(HELLO_TIMEOUT, recv.expect::<StreamOpen>()).await;
    let Ok(Ok(StreamOpen::RelayImage(relayed))) = opened else {
        tracing::info!("image stream without a RelayImage opening; refused");
        return refuse(&mut recv, stream_code::PROTOCOL);
    };
    let msg = relayed.sealed.header.id;
    let len = match relayed.sealed.header.kind {
        ContentKind::Image { len, .. } if len <= master.config.max_image_bytes => len,
        ContentKind::Image { len, .. } => {
            tracing::info!(%msg, len, "relayed image over the limit; refused");
            return refuse(&mut recv, stream_code::TOO_LARGE);
        }
        _ => {
            tracing::info!(%msg, "RelayImage for an envelope that is not an image; refused");
            return refuse(&mut recv, stream_code::REFUSED);
        }
    };
    if let Err(why) = crate::relay::check_relayed(&relayed) {
        tracing::info!(%msg, %why, "image relay refused");
        return refuse(&mut recv, stream_code::REFUSED);
    }
    let Ok((destinations, unrouted)) = master.registry.route(&origin, conn_id, &relayed.keys)
    else {
        return refuse(&mut recv, stream_code::REFUSED);
    };
    if unrouted > 0 {
        tracing::debug!(%msg, unrouted, "image recipients connected nowhere else");
    }
    let mut outs = open_destinations(relayed, destinations).await;
    if outs.is_empty() {
        tracing::debug!(%msg, "no destination for the image");
        return refuse(&mut recv, stream_code::NO_RECIPIENTS);
    }
    let mut total: u64 = 0;
    loop {
        let chunk = match recv.recv::<Chunk>().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(err) => {
                tracing::info!(%msg, error = %err, "origin image stream failed; resetting destinations");
                reset_all(&mut outs, stream_code::ORIGIN_FAILED);
                return;
            }
        };
        total = total.saturating_add(chunk.data.len() as u64);
        if chunk.data.len() > MAX_BLOB_CHUNK || total > len {
            tracing::info!(%msg, total, len, "image larger than announced; refused");
            reset_all(&mut outs, stream_code::TOO_LARGE);
            return refuse(&mut recv, stream_code::TOO_LARGE);
        }
        let Ok(encoded) = frame::encode(&chunk).map(Bytes::from) else {
            reset_all(&mut outs, stream_code::TOO_LARGE);
            return refuse(&mut recv, stream_code::TOO_LARGE);
        };
        forward(&mut outs, &encoded).await;
        if outs.is_empty() {
            tracing::info!(%msg, "every destination failed; stopping the origin");
            return refuse(&mut recv, stream_code::DESTINATIONS_FAILED);
        }
    }
    for out in &mut outs {
        let _ = out.send.finish();
    }
    tracing::debug!(%msg, bytes = total, destinations = outs.len(), "image relayed");
}

/// Opens a stream to every destination with its share of the keys; destinations that cannot
/// be reached are left out (their node reads the image from storage).
async fn open_destinations(
    relayed: Relayed,
    destinations: Vec<crate::registry::Destination<crate::relay::NodeLink>>,
) -> Vec<Out> {
    let mut outs = Vec::with_capacity(destinations.len());
    for (node, link, keys) in destinations {
        let open = StreamOpen::RelayImage(Relayed {
            sealed: relayed.sealed.clone(),
            keys,
        });
        let conn = link.conn;
        let opened = tokio::time::timeout(
            WRITE_TIMEOUT,
            quip_quic::open_stream(&conn, &open, MAX_FRAME),
        )
        .await;
        match opened {
            Ok(Ok((send, _recv))) => outs.push(Out { node, send }),
            Ok(Err(err)) => tracing::info!(to = %node, error = %err, "cannot open an image stream"),
            Err(_) => tracing::info!(to = %node, "timed out opening an image stream"),
        }
    }
    outs
}

/// Writes one encoded chunk to every destination; a destination that fails or stalls is
/// reset and dropped.
async fn forward(outs: &mut Vec<Out>, encoded: &Bytes) {
    let mut failed = Vec::new();
    for (i, out) in outs.iter_mut().enumerate() {
        let written = tokio::time::timeout(WRITE_TIMEOUT, out.send.send_encoded(encoded)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::info!(to = %out.node, "destination failed mid-image; resetting its stream");
            let _ = out
                .send
                .stream()
                .reset(stream_code::DESTINATIONS_FAILED.into());
            failed.push(i);
        }
    }
    for i in failed.into_iter().rev() {
        outs.swap_remove(i);
    }
}

fn reset_all(outs: &mut [Out], code: u32) {
    for out in outs {
        let _ = out.send.stream().reset(code.into());
    }
}
