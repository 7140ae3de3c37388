//! Replay and redelivery drop: the ids of the last messages shown, remembered across restarts,
//! so a message the node delivers twice (after a crash) or a server replays is shown once.
//!
//! In memory: a set plus a FIFO of at most `capacity` ids; the oldest is forgotten first.
//! On disk (`seen` in the data directory): `SEEN_MAGIC` then one 16-byte id per message,
//! appended as messages arrive, and rewritten atomically with just the remembered ids once
//! it holds twice the capacity. A record cut short by a crash is ignored on load.
//!
//! An id older than the last `capacity` messages can be shown again; callers that care can
//! also drop messages whose signed `sent_at_ms` is older than the oldest remembered one.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use quip_proto::ids::MsgId;

use super::error::{E2eError, Result};
use super::files::{ensure_dir, private_options, read_limited, write_atomic};

/// Name of the seen-ids file inside the data directory.
pub const SEEN_FILE: &str = "seen";
/// Ids remembered by default (1 MiB of file at most before compaction doubles it).
pub const DEFAULT_SEEN_CAPACITY: usize = 65_536;
/// Largest capacity accepted (16 M ids, 256 MiB of file).
pub const MAX_SEEN_CAPACITY: usize = 1 << 24;
/// Format tag at the start of the file.
const SEEN_MAGIC: &[u8] = b"quip-seen/1\n";

/// The ids of recently shown messages, persisted in the data directory.
#[derive(Debug)]
pub struct SeenIds {
    path: PathBuf,
    capacity: usize,
    order: VecDeque<MsgId>,
    set: HashSet<MsgId>,
    /// Append handle on the file.
    file: File,
    /// Records currently in the file (remembered or not).
    records: usize,
}

impl SeenIds {
    /// Opens the seen ids of data directory `dir` with [`DEFAULT_SEEN_CAPACITY`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::with_capacity(dir, DEFAULT_SEEN_CAPACITY)
    }

    /// Opens the seen ids of data directory `dir`, remembering at most `capacity` ids (clamped
    /// to `1..=`[`MAX_SEEN_CAPACITY`]).
    /// Creates the directory and file if missing; a file without the expected header is
    /// [`E2eError::CorruptStateFile`].
    pub fn with_capacity(dir: impl AsRef<Path>, capacity: usize) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(SEEN_FILE);
        let capacity = capacity.clamp(1, MAX_SEEN_CAPACITY);
        ensure_dir(dir)?;
        // Bounded so a huge file cannot exhaust memory: 4x capacity is more than we ever keep.
        let max = SEEN_MAGIC.len() as u64 + 4 * (capacity as u64) * MsgId::LEN as u64;
        let corrupt = |path| E2eError::CorruptStateFile { path };
        // `rewrite`: the file should be rewritten with just what we keep.
        let (bytes, mut rewrite) = match read_limited(&path, max, corrupt) {
            // Larger than we ever write: keep only the tail.
            Err(E2eError::CorruptStateFile { .. }) => (Some(read_tail(&path, capacity)?), true),
            other => (other?, false),
        };
        let mut order = VecDeque::with_capacity(capacity.min(DEFAULT_SEEN_CAPACITY));
        let mut records = 0;
        match &bytes {
            None => write_atomic(&path, SEEN_MAGIC)?,
            Some(bytes) => {
                let body = bytes
                    .strip_prefix(SEEN_MAGIC)
                    .ok_or_else(|| corrupt(path.clone()))?;
                // A partial last record (crash mid-append) is ignored.
                for chunk in body.chunks_exact(MsgId::LEN) {
                    order.push_back(MsgId::from_slice(chunk).map_err(|_| corrupt(path.clone()))?);
                    records += 1;
                    if order.len() > capacity {
                        order.pop_front();
                    }
                }
                // A torn record is dropped by the rewrite.
                rewrite |= body.len() % MsgId::LEN != 0;
            }
        }
        let set = order.iter().copied().collect();
        let file = Self::append_handle(&path)?;
        let mut seen = Self {
            path,
            capacity,
            order,
            set,
            file,
            records,
        };
        if rewrite || seen.records >= 2 * seen.capacity {
            seen.compact()?;
        }
        Ok(seen)
    }

    fn append_handle(path: &Path) -> Result<File> {
        private_options()
            .append(true)
            .open(path)
            .map_err(E2eError::io(path))
    }

    /// Whether `id` was seen (and is still remembered).
    pub fn contains(&self, id: &MsgId) -> bool {
        self.set.contains(id)
    }

    /// Records `id`. `Ok(true)` if it is new (show the message), `Ok(false)` if it was seen
    /// before (drop it). The id reaches the OS before this returns, so it survives the
    /// process crashing; call [`Self::sync`] to make it survive a power loss too.
    pub fn insert(&mut self, id: MsgId) -> Result<bool> {
        if self.set.contains(&id) {
            return Ok(false);
        }
        self.file
            .write_all(&id.0)
            .map_err(E2eError::io(&self.path))?;
        self.records += 1;
        self.order.push_back(id);
        self.set.insert(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        if self.records >= 2 * self.capacity {
            self.compact()?;
        }
        Ok(true)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Flushes appended ids to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(E2eError::io(&self.path))
    }

    /// Rewrites the file with just the remembered ids.
    fn compact(&mut self) -> Result<()> {
        let mut bytes = Vec::with_capacity(SEEN_MAGIC.len() + self.order.len() * MsgId::LEN);
        bytes.extend_from_slice(SEEN_MAGIC);
        for id in &self.order {
            bytes.extend_from_slice(&id.0);
        }
        write_atomic(&self.path, &bytes)?;
        self.file = Self::append_handle(&self.path)?;
        self.records = self.order.len();
        Ok(())
    }
}

/// The magic and the last `capacity` whole records of an oversized file.
fn read_tail(path: &Path, capacity: usize) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(E2eError::io(path))?;
    let mut magic = vec![0u8; SEEN_MAGIC.len()];
    file.read_exact(&mut magic).map_err(E2eError::io(path))?;
    let len = file.metadata().map_err(E2eError::io(path))?.len();
    let body = len - SEEN_MAGIC.len() as u64;
    let whole = body - body % MsgId::LEN as u64;
    let keep = whole.min((capacity * MsgId::LEN) as u64);
    file.seek(SeekFrom::Start(SEEN_MAGIC.len() as u64 + whole - keep))
        .map_err(E2eError::io(path))?;
    let mut tail = vec![0u8; keep as usize];
    file.read_exact(&mut tail).map_err(E2eError::io(path))?;
    Ok([magic, tail].concat())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn id(n: u32) -> MsgId {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        MsgId(bytes)
    }

    fn file_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(SEEN_FILE)).unwrap().len()
    }

    #[test]
    fn dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenIds::open(dir.path()).unwrap();
        assert!(seen.is_empty());
        assert!(seen.insert(id(1)).unwrap());
        assert!(!seen.insert(id(1)).unwrap());
        assert!(seen.insert(id(2)).unwrap());
        assert!(seen.contains(&id(2)));
        assert_eq!(seen.len(), 2);
        seen.sync().unwrap();
    }

    #[test]
    fn survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenIds::open(dir.path().join("data")).unwrap();
        for n in 0..10 {
            assert!(seen.insert(id(n)).unwrap());
        }
        drop(seen);
        let mut seen = SeenIds::open(dir.path().join("data")).unwrap();
        assert_eq!(seen.len(), 10);
        for n in 0..10 {
            assert!(
                !seen.insert(id(n)).unwrap(),
                "{n} shown twice after restart"
            );
        }
        assert!(seen.insert(id(10)).unwrap());
    }

    #[test]
    fn bounded_fifo_and_compacted_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenIds::with_capacity(dir.path(), 4).unwrap();
        for n in 0..100 {
            assert!(seen.insert(id(n)).unwrap());
            assert!(seen.len() <= 4);
            let records = (file_len(dir.path()) as usize - SEEN_MAGIC.len()) / MsgId::LEN;
            assert!(records < 8, "file holds {records} records");
        }
        // The last four are remembered, the oldest forgotten.
        for n in 96..100 {
            assert!(seen.contains(&id(n)));
        }
        assert!(!seen.contains(&id(95)));
        assert!(seen.insert(id(0)).unwrap(), "forgotten ids count as new");
        drop(seen);
        let seen = SeenIds::with_capacity(dir.path(), 4).unwrap();
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(&id(0)) && seen.contains(&id(99)) && !seen.contains(&id(96)));
    }

    #[test]
    fn torn_record_is_ignored_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenIds::open(dir.path()).unwrap();
        seen.insert(id(1)).unwrap();
        drop(seen);
        let path = dir.path().join(SEEN_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7; 5]);
        fs::write(&path, bytes).unwrap();
        let mut seen = SeenIds::open(dir.path()).unwrap();
        assert_eq!(seen.len(), 1);
        seen.insert(id(2)).unwrap();
        drop(seen);
        let seen = SeenIds::open(dir.path()).unwrap();
        assert!(seen.contains(&id(1)) && seen.contains(&id(2)));
        assert_eq!(
            file_len(dir.path()),
            (SEEN_MAGIC.len() + 2 * MsgId::LEN) as u64
        );
    }

    #[test]
    fn oversized_file_keeps_its_tail_and_foreign_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEEN_FILE);
        let mut bytes = SEEN_MAGIC.to_vec();
        for n in 0..100 {
            bytes.extend_from_slice(&id(n).0);
        }
        fs::write(&path, &bytes).unwrap();
        let seen = SeenIds::with_capacity(dir.path(), 3).unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.contains(&id(99)) && seen.contains(&id(97)) && !seen.contains(&id(96)));
        assert_eq!(
            file_len(dir.path()),
            (SEEN_MAGIC.len() + 3 * MsgId::LEN) as u64
        );

        fs::write(&path, b"something else entirely").unwrap();
        let err = SeenIds::open(dir.path()).unwrap_err();
        assert!(matches!(err, E2eError::CorruptStateFile { .. }), "{err:?}");
    }
}
