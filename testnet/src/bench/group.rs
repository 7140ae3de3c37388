//! `bench group`: one group message fanned out to 10, 100 and 1,000 members on one node:
//! deliveries per second and the time until the last member has it. Baseline: a bare quinn
//! server writing the same-sized frame to as many connections. Members (Quip's and the
//! baseline's) are QUIC connections sharing 16 client UDP sockets, so the receiving side in
//! this process costs less than a socket per member would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quip_proto::ids::{GroupId, GroupName, MsgId, UserName};
use quip_proto::{ClientToNode, ContentKind, Conversation, Envelope};
use quip_storage::{NewGroup, NewMessage, Storage};

use super::Options;
use super::report::{Latency, Report, Row};
use super::support::{lean_receive, lean_resume, own_cpu, shared_endpoints};
use crate::fixtures::{BenchNode, envelope, msg_id, users};

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("group");
    let sizes: &[usize] = if opts.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000]
    };
    for &members in sizes {
        let messages = if members >= 1000 { 10 } else { 30 };
        let mut quip = fan_out(opts, members, messages).await?;
        let p99 = Latency::of(&mut quip.to_last).p99_ms;
        let bare = super::baseline::fanout(members, messages, quip.frame).await?;
        let case = format!("{members} members");
        report
            .rows
            .push(Row::new(&case, "deliveries/s", quip.rate, "1/s").vs(bare.rate));
        report
            .rows
            .push(Row::new(&case, "p99 to last member", p99, "ms").vs(bare.p99_ms));
        report
            .rows
            .push(Row::new(&case, "CPU per delivery", quip.cpu_us, "us").vs(bare.cpu_us));
        report.rows.push(Row::new(
            &case,
            "storage: one enqueue",
            quip.commit.as_secs_f64() * 1e3,
            "ms",
        ));
        report
            .rows
            .push(Row::new(&case, "delivery frame", quip.frame as f64, "B").vs(quip.frame as f64));
        report.rows.push(
            Row::new(
                &case,
                "delivered bytes/s",
                quip.rate * quip.frame as f64 / 1e6,
                "MB/s",
            )
            .vs(bare.rate * quip.frame as f64 / 1e6),
        );
    }
    report
        .notes
        .push("messages pipelined by one sender; each is stored once and queued per member".into());
    report.notes.push(
        "delivery frame: the sealed header names every member (the recipients are signed, \
         so no one can be slipped in), so a frame grows with the group; the bare baseline \
         sends frames of the same size"
            .into(),
    );
    report.notes.push(
        "CPU per delivery: this whole process (node, sender and members, or the bare server \
         and its clients) from the first send to the last delivery"
            .into(),
    );
    report.notes.push(
        "storage: one enqueue = median of 3 Storage::enqueue calls of such a message straight \
         to storage before the run (one transaction, a queue row per member): the storage \
         share of a message's cost"
            .into(),
    );
    Ok(report)
}

/// What one fan-out measured.
struct FanOut {
    /// Deliveries per second.
    rate: f64,
    /// Per message, the time to its last member.
    to_last: Vec<Duration>,
    /// The delivery frame each member receives, bytes.
    frame: usize,
    /// Storing one such message in storage alone.
    commit: Duration,
    /// CPU the whole process (node, sender, members) used per delivery, microseconds.
    cpu_us: f64,
}

async fn fan_out(opts: &Options, members: usize, messages: usize) -> anyhow::Result<FanOut> {
    let node = BenchNode::start(opts.database_url.as_deref()).await?;
    let people = users(&node.storage, "grp", members + 1).await?;
    let (sender, rest) = people.split_first().expect("at least one user");
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)?;
    let group = GroupId(id);
    node.storage
        .create_group(&NewGroup {
            id: group,
            name: GroupName::new("bench")?,
            creator: sender.name.clone(),
            members: rest.iter().map(|u| u.name.clone()).collect(),
            genesis: vec![0; 64],
            created_at: 0,
        })
        .await?;
    let commit = storage_share(&node, sender, rest, group).await?;
    let arrivals: Arc<Mutex<HashMap<MsgId, (usize, Instant)>>> = Arc::default();
    let mut readers = Vec::with_capacity(members);
    // Members share a few client sockets, so 1,000 simulated members do not cost 1,000 UDP
    // sockets and endpoint drivers in the process that measures.
    let endpoints = shared_endpoints(members)?;
    let config = quip_quic::client_config(
        &node.trust,
        quip_proto::ALPN_CLIENT,
        None,
        &quip_quic::Limits::client(),
    )?;
    let addr = node.handle.local_addr();
    for (i, member) in rest.iter().enumerate() {
        let endpoint = &endpoints[i % endpoints.len()];
        let mut client = lean_resume(endpoint, config.clone(), addr, member.token.clone()).await?;
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            lean_receive(&mut client, messages, deadline, |id, at| {
                let mut map = arrivals.lock().unwrap();
                let entry = map.entry(id).or_insert((0, at));
                entry.0 += 1;
                entry.1 = entry.1.max(at);
            })
            .await;
            client
        }));
    }
    let conn = node.connect(sender).await?;
    let names: Vec<_> = rest.iter().map(|u| u.name.clone()).collect();
    let template = group_text(&sender.name, group, &names);
    let frame = 4 + 3 + template.keys[0].wrapped.len() + postcard_len(&template);
    // Pipelined, like the baseline: every message is submitted without waiting for the
    // previous one's `Stored`.
    let conn = Arc::new(conn);
    let mut sent = Vec::with_capacity(messages);
    let mut pending = Vec::with_capacity(messages);
    let started = Instant::now();
    let cpu_start = own_cpu();
    for _ in 0..messages {
        let mut env = template.clone();
        env.sealed.header.id = msg_id();
        sent.push((env.sealed.header.id, Instant::now()));
        let conn = conn.clone();
        pending.push(tokio::spawn(async move {
            conn.request(|req| ClientToNode::Send { req, envelope: env })
                .await
        }));
    }
    for stored in pending {
        stored.await??;
    }
    let mut conns = Vec::new();
    for reader in readers {
        conns.push(reader.await?);
    }
    let cpu = own_cpu().saturating_sub(cpu_start);
    for client in &conns {
        client.close();
    }
    let map = std::mem::take(&mut *arrivals.lock().unwrap());
    let mut to_last = Vec::with_capacity(messages);
    let mut delivered = 0;
    let mut end = started;
    for (id, at) in &sent {
        if let Some((count, last)) = map.get(id) {
            delivered += count;
            to_last.push(*last - *at);
            end = end.max(*last);
        }
    }
    anyhow::ensure!(
        delivered == members * messages,
        "{delivered} of {} deliveries arrived",
        members * messages
    );
    Ok(FanOut {
        rate: delivered as f64 / (end - started).as_secs_f64(),
        to_last,
        frame,
        commit,
        cpu_us: cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
    })
}

/// The storage share of a group message: the median of three `Storage::enqueue` calls of
/// such a message straight to storage (one transaction, a queue row per member), made before
/// anyone connects; the rows are acknowledged away afterwards.
async fn storage_share(
    node: &BenchNode,
    sender: &crate::fixtures::BenchUser,
    rest: &[crate::fixtures::BenchUser],
    group: GroupId,
) -> anyhow::Result<Duration> {
    let names: Vec<_> = rest.iter().map(|u| u.name.clone()).collect();
    let mut commits = Vec::with_capacity(3);
    let mut ids = Vec::with_capacity(3);
    for _ in 0..3 {
        let extra = group_text(&sender.name, group, &names);
        let message = NewMessage {
            id: extra.sealed.header.id,
            sender: sender.name.clone(),
            sealed: quip_proto::frame::encode(&extra.sealed)?[4..].to_vec(),
            blob: None,
            recipients: extra
                .keys
                .iter()
                .filter(|k| k.recipient != sender.name)
                .map(|k| (k.recipient.clone(), k.wrapped.clone()))
                .collect(),
            created_at: super::support::now_ms(),
        };
        let committing = Instant::now();
        node.storage.enqueue(std::slice::from_ref(&message)).await?;
        commits.push(committing.elapsed());
        ids.push(message.id);
    }
    for member in rest {
        node.storage.ack(&member.name, &ids).await?;
    }
    commits.sort_unstable();
    Ok(commits[1])
}

fn postcard_len(envelope: &quip_proto::Envelope) -> usize {
    quip_proto::frame::encode(&envelope.sealed).map_or(0, |f| f.len() - 4)
}

/// A 120-byte text from `sender` to the group's first epoch.
fn group_text(sender: &UserName, group: GroupId, members: &[UserName]) -> Envelope {
    envelope(
        sender,
        Conversation::Group {
            id: group,
            epoch: 0,
        },
        ContentKind::Text,
        members,
        120,
    )
}
