//! Encrypted image blobs, uploaded chunk by chunk: the shared SQL, expanded into each backend by
//! [`impl_storage!`](super::impl_storage).

/// The blob methods of [`crate::Storage`].
macro_rules! blobs {
    () => {
        async fn blob_create(&self, id: &BlobId, owner: &UserName, now: UnixMillis) -> Result<()> {
            sqlx::query(
                "INSERT INTO blobs (id, owner, chunks, len, finished, created_at) \
                 VALUES ($1, $2, 0, 0, FALSE, $3)",
            )
            .bind(id.0.as_slice())
            .bind(owner.as_str())
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(|e| StorageError::from_write(e, "blob", "user"))?;
            Ok(())
        }

        async fn blob_append(&self, id: &BlobId, index: u32, data: &[u8]) -> Result<()> {
            check::len("blob chunk", data.len(), limits::MAX_BLOB_CHUNK)?;
            let id = id.0.as_slice();
            let mut tx = self.begin_write().await?;
            // Compare-and-set on the chunk count: only the next chunk of an unfinished blob
            // moves it on (and on Postgres the row lock orders concurrent appends).
            let moved = sqlx::query(
                "UPDATE blobs SET chunks = chunks + 1, len = len + $3 \
                 WHERE id = $1 AND chunks = $2 AND finished = FALSE",
            )
            .bind(id)
            .bind(i64::from(index))
            .bind(data.len() as i64)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                let state: Option<(i64, bool)> =
                    sqlx::query_as("SELECT chunks, finished FROM blobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match state {
                    None => StorageError::NotFound { what: "blob" },
                    Some((_, true)) => StorageError::conflict("blob", "the upload is finished"),
                    Some((chunks, false)) => StorageError::conflict(
                        "blob chunk",
                        format!("expected chunk {chunks}, got chunk {index}"),
                    ),
                });
            }
            sqlx::query("INSERT INTO blob_chunks (blob_id, idx, data) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(i64::from(index))
                .bind(data)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn blob_finish(&self, id: &BlobId) -> Result<()> {
            let done = sqlx::query("UPDATE blobs SET finished = TRUE WHERE id = $1")
                .bind(id.0.as_slice())
                .execute(&self.write)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StorageError::NotFound { what: "blob" });
            }
            Ok(())
        }

        async fn blob_info(&self, id: &BlobId) -> Result<Option<BlobInfo>> {
            sqlx::query_as::<_, decode::BlobRow>(
                "SELECT id, owner, chunks, len, finished FROM blobs WHERE id = $1",
            )
            .bind(id.0.as_slice())
            .fetch_optional(&self.read)
            .await?
            .map(decode::blob)
            .transpose()
        }

        async fn blob_chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>> {
            Ok(
                sqlx::query_scalar("SELECT data FROM blob_chunks WHERE blob_id = $1 AND idx = $2")
                    .bind(id.0.as_slice())
                    .bind(i64::from(index))
                    .fetch_optional(&self.read)
                    .await?,
            )
        }

        async fn blob_delete(&self, id: &BlobId) -> Result<bool> {
            // Chunks go by ON DELETE CASCADE.
            let done = sqlx::query("DELETE FROM blobs WHERE id = $1")
                .bind(id.0.as_slice())
                .execute(&self.write)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn purge_unfinished_blobs(&self, before: UnixMillis) -> Result<u64> {
            let done = sqlx::query("DELETE FROM blobs WHERE finished = FALSE AND created_at < $1")
                .bind(before)
                .execute(&self.write)
                .await?;
            Ok(done.rows_affected())
        }
    };
}
pub(crate) use blobs;
