//! `bench image`: 20 MB images uploading while another pair exchanges text. With every image
//! on its own QUIC stream, text latency should barely move. Baseline: a bare quinn bulk upload
//! of the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quip_proto::ids::BlobId;
use quip_proto::{ContentKind, Conversation, NodeToClient};

use super::report::{Latency, Report, Row};
use super::{Options, text};
use crate::fixtures::{BenchNode, envelope, users};

const IMAGE_BYTES: usize = 20 * 1000 * 1000;
const CHUNK: usize = 64 * 1024 + 16;
const TEXT_RATE: u32 = 200;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let node = BenchNode::start(opts.database_url.as_deref()).await?;
    let people = users(&node.storage, "img", 4).await?;
    let [up, down, from, to] = [&people[0], &people[1], &people[2], &people[3]];
    let mut report = Report::new("image");
    let secs = opts.secs.max(2.0);

    // Text alone.
    let sender = Arc::new(node.connect(from).await?);
    let mut receiver = node.connect(to).await?;
    let mut alone = text::run(sender.clone(), from, &mut receiver, to, TEXT_RATE, secs).await;
    let alone_lat = Latency::of(&mut alone.latencies);

    // Text while images upload back to back.
    let uploader = node.connect(up).await?;
    let _downloader = node.connect(down).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_uploads = stop.clone();
    let (up_name, down_name) = (up.name.clone(), down.name.clone());
    let uploads = tokio::spawn(async move {
        let mut rates = Vec::new();
        let chunk = vec![0x77u8; CHUNK];
        let chunks = IMAGE_BYTES.div_ceil(CHUNK);
        while !stop_uploads.load(std::sync::atomic::Ordering::Relaxed) {
            let mut blob = [0u8; 16];
            getrandom::fill(&mut blob).expect("randomness");
            let env = envelope(
                &up_name,
                Conversation::Direct(down_name.clone()),
                ContentKind::Image {
                    blob: BlobId(blob),
                    len: (chunks * CHUNK) as u64,
                },
                std::slice::from_ref(&down_name),
                200,
            );
            let mut left = chunks;
            let started = Instant::now();
            let answer = uploader
                .upload(env, || {
                    let next = (left > 0).then(|| chunk.clone());
                    left = left.saturating_sub(1);
                    std::future::ready(Ok(next))
                })
                .await;
            if matches!(answer, Ok(NodeToClient::Stored { .. })) {
                rates.push((chunks * CHUNK) as f64 / started.elapsed().as_secs_f64() / 1e6);
            }
        }
        rates
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut during = text::run(sender, from, &mut receiver, to, TEXT_RATE, secs).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rates = uploads.await?;
    let during_lat = Latency::of(&mut during.latencies);
    rates.sort_by(f64::total_cmp);
    let upload_mbs = rates.get(rates.len() / 2).copied().unwrap_or(0.0);

    let bare_mbs = super::baseline::bulk(IMAGE_BYTES, CHUNK).await?;
    let case = format!("text {TEXT_RATE}/s");
    report
        .rows
        .push(Row::new(&case, "p50 alone", alone_lat.p50_ms, "ms"));
    report
        .rows
        .push(Row::new(&case, "p99 alone", alone_lat.p99_ms, "ms"));
    report.rows.push(Row::new(
        &case,
        "p50 during upload",
        during_lat.p50_ms,
        "ms",
    ));
    report.rows.push(Row::new(
        &case,
        "p99 during upload",
        during_lat.p99_ms,
        "ms",
    ));
    report.rows.push(Row::new(
        &case,
        "delivered",
        (alone_lat.count + during_lat.count) as f64,
        "msgs",
    ));
    report.rows.push(Row::new(
        &case,
        "sent",
        (alone.sent + during.sent) as f64,
        "msgs",
    ));
    report
        .rows
        .push(Row::new("20 MB image", "upload (median)", upload_mbs, "MB/s").vs(bare_mbs));
    report.notes.push(format!(
        "{} uploads completed during the text run",
        rates.len()
    ));
    report.notes.push(format!(
        "storage: {}",
        opts.database_url
            .as_deref()
            .map_or("sqlite (temp file)", |_| "postgres")
    ));
    Ok(report)
}
