//! Quip's MLS (RFC 9420) vocabulary, sans-IO: bytes in, decisions and bytes out.
//!
//! - [`credential`]: a device's credential, signed by its user's long-term account key.
//! - [`policy`]: a group's name and admins (a group context extension) and the rules every
//!   commit must follow, checked identically by the node and by every client.
//! - [`ds`]: the node's side, a *validating delivery service*: the group's public state
//!   (openmls `PublicGroup`) and the checks every handshake and application message passes
//!   before it is stored or forwarded. It runs on [`VerifyOnly`] crypto: hashing and signature
//!   verification, nothing that needs or produces a secret.
//! - `device` (feature `device`): a device's end of its groups (private keys, encryption).
//!
//! Ciphersuite: [`CIPHERSUITE`], for every group.

pub mod account;
pub mod credential;
pub mod ds;
mod ds_store;
mod error;
pub mod policy;
mod verify_only;

#[cfg(feature = "device")]
pub mod device;

pub use error::Refusal;
pub use verify_only::VerifyOnly;

use openmls::prelude::{
    Capabilities, Ciphersuite, CredentialType, Extension, ExtensionType, ProposalType,
    RequiredCapabilitiesExtension,
};

/// The one ciphersuite every Quip group uses.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Extension type of the group policy ([`policy::GroupPolicy`]) in the group context, from
/// the range RFC 9420 leaves to private use.
pub const POLICY_EXTENSION: u16 = 0xF0A0;

/// Largest MLS message (handshake or application) a node accepts in one frame.
pub const MAX_MESSAGE: usize = quip_proto::limits::MAX_SEALED;

/// What every Quip leaf supports: the policy extension, last-resort key packages,
/// self-removal and basic credentials.
pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[
            ExtensionType::Unknown(POLICY_EXTENSION),
            ExtensionType::LastResort,
        ]),
        Some(&[ProposalType::SelfRemove]),
        Some(&[CredentialType::Basic]),
    )
}

/// The group context extension that makes every member support what [`capabilities`] lists.
pub fn required_capabilities() -> Extension {
    Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
        &[ExtensionType::Unknown(POLICY_EXTENSION)],
        &[ProposalType::SelfRemove],
        &[CredentialType::Basic],
    ))
}
