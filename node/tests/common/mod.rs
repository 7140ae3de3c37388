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
            eprintln!(
                "skipped: QUIP_TEST_POSTGRES_URL not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
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
}

impl TestNode {
    /// Starts a node on `backend`; `None` if the backend is unavailable (Postgres skipped).
    pub async fn start(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, db_path) = match backend {
            Backend::Sqlite => {
                let path = dir.path().join("quip.db");
                (format!("sqlite://{}", path.display()), Some(path))
            }
            Backend::Postgres => (postgres_url()?, None),
        };
        let storage = Arc::new(Store::connect(&url).await.expect("storage opens"));
        let mut config = NodeConfig::new(
            "node-test".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_owned(),
        );
        // Cost 4 keeps tests quick; the binary refuses anything below 12.
        config.bcrypt_cost = 4;
        config.drain_timeout = std::time::Duration::from_millis(500);
        let handle = quip_node::start(config, storage.clone())
            .await
            .expect("node starts");
        Some(Self {
            handle,
            storage,
            dir,
            db_path,
        })
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
        Client::login(self.connect().await, &user_home(home, user), user, PASSWORD).await
    }
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
