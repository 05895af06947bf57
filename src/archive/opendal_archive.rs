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
use opendal::Operator;
use sha2::{Digest, Sha256};

use super::{
    never_overwritten, read_digests, Archive, ArchiveObject, ByteSource, PutProgress, Stored,
    ThawRequest, ThawState, ThawTier, UploadJournal, UploadState,
};
use crate::store::{
    list_objects, object_from_metadata, object_stream, BackendInfo, ObjectInfo, StoreError,
};

const BLOCK: usize = 8 << 20;

pub struct OpendalArchive {
    op: Operator,
    info: BackendInfo,
}

impl OpendalArchive {
    pub fn new(op: Operator, info: BackendInfo) -> Self {
        OpendalArchive { op, info }
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
            .map_err(|e| StoreError::check(&self.info, "verify", key, e.to_string()))?
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

    async fn put(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        fingerprint: &str,
        journal: &dyn UploadJournal,
        progress: PutProgress<'_>,
    ) -> Result<Stored, StoreError> {
        let total = source.len();
        let jerr = |e| StoreError::new(&self.info, "put", key, e);
        let read_err = |at: u64, e: std::io::Error| {
            StoreError::new(
                &self.info,
                "put",
                key,
                lomob_backends::BackendError::Source {
                    key: key.to_string(),
                    offset: at,
                    source: e,
                },
            )
        };
        if let Some(existing) = self.stat(key).await? {
            // Stored by a run killed before it could record it? Only when it holds the
            // same bytes: these backends keep no metadata to compare.
            if existing.info.size == total {
                let sha256 = read_digests(source.clone(), key, None)
                    .await
                    .map_err(jerr)?
                    .sha256;
                if self.read_back_sha256(key).await? == sha256 {
                    journal.clear(key).map_err(jerr)?;
                    return Ok(Stored {
                        object: existing,
                        sha256,
                    });
                }
            }
            return Err(never_overwritten(&self.info, key));
        }
        let partial = format!("{key}.partial");
        let can_append = self.op.info().capability().write_can_append;
        // Continue a partial upload of the same source, where the backend can append.
        let mut resume_at = 0u64;
        if can_append {
            let same = journal.load(key).map_err(jerr)?.is_some_and(|s| {
                s.source_sha256.as_deref() == Some(fingerprint) && s.total_size == total
            });
            if same {
                if let Ok(m) = self.op.stat(&partial).await {
                    resume_at = m.content_length().min(total);
                }
            }
        }
        if resume_at == 0 {
            let _ = self.op.delete(&partial).await;
        } else {
            tracing::info!(
                "site {}: resuming {key} at byte {resume_at} of {total}",
                self.info.site
            );
        }
        journal
            .save(&UploadState {
                key: key.to_string(),
                upload_id: "partial".into(),
                part_size: BLOCK as u64,
                total_size: total,
                source_sha256: Some(fingerprint.to_string()),
                parts: Vec::new(),
            })
            .map_err(jerr)?;
        let mut w = self
            .op
            .writer_with(&partial)
            .append(can_append)
            .chunk(BLOCK)
            .await
            .map_err(|e| self.err("put", key, e))?;
        // Read from the first byte even when resuming: the bytes already stored are hashed,
        // not sent, so the SHA-256 covers the whole object and every file is checked.
        let mut reader = None;
        let mut sha = Sha256::new();
        let mut done = 0u64;
        progress(resume_at);
        let failed = loop {
            if done >= total {
                break None;
            }
            let len = ((total - done) as usize).min(BLOCK);
            let block = match read_block(&source, &mut reader, done, len).await {
                Ok(b) if b.is_empty() => {
                    break Some(read_err(
                        done,
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the image ended at byte {done} of {total}"),
                        ),
                    ))
                }
                Ok(b) => b,
                Err(e) => break Some(read_err(done, e)),
            };
            sha.update(&block);
            let end = done + block.len() as u64;
            if end > resume_at {
                let skip = resume_at.saturating_sub(done) as usize;
                let mut block = block;
                if skip > 0 {
                    block.drain(..skip);
                }
                w.write(block).await.map_err(|e| self.err("put", key, e))?;
                if can_append {
                    // Appends are durable per write; report what the server holds.
                    progress(end);
                }
            }
            done = end;
        };
        if let Some(e) = failed {
            // The source is not what the upload started with (a file changed under the
            // image): the partial object can never be completed.
            let _ = w.abort().await;
            let _ = self.op.delete(&partial).await;
            journal.clear(key).map_err(jerr)?;
            return Err(e);
        }
        let sha256: [u8; 32] = sha.finalize().into();
        w.close().await.map_err(|e| self.err("put", key, e))?;
        progress(done);
        let m = self
            .op
            .stat(&partial)
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
        if self.read_back_sha256(&partial).await? != sha256 {
            let _ = self.op.delete(&partial).await;
            journal.clear(key).map_err(jerr)?;
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                "the stored bytes' SHA-256 differs from the image's; the partial upload was removed and the next run starts over".into(),
            ));
        }
        self.op
            .rename(&partial, key)
            .await
            .map_err(|e| self.err("put", key, e))?;
        journal.clear(key).map_err(jerr)?;
        let object = self.stat(key).await?.ok_or_else(|| {
            StoreError::check(&self.info, "verify", key, "missing after rename".into())
        })?;
        Ok(Stored { object, sha256 })
    }

    async fn put_index(&self, key: &str, bytes: Vec<u8>) -> Result<ArchiveObject, StoreError> {
        if let Some(existing) = self.stat(key).await? {
            let same = existing.info.size == bytes.len() as u64
                && self.read_range(key, 0..existing.info.size).await? == bytes;
            if same {
                return Ok(existing);
            }
            return Err(never_overwritten(&self.info, key));
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
        self.op
            .rename(&partial, key)
            .await
            .map_err(|e| self.err("put", key, e))?;
        self.stat(key).await?.ok_or_else(|| {
            StoreError::check(&self.info, "verify", key, "missing after rename".into())
        })
    }

    async fn stat(&self, key: &str) -> Result<Option<ArchiveObject>, StoreError> {
        match self.op.stat(key).await {
            Ok(m) => Ok(Some(ArchiveObject {
                info: object_from_metadata(key, &m),
                storage_class: None,
                thaw: ThawState::NotNeeded,
                fingerprint: None,
            })),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        list_objects(&self.op, &self.info, prefix).await
    }

    async fn request_thaw(&self, _: &str, _: u32, _: ThawTier) -> Result<ThawRequest, StoreError> {
        Ok(ThawRequest::NotNeeded)
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.op
            .read_with(key)
            .range(range)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    async fn abort_orphans(
        &self,
        prefix: &str,
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError> {
        // A `.partial` object the journal does not know cannot be resumed: remove it.
        let known: std::collections::HashSet<String> = journal
            .list()
            .map_err(|e| StoreError::new(&self.info, "list uploads", prefix, e))?
            .into_iter()
            .map(|s| format!("{}.partial", s.key))
            .collect();
        let mut n = 0;
        for o in self.list(prefix).await? {
            if o.key.ends_with(".partial") && !known.contains(&o.key) {
                self.delete(&o.key).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
