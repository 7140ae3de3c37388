//! A device's MLS credential: an MLS `BasicCredential` whose identity is a
//! [`DeviceCredential`] — user, device id and the user's *account key* signature over the
//! device's MLS signature key. Whoever checks it against the account key (the node against the
//! registered one, a client against the pinned one) knows the device was enrolled by the
//! account's owner: neither a server nor a member can slip in a device of its own.

use openmls::prelude::{BasicCredential, Credential, CredentialType};
use quip_proto::ids::{DeviceId, UserName};
use quip_proto::limits::MAX_SIGNATURE;
use serde::{Deserialize, Serialize};

use crate::Refusal;

/// Domain separation for the account key's signature over a device.
const LABEL: &[u8] = b"quip/2 device\0";

/// Largest encoded [`DeviceCredential`] accepted.
pub const MAX_CREDENTIAL: usize = 64 + 16 + MAX_SIGNATURE;

/// Who a leaf is, and the account key's word for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredential {
    /// The user the device belongs to.
    pub user: UserName,
    /// The device.
    pub device: DeviceId,
    /// RSA-PSS-SHA256 by the user's account key over [`DeviceCredential::signed_bytes`].
    pub account_signature: Vec<u8>,
}

impl DeviceCredential {
    /// What the account key signs: a label, the user, the device and the device's MLS
    /// signature key (length-prefixed, so no two inputs share an encoding).
    pub fn signed_bytes(user: &UserName, device: DeviceId, signature_key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(LABEL.len() + 64 + signature_key.len());
        out.extend_from_slice(LABEL);
        out.push(user.as_str().len() as u8);
        out.extend_from_slice(user.as_str().as_bytes());
        out.extend_from_slice(&device.0.to_be_bytes());
        out.extend_from_slice(&(signature_key.len() as u16).to_be_bytes());
        out.extend_from_slice(signature_key);
        out
    }

    /// The MLS credential carrying this.
    pub fn to_credential(&self) -> Credential {
        let identity = postcard::to_stdvec(self).expect("a credential always encodes");
        BasicCredential::new(identity).into()
    }

    /// Reads the device credential out of an MLS credential.
    pub fn from_credential(credential: &Credential) -> Result<Self, Refusal> {
        if credential.credential_type() != CredentialType::Basic {
            return Err(Refusal::Credential("not a basic credential".into()));
        }
        Self::from_identity(credential.serialized_content())
    }

    /// Reads a device credential from its encoded form (an MLS credential's identity, or
    /// what `EnrollDevice` carries).
    pub fn from_identity(identity: &[u8]) -> Result<Self, Refusal> {
        if identity.len() > MAX_CREDENTIAL {
            return Err(Refusal::Credential(format!(
                "identity of {} bytes is over the limit of {MAX_CREDENTIAL}",
                identity.len()
            )));
        }
        let (me, rest) = postcard::take_from_bytes::<Self>(identity)
            .map_err(|e| Refusal::Credential(format!("unreadable identity: {e}")))?;
        if !rest.is_empty() {
            return Err(Refusal::Credential(
                "trailing bytes after the identity".into(),
            ));
        }
        Ok(me)
    }

    /// Checks the account signature over this device and `signature_key` with the user's
    /// account key (SPKI DER).
    pub fn verify(&self, signature_key: &[u8], account_key: &[u8]) -> Result<(), Refusal> {
        let message = Self::signed_bytes(&self.user, self.device, signature_key);
        crate::account::verify(account_key, &message, &self.account_signature).map_err(|why| {
            Refusal::Credential(format!(
                "device {} of {} is not signed by {}'s account key ({why})",
                self.device, self.user, self.user
            ))
        })
    }
}
