//! Object keys to pointer-file paths, safely whatever bytes a key holds.
//!
//! A key arrives from the network, so its path on disk must never escape the bucket's `keys/`
//! folder or collide with another key's, whatever it contains (`..`, `\`, `:`, NUL, names
//! longer than the file system allows). Each `/`-separated segment is percent-encoded down to
//! `[A-Za-z0-9_-]`, so an encoded name never holds a `.`; that leaves the suffixes free to say
//! what a file is: `seg.d` is the folder of keys below `seg/`, `seg.o` the pointer of key
//! `…/seg`, so keys `a` and `a/b` both exist. A segment whose encoding would pass the
//! file-name limit keeps a readable head and ends in `~` plus the SHA-256 of the segment (`~`
//! is never produced by the encoding, so such a name cannot equal an ordinary one). The
//! pointer also records the whole key, which is what [`super::ObjectStore::open`] indexes.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Longest key accepted: S3's own limit, and far beyond what lomob sends.
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest encoded segment kept whole; with the `.o`/`.d` suffix it stays under the usual
/// 255-byte file-name limit.
const MAX_ENCODED_SEGMENT: usize = 200;

/// Why a key is refused before anything touches the disk.
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("the key is empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Err("the key is longer than 1024 bytes");
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return Err("the key has an empty path segment (a leading, trailing or doubled '/')");
        }
        if seg == "." || seg == ".." {
            return Err("the key has a '.' or '..' path segment");
        }
    }
    Ok(())
}

/// The encoded file-name stem of one segment (no suffix).
fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for &b in seg.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ENCODED_SEGMENT {
        // The encoding is ASCII, so any cut is a valid string; the digest of the whole
        // segment keeps names apart whatever the head looks like.
        let digest = hex::encode(Sha256::digest(seg.as_bytes()));
        out.truncate(150);
        out.push('~');
        out.push_str(&digest);
    }
    out
}

/// The pointer path of `key`, relative to the bucket's `keys/` folder. The key must have
/// passed [`check_key`].
pub fn pointer_path(key: &str) -> PathBuf {
    let segs: Vec<&str> = key.split('/').collect();
    let mut path = PathBuf::new();
    for (i, seg) in segs.iter().enumerate() {
        let stem = encode_segment(seg);
        if i + 1 == segs.len() {
            path.push(format!("{stem}.o"));
        } else {
            path.push(format!("{stem}.d"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_segments_stay_inside_and_apart() {
        for key in [
            "a",
            "a/b",
            "..x",
            ".hidden",
            "a\\b",
            "c:",
            "nul\0byte",
            "%41",
            "A",
            "é/ü",
        ] {
            check_key(key).unwrap();
            let p = pointer_path(key);
            for comp in p.components() {
                let s = comp.as_os_str().to_str().unwrap();
                assert!(!s.starts_with('.'), "{key:?} -> {p:?}");
                assert!(!s.contains(['/', '\\', ':', '\0']), "{key:?} -> {p:?}");
            }
        }
        assert_ne!(pointer_path("%41"), pointer_path("A"));
        assert_ne!(
            pointer_path("a"),
            pointer_path("a/b").parent().unwrap().to_path_buf()
        );
        for bad in ["", "/a", "a/", "a//b", "./a", "a/../b", &"x".repeat(1025)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_segments_fit_and_differ() {
        let a = ".".repeat(1000);
        let b = format!("{}!", ".".repeat(999));
        let (pa, pb) = (pointer_path(&a), pointer_path(&b));
        assert_ne!(pa, pb);
        assert!(pa.to_str().unwrap().len() < 255, "{pa:?}");
        let mixed = "é".repeat(400);
        assert!(pointer_path(&mixed).to_str().unwrap().len() < 255);
    }
}
