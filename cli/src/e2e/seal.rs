//! Sealing and opening messages: AES-256-GCM content encryption, RSA-OAEP key wrapping for
//! every recipient (the sender included) and an RSA-PSS signature over header and ciphertext.
//!
//! ```text
//! aad        = AAD_CONTEXT || postcard(header)
//! ciphertext = nonce (12) || AES-256-GCM(key, nonce, plaintext, aad) (with 16-byte tag)
//! signed     = SIGNATURE_CONTEXT || u64be(len(postcard(header))) || postcard(header) || ciphertext
//! signature  = RSA-PSS-SHA256(sender signing key, signed)
//! keys[i]    = RSA-OAEP-SHA256(recipients[i] encryption key, key)
//! ```
//!
//! The header is bound twice: as associated data (so the ciphertext cannot be moved under
//! another header) and under the signature (so nobody but the sender can produce a header
//! at all). The wrapped keys are per recipient and not signed; a swapped one fails to unwrap
//! or fails AES-GCM, which is all a server could achieve by it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use quip_proto::envelope::EnvelopeError;
use quip_proto::ids::UserName;
use quip_proto::limits::{MAX_RECIPIENTS, MAX_SEALED};
use quip_proto::{Delivery, Envelope, Header, Sealed, WrappedKey};
use rand::Rng;
use rsa::pkcs8::der::zeroize::Zeroizing;

use super::error::{E2eError, Result};
use super::identity::{Identity, PeerKeys};

/// Domain-separation prefix of the AES-GCM associated data of a message.
pub const AAD_CONTEXT: &[u8] = b"quip/1 message aad\0";
/// Domain-separation prefix of the bytes a sender signs.
pub const SIGNATURE_CONTEXT: &[u8] = b"quip/1 message signature\0";
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Content key length (AES-256).
pub(crate) const KEY_LEN: usize = 32;

/// The canonical encoding of a header, as bound into the AAD and the signature.
fn header_bytes(header: &Header) -> Result<Vec<u8>> {
    postcard::to_stdvec(header).map_err(|_| E2eError::Encode { what: "header" })
}

/// What the AES-GCM associated data of a message is.
fn aad(header: &[u8]) -> Vec<u8> {
    [AAD_CONTEXT, header].concat()
}

/// What the sender signs. The header is length-prefixed so header and ciphertext cannot trade
/// bytes.
fn signed_bytes(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let len = (header.len() as u64).to_be_bytes();
    [SIGNATURE_CONTEXT, &len, header, ciphertext].concat()
}

/// AES-256-GCM encrypts `plaintext` under `key` with a fresh random nonce; returns
/// `nonce || ciphertext || tag`.
pub(crate) fn aead_seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let sealed = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| E2eError::Encode { what: "ciphertext" })?;
    Ok([&nonce[..], &sealed].concat())
}

/// Reverses [`aead_seal`]; any failure (short input, wrong key, altered bytes or AAD) is
/// [`E2eError::Tampered`].
pub(crate) fn aead_open(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(E2eError::Tampered);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| E2eError::Tampered)?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| E2eError::Tampered)
}

/// Encrypts `plaintext` for `recipients` and signs it as `identity`.
///
/// `recipients` must include the sender (pass [`Identity::peer_keys`] under the sender's
/// name) so the sender can read their own message on another device. They may come in any
/// order: the list is sorted by name, an entry repeated with the same keys is kept once, and
/// `header.recipients` is **replaced** by the sorted names, so the wrapped keys line up with
/// it as [`Envelope::check`] requires. The same name with two different keys is refused.
///
/// The returned envelope passes [`Envelope::check`].
pub fn seal(
    identity: &Identity,
    mut header: Header,
    recipients: &[(UserName, &PeerKeys)],
    plaintext: &[u8],
) -> Result<Envelope> {
    let mut list: Vec<(&UserName, &PeerKeys)> = recipients
        .iter()
        .map(|(name, keys)| (name, *keys))
        .collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    list.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    if let Some(pair) = list.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(EnvelopeError::DuplicateRecipient(pair[0].0.clone()).into());
    }
    // Refuse what the server would refuse before paying for any RSA operation.
    if list.is_empty() || list.len() > MAX_RECIPIENTS {
        let count = list.len();
        return Err(EnvelopeError::RecipientCount {
            count,
            max: MAX_RECIPIENTS,
        }
        .into());
    }
    if !list.iter().any(|(name, _)| **name == header.sender) {
        return Err(EnvelopeError::SenderMissing.into());
    }
    let sealed_len = plaintext.len() + NONCE_LEN + TAG_LEN;
    if sealed_len > MAX_SEALED {
        return Err(EnvelopeError::TooLarge {
            what: "ciphertext",
            len: sealed_len,
            max: MAX_SEALED,
        }
        .into());
    }
    header.recipients = list.iter().map(|(name, _)| (*name).clone()).collect();

    let mut content_key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rng().fill_bytes(content_key.as_mut());
    let header_encoded = header_bytes(&header)?;
    let ciphertext = aead_seal(&content_key, &aad(&header_encoded), plaintext)?;
    let signature = identity.sign(&signed_bytes(&header_encoded, &ciphertext))?;
    let keys = list
        .iter()
        .map(|(name, keys)| {
            Ok(WrappedKey {
                recipient: (*name).clone(),
                wrapped: keys.wrap(content_key.as_ref())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let envelope = Envelope {
        sealed: Sealed {
            header,
            ciphertext,
            signature,
        },
        keys,
    };
    envelope.check()?;
    Ok(envelope)
}

/// Verifies and decrypts a message delivered to `me`.
///
/// `sender` must be the **pinned** keys of `delivery.sealed.header.sender` (see
/// [`super::PinStore`]); this function cannot know whose keys they are. In order:
/// 1. the PSS signature over header and ciphertext is checked, before any private-key
///    operation, so a forger cannot use us as a decryption oracle ([`E2eError::BadSignature`]);
/// 2. `me` must be listed in the header ([`E2eError::NotARecipient`]);
/// 3. the content key is unwrapped with RSA-OAEP ([`E2eError::BadWrappedKey`]);
/// 4. AES-GCM decrypts with the header as associated data ([`E2eError::Tampered`]).
///
/// Duplicates are not detected here: see [`super::SeenIds`].
pub fn open(
    identity: &Identity,
    me: &UserName,
    delivery: &Delivery,
    sender: &PeerKeys,
) -> Result<Vec<u8>> {
    let sealed = &delivery.sealed;
    let header_encoded = header_bytes(&sealed.header)?;
    sender.verify(
        &signed_bytes(&header_encoded, &sealed.ciphertext),
        &sealed.signature,
    )?;
    if !sealed.header.recipients.contains(me) {
        return Err(E2eError::NotARecipient { user: me.clone() });
    }
    let unwrapped = identity.unwrap_key(&delivery.key)?;
    let content_key: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(
        unwrapped
            .as_slice()
            .try_into()
            .map_err(|_| E2eError::BadWrappedKey)?,
    );
    aead_open(&content_key, &aad(&header_encoded), &sealed.ciphertext)
}

/// The delivery a node would hand `recipient` for `envelope`, if they are listed.
pub fn delivery_for(envelope: &Envelope, recipient: &UserName) -> Option<Delivery> {
    envelope
        .keys
        .iter()
        .find(|key| &key.recipient == recipient)
        .map(|key| Delivery {
            key: key.wrapped.clone(),
            sealed: envelope.sealed.clone(),
        })
}

#[cfg(test)]
mod tests {
    use quip_proto::ids::MsgId;
    use quip_proto::{ContentKind, Conversation};

    use super::*;
    use crate::e2e::fixtures::{alice, bob, carol, name};

    fn header(sender: &str, to: &str) -> Header {
        Header {
            id: MsgId([1; 16]),
            sender: name(sender),
            conversation: Conversation::Direct(name(to)),
            kind: ContentKind::Text,
            sent_at_ms: 1_700_000_000_000,
            recipients: vec![],
        }
    }

    /// Alice to Bob and Carol (listed out of order, Alice twice).
    fn group_message(plaintext: &[u8]) -> Envelope {
        let recipients = [
            (name("carol"), carol().peer_keys()),
            (name("alice"), alice().peer_keys()),
            (name("bob"), bob().peer_keys()),
            (name("alice"), alice().peer_keys()),
        ];
        seal(alice(), header("alice", "bob"), &recipients, plaintext).unwrap()
    }

    /// Alice to Bob only.
    fn direct_message() -> Envelope {
        let recipients = [
            (name("alice"), alice().peer_keys()),
            (name("bob"), bob().peer_keys()),
        ];
        seal(alice(), header("alice", "bob"), &recipients, b"hi bob").unwrap()
    }

    fn open_as(who: &str, identity: &Identity, delivery: &Delivery) -> Result<Vec<u8>> {
        open(identity, &name(who), delivery, alice().peer_keys())
    }

    #[test]
    fn round_trip_for_sender_and_every_recipient() {
        let envelope = group_message(b"hello, group");
        envelope.check().unwrap();
        let names = ["alice", "bob", "carol"].map(name);
        assert_eq!(envelope.sealed.header.recipients, names);
        let wrapped: Vec<_> = envelope.keys.iter().map(|k| &k.recipient).collect();
        assert_eq!(wrapped, names.iter().collect::<Vec<_>>());
        for (who, id) in [("alice", alice()), ("bob", bob()), ("carol", carol())] {
            let delivery = delivery_for(&envelope, &name(who)).unwrap();
            assert_eq!(
                open_as(who, id, &delivery).unwrap(),
                b"hello, group",
                "{who}"
            );
        }
        // Fresh key and nonce every time: the same message never encrypts the same.
        assert_ne!(
            group_message(b"hello, group").sealed.ciphertext,
            envelope.sealed.ciphertext
        );
        // Empty plaintexts work too.
        let empty = group_message(b"");
        let delivery = delivery_for(&empty, &name("bob")).unwrap();
        assert_eq!(open_as("bob", bob(), &delivery).unwrap(), b"");
    }

    #[test]
    fn non_recipient_cannot_open() {
        let envelope = direct_message();
        assert!(delivery_for(&envelope, &name("carol")).is_none());
        let bobs = delivery_for(&envelope, &name("bob")).unwrap();
        // Carol, honestly: not listed.
        let err = open_as("carol", carol(), &bobs).unwrap_err();
        assert!(
            matches!(err, E2eError::NotARecipient { ref user } if user.as_str() == "carol"),
            "{err:?}"
        );
        // Carol pretending to be Bob: his key does not unwrap with hers.
        let err = open_as("bob", carol(), &bobs).unwrap_err();
        assert!(matches!(err, E2eError::BadWrappedKey), "{err:?}");
    }

    #[test]
    fn any_tampering_is_detected() {
        let envelope = direct_message();
        let delivery = delivery_for(&envelope, &name("bob")).unwrap();
        type Alter = fn(&mut Delivery);
        let signed_parts: [(&str, Alter); 10] = [
            ("ciphertext", |d| d.sealed.ciphertext[20] ^= 1),
            ("nonce", |d| d.sealed.ciphertext[0] ^= 1),
            ("ciphertext cut", |d| d.sealed.ciphertext.truncate(10)),
            ("signature", |d| d.sealed.signature[5] ^= 1),
            ("signature cut", |d| {
                d.sealed.signature.pop().map(drop).unwrap_or(())
            }),
            ("sender", |d| d.sealed.header.sender = name("carol")),
            ("recipients", |d| {
                d.sealed.header.recipients.push(name("mallory"))
            }),
            ("sent_at_ms", |d| d.sealed.header.sent_at_ms += 1),
            ("id", |d| d.sealed.header.id = MsgId([2; 16])),
            ("conversation", |d| {
                d.sealed.header.conversation = Conversation::Direct(name("carol"))
            }),
        ];
        for (what, alter) in signed_parts {
            let mut bad = delivery.clone();
            alter(&mut bad);
            let err = open_as("bob", bob(), &bad).unwrap_err();
            assert!(matches!(err, E2eError::BadSignature), "{what}: {err:?}");
        }
        let mut bad = delivery.clone();
        bad.key[7] ^= 1;
        let err = open_as("bob", bob(), &bad).unwrap_err();
        assert!(
            matches!(err, E2eError::BadWrappedKey),
            "wrapped key: {err:?}"
        );
        bad.key.truncate(100);
        let err = open_as("bob", bob(), &bad).unwrap_err();
        assert!(
            matches!(err, E2eError::BadWrappedKey),
            "short wrapped key: {err:?}"
        );
        // Another recipient's wrapped key does not unwrap either.
        let mut swapped = delivery.clone();
        swapped.key = delivery_for(&envelope, &name("alice")).unwrap().key;
        assert!(matches!(
            open_as("bob", bob(), &swapped),
            Err(E2eError::BadWrappedKey)
        ));
        // And the untouched delivery still opens.
        assert_eq!(open_as("bob", bob(), &delivery).unwrap(), b"hi bob");
    }

    #[test]
    fn header_is_bound_as_associated_data() {
        // Even the sender cannot move a ciphertext under another header: re-signing a changed
        // header passes the signature check and then fails AES-GCM.
        let delivery = delivery_for(&direct_message(), &name("bob")).unwrap();
        let mut moved = delivery.clone();
        moved.sealed.header.sent_at_ms += 1;
        let header = header_bytes(&moved.sealed.header).unwrap();
        moved.sealed.signature = alice()
            .sign(&signed_bytes(&header, &moved.sealed.ciphertext))
            .unwrap();
        let err = open_as("bob", bob(), &moved).unwrap_err();
        assert!(matches!(err, E2eError::Tampered), "{err:?}");
        // Likewise a re-signed ciphertext too short to hold nonce and tag.
        moved.sealed.ciphertext.truncate(NONCE_LEN + TAG_LEN - 1);
        moved.sealed.signature = alice()
            .sign(&signed_bytes(&header, &moved.sealed.ciphertext))
            .unwrap();
        let err = open_as("bob", bob(), &moved).unwrap_err();
        assert!(matches!(err, E2eError::Tampered), "{err:?}");
    }

    #[test]
    fn signature_is_checked_before_any_private_key_operation() {
        let mut delivery = delivery_for(&direct_message(), &name("bob")).unwrap();
        delivery.key = vec![0xAA; 256];
        delivery.sealed.signature[0] ^= 1;
        let err = open_as("bob", bob(), &delivery).unwrap_err();
        assert!(matches!(err, E2eError::BadSignature), "{err:?}");
        // Also before the recipient check.
        let err = open_as("carol", carol(), &delivery).unwrap_err();
        assert!(matches!(err, E2eError::BadSignature), "{err:?}");
        // A valid message checked against the wrong sender key is a bad signature too.
        let good = delivery_for(&direct_message(), &name("bob")).unwrap();
        let err = open(bob(), &name("bob"), &good, carol().peer_keys()).unwrap_err();
        assert!(matches!(err, E2eError::BadSignature), "{err:?}");
    }

    #[test]
    fn refuses_what_the_server_would_refuse() {
        let me = (name("alice"), alice().peer_keys());
        let bob_ = (name("bob"), bob().peer_keys());
        let check = |recipients: &[(UserName, &PeerKeys)], len: usize| {
            seal(alice(), header("alice", "bob"), recipients, &vec![0; len]).unwrap_err()
        };
        let err = check(std::slice::from_ref(&bob_), 1);
        assert!(
            matches!(err, E2eError::Envelope(EnvelopeError::SenderMissing)),
            "{err:?}"
        );
        let err = check(&[], 1);
        assert!(
            matches!(
                err,
                E2eError::Envelope(EnvelopeError::RecipientCount { count: 0, .. })
            ),
            "{err:?}"
        );
        let err = check(
            &[me.clone(), (name("bob"), carol().peer_keys()), bob_.clone()],
            1,
        );
        assert!(
            matches!(err, E2eError::Envelope(EnvelopeError::DuplicateRecipient(ref n)) if n.as_str() == "bob"),
            "{err:?}"
        );
        let err = check(&[me.clone(), bob_.clone()], MAX_SEALED);
        assert!(
            matches!(err, E2eError::Envelope(EnvelopeError::TooLarge { .. })),
            "{err:?}"
        );
        // The largest text is accepted (the limits guarantee it fits with any header).
        let max = quip_proto::limits::MAX_TEXT;
        seal(alice(), header("alice", "bob"), &[me, bob_], &vec![0; max]).unwrap();
    }
}
