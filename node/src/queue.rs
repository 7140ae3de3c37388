//! Group commit for the message queues: every session hands its accepted envelopes to one
//! writer task, which persists whatever has gathered as a single storage transaction, then
//! answers each sender and pushes each fresh message to its online recipients in commit
//! order. One round trip serves many messages, and a push never precedes durability.

use std::sync::Arc;

use bytes::Bytes;
use quip_proto::ids::UserName;
use quip_storage::{Enqueued, NewMessage, Storage};
use tokio::sync::{mpsc, oneshot};

use quip_proto::relay::Relayed;
use quip_proto::{Sealed, WrappedKey};

use crate::master::{Counter, ToMaster, Uplink};
use crate::registry::{Outgoing, Registry};

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 512;
/// Messages waiting for the writer before senders wait.
const BACKLOG: usize = 8192;

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
pub(crate) struct Enqueuer {
    tx: mpsc::Sender<Job>,
}

impl Enqueuer {
    pub(crate) fn spawn<S: Storage>(
        storage: Arc<S>,
        registry: Arc<Registry>,
        uplink: Option<Uplink>,
        accepted: Arc<Counter>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(run(
            storage,
            Routes {
                registry,
                uplink,
                accepted,
            },
            rx,
        ));
        Self { tx }
    }

    /// Queues a job. Jobs from one caller are committed and pushed in submission order.
    pub(crate) async fn submit(&self, job: Job) -> Result<(), Job> {
        self.tx.send(job).await.map_err(|e| e.0)
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

async fn run<S: Storage>(storage: Arc<S>, routes: Routes, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let messages: Vec<NewMessage> = jobs
            .iter_mut()
            .map(|job| NewMessage {
                recipients: std::mem::take(&mut job.message.recipients),
                sealed: std::mem::take(&mut job.message.sealed),
                ..job.message.clone()
            })
            .collect();
        let outcomes = match storage.enqueue(&messages).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // The batch is all-or-nothing; one bad message must not fail its neighbours,
            // so retry each on its own and answer each with its own result.
            Err(err) if messages.len() > 1 => {
                tracing::warn!(error = %err, batch = messages.len(), "batch failed; retrying one by one");
                let mut each = Vec::with_capacity(messages.len());
                for message in &messages {
                    each.push(match storage.enqueue(std::slice::from_ref(message)).await {
                        Ok(mut one) => one.pop().ok_or_else(|| "no outcome".to_owned()),
                        Err(err) => Err(err.to_string()),
                    });
                }
                each
            }
            Err(err) => vec![Err(err.to_string())],
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
