//! [`Archive`] for the `s3` and `glacier` kinds, over our signed S3 client: multipart
//! uploads that resume after the process dies, HEAD with storage class and restore state,
//! and RestoreObject for the thaw.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use lomob_backends::s3::client::{ObjectInfo as S3Object, RestoreOutcome, RestoreState, S3Client};
use lomob_backends::s3::upload::{find_orphans, upload_resumable, UploadProgress};

use super::{never_overwritten, read_digests};
use lomob_backends::glacier::StorageClass;
use lomob_backends::ErrorKind;

use super::{
    Archive, ArchiveObject, ByteSource, PutProgress, Stored, ThawRequest, ThawState, ThawTier,
    UploadJournal,
};
use crate::store::{unquote, BackendInfo, ObjectInfo, StoreError};

pub struct S3Archive {
    client: S3Client,
    /// OpenDAL's operator for the same bucket, for listing.
    op: opendal::Operator,
    info: BackendInfo,
}

impl S3Archive {
    pub fn new(client: S3Client, op: opendal::Operator, info: BackendInfo) -> Self {
        S3Archive { client, op, info }
    }

    pub fn client(&self) -> &S3Client {
        &self.client
    }

    fn err(&self, op: &'static str, key: &str, e: lomob_backends::BackendError) -> StoreError {
        StoreError::new(&self.info, op, key, e)
    }

    fn object(&self, key: &str, o: &S3Object) -> ArchiveObject {
        let thaw = if !o.is_frozen() && !matches!(o.restore, RestoreState::Restored { .. }) {
            ThawState::NotNeeded
        } else {
            match &o.restore {
                RestoreState::None => ThawState::Frozen,
                RestoreState::InProgress => ThawState::InProgress,
                RestoreState::Restored { expiry } => ThawState::Thawed {
                    expiry: expiry.clone(),
                },
            }
        };
        ArchiveObject {
            info: ObjectInfo {
                key: key.to_string(),
                size: o.size,
                etag: unquote(Some(&o.etag)),
                modified: o.last_modified.as_deref().and_then(http_date),
                sha256: o.metadata.get("sha256").cloned(),
            },
            fingerprint: o.metadata.get("fingerprint").cloned(),
            storage_class: Some(o.storage_class.clone()),
            thaw,
        }
    }
}

/// Unix seconds from an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
fn http_date(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

#[async_trait]
impl Archive for S3Archive {
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
        let len = source.len();
        let pending = journal
            .load(key)
            .map_err(|e| self.err("put", key, e))?
            .is_some();
        if let Some(existing) = self.stat(key).await? {
            let ours =
                existing.info.size == len && existing.fingerprint.as_deref() == Some(fingerprint);
            if ours {
                // Stored by a run killed before it could record it: read the source once for
                // its SHA-256 (which also checks every file), send nothing.
                let sha256 = read_digests(source.clone(), key, None)
                    .await
                    .map_err(|e| self.err("verify", key, e))?
                    .sha256;
                return Ok(Stored {
                    object: existing,
                    sha256,
                });
            }
            if !pending {
                return Err(never_overwritten(&self.info, key));
            }
        }
        // One streamed PUT when allowed (the fewest requests), else resumable parts.
        let part_size = if len <= self.client.single_put_max() && !pending {
            len
        } else {
            self.client.part_size()
        };
        let report = |p: &UploadProgress| progress(p.bytes_done);
        let out = upload_resumable(
            &self.client,
            key,
            source.clone(),
            part_size,
            &[("fingerprint".to_string(), fingerprint.to_string())],
            journal,
            &report,
        )
        .await
        .map_err(|e| self.err("put", key, e))?;
        let got = self.stat(key).await?.ok_or_else(|| {
            StoreError::check(
                &self.info,
                "verify",
                key,
                "missing right after upload".into(),
            )
        })?;
        let class = self.client.storage_class().as_str();
        let problems: Vec<String> = [
            (got.info.size != len)
                .then(|| format!("server holds {} bytes, sent {len}", got.info.size)),
            (got.fingerprint.as_deref() != Some(fingerprint))
                .then(|| "stored fingerprint metadata differs from the image's".to_string()),
            (got.storage_class.as_deref() != Some(class)).then(|| {
                format!(
                    "storage class is {}, expected {class}",
                    got.storage_class.as_deref().unwrap_or("unknown")
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                problems.join("; "),
            ));
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&out.sha256, &mut sha256)
            .map_err(|e| StoreError::check(&self.info, "verify", key, format!("internal: {e}")))?;
        Ok(Stored {
            object: got,
            sha256,
        })
    }

    async fn put_index(&self, key: &str, bytes: Vec<u8>) -> Result<ArchiveObject, StoreError> {
        use md5::Digest as _;
        let md5 = hex::encode(md5::Md5::digest(&bytes));
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        if let Some(existing) = self.stat(key).await? {
            if existing.info.size == bytes.len() as u64
                && (existing.info.sha256.as_deref() == Some(&sha)
                    || existing.info.etag.as_deref() == Some(&md5))
            {
                return Ok(existing);
            }
            return Err(never_overwritten(&self.info, key));
        }
        let size = bytes.len() as u64;
        // Hot, so that a machine with nothing but the profile can read every catalog at
        // once, without a thaw; a few hundred KB per image costs nothing.
        let hot = self.client.with_storage_class(StorageClass::Standard);
        let etag = hot
            .put_object(key, bytes, &[("sha256".to_string(), sha.clone())])
            .await
            .map_err(|e| self.err("put", key, e))?;
        // The server checked Content-MD5; its ETag says what it stored.
        let etag = unquote(Some(&etag));
        if etag.as_deref().is_some_and(|e| e.len() == 32 && e != md5) {
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                format!("the server's ETag {etag:?} is not the MD5 {md5} of the bytes sent"),
            ));
        }
        Ok(ArchiveObject {
            info: ObjectInfo {
                key: key.to_string(),
                size,
                etag,
                modified: None,
                sha256: Some(sha),
            },
            storage_class: Some(StorageClass::Standard.as_str().to_string()),
            thaw: ThawState::NotNeeded,
            fingerprint: None,
        })
    }

    async fn stat(&self, key: &str) -> Result<Option<ArchiveObject>, StoreError> {
        match self.client.head_object(key).await {
            Ok(o) => Ok(Some(self.object(key, &o))),
            Err(e) if e.kind() == ErrorKind::NotFound && e.s3_code() != Some("NoSuchBucket") => {
                Ok(None)
            }
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        crate::store::list_objects(&self.op, &self.info, prefix).await
    }

    async fn request_thaw(
        &self,
        key: &str,
        days: u32,
        tier: ThawTier,
    ) -> Result<ThawRequest, StoreError> {
        if !self.client.storage_class().needs_thaw() {
            return Ok(ThawRequest::NotNeeded);
        }
        match self.client.restore_object(key, days, tier).await {
            Ok(RestoreOutcome::Accepted) => Ok(ThawRequest::Started),
            Ok(RestoreOutcome::InProgress) => Ok(ThawRequest::AlreadyInProgress),
            Ok(RestoreOutcome::AlreadyRestored) => Ok(ThawRequest::AlreadyThawed),
            Err(e) => Err(self.err("thaw", key, e)),
        }
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.client
            .get_object(key, Some(range))
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object(key)
            .await
            .map_err(|e| self.err("delete", key, e))
    }

    async fn abort_orphans(
        &self,
        prefix: &str,
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError> {
        let orphans = match find_orphans(&self.client, prefix, journal).await {
            Ok(o) => o,
            // rclone serve s3 answers an empty bucket's listing this way: nothing is open.
            Err(e) if e.s3_code() == Some("NoSuchUpload") => Vec::new(),
            Err(e) => return Err(self.err("list uploads", prefix, e)),
        };
        for o in &orphans {
            tracing::warn!(
                "site {}: aborting unfinished upload of {} left by an earlier run",
                self.info.site,
                o.key
            );
            self.client
                .abort_multipart_upload(&o.key, &o.upload_id)
                .await
                .map_err(|e| self.err("abort upload", &o.key, e))?;
        }
        Ok(orphans.len())
    }
}
