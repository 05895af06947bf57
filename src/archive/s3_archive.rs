//! [`Archive`] for the `s3` and `glacier` kinds, over our signed S3 client: multipart
//! uploads that resume after the process dies, HEAD with storage class and restore state,
//! and RestoreObject for the thaw.

use std::ops::Range;

use async_trait::async_trait;
use lomob_backends::s3::client::{ObjectHead, RestoreOutcome, RestoreState, S3Client};
use lomob_backends::s3::upload::{find_orphans, upload, Shape, UploadProgress};
use lomob_backends::source::read_digests;

use lomob_backends::ErrorKind;
use lomob_backends::StorageClass;

use super::{
    Archive, ArchiveObject, PutOutcome, PutRequest, Stored, ThawRequest, ThawState, ThawTier,
    UploadJournal, Verification,
};
use crate::store::{BackendInfo, ObjectInfo, StoreError};

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

    fn object(&self, key: &str, o: &ObjectHead) -> ArchiveObject {
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
            info: o.to_info(key),
            fingerprint: o.metadata.get("fingerprint").cloned(),
            part_size: o.metadata.get("part-size").and_then(|p| p.parse().ok()),
            storage_class: Some(o.storage_class.clone()),
            thaw,
        }
    }
}

#[async_trait]
impl Archive for S3Archive {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        crate::store::confine(&self.info, "put", req.key)?;
        let (key, len) = (req.key, req.source.len());
        if let Some(existing) = self.stat(key).await? {
            // Stored by a run killed before it could record it, or someone else's.
            return self.settle_existing(&req, existing).await;
        }
        let resuming = req
            .journal
            .load(key)
            .map_err(|e| self.err("put", key, e))?
            .is_some();
        // One streamed PUT when allowed (the fewest requests), else resumable parts.
        let single = len <= self.client.single_put_max() && !resuming && !req.multipart_only;
        let part_size = if single { len } else { self.client.part_size() };
        let report = |p: &UploadProgress| (req.progress)(p.bytes_done);
        let metadata = [("fingerprint".to_string(), req.fingerprint.to_string())];
        let shape = if req.multipart_only {
            Shape::AlwaysParts
        } else {
            Shape::OnePutWhenItFits
        };
        let out = upload(
            &self.client,
            key,
            req.source.clone(),
            part_size,
            &metadata,
            req.journal,
            &report,
            shape,
        )
        .await
        .map_err(|e| self.err("put", key, e))?;
        let got = self
            .stat(key)
            .await?
            .ok_or_else(|| StoreError::missing_after_write(&self.info, key))?;
        self.check_stored(key, len, req.fingerprint, &got)?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&out.sha256, &mut sha256)
            .map_err(|e| StoreError::check(&self.info, "verify", key, format!("internal: {e}")))?;
        let verification =
            etag_verification(&out.etag, &out.computed_etag, out.upload_id.is_some());
        Ok(PutOutcome::Stored(Stored {
            object: got,
            sha256,
            verification,
        }))
    }

    async fn put_index(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        crate::store::confine(&self.info, "put", key)?;
        use md5::Digest as _;
        let md5 = hex::encode(md5::Md5::digest(&bytes));
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        if let Some(existing) = self.stat(key).await? {
            // Only the server's MD5 of what it holds shows the bytes are these.
            if existing.info.size == bytes.len() as u64
                && existing.info.etag.as_deref() == Some(md5.as_str())
            {
                return Ok(PutOutcome::Stored(Stored {
                    object: existing,
                    sha256: digest,
                    verification: Verification::ServerChecksum,
                }));
            }
            return Ok(PutOutcome::Occupied {
                existing,
                reason: "it holds other bytes (its ETag is not the MD5 of this catalog)".into(),
            });
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
        let etag = Some(lomob_backends::object::unquote(&etag));
        if etag.as_deref().is_some_and(|e| e.len() == 32 && e != md5) {
            return Err(StoreError::check(
                &self.info,
                "verify",
                key,
                format!("the server's ETag {etag:?} is not the MD5 {md5} of the bytes sent"),
            ));
        }
        // Sent with Content-MD5, which the server checks before storing (also in a KMS
        // bucket, whose ETag is not the MD5).
        let verification = Verification::ServerChecksum;
        Ok(PutOutcome::Stored(Stored {
            object: ArchiveObject {
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
                part_size: None,
            },
            sha256: digest,
            verification,
        }))
    }

    async fn verify_in_place(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        crate::store::InPlace::ask(&self.client, &self.info, key).await
    }

    async fn stat(&self, key: &str) -> Result<Option<ArchiveObject>, StoreError> {
        crate::store::confine(&self.info, "stat", key)?;
        match self.client.head_object(key).await {
            Ok(o) => Ok(Some(self.object(key, &o))),
            Err(e) if e.kind() == ErrorKind::NotFound && e.s3_code() != Some("NoSuchBucket") => {
                Ok(None)
            }
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        crate::store::confine(&self.info, "list", prefix)?;
        crate::store::list_objects(&self.op, &self.info, prefix).await
    }

    async fn request_thaw(
        &self,
        key: &str,
        days: u32,
        tier: ThawTier,
    ) -> Result<ThawRequest, StoreError> {
        crate::store::confine(&self.info, "thaw", key)?;
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
        crate::store::confine(&self.info, "read", key)?;
        self.client
            .get_object(key, Some(range))
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
        self.client
            .get_object(key, None)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        crate::store::confine(&self.info, "delete", key)?;
        self.client
            .delete_object(key)
            .await
            .map_err(|e| self.err("delete", key, e))
    }

    async fn abort_upload(&self, key: &str, journal: &dyn UploadJournal) -> Result<(), StoreError> {
        crate::store::confine(&self.info, "abort upload", key)?;
        let jerr = |e| self.err("abort upload", key, e);
        if let Some(state) = journal.load(key).map_err(jerr)? {
            match self
                .client
                .abort_multipart_upload(key, &state.upload_id)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(jerr(e)),
            }
            tracing::info!(
                "site {}: abandoned the unfinished upload of {key} (no run will continue it)",
                self.info.site
            );
        }
        journal.clear(key).map_err(jerr)
    }

    async fn abort_orphans(
        &self,
        owned: &(dyn for<'k> Fn(&'k str) -> bool + Sync),
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError> {
        let prefix = crate::keys::ARCHIVE;
        let orphans = match find_orphans(&self.client, prefix, journal).await {
            Ok(o) => o,
            // rclone serve s3 answers an empty bucket's listing this way: nothing is open.
            Err(e) if e.s3_code() == Some("NoSuchUpload") => Vec::new(),
            Err(e) => return Err(self.err("list uploads", prefix, e)),
        };
        let mut n = 0;
        for o in orphans.iter().filter(|o| owned(&o.key)) {
            tracing::warn!(
                "site {}: aborting unfinished upload of {} left by an earlier run",
                self.info.site,
                o.key
            );
            self.client
                .abort_multipart_upload(&o.key, &o.upload_id)
                .await
                .map_err(|e| self.err("abort upload", &o.key, e))?;
            n += 1;
        }
        Ok(n)
    }
}

impl S3Archive {
    /// An object already holds `req.key`: it is ours and done only when the server's ETag
    /// equals the one computed from the source; otherwise it is occupied.
    async fn settle_existing(
        &self,
        req: &PutRequest<'_>,
        existing: ArchiveObject,
    ) -> Result<PutOutcome, StoreError> {
        let key = req.key;
        let len = req.source.len();
        let occupied = |reason: String| PutOutcome::Occupied {
            existing: existing.clone(),
            reason,
        };
        if existing.info.size != len {
            return Ok(occupied(format!(
                "it holds {} bytes, the image {len}",
                existing.info.size
            )));
        }
        if existing.fingerprint.as_deref() != Some(req.fingerprint) {
            return Ok(occupied(
                "its fingerprint metadata is not this image's (another image, or another program's object)".into(),
            ));
        }
        let part_size = existing
            .part_size
            .unwrap_or_else(|| self.client.part_size());
        let digests = read_digests(req.source.clone(), key, Some(part_size))
            .await
            .map_err(|e| self.err("verify", key, e))?;
        let etag = existing.info.etag.clone().unwrap_or_default();
        // One PUT's ETag is the MD5 (and rclone reports a multipart object's whole MD5 on
        // HEAD); a multipart object's is the MD5 of its parts' MD5s.
        let matches = if is_md5_hex(&etag) {
            digests
                .md5
                .is_some_and(|m| etag.eq_ignore_ascii_case(&hex::encode(m)))
        } else {
            etag.contains('-')
                && Some(etag.as_str())
                    == digests
                        .multipart_etag
                        .as_deref()
                        .map(|e| e.trim_matches('"'))
        };
        if !matches {
            return Ok(occupied(format!(
                "its ETag {etag:?} is neither the MD5 nor the multipart ETag of the image (an upload that was never verified, or other bytes)"
            )));
        }
        if let Err(e) = self.check_stored(key, len, req.fingerprint, &existing) {
            return Ok(occupied(e.to_string()));
        }
        // An interrupted run's upload, finished and shown to hold these bytes.
        req.journal
            .clear(key)
            .map_err(|e| self.err("put", key, e))?;
        Ok(PutOutcome::Stored(Stored {
            object: existing,
            sha256: digests.sha256,
            verification: Verification::ServerChecksum,
        }))
    }

    /// What HEAD must say after a put: the size sent, this fingerprint, the site's class.
    fn check_stored(
        &self,
        key: &str,
        len: u64,
        fingerprint: &str,
        got: &ArchiveObject,
    ) -> Result<(), StoreError> {
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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::check(
                &self.info,
                "verify",
                key,
                problems.join("; "),
            ))
        }
    }
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How an upload's answer verifies it. A single PUT is verified when its ETag is the MD5
/// computed while sending (the upload driver has already refused an MD5-shaped ETag that
/// differs); a multipart upload when each part was checked by the server (Content-MD5) and
/// an MD5-based object ETag, if the server gives one, is the computed one.
fn etag_verification(etag: &str, computed: &str, multipart: bool) -> Verification {
    let etag = etag.trim_matches('"');
    let computed = computed.trim_matches('"');
    if multipart || etag.eq_ignore_ascii_case(computed) {
        Verification::ServerChecksum
    } else {
        Verification::Unverified(format!(
            "the server's ETag {etag:?} for the single PUT is not an MD5 (an SSE-KMS bucket, or a server with another ETag scheme), so nothing it computed can be compared; images here go up as parts checked by Content-MD5 from now on"
        ))
    }
}
