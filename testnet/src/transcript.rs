//! Protocol transcripts: every frame on every link of an in-process cluster, as
//! [`quip_quic::tap`] reports it, rendered step by step in a readable, redacted and
//! deterministic form. `tests/transcript.rs` pins one scripted session as an insta snapshot:
//! the protocol's documentation, and a regression test for every wire change.
//!
//! Determinism comes from three rules:
//!
//! - **Steps.** The script waits for every effect of a step ([`Recorder::settle`]) before the
//!   next one starts, so each frame falls in the step that caused it.
//! - **Order.** Within a step, links are listed along the message's path (the step's actor,
//!   its node's relay link, the other relay links, everyone else) and frames in the order their
//!   link carried them. Concurrent links never interleave.
//! - **Redaction.** Ids, byte strings, timestamps and addresses become placeholders
//!   ([`Redactor`]), each distinct value numbered in order of first appearance, so the
//!   transcript still shows which frames carry the same message, key or ciphertext.
//!
//! Heartbeats are left out: how many fall in a step depends on timing.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use quip_quic::tap::{self, Direction, Link};
use tokio::time::Instant;

use crate::cluster::Cluster;

mod redact;

pub use redact::Redactor;

/// Heartbeats the master must receive from every node before a step is settled: anything a
/// node queued for the master earlier has gone out by then (its link writes in order).
const FLUSH_HEARTBEATS: usize = 3;
/// Silence (heartbeats aside) that ends a step once the uplinks are flushed.
const QUIET: Duration = Duration::from_millis(150);
/// Every connection's first stream, opened by the client: the control stream.
const CONTROL_STREAM: u64 = 0;
/// How often waits look at the log.
const POLL: Duration = Duration::from_millis(10);
/// Longest a settle may take before the transcript is rendered anyway (and fails its review).
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// One frame as recorded.
#[derive(Debug, Clone)]
struct Frame {
    link: Link,
    stream: u64,
    direction: Direction,
    text: String,
}

impl Frame {
    fn alpn(&self) -> Alpn {
        Alpn::of(&self.link.alpn)
    }

    /// A heartbeat the master received.
    fn is_heartbeat(&self) -> bool {
        self.alpn() == Alpn::Relay && self.text.starts_with("Heartbeat(")
    }
}

#[derive(Debug)]
struct Step {
    title: String,
    actor: Option<String>,
}

#[derive(Debug)]
enum Entry {
    Step(Step),
    Frame(Frame),
}

/// The three links, in the order a step lists them for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Alpn {
    Discovery,
    Client,
    Relay,
    Other,
}

impl Alpn {
    fn of(alpn: &str) -> Self {
        match alpn.as_bytes() {
            quip_proto::ALPN_DISCOVERY => Self::Discovery,
            quip_proto::ALPN_CLIENT => Self::Client,
            quip_proto::ALPN_RELAY => Self::Relay,
            _ => Self::Other,
        }
    }
}

/// A frame, as a wait predicate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Reported by the end that accepted the connection (a node for `quip/1`, the master
    /// otherwise).
    pub by_server: bool,
    /// Reported by its reader; otherwise by its writer (streams opened with `open_stream`).
    pub received: bool,
    /// The frame's `Debug` rendering, unredacted.
    pub text: &'a str,
}

/// The process's frame log: the tap writes to it, the script marks steps in it and waits on
/// it, and [`render`](Self::render) turns it into the transcript.
#[derive(Debug, Default)]
pub struct Recorder {
    log: Mutex<Vec<Entry>>,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

impl Recorder {
    /// The recorder, installing the frame tap on first use. Call it before the cluster starts:
    /// streams set up earlier are not reported.
    pub fn install() -> &'static Recorder {
        let recorder = RECORDER.get_or_init(Recorder::default);
        tap::install(|frame| {
            if let Some(recorder) = RECORDER.get() {
                recorder.record(frame);
            }
        });
        recorder
    }

    fn log(&self) -> MutexGuard<'_, Vec<Entry>> {
        // Entries are pushed whole; a panic elsewhere leaves the log usable.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, frame: &tap::Frame<'_>) {
        let text = format!("{:?}", frame.message);
        self.log().push(Entry::Frame(Frame {
            link: frame.link.clone(),
            stream: frame.stream,
            direction: frame.direction,
            text,
        }));
    }

    /// Starts a step: what happens, and whose action it is (`None` for the cluster itself).
    /// The actor's links come first in the step, and discovery connections are theirs.
    pub fn step(&self, title: &str, actor: Option<&str>) {
        self.log().push(Entry::Step(Step {
            title: title.to_owned(),
            actor: actor.map(str::to_owned),
        }));
    }

    /// Waits (up to `within`) until a frame of the current step matches `what`.
    pub async fn wait_for(&self, within: Duration, what: impl Fn(Seen<'_>) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let found = current_step(&self.log()).any(|f| {
                what(Seen {
                    by_server: f.link.server,
                    received: f.direction == Direction::Received,
                    text: &f.text,
                })
            });
            if found {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the current step is over: every node's link to the master flushed (a few
    /// heartbeats received from each since now), then no frame for a moment.
    pub async fn settle(&self) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let start = self.log().len();
        while !self.uplinks_flushed(start) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let count = || {
            self.log()
                .iter()
                .filter_map(as_frame)
                .filter(|f| !f.is_heartbeat())
                .count()
        };
        let (mut last, mut since) = (count(), Instant::now());
        while since.elapsed() < QUIET && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            let now = count();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }

    /// Whether the master has received [`FLUSH_HEARTBEATS`] heartbeats from every registered
    /// node since log position `start`.
    fn uplinks_flushed(&self, start: usize) -> bool {
        let log = self.log();
        let mut beats: HashMap<u64, usize> = HashMap::new();
        for frame in log[start..].iter().filter_map(as_frame) {
            if frame.is_heartbeat() {
                *beats.entry(frame.link.id).or_default() += 1;
            }
        }
        let relays: HashSet<u64> = log
            .iter()
            .filter_map(as_frame)
            .filter(|f| f.alpn() == Alpn::Relay && f.link.server)
            .map(|f| f.link.id)
            .collect();
        relays
            .iter()
            .all(|id| beats.get(id).copied().unwrap_or(0) >= FLUSH_HEARTBEATS)
    }

    /// The transcript so far.
    pub fn render(&self, names: &Names) -> String {
        let log = self.log();
        let ends = resolve(&log, names);
        let mut redactor = Redactor::new(names);
        let mut out = String::from(HEADER);
        for (n, (step, frames)) in split_steps(&log).into_iter().enumerate() {
            let _ = writeln!(out, "\n## {n}. {}\n", step.title);
            let layout = Layout::new(step, &frames, &ends);
            let mut lines: Vec<(LineKey, &Frame)> = frames
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.is_heartbeat())
                .map(|(seq, f)| (layout.key(f, seq), *f))
                .collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            if lines.is_empty() {
                out.push_str("(no frames)\n");
            }
            for (_, frame) in lines {
                let (from, to) = ends
                    .get(&frame.link.id)
                    .map_or(("?", "?"), |e| e.direction(frame));
                let stream = match frame.stream {
                    CONTROL_STREAM => String::new(),
                    n => format!("(stream {n}) "),
                };
                let text = redactor.redact(&frame.text);
                let _ = writeln!(out, "{from:>6} → {to:<6}  {stream}{text}");
            }
        }
        out
    }
}

const HEADER: &str = "\
# Quip protocol transcript

A scripted session on an in-process cluster (a master, node-0 and node-1): every frame on
every link, client ↔ node (`quip/1`), node ↔ master (`quip-relay/1`) and client ↔ master
(`quip-discovery/1`), decoded. Written by `quip-testnet`'s `tests/transcript.rs`.

- `a → b  Frame` is a frame from a to b. Frames on a stream other than the control stream
  say which: `(stream 4)`. Control-stream frames are shown as received, others as sent.
- `<msg-1>`, `<group-1>`, `<blob-1>` are ids; `<key-1:294B>`, `<ct-1:39B>`, `<sig-1:256B>`,
  `<wrapped-1:256B>`, `<chunk-1:…>`, `<hash-1:32B>`, `<secret-1:32B>`, `<backup-1>` are byte
  strings with their length. Each distinct value is numbered in order of first appearance:
  the same placeholder is the same bytes. `<ts>` is a timestamp, `<addr:node-0>` an address.
- Within a step, links are listed along the message's path and frames in the order their
  link carried them; a stream other than the control stream is shown in one piece, where it
  began. Heartbeats (node → master, every 100 ms here) are left out.
";

fn as_frame(entry: &Entry) -> Option<&Frame> {
    match entry {
        Entry::Frame(frame) => Some(frame),
        Entry::Step(_) => None,
    }
}

fn current_step(log: &[Entry]) -> impl Iterator<Item = &Frame> {
    let start = log
        .iter()
        .rposition(|e| matches!(e, Entry::Step(_)))
        .map_or(0, |i| i + 1);
    log[start..].iter().filter_map(as_frame)
}

fn split_steps(log: &[Entry]) -> Vec<(&Step, Vec<&Frame>)> {
    let mut steps: Vec<(&Step, Vec<&Frame>)> = Vec::new();
    for entry in log {
        match entry {
            Entry::Step(step) => steps.push((step, Vec::new())),
            Entry::Frame(frame) => {
                if let Some((_, frames)) = steps.last_mut() {
                    frames.push(frame);
                }
            }
        }
    }
    steps
}

/// Who is at each end of the cluster's addresses.
#[derive(Debug, Clone, Default)]
pub struct Names {
    addrs: HashMap<SocketAddr, String>,
}

impl Names {
    /// The master and the nodes of `cluster` (`node-0`, `node-1`, …).
    pub fn of(cluster: &Cluster) -> Self {
        let mut addrs = HashMap::new();
        addrs.insert(cluster.master_addr(), "master".to_owned());
        let mut index = 0;
        while let Some(node) = cluster.node(index) {
            addrs.insert(node.local_addr(), format!("node-{index}"));
            index += 1;
        }
        Self { addrs }
    }

    fn of_addr(&self, addr: &str) -> Option<&str> {
        let addr: SocketAddr = addr.parse().ok()?;
        self.addrs.get(&addr).map(String::as_str)
    }
}

/// The names at both ends of one connection.
#[derive(Debug, Clone)]
struct Ends {
    alpn: Alpn,
    client: String,
    server: String,
    /// The first frame of the connection, in the log.
    first: usize,
}

impl Ends {
    fn direction(&self, frame: &Frame) -> (&str, &str) {
        let (me, peer) = if frame.link.server {
            (&self.server, &self.client)
        } else {
            (&self.client, &self.server)
        };
        match frame.direction {
            Direction::Received => (peer, me),
            Direction::Sent => (me, peer),
        }
    }
}

/// The value of `field: "…"` in a `Debug` rendering.
fn quoted_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let start = text.find(&format!("{field}: \""))? + field.len() + 3;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Names both ends of every connection: nodes and the master by address, users by the
/// `LoggedIn` they receive, nodes on the relay by their `Register`, and a discovery client as
/// the actor of the step it appears in.
fn resolve(log: &[Entry], names: &Names) -> HashMap<u64, Ends> {
    let mut ends: HashMap<u64, Ends> = HashMap::new();
    let mut actor: Option<&str> = None;
    for (index, entry) in log.iter().enumerate() {
        let frame = match entry {
            Entry::Step(step) => {
                actor = step.actor.as_deref();
                continue;
            }
            Entry::Frame(frame) => frame,
        };
        let alpn = frame.alpn();
        let e = ends.entry(frame.link.id).or_insert_with(|| Ends {
            alpn,
            client: match alpn {
                Alpn::Discovery => actor.unwrap_or("client").to_owned(),
                Alpn::Relay => "node?".to_owned(),
                _ => "client".to_owned(),
            },
            server: match alpn {
                Alpn::Client => "node?".to_owned(),
                _ => "master".to_owned(),
            },
            first: index,
        });
        let received = frame.direction == Direction::Received;
        match alpn {
            Alpn::Client if !frame.link.server => {
                if let Some(node) = names.of_addr(&frame.link.remote.to_string()) {
                    e.server = node.to_owned();
                }
                if received
                    && frame.text.starts_with("LoggedIn {")
                    && let Some(user) = quoted_field(&frame.text, "user")
                {
                    e.client = user.to_owned();
                }
            }
            Alpn::Relay if frame.link.server && frame.text.starts_with("Register {") => {
                if let Some(node) = quoted_field(&frame.text, "node") {
                    e.client = node.to_owned();
                }
            }
            _ => {}
        }
    }
    ends
}

/// Where a step's frames go: the actor's links first, then along the path a message takes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LineKey {
    group: u8,
    name: String,
    alpn: Alpn,
    /// The connection's first frame (a user who reconnects has two).
    conn: usize,
    /// A control-stream frame's own position; for any other stream, the position of the
    /// stream's first frame, so an image stream stays in one piece where it began.
    block: usize,
    stream: u64,
    seq: usize,
}

struct Layout<'a> {
    actor: Option<&'a str>,
    /// The node the actor is connected to in this step.
    actor_node: Option<&'a str>,
    ends: &'a HashMap<u64, Ends>,
    /// The position of each stream's first frame in the step, by connection and stream.
    streams: HashMap<(u64, u64), usize>,
}

impl<'a> Layout<'a> {
    fn new(step: &'a Step, frames: &[&Frame], ends: &'a HashMap<u64, Ends>) -> Self {
        let actor = step.actor.as_deref();
        let actor_node = frames.iter().find_map(|f| {
            let e = ends.get(&f.link.id)?;
            (e.alpn == Alpn::Client && Some(e.client.as_str()) == actor)
                .then_some(e.server.as_str())
        });
        let mut streams = HashMap::new();
        for (seq, f) in frames.iter().enumerate() {
            streams.entry((f.link.id, f.stream)).or_insert(seq);
        }
        Self {
            actor,
            actor_node,
            ends,
            streams,
        }
    }

    fn key(&self, frame: &Frame, seq: usize) -> LineKey {
        let block = match frame.stream {
            CONTROL_STREAM => seq,
            stream => self.streams[&(frame.link.id, stream)],
        };
        let Some(e) = self.ends.get(&frame.link.id) else {
            return LineKey {
                group: 9,
                name: String::new(),
                alpn: Alpn::Other,
                conn: 0,
                block,
                stream: frame.stream,
                seq,
            };
        };
        let mine = Some(e.client.as_str()) == self.actor;
        let group = match e.alpn {
            Alpn::Relay if Some(e.client.as_str()) == self.actor_node => 1,
            Alpn::Relay => 2,
            _ if mine => 0,
            _ => 3,
        };
        LineKey {
            group,
            name: if mine {
                String::new()
            } else {
                e.client.clone()
            },
            alpn: e.alpn,
            conn: e.first,
            block,
            stream: frame.stream,
            seq,
        }
    }
}
