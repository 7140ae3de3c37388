//! `quip-testnet up` leaves nothing behind however it ends: the real binary in a process
//! group of its own, its master and nodes answering, then `up` alone is sent SIGHUP (its
//! terminal closed), SIGTERM, SIGINT or SIGKILL; every child process must go and every port
//! must be free.
//!
//! Needs the `quip-node` and `quip-master` binaries beside `quip-testnet` (see
//! `tests/procs.rs`): skipped without them, a failure under `CI=true`.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quip_testnet::procs::Binaries;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);
const NODES: u16 = 2;

fn have_binaries() -> bool {
    let exe = Path::new(env!("CARGO_BIN_EXE_quip-testnet"));
    match Binaries::in_dir(exe.parent().expect("the executable has a directory")) {
        Ok(_) => true,
        Err(err) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the binaries are missing: {err}")
        }
        Err(err) => {
            eprintln!("skipped: {err} (run `cargo test --workspace` or `cargo build --bins`)");
            false
        }
    }
}

fn port_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// A base port with it and the next `NODES` ports free on 127.0.0.1.
fn free_port_base() -> u16 {
    loop {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base.checked_add(NODES).is_some() && (0..=NODES).all(|i| port_free(base + i)) {
            return base;
        }
    }
}

/// `(pid, state)` of each process whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((_, ppid)) = stat(pid)
            && ppid == parent
        {
            found.push(pid);
        }
    }
    found
}

/// The state letter and parent of `pid`, if it exists.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let mut rest = text[text.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Running: exists and is not a zombie waiting for a reaper.
fn running(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Starts `up` with two nodes, waits until it says its network is up, sends `signal` to
/// `up` alone, and waits until every child and every port is gone.
async fn leaves_nothing_after(signal: Signal) {
    if !have_binaries() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_base();
    let mut up = Command::new(env!("CARGO_BIN_EXE_quip-testnet"))
        .args(["up", "--no-view", "--nodes", &NODES.to_string()])
        .args(["--port-base", &base.to_string(), "--dir"])
        .arg(dir.path().join("net"))
        .env_remove("QUIP_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up_pid = up.id().unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Quip testnet is up") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "quip-testnet up did not come up");
    // Keep reading, so `up` never blocks or fails on a full or closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let children = children_of(up_pid);
    assert_eq!(
        children.len(),
        usize::from(NODES) + 1,
        "a master and {NODES} nodes: {children:?}"
    );
    let ports: Vec<u16> = (0..=NODES).map(|i| base + i).collect();
    assert!(
        ports.iter().all(|&port| !port_free(port)),
        "the master and nodes hold {ports:?}"
    );

    kill(Pid::from_raw(up_pid as i32), signal).unwrap();
    let status = tokio::time::timeout(WAIT, up.wait())
        .await
        .unwrap()
        .unwrap();
    if signal == Signal::SIGKILL {
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    let deadline = Instant::now() + WAIT;
    loop {
        let alive: Vec<u32> = children.iter().copied().filter(|&p| running(p)).collect();
        let held: Vec<u16> = ports.iter().copied().filter(|&p| !port_free(p)).collect();
        if alive.is_empty() && held.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {signal} to quip-testnet up: still running {alive:?}, ports held {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_leaves_nothing_behind_when_its_terminal_closes() {
    leaves_nothing_after(Signal::SIGHUP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_leaves_nothing_behind_when_stopped_by_sigterm_or_ctrl_c() {
    leaves_nothing_after(Signal::SIGTERM).await;
    leaves_nothing_after(Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_leaves_nothing_behind_when_killed() {
    leaves_nothing_after(Signal::SIGKILL).await;
}
