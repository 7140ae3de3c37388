//! [`Store`]: the backend chosen at run time from a database URL.

use quip_proto::ids::{BlobId, GroupId, GroupName, MsgId, UserName};

use crate::{
    Ack, Appended, BlobInfo, Committed, DeviceId, DeviceRecord, Enqueued, ExpiryNotice,
    GroupChange, GroupRecord, KeyPackageRecord, LoginThrottle, Member, MlsEntry, MlsGroupRecord,
    MlsGroupSummary, MlsLogEntry, MlsUnread, MlsWelcome, NewDevice, NewGroup, NewKeyPackage,
    NewMessage, NewMlsGroup, NewUser, Page, PostgresStorage, QueueQuota, QueuedMessage, Refused,
    Result, SessionRecord, SqliteStorage, Storage, StorageError, UnixMillis, UserRecord,
};

/// Either backend, picked by [`Store::connect`] from the URL's scheme.
#[derive(Clone, Debug)]
pub enum Store {
    /// `sqlite://path` or `sqlite:path`.
    Sqlite(SqliteStorage),
    /// `postgres://…` or `postgresql://…`.
    Postgres(PostgresStorage),
}

impl Store {
    /// Connects to the database at `url` and brings its schema up to date. The scheme picks
    /// the backend: `sqlite:` (also `sqlite://`), `postgres://` or `postgresql://`; anything
    /// else is [`StorageError::UnsupportedUrl`].
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite(SqliteStorage::connect(url).await?)),
            "postgres" | "postgresql" if url[scheme.len()..].starts_with("://") => {
                Ok(Self::Postgres(PostgresStorage::connect(url).await?))
            }
            _ => Err(StorageError::UnsupportedUrl {
                url_scheme: scheme.to_owned(),
            }),
        }
    }

    /// Closes every connection. Later calls fail.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }
}

/// Forwards a call to whichever backend `self` holds.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Store::Sqlite(store) => store.$method($($arg),*).await,
            Store::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

impl Storage for Store {
    async fn create_user(&self, user: &NewUser) -> Result<()> {
        dispatch!(self.create_user(user))
    }

    async fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
        dispatch!(self.user(name))
    }

    async fn list_users(&self, after: Option<&UserName>, limit: usize) -> Result<Page<UserName>> {
        dispatch!(self.list_users(after, limit))
    }

    async fn replace_keys(
        &self,
        name: &UserName,
        encryption_key: &[u8],
        signing_key: &[u8],
        key_backup: &[u8],
    ) -> Result<()> {
        dispatch!(self.replace_keys(name, encryption_key, signing_key, key_backup))
    }

    async fn create_session(
        &self,
        token_hash: &[u8; 32],
        user: &UserName,
        expires_at: UnixMillis,
    ) -> Result<()> {
        dispatch!(self.create_session(token_hash, user, expires_at))
    }

    async fn session(
        &self,
        token_hash: &[u8; 32],
        now: UnixMillis,
    ) -> Result<Option<SessionRecord>> {
        dispatch!(self.session(token_hash, now))
    }

    async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        dispatch!(self.delete_session(token_hash))
    }

    async fn purge_sessions(&self, now: UnixMillis) -> Result<u64> {
        dispatch!(self.purge_sessions(now))
    }

    async fn update_login_throttle<F, T>(&self, user: &UserName, update: F) -> Result<T>
    where
        F: FnOnce(LoginThrottle) -> (LoginThrottle, T) + Send,
        T: Send,
    {
        dispatch!(self.update_login_throttle(user, update))
    }

    async fn prune_login_throttle(&self, before: UnixMillis) -> Result<u64> {
        dispatch!(self.prune_login_throttle(before))
    }

    async fn create_group(&self, group: &NewGroup) -> Result<()> {
        dispatch!(self.create_group(group))
    }

    async fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>> {
        dispatch!(self.group(id))
    }

    async fn groups_of(
        &self,
        user: &UserName,
        after: Option<(&GroupName, &GroupId)>,
        limit: usize,
    ) -> Result<Page<GroupRecord>> {
        dispatch!(self.groups_of(user, after, limit))
    }

    async fn members(&self, id: &GroupId) -> Result<Vec<Member>> {
        dispatch!(self.members(id))
    }

    async fn apply_change(&self, change: &GroupChange) -> Result<()> {
        dispatch!(self.apply_change(change))
    }

    async fn chain(&self, id: &GroupId, from: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        dispatch!(self.chain(id, from, limit))
    }

    async fn enqueue(&self, messages: &[NewMessage]) -> Result<Vec<Enqueued>> {
        dispatch!(self.enqueue(messages))
    }

    async fn pending(&self, user: &UserName, after: i64, limit: u32) -> Result<Vec<QueuedMessage>> {
        dispatch!(self.pending(user, after, limit))
    }

    async fn queued(&self, user: &UserName, id: &MsgId) -> Result<Option<QueuedMessage>> {
        dispatch!(self.queued(user, id))
    }

    async fn ack(&self, user: &UserName, ids: &[MsgId]) -> Result<u64> {
        dispatch!(self.ack(user, ids))
    }

    async fn commit(
        &self,
        messages: &[NewMessage],
        acks: &[Ack],
        quota: &QueueQuota,
    ) -> Result<Committed> {
        dispatch!(self.commit(messages, acks, quota))
    }

    async fn queue_room(
        &self,
        sender: &UserName,
        recipients: &[UserName],
        bytes: u64,
        quota: &QueueQuota,
    ) -> Result<Option<Refused>> {
        dispatch!(self.queue_room(sender, recipients, bytes, quota))
    }

    async fn expire(&self, before: UnixMillis, now: UnixMillis) -> Result<Vec<UserName>> {
        dispatch!(self.expire(before, now))
    }

    async fn take_expiry_notices(
        &self,
        sender: &UserName,
        limit: u32,
    ) -> Result<Vec<ExpiryNotice>> {
        dispatch!(self.take_expiry_notices(sender, limit))
    }

    async fn queue_depth(&self, user: &UserName) -> Result<u64> {
        dispatch!(self.queue_depth(user))
    }

    async fn blob_create(&self, id: &BlobId, owner: &UserName, now: UnixMillis) -> Result<()> {
        dispatch!(self.blob_create(id, owner, now))
    }

    async fn blob_append(&self, id: &BlobId, index: u32, data: &[u8]) -> Result<()> {
        dispatch!(self.blob_append(id, index, data))
    }

    async fn blob_finish(&self, id: &BlobId) -> Result<()> {
        dispatch!(self.blob_finish(id))
    }

    async fn blob_info(&self, id: &BlobId) -> Result<Option<BlobInfo>> {
        dispatch!(self.blob_info(id))
    }

    async fn blob_chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>> {
        dispatch!(self.blob_chunk(id, index))
    }

    async fn blob_delete(&self, id: &BlobId) -> Result<bool> {
        dispatch!(self.blob_delete(id))
    }

    async fn purge_unfinished_blobs(&self, before: UnixMillis) -> Result<u64> {
        dispatch!(self.purge_unfinished_blobs(before))
    }

    async fn add_device(&self, device: &NewDevice) -> Result<()> {
        dispatch!(self.add_device(device))
    }

    async fn devices(&self, user: &UserName) -> Result<Vec<DeviceRecord>> {
        dispatch!(self.devices(user))
    }

    async fn remove_device(&self, user: &UserName, device: DeviceId) -> Result<bool> {
        dispatch!(self.remove_device(user, device))
    }

    async fn put_key_packages(
        &self,
        user: &UserName,
        device: DeviceId,
        packages: &[NewKeyPackage],
    ) -> Result<()> {
        dispatch!(self.put_key_packages(user, device, packages))
    }

    async fn take_key_packages(&self, user: &UserName) -> Result<Vec<KeyPackageRecord>> {
        dispatch!(self.take_key_packages(user))
    }

    async fn key_package_count(&self, user: &UserName, device: DeviceId) -> Result<u64> {
        dispatch!(self.key_package_count(user, device))
    }

    async fn create_mls_group(&self, group: &NewMlsGroup) -> Result<()> {
        dispatch!(self.create_mls_group(group))
    }

    async fn mls_group(&self, id: &GroupId) -> Result<Option<MlsGroupRecord>> {
        dispatch!(self.mls_group(id))
    }

    async fn mls_groups_of(
        &self,
        user: &UserName,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Page<MlsGroupSummary>> {
        dispatch!(self.mls_groups_of(user, after, limit))
    }

    async fn mls_members(&self, id: &GroupId) -> Result<Vec<(UserName, DeviceId)>> {
        dispatch!(self.mls_members(id))
    }

    async fn put_device_state(
        &self,
        user: &UserName,
        device: DeviceId,
        entries: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<()> {
        dispatch!(self.put_device_state(user, device, entries))
    }

    async fn device_state(
        &self,
        user: &UserName,
        device: DeviceId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<(Vec<u8>, Vec<u8>)>> {
        dispatch!(self.device_state(user, device, after, limit))
    }
    async fn append_mls(&self, entries: &[MlsEntry], max_log_bytes: u64) -> Result<Vec<Appended>> {
        dispatch!(self.append_mls(entries, max_log_bytes))
    }

    async fn mls_log(
        &self,
        group: &GroupId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<MlsLogEntry>> {
        dispatch!(self.mls_log(group, after, limit, max_bytes))
    }

    async fn mls_unread(
        &self,
        user: &UserName,
        device: DeviceId,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Page<MlsUnread>> {
        dispatch!(self.mls_unread(user, device, after, limit))
    }

    async fn ack_mls(
        &self,
        user: &UserName,
        device: DeviceId,
        acks: &[(GroupId, u64)],
    ) -> Result<u64> {
        dispatch!(self.ack_mls(user, device, acks))
    }

    async fn prune_mls(&self, before: UnixMillis) -> Result<u64> {
        dispatch!(self.prune_mls(before))
    }

    async fn mls_welcomes(
        &self,
        user: &UserName,
        device: DeviceId,
        limit: usize,
    ) -> Result<Vec<MlsWelcome>> {
        dispatch!(self.mls_welcomes(user, device, limit))
    }

    async fn ack_welcomes(&self, user: &UserName, device: DeviceId, ids: &[u64]) -> Result<u64> {
        dispatch!(self.ack_welcomes(user, device, ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_are_refused_without_echoing_the_url() {
        for (url, scheme) in [
            ("mysql://root:hunter2@db/quip", "mysql"),
            ("/var/lib/quip/quip.db", ""),
            ("postgres:relative", "postgres"),
            ("", ""),
        ] {
            match Store::connect(url).await {
                Err(StorageError::UnsupportedUrl { url_scheme }) => assert_eq!(url_scheme, scheme),
                other => panic!("{url:?}: expected UnsupportedUrl, got {other:?}"),
            }
        }
    }
}
