//! Password logins under attack, through real QUIC on both storage backends: parallel
//! guesses, delays shared by every node on the storage, session tokens never throttled,
//! signups limited per address.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestNode, unique};
use quip_cli::ConnectError;
use quip_cli::e2e::Secrets;
use quip_proto::ids::{SessionToken, UserName};
use quip_proto::{ClientToNode, ErrorCode, NodeToClient, PublicKeys};
use quip_storage::{LoginThrottle, Storage, Store};

const RIGHT: [u8; 32] = [7; 32];
const WRONG: [u8; 32] = [8; 32];

/// Signs `user` up with raw bytes for keys and backup (the node cannot tell), so no RSA.
async fn signup(node: &TestNode, user: &UserName) -> Result<NodeToClient, ConnectError> {
    node.connect()
        .await
        .request(|req| ClientToNode::Signup {
            req,
            user: user.clone(),
            secret: RIGHT.to_vec(),
            keys: PublicKeys {
                encryption: vec![1; 64],
                signing: vec![2; 64],
            },
            backup: vec![3; 64],
        })
        .await
}

/// One `Login` on a fresh connection.
async fn login(
    node: &TestNode,
    user: &UserName,
    secret: [u8; 32],
) -> Result<NodeToClient, ConnectError> {
    node.connect()
        .await
        .request(|req| ClientToNode::Login {
            req,
            user: user.clone(),
            secret: secret.to_vec(),
        })
        .await
}

fn token(answer: NodeToClient) -> SessionToken {
    match answer {
        NodeToClient::LoggedIn { token, .. } => token,
        other => panic!("expected LoggedIn, got {other:?}"),
    }
}

/// The error code and retry time of a refusal.
fn refused(answer: Result<NodeToClient, ConnectError>) -> (ErrorCode, Option<u32>) {
    match answer {
        Err(ConnectError::Refused {
            code,
            retry_after_ms,
            ..
        }) => (code, retry_after_ms),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The throttle state of `user` in storage, unchanged.
async fn state(storage: &Store, user: &UserName) -> LoginThrottle {
    storage
        .update_login_throttle(user, |s| (s, s))
        .await
        .unwrap()
}

/// A second node on the same storage as `first` (its own CA and data directory).
async fn second_node(first: &TestNode, tweak: impl FnOnce(&mut quip_node::NodeConfig)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Store::connect(&first.url).await.unwrap());
    let mut config = quip_node::NodeConfig::new(
        "node-second".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_owned(),
    );
    config.bcrypt_cost = 4;
    config.drain_timeout = Duration::from_millis(500);
    tweak(&mut config);
    let handle = quip_node::start(config, storage.clone()).await.unwrap();
    TestNode {
        handle,
        storage,
        dir,
        db_path: first.db_path.clone(),
        url: first.url.clone(),
    }
}

/// Tries `secret` until the account's wait is over (waiting as long as each refusal says);
/// returns the first answer that is not `Throttled`.
async fn login_after_wait(
    node: &TestNode,
    user: &UserName,
    secret: [u8; 32],
) -> Result<NodeToClient, ConnectError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match login(node, user, secret).await {
            Err(ConnectError::Refused {
                code: ErrorCode::Throttled,
                retry_after_ms: Some(ms),
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
            }
            other => return other,
        }
    }
}

/// Issue 11 item 4: 40 parallel wrong guesses for one account, each on its own connection,
/// reach bcrypt at most 5 times (the account's free attempts); the rest are told to wait.
async fn parallel_guesses_reach_bcrypt_at_most_five_times(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let node = Arc::new(node);
    let user = unique("target");
    signup(&node, &user).await.expect("signup");
    let before = node.handle.bcrypt_checks();

    const GUESSES: usize = 40;
    let ready = Arc::new(tokio::sync::Barrier::new(GUESSES));
    let mut guesses = tokio::task::JoinSet::new();
    for _ in 0..GUESSES {
        let (node, user, ready) = (node.clone(), user.clone(), ready.clone());
        guesses.spawn(async move {
            let conn = node.connect().await;
            // Every connection is up before any guess is sent.
            ready.wait().await;
            conn.request(|req| ClientToNode::Login {
                req,
                user,
                secret: WRONG.to_vec(),
            })
            .await
        });
    }
    let (mut wrong, mut throttled) = (0, 0);
    while let Some(answer) = guesses.join_next().await {
        match refused(answer.unwrap()) {
            (ErrorCode::InvalidCredentials, _) => wrong += 1,
            (ErrorCode::Throttled, Some(ms)) if ms > 0 => throttled += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let checks = node.handle.bcrypt_checks() - before;
    assert!(
        checks <= 5,
        "{checks} of {GUESSES} parallel guesses reached bcrypt"
    );
    assert_eq!(
        wrong as u64, checks,
        "every guess checked was answered as wrong"
    );
    assert_eq!(
        wrong + throttled,
        GUESSES,
        "the others were throttled with a retry time"
    );
}

/// Issue 11 item 5: failures on node A slow the account on node B (the state is in the
/// shared storage); the wait doubles per attempt; a session token still works; the right
/// password after the wait gets in and resets the account.
async fn delays_shared_by_nodes_and_resume_never_throttled(backend: Backend) {
    let tweak = |config: &mut quip_node::NodeConfig| {
        config.max_failures_per_user = 2;
        config.login_delay_base = Duration::from_secs(2);
        config.login_delay_max = Duration::from_secs(8);
    };
    let Some(a) = TestNode::start_with(backend, tweak).await else {
        return;
    };
    let b = second_node(&a, tweak).await;
    let user = unique("owner");
    let session = token(signup(&a, &user).await.expect("signup"));

    for _ in 0..2 {
        assert_eq!(
            refused(login(&a, &user, WRONG).await).0,
            ErrorCode::InvalidCredentials,
            "the free attempts are checked"
        );
    }
    let after_two = state(&a.storage, &user).await;
    assert_eq!(after_two.failures, 2);
    assert_eq!(
        after_two.next_at - after_two.last_at,
        2000,
        "then a first wait"
    );

    // Node B sees A's failures: the next attempt there must wait, even with the right
    // password, and is told for how long.
    let (code, retry) = refused(login(&b, &user, RIGHT).await);
    assert_eq!(code, ErrorCode::Throttled);
    assert!(retry.is_some_and(|ms| ms > 0 && ms <= 2000), "{retry:?}");
    assert_eq!(
        state(&b.storage, &user).await,
        after_two,
        "a refused attempt is not counted"
    );

    // The owner's session token works on either node meanwhile.
    let resumed = b
        .connect()
        .await
        .request(|req| ClientToNode::Resume {
            req,
            token: session.clone(),
        })
        .await;
    token(resumed.expect("resume is never throttled"));

    // After the wait, one more wrong guess is checked, and the wait doubles.
    assert_eq!(
        refused(login_after_wait(&b, &user, WRONG).await).0,
        ErrorCode::InvalidCredentials
    );
    let after_three = state(&b.storage, &user).await;
    assert_eq!(after_three.failures, 3);
    assert_eq!(
        after_three.next_at - after_three.last_at,
        4000,
        "the wait doubled"
    );

    // The right password after the wait gets in, and the account starts over.
    token(
        login_after_wait(&a, &user, RIGHT)
            .await
            .expect("the owner gets in"),
    );
    assert_eq!(state(&a.storage, &user).await, LoginThrottle::default());
    assert_eq!(
        refused(login(&b, &user, WRONG).await).0,
        ErrorCode::InvalidCredentials,
        "free attempts again after a success"
    );
}

/// Issue 11 item 2 (signups): the 6th signup from one address in a burst is refused with a
/// retry time; logging in still works.
async fn signups_limited_per_address(backend: Backend) {
    let Some(node) = TestNode::start(backend).await else {
        return;
    };
    let users: Vec<UserName> = (0..6).map(|_| unique("burst")).collect();
    for user in &users[..5] {
        signup(&node, user).await.expect("within the burst");
    }
    let (code, retry) = refused(signup(&node, &users[5]).await);
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(retry.is_some_and(|ms| ms > 0), "{retry:?}");
    assert!(
        node.storage.user(&users[5]).await.unwrap().is_none(),
        "nothing was created"
    );
    token(
        login(&node, &users[0], RIGHT)
            .await
            .expect("login still works"),
    );
}

/// Issue 11 item 6: the same name and password on two deployments (different CAs) give
/// different login secrets, so the secret deployment A receives does not log in on B.
async fn login_secret_bound_to_the_deployment(backend: Backend) {
    // Another deployment has storage of its own (the test Postgres is one shared database).
    let (Some(a), Some(b)) = (
        TestNode::start(backend).await,
        TestNode::start(Backend::Sqlite).await,
    ) else {
        return;
    };
    assert_ne!(a.deployment(), b.deployment(), "two CAs");
    let home = tempfile::tempdir().unwrap();
    let user = unique("twice");
    a.signup(&user, &home.path().join("a")).await.close().await;
    b.signup(&user, &home.path().join("b")).await.close().await;

    // What A's operator receives when the user logs in there.
    let on_a = Secrets::derive(&user, common::PASSWORD, &a.deployment()).unwrap();
    let on_b = Secrets::derive(&user, common::PASSWORD, &b.deployment()).unwrap();
    assert_ne!(on_a.login(), on_b.login());
    assert_ne!(on_a.backup(), on_b.backup());
    token(
        login(&a, &user, *on_a.login())
            .await
            .expect("it is A's secret"),
    );
    assert_eq!(
        refused(login(&b, &user, *on_a.login()).await).0,
        ErrorCode::InvalidCredentials,
        "A's secret is useless on B"
    );

    // A client that pins the CA on first use binds to the same deployment as one given it.
    let pins = quip_quic::KnownCas::new(home.path().join("known_cas"));
    let pinned = quip_cli::Connection::connect(
        a.handle.local_addr(),
        quip_quic::names::NODE,
        &quip_quic::Trust::Pinned {
            known: pins,
            addr: a.handle.local_addr().to_string(),
        },
    )
    .await
    .unwrap();
    assert_eq!(pinned.deployment(), a.deployment());
}

on_both_backends!(
    login_secret_bound_to_the_deployment,
    parallel_guesses_reach_bcrypt_at_most_five_times,
    delays_shared_by_nodes_and_resume_never_throttled,
    signups_limited_per_address,
);
