//! The Postgres backend: shared storage for a cluster of nodes across machines.
//!
//! Durability: every connection is checked for `synchronous_commit` and switched back on if
//! the server or the URL turned it off, so a commit the node acknowledges is on disk.
//!
//! Queue order: a queue's `seq` comes from an identity, allocated when a row is inserted, but
//! concurrent transactions commit in any order — without care, seq 9 could become visible
//! after a reader already moved its `seq > after` cursor past 10, and that message would wait
//! until the next full rescan. So an enqueue first takes a transaction-scoped advisory lock for
//! each recipient's queue (hashed into [`QUEUE_LOCKS`] buckets, taken in sorted order, so two
//! enqueues cannot deadlock): enqueues to one recipient commit one after the other, in `seq`
//! order. Enqueues to unrelated recipients still run in parallel.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::Result;
use crate::sql::Dialect;

/// The embedded migrations for this dialect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Most pooled connections per storage handle.
const MAX_CONNECTIONS: u32 = 16;

/// Number of advisory locks recipients' queues are hashed into: enough that unrelated
/// enqueues rarely wait for each other, few enough that one enqueue to a large group cannot
/// exhaust the server's lock table.
const QUEUE_LOCKS: u32 = 256;

/// The first key of Quip's queue advisory locks (`pg_advisory_xact_lock(int, int)`), so they
/// do not collide with other users of advisory locks in the same database: "QuiQ".
const QUEUE_LOCK_SPACE: i32 = 0x5175_6951;

/// Quip's storage in a Postgres database.
#[derive(Clone, Debug)]
pub struct PostgresStorage {
    /// Connections for reads (the same pool as `write`).
    read: PgPool,
    /// Connections for writes.
    write: PgPool,
}

impl PostgresStorage {
    /// Connects to a `postgres://` or `postgresql://` URL and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with `options` and brings the schema up to date.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_connect(|conn, _| Box::pin(prepare_connection(conn)))
            .connect_with(options)
            .await?;
        // sqlx serialises concurrent migrators on Postgres with an advisory lock.
        MIGRATOR.run(&pool).await?;
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&pool)
            .await?;
        if autovacuum != "on" {
            tracing::warn!(
                "autovacuum is off on this server: the queue tables will bloat and slow down \
                 unless `VACUUM queue, messages` runs regularly"
            );
        }
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }

    /// Vacuums and analyzes the queue tables now (what autovacuum does on its own; for servers
    /// that run without it, and for benchmarks that want a clean start).
    pub async fn vacuum_queues(&self) -> Result<()> {
        sqlx::query("VACUUM (ANALYZE, SKIP_LOCKED) queue, messages")
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Closes every connection. Later calls fail.
    pub async fn close(&self) {
        self.write.close().await;
    }
}

/// Sets up each new connection: durable commits, and index lookups whatever the statistics.
///
/// Every query Quip runs is an indexed lookup, but the queue tables churn: a table that was
/// nearly empty at its last ANALYZE (a fresh database, or a server without autovacuum) makes
/// the planner pick sequential scans, and those get baked into cached plans — prepared
/// statements, and the foreign-key checks of every insert and delete — for the life of the
/// connection. Measured by `bench dm` on Postgres: queue inserts at 160–200 ms each after a
/// vacuum of empty tables, against about 1 ms with index scans. So sequential scans are
/// priced out for Quip's sessions (they still run where no index applies).
async fn prepare_connection(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await?;
    ensure_synchronous_commit(conn).await
}

/// Turns `synchronous_commit` back on for this connection if it is off. (`local`,
/// `remote_write` and `remote_apply` all wait for the local flush and are left alone.)
async fn ensure_synchronous_commit(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mode: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut *conn)
        .await?;
    if mode == "off" {
        tracing::warn!(
            "synchronous_commit is off on this server; turning it on for quip's connections"
        );
        sqlx::query("SET synchronous_commit = on")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The advisory-lock bucket of a recipient's queue: FNV-1a, so every node, whatever its build,
/// picks the same bucket.
fn queue_bucket(recipient: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in recipient.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    // Below QUEUE_LOCKS, so it fits.
    (hash % QUEUE_LOCKS) as i32
}

impl Dialect for PostgresStorage {
    type Db = Postgres;

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.write.begin().await?)
    }

    async fn lock_queues(conn: &mut PgConnection, recipients: &[&str]) -> Result<()> {
        let mut buckets: Vec<i32> = recipients.iter().map(|name| queue_bucket(name)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        // unnest yields the sorted array in order, so the locks are taken in that order.
        sqlx::query("SELECT pg_advisory_xact_lock($1, b) FROM unnest($2::int4[]) AS b")
            .bind(QUEUE_LOCK_SPACE)
            .bind(buckets)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn lock_messages(conn: &mut PgConnection, ids: &[&[u8]]) -> Result<()> {
        sqlx::query("SELECT id FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Locks the user's row `FOR NO KEY UPDATE`: it conflicts with itself, but not with the
    /// `FOR KEY SHARE` locks that inserts referencing the user take (queue rows, sessions), so
    /// messages to the user never wait for it.
    async fn lock_user(conn: &mut PgConnection, user: &str) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM users WHERE name = $1 FOR NO KEY UPDATE")
            .bind(user)
            .fetch_optional(conn)
            .await?;
        Ok(found.is_some())
    }

    /// Locks the device's row `FOR UPDATE`, which conflicts with the `FOR KEY SHARE` lock the
    /// foreign-key check of an insert referencing it takes: such an insert waits, then finds
    /// the device gone. (Read committed: the deletes that follow see what committed before.)
    /// Row locks on the groups, taken in id order.
    async fn lock_mls_groups(conn: &mut PgConnection, ids: &[&[u8]]) -> Result<()> {
        sqlx::query("SELECT id FROM mls_groups WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn lock_device(conn: &mut PgConnection, user: &str, device: i64) -> Result<bool> {
        let found =
            sqlx::query("SELECT 1 FROM devices WHERE user_name = $1 AND device = $2 FOR UPDATE")
                .bind(user)
                .bind(device)
                .fetch_optional(conn)
                .await?;
        Ok(found.is_some())
    }
}

crate::sql::impl_storage!(PostgresStorage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_buckets_are_stable_and_in_range() {
        // Pinned: changing the hash would let old and new nodes order one queue differently.
        assert_eq!(queue_bucket(""), (0x811c_9dc5_u32 % QUEUE_LOCKS) as i32);
        assert_eq!(queue_bucket("alice"), 231); // FNV-1a("alice") = 0x8722_13e7
        for name in ["alice", "bob", "carol.x", "a-very-long-user-name-here"] {
            assert!((0..QUEUE_LOCKS as i32).contains(&queue_bucket(name)));
        }
    }
}
