//! The checker behind the drills and the live view: it knows every message a simulated user
//! tried to send, which of them the node acknowledged (`Stored`), every delivery that reached
//! a client, and what the client showed after dropping repeats by id. From that it counts
//! what was lost (acknowledged, never shown to a recipient) and what was shown twice, and it
//! times how long users of a killed node took to be back on a live one.
//!
//! Messages are identified by a tag at the start of their text (`SENDER/SEQ`), so a message
//! whose send failed before the node answered can still be recognised if it arrives anyway.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quip_proto::ids::{MsgId, UserName};
use serde::Serialize;

/// Reasons kept as examples, per kind.
const SAMPLES: usize = 5;

#[derive(Debug)]
struct Attempt {
    at: Instant,
    expect: Vec<UserName>,
    acked: bool,
    id: Option<MsgId>,
}

#[derive(Debug, Default)]
struct Inner {
    attempts: HashMap<String, Attempt>,
    /// Tags sent and not answered yet.
    in_flight: HashSet<String>,
    /// Times each recipient was shown each tag, and when first.
    shown: HashMap<(String, UserName), (u32, Instant)>,
    /// Deliveries that reached a client, before its duplicate drop.
    raw: HashMap<(MsgId, UserName), u32>,
    send_failures: u64,
    failure_samples: Vec<String>,
    rejected: u64,
    rejected_samples: Vec<String>,
    images_sent: u64,
    images_shown: u64,
    untagged_shown: u64,
    reconnects: u64,
    placement: HashMap<UserName, SocketAddr>,
    /// Users whose node was killed: which death, and when.
    awaiting: HashMap<UserName, (usize, Instant)>,
    recoveries: Vec<Recovery>,
}

/// The shared record of a run. Cheap to update from many tasks.
#[derive(Debug, Default)]
pub struct Ledger(Mutex<Inner>);

/// What a ledger counted, ready to print or serialise.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Messages the simulated users tried to send.
    pub sent: u64,
    /// Of those, acknowledged by a node as stored.
    pub acknowledged: u64,
    /// Send attempts that failed (connection lost, refused, timed out).
    pub send_failures: u64,
    /// (message, recipient) pairs the acknowledged messages owe.
    pub expected_deliveries: u64,
    /// Distinct (message, recipient) pairs shown, acknowledged or not.
    pub delivered: u64,
    /// Shown although the sender never got `Stored` (stored just before a crash).
    pub delivered_unacknowledged: u64,
    /// Acknowledged pairs never shown.
    pub lost: u64,
    /// Pairs shown more than once by the client layer.
    pub shown_twice: u64,
    /// Deliveries that reached a client again and were dropped by id.
    pub redelivered_dropped: u64,
    /// Deliveries the client refused (verification failed, keys unavailable); usually
    /// retried after a reconnect.
    pub rejected: u64,
    /// Images sent and shown (the live view's chatter only).
    pub images_sent: u64,
    /// Images received and saved.
    pub images_shown: u64,
    /// Messages shown that no simulated user sent (a person chatting with them).
    pub other_shown: u64,
    /// Successful reconnects of simulated users.
    pub reconnects: u64,
    /// Examples of send failures.
    pub failure_samples: Vec<String>,
    /// Examples of rejected deliveries.
    pub rejected_samples: Vec<String>,
    /// Examples of lost messages: `TAG -> RECIPIENT (message id)`.
    pub lost_samples: Vec<String>,
    /// From send to first shown, ms, over every delivered pair: p50, p99, max.
    pub latency_ms: [Option<u64>; 3],
    /// For each user of a killed node: the time until it was back on a live node.
    pub recoveries: Vec<Recovery>,
}

/// One user's way back after its node was killed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Recovery {
    /// Which death (the number given to [`Ledger::node_died`]).
    pub death: usize,
    /// From the kill to the session resumed on a live node, in ms.
    pub ms: u64,
}

/// The tag at the start of a simulated message's text.
pub fn tag(sender: &UserName, seq: u64) -> String {
    format!("{sender}/{seq}")
}

fn push_sample(samples: &mut Vec<String>, text: String) {
    if samples.len() < SAMPLES && !samples.contains(&text) {
        samples.push(text);
    }
}

impl Ledger {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A text message with `tag` is about to be sent to `expect` (the sender not included).
    pub fn attempt(&self, tag: &str, expect: Vec<UserName>) {
        let mut inner = self.inner();
        inner.in_flight.insert(tag.to_owned());
        inner.attempts.insert(
            tag.to_owned(),
            Attempt {
                at: Instant::now(),
                expect,
                acked: false,
                id: None,
            },
        );
    }

    /// An image was sent (images are counted, not tracked one by one).
    pub fn image_sent(&self) {
        self.inner().images_sent += 1;
    }

    /// The node answered `Stored` for `tag`, message `id`.
    pub fn acknowledged(&self, tag: &str, id: MsgId) {
        let mut inner = self.inner();
        inner.in_flight.remove(tag);
        if let Some(attempt) = inner.attempts.get_mut(tag) {
            attempt.acked = true;
            attempt.id = Some(id);
        }
    }

    /// Sending failed (the message `tag`, for text).
    pub fn send_failed(&self, tag: Option<&str>, why: String) {
        let mut inner = self.inner();
        if let Some(tag) = tag {
            inner.in_flight.remove(tag);
        }
        inner.send_failures += 1;
        push_sample(&mut inner.failure_samples, why);
    }

    /// A delivery of `id` reached `user`'s client (before its duplicate drop).
    pub fn delivery(&self, user: &UserName, id: MsgId) {
        *self.inner().raw.entry((id, user.clone())).or_default() += 1;
    }

    /// `user`'s client showed a message with this text.
    pub fn shown(&self, user: &UserName, text: &str) {
        let tag = text.split(' ').next().unwrap_or_default();
        let mut inner = self.inner();
        if inner.attempts.contains_key(tag) {
            inner
                .shown
                .entry((tag.to_owned(), user.clone()))
                .or_insert((0, Instant::now()))
                .0 += 1;
        } else {
            inner.untagged_shown += 1;
        }
    }

    /// `user`'s client received and saved an image.
    pub fn image_shown(&self) {
        self.inner().images_shown += 1;
    }

    /// `user`'s client refused a delivery.
    pub fn rejected(&self, user: &UserName, why: String) {
        let mut inner = self.inner();
        inner.rejected += 1;
        push_sample(&mut inner.rejected_samples, format!("{user}: {why}"));
    }

    /// `user` is (now) served by the node at `node`; `reconnect` if this follows a loss.
    pub fn placed(&self, user: &UserName, node: SocketAddr, reconnect: bool) {
        let mut inner = self.inner();
        inner.placement.insert(user.clone(), node);
        if reconnect {
            inner.reconnects += 1;
        }
        if let Some((death, since)) = inner.awaiting.remove(user) {
            let ms = since.elapsed().as_millis() as u64;
            inner.recoveries.push(Recovery { death, ms });
        }
    }

    /// The node at `node` was just killed (call it death number `death`): time its users'
    /// way back. Returns how many users it served.
    pub fn node_died(&self, node: SocketAddr, death: usize) -> usize {
        let now = Instant::now();
        let mut inner = self.inner();
        let users: Vec<UserName> = inner
            .placement
            .iter()
            .filter(|(_, at)| **at == node)
            .map(|(user, _)| user.clone())
            .collect();
        let count = users.len();
        for user in users {
            inner.placement.remove(&user);
            inner.awaiting.entry(user).or_insert((death, now));
        }
        count
    }

    /// How many users each node serves, as far as the users know.
    pub fn users_on(&self, node: SocketAddr) -> usize {
        self.inner()
            .placement
            .values()
            .filter(|at| **at == node)
            .count()
    }

    /// Acknowledged (message, recipient) pairs not shown yet.
    pub fn outstanding(&self) -> u64 {
        let inner = self.inner();
        inner
            .attempts
            .iter()
            .filter(|(_, a)| a.acked)
            .flat_map(|(tag, a)| a.expect.iter().map(move |u| (tag, u)))
            .filter(|(tag, u)| !inner.shown.contains_key(&((*tag).clone(), (*u).clone())))
            .count() as u64
    }

    /// True when no send awaits its answer and everything acknowledged has been shown.
    pub fn settled(&self) -> bool {
        self.inner().in_flight.is_empty() && self.outstanding() == 0
    }

    /// Acknowledged (recipient, message id) pairs not shown yet.
    pub fn unshown(&self) -> Vec<(UserName, MsgId)> {
        let inner = self.inner();
        let mut out = Vec::new();
        for (tag, attempt) in &inner.attempts {
            let Some(id) = attempt.id.filter(|_| attempt.acked) else {
                continue;
            };
            for user in &attempt.expect {
                if !inner.shown.contains_key(&(tag.clone(), user.clone())) {
                    out.push((user.clone(), id));
                }
            }
        }
        out
    }

    /// Everything counted so far.
    pub fn tally(&self) -> Tally {
        let inner = self.inner();
        let mut tally = Tally {
            sent: inner.attempts.len() as u64,
            send_failures: inner.send_failures,
            rejected: inner.rejected,
            images_sent: inner.images_sent,
            images_shown: inner.images_shown,
            other_shown: inner.untagged_shown,
            reconnects: inner.reconnects,
            failure_samples: inner.failure_samples.clone(),
            rejected_samples: inner.rejected_samples.clone(),
            ..Tally::default()
        };
        let mut latencies = Vec::new();
        for (tag, attempt) in &inner.attempts {
            if attempt.acked {
                tally.acknowledged += 1;
                tally.expected_deliveries += attempt.expect.len() as u64;
            }
            for user in &attempt.expect {
                match inner.shown.get(&(tag.clone(), user.clone())) {
                    Some(&(times, first)) => {
                        tally.delivered += 1;
                        latencies
                            .push(first.saturating_duration_since(attempt.at).as_millis() as u64);
                        if times > 1 {
                            tally.shown_twice += 1;
                        }
                        if !attempt.acked {
                            tally.delivered_unacknowledged += 1;
                        }
                    }
                    None if attempt.acked => {
                        tally.lost += 1;
                        let id = attempt.id.map(|id| id.to_hex()).unwrap_or_default();
                        push_sample(&mut tally.lost_samples, format!("{tag} -> {user} ({id})"));
                    }
                    None => {}
                }
            }
        }
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
        };
        tally.latency_ms = [at(0.5), at(0.99), latencies.last().copied()];
        tally.redelivered_dropped = inner.raw.values().map(|n| u64::from(n - 1)).sum();
        tally.recoveries = inner.recoveries.clone();
        tally
    }
}

/// A small seeded random number generator (SplitMix64): drills are repeatable by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A duration uniformly between `low` and `high`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserName {
        UserName::new(name).unwrap()
    }

    #[test]
    fn counts_lost_shown_twice_and_unacknowledged() {
        let ledger = Ledger::default();
        let (a, b, c) = (user("alice"), user("bob"), user("carol"));
        ledger.attempt("alice/1", vec![b.clone()]);
        ledger.acknowledged("alice/1", MsgId([1; 16]));
        ledger.attempt("alice/2", vec![b.clone(), c.clone()]);
        ledger.acknowledged("alice/2", MsgId([2; 16]));
        ledger.attempt("alice/3", vec![b.clone()]);
        ledger.send_failed(Some("alice/3"), "lost".into());
        assert!(!ledger.settled());
        ledger.shown(&b, "alice/1 hi");
        ledger.shown(&b, "alice/2 hi all");
        ledger.shown(&b, "alice/2 hi all");
        ledger.shown(&b, "alice/3 made it anyway");
        ledger.shown(&a, "someone/9 not ours");
        assert_eq!(ledger.outstanding(), 1, "carol never saw alice/2");
        let tally = ledger.tally();
        assert_eq!(
            (tally.sent, tally.acknowledged, tally.send_failures),
            (3, 2, 1)
        );
        assert_eq!((tally.expected_deliveries, tally.delivered), (3, 3));
        assert_eq!((tally.lost, tally.shown_twice), (1, 1));
        assert_eq!(tally.delivered_unacknowledged, 1);
    }

    #[test]
    fn times_recovery_of_users_on_a_killed_node() {
        let ledger = Ledger::default();
        let (a, b) = (user("alice"), user("bob"));
        let (n1, n2) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        ledger.placed(&a, n1, false);
        ledger.placed(&b, n2, false);
        assert_eq!(ledger.node_died(n1, 0), 1);
        assert_eq!(ledger.users_on(n1), 0);
        ledger.placed(&a, n2, true);
        ledger.placed(&b, n2, true);
        let tally = ledger.tally();
        assert_eq!(tally.recoveries.len(), 1, "only alice was on the dead node");
        assert_eq!(tally.reconnects, 2);
    }

    #[test]
    fn rng_is_repeatable_and_in_range() {
        let (mut x, mut y) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let d = x.between(Duration::from_secs(5), Duration::from_secs(15));
            assert_eq!(
                d,
                y.between(Duration::from_secs(5), Duration::from_secs(15))
            );
            assert!((Duration::from_secs(5)..=Duration::from_secs(15)).contains(&d));
        }
    }
}
