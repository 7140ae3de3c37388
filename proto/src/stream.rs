//! The first frame of every QUIC stream says what the stream carries, so a 20 MB image never
//! shares a stream (or its flow-control window) with text.

use serde::{Deserialize, Serialize};

use crate::client::{Hello, ReqId};
use crate::envelope::{Delivery, Envelope};
use crate::ids::MsgId;
use crate::relay::Relayed;

/// First frame on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum StreamOpen {
    /// The connection's control stream (client→node, node→master, client→master).
    Control(Hello),
    /// Client → node: an image upload. The envelope's kind is `Image`; [`Chunk`] frames
    /// follow, then the client finishes the stream and the node answers `Stored` or `Error`
    /// on the same stream.
    ImageUpload {
        /// Request id for the answer.
        req: ReqId,
        /// The envelope announcing the image.
        envelope: Envelope,
    },
    /// Node → client: the blob of a delivered image message; [`Chunk`] frames follow and the
    /// stream finishes after the last.
    ImageDownload {
        /// The message the image belongs to.
        msg: MsgId,
        /// Its envelope as delivered.
        delivery: Delivery,
    },
    /// Node → master → node: a relayed image; [`Chunk`] frames follow.
    RelayImage(Relayed),
}

/// One piece of an encrypted image stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Chunk {
    /// Ciphertext, at most [`crate::limits::MAX_BLOB_CHUNK`] bytes.
    #[cfg_attr(test, proptest(strategy = "crate::testing::bytes(64)"))]
    pub data: Vec<u8>,
}
