//! The task that owns the connection: answers the prompt loop's commands and prints what
//! arrives in between.

use quip_cli::Chat;
use quip_cli::e2e::DEFAULT_KEY_BITS;
use quip_cli::{Client, ClientError, Incoming, Listing};
use quip_proto::client::Presence;
use quip_proto::ids::{GroupId, GroupName, UserName};
use quip_proto::{Action, Conversation, ErrorCode};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::input::Printer;
use crate::commands::Target;

/// Most users or groups the menu lists at once: a huge list (one account once put a user
/// into thousands of groups) shows its first page and a count, never stalls the prompt.
const MENU_PAGE: u32 = 50;

/// What the prompt loop asks of the connection.
pub(crate) enum Cmd {
    Auth {
        signup: bool,
        user: UserName,
        password: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The first page of users (the menu shows it and how many there are in all).
    Users(oneshot::Sender<Result<Listing<Presence>, String>>),
    Send {
        to: Chat,
        text: String,
        reply: oneshot::Sender<Result<Vec<String>, SendError>>,
    },
    SendImage {
        to: Chat,
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<Vec<String>, SendError>>,
    },
    /// The first page of our groups, described, and how many there are in all.
    Groups(oneshot::Sender<Result<Listing<String>, String>>),
    CreateGroup {
        name: GroupName,
        members: Vec<UserName>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Opens a group by name: its id and whether we are an admin.
    OpenGroup {
        name: String,
        reply: oneshot::Sender<Result<(GroupId, bool), String>>,
    },
    ChangeGroup {
        id: GroupId,
        action: Action,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Accept {
        user: UserName,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Why a send failed, as the prompt loop needs to react to it.
pub(crate) enum SendError {
    /// The peer's keys changed: ask the user whether to accept.
    KeyChanged {
        user: UserName,
        why: String,
    },
    Other(String),
}

fn describe(err: &ClientError) -> String {
    match err.code() {
        Some(ErrorCode::UnknownUser) => "No such user".to_owned(),
        _ => err.to_string(),
    }
}

pub(crate) async fn run(
    target: Target,
    conn: quip_cli::Connection,
    mut rx: mpsc::Receiver<Cmd>,
    mut print: Printer,
) {
    let mut conn = Some(conn);
    // Until logged in: only Auth.
    let mut client = loop {
        let Some(cmd) = rx.recv().await else { return };
        let Cmd::Auth {
            signup,
            user,
            password,
            reply,
        } = cmd
        else {
            continue;
        };
        // The node closes a connection that has not logged in within its deadline (the user
        // may have taken a while to type): connect again then.
        let connection = match conn.take().filter(|c| c.quic().close_reason().is_none()) {
            Some(c) => c,
            None => match target.connect().await {
                Ok(c) => c,
                Err(err) => {
                    let _ = reply.send(Err(err.to_string()));
                    return;
                }
            },
        };
        let dir = target.user_dir(&user);
        let result = if signup {
            Client::signup(connection, &dir, &user, &password, DEFAULT_KEY_BITS).await
        } else {
            Client::login(connection, &dir, &user, &password).await
        };
        match result {
            Ok(mut client) => {
                client.on_progress(Box::new(crate::progress::bar("receiving")));
                client
                    .notices()
                    .iter()
                    .for_each(|n| print(format!("! {n}")));
                let _ = reply.send(Ok(()));
                break client;
            }
            Err(err) => {
                let _ = reply.send(Err(err.to_string()));
            }
        }
    };
    loop {
        tokio::select! {
            event = client.recv_event() => {
                if let Some(incoming) = client.handle_event(event).await {
                    let wait = match incoming {
                        Incoming::Reconnect { after_ms } => Some(after_ms),
                        Incoming::Closed(_) => Some(0),
                        _ => None,
                    };
                    print(render(&client, &incoming));
                    if let Some(after_ms) = wait {
                        tokio::time::sleep(Duration::from_millis(after_ms.into())).await;
                        match reconnect(&target, &mut client).await {
                            Ok(()) => print("! reconnected".to_owned()),
                            Err(why) => {
                                print(format!("! {why}"));
                                break;
                            }
                        }
                    }
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                handle(&mut client, cmd).await;
            }
        }
    }
    client.close().await;
}

/// How long to keep trying to reach a node after losing one.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Finds a live node through the master (with backoff) and resumes the session there with
/// the session token: no password, no bcrypt.
async fn reconnect(target: &Target, client: &mut Client) -> Result<(), String> {
    let give_up = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = match target.connect().await {
            Ok(conn) => client.resume(conn).await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(why) if tokio::time::Instant::now() + backoff > give_up => {
                return Err(format!("could not reconnect: {why}"));
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn handle(client: &mut Client, cmd: Cmd) {
    match cmd {
        Cmd::Auth { reply, .. } => {
            let _ = reply.send(Err("already logged in".into()));
        }
        Cmd::Users(reply) => {
            let page = client.users_page(None, MENU_PAGE).await;
            let _ = reply.send(page.map_err(|e| describe(&e)));
        }
        Cmd::Send { to, text, reply } => {
            let result = client.send_text_to(&to, &text).await;
            let _ = reply.send(result.map(|s| s.left_out).map_err(send_error));
        }
        Cmd::SendImage { to, path, reply } => {
            let mut bar = crate::progress::bar("sending");
            let result = client.send_image_to(&to, &path, &mut bar).await;
            let _ = reply.send(result.map(|s| s.left_out).map_err(send_error));
        }
        Cmd::Groups(reply) => {
            let groups = client
                .groups_page(None, MENU_PAGE)
                .await
                .map(|page| Listing {
                    items: page
                        .items
                        .into_iter()
                        .map(|g| format!("{} (by {})", g.name, g.creator))
                        .collect(),
                    total: page.total,
                    more: page.more,
                });
            let _ = reply.send(groups.map_err(|e| describe(&e)));
        }
        Cmd::CreateGroup {
            name,
            members,
            reply,
        } => {
            let created = client.create_group(&name, &members).await;
            let _ = reply.send(created.map(|_| ()).map_err(|e| describe(&e)));
        }
        Cmd::OpenGroup { name, reply } => {
            let opened = async {
                let summary = client.group_named(&name).await?;
                let verified = client.verify_group(&summary.id).await?;
                Ok::<_, ClientError>((summary.id, verified.state.is_admin(client.me())))
            }
            .await;
            let _ = reply.send(opened.map_err(|e| describe(&e)));
        }
        Cmd::ChangeGroup { id, action, reply } => {
            let changed = client.change_group(&id, action).await;
            let _ = reply.send(changed.map_err(|e| describe(&e)));
        }
        Cmd::Accept { user, reply } => {
            let _ = reply.send(client.accept_keys(&user).await.map_err(|e| describe(&e)));
        }
    }
}

fn send_error(err: ClientError) -> SendError {
    match err {
        ClientError::KeyChanged { ref user, .. } => SendError::KeyChanged {
            user: user.clone(),
            why: err.to_string(),
        },
        other => SendError::Other(describe(&other)),
    }
}

/// How an incoming message looks on screen.
pub(crate) fn render(client: &Client, incoming: &Incoming) -> String {
    let place = |conversation: &Conversation| match conversation {
        Conversation::Direct(_) => String::new(),
        Conversation::Group { id, .. } => {
            format!(
                "[{}] ",
                client.group_name(id).unwrap_or_else(|| "group".into())
            )
        }
    };
    match incoming {
        Incoming::Message(m) => format!("{}{}: {}", place(&m.conversation), m.from, m.text),
        Incoming::Image(m) => format!(
            "{}{} sent an image: {}",
            place(&m.conversation),
            m.from,
            m.path.display()
        ),
        Incoming::GroupChanged(what) => what.clone(),
        Incoming::Rejected { from, reason } => {
            format!("! a message from {from} was refused: {reason}")
        }
        Incoming::Held(err) => format!("! {err}"),
        Incoming::Reconnect { .. } => "! the server is restarting; please reconnect".to_owned(),
        Incoming::Closed(why) => format!("! disconnected: {why}"),
        Incoming::Expired { id, recipient } => {
            format!("! your message {id} to {recipient} expired unread; the server deleted it")
        }
    }
}
