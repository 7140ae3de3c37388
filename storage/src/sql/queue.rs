//! Message queues: the shared SQL, expanded into each backend by
//! [`impl_storage!`](super::impl_storage).
//!
//! A message is stored once in `messages` and queued once per recipient in `queue` with the
//! content key wrapped for that recipient. It leaves a queue only when that recipient acks it,
//! and is deleted (with its image blob) when the last recipient has.
//!
//! Writes come in batches ([`crate::Storage::commit`]): a node gathers many senders' messages
//! and many receivers' acks into one transaction, so one commit (one fsync) serves them all,
//! and each kind of row is written with one multi-row statement per chunk rather than one
//! statement per message — per-statement overhead, not the disk, is what bounds SQLite here.

/// Most (recipient, id) pairs bound into one ack statement (two parameters each; SQLite
/// allows 32,766 parameters per statement, Postgres 65,535).
pub(crate) const ACK_CHUNK: usize = 2_000;
/// Most messages inserted by one statement (four parameters each).
pub(crate) const MESSAGE_CHUNK: usize = 1_000;
/// Most queue rows inserted by one statement (three parameters each).
pub(crate) const QUEUE_CHUNK: usize = 5_000;

/// The queue methods of [`crate::Storage`].
macro_rules! queue {
    () => {
        async fn enqueue(&self, messages: &[NewMessage]) -> Result<Vec<Enqueued>> {
            Ok(self.commit(messages, &[]).await?.enqueued)
        }

        async fn ack(&self, user: &UserName, ids: &[MsgId]) -> Result<u64> {
            let ack = Ack {
                user: user.clone(),
                ids: ids.to_vec(),
            };
            Ok(self.commit(&[], std::slice::from_ref(&ack)).await?.acked)
        }

        async fn commit(&self, messages: &[NewMessage], acks: &[Ack]) -> Result<Committed> {
            let recipients = messages
                .iter()
                .map(check::message)
                .collect::<Result<Vec<_>>>()?;
            // Each recipient's ids once, all pairs sorted by id so concurrent acks lock
            // messages in one global order.
            let mut acked: Vec<(&str, &[u8])> = acks
                .iter()
                .flat_map(|ack| {
                    ack.ids
                        .iter()
                        .map(|id| (ack.user.as_str(), id.0.as_slice()))
                })
                .collect();
            acked.sort_unstable_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
            acked.dedup();
            let mut committed = Committed {
                enqueued: Vec::with_capacity(messages.len()),
                acked: 0,
            };
            if messages.is_empty() && acked.is_empty() {
                return Ok(committed);
            }

            let mut tx = self.begin_write().await?;
            if !messages.is_empty() {
                let mut everyone: Vec<&str> =
                    recipients.iter().flatten().map(|(name, _)| *name).collect();
                everyone.sort_unstable();
                everyone.dedup();
                Self::lock_queues(&mut *tx, &everyone).await?;

                // Messages nobody would ever ack are not stored at all.
                let storable: Vec<&NewMessage> = messages
                    .iter()
                    .zip(&recipients)
                    .filter(|(_, to)| !to.is_empty())
                    .map(|(message, _)| message)
                    .collect();
                let mut inserted: HashSet<Vec<u8>> = HashSet::with_capacity(storable.len());
                for chunk in storable.chunks(MESSAGE_CHUNK) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO messages (id, sealed, blob_id, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, message| {
                        row.push_bind(message.id.0.as_slice())
                            .push_bind(message.sealed.as_slice())
                            .push_bind(message.blob.as_ref().map(|blob| blob.0.as_slice()))
                            .push_bind(message.created_at);
                    });
                    insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
                    let ids: Vec<Vec<u8>> = insert.build_query_scalar().fetch_all(&mut *tx).await?;
                    inserted.extend(ids);
                }

                // Queue rows in message order, so each recipient's `seq` order is send order.
                // An id listed twice in the batch is stored by its first occurrence.
                let mut rows: Vec<(&str, &[u8], &[u8])> = Vec::new();
                for (message, to) in messages.iter().zip(&recipients) {
                    let id = message.id.0.as_slice();
                    if to.is_empty() {
                        committed.enqueued.push(Enqueued::Stored);
                    } else if inserted.remove(id) {
                        rows.extend(to.iter().map(|(name, key)| (*name, id, *key)));
                        committed.enqueued.push(Enqueued::Stored);
                    } else {
                        committed.enqueued.push(Enqueued::Duplicate);
                    }
                }
                for chunk in rows.chunks(QUEUE_CHUNK) {
                    let mut insert =
                        QueryBuilder::new("INSERT INTO queue (recipient, msg_id, wrapped_key) ");
                    insert.push_values(chunk, |mut row, (name, id, key)| {
                        row.push_bind(*name).push_bind(*id).push_bind(*key);
                    });
                    insert
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| StorageError::from_write(e, "queued message", "recipient"))?;
                }
            }

            for chunk in acked.chunks(ACK_CHUNK) {
                let mut ids: Vec<&[u8]> = chunk.iter().map(|(_, id)| *id).collect();
                ids.dedup();
                Self::lock_messages(&mut *tx, &ids).await?;

                // A join on VALUES rather than `(recipient, msg_id) IN (VALUES …)`: SQLite
                // plans the row-value IN as a scan of the whole queue, the join as index
                // lookups (`column1`/`column2` are both databases' names for VALUES columns).
                let mut delete =
                    QueryBuilder::new("DELETE FROM queue WHERE seq IN (SELECT q.seq FROM (");
                delete.push_values(chunk, |mut row, (name, id)| {
                    row.push_bind(*name).push_bind(*id);
                });
                delete.push(
                    ") AS v JOIN queue q ON q.recipient = v.column1 AND q.msg_id = v.column2) \
                     RETURNING msg_id",
                );
                let mut removed: Vec<Vec<u8>> =
                    delete.build_query_scalar().fetch_all(&mut *tx).await?;
                if removed.is_empty() {
                    continue;
                }
                committed.acked += removed.len() as u64;
                removed.sort_unstable();
                removed.dedup();

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
            Ok(committed)
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
