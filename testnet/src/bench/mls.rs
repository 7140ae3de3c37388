//! `bench mls`: what MLS costs, measured on the real code (`quip_mls`: a device's end and the
//! node's delivery-service checks), for groups of 2, 100 and 1,000 members (one device each):
//!
//! - *send*: the sender encrypts 120 bytes for the group (one ciphertext whatever its size);
//! - *receive*: a member decrypts and attributes it;
//! - *add*: a member commits adding one device (path update, Welcome, group info) — the
//!   committer's CPU;
//! - *node check*: the delivery service checks that commit (signatures, tree, policy, the new
//!   device's credential against its account key) and moves its public state on;
//! - *join*: the added device processes the Welcome with the node's ratchet tree, checking
//!   every member's credential against their account key;
//! - *own device joins*: a member's new device joins by itself (external commit).
//!
//! Account keys are RSA-3072 (the real size); every user shares one key under their own
//! name, since a credential check costs the same whichever key of that size it uses and
//! generating 1,000 RSA-3072 pairs would take minutes. One thread, medians of several runs.
//! No network here, so no bare-QUIC baseline.

use std::time::{Duration, Instant};

use quip_mls::device::{Device, Received};
use quip_mls::ds::{Incoming, PublicState};
use quip_mls::policy::GroupPolicy;
use quip_proto::ids::{DeviceId, GroupId, GroupName, UserName};
use rsa::pkcs8::EncodePublicKey;
use rsa::sha2::Sha256;

use super::Options;
use super::report::{Latency, Report, Row};

/// Bytes of text per message.
const TEXT: usize = 120;
/// Devices added per commit while the group is built.
const BATCH: usize = 100;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let quick = opts.quick;
    tokio::task::spawn_blocking(move || measure(quick)).await?
}

/// One RSA-3072 account key every bench user shares.
pub(crate) struct Keys {
    key: rsa::PrivateKey,
    pub(crate) spki: Vec<u8>,
}

impl Keys {
    /// Generates the key (a second or so).
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let key = rsa::PrivateKey::new(&mut rand::rng(), 3072)?;
        Ok(Self {
            spki: key.as_public_key().to_public_key_der()?.into_vec(),
            key,
        })
    }

    /// A new device of `user`, its credential signed by the shared key.
    pub(crate) fn device(&self, user: &str, id: u64) -> anyhow::Result<Device> {
        let user = UserName::new(user)?;
        Ok(Device::enroll(user, DeviceId(id), |b| {
            self.key.pss_sign::<Sha256>(b)
        })?)
    }

    /// Every user's account key: the shared one.
    pub(crate) fn lookup(&self) -> impl Fn(&UserName) -> Option<Vec<u8>> + '_ {
        |_| Some(self.spki.clone())
    }
}

fn measure(quick: bool) -> anyhow::Result<Report> {
    let mut report = Report::new("mls");
    let generated = Instant::now();
    let keys = Keys::generate()?;
    report.notes.push(format!(
        "RSA-3072 account key generated once in {:.0} ms",
        generated.elapsed().as_secs_f64() * 1e3
    ));
    let sizes: &[usize] = if quick { &[2, 100] } else { &[2, 100, 1000] };
    let (messages, changes) = if quick { (20, 2) } else { (200, 5) };
    for (n, &size) in sizes.iter().enumerate() {
        let id = GroupId([n as u8 + 1; 16]);
        let case = if size == 2 {
            "1:1".to_string()
        } else {
            format!("group of {size}")
        };
        let mut group = Group::build(&keys, id, size)?;

        // Send and receive.
        let mut last = Vec::new();
        let send = time(messages, || {
            last = group.creator.encrypt(&id, &[b'q'; TEXT]).expect("encrypt");
        });
        let mut ciphertexts = Vec::with_capacity(messages + 1);
        for _ in 0..=messages {
            ciphertexts.push(group.creator.encrypt(&id, &[b'q'; TEXT])?);
        }
        let mut next = ciphertexts.into_iter();
        let receive = time(messages, || {
            let m = next.next().expect("one per run");
            match group.member.receive(&m, keys.lookup()).expect("receive") {
                Received::Message { bytes, .. } => assert_eq!(bytes.len(), TEXT),
                other => panic!("{other:?}"),
            }
        });

        // Add one device at a time: the committer, the node, the newcomer.
        let (mut add, mut check, mut join) = (Vec::new(), Vec::new(), Vec::new());
        let mut sizes_seen = (0, 0, 0, 0);
        for i in 0..changes {
            let mut newcomer = keys.device(&format!("new{i}"), 1)?;
            let package = newcomer.key_packages(1, false)?.remove(0).1;
            let started = Instant::now();
            let checked = group
                .creator
                .check_key_packages(&[package], keys.lookup())?;
            let out = group.creator.add(&id, checked)?;
            add.push(started.elapsed());
            let started = Instant::now();
            let from = group.creator.me().clone();
            let Incoming::Commit(pending) = group.ds.read(&out.commit, &from)? else {
                anyhow::bail!("not a commit");
            };
            group
                .ds
                .accept_commit(pending.check(keys.lookup())?, &out.group_info)?;
            check.push(started.elapsed());
            group.creator.confirm(&id)?;
            let welcome = out.welcome.as_deref().expect("a welcome");
            let tree = group.ds.ratchet_tree();
            sizes_seen = (
                out.commit.len(),
                welcome.len(),
                tree.len(),
                out.group_info.len(),
            );
            let started = Instant::now();
            newcomer
                .join(welcome, keys.lookup())?
                .map_err(|users| anyhow::anyhow!("keys missing for {users:?}"))?;
            join.push(started.elapsed());
            group.member.receive(&out.commit, keys.lookup())?;
        }

        // A member's own new device joins by itself.
        let mut external = Vec::new();
        for i in 0..changes {
            let mut own = keys.device("member0", 100 + i as u64)?;
            let started = Instant::now();
            let (_, out) = own.join_external(group.ds.group_info(), &group.ds.ratchet_tree())?;
            external.push(started.elapsed());
            let Incoming::Commit(pending) = group.ds.read(&out.commit, own.me())? else {
                anyhow::bail!("not a commit");
            };
            group
                .ds
                .accept_commit(pending.check(keys.lookup())?, &out.group_info)?;
            group.creator.receive(&out.commit, keys.lookup())?;
            group.member.receive(&out.commit, keys.lookup())?;
        }

        let lat = |mut v: Vec<Duration>| Latency::of(&mut v);
        let rows = [
            ("sender CPU per message p50", send.p50_ms * 1e3, "µs"),
            ("receiver CPU per message p50", receive.p50_ms * 1e3, "µs"),
            ("message on the wire", last.len() as f64, "B"),
            ("add one device: committer CPU p50", lat(add).p50_ms, "ms"),
            ("add one device: node check p50", lat(check).p50_ms, "ms"),
            ("new member joins (Welcome) p50", lat(join).p50_ms, "ms"),
            (
                "own device joins (external commit) p50",
                lat(external).p50_ms,
                "ms",
            ),
            ("commit on the wire", sizes_seen.0 as f64, "B"),
            ("welcome on the wire", sizes_seen.1 as f64, "B"),
            ("ratchet tree", sizes_seen.2 as f64, "B"),
            ("group info", sizes_seen.3 as f64, "B"),
            ("node's public state", group.ds.to_bytes().len() as f64, "B"),
        ];
        for (metric, value, unit) in rows {
            report.rows.push(Row::new(&case, metric, value, unit));
        }
        report.notes.push(format!(
            "{case}: built in {:.1} s ({BATCH} devices per commit)",
            group.built_in.as_secs_f64()
        ));
    }
    report.notes.push(format!(
        "{TEXT}-byte texts, medians of {messages} messages and {changes} membership changes, \
         one thread, release build; account keys RSA-3072, device keys Ed25519, suite \
         MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"
    ));
    Ok(report)
}

/// A group of `size` devices: the creator (admin) and one member who both keep up, the rest
/// added but idle (they do not need to process anything for the figures).
struct Group {
    creator: Device,
    member: Device,
    ds: PublicState,
    built_in: Duration,
}

impl Group {
    fn build(keys: &Keys, id: GroupId, size: usize) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut creator = keys.device("creator", 1)?;
        let policy = GroupPolicy::new(GroupName::new("bench")?, vec![creator.me().user.clone()]);
        let created = creator.create_group(id, &policy)?;
        let (mut ds, _) = PublicState::create(
            &id,
            &created.group_info,
            &created.ratchet_tree,
            creator.me(),
            &keys.spki,
        )?;
        let mut member = keys.device("member0", 1)?;
        let mut joined = false;
        let mut next = 0usize;
        while next + 1 < size {
            let end = (next + BATCH).min(size - 1);
            let mut packages = Vec::with_capacity(end - next);
            for i in next..end {
                let package = if i == 0 {
                    member.key_packages(1, false)?.remove(0).1
                } else {
                    keys.device(&format!("member{i}"), 1)?
                        .key_packages(1, false)?
                        .remove(0)
                        .1
                };
                packages.push(package);
            }
            let checked = creator.check_key_packages(&packages, keys.lookup())?;
            let out = creator.add(&id, checked)?;
            let Incoming::Commit(pending) = ds.read(&out.commit, creator.me())? else {
                anyhow::bail!("not a commit");
            };
            ds.accept_commit(pending.check(keys.lookup())?, &out.group_info)?;
            creator.confirm(&id)?;
            if joined {
                member.receive(&out.commit, keys.lookup())?;
            } else {
                let welcome = out.welcome.as_deref().expect("a welcome");
                member
                    .join(welcome, keys.lookup())?
                    .map_err(|users| anyhow::anyhow!("keys missing for {users:?}"))?;
                joined = true;
            }
            next = end;
        }
        Ok(Self {
            creator,
            member,
            ds,
            built_in: started.elapsed(),
        })
    }
}

/// Runs `f` once to warm up, then `n` times; the latency of each run.
fn time(n: usize, mut f: impl FnMut()) -> Latency {
    f();
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    Latency::of(&mut samples)
}
