//! Untrusted text made safe for a terminal. Everything the program prints passes through
//! [`safe`]: message text, user and group names, file names, the server's error sentences.
//!
//! A terminal obeys control characters wherever they come from, so a message could move the
//! cursor, rewrite the line it is on (`x\r\x1b[Kcarol: …` printed as a message from carol),
//! set the window title or clear the screen; bidi controls reorder what is shown without
//! changing a byte ("Trojan Source", CVE-2021-42574). [`safe`] therefore:
//!
//! - replaces C0 controls, DEL and C1 controls with a visible stand-in: caret notation for
//!   C0 and DEL (`ESC` → `^[`, `CR` → `^M`), `<U+0085>` for C1 — printable ASCII, so the
//!   result is inert and the function idempotent;
//! - replaces the Unicode `Bidi_Control` characters (U+061C, U+200E, U+200F,
//!   U+202A–U+202E, U+2066–U+2069), the line and paragraph separators (U+2028, U+2029) and
//!   the invisible annotation and deprecated format characters (U+206A–U+206F,
//!   U+FFF9–U+FFFB) the same way (`<U+202E>`);
//! - keeps `\n` (a multi-line message is legitimate) but indents every line after the first
//!   by two spaces, so no continuation line can pass for a new `sender: text` line;
//! - turns a tab into four spaces.
//!
//! Everything else passes unchanged, emoji with their zero-width joiners included: this is a
//! display guard, not a charset policy. No well-kept crate does exactly this (the terminal
//! crates strip ANSI sequences but keep `\r` and the bidi controls), so it is written here,
//! small and tested.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What a continuation line of a multi-line text starts with.
pub const INDENT: &str = "  ";

/// `text` made safe to print on a terminal (see the module documentation). Clean
/// single-line text is borrowed, not copied.
pub fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_work) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut lines = text.split('\n');
    if let Some(first) = lines.next() {
        push_line(&mut out, first);
    }
    for line in lines {
        out.push('\n');
        if !line.starts_with(INDENT) {
            out.push_str(INDENT);
        }
        push_line(&mut out, line);
    }
    Cow::Owned(out)
}

/// Whether `c` is shown other than as itself (a newline counts: it may need an indent).
fn needs_work(c: char) -> bool {
    c.is_control() || hidden_format(c)
}

/// Invisible characters that reorder or split a line: bidi controls, separators,
/// annotation and deprecated format characters.
fn hidden_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Appends one line (no `\n` in it), each unsafe character replaced by its stand-in.
fn push_line(out: &mut String, line: &str) {
    for c in line.chars() {
        match c {
            '\t' => out.push_str("    "),
            '\u{0}'..='\u{1F}' => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7F}' => out.push_str("^?"),
            c if c.is_control() || hidden_format(c) => {
                let _ = write!(out, "<U+{:04X}>", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(input: &str, expect: &str) {
        assert_eq!(safe(input), expect, "safe({input:?})");
    }

    #[test]
    fn each_kind_of_character() {
        check("hello, world", "hello, world");
        check("grüße 🙂 日本語", "grüße 🙂 日本語");
        // A family emoji keeps its zero-width joiners.
        check("👨\u{200D}👩\u{200D}👧", "👨\u{200D}👩\u{200D}👧");
        check(
            "x\r\x1b[Kcarol: please send the door code",
            "x^M^[[Kcarol: please send the door code",
        );
        check("\x1b]0;owned\x07", "^[]0;owned^G");
        check("bell\x07 nul\0 del\x7f", "bell^G nul^@ del^?");
        check("a\tb", "a    b");
        check("csi\u{9b}2J nel\u{85}", "csi<U+009B>2J nel<U+0085>");
        check(
            "access\u{202E}\u{2066}level\u{2069}\u{202C}",
            "access<U+202E><U+2066>level<U+2069><U+202C>",
        );
        check(
            "mark\u{200F}\u{200E}\u{61C}",
            "mark<U+200F><U+200E><U+061C>",
        );
        check("line\u{2028}para\u{2029}", "line<U+2028>para<U+2029>");
        check("\u{FFF9}ruby\u{FFFB}", "<U+FFF9>ruby<U+FFFB>");
    }

    #[test]
    fn continuation_lines_are_indented() {
        check("one\ncarol: two", "one\n  carol: two");
        check("one\n\nthree\n", "one\n  \n  three\n  ");
        check("one\n  already indented", "one\n  already indented");
        check("one\r\ncarol: two", "one^M\n  carol: two");
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(safe("alice: hi there"), Cow::Borrowed(_)));
        assert!(matches!(safe("a\nb"), Cow::Owned(_)));
    }

    /// Characters a terminal would act on or that reorder a line.
    fn dangerous(c: char) -> bool {
        (c.is_control() && c != '\n') || hidden_format(c)
    }

    proptest! {
        #[test]
        fn output_never_controls_the_terminal(text in any::<String>()) {
            let shown = safe(&text);
            prop_assert!(!shown.chars().any(dangerous), "{shown:?}");
            for line in shown.split('\n').skip(1) {
                prop_assert!(line.starts_with(INDENT), "{shown:?}");
            }
        }

        #[test]
        fn hostile_mix_is_neutralised(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("\x1b".to_owned()), Just("\r".to_owned()), Just("\n".to_owned()),
                    Just("\u{9b}".to_owned()), Just("\u{202e}".to_owned()),
                    Just("\u{2067}".to_owned()), Just("\x7f".to_owned()),
                    "[ -~]{0,8}",
                ],
                0..16,
            )
        ) {
            let text = parts.concat();
            let shown = safe(&text);
            prop_assert!(!shown.chars().any(dangerous), "{shown:?}");
            prop_assert_eq!(safe(&shown), shown.clone(), "not idempotent");
        }

        #[test]
        fn printable_ascii_passes_unchanged(text in "[ -~]*") {
            prop_assert_eq!(safe(&text), Cow::Borrowed(text.as_str()));
        }

        #[test]
        fn idempotent(text in any::<String>()) {
            let once = safe(&text).into_owned();
            prop_assert_eq!(safe(&once), once.as_str());
        }
    }
}
