//! The node's MLS crypto: hashing and signature verification, and nothing else. Every
//! operation that would need or produce a secret (AEAD, HPKE, key derivation, signing, key
//! generation) is an error, so the delivery service *cannot* decrypt or impersonate, whatever
//! code path reaches it; the crates that could (AES-GCM, HPKE, X25519) are not linked into a
//! node at all (`.ci/invariants` checks).

use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::types::{
    AeadType, Ciphersuite, CryptoError, ExporterSecret, HashType, HpkeCiphertext, HpkeConfig,
    HpkeKeyPair, KemOutput, SignatureScheme,
};
use ring::signature::{ED25519, UnparsedPublicKey};

use crate::CIPHERSUITE;

/// Verification-only crypto for the delivery service.
#[derive(Debug, Default, Clone, Copy)]
pub struct VerifyOnly;

/// What every secret-key operation answers.
const NO_SECRETS: CryptoError = CryptoError::UnsupportedAeadAlgorithm;

impl OpenMlsCrypto for VerifyOnly {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        if ciphersuite == CIPHERSUITE {
            Ok(())
        } else {
            Err(CryptoError::UnsupportedCiphersuite)
        }
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        vec![CIPHERSUITE]
    }

    fn hkdf_extract(
        &self,
        _: HashType,
        _: &[u8],
        _: &[u8],
    ) -> Result<openmls::prelude::tls_codec::SecretVLBytes, CryptoError> {
        Err(NO_SECRETS)
    }

    fn hmac(
        &self,
        _: HashType,
        _: &[u8],
        _: &[u8],
    ) -> Result<openmls::prelude::tls_codec::SecretVLBytes, CryptoError> {
        Err(NO_SECRETS)
    }

    fn hkdf_expand(
        &self,
        _: HashType,
        _: &[u8],
        _: &[u8],
        _: usize,
    ) -> Result<openmls::prelude::tls_codec::SecretVLBytes, CryptoError> {
        Err(NO_SECRETS)
    }

    fn hash(&self, hash_type: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match hash_type {
            HashType::Sha2_256 => Ok(ring::digest::digest(&ring::digest::SHA256, data)
                .as_ref()
                .to_vec()),
            _ => Err(CryptoError::UnsupportedHashAlgorithm),
        }
    }

    fn aead_encrypt(
        &self,
        _: AeadType,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        Err(NO_SECRETS)
    }

    fn aead_decrypt(
        &self,
        _: AeadType,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        Err(NO_SECRETS)
    }

    fn signature_key_gen(&self, _: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        Err(NO_SECRETS)
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if alg != SignatureScheme::ED25519 {
            return Err(CryptoError::UnsupportedSignatureScheme);
        }
        UnparsedPublicKey::new(&ED25519, pk)
            .verify(data, signature)
            .map_err(|_| CryptoError::InvalidSignature)
    }

    fn sign(&self, _: SignatureScheme, _: &[u8], _: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Err(NO_SECRETS)
    }

    fn hpke_seal(
        &self,
        _: HpkeConfig,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        Err(NO_SECRETS)
    }

    fn hpke_open(
        &self,
        _: HpkeConfig,
        _: &HpkeCiphertext,
        _: &[u8],
        _: &[u8],
        _: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        Err(NO_SECRETS)
    }

    fn hpke_setup_sender_and_export(
        &self,
        _: HpkeConfig,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        Err(NO_SECRETS)
    }

    fn hpke_setup_receiver_and_export(
        &self,
        _: HpkeConfig,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        Err(NO_SECRETS)
    }

    fn derive_hpke_keypair(&self, _: HpkeConfig, _: &[u8]) -> Result<HpkeKeyPair, CryptoError> {
        Err(NO_SECRETS)
    }
}
