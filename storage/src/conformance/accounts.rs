//! Conformance checks for users and sessions.

use quip_proto::ids::UserName;

use super::{Fixture, HOUR, assert_err};
use crate::{NewUser, SessionRecord, Storage, StorageError, UserRecord, limits};

/// create_user, user, list_users, replace_keys.
pub(super) async fn users(store: &impl Storage, fx: &Fixture) {
    let alice = fx.name("alice");
    let new = fx.new_user(&alice);
    store.create_user(&new).await.expect("create alice");
    let expected = UserRecord {
        name: alice.clone(),
        password_hash: new.password_hash.clone(),
        encryption_key: new.encryption_key.clone(),
        signing_key: new.signing_key.clone(),
        key_backup: new.key_backup.clone(),
        created_at: new.created_at,
    };
    assert_eq!(store.user(&alice).await.unwrap(), Some(expected.clone()));

    // The same name in another case is the same account.
    let shouted = UserName::new(&alice.as_str().to_uppercase()).unwrap();
    assert_err!(
        store.create_user(&fx.new_user(&shouted)).await,
        StorageError::AlreadyExists { what: "user" }
    );
    assert_eq!(store.user(&fx.name("nobody")).await.unwrap(), None);

    // Every field at its limit is accepted; one byte more is refused and nothing is stored.
    let roomy = fx.name("roomy");
    store
        .create_user(&NewUser {
            password_hash: "h".repeat(limits::MAX_PASSWORD_HASH),
            encryption_key: vec![1; limits::MAX_PUBLIC_KEY],
            signing_key: vec![2; limits::MAX_PUBLIC_KEY],
            key_backup: vec![3; limits::MAX_KEY_BACKUP],
            ..fx.new_user(&roomy)
        })
        .await
        .expect("fields at their limits");
    type Grow = fn(&mut NewUser);
    let oversized: [(&str, usize, Grow); 4] = [
        ("password hash", limits::MAX_PASSWORD_HASH, |u| {
            u.password_hash = "h".repeat(limits::MAX_PASSWORD_HASH + 1)
        }),
        ("encryption key", limits::MAX_PUBLIC_KEY, |u| {
            u.encryption_key = vec![1; limits::MAX_PUBLIC_KEY + 1]
        }),
        ("signing key", limits::MAX_PUBLIC_KEY, |u| {
            u.signing_key = vec![2; limits::MAX_PUBLIC_KEY + 1]
        }),
        ("key backup", limits::MAX_KEY_BACKUP, |u| {
            u.key_backup = vec![3; limits::MAX_KEY_BACKUP + 1]
        }),
    ];
    for (i, (field, max, grow)) in oversized.into_iter().enumerate() {
        let name = fx.name(&format!("big{i}"));
        let mut user = fx.new_user(&name);
        grow(&mut user);
        match store.create_user(&user).await {
            Err(StorageError::TooLarge { what, len, max: m }) => {
                assert_eq!((what, len, m), (field, max + 1, max));
            }
            other => panic!("oversized {field}: expected TooLarge, got {other:?}"),
        }
        assert_eq!(store.user(&name).await.unwrap(), None, "{field}");
    }

    // list_users, walked in pages of two, contains everyone created, once.
    let bob = fx.user(store, "bob").await;
    let mut all: Vec<UserName> = Vec::new();
    loop {
        let page = store.list_users(all.last(), 2).await.unwrap();
        assert!(page.items.len() <= 2 && page.total >= all.len() as u64);
        let more = page.more;
        all.extend(page.items);
        if !more {
            break;
        }
    }
    for name in [&alice, &bob, &roomy] {
        assert!(all.contains(name), "list_users lacks {name}");
    }
    let unique: std::collections::HashSet<&UserName> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a name listed twice");
    let after_last = store.list_users(all.last(), 2).await.unwrap();
    assert!(after_last.items.is_empty() && !after_last.more);

    // replace_keys changes the keys and the backup, nothing else.
    store
        .replace_keys(&alice, b"new enc", b"new sig", b"new backup")
        .await
        .unwrap();
    let replaced = UserRecord {
        encryption_key: b"new enc".to_vec(),
        signing_key: b"new sig".to_vec(),
        key_backup: b"new backup".to_vec(),
        ..expected
    };
    assert_eq!(store.user(&alice).await.unwrap(), Some(replaced.clone()));
    assert_err!(
        store
            .replace_keys(&fx.name("nobody"), b"e", b"s", b"b")
            .await,
        StorageError::NotFound { what: "user" }
    );
    let huge = vec![0; limits::MAX_KEY_BACKUP + 1];
    assert_err!(
        store.replace_keys(&alice, b"e", b"s", &huge).await,
        StorageError::TooLarge {
            what: "key backup",
            ..
        }
    );
    assert_eq!(store.user(&alice).await.unwrap(), Some(replaced));
}

/// create_session, session, delete_session, purge_sessions.
pub(super) async fn sessions(store: &impl Storage, fx: &Fixture) {
    let now = fx.now;
    let user = fx.user(store, "sessions").await;
    let live = fx.token();
    store
        .create_session(&live, &user, now + HOUR)
        .await
        .unwrap();
    let record = SessionRecord {
        user: user.clone(),
        expires_at: now + HOUR,
    };
    assert_eq!(
        store.session(&live, now).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store.session(&live, now + HOUR - 1).await.unwrap(),
        Some(record.clone())
    );
    // Expired at exactly expires_at.
    assert_eq!(store.session(&live, now + HOUR).await.unwrap(), None);
    assert_eq!(store.session(&fx.token(), now).await.unwrap(), None);

    assert_err!(
        store.create_session(&live, &user, now + 2 * HOUR).await,
        StorageError::AlreadyExists { what: "session" }
    );
    assert_eq!(
        store.session(&live, now).await.unwrap(),
        Some(record.clone())
    );
    assert_err!(
        store
            .create_session(&fx.token(), &fx.name("ghost"), now + HOUR)
            .await,
        StorageError::NotFound { what: "user" }
    );

    // An expired session is never returned, and a purge removes it but not a live one.
    let expired = [fx.token(), fx.token()];
    for token in &expired {
        store
            .create_session(token, &user, now - 1000)
            .await
            .unwrap();
        assert_eq!(store.session(token, now).await.unwrap(), None);
    }
    // The count may include other runs' sessions (see the module docs): see `purge_counts`.
    store.purge_sessions(now).await.unwrap();
    for token in &expired {
        assert!(
            !store.delete_session(token).await.unwrap(),
            "expired session survived"
        );
    }
    assert_eq!(store.session(&live, now).await.unwrap(), Some(record));

    // Logout.
    assert!(store.delete_session(&live).await.unwrap());
    assert!(!store.delete_session(&live).await.unwrap());
    assert_eq!(store.session(&live, now).await.unwrap(), None);
}
