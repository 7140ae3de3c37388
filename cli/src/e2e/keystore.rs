//! The private keys at rest in the user's data directory: one file, `keys.pem`, holding two
//! password-encrypted PKCS#8 PEM blocks (`ENCRYPTED PRIVATE KEY`), the key-wrapping key
//! first and the signing key second.
//!
//! **Encryption.** PKCS#5 PBES2 with scrypt (N = 2^14, r = 8, p = 1, random 16-byte salt)
//! and AES-256-GCM (random nonce), so a wrong password or a damaged file is detected rather
//! than decrypting to garbage. The PBES2 *password* is the password-derived backup key in
//! hex ([`Secrets`]), not the typed password: a stolen file then costs an attacker Argon2id
//! *and* scrypt per guess, and the client derives that key at login anyway. Both
//! protect the same private keys, so sharing the secret gives nothing away.
//!
//! **One file, not two.** Both keys are replaced in one atomic rename, so a crash while
//! re-encrypting (e.g. after a password change) can never leave one key under the old
//! password and the other under the new one. The file is 0600 on unix and plaintext keys are
//! never written anywhere.

use std::path::{Path, PathBuf};

use rand::Rng;
use rsa::PrivateKey;
use rsa::pkcs8::der::asn1::OctetStringRef;
use rsa::pkcs8::der::pem::PemLabel;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::pkcs5::{EncryptionScheme, pbes2, scrypt};
use rsa::pkcs8::{
    EncodePrivateKey, EncryptedPrivateKeyInfo, EncryptedPrivateKeyInfoRef, LineEnding,
    SecretDocument,
};

use super::error::{E2eError, Result};
use super::files::{read_limited, write_atomic};
use super::identity::Identity;
use super::secrets::Secrets;

/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "keys.pem";
/// scrypt cost of the key file: log2(N), r, p (OpenSSL's defaults; 16 MiB).
const SCRYPT: (u8, u32, u32) = (14, 8, 1);
/// The most expensive scrypt parameters accepted when loading (a damaged or planted file
/// must not make us allocate gigabytes): log2(N) ≤ 20, r ≤ 16, p ≤ 4, and at most
/// [`SCRYPT_MAX_MEMORY`] together.
const SCRYPT_MAX: (u64, u16, u16) = (1 << 20, 16, 4);
/// scrypt's memory (128 · r · N bytes) allowed when loading: 4× what [`SCRYPT`] uses. Each
/// bound of [`SCRYPT_MAX`] alone still allowed N = 2^20 with r = 16, i.e. 2 GiB.
const SCRYPT_MAX_MEMORY: u64 = 64 * 1024 * 1024;
/// A key file larger than this is not one Quip wrote (two RSA-8192 keys are ~13 KB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The private keys of one account in one data directory.
#[derive(Clone, Debug)]
pub struct KeyStore {
    path: PathBuf,
}

impl KeyStore {
    /// A key store in `dir`, the per-server, per-user data directory the caller chose. Nothing
    /// is touched until [`Self::save`] or [`Self::load`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            path: dir.into().join(KEY_FILE),
        }
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a key file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Encrypts both private keys under `secrets` and replaces the key file atomically
    /// (creating the directory, 0700, if needed).
    pub fn save(&self, identity: &Identity, secrets: &Secrets) -> Result<()> {
        let password = secrets.key_file_password();
        let mut text = Zeroizing::new(String::new());
        for key in identity.private_keys() {
            text.push_str(&encrypt_pem(key, password.as_bytes())?);
        }
        write_atomic(&self.path, text.as_bytes())
    }

    /// Loads and decrypts both private keys.
    ///
    /// Errors: no file → [`E2eError::KeyFileMissing`]; not two encrypted PKCS#8 blocks as
    /// written by [`Self::save`] → [`E2eError::CorruptKeyFile`]; does not decrypt under
    /// `secrets` → [`E2eError::WrongPassword`].
    pub fn load(&self, secrets: &Secrets) -> Result<Identity> {
        let corrupt = || E2eError::CorruptKeyFile {
            path: self.path.clone(),
        };
        let bytes = read_limited(&self.path, MAX_KEY_FILE, |path| E2eError::CorruptKeyFile {
            path,
        })?
        .ok_or_else(|| E2eError::KeyFileMissing {
            path: self.path.clone(),
        })?;
        let bytes = Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt())?;
        let [encryption, signing] = pem_blocks(text).ok_or_else(corrupt)?;
        let password = secrets.key_file_password();
        let encryption = decrypt_pem(encryption, password.as_bytes(), &corrupt)?;
        let signing = decrypt_pem(signing, password.as_bytes(), &corrupt)?;
        Identity::from_private_keys(encryption, signing).map_err(|_| corrupt())
    }
}

/// One private key as an `ENCRYPTED PRIVATE KEY` PEM block.
fn encrypt_pem(key: &PrivateKey, password: &[u8]) -> Result<Zeroizing<String>> {
    let failed = |_| E2eError::Encode {
        what: "encrypted private key",
    };
    let der = key.to_pkcs8_der().map_err(|_| E2eError::Encode {
        what: "private key",
    })?;
    let mut rng = rand::rng();
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let (log_n, r, p) = SCRYPT;
    let cost = scrypt::Params::new(log_n, r, p).map_err(|_| E2eError::Encode {
        what: "scrypt parameters",
    })?;
    let params = pbes2::Parameters::scrypt_aes256gcm(cost, &salt, nonce).map_err(failed)?;
    let encrypted = params.encrypt(password, der.as_bytes()).map_err(failed)?;
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: params.into(),
        encrypted_data: OctetStringRef::new(&encrypted).map_err(|_| E2eError::Encode {
            what: "encrypted private key",
        })?,
    };
    let doc = SecretDocument::try_from(&info).map_err(|_| E2eError::Encode {
        what: "encrypted private key",
    })?;
    doc.to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF)
        .map_err(|_| E2eError::Encode {
            what: "encrypted private key",
        })
}

/// Decrypts one `ENCRYPTED PRIVATE KEY` block, refusing anything but PBES2 with bounded
/// scrypt parameters before running the KDF.
fn decrypt_pem(pem: &str, password: &[u8], corrupt: &impl Fn() -> E2eError) -> Result<PrivateKey> {
    let (label, doc) = SecretDocument::from_pem(pem).map_err(|_| corrupt())?;
    if label != EncryptedPrivateKeyInfoRef::PEM_LABEL {
        return Err(corrupt());
    }
    let info = EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes()).map_err(|_| corrupt())?;
    let EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        return Err(corrupt());
    };
    let (max_n, max_r, max_p) = SCRYPT_MAX;
    match params.kdf.scrypt() {
        Some(s)
            if s.cost_parameter.is_power_of_two()
                && s.cost_parameter > 1
                && s.cost_parameter <= max_n
                && (1..=max_r).contains(&s.block_size)
                && (1..=max_p).contains(&s.parallelization)
                && s.cost_parameter
                    .saturating_mul(128 * u64::from(s.block_size))
                    <= SCRYPT_MAX_MEMORY => {}
        _ => return Err(corrupt()),
    }
    let plain = Zeroizing::new(
        info.encryption_algorithm
            .decrypt(password, info.encrypted_data.as_bytes())
            .map_err(|_| E2eError::WrongPassword)?,
    );
    Identity::private_key_from_der(&plain).map_err(|_| corrupt())
}

/// Splits the file into exactly two PEM blocks; `None` for any other shape.
fn pem_blocks(text: &str) -> Option<[&str; 2]> {
    const BEGIN: &str = "-----BEGIN ";
    let starts: Vec<usize> = text.match_indices(BEGIN).map(|(at, _)| at).collect();
    let [first, second] = starts[..] else {
        return None;
    };
    if !text[..first].trim().is_empty() {
        return None;
    }
    Some([&text[first..second], &text[second..]])
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::OnceLock;

    use super::*;
    use crate::e2e::fixtures::{alice, alice_secrets};

    /// A fresh directory holding Alice's saved keys. scrypt is slow in a debug build, so the
    /// file is made once and copied.
    fn saved() -> (tempfile::TempDir, KeyStore) {
        static FILE: OnceLock<Vec<u8>> = OnceLock::new();
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("server/alice"));
        assert!(!store.exists());
        let bytes = FILE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = KeyStore::new(dir.path());
            store.save(alice(), alice_secrets()).unwrap();
            fs::read(store.path()).unwrap()
        });
        write_atomic(store.path(), bytes).unwrap();
        (dir, store)
    }

    #[test]
    fn save_then_load() {
        let (_dir, store) = saved();
        assert!(store.exists());
        let loaded = store.load(alice_secrets()).unwrap();
        assert_eq!(loaded.public_keys(), alice().public_keys());
        // Saving again (e.g. after a password change) replaces the file.
        let other = Secrets::from_raw([1; 32], [2; 32]);
        store.save(alice(), &other).unwrap();
        assert_eq!(
            store.load(&other).unwrap().public_keys(),
            alice().public_keys()
        );
    }

    #[test]
    fn only_encrypted_keys_on_disk_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("server/alice"));
        store.save(alice(), alice_secrets()).unwrap();
        let text = fs::read_to_string(store.path()).unwrap();
        assert_eq!(
            text.matches("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                .count(),
            2,
            "{text}"
        );
        assert!(!text.contains("BEGIN PRIVATE KEY"), "{text}");
        assert!(!text.contains("BEGIN RSA PRIVATE KEY"), "{text}");
        // Not even a line of the unencrypted encoding appears.
        for key in alice().private_keys() {
            let plain = key.to_pkcs8_pem(LineEnding::LF).unwrap();
            for line in plain.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!text.contains(line), "plaintext line {line:?} on disk");
            }
        }
        // Nothing else (no temporary or plaintext file) beside it.
        let names: Vec<_> = fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [KEY_FILE]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn wrong_password() {
        let (_dir, store) = saved();
        let wrong = Secrets::from_raw(*alice_secrets().login(), [9; 32]);
        let err = store.load(&wrong).unwrap_err();
        assert!(matches!(err, E2eError::WrongPassword), "{err:?}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let err = store.load(alice_secrets()).unwrap_err();
        match &err {
            E2eError::KeyFileMissing { path } => assert_eq!(path, store.path()),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(KEY_FILE), "{err}");
    }

    #[test]
    fn corrupt_files() {
        let (_dir, store) = saved();
        let good = fs::read_to_string(store.path()).unwrap();
        let blocks = pem_blocks(&good).unwrap();
        let plain = alice().private_keys()[0]
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        // Each block's base64 body, with one character changed in the middle.
        let mut flipped = good.clone().into_bytes();
        let middle = blocks[0].len() / 2;
        flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("not utf-8", vec![0xff, 0xfe, 0x00]),
            ("garbage", b"hello".to_vec()),
            ("one block", blocks[0].as_bytes().to_vec()),
            (
                "three blocks",
                [good.as_str(), blocks[1]].concat().into_bytes(),
            ),
            (
                "text before",
                ["junk\n", good.as_str()].concat().into_bytes(),
            ),
            ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
            (
                "unencrypted",
                [plain.as_str(), plain.as_str()].concat().into_bytes(),
            ),
            ("too large", vec![b'A'; MAX_KEY_FILE as usize + 1]),
        ];
        for (what, bytes) in cases {
            fs::write(store.path(), &bytes).unwrap();
            let err = store.load(alice_secrets()).unwrap_err();
            assert!(
                matches!(err, E2eError::CorruptKeyFile { .. }),
                "{what}: {err:?}"
            );
        }
        // A changed ciphertext byte is caught by AES-GCM (indistinguishable from a wrong
        // password) or breaks the DER; either way it does not load.
        fs::write(store.path(), &flipped).unwrap();
        let err = store.load(alice_secrets()).unwrap_err();
        assert!(
            matches!(
                err,
                E2eError::CorruptKeyFile { .. } | E2eError::WrongPassword
            ),
            "{err:?}"
        );
    }

    /// A key file of two blocks asking for scrypt with these parameters. Encrypting would
    /// run the KDF, so any bytes serve as the ciphertext.
    fn planted(log_n: u8, r: u32, p: u32) -> String {
        let cost = scrypt::Params::new(log_n, r, p).unwrap();
        let params = pbes2::Parameters::scrypt_aes256gcm(cost, &[0; 16], [0; 12]).unwrap();
        let info = EncryptedPrivateKeyInfo {
            encryption_algorithm: params.into(),
            encrypted_data: OctetStringRef::new(&[0u8; 64]).unwrap(),
        };
        let pem = SecretDocument::try_from(&info)
            .unwrap()
            .to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF)
            .unwrap();
        [pem.as_str(), pem.as_str()].concat()
    }

    #[test]
    fn expensive_kdf_parameters_refused_before_running() {
        // A planted file asking for scrypt with N = 2^30 (1 TiB of memory), or N = 2^20 with
        // r = 16 (2 GiB, each within its own bound), must be refused without trying.
        let (_dir, store) = saved();
        for (log_n, r, p) in [(30, 8, 1), (20, 16, 1), (20, 8, 4), (17, 8, 1)] {
            fs::write(store.path(), planted(log_n, r, p)).unwrap();
            let err = store.load(alice_secrets()).unwrap_err();
            assert!(
                matches!(err, E2eError::CorruptKeyFile { .. }),
                "N = 2^{log_n}, r = {r}, p = {p}: {err:?}"
            );
        }
        // 64 MiB is still accepted: the KDF runs and the made-up ciphertext fails.
        fs::write(store.path(), planted(16, 8, 1)).unwrap();
        let err = store.load(alice_secrets()).unwrap_err();
        assert!(matches!(err, E2eError::WrongPassword), "{err:?}");
    }
}
