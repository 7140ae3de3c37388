//! `quip-testnet up`: a master and N nodes as real processes on 127.0.0.1, a fresh cluster CA
//! and data directory, optionally simulated users chatting, and a live view redrawn every
//! second: each node's process, address, connected clients, messages per second and health,
//! and the master's state.
//!
//! Keys are read as lines from stdin (type the letter, then Enter), so no raw terminal mode
//! is needed: `k` kills a random node (SIGKILL), `r` restarts killed nodes, `m` stops or
//! starts the master, `q` quits. Ctrl-C, SIGTERM or SIGHUP (its terminal closed) stops
//! everything cleanly: simulated users first, then the nodes (SIGTERM, SIGKILL after 5 s),
//! then the master; and says where the data is. Killed outright, it still leaves nothing
//! running: the children stop when their stdin pipe from it closes (see `procs`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quip_proto::ids::UserName;
use quip_proto::relay::NodeStatus;
use tokio::sync::{mpsc, watch};

use crate::ledger::{Ledger, Rng};
use crate::network::{Testnet, TestnetConfig};
use crate::procs::TestnetError;
use crate::sim::{Crowd, CrowdConfig, Traffic, write_sample_image};

/// Grace for a SIGTERMed process before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How long a simulated user waits between two of its messages.
const CHATTER_EVERY: Duration = Duration::from_secs(5);
/// Events kept for the live view.
const EVENTS: usize = 8;
/// Friendly names for the first simulated users.
const NAMES: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar",
];

/// What `up` runs besides the network.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Simulated users.
    pub users: usize,
    /// Redraw the live view and read keys; without, just run until Ctrl-C.
    pub view: bool,
}

/// How to run the `quip` client: by name if it is on the PATH, else the one built next to
/// this executable.
fn quip_command() -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("quip").is_file()));
    if on_path {
        return "quip".into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("quip")))
        .filter(|quip| quip.is_file())
        .map_or_else(
            || "cargo run --release --bin quip --".into(),
            |quip| quip.display().to_string(),
        )
}

fn user_names(count: usize, suffix: &str) -> Result<Vec<UserName>, TestnetError> {
    (0..count)
        .map(|i| {
            let base = NAMES[i % NAMES.len()];
            let round = i / NAMES.len();
            let name = match round {
                0 => format!("{base}{suffix}"),
                _ => format!("{base}{round}{suffix}"),
            };
            UserName::new(&name).map_err(|e| TestnetError::Invalid(e.to_string()))
        })
        .collect()
}

struct View {
    net: Testnet,
    ledger: Arc<Ledger>,
    users: usize,
    connect: String,
    events: VecDeque<String>,
    rng: Rng,
    started: Instant,
    tty: bool,
}

/// Runs `up` until Ctrl-C, SIGTERM or `q`.
pub async fn run(config: TestnetConfig, options: UpOptions) -> Result<(), TestnetError> {
    let mut stop = stop_signal();
    let nodes = config.nodes;
    let mut net = Testnet::create(config).await?;
    let plural = if nodes == 1 { "" } else { "s" };
    println!(
        "Starting a master and {nodes} node{plural} (data and logs in {})",
        net.dir().display()
    );
    let started = tokio::select! {
        started = net.start(Duration::from_secs(30)) => started,
        _ = stop.changed() => Err(TestnetError::Invalid("interrupted".into())),
    };
    if let Err(err) = started {
        net.shutdown(GRACE).await;
        return Err(err);
    }
    let connect = format!(
        "{} --master {} --ca {} connect",
        quip_command(),
        net.master_addr(),
        net.ca_path().display()
    );
    println!(
        "Quip testnet is up: master {}, {nodes} node{plural}, storage {}",
        net.master_addr(),
        net.database_url()
    );
    println!("In another terminal, chat:\n\n    {connect}\n");
    let ledger = Arc::new(Ledger::default());
    let crowd = tokio::select! {
        crowd = start_crowd(&net, &ledger, options.users) => crowd,
        _ = stop.changed() => Err(TestnetError::Invalid("interrupted".into())),
    };
    let crowd = match crowd {
        Ok(crowd) => crowd,
        Err(err) => {
            net.shutdown(GRACE).await;
            return Err(err);
        }
    };
    let mut view = View {
        net,
        ledger,
        users: options.users,
        connect,
        events: VecDeque::new(),
        rng: Rng::new(u64::from(std::process::id()) ^ 0x7e57),
        started: Instant::now(),
        tty: std::io::stdout().is_terminal(),
    };
    if options.view {
        println!(
            "Keys (type, then Enter): k kill a node, r restart killed nodes, m stop/start the master, q quit"
        );
    } else {
        println!("Running until Ctrl-C.");
    }
    view.serve(options.view, stop).await;
    // After SIGHUP the terminal may be gone: a failed write must not stop the shutdown.
    let _ = writeln!(std::io::stdout(), "\nStopping…");
    if let Some(crowd) = crowd {
        crowd.stop().await;
    }
    view.net.shutdown(GRACE).await;
    let _ = writeln!(
        std::io::stdout(),
        "Stopped. Data and logs are in {}",
        view.net.dir().display()
    );
    Ok(())
}

/// A flag raised by Ctrl-C, SIGTERM or SIGHUP (the terminal closed), from the start, so
/// children are stopped in order. (If `up` dies some other way, SIGKILL included, the
/// children stop by themselves: see `procs`.)
fn stop_signal() -> watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let on = |kind: SignalKind| {
        let listener = signal(kind);
        async move {
            match listener {
                Ok(mut listener) => {
                    listener.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        }
    };
    let (term, hangup) = (on(SignalKind::terminate()), on(SignalKind::hangup()));
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = hangup => {}
        }
        let _ = tx.send(true);
    });
    rx
}

async fn start_crowd(
    net: &Testnet,
    ledger: &Arc<Ledger>,
    users: usize,
) -> Result<Option<Crowd>, TestnetError> {
    if users == 0 {
        return Ok(None);
    }
    let image = net.dir().join("sample.png");
    write_sample_image(&image).map_err(|source| TestnetError::Io {
        what: format!("cannot write {}", image.display()),
        source,
    })?;
    // A shared Postgres database may hold users from earlier runs: make the names unique.
    let suffix = match net.database_url().starts_with("sqlite") {
        true => String::new(),
        false => format!(
            "-{:04x}",
            Rng::new(u64::from(std::process::id())).below(0x1_0000)
        ),
    };
    let config = CrowdConfig {
        master: net.master_addr(),
        trust: net.trust(),
        home: net.dir().join("users"),
        names: user_names(users, &suffix)?,
        key_bits: 2048,
        traffic: Traffic::Chatter {
            every: CHATTER_EVERY,
            image: Some(image),
        },
        seed: u64::from(std::process::id()),
    };
    let tty = std::io::stdout().is_terminal();
    let crowd = Crowd::start(config, ledger.clone(), |done, all| {
        if tty {
            print!("\rSigning up simulated users: {done}/{all}");
            let _ = std::io::stdout().flush();
        }
    })
    .await?;
    if tty {
        println!();
    }
    println!("{users} simulated users signed up and chatting (a group \"lobby\", DMs, images)");
    Ok(Some(crowd))
}

/// Lines typed on stdin, read on a thread of their own (it ends with stdin).
fn keys() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl View {
    fn event(&mut self, what: String, print_now: bool) {
        let line = format!("[{:6.0}s] {what}", self.started.elapsed().as_secs_f64());
        if print_now {
            println!("{line}");
        }
        self.events.push_back(line);
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    async fn serve(&mut self, view: bool, mut stop: watch::Receiver<bool>) {
        let mut keys = if view { Some(keys()) } else { None };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                key = async { keys.as_mut()?.recv().await }, if keys.is_some() => match key {
                    None => keys = None,
                    Some(key) => if !self.key(key.trim()).await { break },
                },
                _ = tick.tick() => {
                    for err in self.net.reap_exited() {
                        self.event(err.to_string(), !view);
                    }
                    if view {
                        let status = self.net.status(Duration::from_millis(800)).await;
                        self.draw(status.ok());
                    }
                }
            }
        }
    }

    /// Handles one key; false to quit.
    async fn key(&mut self, key: &str) -> bool {
        match key {
            "q" | "Q" => return false,
            "k" | "K" => {
                let running = self.net.running_nodes();
                if running.is_empty() {
                    self.event("no node is running".into(), false);
                } else {
                    let index = running[self.rng.below(running.len() as u64) as usize];
                    let node = &self.net.nodes[index];
                    let (name, addr) = (node.name.to_string(), node.addr);
                    let pid = node.child.as_ref().map_or(0, |c| c.pid());
                    self.net.kill_node(index);
                    self.ledger.node_died(addr, 0);
                    self.event(format!("kill -9 {name} (pid {pid})"), false);
                }
            }
            "r" | "R" => {
                for index in 0..self.net.nodes.len() {
                    if self.net.nodes[index].child.is_none() {
                        let name = self.net.nodes[index].name.to_string();
                        match self.net.start_node(index) {
                            Ok(()) => self.event(format!("restarted {name}"), false),
                            Err(err) => self.event(format!("cannot restart {name}: {err}"), false),
                        }
                    }
                }
            }
            "m" | "M" => {
                if self.net.master_pid().is_some() {
                    self.net.stop_master(GRACE).await;
                    self.event(
                        "master stopped (nodes keep serving their users)".into(),
                        false,
                    );
                } else {
                    match self.net.start_master() {
                        Ok(()) => self.event("master started".into(), false),
                        Err(err) => self.event(format!("cannot start the master: {err}"), false),
                    }
                }
            }
            "" => {}
            other => self.event(format!("unknown key {other:?}: k, r, m or q"), false),
        }
        true
    }

    fn draw(&self, status: Option<Vec<NodeStatus>>) {
        let mut out = String::new();
        if self.tty {
            out.push_str("\x1b[2J\x1b[H");
        } else {
            out.push_str("----\n");
        }
        let master = match (self.net.master_pid(), &status) {
            (None, _) => "stopped".to_owned(),
            (Some(pid), Some(_)) => format!("up (pid {pid})"),
            (Some(pid), None) => format!("not answering (pid {pid})"),
        };
        let _ = writeln!(
            out,
            "Quip testnet, up {:.0} s. Master {}: {master}",
            self.started.elapsed().as_secs_f64(),
            self.net.master_addr()
        );
        let _ = writeln!(out, "Storage: {}", self.net.database_url());
        let _ = writeln!(out, "Chat:    {}\n", self.connect);
        let _ = writeln!(
            out,
            "{:<8} {:<16} {:<14} {:>7} {:>6} {:>7}  SIM USERS",
            "NODE", "ADDRESS", "PROCESS", "CLIENTS", "MSGS/S", "HEALTHY"
        );
        for node in &self.net.nodes {
            let process = match (&node.child, node.down_since) {
                (Some(child), _) => format!("pid {}", child.pid()),
                (None, Some(since)) => format!("down {:.0} s", since.elapsed().as_secs_f64()),
                (None, None) => "not started".to_owned(),
            };
            let seen = status
                .as_ref()
                .and_then(|s| s.iter().find(|n| n.node == node.name));
            let (clients, rate, healthy) = match seen {
                Some(n) => (
                    n.load.clients.to_string(),
                    n.load.msgs_per_sec.to_string(),
                    if n.healthy { "yes" } else { "no" },
                ),
                None if status.is_some() => ("-".into(), "-".into(), "no"),
                None => ("?".into(), "?".into(), "?"),
            };
            let sims = self.ledger.users_on(node.addr);
            let _ = writeln!(
                out,
                "{:<8} {:<16} {:<14} {clients:>7} {rate:>6} {healthy:>7}  {sims}",
                node.name.as_str(),
                node.addr.to_string(),
                process
            );
        }
        if status.is_none() {
            let _ = writeln!(
                out,
                "(the master is not answering: clients, rates and health unknown)"
            );
        }
        if self.users > 0 {
            let t = self.ledger.tally();
            let _ = writeln!(
                out,
                "\nSimulated users: {}. Sent {}, stored {}, deliveries shown {} (waiting {}), images {}/{}, reconnects {}",
                self.users,
                t.sent,
                t.acknowledged,
                t.delivered,
                self.ledger.outstanding(),
                t.images_shown,
                t.images_sent,
                t.reconnects
            );
        }
        let _ = writeln!(out, "\nEvents:");
        if self.events.is_empty() {
            let _ = writeln!(out, "  (none yet)");
        }
        for event in &self.events {
            let _ = writeln!(out, "  {event}");
        }
        let _ = writeln!(
            out,
            "\nKeys (type, then Enter): k kill a random node (SIGKILL)  r restart killed nodes  m stop/start the master  q quit"
        );
        let _ = writeln!(
            out,
            "Ctrl-C stops everything. Logs: {}",
            self.net.dir().join("logs").display()
        );
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}
