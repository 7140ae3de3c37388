//! SIGNUP (limited per address), LOGIN (attempts counted before bcrypt), resume (never
//! throttled) and logout.

use std::time::Duration;

use quip_proto::ids::{SessionToken, UserName};
use quip_proto::limits::{MAX_KEY_BACKUP, MAX_LOGIN_SECRET, MAX_PUBLIC_KEY};
use quip_proto::{ErrorCode, NodeToClient, PublicKeys, ReqId};
use quip_storage::{LoginThrottle, NewUser, Storage, StorageError};

use super::now_ms;
use crate::auth::{new_token, token_hash};
use crate::session::{Login, Refusal, Session};

/// Shortest login secret accepted (clients send 32 bytes).
const MIN_LOGIN_SECRET: usize = 16;

fn check_secret(secret: &[u8]) -> Result<(), Refusal> {
    if !(MIN_LOGIN_SECRET..=MAX_LOGIN_SECRET).contains(&secret.len()) {
        return Err(Refusal::new(
            ErrorCode::Malformed,
            format!("login secret must be {MIN_LOGIN_SECRET} to {MAX_LOGIN_SECRET} bytes"),
        ));
    }
    Ok(())
}

fn not_logged_in<S: Storage>(session: &Session<S>) -> Result<(), Refusal> {
    match &session.login {
        Some(login) => Err(Refusal::new(
            ErrorCode::AlreadyLoggedIn,
            format!("already logged in as {}", login.user),
        )),
        None => Ok(()),
    }
}

pub(crate) async fn signup<S: Storage>(
    session: &mut Session<S>,
    req: ReqId,
    user: UserName,
    secret: Vec<u8>,
    keys: PublicKeys,
    backup: Vec<u8>,
) -> Result<(), Refusal> {
    not_logged_in(session)?;
    check_secret(&secret)?;
    for (what, len, max) in [
        ("encryption key", keys.encryption.len(), MAX_PUBLIC_KEY),
        ("signing key", keys.signing.len(), MAX_PUBLIC_KEY),
        ("key backup", backup.len(), MAX_KEY_BACKUP),
    ] {
        if len == 0 || len > max {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("{what} must be 1 to {max} bytes (got {len})"),
            ));
        }
    }
    let node = session.node.clone();
    node.auth
        .signups
        .check(session.remote.ip())
        .map_err(|wait| {
            Refusal::new(ErrorCode::RateLimited, "too many signups from your address")
                .retry_after(wait)
        })?;
    if node
        .storage
        .user(&user)
        .await
        .map_err(Refusal::internal)?
        .is_some()
    {
        return Err(taken(&user));
    }
    let password_hash = node
        .auth
        .hasher
        .hash(secret)
        .await
        .map_err(Refusal::internal)?;
    let created = node
        .storage
        .create_user(&NewUser {
            name: user.clone(),
            password_hash,
            encryption_key: keys.encryption,
            signing_key: keys.signing,
            key_backup: backup,
            created_at: now_ms(),
        })
        .await;
    match created {
        Ok(()) => {}
        Err(StorageError::AlreadyExists { .. }) => return Err(taken(&user)),
        Err(err) => return Err(Refusal::internal(err)),
    }
    tracing::info!(%user, "signed up");
    start_session(session, req, user, Vec::new()).await
}

fn taken(user: &UserName) -> Refusal {
    Refusal::new(
        ErrorCode::UserExists,
        format!("the user name {user} is already taken"),
    )
}

pub(crate) async fn login<S: Storage>(
    session: &mut Session<S>,
    req: ReqId,
    user: UserName,
    secret: Vec<u8>,
) -> Result<(), Refusal> {
    not_logged_in(session)?;
    check_secret(&secret)?;
    let node = session.node.clone();
    let addr = session.remote.ip();
    let now = now_ms();
    // Both counts are taken before bcrypt (see `crate::auth`): first the address (memory),
    // then the account (storage, shared by every node).
    node.auth.addrs.reserve(addr).map_err(|wait| {
        Refusal::new(
            ErrorCode::Throttled,
            "too many failed logins from your address",
        )
        .retry_after(wait)
    })?;
    if let Some(before) = node.auth.prune_due(now) {
        let storage = node.storage.clone();
        tokio::spawn(async move {
            if let Err(err) = storage.prune_login_throttle(before).await {
                tracing::warn!(error = %err, "cannot prune the login throttle");
            }
        });
    }
    let delays = node.auth.delays;
    let reserved = node
        .storage
        .update_login_throttle(&user, move |state| delays.reserve(state, now))
        .await;
    let reserved = match reserved {
        Ok(reserved) => reserved,
        Err(err) => {
            node.auth.addrs.refund(addr);
            return Err(Refusal::internal(err));
        }
    };
    if let Err(wait_ms) = reserved {
        node.auth.addrs.refund(addr);
        return Err(Refusal::new(
            ErrorCode::Throttled,
            format!("too many failed logins for {user}; password logins to it are slowed down"),
        )
        .retry_after(Duration::from_millis(wait_ms.max(1) as u64)));
    }
    let record = node.storage.user(&user).await.map_err(Refusal::internal)?;
    let hash = record.as_ref().map(|r| r.password_hash.clone());
    if !node.auth.hasher.verify(secret, hash).await {
        // Already counted for the account and the address.
        tracing::info!(%user, "failed login");
        return Err(Refusal::new(
            ErrorCode::InvalidCredentials,
            "wrong user name or password",
        ));
    }
    node.auth.addrs.refund(addr);
    node.storage
        .update_login_throttle(&user, |_| (LoginThrottle::default(), ()))
        .await
        .map_err(Refusal::internal)?;
    let backup = record.map(|r| r.key_backup).unwrap_or_default();
    start_session(session, req, user, backup).await
}

/// Issues a token and logs the session in.
async fn start_session<S: Storage>(
    session: &mut Session<S>,
    req: ReqId,
    user: UserName,
    backup: Vec<u8>,
) -> Result<(), Refusal> {
    let node = session.node.clone();
    let seat = seat(&node, &user)?;
    let token = new_token();
    let expires_at = now_ms() + node.config.token_ttl.as_millis() as i64;
    node.storage
        .create_session(&token_hash(&token), &user, expires_at)
        .await
        .map_err(Refusal::internal)?;
    enter(session, seat, req, user, token, expires_at, backup).await;
    Ok(())
}

/// A place for one more session of `user` on this node, or a refusal naming the limit.
fn seat<'a, S: Storage>(
    node: &'a crate::Node<S>,
    user: &UserName,
) -> Result<crate::registry::Seat<'a>, Refusal> {
    let max = node.config.max_sessions_per_user;
    node.registry.reserve(user, max).map_err(|full| {
        Refusal::new(
            ErrorCode::QuotaExceeded,
            format!(
                "{user} already has {} sessions on this node (at most {max}); log out of one first",
                full.0
            ),
        )
    })
}

/// Answers `LoggedIn`, registers the session and starts delivering its queue.
async fn enter<S: Storage>(
    session: &mut Session<S>,
    seat: crate::registry::Seat<'_>,
    req: ReqId,
    user: UserName,
    token: SessionToken,
    expires_at: i64,
    backup: Vec<u8>,
) {
    let node = session.node.clone();
    session
        .send(&NodeToClient::LoggedIn {
            req,
            user: user.clone(),
            token: token.clone(),
            expires_at_ms: expires_at.max(0) as u64,
            backup,
            node: node.config.name.clone(),
        })
        .await;
    if node.registry.insert(seat, session.session_ref()) {
        node.presence(&user, true);
    }
    tracing::info!(%user, "logged in");
    session.login = Some(Login { user, token });
    session.spawn_drain();
}

pub(crate) async fn resume<S: Storage>(
    session: &mut Session<S>,
    req: ReqId,
    token: SessionToken,
) -> Result<(), Refusal> {
    not_logged_in(session)?;
    let node = session.node.clone();
    let found = node
        .storage
        .session(&token_hash(&token), now_ms())
        .await
        .map_err(Refusal::internal)?;
    let Some(found) = found else {
        return Err(Refusal::new(
            ErrorCode::SessionExpired,
            "session expired or unknown; log in again",
        ));
    };
    // A resuming client still holds its keys: no backup, and no account read.
    let seat = seat(&node, &found.user)?;
    enter(
        session,
        seat,
        req,
        found.user,
        token,
        found.expires_at,
        Vec::new(),
    )
    .await;
    Ok(())
}

pub(crate) async fn logout<S: Storage>(
    session: &mut Session<S>,
    req: ReqId,
) -> Result<(), Refusal> {
    let Some(login) = session.login.take() else {
        return Err(Refusal::new(ErrorCode::Unauthenticated, "not logged in"));
    };
    let node = session.node.clone();
    if node.registry.remove(&login.user, session.conn_id) {
        node.presence(&login.user, false);
    }
    node.storage
        .delete_session(&token_hash(&login.token))
        .await
        .map_err(Refusal::internal)?;
    session.send(&NodeToClient::Done { req }).await;
    Ok(())
}
