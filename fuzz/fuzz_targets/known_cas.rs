//! The `known_cas` pin file (`quip_quic::KnownCas`): one `address sha256-hex` line per
//! server, read on every connection. The input is written as the file and looked up through
//! the public API: any bytes (not UTF-8, no newline, huge lines) must give a pin, none, or a
//! clear error naming the bad line — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_quic::KnownCas;

fuzz_target!(|data: &[u8]| {
    let dir = quip_fuzz::fresh_dir("known_cas");
    let path = dir.join("known_cas");
    std::fs::write(&path, data).expect("write pin file");
    let known = KnownCas::new(&path);
    // The seeds pin this address; the first word of the input is whatever the file names.
    let first = String::from_utf8_lossy(data);
    let first = first.split_whitespace().next().unwrap_or("");
    for addr in ["127.0.0.1:7000", first] {
        match known.get(addr) {
            Ok(Some(pin)) => assert!(!pin.contains('\n'), "a pin is one line: {pin:?}"),
            Ok(None) => {}
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    }
});
