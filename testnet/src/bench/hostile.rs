//! `bench hostile`: what hostile connections cost a real `quip-node` process (issue 11, item
//! 1; the floor is 1,000 of them in < 128 MiB in total).
//!
//! Each case starts a fresh `quip-node` child process with its default limits (the same
//! machinery as `bench idle`: sessions created in storage before the node starts, clients on
//! shared UDP sockets, each socket on its own loopback address with at most 50 connections,
//! half the node's per-address limit), connects N clients (1,000; 200 with `--quick`) that
//! each do their part of the attack and then hold the connection without reading, and reads
//! the node's RSS (`/proc/<pid>/status`) until it is stable: the figure is the most seen over
//! the hold, minus the RSS before the clients came. Cases:
//!
//! - *not logged in, 32 KiB prefix*: handshake and hellos, then a length prefix announcing the
//!   largest frame the node reads before login and a few body bytes;
//! - *not logged in, 32 KiB frame less 1 byte*: the same frame sent but for its last byte (the
//!   most a connection that has not logged in can make the node hold in a frame);
//! - *not logged in, 1 MiB prefix*: the attack on the control stream, which the node
//!   now refuses at once (the connections it closed are counted);
//! - *logged in, 8 × 1 MiB prefixes*: `Resume` with a stored session (one account per
//!   connection), then a 1 MiB prefix and a few bytes on the control stream and on 7 new
//!   streams (where an image upload's first frame goes);
//! - *honest, idle*: the same number of resumed connections doing nothing, for comparison.
//!
//! After the hold, each hostile case waits (up to [`CLOSE_WAIT`] from its first connection)
//! for the node to close its connections — the login deadline (30 s) closes the ones that
//! never logged in, the frame deadline (30 s) the ones stalled inside a frame — and reports
//! how many it closed and the RSS after.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quip_proto::limits::MAX_FRAME;
use quip_proto::{ClientToNode, NodeToClient};
use quip_quic::Limits;
use quip_storage::Store;

use super::Options;
use super::idle::{Clients, Login, Process, Script, connect_all, rss, spawn_node};
use super::report::{Report, Row};
use super::support::storage_name;
use crate::fixtures::users;

/// The largest frame the node reads from a client that has not logged in
/// (`quip_node::session::PRELOGIN_FRAME`, private to the node: a larger prefix is refused).
const PRELOGIN_FRAME: usize = 32 * 1024;
/// Body bytes sent after a prefix: "a few".
const FEW: usize = 16;
/// Streams a logged-in client may open besides its control stream (`Limits::client`: 8).
const IMAGE_STREAMS: usize = 7;
/// The node's login deadline and frame deadline (`NodeConfig` defaults).
const NODE_DEADLINE: Duration = Duration::from_secs(30);
/// RSS is read this often while the connections are held.
const POLL: Duration = Duration::from_millis(200);
/// The hold lasts at least this long ...
const HOLD_MIN: Duration = Duration::from_secs(4);
/// ... and ends once the RSS has not grown for this long, or at [`HOLD_MAX`].
const STABLE: Duration = Duration::from_secs(2);
/// The longest hold.
const HOLD_MAX: Duration = Duration::from_secs(10);
/// How long after its first connection a case waits for the node to close them.
const CLOSE_WAIT: Duration = Duration::from_secs(45);
/// The floor: 1,000 hostile connections in less than this.
const FLOOR_PER_1000: f64 = 128.0 * 1024.0 * 1024.0;

/// What a client does once connected.
#[derive(Clone, Copy)]
enum Attack {
    /// Hellos, then `prefix` and `body` bytes of the frame on the control stream.
    PreLogin { prefix: usize, body: usize },
    /// Resume, then a 1 MiB prefix and a few bytes on the control stream and on
    /// [`IMAGE_STREAMS`] new streams.
    LoggedIn,
    /// Resume, then nothing (the baseline).
    Honest,
}

struct Case {
    name: &'static str,
    attack: Attack,
}

const CASES: &[Case] = &[
    Case {
        name: "not logged in, 32 KiB prefix",
        attack: Attack::PreLogin {
            prefix: PRELOGIN_FRAME,
            body: FEW,
        },
    },
    Case {
        name: "not logged in, 32 KiB less 1 B",
        attack: Attack::PreLogin {
            prefix: PRELOGIN_FRAME,
            body: PRELOGIN_FRAME - 1,
        },
    },
    Case {
        name: "not logged in, 1 MiB prefix",
        attack: Attack::PreLogin {
            prefix: MAX_FRAME,
            body: FEW,
        },
    },
    Case {
        name: "logged in, 8 x 1 MiB prefix",
        attack: Attack::LoggedIn,
    },
    Case {
        name: "honest, idle (baseline)",
        attack: Attack::Honest,
    },
];

/// A length prefix announcing `len` body bytes, then `body` of them.
fn partial_frame(len: usize, body: usize) -> Vec<u8> {
    let mut bytes = u32::try_from(len)
        .expect("a frame length")
        .to_be_bytes()
        .to_vec();
    bytes.resize(bytes.len() + body, 0x5a);
    bytes
}

/// The client side of `attack`, for client `i` (who resumes `tokens[i]`).
fn script(attack: Attack, tokens: Arc<Vec<quip_proto::ids::SessionToken>>) -> Script {
    Arc::new(move |i, conn, alive: Arc<AtomicUsize>| {
        let tokens = tokens.clone();
        Box::pin(async move {
            let agent = quip_cli::connection::AGENT;
            let (mut send, mut recv, _) = quip_quic::open_control(&conn, agent, MAX_FRAME).await?;
            let mut keep: Vec<Box<dyn Any + Send>> = Vec::new();
            match attack {
                Attack::PreLogin { prefix, body } => {
                    send.stream()
                        .write_all(&partial_frame(prefix, body))
                        .await?;
                }
                Attack::LoggedIn | Attack::Honest => {
                    let token = tokens[i].clone();
                    send.send(&ClientToNode::Resume { req: 1, token }).await?;
                    match recv.recv::<NodeToClient>().await? {
                        Some(NodeToClient::LoggedIn { .. }) => {}
                        other => anyhow::bail!("resume answered {other:?}"),
                    }
                    if matches!(attack, Attack::LoggedIn) {
                        let frame = partial_frame(MAX_FRAME, FEW);
                        send.stream().write_all(&frame).await?;
                        for _ in 0..IMAGE_STREAMS {
                            let (mut image, images) = conn.open_bi().await?;
                            image.write_all(&frame).await?;
                            keep.push(Box::new((image, images)));
                        }
                    }
                }
            }
            alive.fetch_add(1, Ordering::Relaxed);
            // Held unread (a dropped send stream would finish it, ending the frame early).
            keep.push(Box::new((send, recv)));
            Ok(Box::new(keep) as Box<dyn Any + Send>)
        })
    })
}

/// What one case measured.
struct Measured {
    connected: usize,
    before: u64,
    /// The most RSS added while the connections were held.
    added: u64,
    /// Connections the node had closed by the end of the hold.
    closed_in_hold: usize,
    /// Seconds from the first connection to the end of the hold.
    hold_ended: Duration,
    /// Connections the node closed by [`CLOSE_WAIT`], when the case waited for it.
    closed_later: Option<(usize, Duration)>,
    /// RSS added once the node closed them.
    added_after: u64,
}

fn closed(clients: &Clients) -> usize {
    clients
        .held
        .iter()
        .filter(|(conn, _)| conn.close_reason().is_some())
        .count()
}

/// Reads the RSS of `process` until it is stable: at least [`HOLD_MIN`], then until it has not
/// grown for [`STABLE`], at most [`HOLD_MAX`]. The most seen.
async fn hold(process: &Process) -> anyhow::Result<u64> {
    let started = Instant::now();
    let (mut most, mut grew) = (0, started);
    loop {
        let now = rss(process.pid())?;
        if now > most {
            most = now;
            grew = Instant::now();
        }
        let held = started.elapsed();
        if held >= HOLD_MAX || (held >= HOLD_MIN && grew.elapsed() >= STABLE) {
            return Ok(most);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn one_case(
    url: &str,
    n: usize,
    tokens: &Arc<Vec<quip_proto::ids::SessionToken>>,
    case: &Case,
) -> anyhow::Result<(Measured, bool)> {
    let dir = tempfile::tempdir()?;
    let (process, addr, trust, real) = spawn_node(dir.path(), url, n)?;
    let config =
        quip_quic::client_config(&trust, quip_proto::ALPN_CLIENT, None, &Limits::client())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(process.pid())?;
    let started = Instant::now();
    let login = Login::Script(script(case.attack, tokens.clone()));
    let clients = connect_all(addr, config, quip_quic::names::NODE, n, login).await?;
    let most = hold(&process).await?;
    let hold_ended = started.elapsed();
    let closed_in_hold = closed(&clients);
    let closed_later = if matches!(case.attack, Attack::Honest) {
        None
    } else {
        let deadline = started + CLOSE_WAIT;
        while closed(&clients) < clients.connected && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        Some((closed(&clients), started.elapsed()))
    };
    // Let the node free what the closed connections held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let added_after = rss(process.pid())?.saturating_sub(before);
    Ok((
        Measured {
            connected: clients.connected,
            before,
            added: most.saturating_sub(before),
            closed_in_hold,
            hold_ended,
            closed_later,
            added_after,
        },
        real,
    ))
}

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("hostile");
    let n = if opts.quick { 200 } else { 1_000 };
    let dir = tempfile::tempdir()?;
    let url = match &opts.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.path().join("quip.db").display()),
    };
    let store = Store::connect(&url).await?;
    let tokens = Arc::new(
        users(&store, "hostile", n)
            .await?
            .into_iter()
            .map(|u| u.token)
            .collect::<Vec<_>>(),
    );
    drop(store);
    let mut all_real = true;
    let floor_per_conn = FLOOR_PER_1000 / 1000.0;
    let mut verdicts = Vec::new();
    for case in CASES {
        let (m, real) = one_case(&url, n, &tokens, case).await?;
        all_real &= real;
        let per_conn = m.added as f64 / m.connected.max(1) as f64;
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        let rows = &mut report.rows;
        rows.push(Row::new(
            case.name,
            "connected",
            m.connected as f64,
            "conns",
        ));
        rows.push(Row::new(case.name, "RSS before", mib(m.before), "MiB"));
        rows.push(Row::new(case.name, "RSS added (held)", mib(m.added), "MiB"));
        rows.push(Row::new(
            case.name,
            "RSS per connection",
            per_conn / 1024.0,
            "KiB",
        ));
        rows.push(Row::new(
            case.name,
            "RSS for 1,000 (projected)",
            per_conn * 1000.0 / 1048576.0,
            "MiB",
        ));
        rows.push(Row::new(
            case.name,
            "closed by node in hold",
            m.closed_in_hold as f64,
            "conns",
        ));
        if let Some((closed, after)) = m.closed_later {
            rows.push(Row::new(
                case.name,
                &format!("closed by node by {} s", after.as_secs()),
                closed as f64,
                "conns",
            ));
            rows.push(Row::new(
                case.name,
                "RSS added after closes",
                mib(m.added_after),
                "MiB",
            ));
        }
        if !matches!(case.attack, Attack::Honest) {
            verdicts.push(format!(
                "{}: {:.1} KiB per connection, {}",
                case.name,
                per_conn / 1024.0,
                if per_conn < floor_per_conn {
                    "under the floor"
                } else {
                    "OVER the floor"
                }
            ));
        }
        report.notes.push(format!(
            "{}: hold ended {:.1} s after the first connection",
            case.name,
            m.hold_ended.as_secs_f64()
        ));
    }
    report.notes.push(format!(
        "floor (issue 11): 1,000 hostile connections < 128 MiB, i.e. < {:.0} KiB per connection; {}",
        floor_per_conn / 1024.0,
        verdicts.join("; ")
    ));
    report.notes.push(format!(
        "each case on a fresh quip-node child process with its default per-address limit \
         (100); {n} clients, at most {} per loopback source address; RSS added = the most RSS seen while the \
         connections were held (polled every {} ms for {}-{} s, until it stopped growing) minus \
         the RSS before they came; the node's login and frame deadlines ({} s) close the \
         hostile connections later, so the hold is measured before them; storage: {}",
        super::idle::CLIENTS_PER_ENDPOINT,
        POLL.as_millis(),
        HOLD_MIN.as_secs(),
        HOLD_MAX.as_secs(),
        NODE_DEADLINE.as_secs(),
        storage_name(opts.database_url.as_deref())
    ));
    report.notes.push(
        "RSS added after closes: read 1 s after the node closed the connections; memory \
         freed but kept by the allocator still counts in RSS, so this figure cannot tell freed \
         from held"
            .into(),
    );
    if !all_real {
        report.notes.push(
            "no quip-node next to quip-testnet: the node ran as a child quip-testnet \
             (same quip_node::start); build it with cargo build --release -p quip-node"
                .into(),
        );
    }
    Ok(report)
}
