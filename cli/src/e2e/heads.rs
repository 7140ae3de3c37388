//! The highest point of each group's membership chain this client has verified, persisted
//! in the data directory, so a server that drops the newest links (to undo a removal) is
//! caught, even across restarts. A chain is accepted only if it reaches at least the
//! remembered epoch and its link at that epoch hashes to the remembered head.
//!
//! The file is `HEADS_MAGIC || postcard([(group, epoch, head)])`, 0600, replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quip_proto::ids::GroupId;

use super::error::{E2eError, Result};
use super::files::{read_limited, write_atomic};

/// Name of the verified-heads file inside the data directory.
pub const HEADS_FILE: &str = "group_heads";
/// Format tag at the start of the file.
const HEADS_MAGIC: &[u8] = b"quip-group-heads/1\n";
/// A heads file larger than this is not one Quip wrote (~60 bytes per group).
const MAX_HEADS_FILE: u64 = 64 * 1024 * 1024;

/// A verified point of a group's chain: the epoch and the SHA-256 of the link at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The epoch.
    pub epoch: u64,
    /// SHA-256 of the link at that epoch.
    pub head: [u8; 32],
}

/// The highest verified head of every group this client has verified.
#[derive(Debug)]
pub struct ChainHeads {
    path: PathBuf,
    heads: BTreeMap<GroupId, ChainHead>,
}

impl ChainHeads {
    /// Opens the heads of data directory `dir` (empty if there is no file yet). A file that
    /// cannot be read back is an error: forgetting heads would let a rollback through.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(HEADS_FILE);
        let corrupt = |path| E2eError::CorruptStateFile { path };
        let heads = match read_limited(&path, MAX_HEADS_FILE, corrupt)? {
            None => BTreeMap::new(),
            Some(bytes) => {
                let body = bytes
                    .strip_prefix(HEADS_MAGIC)
                    .ok_or_else(|| corrupt(path.clone()))?;
                let (list, rest): (Vec<(GroupId, u64, [u8; 32])>, _) =
                    postcard::take_from_bytes(body).map_err(|_| corrupt(path.clone()))?;
                if !rest.is_empty() {
                    return Err(corrupt(path));
                }
                list.into_iter()
                    .map(|(group, epoch, head)| (group, ChainHead { epoch, head }))
                    .collect()
            }
        };
        Ok(Self { path, heads })
    }

    /// The highest head verified for `group`, if any.
    pub fn get(&self, group: &GroupId) -> Option<ChainHead> {
        self.heads.get(group).copied()
    }

    /// Remembers `head` for `group` if it is higher than the one remembered (and persists it).
    pub fn advance(&mut self, group: &GroupId, head: ChainHead) -> Result<()> {
        if self.get(group).is_some_and(|old| old.epoch >= head.epoch) {
            return Ok(());
        }
        self.heads.insert(*group, head);
        let list: Vec<(&GroupId, u64, &[u8; 32])> = self
            .heads
            .iter()
            .map(|(group, h)| (group, h.epoch, &h.head))
            .collect();
        let body = postcard::to_stdvec(&list).map_err(|_| E2eError::Encode {
            what: "group heads",
        })?;
        write_atomic(&self.path, &[HEADS_MAGIC, &body].concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_persist_only_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (GroupId([1; 16]), GroupId([2; 16]));
        let mut heads = ChainHeads::open(dir.path()).unwrap();
        assert_eq!(heads.get(&a), None);
        let two = ChainHead {
            epoch: 2,
            head: [7; 32],
        };
        heads.advance(&a, two).unwrap();
        heads
            .advance(
                &a,
                ChainHead {
                    epoch: 1,
                    head: [9; 32],
                },
            )
            .unwrap();
        heads
            .advance(
                &b,
                ChainHead {
                    epoch: 0,
                    head: [3; 32],
                },
            )
            .unwrap();
        let reopened = ChainHeads::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&a), Some(two), "never goes back");
        assert_eq!(reopened.get(&b).map(|h| h.epoch), Some(0));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(HEADS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(HEADS_FILE), b"quip-group-heads/1\n\xff").unwrap();
        assert!(matches!(
            ChainHeads::open(dir.path()),
            Err(E2eError::CorruptStateFile { .. })
        ));
    }
}
