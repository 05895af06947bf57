//! A staged copy on a local disk (an `fs` stage: the embedded default, a NAS mount), at the
//! speed of `cp`, durable before it counts.
//!
//! OpenDAL's fs writer goes through the async runtime a chunk at a time and writes in place.
//! Here one blocking call does the whole copy: the source is read once into an aligned
//! buffer, hashed as it is read (the bytes must be the scanned ones), written with O_DIRECT
//! (no page-cache copy; small files through it) under `<key>.partial` and renamed into
//! place. It is durable either at once (file and folder fsynced) or, for a sync's many
//! copies, at the next [`settle`] (one `syncfs`), before which nothing records it. A kill at
//! any point leaves no short object under the real name; a power cut never loses an object
//! the manifest then records.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::store::direct::{AlignedBlock, CopyFailure, DirectWriter};

/// Largest read and write of a staged copy: photos fit in one or a few; eight copies in
/// flight hold 8 MiB.
pub const COPY_BLOCK: usize = 1 << 20;
/// Below this size a copy goes through the page cache: O_DIRECT gains nothing there.
const SMALL: u64 = 64 << 10;

/// Why a copy failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed, or its bytes are not the scanned ones (InvalidData).
    Source(std::io::Error),
    /// Writing, syncing or renaming at the destination failed.
    Dest(PathBuf, std::io::Error),
}

/// Copies `src` (scanned as `size` bytes with `sha256`) to `root/key`; see the module header.
/// Without `durable`, the copy is neither fsynced nor its folder: [`settle`] does that for
/// every copy at once, and nothing may count on it before. Returns the copy's metadata.
pub fn copy_in(
    src: &Path,
    root: &Path,
    key: &str,
    size: u64,
    sha256: &[u8; 32],
    durable: bool,
) -> Result<std::fs::Metadata, CopyError> {
    // Without syncfs, [`settle`] cannot make a batch durable at once: each copy is on its own.
    let durable = durable || !crate::platform::file::HAS_SYNCFS;
    // Each blocking thread keeps its buffer: a fresh 1 MiB mapping per file, unmapped again
    // (a TLB shootdown on every thread), cost more than copying a small photo.
    thread_local! {
        static BLOCK: std::cell::RefCell<Option<AlignedBlock>> = const { std::cell::RefCell::new(None) };
    }
    let dest = root.join(key);
    let partial = root.join(format!("{key}.partial"));
    let dest_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| CopyError::Dest(p, e)
    };
    let folder = dest.parent().unwrap_or(root);
    let mut source = crate::platform::file::open_sequential(src).map_err(CopyError::Source)?;
    let buf = BLOCK
        .with(|b| b.borrow_mut().take())
        .unwrap_or_else(|| AlignedBlock::new(COPY_BLOCK));
    let direct = size >= SMALL;
    let mut out = match DirectWriter::open(&partial, buf, direct) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The stage's folder is made once, on the first copy into it.
            std::fs::create_dir_all(folder).map_err(dest_err(folder))?;
            DirectWriter::open(&partial, AlignedBlock::new(COPY_BLOCK), direct)
        }
        r => r,
    }
    .map_err(dest_err(&partial))?;
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
    let result = checked.and_then(|()| {
        if durable {
            out.file().sync_all().map_err(dest_err(&partial))?;
        }
        out.file().metadata().map_err(dest_err(&partial))
    });
    BLOCK.with(|b| *b.borrow_mut() = Some(out.into_buffer()));
    let meta = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &dest).map_err(dest_err(&dest))?;
    if durable {
        crate::platform::file::sync_dir(folder).map_err(dest_err(folder))?;
    }
    Ok(meta)
}

/// Makes every copy under `root` durable, names included: one `syncfs` of the file system
/// (a journal commit), instead of two fsyncs per copy.
/// Without syncfs (other systems than Linux) every copy was made durable on its own.
pub fn settle(root: &Path) -> std::io::Result<()> {
    if crate::platform::file::HAS_SYNCFS {
        crate::platform::file::sync_file_system(root)
    } else {
        Ok(())
    }
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
            copy_in(&src, &root, &key, len as u64, &sha(&data), len % 2 == 0).unwrap();
            assert!(std::fs::read(root.join(&key)).unwrap() == data, "{len}");
            assert!(!root.join(format!("{key}.partial")).exists());
        }
        settle(&root).unwrap();
        // Bytes that are not the scanned ones, or another size: a source error of kind
        // InvalidData, and neither the object nor its partial remains.
        let src = dir.path().join("changed");
        std::fs::write(&src, b"new bytes!").unwrap();
        for (size, sum) in [(10, sha(b"old bytes!")), (9, sha(b"new bytes!"))] {
            let key = "stage/0000000000000000000000000000ffff";
            match copy_in(&src, &root, key, size, &sum, true) {
                Err(CopyError::Source(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}")
                }
                other => panic!("{other:?}"),
            }
            assert!(!root.join(key).exists());
            assert!(!root.join(format!("{key}.partial")).exists());
        }
        // A source that cannot be read is the source's error.
        match copy_in(
            &dir.path().join("missing"),
            &root,
            "stage/x",
            1,
            &[0; 32],
            false,
        ) {
            Err(CopyError::Source(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}
