//! Writes the seed corpus under `fuzz/corpus/<target>/` from real encodings: the wire
//! examples pinned in `proto/src/snapshots/`, and files, backups, keys and images made by the
//! client's own code. Run once from `fuzz/` (seeds are committed; rerun after a wire change):
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo fuzz build --features gen-corpus gen-corpus
//! ./target/x86_64-unknown-linux-gnu/release/gen-corpus
//! ```
//!
//! (`cargo run --release --features gen-corpus --bin gen-corpus` works too, but builds every
//! dependency a second time without the fuzzing flags.)

use std::path::{Path, PathBuf};

use quip_cli::e2e::{Identity, ImageEncryptor, MIN_KEY_BITS, PinStore, SeenIds, encrypt_backup};
use quip_fuzz::{PASSWORD, secrets, user, wire_type};
use quip_proto::envelope::{ContentKind, Conversation, Header, Sealed, WrappedKey};
use quip_proto::frame;
use quip_proto::group::Membership;
use quip_proto::ids::{BlobId, GroupId, GroupName, MsgId, UserName};
use quip_proto::{Action, Change, Delivery, Envelope, Hello, PublicKeys, SignedChange};
use rsa::pkcs8::der::asn1::OctetStringRef;
use rsa::pkcs8::der::pem::PemLabel;
use rsa::pkcs8::pkcs5::{pbes2, scrypt};
use rsa::pkcs8::{
    EncodePrivateKey, EncryptedPrivateKeyInfo, EncryptedPrivateKeyInfoRef, LineEnding,
    SecretDocument,
};
use sha2::{Digest, Sha256};

/// The 3×2 test images of `cli/src/e2e/image.rs` (made with Pillow).
const IMAGES: [(&str, &str); 4] = [
    (
        "png",
        "89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d000000154944415478da633c2127c7c0c0c0c0c0c0c4000300132e0108db1b58a20000000049454e44ae426082",
    ),
    (
        "gif",
        "47494638376103000200810000c81e1e0000000000000000002c00000000030002000008060001081c1810003b",
    ),
    (
        "jpeg",
        "ffd8ffe000104a46494600010100000100010000ffdb004300ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffc0000b080002000301011100ffc40014000100000000000000000000000000000000ffc40014100100000000000000000000000000000000ffda0008010100003f003fffd9",
    ),
    (
        "webp",
        "524946461e000000574542505650384c110000002f0240000007508f22d7a3ff8188e87f0000",
    ),
];

struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}

fn name(raw: &str) -> UserName {
    UserName::new(raw).expect("valid name")
}

fn body<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_stdvec(msg).expect("encode")
}

fn sealed(conversation: Conversation, kind: ContentKind, recipients: &[&str]) -> Sealed {
    Sealed {
        header: Header {
            id: MsgId([0x11; 16]),
            sender: name("alice"),
            conversation,
            kind,
            sent_at_ms: 1_700_000_000_000,
            recipients: recipients.iter().map(|r| name(r)).collect(),
        },
        ciphertext: vec![0xc1; 40],
        signature: vec![0x5e; 256],
    }
}

fn envelope(sealed: Sealed) -> Envelope {
    let keys = sealed
        .header
        .recipients
        .iter()
        .map(|r| WrappedKey {
            recipient: r.clone(),
            wrapped: vec![0x77; 256],
        })
        .collect();
    Envelope { sealed, keys }
}

fn envelopes() -> Vec<(&'static str, Envelope)> {
    let group = GroupId([0x22; 16]);
    let direct = envelope(sealed(
        Conversation::Direct(name("bob")),
        ContentKind::Text,
        &["alice", "bob"],
    ));
    let mut duplicate = direct.clone();
    duplicate.sealed.header.recipients.push(name("bob"));
    duplicate.keys.push(duplicate.keys[1].clone());
    let mut no_sender = direct.clone();
    no_sender.sealed.header.recipients.remove(0);
    no_sender.keys.remove(0);
    let mut swapped = direct.clone();
    swapped.keys.swap(0, 1);
    vec![
        ("direct", direct),
        (
            "group",
            envelope(sealed(
                Conversation::Group {
                    id: group,
                    epoch: 3,
                },
                ContentKind::Text,
                &["alice", "bob", "carol"],
            )),
        ),
        (
            "image",
            envelope(sealed(
                Conversation::Direct(name("bob")),
                ContentKind::Image {
                    blob: BlobId([0x33; 16]),
                    len: 70_000,
                },
                &["alice", "bob"],
            )),
        ),
        (
            "notice",
            envelope(sealed(
                Conversation::Group {
                    id: group,
                    epoch: 4,
                },
                ContentKind::Notice,
                &["alice"],
            )),
        ),
        ("duplicate", duplicate),
        ("no-sender", no_sender),
        ("swapped-keys", swapped),
    ]
}

/// Chains of links as stored, each valid for the membership rules (prev hashes included).
fn chains() -> Vec<(&'static str, Vec<SignedChange>)> {
    let group = GroupId([0x22; 16]);
    let build = |steps: &[(&str, Action)]| -> Vec<SignedChange> {
        let mut out: Vec<SignedChange> = Vec::new();
        let mut state: Option<Membership> = None;
        for (epoch, (author, action)) in steps.iter().enumerate() {
            let prev = out.last().map_or([0; 32], quip_cli::group::link_hash);
            let change = Change {
                group,
                epoch: epoch as u64,
                prev,
                author: name(author),
                action: action.clone(),
                at_ms: 1_700_000_000_000 + epoch as u64,
            };
            match &mut state {
                None => state = Some(Membership::genesis(&change).expect("genesis")),
                Some(state) => state.apply(&change).expect("valid step"),
            }
            out.push(SignedChange {
                change,
                signature: vec![0x5e; 256],
            });
        }
        out
    };
    let create = |members: &[&str]| Action::Create {
        name: GroupName::new("Friends").expect("group name"),
        members: members.iter().map(|m| name(m)).collect(),
    };
    vec![
        ("genesis", build(&[("alice", create(&["bob"]))])),
        (
            "add-promote-leave",
            build(&[
                ("alice", create(&["bob"])),
                ("alice", Action::Add(name("carol"))),
                ("alice", Action::Promote(name("bob"))),
                ("alice", Action::Leave),
                ("bob", Action::Remove(name("carol"))),
            ]),
        ),
        (
            "demote",
            build(&[
                ("alice", create(&["bob", "carol"])),
                ("alice", Action::Promote(name("carol"))),
                ("carol", Action::Demote(name("alice"))),
                ("bob", Action::Leave),
            ]),
        ),
        (
            "last-member",
            build(&[("alice", create(&[])), ("alice", Action::Leave)]),
        ),
    ]
}

fn frames<T: serde::Serialize>(msgs: &[T]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| frame::encode(m).expect("fits a frame"))
        .collect()
}

/// The wire examples pinned by `proto`'s snapshot tests: one frame per line.
fn snapshot_frames(snapshots: &Path) -> Vec<(String, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(snapshots)
        .expect("proto snapshots")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let stem = file.file_name().unwrap().to_string_lossy().into_owned();
        let Some(kind) = stem
            .strip_prefix("quip_proto__wire_tests__")
            .and_then(|s| s.split("__").next())
        else {
            continue;
        };
        let type_name: String = kind
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase())
                    .into_iter()
                    .chain(c)
                    .collect::<String>()
            })
            .collect();
        let text = std::fs::read_to_string(&file).expect("read snapshot");
        let body = text.splitn(3, "---\n").nth(2).unwrap_or_default();
        for line in body.lines() {
            let mut parts = line.split_whitespace();
            let (Some(variant), Some(hex)) = (parts.next(), parts.next()) else {
                continue;
            };
            let bytes = hex::decode(hex).expect("snapshot hex");
            out.push((format!("{kind}-{variant}"), wire_type(&type_name), bytes));
        }
    }
    out
}

/// An `ENCRYPTED PRIVATE KEY` block as `KeyStore::save` writes it, but with the cheapest
/// scrypt parameters the loader accepts (N = 2, r = 1, p = 1) so seeds decrypt fast.
fn cheap_pem(key: &rsa::PrivateKey, password: &[u8]) -> String {
    let der = key.to_pkcs8_der().expect("pkcs8");
    let cost = scrypt::Params::new(1, 1, 1).expect("scrypt params");
    let params = pbes2::Parameters::scrypt_aes256gcm(cost, &[0x5a; 16], [0xa5; 12]).expect("pbes2");
    let encrypted = params.encrypt(password, der.as_bytes()).expect("encrypt");
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: params.into(),
        encrypted_data: OctetStringRef::new(&encrypted).expect("octets"),
    };
    let doc = SecretDocument::try_from(&info).expect("document");
    doc.to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF)
        .expect("pem")
        .to_string()
}

/// Real MLS bytes for the `mls` target, each behind its mode byte: a commit adding a device
/// and an application message of a group with the fuzz world's id (another tree, so the
/// reader gets as far as the signature), a key package, a public state.
fn mls_seeds(corpus: &Corpus) {
    use quip_mls::ds::PublicState;
    use quip_mls::policy::GroupPolicy;
    use quip_proto::ids::{DeviceId, GroupId, GroupName};
    let user = quip_fuzz::user();
    let identity =
        quip_cli::e2e::Identity::generate(quip_cli::e2e::MIN_KEY_BITS).expect("identity");
    let mut alice = identity
        .enroll_device(user.clone(), DeviceId(1))
        .expect("device");
    let bob = identity
        .enroll_device(user.clone(), DeviceId(2))
        .expect("device");
    let group = GroupId([7; 16]);
    let policy = GroupPolicy::new(GroupName::new("seed").expect("name"), vec![user.clone()]);
    let created = alice.create_group(group, &policy).expect("group");
    let key = identity.public_keys().signing;
    let (state, _) = PublicState::create(
        &group,
        &created.group_info,
        &created.ratchet_tree,
        alice.me(),
        &key,
    )
    .expect("state");
    let package = bob.key_packages(1, false).expect("package").remove(0).1;
    let keys = |_: &UserName| Some(key.clone());
    let checked = alice
        .check_key_packages(std::slice::from_ref(&package), keys)
        .expect("checked");
    let out = alice.add(&group, checked).expect("add");
    let message = alice.encrypt(&group, b"seed").unwrap_or_default();
    corpus.put("mls", "commit", &[&[0][..], &out.commit].concat());
    corpus.put("mls", "key-package", &[&[1][..], &package].concat());
    corpus.put(
        "mls",
        "public-state",
        &[&[2][..], &state.to_bytes()].concat(),
    );
    corpus.put(
        "mls",
        "welcome",
        &[&[3][..], &out.welcome.unwrap_or_default()].concat(),
    );
    corpus.put("mls", "message", &[&[3][..], &message].concat());
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = Corpus {
        root: fuzz.join("corpus"),
    };
    mls_seeds(&corpus);

    // frame: [type, piece size, stream...]
    for (label, kind, bytes) in snapshot_frames(&fuzz.join("../proto/src/snapshots")) {
        corpus.put("frame", &label, &[&[kind, 0xff][..], &bytes].concat());
    }
    let hello = Hello::ours("quip/0.1.0");
    let hellos = frames(&[hello.clone(), hello]);
    corpus.put(
        "frame",
        "hello-x2-bytewise",
        &[&[wire_type("Hello"), 1][..], &hellos].concat(),
    );
    for (label, chain) in chains() {
        let kind = wire_type("SignedChange");
        corpus.put(
            "frame",
            &format!("signed-change-{label}"),
            &[&[kind, 7][..], &frames(&chain)].concat(),
        );
        corpus.put("group_chain", label, &frames(&chain));
    }
    for (label, env) in envelopes() {
        corpus.put("envelope", label, &body(&env));
        let kind = wire_type("Envelope");
        corpus.put(
            "frame",
            &format!("envelope-{label}"),
            &[&[kind, 0xff][..], &frames(std::slice::from_ref(&env))].concat(),
        );
        if !matches!(label, "direct" | "group") {
            continue;
        }
        let kind = wire_type("Sealed");
        corpus.put(
            "frame",
            &format!("sealed-{label}"),
            &[
                &[kind, 0xff][..],
                &frames(std::slice::from_ref(&env.sealed)),
            ]
            .concat(),
        );
        let delivery = Delivery {
            key: env.keys[0].wrapped.clone(),
            sealed: env.sealed,
        };
        let kind = wire_type("Delivery");
        corpus.put(
            "frame",
            &format!("delivery-{label}"),
            &[&[kind, 0xff][..], &frames(&[delivery])].concat(),
        );
    }

    // image: mode 0 = a file to send, mode 1 = key plaintext + chunks as received.
    let scratch = quip_fuzz::fresh_dir("gen-image");
    for (format, hex) in IMAGES {
        let bytes = hex::decode(hex).expect("image hex");
        corpus.put(
            "image",
            &format!("send-{format}"),
            &[&[0][..], &bytes].concat(),
        );
        let path = scratch.join(format);
        std::fs::write(&path, &bytes).expect("write image");
        let (mut encryptor, key) = ImageEncryptor::open(&path, 1 << 20).expect("encrypt image");
        let mut seed = vec![1];
        let plaintext = key.to_plaintext();
        seed.extend((plaintext.len() as u16).to_be_bytes());
        seed.extend_from_slice(&plaintext);
        while let Some(chunk) = encryptor.next_chunk().expect("chunk") {
            seed.extend((chunk.len() as u16).to_be_bytes());
            seed.extend_from_slice(&chunk);
        }
        corpus.put("image", &format!("receive-{format}"), &seed);
    }

    // keys: one identity, its backup, its public keys, pins of it.
    eprintln!("generating 2048-bit keys (a few seconds)…");
    let identity = Identity::generate(MIN_KEY_BITS).expect("identity");
    let public = identity.public_keys();
    corpus.put("public_keys", "identity", &body(&public));
    corpus.put(
        "public_keys",
        "swapped",
        &body(&PublicKeys {
            encryption: public.signing.clone(),
            signing: public.encryption.clone(),
        }),
    );
    corpus.put(
        "public_keys",
        "truncated",
        &body(&PublicKeys {
            encryption: public.encryption[..public.encryption.len() / 2].to_vec(),
            signing: public.signing.clone(),
        }),
    );
    let backup = encrypt_backup(&identity, secrets(), &user()).expect("backup");
    corpus.put("backup", "alice", &backup);
    corpus.put("backup", "magic-only", b"QKB1");

    let pins_dir = quip_fuzz::fresh_dir("gen-pins");
    let mut pins = PinStore::open(&pins_dir).expect("pins");
    pins.pin(&name("bob"), &public).expect("pin bob");
    pins.pin(&name("carol"), &public).expect("pin carol");
    let pins_file = std::fs::read(pins_dir.join(quip_cli::e2e::PINS_FILE)).expect("read pins");
    corpus.put("client_state", "pins", &[&[0][..], &pins_file].concat());
    let seen_dir = quip_fuzz::fresh_dir("gen-seen");
    let mut seen = SeenIds::with_capacity(&seen_dir, 4).expect("seen");
    for i in 0..5u8 {
        seen.insert(MsgId([i; 16])).expect("insert");
    }
    drop(seen);
    let seen_file = std::fs::read(seen_dir.join(quip_cli::e2e::SEEN_FILE)).expect("read seen");
    corpus.put(
        "client_state",
        "seen",
        &[&[1 | (3 << 1)][..], &seen_file].concat(),
    );
    corpus.put(
        "client_state",
        "seen-torn",
        &[&[1][..], &seen_file[..seen_file.len() - 3]].concat(),
    );

    // keystore: two blocks under the fixed secrets' key-file password (hex of the backup
    // key, as `Secrets::key_file_password`), with cheap scrypt.
    let mut rng = rand::rng();
    let encryption = rsa::PrivateKey::new(&mut rng, MIN_KEY_BITS).expect("rsa");
    let signing = rsa::PrivateKey::new(&mut rng, MIN_KEY_BITS).expect("rsa");
    let password = hex::encode(secrets().backup());
    let first = cheap_pem(&encryption, password.as_bytes());
    let second = cheap_pem(&signing, password.as_bytes());
    corpus.put(
        "keystore",
        "two-keys",
        format!("{first}{second}").as_bytes(),
    );
    corpus.put("keystore", "one-key", first.as_bytes());
    let wrong = cheap_pem(&signing, b"not the key file password");
    corpus.put(
        "keystore",
        "wrong-password",
        format!("{first}{wrong}").as_bytes(),
    );
    // Regression: scrypt N = 2^20, r = 16 (2 GiB) was accepted; refused before the KDF now.
    let cost = scrypt::Params::new(20, 16, 1).expect("scrypt params");
    let params = pbes2::Parameters::scrypt_aes256gcm(cost, &[0; 16], [0; 12]).expect("pbes2");
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: params.into(),
        encrypted_data: OctetStringRef::new(&[0u8; 64]).expect("octets"),
    };
    let planted = SecretDocument::try_from(&info)
        .expect("document")
        .to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF)
        .expect("pem");
    corpus.put(
        "keystore",
        "scrypt-2gib",
        format!("{first}{}", *planted).as_bytes(),
    );

    // known_cas: what `KnownCas` writes.
    let fp = hex::encode(Sha256::digest(b"a cluster CA certificate"));
    corpus.put(
        "known_cas",
        "one",
        format!("127.0.0.1:7000 {fp}\n").as_bytes(),
    );
    corpus.put(
        "known_cas",
        "two",
        format!("127.0.0.1:7000 {fp}\n[::1]:7001 {}\n", "0".repeat(64)).as_bytes(),
    );

    let _ = std::fs::remove_dir_all(quip_fuzz::scratch());
    eprintln!(
        "seeds written under {} (password {PASSWORD:?})",
        corpus.root.display()
    );
}
