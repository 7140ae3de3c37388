//! Trust on first use: the public keys first seen for each peer are pinned in the data
//! directory, a later change is reported (never silently accepted), and fingerprints and
//! safety numbers let two people compare keys out of band.
//!
//! ```text
//! fingerprint   = digits(SHA-512(FINGERPRINT_CONTEXT || lp(encryption SPKI) || lp(signing SPKI)))
//! safety half   = digits(SHA-512(SAFETY_CONTEXT || lp(name) || lp(encryption) || lp(signing)))
//! safety number = the two halves ordered by user name
//! ```
//!
//! `lp(x)` is `u32be(len(x)) || x`; `digits` reads 5-byte big-endian chunks modulo 100000 as
//! groups of five digits (as Signal does): 12 groups for a fingerprint, 6 per half of a
//! safety number. A half is ~100 bits, so finding a key with a matching half is out of reach.
//! The pins file is `PINS_MAGIC || postcard([(name, keys)])`, replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quip_proto::PublicKeys;
use quip_proto::ids::UserName;
use sha2::{Digest, Sha512};

use super::error::{E2eError, Result};
use super::files::{read_limited, write_atomic};
use super::identity::PeerKeys;

/// Name of the pins file inside the data directory.
pub const PINS_FILE: &str = "pins";
/// Format tag at the start of the pins file.
const PINS_MAGIC: &[u8] = b"quip-pins/1\n";
/// A pins file larger than this is not one Quip wrote (~1 KB per pinned user).
const MAX_PINS_FILE: u64 = 64 * 1024 * 1024;
/// Domain-separation prefix of a key fingerprint.
const FINGERPRINT_CONTEXT: &[u8] = b"quip/1 fingerprint\0";
/// Domain-separation prefix of a safety-number half.
const SAFETY_CONTEXT: &[u8] = b"quip/1 safety number\0";

/// What [`PinStore::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Never seen: pin it with [`PinStore::pin`].
    New,
    /// The pinned keys.
    Same,
    /// Different from the pinned keys: warn, show both fingerprints, and only use the new
    /// keys after the user accepts them ([`PinStore::accept`]).
    Changed {
        /// Fingerprint of the pinned keys.
        old_fingerprint: String,
        /// Fingerprint of the keys now presented.
        new_fingerprint: String,
    },
}

/// The pinned public keys of every peer seen, persisted in the data directory.
#[derive(Debug)]
pub struct PinStore {
    path: PathBuf,
    pins: BTreeMap<UserName, PublicKeys>,
}

impl PinStore {
    /// Opens the pins of data directory `dir` (empty if there is no pins file yet). A pins
    /// file that cannot be read back is an error, not an empty store: forgetting pins would
    /// silently trust whatever keys the server hands out next.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(PINS_FILE);
        let corrupt = |path| E2eError::CorruptStateFile { path };
        let pins = match read_limited(&path, MAX_PINS_FILE, corrupt)? {
            None => BTreeMap::new(),
            Some(bytes) => {
                let body = bytes
                    .strip_prefix(PINS_MAGIC)
                    .ok_or_else(|| corrupt(path.clone()))?;
                let (list, rest): (Vec<(UserName, PublicKeys)>, _) =
                    postcard::take_from_bytes(body).map_err(|_| corrupt(path.clone()))?;
                if !rest.is_empty() {
                    return Err(corrupt(path));
                }
                list.into_iter().collect()
            }
        };
        Ok(Self { path, pins })
    }

    /// The keys pinned for `user`, if any.
    pub fn get(&self, user: &UserName) -> Option<&PublicKeys> {
        self.pins.get(user)
    }

    /// Compares `keys` with the pin of `user`.
    pub fn check(&self, user: &UserName, keys: &PublicKeys) -> Pin {
        match self.pins.get(user) {
            None => Pin::New,
            Some(pinned) if pinned == keys => Pin::Same,
            Some(pinned) => Pin::Changed {
                old_fingerprint: fingerprint(pinned),
                new_fingerprint: fingerprint(keys),
            },
        }
    }

    /// Pins `keys` for `user` on first use (and persists it). Already pinned to the same
    /// keys: nothing to do. Pinned to other keys: [`E2eError::KeyChanged`] — use
    /// [`Self::accept`] once the user agrees. Keys that do not parse or are too weak are
    /// refused and not pinned.
    pub fn pin(&mut self, user: &UserName, keys: &PublicKeys) -> Result<PeerKeys> {
        let parsed = PeerKeys::from_public(keys)?;
        match self.check(user, keys) {
            Pin::Same => Ok(parsed),
            Pin::Changed { .. } => Err(E2eError::KeyChanged { user: user.clone() }),
            Pin::New => {
                self.pins.insert(user.clone(), keys.clone());
                self.save()?;
                Ok(parsed)
            }
        }
    }

    /// Replaces the pin of `user` with `keys` after the user accepted the change (and
    /// persists it). Keys that do not parse or are too weak are refused.
    pub fn accept(&mut self, user: &UserName, keys: &PublicKeys) -> Result<PeerKeys> {
        let parsed = PeerKeys::from_public(keys)?;
        self.pins.insert(user.clone(), keys.clone());
        self.save()?;
        Ok(parsed)
    }

    /// Writes the pins file atomically.
    fn save(&self) -> Result<()> {
        let list: Vec<(&UserName, &PublicKeys)> = self.pins.iter().collect();
        let body = postcard::to_stdvec(&list).map_err(|_| E2eError::Encode { what: "pins" })?;
        write_atomic(&self.path, &[PINS_MAGIC, &body].concat())
    }
}

/// Appends `bytes` with a `u32` big-endian length prefix.
fn length_prefixed(hasher: &mut Sha512, bytes: &[u8]) {
    hasher.update((bytes.len() as u32).to_be_bytes());
    hasher.update(bytes);
}

/// `groups` groups of five decimal digits from 5-byte chunks of `hash`.
fn digit_groups(hash: &[u8], groups: usize) -> Vec<String> {
    hash.chunks_exact(5)
        .take(groups)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

/// A public key set's fingerprint: 60 digits in 12 space-separated groups of five.
pub fn fingerprint(keys: &PublicKeys) -> String {
    let mut hasher = Sha512::new();
    hasher.update(FINGERPRINT_CONTEXT);
    length_prefixed(&mut hasher, &keys.encryption);
    length_prefixed(&mut hasher, &keys.signing);
    digit_groups(&hasher.finalize(), 12).join(" ")
}

/// The safety number of a conversation between two users: 60 digits in 12 groups of five,
/// the same on both sides (each user's half is bound to their name and keys, and the halves
/// are ordered by name). Compare it in person or over another channel.
pub fn safety_number(
    me: &UserName,
    my_keys: &PublicKeys,
    them: &UserName,
    their_keys: &PublicKeys,
) -> String {
    let half = |name: &UserName, keys: &PublicKeys| {
        let mut hasher = Sha512::new();
        hasher.update(SAFETY_CONTEXT);
        length_prefixed(&mut hasher, name.as_str().as_bytes());
        length_prefixed(&mut hasher, &keys.encryption);
        length_prefixed(&mut hasher, &keys.signing);
        digit_groups(&hasher.finalize(), 6)
    };
    let mut halves = [(me, half(me, my_keys)), (them, half(them, their_keys))];
    halves.sort_by(|a, b| a.0.cmp(b.0));
    let [(_, first), (_, second)] = halves;
    [first, second].concat().join(" ")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::e2e::fixtures::{alice, bob, carol, name};

    fn is_digit_groups(s: &str, groups: usize) -> bool {
        let parts: Vec<_> = s.split(' ').collect();
        parts.len() == groups
            && parts
                .iter()
                .all(|p| p.len() == 5 && p.bytes().all(|b| b.is_ascii_digit()))
    }

    #[test]
    fn new_same_changed_accept() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = PinStore::open(dir.path()).unwrap();
        let bob_name = name("bob");
        let (old, new) = (bob().public_keys(), carol().public_keys());

        assert_eq!(pins.check(&bob_name, &old), Pin::New);
        assert_eq!(&pins.pin(&bob_name, &old).unwrap(), bob().peer_keys());
        assert_eq!(pins.check(&bob_name, &old), Pin::Same);
        pins.pin(&bob_name, &old).unwrap();

        let changed = pins.check(&bob_name, &new);
        assert_eq!(
            changed,
            Pin::Changed {
                old_fingerprint: fingerprint(&old),
                new_fingerprint: fingerprint(&new),
            }
        );
        let err = pins.pin(&bob_name, &new).unwrap_err();
        assert!(
            matches!(err, E2eError::KeyChanged { ref user } if *user == bob_name),
            "{err:?}"
        );
        assert_eq!(
            pins.get(&bob_name),
            Some(&old),
            "a refused change leaves the pin"
        );

        pins.accept(&bob_name, &new).unwrap();
        assert_eq!(pins.check(&bob_name, &new), Pin::Same);
        assert!(matches!(pins.check(&bob_name, &old), Pin::Changed { .. }));
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = PinStore::open(dir.path()).unwrap();
        pins.pin(&name("alice"), &alice().public_keys()).unwrap();
        pins.pin(&name("bob"), &bob().public_keys()).unwrap();
        pins.accept(&name("bob"), &carol().public_keys()).unwrap();
        drop(pins);

        let pins = PinStore::open(dir.path()).unwrap();
        assert_eq!(
            pins.check(&name("alice"), &alice().public_keys()),
            Pin::Same
        );
        assert_eq!(pins.check(&name("bob"), &carol().public_keys()), Pin::Same);
        assert_eq!(pins.check(&name("carol"), &carol().public_keys()), Pin::New);
    }

    #[test]
    fn bad_keys_are_not_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = PinStore::open(dir.path()).unwrap();
        let bad = PublicKeys {
            encryption: vec![1, 2, 3],
            signing: vec![4],
        };
        assert!(matches!(
            pins.pin(&name("bob"), &bad),
            Err(E2eError::MalformedKey { .. })
        ));
        assert!(matches!(
            pins.accept(&name("bob"), &bad),
            Err(E2eError::MalformedKey { .. })
        ));
        assert_eq!(pins.get(&name("bob")), None);
        assert!(!dir.path().join(PINS_FILE).exists());
    }

    #[test]
    fn corrupt_pins_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = PinStore::open(dir.path()).unwrap();
        pins.pin(&name("bob"), &bob().public_keys()).unwrap();
        let path = dir.path().join(PINS_FILE);
        let good = fs::read(&path).unwrap();
        for bad in [
            &b"nonsense"[..],
            &good[..good.len() - 3],
            &[&good[..], b"x"].concat(),
        ] {
            fs::write(&path, bad).unwrap();
            let err = PinStore::open(dir.path()).unwrap_err();
            assert!(matches!(err, E2eError::CorruptStateFile { .. }), "{err:?}");
        }
    }

    #[test]
    fn fingerprints() {
        let (a, b) = (alice().public_keys(), bob().public_keys());
        let fa = fingerprint(&a);
        assert!(is_digit_groups(&fa, 12), "{fa}");
        assert_eq!(fa, fingerprint(&a));
        assert_ne!(fa, fingerprint(&b));
        // Swapping the two keys gives another fingerprint.
        let swapped = PublicKeys {
            encryption: a.signing.clone(),
            signing: a.encryption.clone(),
        };
        assert_ne!(fa, fingerprint(&swapped));
        // Pinned vector over fixed bytes.
        let fixed = PublicKeys {
            encryption: b"enc".to_vec(),
            signing: b"sig".to_vec(),
        };
        insta::assert_snapshot!(
            fingerprint(&fixed),
            @"88737 36159 54288 63428 68054 66787 23713 46153 49233 83423 40700 85322"
        );
    }

    #[test]
    fn safety_numbers_are_symmetric() {
        let (an, a) = (name("alice"), alice().public_keys());
        let (bn, b) = (name("bob"), bob().public_keys());
        let from_alice = safety_number(&an, &a, &bn, &b);
        let from_bob = safety_number(&bn, &b, &an, &a);
        assert_eq!(from_alice, from_bob);
        assert!(is_digit_groups(&from_alice, 12), "{from_alice}");
        // Alice's half comes first (by name) and changes when her keys do.
        let c = carol().public_keys();
        let changed = safety_number(&an, &c, &bn, &b);
        assert_ne!(changed, from_alice);
        assert_eq!(changed[36..], from_alice[36..], "Bob's half is unchanged");
        // Bound to names: the same keys under other names give another number.
        assert_ne!(safety_number(&name("amy"), &a, &bn, &b), from_alice);
    }
}
