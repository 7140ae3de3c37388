//! `bench poison`: honest throughput while another connection sends poison envelopes.
//!
//! Before issue 11's fix an envelope whose ciphertext was just under `MAX_SEALED` passed the
//! node's entry check but not storage's limit on the encoded sealed part: it failed its whole
//! commit batch, which the writer then retried one message at a time, and 200 of them per
//! second cut an honest sender from ~28k to ~2.3k msgs/s. This scenario measures what such a
//! stream costs honest senders now, on one in-process node:
//!
//! 1. honest alone: [`PAIRS`] sender → receiver pairs (each client its own QUIC connection),
//!    closed loop: every sender keeps [`WINDOW`] `Send`s unanswered, receivers acknowledge in
//!    batches of 64;
//! 2. the same while a poisoner sends [`POISON_RATE`] envelopes/s whose encoded sealed part is
//!    one byte over `MAX_SEALED` (refused `TooLarge` where they enter);
//! 3. the same while a poisoner sends [`POISON_RATE`] envelopes/s that pass the entry check but
//!    are refused inside the storage commit: their recipient's queue already holds the
//!    poisoner's per-sender quota (filled through the node before the phase), so each is
//!    `QuotaExceeded` in the same batches as the honest messages;
//! 4. honest alone again: how far the rate drifted over the run without any poison.
//!
//! Each phase warms up for [`WARM_UP`], then counts `Stored` answers and deliveries for
//! `--secs`. Storage: SQLite in a temp directory, or Postgres with `--database-url`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quip_cli::{ConnectError, Connection, Event};
use quip_proto::limits::MAX_SEALED;
use quip_proto::{ClientToNode, Envelope, ErrorCode, NodeToClient};

use super::Options;
use super::report::{Latency, Report, Row};
use super::support::{storage_note, vacuum_postgres};
use crate::fixtures::{BenchNode, BenchUser, dm_envelope, msg_id, users};

/// Honest sender/receiver pairs.
const PAIRS: usize = 4;
/// Unanswered `Send`s each honest sender keeps in flight.
const WINDOW: usize = 32;
/// Poison envelopes per second (the figure).
const POISON_RATE: u32 = 200;
/// Load before each measured window, so it starts in the steady state.
const WARM_UP: Duration = Duration::from_secs(2);
/// Acknowledgements are sent in batches of this many ids, as the client does.
const ACK_BATCH: usize = 64;
/// How long an answer may take before it counts as lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the poisoner sends in a phase.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Poison {
    None,
    /// Encoded sealed part one byte over `MAX_SEALED`.
    Oversized,
    /// To a recipient whose queue holds the poisoner's quota already.
    OverQuota,
}

/// One phase's figures.
struct Phase {
    stored: usize,
    delivered: usize,
    /// Honest sends answered with anything but `Stored`, or not at all.
    honest_failed: usize,
    first_failure: Option<String>,
    latency: Latency,
    poison_sent: usize,
    /// Poison answers by code (`Stored` counted under "stored").
    poison_answers: std::collections::BTreeMap<String, usize>,
    secs: f64,
}

impl Phase {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.secs.max(1e-9)
    }
}

/// The envelope template of a poison kind, from `poisoner` to `to`.
fn poison_template(kind: Poison, poisoner: &BenchUser, to: &BenchUser) -> Envelope {
    let mut envelope = dm_envelope(poisoner, to);
    if kind == Poison::Oversized {
        // Ciphertext alone under the limit; the encoded sealed part exactly one byte over.
        let room = MAX_SEALED - envelope.sealed.encoded_len();
        envelope
            .sealed
            .ciphertext
            .resize(envelope.sealed.ciphertext.len() + room, 0xc1);
        while envelope.sealed.encoded_len() > MAX_SEALED {
            envelope.sealed.ciphertext.pop();
        }
        envelope.sealed.ciphertext.push(0xc1);
    }
    envelope
}

/// The code an answer to a `Send` carries, for counting.
fn answer_code(answer: &Result<NodeToClient, ConnectError>) -> String {
    match answer {
        Ok(NodeToClient::Stored { .. }) => "stored".into(),
        Ok(other) => format!("answer {}", other.kind()),
        Err(ConnectError::Refused { code, .. }) => format!("{code:?}"),
        Err(err) => format!("failed: {err}"),
    }
}

/// Sends `count` envelopes from `from` to `to` through the node, `WINDOW` at a time, and
/// counts how many were stored.
async fn fill(conn: &Arc<Connection>, from: &BenchUser, to: &BenchUser, count: usize) -> usize {
    let template = dm_envelope(from, to);
    let mut stored = 0;
    let mut left = count;
    while left > 0 {
        let batch = left.min(256);
        left -= batch;
        let mut answers = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut envelope = template.clone();
            envelope.sealed.header.id = msg_id();
            let conn = conn.clone();
            answers.push(tokio::spawn(async move {
                conn.request(|req| ClientToNode::Send { req, envelope })
                    .await
            }));
        }
        for answer in answers {
            if matches!(answer.await, Ok(Ok(NodeToClient::Stored { .. }))) {
                stored += 1;
            }
        }
    }
    stored
}

/// Runs one phase: honest load (and the poisoner, if any) for `WARM_UP + secs`, counting the
/// last `secs`.
async fn phase(
    honest: &[(Arc<Connection>, BenchUser, BenchUser)],
    receivers: &mut Vec<Connection>,
    poisoner: &Arc<Connection>,
    template: Option<Envelope>,
    secs: f64,
) -> Phase {
    let start = Instant::now();
    let from = start + WARM_UP;
    let end = from + Duration::from_secs_f64(secs);
    let in_window = move |t: Instant| t >= from && t < end;

    // Receivers: count deliveries in the window, acknowledge everything in batches.
    let mut reading = Vec::new();
    for mut conn in std::mem::take(receivers) {
        reading.push(tokio::spawn(async move {
            let mut delivered = 0;
            let mut acks = Vec::with_capacity(ACK_BATCH);
            let stop = end + Duration::from_secs(2);
            loop {
                let next = tokio::time::timeout_at(stop.into(), conn.next_event());
                let delivery = match next.await {
                    Ok(Some(Event::Deliver(delivery))) => delivery,
                    Ok(Some(Event::Closed(_)) | None) | Err(_) => break,
                    Ok(Some(_)) => continue,
                };
                if in_window(Instant::now()) {
                    delivered += 1;
                }
                acks.push(delivery.sealed.header.id);
                if acks.len() >= ACK_BATCH {
                    let msg = ClientToNode::Ack {
                        ids: std::mem::take(&mut acks),
                    };
                    if tokio::time::timeout(ANSWER_TIMEOUT, conn.send(&msg))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            if !acks.is_empty() {
                let msg = ClientToNode::Ack { ids: acks };
                let _ = tokio::time::timeout(ANSWER_TIMEOUT, conn.send(&msg)).await;
            }
            (conn, delivered)
        }));
    }

    // Honest senders: WINDOW workers each, every worker one Send at a time.
    let mut sending = Vec::new();
    for (conn, from_user, to_user) in honest {
        let template = dm_envelope(from_user, to_user);
        for _ in 0..WINDOW {
            let (conn, template) = (conn.clone(), template.clone());
            sending.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut failed, mut first) = (0usize, None::<String>);
                while Instant::now() < end {
                    let mut envelope = template.clone();
                    envelope.sealed.header.id = msg_id();
                    let sent = Instant::now();
                    let request = conn.request(|req| ClientToNode::Send { req, envelope });
                    let answer = tokio::time::timeout(ANSWER_TIMEOUT, request).await;
                    let done = Instant::now();
                    let counted = in_window(done);
                    match answer {
                        Ok(Ok(NodeToClient::Stored { .. })) => {
                            if counted {
                                latencies.push(done - sent);
                            }
                        }
                        Ok(other) => {
                            failed += usize::from(counted);
                            first.get_or_insert_with(|| answer_code(&other));
                        }
                        Err(_) => {
                            failed += usize::from(counted);
                            first.get_or_insert_with(|| "no answer".into());
                        }
                    }
                }
                (latencies, failed, first)
            }));
        }
    }

    // The poisoner: paced, pipelined (it never waits for an answer before the next send).
    let poisoning = template.map(|template| {
        let conn = poisoner.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / POISON_RATE);
            let mut answers = Vec::new();
            let mut sent = 0;
            loop {
                let at = tick.tick().await.into_std();
                if at >= end {
                    break;
                }
                let mut envelope = template.clone();
                envelope.sealed.header.id = msg_id();
                let conn = conn.clone();
                let counted = in_window(at);
                sent += usize::from(counted);
                answers.push(tokio::spawn(async move {
                    let request = conn.request(|req| ClientToNode::Send { req, envelope });
                    let answer = tokio::time::timeout(ANSWER_TIMEOUT, request).await;
                    let code = match answer {
                        Ok(answer) => answer_code(&answer),
                        Err(_) => "no answer".into(),
                    };
                    counted.then_some(code)
                }));
            }
            let mut codes = std::collections::BTreeMap::new();
            for answer in answers {
                if let Ok(Some(code)) = answer.await {
                    *codes.entry(code).or_insert(0) += 1;
                }
            }
            (sent, codes)
        })
    });

    let mut latencies = Vec::new();
    let (mut honest_failed, mut first_failure) = (0, None);
    for worker in sending {
        if let Ok((l, f, first)) = worker.await {
            latencies.extend(l);
            honest_failed += f;
            if first_failure.is_none() {
                first_failure = first;
            }
        }
    }
    let (poison_sent, poison_answers) = match poisoning {
        Some(task) => task.await.unwrap_or_default(),
        None => (0, Default::default()),
    };
    let mut delivered = 0;
    for reader in reading {
        if let Ok((conn, d)) = reader.await {
            receivers.push(conn);
            delivered += d;
        }
    }
    Phase {
        stored: latencies.len(),
        delivered,
        honest_failed,
        first_failure,
        latency: Latency::of(&mut latencies),
        poison_sent,
        poison_answers,
        secs,
    }
}

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("poison");
    let (pairs, secs) = if opts.quick {
        (2, opts.secs.min(2.0))
    } else {
        (PAIRS, opts.secs)
    };
    vacuum_postgres(opts.database_url.as_deref()).await?;
    let node = BenchNode::start(opts.database_url.as_deref()).await?;
    // Honest pairs, then the poisoner, the oversized poison's (never reached) recipient and
    // the victim whose queue holds the poisoner's quota.
    let people = users(&node.storage, "poison", 2 * pairs + 3).await?;
    let (honest_people, rest) = people.split_at(2 * pairs);
    let (poisoner_user, sink, victim) = (&rest[0], &rest[1], &rest[2]);
    let mut honest = Vec::with_capacity(pairs);
    let mut receivers = Vec::with_capacity(pairs);
    for two in honest_people.chunks_exact(2) {
        honest.push((
            Arc::new(node.connect(&two[0]).await?),
            two[0].clone(),
            two[1].clone(),
        ));
        receivers.push(node.connect(&two[1]).await?);
    }
    let poisoner = Arc::new(node.connect(poisoner_user).await?);

    // The victim (never online) gets the poisoner's per-sender quota through the node; from
    // then on every message from the poisoner to it is refused in the commit.
    let quota = quip_node::NodeConfig::new(
        "node-bench".parse()?,
        "127.0.0.1:0".parse()?,
        std::path::PathBuf::new(),
    )
    .queue_quota;
    let per_sender = usize::try_from(quota.max_messages_per_sender)?;
    anyhow::ensure!(
        quota.max_messages_per_sender < quota.max_messages,
        "the per-sender quota is not the tighter one"
    );
    let filled = fill(&poisoner, poisoner_user, victim, per_sender).await;
    anyhow::ensure!(
        filled == per_sender,
        "filling the victim's queue stored {filled} of {per_sender}"
    );
    let probe = poison_template(Poison::OverQuota, poisoner_user, victim);
    let answer = poisoner
        .request(|req| ClientToNode::Send {
            req,
            envelope: probe,
        })
        .await;
    anyhow::ensure!(
        matches!(
            answer,
            Err(ConnectError::Refused {
                code: ErrorCode::QuotaExceeded,
                ..
            })
        ),
        "a send to the full queue answered {}",
        answer_code(&answer)
    );

    let storage = storage_note(opts.database_url.as_deref());
    let cases = [
        ("honest alone", Poison::None, sink),
        ("+200/s oversized", Poison::Oversized, sink),
        ("+200/s over quota", Poison::OverQuota, victim),
        // Drift check: what the same load does now that the storage has seen the others.
        ("honest alone, again", Poison::None, sink),
    ];
    let mut alone_rate = None;
    for (case, kind, to) in cases {
        let template = (kind != Poison::None).then(|| poison_template(kind, poisoner_user, to));
        let p = phase(&honest, &mut receivers, &poisoner, template, secs).await;
        anyhow::ensure!(
            receivers.len() == pairs,
            "{case}: a receiver's connection ended"
        );
        let stored = p.rate(p.stored);
        report
            .rows
            .push(Row::new(case, "honest stored", stored, "msg/s"));
        match alone_rate {
            Some(alone) => report.rows.push(Row::new(
                case,
                "stored / honest alone",
                stored / f64::max(alone, 1e-9),
                "ratio",
            )),
            None => alone_rate = Some(stored),
        }
        report.rows.push(Row::new(
            case,
            "honest delivered",
            p.rate(p.delivered),
            "msg/s",
        ));
        report
            .rows
            .push(Row::new(case, "p50 send→Stored", p.latency.p50_ms, "ms"));
        report
            .rows
            .push(Row::new(case, "p99 send→Stored", p.latency.p99_ms, "ms"));
        report.rows.push(Row::new(
            case,
            "honest failed",
            p.honest_failed as f64,
            "msgs",
        ));
        if kind != Poison::None {
            report
                .rows
                .push(Row::new(case, "poison sent", p.poison_sent as f64, "msgs"));
            let expected = match kind {
                Poison::Oversized => format!("{:?}", ErrorCode::TooLarge),
                _ => format!("{:?}", ErrorCode::QuotaExceeded),
            };
            let refused = p.poison_answers.get(&expected).copied().unwrap_or(0);
            report.rows.push(Row::new(
                case,
                &format!("poison refused {expected}"),
                refused as f64,
                "msgs",
            ));
            report
                .notes
                .push(format!("{case}: poison answers {:?}", p.poison_answers));
        }
        if let Some(first) = p.first_failure {
            report
                .notes
                .push(format!("{case}: first honest failure: {first}"));
        }
    }
    for conn in receivers {
        conn.close().await;
    }
    for (conn, _, _) in honest {
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.close().await;
        }
    }
    if let Ok(conn) = Arc::try_unwrap(poisoner) {
        conn.close().await;
    }
    node.handle.kill();
    report.notes.push(format!(
        "{pairs} honest pairs (one QUIC connection per client), closed loop: {WINDOW} Sends in \
         flight per sender, acks in batches of {ACK_BATCH}; one poisoner connection at \
         {POISON_RATE}/s (paced, pipelined); {} s warm-up then {secs} s counted per case; stored / honest alone is the \
         case's honest stored rate over the first case's (before the fix: ~0.08)",
        WARM_UP.as_secs()
    ));
    report.notes.push(format!(
        "oversized: encoded sealed part {} bytes (MAX_SEALED + 1); over quota: the victim's \
         queue holds the poisoner's {per_sender} (per-sender quota) before the phases",
        MAX_SEALED + 1
    ));
    report.notes.push(storage);
    report.notes.push(
        "the load generator shares the machine's cores with the node; the ratio is the figure"
            .into(),
    );
    Ok(report)
}
