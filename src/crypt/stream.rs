//! age's payload: the plaintext in 64 KiB chunks, each sealed with ChaCha20-Poly1305 under
//! a key derived from the file key and the payload nonce, with a nonce made of the chunk's
//! index and a flag on the last chunk (so a cut-short object never decrypts as complete).
//!
//! The mapping, used by ranged restore: for a header (with payload nonce) of `h` bytes,
//! chunk `i` starts at `h + i × (65536 + 16)` in the object and holds plaintext bytes
//! `i × 65536 ..`; every chunk but the last holds exactly 65536. So any plaintext range is
//! read as the whole chunks that cover it: at most its length plus two chunks' worth.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use lomob_backends::source::ByteSource;
use sha2::Sha256;

use super::header::HeaderError;
use super::FileKey;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 << 10;
const TAG: u64 = 16;
const SEALED: u64 = CHUNK + TAG;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("chunk {0} of the encrypted object fails its authentication: the object was altered or damaged")]
    Integrity(u64),
    #[error("the encrypted object is cut short (its last chunk is missing or incomplete)")]
    Truncated,
    #[error("the encrypted object has bytes after its last chunk")]
    Trailing,
}

/// The key that seals the chunks of one object.
#[derive(Clone)]
pub struct PayloadKey(ChaCha20Poly1305);

impl PayloadKey {
    pub fn derive(file_key: &FileKey, nonce: &[u8; 16]) -> PayloadKey {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(nonce), file_key)
            .expand(b"payload", &mut key)
            .expect("32 bytes is a valid HKDF length");
        PayloadKey(ChaCha20Poly1305::new(&key.into()))
    }

    fn nonce(index: u64, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    /// Seals `chunk` (plaintext, then 16 bytes of room) in place: the tag goes last.
    fn seal_into(&self, index: u64, last: bool, chunk: &mut [u8]) {
        let split = chunk.len() - TAG as usize;
        let (plain, tag) = chunk.split_at_mut(split);
        let t = self
            .0
            .encrypt_inout_detached(&Self::nonce(index, last).into(), b"", plain.into())
            .expect("a chunk always seals");
        tag.copy_from_slice(&t);
    }

    /// Opens one sealed chunk in place, leaving its plaintext.
    fn open(&self, index: u64, last: bool, sealed: &mut Vec<u8>) -> Result<(), DecryptError> {
        self.open_tail(index, last, sealed, 0)
    }

    /// Opens the sealed chunk at `v[start..]` in place: `v` ends with its plaintext.
    fn open_tail(
        &self,
        index: u64,
        last: bool,
        v: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), DecryptError> {
        if ((v.len() - start) as u64) < TAG {
            return Err(DecryptError::Truncated);
        }
        let split = v.len() - TAG as usize;
        let tag: [u8; 16] = v[split..].try_into().expect("16 bytes");
        v.truncate(split);
        self.0
            .decrypt_inout_detached(
                &Self::nonce(index, last).into(),
                b"",
                (&mut v[start..]).into(),
                &tag.into(),
            )
            .map_err(|_| DecryptError::Integrity(index))
    }
}

impl std::fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadKey(..)")
    }
}

fn chunks_of(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK).max(1)
}

/// The size of the object that holds `plain_len` bytes behind a `head_len`-byte header.
pub fn ciphertext_len(plain_len: u64, head_len: u64) -> u64 {
    head_len + plain_len + TAG * chunks_of(plain_len)
}

/// The object byte range holding the chunks that cover plaintext `range`, the index of the
/// first of them, and where `range` starts inside that chunk's plaintext.
pub fn chunk_span(range: Range<u64>, plain_len: u64, head_len: u64) -> (Range<u64>, u64, u64) {
    let first = range.start / CHUNK;
    let last = (range.end.max(range.start + 1) - 1).min(plain_len.saturating_sub(1)) / CHUNK;
    let start = head_len + first * SEALED;
    let end_plain = ((last + 1) * CHUNK).min(plain_len);
    let end = head_len + end_plain + (last + 1) * TAG;
    (start..end, first, range.start - first * CHUNK)
}

/// Opens the consecutive sealed chunks in `sealed`, the first being chunk `first` of an
/// object of `plain_len` plaintext bytes.
pub fn decrypt_chunks(
    key: &PayloadKey,
    first: u64,
    plain_len: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    let last_index = chunks_of(plain_len) - 1;
    let mut out = Vec::with_capacity(sealed.len());
    let mut index = first;
    let mut rest = sealed;
    while !rest.is_empty() {
        if index > last_index {
            return Err(DecryptError::Trailing);
        }
        let n = (SEALED as usize).min(rest.len());
        let mut chunk = rest[..n].to_vec();
        let want = (plain_len - index * CHUNK).min(CHUNK) + TAG;
        if (n as u64) < want {
            return Err(DecryptError::Truncated);
        }
        key.open(index, index == last_index, &mut chunk)?;
        out.extend_from_slice(&chunk);
        rest = &rest[n..];
        index += 1;
    }
    Ok(out)
}

/// Decrypts a whole payload (everything after the header), checking that it ends with a
/// last chunk.
pub fn decrypt_to_end(key: &PayloadKey, body: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let mut d = StreamDecryptor::with_key(key.clone());
    let mut out = Vec::with_capacity(body.len());
    d.update(body, &mut out)?;
    d.finish(&mut out)?;
    Ok(out)
}

/// The plaintext length of an object of `cipher_len` bytes behind a `head_len`-byte header;
/// `None` when no plaintext length gives that size (a cut or padded object).
pub fn plaintext_len(cipher_len: u64, head_len: u64) -> Option<u64> {
    let body = cipher_len.checked_sub(head_len)?;
    let chunks = body.div_ceil(SEALED).max(1);
    let plain = body.checked_sub(chunks * TAG)?;
    (ciphertext_len(plain, head_len) == cipher_len).then_some(plain)
}

/// Decrypts a run of chunks that arrives in pieces (a ranged read), starting at chunk
/// `first` of an object of `plain_len` plaintext bytes: each chunk is opened as soon as it
/// is complete, its size being known from the plaintext length.
pub struct RangeDecryptor {
    key: PayloadKey,
    next: u64,
    plain_len: u64,
    buf: Vec<u8>,
}

impl RangeDecryptor {
    pub fn new(key: PayloadKey, first: u64, plain_len: u64) -> Self {
        RangeDecryptor {
            key,
            next: first,
            plain_len,
            buf: Vec::with_capacity(SEALED as usize),
        }
    }

    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        let chunks = chunks_of(self.plain_len);
        while !data.is_empty() {
            if self.next >= chunks {
                return Err(DecryptError::Trailing);
            }
            let want = ((self.plain_len - self.next * CHUNK).min(CHUNK) + TAG) as usize;
            let last = self.next + 1 == chunks;
            // A whole chunk at hand: opened where it lands in `out`, with no copy between.
            if self.buf.is_empty() && data.len() >= want {
                let start = out.len();
                out.extend_from_slice(&data[..want]);
                data = &data[want..];
                if let Err(e) = self.key.open_tail(self.next, last, out, start) {
                    out.truncate(start);
                    return Err(e);
                }
                self.next += 1;
                continue;
            }
            let n = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == want {
                self.key.open(self.next, last, &mut self.buf)?;
                out.extend_from_slice(&self.buf);
                self.buf.clear();
                self.next += 1;
            }
        }
        Ok(())
    }
}

/// Decrypts a payload that arrives in pieces (a download), holding back one chunk until it
/// knows whether more follows: memory stays at two chunks.
pub struct StreamDecryptor {
    key: PayloadKey,
    index: u64,
    buf: Vec<u8>,
}

impl StreamDecryptor {
    pub fn with_key(key: PayloadKey) -> Self {
        StreamDecryptor {
            key,
            index: 0,
            buf: Vec::with_capacity(2 * SEALED as usize),
        }
    }

    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        while !data.is_empty() {
            let room = (SEALED as usize + 1).saturating_sub(self.buf.len()).max(1);
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            // A full chunk with a byte after it is not the last one.
            if self.buf.len() > SEALED as usize {
                let rest = self.buf.split_off(SEALED as usize);
                let mut chunk = std::mem::replace(&mut self.buf, rest);
                self.key.open(self.index, false, &mut chunk)?;
                out.extend_from_slice(&chunk);
                self.index += 1;
            }
        }
        Ok(())
    }

    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), DecryptError> {
        // Only a lone chunk may be empty (an empty file).
        if (self.buf.len() as u64) < TAG || (self.buf.len() as u64 == TAG && self.index > 0) {
            return Err(DecryptError::Truncated);
        }
        let mut chunk = std::mem::take(&mut self.buf);
        self.key.open(self.index, true, &mut chunk)?;
        out.extend_from_slice(&chunk);
        Ok(())
    }
}

/// A [`ByteSource`] encrypted on the fly: the header, then the sealed chunks of `inner`.
/// Its bytes depend only on the header, the payload key and `inner`'s bytes, so any range
/// can be generated again byte-identical: an interrupted multipart upload continues with
/// the same ciphertext it started with.
pub struct EncryptingSource {
    inner: Arc<dyn ByteSource>,
    head: Arc<[u8]>,
    key: PayloadKey,
}

impl EncryptingSource {
    /// `head` is the header followed by the payload nonce that `key` was derived with.
    pub fn new(inner: Arc<dyn ByteSource>, head: Vec<u8>, key: PayloadKey) -> Self {
        EncryptingSource {
            inner,
            head: head.into(),
            key,
        }
    }

    pub fn head_len(&self) -> u64 {
        self.head.len() as u64
    }

    pub fn cipher_len(&self) -> u64 {
        ciphertext_len(self.inner.len(), self.head_len())
    }

    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.cipher_len() as usize);
        self.open_at(0)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

impl ByteSource for EncryptingSource {
    fn len(&self) -> u64 {
        self.cipher_len()
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let plain_len = self.inner.len();
        let head_len = self.head_len();
        let (head_pos, chunk, skip) = if offset < head_len {
            (offset as usize, 0, 0)
        } else {
            let body = offset - head_len;
            (self.head.len(), body / SEALED, body % SEALED)
        };
        let inner = self.inner.open_at((chunk * CHUNK).min(plain_len))?;
        Ok(Box::new(EncryptingReader {
            inner,
            head: self.head.clone(),
            head_pos,
            key: self.key.clone(),
            index: chunk,
            chunks: chunks_of(plain_len),
            plain_len,
            out: Vec::new(),
            out_pos: 0,
            out_len: 0,
            skip: skip as usize,
        }))
    }
}

struct EncryptingReader {
    inner: Box<dyn Read + Send>,
    head: Arc<[u8]>,
    head_pos: usize,
    key: PayloadKey,
    /// The next chunk to seal.
    index: u64,
    chunks: u64,
    plain_len: u64,
    /// A sealed chunk waiting to be handed out, when the caller's buffer could not take it
    /// whole: `out[out_pos..out_len]`.
    out: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    /// Bytes of the first sealed chunk the caller started past.
    skip: usize,
}

impl EncryptingReader {
    /// Reads the next chunk's plaintext into `dest` (its length plus 16 bytes of room) and
    /// seals it there; returns the sealed length.
    fn next_chunk(&mut self, dest: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.plain_len - self.index * CHUNK).min(CHUNK) as usize;
        let mut got = 0;
        while got < want {
            match self.inner.read(&mut dest[got..want]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the source ended before its length while being encrypted",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let last = self.index + 1 == self.chunks;
        let sealed = want + TAG as usize;
        self.key.seal_into(self.index, last, &mut dest[..sealed]);
        self.index += 1;
        Ok(sealed)
    }
}

impl Read for EncryptingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = (self.head.len() - self.head_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        if self.out_pos == self.out_len {
            if self.index >= self.chunks || buf.is_empty() {
                return Ok(0);
            }
            // Sealed straight into the caller's buffer when a whole chunk fits: no copy.
            if self.skip == 0 && buf.len() >= SEALED as usize {
                return self.next_chunk(buf);
            }
            let mut out = std::mem::take(&mut self.out);
            out.resize(SEALED as usize, 0);
            let sealed = self.next_chunk(&mut out);
            self.out = out;
            self.out_len = sealed?;
            self.out_pos = std::mem::take(&mut self.skip).min(self.out_len);
        }
        let n = (self.out_len - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}
