//! `bench fanout`: an MLS group's application messages fanned out by a real node to 10, 100
//! and 1,000 member devices: deliveries per second, the time until the last member has a
//! message, CPU per delivery. Baseline: a bare quinn server writing the same-sized frame to
//! as many connections (`baseline::fanout`), in the same run.
//!
//! Setup goes through the node as a client would: users and their devices straight in
//! storage (one RSA-3072 account key shared under every name, as `bench mls` does; the node
//! checks credentials against it), the group built in-process with `quip_mls` and registered
//! with `CreateMlsGroup`, then the creator's commits (100 adds each) through `Handshake` with
//! their group info and Welcome. Each member resumes a session, sends `UseDevice`, drains its
//! Welcome and the commits after it, acknowledges them and only then counts `Log` entries:
//! it does not decrypt (this measures the node's fan-out, not the members' MLS). The creator
//! posts real `Device::encrypt` ciphertexts (encrypted before the clock starts) with up to
//! 32 `Post`s in flight. Members share 16 client UDP sockets, like `bench group`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quip_mls::device::Device;
use quip_mls::ds::{Incoming, PublicState};
use quip_mls::policy::GroupPolicy;
use quip_proto::ids::{DeviceId, GroupId, GroupName, UserName};
use quip_proto::{ClientToNode, NodeToClient, ReqId};
use quip_storage::{Appended, MlsChange, MlsEntry, MlsKind, NewDevice, NewMlsGroup, Storage};
use tokio::sync::{Semaphore, mpsc};

use super::Options;
use super::mls::Keys;
use super::report::{Latency, Report, Row};
use super::support::{Lean, lean_resume, now_ms, own_cpu, shared_endpoints, users_with_keys};
use crate::fixtures::{BenchNode, msg_id};

/// Bytes of text per message.
const TEXT: usize = 120;
/// Devices added per commit while the group is built.
const BATCH: usize = 100;
/// Posts the sender has in flight at most.
const IN_FLIGHT: usize = 32;
/// Every user's one device.
const DEVICE: DeviceId = DeviceId(1);
/// The longest any member or the sender waits for anything.
const DEADLINE: Duration = Duration::from_secs(180);
/// The first request id of the measured posts.
const FIRST_POST: ReqId = 1_000;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("fanout");
    let keys = Arc::new(tokio::task::spawn_blocking(Keys::generate).await??);
    let sizes: &[(usize, usize)] = if opts.quick {
        &[(10, 100), (100, 50)]
    } else {
        &[(10, 500), (100, 200), (1000, 100)]
    };
    for &(members, messages) in sizes {
        let mut quip = fan_out(opts, &keys, members, messages).await?;
        let p99 = Latency::of(&mut quip.to_last).p99_ms;
        let bare = super::baseline::fanout(members, messages, quip.frame).await?;
        let case = format!("{members} members");
        let rows = [
            Row::new(&case, "deliveries/s", quip.rate, "1/s").vs(bare.rate),
            Row::new(&case, "p99 to last member", p99, "ms").vs(bare.p99_ms),
            Row::new(&case, "CPU per delivery", quip.cpu_us, "us").vs(bare.cpu_us),
            Row::new(&case, "posts stored/s", quip.posts_rate, "1/s"),
            Row::new(
                &case,
                "storage: one append",
                quip.append.as_secs_f64() * 1e3,
                "ms",
            ),
            Row::new(&case, "delivery frame", quip.frame as f64, "B").vs(quip.frame as f64),
            Row::new(
                &case,
                "delivered bytes/s",
                quip.rate * quip.frame as f64 / 1e6,
                "MB/s",
            )
            .vs(bare.rate * quip.frame as f64 / 1e6),
        ];
        report.rows.extend(rows);
        let how = match quip.too_large {
            None => "registered through the node (CreateMlsGroup, Handshake)".to_string(),
            Some((devices, frame)) => format!(
                "written straight to storage (create_mls_group, append_mls, with the state \
                 quip_mls's delivery service computed): the commit adding {BATCH} devices to \
                 {devices} needs a {frame} B Handshake frame (its group info and Welcome each \
                 carry the ratchet tree), over the {} B frame limit, so the node cannot be \
                 asked",
                quip_proto::limits::MAX_FRAME
            ),
        };
        report.notes.push(format!(
            "{case}: {messages} messages; group {how}; setup and every member's drain took \
             {:.1} s",
            quip.setup.as_secs_f64()
        ));
    }
    report.notes.push(format!(
        "one sender posts {TEXT}-byte texts (real MLS ciphertexts, encrypted before the clock \
         starts) with up to {IN_FLIGHT} posts in flight; each is stored once in the group's \
         log and its one Log frame is pushed to every member device's session"
    ));
    report.notes.push(
        "deliveries/s: Log entries received by all members / time from the first post to \
         the last delivery; p99 to last member: per message, from its post to its last \
         delivery; posts stored/s: posts the node acknowledged (Appended) per second"
            .into(),
    );
    report.notes.push(
        "CPU per delivery: this whole process (node, sender and members, or the bare server \
         and its clients) from the first post to the last delivery; members decode frames \
         but do not decrypt"
            .into(),
    );
    report.notes.push(
        "storage: one append = median of 3 Storage::append_mls calls of such a message \
         straight to storage before the run (one transaction, one row)"
            .into(),
    );
    report
        .notes
        .push(super::support::storage_note(opts.database_url.as_deref()));
    Ok(report)
}

/// What one fan-out measured.
struct FanOut {
    /// Deliveries per second.
    rate: f64,
    /// Posts the node acknowledged per second.
    posts_rate: f64,
    /// Per message, the time from its post to its last member.
    to_last: Vec<Duration>,
    /// The `Log` frame each member receives for one message, bytes.
    frame: usize,
    /// Storing one such message in storage alone (median of 3).
    append: Duration,
    /// CPU the whole process (node, sender, members) used per delivery, microseconds.
    cpu_us: f64,
    /// Building the group, registering it and draining every member.
    setup: Duration,
    /// When the group was registered straight in storage: the group's size before the first
    /// commit whose `Handshake` frame would not fit, and that frame's size.
    too_large: Option<(usize, usize)>,
}

/// Arrivals per log seq: how many members have it, and when the last one got it.
type Arrivals = Arc<Mutex<HashMap<u64, (usize, Instant)>>>;

async fn fan_out(
    opts: &Options,
    keys: &Arc<Keys>,
    members: usize,
    messages: usize,
) -> anyhow::Result<FanOut> {
    super::support::vacuum_postgres(opts.database_url.as_deref()).await?;
    let node = BenchNode::start(opts.database_url.as_deref()).await?;
    let setup_started = Instant::now();
    // A well-formed placeholder hash no password matches: these users resume sessions.
    let hash = format!("$2b$12${}", "x".repeat(53));
    let people = users_with_keys(&node.storage, "fan", members + 1, &hash, &keys.spki).await?;
    let (creator_user, rest) = people.split_first().expect("at least one user");

    // Devices (an RSA signature each) and the members' key packages, off the runtime.
    let names: Vec<UserName> = people.iter().map(|u| u.name.clone()).collect();
    let k = keys.clone();
    let (mut creator, devices, packages) = tokio::task::spawn_blocking(move || {
        let mut devices = Vec::with_capacity(names.len());
        let mut packages = Vec::with_capacity(names.len());
        let mut creator = None;
        for name in &names {
            let device = k.device(name.as_str(), DEVICE.0)?;
            let (credential, signature_key) = device.enrollment();
            devices.push(NewDevice {
                user: name.clone(),
                device: DEVICE,
                credential,
                signature_key,
                created_at: now_ms(),
            });
            if creator.is_none() {
                creator = Some(device);
            } else {
                packages.push(device.key_packages(1, false)?.remove(0).1);
            }
        }
        anyhow::Ok((creator.expect("a creator"), devices, packages))
    })
    .await??;
    for device in &devices {
        node.storage.add_device(device).await?;
    }

    // The group: built in-process, every commit checked with the delivery service's code
    // as the node checks it, then registered through the node if every commit fits a frame
    // (else straight in storage, with the state that check produced).
    let group = GroupId(super::support::random());
    let built = build_group(&mut creator, keys, group, &packages)?;
    let endpoints = shared_endpoints(members + 1)?;
    let config = quip_quic::client_config(
        &node.trust,
        quip_proto::ALPN_CLIENT,
        None,
        &quip_quic::Limits::client(),
    )?;
    let addr = node.handle.local_addr();
    let mut sender = lean_resume(
        &endpoints[0],
        config.clone(),
        addr,
        creator_user.token.clone(),
    )
    .await?;
    expect_done(
        call(
            &mut sender,
            ClientToNode::UseDevice {
                req: 2,
                device: DEVICE,
            },
        )
        .await?,
    )?;
    // The first commit too large for a frame: (devices before it, its frame).
    let too_large = built
        .commits
        .iter()
        .position(|c| c.frame > quip_proto::limits::MAX_FRAME)
        .map(|i| (1 + i * BATCH, built.commits[i].frame));
    let through_node = too_large.is_none();
    if through_node {
        register_through_node(&mut sender, group, built).await?;
    } else {
        register_in_storage(&node, &creator_user.name, group, built).await?;
    }
    let append = storage_share(&node, &mut creator, group).await?;
    let record = node
        .storage
        .mls_group(&group)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the group is not in storage"))?;
    let drained_at = record.last_seq;

    // Members connect, drain their Welcome and the log so far, then count.
    let arrivals: Arrivals = Arc::default();
    let frame = Arc::new(AtomicUsize::new(0));
    let (ready_tx, mut ready_rx) = mpsc::channel(members.max(1));
    let mut readers = Vec::with_capacity(members);
    for (i, member) in rest.iter().enumerate() {
        let endpoint = &endpoints[(i + 1) % endpoints.len()];
        let client = lean_resume(endpoint, config.clone(), addr, member.token.clone()).await?;
        readers.push(tokio::spawn(member_task(
            client,
            Member {
                group,
                drained_at,
                messages,
                arrivals: arrivals.clone(),
                frame: frame.clone(),
            },
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let abort = |readers: &[tokio::task::JoinHandle<Lean>]| {
        for reader in readers {
            reader.abort();
        }
    };
    for _ in 0..members {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                abort(&readers);
                return Err(err.context("a member did not drain"));
            }
            None => {
                abort(&readers);
                anyhow::bail!("a member ended before draining");
            }
        }
    }
    let setup = setup_started.elapsed();

    // The measured phase.
    let text = [b'q'; TEXT];
    let ciphertexts = (0..messages)
        .map(|_| creator.encrypt(&group, &text))
        .collect::<Result<Vec<_>, _>>()?;
    let Lean {
        conn: sender_conn,
        send: mut sender_send,
        recv: mut sender_recv,
    } = sender;
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let acks = {
        let permits = permits.clone();
        tokio::spawn(async move {
            let result = appended(&mut sender_recv, messages, &permits).await;
            permits.close();
            result
        })
    };
    let started = Instant::now();
    let cpu_start = own_cpu();
    let mut sent_at = Vec::with_capacity(messages);
    for (i, message) in ciphertexts.into_iter().enumerate() {
        let Ok(permit) = permits.acquire().await else {
            break;
        };
        permit.forget();
        sent_at.push(Instant::now());
        let post = ClientToNode::Post {
            req: FIRST_POST + i as ReqId,
            group,
            id: msg_id(),
            message,
            blob: None,
        };
        if let Err(err) = sender_send.send(&post).await {
            abort(&readers);
            anyhow::bail!("posting: {err}");
        }
    }
    let stored = match acks.await? {
        Ok(stored) => stored,
        Err(err) => {
            abort(&readers);
            return Err(err);
        }
    };
    let mut clients = Vec::with_capacity(members);
    for reader in readers {
        clients.push(reader.await?);
    }
    let cpu = own_cpu().saturating_sub(cpu_start);
    for client in &clients {
        client.close();
    }
    sender_conn.close(0u32.into(), b"bye");

    let map = std::mem::take(&mut *arrivals.lock().unwrap_or_else(|e| e.into_inner()));
    let mut to_last = Vec::with_capacity(messages);
    let mut delivered = 0;
    let mut end = started;
    let mut last_stored = started;
    for (req, seq, at) in &stored {
        last_stored = last_stored.max(*at);
        let sent = sent_at[(req - FIRST_POST) as usize];
        if let Some((count, last)) = map.get(seq) {
            delivered += count;
            to_last.push(*last - sent);
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
        posts_rate: messages as f64 / (last_stored - started).as_secs_f64(),
        to_last,
        frame: frame.load(Ordering::Relaxed),
        append,
        cpu_us: cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        setup,
        too_large,
    })
}

/// A commit the creator made and the delivery service's code accepted.
struct Commit {
    id: quip_proto::ids::MsgId,
    /// The epoch it was made in.
    epoch: u64,
    message: Vec<u8>,
    group_info: Vec<u8>,
    welcome: Vec<u8>,
    /// Its `Handshake` frame, bytes.
    frame: usize,
    /// What the node would store with it.
    new_epoch: u64,
    name: GroupName,
    state: Vec<u8>,
    added: Vec<(UserName, DeviceId)>,
    used_key_packages: Vec<Vec<u8>>,
}

/// A group built in-process: its first state and the commits that added every member.
struct Built {
    group_info: Vec<u8>,
    ratchet_tree: Vec<u8>,
    name: GroupName,
    state: Vec<u8>,
    commits: Vec<Commit>,
}

/// The creator makes the group and adds the members' key packages, [`BATCH`] a commit;
/// each commit goes through the delivery service's checks (`PublicState`) before the
/// creator confirms it.
fn build_group(
    creator: &mut Device,
    keys: &Keys,
    group: GroupId,
    packages: &[Vec<u8>],
) -> anyhow::Result<Built> {
    let policy = GroupPolicy::new(GroupName::new("bench")?, vec![creator.me().user.clone()]);
    let created = creator.create_group(group, &policy)?;
    let (mut ds, policy) = PublicState::create(
        &group,
        &created.group_info,
        &created.ratchet_tree,
        creator.me(),
        &keys.spki,
    )?;
    let state = ds.to_bytes();
    let mut commits = Vec::with_capacity(packages.len().div_ceil(BATCH));
    for batch in packages.chunks(BATCH) {
        let checked = creator.check_key_packages(batch, keys.lookup())?;
        let out = creator.add(&group, checked)?;
        let epoch = ds.epoch();
        let Incoming::Commit(pending) = ds.read(&out.commit, creator.me())? else {
            anyhow::bail!("an add is not a commit");
        };
        let accepted = ds.accept_commit(pending.check(keys.lookup())?, &out.group_info)?;
        creator.confirm(&group)?;
        let welcome = out
            .welcome
            .ok_or_else(|| anyhow::anyhow!("an add without a Welcome"))?;
        let id = msg_id();
        let handshake = ClientToNode::Handshake {
            req: 0,
            group,
            id,
            message: out.commit,
            group_info: Some(out.group_info),
            welcome: Some(welcome),
        };
        // Its size whether or not it fits a frame (postcard: a few bytes of framing).
        let frame = quip_proto::frame::encode(&handshake).map_or_else(
            |_| {
                let ClientToNode::Handshake {
                    message,
                    group_info,
                    welcome,
                    ..
                } = &handshake
                else {
                    unreachable!("built above")
                };
                message.len()
                    + group_info.as_ref().map_or(0, Vec::len)
                    + welcome.as_ref().map_or(0, Vec::len)
            },
            |f| f.len(),
        );
        let ClientToNode::Handshake {
            message,
            group_info: Some(group_info),
            welcome: Some(welcome),
            ..
        } = handshake
        else {
            unreachable!("built above")
        };
        commits.push(Commit {
            id,
            epoch,
            message,
            group_info,
            welcome,
            frame,
            new_epoch: accepted.epoch,
            name: accepted.policy.name.clone(),
            state: ds.to_bytes(),
            added: accepted
                .added
                .iter()
                .map(|(d, _)| (d.user.clone(), d.device))
                .collect(),
            used_key_packages: accepted.added.iter().map(|(_, r)| r.clone()).collect(),
        });
    }
    Ok(Built {
        group_info: created.group_info,
        ratchet_tree: created.ratchet_tree,
        name: policy.name,
        state,
        commits,
    })
}

/// `CreateMlsGroup`, then each commit through `Handshake` (the node checks it all again).
async fn register_through_node(
    sender: &mut Lean,
    group: GroupId,
    built: Built,
) -> anyhow::Result<()> {
    expect_done(
        call(
            sender,
            ClientToNode::CreateMlsGroup {
                req: 3,
                group,
                group_info: built.group_info,
                ratchet_tree: built.ratchet_tree,
            },
        )
        .await?,
    )?;
    for (n, commit) in built.commits.into_iter().enumerate() {
        let adds = commit.added.len();
        let answer = call(
            sender,
            ClientToNode::Handshake {
                req: 4 + n as ReqId,
                group,
                id: commit.id,
                message: commit.message,
                group_info: Some(commit.group_info),
                welcome: Some(commit.welcome),
            },
        )
        .await?;
        anyhow::ensure!(
            matches!(answer, NodeToClient::Appended { fresh: true, .. }),
            "a commit adding {adds} devices was answered {answer:?}"
        );
    }
    Ok(())
}

/// The group and its commits straight in storage, as the node would store them (before
/// the node ever loads the group).
async fn register_in_storage(
    node: &BenchNode,
    creator: &UserName,
    group: GroupId,
    built: Built,
) -> anyhow::Result<()> {
    node.storage
        .create_mls_group(&NewMlsGroup {
            id: group,
            name: built.name,
            epoch: 0,
            state: built.state,
            group_info: built.group_info,
            members: vec![(creator.clone(), DEVICE)],
            created_at: now_ms(),
        })
        .await?;
    for commit in built.commits {
        let version = node
            .storage
            .mls_group(&group)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the group is not in storage"))?
            .state_version;
        let welcomes = commit
            .added
            .iter()
            .map(|(user, device)| (user.clone(), *device, commit.welcome.clone()))
            .collect();
        let entry = MlsEntry {
            group,
            id: commit.id,
            sender: (creator.clone(), DEVICE),
            kind: MlsKind::Commit,
            epoch: commit.epoch,
            body: commit.message,
            blob: None,
            change: Some(MlsChange {
                state_version: version,
                epoch: commit.new_epoch,
                name: commit.name,
                state: commit.state,
                group_info: commit.group_info,
                added: commit.added,
                removed: Vec::new(),
                used_key_packages: commit.used_key_packages,
                welcomes,
            }),
            at: now_ms(),
        };
        let outcome = node
            .storage
            .append_mls(std::slice::from_ref(&entry), u64::MAX / 2)
            .await?;
        anyhow::ensure!(
            matches!(outcome.as_slice(), [Appended::Stored { .. }]),
            "a commit written to storage answered {outcome:?}"
        );
    }
    Ok(())
}

/// Sends a request and reads frames (skipping pushes) until its answer.
async fn call(client: &mut Lean, msg: ClientToNode) -> anyhow::Result<NodeToClient> {
    let req = msg.req().expect("a request");
    let kind = msg.kind();
    client.send.send(&msg).await?;
    tokio::time::timeout(DEADLINE, async {
        loop {
            match client.recv.recv::<NodeToClient>().await? {
                Some(answer) if answer.req() == Some(req) => return Ok(answer),
                Some(_) => {}
                None => anyhow::bail!("the node closed the stream before answering {kind}"),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{kind}: no answer within {DEADLINE:?}"))?
}

fn expect_done(answer: NodeToClient) -> anyhow::Result<()> {
    match answer {
        NodeToClient::Done { .. } => Ok(()),
        other => anyhow::bail!("answered {other:?}"),
    }
}

/// Reads the sender's answers until `messages` posts are stored, giving back a permit for
/// each: (request, seq, when).
async fn appended(
    recv: &mut quip_quic::FramedRecv,
    messages: usize,
    permits: &Semaphore,
) -> anyhow::Result<Vec<(ReqId, u64, Instant)>> {
    let mut stored = Vec::with_capacity(messages);
    let deadline = Instant::now() + DEADLINE;
    while stored.len() < messages {
        let next = tokio::time::timeout_at(deadline.into(), recv.recv::<NodeToClient>());
        match next.await {
            Ok(Ok(Some(NodeToClient::Appended {
                req,
                seq,
                fresh: true,
                ..
            }))) if req >= FIRST_POST => {
                stored.push((req, seq, Instant::now()));
                permits.add_permits(1);
            }
            Ok(Ok(Some(err @ NodeToClient::Error { .. }))) => {
                anyhow::bail!("a post was refused: {err:?}")
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => anyhow::bail!("the node closed the sender's stream"),
            Ok(Err(err)) => anyhow::bail!("the sender's stream failed: {err}"),
            Err(_) => anyhow::bail!(
                "{} of {messages} posts stored within {DEADLINE:?}",
                stored.len()
            ),
        }
    }
    Ok(stored)
}

/// What a member task needs.
struct Member {
    group: GroupId,
    /// The log's last seq before the measured phase.
    drained_at: u64,
    /// Messages to count.
    messages: usize,
    arrivals: Arrivals,
    /// The delivery frame's size, once someone measured it.
    frame: Arc<AtomicUsize>,
}

/// One member: `UseDevice`, drain, report ready, count; gives its connection back.
async fn member_task(
    mut client: Lean,
    member: Member,
    ready: mpsc::Sender<anyhow::Result<()>>,
) -> Lean {
    let deadline = Instant::now() + DEADLINE;
    let drained = drain(&mut client, &member, deadline).await;
    let ok = drained.is_ok();
    let _ = ready.send(drained).await;
    if ok {
        count(&mut client, &member, deadline).await;
    }
    client
}

/// Takes the device, reads its Welcome and the log up to `drained_at`, acknowledges them,
/// and waits (one more round trip) until the node has stored those acknowledgements, so
/// none of this lands in the measured phase.
async fn drain(client: &mut Lean, member: &Member, deadline: Instant) -> anyhow::Result<()> {
    client
        .send
        .send(&ClientToNode::UseDevice {
            req: 2,
            device: DEVICE,
        })
        .await?;
    let (mut done, mut welcome, mut seen) = (false, None, 0);
    while !(done && welcome.is_some() && seen >= member.drained_at) {
        let next = tokio::time::timeout_at(deadline.into(), client.recv.recv::<NodeToClient>());
        match next.await {
            Ok(Ok(Some(NodeToClient::Done { req: 2 }))) => done = true,
            Ok(Ok(Some(NodeToClient::Welcome { id, group, .. }))) if group == member.group => {
                welcome = Some(id);
            }
            Ok(Ok(Some(NodeToClient::Log { group, entries }))) if group == member.group => {
                seen = entries.iter().map(|e| e.seq).fold(seen, u64::max);
            }
            Ok(Ok(Some(err @ NodeToClient::Error { .. }))) => anyhow::bail!("{err:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => anyhow::bail!("the node closed the stream"),
            Ok(Err(err)) => anyhow::bail!("{err}"),
            Err(_) => anyhow::bail!(
                "drained to seq {seen} of {} (welcome: {}) within {DEADLINE:?}",
                member.drained_at,
                welcome.is_some()
            ),
        }
    }
    client
        .send
        .send(&ClientToNode::AckLog {
            entries: vec![(member.group, seen)],
            welcomes: welcome.into_iter().collect(),
        })
        .await?;
    let answer = call(
        client,
        ClientToNode::ListMlsGroups {
            req: 3,
            after: None,
            limit: 1,
        },
    )
    .await?;
    anyhow::ensure!(
        matches!(answer, NodeToClient::MlsGroups { .. }),
        "ListMlsGroups answered {answer:?}"
    );
    Ok(())
}

/// Counts `Log` entries after `drained_at` until `messages` arrived or the deadline,
/// acknowledging every 64 and at the end (as a device does).
async fn count(client: &mut Lean, member: &Member, deadline: Instant) {
    let (mut got, mut highest, mut acked) = (0, member.drained_at, member.drained_at);
    while got < member.messages {
        let next = tokio::time::timeout_at(deadline.into(), client.recv.recv::<NodeToClient>());
        match next.await {
            Ok(Ok(Some(msg @ NodeToClient::Log { .. }))) => {
                let at = Instant::now();
                let NodeToClient::Log { group, entries } = &msg else {
                    unreachable!("matched above");
                };
                if *group != member.group {
                    continue;
                }
                if entries.len() == 1 && member.frame.load(Ordering::Relaxed) == 0 {
                    let len = quip_proto::frame::encode(&msg).map_or(0, |f| f.len());
                    member.frame.store(len, Ordering::Relaxed);
                }
                let fresh: Vec<u64> = entries
                    .iter()
                    .map(|e| e.seq)
                    .filter(|&seq| seq > member.drained_at)
                    .collect();
                {
                    let mut map = member.arrivals.lock().unwrap_or_else(|e| e.into_inner());
                    for seq in &fresh {
                        let entry = map.entry(*seq).or_insert((0, at));
                        entry.0 += 1;
                        entry.1 = entry.1.max(at);
                    }
                }
                got += fresh.len();
                highest = fresh.iter().copied().fold(highest, u64::max);
                if highest - acked >= 64 {
                    let ack = ClientToNode::AckLog {
                        entries: vec![(member.group, highest)],
                        welcomes: Vec::new(),
                    };
                    let sent = client.send.send(&ack);
                    if tokio::time::timeout_at(deadline.into(), sent)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    acked = highest;
                }
            }
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
    if highest > acked {
        let ack = ClientToNode::AckLog {
            entries: vec![(member.group, highest)],
            welcomes: Vec::new(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), client.send.send(&ack)).await;
    }
}

/// The storage share of a post: the median of three `Storage::append_mls` calls of such a
/// message straight to storage, made before any member connects (they drain them).
async fn storage_share(
    node: &BenchNode,
    creator: &mut Device,
    group: GroupId,
) -> anyhow::Result<Duration> {
    let record = node
        .storage
        .mls_group(&group)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the group is not in storage"))?;
    let me = creator.me().clone();
    let mut appends = Vec::with_capacity(3);
    for _ in 0..3 {
        let entry = MlsEntry {
            group,
            id: msg_id(),
            sender: (me.user.clone(), me.device),
            kind: MlsKind::Application,
            epoch: record.epoch,
            body: creator.encrypt(&group, &[b'q'; TEXT])?,
            blob: None,
            change: None,
            at: now_ms(),
        };
        let started = Instant::now();
        let outcome = node
            .storage
            .append_mls(std::slice::from_ref(&entry), u64::MAX / 2)
            .await?;
        appends.push(started.elapsed());
        anyhow::ensure!(
            matches!(outcome.as_slice(), [Appended::Stored { .. }]),
            "a direct append answered {outcome:?}"
        );
    }
    appends.sort_unstable();
    Ok(appends[1])
}
