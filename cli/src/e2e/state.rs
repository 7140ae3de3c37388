//! The device state backup: each entry of a device's MLS state (`quip_mls` `Device::entries`)
//! sealed under a key only the password gives, stored on the node entry by entry so another
//! directory can take the device over and a change re-sends only what changed.
//!
//! entry id = SHA-256("quip/2 state id" ‖ backup key ‖ user ‖ device ‖ key): the node cannot
//! tell which openmls record an entry holds, and ids never collide across devices.
//! sealed    = AES-256-GCM(HKDF(backup key, "quip/2 device state" ‖ user ‖ device),
//!             aad = entry id, postcard((key, value)))

use hkdf::Hkdf;
use quip_proto::ids::{DeviceId, UserName};
use sha2::{Digest, Sha256};

use super::error::{E2eError, Result};
use super::seal::{aead_open, aead_seal};
use super::secrets::Secrets;

/// Seals and opens one device's state entries.
pub struct StateKey {
    id_key: [u8; 32],
    seal_key: [u8; 32],
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

impl Drop for StateKey {
    fn drop(&mut self) {
        use rsa::pkcs8::der::zeroize::Zeroize;
        self.id_key.zeroize();
        self.seal_key.zeroize();
    }
}

impl StateKey {
    /// The keys of `user`'s `device`, from the password's secrets.
    pub fn new(secrets: &Secrets, user: &UserName, device: DeviceId) -> Self {
        let context = |label: &[u8]| {
            let mut info = label.to_vec();
            info.push(user.as_str().len() as u8);
            info.extend_from_slice(user.as_str().as_bytes());
            info.extend_from_slice(&device.0.to_be_bytes());
            info
        };
        let hkdf = Hkdf::<Sha256>::new(Some(b"quip/2 device state"), secrets.backup());
        let mut seal_key = [0; 32];
        let mut id_key = [0; 32];
        // 32 bytes is far below HKDF-SHA256's limit: these cannot fail.
        let _ = hkdf.expand(&context(b"seal"), &mut seal_key);
        let _ = hkdf.expand(&context(b"id"), &mut id_key);
        Self { id_key, seal_key }
    }

    /// The id an entry with this openmls key is stored under.
    pub fn id(&self, key: &[u8]) -> Vec<u8> {
        Sha256::new()
            .chain_update(b"quip/2 state id")
            .chain_update(self.id_key)
            .chain_update(key)
            .finalize()
            .to_vec()
    }

    /// Seals one entry: (id, sealed value).
    pub fn seal(&self, key: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let id = self.id(key);
        let plain = postcard::to_stdvec(&(key, value)).map_err(|_| E2eError::Encode {
            what: "state entry",
        })?;
        Ok((id.clone(), aead_seal(&self.seal_key, &id, &plain)?))
    }

    /// Opens one entry the node returned; anything altered, moved to another id or another
    /// device's is [`E2eError::Tampered`].
    pub fn open(&self, id: &[u8], sealed: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let plain = aead_open(&self.seal_key, id, sealed)?;
        let (key, value): (Vec<u8>, Vec<u8>) =
            postcard::from_bytes(&plain).map_err(|_| E2eError::Tampered)?;
        if self.id(&key) != id {
            return Err(E2eError::Tampered);
        }
        Ok((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::fixtures::name;

    fn key(device: u64) -> StateKey {
        StateKey::new(
            &Secrets::from_raw([1; 32], [2; 32]),
            &name("alice"),
            DeviceId(device),
        )
    }

    #[test]
    fn entries_round_trip_and_refuse_any_change() {
        let k = key(1);
        let (id, sealed) = k.seal(b"openmls key", b"value").unwrap();
        assert_eq!(
            k.open(&id, &sealed).unwrap(),
            (b"openmls key".to_vec(), b"value".to_vec())
        );
        // Another entry's id, another device's key, a flipped byte: refused.
        let (other, _) = k.seal(b"another", b"x").unwrap();
        assert!(k.open(&other, &sealed).is_err());
        assert!(key(2).open(&id, &sealed).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open(&id, &bad).is_err());
        // The same key always gets the same id; the id says nothing of the key.
        assert_eq!(k.id(b"openmls key"), id);
        assert_ne!(key(2).id(b"openmls key"), id);
    }
}
