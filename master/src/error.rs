//! The master's error type: setting up the cluster CA, starting the server, querying a master.

use std::net::SocketAddr;

use quip_proto::ErrorCode;

/// Something the master (or a tool talking to one) could not do.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Certificates could not be made, loaded or saved.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] quip_quic::TlsError),
    /// `init` found a cluster CA already there and will not overwrite it.
    #[error(
        "{dir} already holds a cluster CA (ca.pem); refusing to overwrite it (every node's certificate depends on it)"
    )]
    AlreadyInitialized {
        /// The directory.
        dir: String,
    },
    /// The directory has no cluster CA or master certificate yet.
    #[error(
        "{dir} has no cluster CA or master certificate ({what}); run `quip-master init --dir {dir}` first"
    )]
    NotInitialized {
        /// The directory.
        dir: String,
        /// What is missing or unreadable.
        what: String,
    },
    /// A node name or host name cannot go into a certificate.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// "node name" or "host".
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The master could not be reached (name resolution, handshake, or a closed connection).
    #[error("cannot reach the master at {addr}: {reason}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// Sending or receiving a frame failed.
    #[error("talking to the master failed: {0}")]
    Frame(#[from] quip_quic::FrameError),
    /// The master answered with an error.
    #[error("the master refused: {message} ({code:?})")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// The master's explanation.
        message: String,
    },
    /// The master answered something that does not fit the request.
    #[error("unexpected answer from the master: {0}")]
    Unexpected(String),
}
