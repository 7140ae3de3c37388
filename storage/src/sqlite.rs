//! The SQLite backend: the embedded default, one database file in the data directory.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed transaction survives a
//! power cut, not just a process crash. Concurrency: SQLite has one writer at a time per file.
//! Inside a process every write goes through a pool of one connection (writers queue fairly
//! instead of spinning on the file lock); several node *processes* sharing the file wait for
//! each other through `busy_timeout`. Every multi-statement write starts with `BEGIN IMMEDIATE`,
//! taking the write lock up front: a deferred transaction that reads and then tries to write
//! can fail with `SQLITE_BUSY` at once when another process committed in between, which no
//! timeout can fix. Reads use a separate pool and, thanks to WAL, never wait for the writer.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::sql::Dialect;
use crate::{Result, StorageError};

/// The embedded migrations for this dialect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a write waits for another process holding the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections for concurrent reads (WAL lets them run alongside the writer).
const READERS: u32 = 4;

/// Quip's storage in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStorage {
    /// Connections for reads.
    read: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl SqliteStorage {
    /// Opens (creating it if missing) the database at a `sqlite://path` or `sqlite:path` URL or
    /// a plain file path, and brings its schema up to date.
    pub async fn connect(url_or_path: &str) -> Result<Self> {
        let options = if url_or_path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url_or_path)?
        } else {
            SqliteConnectOptions::new().filename(Path::new(url_or_path))
        };
        Self::connect_with(options).await
    }

    /// Opens the database described by `options` (whose durability and locking settings are
    /// overridden as this module describes) and brings its schema up to date.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self> {
        private_files(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        // Migrate under the write lock, so node processes starting together on a new file
        // apply the migrations once: the others wait, then find them applied. (sqlx's own
        // migration lock is a no-op on SQLite.) The migrator's transactions nest as savepoints.
        let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
        MIGRATOR.run(&mut *tx).await?;
        tx.commit().await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        Ok(Self { read, write })
    }

    /// Closes every connection (checkpointing the WAL). Later calls fail.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Makes the database file and its `-wal`/`-shm` companions owner-only (0600) whatever the
/// umask: they hold password hashes, key backups and session-token hashes. The file is
/// created 0600 before SQLite opens it, and SQLite gives the companions it creates the main
/// file's mode; files left by an older version are tightened. In-memory databases have no
/// file (their "filename" is `:memory:` or a shared-cache name).
fn private_files(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let name = path.to_string_lossy();
        if name.is_empty() || name.starts_with(':') || name.starts_with("file:") {
            return Ok(());
        }
        let io = |err| StorageError::Backend(sqlx::Error::Io(err));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io(err)),
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Dialect for SqliteStorage {
    type Db = Sqlite;

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Nothing to do: `BEGIN IMMEDIATE` already serialises writers, so `seq` order is commit
    /// order.
    async fn lock_queues(_: &mut SqliteConnection, _: &[&str]) -> Result<()> {
        Ok(())
    }

    /// Nothing to do: writers are serialised.
    async fn lock_messages(_: &mut SqliteConnection, _: &[&[u8]]) -> Result<()> {
        Ok(())
    }

    /// Only looks: writers are serialised.
    async fn lock_user(conn: &mut SqliteConnection, user: &str) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM users WHERE name = $1")
            .bind(user)
            .fetch_optional(conn)
            .await?;
        Ok(found.is_some())
    }

    /// Only looks: writers are serialised.
    /// Nothing to do: writers are serialised.
    async fn lock_mls_groups(_: &mut SqliteConnection, _: &[&[u8]]) -> Result<()> {
        Ok(())
    }

    async fn lock_device(conn: &mut SqliteConnection, user: &str, device: i64) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM devices WHERE user_name = $1 AND device = $2")
            .bind(user)
            .bind(device)
            .fetch_optional(conn)
            .await?;
        Ok(found.is_some())
    }
}

crate::sql::impl_storage!(SqliteStorage);

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::Storage;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The database and the WAL and shared-memory files SQLite creates beside it are 0600,
    /// even under a permissive umask (the tests' 022 would give 0644), and a file an older
    /// version left readable is tightened.
    #[tokio::test]
    async fn database_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quip.db");
        let store = SqliteStorage::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let name = quip_proto::ids::UserName::new("perm-ann").unwrap();
        store.purge_sessions(0).await.unwrap();
        let _ = store.queue_depth(&name).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("quip.db{suffix}"));
            assert!(file.exists(), "{} exists while open", file.display());
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        store.close().await;

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStorage::connect(path.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(mode(&path), 0o600, "tightened on open");
        store.close().await;
    }
}
