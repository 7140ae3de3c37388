//! `bench crypto`: what end-to-end encryption costs per message, measured on the real code
//! (`quip_cli::e2e::{seal, open}`), not on a model of it. For RSA-2048 and RSA-3072:
//!
//! - *seal* (sender): a fresh AES-256-GCM key encrypts 120 bytes, the key is wrapped with
//!   RSA-OAEP for the recipient and the sender, and the header + ciphertext are signed with
//!   RSA-PSS;
//! - *open* (receiver): the PSS signature is verified, the key unwrapped, the text decrypted;
//! - *group seal*: the same for a 100-member group — 100 OAEP wraps (the sender's included),
//!   one signature.
//!
//! Each figure is the median (and p99) of a fixed number of iterations after a warm-up, on one
//! thread: the "criterion or equivalent" of the issue. Identities are generated once per key
//! size. The group's members share one public key under 100 names: an OAEP wrap costs the
//! same whichever key of that size it uses, and generating 100 RSA-3072 pairs would take
//! minutes. There is no network here, so no bare-QUIC baseline; the table shows what one core
//! can seal or open per second instead.

use std::time::{Duration, Instant};

use quip_cli::e2e::{Identity, PeerKeys, delivery_for, open, seal};
use quip_proto::ids::{GroupId, MsgId, UserName};
use quip_proto::{ContentKind, Conversation, Header};

use super::Options;
use super::report::{Latency, Report, Row};

/// Members of the benchmarked group, the sender included.
const GROUP: usize = 100;
/// Bytes of text per message.
const TEXT: usize = 120;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let quick = opts.quick;
    tokio::task::spawn_blocking(move || measure(quick)).await?
}

fn measure(quick: bool) -> anyhow::Result<Report> {
    let mut report = Report::new("crypto");
    let (iterations, group_iterations) = if quick { (20, 5) } else { (200, 30) };
    for bits in [2048, 3072] {
        let generated = Instant::now();
        let alice = Identity::generate(bits)?;
        let bob = Identity::generate(bits)?;
        let keygen = generated.elapsed() / 4;
        let (a, b) = (UserName::new("alice")?, UserName::new("bob")?);
        let plaintext = vec![b'q'; TEXT];

        // One-to-one: sender and recipient each get a wrapped key.
        let recipients = [(a.clone(), alice.peer_keys()), (b.clone(), bob.peer_keys())];
        let direct = || header(&a, Conversation::Direct(b.clone()));
        let mut envelope = seal(&alice, direct(), &recipients, &plaintext)?;
        let sealing = time(iterations, || {
            envelope = seal(&alice, direct(), &recipients, &plaintext).expect("seal");
        });
        let delivery = delivery_for(&envelope, &b).expect("bob is a recipient");
        let opening = time(iterations, || {
            let text = open(&bob, &b, &delivery, alice.peer_keys()).expect("open");
            assert_eq!(text.len(), TEXT);
        });
        let bytes = quip_proto::frame::encode(&envelope)?.len();

        // A group of 100: one signature, 100 wraps.
        let names: Vec<UserName> = (1..GROUP)
            .map(|i| UserName::new(&format!("member{i}")))
            .collect::<Result<_, _>>()?;
        let mut members: Vec<(UserName, &PeerKeys)> =
            names.iter().map(|n| (n.clone(), bob.peer_keys())).collect();
        members.push((a.clone(), alice.peer_keys()));
        let grouped = || {
            header(
                &a,
                Conversation::Group {
                    id: GroupId([7; 16]),
                    epoch: 3,
                },
            )
        };
        let mut group_envelope = seal(&alice, grouped(), &members, &plaintext)?;
        let group_sealing = time(group_iterations, || {
            group_envelope = seal(&alice, grouped(), &members, &plaintext).expect("seal");
        });
        let group_delivery = delivery_for(&group_envelope, &names[0]).expect("a member");
        let group_opening = time(iterations, || {
            open(&bob, &names[0], &group_delivery, alice.peer_keys()).expect("open");
        });
        let group_bytes = quip_proto::frame::encode(&group_envelope)?.len();

        let one_to_one = format!("RSA-{bits} 1:1");
        let group = format!("RSA-{bits} group of {GROUP}");
        for (case, seal_lat, open_lat, size) in [
            (&one_to_one, sealing, opening, bytes),
            (&group, group_sealing, group_opening, group_bytes),
        ] {
            let rows = [
                ("sender seal p50", seal_lat.p50_ms, "ms"),
                ("sender seal p99", seal_lat.p99_ms, "ms"),
                ("receiver open p50", open_lat.p50_ms, "ms"),
                ("receiver open p99", open_lat.p99_ms, "ms"),
                ("seals/s per core", 1e3 / seal_lat.p50_ms, "1/s"),
                ("opens/s per core", 1e3 / open_lat.p50_ms, "1/s"),
                ("envelope on the wire", size as f64, "B"),
            ];
            for (metric, value, unit) in rows {
                report.rows.push(Row::new(case, metric, value, unit));
            }
        }
        report.notes.push(format!(
            "RSA-{bits}: key generation {:.0} ms per key (once)",
            keygen.as_secs_f64() * 1e3
        ));
    }
    report.notes.push(format!(
        "{TEXT}-byte text; medians of {iterations} runs ({group_iterations} for group seals) \
         after one warm-up, one thread; group members share one public key under {GROUP} names"
    ));
    Ok(report)
}

fn header(sender: &UserName, conversation: Conversation) -> Header {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("OS randomness");
    Header {
        id: MsgId(id),
        sender: sender.clone(),
        conversation,
        kind: ContentKind::Text,
        sent_at_ms: 1_700_000_000_000,
        recipients: Vec::new(),
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
