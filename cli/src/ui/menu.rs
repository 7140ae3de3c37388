//! The prompt flow of the original program: LOGIN/SIGNUP, the user list, the menu, personal
//! chat. Runs on a blocking thread; talks to the connection through the actor.

use std::process::ExitCode;

use quip_proto::ids::UserName;
use tokio::sync::{mpsc, oneshot};

use super::EXIT;
use super::actor::{Cmd, SendError};
use super::input::{Eof, Input};

/// Leaving the program: `@#@EXIT@#@`, Ctrl-D, or the connection is gone.
struct Leave;

impl From<Eof> for Leave {
    fn from(_: Eof) -> Self {
        Leave
    }
}

type Flow<T> = Result<T, Leave>;

fn ask<T>(tx: &mpsc::Sender<Cmd>, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Flow<T> {
    let (reply, answer) = oneshot::channel();
    tx.blocking_send(make(reply)).map_err(|_| Leave)?;
    answer.blocking_recv().map_err(|_| Leave)
}

/// A line, where `@#@EXIT@#@` leaves.
fn line(input: &mut Input, prompt: &str) -> Flow<String> {
    let line = input.line(prompt)?;
    if line == EXIT { Err(Leave) } else { Ok(line) }
}

pub(crate) fn run(input: &mut Input, tx: mpsc::Sender<Cmd>) -> ExitCode {
    match session(input, &tx) {
        Ok(()) | Err(Leave) => {
            println!("Bye.");
            ExitCode::SUCCESS
        }
    }
}

fn session(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    let me = authenticate(input, tx)?;
    println!("Welcome, {me}.");
    show_users(tx)?;
    loop {
        println!("1 personal chat | 2 create group | 3 group chat | {EXIT} to leave");
        match line(input, "> ")?.as_str() {
            "1" => personal_chat(input, tx)?,
            "2" | "3" => println!("Groups are not available on this server yet."),
            "" => {}
            other => println!("Unknown choice {other:?}."),
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
                println!("Type LOGIN or SIGNUP.");
                continue;
            }
        };
        let user = match UserName::new(&line(input, "Username: ")?) {
            Ok(user) => user,
            Err(err) => {
                println!("{err}");
                continue;
            }
        };
        let password = input.secret("Password: ")?;
        if signup {
            let again = input.secret("Repeat password: ")?;
            if again != password {
                println!("The passwords differ.");
                continue;
            }
            println!("Creating your keys…");
        }
        match ask(tx, |reply| Cmd::Auth {
            signup,
            user: user.clone(),
            password,
            reply,
        })? {
            Ok(()) => return Ok(user),
            Err(why) => println!("{why}"),
        }
    }
}

fn show_users(tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    match ask(tx, Cmd::Users)? {
        Ok(users) => {
            println!("Users:");
            for p in users {
                println!(
                    "  {} ({})",
                    p.user,
                    if p.online { "online" } else { "offline" }
                );
            }
            println!("Groups: none");
        }
        Err(why) => println!("Cannot list users: {why}"),
    }
    Ok(())
}

fn personal_chat(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    let peer = match UserName::new(&line(input, "Chat with: ")?) {
        Ok(peer) => peer,
        Err(err) => {
            println!("{err}");
            return Ok(());
        }
    };
    println!(
        "Chatting with {peer}: text to send a message, image to send a picture, 0 to go back."
    );
    loop {
        match line(input, &format!("[{peer}] text/image/0: "))?.as_str() {
            "0" => return Ok(()),
            "text" => {
                let text = line(input, "Message: ")?;
                if text.is_empty() {
                    continue;
                }
                send(input, tx, &peer, text)?;
            }
            "image" => {
                let path = line(input, "Path to image: ")?;
                if path.is_empty() {
                    continue;
                }
                let sent = ask(tx, |reply| Cmd::SendImage {
                    to: peer.clone(),
                    path: path.into(),
                    reply,
                })?;
                report(input, tx, &peer, sent)?;
            }
            "" => {}
            other => println!("Type text, image or 0 (not {other:?})."),
        }
    }
}

fn send(input: &mut Input, tx: &mpsc::Sender<Cmd>, peer: &UserName, text: String) -> Flow<()> {
    let sent = ask(tx, |reply| Cmd::Send {
        to: peer.clone(),
        text,
        reply,
    })?;
    report(input, tx, peer, sent)
}

/// Says how a send went; after a key change, offers to trust the new keys (then send again).
fn report(
    input: &mut Input,
    tx: &mpsc::Sender<Cmd>,
    peer: &UserName,
    sent: Result<(), SendError>,
) -> Flow<()> {
    match sent {
        Ok(()) => println!("(sent)"),
        Err(SendError::Other(why)) => println!("Not sent: {why}"),
        Err(SendError::KeyChanged(why)) => {
            println!("Not sent: {why}");
            if line(input, &format!("Trust the new keys of {peer}? (yes/no): "))? == "yes" {
                match ask(tx, |reply| Cmd::Accept {
                    user: peer.clone(),
                    reply,
                })? {
                    Ok(()) => println!("Now trusting {peer}'s new keys; send again."),
                    Err(why) => println!("{why}"),
                }
            }
        }
    }
    Ok(())
}
