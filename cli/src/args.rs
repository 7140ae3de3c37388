//! Command-line flags of `quip` (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use quip_proto::ids::{GroupName, UserName};

/// Quip: end-to-end encrypted chat. `quip connect` starts the interactive program; the other
/// subcommands are for scripts.
///
/// Exit codes: 0 success; 1 any other error; 2 bad usage; 3 login refused (wrong name or
/// password, throttled, name taken); 4 no server reachable; 5 a peer's keys changed (run
/// `quip keys accept`); 6 the server refused the request (e.g. unknown user).
#[derive(Debug, Parser)]
#[command(name = "quip", version, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the server is and how to trust it.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// The master that picks the least busy node for you, `HOST:PORT`.
    #[arg(
        long,
        global = true,
        env = "QUIP_MASTER",
        default_value = "127.0.0.1:7000"
    )]
    pub(crate) master: SocketAddr,
    /// Connect to this node directly instead of asking the master, `HOST:PORT`.
    #[arg(long, global = true, env = "QUIP_NODE")]
    pub(crate) node: Option<SocketAddr>,
    /// The cluster CA certificate (PEM). Without it, the CA is pinned on first use and a
    /// changed one is refused.
    #[arg(long, global = true, env = "QUIP_CA")]
    pub(crate) ca: Option<PathBuf>,
    /// Where your keys and received files live (default: the user's data directory).
    #[arg(long, global = true, env = "QUIP_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

/// Who you are, for script subcommands. The password comes from `QUIP_PASSWORD` or a
/// prompt that does not echo.
#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    /// Your user name.
    #[arg(long, short, env = "QUIP_USER")]
    pub(crate) user: UserName,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The interactive program: LOGIN or SIGNUP, then chat.
    Connect,
    /// Creates an account (new keys, saved encrypted with your password).
    Register(UserArgs),
    /// Sends a text message or an image.
    Send {
        #[command(flatten)]
        who: UserArgs,
        /// Recipient.
        #[arg(long)]
        to: UserName,
        /// The message.
        #[arg(long, required_unless_present = "image", conflicts_with = "image")]
        text: Option<String>,
        /// An image file to send (PNG, JPEG, GIF or WebP, up to 25 MiB).
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Prints messages waiting for you, one per line, then exits. Images are saved in the
    /// data directory and their path printed.
    Recv {
        #[command(flatten)]
        who: UserArgs,
        /// Keep waiting this many seconds after the last message.
        #[arg(long, default_value_t = 1.0)]
        wait: f64,
    },
    /// Lists users and whether they are online.
    Users(UserArgs),
    /// Groups: create, change membership, list with members and roles, send.
    Group {
        #[command(flatten)]
        who: UserArgs,
        #[command(subcommand)]
        action: GroupAction,
    },
    /// Key fingerprints, safety numbers, accepting changed keys.
    Keys {
        #[command(flatten)]
        who: UserArgs,
        #[command(subcommand)]
        action: KeysAction,
    },
}

/// A group is named by its name, or `name@creator` when two creators used the same name.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupAction {
    /// Creates a group with you as admin. Names are unique per creator.
    Create {
        /// The group's name.
        name: GroupName,
        /// First members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<UserName>,
    },
    /// Adds a member (admins only).
    Add {
        /// The group.
        group: String,
        /// Who.
        user: UserName,
    },
    /// Removes a member (admins only).
    Remove {
        /// The group.
        group: String,
        /// Who.
        user: UserName,
    },
    /// Makes a member an admin (admins only).
    Promote {
        /// The group.
        group: String,
        /// Who.
        user: UserName,
    },
    /// Makes an admin a plain member (admins only; not the last admin).
    Demote {
        /// The group.
        group: String,
        /// Who.
        user: UserName,
    },
    /// Leaves a group. The last admin names a successor, who is promoted first.
    Leave {
        /// The group.
        group: String,
        /// Member to make admin before leaving.
        #[arg(long)]
        successor: Option<UserName>,
    },
    /// Lists your groups with their members and roles (as the signed chain proves them).
    List,
    /// Sends a text or an image to every member.
    Send {
        /// The group.
        group: String,
        /// The message.
        #[arg(long, required_unless_present = "image", conflicts_with = "image")]
        text: Option<String>,
        /// An image file to send.
        #[arg(long)]
        image: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Prints the safety number of your conversation with USER (compare it out of band).
    Fingerprint {
        /// The other person.
        peer: UserName,
    },
    /// Trusts USER's new keys after a change.
    Accept {
        /// The person whose keys changed.
        peer: UserName,
    },
    /// Prints your own key fingerprint.
    Show,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
