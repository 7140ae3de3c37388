//! `bench drain`: 100,000 messages (10,000 with `--quick`) wait in one offline user's queue;
//! the user connects and receives them all, acknowledging in batches of 64 as the client
//! does. The queue is filled straight through `Storage::enqueue`, 1,000 messages per
//! transaction, with envelopes of real size (RSA-3072 wrapped key and signature, 120-byte
//! text) encoded exactly as the node stores them. Measured from the start of the connection
//! (handshake and `Resume` included) to the last delivery. Baseline: a bare quinn server
//! pushing as many frames of the same size down one stream.
//!
//! Acknowledgements go [`ACK_BATCH`] ids at a time. The node handles an `Ack` inline in the
//! session's read loop (a storage transaction, then a slot in the outbox the drain keeps
//! full), so while it floods deliveries it reads acks slower than a fast client sends them;
//! once the unread acks fill the control stream's receive window (1.1 MB) the client's next
//! ack write blocks, the client stops reading, the node's writer blocks, and the drain
//! deadlocks (measured: after ~78,000 messages with 64-id acks, ~50,000 with one-id acks).
//! Every read and write here is bounded by the deadline so that shows as a `STALLED` row.

use std::time::{Duration, Instant};

use quip_storage::{NewMessage, Storage};

use super::Options;
use super::report::{Report, Row};
use super::support::storage_note;
use crate::fixtures::{BenchNode, dm_envelope, msg_id, users};

/// Ids per acknowledgement while draining.
const ACK_BATCH: usize = 512;
/// Messages per enqueue transaction.
const BATCH: usize = 1000;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("drain");
    let total = if opts.quick { 10_000 } else { 100_000 };
    let node = BenchNode::start(opts.database_url.as_deref()).await?;
    let people = users(&node.storage, "drain", 2).await?;
    let (from, to) = (&people[0], &people[1]);
    let template = dm_envelope(from, to);
    let key = template
        .keys
        .iter()
        .find(|k| k.recipient == to.name)
        .map(|k| k.wrapped.clone())
        .unwrap_or_default();

    let filling = Instant::now();
    let mut sealed_len = 0;
    for start in (0..total).step_by(BATCH) {
        let batch: Vec<NewMessage> = (start..(start + BATCH).min(total))
            .map(|_| {
                let mut sealed = template.sealed.clone();
                sealed.header.id = msg_id();
                let body = quip_proto::frame::encode(&sealed).expect("encodes")[4..].to_vec();
                sealed_len = body.len();
                NewMessage {
                    id: sealed.header.id,
                    sender: sealed.header.sender.clone(),
                    sealed: body,
                    blob: None,
                    recipients: vec![(to.name.clone(), key.clone())],
                    // Now, not long ago: the node's expiry sweep would remove it.
                    created_at: super::support::now_ms(),
                }
            })
            .collect();
        node.storage.enqueue(&batch).await?;
    }
    let filled = filling.elapsed();

    let started = Instant::now();
    let mut conn = node.connect(to).await?;
    let connected = started.elapsed();
    let mut first = None;
    let mut last = started;
    let deadline = started + Duration::from_secs(if opts.quick { 30 } else { 120 });
    let run = receive_bounded(&mut conn, total, deadline, |at| {
        first.get_or_insert(at);
        last = at;
    })
    .await;
    let got = run.got;
    let elapsed = last - started;
    // Acks are fire-and-forget: give the node a moment to apply the last ones, then look.
    let mut left = usize::MAX;
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        left = node.storage.pending(&to.name, 0, 512).await?.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close().await;

    let frame = 4 + 3 + key.len() + sealed_len;
    let bare_rate = super::baseline::fanout(1, total, frame).await?.rate;
    let rate = got as f64 / elapsed.as_secs_f64().max(1e-9);
    let case = format!("{total} queued");
    report
        .rows
        .push(Row::new(&case, "delivered", got as f64, "msgs"));
    report
        .rows
        .push(Row::new(&case, "messages/s", rate, "1/s").vs(bare_rate));
    report.rows.push(
        Row::new(&case, "total time", elapsed.as_secs_f64() * 1e3, "ms")
            .vs(total as f64 / bare_rate.max(1e-9) * 1e3),
    );
    report.rows.push(Row::new(
        &case,
        "connect + resume",
        connected.as_secs_f64() * 1e3,
        "ms",
    ));
    report.rows.push(Row::new(
        &case,
        "first message",
        first.map_or(0.0, |f| (f - started).as_secs_f64() * 1e3),
        "ms",
    ));
    report
        .rows
        .push(Row::new(&case, "left after acks", left as f64, "msgs"));
    report.rows.push(Row::new(
        &case,
        "slowest ack write",
        run.slowest_ack.as_secs_f64() * 1e3,
        "ms",
    ));
    if let Some(at) = run.stalled_at {
        report
            .rows
            .push(Row::new(&case, "STALLED after", at as f64, "msgs"));
        report.notes.push(
            "stalled: an acknowledgement could not be written before the deadline — the node \
             stopped reading the control stream while its outbox was full of deliveries"
                .into(),
        );
    }
    report.rows.push(Row::new(
        "enqueue (storage only)",
        "messages/s",
        total as f64 / filled.as_secs_f64().max(1e-9),
        "1/s",
    ));
    report.notes.push(format!(
        "delivery frames of {frame} B; acks of {ACK_BATCH} ids (with 64 the node falls behind on \
         acks and the drain deadlocks near 78k messages: see the module docs)"
    ));
    report
        .notes
        .push(storage_note(opts.database_url.as_deref()));
    Ok(report)
}

/// What [`receive_bounded`] saw.
struct Received {
    /// Deliveries that arrived.
    got: usize,
    /// The longest an acknowledgement took to write (the node's back-pressure on acks).
    slowest_ack: Duration,
    /// Set when an acknowledgement could not be written before the deadline: the number of
    /// deliveries by then.
    stalled_at: Option<usize>,
}

/// Reads deliveries until `expected` arrived or `deadline`, acknowledging [`ACK_BATCH`] ids at
/// a time; no read or write may block it past the deadline.
async fn receive_bounded(
    conn: &mut quip_cli::Connection,
    expected: usize,
    deadline: Instant,
    mut seen: impl FnMut(Instant),
) -> Received {
    let mut out = Received {
        got: 0,
        slowest_ack: Duration::ZERO,
        stalled_at: None,
    };
    let mut acks = Vec::with_capacity(ACK_BATCH);
    while out.got < expected {
        let next = tokio::time::timeout_at(deadline.into(), conn.next_event());
        match next.await {
            Ok(Some(quip_cli::Event::Deliver(delivery))) => {
                seen(Instant::now());
                acks.push(delivery.sealed.header.id);
                out.got += 1;
            }
            Ok(Some(_)) => continue,
            _ => break,
        }
        if acks.len() >= ACK_BATCH || out.got == expected {
            let ids = std::mem::take(&mut acks);
            let writing = Instant::now();
            let written = tokio::time::timeout_at(
                deadline.into(),
                conn.send(&quip_proto::ClientToNode::Ack { ids }),
            )
            .await;
            out.slowest_ack = out.slowest_ack.max(writing.elapsed());
            if written.is_err() {
                out.stalled_at = Some(out.got);
                break;
            }
        }
    }
    out
}
