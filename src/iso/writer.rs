//! The streaming image: [`ImageReader`] produces the bytes of a planned image on demand.
//!
//! Metadata comes from the plan's pre-rendered sectors; file data is read from the source
//! files in 1 MiB chunks, opened lazily one at a time, so memory stays bounded whatever the
//! image size and nothing needs to be written to disk before uploading. Any offset can be
//! read again (to resume an upload): the bytes are a pure function of the plan and the files.
//!
//! Integrity: when a file is streamed from its first byte, its hash is computed and compared
//! with the planned one before its last chunk is handed out (lomob's content id, xxh3-128,
//! when the plan has it: the scan computed it from the same bytes as the SHA-256 the catalog
//! lists, at a tenth of SHA-256's cost; the SHA-256 otherwise); its size is always
//! checked (short read, extra bytes, changed length at open). A mismatch fails the read with
//! an `io::Error` wrapping [`IsoError::SourceChanged`], so an image whose bytes differ from
//! its catalog is never produced silently. Errors are sticky: once a read failed, every later
//! read fails the same way (a new reader resumes, without hashing the file it starts inside).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::{lossy, IsoError};
use super::layout::{Placement, PlanInner};
use crate::platform::file::{self, Advice};
use xxhash_rust::xxh3::Xxh3;

/// Size of the reads from source files.
const CHUNK: usize = 1 << 20;

struct OpenFile {
    segment: usize,
    file: File,
    /// Offset inside the source file of the next byte to read.
    next: u64,
    /// Running hash, present only when the file has been read from its start in order.
    hasher: Option<MemberHash>,
}

/// The check of one member's bytes as they stream: against its content id when the plan
/// has one, else against its planned SHA-256.
enum MemberHash {
    Content(Box<Xxh3>, [u8; 16]),
    Sha256(Sha256, [u8; 32]),
}

impl MemberHash {
    fn new(p: &Placement) -> MemberHash {
        match p.content {
            Some(c) => MemberHash::Content(Box::new(Xxh3::new()), c),
            None => MemberHash::Sha256(Sha256::new(), p.sha256),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            MemberHash::Content(h, _) => h.update(bytes),
            MemberHash::Sha256(h, _) => h.update(bytes),
        }
    }

    /// Whether the bytes were the planned ones; the failure's wording otherwise.
    fn verdict(self) -> Result<(), &'static str> {
        let same = match self {
            MemberHash::Content(h, want) => h.digest128().to_be_bytes() == want,
            MemberHash::Sha256(h, want) => <[u8; 32]>::from(h.finalize()) == want,
        };
        if same {
            Ok(())
        } else {
            Err("its bytes differ from the planned ones (hash mismatch)")
        }
    }
}

/// Streams the bytes of a planned image. Implements `Read` and `Seek`.
pub struct ImageReader {
    plan: Arc<PlanInner>,
    pos: u64,
    buf: Vec<u8>,
    /// Image offset of `buf[0]`; `buf` holds valid data when `buf_len > 0`.
    buf_start: u64,
    buf_len: usize,
    cur: Option<OpenFile>,
    failed: Option<Failure>,
}

/// Why streaming stopped; every later read reports it again.
struct Failure {
    input: Option<usize>,
    path: String,
    source: std::path::PathBuf,
    /// `None` when the file changed; the error's kind when it could not be read.
    unreadable: Option<io::ErrorKind>,
    /// What changed, or the read error's text.
    reason: String,
}

impl Failure {
    fn error(&self) -> io::Error {
        match (&self.unreadable, self.input) {
            (Some(kind), Some(input)) => IsoError::SourceUnreadable {
                input,
                path: self.path.clone(),
                source_path: self.source.clone(),
                source: io::Error::new(*kind, self.reason.clone()),
            },
            _ => IsoError::SourceChanged {
                input: self.input,
                path: self.path.clone(),
                source_path: self.source.clone(),
                reason: self.reason.clone(),
            },
        }
        .into_io()
    }
}

impl ImageReader {
    pub(crate) fn new(plan: Arc<PlanInner>, offset: u64) -> ImageReader {
        let pos = offset.min(plan.image_size);
        ImageReader {
            plan,
            pos,
            buf: Vec::new(),
            buf_start: 0,
            buf_len: 0,
            cur: None,
            failed: None,
        }
    }

    /// Current offset in the image.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Total image size.
    pub fn image_size(&self) -> u64 {
        self.plan.image_size
    }

    fn fail(&mut self, seg: usize, reason: String) -> io::Error {
        let p = self.plan.segments[seg]
            .placement
            .map(|i| &self.plan.placements[i]);
        let (input, path, source) = match p {
            Some(p) => (Some(p.input), lossy(&p.path), p.source.clone()),
            None => (None, "LOMOB/CATALOG.JSON".into(), Default::default()),
        };
        self.cur = None;
        let failure = Failure {
            input,
            path,
            source,
            unreadable: None,
            reason,
        };
        let e = failure.error();
        self.failed = Some(failure);
        e
    }

    /// Loads the next chunk of segment `seg` starting at `file_off` into `buf`.
    ///
    /// (Read-ahead of the following files is advisory: failures are ignored.)
    fn fill(&mut self, seg: usize, file_off: u64) -> io::Result<()> {
        let plan = self.plan.clone();
        let s = &plan.segments[seg];
        let size = s.size;
        let pi = match s.placement {
            Some(pi) => pi,
            None => return Ok(()), // catalog is served from memory by the caller
        };
        let reuse = matches!(&self.cur, Some(c) if c.segment == seg && c.next == file_off);
        if !reuse {
            self.cur = None;
            let src = plan.placements[pi].source.clone();
            let mut file = match File::open(&src) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(self.fail(seg, "the file is gone".into()));
                }
                Err(e) => {
                    let p = &plan.placements[pi];
                    let failure = Failure {
                        input: Some(p.input),
                        path: lossy(&p.path),
                        source: src.clone(),
                        unreadable: Some(e.kind()),
                        reason: e.to_string(),
                    };
                    self.failed = Some(failure);
                    return Err(IsoError::SourceUnreadable {
                        input: p.input,
                        path: lossy(&p.path),
                        source_path: src,
                        source: e,
                    }
                    .into_io());
                }
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(size);
            if len != size {
                return Err(self.fail(seg, format!("size is now {len} bytes, planned {size}")));
            }
            if file_off > 0 {
                file.seek(SeekFrom::Start(file_off))
                    .map_err(|e| self.fail(seg, format!("seek failed: {e}")))?;
            }
            file::advise(&file, Advice::Sequential);
            // Ask the kernel to start reading the next files while this one is hashed: on a
            // cold disk the image would otherwise wait for each file's first read in turn.
            for next in plan.segments.iter().skip(seg + 1).take(READ_AHEAD_FILES) {
                if let Some(npi) = next.placement {
                    if let Ok(f) = File::open(&plan.placements[npi].source) {
                        file::advise(&f, Advice::WillNeed);
                    }
                }
            }
            self.cur = Some(OpenFile {
                segment: seg,
                file,
                next: file_off,
                hasher: (file_off == 0).then(|| MemberHash::new(&plan.placements[pi])),
            });
        }
        let want = ((size - file_off) as usize).min(CHUNK);
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        let mut got = 0usize;
        let mut err = None;
        if let Some(cur) = self.cur.as_mut() {
            while got < want {
                match cur.file.read(&mut self.buf[got..want]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = err {
            return Err(self.fail(seg, format!("read error: {e}")));
        }
        if got < want {
            let at = file_off + got as u64;
            return Err(self.fail(seg, format!("file ended at byte {at}, planned {size}")));
        }
        let Some(cur) = self.cur.as_mut() else {
            return Err(self.fail(seg, "internal: no open file".into()));
        };
        if let Some(h) = cur.hasher.as_mut() {
            h.update(&self.buf[..got]);
        }
        cur.next += got as u64;
        if cur.next == size {
            // Last chunk: check before handing it out.
            let mut extra = [0u8; 1];
            let grew = loop {
                match cur.file.read(&mut extra) {
                    Ok(n) => break n > 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break false,
                }
            };
            let verdict = cur.hasher.take().map(MemberHash::verdict);
            self.cur = None;
            if grew {
                return Err(self.fail(seg, format!("file is longer than planned {size} bytes")));
            }
            if let Some(Err(why)) = verdict {
                return Err(self.fail(seg, why.into()));
            }
        }
        self.buf_start = s.offset + file_off;
        self.buf_len = got;
        Ok(())
    }
}

impl Read for ImageReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failed {
            return Err(failure.error());
        }
        let plan = self.plan.clone();
        let pos = self.pos;
        if out.is_empty() || pos >= plan.image_size {
            return Ok(0);
        }
        // Buffered file data.
        if self.buf_len > 0 && pos >= self.buf_start && pos < self.buf_start + self.buf_len as u64 {
            let at = (pos - self.buf_start) as usize;
            let n = out.len().min(self.buf_len - at);
            out[..n].copy_from_slice(&self.buf[at..at + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        // Metadata.
        let meta_len = plan.meta.len() as u64;
        if pos < meta_len {
            let n = out.len().min((meta_len - pos) as usize);
            out[..n].copy_from_slice(&plan.meta[pos as usize..pos as usize + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        // Data segments (sorted by offset), or zero padding between them.
        let i = plan.segments.partition_point(|s| s.offset <= pos);
        let next_start = plan.segments.get(i).map_or(plan.image_size, |s| s.offset);
        if i > 0 {
            let seg = &plan.segments[i - 1];
            if pos < seg.offset + seg.size {
                let file_off = pos - seg.offset;
                if seg.placement.is_none() {
                    let c = &plan.catalog_bytes[file_off as usize..];
                    let n = out.len().min(c.len());
                    out[..n].copy_from_slice(&c[..n]);
                    self.pos += n as u64;
                    return Ok(n);
                }
                self.fill(i - 1, file_off)?;
                return self.read(out);
            }
        }
        let n = out.len().min((next_start - pos) as usize);
        out[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ImageReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.plan.image_size as i128;
        let target = match to {
            SeekFrom::Start(o) => o as i128,
            SeekFrom::End(d) => size + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the image",
            ));
        }
        self.pos = target.min(u64::MAX as i128) as u64;
        Ok(self.pos)
    }
}

/// Files after the current one whose reading is started in advance.
const READ_AHEAD_FILES: usize = 2;
