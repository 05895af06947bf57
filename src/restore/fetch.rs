//! Bringing bytes home: a staged copy streamed whole to its temporary name, or an image's
//! byte ranges read in bounded chunks and cut into the files they hold. Every file passes
//! through [`dest`]: hashed as written, checked against the manifest, then renamed into
//! place; the other paths of the same content are copied from the first and checked too.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use lomob_backends::ErrorKind;

use super::dest::{self, Incoming, WriteError};
use super::plan::{self, Group, ImageJob};
use super::select::Wanted;
use super::FileIssue;
use crate::iso::Catalog;
use crate::keys::catalog_key;
use crate::progress::Progress;
use crate::site::Site;
use crate::store::StoreError;

/// Chunks of one image read at once: enough to keep the link busy while one is written.
const READS_AT_ONCE: usize = 3;
/// The catalog beside an image is read as a check of the recorded offsets only when this
/// much of the image is read: for a few photos it would cost more than the photos (a 5 GB
/// image's catalog is hundreds of KB), and each file's SHA-256 decides anyway.
const CATALOG_CHECK_MIN: u64 = 32 << 20;
/// A streamed read is handed over in pieces of this size...
const PIECE: usize = 8 << 20;
/// ...of which this many may wait to be written.
const PIECES_QUEUED: usize = 4;

fn cut_short(job: &ImageJob, r: &Range<u64>, got: u64) -> (ErrorKind, String) {
    (
        ErrorKind::Transient,
        format!(
            "image {}: asked for bytes {}..{}, got {got}; run again",
            job.key, r.start, r.end
        ),
    )
}

/// One file to write: what the manifest says of it and where it goes.
#[derive(Clone, Debug)]
pub struct Target {
    pub wanted: Wanted,
    pub dest: PathBuf,
}

/// What a part of the restore did.
#[derive(Debug, Default)]
pub struct Tally {
    pub restored: u64,
    pub restored_bytes: u64,
    pub downloaded: u64,
    pub failed: Vec<FileIssue>,
    pub warnings: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, o: Tally) {
        self.restored += o.restored;
        self.restored_bytes += o.restored_bytes;
        self.downloaded += o.downloaded;
        self.failed.extend(o.failed);
        self.warnings.extend(o.warnings);
    }

    fn fail(&mut self, t: &Target, kind: ErrorKind, message: String) {
        self.failed
            .push(FileIssue::new(&t.wanted.path, Some(kind), message));
    }

    fn fail_group(&mut self, targets: &[Target], group: &Group, kind: ErrorKind, message: &str) {
        for &f in &group.files {
            self.fail(&targets[f], kind, message.to_string());
        }
    }
}

/// What every fetch needs to know.
pub struct Ctx<'a> {
    pub to: &'a Path,
    pub groups: &'a [Group],
    pub targets: &'a [Target],
    pub progress: &'a Progress,
}

/// The kind of a local write failure: a mismatch is an integrity error, a full disk is
/// told apart.
pub fn write_kind(e: &WriteError) -> ErrorKind {
    match e {
        WriteError::Mismatch { .. } => ErrorKind::Integrity,
        WriteError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ErrorKind::Space,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
            _ => ErrorKind::Other,
        },
    }
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    write_kind(&WriteError::Io {
        path: PathBuf::new(),
        source: std::io::Error::new(e.kind(), ""),
    })
}

impl Ctx<'_> {
    /// Creates the folders down to `t`'s place, refusing links on the way.
    fn prepare(&self, t: &Target) -> Result<(), (ErrorKind, String)> {
        dest::make_parent(self.to, &t.dest).map_err(|e| {
            (
                io_kind(&e),
                format!("cannot make the folder for {}: {e}", t.dest.display()),
            )
        })
    }

    /// After the first file of `group` is in place: the other paths holding the same
    /// content are copied from it.
    fn copies(&self, g: usize, tally: &mut Tally) {
        let group = &self.groups[g];
        let first = &self.targets[group.files[0]];
        self.done(first, tally);
        for &f in &group.files[1..] {
            let t = &self.targets[f];
            let w = &t.wanted;
            let result = self.prepare(t).and_then(|()| {
                dest::copy_restored(&first.dest, &t.dest, w.size, &w.sha256, w.mtime_ns, w.mode)
                    .map_err(|e| (write_kind(&e), e.to_string()))
            });
            match result {
                Ok(()) => self.done(t, tally),
                Err((kind, message)) => tally.fail(t, kind, message),
            }
        }
    }

    fn done(&self, t: &Target, tally: &mut Tally) {
        tally.restored += 1;
        tally.restored_bytes += t.wanted.size;
        self.progress.add(1, t.wanted.size);
    }

    /// Writes the files of an empty content.
    pub fn empty(&self, g: usize) -> Tally {
        let mut tally = Tally::default();
        let group = &self.groups[g];
        let t = &self.targets[group.files[0]];
        let w = &t.wanted;
        let result = self.prepare(t).and_then(|()| {
            Incoming::create(&t.dest)
                .and_then(|inc| inc.finish(0, &w.sha256, w.mtime_ns, w.mode))
                .map_err(|e| (write_kind(&e), e.to_string()))
        });
        match result {
            Ok(()) => self.copies(g, &mut tally),
            Err((kind, message)) => tally.fail_group(self.targets, group, kind, &message),
        }
        tally
    }

    /// Downloads a staged copy of group `g`. `Err` when the stage failed (the caller tries
    /// an image instead); local failures are recorded in the tally, as they would fail
    /// from any source.
    pub async fn from_stage(&self, site: &Site, g: usize, key: &str) -> Result<Tally, StoreError> {
        let mut tally = Tally::default();
        let group = &self.groups[g];
        let t = &self.targets[group.files[0]];
        let w = &t.wanted;
        if let Err((kind, message)) = tokio::task::block_in_place(|| {
            self.prepare(t)?;
            dest::clear_temp(&t.dest).map_err(|e| (io_kind(&e), e.to_string()))
        }) {
            tally.fail_group(self.targets, group, kind, &message);
            return Ok(tally);
        }
        let got = match site.stage.download(key, &dest::temp_name(&t.dest)).await {
            Ok(got) => got,
            Err(e) => {
                let _ = dest::clear_temp(&t.dest);
                if e.is_local() {
                    tally.fail_group(self.targets, group, e.kind(), &e.to_string());
                    return Ok(tally);
                }
                return Err(e);
            }
        };
        tally.downloaded += got.1;
        match tokio::task::block_in_place(|| {
            dest::adopt(&t.dest, got, w.size, &w.sha256, w.mtime_ns, w.mode)
        }) {
            Ok(()) => self.copies(g, &mut tally),
            Err(WriteError::Mismatch { message, .. }) => {
                return Err(StoreError::check(
                    site.stage.info(),
                    "restore",
                    key,
                    format!("the staged copy holds other bytes than were backed up ({message})"),
                ))
            }
            Err(e) => tally.fail_group(self.targets, group, write_kind(&e), &e.to_string()),
        }
        Ok(tally)
    }

    /// Reads the wanted files of one image: its catalog first (a check of the recorded
    /// offsets; the SHA-256 of each file decides), then the planned ranges in chunks.
    pub async fn from_image(&self, site: &Arc<Site>, job: &ImageJob) -> Tally {
        let mut tally = Tally::default();
        if job.download_bytes >= CATALOG_CHECK_MIN {
            self.check_catalog(site, job, &mut tally).await;
        }
        let mut cutter = Cutter {
            ctx: self,
            job,
            open: HashMap::new(),
            settled: vec![false; job.members.len()],
            lo: 0,
        };
        let mut stopped: Option<(ErrorKind, String)> = None;
        for r in &job.ranges {
            let read = if r.end - r.start > plan::stream_over() {
                self.streamed(site, job, r, &mut cutter, &mut tally).await
            } else {
                self.chunked(site, job, r, &mut cutter, &mut tally).await
            };
            if let Err(e) = read {
                stopped = Some(e);
                break;
            }
        }
        // Whatever is not settled failed with the read that stopped (or was never covered,
        // which would be a planning bug worth saying plainly).
        let (kind, message) = stopped.unwrap_or((
            ErrorKind::Other,
            format!(
                "image {}: the planned ranges did not cover this file",
                job.key
            ),
        ));
        cutter.open.clear();
        for (i, mb) in job.members.iter().enumerate() {
            if !cutter.settled[i] {
                tally.fail_group(self.targets, &self.groups[mb.group], kind, &message);
            }
        }
        tally
    }

    /// A short range: GETs of at most [`plan::GET_CHUNK`], a few in flight, each a task of
    /// its own so the next ones keep arriving while one is hashed and written.
    async fn chunked(
        &self,
        site: &Arc<Site>,
        job: &ImageJob,
        r: &Range<u64>,
        cutter: &mut Cutter<'_, '_>,
        tally: &mut Tally,
    ) -> Result<(), (ErrorKind, String)> {
        let mut reads = futures::stream::iter(plan::chunks(r).into_iter().map(|c| {
            let (site, key) = (site.clone(), job.key.clone());
            async move {
                let range = c.clone();
                let r =
                    tokio::spawn(async move { site.archive.read_range(&key, range).await }).await;
                (c, r)
            }
        }))
        .buffered(READS_AT_ONCE);
        while let Some((c, r)) = reads.next().await {
            let bytes = match r {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err((e.kind(), e.to_string())),
                Err(e) => return Err((ErrorKind::Other, format!("a read task failed: {e}"))),
            };
            tally.downloaded += bytes.len() as u64;
            if bytes.len() as u64 != c.end - c.start {
                return Err(cut_short(job, &c, bytes.len() as u64));
            }
            tokio::task::block_in_place(|| cutter.cut(c.start, &bytes, tally));
        }
        Ok(())
    }

    /// A long range (most of an image): one GET streamed, read by a task of its own into
    /// pieces of [`PIECE`] bytes, a few queued, so the network and the disk work at once
    /// in bounded memory, and the server reads the object once.
    async fn streamed(
        &self,
        site: &Arc<Site>,
        job: &ImageJob,
        r: &Range<u64>,
        cutter: &mut Cutter<'_, '_>,
        tally: &mut Tally,
    ) -> Result<(), (ErrorKind, String)> {
        let mut stream = site
            .archive
            .read_stream(&job.key, r.clone())
            .await
            .map_err(|e| (e.kind(), e.to_string()))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(PIECES_QUEUED);
        // Written pieces come back to be filled again: a few buffers for the whole image,
        // not a fresh one (and fresh pages from the kernel) every 8 MiB.
        let (back_tx, mut back_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(PIECES_QUEUED + 2);
        let reader = tokio::spawn(async move {
            let fresh = |back: &mut tokio::sync::mpsc::Receiver<Vec<u8>>| match back.try_recv() {
                Ok(mut b) => {
                    b.clear();
                    b
                }
                Err(_) => Vec::with_capacity(PIECE),
            };
            let mut buf = fresh(&mut back_rx);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(b) => {
                        buf.extend_from_slice(&b);
                        if buf.len() >= PIECE {
                            let full = std::mem::replace(&mut buf, fresh(&mut back_rx));
                            if tx.send(Ok(full)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(Ok(buf)).await;
            }
        });
        let mut at = r.start;
        while let Some(item) = rx.recv().await {
            match item {
                Ok(piece) => {
                    tally.downloaded += piece.len() as u64;
                    tokio::task::block_in_place(|| cutter.cut(at, &piece, tally));
                    at += piece.len() as u64;
                    let _ = back_tx.try_send(piece);
                }
                Err(e) => {
                    reader.abort();
                    let e = StoreError::stream(site.archive.info(), "read", &job.key, e);
                    return Err((e.kind(), e.to_string()));
                }
            }
        }
        if at != r.end {
            return Err(cut_short(job, r, at - r.start));
        }
        Ok(())
    }

    async fn check_catalog(&self, site: &Site, job: &ImageJob, tally: &mut Tally) {
        let key = catalog_key(&job.key);
        let catalog = match site.archive.read_index(&key).await {
            Ok(bytes) => {
                tally.downloaded += bytes.len() as u64;
                Catalog::from_json(&bytes).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let catalog = match catalog {
            Ok(c) => c,
            Err(e) => {
                tally.warnings.push(format!(
                    "site {}: the catalog of image {} could not be read ({e}); the files are checked by their SHA-256 alone",
                    site.name, job.name
                ));
                return;
            }
        };
        let listed: HashMap<Vec<u8>, (u64, u64, String)> = catalog
            .files
            .iter()
            .filter_map(|f| Some((f.raw_path()?, (f.offset, f.size, f.sha256.clone()))))
            .collect();
        let disagree = job
            .members
            .iter()
            .filter(|mb| {
                let g = &self.groups[mb.group];
                listed.get(&mb.image_path) != Some(&(mb.offset, g.size, hex::encode(g.sha256)))
            })
            .count();
        if disagree > 0 {
            tally.warnings.push(format!(
                "site {}: the catalog of image {} disagrees with the manifest about {disagree} file(s); each file is still checked by its SHA-256",
                site.name, job.name
            ));
        }
    }
}

/// Cuts chunks of an image into the member files they cover.
struct Cutter<'a, 'c> {
    ctx: &'a Ctx<'c>,
    job: &'a ImageJob,
    /// Files begun in an earlier chunk and not finished yet, by member index.
    open: HashMap<usize, Incoming>,
    /// Members finished or failed.
    settled: Vec<bool>,
    /// Members before this one are settled.
    lo: usize,
}

impl Cutter<'_, '_> {
    fn cut(&mut self, start: u64, bytes: &[u8], tally: &mut Tally) {
        let end = start + bytes.len() as u64;
        let members = &self.job.members;
        let mut j = self.lo;
        while j < members.len() && members[j].offset < end {
            let mb = &members[j];
            let group = &self.ctx.groups[mb.group];
            let file_end = mb.offset + group.size;
            if self.settled[j] || file_end <= start {
                j += 1;
                continue;
            }
            let t = &self.ctx.targets[group.files[0]];
            let (s, e) = (start.max(mb.offset), end.min(file_end));
            let piece = &bytes[(s - start) as usize..(e - start) as usize];
            if let Err((kind, message)) = self.write(j, t, piece) {
                self.open.remove(&j);
                self.settled[j] = true;
                tally.fail_group(self.ctx.targets, group, kind, &message);
            } else if e == file_end {
                self.settled[j] = true;
                let inc = self.open.remove(&j).expect("opened by write");
                let w = &t.wanted;
                match inc.finish(w.size, &w.sha256, w.mtime_ns, w.mode) {
                    Ok(()) => self.ctx.copies(mb.group, tally),
                    Err(e) => {
                        tally.fail_group(self.ctx.targets, group, write_kind(&e), &e.to_string())
                    }
                }
            }
            j += 1;
        }
        while self.lo < members.len() && self.settled[self.lo] {
            self.lo += 1;
        }
    }

    fn write(&mut self, j: usize, t: &Target, piece: &[u8]) -> Result<(), (ErrorKind, String)> {
        if !self.open.contains_key(&j) {
            self.ctx.prepare(t)?;
            let inc = Incoming::create(&t.dest).map_err(|e| (write_kind(&e), e.to_string()))?;
            self.open.insert(j, inc);
        }
        let inc = self.open.get_mut(&j).expect("inserted above");
        inc.write(piece)
            .map_err(|e| (write_kind(&e), e.to_string()))
    }
}
