//! The redaction of a frame's `Debug` rendering: what changes from run to run becomes a
//! numbered placeholder, so a transcript is the same on every run and machine and still shows
//! which frames carry the same message, key or ciphertext.

use std::collections::HashMap;

use super::Names;

/// Replaces what changes from run to run in a frame's `Debug` rendering with numbered
/// placeholders: ids (`<msg-1>`), byte strings by field (`<ct-1:39B>`), timestamps (`<ts>`),
/// addresses (`<addr:node-0>`). One redactor numbers a whole transcript.
#[derive(Debug)]
pub struct Redactor {
    addrs: HashMap<String, String>,
    numbers: HashMap<(&'static str, String), usize>,
    counts: HashMap<&'static str, usize>,
}

/// Fields holding a time.
const TIME_FIELDS: [&str; 4] = ["sent_at_ms", "at_ms", "expires_at_ms", "last_seen_ms"];
/// Byte strings whose length differs from run to run (DER-encoded private keys inside).
const VARIABLE_LENGTH: [&str; 1] = ["backup"];
/// The typed ids and their placeholder names.
const IDS: [(&str, &str); 3] = [
    ("MsgId(", "msg"),
    ("GroupId(", "group"),
    ("BlobId(", "blob"),
];

impl Redactor {
    /// A redactor that names the cluster's addresses.
    pub fn new(names: &Names) -> Self {
        Self {
            addrs: names
                .addrs
                .iter()
                .map(|(addr, name)| (addr.to_string(), name.clone()))
                .collect(),
            numbers: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    fn number(&mut self, kind: &'static str, value: &str) -> usize {
        let next = self.counts.get(kind).copied().unwrap_or(0) + 1;
        let n = *self.numbers.entry((kind, value.to_owned())).or_insert(next);
        if n == next {
            self.counts.insert(kind, next);
        }
        n
    }

    /// `text` with every id, byte string, timestamp and address replaced.
    pub fn redact(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len().min(4096));
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some((used, replacement)) = self.placeholder(&out, rest) {
                out.push_str(&replacement);
                rest = &rest[used..];
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// The placeholder for what starts `rest` (after `done`), and how many bytes it replaces.
    fn placeholder(&mut self, done: &str, rest: &str) -> Option<(usize, String)> {
        let field = field_before(done);
        if rest.starts_with('[') {
            return self.bytes(field, rest);
        }
        if rest.starts_with(|c: char| c.is_ascii_digit())
            && field.is_some_and(|f| TIME_FIELDS.contains(&f))
        {
            let len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            return Some((len, "<ts>".to_owned()));
        }
        if let Some(addr) = rest.strip_prefix('"') {
            let len = addr.find('"')?;
            let addr = &addr[..len];
            let (host, port) = addr.rsplit_once(':')?;
            if host.parse::<std::net::IpAddr>().is_err() || port.parse::<u16>().is_err() {
                return None;
            }
            let named = match self.addrs.get(addr) {
                Some(name) => format!("<addr:{name}>"),
                None => format!("\"{host}:<port>\""),
            };
            return Some((len + 2, named));
        }
        let boundary = !done.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        for (prefix, kind) in IDS {
            let Some(hex) = rest.strip_prefix(prefix).filter(|_| boundary) else {
                continue;
            };
            let len = hex.find(')')?;
            let hex = &hex[..len];
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let n = self.number(kind, hex);
            return Some((prefix.len() + len + 1, format!("<{kind}-{n}>")));
        }
        None
    }

    /// A list of numbers (`[1, 2, 3]`) is a byte string: named by its field, numbered by value.
    fn bytes(&mut self, field: Option<&str>, rest: &str) -> Option<(usize, String)> {
        let len = rest.find(']')?;
        let inner = &rest[1..len];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b',' || b == b' ')
        {
            return None;
        }
        let count = inner.split(',').count();
        if inner.split(", ").all(|b| b == "0") {
            return Some((len + 1, format!("<{count} zero bytes>")));
        }
        let kind = match field.unwrap_or("") {
            "encryption" | "signing" => "key",
            "secret" => "secret",
            "backup" => "backup",
            "ciphertext" => "ct",
            "signature" => "sig",
            "wrapped" | "key" => "wrapped",
            "data" => "chunk",
            "prev" => "hash",
            _ => "bytes",
        };
        let n = self.number(kind, inner);
        let placeholder = if VARIABLE_LENGTH.contains(&kind) {
            format!("<{kind}-{n}>")
        } else {
            format!("<{kind}-{n}:{count}B>")
        };
        Some((len + 1, placeholder))
    }
}

/// The field name when `done` ends with `name: `.
fn field_before(done: &str) -> Option<&str> {
    let head = done.strip_suffix(": ")?;
    let start = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    Some(&head[start..]).filter(|f| !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], expect: &[&str]) {
        let mut names = Names::default();
        names
            .addrs
            .insert("127.0.0.1:7001".parse().unwrap(), "node-0".to_owned());
        let mut redactor = Redactor::new(&names);
        let got: Vec<String> = input.iter().map(|i| redactor.redact(i)).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn ids_are_numbered_by_first_appearance() {
        check(
            &[
                "Ack { ids: [MsgId(0a0b), MsgId(ffff)] }",
                "Stored { req: 3, id: MsgId(ffff), fresh: true }",
                "GroupInfo { req: 4, group: GroupId(0a0b) }",
            ],
            &[
                "Ack { ids: [<msg-1>, <msg-2>] }",
                "Stored { req: 3, id: <msg-2>, fresh: true }",
                "GroupInfo { req: 4, group: <group-1> }",
            ],
        );
    }

    #[test]
    fn byte_strings_by_field_and_value() {
        check(
            &[
                "Sealed { ciphertext: [1, 2, 3], signature: [9, 9] }",
                "Delivery { key: [7], sealed: Sealed { ciphertext: [1, 2, 3] } }",
                "Change { prev: [0, 0, 0, 0], backup: [5, 6], data: [] }",
            ],
            &[
                "Sealed { ciphertext: <ct-1:3B>, signature: <sig-1:2B> }",
                "Delivery { key: <wrapped-1:1B>, sealed: Sealed { ciphertext: <ct-1:3B> } }",
                "Change { prev: <4 zero bytes>, backup: <backup-1>, data: [] }",
            ],
        );
    }

    #[test]
    fn times_and_addresses() {
        check(
            &[
                "Header { sent_at_ms: 1764000000000, req: 5 }",
                "Node { node: \"node-0\", addr: \"127.0.0.1:7001\" }",
                "Register { client_addr: \"127.0.0.1:9\", note: \"not: an address\" }",
            ],
            &[
                "Header { sent_at_ms: <ts>, req: 5 }",
                "Node { node: \"node-0\", addr: <addr:node-0> }",
                "Register { client_addr: \"127.0.0.1:<port>\", note: \"not: an address\" }",
            ],
        );
    }
}
