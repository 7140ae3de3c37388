//! `quip-testnet drill`: fault drills against real processes under steady load.
//!
//! A master and N nodes run as child processes ([`crate::procs`]); simulated users
//! ([`crate::sim`]) DM their partners and write to a group at a fixed rate, and a
//! [`Ledger`] records every message acknowledged to its sender and every message shown to a
//! recipient. Meanwhile, on a seeded schedule:
//!
//! - every 5–15 s a random node is killed with SIGKILL and restarted 3 s later;
//! - once, the master is killed (SIGKILL) and kept down for 30 s (half the run if shorter);
//! - with a Postgres URL, once, Postgres is restarted (`pg_ctlcluster … restart`).
//!
//! At the end the load stops, the faults stop, every process is up again, and the drill
//! waits (bounded) for queues to drain before it counts: sent, acknowledged, delivered, lost,
//! shown twice, and how long the users of each killed node took to be back on a live one.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quip_proto::ids::UserName;
use serde::Serialize;
use tokio::time::Instant;

use crate::ledger::{Ledger, Rng, Tally};
use crate::network::{Testnet, TestnetConfig};
use crate::procs::{Binaries, TestnetError, restart_local_postgres};
use crate::sim::{Crowd, CrowdConfig, Traffic};

/// How long a killed node stays down before it is restarted.
const NODE_DOWN: Duration = Duration::from_secs(3);
/// The longest the master is kept down.
const MASTER_DOWN_MAX: Duration = Duration::from_secs(30);
/// The longest the drill waits for queues to drain after the load stops.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Grace for a SIGTERMed process before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// Length of the loaded, faulty phase.
    pub secs: u64,
    /// Nodes.
    pub nodes: usize,
    /// Postgres URL (SQLite shared by the nodes without one).
    pub database_url: Option<String>,
    /// Simulated users (paired for DMs; all in one group).
    pub users: usize,
    /// Messages per second, all users together.
    pub rate: f64,
    /// Seed of the fault schedule and the users' choices.
    pub seed: u64,
    /// The executables.
    pub binaries: Binaries,
    /// Data directory (a fresh temporary one without).
    pub dir: Option<PathBuf>,
    /// Restart the local Postgres cluster once (with a Postgres URL).
    pub restart_postgres: bool,
}

/// One fault injected, for the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Seconds since the load started.
    pub at_s: f64,
    /// What was done.
    pub what: String,
    /// Users on the killed node (node kills only).
    pub users: usize,
    /// Its users' times back on a live node, ms, sorted (node kills only).
    pub recovered_ms: Vec<u64>,
    /// Whether the master was down at some point between the kill and its users' recovery
    /// (they cannot discover a live node until it is back).
    pub master_down: bool,
}

/// What a drill found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Seconds of load and faults.
    pub secs: u64,
    /// Nodes.
    pub nodes: usize,
    /// Storage backend.
    pub backend: String,
    /// Simulated users.
    pub users: usize,
    /// Seed.
    pub seed: u64,
    /// The counts.
    pub tally: Tally,
    /// Nodes killed with SIGKILL.
    pub node_kills: usize,
    /// Children that exited by themselves (should be none).
    pub unexpected_exits: Vec<String>,
    /// Every fault, in order.
    pub faults: Vec<Fault>,
    /// Median time from a node's death to its users' recovery (master up), ms.
    pub recovery_median_ms: Option<u64>,
    /// Longest such time, ms.
    pub recovery_max_ms: Option<u64>,
    /// Seconds spent waiting for queues to drain at the end.
    pub drain_s: f64,
    /// Whether everything acknowledged was shown before the drain deadline.
    pub drained: bool,
    /// Of the lost pairs, how many are still in their recipient's queue in storage (durable,
    /// delivered at the next login, but never pushed to the online recipient).
    pub lost_still_queued: u64,
    /// Where the logs and data are.
    pub dir: PathBuf,
}

fn run_id(seed: u64) -> String {
    format!(
        "{:04x}",
        Rng::new(seed ^ u64::from(std::process::id())).below(0x1_0000)
    )
}

/// Runs a drill, printing the timeline through `log` as it goes.
pub async fn run(
    config: DrillConfig,
    mut log: impl FnMut(&str),
) -> Result<DrillReport, TestnetError> {
    if config.nodes < 2 || config.users < 2 || !config.rate.is_finite() || config.rate <= 0.0 {
        return Err(TestnetError::Invalid(
            "a drill needs at least 2 nodes, 2 users and a positive rate".into(),
        ));
    }
    let mut net_config = TestnetConfig::new(config.nodes, config.binaries.clone());
    net_config.database_url = config.database_url.clone();
    net_config.dir = config.dir.clone();
    let mut net = Testnet::create(net_config).await?;
    log(&format!("data and logs: {}", net.dir().display()));
    net.start(Duration::from_secs(30)).await?;
    log(&format!(
        "master and {} nodes up; signing up {} users",
        config.nodes, config.users
    ));

    let run = run_id(config.seed);
    let names = (0..config.users)
        .map(|i| UserName::new(&format!("drill{run}-u{i}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TestnetError::Invalid(e.to_string()))?;
    let every = Duration::from_secs_f64(config.users as f64 / config.rate);
    let ledger = Arc::new(Ledger::default());
    let crowd = Crowd::start(
        CrowdConfig {
            master: net.master_addr(),
            trust: net.trust(),
            home: net.dir().join("users"),
            names,
            key_bits: 2048,
            traffic: Traffic::Steady {
                every,
                group_every: 4,
            },
            seed: config.seed,
        },
        ledger.clone(),
        |_, _| {},
    )
    .await?;
    log(&format!(
        "load: {} users, {:.1} msgs/s; faults for {} s (seed {})",
        config.users, config.rate, config.secs, config.seed
    ));

    let mut outcome = inject(&mut net, &config, &ledger, &mut log).await;
    // Load off, everything up again, then let the queues drain.
    crowd.stop_sending();
    let mut unexpected = std::mem::take(&mut outcome.unexpected);
    if let Err(err) = net.start_master() {
        unexpected.push(err.to_string());
    }
    for i in 0..net.nodes.len() {
        if let Err(err) = net.start_node(i) {
            unexpected.push(err.to_string());
        }
    }
    let drain_start = Instant::now();
    let mut drained = false;
    while drain_start.elapsed() < DRAIN_MAX {
        if ledger.settled() {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    log(&format!(
        "load stopped; drained in {drain_s:.1} s ({})",
        if drained { "complete" } else { "timed out" }
    ));
    crowd.stop().await;
    let lost_still_queued = net.still_queued(ledger.unshown()).await;
    unexpected.extend(net.reap_exited().into_iter().map(|e| e.to_string()));
    net.shutdown(GRACE).await;

    let tally = ledger.tally();
    let mut faults = std::mem::take(&mut outcome.faults);
    for recovery in &tally.recoveries {
        if let Some(fault) = faults.get_mut(recovery.death) {
            fault.recovered_ms.push(recovery.ms);
        }
    }
    let mut times: Vec<u64> = Vec::new();
    for fault in &mut faults {
        fault.recovered_ms.sort_unstable();
        let until = fault.at_s
            + fault
                .recovered_ms
                .last()
                .map_or(0.0, |ms| *ms as f64 / 1000.0);
        fault.master_down = outcome
            .master_outage
            .is_some_and(|(down, up)| fault.at_s <= up && down <= until);
        if !fault.master_down {
            times.extend(&fault.recovered_ms);
        }
    }
    times.sort_unstable();
    Ok(DrillReport {
        secs: config.secs,
        nodes: config.nodes,
        backend: if config.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
        .into(),
        users: config.users,
        seed: config.seed,
        node_kills: faults
            .iter()
            .filter(|f| f.what.starts_with("kill -9 node"))
            .count(),
        unexpected_exits: unexpected,
        faults,
        recovery_median_ms: times.get(times.len() / 2).copied(),
        recovery_max_ms: times.last().copied(),
        drain_s,
        drained,
        lost_still_queued,
        dir: net.dir().to_owned(),
        tally,
    })
}

struct Outcome {
    start: Instant,
    /// When the master went down and came back, seconds since the start.
    master_outage: Option<(f64, f64)>,
    faults: Vec<Fault>,
    unexpected: Vec<String>,
}

impl Outcome {
    fn note(&mut self, log: &mut impl FnMut(&str), what: String, users: usize) {
        let at_s = self.start.elapsed().as_secs_f64();
        log(&format!("[{at_s:6.1}s] {what}"));
        self.faults.push(Fault {
            at_s,
            what,
            users,
            recovered_ms: Vec::new(),
            master_down: false,
        });
    }
}

/// The fault schedule, until `config.secs` have passed.
async fn inject(
    net: &mut Testnet,
    config: &DrillConfig,
    ledger: &Ledger,
    log: &mut impl FnMut(&str),
) -> Outcome {
    let mut rng = Rng::new(config.seed);
    let start = Instant::now();
    let end = start + Duration::from_secs(config.secs);
    let secs = Duration::from_secs(config.secs);
    let master_down_for = MASTER_DOWN_MAX.min(secs / 2);
    let mut master_stop = Some(start + secs * 2 / 5);
    let mut master_back: Option<Instant> = None;
    let mut postgres = config
        .database_url
        .as_ref()
        .filter(|_| config.restart_postgres)
        .map(|_| start + secs * 3 / 4);
    let mut next_kill = start + rng.between(Duration::from_secs(5), Duration::from_secs(15));
    let mut restart: Option<(usize, Instant)> = None;
    let mut outcome = Outcome {
        start,
        master_outage: None,
        faults: Vec::new(),
        unexpected: Vec::new(),
    };
    // Bounded: one step per 100 ms until the end.
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        for err in net.reap_exited() {
            let text = err.to_string();
            log(&format!("!! {text}"));
            outcome.unexpected.push(text);
        }
        if let Some((index, at)) = restart
            && now >= at
        {
            restart = None;
            match net.start_node(index) {
                Ok(()) => outcome.note(log, format!("restart {}", net.nodes[index].name), 0),
                Err(err) => outcome.unexpected.push(err.to_string()),
            }
        }
        if master_stop.is_some_and(|at| now >= at) {
            master_stop = None;
            if let Some(pid) = net.master_pid() {
                net.kill_master();
                master_back = Some(now + master_down_for);
                let what = format!(
                    "kill -9 master (pid {pid}), down for {} s",
                    master_down_for.as_secs()
                );
                outcome.master_outage =
                    Some((outcome.start.elapsed().as_secs_f64(), secs.as_secs_f64()));
                outcome.note(log, what, 0);
            }
        }
        if master_back.is_some_and(|at| now >= at) {
            master_back = None;
            match net.start_master() {
                Ok(()) => {
                    if let Some((_, up)) = &mut outcome.master_outage {
                        *up = outcome.start.elapsed().as_secs_f64();
                    }
                    outcome.note(log, "restart master".into(), 0);
                }
                Err(err) => outcome.unexpected.push(err.to_string()),
            }
        }
        if postgres.is_some_and(|at| now >= at) {
            postgres = None;
            let what =
                restart_local_postgres(&net.dir().join("logs").join("postgres-restart.log")).await;
            outcome.note(log, what, 0);
        }
        if now >= next_kill && restart.is_none() {
            let running = net.running_nodes();
            if running.len() == net.nodes.len() && !running.is_empty() {
                let index = running[rng.below(running.len() as u64) as usize];
                let addr = net.nodes[index].addr;
                let pid = net.nodes[index].child.as_ref().map_or(0, |c| c.pid());
                net.kill_node(index);
                let users = ledger.node_died(addr, outcome.faults.len());
                let what = format!(
                    "kill -9 {} (pid {pid}, {users} users on it)",
                    net.nodes[index].name
                );
                outcome.note(log, what, users);
                restart = Some((index, now + NODE_DOWN));
            }
            next_kill = now + rng.between(Duration::from_secs(5), Duration::from_secs(15));
        }
    }
    outcome
}

impl DrillReport {
    /// The report as a readable table.
    pub fn table(&self) -> String {
        let t = &self.tally;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drill: {} s, {} nodes, {}, {} users, seed {}",
            self.secs, self.nodes, self.backend, self.users, self.seed
        );
        let rows: [(&str, String); 15] = [
            ("sent", t.sent.to_string()),
            ("acknowledged (Stored)", t.acknowledged.to_string()),
            ("send failures", t.send_failures.to_string()),
            (
                "deliveries owed (msg x recipient)",
                t.expected_deliveries.to_string(),
            ),
            ("delivered (unique shown)", t.delivered.to_string()),
            (
                "  of which never acknowledged",
                t.delivered_unacknowledged.to_string(),
            ),
            (
                "LOST (acked, never shown)",
                match t.lost {
                    0 => "0".to_owned(),
                    lost => format!(
                        "{lost} ({} still queued in storage)",
                        self.lost_still_queued
                    ),
                },
            ),
            ("SHOWN TWICE", t.shown_twice.to_string()),
            (
                "redelivered, dropped by id",
                t.redelivered_dropped.to_string(),
            ),
            (
                "send to shown, p50 / p99 / max",
                match t.latency_ms {
                    [Some(p50), Some(p99), Some(max)] => format!("{p50} ms / {p99} ms / {max} ms"),
                    _ => "-".into(),
                },
            ),
            ("rejected by clients", t.rejected.to_string()),
            ("reconnects", t.reconnects.to_string()),
            ("node kills", self.node_kills.to_string()),
            (
                "recovery after node death, median / max",
                match (self.recovery_median_ms, self.recovery_max_ms) {
                    (Some(median), Some(max)) => format!("{median} ms / {max} ms"),
                    _ => "- (no kill with the master up had users on it)".into(),
                },
            ),
            (
                "  ... when the master was also down",
                self.faults
                    .iter()
                    .filter(|f| f.master_down)
                    .flat_map(|f| f.recovered_ms.iter())
                    .max()
                    .map_or_else(|| "-".to_owned(), |ms| format!("up to {ms} ms")),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<42} {value}");
        }
        let _ = writeln!(
            out,
            "  {:<42} {:.1} s{}",
            "drain at the end",
            self.drain_s,
            if self.drained { "" } else { " (TIMED OUT)" }
        );
        let _ = writeln!(out, "faults:");
        for fault in &self.faults {
            let _ = write!(out, "  {:6.1}s  {}", fault.at_s, fault.what);
            if !fault.recovered_ms.is_empty() {
                let _ = write!(out, "  -> back after {:?} ms", fault.recovered_ms);
            }
            let _ = writeln!(out);
        }
        for (title, samples) in [
            ("send failures, e.g.", &t.failure_samples),
            ("rejections, e.g.", &t.rejected_samples),
            ("lost, e.g.", &t.lost_samples),
            ("unexpected exits", &self.unexpected_exits),
        ] {
            if !samples.is_empty() {
                let _ = writeln!(out, "{title}");
                for sample in samples {
                    let _ = writeln!(out, "  {sample}");
                }
            }
        }
        let _ = writeln!(out, "logs and data: {}", self.dir.display());
        out
    }
}
