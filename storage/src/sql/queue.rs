//! Message queues: the shared SQL, expanded into each backend by
//! [`impl_storage!`](super::impl_storage).
//!
//! A message is stored once in `messages` and queued once per recipient in `queue` with the
//! content key wrapped for that recipient. It leaves a queue only when that recipient acks it,
//! and is deleted (with its image blob) when the last recipient has.

/// Most ids bound into one `IN (…)` list (SQLite allows 32,766 parameters per statement,
/// Postgres 65,535).
pub(crate) const ACK_CHUNK: usize = 500;

/// The queue methods of [`crate::Storage`].
macro_rules! queue {
    () => {
        async fn enqueue(&self, messages: &[NewMessage]) -> Result<Vec<Enqueued>> {
            let recipients = messages
                .iter()
                .map(check::message)
                .collect::<Result<Vec<_>>>()?;
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            let mut everyone: Vec<&str> =
                recipients.iter().flatten().map(|(name, _)| *name).collect();
            everyone.sort_unstable();
            everyone.dedup();

            // One transaction for the whole batch: the node gathers many senders' messages
            // into one commit (one fsync).
            let mut tx = self.begin_write().await?;
            Self::lock_queues(&mut *tx, &everyone).await?;
            let mut outcome = Vec::with_capacity(messages.len());
            for (message, recipients) in messages.iter().zip(&recipients) {
                if recipients.is_empty() {
                    // Nobody to deliver to, so nobody would ever ack it: nothing to store.
                    outcome.push(Enqueued::Stored);
                    continue;
                }
                let id = message.id.0.as_slice();
                let inserted = sqlx::query(
                    "INSERT INTO messages (id, sealed, blob_id, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(message.sealed.as_slice())
                .bind(message.blob.as_ref().map(|blob| blob.0.as_slice()))
                .bind(message.created_at)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    outcome.push(Enqueued::Duplicate);
                    continue;
                }
                let mut insert =
                    QueryBuilder::new("INSERT INTO queue (recipient, msg_id, wrapped_key) ");
                insert.push_values(recipients, |mut row, (name, key)| {
                    row.push_bind(*name).push_bind(id).push_bind(*key);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StorageError::from_write(e, "queued message", "recipient"))?;
                outcome.push(Enqueued::Stored);
            }
            tx.commit().await?;
            Ok(outcome)
        }

        async fn pending(
            &self,
            user: &UserName,
            after: i64,
            limit: u32,
        ) -> Result<Vec<QueuedMessage>> {
            let limit = limit.min(limits::MAX_PENDING_BATCH);
            if limit == 0 {
                return Ok(Vec::new());
            }
            let rows: Vec<decode::QueuedRow> = sqlx::query_as(
                "SELECT q.seq, q.msg_id, m.sealed, q.wrapped_key, m.blob_id \
                 FROM queue q JOIN messages m ON m.id = q.msg_id \
                 WHERE q.recipient = $1 AND q.seq > $2 ORDER BY q.seq LIMIT $3",
            )
            .bind(user.as_str())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
            rows.into_iter().map(decode::queued).collect()
        }

        async fn queued(&self, user: &UserName, id: &MsgId) -> Result<Option<QueuedMessage>> {
            let row: Option<decode::QueuedRow> = sqlx::query_as(
                "SELECT q.seq, q.msg_id, m.sealed, q.wrapped_key, m.blob_id \
                 FROM queue q JOIN messages m ON m.id = q.msg_id \
                 WHERE q.recipient = $1 AND q.msg_id = $2",
            )
            .bind(user.as_str())
            .bind(id.0.as_slice())
            .fetch_optional(&self.read)
            .await?;
            row.map(decode::queued).transpose()
        }

        async fn ack(&self, user: &UserName, ids: &[MsgId]) -> Result<u64> {
            let mut ids: Vec<&[u8]> = ids.iter().map(|id| id.0.as_slice()).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                return Ok(0);
            }
            let mut tx = self.begin_write().await?;
            let mut removed_total = 0;
            // Chunks in sorted order, so concurrent acks lock messages in one global order.
            for chunk in ids.chunks(ACK_CHUNK) {
                Self::lock_messages(&mut *tx, chunk).await?;

                let mut delete = QueryBuilder::new("DELETE FROM queue WHERE recipient = ");
                delete.push_bind(user.as_str()).push(" AND msg_id IN (");
                push_list(&mut delete, chunk);
                delete.push(") RETURNING msg_id");
                let removed: Vec<Vec<u8>> = delete.build_query_scalar().fetch_all(&mut *tx).await?;
                if removed.is_empty() {
                    continue;
                }
                removed_total += removed.len() as u64;

                // Messages nobody else is waiting for go, and so do their images.
                let removed: Vec<&[u8]> = removed.iter().map(Vec::as_slice).collect();
                let mut delete = QueryBuilder::new("DELETE FROM messages WHERE id IN (");
                push_list(&mut delete, &removed);
                delete.push(
                    ") AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.msg_id = messages.id) \
                     RETURNING blob_id",
                );
                let blobs: Vec<Option<Vec<u8>>> =
                    delete.build_query_scalar().fetch_all(&mut *tx).await?;
                let blobs: Vec<&[u8]> = blobs.iter().flatten().map(Vec::as_slice).collect();
                if blobs.is_empty() {
                    continue;
                }
                // Chunks go by ON DELETE CASCADE; a blob another message still uses stays.
                let mut delete = QueryBuilder::new("DELETE FROM blobs WHERE id IN (");
                push_list(&mut delete, &blobs);
                delete
                    .push(") AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = blobs.id)");
                delete.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(removed_total)
        }

        async fn queue_depth(&self, user: &UserName) -> Result<u64> {
            let depth: i64 = sqlx::query_scalar("SELECT count(*) FROM queue WHERE recipient = $1")
                .bind(user.as_str())
                .fetch_one(&self.read)
                .await?;
            decode::unsigned("queue depth", depth)
        }
    };
}
pub(crate) use queue;
