//! [`Stage`] over an OpenDAL operator: works for every backend kind the profile offers.
//!
//! For Drive and OneDrive, whose OpenDAL services never read the checksums the providers
//! compute, listings and stats come from lomob's own calls
//! ([`lomob_backends::ProviderHashes`]), and every upload is verified by the provider's
//! checksum of what it stored (Drive's SHA-256, OneDrive's QuickXorHash computed here while
//! sending): nothing counts as staged on its size alone.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use md5::{Digest as _, Md5};
use opendal::Operator;
use sha2::Sha256;
use tokio::io::AsyncReadExt;

use super::Stage;
use crate::store::{list_objects, object_stream, BackendInfo, ObjectInfo, StoreError};
use lomob_backends::quickxor::QuickXor;
use lomob_backends::transfer::Pacer;
use lomob_backends::{ChecksumKind, ProviderHashes};

/// Objects at or under this size go up in one request; larger ones in parts of this size.
/// Most photos are a single PUT; videos are a handful of parts.
pub const CHUNK: usize = 64 << 20;
/// Reads of the source, and the unit the bandwidth limit charges (small, so a limited
/// upload is smooth).
const READ_BUF: usize = 1 << 20;

pub struct OpendalStage {
    op: Operator,
    info: BackendInfo,
    metadata: bool,
    /// The site's bandwidth limit, shared with its archive.
    pacer: Option<Arc<Pacer>>,
    /// A local disk's folder: each write's folder is fsynced before it counts.
    local_root: Option<std::path::PathBuf>,
    /// The provider's own checksums, where OpenDAL's service leaves them out.
    hashes: Option<ProviderHashes>,
    /// Copies of small files to a local disk in flight at once: they are all folder
    /// operations (create, rename) on `stage/`, whose lock eight threads fought over (10,000
    /// small files: 2.8 s with 8 at once, 0.8 s with 2). Large files, whose O_DIRECT writes
    /// wait for the disk, keep the site's concurrency.
    small_copies: Arc<tokio::sync::Semaphore>,
}

impl OpendalStage {
    pub fn new(op: Operator, info: BackendInfo, pacer: Option<Arc<Pacer>>) -> Self {
        let metadata = op.info().capability().write_with_user_metadata;
        OpendalStage {
            op,
            info,
            metadata,
            pacer,
            local_root: None,
            hashes: None,
            small_copies: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
            )),
        }
    }

    /// For Drive and OneDrive: listings, stats and upload checks by the provider's checksums.
    pub fn with_hashes(mut self, hashes: Option<ProviderHashes>) -> Self {
        self.hashes = hashes;
        self
    }

    /// Checks the object just written as `key` by the provider's checksum of what it
    /// stored: Drive's SHA-256 (or MD5), OneDrive's QuickXorHash.
    async fn verify_provider_sum(
        &self,
        hashes: &ProviderHashes,
        key: &str,
        size: u64,
        sums: [(&str, String); 3],
    ) -> Result<ObjectInfo, StoreError> {
        let got = hashes
            .stat(&self.op, key)
            .await
            .map_err(|e| self.err("verify", key, e))?
            .ok_or_else(|| StoreError::missing_after_write(&self.info, key))?;
        let problem = if got.size != size {
            Some(format!("server holds {} bytes, sent {size}", got.size))
        } else {
            match got.etag.as_deref().and_then(lomob_backends::object::provider_sum) {
                None => Some("the server gave no checksum of the stored bytes: not counted as staged on its size alone".to_string()),
                Some((kind, theirs)) => match sums.iter().find(|(k, _)| *k == kind) {
                    Some((_, ours)) if ours == theirs || (kind != "quickxor" && ours.eq_ignore_ascii_case(theirs)) => None,
                    Some((_, ours)) => Some(format!(
                        "the server's {kind} of the stored bytes is {theirs}, the bytes sent have {ours}"
                    )),
                    None => Some(format!("the server gave a {kind} checksum lomob does not compute")),
                },
            }
        };
        match problem {
            None => Ok(got),
            Some(message) => {
                // Bytes the manifest does not describe are not left under lomob's name.
                let _ = self.op.delete(key).await;
                Err(StoreError::check(&self.info, "verify", key, message))
            }
        }
    }

    /// For a local disk at `root`: writes are made durable (their folder fsynced).
    pub fn with_local_root(mut self, root: Option<std::path::PathBuf>) -> Self {
        self.local_root = root;
        self
    }

    fn durable(&self, key: &str) -> Result<(), StoreError> {
        match &self.local_root {
            Some(root) => crate::store::sync_parent(&self.info, root, key),
            None => Ok(()),
        }
    }

    fn err(&self, op: &'static str, key: &str, e: opendal::Error) -> StoreError {
        StoreError::opendal(&self.info, op, key, e)
    }

    /// A problem with the file being put is the file's (its kind tells the engine:
    /// InvalidData for bytes that are not the scanned ones), not the backend's.
    fn source_err(&self, key: &str, path: &Path, e: std::io::Error) -> StoreError {
        StoreError::new(
            &self.info,
            "put",
            key,
            lomob_backends::BackendError::Source {
                key: path.display().to_string(),
                offset: 0,
                source: e,
            },
        )
    }

    /// A local disk's put ([`super::disk::copy_in`]) of a confined key, `durable` at once
    /// or at the next settle.
    async fn copy_to_disk(
        &self,
        root: &Path,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
        durable: bool,
    ) -> Result<ObjectInfo, StoreError> {
        let source = |e: std::io::Error| self.source_err(key, path, e);
        let _slot = if size < super::disk::COPY_BLOCK as u64 {
            Some(
                self.small_copies
                    .acquire()
                    .await
                    .expect("the semaphore is never closed"),
            )
        } else {
            None
        };
        let (root_owned, key_owned, src, sum) = (
            root.to_path_buf(),
            key.to_string(),
            path.to_path_buf(),
            *sha256,
        );
        let copied = tokio::task::spawn_blocking(move || {
            super::disk::copy_in(&src, &root_owned, &key_owned, size, &sum, durable)
        })
        .await
        .map_err(|e| source(std::io::Error::other(e)))?;
        match copied {
            // What a stat would say (a disk has no ETag), from the copy's own descriptor.
            Ok(meta) => Ok(ObjectInfo {
                key: key.to_string(),
                size: meta.len(),
                etag: None,
                modified: Some(crate::platform::file::mtime_ns(&meta).div_euclid(1_000_000_000)),
                sha256: None,
            }),
            Err(super::disk::CopyError::Source(e)) => Err(source(e)),
            Err(super::disk::CopyError::Dest(at, e)) => {
                Err(StoreError::local(&self.info, "put", key, &at, e))
            }
        }
    }
}

#[async_trait]
impl Stage for OpendalStage {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError> {
        crate::store::confine(&self.info, "put", key)?;
        let source = |e: std::io::Error| self.source_err(key, path, e);
        if let (Some(root), None) = (&self.local_root, &self.pacer) {
            return self.copy_to_disk(root, key, path, size, sha256, true).await;
        }
        let changed =
            |what: String| source(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
        let mut file = tokio::fs::File::open(path).await.map_err(source)?;
        let mut w = self.op.writer_with(key);
        // Parts are for services that take a large object in pieces; a local disk takes each
        // read as it comes, so nothing of the file is held in memory (with 64 MiB parts, two
        // in flight, a large file or the manifest snapshot held up to ~200 MB).
        if self.local_root.is_none() {
            w = w.chunk(CHUNK).concurrent(2);
        }
        if self.metadata {
            w = w.user_metadata([("sha256".to_string(), hex::encode(sha256))]);
        }
        let mut w = w.await.map_err(|e| self.err("put", key, e))?;
        let mut md5 = Md5::new();
        let mut sha = Sha256::new();
        let mut qxh = self
            .hashes
            .as_ref()
            .is_some_and(|h| matches!(h, ProviderHashes::Graph(_)))
            .then(QuickXor::new);
        let mut sent = 0u64;
        let mut buf = vec![0u8; READ_BUF];
        let failure = loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(source(e)),
            };
            md5.update(&buf[..n]);
            sha.update(&buf[..n]);
            if let Some(q) = &mut qxh {
                q.update(&buf[..n]);
            }
            sent += n as u64;
            if let Err(e) = w.write(buf[..n].to_vec()).await {
                break Some(self.err("put", key, e));
            }
            if let Some(p) = &self.pacer {
                p.pace(n as u64).await;
            }
        };
        let failure = failure.or_else(|| {
            if sent != size {
                Some(changed(format!(
                    "{} is {sent} bytes now but {size} when scanned: it changed since the scan",
                    path.display()
                )))
            } else if <[u8; 32]>::from(sha.clone().finalize()) != *sha256 {
                Some(changed(format!(
                    "{} changed since it was scanned (its content differs)",
                    path.display()
                )))
            } else {
                None
            }
        });
        if let Some(e) = failure {
            // Abort before close: the object never appears with bytes the manifest does not
            // describe. Some backends (a local disk) leave what was written so far under the
            // name: remove it, so an aborted upload leaves nothing behind.
            let _ = w.abort().await;
            let _ = self.op.delete(key).await;
            return Err(e);
        }
        let closed = w.close().await.map_err(|e| self.err("put", key, e))?;
        self.durable(key)?;
        let md5 = hex::encode(md5.finalize());
        if let Some(h) = &self.hashes {
            let sums = [
                ("sha256", hex::encode(sha256)),
                ("md5", md5.clone()),
                ("quickxor", qxh.map(|q| q.base64()).unwrap_or_default()),
            ];
            return self.verify_provider_sum(h, key, size, sums).await;
        }
        let md5_etag = self.info.capabilities.checksum == ChecksumKind::Md5Etag;
        // A single-part upload's ETag is the MD5 of the bytes, computed by the server: when
        // the PUT's answer carries it, that is the whole verification, with no HEAD.
        if md5_etag {
            if let Some(etag) = closed.etag().map(|e| e.trim_matches('"')) {
                if !etag.contains('-') {
                    if !etag.eq_ignore_ascii_case(&md5) {
                        return Err(StoreError::check(
                            &self.info,
                            "verify",
                            key,
                            format!("server MD5 {etag} differs from the uploaded bytes' {md5}"),
                        ));
                    }
                    return Ok(ObjectInfo {
                        key: key.to_string(),
                        size,
                        etag: Some(etag.to_string()),
                        modified: Some(crate::manifest::now()),
                        sha256: self.metadata.then(|| hex::encode(sha256)),
                    });
                }
            }
        }
        let got = self
            .stat(key)
            .await?
            .ok_or_else(|| StoreError::missing_after_write(&self.info, key))?;
        if got.size != size {
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                format!("server holds {} bytes, sent {size}", got.size),
            ));
        }
        if md5_etag {
            // Multipart ETags ("…-N") are not MD5s; the server checked those part by part.
            if let Some(etag) = got.etag.as_deref().filter(|e| !e.contains('-')) {
                if !etag.eq_ignore_ascii_case(&md5) {
                    return Err(StoreError::check(
                        &self.info,
                        "verify",
                        key,
                        format!("server MD5 {etag} differs from the uploaded bytes' {md5}"),
                    ));
                }
            }
        }
        Ok(got)
    }

    async fn put_file_unsettled(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError> {
        crate::store::confine(&self.info, "put", key)?;
        match (&self.local_root, &self.pacer) {
            (Some(root), None) => {
                self.copy_to_disk(root, key, path, size, sha256, false)
                    .await
            }
            _ => self.put_file(key, path, size, sha256).await,
        }
    }

    async fn settle(&self) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let at = root.clone();
        tokio::task::spawn_blocking(move || super::disk::settle(&at))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| StoreError::local(&self.info, "sync", "stage/", root, e))
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectInfo, StoreError> {
        crate::store::confine(&self.info, "put", key)?;
        let size = bytes.len() as u64;
        if self.op.info().capability().rename && self.hashes.is_none() {
            // A folder-like store (disk, SFTP, WebDAV) writes in place: a kill mid-write
            // would leave a cut object under the real name (a cut site mark stops the
            // site), so the bytes go to a partial name first and are renamed over.
            let partial = format!("{key}.partial");
            self.op
                .write(&partial, bytes.clone())
                .await
                .map_err(|e| self.err("put", key, e))?;
            // SFTP's rename refuses an existing target.
            match self.op.delete(key).await {
                Ok(()) => {}
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("put", key, e)),
            }
            self.op
                .rename(&partial, key)
                .await
                .map_err(|e| self.err("put", key, e))?;
        } else {
            self.op
                .write(key, bytes.clone())
                .await
                .map_err(|e| self.err("put", key, e))?;
        }
        self.durable(key)?;
        if self.read_range(key, 0..size).await? != bytes {
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                "the stored bytes differ from the ones written".into(),
            ));
        }
        self.stat(key)
            .await?
            .ok_or_else(|| StoreError::missing_after_write(&self.info, key))
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        crate::store::confine(&self.info, "stat", key)?;
        if let Some(h) = &self.hashes {
            // OpenDAL's own look first, as for a listing: lomob's call then reuses its token.
            match self.op.stat(key).await {
                Ok(_) => {}
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.err("stat", key, e)),
            }
            return h
                .stat(&self.op, key)
                .await
                .map_err(|e| self.err("stat", key, e));
        }
        match self.op.stat(key).await {
            Ok(m) => Ok(Some(ObjectInfo::from_opendal(key, &m))),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        crate::store::confine(&self.info, "list", prefix)?;
        if let Some(h) = &self.hashes {
            // OpenDAL's own look first: it signs a request, so lomob's calls reuse its
            // access token instead of fetching another, and a missing folder is no error.
            match self.op.stat(prefix).await {
                Ok(_) => {}
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(self.err("list", prefix, e)),
            }
            return h
                .list(&self.op, prefix)
                .await
                .map_err(|e| self.err("list", prefix, e));
        }
        list_objects(&self.op, &self.info, prefix).await
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        crate::store::confine(&self.info, "read", key)?;
        let b = self
            .op
            .read_with(key)
            .range(range)
            .await
            .map_err(|e| self.err("read", key, e))?;
        Ok(b.to_vec())
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64), StoreError> {
        crate::store::confine(&self.info, "download", key)?;
        use futures::TryStreamExt;
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let local = |e: std::io::Error| StoreError::local(&self.info, "download", key, dest, e);
        let mut stream = object_stream(&self.op, &self.info, "read", key, READ_BUF).await?;
        let mut out = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut sha = Sha256::new();
        let mut len = 0u64;
        while let Some(b) = stream
            .try_next()
            .await
            .map_err(|e| StoreError::stream(&self.info, "read", key, e))?
        {
            sha.update(&b);
            len += b.len() as u64;
            out.write_all(&b).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        Ok((sha.finalize().into(), len))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        crate::store::confine(&self.info, "delete", key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;
    use lomob_backends::fs::FsConfig;
    use lomob_backends::{BackendConfig, TransferConfig};

    /// Keys may come from an imported manifest: every operation refuses one that could
    /// leave the stage's root, before it reaches the backend.
    #[tokio::test]
    async fn keys_that_could_escape_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stage");
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, b"not the stage's").unwrap();
        let config = BackendConfig::Fs(FsConfig {
            root: root.clone(),
            verify_read_back: false,
        });
        let op = config.operator(&TransferConfig::default()).unwrap();
        let info = BackendInfo {
            site: "t".into(),
            role: Role::Stage,
            kind: "fs",
            capabilities: config.capabilities(),
            location: root.display().to_string(),
        };
        let stage = OpendalStage::new(op, info, None);
        for key in ["../secret.txt", "stage/../../secret.txt", "/etc/passwd"] {
            let e = stage.delete(key).await.unwrap_err().to_string();
            assert!(e.contains("refused"), "{key}: {e}");
            assert!(stage.stat(key).await.is_err(), "{key}");
            assert!(stage.read_range(key, 0..3).await.is_err(), "{key}");
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"not the stage's");
    }
}
