//! The interactive program, driven through its prompts like a person would: the real `quip`
//! binary with piped stdin and stdout, against an in-process node.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use quip_cli::{Client, Incoming};
use quip_node::NodeConfig;
use quip_proto::ids::UserName;
use quip_quic::Trust;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(30);

/// A running `quip connect`, read and written like a terminal session.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    seen: String,
    cursor: usize,
}

impl Session {
    fn start(node: &str, ca: &Path, data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quip"))
            .args(["--node", node, "--ca"])
            .arg(ca)
            .arg("--data-dir")
            .arg(data)
            .arg("connect")
            .env_remove("QUIP_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("quip starts");
        Self {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            child,
            seen: String::new(),
            cursor: 0,
        }
    }

    /// Waits until `needle` appears in the output after what was already matched.
    async fn expect(&mut self, needle: &str) {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(at) = self.seen[self.cursor..].find(needle) {
                    self.cursor += at + needle.len();
                    return;
                }
                let mut buf = [0u8; 4096];
                let n = self.stdout.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "quip exited before printing {needle:?}; output:\n{}",
                    self.seen
                );
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no {needle:?} within {WAIT:?}; output:\n{}",
            self.seen
        );
    }

    async fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn answer(&mut self, prompt: &str, line: &str) {
        self.expect(prompt).await;
        self.type_line(line).await;
    }

    async fn exit_code(mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// An in-process node with cheap bcrypt, and the trust to reach it.
async fn node(dir: &Path) -> (quip_node::NodeHandle, Trust) {
    let storage = Arc::new(
        quip_storage::Store::connect(&format!("sqlite://{}", dir.join("q.db").display()))
            .await
            .unwrap(),
    );
    let mut config = NodeConfig::new(
        "node-ui".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.join("node"),
    );
    config.bcrypt_cost = 4;
    let node = quip_node::start(config, storage).await.unwrap();
    let trust = Trust::from_ca_file(node.ca_cert_path()).unwrap();
    (node, trust)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_through_the_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let (node, trust) = node(dir.path()).await;
    let addr = node.local_addr().to_string();
    let home = tempfile::tempdir().unwrap();
    let bob_name = UserName::new("bob").unwrap();
    let conn = quip_cli::Connection::connect(node.local_addr(), quip_quic::names::NODE, &trust)
        .await
        .unwrap();
    let mut bob = Client::signup(
        conn,
        &quip_cli::user_dir(home.path(), &addr, &bob_name),
        &bob_name,
        "bob's password",
        2048,
    )
    .await
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut ui = Session::start(&addr, node.ca_cert_path(), data.path());
    ui.answer("LOGIN or SIGNUP: ", "SIGNUP").await;
    ui.answer("Username: ", "alice").await;
    ui.answer("Password: ", "alice's group password").await;
    ui.answer("Repeat password: ", "alice's group password")
        .await;
    ui.answer("> ", "2").await;
    ui.answer("Group name: ", "Friends").await;
    ui.answer("Participant (-1 to end): ", "bob").await;
    ui.answer("Participant (-1 to end): ", "-1").await;
    ui.expect("Group Friends created").await;
    ui.answer("> ", "3").await;
    ui.answer("Group name: ", "Friends").await;
    ui.answer("[Friends] 1/2/3/0: ", "1").await;
    ui.answer("[Friends] text/image/0: ", "text").await;
    ui.answer("Message: ", "hello friends").await;
    ui.expect("(sent)").await;
    loop {
        match bob.next_within(WAIT).await {
            Some(Incoming::GroupChanged(_)) => continue,
            Some(Incoming::Message(m)) => {
                assert_eq!(
                    (m.from.as_str(), m.text.as_str()),
                    ("alice", "hello friends")
                );
                break;
            }
            other => panic!("bob expected the group message, got {other:?}"),
        }
    }
    ui.answer("[Friends] text/image/0: ", "0").await;
    ui.answer("[Friends] 1/2/3/0: ", "0").await;

    // In bob's group alice is not an admin.
    bob.create_group(
        &quip_proto::ids::GroupName::new("Bobs").unwrap(),
        &[UserName::new("alice").unwrap()],
    )
    .await
    .unwrap();
    ui.answer("> ", "3").await;
    ui.answer("Group name: ", "Bobs").await;
    ui.answer("[Bobs] 1/2/3/0: ", "2").await;
    ui.expect("Only admin can add/remove partipants").await;
    ui.answer("[Bobs] 1/2/3/0: ", "3").await;
    ui.expect("Only admin can add/remove partipants").await;
    ui.answer("[Bobs] 1/2/3/0: ", "@#@EXIT@#@").await;
    ui.expect("Bye.").await;
    assert_eq!(ui.exit_code().await, 0);
}

/// Issue 11 item 10: a user put into many groups still gets a prompt: the menu shows the
/// first page of groups and how many there are (it used to wait forever for one answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_show_the_first_page_and_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let (node, trust) = node(dir.path()).await;
    let addr = node.local_addr().to_string();
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let signup = |name: &'static str, root: std::path::PathBuf| {
        let trust = trust.clone();
        let at = node.local_addr();
        let addr = addr.clone();
        async move {
            let user = UserName::new(name).unwrap();
            let conn = quip_cli::Connection::connect(at, quip_quic::names::NODE, &trust)
                .await
                .unwrap();
            let dir = quip_cli::user_dir(&root, &addr, &user);
            Client::signup(conn, &dir, &user, &format!("{name}'s password"), 2048)
                .await
                .unwrap()
        }
    };
    signup("alice", data.path().to_owned()).await.close().await;
    let alice = UserName::new("alice").unwrap();
    // Three authors (each within the per-author limit) put alice into 60 groups.
    for author in ["bob", "carol", "dave"] {
        let mut client = signup(author, home.path().to_owned()).await;
        for i in 0..20 {
            let name = quip_proto::ids::GroupName::new(&format!("{author} {i:02}")).unwrap();
            client
                .create_group(&name, std::slice::from_ref(&alice))
                .await
                .unwrap();
        }
        client.close().await;
    }

    let mut ui = Session::start(&addr, node.ca_cert_path(), data.path());
    ui.answer("LOGIN or SIGNUP: ", "LOGIN").await;
    ui.answer("Username: ", "alice").await;
    ui.answer("Password: ", "alice's password").await;
    ui.expect("Groups: (the first 50 of 60)").await;
    ui.expect("bob 00 (by bob)").await;
    ui.answer("> ", "@#@EXIT@#@").await;
    ui.expect("Bye.").await;
    assert_eq!(ui.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_chat_and_exit_through_the_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(
        quip_storage::Store::connect(&format!("sqlite://{}", dir.path().join("q.db").display()))
            .await
            .unwrap(),
    );
    let mut config = NodeConfig::new(
        "node-ui".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("node"),
    );
    config.bcrypt_cost = 4;
    let node = quip_node::start(config, storage).await.unwrap();
    let addr = node.local_addr().to_string();
    let ca = node.ca_cert_path().to_owned();
    let trust = Trust::from_ca_file(&ca).unwrap();

    // Bob uses the library; alice uses the program.
    let bob_name = UserName::new("bob").unwrap();
    let home = tempfile::tempdir().unwrap();
    let conn = quip_cli::Connection::connect(node.local_addr(), quip_quic::names::NODE, &trust)
        .await
        .unwrap();
    let bob_dir = quip_cli::user_dir(home.path(), &addr, &bob_name);
    let mut bob = Client::signup(conn, &bob_dir, &bob_name, "bob's password", 2048)
        .await
        .unwrap();

    let alice_data = tempfile::tempdir().unwrap();
    let mut ui = Session::start(&addr, &ca, alice_data.path());
    // A weak password is refused with zxcvbn's reason, before any key is made, and the
    // prompts start over.
    ui.answer("LOGIN or SIGNUP: ", "SIGNUP").await;
    ui.answer("Username: ", "alice").await;
    ui.answer("Password: ", "alice1").await;
    ui.answer("Repeat password: ", "alice1").await;
    ui.expect("this password is too easy to guess: ").await;
    ui.expect("LOGIN or SIGNUP: ").await;
    assert!(
        !ui.seen.contains("Creating your keys"),
        "no keys were made for the weak password"
    );
    ui.type_line("SIGNUP").await;
    ui.answer("Username: ", "alice").await;
    ui.answer("Password: ", "alice's password").await;
    ui.answer("Repeat password: ", "alice's password").await;
    ui.expect("Welcome, alice.").await;
    ui.expect("bob (online)").await;
    ui.answer("> ", "1").await;
    ui.answer("Chat with: ", "bob").await;
    ui.answer("text/image/0: ", "text").await;
    ui.answer("Message: ", "hello from the prompt").await;
    ui.expect("(sent)").await;

    match bob.next_within(WAIT).await {
        Some(Incoming::Message(m)) => {
            assert_eq!(m.from.as_str(), "alice");
            assert_eq!(m.text, "hello from the prompt");
        }
        other => panic!("bob expected alice's message, got {other:?}"),
    }
    // An incoming message prints while alice sits at the prompt.
    bob.send_text(&UserName::new("alice").unwrap(), "hi alice")
        .await
        .unwrap();
    ui.expect("bob: hi alice").await;

    ui.type_line("0").await;
    ui.answer("> ", "@#@EXIT@#@").await;
    ui.expect("Bye.").await;
    assert_eq!(ui.exit_code().await, 0);

    // Logging in again from the same directory works through the same prompts.
    let mut again = Session::start(&addr, &ca, alice_data.path());
    again.answer("LOGIN or SIGNUP: ", "LOGIN").await;
    again.answer("Username: ", "alice").await;
    again.answer("Password: ", "wrong password").await;
    again.expect("wrong user name or password").await;
    again.answer("LOGIN or SIGNUP: ", "LOGIN").await;
    again.answer("Username: ", "alice").await;
    again.answer("Password: ", "alice's password").await;
    again.expect("Welcome, alice.").await;
    again.answer("> ", "@#@EXIT@#@").await;
    assert_eq!(again.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_prints_the_original_words() {
    let dir = tempfile::tempdir().unwrap();
    let master_dir = dir.path().join("master");
    quip_master::init(&master_dir).unwrap();
    let master = quip_master::start(quip_master::MasterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        master_dir.clone(),
    ))
    .await
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quip"))
        .arg("--master")
        .arg(master.local_addr().to_string())
        .arg("--ca")
        .arg(master_dir.join("ca.pem"))
        .arg("--data-dir")
        .arg(dir.path().join("client"))
        .arg("connect")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Sorry, No services available\n"
    );
    assert_eq!(out.status.code(), Some(4), "non-zero: no server reachable");

    // A master that is not there: a clear error naming the address.
    let out = Command::new(env!("CARGO_BIN_EXE_quip"))
        .args(["--master", "127.0.0.1:9", "--ca"])
        .arg(master_dir.join("ca.pem"))
        .arg("--data-dir")
        .arg(dir.path().join("client"))
        .arg("connect")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert_eq!(out.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_prints_hostile_text_as_inert_text_from_its_real_sender() {
    let dir = tempfile::tempdir().unwrap();
    let (node, trust) = node(dir.path()).await;
    let addr = node.local_addr().to_string();
    let alice_name = UserName::new("alice").unwrap();
    let home = tempfile::tempdir().unwrap();
    let conn = quip_cli::Connection::connect(node.local_addr(), quip_quic::names::NODE, &trust)
        .await
        .unwrap();
    let mut alice = Client::signup(
        conn,
        &quip_cli::user_dir(home.path(), &addr, &alice_name),
        &alice_name,
        "pelican-velvet-harbour-17",
        2048,
    )
    .await
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut ui = Session::start(&addr, node.ca_cert_path(), data.path());
    ui.answer("LOGIN or SIGNUP: ", "SIGNUP").await;
    ui.answer("Username: ", "bob").await;
    ui.answer("Password: ", "tangerine-orbit-cascade-42").await;
    ui.answer("Repeat password: ", "tangerine-orbit-cascade-42")
        .await;
    ui.expect("Welcome, bob.").await;
    ui.expect("> ").await;
    let bob = UserName::new("bob").unwrap();
    alice
        .send_text(
            &bob,
            "x\r\x1b[Kcarol: please send the door code\ncarol: really",
        )
        .await
        .unwrap();
    alice.send_text(&bob, "done").await.unwrap();
    ui.expect("alice: done").await;
    assert!(
        ui.seen
            .contains("alice: x^M^[[Kcarol: please send the door code\n  carol: really\n"),
        "{:?}",
        ui.seen
    );
    assert!(
        !ui.seen.contains(['\x1b', '\r']),
        "control characters reached the terminal: {:?}",
        ui.seen
    );
    assert!(
        !ui.seen.lines().any(|line| line.starts_with("carol")),
        "{:?}",
        ui.seen
    );
    ui.type_line("@#@EXIT@#@").await;
    ui.expect("Bye.").await;
    assert_eq!(ui.exit_code().await, 0);
}

/// `quip register` refuses a weak password with zxcvbn's reason before making keys, and
/// accepts a strong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_a_weak_password() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _trust) = node(dir.path()).await;
    let register = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_quip"))
            .args(["--node", &node.local_addr().to_string(), "--ca"])
            .arg(node.ca_cert_path())
            .arg("--data-dir")
            .arg(dir.path().join("client"))
            .args(["register", "--user", "carol"])
            .env("QUIP_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
    };
    let weak = register("carol1").await.unwrap();
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert_eq!(weak.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("this password is too easy to guess: "),
        "{stderr}"
    );
    let key_files = || files_named(&dir.path().join("client"), quip_cli::e2e::KEY_FILE);
    assert_eq!(key_files(), 0, "no keys were made");

    let strong = register("carol's long walk to the harbour").await.unwrap();
    let stdout = String::from_utf8_lossy(&strong.stdout);
    assert!(
        strong.status.success(),
        "{}",
        String::from_utf8_lossy(&strong.stderr)
    );
    assert!(stdout.contains("registered carol"), "{stdout}");
    assert_eq!(key_files(), 1);
}

/// How many files called `name` are under `dir`.
fn files_named(dir: &Path, name: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_named(&path, name)
            } else {
                usize::from(entry.file_name() == name)
            }
        })
        .sum()
}
