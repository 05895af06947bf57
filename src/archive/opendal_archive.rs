//! [`Archive`] over an OpenDAL operator, for every kind that is not S3: a local disk or NAS,
//! SFTP, WebDAV, Drive-like services.
//!
//! Uploads go to `<key>.partial` and are renamed into place when complete, so a crash never
//! leaves a short object under the real name. Where the backend can append (a local disk),
//! a rerun continues the partial object from its current length; elsewhere it starts over.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use lomob_backends::transfer::Pacer;
use opendal::Operator;
use sha2::{Digest, Sha256};

use super::{
    read_digests, Archive, ArchiveObject, ByteSource, PutOutcome, PutRequest, Stored, ThawRequest,
    ThawState, ThawTier, UploadJournal, UploadState, Verification,
};
use crate::keys::ARCHIVE;
use crate::store::{list_objects, object_stream, BackendInfo, ObjectInfo, StoreError};

const BLOCK: usize = 8 << 20;

/// What the image reader of a streamed PUT says when the request ended before it did.
const STOPPED: &str = "the upload stopped";

pub struct OpendalArchive {
    op: Operator,
    info: BackendInfo,
    /// The site's bandwidth limit, shared with its stage.
    pacer: Option<Arc<Pacer>>,
    /// A local disk's folder (see [`OpendalArchive::with_local_root`]).
    local_root: Option<std::path::PathBuf>,
    /// Read images back from the disk itself (O_DIRECT) even when written whole.
    read_back_always: bool,
    /// WebDAV: images go up as one streamed PUT of our own (OpenDAL's writer is one-shot).
    streamed: Option<lomob_backends::webdav::WebdavPut>,
}

impl OpendalArchive {
    pub fn new(op: Operator, info: BackendInfo, pacer: Option<Arc<Pacer>>) -> Self {
        OpendalArchive {
            op,
            info,
            pacer,
            local_root: None,
            read_back_always: false,
            streamed: None,
        }
    }

    /// For WebDAV: images go up through `put`, streamed, instead of OpenDAL's one-shot
    /// writer.
    pub fn with_streamed_put(mut self, put: Option<lomob_backends::webdav::WebdavPut>) -> Self {
        self.streamed = put;
        self
    }

    /// For a local disk at `root`: a rename into place is made durable (its folder fsynced)
    /// before the object counts as stored.
    pub fn with_local_root(mut self, root: Option<std::path::PathBuf>) -> Self {
        self.local_root = root;
        self
    }

    /// `verify-read-back`: read every image back from the disk itself.
    pub fn with_read_back(mut self, always: bool) -> Self {
        self.read_back_always = always;
        self
    }

    /// The image being put could not be read at `offset` (a member file changed or went).
    fn source_err(&self, key: &str, offset: u64, e: std::io::Error) -> StoreError {
        StoreError::new(
            &self.info,
            "put",
            key,
            lomob_backends::BackendError::Source {
                key: key.to_string(),
                offset,
                source: e,
            },
        )
    }

    fn err(&self, op: &'static str, key: &str, e: opendal::Error) -> StoreError {
        StoreError::opendal(&self.info, op, key, e)
    }

    /// Reads the whole object back and hashes it: the only check these backends allow.
    async fn read_back_sha256(&self, key: &str) -> Result<[u8; 32], StoreError> {
        let mut r = object_stream(&self.op, &self.info, "verify", key, BLOCK).await?;
        let mut sha = Sha256::new();
        while let Some(b) = r
            .try_next()
            .await
            .map_err(|e| StoreError::stream(&self.info, "verify", key, e))?
        {
            sha.update(&b);
        }
        Ok(sha.finalize().into())
    }
}

/// Reads `len` bytes of `source` from `offset` on a blocking thread.
async fn read_block(
    source: &Arc<dyn ByteSource>,
    reader: &mut Option<Box<dyn Read + Send>>,
    offset: u64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut r = match reader.take() {
        Some(r) => r,
        None => {
            let s = source.clone();
            tokio::task::spawn_blocking(move || s.open_at(offset))
                .await
                .map_err(std::io::Error::other)??
        }
    };
    let (r, buf) = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok((r, buf))
    })
    .await
    .map_err(std::io::Error::other)??;
    *reader = Some(r);
    Ok(buf)
}

#[async_trait]
impl Archive for OpendalArchive {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        crate::store::confine(&self.info, "put", req.key)?;
        let key = req.key;
        let total = req.source.len();
        let jerr = |e| StoreError::new(&self.info, "put", key, e);
        if let Some(existing) = self.stat(key).await? {
            return self.settle_existing(&req, existing).await;
        }
        let partial = format!("{key}.partial");
        let can_append = self.op.info().capability().write_can_append;
        let resume_at = self.resume_point(&req, &partial, can_append).await?;
        req.journal
            .save(&UploadState {
                key: key.to_string(),
                upload_id: "partial".into(),
                part_size: BLOCK as u64,
                total_size: total,
                source_sha256: Some(req.fingerprint.to_string()),
                parts: Vec::new(),
            })
            .map_err(jerr)?;
        let sent = match (&self.local_root, &self.pacer, &self.streamed, resume_at) {
            (Some(root), None, _, 0) => self.write_to_disk(&req, root, &partial).await,
            (None, _, Some(put), _) => self.send_streamed(put, &req, &partial).await,
            _ => self.send(&req, &partial, resume_at, can_append).await,
        };
        let sha256 = match sent {
            Ok(sha) => sha,
            Err(e) => {
                if e.source_io().is_some() {
                    // The source is not what the upload started with (a file changed under
                    // the image): the partial object can never be completed.
                    let _ = self.op.delete(&partial).await;
                    req.journal.clear(key).map_err(jerr)?;
                }
                return Err(e);
            }
        };
        (req.progress)(total);
        // On a local disk an image this run wrote whole was hashed as written and fsynced
        // on close: reading it back would only read the page cache. One continued from an
        // earlier run's partial object is read back (that run may have died before its
        // bytes reached the disk), and so is every image with `verify-read-back`.
        let written_here = self.local_root.is_some() && resume_at == 0 && !self.read_back_always;
        let verified = if written_here {
            self.verify_size(key, &partial, total).await
        } else {
            self.verify_partial(key, &partial, total, &sha256).await
        };
        verified.inspect_err(|_| {
            let _ = req.journal.clear(key);
        })?;
        let verification = if written_here {
            Verification::Written
        } else {
            Verification::ReadBack
        };
        let stored = self
            .move_into_place(&partial, key, sha256, verification)
            .await?;
        req.journal.clear(key).map_err(jerr)?;
        Ok(stored)
    }

    async fn put_index(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        crate::store::confine(&self.info, "put", key)?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(existing) = self.stat(key).await? {
            let same = existing.info.size == bytes.len() as u64
                && self.read_range(key, 0..existing.info.size).await? == bytes;
            if same {
                return Ok(PutOutcome::Stored(Stored {
                    object: existing,
                    sha256,
                    verification: Verification::ReadBack,
                }));
            }
            return Ok(PutOutcome::Occupied {
                existing,
                reason: "it holds other bytes than this catalog".into(),
            });
        }
        // Through a partial name, so a crash never leaves a short object under the real one.
        let partial = format!("{key}.partial");
        let size = bytes.len() as u64;
        self.op
            .write(&partial, bytes.clone())
            .await
            .map_err(|e| self.err("put", key, e))?;
        if self.read_range(&partial, 0..size).await? != bytes {
            let _ = self.op.delete(&partial).await;
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                "the stored bytes differ from the ones written".into(),
            ));
        }
        self.move_into_place(&partial, key, sha256, Verification::ReadBack)
            .await
    }

    async fn stat(&self, key: &str) -> Result<Option<ArchiveObject>, StoreError> {
        crate::store::confine(&self.info, "stat", key)?;
        match self.op.stat(key).await {
            Ok(m) => Ok(Some(ArchiveObject {
                info: ObjectInfo::from_opendal(key, &m),
                storage_class: None,
                thaw: ThawState::NotNeeded,
                fingerprint: None,
                part_size: None,
            })),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        crate::store::confine(&self.info, "list", prefix)?;
        list_objects(&self.op, &self.info, prefix).await
    }

    async fn request_thaw(&self, _: &str, _: u32, _: ThawTier) -> Result<ThawRequest, StoreError> {
        Ok(ThawRequest::NotNeeded)
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        crate::store::confine(&self.info, "read", key)?;
        self.op
            .read_with(key)
            .range(range)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))
    }

    async fn read_stream(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<super::ByteStream, StoreError> {
        crate::store::confine(&self.info, "read", key)?;
        let s = crate::store::range_stream(&self.op, &self.info, key, range).await?;
        Ok(Box::pin(s))
    }

    async fn read_index(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        crate::store::confine(&self.info, "read", key)?;
        self.op
            .read(key)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        crate::store::confine(&self.info, "delete", key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    async fn abort_upload(&self, key: &str, journal: &dyn UploadJournal) -> Result<(), StoreError> {
        crate::store::confine(&self.info, "abort upload", key)?;
        let partial = format!("{key}.partial");
        if self.stat(&partial).await?.is_some() {
            self.delete(&partial).await?;
            tracing::info!(
                "site {}: removed {partial}, an unfinished upload no run will continue",
                self.info.site
            );
        }
        journal
            .clear(key)
            .map_err(|e| StoreError::new(&self.info, "abort upload", key, e))
    }

    async fn abort_orphans(
        &self,
        owned: &(dyn for<'k> Fn(&'k str) -> bool + Sync),
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError> {
        // A `.partial` object of ours the journal does not know cannot be resumed: remove it.
        let known: std::collections::HashSet<String> = journal
            .list()
            .map_err(|e| StoreError::new(&self.info, "list uploads", ARCHIVE, e))?
            .into_iter()
            .map(|s| format!("{}.partial", s.key))
            .collect();
        let mut n = 0;
        for o in self.list(ARCHIVE).await? {
            if o.key.ends_with(".partial") && owned(&o.key) && !known.contains(&o.key) {
                self.delete(&o.key).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl OpendalArchive {
    /// Renames a verified `partial` object to `key`, which now holds it.
    async fn move_into_place(
        &self,
        partial: &str,
        key: &str,
        sha256: [u8; 32],
        verification: Verification,
    ) -> Result<PutOutcome, StoreError> {
        self.op
            .rename(partial, key)
            .await
            .map_err(|e| self.err("put", key, e))?;
        if let Some(root) = &self.local_root {
            crate::store::sync_parent(&self.info, root, key)?;
        }
        let object = self
            .stat(key)
            .await?
            .ok_or_else(|| StoreError::missing_after_write(&self.info, key))?;
        Ok(PutOutcome::Stored(Stored {
            object,
            sha256,
            verification,
        }))
    }

    /// An object already holds `req.key`: ours and done only when its bytes read back equal
    /// the source's; otherwise occupied.
    async fn settle_existing(
        &self,
        req: &PutRequest<'_>,
        existing: ArchiveObject,
    ) -> Result<PutOutcome, StoreError> {
        let key = req.key;
        let total = req.source.len();
        let jerr = |e| StoreError::new(&self.info, "put", key, e);
        if existing.info.size == total {
            let sha256 = read_digests(req.source.clone(), key, None)
                .await
                .map_err(jerr)?
                .sha256;
            if self.read_back_sha256(key).await? == sha256 {
                req.journal.clear(key).map_err(jerr)?;
                return Ok(PutOutcome::Stored(Stored {
                    object: existing,
                    sha256,
                    verification: Verification::ReadBack,
                }));
            }
        }
        Ok(PutOutcome::Occupied {
            reason: format!(
                "it holds {} bytes that are not this image's",
                existing.info.size
            ),
            existing,
        })
    }

    /// Where a partial upload of the same source can continue, where the backend appends;
    /// 0 (and any stale partial object removed) otherwise.
    async fn resume_point(
        &self,
        req: &PutRequest<'_>,
        partial: &str,
        can_append: bool,
    ) -> Result<u64, StoreError> {
        let total = req.source.len();
        let same = can_append
            && req
                .journal
                .load(req.key)
                .map_err(|e| StoreError::new(&self.info, "put", req.key, e))?
                .is_some_and(|s| {
                    s.source_sha256.as_deref() == Some(req.fingerprint) && s.total_size == total
                });
        let resume_at = match self.op.stat(partial).await {
            Ok(m) if same => m.content_length().min(total),
            _ => 0,
        };
        if resume_at == 0 {
            let _ = self.op.delete(partial).await;
        } else {
            tracing::info!(
                "site {}: resuming {} at byte {resume_at} of {total}",
                self.info.site,
                req.key
            );
        }
        Ok(resume_at)
    }

    /// Writes the source into `partial` from `resume_at` (reading it from its first byte:
    /// the bytes already stored are hashed, not sent, so the SHA-256 covers the whole object
    /// and every file is checked). Returns the SHA-256.
    async fn send(
        &self,
        req: &PutRequest<'_>,
        partial: &str,
        resume_at: u64,
        can_append: bool,
    ) -> Result<[u8; 32], StoreError> {
        let (key, total) = (req.key, req.source.len());
        let read_err = |at: u64, e: std::io::Error| self.source_err(key, at, e);
        // Drive and OneDrive take an object in one write (OpenDAL's one-shot writers refuse
        // a second): the image is held whole, which the profile bounds (iso-size at most
        // the archive's one-shot-limit).
        let one_shot = !self.op.info().capability().write_can_multi;
        let mut held: Vec<bytes::Bytes> = Vec::new();
        let mut w = if one_shot {
            self.op.writer_with(partial).await
        } else {
            self.op
                .writer_with(partial)
                .append(can_append)
                .chunk(BLOCK)
                .await
        }
        .map_err(|e| self.err("put", key, e))?;
        let mut reader = None;
        let mut sha = Sha256::new();
        let mut done = 0u64;
        (req.progress)(resume_at);
        while done < total {
            let len = ((total - done) as usize).min(BLOCK);
            let block = match read_block(&req.source, &mut reader, done, len).await {
                Ok(b) if b.is_empty() => Err(read_err(
                    done,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the image ended at byte {done} of {total}"),
                    ),
                )),
                Ok(b) => Ok(b),
                Err(e) => Err(read_err(done, e)),
            };
            let mut block = match block {
                Ok(b) => b,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(e);
                }
            };
            sha.update(&block);
            let end = done + block.len() as u64;
            if end > resume_at {
                let skip = resume_at.saturating_sub(done) as usize;
                block.drain(..skip);
                let sent = block.len() as u64;
                if one_shot {
                    held.push(bytes::Bytes::from(block));
                    done = end;
                    continue;
                }
                w.write(block).await.map_err(|e| self.err("put", key, e))?;
                if let Some(p) = &self.pacer {
                    p.pace(sent).await;
                }
                if can_append {
                    // Appends are durable per write; report what the server holds.
                    (req.progress)(end);
                }
            }
            done = end;
        }
        if one_shot {
            let whole = opendal::Buffer::from(std::mem::take(&mut held));
            w.write(whole).await.map_err(|e| self.err("put", key, e))?;
            if let Some(p) = &self.pacer {
                p.pace(total).await;
            }
        }
        w.close().await.map_err(|e| self.err("put", key, e))?;
        Ok(sha.finalize().into())
    }

    /// Writes a whole image to a local disk in one blocking call, as `lomob iso create`
    /// does: one thread reads the image (checking every member file), the other hashes it
    /// and writes it with O_DIRECT; then fsync. OpenDAL's fs writer would go through the
    /// runtime a block at a time with a page-cache copy (2.5x slower, BENCHMARKS.md).
    /// Returns the image's SHA-256.
    async fn write_to_disk(
        &self,
        req: &PutRequest<'_>,
        root: &std::path::Path,
        partial: &str,
    ) -> Result<[u8; 32], StoreError> {
        use crate::store::direct::CopyFailure;
        use std::sync::atomic::{AtomicU64, Ordering};
        let (key, total) = (req.key, req.source.len());
        let path = root.join(partial);
        let written = Arc::new(AtomicU64::new(0));
        let (source, at, w) = (req.source.clone(), path.clone(), written.clone());
        let mut task = tokio::task::spawn_blocking(move || {
            if let Some(folder) = at.parent() {
                std::fs::create_dir_all(folder).map_err(CopyFailure::Write)?;
            }
            let reader = source.open_at(0).map_err(CopyFailure::Read)?;
            let (sha, n) = crate::store::direct::write_file(reader, &at, |n| {
                w.fetch_add(n, Ordering::Relaxed);
            })?;
            if n != total {
                return Err(CopyFailure::Read(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the image ended at byte {n} of {total}"),
                )));
            }
            Ok(sha)
        });
        (req.progress)(0);
        let joined = loop {
            tokio::select! {
                r = &mut task => break r,
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                    (req.progress)(written.load(Ordering::Relaxed));
                }
            }
        };
        let done = written.load(Ordering::Relaxed);
        match joined
            .map_err(|e| CopyFailure::Read(std::io::Error::other(e)))
            .and_then(|r| r)
        {
            Ok(sha) => Ok(sha),
            Err(CopyFailure::Write(e)) => {
                let _ = std::fs::remove_file(&path);
                Err(StoreError::local(&self.info, "put", key, &path, e))
            }
            Err(CopyFailure::Read(e)) => Err(self.source_err(key, done, e)),
        }
    }

    /// Sends the whole image as one streamed PUT (WebDAV): a blocking task reads the image
    /// (checking every member file) and hashes it, handing blocks to the request body; a
    /// read error fails the body, so the server never completes a short object. Returns the
    /// image's SHA-256.
    async fn send_streamed(
        &self,
        put: &lomob_backends::webdav::WebdavPut,
        req: &PutRequest<'_>,
        partial: &str,
    ) -> Result<[u8; 32], StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (key, total) = (req.key, req.source.len());
        if let Some((folder, _)) = partial.rsplit_once('/') {
            self.op
                .create_dir(&format!("{folder}/"))
                .await
                .map_err(|e| self.err("put", key, e))?;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
        let read = Arc::new(AtomicU64::new(0));
        let (source, r) = (req.source.clone(), read.clone());
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
            let mut stopped = false;
            let streamed = source.open_at(0).and_then(|input| {
                crate::store::direct::stream(input, |block| {
                    if tx
                        .blocking_send(Ok(bytes::Bytes::copy_from_slice(block)))
                        .is_err()
                    {
                        stopped = true;
                        return Err(std::io::Error::other(STOPPED));
                    }
                    r.fetch_add(block.len() as u64, Ordering::Relaxed);
                    Ok(())
                })
            });
            let failed = match streamed {
                Ok((sha, n)) if n == total => return Ok(sha),
                Ok((_, n)) => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the image ended at byte {n} of {total}"),
                ),
                Err(e) => e,
            };
            if !stopped {
                // The body fails with it, so the PUT is aborted rather than completed short.
                let copy = std::io::Error::new(failed.kind(), failed.to_string());
                let _ = tx.blocking_send(Err(copy));
            }
            Err(failed)
        });
        let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let upload = put.put(partial, total, body);
        tokio::pin!(upload);
        (req.progress)(0);
        let sent = loop {
            tokio::select! {
                r = &mut upload => break r,
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                    (req.progress)(read.load(Ordering::Relaxed));
                }
            }
        };
        let hashed = reader.await.map_err(std::io::Error::other).and_then(|r| r);
        match (hashed, sent) {
            (Ok(sha), Ok(())) => Ok(sha),
            // A source that failed is the image's problem, whatever the server said (the
            // reader stops on its own when the request ended first: then the request's
            // error is the one).
            (Err(e), _) if e.to_string() != STOPPED => {
                Err(self.source_err(key, read.load(Ordering::Relaxed), e))
            }
            (_, Err(e)) => Err(StoreError::new(&self.info, "put", key, e)),
            (Err(e), Ok(())) => Err(self.source_err(key, read.load(Ordering::Relaxed), e)),
        }
    }

    /// Checks a finished partial object by size and by reading it back; a wrong one is
    /// removed so the next run starts over.
    /// The partial object holds `total` bytes.
    async fn verify_size(&self, key: &str, partial: &str, total: u64) -> Result<(), StoreError> {
        let m = self
            .op
            .stat(partial)
            .await
            .map_err(|e| self.err("verify", key, e))?;
        if m.content_length() != total {
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                format!(
                    "server holds {} bytes, expected {total}",
                    m.content_length()
                ),
            ));
        }
        Ok(())
    }

    async fn verify_partial(
        &self,
        key: &str,
        partial: &str,
        total: u64,
        sha256: &[u8; 32],
    ) -> Result<(), StoreError> {
        self.verify_size(key, partial, total).await?;
        let started = std::time::Instant::now();
        let read = match &self.local_root {
            // From the disk itself, not the page cache the write just filled.
            Some(root) => {
                let path = root.join(partial);
                tokio::task::spawn_blocking(move || crate::store::direct::sha256_of(&path))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(|e| {
                        StoreError::local(&self.info, "verify", key, &root.join(partial), e)
                    })?
            }
            None => self.read_back_sha256(partial).await?,
        };
        if read != *sha256 {
            let _ = self.op.delete(partial).await;
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                "the stored bytes' SHA-256 differs from the image's; the partial upload was removed and the next run starts over".into(),
            ));
        }
        // What the read-back costs (BENCHMARKS.md reports it for SFTP and WebDAV).
        tracing::info!(
            "{} archive: {key} read back and checked ({}) in {:.2} s",
            self.info.site,
            lomob_backends::ByteSize(total),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
