//! Simulated users: real [`quip_cli::Client`]s (real keys, end-to-end encryption, the
//! client's duplicate drop) that sign up through the master, chat among themselves and report
//! everything to a [`Ledger`]. When their node goes away they reconnect the way `quip` does:
//! discovery through the master with backoff, then the session token (no bcrypt).
//!
//! Two kinds of traffic: [`Traffic::Steady`] (the drills: each user DMs a partner at a fixed
//! rate, every few messages to the group instead) and [`Traffic::Chatter`] (the live view:
//! random DMs, the group, an occasional small image).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quip_cli::{Chat, Client, ClientError, ConnectError, Connection, Event, Incoming};
use quip_proto::ids::{GroupId, GroupName, UserName};
use quip_quic::Trust;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::ledger::{Ledger, Rng, tag};
use crate::procs::TestnetError;

/// The simulated users' password (they log in with their session token after that).
const PASSWORD: &str = "simulated user of quip-testnet";
/// Signups running at once (each costs an RSA key generation and a bcrypt on a node).
const SIGNUP_PARALLEL: usize = 4;
/// Attempts per signup before giving up.
const SIGNUP_ATTEMPTS: u32 = 5;
/// A send without an answer for this long counts as failed (the connection is replaced).
const SEND_WAIT: Duration = Duration::from_secs(20);
/// Handling one delivery (fetching keys, an image) may take this long.
const HANDLE_WAIT: Duration = Duration::from_secs(30);
/// One discovery + connect + resume attempt may take this long.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Reconnect backoff, as the interactive client: 200 ms doubling to 5 s.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Reconnect attempts before a user gives up (with the backoff: more than 10 minutes).
const RECONNECT_ATTEMPTS: u32 = 150;

/// What the users send.
#[derive(Debug, Clone)]
pub enum Traffic {
    /// Each user sends one message every `every`: to its partner (users are paired), and
    /// every `group_every`-th one to the group instead.
    Steady {
        /// Interval between one user's messages.
        every: Duration,
        /// Every this many messages one goes to the group (0: never).
        group_every: u64,
    },
    /// Each user sends every `every`: mostly DMs to random users, sometimes to the group,
    /// now and then a small image (if `image` is set).
    Chatter {
        /// Interval between one user's messages.
        every: Duration,
        /// A small image to send now and then.
        image: Option<PathBuf>,
    },
}

/// Who the simulated users are and where they go.
#[derive(Debug, Clone)]
pub struct CrowdConfig {
    /// The master they discover nodes through.
    pub master: SocketAddr,
    /// How they trust the cluster.
    pub trust: Trust,
    /// Where their key files go.
    pub home: PathBuf,
    /// Their names.
    pub names: Vec<UserName>,
    /// RSA key size (2048 is the minimum and the quickest to generate).
    pub key_bits: usize,
    /// What they send.
    pub traffic: Traffic,
    /// Seed of their random choices.
    pub seed: u64,
}

struct Shared {
    config: CrowdConfig,
    ledger: Arc<Ledger>,
    group: Option<GroupId>,
}

/// Simulated users, running.
pub struct Crowd {
    sending: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

async fn connect(
    master: SocketAddr,
    trust: &Trust,
) -> Result<(Connection, SocketAddr), ClientError> {
    let conn = Connection::via_master(master, trust).await?;
    let addr = conn.quic().remote_address();
    Ok((conn, addr))
}

async fn signup(
    config: &CrowdConfig,
    name: UserName,
) -> Result<(Client, SocketAddr), TestnetError> {
    let dir = quip_cli::user_dir(&config.home, "testnet", &name);
    let mut last = None;
    for _ in 0..SIGNUP_ATTEMPTS {
        let made = async {
            let (conn, addr) = connect(config.master, &config.trust).await?;
            let client = Client::signup(conn, &dir, &name, PASSWORD, config.key_bits).await?;
            Ok::<_, ClientError>((client, addr))
        };
        match made.await {
            Ok(made) => return Ok(made),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last.map_or_else(
        || TestnetError::Invalid("no signup attempt".into()),
        Into::into,
    ))
}

impl Crowd {
    /// Signs the users up (`progress(done, all)` after each), creates their group and starts
    /// them. They begin sending at once.
    pub async fn start(
        config: CrowdConfig,
        ledger: Arc<Ledger>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, TestnetError> {
        let all = config.names.len();
        let mut clients: Vec<Option<Client>> = (0..all).map(|_| None).collect();
        let mut pending = config.names.clone().into_iter().enumerate();
        let mut running = JoinSet::new();
        let config = Arc::new(config);
        let mut done = 0;
        loop {
            while running.len() < SIGNUP_PARALLEL
                && let Some((i, name)) = pending.next()
            {
                let config = config.clone();
                running.spawn(async move { (i, signup(&config, name).await) });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, made) = joined.map_err(|e| TestnetError::Invalid(e.to_string()))?;
            let (client, addr) = made?;
            ledger.placed(client.me(), addr, false);
            clients[i] = Some(client);
            done += 1;
            progress(done, all);
        }
        let mut clients: Vec<Client> = clients.into_iter().flatten().collect();
        let group = match clients.split_first_mut() {
            Some((first, rest)) if !rest.is_empty() => {
                let members: Vec<UserName> = rest.iter().map(|c| c.me().clone()).collect();
                let name =
                    GroupName::new("lobby").map_err(|e| TestnetError::Invalid(e.to_string()))?;
                Some(first.create_group(&name, &members).await?)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            config: Arc::unwrap_or_clone(config),
            ledger,
            group,
        });
        let (sending, _) = watch::channel(true);
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for (i, client) in clients.into_iter().enumerate() {
            let user = User {
                me: i,
                client,
                shared: shared.clone(),
                rng: Rng::new(shared.config.seed ^ (i as u64).wrapping_mul(0x9e37_79b9)),
                seq: 0,
            };
            tasks.spawn(user.run(sending.subscribe(), stop.subscribe()));
        }
        Ok(Self {
            sending,
            stop,
            tasks,
        })
    }

    /// Stops sending; users keep receiving (and reconnecting) until [`stop`](Self::stop).
    pub fn stop_sending(&self) {
        let _ = self.sending.send(false);
    }

    /// Stops every user, closing their connections (aborting any still busy after 5 s).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
}

struct User {
    me: usize,
    client: Client,
    shared: Arc<Shared>,
    rng: Rng,
    seq: u64,
}

/// What to do after one step: carry on, or reconnect after a pause.
type Next = Option<Duration>;

impl User {
    async fn run(mut self, sending: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let every = match &self.shared.config.traffic {
            Traffic::Steady { every, .. } | Traffic::Chatter { every, .. } => *every,
        }
        .max(Duration::from_millis(10));
        let stagger = Duration::from_millis(self.rng.below(every.as_millis() as u64 + 1));
        let mut tick = tokio::time::interval_at(Instant::now() + stagger, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            let next = tokio::select! {
                _ = stop.changed() => break,
                event = self.client.recv_event() => self.receive(event).await,
                _ = tick.tick(), if *sending.borrow() => self.send().await,
            };
            if let Some(pause) = next {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => break,
                }
                if !self.reconnect(&mut stop).await {
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.close()).await;
    }

    fn name(&self) -> UserName {
        self.client.me().clone()
    }

    async fn receive(&mut self, event: Option<Event>) -> Next {
        let ledger = self.shared.ledger.clone();
        let me = self.name();
        if let Some(Event::Deliver(delivery)) = &event {
            ledger.delivery(&me, delivery.sealed.header.id);
        }
        let handled = tokio::time::timeout(HANDLE_WAIT, self.client.handle_event(event)).await;
        match handled {
            Err(_) => {
                ledger.rejected(&me, "handling a delivery timed out".into());
                Some(Duration::ZERO)
            }
            Ok(None | Some(Incoming::GroupChanged(_) | Incoming::Expired { .. })) => None,
            Ok(Some(Incoming::Message(message))) => {
                ledger.shown(&me, &message.text);
                None
            }
            Ok(Some(Incoming::Image(_))) => {
                ledger.image_shown();
                None
            }
            Ok(Some(Incoming::Rejected { from, reason })) => {
                ledger.rejected(&me, format!("from {from}: {reason}"));
                None
            }
            Ok(Some(Incoming::Held(err))) => {
                ledger.rejected(&me, err.to_string());
                None
            }
            Ok(Some(Incoming::Reconnect { after_ms })) => {
                Some(Duration::from_millis(after_ms.into()).min(BACKOFF_MAX))
            }
            Ok(Some(Incoming::Closed(_))) => Some(Duration::ZERO),
        }
    }

    /// Picks the next message: where it goes, who should see it, whether it is an image.
    fn plan(&mut self) -> Option<(Chat, Vec<UserName>, bool)> {
        let names = &self.shared.config.names;
        let me = self.me;
        let others: Vec<&UserName> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(_, n)| n)
            .collect();
        if others.is_empty() {
            return None;
        }
        let to_group = |group: GroupId| {
            let members = others.iter().map(|n| (*n).clone()).collect();
            (Chat::Group(group), members, false)
        };
        match &self.shared.config.traffic {
            Traffic::Steady { group_every, .. } => {
                if let Some(group) = self.shared.group
                    && *group_every > 0
                    && self.seq.is_multiple_of(*group_every)
                {
                    return Some(to_group(group));
                }
                let partner = if me ^ 1 < names.len() { me ^ 1 } else { me - 1 };
                let peer = names[partner].clone();
                Some((Chat::Direct(peer.clone()), vec![peer], false))
            }
            Traffic::Chatter { image, .. } => {
                let roll = self.rng.below(100);
                let peer = others[self.rng.below(others.len() as u64) as usize].clone();
                match (roll, self.shared.group) {
                    (0..5, _) if image.is_some() => {
                        Some((Chat::Direct(peer.clone()), vec![peer], true))
                    }
                    (5..25, Some(group)) => Some(to_group(group)),
                    _ => Some((Chat::Direct(peer.clone()), vec![peer], false)),
                }
            }
        }
    }

    async fn send(&mut self) -> Next {
        self.seq += 1;
        let (chat, expect, image) = self.plan()?;
        let ledger = self.shared.ledger.clone();
        let tag = tag(self.client.me(), self.seq);
        let sent = if image {
            let Traffic::Chatter {
                image: Some(path), ..
            } = &self.shared.config.traffic
            else {
                return None;
            };
            ledger.image_sent();
            let path = path.clone();
            let mut quiet = |_: u64, _: u64| {};
            let upload = self.client.send_image_to(&chat, &path, &mut quiet);
            tokio::time::timeout(SEND_WAIT, upload)
                .await
                .map(|r| r.map(|sent| sent.id))
        } else {
            ledger.attempt(&tag, expect);
            let text = format!("{tag} {}", PHRASES[(self.seq as usize) % PHRASES.len()]);
            let upload = self.client.send_text_to(&chat, &text);
            tokio::time::timeout(SEND_WAIT, upload)
                .await
                .map(|r| r.map(|sent| sent.id))
        };
        match sent {
            Ok(Ok(id)) => {
                if !image {
                    ledger.acknowledged(&tag, id);
                }
                None
            }
            Ok(Err(err)) => {
                let broken = matches!(
                    err,
                    ClientError::Connect(ConnectError::Lost(_) | ConnectError::Unreachable { .. })
                );
                ledger.send_failed((!image).then_some(tag.as_str()), err.to_string());
                broken.then_some(Duration::ZERO)
            }
            Err(_) => {
                let why = format!("no answer within {SEND_WAIT:?}");
                ledger.send_failed((!image).then_some(tag.as_str()), why);
                Some(Duration::ZERO)
            }
        }
    }

    /// Finds a live node through the master (with backoff) and resumes the session there.
    async fn reconnect(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let config = &self.shared.config;
        let mut backoff = BACKOFF_FIRST;
        for _ in 0..RECONNECT_ATTEMPTS {
            if *stop.borrow() {
                return false;
            }
            let attempt = tokio::time::timeout(CONNECT_WAIT, async {
                let (conn, addr) = connect(config.master, &config.trust).await?;
                self.client.resume(conn).await?;
                Ok::<_, ClientError>(addr)
            })
            .await;
            if let Ok(Ok(addr)) = attempt {
                self.shared.ledger.placed(self.client.me(), addr, true);
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return false,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        false
    }
}

const PHRASES: [&str; 8] = [
    "hi there",
    "lunch at noon?",
    "did you see the build?",
    "sure, see you there",
    "running late, five minutes",
    "the drill is on",
    "can you review my change?",
    "good night",
];

/// Writes a small valid PNG (32×32, one colour) to `path`, for simulated users to send.
pub fn write_sample_image(path: &Path) -> std::io::Result<()> {
    const SIDE: u32 = 32;
    let mut raw = Vec::new();
    for y in 0..SIDE {
        raw.push(0); // no filter
        for x in 0..SIDE {
            raw.extend_from_slice(&[(x * 8) as u8, (y * 8) as u8, 0xa0]);
        }
    }
    // zlib with one stored (uncompressed) deflate block.
    let len = raw.len() as u16;
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&SIDE.to_be_bytes());
    ihdr.extend_from_slice(&SIDE.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &zlib), (b"IEND", &Vec::new())] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    std::fs::write(path, png)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc_matches_the_png_reference() {
        assert_eq!(super::crc32(b"IEND"), 0xae42_6082);
    }
}
