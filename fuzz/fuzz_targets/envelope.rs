//! The envelope check: what a node runs on every `Send` and `ImageUpload` before storing.
//!
//! Input: the postcard body of an [`Envelope`]. If `Envelope::check` accepts it, what the
//! node then relies on must hold: 1 to `MAX_RECIPIENTS` distinct recipients, the sender among
//! them, one key per recipient in order, fields within their limits; the client's
//! `delivery_for` finds each recipient's key; and the node's hand-built `Deliver` prefix
//! plus the sealed bytes is byte for byte the frame `frame::encode` makes.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use quip_proto::client::deliver_prefix;
use quip_proto::limits::{MAX_RECIPIENTS, MAX_SEALED, MAX_SIGNATURE, MAX_WRAPPED_KEY};
use quip_proto::{Delivery, Envelope, NodeToClient, frame};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = frame::decode_body::<Envelope>(data) else {
        return;
    };
    if envelope.check().is_err() {
        return;
    }
    let header = &envelope.sealed.header;
    let count = header.recipients.len();
    assert!((1..=MAX_RECIPIENTS).contains(&count));
    assert_eq!(
        header.recipients.iter().collect::<BTreeSet<_>>().len(),
        count
    );
    assert!(header.recipients.contains(&header.sender));
    assert_eq!(envelope.keys.len(), count);
    assert!(envelope.sealed.ciphertext.len() <= MAX_SEALED);
    assert!(envelope.sealed.signature.len() <= MAX_SIGNATURE);
    let sealed = postcard::to_stdvec(&envelope.sealed).expect("encode sealed");
    for (key, name) in envelope.keys.iter().zip(&header.recipients) {
        assert_eq!(&key.recipient, name);
        assert!(key.wrapped.len() <= MAX_WRAPPED_KEY);
        let delivery = quip_cli::e2e::delivery_for(&envelope, name).expect("a listed recipient");
        assert_eq!(delivery.key, key.wrapped);
        assert_eq!(delivery.sealed, envelope.sealed);
        let real = frame::encode(&NodeToClient::Deliver(Delivery {
            key: key.wrapped.clone(),
            sealed: envelope.sealed.clone(),
        }));
        match (deliver_prefix(&key.wrapped, sealed.len()), real) {
            (Ok(mut manual), Ok(real)) => {
                manual.extend_from_slice(&sealed);
                assert_eq!(manual, real, "deliver_prefix + sealed == the encoded frame");
            }
            (Err(_), Err(_)) => {}
            (manual, real) => panic!(
                "deliver_prefix and frame::encode disagree on the size: {:?} vs {:?}",
                manual.map(|m| m.len()),
                real.map(|r| r.len())
            ),
        }
    }
});
