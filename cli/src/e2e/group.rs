//! Signatures on group membership changes: an admin signs [`Change::signing_bytes`] with
//! RSA-PSS-SHA256, and every member verifies each link with the author's pinned key. Which
//! author may make which change (the chain logic) lives elsewhere; this is only the crypto.

use quip_proto::{Change, SignedChange};

use super::error::Result;
use super::identity::{Identity, PeerKeys};

/// Signs `change` as its author.
pub fn sign_change(identity: &Identity, change: Change) -> Result<SignedChange> {
    let signature = identity.sign(&change.signing_bytes())?;
    Ok(SignedChange { change, signature })
}

/// Checks that `signed` carries a valid signature by `author_keys` (the pinned keys of
/// `signed.change.author`) over exactly this change; otherwise
/// [`super::E2eError::BadSignature`].
pub fn verify_change(signed: &SignedChange, author_keys: &PeerKeys) -> Result<()> {
    author_keys.verify(&signed.change.signing_bytes(), &signed.signature)
}

#[cfg(test)]
mod tests {
    use quip_proto::Action;
    use quip_proto::ids::{GroupId, GroupName};

    use super::*;
    use crate::e2e::E2eError;
    use crate::e2e::fixtures::{self, name};

    fn genesis() -> Change {
        Change {
            group: GroupId([7; 16]),
            epoch: 0,
            prev: [0; 32],
            author: name("alice"),
            action: Action::Create {
                name: GroupName::new("family").unwrap(),
                members: vec![name("bob")],
            },
            at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn signed_change_verifies_and_round_trips() {
        let signed = sign_change(fixtures::alice(), genesis()).unwrap();
        verify_change(&signed, fixtures::alice().peer_keys()).unwrap();
        let decoded = SignedChange::from_bytes(&signed.to_bytes()).unwrap();
        verify_change(&decoded, fixtures::alice().peer_keys()).unwrap();
    }

    #[test]
    fn altered_change_or_wrong_author_fails() {
        let signed = sign_change(fixtures::alice(), genesis()).unwrap();
        let alice = fixtures::alice().peer_keys();
        let alter: [fn(&mut SignedChange); 7] = [
            |s| s.change.epoch = 1,
            |s| s.change.prev[0] = 1,
            |s| s.change.author = name("mallory"),
            |s| s.change.action = Action::Add(name("mallory")),
            |s| s.change.at_ms += 1,
            |s| s.change.group = GroupId([8; 16]),
            |s| s.signature[10] ^= 1,
        ];
        for (i, alter) in alter.iter().enumerate() {
            let mut bad = signed.clone();
            alter(&mut bad);
            let err = verify_change(&bad, alice).unwrap_err();
            assert!(matches!(err, E2eError::BadSignature), "case {i}: {err:?}");
        }
        let err = verify_change(&signed, fixtures::bob().peer_keys()).unwrap_err();
        assert!(matches!(err, E2eError::BadSignature), "{err:?}");
        let mut short = signed.clone();
        short.signature.truncate(3);
        assert!(matches!(
            verify_change(&short, alice),
            Err(E2eError::BadSignature)
        ));
    }
}
