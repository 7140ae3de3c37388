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
/// Most queue rows inserted by one statement (five parameters each).
pub(crate) const QUEUE_CHUNK: usize = 3_000;
/// Most names or ids bound into one `IN (…)` list.
pub(crate) const NAME_CHUNK: usize = 5_000;
/// Most messages one expiry transaction removes.
pub(crate) const EXPIRE_CHUNK: i64 = 500;
/// What waits per recipient and sender; the caller appends the recipients' names and
/// `) GROUP BY recipient, sender`. An index-only scan of `queue_usage`.
pub(crate) const USAGE_QUERY: &str = "SELECT recipient, sender, count(*), \
     CAST(coalesce(sum(size), 0) AS BIGINT) FROM queue WHERE recipient IN (";

/// The queue methods of [`crate::Storage`].
macro_rules! queue {
    () => {
        async fn enqueue(&self, messages: &[NewMessage]) -> Result<Vec<Enqueued>> {
            Ok(self
                .commit(messages, &[], &QueueQuota::UNLIMITED)
                .await?
                .enqueued)
        }

        async fn ack(&self, user: &UserName, ids: &[MsgId]) -> Result<u64> {
            let ack = Ack {
                user: user.clone(),
                ids: ids.to_vec(),
            };
            Ok(self
                .commit(&[], std::slice::from_ref(&ack), &QueueQuota::UNLIMITED)
                .await?
                .acked)
        }

        async fn commit(
            &self,
            messages: &[NewMessage],
            acks: &[Ack],
            quota: &QueueQuota,
        ) -> Result<Committed> {
            // Each message's own verdict so far: its recipients, or why it is refused.
            let mut checked: Vec<std::result::Result<Vec<(&UserName, &[u8])>, Refused>> =
                messages.iter().map(check::message).collect();
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
                let mut everyone: Vec<&str> = checked
                    .iter()
                    .flatten()
                    .flatten()
                    .map(|(name, _)| name.as_str())
                    .collect();
                everyone.sort_unstable();
                everyone.dedup();
                Self::lock_queues(&mut *tx, &everyone).await?;

                // A recipient without an account refuses that message only.
                let mut known: HashSet<String> = HashSet::with_capacity(everyone.len());
                for chunk in everyone.chunks(NAME_CHUNK) {
                    let mut select = QueryBuilder::new("SELECT name FROM users WHERE name IN (");
                    push_names(&mut select, chunk);
                    select.push(")");
                    let names: Vec<String> =
                        select.build_query_scalar().fetch_all(&mut *tx).await?;
                    known.extend(names);
                }
                for verdict in &mut checked {
                    if let Ok(to) = verdict
                        && let Some((name, _)) = to.iter().find(|(n, _)| !known.contains(n.as_str()))
                    {
                        *verdict = Err(Refused::UnknownRecipient((*name).clone()));
                    }
                }

                // Image blobs count toward the queue they wait in.
                let blob_ids: Vec<&[u8]> = messages
                    .iter()
                    .filter_map(|m| m.blob.as_ref().map(|b| b.0.as_slice()))
                    .collect();
                let mut blob_len: std::collections::HashMap<Vec<u8>, i64> =
                    std::collections::HashMap::new();
                for chunk in blob_ids.chunks(NAME_CHUNK) {
                    let mut select = QueryBuilder::new("SELECT id, len FROM blobs WHERE id IN (");
                    push_list(&mut select, chunk);
                    select.push(")");
                    let rows: Vec<(Vec<u8>, i64)> = select.build_query_as().fetch_all(&mut *tx).await?;
                    blob_len.extend(rows);
                }
                let size = |message: &NewMessage, key: &[u8]| -> u64 {
                    let blob = message
                        .blob
                        .as_ref()
                        .and_then(|b| blob_len.get(b.0.as_slice()))
                        .copied()
                        .unwrap_or(0);
                    (message.sealed.len() + key.len()) as u64 + blob.max(0) as u64
                };

                // Quotas: what waits now (read after the queues are locked, so no concurrent
                // commit can add to them meanwhile) plus this batch, message by message.
                if *quota != QueueQuota::UNLIMITED {
                    let mut usage = Usage::default();
                    for chunk in everyone.chunks(NAME_CHUNK) {
                        let mut select = QueryBuilder::new(USAGE_QUERY);
                        push_names(&mut select, chunk);
                        select.push(") GROUP BY recipient, sender");
                        usage.extend(select.build_query_as().fetch_all(&mut *tx).await?);
                    }
                    for (message, verdict) in messages.iter().zip(&mut checked) {
                        let Ok(to) = verdict else { continue };
                        let sender = message.sender.as_str();
                        let one = size(message, &[]);
                        let largest_key = to.iter().map(|(_, key)| key.len()).max().unwrap_or(0);
                        let biggest = one + largest_key as u64;
                        if let Some(refused) =
                            usage.check(sender, to.iter().map(|(name, _)| *name), biggest, quota)
                        {
                            *verdict = Err(refused);
                            continue;
                        }
                        for (name, key) in to.iter() {
                            usage.add(sender, name.as_str(), one + key.len() as u64);
                        }
                    }
                }

                // Messages nobody would ever ack are not stored at all.
                let storable: Vec<&NewMessage> = messages
                    .iter()
                    .zip(&checked)
                    .filter(|(_, to)| to.as_ref().is_ok_and(|to| !to.is_empty()))
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
                let mut rows: Vec<(&str, &[u8], &[u8], &str, i64)> = Vec::new();
                let mut refused_blobs: Vec<&[u8]> = Vec::new();
                for (message, verdict) in messages.iter().zip(checked) {
                    let id = message.id.0.as_slice();
                    match verdict {
                        Err(refused) => {
                            refused_blobs.extend(message.blob.as_ref().map(|b| b.0.as_slice()));
                            committed.enqueued.push(Enqueued::Refused(refused));
                        }
                        Ok(to) if to.is_empty() => committed.enqueued.push(Enqueued::Stored),
                        Ok(to) if inserted.remove(id) => {
                            let sender = message.sender.as_str();
                            rows.extend(to.iter().map(|(name, key)| {
                                let size = i64::try_from(size(message, key)).unwrap_or(i64::MAX);
                                (name.as_str(), id, *key, sender, size)
                            }));
                            committed.enqueued.push(Enqueued::Stored);
                        }
                        Ok(_) => committed.enqueued.push(Enqueued::Duplicate),
                    }
                }
                for chunk in rows.chunks(QUEUE_CHUNK) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO queue (recipient, msg_id, wrapped_key, sender, size) ",
                    );
                    insert.push_values(chunk, |mut row, (name, id, key, sender, size)| {
                        row.push_bind(*name)
                            .push_bind(*id)
                            .push_bind(*key)
                            .push_bind(*sender)
                            .push_bind(*size);
                    });
                    insert
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| StorageError::from_write(e, "queued message", "recipient"))?;
                }
                // A refused image is never delivered: its blob goes (unless a stored message
                // uses it).
                for chunk in refused_blobs.chunks(NAME_CHUNK) {
                    let mut delete = QueryBuilder::new("DELETE FROM blobs WHERE id IN (");
                    push_list(&mut delete, chunk);
                    delete.push(
                        ") AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = blobs.id)",
                    );
                    delete.build().execute(&mut *tx).await?;
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

        async fn queue_room(
            &self,
            sender: &UserName,
            recipients: &[UserName],
            bytes: u64,
            quota: &QueueQuota,
        ) -> Result<Option<Refused>> {
            if *quota == QueueQuota::UNLIMITED {
                return Ok(None);
            }
            let names: Vec<&str> = recipients.iter().map(UserName::as_str).collect();
            let mut usage = Usage::default();
            for chunk in names.chunks(NAME_CHUNK) {
                let mut select = QueryBuilder::new(USAGE_QUERY);
                push_names(&mut select, chunk);
                select.push(") GROUP BY recipient, sender");
                usage.extend(select.build_query_as().fetch_all(&self.read).await?);
            }
            Ok(usage.check(sender.as_str(), recipients, bytes, quota))
        }

        async fn expire(&self, before: UnixMillis, now: UnixMillis) -> Result<Vec<UserName>> {
            let mut told: HashSet<String> = HashSet::new();
            loop {
                let mut tx = self.begin_write().await?;
                let ids: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT id FROM messages WHERE created_at < $1 ORDER BY id LIMIT $2",
                )
                .bind(before)
                .bind(EXPIRE_CHUNK)
                .fetch_all(&mut *tx)
                .await?;
                let ids: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
                if !ids.is_empty() {
                    // Locked like an ack, so a concurrent ack of the same copy cannot race.
                    Self::lock_messages(&mut *tx, &ids).await?;
                    let mut delete = QueryBuilder::new("DELETE FROM queue WHERE msg_id IN (");
                    push_list(&mut delete, &ids);
                    delete.push(") RETURNING sender, msg_id, recipient");
                    let copies: Vec<(String, Vec<u8>, String)> =
                        delete.build_query_as().fetch_all(&mut *tx).await?;
                    let mut delete = QueryBuilder::new("DELETE FROM messages WHERE id IN (");
                    push_list(&mut delete, &ids);
                    delete.push(") RETURNING blob_id");
                    let blobs: Vec<Option<Vec<u8>>> =
                        delete.build_query_scalar().fetch_all(&mut *tx).await?;
                    let blobs: Vec<&[u8]> = blobs.iter().flatten().map(Vec::as_slice).collect();
                    if !blobs.is_empty() {
                        let mut delete = QueryBuilder::new("DELETE FROM blobs WHERE id IN (");
                        push_list(&mut delete, &blobs);
                        delete.push(
                            ") AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = blobs.id)",
                        );
                        delete.build().execute(&mut *tx).await?;
                    }
                    // Rows from before senders were recorded ('') have nobody to tell.
                    let notices: Vec<&(String, Vec<u8>, String)> =
                        copies.iter().filter(|(sender, ..)| !sender.is_empty()).collect();
                    for chunk in notices.chunks(QUEUE_CHUNK) {
                        let mut insert = QueryBuilder::new(
                            "INSERT INTO expiry_notices (sender, msg_id, recipient, expired_at) ",
                        );
                        insert.push_values(chunk, |mut row, (sender, id, recipient)| {
                            row.push_bind(sender.as_str())
                                .push_bind(id.as_slice())
                                .push_bind(recipient.as_str())
                                .push_bind(now);
                        });
                        insert.push(" ON CONFLICT (sender, msg_id, recipient) DO NOTHING");
                        insert.build().execute(&mut *tx).await?;
                    }
                    told.extend(notices.into_iter().map(|(sender, ..)| sender.clone()));
                }
                let full = ids.len() as i64 == EXPIRE_CHUNK;
                if !full {
                    // Notices nobody collected within the retention go too.
                    sqlx::query("DELETE FROM expiry_notices WHERE expired_at < $1")
                        .bind(before)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if !full {
                    break;
                }
            }
            let mut told: Vec<UserName> = told
                .iter()
                .map(|name| decode::user_name(name))
                .collect::<Result<_>>()?;
            told.sort();
            Ok(told)
        }

        async fn take_expiry_notices(
            &self,
            sender: &UserName,
            limit: u32,
        ) -> Result<Vec<ExpiryNotice>> {
            let rows: Vec<(i64, Vec<u8>, String, i64)> = sqlx::query_as(
                "DELETE FROM expiry_notices WHERE seq IN (SELECT seq FROM expiry_notices \
                 WHERE sender = $1 ORDER BY seq LIMIT $2) \
                 RETURNING seq, msg_id, recipient, expired_at",
            )
            .bind(sender.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.write)
            .await?;
            let mut rows = rows;
            rows.sort_unstable_by_key(|row| row.0);
            rows.into_iter()
                .map(|(_, id, recipient, expired_at)| {
                    Ok(ExpiryNotice {
                        id: decode::msg_id(&id)?,
                        recipient: decode::user_name(&recipient)?,
                        expired_at,
                    })
                })
                .collect()
        }
    };
}
pub(crate) use queue;
