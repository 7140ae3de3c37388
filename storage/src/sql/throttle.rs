//! The password-login throttle state: the shared SQL, expanded into each backend by
//! [`impl_storage!`](super::impl_storage).

/// The login throttle methods of [`crate::Storage`].
macro_rules! login_throttle {
    () => {
        async fn update_login_throttle<F, T>(&self, user: &UserName, update: F) -> Result<T>
        where
            F: FnOnce(LoginThrottle) -> (LoginThrottle, T) + Send,
            T: Send,
        {
            let mut tx = self.begin_write().await?;
            // Creating or touching the row takes its lock until commit (Postgres); SQLite's
            // write transaction already serialises writers. Either way, a concurrent update of
            // the same name waits here and then reads what this one wrote.
            let (failures, next_at, last_at): (i64, i64, i64) = sqlx::query_as(
                "INSERT INTO login_throttle (user_name, failures, next_at, last_at) \
                 VALUES ($1, 0, 0, 0) \
                 ON CONFLICT (user_name) DO UPDATE SET failures = login_throttle.failures \
                 RETURNING failures, next_at, last_at",
            )
            .bind(user.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let before = LoginThrottle {
                failures: u32::try_from(failures.max(0)).unwrap_or(u32::MAX),
                next_at,
                last_at,
            };
            let (after, out) = update(before);
            if after == before {
                // Nothing to write (dropping the transaction also undoes a row just created
                // with the default state).
                return Ok(out);
            }
            if after == LoginThrottle::default() {
                sqlx::query("DELETE FROM login_throttle WHERE user_name = $1")
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "UPDATE login_throttle SET failures = $2, next_at = $3, last_at = $4 \
                     WHERE user_name = $1",
                )
                .bind(user.as_str())
                .bind(i64::from(after.failures))
                .bind(after.next_at)
                .bind(after.last_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(out)
        }

        async fn prune_login_throttle(&self, before: UnixMillis) -> Result<u64> {
            let done = sqlx::query("DELETE FROM login_throttle WHERE last_at < $1")
                .bind(before)
                .execute(&self.write)
                .await?;
            Ok(done.rows_affected())
        }
    };
}
pub(crate) use login_throttle;
