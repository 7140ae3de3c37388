//! The client's other state files: the key pins (`PinStore::open`, `quip-pins/1` + postcard)
//! and the seen message ids (`SeenIds::with_capacity`, `quip-seen/1` + 16-byte records).
//!
//! Input: one mode byte (even: pins, odd: seen ids), then the file. A damaged file is a
//! clear error, never a panic; an accepted seen file remembers a new id across a reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_cli::e2e::{E2eError, PINS_FILE, PinStore, SEEN_FILE, SeenIds};
use quip_proto::ids::MsgId;

fuzz_target!(|data: &[u8]| {
    let Some((mode, file)) = data.split_first() else {
        return;
    };
    let dir = quip_fuzz::fresh_dir("state");
    if mode % 2 == 0 {
        std::fs::write(dir.join(PINS_FILE), file).expect("write pins");
        match PinStore::open(&dir) {
            Ok(pins) => {
                let _ = pins.get(&quip_fuzz::user());
            }
            Err(E2eError::CorruptStateFile { .. }) => {}
            Err(other) => panic!("unexpected error opening pins: {other}"),
        }
    } else {
        std::fs::write(dir.join(SEEN_FILE), file).expect("write seen ids");
        // A small capacity so the compaction paths run on small inputs too.
        let capacity = 1 + usize::from(*mode >> 1) % 8;
        match SeenIds::with_capacity(&dir, capacity) {
            Ok(mut seen) => {
                let id = MsgId([0xf0; 16]);
                let _ = seen.insert(id).expect("insert");
                assert!(seen.contains(&id));
                drop(seen);
                let again = SeenIds::with_capacity(&dir, capacity).expect("reopen what we wrote");
                assert!(again.contains(&id), "the newest id survives a reopen");
            }
            Err(E2eError::CorruptStateFile { .. }) => {}
            Err(other) => panic!("unexpected error opening seen ids: {other}"),
        }
    }
});
