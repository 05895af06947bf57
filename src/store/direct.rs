//! Reading a local file from the disk itself, past the page cache (O_DIRECT), for the one
//! check that proves a medium holds what was written: `verify-read-back` on local disks.
//! Where the file system refuses O_DIRECT (tmpfs, some FUSE mounts), the file's cached pages
//! are dropped first (it was fsynced, so they are clean) and it is read normally.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// O_DIRECT wants buffers, offsets and lengths aligned to the device's block size; 4 KiB
/// covers every common one.
const ALIGN: usize = 4096;
const BLOCK: usize = 4 << 20;

/// The SHA-256 of the file at `path` as the disk holds it.
pub fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let (mut file, aligned) = match direct {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let f = std::fs::File::open(path)?;
            use std::os::fd::AsRawFd;
            // SAFETY: an advisory call on an open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            (f, false)
        }
        Err(e) => return Err(e),
    };
    let layout = std::alloc::Layout::from_size_align(BLOCK, ALIGN).expect("valid layout");
    // SAFETY: a non-zero-sized layout; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` points to BLOCK initialised bytes owned here until dealloc.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, BLOCK) };
    let mut sha = Sha256::new();
    let result = loop {
        match file.read(buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                sha.update(&buf[..n]);
                // A short O_DIRECT read is the file's unaligned tail: nothing follows.
                if aligned && n % ALIGN != 0 {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    result.map(|()| sha.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_byte_of_files_of_awkward_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 4095, 4096, 4097, BLOCK - 1, BLOCK + 5000] {
            let p = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            let want: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(sha256_of(&p).unwrap(), want, "{len} bytes");
        }
    }
}
