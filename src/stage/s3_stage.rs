//! [`Stage`] for the `s3` kind: uploads through our signed client, so every staged object is
//! verified by a checksum the server computed, whatever its size and the bucket's
//! encryption.
//!
//! OpenDAL's writer sends files over 64 MiB as a multipart upload whose result it checks by
//! size only, and the ETag of an SSE-KMS bucket is not an MD5. Here:
//! - a file up to `single-put-max` is one streamed PUT whose ETag must be the MD5 computed
//!   while sending; the file's SHA-256, known from the scan, rides along as
//!   `x-amz-checksum-sha256` (a server that supports it, AWS, refuses other bytes). When the
//!   ETag is not an MD5 (SSE-KMS), the object is read back and its SHA-256 compared;
//! - a larger file goes up in parts, each checked by the server against its Content-MD5
//!   and by its ETag, the whole by the multipart ETag; a failed upload is aborted, and one
//!   a crash leaves open is aborted by the next run ([`Stage::abort_orphans`]).
//!
//! The file is checked against its scanned SHA-256 while it streams, before its last byte
//! is handed to the upload, so a file that changed since the scan is never stored. Reads,
//! listings and deletes go through OpenDAL ([`OpendalStage`]).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use lomob_backends::journal::{UploadJournal, UploadState};
use lomob_backends::s3::upload::{put_streamed, upload_in_parts};
use lomob_backends::s3::S3Client;
use lomob_backends::BackendError;
use sha2::{Digest, Sha256};

use super::checked::CheckedFile;
use super::opendal_stage::OpendalStage;
use super::Stage;
use crate::archive::ByteSource;
use crate::store::{confine, BackendInfo, ObjectInfo, StoreError};

pub struct S3Stage {
    client: S3Client,
    inner: OpendalStage,
}

impl S3Stage {
    pub fn new(client: S3Client, inner: OpendalStage) -> Self {
        S3Stage { client, inner }
    }

    fn err(&self, op: &'static str, key: &str, e: BackendError) -> StoreError {
        StoreError::new(self.inner.info(), op, key, e)
    }

    /// Reads the object back and compares its SHA-256: for a PUT whose ETag is not an MD5.
    async fn read_back(&self, key: &str, sha256: &[u8; 32]) -> Result<(), StoreError> {
        let tmp = tempfile::NamedTempFile::new().map_err(|e| {
            StoreError::local(self.inner.info(), "verify", key, Path::new("<temp>"), e)
        })?;
        let (got, _) = self.inner.download(key, tmp.path()).await?;
        if got != *sha256 {
            let _ = self.inner.delete(key).await;
            return Err(StoreError::check(
                self.info(),
                "verify",
                key,
                "the object read back is not the bytes sent; it was removed and the next run sends it again".into(),
            ));
        }
        Ok(())
    }
}

/// The journal of one stage upload: stage uploads are never resumed (a file is sent again
/// whole), so it lives in memory, only to abort the upload when it fails.
#[derive(Default)]
struct OneUpload(std::sync::Mutex<Option<UploadState>>);

impl UploadJournal for OneUpload {
    fn load(&self, key: &str) -> Result<Option<UploadState>, BackendError> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.clone().filter(|s| s.key == key))
    }

    fn save(&self, state: &UploadState) -> Result<(), BackendError> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(state.clone());
        Ok(())
    }

    fn clear(&self, _key: &str) -> Result<(), BackendError> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    fn list(&self) -> Result<Vec<UploadState>, BackendError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .into_iter()
            .collect())
    }
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait]
impl Stage for S3Stage {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError> {
        confine(self.info(), "put", key)?;
        let source: Arc<dyn ByteSource> = Arc::new(CheckedFile {
            path: path.to_path_buf(),
            size,
            sha256: *sha256,
        });
        let metadata = [("sha256".to_string(), hex::encode(sha256))];
        let etag = if size <= self.client.single_put_max() {
            // put_streamed has refused an MD5-shaped ETag that is not the MD5 sent.
            let (put, _) =
                put_streamed(&self.client, key, source, &metadata, Some(*sha256), &|_| {})
                    .await
                    .map_err(|e| self.err("put", key, e))?;
            let etag = put.etag.trim_matches('"').to_string();
            if !is_md5_hex(&etag) || put.kms {
                self.read_back(key, sha256).await?;
            }
            etag
        } else {
            let journal = OneUpload::default();
            let out = upload_in_parts(
                &self.client,
                key,
                source,
                self.client.part_size(),
                &metadata,
                &journal,
                &|_| {},
            )
            .await;
            match out {
                Ok(o) => o.etag.trim_matches('"').to_string(),
                Err(e) => {
                    // Never left open: a stage upload is sent again whole next time.
                    if let Some(s) = journal.list().ok().and_then(|l| l.into_iter().next()) {
                        let _ = self.client.abort_multipart_upload(key, &s.upload_id).await;
                    }
                    return Err(self.err("put", key, e));
                }
            }
        };
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            etag: Some(etag),
            modified: Some(crate::manifest::now()),
            sha256: Some(hex::encode(sha256)),
        })
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectInfo, StoreError> {
        confine(self.info(), "put", key)?;
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let md5 = hex::encode(<md5::Md5 as Digest>::digest(&bytes));
        let size = bytes.len() as u64;
        // Sent with Content-MD5, which the server checks before storing.
        let etag = self
            .client
            .put_object(key, bytes, &[("sha256".to_string(), hex::encode(sha))])
            .await
            .map_err(|e| self.err("put", key, e))?;
        let etag = etag.trim_matches('"').to_string();
        if is_md5_hex(&etag) && !etag.eq_ignore_ascii_case(&md5) {
            return Err(StoreError::check(
                self.info(),
                "verify",
                key,
                format!("the server's ETag {etag} is not the MD5 {md5} of the bytes sent"),
            ));
        }
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            etag: Some(etag),
            modified: Some(crate::manifest::now()),
            sha256: Some(hex::encode(sha)),
        })
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.read_range(key, range).await
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64), StoreError> {
        self.inner.download(key, dest).await
    }

    async fn verify_in_place(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        crate::store::InPlace::ask(&self.client, self.inner.info(), key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn abort_orphans(&self) -> Result<u64, StoreError> {
        // Stage uploads are never continued: any open one under `stage/` was left by a
        // crash. Only names in the stage's own format are touched.
        let prefix = crate::keys::STAGE;
        let open = match self.client.list_multipart_uploads(prefix).await {
            Ok(o) => o,
            Err(e) if e.s3_code() == Some("NoSuchUpload") => Vec::new(),
            Err(e) => return Err(self.err("list uploads", prefix, e)),
        };
        let mut n = 0;
        for u in open.iter().filter(|u| crate::keys::is_stage_key(&u.key)) {
            self.client
                .abort_multipart_upload(&u.key, &u.upload_id)
                .await
                .map_err(|e| self.err("abort upload", &u.key, e))?;
            n += 1;
        }
        Ok(n)
    }
}
