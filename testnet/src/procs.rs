//! Child processes for the testnet: finding the `quip-master` and `quip-node` executables,
//! starting them with their output in a log file, stopping them (SIGTERM, then SIGKILL after
//! a grace period) and killing them (SIGKILL); and the testnet's error type.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches only
//! `quip-testnet`, which stops them in order. A [`Child`] is killed (SIGKILL) when dropped.
//! And no child outlives us however we end, SIGKILL included: each child's stdin is a pipe
//! whose writing end only we hold, and `quip-node` and `quip-master` started with
//! `QUIP_STOP_WITH_PARENT` stop when it closes — the kernel closes it when we die. (No
//! `prctl(PR_SET_PDEATHSIG)`: it needs unsafe code between fork and exec, and fires when the
//! spawning *thread* exits, which a tokio worker may do.)

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Something went wrong running the testnet.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// A binary the testnet starts is not where it looked.
    #[error(
        "{name} not found in {}: build the binaries first with `cargo build --release --bins`",
        dir.display()
    )]
    MissingBinary {
        /// The binary's name.
        name: &'static str,
        /// The directory searched.
        dir: PathBuf,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A child process exited when it should be running.
    #[error("{name} exited ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        /// The child's name.
        name: String,
        /// How it ended.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// Something did not become ready in time.
    #[error("{what} not ready within {within:?}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long we waited.
        within: Duration,
    },
    /// Certificates or the master's answers.
    #[error(transparent)]
    Master(#[from] quip_master::MasterError),
    /// The CA certificate could not be read.
    #[error(transparent)]
    Tls(#[from] quip_quic::TlsError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Storage(#[from] quip_storage::StorageError),
    /// A simulated user's client failed.
    #[error(transparent)]
    Client(#[from] quip_cli::ClientError),
    /// Bad settings.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestnetError {
    let what = what.into();
    move |source| TestnetError::Io { what, source }
}

/// Where the `quip-master` and `quip-node` executables are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `quip-master`.
    pub master: PathBuf,
    /// `quip-node`.
    pub node: PathBuf,
}

impl Binaries {
    /// The binaries in `dir` (e.g. `target/release`), checked to exist.
    pub fn in_dir(dir: &Path) -> Result<Self, TestnetError> {
        let find = |name: &'static str| {
            let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if path.is_file() {
                Ok(path)
            } else {
                Err(TestnetError::MissingBinary {
                    name,
                    dir: dir.to_owned(),
                })
            }
        };
        Ok(Self {
            master: find("quip-master")?,
            node: find("quip-node")?,
        })
    }

    /// The binaries next to the running executable (how `cargo build --bins` lays them out).
    pub fn beside_current_exe() -> Result<Self, TestnetError> {
        let exe = std::env::current_exe().map_err(io("cannot find the running executable"))?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        Self::in_dir(dir)
    }
}

use quip_quic::STOP_WITH_PARENT;

/// A child process that is SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `program` with `args`, stdout and stderr appended to `log`, in a process group
    /// of its own, its stdin a pipe that closes when we exit (see the module documentation).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self, TestnetError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("cannot open {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("cannot open {}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .env(STOP_WITH_PARENT, "1")
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("QUIP_TESTNET_CHILD_LOG")
                    .unwrap_or_else(|_| "info,quinn=warn".into()),
            )
            .env("NO_COLOR", "1")
            // Errors in the log stay short enough for the tail we show.
            .env("RUST_LIB_BACKTRACE", "0")
            .process_group(0)
            .spawn()
            .map_err(io(format!("cannot start {}", program.display())))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The error describing an unexpected exit (with the end of its log).
    pub fn exit_error(&mut self) -> Option<TestnetError> {
        let status = self.exited()?;
        Some(TestnetError::Exited {
            name: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            tail: tail(&self.log, 8),
        })
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn terminate(&mut self) {
        if self.exited().is_none()
            && let Ok(pid) = i32::try_from(self.pid())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Waits until it exits or `deadline` passes, then SIGKILLs it. How it ended if it
    /// stopped by itself.
    pub async fn reap_by(&mut self, deadline: Instant) -> Option<ExitStatus> {
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let status = self.exited();
        self.kill();
        status
    }

    /// SIGTERM, then wait up to `grace` for it to exit, then SIGKILL. True if it stopped by
    /// itself.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        self.terminate();
        self.reap_by(Instant::now() + grace).await.is_some()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file (for error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Restarts the local Postgres cluster the way DEVELOPERS.md does (`pg_ctlcluster
/// --skip-systemctl-redirect VERSION main restart`, output in `log`); says what happened.
pub async fn restart_local_postgres(log: &Path) -> String {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut dir| dir.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned());
    let Some(version) = version else {
        return "postgres restart skipped: no /etc/postgresql".into();
    };
    let args = ["--skip-systemctl-redirect", &version, "main", "restart"].map(String::from);
    let mut child = match Child::spawn("pg_ctlcluster", Path::new("pg_ctlcluster"), &args, log) {
        Ok(child) => child,
        Err(err) => return format!("postgres restart failed: {err}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    match child.reap_by(deadline).await {
        Some(status) if status.success() => format!("restart postgres {version}"),
        Some(status) => format!("postgres restart failed ({status}); see {}", log.display()),
        None => "postgres restart timed out".into(),
    }
}
