//! Groups, members and the signed membership chain: the shared SQL, expanded into each backend
//! by [`impl_storage!`](super::impl_storage).

/// The group methods of [`crate::Storage`].
macro_rules! groups {
    () => {
        async fn create_group(&self, group: &NewGroup) -> Result<()> {
            let others = check::new_group(group)?;
            let id = group.id.0.as_slice();
            let mut tx = self.begin_write().await?;

            let taken = sqlx::query("SELECT 1 FROM groups WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Err(StorageError::AlreadyExists { what: "group" });
            }
            // With the id free, a unique violation here is the creator's name; a foreign key
            // violation is an unknown creator.
            sqlx::query(
                "INSERT INTO groups (id, name, creator, epoch, created_at) \
                 VALUES ($1, $2, $3, 0, $4)",
            )
            .bind(id)
            .bind(group.name.as_str())
            .bind(group.creator.as_str())
            .bind(group.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| StorageError::from_write(e, "group name", "user"))?;

            let admin = decode::role_name(Role::Admin);
            let member = decode::role_name(Role::Member);
            let mut insert =
                QueryBuilder::new("INSERT INTO group_members (group_id, user_name, role) ");
            let rows = std::iter::once((&group.creator, admin))
                .chain(others.into_iter().map(|u| (u, member)));
            insert.push_values(rows, |mut row, (user, role)| {
                row.push_bind(id).push_bind(user.as_str()).push_bind(role);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| StorageError::from_write(e, "member", "user"))?;

            sqlx::query("INSERT INTO group_chain (group_id, epoch, signed) VALUES ($1, 0, $2)")
                .bind(id)
                .bind(group.genesis.as_slice())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>> {
            sqlx::query_as::<_, decode::GroupRow>(
                "SELECT id, name, creator, epoch FROM groups WHERE id = $1",
            )
            .bind(id.0.as_slice())
            .fetch_optional(&self.read)
            .await?
            .map(decode::group)
            .transpose()
        }

        async fn groups_of(
            &self,
            user: &UserName,
            after: Option<(&GroupName, &GroupId)>,
            limit: usize,
        ) -> Result<Page<GroupRecord>> {
            // Every name is non-empty, so "after the empty name" is from the first.
            let (name, id) = after.map_or(("", &[][..]), |(name, id)| (name.as_str(), &id.0[..]));
            let rows: Vec<decode::GroupRow> = sqlx::query_as(
                "SELECT g.id, g.name, g.creator, g.epoch FROM group_members m \
                 JOIN groups g ON g.id = m.group_id WHERE m.user_name = $1 \
                 AND (g.name > $2 OR (g.name = $2 AND g.id > $3)) \
                 ORDER BY g.name, g.id LIMIT $4",
            )
            .bind(user.as_str())
            .bind(name)
            .bind(id)
            .bind(check::page_limit(limit))
            .fetch_all(&self.read)
            .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT count(*) FROM group_members WHERE user_name = $1")
                    .bind(user.as_str())
                    .fetch_one(&self.read)
                    .await?;
            let mut groups = rows
                .into_iter()
                .map(decode::group)
                .collect::<Result<Vec<_>>>()?;
            let more = groups.len() > limit;
            groups.truncate(limit);
            Ok(Page {
                items: groups,
                more,
                total: decode::unsigned("group count", total)?,
            })
        }

        async fn members(&self, id: &GroupId) -> Result<Vec<Member>> {
            // One statement, so "no such group" and "these members" come from one snapshot.
            let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT m.user_name, m.role FROM groups g \
                 LEFT JOIN group_members m ON m.group_id = g.id WHERE g.id = $1",
            )
            .bind(id.0.as_slice())
            .fetch_all(&self.read)
            .await?;
            if rows.is_empty() {
                return Err(StorageError::NotFound { what: "group" });
            }
            let mut members = rows
                .iter()
                .filter_map(|(user, role)| Some(decode::member(user.as_deref()?, role.as_deref()?)))
                .collect::<Result<Vec<_>>>()?;
            members.sort_unstable_by(|a, b| a.user.cmp(&b.user));
            Ok(members)
        }

        async fn apply_change(&self, change: &GroupChange) -> Result<()> {
            check::len(
                "group change",
                change.signed.len(),
                limits::MAX_GROUP_CHANGE,
            )?;
            let epoch = check::epoch(change.epoch)?;
            let id = change.group.0.as_slice();
            let mut tx = self.begin_write().await?;

            // Compare-and-set: only the change that follows the current epoch moves it on. On
            // Postgres the row lock makes a concurrent change at the same epoch wait, then miss.
            let moved = sqlx::query("UPDATE groups SET epoch = $2 WHERE id = $1 AND epoch = $3")
                .bind(id)
                .bind(epoch)
                .bind(epoch - 1)
                .execute(&mut *tx)
                .await?;
            if moved.rows_affected() == 0 {
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT epoch FROM groups WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match current {
                    None => StorageError::NotFound { what: "group" },
                    Some(current) => StorageError::conflict(
                        "group epoch",
                        format!("the group is at epoch {current}; epoch {epoch} is not next"),
                    ),
                });
            }
            sqlx::query("INSERT INTO group_chain (group_id, epoch, signed) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(epoch)
                .bind(change.signed.as_slice())
                .execute(&mut *tx)
                .await?;

            match &change.effect {
                MemberEffect::Add(user) => {
                    let known = sqlx::query("SELECT 1 FROM users WHERE name = $1")
                        .bind(user.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if known.is_none() {
                        return Err(StorageError::NotFound { what: "user" });
                    }
                    let count: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM group_members WHERE group_id = $1",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let count = decode::unsigned::<usize>("member count", count)?;
                    check::len("group members", count + 1, limits::MAX_GROUP_MEMBERS)?;
                    let added = sqlx::query(
                        "INSERT INTO group_members (group_id, user_name, role) VALUES ($1, $2, $3) \
                         ON CONFLICT (group_id, user_name) DO NOTHING",
                    )
                    .bind(id)
                    .bind(user.as_str())
                    .bind(decode::role_name(Role::Member))
                    .execute(&mut *tx)
                    .await?;
                    if added.rows_affected() == 0 {
                        return Err(StorageError::AlreadyExists { what: "member" });
                    }
                }
                MemberEffect::Remove(user) => {
                    let removed = sqlx::query(
                        "DELETE FROM group_members WHERE group_id = $1 AND user_name = $2",
                    )
                    .bind(id)
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if removed.rows_affected() == 0 {
                        return Err(StorageError::NotFound { what: "member" });
                    }
                }
                MemberEffect::SetRole(user, role) => {
                    let set = sqlx::query(
                        "UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_name = $2",
                    )
                    .bind(id)
                    .bind(user.as_str())
                    .bind(decode::role_name(*role))
                    .execute(&mut *tx)
                    .await?;
                    if set.rows_affected() == 0 {
                        return Err(StorageError::NotFound { what: "member" });
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        }

        async fn chain(&self, id: &GroupId, from: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
            let chain: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT signed FROM group_chain WHERE group_id = $1 AND epoch >= $2 \
                 ORDER BY epoch LIMIT $3",
            )
            .bind(id.0.as_slice())
            .bind(i64::try_from(from).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
            // Past the end (or a zero limit) is empty; an unknown group is an error.
            if chain.is_empty() && self.group(id).await?.is_none() {
                return Err(StorageError::NotFound { what: "group" });
            }
            Ok(chain)
        }
    };
}
pub(crate) use groups;
