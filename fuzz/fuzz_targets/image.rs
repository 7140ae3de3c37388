//! Image header sniffing and the STREAM decryption's chunk handling in the client.
//!
//! Input: one mode byte, then
//! - mode even: a file to send. `inspect_image` sniffs it (format and dimensions via
//!   `imagesize`); if it is accepted, it is encrypted with `ImageEncryptor`, its key goes
//!   through the envelope plaintext (`ImageKey::to_plaintext`/`from_plaintext`) and
//!   `ImageDecryptor` must give back exactly the same file (sniffed again on arrival).
//! - mode odd: what a hostile sender controls on the receiving side: `u16` length, an
//!   `ImageKey` plaintext, then chunks as `u16` length + bytes. The decryptor must refuse
//!   cleanly (wrong sizes, extra chunks, failed tags, truncation, wrong format), never
//!   panic, and keep no file unless the whole stream is authentic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quip_cli::e2e::{ImageDecryptor, ImageEncryptor, ImageKey, inspect_image};
use quip_proto::ids::MsgId;

/// Largest file the round trip handles (libFuzzer's inputs are far smaller anyway).
const MAX_LEN: u64 = 1 << 20;

fn round_trip(file: &[u8]) {
    let dir = quip_fuzz::fresh_dir("image");
    let path = dir.join("input");
    std::fs::write(&path, file).expect("write input");
    let Ok(info) = inspect_image(&path, MAX_LEN) else {
        return;
    };
    assert_eq!(info.len, file.len() as u64);
    assert!(info.width > 0 && info.height > 0);
    let (mut encryptor, key) =
        ImageEncryptor::open(&path, MAX_LEN).expect("an accepted image encrypts");
    let mut chunks = Vec::new();
    while let Some(chunk) = encryptor.next_chunk().expect("encrypt") {
        chunks.push(chunk);
    }
    let key = ImageKey::from_plaintext(&key.to_plaintext()).expect("the key round-trips");
    assert_eq!(
        key.cipher_len(),
        chunks.iter().map(|c| c.len() as u64).sum::<u64>()
    );
    let out = dir.join("out");
    let mut decryptor =
        ImageDecryptor::new(&key, &out, &quip_fuzz::user(), &MsgId([7; 16])).expect("start");
    for chunk in &chunks {
        decryptor.push(chunk).expect("an authentic chunk decrypts");
    }
    let saved = decryptor.finish().expect("an authentic image is accepted");
    assert_eq!(std::fs::read(saved).expect("read back"), file);
}

fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (head, tail) = rest.split_at(len);
    *data = tail;
    Some(head)
}

fn hostile_stream(mut data: &[u8]) {
    let Some(plaintext) = take(&mut data) else {
        return;
    };
    let Ok(key) = ImageKey::from_plaintext(plaintext) else {
        return;
    };
    let _ = key.cipher_len();
    let out = quip_fuzz::fresh_dir("stream");
    let Ok(mut decryptor) = ImageDecryptor::new(&key, &out, &quip_fuzz::user(), &MsgId([9; 16]))
    else {
        return;
    };
    while let Some(chunk) = take(&mut data) {
        if decryptor.push(chunk).is_err() {
            assert!(
                decryptor.push(chunk).is_err(),
                "a failed stream stays failed"
            );
            break;
        }
    }
    let finished = decryptor.finish();
    let left = std::fs::read_dir(&out).expect("list").count();
    match finished {
        // Only an authentic stream (a seed the sender encrypted) gets here.
        Ok(_) => assert_eq!(left, 1, "exactly the image is kept"),
        Err(_) => assert_eq!(left, 0, "a refused stream leaves no file behind"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        round_trip(rest);
    } else {
        hostile_stream(rest);
    }
});
