//! The SQL behind every backend, written once.
//!
//! SQLite and Postgres run the same queries: sqlx accepts `$1` placeholders for both,
//! `ON CONFLICT … DO NOTHING` and `RETURNING` work on both, and the column types were chosen
//! so that the same Rust types (`i64`, `String`, `Vec<u8>`, `bool`) decode from both. What
//! differs is the pool type, so the method bodies cannot be plain generic functions without a
//! wall of higher-ranked `Executor`/`Encode` bounds. Instead [`impl_storage!`] expands the
//! bodies — kept in one macro per entity ([`accounts`], [`groups`], [`queue`], [`blobs`],
//! [`mls`], [`mls_log`]) —
//! into `impl Storage for …` of each concrete backend:
//!
//! ```text
//! crate::sql::impl_storage!(SqliteStorage);
//! ```
//!
//! The expanded code expects the backend to have two pools, `read` and `write` (the same pool
//! for Postgres; one writer connection for SQLite), and to implement [`Dialect`]: the few
//! things that genuinely differ per database. Everything that does not depend on the database
//! type (limit checks, row decoding) is ordinary code in this module.
//!
//! Rules for the SQL here: bind every value, never format input into SQL (the only built SQL is
//! the `($1, $2, …)` placeholder lists of [`sqlx::QueryBuilder`]); check every limit before the
//! first write; a multi-statement write runs in one [`Dialect::begin_write`] transaction,
//! which rolls back when dropped on an error path.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use quip_proto::ids::{BlobId, GroupId, GroupName, MsgId, UserName};
use sqlx::{Database, Encode, QueryBuilder, Transaction, Type};

use crate::{
    BlobInfo, DeviceId, DeviceRecord, GroupRecord, KeyPackageRecord, Member, MlsEntry,
    MlsGroupRecord, MlsGroupSummary, MlsKind, MlsLogEntry, NewDevice, NewGroup, NewKeyPackage,
    NewMessage, NewMlsGroup, NewUser, QueueQuota, QueuedMessage, QuotaLimit, Refused, Result, Role,
    StorageError, UserRecord, limits,
};

pub(crate) mod accounts;
pub(crate) mod blobs;
pub(crate) mod groups;
pub(crate) mod mls;
pub(crate) mod mls_log;
pub(crate) mod queue;
pub(crate) mod throttle;

/// What the shared SQL needs from a backend beyond its `read` and `write` pools.
pub(crate) trait Dialect {
    /// The sqlx database type.
    type Db: Database;

    /// Starts a write transaction that already holds whatever lock it will need, so it can
    /// never fail half-way for lock-upgrade reasons (SQLite: `BEGIN IMMEDIATE`).
    fn begin_write(&self) -> impl Future<Output = Result<Transaction<'static, Self::Db>>> + Send;

    /// Called inside an enqueue transaction before any queue row is written: serialises
    /// concurrent enqueues to the same recipients, so that each recipient's `seq` order is its
    /// commit order. `recipients` is sorted and deduplicated.
    fn lock_queues(
        conn: &mut <Self::Db as Database>::Connection,
        recipients: &[&str],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Called inside an ack transaction before queue rows are deleted: locks the message rows,
    /// so that two recipients acking the last two copies at once cannot both see the other's
    /// copy and leave the message behind. `ids` is sorted and deduplicated.
    fn lock_messages(
        conn: &mut <Self::Db as Database>::Connection,
        ids: &[&[u8]],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Called inside a write transaction before counting or taking a user's devices or key
    /// packages: serialises such writes per user, so a count checked against a limit is still
    /// true at commit and two takers never take the same key package. Returns whether the user
    /// exists.
    fn lock_user(
        conn: &mut <Self::Db as Database>::Connection,
        user: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Called inside a write transaction before an MLS group's log, public state, leaves
    /// or `log_bytes` are read for a write: serialises writers per
    /// group, so a group's seqs are handed out gap-free in commit order and a compare-and-set
    /// on its state version sees the latest one (Postgres: `SELECT … FOR UPDATE` on the
    /// `mls_groups` rows; SQLite: its one writer already does). `ids` is sorted and
    /// deduplicated, so concurrent writers lock groups in one order (no deadlock).
    fn lock_mls_groups(
        conn: &mut <Self::Db as Database>::Connection,
        ids: &[&[u8]],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Called inside a write transaction before a device's rows are deleted: until the
    /// transaction ends, no concurrent one can add a row that references the device (a key
    /// package, a state entry, a group leaf), so none is left behind pointing nowhere.
    /// `device` is the stored form ([`device_sql`]). Returns whether the device exists.
    fn lock_device(
        conn: &mut <Self::Db as Database>::Connection,
        user: &str,
        device: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// Implements [`crate::Storage`] for a backend type that has `read` and `write` pools and
/// implements [`Dialect`]. See the module documentation.
macro_rules! impl_storage {
    ($backend:ty) => {
        const _: () = {
            use $crate::sql::prelude::*;

            impl Storage for $backend {
                $crate::sql::accounts::accounts!();
                $crate::sql::groups::groups!();
                $crate::sql::queue::queue!();
                $crate::sql::blobs::blobs!();
                $crate::sql::throttle::login_throttle!();
                $crate::sql::mls::mls!();
                $crate::sql::mls_log::mls_log!();
            }

            impl $backend {
                $crate::sql::mls_log::mls_log_helpers!();
            }
        };
    };
}
pub(crate) use impl_storage;

/// The names the expanded method bodies use.
pub(crate) mod prelude {
    pub(crate) use quip_proto::ids::{BlobId, GroupId, GroupName, MsgId, UserName};
    pub(crate) use sqlx::QueryBuilder;

    pub(crate) use std::collections::HashSet;

    pub(crate) use super::mls::{LEAF_CHUNK, STATE_CHUNK, STATE_CHUNK_BYTES};
    pub(crate) use super::mls_log::{GroupNow, LOG_CHUNK, LOG_CHUNK_BYTES, PRUNE_CHUNK};
    pub(crate) use super::queue::{
        ACK_CHUNK, EXPIRE_CHUNK, MESSAGE_CHUNK, NAME_CHUNK, QUEUE_CHUNK, USAGE_QUERY,
    };
    pub(crate) use super::{Dialect, Usage, check, decode, device_sql, push_list, push_names};
    pub(crate) use crate::{
        Ack, Appended, BlobInfo, Committed, DeviceId, DeviceRecord, Enqueued, ExpiryNotice,
        GroupChange, GroupRecord, KeyPackageRecord, LoginThrottle, Member, MemberEffect, MlsEntry,
        MlsGroupRecord, MlsGroupSummary, MlsLogEntry, MlsUnread, MlsWelcome, NewDevice, NewGroup,
        NewKeyPackage, NewMessage, NewMlsGroup, NewUser, Page, QueueQuota, QueuedMessage, Refused,
        Result, Role, SessionRecord, Storage, StorageError, UnixMillis, UserRecord, limits,
    };
}

/// Appends `values` as a comma-separated list of bound parameters.
pub(crate) fn push_list<'a, DB>(query: &mut QueryBuilder<'a, DB>, values: &[&'a [u8]])
where
    DB: Database,
    &'a [u8]: Encode<'a, DB> + Type<DB>,
{
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(*value);
    }
}

/// A device id as stored: the `i64` with the same bits, so every `u64` fits
/// ([`decode::device`] undoes it).
pub(crate) fn device_sql(device: DeviceId) -> i64 {
    i64::from_be_bytes(device.0.to_be_bytes())
}

/// Appends `names` as a comma-separated list of bound parameters.
pub(crate) fn push_names<'a, DB>(query: &mut QueryBuilder<'a, DB>, names: &[&'a str])
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut list = query.separated(", ");
    for name in names {
        list.push_bind(*name);
    }
}

/// What waits in the queues a batch touches — messages and bytes per recipient, and per
/// recipient and sender — as read inside the writing transaction, plus what the batch adds.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    total: HashMap<String, (u64, u64)>,
    by_sender: HashMap<(String, String), (u64, u64)>,
}

impl Usage {
    /// Adds rows of [`queue::USAGE_QUERY`]: recipient, sender, messages, bytes.
    pub(crate) fn extend(&mut self, rows: Vec<(String, String, i64, i64)>) {
        for (recipient, sender, count, bytes) in rows {
            let (count, bytes) = (count.max(0) as u64, bytes.max(0) as u64);
            let total = self.total.entry(recipient.clone()).or_default();
            total.0 += count;
            total.1 += bytes;
            let pair = self.by_sender.entry((recipient, sender)).or_default();
            pair.0 += count;
            pair.1 += bytes;
        }
    }

    /// The first recipient whose queue one more message of `size` bytes from `sender` would
    /// take past `quota`, if any.
    pub(crate) fn check<'a>(
        &self,
        sender: &str,
        recipients: impl IntoIterator<Item = &'a UserName>,
        size: u64,
        quota: &QueueQuota,
    ) -> Option<Refused> {
        for recipient in recipients {
            let name = recipient.as_str();
            let (count, bytes) = self.total.get(name).copied().unwrap_or_default();
            let (mine, my_bytes) = self
                .by_sender
                .get(&(name.to_owned(), sender.to_owned()))
                .copied()
                .unwrap_or_default();
            let limit = if count >= quota.max_messages {
                QuotaLimit::Messages(quota.max_messages)
            } else if bytes.saturating_add(size) > quota.max_bytes {
                QuotaLimit::Bytes(quota.max_bytes)
            } else if mine >= quota.max_messages_per_sender {
                QuotaLimit::MessagesFromSender(quota.max_messages_per_sender)
            } else if my_bytes.saturating_add(size) > quota.max_bytes_per_sender {
                QuotaLimit::BytesFromSender(quota.max_bytes_per_sender)
            } else {
                continue;
            };
            return Some(Refused::QueueFull {
                recipient: recipient.clone(),
                limit,
            });
        }
        None
    }

    /// Counts one more message of `size` bytes from `sender` for `recipient`.
    pub(crate) fn add(&mut self, sender: &str, recipient: &str, size: u64) {
        let total = self.total.entry(recipient.to_owned()).or_default();
        total.0 += 1;
        total.1 += size;
        let pair = self
            .by_sender
            .entry((recipient.to_owned(), sender.to_owned()))
            .or_default();
        pair.0 += 1;
        pair.1 += size;
    }
}

/// Limit checks, run before anything is written.
pub(crate) mod check {
    use super::*;

    /// `len <= max`, else [`StorageError::TooLarge`].
    pub(crate) fn len(what: &'static str, len: usize, max: usize) -> Result<()> {
        if len > max {
            return Err(StorageError::TooLarge { what, len, max });
        }
        Ok(())
    }

    /// The SQL `LIMIT` for a page of `limit` entries: one more, to learn whether more follow.
    pub(crate) fn page_limit(limit: usize) -> i64 {
        i64::try_from(limit).map_or(i64::MAX, |n| n.saturating_add(1))
    }

    /// A new account's fields.
    pub(crate) fn new_user(user: &NewUser) -> Result<()> {
        len(
            "password hash",
            user.password_hash.len(),
            limits::MAX_PASSWORD_HASH,
        )?;
        keys(&user.encryption_key, &user.signing_key, &user.key_backup)
    }

    /// Public keys and key backup.
    pub(crate) fn keys(encryption_key: &[u8], signing_key: &[u8], key_backup: &[u8]) -> Result<()> {
        len(
            "encryption key",
            encryption_key.len(),
            limits::MAX_PUBLIC_KEY,
        )?;
        len("signing key", signing_key.len(), limits::MAX_PUBLIC_KEY)?;
        len("key backup", key_backup.len(), limits::MAX_KEY_BACKUP)
    }

    /// A new group; returns its distinct members other than the creator, in the order given.
    pub(crate) fn new_group(group: &NewGroup) -> Result<Vec<&UserName>> {
        len("genesis", group.genesis.len(), limits::MAX_GROUP_CHANGE)?;
        let mut seen = HashSet::from([&group.creator]);
        let others: Vec<&UserName> = group.members.iter().filter(|m| seen.insert(*m)).collect();
        len("group members", others.len() + 1, limits::MAX_GROUP_MEMBERS)?;
        Ok(others)
    }

    /// A message to enqueue; returns its distinct recipients (first key wins), in order, or
    /// why this message (alone) cannot be stored.
    pub(crate) fn message(
        message: &NewMessage,
    ) -> std::result::Result<Vec<(&UserName, &[u8])>, Refused> {
        let len = |what, len, max| {
            if len > max {
                return Err(Refused::TooLarge { what, len, max });
            }
            Ok(())
        };
        len("sealed envelope", message.sealed.len(), limits::MAX_SEALED)?;
        len(
            "recipients",
            message.recipients.len(),
            limits::MAX_RECIPIENTS,
        )?;
        let mut seen = HashSet::with_capacity(message.recipients.len());
        let mut recipients: Vec<(&UserName, &[u8])> = Vec::with_capacity(message.recipients.len());
        for (name, key) in &message.recipients {
            len("wrapped key", key.len(), limits::MAX_WRAPPED_KEY)?;
            if seen.insert(name.as_str()) {
                recipients.push((name, key));
            }
        }
        Ok(recipients)
    }

    /// A new device's fields.
    pub(crate) fn new_device(device: &NewDevice) -> Result<()> {
        len(
            "device credential",
            device.credential.len(),
            limits::MAX_CREDENTIAL,
        )?;
        len(
            "device signature key",
            device.signature_key.len(),
            limits::MAX_SIGNATURE_KEY,
        )
    }

    /// Key packages to store; returns how many are not last-resort.
    pub(crate) fn key_packages(packages: &[NewKeyPackage]) -> Result<usize> {
        for package in packages {
            len(
                "key package reference",
                package.kp_ref.len(),
                limits::MAX_KEY_PACKAGE_REF,
            )?;
            len("key package", package.data.len(), limits::MAX_KEY_PACKAGE)?;
        }
        let last_resort = packages.iter().filter(|p| p.last_resort).count();
        len("last-resort key packages", last_resort, 1)?;
        Ok(packages.len() - last_resort)
    }

    /// An MLS group's state and GroupInfo.
    pub(crate) fn mls_state(state: &[u8], group_info: &[u8]) -> Result<()> {
        len("mls group state", state.len(), limits::MAX_GROUP_STATE)?;
        len("mls group info", group_info.len(), limits::MAX_GROUP_STATE)
    }

    /// A list of leaves (at most [`limits::MAX_GROUP_LEAVES`]); returns them in stored form,
    /// each once, in the order given.
    pub(crate) fn leaves<'a>(
        what: &'static str,
        leaves: &'a [(UserName, DeviceId)],
    ) -> Result<Vec<(&'a str, i64)>> {
        len(what, leaves.len(), limits::MAX_GROUP_LEAVES)?;
        let mut seen = HashSet::with_capacity(leaves.len());
        Ok(leaves
            .iter()
            .map(|(user, device)| (user.as_str(), device_sql(*device)))
            .filter(|leaf| seen.insert(*leaf))
            .collect())
    }

    /// A new MLS group; returns its leaves in stored form, each once.
    pub(crate) fn new_mls_group(group: &NewMlsGroup) -> Result<Vec<(&str, i64)>> {
        mls_state(&group.state, &group.group_info)?;
        leaves("mls group leaves", &group.members)
    }

    /// An MLS log entry's sizes, kind and epochs (see [`crate::Storage::append_mls`]).
    pub(crate) fn mls_entry(entry: &MlsEntry) -> Result<()> {
        len("mls message", entry.body.len(), limits::MAX_SEALED)?;
        epoch(entry.epoch)?;
        let Some(change) = &entry.change else {
            if entry.kind != MlsKind::Application {
                return Err(StorageError::conflict(
                    "mls entry",
                    format!("a {:?} needs its change of the group's state", entry.kind),
                ));
            }
            return Ok(());
        };
        let after = match entry.kind {
            MlsKind::Application => {
                return Err(StorageError::conflict(
                    "mls entry",
                    "an application message changes nothing of the group's state",
                ));
            }
            MlsKind::Proposal => Some(entry.epoch),
            MlsKind::Commit => entry.epoch.checked_add(1),
        };
        if after != Some(change.epoch) {
            return Err(StorageError::conflict(
                "mls group epoch",
                format!(
                    "a {:?} in epoch {} cannot leave the group at epoch {}",
                    entry.kind, entry.epoch, change.epoch
                ),
            ));
        }
        epoch(change.epoch)?;
        // The version is stored +1, so it must fit below i64::MAX.
        if change.state_version >= i64::MAX as u64 {
            return Err(StorageError::conflict(
                "mls group state version",
                format!("version {} is out of range", change.state_version),
            ));
        }
        mls_state(&change.state, &change.group_info)?;
        leaves("added leaves", &change.added)?;
        leaves("removed leaves", &change.removed)?;
        len(
            "used key packages",
            change.used_key_packages.len(),
            limits::MAX_GROUP_LEAVES,
        )?;
        for kp_ref in &change.used_key_packages {
            len(
                "key package reference",
                kp_ref.len(),
                limits::MAX_KEY_PACKAGE_REF,
            )?;
        }
        len("welcomes", change.welcomes.len(), limits::MAX_GROUP_LEAVES)?;
        for (_, _, welcome) in &change.welcomes {
            len("welcome", welcome.len(), limits::MAX_WELCOME)?;
        }
        Ok(())
    }

    /// A state entry to write.
    pub(crate) fn state_entry(entry: &[u8], value: Option<&[u8]>) -> Result<()> {
        len("state entry name", entry.len(), limits::MAX_STATE_KEY)?;
        len(
            "state entry",
            value.map_or(0, <[u8]>::len),
            limits::MAX_STATE_ENTRY,
        )
    }

    /// A group epoch as stored (`BIGINT`); one that does not fit cannot be the next epoch.
    pub(crate) fn epoch(epoch: u64) -> Result<i64> {
        i64::try_from(epoch).map_err(|_| {
            StorageError::conflict("group epoch", format!("epoch {epoch} is out of range"))
        })
    }
}

/// Decoding stored rows. Nothing here panics: a value that does not decode is
/// [`StorageError::Corrupt`].
pub(crate) mod decode {
    use super::*;

    /// `users` columns: name, password_hash, encryption_key, signing_key, key_backup, created_at.
    pub(crate) type UserRow = (String, String, Vec<u8>, Vec<u8>, Vec<u8>, i64);
    /// `groups` columns: id, name, creator, epoch.
    pub(crate) type GroupRow = (Vec<u8>, String, String, i64);
    /// `queue` joined with `messages`: seq, msg_id, sealed, wrapped_key, blob_id.
    pub(crate) type QueuedRow = (i64, Vec<u8>, Vec<u8>, Vec<u8>, Option<Vec<u8>>);
    /// `blobs` columns: id, owner, chunks, len, finished.
    pub(crate) type BlobRow = (Vec<u8>, String, i64, i64, bool);

    /// A stored user name.
    pub(crate) fn user_name(raw: &str) -> Result<UserName> {
        let name = UserName::new(raw).map_err(|e| StorageError::corrupt("user name", e))?;
        if name.as_str() != raw {
            return Err(StorageError::corrupt(
                "user name",
                format!("{raw:?} is not canonical"),
            ));
        }
        Ok(name)
    }

    /// A stored message id.
    pub(crate) fn msg_id(raw: &[u8]) -> Result<MsgId> {
        MsgId::from_slice(raw).map_err(|e| StorageError::corrupt("message id", e))
    }

    /// A stored group id.
    pub(crate) fn group_id(raw: &[u8]) -> Result<GroupId> {
        GroupId::from_slice(raw).map_err(|e| StorageError::corrupt("group id", e))
    }

    /// A stored blob id.
    pub(crate) fn blob_id(raw: &[u8]) -> Result<BlobId> {
        BlobId::from_slice(raw).map_err(|e| StorageError::corrupt("blob id", e))
    }

    /// `devices` columns: user_name, device, credential, signature_key, created_at.
    pub(crate) type DeviceRow = (String, i64, Vec<u8>, Vec<u8>, i64);
    /// `key_packages` columns: device, kp_ref, data, last_resort.
    pub(crate) type KeyPackageRow = (i64, Vec<u8>, Vec<u8>, bool);
    /// `mls_groups` columns: id, name, epoch, state_version, last_seq, state, group_info.
    pub(crate) type MlsGroupRow = (Vec<u8>, String, i64, i64, i64, Vec<u8>, Vec<u8>);
    /// `mls_log` columns: seq, msg_id, sender_user, sender_device, kind, epoch, body,
    /// blob_id, created_at.
    pub(crate) type MlsLogRow = (
        i64,
        Vec<u8>,
        String,
        i64,
        i16,
        i64,
        Vec<u8>,
        Option<Vec<u8>>,
        i64,
    );

    /// An MLS message kind as stored in `mls_log.kind`.
    pub(crate) fn mls_kind_code(kind: MlsKind) -> i16 {
        match kind {
            MlsKind::Application => 0,
            MlsKind::Proposal => 1,
            MlsKind::Commit => 2,
        }
    }

    /// A stored MLS message kind.
    pub(crate) fn mls_kind(raw: i16) -> Result<MlsKind> {
        match raw {
            0 => Ok(MlsKind::Application),
            1 => Ok(MlsKind::Proposal),
            2 => Ok(MlsKind::Commit),
            other => Err(StorageError::corrupt(
                "mls message kind",
                format!("unknown kind {other}"),
            )),
        }
    }

    /// An `mls_log` row.
    pub(crate) fn mls_log_entry(row: MlsLogRow) -> Result<MlsLogEntry> {
        let (seq, id, user, sender, kind, epoch, body, blob, at) = row;
        Ok(MlsLogEntry {
            seq: unsigned("mls log seq", seq)?,
            id: msg_id(&id)?,
            sender: (user_name(&user)?, device(sender)),
            kind: mls_kind(kind)?,
            epoch: unsigned("mls message epoch", epoch)?,
            body,
            blob: blob.as_deref().map(blob_id).transpose()?,
            at,
        })
    }

    /// A stored device id (see [`device_sql`]).
    pub(crate) fn device(raw: i64) -> DeviceId {
        DeviceId(u64::from_be_bytes(raw.to_be_bytes()))
    }

    /// A stored group name.
    pub(crate) fn group_name(raw: &str) -> Result<GroupName> {
        GroupName::new(raw).map_err(|e| StorageError::corrupt("group name", e))
    }

    /// A device row.
    pub(crate) fn device_record(row: DeviceRow) -> Result<DeviceRecord> {
        let (user, id, credential, signature_key, created_at) = row;
        Ok(DeviceRecord {
            user: user_name(&user)?,
            device: device(id),
            credential,
            signature_key,
            created_at,
        })
    }

    /// A key package row.
    pub(crate) fn key_package(row: KeyPackageRow) -> KeyPackageRecord {
        let (id, kp_ref, data, last_resort) = row;
        KeyPackageRecord {
            device: device(id),
            kp_ref,
            data,
            last_resort,
        }
    }

    /// An MLS group row.
    pub(crate) fn mls_group(row: MlsGroupRow) -> Result<MlsGroupRecord> {
        let (id, name, epoch, state_version, last_seq, state, group_info) = row;
        Ok(MlsGroupRecord {
            id: group_id(&id)?,
            name: group_name(&name)?,
            epoch: unsigned("mls group epoch", epoch)?,
            state_version: unsigned("mls group state version", state_version)?,
            last_seq: unsigned("mls log seq", last_seq)?,
            state,
            group_info,
        })
    }

    /// An MLS group row without its state: id, name, epoch.
    pub(crate) fn mls_summary(row: (Vec<u8>, String, i64)) -> Result<MlsGroupSummary> {
        let (id, name, epoch) = row;
        Ok(MlsGroupSummary {
            id: group_id(&id)?,
            name: group_name(&name)?,
            epoch: unsigned("mls group epoch", epoch)?,
        })
    }

    /// A stored non-negative integer.
    pub(crate) fn unsigned<T: TryFrom<i64>>(what: &'static str, raw: i64) -> Result<T> {
        T::try_from(raw).map_err(|_| StorageError::corrupt(what, format!("{raw} is out of range")))
    }

    /// A role as stored in `group_members.role`.
    pub(crate) fn role_name(role: Role) -> &'static str {
        match role {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// A stored role.
    pub(crate) fn role(raw: &str) -> Result<Role> {
        match raw {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(StorageError::corrupt(
                "role",
                format!("unknown role {other:?}"),
            )),
        }
    }

    /// A user row.
    pub(crate) fn user(row: UserRow) -> Result<UserRecord> {
        let (name, password_hash, encryption_key, signing_key, key_backup, created_at) = row;
        Ok(UserRecord {
            name: user_name(&name)?,
            password_hash,
            encryption_key,
            signing_key,
            key_backup,
            created_at,
        })
    }

    /// A group row.
    pub(crate) fn group(row: GroupRow) -> Result<GroupRecord> {
        let (id, name, creator, epoch) = row;
        Ok(GroupRecord {
            id: group_id(&id)?,
            name: GroupName::new(&name).map_err(|e| StorageError::corrupt("group name", e))?,
            creator: user_name(&creator)?,
            epoch: unsigned("group epoch", epoch)?,
        })
    }

    /// A member row: user name and role.
    pub(crate) fn member(user: &str, role_raw: &str) -> Result<Member> {
        Ok(Member {
            user: user_name(user)?,
            role: role(role_raw)?,
        })
    }

    /// A queued message row.
    pub(crate) fn queued(row: QueuedRow) -> Result<QueuedMessage> {
        let (seq, id, sealed, key, blob) = row;
        Ok(QueuedMessage {
            seq,
            id: msg_id(&id)?,
            sealed,
            key,
            blob: blob.as_deref().map(blob_id).transpose()?,
        })
    }

    /// A blob row.
    pub(crate) fn blob(row: BlobRow) -> Result<BlobInfo> {
        let (id, owner, chunks, len, finished) = row;
        Ok(BlobInfo {
            id: blob_id(&id)?,
            owner: user_name(&owner)?,
            chunks: unsigned("blob chunk count", chunks)?,
            len: unsigned("blob length", len)?,
            finished,
        })
    }
}
