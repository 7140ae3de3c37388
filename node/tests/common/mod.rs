//! Shared test harness: an in-process node on 127.0.0.1:0 over a real storage backend, and
//! real clients talking QUIC to it.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use quip_cli::{Client, ClientError, Connection};
use quip_node::{NodeConfig, NodeHandle};
use quip_proto::ids::UserName;
use quip_quic::Trust;
use quip_storage::Store;
use tempfile::TempDir;

pub mod mls;

/// Key size for test users: the minimum allowed, to keep key generation quick.
pub const TEST_BITS: usize = 2048;
pub const PASSWORD: &str = "correct horse battery staple";

/// Which storage backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The Postgres URL for tests, or `None` (skip) on a machine without one. With `CI=true`,
/// a missing URL is a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("QUIP_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "CI=true but QUIP_TEST_POSTGRES_URL is not set: the Postgres half must run in CI"
            )
        }
        Err(_) => {
            // Written straight to stderr (the test harness captures `eprintln!` of passing
            // tests), once per test binary, so a newcomer sees what did not run and why.
            static SAY_ONCE: std::sync::Once = std::sync::Once::new();
            SAY_ONCE.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"note: Postgres half skipped: QUIP_TEST_POSTGRES_URL is not set \
                      (e.g. postgres://postgres@127.0.0.1:5432/test)\n",
                );
            });
            None
        }
    }
}

/// A running node with its own data directory.
pub struct TestNode {
    pub handle: NodeHandle,
    pub storage: Arc<Store>,
    pub dir: TempDir,
    pub db_path: Option<PathBuf>,
    /// The storage URL (tests that play a malicious server edit the database directly).
    pub url: String,
}

impl TestNode {
    /// Starts a node on `backend`; `None` if the backend is unavailable (Postgres skipped).
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a node with a tweaked configuration.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut NodeConfig)) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, db_path) = match backend {
            Backend::Sqlite => {
                let path = dir.path().join("quip.db");
                (format!("sqlite://{}", path.display()), Some(path))
            }
            Backend::Postgres => (postgres_url()?, None),
        };
        let storage = Arc::new(Store::connect(&url).await.expect("storage opens"));
        let db_url = url.clone();
        let mut config = NodeConfig::new(
            "node-test".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_owned(),
        );
        // Cost 4 keeps tests quick; the binary refuses anything below 12.
        config.bcrypt_cost = 4;
        config.drain_timeout = std::time::Duration::from_millis(500);
        tweak(&mut config);
        let handle = quip_node::start(config, storage.clone())
            .await
            .expect("node starts");
        Some(Self {
            handle,
            storage,
            dir,
            db_path,
            url: db_url,
        })
    }

    /// Plays a malicious server: makes `user` a member of `group` in the database without any
    /// signed change.
    pub async fn inject_member(&self, group: &quip_proto::ids::GroupId, user: &UserName) {
        let sql = "INSERT INTO group_members (group_id, user_name, role) VALUES ($1, $2, 'member')";
        if self.url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            sqlx::query(sql)
                .bind(group.0.as_slice())
                .bind(user.as_str())
                .execute(&pool)
                .await
                .unwrap();
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(sql)
                .bind(group.0.as_slice())
                .bind(user.as_str())
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    /// The deployment the secrets of this node's users are bound to (its CA).
    pub fn deployment(&self) -> quip_cli::e2e::Deployment {
        match self.trust() {
            Trust::Ca(ca) => quip_cli::e2e::Deployment::of_ca(ca.as_ref()),
            Trust::Pinned { .. } => unreachable!("from_ca_file gives a CA"),
        }
    }

    pub fn trust(&self) -> Trust {
        Trust::from_ca_file(self.handle.ca_cert_path()).expect("CA file")
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(
            self.handle.local_addr(),
            quip_quic::names::NODE,
            &self.trust(),
        )
        .await
        .expect("connects")
    }

    pub async fn signup(&self, user: &UserName, home: &Path) -> Client {
        remember_deployment(&user_home(home, user), self.deployment());
        Client::signup(
            self.connect().await,
            &user_home(home, user),
            user,
            PASSWORD,
            TEST_BITS,
        )
        .await
        .expect("signup succeeds")
    }

    pub async fn login(&self, user: &UserName, home: &Path) -> Result<Client, ClientError> {
        remember_deployment(&user_home(home, user), self.deployment());
        Client::login(self.connect().await, &user_home(home, user), user, PASSWORD).await
    }
}

/// The deployment each user directory's key file is bound to, recorded when a [`TestNode`]
/// signs the user up or logs them in (so [`identity_of`] needs no node).
static DEPLOYMENTS: std::sync::Mutex<Vec<(PathBuf, quip_cli::e2e::Deployment)>> =
    std::sync::Mutex::new(Vec::new());

fn remember_deployment(dir: &Path, deployment: quip_cli::e2e::Deployment) {
    let mut all = DEPLOYMENTS.lock().unwrap();
    all.retain(|(d, _)| d != dir);
    all.push((dir.to_owned(), deployment));
}

/// The private keys of `user`, from the key file their client wrote under `home`.
pub fn identity_of(home: &Path, user: &UserName) -> quip_cli::e2e::Identity {
    let dir = user_home(home, user);
    let deployment = DEPLOYMENTS
        .lock()
        .unwrap()
        .iter()
        .find(|(d, _)| *d == dir)
        .map(|(_, deployment)| *deployment)
        .expect("the user signed up through a TestNode");
    quip_cli::e2e::KeyStore::new(dir)
        .load(&quip_cli::e2e::Secrets::derive(user, PASSWORD, &deployment).unwrap())
        .expect("key file loads")
}

/// A valid 3×2 PNG followed by `filler` opaque bytes (decoders stop at IEND), marked with
/// `marker` so a test can search storage for it.
pub fn png(filler: usize, marker: &[u8]) -> Vec<u8> {
    const PNG: &str = "89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d000000154944415478da633c2127c7c0c0c0c0c0c0c4000300132e0108db1b58a20000000049454e44ae426082";
    let mut bytes: Vec<u8> = (0..PNG.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PNG[i..i + 2], 16).unwrap())
        .collect();
    bytes.extend_from_slice(marker);
    bytes.extend((0..filler as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    bytes
}

pub fn user_home(home: &Path, user: &UserName) -> PathBuf {
    quip_cli::user_dir(home, "test-node", user)
}

/// A user name unique to this process and test run, so tests can share a Postgres database.
pub fn unique(prefix: &str) -> UserName {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    UserName::new(&format!("{prefix}{}x{n}", nanos % 1_000_000_000)).unwrap()
}

/// 16 bytes no other call in this test run returns (ids for hand-made envelopes).
pub fn fresh_id() -> [u8; 16] {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut id = nanos.to_le_bytes();
    id[12..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    id
}

/// Runs one async test case on each backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    )*};
}
