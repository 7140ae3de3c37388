//! Quip's wire protocol, sans-IO: the messages every link speaks and the frame codec that
//! carries them. Bytes in, messages out — no tokio, no quinn, no storage.
//!
//! ## The links
//!
//! | link | ALPN | first frame | then |
//! |---|---|---|---|
//! | client → node | [`ALPN_CLIENT`] | [`StreamOpen::Control`]\([`Hello`]) | [`ClientToNode`] ⇄ [`NodeToClient`] |
//! | node → master | [`ALPN_RELAY`] | [`StreamOpen::Control`]\([`Hello`]) | [`NodeToMaster`] ⇄ [`MasterToNode`] |
//! | client → master | [`ALPN_DISCOVERY`] | [`StreamOpen::Control`]\([`Hello`]) | [`ClientToMaster`] ⇄ [`MasterToClient`] |
//!
//! Every further stream opens with a [`StreamOpen`] naming what it carries; images travel
//! as [`Chunk`] frames on their own streams. The answer to a `Hello` is a `Hello` with the
//! same version, or an error frame with [`ErrorCode::UnsupportedVersion`] and the stream
//! closes.
//!
//! ## Compatibility
//!
//! postcard encodes an enum variant by its index: variants are only ever appended, never
//! reordered or removed. The hex snapshots in `src/wire_tests.rs` pin one example of every
//! message, so an accidental change shows in review.
#![forbid(unsafe_code)]

pub mod client;
pub mod envelope;
pub mod error;
mod error_code;
pub mod frame;
pub mod group;
pub mod ids;
pub mod limits;
pub mod mls;
pub mod relay;
pub mod stream;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod wire_tests;

pub use client::{ClientToNode, Hello, NodeToClient, PublicKeys, ReqId};
pub use envelope::{ContentKind, Conversation, Delivery, Envelope, Header, Sealed, WrappedKey};
pub use error::{DecodeError, EncodeError, InvalidId};
pub use error_code::ErrorCode;
pub use group::{Action, Change, SignedChange};
pub use relay::{ClientToMaster, MasterToClient, MasterToNode, NodeToMaster};
pub use stream::{Chunk, StreamOpen};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// ALPN of the client ↔ node protocol.
pub const ALPN_CLIENT: &[u8] = b"quip/1";
/// ALPN of the node ↔ master protocol (mutual TLS).
pub const ALPN_RELAY: &[u8] = b"quip-relay/1";
/// ALPN of client ↔ master discovery.
pub const ALPN_DISCOVERY: &[u8] = b"quip-discovery/1";

impl Hello {
    /// This build's hello.
    pub fn ours(agent: &str) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            agent: agent.chars().take(limits::MAX_TEXT_FIELD).collect(),
        }
    }

    /// Whether the peer speaks our version; the error text names both.
    pub fn check_version(&self) -> Result<(), String> {
        if self.version == PROTOCOL_VERSION {
            Ok(())
        } else {
            Err(format!(
                "protocol version mismatch: peer speaks {}, this build speaks {PROTOCOL_VERSION}",
                self.version
            ))
        }
    }
}
