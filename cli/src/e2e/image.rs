//! End-to-end encrypted images: a checked file, encrypted chunk by chunk with STREAM
//! (`aead-stream`'s `StreamBE32` over AES-256-GCM) under a fresh key that travels inside a
//! normal sealed envelope as a postcard-encoded [`ImageKey`].
//!
//! ```text
//! envelope plaintext = postcard(ImageKey { key, nonce, format, plain_len, chunks, sha256 })
//! chunk i = AES-256-GCM(key, nonce(7) || u32be(i) || last(1), plaintext_i, IMAGE_AAD_CONTEXT)
//! ```
//!
//! Every chunk but the last holds [`IMAGE_CHUNK`] plaintext bytes. Reordered, dropped or
//! duplicated chunks fail authentication, extra ones the announced count, and a stream cut
//! before the chunk sealed as last is refused by [`ImageDecryptor::finish`], which also checks
//! length, SHA-256 and format before the file gets its final, receiver-chosen name.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::{fmt, mem};

use aead_stream::{DecryptorBE32, EncryptorBE32, Nonce, StreamBE32};
use aes_gcm::{Aes256Gcm, Key};
use quip_proto::ids::{MsgId, UserName};
use quip_proto::limits::MAX_BLOB_CHUNK;
use rand::Rng;
use rsa::pkcs8::der::zeroize::{Zeroize, Zeroizing};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{E2eError, Result};
use super::files::{ensure_dir, private_options};
use super::seal::{KEY_LEN, TAG_LEN};

/// Plaintext bytes per chunk; a ciphertext chunk is 16 bytes (the tag) longer.
pub const IMAGE_CHUNK: usize = 64 * 1024;
/// Domain-separation prefix: the associated data of every image chunk.
pub const IMAGE_AAD_CONTEXT: &[u8] = b"quip/1 image chunk\0";
const _: () = assert!(IMAGE_CHUNK + TAG_LEN <= MAX_BLOB_CHUNK);
/// Leading bytes read to find format and dimensions (bounds memory and parsing work).
const PROBE_LEN: u64 = 1024 * 1024;
/// [`IMAGE_CHUNK`] as a `u64`.
const CHUNK: u64 = IMAGE_CHUNK as u64;

/// The image formats Quip sends, detected from the bytes (never from a file name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageFormat {
    /// Portable Network Graphics.
    Png,
    /// JPEG (JFIF or Exif).
    Jpeg,
    /// GIF87a or GIF89a.
    Gif,
    /// WebP (lossy, lossless or extended).
    WebP,
}

impl ImageFormat {
    /// The file extension a received image of this format is saved with.
    pub fn extension(&self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Gif => "gif",
            Self::WebP => "webp",
        }
    }
}

/// What [`inspect_image`] found out about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format detected from the header.
    pub format: ImageFormat,
    /// Size of the file in bytes.
    pub len: u64,
    /// Width in pixels, from the header.
    pub width: u32,
    /// Height in pixels, from the header.
    pub height: u32,
}

/// Checks a file before anything is sent: it exists, is a regular file, is not empty, is at
/// most `max_len` bytes, and starts with a PNG, JPEG, GIF or WebP header whose dimensions can
/// be read. Each failure is its own [`E2eError`] naming the path.
pub fn inspect_image(path: &Path, max_len: u64) -> Result<ImageInfo> {
    open_image(path, max_len).map(|(info, _)| info)
}

/// [`inspect_image`], keeping the open file. The path is checked to be a regular file before
/// opening (so a FIFO cannot block us) and the handle after (so it cannot be swapped between).
fn open_image(path: &Path, max_len: u64) -> Result<(ImageInfo, File)> {
    let not_found = |err: io::Error| match err.kind() {
        io::ErrorKind::NotFound => E2eError::ImageNotFound { path: path.into() },
        _ => E2eError::io(path)(err),
    };
    let regular = |meta: fs::Metadata| match (meta.is_file(), meta.is_dir()) {
        (true, _) => Ok(meta.len()),
        (_, dir) => Err(E2eError::NotAFile {
            path: path.into(),
            kind: if dir {
                "a directory"
            } else {
                "not a regular file"
            },
        }),
    };
    regular(fs::metadata(path).map_err(not_found)?)?;
    let mut file = File::open(path).map_err(not_found)?;
    let len = regular(file.metadata().map_err(E2eError::io(path))?)?;
    let path = path.to_path_buf();
    if len == 0 {
        return Err(E2eError::EmptyImage { path });
    }
    if len > max_len {
        return Err(E2eError::ImageTooLarge {
            path,
            len,
            max: max_len,
        });
    }
    Ok((probe(&mut file, &path, len)?, file))
}

/// Detects the format and non-zero dimensions from the first [`PROBE_LEN`] bytes of `file`.
fn probe(file: &mut File, path: &Path, len: u64) -> Result<ImageInfo> {
    let mut head = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(E2eError::io(path))?;
    let read = file.take(PROBE_LEN).read_to_end(&mut head);
    read.map_err(E2eError::io(path))?;
    let format = match imagesize::image_type(&head) {
        Ok(imagesize::ImageType::Png) => ImageFormat::Png,
        Ok(imagesize::ImageType::Jpeg) => ImageFormat::Jpeg,
        Ok(imagesize::ImageType::Gif) => ImageFormat::Gif,
        Ok(imagesize::ImageType::Webp) => ImageFormat::WebP,
        _ => return Err(E2eError::NotAnImage { path: path.into() }),
    };
    let dim = |d: usize| u32::try_from(d).ok().filter(|&d| d > 0);
    let size = imagesize::blob_size(&head).ok();
    match size.and_then(|s| Some((dim(s.width)?, dim(s.height)?))) {
        Some((width, height)) => Ok(ImageInfo {
            format,
            len,
            width,
            height,
        }),
        None => Err(E2eError::NotAnImage { path: path.into() }),
    }
}

/// What an image message's envelope carries: the stream key and everything needed to decrypt
/// and check the stream. The key is zeroized on drop and never printed.
#[derive(Serialize, Deserialize)]
pub struct ImageKey {
    key: [u8; KEY_LEN],
    nonce: [u8; 7],
    /// The image's format, detected by the sender.
    pub format: ImageFormat,
    /// Plaintext length in bytes (at least 1).
    pub plain_len: u64,
    /// Number of chunks: `plain_len` divided by [`IMAGE_CHUNK`], rounded up.
    pub chunks: u32,
    /// SHA-256 of the plaintext image.
    pub sha256: [u8; 32],
}

impl ImageKey {
    /// The envelope plaintext (postcard), zeroized when dropped. Seal it with
    /// `ContentKind::Image { blob, len: self.cipher_len() }`.
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        // Encoding fixed-size fields cannot fail; were it to, `from_plaintext` refuses the
        // empty result rather than anything being misread.
        Zeroizing::new(postcard::to_stdvec(self).unwrap_or_default())
    }

    /// Decodes an envelope plaintext strictly: trailing bytes, an empty image or a chunk count
    /// that does not match the length are [`E2eError::BadImageKey`].
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((key, [])) if key.is_consistent() => Ok(key),
            _ => Err(E2eError::BadImageKey),
        }
    }

    /// Total ciphertext bytes of the stream: what the header's `ContentKind::Image { len }`
    /// must say, and what a receiver should check it against before downloading.
    pub fn cipher_len(&self) -> u64 {
        let tags = u64::from(self.chunks) * TAG_LEN as u64;
        self.plain_len.saturating_add(tags)
    }

    /// `plain_len` is non-zero and `chunks` is the count it needs.
    fn is_consistent(&self) -> bool {
        let count = u32::try_from(self.plain_len.div_ceil(CHUNK)).ok();
        self.plain_len > 0 && count == Some(self.chunks)
    }

    /// The STREAM key and nonce prefix.
    fn cipher(&self) -> (Key<Aes256Gcm>, Nonce<Aes256Gcm, StreamBE32<Aes256Gcm>>) {
        (Key::<Aes256Gcm>::from(self.key), self.nonce.into())
    }
}

impl fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageKey")
            .field("key", &"<redacted>")
            .field("format", &self.format)
            .field("plain_len", &self.plain_len)
            .field("chunks", &self.chunks)
            .finish_non_exhaustive()
    }
}

impl Drop for ImageKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The error of an image stream used after it failed.
fn already_failed() -> E2eError {
    E2eError::ImageStream {
        reason: "the stream already failed",
    }
}

/// Encrypts an image file chunk by chunk. Memory stays bounded: both passes over the file
/// (hashing in [`Self::open`], encrypting in [`Self::next_chunk`]) read one chunk at a time.
#[derive(Debug)]
pub struct ImageEncryptor {
    path: PathBuf,
    file: File,
    /// `None` once the last chunk is out.
    stream: Option<EncryptorBE32<Aes256Gcm>>,
    failed: bool,
    remaining: u64,
    hasher: Sha256,
    sha256: [u8; 32],
}

impl ImageEncryptor {
    /// Inspects `path` (as [`inspect_image`]), hashes it in a first pass and makes a fresh
    /// random key and nonce. Seal the [`ImageKey`] in the envelope, then send the chunks.
    pub fn open(path: &Path, max_len: u64) -> Result<(Self, ImageKey)> {
        let (info, mut file) = open_image(path, max_len)?;
        file.seek(SeekFrom::Start(0)).map_err(E2eError::io(path))?;
        // Reading one past the inspected length catches a file that grew.
        let mut reader = (&mut file).take(info.len.saturating_add(1));
        let (mut hasher, mut buf, mut plain_len) = (Sha256::new(), vec![0; IMAGE_CHUNK], 0);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    plain_len += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(E2eError::io(path)(err)),
            }
        }
        let sha256 = hasher.finalize().into();
        let (format, chunks) = (info.format, plain_len.div_ceil(CHUNK));
        let chunks = u32::try_from(chunks).ok().filter(|_| plain_len == info.len);
        let chunks = chunks.ok_or_else(|| E2eError::ImageChanged { path: path.into() })?;
        let (mut key, mut nonce) = ([0; KEY_LEN], [0; 7]);
        rand::rng().fill_bytes(&mut key);
        rand::rng().fill_bytes(&mut nonce);
        let key = ImageKey {
            key,
            nonce,
            format,
            plain_len,
            chunks,
            sha256,
        };
        let (cipher_key, nonce) = key.cipher();
        file.seek(SeekFrom::Start(0)).map_err(E2eError::io(path))?;
        let this = Self {
            path: path.into(),
            file,
            stream: Some(EncryptorBE32::new(&cipher_key, &nonce)),
            failed: false,
            remaining: plain_len,
            hasher: Sha256::new(),
            sha256,
        };
        Ok((this, key))
    }

    /// The next ciphertext chunk, or `None` after the last (sealed with STREAM's last flag).
    /// If the file changed since [`Self::open`], the last chunk is withheld and
    /// [`E2eError::ImageChanged`] returned, so no receiver gets a complete stream.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.failed {
            return Err(already_failed());
        }
        let result = self.encrypt_next();
        self.failed = result.is_err();
        result
    }

    fn encrypt_next(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let changed = || E2eError::ImageChanged {
            path: self.path.clone(),
        };
        let len = self.remaining.min(CHUNK) as usize;
        let mut buf = Vec::with_capacity(len + TAG_LEN);
        let read = (&mut self.file).take(len as u64).read_to_end(&mut buf);
        read.map_err(E2eError::io(&self.path))?;
        if buf.len() < len {
            return Err(changed());
        }
        self.hasher.update(&buf);
        self.remaining -= len as u64;
        let sealed = if self.remaining > 0 {
            stream.encrypt_next_in_place(IMAGE_AAD_CONTEXT, &mut buf)
        } else if <[u8; 32]>::from(mem::take(&mut self.hasher).finalize()) != self.sha256 {
            return Err(changed());
        } else {
            let stream = self.stream.take().ok_or_else(already_failed)?;
            stream.encrypt_last_in_place(IMAGE_AAD_CONTEXT, &mut buf)
        };
        sealed.map_err(|_| E2eError::Encode {
            what: "image chunk",
        })?;
        Ok(Some(buf))
    }
}

/// Decrypts an image stream, in order, into a temporary file in the receiver's directory.
/// [`Self::finish`] checks it and gives it its final name; dropping it unfinished (a stream cut
/// mid-way, an error) deletes the temporary file: a partial image is never kept as whole.
#[derive(Debug)]
pub struct ImageDecryptor {
    /// `None` once the last chunk is in.
    stream: Option<DecryptorBE32<Aes256Gcm>>,
    failed: bool,
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    /// Announced format, length, chunk count and SHA-256.
    format: ImageFormat,
    plain_len: u64,
    chunks: u32,
    sha256: [u8; 32],
    received: u32,
    hasher: Sha256,
}

impl ImageDecryptor {
    /// Starts decrypting the image `key` announces, sent by `sender` in message `id`, into
    /// `dir` (created if missing). The final name is `<dir>/<sender>-<id hex>.<ext>`: validated
    /// parts the receiver controls, never a name the sender supplied. A later image with the
    /// same sender and id replaces the file (drop repeated ids first).
    pub fn new(key: &ImageKey, dir: &Path, sender: &UserName, id: &MsgId) -> Result<Self> {
        if !key.is_consistent() {
            return Err(E2eError::BadImageKey);
        }
        ensure_dir(dir)?;
        let stem = format!("{}-{}", sender.as_str(), id.to_hex());
        let tmp = dir.join(format!(".{stem}.part-{:016x}", rand::rng().next_u64()));
        let mut options = private_options();
        let file = options.read(true).write(true).create_new(true).open(&tmp);
        let file = file.map_err(E2eError::io(&tmp))?;
        let (cipher_key, nonce) = key.cipher();
        Ok(Self {
            stream: Some(DecryptorBE32::new(&cipher_key, &nonce)),
            failed: false,
            file: Some(file),
            tmp,
            target: dir.join(format!("{stem}.{}", key.format.extension())),
            format: key.format,
            plain_len: key.plain_len,
            chunks: key.chunks,
            sha256: key.sha256,
            received: 0,
            hasher: Sha256::new(),
        })
    }

    /// Decrypts and writes the next chunk. An altered, reordered or duplicated chunk is
    /// [`E2eError::Tampered`]; a chunk of the wrong size or beyond the announced count is
    /// [`E2eError::ImageStream`]. After any error the decryptor refuses everything.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.failed {
            return Err(already_failed());
        }
        let result = self.decrypt(chunk);
        self.failed = result.is_err();
        result
    }

    fn decrypt(&mut self, chunk: &[u8]) -> Result<()> {
        let (index, refuse) = (self.received, |reason| E2eError::ImageStream { reason });
        let (Some(stream), Some(file)) = (self.stream.as_mut(), self.file.as_mut()) else {
            return Err(refuse("more chunks than the message announced"));
        };
        let plain = (self.plain_len - u64::from(index) * CHUNK).min(CHUNK);
        if chunk.len() as u64 != plain + TAG_LEN as u64 {
            return Err(refuse("a chunk has the wrong size"));
        }
        let mut buf = chunk.to_vec();
        let opened = match index + 1 == self.chunks {
            false => stream.decrypt_next_in_place(IMAGE_AAD_CONTEXT, &mut buf),
            true => match self.stream.take() {
                Some(stream) => stream.decrypt_last_in_place(IMAGE_AAD_CONTEXT, &mut buf),
                None => return Err(already_failed()),
            },
        };
        opened.map_err(|_| E2eError::Tampered)?;
        file.write_all(&buf).map_err(E2eError::io(&self.tmp))?;
        self.hasher.update(&buf);
        self.received += 1;
        Ok(())
    }

    /// Checks that the stream ended with its last chunk, and the SHA-256 and format of the
    /// decrypted image; then syncs the file and renames it to its final name, returned. On any
    /// error the file is deleted.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.failed {
            return Err(already_failed());
        }
        if self.stream.is_some() {
            let (received, expected) = (self.received, self.chunks);
            return Err(E2eError::ImageTruncated { received, expected });
        }
        let mismatch = |what| E2eError::ImageMismatch { what };
        if <[u8; 32]>::from(mem::take(&mut self.hasher).finalize()) != self.sha256 {
            return Err(mismatch("SHA-256"));
        }
        let mut file = self.file.take().ok_or_else(already_failed)?;
        file.sync_all().map_err(E2eError::io(&self.tmp))?;
        match probe(&mut file, &self.tmp, 0) {
            Ok(info) if info.format == self.format => drop(file),
            _ => return Err(mismatch("format")),
        }
        fs::rename(&self.tmp, &self.target).map_err(E2eError::io(&self.target))?;
        // Make the new name durable; the content itself was synced above.
        #[cfg(unix)]
        let _ = self.target.parent().map(|dir| File::open(dir)?.sync_all());
        Ok(mem::take(&mut self.target))
    }
}

impl Drop for ImageDecryptor {
    fn drop(&mut self) {
        drop(self.file.take());
        // After a successful `finish` the temporary name no longer exists.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::fixtures::name;

    /// 3×2 images made with Pillow and decoded back by it.
    const FIXTURES: [(ImageFormat, &str); 4] = [
        (
            ImageFormat::Png,
            "89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d000000154944415478da633c2127c7c0c0c0c0c0c0c4000300132e0108db1b58a20000000049454e44ae426082",
        ),
        (
            ImageFormat::Gif,
            "47494638376103000200810000c81e1e0000000000000000002c00000000030002000008060001081c1810003b",
        ),
        (
            ImageFormat::Jpeg,
            "ffd8ffe000104a46494600010100000100010000ffdb004300ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffc0000b080002000301011100ffc40014000100000000000000000000000000000000ffc40014100100000000000000000000000000000000ffda0008010100003f003fffd9",
        ),
        (
            ImageFormat::WebP,
            "524946461e000000574542505650384c110000002f0240000007508f22d7a3ff8188e87f0000",
        ),
    ];

    /// The PNG fixture followed by `filler` opaque bytes (decoders ignore data after IEND).
    fn png(filler: usize) -> Vec<u8> {
        let mut bytes = hex::decode(FIXTURES[0].1).unwrap();
        bytes.extend((0..filler as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        bytes
    }

    fn write(dir: &tempfile::TempDir, file: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(file);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn encrypt_all(path: &Path) -> (ImageKey, Vec<Vec<u8>>) {
        let (mut encryptor, key) = ImageEncryptor::open(path, 1 << 30).unwrap();
        let chunks: Vec<_> = std::iter::from_fn(|| encryptor.next_chunk().unwrap()).collect();
        assert!(encryptor.next_chunk().unwrap().is_none(), "stays done");
        (key, chunks)
    }

    fn start(key: &ImageKey, dir: &Path) -> ImageDecryptor {
        ImageDecryptor::new(key, dir, &name("alice"), &MsgId([0xab; 16])).unwrap()
    }

    /// Pushes `chunks` in order and finishes, stopping at the first error.
    fn decrypt<'a>(
        key: &ImageKey,
        dir: &Path,
        chunks: impl IntoIterator<Item = &'a Vec<u8>>,
    ) -> Result<PathBuf> {
        let mut decryptor = start(key, dir);
        chunks.into_iter().try_for_each(|c| decryptor.push(c))?;
        decryptor.finish()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let names = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name());
        names.map(|n| n.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn every_format_is_detected_and_round_trips() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (format, hex) in FIXTURES {
            let bytes = hex::decode(hex).unwrap();
            let path = write(&src, "picture.bin", &bytes);
            let info = inspect_image(&path, bytes.len() as u64).unwrap();
            assert_eq!(
                (info.format, info.len, info.width, info.height),
                (format, bytes.len() as u64, 3, 2)
            );
            let (key, chunks) = encrypt_all(&path);
            assert_eq!((key.format, key.chunks, chunks.len()), (format, 1, 1));
            let saved = decrypt(&key, out.path(), &chunks).unwrap();
            let expected = format!("alice-{}.{}", "ab".repeat(16), format.extension());
            assert_eq!(saved, out.path().join(expected));
            assert_eq!(fs::read(&saved).unwrap(), bytes);
        }
        assert_eq!(
            listing(out.path()).len(),
            4,
            "one file per format, nothing else"
        );
    }

    #[test]
    fn multi_chunk_round_trip_is_byte_for_byte() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bytes = png(300_000);
        let (key, chunks) = encrypt_all(&write(&src, "big.png", &bytes));
        assert!(chunks.len() >= 5 && key.chunks as usize == chunks.len());
        let (last, full) = chunks.split_last().unwrap();
        assert!(full.iter().all(|c| c.len() == IMAGE_CHUNK + TAG_LEN));
        assert!(last.len() < IMAGE_CHUNK + TAG_LEN);
        assert_eq!(
            key.cipher_len(),
            chunks.iter().map(|c| c.len() as u64).sum::<u64>()
        );
        assert_eq!(key.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        let saved = decrypt(&key, out.path(), &chunks).unwrap();
        assert_eq!(fs::read(&saved).unwrap(), bytes);
        assert_eq!(
            listing(out.path()),
            [format!("alice-{}.png", "ab".repeat(16))]
        );
        // An exact multiple of the chunk size: the last chunk is a full one.
        let exact = png(2 * IMAGE_CHUNK - png(0).len());
        let (key, chunks) = encrypt_all(&write(&src, "exact.png", &exact));
        assert_eq!((key.chunks, chunks[1].len()), (2, IMAGE_CHUNK + TAG_LEN));
        let saved = decrypt(&key, out.path(), &chunks).unwrap();
        assert_eq!(fs::read(saved).unwrap(), exact);
    }

    #[test]
    fn bad_files_are_refused_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let text = write(&dir, "notes.png", b"just some text, not a picture");
        let cases = [
            (dir.path().join("missing.png"), 100, "not found"),
            (
                dir.path().to_path_buf(),
                100,
                "is a directory, not an image file",
            ),
            (text, 100, "is not a PNG, JPEG, GIF or WebP image"),
            (
                write(&dir, "short.png", b"\x89PNG\r\n\x1a\n"),
                100,
                "is not a PNG",
            ),
            (
                write(&dir, "ok.png", &png(0)),
                77,
                "is 78 bytes, over the limit of 77 bytes",
            ),
            (write(&dir, "empty.png", b""), 100, "is empty"),
        ];
        for (path, max, message) in cases {
            let err = inspect_image(&path, max).unwrap_err().to_string();
            assert!(
                err.contains(message) && err.contains(path.to_str().unwrap()),
                "{err}"
            );
            let err = ImageEncryptor::open(&path, max).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn broken_streams_fail_and_leave_nothing() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (key, c) = encrypt_all(&write(&src, "big.png", &png(300_000)));
        let mut flipped = c[2].clone();
        flipped[100] ^= 1;
        let all: Vec<_> = c.iter().collect();
        let cases: [(&str, Vec<_>, &str); 6] = [
            (
                "flipped",
                [&all[..2], &[&flipped], &all[3..]].concat(),
                "tampered",
            ),
            (
                "swapped",
                [&all[..1], &[&c[2], &c[1]], &all[3..]].concat(),
                "tampered",
            ),
            ("duplicated", [&all[..2], &all[1..]].concat(), "tampered"),
            ("dropped", [&all[..1], &all[2..]].concat(), "tampered"),
            (
                "truncated",
                all[..c.len() - 1].to_vec(),
                "cut short: 4 of 5 chunks arrived",
            ),
            (
                "extra",
                [&all[..], &all[..1]].concat(),
                "more chunks than the message announced",
            ),
        ];
        for (what, chunks, message) in cases {
            let err = decrypt(&key, out.path(), chunks).unwrap_err();
            assert!(err.to_string().contains(message), "{what}: {err}");
            assert!(
                listing(out.path()).is_empty(),
                "{what}: {:?}",
                listing(out.path())
            );
        }
        // After an error the decryptor is dead, even for the right chunk.
        let mut decryptor = start(&key, out.path());
        assert!(matches!(decryptor.push(&flipped), Err(E2eError::Tampered)));
        assert!(decryptor.push(&c[0]).is_err() && decryptor.finish().is_err());
        // Dropped mid-way (the connection died): the partial file is removed.
        let mut decryptor = start(&key, out.path());
        decryptor.push(&c[0]).unwrap();
        assert_eq!(listing(out.path()).len(), 1);
        drop(decryptor);
        assert!(listing(out.path()).is_empty());
    }

    #[test]
    fn finish_checks_hash_and_format() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut key, chunks) = encrypt_all(&write(&src, "a.png", &png(1000)));
        key.sha256[0] ^= 1;
        let err = decrypt(&key, out.path(), &chunks).unwrap_err();
        assert!(
            matches!(err, E2eError::ImageMismatch { what: "SHA-256" }),
            "{err}"
        );
        key.sha256[0] ^= 1;
        key.format = ImageFormat::Gif;
        let err = decrypt(&key, out.path(), &chunks).unwrap_err();
        assert!(
            matches!(err, E2eError::ImageMismatch { what: "format" }),
            "{err}"
        );
        assert!(listing(out.path()).is_empty());
    }

    #[test]
    fn a_file_changed_while_sending_never_completes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = png(200_000);
        let path = write(&dir, "a.png", &bytes);
        for changed in [png(199_999), [&bytes[..bytes.len() - 1], b"!"].concat()] {
            fs::write(&path, &bytes).unwrap();
            let (mut encryptor, _) = ImageEncryptor::open(&path, 1 << 30).unwrap();
            fs::write(&path, changed).unwrap();
            let err = std::iter::from_fn(|| Some(encryptor.next_chunk())).find_map(Result::err);
            assert!(
                matches!(err, Some(E2eError::ImageChanged { .. })),
                "{err:?}"
            );
            assert!(encryptor.next_chunk().is_err(), "stays failed");
        }
    }

    #[test]
    fn image_key_decoding_is_strict_and_debug_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = encrypt_all(&write(&dir, "a.png", &png(0)));
        let plain = key.to_plaintext();
        let back = ImageKey::from_plaintext(&plain).unwrap();
        assert_eq!(
            (back.key, back.nonce, back.sha256),
            (key.key, key.nonce, key.sha256)
        );
        assert_eq!(
            (back.format, back.plain_len, back.chunks),
            (key.format, 78, 1)
        );
        let trailing = [&plain[..], &[0]].concat();
        let inconsistent = ImageKey { chunks: 2, ..back }.to_plaintext();
        for bad in [
            &b"garbage"[..],
            &plain[..plain.len() - 1],
            &trailing,
            &inconsistent,
        ] {
            assert!(matches!(
                ImageKey::from_plaintext(bad),
                Err(E2eError::BadImageKey)
            ));
        }
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>") && !debug.contains(&format!("{:?}", key.key)));
    }
}
