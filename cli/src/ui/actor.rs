//! The task that owns the connection: answers the prompt loop's commands and prints what
//! arrives in between.

use quip_cli::e2e::DEFAULT_KEY_BITS;
use quip_cli::{Client, ClientError, Incoming};
use quip_proto::client::Presence;
use quip_proto::ids::UserName;
use quip_proto::{Conversation, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::input::Printer;
use crate::commands::Target;

/// What the prompt loop asks of the connection.
pub(crate) enum Cmd {
    Auth {
        signup: bool,
        user: UserName,
        password: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Users(oneshot::Sender<Result<Vec<Presence>, String>>),
    Send {
        to: UserName,
        text: String,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    SendImage {
        to: UserName,
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    Accept {
        user: UserName,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Why a send failed, as the prompt loop needs to react to it.
pub(crate) enum SendError {
    /// The peer's keys changed: ask the user whether to accept.
    KeyChanged(String),
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
        let connection = match conn.take() {
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
                    let closed = matches!(incoming, Incoming::Closed(_) | Incoming::Reconnect { .. });
                    print(render(&incoming));
                    if closed {
                        break;
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

async fn handle(client: &mut Client, cmd: Cmd) {
    match cmd {
        Cmd::Auth { reply, .. } => {
            let _ = reply.send(Err("already logged in".into()));
        }
        Cmd::Users(reply) => {
            let _ = reply.send(client.users().await.map_err(|e| describe(&e)));
        }
        Cmd::Send { to, text, reply } => {
            let result = client
                .send_text(&to, &text)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    ClientError::KeyChanged { .. } => SendError::KeyChanged(e.to_string()),
                    other => SendError::Other(describe(&other)),
                });
            let _ = reply.send(result);
        }
        Cmd::SendImage { to, path, reply } => {
            let mut bar = crate::progress::bar("sending");
            let result = client.send_image(&to, &path, &mut bar).await;
            let _ = reply.send(result.map(|_| ()).map_err(send_error));
        }
        Cmd::Accept { user, reply } => {
            let _ = reply.send(client.accept_keys(&user).await.map_err(|e| describe(&e)));
        }
    }
}

fn send_error(err: ClientError) -> SendError {
    match err {
        ClientError::KeyChanged { .. } => SendError::KeyChanged(err.to_string()),
        other => SendError::Other(describe(&other)),
    }
}

/// How an incoming message looks on screen.
pub(crate) fn render(incoming: &Incoming) -> String {
    match incoming {
        Incoming::Message(m) => match &m.conversation {
            Conversation::Direct(_) => format!("{}: {}", m.from, m.text),
            Conversation::Group { .. } => format!("[group] {}: {}", m.from, m.text),
        },
        Incoming::Image(m) => match &m.conversation {
            Conversation::Direct(_) => format!("{} sent an image: {}", m.from, m.path.display()),
            Conversation::Group { .. } => {
                format!("[group] {} sent an image: {}", m.from, m.path.display())
            }
        },
        Incoming::Rejected { from, reason } => {
            format!("! a message from {from} was refused: {reason}")
        }
        Incoming::Held(err) => format!("! {err}"),
        Incoming::Reconnect { .. } => "! the server is restarting; please reconnect".to_owned(),
        Incoming::Closed(why) => format!("! disconnected: {why}"),
    }
}
