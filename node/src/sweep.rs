//! The sweep: every [`NodeConfig::sweep_every`](crate::NodeConfig) it removes queued messages
//! nobody acknowledged within the retention (with their image blobs) and image uploads
//! abandoned unfinished, and tells each expired message's sender. Storage keeps the notices,
//! so a sender who is not connected here hears at their next login (any node); a sender
//! connected here hears at once.

use std::sync::Arc;

use quip_storage::Storage;
use tokio::sync::watch;

use crate::Node;
use crate::handler::message::expiry_frames;
use crate::handler::now_ms;
use crate::registry::Outgoing;

/// Most notices pushed to one online sender per sweep (the rest wait for their next login).
const NOTICES_PER_SWEEP: u32 = 512;

/// Sweeps until the node stops.
pub(crate) async fn run<S: Storage>(node: Arc<Node<S>>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(node.config.sweep_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = crate::stopping(&mut stop) => return,
        }
        once(&node).await;
    }
}

/// One sweep.
async fn once<S: Storage>(node: &Node<S>) {
    let now = now_ms();
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let abandoned = now.saturating_sub(millis(node.config.abandoned_upload));
    match node.storage.purge_unfinished_blobs(abandoned).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "abandoned uploads deleted"),
        Err(err) => tracing::warn!(error = %err, "cannot purge abandoned uploads"),
    }
    let before = now.saturating_sub(millis(node.config.retention));
    // Group logs: entries every member device has read, and anything past the retention.
    match node.storage.prune_mls(before).await {
        Ok(0) => {}
        Ok(pruned) => tracing::debug!(pruned, "group log entries pruned"),
        Err(err) => tracing::warn!(error = %err, "cannot prune group logs"),
    }
    let senders = match node.storage.expire(before, now).await {
        Ok(senders) => senders,
        Err(err) => {
            tracing::warn!(error = %err, "cannot expire old messages");
            return;
        }
    };
    for sender in senders {
        if !node.registry.with_sessions(&sender, |_| {}) {
            continue;
        }
        let notices = match node
            .storage
            .take_expiry_notices(&sender, NOTICES_PER_SWEEP)
            .await
        {
            Ok(notices) => notices,
            Err(err) => {
                tracing::warn!(error = %err, %sender, "cannot read expiry notices");
                continue;
            }
        };
        tracing::info!(%sender, expired = notices.len(), "telling sender of expired messages");
        let frames = expiry_frames(notices);
        node.registry.with_sessions(&sender, |session| {
            for frame in &frames {
                session.push(Outgoing::Frame(frame.clone()));
            }
        });
    }
}
