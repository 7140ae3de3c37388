//! Group commit for the message queues: every session hands its accepted envelopes and its
//! client's acknowledgements to one writer task, which persists whatever has gathered as a
//! single storage transaction ([`Storage::commit`]), then answers each sender and pushes each
//! fresh message to its online recipients in commit order. One commit serves many senders and
//! receivers, and a push never precedes durability.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use quip_proto::ids::MsgId;
use quip_proto::ids::UserName;
use quip_storage::{Ack, Enqueued, NewMessage, QueueQuota, Storage};
use tokio::sync::{mpsc, oneshot};

use quip_proto::relay::Relayed;
use quip_proto::{Sealed, WrappedKey};

use crate::master::{Counter, ToMaster, Uplink};
use crate::registry::{Outbox, Outgoing, Registry};

/// Most messages and acks committed in one transaction.
const MAX_BATCH: usize = 512;
/// Messages and acks waiting for the writer before sessions wait.
const BACKLOG: usize = 8192;
/// Acknowledged ids one commit removes when nothing is behind (a single larger ack still goes
/// alone; a backlog is taken a quarter at a time). Deleting
/// is the slow half of a commit — on Postgres about 20 µs per queue row and again per message
/// — and messages in the same commit wait for it. `bench dm` on Postgres, same node: with
/// no budget, commits of up to 30,000 ids and p99 < 50 ms only up to 3,000 msg/s; with 256,
/// p99 34 ms at 10,000 msg/s.
const ACK_BUDGET: usize = 256;

/// Work for the writer.
enum Op {
    Enqueue(Job),
    Ack(AckJob),
}

/// A client's acknowledgement, and the session to tell once it is committed.
struct AckJob {
    ack: Ack,
    outbox: Outbox,
}

/// One accepted envelope on its way to storage.
pub(crate) struct Job {
    pub(crate) message: NewMessage,
    /// The encoded sealed part, shared by every recipient's delivery.
    pub(crate) sealed: Bytes,
    /// Each local-or-remote recipient with their delivery prefix (see `deliver_prefix`).
    pub(crate) prefixes: Vec<(UserName, Bytes)>,
    pub(crate) done: oneshot::Sender<Result<Enqueued, String>>,
}

/// Handle for submitting jobs, in order.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    pub(crate) fn spawn<S: Storage>(
        storage: Arc<S>,
        registry: Arc<Registry>,
        uplink: Option<Uplink>,
        accepted: Arc<Counter>,
        quota: QueueQuota,
    ) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(run(
            storage,
            Routes {
                registry,
                uplink,
                accepted,
            },
            quota,
            rx,
        ));
        Self { tx }
    }

    /// Queues a job. Jobs from one caller are committed and pushed in submission order.
    pub(crate) async fn submit(&self, job: Job) -> Result<(), ()> {
        self.tx.send(Op::Enqueue(job)).await.map_err(drop)
    }

    /// Queues `user`'s acknowledgement; once it is committed, `outbox` hears `Acked` (so the
    /// session stops treating those ids as written-but-unacknowledged). A failed commit only
    /// leaves the messages queued, to be delivered again: the client drops repeats by id.
    pub(crate) async fn ack(
        &self,
        user: UserName,
        ids: Vec<MsgId>,
        outbox: Outbox,
    ) -> Result<(), ()> {
        let job = AckJob {
            ack: Ack { user, ids },
            outbox,
        };
        self.tx.send(Op::Ack(job)).await.map_err(drop)
    }
}

/// Where committed messages go: local sessions, and the master for everyone else.
struct Routes {
    registry: Arc<Registry>,
    uplink: Option<Uplink>,
    accepted: Arc<Counter>,
}

impl Routes {
    /// Pushes a freshly stored message to its recipients here and relays it for the others.
    fn route(&self, job: &Job, message: &NewMessage) {
        self.accepted.add(1);
        let mut remote = Vec::new();
        for ((user, prefix), (_, wrapped)) in job.prefixes.iter().zip(&message.recipients) {
            let here = self.registry.with_sessions(user, |session| {
                session.push(Outgoing::Deliver {
                    id: job.message.id,
                    prefix: prefix.clone(),
                    sealed: job.sealed.clone(),
                })
            });
            if !here {
                remote.push(WrappedKey {
                    recipient: user.clone(),
                    wrapped: wrapped.clone(),
                });
            }
        }
        if let Some(uplink) = self.uplink.as_ref().filter(|_| !remote.is_empty())
            && let Ok(sealed) = quip_proto::frame::decode_body::<Sealed>(&job.sealed)
        {
            uplink.send(ToMaster::Relay(Relayed {
                sealed,
                keys: remote,
            }));
        }
    }
}

async fn run<S: Storage>(
    storage: Arc<S>,
    routes: Routes,
    quota: QueueQuota,
    mut rx: mpsc::Receiver<Op>,
) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    // This round's acks, and beside each the session to tell once it is committed.
    let mut acks: Vec<Ack> = Vec::new();
    let mut outboxes: Vec<Outbox> = Vec::new();
    // Acks beyond one commit's budget, oldest first: they wait for the next round, so a burst
    // of acknowledgements never holds fresh messages back for long.
    let mut waiting: VecDeque<AckJob> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            if rx.recv_many(&mut ops, MAX_BATCH).await == 0 {
                break;
            }
        } else {
            while ops.len() < MAX_BATCH {
                let Ok(op) = rx.try_recv() else { break };
                ops.push(op);
            }
        }
        for op in ops.drain(..) {
            match op {
                Op::Enqueue(job) => jobs.push(job),
                Op::Ack(ack) => waiting.push_back(ack),
            }
        }
        // Under a backlog the bites grow with it, so waiting acks always drain (and the
        // memory they hold stays bounded) instead of piling up behind a fixed budget.
        let behind: usize = waiting.iter().map(|job| job.ack.ids.len()).sum();
        let mut budget = ACK_BUDGET.max(behind / 4);
        while let Some(front) = waiting.front()
            && (acks.is_empty() || front.ack.ids.len() <= budget)
            && let Some(job) = waiting.pop_front()
        {
            budget = budget.saturating_sub(job.ack.ids.len());
            acks.push(job.ack);
            outboxes.push(job.outbox);
        }
        let messages: Vec<NewMessage> = jobs
            .iter_mut()
            .map(|job| NewMessage {
                recipients: std::mem::take(&mut job.message.recipients),
                sealed: std::mem::take(&mut job.message.sealed),
                ..job.message.clone()
            })
            .collect();
        // Storage refuses a bad or over-quota message on its own (`Enqueued::Refused`), so an
        // error here is the database's, and no message of the batch was written: each sender
        // hears it and may send again; the acks' messages stay queued, to be delivered again.
        let outcomes: Vec<Result<Enqueued, String>> = match storage
            .commit(&messages, &acks, &quota)
            .await
        {
            Ok(committed) => {
                confirm(&mut acks, &mut outboxes);
                committed.enqueued.into_iter().map(Ok).collect()
            }
            Err(err) => {
                tracing::error!(error = %err, messages = messages.len(), acks = acks.len(), "commit failed");
                acks.clear();
                outboxes.clear();
                let why = err.to_string();
                messages.iter().map(|_| Err(why.clone())).collect()
            }
        };
        for ((job, outcome), message) in jobs.drain(..).zip(outcomes).zip(&messages) {
            if let Err(why) = &outcome {
                tracing::error!(error = %why, id = %job.message.id, "enqueue failed");
            }
            if outcome == Ok(Enqueued::Stored) {
                routes.route(&job, message);
            }
            let _ = job.done.send(outcome);
        }
    }
}

/// Tells each session that its acknowledgement is committed, emptying both lists.
fn confirm(acks: &mut Vec<Ack>, outboxes: &mut Vec<Outbox>) {
    for (ack, outbox) in acks.drain(..).zip(outboxes.drain(..)) {
        // Never wait on the outbox: it is the queue deliveries fill, and a session whose
        // client reads slowly must not stall every other one. A dropped note only leaves
        // acked ids in the writer's skip set.
        outbox.note(Outgoing::Acked(ack.ids));
    }
}
