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

use crate::Result;
use crate::sql::Dialect;

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
}

crate::sql::impl_storage!(SqliteStorage);
