//! Conformance checks for the login throttle state.

use std::collections::BTreeSet;

use super::{Fixture, HOUR};
use crate::{LoginThrottle, Storage};

/// Counts one attempt at `now` and returns the count seen before it.
fn count_one(now: i64) -> impl FnOnce(LoginThrottle) -> (LoginThrottle, u32) + Send {
    move |state| {
        let next = LoginThrottle {
            failures: state.failures + 1,
            next_at: now + 1000,
            last_at: now,
        };
        (next, state.failures)
    }
}

/// update_login_throttle reads, writes and resets; prune_login_throttle removes quiet names.
pub(super) async fn login_throttle(store: &impl Storage, fx: &Fixture) {
    let name = fx.name("throttled");
    assert_eq!(
        read_state(store, &name).await,
        LoginThrottle::default(),
        "a name never seen has the default state"
    );

    let seen = store
        .update_login_throttle(&name, count_one(fx.now))
        .await
        .unwrap();
    assert_eq!(seen, 0);
    assert_eq!(
        read_state(store, &name).await,
        LoginThrottle {
            failures: 1,
            next_at: fx.now + 1000,
            last_at: fx.now
        },
        "what an update returns is stored"
    );

    // Returning the default state forgets the name.
    store
        .update_login_throttle(&name, |_| (LoginThrottle::default(), ()))
        .await
        .unwrap();
    assert_eq!(read_state(store, &name).await, LoginThrottle::default());

    // Pruning removes names quiet since before the cut-off and keeps the others. Other runs
    // share the table, so only this run's names are checked.
    let (old, fresh) = (fx.name("throttle-old"), fx.name("throttle-fresh"));
    let long_ago = fx.now - 30 * 24 * HOUR;
    store
        .update_login_throttle(&old, count_one(long_ago))
        .await
        .unwrap();
    store
        .update_login_throttle(&fresh, count_one(fx.now))
        .await
        .unwrap();
    store.prune_login_throttle(long_ago + 1).await.unwrap();
    assert_eq!(read_state(store, &old).await, LoginThrottle::default());
    assert_eq!(read_state(store, &fresh).await.failures, 1);
}

/// Reads a name's state without changing it.
async fn read_state(store: &impl Storage, name: &quip_proto::ids::UserName) -> LoginThrottle {
    store
        .update_login_throttle(name, |state| (state, state))
        .await
        .unwrap()
}

/// Updates per handle in the concurrency check.
const PER_HANDLE: u32 = 20;

/// Two handles (two nodes) updating one name at once: every update sees the one before it,
/// none is lost.
pub async fn concurrent_login_throttle(first: &impl Storage, second: &impl Storage) {
    let fx = Fixture::new();
    let name = fx.name("contended");
    let (a, b) = tokio::join!(run_on(first, &name, fx.now), run_on(second, &name, fx.now));
    let all: BTreeSet<u32> = a.iter().chain(&b).copied().collect();
    assert_eq!(
        all,
        (0..2 * PER_HANDLE).collect(),
        "each concurrent update saw a distinct previous count"
    );
    assert_eq!(read_state(first, &name).await.failures, 2 * PER_HANDLE);
    first
        .update_login_throttle(&name, |_| (LoginThrottle::default(), ()))
        .await
        .unwrap();
}

/// Counts [`PER_HANDLE`] attempts on `store`, one after the other; returns what each saw.
async fn run_on(store: &impl Storage, name: &quip_proto::ids::UserName, now: i64) -> Vec<u32> {
    let mut seen = Vec::new();
    for _ in 0..PER_HANDLE {
        seen.push(
            store
                .update_login_throttle(name, count_one(now))
                .await
                .unwrap(),
        );
    }
    seen
}
