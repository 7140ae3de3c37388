//! Users and sessions: the shared SQL, expanded into each backend by
//! [`impl_storage!`](super::impl_storage).

/// The user and session methods of [`crate::Storage`].
macro_rules! accounts {
    () => {
        async fn create_user(&self, user: &NewUser) -> Result<()> {
            check::new_user(user)?;
            sqlx::query(
                "INSERT INTO users \
                 (name, password_hash, encryption_key, signing_key, key_backup, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.name.as_str())
            .bind(user.password_hash.as_str())
            .bind(user.encryption_key.as_slice())
            .bind(user.signing_key.as_slice())
            .bind(user.key_backup.as_slice())
            .bind(user.created_at)
            .execute(&self.write)
            .await
            .map_err(|e| StorageError::from_write(e, "user", "user"))?;
            Ok(())
        }

        async fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
            sqlx::query_as::<_, decode::UserRow>(
                "SELECT name, password_hash, encryption_key, signing_key, key_backup, created_at \
                 FROM users WHERE name = $1",
            )
            .bind(name.as_str())
            .fetch_optional(&self.read)
            .await?
            .map(decode::user)
            .transpose()
        }

        async fn list_users(&self, after: Option<&UserName>, limit: usize) -> Result<Page<UserName>> {
            // Every name is non-empty, so "after the empty string" is from the first.
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT name FROM users WHERE name > $1 ORDER BY name LIMIT $2")
                    .bind(after.map_or("", UserName::as_str))
                    .bind(check::page_limit(limit))
                    .fetch_all(&self.read)
                    .await?;
            let total: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(&self.read)
                .await?;
            let mut names = rows
                .iter()
                .map(|name| decode::user_name(name))
                .collect::<Result<Vec<_>>>()?;
            let more = names.len() > limit;
            names.truncate(limit);
            Ok(Page {
                items: names,
                more,
                total: decode::unsigned("user count", total)?,
            })
        }

        async fn replace_keys(
            &self,
            name: &UserName,
            encryption_key: &[u8],
            signing_key: &[u8],
            key_backup: &[u8],
        ) -> Result<()> {
            check::keys(encryption_key, signing_key, key_backup)?;
            let done = sqlx::query(
                "UPDATE users SET encryption_key = $2, signing_key = $3, key_backup = $4 \
                 WHERE name = $1",
            )
            .bind(name.as_str())
            .bind(encryption_key)
            .bind(signing_key)
            .bind(key_backup)
            .execute(&self.write)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StorageError::NotFound { what: "user" });
            }
            Ok(())
        }

        async fn create_session(
            &self,
            token_hash: &[u8; 32],
            user: &UserName,
            expires_at: UnixMillis,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO sessions (token_hash, user_name, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(token_hash.as_slice())
            .bind(user.as_str())
            .bind(expires_at)
            .execute(&self.write)
            .await
            .map_err(|e| StorageError::from_write(e, "session", "user"))?;
            Ok(())
        }

        async fn session(
            &self,
            token_hash: &[u8; 32],
            now: UnixMillis,
        ) -> Result<Option<SessionRecord>> {
            let row: Option<(String, i64)> = sqlx::query_as(
                "SELECT user_name, expires_at FROM sessions \
                 WHERE token_hash = $1 AND expires_at > $2",
            )
            .bind(token_hash.as_slice())
            .bind(now)
            .fetch_optional(&self.read)
            .await?;
            row.map(|(user, expires_at)| {
                Ok(SessionRecord {
                    user: decode::user_name(&user)?,
                    expires_at,
                })
            })
            .transpose()
        }

        async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
            let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(token_hash.as_slice())
                .execute(&self.write)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn purge_sessions(&self, now: UnixMillis) -> Result<u64> {
            let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.write)
                .await?;
            Ok(done.rows_affected())
        }
    };
}
pub(crate) use accounts;
