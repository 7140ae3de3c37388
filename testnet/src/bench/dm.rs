//! `bench dm`: one-to-one messages, same node and across nodes (via the master), at a rate
//! stepped up until the network cannot keep it.
//!
//! `PAIRS` sender/receiver pairs, every client its own QUIC connection (32 pairs, 64
//! connections; 16 pairs with `--quick`). Open loop: message `g` is due at `start + g/rate`
//! and pair `g % PAIRS` submits it then (`Send`, pipelined: nobody waits for `Stored` before
//! sending the next), whatever happened to earlier ones; its latency runs from that intended
//! time to its arrival at the receiving client, so a stall shows as latency and never as a
//! politely lower rate. The message id carries `g`, so the receiver needs no shared map.
//! Envelopes are pre-built at RSA-3072 sizes (crypto is measured by `bench crypto`).
//!
//! Each step runs `--secs` at one rate; a message not delivered within [`GRACE`] after the
//! step is lost. The ladder stops at the first step with p99 ≥ 100 ms, a loss or a refusal;
//! the last step that held is the maximum sustainable rate. Same node: both clients on one
//! node. Cross node: a master and two nodes sharing storage, senders on node 0 and receivers
//! on node 1, so every message is stored by node 0, relayed by the master and pushed by
//! node 1. Storage: SQLite in a temp directory, or Postgres with `--database-url`.
//!
//! Baselines, the same pairs, sizes and ladder on bare quinn with the same transport limits:
//! an echo server (client → server → the same client, one stream) for same node, and a relay
//! (client → relay → another client) for cross node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quip_cli::{Connection, Event};
use quip_proto::ids::MsgId;
use quip_proto::{ClientToNode, NodeToClient};
use quip_quic::Trust;

use super::Options;
use super::baseline::{Path, Schedule, Step};
use super::report::{Latency, Report, Row};
use super::support::{random, resume_on, storage_note, vacuum_postgres};
use crate::cluster::{Cluster, ClusterConfig};
use crate::fixtures::{BenchNode, BenchUser, dm_envelope, users};

/// How long after a step's last due time a message may still arrive before it counts as lost.
const GRACE: Duration = Duration::from_secs(5);
/// The sustainable-rate criterion (the issue's): p99 under this, nothing lost.
const SUSTAINABLE_P99_MS: f64 = 100.0;
/// The floor's stricter latency bound.
const FLOOR_P99_MS: f64 = 50.0;
/// Acknowledgements are sent in batches of this many ids, as the client does.
const ACK_BATCH: usize = 64;
/// Stop starting new steps after this long per ladder.
const LADDER_BUDGET: Duration = Duration::from_secs(300);

const LADDER: &[u32] = &[
    1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 40_000, 60_000, 80_000,
    100_000,
];
const QUICK_LADDER: &[u32] = &[1_000, 2_000, 5_000];

/// A sender/receiver pair's live connections.
struct Pairs {
    people: Vec<(BenchUser, BenchUser)>,
    senders: Vec<Arc<Connection>>,
    receivers: Vec<Connection>,
    /// Distinguishes this run's message ids from any other's.
    tag: [u8; 4],
    steps: u8,
}

impl Pairs {
    async fn connect(
        people: Vec<BenchUser>,
        send_to: std::net::SocketAddr,
        receive_from: std::net::SocketAddr,
        trust: &Trust,
    ) -> anyhow::Result<Self> {
        let mut pairs = Self {
            people: Vec::new(),
            senders: Vec::new(),
            receivers: Vec::new(),
            tag: random(),
            steps: 0,
        };
        for two in people.chunks_exact(2) {
            pairs
                .senders
                .push(Arc::new(resume_on(send_to, trust, &two[0]).await?));
            pairs
                .receivers
                .push(resume_on(receive_from, trust, &two[1]).await?);
            pairs.people.push((two[0].clone(), two[1].clone()));
        }
        Ok(pairs)
    }

    fn id(&self, step: u8, g: u64) -> MsgId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&self.tag);
        id[4] = step;
        id[8..].copy_from_slice(&g.to_be_bytes());
        MsgId(id)
    }

    /// Runs one open-loop step at `rate` for `secs`.
    async fn step(&mut self, rate: u32, secs: f64) -> Step {
        self.steps = self.steps.wrapping_add(1);
        let step = self.steps;
        let pairs = self.people.len();
        let schedule = Schedule::new(rate, pairs, secs);
        let deadline = schedule.deadline(GRACE);
        let cpu_before = super::support::own_cpu();
        let receivers = std::mem::take(&mut self.receivers);
        let mut reading = Vec::with_capacity(pairs);
        for (pair, mut conn) in receivers.into_iter().enumerate() {
            let expected = schedule.count(pair);
            let prefix = self.id(step, 0).0;
            reading.push(tokio::spawn(async move {
                let mut seen = vec![false; expected];
                let mut latencies = Vec::with_capacity(expected);
                let mut duplicates = 0;
                let mut acks = Vec::with_capacity(ACK_BATCH);
                while latencies.len() < expected {
                    let next = tokio::time::timeout_at(deadline.into(), conn.next_event());
                    let delivery = match next.await {
                        Ok(Some(Event::Deliver(delivery))) => delivery,
                        Ok(Some(Event::Closed(_)) | None) | Err(_) => break,
                        Ok(Some(_)) => continue,
                    };
                    let at = Instant::now();
                    let id = delivery.sealed.header.id;
                    acks.push(id);
                    if acks.len() >= ACK_BATCH {
                        let ids = std::mem::take(&mut acks);
                        // Bounded: a node that stops reading must not hang the benchmark.
                        let msg = ClientToNode::Ack { ids };
                        let ack = conn.send(&msg);
                        if tokio::time::timeout_at(deadline.into(), ack).await.is_err() {
                            break;
                        }
                    }
                    // Another step's straggler is acknowledged and otherwise ignored.
                    if id.0[..8] != prefix[..8] {
                        continue;
                    }
                    let g = u64::from_be_bytes(id.0[8..].try_into().expect("8 bytes"));
                    let k = (g as usize).saturating_sub(pair) / pairs;
                    match seen.get_mut(k) {
                        Some(seen) if !*seen => {
                            *seen = true;
                            latencies.push(at.saturating_duration_since(schedule.due(g)));
                        }
                        _ => duplicates += 1,
                    }
                }
                if !acks.is_empty() {
                    let msg = ClientToNode::Ack { ids: acks };
                    let ack = conn.send(&msg);
                    let _ = tokio::time::timeout(Duration::from_secs(5), ack).await;
                }
                (conn, latencies, duplicates)
            }));
        }
        let mut sending = Vec::with_capacity(pairs);
        for (pair, (from, to)) in self.people.iter().enumerate() {
            let template = dm_envelope(from, to);
            let conn = self.senders[pair].clone();
            let ids: Vec<(u64, MsgId)> = schedule.of(pair).map(|g| (g, self.id(step, g))).collect();
            sending.push(tokio::spawn(async move {
                let mut answers = Vec::with_capacity(ids.len());
                let mut lags = Vec::with_capacity(ids.len());
                for (g, id) in ids {
                    let due = schedule.due(g);
                    tokio::time::sleep_until(due.into()).await;
                    lags.push(due.elapsed());
                    let mut envelope = template.clone();
                    envelope.sealed.header.id = id;
                    let conn = conn.clone();
                    answers.push(tokio::spawn(async move {
                        let answer = conn
                            .request(|req| ClientToNode::Send { req, envelope })
                            .await;
                        matches!(answer, Ok(NodeToClient::Stored { .. })).then(|| due.elapsed())
                    }));
                }
                let mut stored = Vec::with_capacity(answers.len());
                let mut refused = 0;
                for answer in answers {
                    match tokio::time::timeout_at(deadline.into(), answer).await {
                        Ok(Ok(Some(latency))) => stored.push(latency),
                        _ => refused += 1,
                    }
                }
                (refused, stored, lags)
            }));
        }
        let mut refused = 0;
        let mut stored = Vec::with_capacity(schedule.total);
        let mut lags = Vec::with_capacity(schedule.total);
        for sender in sending {
            if let Ok((r, s, l)) = sender.await {
                refused += r;
                stored.extend(s);
                lags.extend(l);
            }
        }
        let mut latencies = Vec::with_capacity(schedule.total);
        let mut duplicates = 0;
        for reader in reading {
            if let Ok((conn, lat, dup)) = reader.await {
                self.receivers.push(conn);
                latencies.extend(lat);
                duplicates += dup;
            }
        }
        Step {
            rate,
            sent: schedule.total,
            delivered: latencies.len(),
            refused,
            duplicates,
            latency: Latency::of(&mut latencies),
            stored: Some(Latency::of(&mut stored)),
            lag: Some(Latency::of(&mut lags)),
            cpu_us: super::support::own_cpu()
                .saturating_sub(cpu_before)
                .as_secs_f64()
                * 1e6
                / schedule.total.max(1) as f64,
        }
    }

    /// One message per pair, all of which must arrive: the routes are in place.
    async fn warm_up(&mut self) -> anyhow::Result<()> {
        let pairs = self.people.len() as u32;
        let check = self.step(pairs * 4, 1.0).await;
        anyhow::ensure!(
            check.lost() == 0 && check.refused == 0 && self.receivers.len() == self.people.len(),
            "warm-up failed: {}",
            check.describe()
        );
        Ok(())
    }

    async fn close(self) {
        for conn in self.receivers {
            conn.close().await;
        }
        for conn in self.senders {
            if let Ok(conn) = Arc::try_unwrap(conn) {
                conn.close().await;
            }
        }
    }
}

/// What a ladder drives.
enum Load<'a> {
    /// Quip, over connected pairs.
    Quip(&'a mut Pairs),
    /// A bare transfer with as many pairs and frames of this size.
    Bare {
        path: Path,
        pairs: usize,
        frame: usize,
    },
}

/// Steps through `ladder` while each step holds. A step that fails is run once more (one
/// unlucky stall should not end the ladder; both runs are kept and shown), and the ladder
/// ends when the repeat fails too. Returns every step run, and whether the last one held.
async fn climb(ladder: &[u32], secs: f64, mut load: Load<'_>) -> Vec<Step> {
    let started = Instant::now();
    let mut steps = Vec::new();
    'ladder: for &rate in ladder {
        for _attempt in 0..2 {
            if started.elapsed() > LADDER_BUDGET {
                break 'ladder;
            }
            let step = match &mut load {
                Load::Quip(pairs) => Ok(pairs.step(rate, secs).await),
                Load::Bare { path, pairs, frame } => {
                    super::baseline::step(*path, *pairs, *frame, rate, secs, GRACE).await
                }
            };
            match step {
                Ok(step) => {
                    let holds = step.holds(SUSTAINABLE_P99_MS);
                    // A step that lost messages ends the ladder at once.
                    let lost = step.lost() > 0;
                    steps.push(step);
                    if holds {
                        continue 'ladder;
                    }
                    if lost {
                        break 'ladder;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, rate, "step failed");
                    break 'ladder;
                }
            }
        }
        break;
    }
    steps
}

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("dm");
    let (pairs, ladder, secs) = if opts.quick {
        (16, QUICK_LADDER, opts.secs.min(2.0))
    } else {
        (32, LADDER, opts.secs)
    };
    // Same node.
    vacuum_postgres(opts.database_url.as_deref()).await?;
    let node = BenchNode::start(opts.database_url.as_deref()).await?;
    let people = users(&node.storage, "dm", 2 * pairs).await?;
    // The bare baselines move frames as large as Quip's `Send`.
    let frame = quip_proto::frame::encode(&ClientToNode::Send {
        req: 1,
        envelope: dm_envelope(&people[0], &people[1]),
    })?
    .len();
    let addr = node.handle.local_addr();
    let mut same = Pairs::connect(people, addr, addr, &node.trust).await?;
    same.warm_up().await?;
    let same_storage = storage_note(opts.database_url.as_deref());
    let quip_same = climb(ladder, secs, Load::Quip(&mut same)).await;
    same.close().await;
    node.handle.kill();
    let echo = Load::Bare {
        path: Path::Echo,
        pairs,
        frame,
    };
    let bare_echo = climb(ladder, secs, echo).await;

    // Cross node, through the master.
    vacuum_postgres(opts.database_url.as_deref()).await?;
    let mut cluster = Cluster::start(ClusterConfig {
        database_url: opts.database_url.clone(),
        ..ClusterConfig::for_tests(2)
    })
    .await?;
    anyhow::ensure!(
        cluster.wait_for_nodes(2, Duration::from_secs(15)).await,
        "the nodes did not register with the master"
    );
    let people = users(&cluster.storage, "dmx", 2 * pairs).await?;
    let (a, b) = match (cluster.node(0), cluster.node(1)) {
        (Some(a), Some(b)) => (a.local_addr(), b.local_addr()),
        _ => anyhow::bail!("the cluster has no two nodes"),
    };
    let mut cross = Pairs::connect(people, a, b, &cluster.trust()).await?;
    // Presence reaches the master asynchronously; give the directory a moment, then prove
    // the route with one message per pair.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cross.warm_up().await?;
    let cross_storage = storage_note(opts.database_url.as_deref());
    let quip_cross = climb(ladder, secs, Load::Quip(&mut cross)).await;
    cross.close().await;
    cluster.kill_node(0);
    cluster.kill_node(1);
    cluster.stop_master().await;
    let relay = Load::Bare {
        path: Path::Relay,
        pairs,
        frame,
    };
    let bare_relay = climb(ladder, secs, relay).await;

    let top = ladder.last().copied().unwrap_or(0);
    summarize(
        &mut report,
        "same node",
        &quip_same,
        &bare_echo,
        "echo",
        top,
    );
    summarize(
        &mut report,
        "cross node",
        &quip_cross,
        &bare_relay,
        "relay",
        top,
    );
    report.notes.push(format!(
        "{pairs} pairs (one QUIC connection per client), {secs} s per step, {frame}-byte Send \
         frames, acks in batches of {ACK_BATCH}, lost = not delivered within {} s of the \
         step's end",
        GRACE.as_secs(),
    ));
    report.notes.push(format!("same node {same_storage}"));
    report.notes.push(format!("cross node {cross_storage}"));
    report.notes.push(
        "sustainable: p99 < 100 ms, nothing lost or refused; the load generator shares the \
         machine's cores with the node(s) and master"
            .into(),
    );
    Ok(report)
}

/// The last step of `steps` that holds at `p99_ms`.
fn best(steps: &[Step], p99_ms: f64) -> Option<&Step> {
    steps.iter().rev().find(|s| s.holds(p99_ms))
}

fn summarize(
    report: &mut Report,
    case: &str,
    quip: &[Step],
    bare: &[Step],
    bare_name: &str,
    top: u32,
) {
    let rate = |s: Option<&Step>| s.map_or(0.0, |s| f64::from(s.rate));
    let max = best(quip, SUSTAINABLE_P99_MS);
    let bare_max = best(bare, SUSTAINABLE_P99_MS);
    report
        .rows
        .push(Row::new(case, "max sustainable rate", rate(max), "msg/s").vs(rate(bare_max)));
    if let Some(max) = max {
        let at = bare.iter().rev().find(|s| s.rate == max.rate);
        let mut p50 = Row::new(
            case,
            &format!("p50 at {}/s", max.rate),
            max.latency.p50_ms,
            "ms",
        );
        let mut p99 = Row::new(
            case,
            &format!("p99 at {}/s", max.rate),
            max.latency.p99_ms,
            "ms",
        );
        if let Some(at) = at {
            p50 = p50.vs(at.latency.p50_ms);
            p99 = p99.vs(at.latency.p99_ms);
        }
        report.rows.push(p50);
        report.rows.push(p99);
    }
    report.rows.push(
        Row::new(
            case,
            "max rate, p99 < 50 ms",
            rate(best(quip, FLOOR_P99_MS)),
            "msg/s",
        )
        .vs(rate(best(bare, FLOOR_P99_MS))),
    );
    for (who, steps) in [("quip", quip), (bare_name, bare)] {
        for step in steps {
            report
                .notes
                .push(format!("{case}, {who}: {}", step.describe()));
        }
        if steps
            .last()
            .is_some_and(|s| s.rate == top && s.holds(SUSTAINABLE_P99_MS))
        {
            report.notes.push(format!(
                "{case}, {who}: every step held; the limit is above the ladder's top"
            ));
        }
    }
}
