//! The encrypted key file (`keys.pem`): two `ENCRYPTED PRIVATE KEY` PEM blocks, PBES2 with
//! scrypt parameters bounded before the KDF runs. The input is written as the key file and
//! loaded with `KeyStore::load`, exactly as the client reads it. The seeds use the cheapest
//! scrypt parameters the loader accepts, so authentic files decrypt in microseconds and the
//! fuzzer reaches the PKCS#8 and RSA parsing behind the decryption.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_cli::e2e::{E2eError, KeyStore};

fuzz_target!(|data: &[u8]| {
    let dir = quip_fuzz::fresh_dir("keystore");
    let store = KeyStore::new(&dir);
    std::fs::write(store.path(), data).expect("write key file");
    match store.load(quip_fuzz::secrets()) {
        Ok(identity) => assert!(identity.bits() >= quip_cli::e2e::MIN_KEY_BITS),
        Err(
            E2eError::CorruptKeyFile { .. }
            | E2eError::WrongPassword
            | E2eError::KeyFileMissing { .. },
        ) => {}
        Err(other) => panic!("unexpected error loading a key file: {other}"),
    }
});
