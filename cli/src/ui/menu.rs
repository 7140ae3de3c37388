//! The prompt flow of the original program: LOGIN/SIGNUP, the user list, the menu, personal
//! chat. Runs on a blocking thread; talks to the connection through the actor.

use std::process::ExitCode;

use quip_cli::Chat;
use quip_proto::ids::UserName;
use tokio::sync::{mpsc, oneshot};

use super::EXIT;
use super::actor::{Cmd, SendError};
use super::input::{Eof, Input};

/// Leaving the program: `@#@EXIT@#@`, Ctrl-D, or the connection is gone.
pub(super) struct Leave;

impl From<Eof> for Leave {
    fn from(_: Eof) -> Self {
        Leave
    }
}

pub(super) type Flow<T> = Result<T, Leave>;

pub(super) fn ask<T>(
    tx: &mpsc::Sender<Cmd>,
    make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
) -> Flow<T> {
    let (reply, answer) = oneshot::channel();
    tx.blocking_send(make(reply)).map_err(|_| Leave)?;
    answer.blocking_recv().map_err(|_| Leave)
}

/// A line, where `@#@EXIT@#@` leaves.
pub(super) fn line(input: &mut Input, prompt: &str) -> Flow<String> {
    let line = input.line(prompt)?;
    if line == EXIT { Err(Leave) } else { Ok(line) }
}

pub(crate) fn run(input: &mut Input, tx: mpsc::Sender<Cmd>) -> ExitCode {
    match session(input, &tx) {
        Ok(()) | Err(Leave) => {
            say!("Bye.");
            ExitCode::SUCCESS
        }
    }
}

fn session(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    let me = authenticate(input, tx)?;
    say!("Welcome, {me}.");
    show_users(tx)?;
    loop {
        say!("1 personal chat | 2 create group | 3 group chat | {EXIT} to leave");
        match line(input, "> ")?.as_str() {
            "1" => personal_chat(input, tx)?,
            "2" => super::group::create(input, tx)?,
            "3" => super::group::room(input, tx)?,
            "" => {}
            other => say!("Unknown choice {other:?}."),
        }
    }
}

fn authenticate(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<UserName> {
    loop {
        let choice = line(input, "LOGIN or SIGNUP: ")?.to_ascii_uppercase();
        let signup = match choice.as_str() {
            "LOGIN" => false,
            "SIGNUP" | "REGISTER" => true,
            _ => {
                say!("Type LOGIN or SIGNUP.");
                continue;
            }
        };
        let user = match UserName::new(&line(input, "Username: ")?) {
            Ok(user) => user,
            Err(err) => {
                say!("{err}");
                continue;
            }
        };
        let password = input.secret("Password: ")?;
        if signup {
            let again = input.secret("Repeat password: ")?;
            if again != password {
                say!("The passwords differ.");
                continue;
            }
            // Before any key is made or anything is sent.
            if let Err(weak) = quip_cli::e2e::check_strength(&user, &password) {
                say!("{weak}");
                continue;
            }
            say!("Creating your keys…");
        }
        match ask(tx, |reply| Cmd::Auth {
            signup,
            user: user.clone(),
            password,
            reply,
        })? {
            Ok(()) => return Ok(user),
            Err(why) => say!("{why}"),
        }
    }
}

fn show_users(tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    match ask(tx, Cmd::Users)? {
        Ok(users) => {
            say!("Users:{}", more_of(&users));
            for p in &users.items {
                say!(
                    "  {} ({})",
                    p.user,
                    if p.online { "online" } else { "offline" }
                );
            }
            match ask(tx, Cmd::Groups)? {
                Ok(groups) if groups.items.is_empty() => say!("Groups: none"),
                Ok(groups) => {
                    say!("Groups:{}", more_of(&groups));
                    groups.items.iter().for_each(|g| say!("  {g}"));
                }
                Err(why) => say!("Cannot list groups: {why}"),
            }
        }
        Err(why) => say!("Cannot list users: {why}"),
    }
    Ok(())
}

/// " (the first 50 of 3928)" when a list is longer than its first page.
fn more_of<T>(page: &quip_cli::Listing<T>) -> String {
    if page.more {
        format!(" (the first {} of {})", page.items.len(), page.total)
    } else {
        String::new()
    }
}

fn personal_chat(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    let peer = match UserName::new(&line(input, "Chat with: ")?) {
        Ok(peer) => peer,
        Err(err) => {
            say!("{err}");
            return Ok(());
        }
    };
    say!("Chatting with {peer}: text to send a message, image to send a picture, 0 to go back.");
    compose(input, tx, &Chat::Direct(peer.clone()), peer.as_str())
}

/// The `text` / `image` / `0` loop of a chat room, for a person or a group.
pub(super) fn compose(
    input: &mut Input,
    tx: &mpsc::Sender<Cmd>,
    chat: &Chat,
    label: &str,
) -> Flow<()> {
    loop {
        match line(input, &format!("[{label}] text/image/0: "))?.as_str() {
            "0" => return Ok(()),
            "text" => {
                let text = line(input, "Message: ")?;
                if text.is_empty() {
                    continue;
                }
                let sent = ask(tx, |reply| Cmd::Send {
                    to: chat.clone(),
                    text,
                    reply,
                })?;
                report(input, tx, sent)?;
            }
            "image" => {
                let path = line(input, "Path to image: ")?;
                if path.is_empty() {
                    continue;
                }
                let sent = ask(tx, |reply| Cmd::SendImage {
                    to: chat.clone(),
                    path: path.into(),
                    reply,
                })?;
                report(input, tx, sent)?;
            }
            "" => {}
            other => say!("Type text, image or 0 (not {other:?})."),
        }
    }
}

/// Says how a send went; after a key change, offers to trust the new keys.
fn report(
    input: &mut Input,
    tx: &mpsc::Sender<Cmd>,
    sent: Result<Vec<String>, SendError>,
) -> Flow<()> {
    match sent {
        Ok(warnings) => {
            warnings.iter().for_each(|w| say!("{w}"));
            say!("(sent)");
        }
        Err(SendError::Other(why)) => say!("Not sent: {why}"),
        Err(SendError::KeyChanged { user, why }) => {
            say!("Not sent: {why}");
            if line(input, &format!("Trust the new keys of {user}? (yes/no): "))? == "yes" {
                match ask(tx, |reply| Cmd::Accept {
                    user: user.clone(),
                    reply,
                })? {
                    Ok(()) => say!("Now trusting {user}'s new keys; send again."),
                    Err(why) => say!("{why}"),
                }
            }
        }
    }
    Ok(())
}
