//! A user's two RSA key pairs ([`Identity`]) and a peer's parsed public keys ([`PeerKeys`]).
//!
//! One pair wraps content keys (RSA-OAEP-SHA256), the other signs (RSA-PSS-SHA256); keeping
//! them apart means no key is ever used for two schemes. Public keys travel as SPKI DER in
//! [`PublicKeys`] and are parsed (and size-checked) once into [`PeerKeys`].

use std::fmt;

use quip_proto::PublicKeys;
use quip_proto::limits::MAX_PUBLIC_KEY;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};

use super::error::{E2eError, Result};

/// Modulus size of newly generated keys: 3072 bits (~128-bit security, NIST SP 800-57).
pub const DEFAULT_KEY_BITS: usize = 3072;
/// Smallest RSA modulus Quip generates or accepts from anyone.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest RSA modulus Quip generates or accepts (the wire limits are sized for it).
pub const MAX_KEY_BITS: usize = 8192;

/// The size of `key`'s modulus in bits. `n` is public, so a variable-time count is fine.
fn bits(key: &PublicKey) -> usize {
    key.n().bit_width_vartime() as usize
}

/// Refuses keys outside [`MIN_KEY_BITS`]`..=`[`MAX_KEY_BITS`].
fn check_bits(bits: usize) -> Result<()> {
    if bits < MIN_KEY_BITS {
        return Err(E2eError::WeakKey {
            bits,
            min: MIN_KEY_BITS,
        });
    }
    if bits > MAX_KEY_BITS {
        return Err(E2eError::KeyTooLarge {
            bits,
            max: MAX_KEY_BITS,
        });
    }
    Ok(())
}

/// Someone's public keys, parsed from [`PublicKeys`] and checked to be RSA keys of an
/// acceptable size. Two `PeerKeys` are equal when both keys are.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKeys {
    /// RSA-OAEP-SHA256 key-wrapping key.
    encryption: PublicKey,
    /// RSA-PSS-SHA256 verification key.
    signing: PublicKey,
}

impl PeerKeys {
    /// Parses both SPKI DER keys, refusing malformed DER, non-RSA keys and keys outside
    /// [`MIN_KEY_BITS`]`..=`[`MAX_KEY_BITS`].
    pub fn from_public(keys: &PublicKeys) -> Result<Self> {
        let parse = |der: &[u8], what| -> Result<PublicKey> {
            if der.len() > MAX_PUBLIC_KEY {
                return Err(E2eError::MalformedKey { what });
            }
            // Too small (< 1024) or too large (> 8192) moduli fail to parse in `rsa` itself.
            let key =
                PublicKey::from_public_key_der(der).map_err(|_| E2eError::MalformedKey { what })?;
            check_bits(bits(&key))?;
            Ok(key)
        };
        Ok(Self {
            encryption: parse(&keys.encryption, "encryption public key (SPKI DER)")?,
            signing: parse(&keys.signing, "signing public key (SPKI DER)")?,
        })
    }

    /// Modulus size of the key-wrapping key, in bits.
    pub fn encryption_bits(&self) -> usize {
        bits(&self.encryption)
    }

    /// Modulus size of the signing key, in bits.
    pub fn signing_bits(&self) -> usize {
        bits(&self.signing)
    }

    /// Wraps `content_key` for this peer with RSA-OAEP-SHA256.
    pub(crate) fn wrap(&self, content_key: &[u8]) -> Result<Vec<u8>> {
        self.encryption
            .oaep_encrypt::<Sha256>(content_key)
            .map_err(E2eError::crypto("OAEP wrap"))
    }

    /// Checks an RSA-PSS-SHA256 `signature` over `message`. Any failure, including a signature
    /// of the wrong length, is [`E2eError::BadSignature`].
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        if signature.len() != self.signing.size() {
            return Err(E2eError::BadSignature);
        }
        self.signing
            .pss_verify::<Sha256>(message, signature)
            .map_err(|_| E2eError::BadSignature)
    }
}

impl fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerKeys")
            .field("encryption_bits", &self.encryption_bits())
            .field("signing_bits", &self.signing_bits())
            .finish()
    }
}

/// The user's private keys: an RSA-OAEP key pair that unwraps content keys and an RSA-PSS
/// key pair that signs. Only the client ever holds it; at rest it is encrypted (see
/// [`super::KeyStore`] and [`super::encrypt_backup`]).
#[derive(Clone)]
pub struct Identity {
    encryption: PrivateKey,
    signing: PrivateKey,
    /// Both public keys, as SPKI DER (encoded once).
    public: PublicKeys,
    /// Both public keys, parsed (for sealing to oneself).
    peer: PeerKeys,
}

impl Identity {
    /// Generates two fresh key pairs of `bits` bits each ([`DEFAULT_KEY_BITS`] unless there is
    /// a reason), refusing sizes outside [`MIN_KEY_BITS`]`..=`[`MAX_KEY_BITS`]. Slow: about
    /// 0.2–2 s per 3072-bit key in an optimized build, so run it off the async runtime.
    pub fn generate(bits: usize) -> Result<Self> {
        check_bits(bits)?;
        let mut rng = rand::rng();
        let encryption =
            PrivateKey::new(&mut rng, bits).map_err(E2eError::crypto("key generation"))?;
        let signing =
            PrivateKey::new(&mut rng, bits).map_err(E2eError::crypto("key generation"))?;
        Self::from_private_keys(encryption, signing)
    }

    /// Builds an identity from two private keys, checking their sizes and encoding the public
    /// halves.
    pub(crate) fn from_private_keys(encryption: PrivateKey, signing: PrivateKey) -> Result<Self> {
        check_bits(bits(encryption.as_public_key()))?;
        check_bits(bits(signing.as_public_key()))?;
        let spki = |key: &PrivateKey| {
            key.as_public_key()
                .to_public_key_der()
                .map(|doc| doc.into_vec())
                .map_err(|_| E2eError::Encode { what: "public key" })
        };
        let public = PublicKeys {
            encryption: spki(&encryption)?,
            signing: spki(&signing)?,
        };
        let peer = PeerKeys {
            encryption: encryption.to_public_key(),
            signing: signing.to_public_key(),
        };
        Ok(Self {
            encryption,
            signing,
            public,
            peer,
        })
    }

    /// Both public keys as SPKI DER, as registered with the server.
    pub fn public_keys(&self) -> PublicKeys {
        self.public.clone()
    }

    /// Both public keys, parsed: what to pass as one's own recipient entry when sealing.
    pub fn peer_keys(&self) -> &PeerKeys {
        &self.peer
    }

    /// Modulus size of the keys, in bits (both pairs have the same size when generated here).
    pub fn bits(&self) -> usize {
        bits(self.encryption.as_public_key())
    }

    /// Signs `message` with RSA-PSS-SHA256.
    /// Enrolls a new MLS device of `user`: a fresh Ed25519 device key whose credential this
    /// account key signs (what every peer checks against its pin of this key).
    pub fn enroll_device(
        &self,
        user: quip_proto::ids::UserName,
        device: quip_proto::ids::DeviceId,
    ) -> std::result::Result<quip_mls::device::Device, quip_mls::Refusal> {
        quip_mls::device::Device::enroll(user, device, |bytes| self.sign(bytes))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.signing
            .pss_sign::<Sha256>(message)
            .map_err(E2eError::crypto("PSS sign"))
    }

    /// Unwraps a content key wrapped for us. Every failure is [`E2eError::BadWrappedKey`].
    pub(crate) fn unwrap_key(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if wrapped.len() != self.encryption.size() {
            return Err(E2eError::BadWrappedKey);
        }
        self.encryption
            .oaep_decrypt::<Sha256>(wrapped)
            .map(Zeroizing::new)
            .map_err(|_| E2eError::BadWrappedKey)
    }

    /// The two private keys as unencrypted PKCS#8 DER (encryption, signing). Zeroized on drop;
    /// only ever written to disk or the network encrypted.
    pub(crate) fn to_pkcs8_der(&self) -> Result<[Zeroizing<Vec<u8>>; 2]> {
        let der = |key: &PrivateKey| {
            key.to_pkcs8_der()
                .map(|doc| Zeroizing::new(doc.as_bytes().to_vec()))
                .map_err(|_| E2eError::Encode {
                    what: "private key",
                })
        };
        Ok([der(&self.encryption)?, der(&self.signing)?])
    }

    /// Rebuilds an identity from two unencrypted PKCS#8 DER private keys, validating both.
    pub(crate) fn from_pkcs8_der(encryption: &[u8], signing: &[u8]) -> Result<Self> {
        let parse = |der: &[u8], what| {
            PrivateKey::from_pkcs8_der(der).map_err(|_| E2eError::MalformedKey { what })
        };
        Self::from_private_keys(
            parse(encryption, "encryption private key (PKCS#8)")?,
            parse(signing, "signing private key (PKCS#8)")?,
        )
    }

    /// Loads one private key from PKCS#8 DER (for the key store, which keeps one per file).
    pub(crate) fn private_key_from_der(der: &[u8]) -> Result<PrivateKey> {
        PrivateKey::from_pkcs8_der(der).map_err(|_| E2eError::MalformedKey {
            what: "private key (PKCS#8)",
        })
    }

    /// The two private keys (encryption, signing).
    pub(crate) fn private_keys(&self) -> [&PrivateKey; 2] {
        [&self.encryption, &self.signing]
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::fixtures;

    #[test]
    fn default_size_identity() {
        let id = fixtures::default_size();
        assert_eq!(id.bits(), DEFAULT_KEY_BITS);
        let peer = PeerKeys::from_public(&id.public_keys()).unwrap();
        assert_eq!(peer.encryption_bits(), DEFAULT_KEY_BITS);
        assert_eq!(peer.signing_bits(), DEFAULT_KEY_BITS);
        assert_eq!(&peer, id.peer_keys());
        assert_ne!(id.public_keys().encryption, id.public_keys().signing);
    }

    #[test]
    fn public_keys_parse_back() {
        let alice = fixtures::alice();
        let peer = PeerKeys::from_public(&alice.public_keys()).unwrap();
        assert_eq!(&peer, alice.peer_keys());
        assert_ne!(&peer, fixtures::bob().peer_keys());
        assert_eq!(
            format!("{peer:?}"),
            "PeerKeys { encryption_bits: 2048, signing_bits: 2048 }"
        );
        assert_eq!(format!("{alice:?}"), "Identity { bits: 2048, .. }");
    }

    #[test]
    fn weak_sizes_refused() {
        for bits in [0, 512, 1024, 2047] {
            let err = Identity::generate(bits).unwrap_err();
            assert!(
                matches!(err, E2eError::WeakKey { bits: b, min: 2048 } if b == bits),
                "{err:?}"
            );
        }
        let err = Identity::generate(8193).unwrap_err();
        assert!(
            matches!(err, E2eError::KeyTooLarge { bits: 8193, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn weak_peer_key_refused() {
        // A real 1024-bit key: parses as RSA, refused for its size, in either slot.
        let weak = PrivateKey::new(&mut rand::rng(), 1024).unwrap();
        let weak_der = weak.as_public_key().to_public_key_der().unwrap().into_vec();
        let good = fixtures::alice().public_keys();
        for keys in [
            PublicKeys {
                encryption: weak_der.clone(),
                signing: good.signing.clone(),
            },
            PublicKeys {
                encryption: good.encryption.clone(),
                signing: weak_der.clone(),
            },
        ] {
            let err = PeerKeys::from_public(&keys).unwrap_err();
            assert!(
                matches!(
                    err,
                    E2eError::WeakKey {
                        bits: 1024,
                        min: 2048
                    }
                ),
                "{err:?}"
            );
        }
        // Nor can an identity be built from one.
        let err = Identity::from_private_keys(weak.clone(), weak).unwrap_err();
        assert!(
            matches!(err, E2eError::WeakKey { bits: 1024, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_peer_keys_refused() {
        let good = fixtures::alice().public_keys();
        let mut truncated = good.encryption.clone();
        truncated.truncate(truncated.len() - 1);
        let mut flipped_tag = good.signing.clone();
        flipped_tag[0] ^= 0xff;
        let cases = [
            PublicKeys {
                encryption: vec![],
                signing: good.signing.clone(),
            },
            PublicKeys {
                encryption: truncated,
                signing: good.signing.clone(),
            },
            PublicKeys {
                encryption: good.encryption.clone(),
                signing: flipped_tag,
            },
            PublicKeys {
                encryption: vec![0x30; MAX_PUBLIC_KEY + 1],
                signing: good.signing.clone(),
            },
            PublicKeys {
                encryption: b"not der at all".to_vec(),
                signing: b"x".to_vec(),
            },
        ];
        for (i, keys) in cases.iter().enumerate() {
            let err = PeerKeys::from_public(keys).unwrap_err();
            assert!(
                matches!(err, E2eError::MalformedKey { .. }),
                "case {i}: {err:?}"
            );
        }
    }

    #[test]
    fn pkcs8_round_trip() {
        let alice = fixtures::alice();
        let [enc, sig] = alice.to_pkcs8_der().unwrap();
        let back = Identity::from_pkcs8_der(&enc, &sig).unwrap();
        assert_eq!(back.public_keys(), alice.public_keys());
        let err = Identity::from_pkcs8_der(&enc[..100], &sig).unwrap_err();
        assert!(matches!(err, E2eError::MalformedKey { .. }), "{err:?}");
    }
}
