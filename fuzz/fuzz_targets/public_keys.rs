//! A peer's public keys as the node hands them out (`PublicKeys`, two SPKI DER blobs):
//! parsed by the client with `PeerKeys::from_public` before anything is pinned or wrapped.
//! The server is not trusted, so any bytes must give a clear error or keys of an allowed
//! size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_cli::e2e::{MAX_KEY_BITS, MIN_KEY_BITS, PeerKeys, fingerprint};
use quip_proto::{PublicKeys, frame};

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = frame::decode_body::<PublicKeys>(data) else {
        return;
    };
    let _ = fingerprint(&keys);
    if let Ok(peer) = PeerKeys::from_public(&keys) {
        for bits in [peer.encryption_bits(), peer.signing_bits()] {
            assert!((MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits), "{bits} bits");
        }
    }
});
