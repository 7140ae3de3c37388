//! What the fuzz targets share: the fixed secrets the key-file and backup targets decrypt
//! with, a scratch directory for the targets whose parser reads a file, and the list of wire
//! types the `frame` target picks from. The parsing itself is always the real code in
//! `quip-proto`, `quip-quic` and `quip-cli`; nothing here re-implements it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use quip_cli::e2e::Secrets;
use quip_proto::ids::UserName;

/// The user every key file and backup seed belongs to.
pub const USER: &str = "alice";
/// The password the seeds were made with (Argon2id runs once per process, not per input).
pub const PASSWORD: &str = "fuzzing is not a password";

/// [`USER`] as a name.
pub fn user() -> UserName {
    UserName::new(USER).expect("valid user name")
}

/// The secrets of [`USER`] and [`PASSWORD`], derived once.
pub fn secrets() -> &'static Secrets {
    static CELL: OnceLock<Secrets> = OnceLock::new();
    CELL.get_or_init(|| {
        // Any deployment: the fuzz targets need *a* set of secrets, not a particular one.
        let deployment = quip_cli::e2e::Deployment::of_ca(b"quip fuzz deployment");
        Secrets::derive(&user(), PASSWORD, &deployment).expect("derive secrets")
    })
}

/// A private scratch directory for this process (file parsers are fed through real files,
/// so the code under test is exactly what reads them in the client). In `/dev/shm` where
/// there is one (the client syncs what it writes; on tmpfs that costs nothing), else the
/// temp directory; each process reuses its own.
pub fn scratch() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // libFuzzer exits without unwinding, so clear what finished runs left behind.
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let gone = name.strip_prefix("quip-fuzz-").is_some_and(|pid| {
                Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists()
            });
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("quip-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        dir
    })
}

/// A fresh, empty subdirectory `name` of [`scratch`].
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch subdirectory");
    dir
}

/// The wire types of the `frame` target, by the index its first input byte selects (modulo
/// the count). Appending is fine; reordering changes what the stored corpus means.
pub const WIRE_TYPES: [&str; 13] = [
    "ClientToNode",
    "NodeToClient",
    "NodeToMaster",
    "MasterToNode",
    "ClientToMaster",
    "MasterToClient",
    "StreamOpen",
    "Chunk",
    "Hello",
    "SignedChange",
    "Sealed",
    "Envelope",
    "Delivery",
];

/// The index of `name` in [`WIRE_TYPES`].
pub fn wire_type(name: &str) -> u8 {
    WIRE_TYPES
        .iter()
        .position(|t| *t == name)
        .expect("known wire type") as u8
}
