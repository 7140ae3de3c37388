//! Two independent secrets from one password: a *login* secret the server bcrypts, and a
//! *backup* key that encrypts the private keys and never leaves the client.
//!
//! ```text
//! salt   = SHA-256(KDF_SALT_CONTEXT || SHA-256(cluster CA certificate) || user name)
//! master = Argon2id(password, salt, KDF_PARAMS) (32 bytes)
//! login  = HKDF-SHA256(salt = HKDF_SALT, ikm = master, info = "quip/2 login secret")
//! backup = HKDF-SHA256(salt = HKDF_SALT, ikm = master, info = "quip/2 backup key")
//! ```
//!
//! **Bound to the deployment.** The salt includes the fingerprint of the cluster CA the
//! client verified the server against ([`Deployment`]), so the operator of one deployment,
//! who receives the login secret, cannot use it on another: there the same name and password
//! give different secrets. A server cannot make a client derive another deployment's secrets
//! either: it would need a certificate from that deployment's CA.
//!
//! **Cost.** One Argon2id at 64 MiB ([`KDF_PARAMS`]) protects both secrets: the backup key
//! guards the encrypted private keys the server holds, so a guess against it must cost what a
//! login can afford. Weak passwords are refused at signup ([`check_strength`]).
//!
//! **Why a deterministic per-user salt is fine here.** Any device must derive the same
//! secrets from (name, password) alone, before it has talked to anyone, so the salt cannot be
//! random and stored. Deriving it from the (lowercase, unique) user name under a Quip-specific
//! prefix still gives every account on every Quip deployment its own salt, so one
//! precomputed table cannot attack many users at once; what it cannot stop is precomputation
//! aimed at one known user name, which Argon2id's memory-hard cost makes expensive. The
//! login secret is then bcrypted by the server with a *random* salt (so the stored hash is
//! salted as usual), and the backup key is never sent anywhere, so an observer of the server
//! sees nothing derived from it except ciphertext. Because the server receives 32 high-entropy
//! bytes instead of the password, bcrypt's 72-byte limit never truncates anything.
//!
//! The parameters are part of the protocol: changing [`KDF_PARAMS`] or a label changes every
//! user's login secret, so it needs a new version prefix and a migration.

use std::fmt;

use hkdf::Hkdf;
use quip_proto::ids::UserName;
use rsa::pkcs8::der::zeroize::{Zeroize, Zeroizing};
use sha2::{Digest, Sha256};

use super::error::{E2eError, Result};

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// Argon2id at 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option, one lane so
/// a client needs one core): see README for the time of one derivation.
pub const KDF_PARAMS: KdfParams = KdfParams {
    m_cost_kib: 64 * 1024,
    t_cost: 3,
    p_cost: 1,
};

/// The lowest zxcvbn score (0–4) a new password must reach: 3 is "safely unguessable:
/// moderate protection from offline slow-hash scenarios" (< 10^10 guesses is refused).
pub const MIN_PASSWORD_SCORE: u8 = 3;

/// Longest password accepted, in bytes (generous; it only bounds the work per attempt).
pub const MAX_PASSWORD: usize = 1024;

/// Domain-separation prefix of the Argon2 salt.
const KDF_SALT_CONTEXT: &[u8] = b"quip/2 kdf salt\0";
/// HKDF-Extract salt.
const HKDF_SALT: &[u8] = b"quip/2 secrets";
/// HKDF info of the login secret.
const LOGIN_INFO: &[u8] = b"quip/2 login secret";
/// HKDF info of the backup key.
const BACKUP_INFO: &[u8] = b"quip/2 backup key";

/// The Quip deployment secrets are bound to: the SHA-256 of its cluster CA certificate (the
/// one the client verified the server against; see `Connection::deployment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deployment(pub [u8; 32]);

impl Deployment {
    /// The deployment whose cluster CA certificate is `ca_der` (DER bytes).
    pub fn of_ca(ca_der: &[u8]) -> Self {
        Self(Sha256::digest(ca_der).into())
    }
}

/// Refuses a password zxcvbn rates below [`MIN_PASSWORD_SCORE`] (the user name counts as
/// something an attacker knows), saying why and what would help.
pub fn check_strength(user: &UserName, password: &str) -> Result<()> {
    let estimate = zxcvbn::zxcvbn(password, &[user.as_str(), "quip"]);
    let score = u8::from(estimate.score());
    if score >= MIN_PASSWORD_SCORE {
        return Ok(());
    }
    let mut reason = String::new();
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reason.push_str(&format!("{warning}. "));
        }
        for suggestion in feedback.suggestions() {
            reason.push_str(&format!("{suggestion} "));
        }
    }
    if reason.is_empty() {
        reason.push_str("Use a longer password with several uncommon words. ");
    }
    Err(E2eError::WeakPassword {
        score,
        reason: reason.trim_end().to_owned(),
    })
}

/// The secrets derived from a user's password. Zeroized on drop; `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    login: [u8; 32],
    backup: [u8; 32],
}

impl Secrets {
    /// Derives both secrets of `user` on `deployment` from `password` (Argon2id then HKDF;
    /// tens of milliseconds and 64 MiB, so run it off the async runtime). The same inputs
    /// always give the same secrets.
    pub fn derive(user: &UserName, password: &str, deployment: &Deployment) -> Result<Self> {
        if password.len() > MAX_PASSWORD {
            return Err(E2eError::PasswordTooLong {
                len: password.len(),
                max: MAX_PASSWORD,
            });
        }
        let salt = Sha256::new()
            .chain_update(KDF_SALT_CONTEXT)
            .chain_update(deployment.0)
            .chain_update(user.as_str().as_bytes())
            .finalize();
        let params = argon2::Params::new(
            KDF_PARAMS.m_cost_kib,
            KDF_PARAMS.t_cost,
            KDF_PARAMS.p_cost,
            Some(32),
        )
        .map_err(|_| E2eError::Encode { what: "KDF params" })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut master = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password.as_bytes(), &salt, master.as_mut())
            .map_err(|_| E2eError::Encode {
                what: "password hash",
            })?;
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), master.as_ref());
        let mut secrets = Self {
            login: [0; 32],
            backup: [0; 32],
        };
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so these cannot fail.
        hkdf.expand(LOGIN_INFO, &mut secrets.login)
            .map_err(|_| E2eError::Encode {
                what: "login secret",
            })?;
        hkdf.expand(BACKUP_INFO, &mut secrets.backup)
            .map_err(|_| E2eError::Encode { what: "backup key" })?;
        Ok(secrets)
    }

    /// What the client sends to the server instead of the password (which bcrypts it).
    pub fn login(&self) -> &[u8; 32] {
        &self.login
    }

    /// The AES-256 key of the key backup. Never send it anywhere.
    pub fn backup(&self) -> &[u8; 32] {
        &self.backup
    }

    /// The password the local key files are encrypted with: the backup key in lowercase hex.
    /// Both protect the same private keys, so sharing the secret widens nothing, and the
    /// password's Argon2id cost then guards the files too.
    pub(crate) fn key_file_password(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.backup))
    }

    /// Test-only: secrets from raw bytes, skipping Argon2.
    #[cfg(test)]
    pub(crate) fn from_raw(login: [u8; 32], backup: [u8; 32]) -> Self {
        Self { login, backup }
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        self.login.zeroize();
        self.backup.zeroize();
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> UserName {
        UserName::new(raw).unwrap()
    }

    const HERE: Deployment = Deployment([1; 32]);

    #[test]
    fn deterministic_and_independent() {
        let alice = Secrets::derive(&name("alice"), "correct horse", &HERE).unwrap();
        let again = Secrets::derive(&name("Alice"), "correct horse", &HERE).unwrap();
        assert_eq!(alice, again, "same user (case-insensitive) and password");
        assert_ne!(
            alice.login(),
            alice.backup(),
            "login and backup must differ"
        );

        let other_user = Secrets::derive(&name("bob"), "correct horse", &HERE).unwrap();
        assert_ne!(alice.login(), other_user.login());
        assert_ne!(alice.backup(), other_user.backup());

        let other_password = Secrets::derive(&name("alice"), "correct horsE", &HERE).unwrap();
        assert_ne!(alice.login(), other_password.login());
        assert_ne!(alice.backup(), other_password.backup());
    }

    #[test]
    fn bound_to_the_deployment() {
        let here = Secrets::derive(&name("alice"), "correct horse", &HERE).unwrap();
        let there = Secrets::derive(&name("alice"), "correct horse", &Deployment([2; 32])).unwrap();
        assert_ne!(here.login(), there.login());
        assert_ne!(here.backup(), there.backup());
    }

    #[test]
    fn weak_passwords_refused_with_the_reason() {
        let alice = name("alice");
        for weak in ["a", "password", "alice2024", "qwertyuiop", "Alice!"] {
            match check_strength(&alice, weak) {
                Err(E2eError::WeakPassword { score, reason }) => {
                    assert!(score < MIN_PASSWORD_SCORE);
                    assert!(!reason.is_empty(), "{weak}: a reason is given");
                }
                other => panic!("{weak}: expected WeakPassword, got {other:?}"),
            }
        }
        let err = check_strength(&alice, "password").unwrap_err().to_string();
        assert!(err.contains("common password"), "{err}");
        for strong in [
            "correct horse battery staple",
            "vivid-otter-42-tangerine-loom",
        ] {
            assert!(check_strength(&alice, strong).is_ok(), "{strong}");
        }
    }

    #[test]
    fn pinned_vector() {
        // Pins the whole derivation (salt with the deployment, Argon2id parameters, HKDF
        // labels): if this changes, every existing account's login secret and backup key
        // change with it.
        let secrets = Secrets::derive(&name("alice"), "password", &HERE).unwrap();
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        insta::assert_snapshot!(
            format!("login  {}\nbackup {}", hex(secrets.login()), hex(secrets.backup())),
            @r"
        login  ec840ef2a9aa068647eee1a3bf41809b6833b440c41a22e7a3705d46a23311b1
        backup 250bdeb80fd27c93a9e41fcb60be9acb436644b5c2970dde8e94d53759034d29
        "
        );
    }

    #[test]
    fn hex_password_and_debug() {
        let secrets = Secrets::from_raw([0; 32], [0xab; 32]);
        assert_eq!(secrets.key_file_password().as_str(), "ab".repeat(32));
        assert_eq!(format!("{secrets:?}"), "Secrets(<redacted>)");
    }

    #[test]
    fn long_password_refused() {
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert!(matches!(
            Secrets::derive(&name("alice"), &long, &HERE),
            Err(E2eError::PasswordTooLong { .. })
        ));
    }
}
