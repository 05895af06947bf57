//! A staged copy on a local disk (an `fs` stage: the embedded default, a NAS mount), at the
//! speed of `cp`, durable before it counts.
//!
//! OpenDAL's fs writer goes through the async runtime a chunk at a time and writes in place.
//! Here one blocking call does the whole copy: the source is read once into an aligned
//! buffer, hashed as it is read (the bytes must be the scanned ones), written with O_DIRECT
//! (no page-cache copy) under `<key>.partial`, fsynced, and only then renamed into place and
//! its folder fsynced. A kill at any point leaves no short object under the real name; a
//! power cut never loses an object the manifest then records.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::store::direct::{self, CopyFailure, DirectWriter};

/// Largest read and write of a staged copy: photos fit in one or a few; eight copies in
/// flight hold 8 MiB.
const COPY_BLOCK: usize = 1 << 20;

/// Why a copy failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed, or its bytes are not the scanned ones (InvalidData).
    Source(std::io::Error),
    /// Writing, syncing or renaming at the destination failed.
    Dest(PathBuf, std::io::Error),
}

/// Copies `src` (scanned as `size` bytes with `sha256`) to `root/key`; see the module header.
pub fn copy_in(
    src: &Path,
    root: &Path,
    key: &str,
    size: u64,
    sha256: &[u8; 32],
) -> Result<(), CopyError> {
    let dest = root.join(key);
    let partial = root.join(format!("{key}.partial"));
    let dest_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| CopyError::Dest(p, e)
    };
    let folder = dest.parent().unwrap_or(root);
    std::fs::create_dir_all(folder).map_err(dest_err(folder))?;
    let mut source = direct::open_source(src).map_err(CopyError::Source)?;
    let mut out = DirectWriter::create(&partial, COPY_BLOCK).map_err(dest_err(&partial))?;
    let mut sha = Sha256::new();
    let checked = match out.copy_from(&mut source, |b| sha.update(b)) {
        Err(CopyFailure::Read(e)) => Err(CopyError::Source(e)),
        Err(CopyFailure::Write(e)) => Err(CopyError::Dest(partial.clone(), e)),
        Ok(n) if n != size => Err(changed(format!(
            "{} is {n} bytes now but {size} when scanned: it changed since the scan",
            src.display()
        ))),
        Ok(_) if <[u8; 32]>::from(sha.finalize()) != *sha256 => Err(changed(format!(
            "{} changed since it was scanned (its content differs)",
            src.display()
        ))),
        Ok(_) => Ok(()),
    };
    let result = checked.and_then(|()| out.finish().map_err(dest_err(&partial)));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &dest).map_err(dest_err(&dest))?;
    std::fs::File::open(folder)
        .and_then(|d| d.sync_all())
        .map_err(dest_err(folder))
}

/// The source's bytes are not the scanned ones: InvalidData tells the engine so.
fn changed(what: String) -> CopyError {
    CopyError::Source(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn a_copy_lands_whole_under_its_name_and_a_changed_source_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stage-root");
        for len in [0usize, 10, COPY_BLOCK, COPY_BLOCK + 4097] {
            let data: Vec<u8> = (0..len).map(|i| (i * 5 + 2) as u8).collect();
            let src = dir.path().join(format!("src{len}"));
            std::fs::write(&src, &data).unwrap();
            let key = format!("stage/{len:032x}");
            copy_in(&src, &root, &key, len as u64, &sha(&data)).unwrap();
            assert!(std::fs::read(root.join(&key)).unwrap() == data, "{len}");
            assert!(!root.join(format!("{key}.partial")).exists());
        }
        // Bytes that are not the scanned ones, or another size: a source error of kind
        // InvalidData, and neither the object nor its partial remains.
        let src = dir.path().join("changed");
        std::fs::write(&src, b"new bytes!").unwrap();
        for (size, sum) in [(10, sha(b"old bytes!")), (9, sha(b"new bytes!"))] {
            let key = "stage/0000000000000000000000000000ffff";
            match copy_in(&src, &root, key, size, &sum) {
                Err(CopyError::Source(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}")
                }
                other => panic!("{other:?}"),
            }
            assert!(!root.join(key).exists());
            assert!(!root.join(format!("{key}.partial")).exists());
        }
        // A source that cannot be read is the source's error.
        match copy_in(&dir.path().join("missing"), &root, "stage/x", 1, &[0; 32]) {
            Err(CopyError::Source(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}
