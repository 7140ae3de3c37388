//! Every size limit of the protocol, in one place. Decoders and servers check these *before*
//! allocating; storage refuses anything larger.

/// Largest frame body (postcard bytes after the `u32` length) on any stream.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest plaintext of one text message, in bytes. The client refuses a longer text before
/// sealing it.
pub const MAX_TEXT: usize = 64 * 1024;
/// Largest sealed part of an envelope *as encoded* (postcard bytes of header + ciphertext +
/// signature): the one limit the node checks where an envelope enters and storage checks
/// before writing. Any text of at most [`MAX_TEXT`] bytes seals to at most this (checked at
/// compile time below, and by a test that encodes the largest possible envelope).
pub const MAX_SEALED: usize = 128 * 1024;
/// Largest wrapped content key: RSA-8192 ciphertext.
pub const MAX_WRAPPED_KEY: usize = 1024;
/// Largest public key (SPKI DER of RSA-8192 is ~1.1 KB).
pub const MAX_PUBLIC_KEY: usize = 2048;
/// Largest encrypted key backup (two PKCS#8 RSA-8192 keys plus framing).
pub const MAX_KEY_BACKUP: usize = 16 * 1024;
/// Largest signature (RSA-8192).
pub const MAX_SIGNATURE: usize = 1024;
/// Most recipients of one envelope (a group's members, the sender included).
pub const MAX_RECIPIENTS: usize = 1024;
/// Most members of one group.
pub const MAX_GROUP_MEMBERS: usize = MAX_RECIPIENTS;
/// Largest ciphertext chunk of an image stream.
pub const MAX_BLOB_CHUNK: usize = 64 * 1024 + 64;
/// Default largest image (ciphertext) a node accepts; nodes may configure it.
pub const DEFAULT_MAX_IMAGE: u64 = 25 * 1024 * 1024;
/// Longest login secret (the client sends 32 bytes; bcrypt itself stops at 72).
pub const MAX_LOGIN_SECRET: usize = 64;
/// Longest free-text field (error messages, reasons, client names).
pub const MAX_TEXT_FIELD: usize = 512;
/// Most entries in one page of a list answer (users, groups). A page of the largest entries
/// (a group summary is at most ~320 bytes) stays under half a frame.
pub const MAX_LIST_PAGE: usize = 1000;
/// Most bytes of signed chain links in one `Group` answer (half a frame; the members list,
/// bounded by [`MAX_GROUP_MEMBERS`], and the rest fit in the other half).
pub const MAX_CHAIN_PAGE_BYTES: usize = MAX_FRAME / 2;

/// Largest MLS message (application, proposal or commit) in a group's log.
pub const MAX_MLS_MESSAGE: usize = MAX_SEALED;
/// Largest Welcome (it carries the group's ratchet tree) or group info; both leave room for
/// the rest of their frame.
pub const MAX_WELCOME: usize = MAX_FRAME - 16 * 1024;
/// Largest key package.
pub const MAX_KEY_PACKAGE: usize = 16 * 1024;
/// Most key packages one `PublishKeyPackages` carries.
pub const MAX_KEY_PACKAGE_UPLOAD: usize = 32;
/// Most devices a user has.
pub const MAX_DEVICES: usize = 16;
/// Most bytes of a ratchet tree in one `GroupState` answer (the rest in further pages).
pub const MAX_TREE_PAGE: usize = MAX_FRAME / 2;
/// Most bytes of values in one `PutDeviceState` or `DeviceState` (each value fits too).
pub const MAX_STATE_UPLOAD: usize = MAX_FRAME / 2;
/// Longest id of a device-state entry.
pub const MAX_STATE_ID: usize = 64;
/// Most entries of a group's log in one delivery.
pub const MAX_LOG_BATCH: usize = 256;

/// AES-GCM nonce and tag around a sealed plaintext.
pub const SEAL_OVERHEAD: usize = 12 + 16;
/// An upper bound of the encoded header: id, sender, a group conversation, kind, time, and
/// [`MAX_RECIPIENTS`] names of the longest length, each with its length prefix, plus the
/// length prefixes of the three fields of a sealed part.
pub const MAX_HEADER: usize = 16
    + (1 + crate::ids::USER_NAME_MAX)
    + (1 + 16 + 10)
    + (1 + 16 + 10)
    + 10
    + 5
    + MAX_RECIPIENTS * (1 + crate::ids::USER_NAME_MAX)
    + 3 * 5;

const _: () = assert!(
    MAX_HEADER + MAX_TEXT + SEAL_OVERHEAD + MAX_SIGNATURE <= MAX_SEALED,
    "a MAX_TEXT text must always seal within MAX_SEALED"
);
