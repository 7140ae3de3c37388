//! The key backup the server hands back at login (`decrypt_backup`): the server is not
//! trusted, so any bytes must give a clear error. The inner postcard decoding is reached only
//! by authentic backups (AES-GCM under the user's backup key), which the seeds provide.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_cli::e2e::{E2eError, decrypt_backup};

fuzz_target!(|data: &[u8]| {
    match decrypt_backup(data, quip_fuzz::secrets(), &quip_fuzz::user()) {
        Ok(identity) => assert!(identity.bits() >= quip_cli::e2e::MIN_KEY_BITS),
        Err(E2eError::CorruptBackup | E2eError::WrongPassword) => {}
        Err(other) => panic!("unexpected error decrypting a backup: {other}"),
    }
});
