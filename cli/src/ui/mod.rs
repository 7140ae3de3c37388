//! The interactive program (`quip connect`): the prompt flow of the original, word for word
//! where it names a command, with incoming messages printed above the line being typed.
//!
//! Two halves: the prompt loop ([`menu`]) runs on a blocking thread (line editing blocks),
//! and an actor task owns the connection, so pushes are handled while the user types.

mod actor;
mod group;
mod input;
mod menu;

use std::process::ExitCode;

use tokio::sync::mpsc;

pub(crate) use actor::render;

use crate::commands::Target;

/// The word that leaves the program from any prompt.
pub(crate) const EXIT: &str = "@#@EXIT@#@";

pub(crate) async fn run(target: Target) -> anyhow::Result<ExitCode> {
    let conn = target.connect().await?;
    let mut input = input::Input::new()?;
    let printer = input.printer();
    let (tx, rx) = mpsc::channel(16);
    let actor = tokio::spawn(actor::run(target, conn, rx, printer));
    let code = tokio::task::spawn_blocking(move || menu::run(&mut input, tx)).await?;
    let _ = actor.await;
    Ok(code)
}
