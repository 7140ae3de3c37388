//! The end-to-end envelope as the servers see it: a routing header they can read, and
//! ciphertext, wrapped keys and a signature they cannot.
//!
//! The client (`quip-cli`'s `e2e` module) builds and opens envelopes; the servers only check
//! that the header's sender is the authenticated session user and that the wrapped keys go to
//! the listed recipients, then store and forward bytes.

use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, GroupId, MsgId, UserName};

/// What an envelope carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ContentKind {
    /// UTF-8 text.
    Text,
    /// An image whose encrypted bytes travel on their own stream as blob `blob`, `len`
    /// ciphertext bytes long. The envelope's ciphertext holds the image's stream key and
    /// metadata.
    Image {
        /// The blob holding the encrypted image.
        blob: BlobId,
        /// Ciphertext length of the blob.
        len: u64,
    },
    /// A membership-change notice inside a group (no content of its own).
    Notice,
}

/// Which conversation a message belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Conversation {
    /// A one-to-one chat with this peer (the recipient, from the sender's side).
    Direct(UserName),
    /// A group chat at a membership epoch: recipients are the members the sender's verified
    /// chain proves at that epoch.
    Group {
        /// The group.
        id: GroupId,
        /// The membership epoch the sender encrypted to.
        epoch: u64,
    },
}

/// The header every recipient and the server can read. The client binds it as AES-GCM
/// associated data and signs it with the ciphertext, so nobody can re-address, re-date or
/// re-attribute a message without detection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Header {
    /// Sender-chosen random id; duplicates are dropped by it.
    pub id: MsgId,
    /// Who sent it; the node refuses an envelope whose sender is not the session's user.
    pub sender: UserName,
    /// Where it belongs.
    pub conversation: Conversation,
    /// What it carries.
    pub kind: ContentKind,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// Everyone who gets a wrapped key, the sender included, sorted.
    #[cfg_attr(test, proptest(strategy = "crate::testing::user_names(4)"))]
    pub recipients: Vec<UserName>,
}

/// The part of an envelope that is the same for every recipient: stored once, delivered to
/// each recipient beside that recipient's own wrapped key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Sealed {
    /// The readable routing header.
    pub header: Header,
    /// 12-byte AES-GCM nonce followed by the AES-256-GCM ciphertext and tag.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub ciphertext: Vec<u8>,
    /// RSA-PSS-SHA256 signature by the sender over header and ciphertext.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub signature: Vec<u8>,
}

/// The content key wrapped (RSA-OAEP-SHA256) for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct WrappedKey {
    /// Whose key it is.
    pub recipient: UserName,
    /// The wrapped content key.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(48)"))]
    pub wrapped: Vec<u8>,
}

/// What a sender submits: the sealed part and one wrapped key per recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Envelope {
    /// Header, ciphertext, signature.
    pub sealed: Sealed,
    /// One wrapped key per header recipient, in the same order.
    #[cfg_attr(test, proptest(strategy = "crate::testing::wrapped_keys(4)"))]
    pub keys: Vec<WrappedKey>,
}

/// What a recipient receives: the sealed part and their own wrapped key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Delivery {
    /// The recipient's wrapped content key.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(48)"))]
    pub key: Vec<u8>,
    /// Header, ciphertext, signature.
    pub sealed: Sealed,
}

/// Why an envelope is not acceptable to a server. The server checks only what it can see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// No recipients, or more than [`crate::limits::MAX_RECIPIENTS`].
    #[error("an envelope needs 1 to {max} recipients (got {count})")]
    RecipientCount {
        /// How many were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The wrapped keys do not match the header's recipient list one to one.
    #[error("wrapped keys do not match the recipient list")]
    KeysMismatch,
    /// A recipient appears twice.
    #[error("recipient {0} is listed twice")]
    DuplicateRecipient(UserName),
    /// The sender did not wrap a key for themself.
    #[error("the sender must be among the recipients")]
    SenderMissing,
    /// A field is larger than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Sealed {
    /// Length of this sealed part as postcard encodes it (what storage stores), counted
    /// without allocating.
    pub fn encoded_len(&self) -> usize {
        // Counting cannot fail: every field serialises, and the size flavour never fills up.
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

impl Envelope {
    /// Structural checks a server can make without any key: recipient count and uniqueness,
    /// one key per recipient in order, the sender among them, field sizes.
    pub fn check(&self) -> Result<(), EnvelopeError> {
        use crate::limits::{MAX_RECIPIENTS, MAX_SEALED, MAX_SIGNATURE, MAX_WRAPPED_KEY};
        // The sealed part is what storage keeps, so its encoded size is the limit: checked
        // first and without encoding anything (a size count, no allocation).
        let sealed = self.sealed.encoded_len();
        if sealed > MAX_SEALED {
            return Err(EnvelopeError::TooLarge {
                what: "sealed envelope",
                len: sealed,
                max: MAX_SEALED,
            });
        }
        let header = &self.sealed.header;
        let count = header.recipients.len();
        if count == 0 || count > MAX_RECIPIENTS {
            return Err(EnvelopeError::RecipientCount {
                count,
                max: MAX_RECIPIENTS,
            });
        }
        if self.keys.len() != count
            || self
                .keys
                .iter()
                .zip(&header.recipients)
                .any(|(key, name)| &key.recipient != name)
        {
            return Err(EnvelopeError::KeysMismatch);
        }
        let mut sorted: Vec<&UserName> = header.recipients.iter().collect();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(EnvelopeError::DuplicateRecipient(pair[0].clone()));
        }
        if !header.recipients.contains(&header.sender) {
            return Err(EnvelopeError::SenderMissing);
        }
        let too_large =
            |what, len, max| (len > max).then_some(EnvelopeError::TooLarge { what, len, max });
        if let Some(err) = too_large("signature", self.sealed.signature.len(), MAX_SIGNATURE) {
            return Err(err);
        }
        if let Some(key) = self.keys.iter().find(|k| k.wrapped.len() > MAX_WRAPPED_KEY) {
            return Err(EnvelopeError::TooLarge {
                what: "wrapped key",
                len: key.wrapped.len(),
                max: MAX_WRAPPED_KEY,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::USER_NAME_MAX;
    use crate::limits::{
        MAX_RECIPIENTS, MAX_SEALED, MAX_SIGNATURE, MAX_TEXT, MAX_WRAPPED_KEY, SEAL_OVERHEAD,
    };

    fn name(i: usize) -> UserName {
        UserName::new(&format!("u{i:0>width$}", width = USER_NAME_MAX - 1)).unwrap()
    }

    /// The largest envelope an honest client can build around `ciphertext`: the most
    /// recipients with the longest names, a group at the largest epoch, the largest signature.
    fn largest(ciphertext: usize) -> Envelope {
        let recipients: Vec<UserName> = (0..MAX_RECIPIENTS).map(name).collect();
        Envelope {
            sealed: Sealed {
                header: Header {
                    id: MsgId([0xff; 16]),
                    sender: recipients[0].clone(),
                    conversation: Conversation::Group {
                        id: GroupId([0xff; 16]),
                        epoch: u64::MAX,
                    },
                    kind: ContentKind::Text,
                    sent_at_ms: u64::MAX,
                    recipients: recipients.clone(),
                },
                ciphertext: vec![0xff; ciphertext],
                signature: vec![0xff; MAX_SIGNATURE],
            },
            keys: recipients
                .into_iter()
                .map(|recipient| WrappedKey {
                    recipient,
                    wrapped: vec![0xff; MAX_WRAPPED_KEY],
                })
                .collect(),
        }
    }

    #[test]
    fn any_max_text_seals_within_the_limit() {
        let envelope = largest(MAX_TEXT + SEAL_OVERHEAD);
        let encoded = postcard::to_stdvec(&envelope.sealed).unwrap().len();
        assert_eq!(envelope.sealed.encoded_len(), encoded);
        assert!(encoded <= MAX_SEALED, "{encoded} > {MAX_SEALED}");
        assert_eq!(envelope.check(), Ok(()));
    }

    #[test]
    fn the_limit_is_on_the_encoded_sealed_part() {
        // Ciphertext alone under the limit, the encoded sealed part one byte over it.
        let mut envelope = largest(0);
        let room = MAX_SEALED - envelope.sealed.encoded_len();
        envelope.sealed.ciphertext = vec![0; room];
        // The length prefix grew, so trim back to exactly the limit, then one over.
        while envelope.sealed.encoded_len() > MAX_SEALED {
            envelope.sealed.ciphertext.pop();
        }
        assert_eq!(envelope.check(), Ok(()));
        envelope.sealed.ciphertext.push(0);
        assert!(envelope.sealed.ciphertext.len() < MAX_SEALED);
        assert_eq!(
            envelope.check(),
            Err(EnvelopeError::TooLarge {
                what: "sealed envelope",
                len: MAX_SEALED + 1,
                max: MAX_SEALED,
            })
        );
    }
}
