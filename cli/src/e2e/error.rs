//! [`E2eError`]: everything that can go wrong sealing, opening or storing end-to-end keys.
//!
//! Variants say *what* failed with structured fields, never a library's message text alone:
//! a user who sees `BadSignature` or `KeyChanged` must be able to tell "someone tampered" from
//! "my password is wrong" from "the file is damaged".

use std::path::PathBuf;

use quip_proto::envelope::EnvelopeError;
use quip_proto::ids::UserName;

/// Why an end-to-end operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum E2eError {
    /// The RSA-PSS signature does not verify with the sender's pinned signing key: the message
    /// (header or ciphertext) was altered, or it was not signed by that sender.
    #[error("bad signature: the message was altered or not sent by its claimed sender")]
    BadSignature,
    /// The header's recipient list does not name this user, so no key was wrapped for them.
    #[error("{user} is not a recipient of this message")]
    NotARecipient {
        /// The user who tried to open it.
        user: UserName,
    },
    /// The wrapped content key could not be unwrapped with our RSA-OAEP key: it was altered
    /// or wrapped for somebody else's key.
    #[error("the wrapped content key cannot be unwrapped with this user's key")]
    BadWrappedKey,
    /// AES-GCM authentication failed: the ciphertext or the header bound to it was altered.
    #[error("the ciphertext or its header was tampered with")]
    Tampered,
    /// An RSA key is shorter than the minimum Quip accepts.
    #[error("RSA key of {bits} bits is too weak (at least {min} required)")]
    WeakKey {
        /// The key's modulus size.
        bits: usize,
        /// The minimum accepted.
        min: usize,
    },
    /// An RSA key is longer than the largest Quip supports (and the wire limits allow).
    #[error("RSA key of {bits} bits is too large (at most {max} supported)")]
    KeyTooLarge {
        /// The key's modulus size.
        bits: usize,
        /// The maximum supported.
        max: usize,
    },
    /// Key bytes are not a valid RSA key in the expected encoding.
    #[error("malformed {what}")]
    MalformedKey {
        /// Which key or encoding, e.g. "signing public key (SPKI DER)".
        what: &'static str,
    },
    /// The password (or the secret derived from it) does not decrypt the key file or the key
    /// backup.
    #[error("wrong password: the keys cannot be decrypted")]
    WrongPassword,
    /// A key file exists but is not a password-encrypted PKCS#8 key Quip wrote.
    #[error("key file {} is corrupt", path.display())]
    CorruptKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A key file does not exist (no keys were saved in this data directory yet).
    #[error("key file {} not found", path.display())]
    KeyFileMissing {
        /// The file that was expected.
        path: PathBuf,
    },
    /// The encrypted key backup is not in a format this version understands, or was cut short.
    #[error("the key backup is corrupt or of an unknown version")]
    CorruptBackup,
    /// A local state file (pins, seen message ids) exists but cannot be understood.
    #[error("state file {} is corrupt", path.display())]
    CorruptStateFile {
        /// The file.
        path: PathBuf,
    },
    /// The user's public keys differ from the ones pinned on first use. The user must compare
    /// safety numbers and accept the new keys before messages are exchanged again.
    #[error("the keys of {user} changed since they were first seen; verify and accept them")]
    KeyChanged {
        /// Whose keys changed.
        user: UserName,
    },
    /// A password longer than Quip hashes.
    #[error("password of {len} bytes is longer than the maximum of {max}")]
    PasswordTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The password is too easy to guess (zxcvbn score below the minimum).
    #[error("this password is too easy to guess: {reason}")]
    WeakPassword {
        /// zxcvbn's score, 0–4.
        score: u8,
        /// What is wrong and what would help, from zxcvbn.
        reason: String,
    },
    /// The envelope would break a rule the servers enforce (recipient count, duplicates,
    /// sender missing, sizes), so sending it would be refused.
    #[error("invalid envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// An RSA operation that should not fail did (e.g. the random number generator failed).
    #[error("RSA {op} failed")]
    Crypto {
        /// What was being done.
        op: &'static str,
        /// The library's error.
        #[source]
        source: rsa::Error,
    },
    /// Encoding a key, a header or local state failed.
    #[error("encoding {what} failed")]
    Encode {
        /// What was being encoded.
        what: &'static str,
    },
    /// An image to send does not exist.
    #[error("image file {} not found", path.display())]
    ImageNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// An image path names a directory or another non-regular file (a device, a pipe).
    #[error("{} is {kind}, not an image file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is instead, e.g. "a directory".
        kind: &'static str,
    },
    /// An image to send is larger than the limit.
    #[error("image {} is {len} bytes, over the limit of {max} bytes", path.display())]
    ImageTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// The limit in bytes.
        max: u64,
    },
    /// An image to send is an empty file.
    #[error("image {} is empty (0 bytes)", path.display())]
    EmptyImage {
        /// The file.
        path: PathBuf,
    },
    /// A file does not start with a PNG, JPEG, GIF or WebP header whose dimensions can be read.
    #[error("{} is not a PNG, JPEG, GIF or WebP image (or its header is damaged)", path.display())]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// An image file changed (length or content) while it was being encrypted and sent.
    #[error("image {} changed while it was being sent; send it again", path.display())]
    ImageChanged {
        /// The file.
        path: PathBuf,
    },
    /// The decrypted image key of an image message is malformed or inconsistent.
    #[error("the image key in the message is malformed")]
    BadImageKey,
    /// An image stream broke its announced shape: a chunk of the wrong size, more chunks than
    /// announced, or use after an earlier failure. Nothing is kept.
    #[error("image stream rejected: {reason}")]
    ImageStream {
        /// What was wrong.
        reason: &'static str,
    },
    /// An image stream ended before its last chunk (the connection was cut, or chunks were
    /// dropped). The partial image is deleted.
    #[error(
        "image stream cut short: {received} of {expected} chunks arrived; the partial image was discarded"
    )]
    ImageTruncated {
        /// Chunks received.
        received: u32,
        /// Chunks announced.
        expected: u32,
    },
    /// A completely received image does not match what its message announced.
    #[error("the received image does not match its message: wrong {what}")]
    ImageMismatch {
        /// Which property differs: "SHA-256" or "format".
        what: &'static str,
    },
    /// Reading or writing a file in the data directory failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl E2eError {
    /// An [`E2eError::Io`] for `path`, for use with `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// An [`E2eError::Crypto`] for operation `op`, for use with `map_err`.
    pub(crate) fn crypto(op: &'static str) -> impl FnOnce(rsa::Error) -> Self {
        move |source| Self::Crypto { op, source }
    }
}

/// Result alias of the end-to-end module.
pub type Result<T, E = E2eError> = std::result::Result<T, E>;
