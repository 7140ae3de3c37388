//! Line input: rustyline on a terminal (history, and an external printer so incoming
//! messages appear above the line being typed), the same editor on piped stdin for scripts
//! and tests; passwords are read without echo on a terminal.

use std::io::IsTerminal;

use quip_cli::display::safe;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};

/// Prints a line without breaking the one being typed, made safe for the terminal first.
pub(crate) type Printer = Box<dyn FnMut(String) + Send>;

pub(crate) struct Input {
    /// rustyline on a terminal; `None` reads plain lines (piped stdin), printing prompts
    /// itself so a script or test sees them.
    editor: Option<DefaultEditor>,
}

/// The user pressed Ctrl-C or Ctrl-D, or stdin ended.
#[derive(Debug)]
pub(crate) struct Eof;

impl Input {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let editor = if std::io::stdin().is_terminal() {
            Some(DefaultEditor::new()?)
        } else {
            None
        };
        Ok(Self { editor })
    }

    pub(crate) fn printer(&mut self) -> Printer {
        if let Some(editor) = &mut self.editor
            && let Ok(mut printer) = editor.create_external_printer()
        {
            return Box::new(move |line: String| {
                let _ = printer.print(format!("{}\n", safe(&line)));
            });
        }
        Box::new(|line: String| say!("{line}"))
    }

    /// One line, trimmed.
    pub(crate) fn line(&mut self, prompt: &str) -> Result<String, Eof> {
        let prompt = safe(prompt);
        let Some(editor) = &mut self.editor else {
            return plain_line(&prompt).map(|l| l.trim().to_owned());
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                let line = line.trim().to_owned();
                if !line.is_empty() {
                    let _ = editor.add_history_entry(&line);
                }
                Ok(line)
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => Err(Eof),
            Err(_) => Err(Eof),
        }
    }

    /// A password: not echoed on a terminal, a plain line otherwise.
    pub(crate) fn secret(&mut self, prompt: &str) -> Result<String, Eof> {
        if self.editor.is_some() {
            rpassword::prompt_password(prompt).map_err(|_| Eof)
        } else {
            plain_line(prompt)
        }
    }
}

/// Prints `prompt`, reads one line from stdin (without its line ending).
fn plain_line(prompt: &str) -> Result<String, Eof> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    drop(out);
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => Err(Eof),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}
