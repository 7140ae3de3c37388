//! Open-loop text load between two users: messages scheduled at a fixed rate, latency
//! measured from each message's *intended* send time to its delivery, so a stall shows up as
//! latency instead of silently lowering the rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quip_cli::Connection;
use quip_proto::ClientToNode;
use quip_proto::ids::MsgId;

use crate::fixtures::{BenchUser, dm_envelope, msg_id, receive};

/// What one run of the load produced.
pub(crate) struct TextRun {
    pub(crate) sent: usize,
    pub(crate) latencies: Vec<Duration>,
}

/// Sends `rate` messages per second for `secs` from `sender` to `receiver` and collects the
/// latencies. Both connections must be logged in as the given users.
pub(crate) async fn run(
    sender: Arc<Connection>,
    from: &BenchUser,
    receiver: &mut Connection,
    to: &BenchUser,
    rate: u32,
    secs: f64,
) -> TextRun {
    let count = (f64::from(rate) * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let template = dm_envelope(from, to);
    let intended: Arc<Mutex<HashMap<MsgId, Instant>>> = Arc::default();
    let start = Instant::now() + Duration::from_millis(20);
    let schedule = intended.clone();
    let sending = tokio::spawn(async move {
        for i in 0..count {
            let at = start + interval * i as u32;
            tokio::time::sleep_until(at.into()).await;
            let mut env = template.clone();
            env.sealed.header.id = msg_id();
            schedule.lock().unwrap().insert(env.sealed.header.id, at);
            let sender = sender.clone();
            tokio::spawn(async move {
                let _ = sender
                    .request(|req| ClientToNode::Send { req, envelope: env })
                    .await;
            });
        }
    });
    let deadline = start + Duration::from_secs_f64(secs) + Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(count);
    receive(receiver, count, deadline, |id, at| {
        if let Some(sent) = intended.lock().unwrap().get(&id) {
            latencies.push(at - *sent);
        }
    })
    .await;
    let _ = sending.await;
    TextRun {
        sent: count,
        latencies,
    }
}
