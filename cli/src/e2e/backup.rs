//! The encrypted key backup the server stores, so a user can log in from any directory or
//! machine: both private keys under the password-derived backup key.
//!
//! ```text
//! backup = BACKUP_MAGIC (4) || nonce (12) || AES-256-GCM(backup key, nonce, plaintext, aad)
//! aad    = BACKUP_CONTEXT || BACKUP_MAGIC || user name
//! plaintext = postcard({ encryption: PKCS#8 DER, signing: PKCS#8 DER })
//! ```
//!
//! The AAD binds the format version and the owner, so the server cannot hand Alice's backup
//! to Bob's login (it would fail to decrypt even if their passwords matched).

use quip_proto::ids::UserName;
use quip_proto::limits::MAX_KEY_BACKUP;
use rsa::pkcs8::der::zeroize::{Zeroize, Zeroizing};
use serde::{Deserialize, Serialize};

use super::error::{E2eError, Result};
use super::identity::Identity;
use super::seal::{NONCE_LEN, TAG_LEN, aead_open, aead_seal};
use super::secrets::Secrets;

/// Format tag at the start of every backup (version 1).
pub const BACKUP_MAGIC: &[u8; 4] = b"QKB1";
/// Domain-separation prefix of the backup's associated data.
const BACKUP_CONTEXT: &[u8] = b"quip/1 key backup\0";

/// The backup's plaintext. Zeroized on drop.
#[derive(Serialize, Deserialize)]
struct BackupKeys {
    /// RSA-OAEP private key, PKCS#8 DER.
    encryption: Vec<u8>,
    /// RSA-PSS private key, PKCS#8 DER.
    signing: Vec<u8>,
}

impl Drop for BackupKeys {
    fn drop(&mut self) {
        self.encryption.zeroize();
        self.signing.zeroize();
    }
}

fn aad(user: &UserName) -> Vec<u8> {
    [BACKUP_CONTEXT, BACKUP_MAGIC, user.as_str().as_bytes()].concat()
}

/// Encrypts `identity`'s private keys for the server to store, under `secrets`' backup key
/// and bound to `user`. At most [`MAX_KEY_BACKUP`] bytes for keys up to 8192 bits.
pub fn encrypt_backup(identity: &Identity, secrets: &Secrets, user: &UserName) -> Result<Vec<u8>> {
    let [encryption, signing] = identity.to_pkcs8_der()?;
    let keys = BackupKeys {
        encryption: encryption.to_vec(),
        signing: signing.to_vec(),
    };
    let plaintext = Zeroizing::new(
        postcard::to_stdvec(&keys).map_err(|_| E2eError::Encode { what: "key backup" })?,
    );
    let sealed = aead_seal(secrets.backup(), &aad(user), &plaintext)?;
    Ok([&BACKUP_MAGIC[..], &sealed].concat())
}

/// Decrypts a backup made by [`encrypt_backup`] for `user`. A backup key that does not fit
/// (wrong password, or another user's backup) is [`E2eError::WrongPassword`]; an unknown
/// format or a damaged backup is [`E2eError::CorruptBackup`].
pub fn decrypt_backup(bytes: &[u8], secrets: &Secrets, user: &UserName) -> Result<Identity> {
    if bytes.len() > MAX_KEY_BACKUP {
        return Err(E2eError::CorruptBackup);
    }
    let sealed = bytes
        .strip_prefix(&BACKUP_MAGIC[..])
        .filter(|sealed| sealed.len() >= NONCE_LEN + TAG_LEN)
        .ok_or(E2eError::CorruptBackup)?;
    let plaintext = Zeroizing::new(aead_open(secrets.backup(), &aad(user), sealed).map_err(
        |err| match err {
            // AES-GCM cannot tell a wrong key from altered bytes; a wrong password is by far
            // the likelier reason.
            E2eError::Tampered => E2eError::WrongPassword,
            other => other,
        },
    )?);
    let keys: BackupKeys = postcard::from_bytes(&plaintext).map_err(|_| E2eError::CorruptBackup)?;
    Identity::from_pkcs8_der(&keys.encryption, &keys.signing).map_err(|_| E2eError::CorruptBackup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::fixtures;

    #[test]
    fn round_trip() {
        let (alice, secrets) = (fixtures::alice(), fixtures::alice_secrets());
        let user = fixtures::name("alice");
        let backup = encrypt_backup(alice, secrets, &user).unwrap();
        assert!(backup.starts_with(BACKUP_MAGIC));
        let restored = decrypt_backup(&backup, secrets, &user).unwrap();
        assert_eq!(restored.public_keys(), alice.public_keys());
        // A fresh nonce each time.
        assert_ne!(encrypt_backup(alice, secrets, &user).unwrap(), backup);
    }

    #[test]
    fn wrong_password_or_user_or_damage() {
        let (alice, secrets) = (fixtures::alice(), fixtures::alice_secrets());
        let user = fixtures::name("alice");
        let backup = encrypt_backup(alice, secrets, &user).unwrap();

        let wrong = Secrets::derive(&user, "not the password", &fixtures::DEPLOYMENT).unwrap();
        let err = decrypt_backup(&backup, &wrong, &user).unwrap_err();
        assert!(matches!(err, E2eError::WrongPassword), "{err:?}");

        let err = decrypt_backup(&backup, secrets, &fixtures::name("bob")).unwrap_err();
        assert!(matches!(err, E2eError::WrongPassword), "{err:?}");

        let mut flipped = backup.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = decrypt_backup(&flipped, secrets, &user).unwrap_err();
        assert!(matches!(err, E2eError::WrongPassword), "{err:?}");

        for bad in [
            &b""[..],
            b"QKB1",
            b"QKB2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            &backup[..BACKUP_MAGIC.len() + NONCE_LEN + TAG_LEN - 1],
        ] {
            let err = decrypt_backup(bad, secrets, &user).unwrap_err();
            assert!(matches!(err, E2eError::CorruptBackup), "{err:?}");
        }
        // Authentic (right key and user) but not a key pair: corrupt, not a wrong password.
        for plaintext in [&b"not postcard"[..], &[3, 1, 2, 3, 1, 4][..]] {
            let sealed = aead_seal(secrets.backup(), &aad(&user), plaintext).unwrap();
            let bytes = [&BACKUP_MAGIC[..], &sealed].concat();
            let err = decrypt_backup(&bytes, secrets, &user).unwrap_err();
            assert!(matches!(err, E2eError::CorruptBackup), "{err:?}");
        }
        let huge = vec![0u8; MAX_KEY_BACKUP + 1];
        assert!(matches!(
            decrypt_backup(&huge, secrets, &user),
            Err(E2eError::CorruptBackup)
        ));
    }

    #[test]
    fn fits_the_limit_at_3072_and_4096_bits() {
        let user = fixtures::name("alice");
        let secrets = fixtures::alice_secrets();
        let default = fixtures::default_size();
        let backup = encrypt_backup(default, secrets, &user).unwrap();
        assert!(backup.len() <= MAX_KEY_BACKUP, "{} bytes", backup.len());

        let big = fixtures::bits_4096();
        let backup = encrypt_backup(big, secrets, &user).unwrap();
        assert!(backup.len() <= MAX_KEY_BACKUP, "{} bytes", backup.len());
        let restored = decrypt_backup(&backup, secrets, &user).unwrap();
        assert_eq!(restored.bits(), 4096);
        // An 8192-bit backup is about twice the 4096-bit one and must fit as well.
        assert!(2 * backup.len() <= MAX_KEY_BACKUP, "{} bytes", backup.len());
    }
}
