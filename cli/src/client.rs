//! A logged-in user: the connection plus everything end-to-end — the private keys, pinned
//! peer keys, replay protection — so callers send and receive plaintext and the node only
//! ever sees ciphertext.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quip_proto::client::Presence;
use quip_proto::ids::{BlobId, GroupId, MsgId, SessionToken, UserName};
use quip_proto::{
    Chunk, ClientToNode, ContentKind, Conversation, Delivery, ErrorCode, Header, NodeToClient,
};

use crate::connection::{ConnectError, Connection, Event};
use crate::e2e::{
    self, ChainHeads, Deployment, E2eError, IMAGE_CHUNK, Identity, ImageDecryptor, ImageEncryptor,
    ImageKey, KeyStore, PeerKeys, Pin, PinStore, Secrets, SeenIds,
};
use crate::group::{Chat, Sent, VerifiedGroup};

/// Largest image a client sends: its ciphertext (16 bytes of tag per chunk more) must fit the
/// nodes' default limit.
pub const MAX_IMAGE_PLAINTEXT: u64 = quip_proto::limits::DEFAULT_MAX_IMAGE
    - 16 * (quip_proto::limits::DEFAULT_MAX_IMAGE / IMAGE_CHUNK as u64 + 1);

/// Something went wrong for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Talking to the node failed or it refused.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Crypto or key files failed.
    #[error(transparent)]
    E2e(#[from] E2eError),
    /// A peer's keys changed since they were pinned: nothing is sent to them (and nothing
    /// from them is read) until the user compares safety numbers and accepts.
    #[error(
        "the keys of {user} have changed (was {old}, now {new}); compare safety numbers and \
         run `quip keys accept {user}` if you trust the change"
    )]
    KeyChanged {
        /// Whose keys.
        user: UserName,
        /// Fingerprint pinned before.
        old: String,
        /// Fingerprint presented now.
        new: String,
    },
    /// The node answered with the wrong kind of message.
    #[error("unexpected answer from the node")]
    Unexpected,
    /// The membership change is not allowed (checked locally against the verified chain).
    #[error(transparent)]
    Group(#[from] quip_proto::group::ChangeError),
    /// A group's signed membership chain does not verify: nothing is sent to it.
    #[error("the membership of group {group} cannot be trusted: {reason}")]
    BadChain {
        /// The group.
        group: GroupId,
        /// What failed.
        reason: String,
    },
    /// No such group, or we are not in it.
    #[error("no group {0}")]
    UnknownGroup(String),
    /// A group message from someone the verified chain does not show as a member at the
    /// epoch the message names: dropped.
    #[error("{sender} was not a member of {group} at epoch {epoch}; the message is dropped")]
    NotAMember {
        /// The claimed sender.
        sender: UserName,
        /// The group's name.
        group: String,
        /// The epoch the message names.
        epoch: u64,
    },
    /// The server shows a group's membership chain older than (or different from) what this
    /// client already verified: it may be hiding a change such as a removal. Nothing is sent
    /// to the group and nothing from it is accepted until it shows the whole chain.
    #[error(
        "the server shows group {name} at membership epoch {shown}, but this client already \
         verified epoch {seen} with a different history: it may be undoing a change (such as \
         a removal); nothing is sent to or accepted from {name} until it shows the whole chain"
    )]
    RolledBack {
        /// The group.
        group: GroupId,
        /// Its name, as the chain shown says.
        name: String,
        /// The highest epoch this client verified.
        seen: u64,
        /// The epoch the server shows.
        shown: u64,
    },
    /// A text longer than [`quip_proto::limits::MAX_TEXT`]: refused before sealing.
    #[error("the text is {len} bytes; the most one message can carry is {max} (split it)")]
    TextTooLong {
        /// Its length in bytes (UTF-8).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A local file could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ClientError {
    /// The node's error code, if the node refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Connect(ConnectError::Refused { code, .. }) => Some(*code),
            _ => None,
        }
    }
}

/// One page of a list the node answers in pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The entries.
    pub items: Vec<T>,
    /// How many there are in all.
    pub total: u64,
    /// More follow the last one.
    pub more: bool,
}

/// A message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MsgId,
    /// Who sent it (verified by signature).
    pub from: UserName,
    /// Where it belongs.
    pub conversation: Conversation,
    /// The text.
    pub text: String,
    /// Sender's clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
}

/// An image received, verified, decrypted and saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMessage {
    /// Its id.
    pub id: MsgId,
    /// Who sent it (verified by signature).
    pub from: UserName,
    /// Where it belongs.
    pub conversation: Conversation,
    /// Where it was saved (a name the receiver chose, in the data directory).
    pub path: PathBuf,
    /// Sender's clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
}

/// Progress of a transfer: bytes done, bytes in all.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send + Sync);

/// What reading the next push produced.
#[derive(Debug)]
pub enum Incoming {
    /// A verified, decrypted message (shown once: repeats are dropped).
    Message(Message),
    /// A verified, decrypted image, saved to disk.
    Image(ImageMessage),
    /// A delivery that failed verification: it is dropped (acknowledged) and reported.
    Rejected {
        /// The claimed sender.
        from: UserName,
        /// Why.
        reason: String,
    },
    /// A delivery from someone whose keys changed: kept on the server, unread, until the
    /// user accepts the new keys.
    Held(ClientError),
    /// A group we are in changed (already described for the user).
    GroupChanged(String),
    /// The node asks us to reconnect elsewhere.
    Reconnect {
        /// Delay before reconnecting, ms.
        after_ms: u32,
    },
    /// The connection ended.
    Closed(String),
    /// A message we sent expired unread: `recipient` did not fetch it within the server's
    /// retention, and the server deleted it.
    Expired {
        /// The message.
        id: MsgId,
        /// Who never read it.
        recipient: UserName,
    },
}

/// Where one account's files live: `<root>/<server>/<user>/`.
pub fn user_dir(root: &Path, server: &str, user: &UserName) -> PathBuf {
    let server: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join(server).join(user.as_str())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh random message id.
pub(crate) fn random_id() -> MsgId {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    MsgId(bytes)
}

/// How much a client saves from one sender without being asked: received images are saved in
/// `<user dir>/images/` as `<sender>-<id>.<ext>`, and once that folder holds this many images
/// (or bytes) from a sender, further images from them are not downloaded. They stay queued
/// on the server (until its retention expires them) and are saved in a later session once
/// the user has moved or deleted some of that sender's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoSave {
    /// Most images kept from one sender.
    pub max_images: usize,
    /// Most bytes kept from one sender.
    pub max_bytes: u64,
}

impl Default for AutoSave {
    fn default() -> Self {
        Self {
            max_images: 50,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A logged-in user.
pub struct Client {
    pub(crate) conn: Connection,
    pub(crate) me: UserName,
    pub(crate) identity: Identity,
    pins: PinStore,
    seen: SeenIds,
    keys: HashMap<UserName, PeerKeys>,
    token: SessionToken,
    dir: PathBuf,
    progress: Option<Box<dyn FnMut(u64, u64) + Send + Sync>>,
    /// Groups whose signed chain this client verified, by id.
    pub(crate) groups: HashMap<GroupId, VerifiedGroup>,
    /// The highest verified point of each group's chain, on disk.
    pub(crate) heads: ChainHeads,
    notices: Vec<String>,
    auto_save: AutoSave,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn logged_in(answer: NodeToClient) -> Result<(UserName, SessionToken, Vec<u8>), ClientError> {
    match answer {
        NodeToClient::LoggedIn {
            user,
            token,
            backup,
            ..
        } => Ok((user, token, backup)),
        _ => Err(ClientError::Unexpected),
    }
}

impl Client {
    /// Creates an account: new key pairs (`bits` each), a key file encrypted with the
    /// password in `dir`, and an encrypted backup on the server.
    pub async fn signup(
        conn: Connection,
        dir: &Path,
        user: &UserName,
        password: &str,
        bits: usize,
    ) -> Result<Self, ClientError> {
        e2e::check_strength(user, password)?;
        let secrets = derive(user, password, conn.deployment()).await?;
        let identity = tokio::task::spawn_blocking(move || Identity::generate(bits))
            .await
            .map_err(|_| ClientError::Unexpected)??;
        let backup = e2e::encrypt_backup(&identity, &secrets, user)?;
        let answer = conn
            .request(|req| ClientToNode::Signup {
                req,
                user: user.clone(),
                secret: secrets.login().to_vec(),
                keys: identity.public_keys(),
                backup,
            })
            .await?;
        let (me, token, _) = logged_in(answer)?;
        KeyStore::new(dir).save(&identity, &secrets)?;
        Self::open(conn, me, identity, token, dir)
    }

    /// Logs in. The private keys come from `dir`, or, on a new machine or directory, from
    /// the encrypted backup on the server (and are then saved to `dir`).
    pub async fn login(
        conn: Connection,
        dir: &Path,
        user: &UserName,
        password: &str,
    ) -> Result<Self, ClientError> {
        let secrets = derive(user, password, conn.deployment()).await?;
        let answer = conn
            .request(|req| ClientToNode::Login {
                req,
                user: user.clone(),
                secret: secrets.login().to_vec(),
            })
            .await?;
        let (me, token, backup) = logged_in(answer)?;
        // The backup on the server is the account's truth (it is what makes logging in from
        // any directory or machine work); the key file in `dir` is written where missing.
        let identity = e2e::decrypt_backup(&backup, &secrets, &me)?;
        let store = KeyStore::new(dir);
        let notice = match store.exists().then(|| store.load(&secrets)) {
            None => None,
            Some(Ok(local)) if local.public_keys() == identity.public_keys() => None,
            Some(Ok(_)) => Some(format!(
                "the key file {} held older keys; replaced with the keys from your backup",
                store.path().display()
            )),
            Some(Err(err)) => Some(format!(
                "the key file {} could not be used ({err}); restored it from your backup",
                store.path().display()
            )),
        };
        if !store.exists() || notice.is_some() {
            store.save(&identity, &secrets)?;
        }
        let mut client = Self::open(conn, me, identity, token, dir)?;
        client.notices.extend(notice);
        Ok(client)
    }

    /// Things the user should know about this login (e.g. a damaged key file was restored).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    fn open(
        conn: Connection,
        me: UserName,
        identity: Identity,
        token: SessionToken,
        dir: &Path,
    ) -> Result<Self, ClientError> {
        let mut pins = PinStore::open(dir)?;
        let own = identity.public_keys();
        if pins.check(&me, &own) != Pin::Same {
            pins.accept(&me, &own)?;
        }
        let mut keys = HashMap::new();
        keys.insert(me.clone(), identity.peer_keys().clone());
        Ok(Self {
            conn,
            seen: SeenIds::open(dir)?,
            pins,
            keys,
            identity,
            token,
            me,
            dir: dir.to_owned(),
            progress: None,
            groups: HashMap::new(),
            heads: ChainHeads::open(dir)?,
            notices: Vec::new(),
            auto_save: AutoSave::default(),
        })
    }

    /// Resumes this session on a new connection (after a node went away) with the session
    /// token: no password, no bcrypt.
    pub async fn resume(&mut self, conn: Connection) -> Result<(), ClientError> {
        let token = self.token.clone();
        let answer = conn
            .request(|req| ClientToNode::Resume { req, token })
            .await?;
        logged_in(answer)?;
        let old = std::mem::replace(&mut self.conn, conn);
        drop(old);
        Ok(())
    }

    /// Who we are.
    pub fn me(&self) -> &UserName {
        &self.me
    }

    /// This account's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The session token (to resume after a reconnect).
    pub fn token(&self) -> &SessionToken {
        &self.token
    }

    /// The connection, for requests this type does not wrap.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// One page of users (by name) and whether they are online, after `after`; the node
    /// caps `limit`.
    pub async fn users_page(
        &self,
        after: Option<UserName>,
        limit: u32,
    ) -> Result<Listing<Presence>, ClientError> {
        match self
            .conn
            .request(|req| ClientToNode::ListUsers { req, after, limit })
            .await?
        {
            NodeToClient::Users {
                users, total, more, ..
            } => Ok(Listing {
                items: users,
                total,
                more,
            }),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Every user and whether they are online, fetched page by page.
    pub async fn users(&self) -> Result<Vec<Presence>, ClientError> {
        let mut all: Vec<Presence> = Vec::new();
        loop {
            let after = all.last().map(|p| p.user.clone());
            let page = self.users_page(after, u32::MAX).await?;
            let done = !page.more || page.items.is_empty();
            all.extend(page.items);
            if done {
                return Ok(all);
            }
        }
    }

    async fn fetch_keys(&self, user: &UserName) -> Result<quip_proto::PublicKeys, ClientError> {
        let answer = self
            .conn
            .request(|req| ClientToNode::FetchKeys {
                req,
                user: user.clone(),
            })
            .await?;
        match answer {
            NodeToClient::Keys { keys, .. } => Ok(keys),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// `user`'s keys, pinned on first use; a change is [`ClientError::KeyChanged`].
    pub async fn peer_keys(&mut self, user: &UserName) -> Result<PeerKeys, ClientError> {
        if let Some(keys) = self.keys.get(user) {
            return Ok(keys.clone());
        }
        let offered = self.fetch_keys(user).await?;
        let keys = match self.pins.check(user, &offered) {
            Pin::New => self.pins.pin(user, &offered)?,
            Pin::Same => PeerKeys::from_public(&offered)?,
            Pin::Changed {
                old_fingerprint,
                new_fingerprint,
            } => {
                return Err(ClientError::KeyChanged {
                    user: user.clone(),
                    old: old_fingerprint,
                    new: new_fingerprint,
                });
            }
        };
        self.keys.insert(user.clone(), keys.clone());
        Ok(keys)
    }

    /// Accepts `user`'s current keys after a change.
    pub async fn accept_keys(&mut self, user: &UserName) -> Result<(), ClientError> {
        let offered = self.fetch_keys(user).await?;
        let keys = self.pins.accept(user, &offered)?;
        self.keys.insert(user.clone(), keys);
        Ok(())
    }

    /// The safety number of our conversation with `user`, to compare out of band.
    pub async fn safety_number(&mut self, user: &UserName) -> Result<String, ClientError> {
        let theirs = match self.pins.get(user) {
            Some(keys) => keys.clone(),
            None => {
                self.peer_keys(user).await?;
                self.fetch_keys(user).await?
            }
        };
        Ok(e2e::safety_number(
            &self.me,
            &self.identity.public_keys(),
            user,
            &theirs,
        ))
    }

    /// The name of a group this client has verified, if any.
    pub fn group_name(&self, id: &GroupId) -> Option<String> {
        self.groups.get(id).map(|g| g.state.name.to_string())
    }

    /// Our own key fingerprint.
    pub fn fingerprint(&self) -> String {
        e2e::fingerprint(&self.identity.public_keys())
    }

    /// Encrypts `text` for `to` and waits until the node has stored it.
    pub async fn send_text(&mut self, to: &UserName, text: &str) -> Result<MsgId, ClientError> {
        Ok(self.send_text_to(&Chat::Direct(to.clone()), text).await?.id)
    }

    /// Encrypts `text` for everyone in `chat` (for a group: every member its verified chain
    /// proves) and waits until the node has stored it.
    pub async fn send_text_to(&mut self, chat: &Chat, text: &str) -> Result<Sent, ClientError> {
        let max = quip_proto::limits::MAX_TEXT;
        if text.len() > max {
            return Err(ClientError::TextTooLong {
                len: text.len(),
                max,
            });
        }
        let (conversation, recipients, left_out) = self.recipients(chat).await?;
        let header = Header {
            id: random_id(),
            sender: self.me.clone(),
            conversation,
            kind: ContentKind::Text,
            sent_at_ms: now_ms(),
            recipients: Vec::new(),
        };
        let list: Vec<(UserName, &PeerKeys)> =
            recipients.iter().map(|(u, k)| (u.clone(), k)).collect();
        let envelope = e2e::seal(&self.identity, header, &list, text.as_bytes())?;
        let id = envelope.sealed.header.id;
        match self
            .conn
            .request(|req| ClientToNode::Send { req, envelope })
            .await?
        {
            NodeToClient::Stored { .. } => Ok(Sent { id, left_out }),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Sends the image at `path` to `to`: checked locally (exists, a file, an image, within
    /// the size limit), encrypted chunk by chunk, uploaded on a stream of its own.
    pub async fn send_image(
        &mut self,
        to: &UserName,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<MsgId, ClientError> {
        Ok(self
            .send_image_to(&Chat::Direct(to.clone()), path, progress)
            .await?
            .id)
    }

    /// Sends the image at `path` to everyone in `chat`.
    pub async fn send_image_to(
        &mut self,
        chat: &Chat,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<Sent, ClientError> {
        let (conversation, recipients, left_out) = self.recipients(chat).await?;
        let path = path.to_owned();
        let (encryptor, key) =
            tokio::task::spawn_blocking(move || ImageEncryptor::open(&path, MAX_IMAGE_PLAINTEXT))
                .await
                .map_err(|_| ClientError::Unexpected)??;
        let total = key.cipher_len();
        let mut blob = [0u8; 16];
        rand::fill(&mut blob);
        let header = Header {
            id: random_id(),
            sender: self.me.clone(),
            conversation,
            kind: ContentKind::Image {
                blob: BlobId(blob),
                len: total,
            },
            sent_at_ms: now_ms(),
            recipients: Vec::new(),
        };
        let list: Vec<(UserName, &PeerKeys)> =
            recipients.iter().map(|(u, k)| (u.clone(), k)).collect();
        let envelope = e2e::seal(&self.identity, header, &list, &key.to_plaintext())?;
        let id = envelope.sealed.header.id;
        let encryptor = std::sync::Arc::new(std::sync::Mutex::new(encryptor));
        let mut sent = 0u64;
        progress(0, total);
        let answer = self
            .conn
            .upload(envelope, || {
                let encryptor = encryptor.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        encryptor
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .next_chunk()
                    })
                    .await
                    .map_err(|_| ConnectError::Lost("encryption task failed".into()))?
                    .map_err(|e| ConnectError::Lost(e.to_string()))
                }
            })
            .await;
        sent += total;
        progress(sent, total);
        match answer? {
            NodeToClient::Stored { .. } => Ok(Sent { id, left_out }),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Downloads and decrypts the image a verified envelope announced.
    async fn receive_image(
        &self,
        delivery: &Delivery,
        key_plaintext: &[u8],
        progress: Progress<'_>,
    ) -> Result<PathBuf, ClientError> {
        let header = &delivery.sealed.header;
        let ContentKind::Image { len, .. } = header.kind else {
            return Err(ClientError::Unexpected);
        };
        let key = ImageKey::from_plaintext(key_plaintext)?;
        if key.cipher_len() != len || len > quip_proto::limits::DEFAULT_MAX_IMAGE {
            return Err(E2eError::Tampered.into());
        }
        let mut stream = self.conn.download(header.id).await?;
        let mut decryptor =
            ImageDecryptor::new(&key, &self.dir.join("images"), &header.sender, &header.id)?;
        let mut done = 0u64;
        progress(0, len);
        while let Some(chunk) = stream
            .recv::<Chunk>()
            .await
            .map_err(|e| ConnectError::Lost(format!("image stream cut: {e}")))?
        {
            done += chunk.data.len() as u64;
            decryptor.push(&chunk.data)?;
            progress(done, len);
        }
        Ok(decryptor.finish()?)
    }

    async fn ack(&self, id: MsgId) -> Result<(), ClientError> {
        self.conn
            .send(&ClientToNode::Ack { ids: vec![id] })
            .await
            .map_err(Into::into)
    }

    /// Waits for the next thing worth showing. Repeats of a message already shown are
    /// acknowledged and skipped.
    pub async fn next(&mut self) -> Incoming {
        loop {
            let event = self.recv_event().await;
            if let Some(incoming) = self.handle_event(event).await {
                return incoming;
            }
        }
    }

    /// Waits for the next push from the node. Cancel-safe: use it in `select!` and pass what
    /// it returns to [`handle_event`](Self::handle_event).
    pub async fn recv_event(&mut self) -> Option<Event> {
        self.conn.next_event().await
    }

    /// Verifies, decrypts and acknowledges one push; `None` if there is nothing to show.
    pub async fn handle_event(&mut self, event: Option<Event>) -> Option<Incoming> {
        let delivery = match event {
            None => return Some(Incoming::Closed("connection closed".into())),
            Some(Event::Deliver(delivery)) => delivery,
            Some(Event::Reconnect { after_ms, .. }) => {
                return Some(Incoming::Reconnect { after_ms });
            }
            Some(Event::Closed(why)) => return Some(Incoming::Closed(why)),
            Some(Event::GroupChanged(change)) => {
                return Some(Incoming::GroupChanged(self.describe_change(&change)));
            }
            Some(Event::Presence(_)) => return None,
            // MLS group logs are for the MLS core; this RSA-era client has no device.
            Some(Event::Mls(_)) => return None,
            Some(Event::Expired { id, recipient }) => {
                return Some(Incoming::Expired { id, recipient });
            }
        };
        let header = &delivery.sealed.header;
        let (id, from) = (header.id, header.sender.clone());
        if self.seen.contains(&id) {
            let _ = self.ack(id).await;
            return None;
        }
        let sender_keys = match self.peer_keys(&from).await {
            Ok(keys) => keys,
            Err(err @ ClientError::KeyChanged { .. }) => return Some(Incoming::Held(err)),
            Err(err) => {
                return Some(Incoming::Rejected {
                    from,
                    reason: err.to_string(),
                });
            }
        };
        if let Conversation::Group { id: group, epoch } = &delivery.sealed.header.conversation {
            let (group, epoch) = (*group, *epoch);
            if let Err(err) = self.check_group_sender(&group, epoch, &from).await {
                // A broken connection proves nothing: leave the message queued for later.
                if !matches!(err, ClientError::Connect(_)) {
                    let _ = self.seen.insert(id);
                    let _ = self.ack(id).await;
                }
                return Some(Incoming::Rejected {
                    from,
                    reason: err.to_string(),
                });
            }
        }
        if let ContentKind::Image { .. } = delivery.sealed.header.kind {
            return Some(self.open_image(&delivery, &sender_keys).await);
        }
        let opened = e2e::open(&self.identity, &self.me, &delivery, &sender_keys)
            .and_then(|plain| String::from_utf8(plain).map_err(|_| E2eError::Tampered));
        // Acknowledge either way: a forged or tampered delivery would otherwise come back
        // forever.
        let _ = self.seen.insert(id);
        let _ = self.ack(id).await;
        Some(match opened {
            Ok(text) => Incoming::Message(Message {
                id,
                from,
                conversation: delivery.sealed.header.conversation.clone(),
                text,
                sent_at_ms: delivery.sealed.header.sent_at_ms,
            }),
            Err(err) => Incoming::Rejected {
                from,
                reason: format!("message refused: {err}"),
            },
        })
    }

    async fn open_image(&mut self, delivery: &Delivery, sender: &PeerKeys) -> Incoming {
        let header = &delivery.sealed.header;
        let (id, from) = (header.id, header.sender.clone());
        let mut progress = self.progress.take();
        let mut quiet = |_: u64, _: u64| {};
        let report: Progress<'_> = match progress.as_mut() {
            Some(p) => p.as_mut(),
            None => &mut quiet,
        };
        let ContentKind::Image { len, .. } = header.kind else {
            return Incoming::Rejected {
                from,
                reason: "not an image".into(),
            };
        };
        let (count, bytes) = Self::saved_from(&self.dir.join("images"), &from);
        let cap = self.auto_save;
        if count >= cap.max_images || bytes.saturating_add(len) > cap.max_bytes {
            // Not acknowledged: it waits on the server for a later session.
            return Incoming::Rejected {
                from,
                reason: format!(
                    "image not saved: {count} images ({} MiB) from this sender are already \
                     saved, the most kept without asking is {} ({} MiB); move some out of \
                     {} and it is saved next time",
                    bytes / (1024 * 1024),
                    cap.max_images,
                    cap.max_bytes / (1024 * 1024),
                    self.dir.join("images").display()
                ),
            };
        }
        let saved = match e2e::open(&self.identity, &self.me, delivery, sender) {
            Ok(plain) => self.receive_image(delivery, &plain, report).await,
            Err(err) => Err(err.into()),
        };
        self.progress = progress;
        match saved {
            Ok(path) => {
                let _ = self.seen.insert(id);
                let _ = self.ack(id).await;
                Incoming::Image(ImageMessage {
                    id,
                    from,
                    conversation: header.conversation.clone(),
                    path,
                    sent_at_ms: header.sent_at_ms,
                })
            }
            // A broken connection: leave it queued; it comes again after reconnecting.
            Err(err @ ClientError::Connect(_)) => Incoming::Rejected {
                from,
                reason: format!("image not received: {err}"),
            },
            Err(err) => {
                let _ = self.seen.insert(id);
                let _ = self.ack(id).await;
                Incoming::Rejected {
                    from,
                    reason: format!("image refused: {err}"),
                }
            }
        }
    }

    /// Changes how much is saved from one sender without asking (see [`AutoSave`]).
    pub fn set_auto_save(&mut self, auto_save: AutoSave) {
        self.auto_save = auto_save;
    }

    /// Images already saved from `sender` in `dir`: how many, and their bytes. Files are
    /// named `<sender>-<32 hex digits>.<ext>`; anything else (including partial downloads,
    /// which start with a dot) is not counted.
    fn saved_from(dir: &Path, sender: &UserName) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (0, 0);
        };
        let mut saved = (0, 0);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(stem) = name
                .to_str()
                .and_then(|n| n.rsplit_once('.'))
                .map(|(s, _)| s)
            else {
                continue;
            };
            let Some((who, id)) = stem.rsplit_once('-') else {
                continue;
            };
            if who == sender.as_str() && id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
            {
                saved.0 += 1;
                saved.1 += entry.metadata().map_or(0, |m| m.len());
            }
        }
        saved
    }

    /// Reports download progress of received images to `progress`.
    pub fn on_progress(&mut self, progress: Box<dyn FnMut(u64, u64) + Send + Sync>) {
        self.progress = Some(progress);
    }

    /// Like [`next`](Self::next) but gives up after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Incoming> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// Logs out (the token stops working) and closes the connection.
    pub async fn logout(self) -> Result<(), ClientError> {
        self.conn
            .request(|req| ClientToNode::Logout { req })
            .await?;
        self.conn.close().await;
        Ok(())
    }

    /// Closes the connection; the session token stays valid.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

async fn derive(
    user: &UserName,
    password: &str,
    deployment: Deployment,
) -> Result<Secrets, ClientError> {
    let (user, password) = (user.clone(), password.to_owned());
    tokio::task::spawn_blocking(move || Secrets::derive(&user, &password, &deployment))
        .await
        .map_err(|_| ClientError::Unexpected)?
        .map_err(Into::into)
}
