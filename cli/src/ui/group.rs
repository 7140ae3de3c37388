//! The group prompts of the original: `2` creates a group (its name, then members until
//! `-1`), `3` enters a group room (`1` send, `2` add, `3` remove — admins only — `0` back).

use quip_cli::Chat;
use quip_proto::Action;
use quip_proto::ids::{GroupName, UserName};
use tokio::sync::mpsc;

use super::actor::Cmd;
use super::input::Input;
use super::menu::{Flow, ask, compose, line};

/// What the original prints when a non-admin tries to add or remove.
pub(crate) const ONLY_ADMIN: &str = "Only admin can add/remove partipants";

pub(super) fn create(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    let name = match GroupName::new(&line(input, "Group name: ")?) {
        Ok(name) => name,
        Err(err) => {
            say!("{err}");
            return Ok(());
        }
    };
    let mut members = Vec::new();
    loop {
        let entry = line(input, "Participant (-1 to end): ")?;
        if entry == "-1" {
            break;
        }
        match UserName::new(&entry) {
            Ok(user) => members.push(user),
            Err(err) => say!("{err}"),
        }
    }
    match ask(tx, |reply| Cmd::CreateGroup {
        name: name.clone(),
        members,
        reply,
    })? {
        Ok(()) => say!("Group {name} created; you are its admin."),
        Err(why) => say!("Group not created: {why}"),
    }
    Ok(())
}

pub(super) fn room(input: &mut Input, tx: &mpsc::Sender<Cmd>) -> Flow<()> {
    let name = line(input, "Group name: ")?;
    let (id, admin) = match ask(tx, |reply| Cmd::OpenGroup {
        name: name.clone(),
        reply,
    })? {
        Ok(opened) => opened,
        Err(why) => {
            say!("{why}");
            return Ok(());
        }
    };
    say!("In group {name}: 1 send, 2 add a participant, 3 remove a participant, 0 back.");
    loop {
        let action = match line(input, &format!("[{name}] 1/2/3/0: "))?.as_str() {
            "0" => return Ok(()),
            "1" => {
                compose(input, tx, &Chat::Group(id), &name)?;
                continue;
            }
            "2" | "3" if !admin => {
                say!("{ONLY_ADMIN}");
                continue;
            }
            "2" => Action::Add,
            "3" => Action::Remove,
            "" => continue,
            other => {
                say!("Type 1, 2, 3 or 0 (not {other:?}).");
                continue;
            }
        };
        let who = match UserName::new(&line(input, "Participant name: ")?) {
            Ok(who) => who,
            Err(err) => {
                say!("{err}");
                continue;
            }
        };
        match ask(tx, |reply| Cmd::ChangeGroup {
            id,
            action: action(who.clone()),
            reply,
        })? {
            Ok(()) => say!("Done."),
            Err(why) => say!("{why}"),
        }
    }
}
