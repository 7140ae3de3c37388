//! The script subcommands (`register`, `send`, `recv`, `users`, `keys`) and what they share
//! with the interactive program: finding the data directory, connecting, reading the
//! password.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quip_cli::e2e::DEFAULT_KEY_BITS;
use quip_cli::{Chat, Client, ClientError, ConnectError, Connection, Incoming};
use quip_proto::Action;
use quip_proto::ErrorCode;
use quip_proto::group::MemberRole;
use quip_proto::ids::UserName;
use quip_quic::{KnownCas, Trust};

use crate::args::{Cli, Command, GroupAction, KeysAction, ServerArgs, UserArgs};

/// Everything needed to reach the server and find local files.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) server: ServerArgs,
    pub(crate) root: PathBuf,
}

impl Target {
    pub(crate) fn new(server: ServerArgs) -> anyhow::Result<Self> {
        let root = match &server.data_dir {
            Some(dir) => dir.clone(),
            None => directories::ProjectDirs::from("", "", "quip")
                .context("cannot find a home directory; pass --data-dir")?
                .data_dir()
                .to_owned(),
        };
        quip_cli::e2e::private_root(&root)
            .with_context(|| format!("cannot create the data directory {}", root.display()))?;
        Ok(Self { server, root })
    }

    /// The key the account's files and the CA pin are stored under: the cluster's master,
    /// or the node when connecting directly.
    pub(crate) fn server_key(&self) -> String {
        match self.server.node {
            Some(node) => node.to_string(),
            None => self.server.master.to_string(),
        }
    }

    pub(crate) fn user_dir(&self, user: &UserName) -> PathBuf {
        quip_cli::user_dir(&self.root, &self.server_key(), user)
    }

    pub(crate) async fn connect(&self) -> Result<Connection, ConnectError> {
        let trust = match &self.server.ca {
            Some(path) => Trust::from_ca_file(path)?,
            None => Trust::Pinned {
                known: KnownCas::new(self.root.join("known_cas")),
                addr: self.server_key(),
            },
        };
        match self.server.node {
            Some(node) => Connection::connect(node, quip_quic::names::NODE, &trust).await,
            None => Connection::via_master(self.server.master, &trust).await,
        }
    }
}

/// The password from `QUIP_PASSWORD`, or a prompt that does not echo.
pub(crate) fn password(prompt: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("QUIP_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password(prompt).context("cannot read the password")
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let target = Target::new(cli.server)?;
    match cli.command {
        Command::Connect => crate::ui::run(target).await,
        Command::Register(UserArgs { user }) => {
            let pw = password("Password: ")?;
            quip_cli::e2e::check_strength(&user, &pw)?;
            let client = Client::signup(
                target.connect().await?,
                &target.user_dir(&user),
                &user,
                &pw,
                DEFAULT_KEY_BITS,
            )
            .await?;
            say!(
                "registered {}; key fingerprint {}",
                client.me(),
                client.fingerprint()
            );
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            who,
            to,
            text,
            image,
        } => {
            let mut client = login(&target, &who.user).await?;
            match (text, image) {
                (Some(text), _) => {
                    client.send_text(&to, &text).await?;
                }
                (None, Some(path)) => {
                    client
                        .send_image(&to, &path, &mut crate::progress::bar("sending"))
                        .await?;
                }
                (None, None) => anyhow::bail!("nothing to send: pass --text or --image"),
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recv { who, wait } => {
            let mut client = login(&target, &who.user).await?;
            client.on_progress(Box::new(crate::progress::bar("receiving")));
            let wait = Duration::from_secs_f64(wait.clamp(0.0, 86_400.0));
            while let Some(incoming) = client.next_within(wait).await {
                match incoming {
                    Incoming::Message(_)
                    | Incoming::Image(_)
                    | Incoming::GroupChanged(_)
                    | Incoming::Expired { .. } => {
                        say!("{}", crate::ui::render(&client, &incoming))
                    }
                    Incoming::Rejected { from, reason } => {
                        complain!("refused a message from {from}: {reason}")
                    }
                    Incoming::Held(err) => complain!("{err}"),
                    Incoming::Reconnect { .. } | Incoming::Closed(_) => break,
                }
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(UserArgs { user }) => {
            let client = login(&target, &user).await?;
            for presence in client.users().await? {
                let state = if presence.online { "online" } else { "offline" };
                say!("{} {state}", presence.user);
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Group { who, action } => {
            let mut client = login(&target, &who.user).await?;
            group(&mut client, action).await?;
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { who, action } => {
            let mut client = login(&target, &who.user).await?;
            match action {
                KeysAction::Show => say!("{}", client.fingerprint()),
                KeysAction::Fingerprint { peer } => {
                    say!("{}", client.safety_number(&peer).await?)
                }
                KeysAction::Accept { peer } => {
                    client.accept_keys(&peer).await?;
                    say!("now trusting the current keys of {peer}");
                }
            }
            client.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn group(client: &mut Client, action: GroupAction) -> anyhow::Result<()> {
    let change = |group: String, action: Action| (group, action);
    let (group, action) = match action {
        GroupAction::Create { name, members } => {
            client.create_group(&name, &members).await?;
            say!("created {name}");
            return Ok(());
        }
        GroupAction::List => {
            for summary in client.groups().await? {
                let verified = client.verify_group(&summary.id).await?;
                say!(
                    "{} (by {}, epoch {})",
                    summary.name,
                    summary.creator,
                    verified.state.epoch
                );
                for (member, role) in &verified.state.members {
                    let role = match role {
                        MemberRole::Admin => "admin",
                        MemberRole::Member => "member",
                    };
                    say!("  {member} {role}");
                }
                for user in &verified.unproven {
                    say!("  {user} UNPROVEN (listed by the server, not signed by an admin)");
                }
            }
            return Ok(());
        }
        GroupAction::Send { group, text, image } => {
            let id = client.group_named(&group).await?.id;
            let sent = match (text, image) {
                (Some(text), _) => client.send_text_to(&Chat::Group(id), &text).await?,
                (None, Some(path)) => {
                    let mut bar = crate::progress::bar("sending");
                    client
                        .send_image_to(&Chat::Group(id), &path, &mut bar)
                        .await?
                }
                (None, None) => anyhow::bail!("nothing to send: pass --text or --image"),
            };
            sent.left_out.iter().for_each(|w| complain!("{w}"));
            return Ok(());
        }
        GroupAction::Add { group, user } => change(group, Action::Add(user)),
        GroupAction::Remove { group, user } => change(group, Action::Remove(user)),
        GroupAction::Promote { group, user } => change(group, Action::Promote(user)),
        GroupAction::Demote { group, user } => change(group, Action::Demote(user)),
        GroupAction::Leave { group, successor } => {
            if let Some(successor) = successor {
                let id = client.group_named(&group).await?.id;
                client.change_group(&id, Action::Promote(successor)).await?;
            }
            change(group, Action::Leave)
        }
    };
    let id = client.group_named(&group).await?.id;
    client.change_group(&id, action).await?;
    Ok(())
}

async fn login(target: &Target, user: &UserName) -> anyhow::Result<Client> {
    let pw = password("Password: ")?;
    let conn = target.connect().await?;
    let client = Client::login(conn, &target.user_dir(user), user, &pw).await?;
    client.notices().iter().for_each(|n| complain!("quip: {n}"));
    Ok(client)
}

/// Whether the error is "no node is alive".
pub(crate) fn no_service(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<ConnectError>(),
        Some(ConnectError::NoService)
    ) || matches!(
        err.downcast_ref::<ClientError>(),
        Some(ClientError::Connect(ConnectError::NoService))
    )
}

/// The exit code documented in `quip --help` for an error.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    let connect = err
        .downcast_ref::<ClientError>()
        .and_then(|e| match e {
            ClientError::Connect(c) => Some(c),
            ClientError::KeyChanged { .. } => None,
            _ => None,
        })
        .or_else(|| err.downcast_ref::<ConnectError>());
    if matches!(
        err.downcast_ref::<ClientError>(),
        Some(ClientError::KeyChanged { .. })
    ) {
        return 5;
    }
    match connect {
        Some(ConnectError::Refused { code, .. }) => match code {
            ErrorCode::InvalidCredentials
            | ErrorCode::Throttled
            | ErrorCode::UserExists
            | ErrorCode::SessionExpired => 3,
            ErrorCode::NoService | ErrorCode::Busy | ErrorCode::RateLimited => 4,
            _ => 6,
        },
        Some(
            ConnectError::Unreachable { .. } | ConnectError::Lost(_) | ConnectError::NoService,
        ) => 4,
        _ => 1,
    }
}
