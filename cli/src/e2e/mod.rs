//! End-to-end encryption: the client-only crypto that keeps every message, image key and
//! private key away from the servers.
//!
//! ## Pieces
//!
//! | item | what it does |
//! |---|---|
//! | [`Identity`], [`PeerKeys`] | a user's two RSA key pairs (OAEP wrapping, PSS signing); a peer's parsed public keys (≥ 2048 bits) |
//! | [`seal`], [`open`] | AES-256-GCM content, OAEP-wrapped key per recipient, PSS signature over header + ciphertext |
//! | [`Secrets`] | Argon2id + HKDF: a login secret for the server, a backup key that never leaves the client |
//! | [`encrypt_backup`], [`decrypt_backup`] | the private keys under the backup key, stored by the server |
//! | [`KeyStore`] | the private keys on disk: encrypted PKCS#8 PEM, 0600, written atomically |
//! | [`PinStore`], [`fingerprint`], [`safety_number`] | trust on first use and out-of-band comparison |
//! | [`SeenIds`] | drops redelivered or replayed messages by id, across restarts |
//! | [`sign_change`], [`verify_change`] | signatures on group membership changes |
//! | [`ChainHeads`] | the highest verified point of each group's chain, so a rollback is refused |
//!
//! ## Invariants
//!
//! - A message's signature is verified with the sender's *pinned* key before any private-key
//!   operation on it ([`open`]).
//! - Every domain (AAD, message signature, KDF salt, HKDF labels, backup, fingerprints) has its
//!   own `quip/1 …` prefix, so bytes made for one purpose are never valid for another.
//! - Nothing here panics on untrusted input: envelopes, key bytes and files give an
//!   [`E2eError`].
//! - Private keys are never written unencrypted, and secrets are zeroized on drop where the
//!   libraries allow it.
//! - Primitives come from RustCrypto crates (`rsa` 0.10 with OAEP/PSS only, `aes-gcm`,
//!   `sha2`, `hkdf`, `argon2`, PKCS#5 scrypt); nothing is implemented by hand.

mod backup;
mod error;
mod files;
pub use files::private_root;
mod group;
mod heads;
mod identity;
mod image;
pub use image::{
    IMAGE_AAD_CONTEXT, IMAGE_CHUNK, ImageDecryptor, ImageEncryptor, ImageFormat, ImageInfo,
    ImageKey, inspect_image,
};
mod keystore;
mod pins;
mod seal;
mod secrets;
mod seen;
mod state;

#[cfg(test)]
pub(crate) mod fixtures;

pub use backup::{BACKUP_MAGIC, decrypt_backup, encrypt_backup};
pub use error::{E2eError, Result};
pub use group::{sign_change, verify_change};
pub use heads::{ChainHead, ChainHeads, HEADS_FILE};
pub use identity::{DEFAULT_KEY_BITS, Identity, MAX_KEY_BITS, MIN_KEY_BITS, PeerKeys};
pub use keystore::{KEY_FILE, KeyStore};
pub use pins::{PINS_FILE, Pin, PinStore, fingerprint, safety_number};
pub use seal::{AAD_CONTEXT, SIGNATURE_CONTEXT, delivery_for, open, seal};
pub use secrets::{
    Deployment, KDF_PARAMS, KdfParams, MAX_PASSWORD, MIN_PASSWORD_SCORE, Secrets, check_strength,
};
pub use seen::{DEFAULT_SEEN_CAPACITY, MAX_SEEN_CAPACITY, SEEN_FILE, SeenIds};
pub use state::StateKey;
