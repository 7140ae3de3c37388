//! Cluster-wide presence: each node learns who is connected to the *other* nodes, so it can
//! answer "is bob online?" for users it does not hold.
//!
//! The registry keeps every node's view in step with the directory. A node gets
//! `Presence { snapshot: true }` after each registration (everyone connected to another
//! node), then one change per event: users who logged in elsewhere (`online`), and users who
//! are now connected to no node but the receiver (`offline`). Changes are computed and
//! queued under the registry lock, so every node sees them in the order the directory
//! changed. A node whose queue is full misses changes: it is marked and gets a fresh snapshot
//! as soon as its queue has room again (see [`crate::registry::Registry::resync_presence`]).

use bytes::Bytes;
use quip_proto::ids::UserName;
use quip_proto::limits::MAX_FRAME;
use quip_proto::{MasterToNode, frame};

/// The node's control-stream queue has no room for the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// How the registry queues frames for a node's control stream.
pub(crate) trait Outbox: Clone {
    /// Queues `frames` in order: all of them, or none when there is no room. A node whose
    /// session is gone takes (and drops) everything.
    fn push(&self, frames: &[Bytes]) -> Result<(), Full>;
}

/// Room left in a frame for the names: the variant tag, the flag and two list lengths take
/// at most 1 + 1 + 5 + 5 bytes.
const BUDGET: usize = MAX_FRAME - 16;

/// Encodes a presence message, split into as many frames as the names need. Only the first
/// frame carries `snapshot` (the rest add to it). A change with no names is no frame at all;
/// a snapshot is always at least one.
pub(crate) fn frames(snapshot: bool, online: &[UserName], offline: &[UserName]) -> Vec<Bytes> {
    frames_within(BUDGET, snapshot, online, offline)
}

fn frames_within(
    budget: usize,
    snapshot: bool,
    online: &[UserName],
    offline: &[UserName],
) -> Vec<Bytes> {
    let mut out = Vec::new();
    if !snapshot && online.is_empty() && offline.is_empty() {
        return out;
    }
    let (mut on, mut off) = (online, offline);
    let mut first = true;
    while first || !on.is_empty() || !off.is_empty() {
        let mut room = budget;
        let take_on = fitting(on, &mut room);
        let take_off = fitting(off, &mut room);
        let msg = MasterToNode::Presence {
            snapshot: snapshot && first,
            online: on[..take_on].to_vec(),
            offline: off[..take_off].to_vec(),
        };
        match frame::encode(&msg) {
            Ok(bytes) => out.push(Bytes::from(bytes)),
            // Unreachable: the budget keeps every frame under the limit.
            Err(err) => tracing::error!(error = %err, "presence frame over the limit"),
        }
        on = &on[take_on..];
        off = &off[take_off..];
        first = false;
        if take_on == 0 && take_off == 0 && (!on.is_empty() || !off.is_empty()) {
            // A budget smaller than one name (tests only): never loop forever.
            tracing::error!("presence budget smaller than a name");
            break;
        }
    }
    out
}

/// How many of `names` fit in `room` bytes (a length byte and the name each); takes their
/// size off `room`.
fn fitting(names: &[UserName], room: &mut usize) -> usize {
    let mut taken = 0;
    for name in names {
        // Names are at most 32 bytes: their length is one varint byte.
        let size = 1 + name.as_str().len();
        if size > *room {
            break;
        }
        *room -= size;
        taken += 1;
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: usize) -> Vec<UserName> {
        (0..n)
            .map(|i| UserName::new(&format!("user{i:04}")).unwrap())
            .collect()
    }

    fn decode(frames: &[Bytes]) -> Vec<(bool, Vec<UserName>, Vec<UserName>)> {
        frames
            .iter()
            .map(|f| {
                assert!(f.len() - frame::PREFIX_LEN <= MAX_FRAME);
                match frame::decode_body::<MasterToNode>(&f[frame::PREFIX_LEN..]).unwrap() {
                    MasterToNode::Presence {
                        snapshot,
                        online,
                        offline,
                    } => (snapshot, online, offline),
                    other => panic!("not presence: {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn an_empty_change_is_no_frame_and_an_empty_snapshot_is_one() {
        assert!(frames(false, &[], &[]).is_empty());
        assert_eq!(decode(&frames(true, &[], &[])), [(true, vec![], vec![])]);
    }

    #[test]
    fn small_lists_go_in_one_frame() {
        let (on, off) = (users(3), users(5)[3..].to_vec());
        assert_eq!(
            decode(&frames(false, &on, &off)),
            [(false, on.clone(), off.clone())]
        );
    }

    #[test]
    fn long_lists_split_and_only_the_first_frame_is_the_snapshot() {
        // Each name is 9 bytes encoded: 4 per frame.
        let (on, off) = (users(6), users(9)[6..].to_vec());
        let got = decode(&frames_within(36, true, &on, &off));
        assert_eq!(got.len(), 3);
        assert!(got[0].0 && !got[1].0 && !got[2].0);
        let all_on: Vec<_> = got.iter().flat_map(|g| g.1.clone()).collect();
        let all_off: Vec<_> = got.iter().flat_map(|g| g.2.clone()).collect();
        assert_eq!((all_on, all_off), (on, off));
        assert!(got.iter().all(|g| g.1.len() + g.2.len() <= 4));
    }

    #[test]
    fn a_full_frame_of_the_longest_names_fits() {
        let long: Vec<UserName> = (0..40_000)
            .map(|i| UserName::new(&format!("u{i:0>31}")).unwrap())
            .collect();
        let got = frames(true, &long, &[]);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|f| f.len() - frame::PREFIX_LEN <= MAX_FRAME));
    }
}
