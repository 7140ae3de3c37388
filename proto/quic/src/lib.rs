//! The async shell around the sans-IO `quip-proto` (as `quinn` is to `quinn-proto`): QUIC
//! endpoints with deliberate transport limits and enlarged socket buffers, the cluster CA and
//! its certificates, TLS 1.3 configurations that always verify the peer, and frame I/O on
//! quinn streams. Nodes, the master, the client and the testnet all connect through here,
//! so there is exactly one way to build a QUIC endpoint in Quip.

mod ca;
mod error;
mod framed;
mod limit;
mod parent;
mod pin;
pub mod tap;
mod tls;
mod transport;

pub use ca::{Certified, ClusterCa};
pub use error::{FrameError, TlsError};
pub use framed::{
    FramedRecv, FramedSend, accept_control, close, flush_then_close, open_control, open_stream,
};
pub use limit::{Budget, KeyedBudget, PerAddress, RateLimit, Seat};
pub use parent::{STOP_WITH_PARENT, parent_gone};
pub use pin::{KnownCas, PinError};
pub use tls::{Trust, client_config, server_config};
pub use transport::{Limits, client_endpoint, server_endpoint};

/// Names every cluster certificate may carry besides the node's own name, so a client that
/// connects by address (`--node 127.0.0.1:7001`) still checks the certificate's name.
pub mod names {
    /// SAN of every node certificate.
    pub const NODE: &str = "quip-node";
    /// SAN of the master certificate.
    pub const MASTER: &str = "quip-master";
}
