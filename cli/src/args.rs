//! Command-line flags of `quip` (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use quip_proto::ids::UserName;

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
    /// The node to connect to, `HOST:PORT`.
    #[arg(
        long,
        global = true,
        env = "QUIP_NODE",
        default_value = "127.0.0.1:7001"
    )]
    pub(crate) node: SocketAddr,
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
    /// Key fingerprints, safety numbers, accepting changed keys.
    Keys {
        #[command(flatten)]
        who: UserArgs,
        #[command(subcommand)]
        action: KeysAction,
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
