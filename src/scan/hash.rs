//! One read pass per file computing both hashes: xxh3-128 (identity: is this content already
//! known?) and SHA-256 (integrity: the value stored remotely and checked later).
//!
//! A file that changes while it is read must never be recorded with a wrong hash, so the
//! file's size and mtime are compared before and after the read (on the open descriptor),
//! and the bytes read must equal the size; on a difference the read is retried.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use super::walk::{mtime_ns, WalkEntry};

/// Read size: large enough that syscalls cost nothing next to hashing.
pub const CHUNK: usize = 1 << 20;

/// How often a file that keeps changing under us is re-read before it is reported.
const ATTEMPTS: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashed {
    pub xxh3: [u8; 16],
    pub sha256: [u8; 32],
    /// The stat fields that match the bytes hashed (they may differ from the walk's).
    pub entry: WalkEntry,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "changed while being read ({ATTEMPTS} attempts); it will be read again by the next scan"
    )]
    KeptChanging,
}

/// Hashes the file at `path` (whose walk entry is `walked`), using `buf` as the read buffer.
pub fn hash_file(path: &Path, walked: &WalkEntry, buf: &mut Vec<u8>) -> Result<Hashed, HashError> {
    buf.resize(CHUNK, 0);
    for _ in 0..ATTEMPTS {
        let mut f = crate::platform::file::open_sequential(path)?;
        let before = f.metadata()?;
        let mut xxh = Xxh3::new();
        let mut sha = Sha256::new();
        let mut total: u64 = 0;
        loop {
            let n = match f.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            xxh.update(&buf[..n]);
            sha.update(&buf[..n]);
            total += n as u64;
        }
        let after = f.metadata()?;
        let stable = before.len() == after.len()
            && mtime_ns(&before) == mtime_ns(&after)
            && total == after.len();
        if stable {
            let entry = WalkEntry::from_metadata(walked.rel.clone(), &after, || path.to_path_buf());
            return Ok(Hashed {
                xxh3: xxh.digest128().to_be_bytes(),
                sha256: sha.finalize().into(),
                entry,
            });
        }
    }
    Err(HashError::KeptChanging)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file appended to while it is read is either reported as changing, or hashed
    /// consistently with the size recorded: never a hash of bytes other than those described.
    #[test]
    fn a_file_growing_while_read_is_never_recorded_with_a_wrong_hash() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("growing.mp4");
        std::fs::write(&p, vec![1u8; 8 << 20]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                // Bounded: on a loaded machine the writer can outrun the reader, and an
                // unbounded one would fill the disk before the read reaches the end.
                let mut left = 64 << 20;
                while !stop.load(Ordering::Relaxed) && left > 0 {
                    f.write_all(&[2u8; 4096]).unwrap();
                    left -= 4096;
                }
            })
        };
        let m = std::fs::metadata(&p).unwrap();
        let w = WalkEntry::from_metadata(b"growing.mp4".to_vec(), &m, || p.clone());
        let got = hash_file(&p, &w, &mut Vec::new());
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        match got {
            Err(HashError::KeptChanging) => {}
            Ok(h) => {
                let bytes = std::fs::read(&p).unwrap();
                let prefix = &bytes[..h.entry.size as usize];
                let want: [u8; 32] = Sha256::digest(prefix).into();
                assert_eq!(
                    h.sha256, want,
                    "hash must describe exactly the recorded size"
                );
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn hashes_match_known_values() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let w = WalkEntry::from_metadata(b"abc".to_vec(), &m, || p.clone());
        let h = hash_file(&p, &w, &mut Vec::new()).unwrap();
        assert_eq!(
            hex::encode(h.sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.xxh3, xxhash_rust::xxh3::xxh3_128(b"abc").to_be_bytes());
        assert_eq!(h.entry.size, 3);
    }
}
