//! A local disk's bytes, past the page cache where that pays (the system calls are
//! [`crate::platform::file`]'s; other systems than Linux go through the cache):
//! - reading a file from the disk itself (O_DIRECT), for the one check that proves a medium
//!   holds what was written: `verify-read-back` on local disks. Where the file system refuses
//!   O_DIRECT (tmpfs, some FUSE mounts), the file's cached pages are dropped first (it was
//!   fsynced, so they are clean) and it is read normally;
//! - writing images and staged copies with O_DIRECT ([`DirectWriter`]): written once, not
//!   read back soon, and copying gigabytes into fresh page-cache pages costs more CPU than
//!   hashing them;
//! - the three-thread pipeline ([`stream`]) that reads (and checks), hashes and writes at
//!   once, and [`write_file`], which feeds it into a new local file.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// O_DIRECT wants buffers, offsets and lengths aligned to the device's block size; 4 KiB
/// covers every common one.
const ALIGN: usize = 4096;
/// Block size of the image pipeline: large reads and writes, few syscalls.
pub const BLOCK: usize = 4 << 20;
/// Blocks in flight in the pipeline (bounded memory: about 4 x 4 MiB).
const IN_FLIGHT: usize = 4;

/// The SHA-256 of the file at `path` as the disk holds it.
pub fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    let (mut file, aligned) = crate::platform::file::open_uncached(path)?;
    let mut block = AlignedBlock::new(BLOCK);
    let buf = block.as_mut();
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
    result.map(|()| sha.finalize().into())
}

/// Reads `reader` to its end, once, in order, and returns the SHA-256 and length of what
/// it gave; `sink` sees every block. Three threads share the work, so the two SHA-256
/// passes of an image and the disk's writes overlap: one reads (an image reader also checks
/// each member file against its SHA-256), one hashes, and the caller's feeds `sink` (an
/// O_DIRECT write waits for the disk). Blocks are recycled, so memory stays bounded.
pub fn stream(
    mut reader: impl Read + Send,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<([u8; 32], u64)> {
    let (full_tx, full_rx) =
        crossbeam_channel::bounded::<std::io::Result<(Vec<u8>, usize)>>(IN_FLIGHT);
    let (hashed_tx, hashed_rx) = crossbeam_channel::bounded::<(Vec<u8>, usize)>(IN_FLIGHT);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(IN_FLIGHT + 1);
    for _ in 0..IN_FLIGHT {
        let _ = empty_tx.send(vec![0u8; BLOCK]);
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for mut buf in empty_rx.iter() {
                let mut filled = 0;
                let res = loop {
                    if filled == buf.len() {
                        break Ok(());
                    }
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                let last = filled < buf.len();
                let msg = res.map(|()| (buf, filled));
                let failed = msg.is_err();
                if full_tx.send(msg).is_err() || failed || last {
                    return;
                }
            }
        });
        let hasher = s.spawn(move || -> std::io::Result<([u8; 32], u64)> {
            let mut sha = Sha256::new();
            let mut total = 0u64;
            for msg in full_rx.iter() {
                let (buf, n) = msg?;
                sha.update(&buf[..n]);
                total += n as u64;
                let last = n < buf.len();
                // A closed channel: the sink failed, and its error is the one reported.
                if hashed_tx.send((buf, n)).is_err() || last {
                    break;
                }
            }
            Ok((sha.finalize().into(), total))
        });
        let mut written = Ok(());
        for (buf, n) in hashed_rx.iter() {
            if let Err(e) = sink(&buf[..n]) {
                written = Err(e);
                break;
            }
            // The reader may have finished; a closed channel is fine.
            let _ = empty_tx.send(buf);
        }
        // Unblock the hasher and the reader if the sink stopped early.
        drop(hashed_rx);
        drop(empty_tx);
        let hashed = hasher.join().expect("the hashing thread does not panic");
        written.and(hashed)
    })
}

/// Streams `reader` ([`stream`]) into a new file at `path` written past the page cache,
/// then fsyncs it; `written` sees each block's length as it is written. Returns the
/// SHA-256 and length of what was read, or which side failed.
pub fn write_file(
    reader: impl Read + Send,
    path: &Path,
    mut written: impl FnMut(u64),
) -> Result<([u8; 32], u64), CopyFailure> {
    let mut out = DirectWriter::create(path, BLOCK).map_err(CopyFailure::Write)?;
    let mut sink_failed = false;
    let streamed = stream(reader, |block| {
        out.write(block).inspect_err(|_| sink_failed = true)?;
        written(block.len() as u64);
        Ok(())
    });
    match streamed {
        Ok(done) => out.finish().map(|()| done).map_err(CopyFailure::Write),
        Err(e) if sink_failed => Err(CopyFailure::Write(e)),
        Err(e) => Err(CopyFailure::Read(e)),
    }
}

/// Which side of a copy failed.
#[derive(Debug)]
pub enum CopyFailure {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Writes a new file with O_DIRECT where the file system allows it (measured in
/// BENCHMARKS.md). Blocks go through one aligned buffer; the last, unaligned tail is written
/// after O_DIRECT is switched off.
pub struct DirectWriter {
    file: std::fs::File,
    direct: bool,
    buf: AlignedBlock,
}

/// A zeroed buffer aligned for O_DIRECT, reusable from one writer to the next.
pub struct AlignedBlock {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: the block is plain memory owned by one writer.
unsafe impl Send for AlignedBlock {}

impl AlignedBlock {
    pub fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("valid layout");
        // Zeroed: the block is handed out as `&mut [u8]`, which must never expose
        // uninitialised memory. SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBlock { ptr, layout }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr points at `layout.size()` bytes we own, for the life of self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl DirectWriter {
    /// Creates (or truncates) `path`; `block` is the largest write, and the buffer's size.
    pub fn create(path: &Path, block: usize) -> std::io::Result<Self> {
        Self::open(path, AlignedBlock::new(block), true)
    }

    /// [`DirectWriter::create`] with a buffer kept from an earlier writer, past the page
    /// cache only when `direct` (a small file gains nothing from it).
    pub fn open(path: &Path, buf: AlignedBlock, direct: bool) -> std::io::Result<Self> {
        let uncached = if direct {
            crate::platform::file::create_uncached(path)?
        } else {
            None
        };
        let (file, direct) = match uncached {
            Some(f) => (f, true),
            None => (std::fs::File::create(path)?, false),
        };
        Ok(DirectWriter { file, direct, buf })
    }

    /// The file being written (for its metadata, or an fsync).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Closes the file without syncing it, and hands the buffer back for the next writer.
    pub fn into_buffer(self) -> AlignedBlock {
        self.buf
    }

    /// Writes `block` (at most the buffer's size), copied into the aligned buffer.
    pub fn write(&mut self, block: &[u8]) -> std::io::Result<()> {
        if !self.direct {
            return self.file.write_all(block);
        }
        let aligned = block.len() / ALIGN * ALIGN;
        if aligned > 0 {
            let buf = &mut self.buf.as_mut()[..aligned];
            buf.copy_from_slice(&block[..aligned]);
            self.file.write_all(buf)?;
        }
        if aligned < block.len() {
            self.buffered()?;
            self.file.write_all(&block[aligned..])?;
        }
        Ok(())
    }

    /// Switches O_DIRECT off for the rest of the file.
    fn buffered(&mut self) -> std::io::Result<()> {
        crate::platform::file::stop_uncached(&self.file)?;
        self.direct = false;
        Ok(())
    }

    /// Copies `src` to its end straight through the aligned buffer (no copy in between),
    /// showing `each` every block read; returns the bytes copied, or which side failed.
    pub fn copy_from(
        &mut self,
        src: &mut impl Read,
        mut each: impl FnMut(&[u8]),
    ) -> Result<u64, CopyFailure> {
        let mut total = 0u64;
        loop {
            let buf = self.buf.as_mut();
            let mut filled = 0;
            while filled < buf.len() {
                match src.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(CopyFailure::Read(e)),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            each(&buf[..filled]);
            total += filled as u64;
            let full = filled == buf.len();
            let aligned = if self.direct {
                filled / ALIGN * ALIGN
            } else {
                filled
            };
            self.file
                .write_all(&self.buf.as_mut()[..aligned])
                .map_err(CopyFailure::Write)?;
            if aligned < filled {
                self.buffered().map_err(CopyFailure::Write)?;
                self.file
                    .write_all(&self.buf.as_mut()[aligned..filled])
                    .map_err(CopyFailure::Write)?;
            }
            if !full {
                return Ok(total);
            }
        }
    }

    /// Makes the file durable (fsync).
    pub fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
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

    #[test]
    fn the_pipeline_hashes_and_hands_over_every_byte_and_stops_on_either_side_failing() {
        for len in [0usize, 1, BLOCK - 1, BLOCK, 3 * BLOCK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut got = Vec::new();
            let (sha, n) = stream(&data[..], |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            assert_eq!((n, got == data), (len as u64, true), "{len} bytes");
            assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&data)), "{len} bytes");
        }
        // The sink fails: its error comes back, and nothing hangs.
        let data = vec![1u8; 5 * BLOCK];
        let mut calls = 0;
        let e = stream(&data[..], |_| {
            calls += 1;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!((e.to_string().as_str(), calls), ("disk full", 1));
        // The reader fails after a block: its error comes back.
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("source gone"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        let e = stream(Failing(BLOCK + 5), |_| Ok(())).unwrap_err();
        assert_eq!(e.to_string(), "source gone");
    }

    #[test]
    fn the_direct_writer_copies_files_of_awkward_sizes_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 4095, 4096, 4097, 65536, 65536 + 4095] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            let mut w = DirectWriter::create(&p, 65536).unwrap();
            let mut seen = 0;
            let n = w.copy_from(&mut &data[..], |b| seen += b.len()).unwrap();
            w.finish().unwrap();
            assert_eq!((n, seen), (len as u64, len), "{len} bytes");
            assert!(std::fs::read(&p).unwrap() == data, "{len} bytes");
        }
    }
}
