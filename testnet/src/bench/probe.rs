//! Temporary: storage commit latency under a DM-like load (not a scenario).

use std::time::{Duration, Instant};

use quip_proto::{ContentKind, Conversation};
use quip_storage::{NewMessage, Storage, Store};

use super::report::Latency;
use crate::fixtures::{envelope, msg_id, users};

pub(crate) async fn run(rate: u32, secs: f64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = Store::connect(&url).await?;
    let people = users(&store, "pr", 2).await?;
    let (from, to) = (&people[0], &people[1]);
    let template = envelope(
        &from.name,
        Conversation::Direct(to.name.clone()),
        ContentKind::Text,
        std::slice::from_ref(&to.name),
        120,
    );
    let key = template
        .keys
        .iter()
        .find(|k| k.recipient == to.name)
        .unwrap()
        .wrapped
        .clone();
    let mut enq = Vec::new();
    let mut acks = Vec::new();
    let mut pending = Vec::new();
    let start = Instant::now();
    let mut due = 0u64;
    let mut sizes = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        let should = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        let n = (should - due) as usize;
        if n == 0 {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        due = should;
        sizes += 1;
        let batch: Vec<NewMessage> = (0..n)
            .map(|_| {
                let mut sealed = template.sealed.clone();
                sealed.header.id = msg_id();
                NewMessage {
                    id: sealed.header.id,
                    sealed: quip_proto::frame::encode(&sealed).unwrap()[4..].to_vec(),
                    blob: None,
                    recipients: vec![(to.name.clone(), key.clone())],
                    created_at: 0,
                }
            })
            .collect();
        pending.extend(batch.iter().map(|m| m.id));
        let t = Instant::now();
        store.enqueue(&batch).await?;
        enq.push(t.elapsed());
        while pending.len() >= 64 {
            let ids: Vec<_> = pending.drain(..64).collect();
            let t = Instant::now();
            store.ack(&to.name, &ids).await?;
            acks.push(t.elapsed());
        }
    }
    let e = Latency::of(&mut enq);
    let a = Latency::of(&mut acks);
    Ok(format!(
        "rate {rate}: {} commits (avg batch {:.1}), enqueue p50 {:.2} p99 {:.2} max {:.2} ms; {} acks p50 {:.2} p99 {:.2} max {:.2} ms\n",
        e.count,
        (due as f64) / sizes as f64,
        e.p50_ms,
        e.p99_ms,
        e.max_ms,
        a.count,
        a.p50_ms,
        a.p99_ms,
        a.max_ms
    ))
}
