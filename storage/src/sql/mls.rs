//! MLS devices, key packages, backed-up device state and group state: the shared SQL, expanded
//! into each backend by [`impl_storage!`](super::impl_storage).
//!
//! Counts checked against a limit (a user's devices, a device's key packages) and key package
//! hand-outs run under [`super::Dialect::lock_user`], so concurrent writers from any node
//! serialise per user. A group's state moves with its log ([`super::mls_log`]). A device's
//! rows are deleted under [`super::Dialect::lock_device`], so no concurrent insert leaves one
//! behind.

/// Most group leaves inserted by one statement (three parameters each).
pub(crate) const LEAF_CHUNK: usize = 3_000;
/// Most state entries written by one statement (four parameters each).
pub(crate) const STATE_CHUNK: usize = 1_000;
/// Most value bytes one state statement carries (entries are up to 1 MiB each).
pub(crate) const STATE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The MLS methods of [`crate::Storage`].
macro_rules! mls {
    () => {
        async fn add_device(&self, device: &NewDevice) -> Result<()> {
            check::new_device(device)?;
            let user = device.user.as_str();
            let id = device_sql(device.device);
            let mut tx = self.begin_write().await?;
            if !Self::lock_user(&mut *tx, user).await? {
                return Err(StorageError::NotFound { what: "user" });
            }
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT device FROM devices WHERE user_name = $1")
                    .bind(user)
                    .fetch_all(&mut *tx)
                    .await?;
            if ids.contains(&id) {
                return Err(StorageError::AlreadyExists { what: "device" });
            }
            if ids.len() >= limits::MAX_DEVICES_PER_USER {
                return Err(StorageError::Full {
                    what: "devices",
                    max: limits::MAX_DEVICES_PER_USER,
                });
            }
            // With the id free and the user there, a unique violation is the signature key.
            sqlx::query(
                "INSERT INTO devices (user_name, device, credential, signature_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user)
            .bind(id)
            .bind(device.credential.as_slice())
            .bind(device.signature_key.as_slice())
            .bind(device.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| StorageError::from_write(e, "device signature key", "user"))?;
            tx.commit().await?;
            Ok(())
        }

        async fn devices(&self, user: &UserName) -> Result<Vec<DeviceRecord>> {
            let rows: Vec<decode::DeviceRow> = sqlx::query_as(
                "SELECT user_name, device, credential, signature_key, created_at \
                 FROM devices WHERE user_name = $1",
            )
            .bind(user.as_str())
            .fetch_all(&self.read)
            .await?;
            let mut devices = rows
                .into_iter()
                .map(decode::device_record)
                .collect::<Result<Vec<_>>>()?;
            // By the u64 id, which the stored i64's order is not.
            devices.sort_unstable_by_key(|d| d.device);
            Ok(devices)
        }

        async fn remove_device(&self, user: &UserName, device: DeviceId) -> Result<bool> {
            let (user, id) = (user.as_str(), device_sql(device));
            let mut tx = self.begin_write().await?;
            if !Self::lock_device(&mut *tx, user, id).await? {
                return Ok(false);
            }
            sqlx::query("DELETE FROM key_packages WHERE user_name = $1 AND device = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM device_state WHERE user_name = $1 AND device = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM mls_welcomes WHERE user_name = $1 AND device = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM mls_members WHERE user_name = $1 AND device = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM devices WHERE user_name = $1 AND device = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        }

        async fn put_key_packages(
            &self,
            user: &UserName,
            device: DeviceId,
            packages: &[NewKeyPackage],
        ) -> Result<()> {
            let adding = check::key_packages(packages)?;
            let (user, id) = (user.as_str(), device_sql(device));
            let mut tx = self.begin_write().await?;
            // The user's lock makes the count below hold until commit.
            let known = Self::lock_user(&mut *tx, user).await?
                && sqlx::query("SELECT 1 FROM devices WHERE user_name = $1 AND device = $2")
                    .bind(user)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if !known {
                return Err(StorageError::NotFound { what: "device" });
            }
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM key_packages \
                 WHERE user_name = $1 AND device = $2 AND last_resort = FALSE",
            )
            .bind(user)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let waiting = decode::unsigned::<usize>("key package count", waiting)?;
            if waiting + adding > limits::MAX_KEY_PACKAGES_PER_DEVICE {
                return Err(StorageError::Full {
                    what: "key packages",
                    max: limits::MAX_KEY_PACKAGES_PER_DEVICE,
                });
            }
            if packages.is_empty() {
                return Ok(());
            }

            let refs: Vec<&[u8]> = packages.iter().map(|p| p.kp_ref.as_slice()).collect();
            let mut select = QueryBuilder::new("SELECT kp_ref FROM used_key_packages WHERE kp_ref IN (");
            push_list(&mut select, &refs);
            select.push(")");
            let used: Option<Vec<u8>> = select.build_query_scalar().fetch_optional(&mut *tx).await?;
            if used.is_some() {
                return Err(StorageError::AlreadyExists { what: "key package" });
            }
            if packages.iter().any(|p| p.last_resort) {
                sqlx::query(
                    "DELETE FROM key_packages \
                     WHERE user_name = $1 AND device = $2 AND last_resort = TRUE",
                )
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            // At most MAX_KEY_PACKAGES_PER_DEVICE + 1 rows: one statement.
            let mut insert = QueryBuilder::new(
                "INSERT INTO key_packages \
                 (user_name, device, kp_ref, data, last_resort, created_at) ",
            );
            insert.push_values(packages, |mut row, package| {
                row.push_bind(user)
                    .push_bind(id)
                    .push_bind(package.kp_ref.as_slice())
                    .push_bind(package.data.as_slice())
                    .push_bind(package.last_resort)
                    .push_bind(package.created_at);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| StorageError::from_write(e, "key package", "device"))?;
            tx.commit().await?;
            Ok(())
        }

        async fn take_key_packages(&self, user: &UserName) -> Result<Vec<KeyPackageRecord>> {
            let user = user.as_str();
            let mut tx = self.begin_write().await?;
            // Takers of one user's packages run one after the other, each seeing what the
            // previous one deleted.
            if !Self::lock_user(&mut *tx, user).await? {
                return Ok(Vec::new());
            }
            let oldest: Vec<i64> = sqlx::query_scalar(
                "SELECT min(id) FROM key_packages \
                 WHERE user_name = $1 AND last_resort = FALSE GROUP BY device",
            )
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
            let mut taken: Vec<decode::KeyPackageRow> = Vec::with_capacity(oldest.len());
            if !oldest.is_empty() {
                // At most MAX_DEVICES_PER_USER ids.
                let mut delete = QueryBuilder::new("DELETE FROM key_packages WHERE id IN (");
                let mut list = delete.separated(", ");
                for id in &oldest {
                    list.push_bind(*id);
                }
                delete.push(") RETURNING device, kp_ref, data, last_resort");
                taken = delete.build_query_as().fetch_all(&mut *tx).await?;
            }
            let last_resort: Vec<decode::KeyPackageRow> = sqlx::query_as(
                "SELECT device, kp_ref, data, last_resort FROM key_packages \
                 WHERE user_name = $1 AND last_resort = TRUE",
            )
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;

            let served: HashSet<i64> = taken.iter().map(|row| row.0).collect();
            let mut packages: Vec<KeyPackageRecord> = taken
                .into_iter()
                .chain(last_resort.into_iter().filter(|row| !served.contains(&row.0)))
                .map(decode::key_package)
                .collect();
            packages.sort_unstable_by_key(|p| p.device);
            Ok(packages)
        }

        async fn key_package_count(&self, user: &UserName, device: DeviceId) -> Result<u64> {
            // One statement, so "no such device" and the count come from one snapshot.
            let count: Option<i64> = sqlx::query_scalar(
                "SELECT count(k.id) FROM devices d LEFT JOIN key_packages k \
                 ON k.user_name = d.user_name AND k.device = d.device AND k.last_resort = FALSE \
                 WHERE d.user_name = $1 AND d.device = $2 GROUP BY d.user_name, d.device",
            )
            .bind(user.as_str())
            .bind(device_sql(device))
            .fetch_optional(&self.read)
            .await?;
            let count = count.ok_or(StorageError::NotFound { what: "device" })?;
            decode::unsigned("key package count", count)
        }

        async fn create_mls_group(&self, group: &NewMlsGroup) -> Result<()> {
            let leaves = check::new_mls_group(group)?;
            let epoch = check::epoch(group.epoch)?;
            let id = group.id.0.as_slice();
            let mut tx = self.begin_write().await?;

            let taken = sqlx::query("SELECT 1 FROM mls_groups WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Err(StorageError::AlreadyExists { what: "mls group" });
            }
            // A unique violation here is a concurrent creation of the same id.
            sqlx::query(
                "INSERT INTO mls_groups \
                 (id, name, epoch, state, group_info, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(id)
            .bind(group.name.as_str())
            .bind(epoch)
            .bind(group.state.as_slice())
            .bind(group.group_info.as_slice())
            .bind(group.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| StorageError::from_write(e, "mls group", "mls group"))?;
            for chunk in leaves.chunks(LEAF_CHUNK) {
                let mut insert =
                    QueryBuilder::new("INSERT INTO mls_members (group_id, user_name, device) ");
                insert.push_values(chunk, |mut row, (user, device)| {
                    row.push_bind(id).push_bind(*user).push_bind(*device);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StorageError::from_write(e, "mls member", "device"))?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn mls_group(&self, id: &GroupId) -> Result<Option<MlsGroupRecord>> {
            sqlx::query_as::<_, decode::MlsGroupRow>(
                "SELECT id, name, epoch, state_version, last_seq, state, group_info \
                 FROM mls_groups WHERE id = $1",
            )
            .bind(id.0.as_slice())
            .fetch_optional(&self.read)
            .await?
            .map(decode::mls_group)
            .transpose()
        }

        async fn mls_groups_of(
            &self,
            user: &UserName,
            after: Option<&GroupId>,
            limit: usize,
        ) -> Result<Page<MlsGroupSummary>> {
            // Every id is 16 bytes, so "after the empty id" is from the first.
            let after = after.map_or(&[][..], |id| &id.0[..]);
            let rows: Vec<(Vec<u8>, String, i64)> = sqlx::query_as(
                "SELECT g.id, g.name, g.epoch FROM \
                 (SELECT DISTINCT group_id FROM mls_members \
                  WHERE user_name = $1 AND group_id > $2 ORDER BY group_id LIMIT $3) AS mine \
                 JOIN mls_groups g ON g.id = mine.group_id ORDER BY g.id",
            )
            .bind(user.as_str())
            .bind(after)
            .bind(check::page_limit(limit))
            .fetch_all(&self.read)
            .await?;
            let total: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT group_id) FROM mls_members WHERE user_name = $1",
            )
            .bind(user.as_str())
            .fetch_one(&self.read)
            .await?;
            let mut groups = rows
                .into_iter()
                .map(decode::mls_summary)
                .collect::<Result<Vec<_>>>()?;
            let more = groups.len() > limit;
            groups.truncate(limit);
            Ok(Page {
                items: groups,
                more,
                total: decode::unsigned("mls group count", total)?,
            })
        }

        async fn mls_members(&self, id: &GroupId) -> Result<Vec<(UserName, DeviceId)>> {
            // One statement, so "no such group" and "these leaves" come from one snapshot.
            let rows: Vec<(Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT m.user_name, m.device FROM mls_groups g \
                 LEFT JOIN mls_members m ON m.group_id = g.id WHERE g.id = $1",
            )
            .bind(id.0.as_slice())
            .fetch_all(&self.read)
            .await?;
            if rows.is_empty() {
                return Err(StorageError::NotFound { what: "mls group" });
            }
            let mut leaves = rows
                .iter()
                .filter_map(|(user, device)| {
                    let device = decode::device((*device)?);
                    Some(decode::user_name(user.as_deref()?).map(|user| (user, device)))
                })
                .collect::<Result<Vec<_>>>()?;
            leaves.sort_unstable();
            Ok(leaves)
        }

        async fn put_device_state(
            &self,
            user: &UserName,
            device: DeviceId,
            entries: &[(Vec<u8>, Option<Vec<u8>>)],
        ) -> Result<()> {
            for (entry, value) in entries {
                check::state_entry(entry, value.as_deref())?;
            }
            // Each entry's last listing wins.
            let mut seen = HashSet::with_capacity(entries.len());
            let mut last: Vec<(&[u8], Option<&[u8]>)> = entries
                .iter()
                .rev()
                .filter(|(entry, _)| seen.insert(entry.as_slice()))
                .map(|(entry, value)| (entry.as_slice(), value.as_deref()))
                .collect();
            last.reverse();
            let deleted: Vec<&[u8]> = last
                .iter()
                .filter(|(_, value)| value.is_none())
                .map(|(entry, _)| *entry)
                .collect();
            let written: Vec<(&[u8], &[u8])> = last
                .iter()
                .filter_map(|(entry, value)| Some((*entry, (*value)?)))
                .collect();

            let (user, id) = (user.as_str(), device_sql(device));
            let mut tx = self.begin_write().await?;
            let known = sqlx::query("SELECT 1 FROM devices WHERE user_name = $1 AND device = $2")
                .bind(user)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_none() {
                return Err(StorageError::NotFound { what: "device" });
            }
            for chunk in deleted.chunks(NAME_CHUNK) {
                let mut delete =
                    QueryBuilder::new("DELETE FROM device_state WHERE user_name = ");
                delete.push_bind(user);
                delete.push(" AND device = ");
                delete.push_bind(id);
                delete.push(" AND entry IN (");
                push_list(&mut delete, chunk);
                delete.push(")");
                delete.build().execute(&mut *tx).await?;
            }
            // Statements bounded in rows and in value bytes.
            let mut rest = written.as_slice();
            while !rest.is_empty() {
                let mut bytes = 0;
                let take = rest
                    .iter()
                    .take(STATE_CHUNK)
                    .take_while(|(_, value)| {
                        bytes += value.len();
                        bytes <= STATE_CHUNK_BYTES
                    })
                    .count()
                    .max(1);
                let (chunk, later) = rest.split_at(take);
                rest = later;
                let mut upsert = QueryBuilder::new(
                    "INSERT INTO device_state (user_name, device, entry, value) ",
                );
                upsert.push_values(chunk, |mut row, (entry, value)| {
                    row.push_bind(user)
                        .push_bind(id)
                        .push_bind(*entry)
                        .push_bind(*value);
                });
                upsert.push(
                    " ON CONFLICT (user_name, device, entry) DO UPDATE SET value = excluded.value",
                );
                upsert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StorageError::from_write(e, "state entry", "device"))?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn device_state(
            &self,
            user: &UserName,
            device: DeviceId,
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Page<(Vec<u8>, Vec<u8>)>> {
            let (user, id) = (user.as_str(), device_sql(device));
            // One statement, so "no such device" and the count come from one snapshot.
            let total: Option<i64> = sqlx::query_scalar(
                "SELECT count(s.entry) FROM devices d LEFT JOIN device_state s \
                 ON s.user_name = d.user_name AND s.device = d.device \
                 WHERE d.user_name = $1 AND d.device = $2 GROUP BY d.user_name, d.device",
            )
            .bind(user)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
            let total = total.ok_or(StorageError::NotFound { what: "device" })?;
            // The first `limit + 1` entries after the cursor, cut where their values pass the
            // page's byte budget (the first one always stays); `fetched` says how many there
            // were before the cut, so a cut page says `more`.
            let budget = i64::try_from(limits::MAX_STATE_PAGE_BYTES).unwrap_or(i64::MAX);
            let rows: Vec<(Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT entry, value, fetched FROM ( \
                   SELECT entry, value, count(*) OVER () AS fetched, \
                          sum(length(value)) OVER (ORDER BY entry ROWS UNBOUNDED PRECEDING) \
                            AS running \
                   FROM (SELECT entry, value FROM device_state \
                         WHERE user_name = $1 AND device = $2 AND ($3 IS NULL OR entry > $3) \
                         ORDER BY entry LIMIT $4) AS firsts \
                 ) AS sized WHERE running <= $5 OR running = length(value) ORDER BY entry",
            )
            .bind(user)
            .bind(id)
            .bind(after)
            .bind(check::page_limit(limit))
            .bind(budget)
            .fetch_all(&self.read)
            .await?;
            let fetched = rows.first().map_or(0, |row| row.2);
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = rows
                .into_iter()
                .map(|(entry, value, _)| (entry, value))
                .collect();
            let more = entries.len() > limit || (entries.len() as i64) < fetched;
            entries.truncate(limit);
            Ok(Page {
                items: entries,
                more,
                total: decode::unsigned("state entry count", total)?,
            })
        }
    };
}
pub(crate) use mls;
