//! The conformance suite every backend passes: [`run_all`] checks each contract documented on
//! [`Storage`], so a new backend is done when it passes.
//!
//! The suite runs against a database that other runs may share, concurrently (Postgres in CI is
//! one database for every test process). So every name and id it creates is unique to the run
//! (a random prefix), it never assumes an empty table ("list_users *contains* these"), and its
//! timestamps stay clear of other runs' purges: live sessions expire an hour from the real
//! clock, blobs that must survive are created a day ahead, and purges use the real clock.
//! Counts returned by purges are only checked for what this run owns.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use quip_proto::ids::{BlobId, GroupId, GroupName, MsgId, UserName};

use crate::{NewMessage, NewUser, Storage, UnixMillis};

mod accounts;
mod blobs;
mod groups;
mod mls;
mod mls_log;
mod queue;
mod throttle;

pub use groups::concurrent_groups;
pub use mls::concurrent_mls;
pub use mls_log::concurrent_mls_log;
pub use queue::concurrent_queues;
pub use throttle::concurrent_login_throttle;

/// One hour in milliseconds.
const HOUR: UnixMillis = 60 * 60 * 1000;
/// One day in milliseconds.
const DAY: UnixMillis = 24 * HOUR;

/// Runs every check against `store`. Panics, naming the contract, on the first failure.
pub async fn run_all(store: &impl Storage) {
    let fx = Fixture::new();
    accounts::users(store, &fx).await;
    accounts::sessions(store, &fx).await;
    groups::creation(store, &fx).await;
    groups::changes(store, &fx).await;
    queue::delivery(store, &fx).await;
    queue::one_bad_message_alone(store, &fx).await;
    queue::group_commit(store, &fx).await;
    queue::quotas(store, &fx).await;
    queue::expiry(store, &fx).await;
    queue::blob_follows_message(store, &fx).await;
    blobs::upload(store, &fx).await;
    blobs::purge(store, &fx).await;
    concurrent_queues(store, store).await;
    concurrent_groups(store, store).await;
    throttle::login_throttle(store, &fx).await;
    concurrent_login_throttle(store, store).await;
    mls::devices(store, &fx).await;
    mls::key_packages(store, &fx).await;
    mls::groups(store, &fx).await;
    mls::device_state(store, &fx).await;
    concurrent_mls(store, store).await;
    mls_log::log(store, &fx).await;
    mls_log::cursors(store, &fx).await;
    mls_log::prune(store, &fx).await;
    mls_log::welcomes(store, &fx).await;
    concurrent_mls_log(store, store).await;
}

/// Checks the counts that `purge_sessions`, `purge_unfinished_blobs` and `prune_mls` return. Unlike
/// [`run_all`], this needs a database that nothing else purges meanwhile (a private SQLite
/// file, say), since a purge takes every run's expired rows.
pub async fn purge_counts(store: &impl Storage) {
    let fx = Fixture::new();
    let now = fx.now;
    let user = fx.user(store, "purge-counts").await;
    store.purge_sessions(now).await.unwrap();
    store.purge_unfinished_blobs(now).await.unwrap();

    let live = fx.token();
    store
        .create_session(&live, &user, now + HOUR)
        .await
        .unwrap();
    for expires_at in [now - HOUR, now] {
        store
            .create_session(&fx.token(), &user, expires_at)
            .await
            .unwrap();
    }
    assert_eq!(store.purge_sessions(now).await.unwrap(), 2);
    assert_eq!(store.purge_sessions(now).await.unwrap(), 0);
    assert!(store.session(&live, now).await.unwrap().is_some());

    let kept = fx.blob_id();
    store.blob_create(&kept, &user, now).await.unwrap();
    for created_at in [now - DAY, now - 1] {
        store
            .blob_create(&fx.blob_id(), &user, created_at)
            .await
            .unwrap();
    }
    assert_eq!(store.purge_unfinished_blobs(now).await.unwrap(), 2);
    assert_eq!(store.purge_unfinished_blobs(now).await.unwrap(), 0);
    assert!(store.blob_delete(&kept).await.unwrap());

    mls_log::prune_counts(store, &fx).await;
}

/// Asserts that `$result` is an `Err` matching `$pattern`.
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(,)?) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "{}: expected Err({}), got {other:?}",
                stringify!($result),
                stringify!($pattern)
            ),
        }
    };
}
use assert_err;

/// Unique names, ids and a clock for one run of the suite.
struct Fixture {
    /// Prefix of every user name: `t` and 7 base-36 digits.
    run: String,
    /// Random high half of every id.
    seed: u64,
    /// Low half of the next id.
    counter: AtomicU64,
    /// The real clock when the run started.
    now: UnixMillis,
}

impl Fixture {
    fn new() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        // RandomState is seeded from the OS; mixing in time and pid keeps runs apart even if
        // it were not.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(since_epoch.as_nanos());
        hasher.write_u32(std::process::id());
        let seed = hasher.finish();
        let mut run = String::from("t");
        let mut rest = seed;
        for _ in 0..7 {
            run.push(char::from_digit((rest % 36) as u32, 36).expect("digit below 36"));
            rest /= 36;
        }
        Self {
            run,
            seed,
            counter: AtomicU64::new(0),
            now: i64::try_from(since_epoch.as_millis()).expect("clock fits i64"),
        }
    }

    /// A user name unique to this run (not created).
    fn name(&self, label: &str) -> UserName {
        UserName::new(&format!("{}-{label}", self.run)).expect("valid test user name")
    }

    /// A group name unique to this run.
    fn group_name(&self, label: &str) -> GroupName {
        GroupName::new(&format!("{} {label}", self.run)).expect("valid test group name")
    }

    /// Sixteen bytes never returned before in any run.
    fn id16(&self) -> [u8; 16] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0; 16];
        id[..8].copy_from_slice(&self.seed.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn msg_id(&self) -> MsgId {
        MsgId(self.id16())
    }

    fn group_id(&self) -> GroupId {
        GroupId(self.id16())
    }

    fn blob_id(&self) -> BlobId {
        BlobId(self.id16())
    }

    /// A session token hash.
    fn token(&self) -> [u8; 32] {
        let mut token = [0; 32];
        token[..16].copy_from_slice(&self.id16());
        token[16..].copy_from_slice(&self.id16());
        token
    }

    /// An account for `name`, with small made-up keys.
    fn new_user(&self, name: &UserName) -> NewUser {
        NewUser {
            name: name.clone(),
            password_hash: format!("$2b$12$hash.of.{name}"),
            encryption_key: format!("encryption key of {name}").into_bytes(),
            signing_key: format!("signing key of {name}").into_bytes(),
            key_backup: format!("key backup of {name}").into_bytes(),
            created_at: self.now,
        }
    }

    /// Creates the account `label` and returns its name.
    async fn user(&self, store: &impl Storage, label: &str) -> UserName {
        let name = self.name(label);
        store
            .create_user(&self.new_user(&name))
            .await
            .expect("create test user");
        name
    }

    /// Creates several accounts.
    async fn users<const N: usize>(
        &self,
        store: &impl Storage,
        labels: [&str; N],
    ) -> [UserName; N] {
        let mut names = Vec::with_capacity(N);
        for label in labels {
            names.push(self.user(store, label).await);
        }
        names.try_into().expect("N names")
    }

    /// A new message `body` for `recipients`, each key naming its recipient.
    fn message(&self, recipients: &[&UserName], body: &str) -> NewMessage {
        NewMessage {
            id: self.msg_id(),
            sender: self.name("sender"),
            sealed: format!("sealed {body}").into_bytes(),
            blob: None,
            recipients: recipients
                .iter()
                .map(|name| ((*name).clone(), wrapped_key(body, name)))
                .collect(),
            created_at: self.now,
        }
    }
}

/// The made-up wrapped key of message `body` for `name`.
fn wrapped_key(body: &str, name: &UserName) -> Vec<u8> {
    format!("key of {body} for {name}").into_bytes()
}
