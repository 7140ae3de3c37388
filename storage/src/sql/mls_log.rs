//! MLS group logs: the shared SQL, expanded into each backend by
//! [`impl_storage!`](super::impl_storage).
//!
//! Each group has one ordered log (`mls_log`): every MLS message of the group is stored once,
//! with the group's next seq (`mls_groups.last_seq + 1`), however many devices read it, and
//! each leaf keeps a cursor (`mls_members.delivered`, the highest seq it acknowledged). A
//! writer locks the groups it appends to ([`super::Dialect::lock_mls_groups`], in id order) before it
//! reads their seq, epoch and state version, so seqs are gap-free in commit order and a
//! compare-and-set on the state version sees the latest one. Appends come in batches like the
//! queue's ([`crate::Storage::commit`]): one transaction for many senders, each entry judged on
//! its own; a change's writes run in a savepoint, so a refused change leaves nothing behind.

use crate::{MlsChange, UnixMillis};

/// Most log rows inserted by one statement (ten parameters each).
pub(crate) const LOG_CHUNK: usize = 1_000;
/// Most body (or Welcome) bytes one insert statement carries.
pub(crate) const LOG_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Most groups, or expired entries, one prune transaction handles.
pub(crate) const PRUNE_CHUNK: i64 = 500;

/// A group as an append batch sees it: as stored, then as the batch's earlier entries left it.
#[derive(Debug)]
pub(crate) struct GroupNow<'a> {
    /// Its epoch.
    pub(crate) epoch: i64,
    /// Its state version.
    pub(crate) state_version: i64,
    /// The highest seq in its log.
    pub(crate) last_seq: i64,
    /// The bytes of bodies in its log.
    pub(crate) log_bytes: i64,
    /// The batch's latest change of its state, and when it came.
    pub(crate) change: Option<(&'a MlsChange, UnixMillis)>,
    /// Whether the batch appended to it.
    pub(crate) touched: bool,
}

/// The MLS log methods of [`crate::Storage`].
macro_rules! mls_log {
    () => {
        async fn append_mls(
            &self,
            entries: &[MlsEntry],
            max_log_bytes: u64,
        ) -> Result<Vec<Appended>> {
            for entry in entries {
                check::mls_entry(entry)?;
            }
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            let max_log_bytes = i64::try_from(max_log_bytes).unwrap_or(i64::MAX);
            let mut ids: Vec<&[u8]> = entries.iter().map(|e| e.group.0.as_slice()).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut blobs: Vec<&[u8]> = entries
                .iter()
                .filter_map(|e| e.blob.as_ref().map(|b| b.0.as_slice()))
                .collect();
            blobs.sort_unstable();
            blobs.dedup();

            let mut tx = self.begin_write().await?;
            Self::lock_mls_groups(&mut *tx, &ids).await?;
            let mut groups: std::collections::HashMap<[u8; 16], GroupNow<'_>> =
                std::collections::HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(NAME_CHUNK) {
                let mut select = QueryBuilder::new(
                    "SELECT id, epoch, state_version, last_seq, log_bytes FROM mls_groups \
                     WHERE id IN (",
                );
                push_list(&mut select, chunk);
                select.push(")");
                let rows: Vec<(Vec<u8>, i64, i64, i64, i64)> =
                    select.build_query_as().fetch_all(&mut *tx).await?;
                for (id, epoch, state_version, last_seq, log_bytes) in rows {
                    groups.insert(
                        decode::group_id(&id)?.0,
                        GroupNow {
                            epoch,
                            state_version,
                            last_seq,
                            log_bytes,
                            change: None,
                            touched: false,
                        },
                    );
                }
            }
            for chunk in blobs.chunks(NAME_CHUNK) {
                let mut select =
                    QueryBuilder::new("SELECT count(*) FROM blobs WHERE finished = TRUE AND id IN (");
                push_list(&mut select, chunk);
                select.push(")");
                let finished: i64 = select.build_query_scalar().fetch_one(&mut *tx).await?;
                if finished != chunk.len() as i64 {
                    return Err(StorageError::NotFound {
                        what: "finished blob",
                    });
                }
            }
            // Retries: (group, id) pairs already in a log.
            let mut seen: std::collections::HashMap<([u8; 16], [u8; 16]), i64> =
                std::collections::HashMap::new();
            let pairs: Vec<(&[u8], &[u8])> = entries
                .iter()
                .filter(|e| groups.contains_key(&e.group.0))
                .map(|e| (e.group.0.as_slice(), e.id.0.as_slice()))
                .collect();
            for chunk in pairs.chunks(ACK_CHUNK) {
                let mut select = QueryBuilder::new("SELECT l.group_id, l.msg_id, l.seq FROM (");
                select.push_values(chunk, |mut row, (group, id)| {
                    row.push_bind(*group).push_bind(*id);
                });
                select.push(
                    ") AS v JOIN mls_log l ON l.group_id = v.column1 AND l.msg_id = v.column2",
                );
                let rows: Vec<(Vec<u8>, Vec<u8>, i64)> =
                    select.build_query_as().fetch_all(&mut *tx).await?;
                for (group, id, seq) in rows {
                    seen.insert((decode::group_id(&group)?.0, decode::msg_id(&id)?.0), seq);
                }
            }

            // Whether a device is a leaf of a group, as this transaction has left it.
            let mut leaf_of: std::collections::HashMap<([u8; 16], &str, i64), bool> =
                std::collections::HashMap::new();
            let mut stored: Vec<(&MlsEntry, i64)> = Vec::with_capacity(entries.len());
            let mut outcomes = Vec::with_capacity(entries.len());
            for entry in entries {
                let gid = entry.group.0;
                let Some(group) = groups.get_mut(&gid) else {
                    outcomes.push(Appended::NotFound);
                    continue;
                };
                if let Some(seq) = seen.get(&(gid, entry.id.0)) {
                    outcomes.push(Appended::Duplicate { seq: *seq as u64 });
                    continue;
                }
                let (user, device) = (entry.sender.0.as_str(), device_sql(entry.sender.1));
                let external = entry
                    .change
                    .as_ref()
                    .is_some_and(|c| c.added.iter().any(|leaf| *leaf == entry.sender));
                if !external {
                    let member = match leaf_of.get(&(gid, user, device)) {
                        Some(member) => *member,
                        None => {
                            let member = sqlx::query(
                                "SELECT 1 FROM mls_members \
                                 WHERE group_id = $1 AND user_name = $2 AND device = $3",
                            )
                            .bind(gid.as_slice())
                            .bind(user)
                            .bind(device)
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some();
                            leaf_of.insert((gid, user, device), member);
                            member
                        }
                    };
                    if !member {
                        outcomes.push(Appended::NotMember);
                        continue;
                    }
                }
                if let Some(change) = &entry.change
                    && change.state_version as i64 != group.state_version
                {
                    outcomes.push(Appended::Conflict {
                        state_version: group.state_version as u64,
                        epoch: group.epoch as u64,
                    });
                    continue;
                }
                if entry.epoch as i64 != group.epoch {
                    outcomes.push(Appended::WrongEpoch {
                        current: group.epoch as u64,
                    });
                    continue;
                }
                let size = entry.body.len() as i64;
                if entry.change.is_none() && group.log_bytes.saturating_add(size) > max_log_bytes {
                    outcomes.push(Appended::LogFull {
                        log_bytes: group.log_bytes as u64,
                    });
                    continue;
                }
                let seq = group.last_seq + 1;

                if let Some(change) = &entry.change {
                    // Everything a change writes, in a savepoint: a refusal rolls it back
                    // alone (dropping `change_tx` undoes it on an error path too).
                    let mut change_tx = sqlx::Acquire::begin(&mut tx).await?;

                    // Key packages: each reference once, ever (last-resort packages still
                    // stored excepted).
                    let mut refs: Vec<&[u8]> = Vec::with_capacity(change.used_key_packages.len());
                    let mut listed = HashSet::with_capacity(change.used_key_packages.len());
                    let mut reused: Option<Vec<u8>> = None;
                    for kp_ref in &change.used_key_packages {
                        if !listed.insert(kp_ref.as_slice()) {
                            reused = Some(kp_ref.clone());
                            break;
                        }
                        refs.push(kp_ref);
                    }
                    if reused.is_none() && !refs.is_empty() {
                        let mut select = QueryBuilder::new(
                            "SELECT kp_ref FROM key_packages \
                             WHERE last_resort = TRUE AND kp_ref IN (",
                        );
                        push_list(&mut select, &refs);
                        select.push(")");
                        let reusable: Vec<Vec<u8>> =
                            select.build_query_scalar().fetch_all(&mut *change_tx).await?;
                        refs.retain(|r| !reusable.iter().any(|kept| kept.as_slice() == *r));
                    }
                    if reused.is_none() && !refs.is_empty() {
                        // Sorted, so concurrent changes insert shared references in one
                        // order; ON CONFLICT waits for a concurrent insert of the same
                        // reference and, if it committed, skips it: that reference is reused.
                        let mut sorted = refs.clone();
                        sorted.sort_unstable();
                        let mut insert =
                            QueryBuilder::new("INSERT INTO used_key_packages (kp_ref, used_at) ");
                        insert.push_values(&sorted, |mut row, kp_ref| {
                            row.push_bind(*kp_ref).push_bind(entry.at);
                        });
                        insert.push(" ON CONFLICT (kp_ref) DO NOTHING RETURNING kp_ref");
                        let recorded: Vec<Vec<u8>> =
                            insert.build_query_scalar().fetch_all(&mut *change_tx).await?;
                        reused = refs
                            .iter()
                            .find(|r| !recorded.iter().any(|done| done.as_slice() == **r))
                            .map(|r| r.to_vec());
                        if reused.is_none() {
                            // A used package is never handed out again.
                            let mut delete = QueryBuilder::new(
                                "DELETE FROM key_packages WHERE last_resort = FALSE AND kp_ref IN (",
                            );
                            push_list(&mut delete, &refs);
                            delete.push(")");
                            delete.build().execute(&mut *change_tx).await?;
                        }
                    }
                    if let Some(reused) = reused {
                        change_tx.rollback().await?;
                        outcomes.push(Appended::KeyPackageReused(reused));
                        continue;
                    }

                    // Leaves: removals first (with their cursors), then additions, whose
                    // cursors start at this entry.
                    let gid_sql = gid.as_slice();
                    let removed = check::leaves("removed leaves", &change.removed)?;
                    for chunk in removed.chunks(LEAF_CHUNK) {
                        let mut delete = QueryBuilder::new(
                            "DELETE FROM mls_members WHERE group_id = ",
                        );
                        delete.push_bind(gid_sql);
                        delete.push(" AND (user_name, device) IN (");
                        delete.push_values(chunk, |mut row, (user, device)| {
                            row.push_bind(*user).push_bind(*device);
                        });
                        delete.push(")");
                        delete.build().execute(&mut *change_tx).await?;
                    }
                    let added = check::leaves("added leaves", &change.added)?;
                    if !added.is_empty() {
                        for chunk in added.chunks(LEAF_CHUNK) {
                            let mut insert = QueryBuilder::new(
                                "INSERT INTO mls_members (group_id, user_name, device, delivered) ",
                            );
                            insert.push_values(chunk, |mut row, (user, device)| {
                                row.push_bind(gid_sql)
                                    .push_bind(*user)
                                    .push_bind(*device)
                                    .push_bind(seq);
                            });
                            insert.push(" ON CONFLICT (group_id, user_name, device) DO NOTHING");
                            insert
                                .build()
                                .execute(&mut *change_tx)
                                .await
                                .map_err(|e| StorageError::from_write(e, "mls member", "device"))?;
                        }
                        let leaves: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM mls_members WHERE group_id = $1",
                        )
                        .bind(gid_sql)
                        .fetch_one(&mut *change_tx)
                        .await?;
                        let leaves = decode::unsigned::<usize>("mls leaf count", leaves)?;
                        check::len("mls group leaves", leaves, limits::MAX_GROUP_LEAVES)?;
                    }

                    // Welcomes, in statements bounded in rows and bytes.
                    let mut rest = change.welcomes.as_slice();
                    while !rest.is_empty() {
                        let mut bytes = 0;
                        let take = rest
                            .iter()
                            .take(LOG_CHUNK)
                            .take_while(|(_, _, body)| {
                                bytes += body.len();
                                bytes <= LOG_CHUNK_BYTES
                            })
                            .count()
                            .max(1);
                        let (chunk, later) = rest.split_at(take);
                        rest = later;
                        let mut insert = QueryBuilder::new(
                            "INSERT INTO mls_welcomes \
                             (user_name, device, group_id, body, created_at) ",
                        );
                        insert.push_values(chunk, |mut row, (user, device, body)| {
                            row.push_bind(user.as_str())
                                .push_bind(device_sql(*device))
                                .push_bind(gid_sql)
                                .push_bind(body.as_slice())
                                .push_bind(entry.at);
                        });
                        insert
                            .build()
                            .execute(&mut *change_tx)
                            .await
                            .map_err(|e| StorageError::from_write(e, "welcome", "device"))?;
                    }
                    change_tx.commit().await?;

                    for (user, device) in &removed {
                        leaf_of.insert((gid, *user, *device), false);
                    }
                    for (user, device) in &added {
                        leaf_of.insert((gid, *user, *device), true);
                    }
                    group.state_version += 1;
                    group.epoch = change.epoch as i64;
                    group.change = Some((change, entry.at));
                }

                group.last_seq = seq;
                group.log_bytes += size;
                group.touched = true;
                seen.insert((gid, entry.id.0), seq);
                stored.push((entry, seq));
                outcomes.push(Appended::Stored { seq: seq as u64 });
            }

            // The log rows, in statements bounded in rows and bytes.
            let mut rest = stored.as_slice();
            while !rest.is_empty() {
                let mut bytes = 0;
                let take = rest
                    .iter()
                    .take(LOG_CHUNK)
                    .take_while(|(entry, _)| {
                        bytes += entry.body.len();
                        bytes <= LOG_CHUNK_BYTES
                    })
                    .count()
                    .max(1);
                let (chunk, later) = rest.split_at(take);
                rest = later;
                let mut insert = QueryBuilder::new(
                    "INSERT INTO mls_log (group_id, seq, msg_id, sender_user, sender_device, \
                     kind, epoch, body, blob_id, created_at) ",
                );
                insert.push_values(chunk, |mut row, (entry, seq)| {
                    row.push_bind(entry.group.0.as_slice())
                        .push_bind(*seq)
                        .push_bind(entry.id.0.as_slice())
                        .push_bind(entry.sender.0.as_str())
                        .push_bind(device_sql(entry.sender.1))
                        .push_bind(decode::mls_kind_code(entry.kind))
                        .push_bind(entry.epoch as i64)
                        .push_bind(entry.body.as_slice())
                        .push_bind(entry.blob.as_ref().map(|b| b.0.as_slice()))
                        .push_bind(entry.at);
                });
                insert.build().execute(&mut *tx).await?;
            }
            // Each touched group once, in id order.
            let mut touched: Vec<(&[u8; 16], &GroupNow<'_>)> =
                groups.iter().filter(|(_, g)| g.touched).collect();
            touched.sort_unstable_by_key(|(id, _)| **id);
            for (id, group) in touched {
                match group.change {
                    Some((change, at)) => {
                        sqlx::query(
                            "UPDATE mls_groups SET epoch = $2, state_version = $3, \
                             last_seq = $4, log_bytes = $5, name = $6, state = $7, \
                             group_info = $8, updated_at = $9 WHERE id = $1",
                        )
                        .bind(id.as_slice())
                        .bind(group.epoch)
                        .bind(group.state_version)
                        .bind(group.last_seq)
                        .bind(group.log_bytes)
                        .bind(change.name.as_str())
                        .bind(change.state.as_slice())
                        .bind(change.group_info.as_slice())
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query(
                            "UPDATE mls_groups SET last_seq = $2, log_bytes = $3 WHERE id = $1",
                        )
                        .bind(id.as_slice())
                        .bind(group.last_seq)
                        .bind(group.log_bytes)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(outcomes)
        }

        async fn mls_log(
            &self,
            group: &GroupId,
            after: u64,
            limit: usize,
            max_bytes: usize,
        ) -> Result<Vec<MlsLogEntry>> {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let budget = i64::try_from(max_bytes).unwrap_or(i64::MAX);
            // The first `limit` entries after the cursor, cut where their bodies pass the
            // budget (the first one always stays).
            let rows: Vec<decode::MlsLogRow> = sqlx::query_as(
                "SELECT seq, msg_id, sender_user, sender_device, kind, epoch, body, blob_id, \
                        created_at FROM ( \
                   SELECT *, sum(length(body)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) \
                            AS running, \
                          row_number() OVER (ORDER BY seq) AS nth \
                   FROM (SELECT seq, msg_id, sender_user, sender_device, kind, epoch, body, \
                                blob_id, created_at FROM mls_log \
                         WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) AS firsts \
                 ) AS sized WHERE running <= $4 OR nth = 1 ORDER BY seq",
            )
            .bind(group.0.as_slice())
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(budget)
            .fetch_all(&self.read)
            .await?;
            if rows.is_empty() {
                // Nothing new (the common answer to a poll): is there a group at all?
                let known = sqlx::query("SELECT 1 FROM mls_groups WHERE id = $1")
                    .bind(group.0.as_slice())
                    .fetch_optional(&self.read)
                    .await?;
                if known.is_none() {
                    return Err(StorageError::NotFound { what: "mls group" });
                }
            }
            rows.into_iter().map(decode::mls_log_entry).collect()
        }

        async fn mls_unread(
            &self,
            user: &UserName,
            device: DeviceId,
            after: Option<&GroupId>,
            limit: usize,
        ) -> Result<Page<MlsUnread>> {
            let (user, id) = (user.as_str(), device_sql(device));
            // Every id is 16 bytes, so "after the empty id" is from the first.
            let after = after.map_or(&[][..], |id| &id.0[..]);
            let rows: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
                "SELECT m.group_id, m.delivered, g.last_seq FROM mls_members m \
                 JOIN mls_groups g ON g.id = m.group_id \
                 WHERE m.user_name = $1 AND m.device = $2 AND m.group_id > $3 \
                   AND g.last_seq > m.delivered \
                 ORDER BY m.group_id LIMIT $4",
            )
            .bind(user)
            .bind(id)
            .bind(after)
            .bind(check::page_limit(limit))
            .fetch_all(&self.read)
            .await?;
            let total: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM mls_members m JOIN mls_groups g ON g.id = m.group_id \
                 WHERE m.user_name = $1 AND m.device = $2 AND g.last_seq > m.delivered",
            )
            .bind(user)
            .bind(id)
            .fetch_one(&self.read)
            .await?;
            let mut items = rows
                .into_iter()
                .map(|(group, delivered, last_seq)| {
                    Ok(MlsUnread {
                        group: decode::group_id(&group)?,
                        delivered: decode::unsigned("mls cursor", delivered)?,
                        last_seq: decode::unsigned("mls log seq", last_seq)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let more = items.len() > limit;
            items.truncate(limit);
            Ok(Page {
                items,
                more,
                total: decode::unsigned("unread mls group count", total)?,
            })
        }

        async fn ack_mls(
            &self,
            user: &UserName,
            device: DeviceId,
            acks: &[(GroupId, u64)],
        ) -> Result<u64> {
            // Each group once, at its largest seq, in id order.
            let mut wanted: std::collections::BTreeMap<[u8; 16], i64> =
                std::collections::BTreeMap::new();
            for (group, seq) in acks {
                let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
                let at = wanted.entry(group.0).or_insert(seq);
                *at = (*at).max(seq);
            }
            if wanted.is_empty() {
                return Ok(0);
            }
            let (user, id) = (user.as_str(), device_sql(device));
            let mut tx = self.begin_write().await?;
            let mut moved = 0;
            for (group, seq) in &wanted {
                // Forward only, and no further than the log goes.
                let done = sqlx::query(
                    "UPDATE mls_members SET delivered = \
                       (SELECT CASE WHEN g.last_seq < $4 THEN g.last_seq ELSE $4 END \
                        FROM mls_groups g WHERE g.id = $1) \
                     WHERE group_id = $1 AND user_name = $2 AND device = $3 \
                       AND delivered < $4 \
                       AND delivered < (SELECT g.last_seq FROM mls_groups g WHERE g.id = $1)",
                )
                .bind(group.as_slice())
                .bind(user)
                .bind(id)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
                moved += done.rows_affected();
            }
            tx.commit().await?;
            Ok(moved)
        }

        async fn prune_mls(&self, before: UnixMillis) -> Result<u64> {
            let mut deleted = 0;
            // Retention: entries older than `before`, a chunk per transaction.
            loop {
                let mut tx = self.begin_write().await?;
                let old: Vec<(Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT group_id, seq FROM mls_log WHERE created_at < $1 \
                     ORDER BY created_at LIMIT $2",
                )
                .bind(before)
                .bind(PRUNE_CHUNK)
                .fetch_all(&mut *tx)
                .await?;
                let full = old.len() as i64 == PRUNE_CHUNK;
                let mut groups: Vec<&[u8]> = old.iter().map(|(g, _)| g.as_slice()).collect();
                groups.sort_unstable();
                groups.dedup();
                Self::lock_mls_groups(&mut *tx, &groups).await?;
                let mut blobs: Vec<Vec<u8>> = Vec::new();
                for group in &groups {
                    let seqs: Vec<i64> = old
                        .iter()
                        .filter(|(g, _)| g.as_slice() == *group)
                        .map(|(_, seq)| *seq)
                        .collect();
                    let mut delete = QueryBuilder::new("DELETE FROM mls_log WHERE group_id = ");
                    delete.push_bind(*group);
                    delete.push(" AND created_at < ");
                    delete.push_bind(before);
                    delete.push(" AND seq IN (");
                    let mut list = delete.separated(", ");
                    for seq in &seqs {
                        list.push_bind(*seq);
                    }
                    delete.push(") RETURNING CAST(length(body) AS BIGINT), blob_id");
                    let gone: Vec<(i64, Option<Vec<u8>>)> =
                        delete.build_query_as().fetch_all(&mut *tx).await?;
                    deleted += Self::pruned(&mut *tx, group, gone, &mut blobs).await?;
                }
                Self::delete_log_blobs(&mut *tx, &blobs).await?;
                if !full {
                    sqlx::query("DELETE FROM mls_welcomes WHERE created_at < $1")
                        .bind(before)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if !full {
                    break;
                }
            }

            // Cursors: entries every leaf has delivered, a chunk of groups per transaction.
            let mut after: Vec<u8> = Vec::new();
            loop {
                let mut tx = self.begin_write().await?;
                let candidates: Vec<(Vec<u8>,)> = sqlx::query_as(
                    "SELECT g.id FROM mls_groups g WHERE g.id > $1 \
                     AND EXISTS (SELECT 1 FROM mls_log l WHERE l.group_id = g.id) \
                     ORDER BY g.id LIMIT $2",
                )
                .bind(after.as_slice())
                .bind(PRUNE_CHUNK)
                .fetch_all(&mut *tx)
                .await?;
                let full = candidates.len() as i64 == PRUNE_CHUNK;
                let groups: Vec<&[u8]> = candidates.iter().map(|(g,)| g.as_slice()).collect();
                Self::lock_mls_groups(&mut *tx, &groups).await?;
                let mut blobs: Vec<Vec<u8>> = Vec::new();
                for group in &groups {
                    // Read under the group's lock: no append moves it meanwhile. Without
                    // leaves, nobody waits for anything.
                    let (lowest, last_seq): (Option<i64>, i64) = sqlx::query_as(
                        "SELECT (SELECT min(m.delivered) FROM mls_members m \
                                 WHERE m.group_id = g.id), g.last_seq \
                         FROM mls_groups g WHERE g.id = $1",
                    )
                    .bind(*group)
                    .fetch_one(&mut *tx)
                    .await?;
                    let upto = lowest.unwrap_or(last_seq);
                    let gone: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                        "DELETE FROM mls_log WHERE group_id = $1 AND seq <= $2 \
                         RETURNING CAST(length(body) AS BIGINT), blob_id",
                    )
                    .bind(*group)
                    .bind(upto)
                    .fetch_all(&mut *tx)
                    .await?;
                    deleted += Self::pruned(&mut *tx, group, gone, &mut blobs).await?;
                }
                Self::delete_log_blobs(&mut *tx, &blobs).await?;
                tx.commit().await?;
                match candidates.last() {
                    Some((last,)) if full => after = last.clone(),
                    _ => break,
                }
            }
            Ok(deleted)
        }

        async fn mls_welcomes(
            &self,
            user: &UserName,
            device: DeviceId,
            limit: usize,
        ) -> Result<Vec<MlsWelcome>> {
            let rows: Vec<(i64, Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT id, group_id, body, created_at FROM mls_welcomes \
                 WHERE user_name = $1 AND device = $2 ORDER BY id LIMIT $3",
            )
            .bind(user.as_str())
            .bind(device_sql(device))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
            rows.into_iter()
                .map(|(id, group, body, at)| {
                    Ok(MlsWelcome {
                        id: decode::unsigned("welcome id", id)?,
                        group: decode::group_id(&group)?,
                        body,
                        at,
                    })
                })
                .collect()
        }

        async fn ack_welcomes(
            &self,
            user: &UserName,
            device: DeviceId,
            ids: &[u64],
        ) -> Result<u64> {
            let ids: Vec<i64> = ids.iter().filter_map(|id| i64::try_from(*id).ok()).collect();
            if ids.is_empty() {
                return Ok(0);
            }
            let (user, device) = (user.as_str(), device_sql(device));
            let mut tx = self.begin_write().await?;
            let mut acked = 0;
            for chunk in ids.chunks(NAME_CHUNK) {
                let mut delete =
                    QueryBuilder::new("DELETE FROM mls_welcomes WHERE user_name = ");
                delete.push_bind(user);
                delete.push(" AND device = ");
                delete.push_bind(device);
                delete.push(" AND id IN (");
                let mut list = delete.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                delete.push(")");
                acked += delete.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(acked)
        }
    };
}
pub(crate) use mls_log;

/// Helpers of `mls_log!`, expanded into an inherent `impl` of each backend.
macro_rules! mls_log_helpers {
    () => {
        /// Accounts for log entries a prune deleted from `group` (their body lengths and
        /// blobs): lowers the group's `log_bytes`, collects the blobs; returns how many.
        async fn pruned(
            conn: &mut <<Self as Dialect>::Db as sqlx::Database>::Connection,
            group: &[u8],
            gone: Vec<(i64, Option<Vec<u8>>)>,
            blobs: &mut Vec<Vec<u8>>,
        ) -> Result<u64> {
            if gone.is_empty() {
                return Ok(0);
            }
            let bytes: i64 = gone.iter().map(|(len, _)| *len).sum();
            sqlx::query("UPDATE mls_groups SET log_bytes = log_bytes - $2 WHERE id = $1")
                .bind(group)
                .bind(bytes)
                .execute(&mut *conn)
                .await?;
            let count = gone.len() as u64;
            blobs.extend(gone.into_iter().filter_map(|(_, blob)| blob));
            Ok(count)
        }

        /// Deletes the blobs of pruned log entries that no message or log entry still uses
        /// (chunks go by ON DELETE CASCADE).
        async fn delete_log_blobs(
            conn: &mut <<Self as Dialect>::Db as sqlx::Database>::Connection,
            blobs: &[Vec<u8>],
        ) -> Result<()> {
            let mut ids: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
            ids.sort_unstable();
            ids.dedup();
            for chunk in ids.chunks(NAME_CHUNK) {
                let mut delete = QueryBuilder::new("DELETE FROM blobs WHERE id IN (");
                push_list(&mut delete, chunk);
                delete.push(
                    ") AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = blobs.id) \
                     AND NOT EXISTS (SELECT 1 FROM mls_log l WHERE l.blob_id = blobs.id)",
                );
                delete.build().execute(&mut *conn).await?;
            }
            Ok(())
        }
    };
}
pub(crate) use mls_log_helpers;
