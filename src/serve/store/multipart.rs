//! Multipart uploads: how lomob sends anything large, part by part, each part checked by
//! its Content-MD5, resumable after a crash of either side.
//!
//! An upload is a folder `uploads/<id>/` with `upload.json` (key, metadata, the whole-object
//! SHA-256 if the sender declared one) and, per part, a data file `pNNNNN-<random>.bin` plus
//! `pNNNNN.json` naming it. As for objects, the JSON rename is the commit, so a part
//! replaced by a re-send is the old or the new one, never a mix. Complete assembles the
//! parts into an ordinary blob (computing the real whole-object SHA-256, which HEAD then
//! reports) and commits it like a PUT.

use bytes::Bytes;
use futures::Stream;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::blob::{self, blocking, remove_quietly, sync_dir, write_atomic, Received};
use super::{
    append_only, declared_sha256, keys, now_ms, parse_sha256_hex, Bucket, Declared, Inflight,
    ObjectMeta, ObjectStore, StoreError,
};

/// Highest part number S3 allows.
const MAX_PART_NUMBER: u32 = 10_000;

/// `upload.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct UploadRecord {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    created_ms: i64,
    /// Whole-object SHA-256 (hex) declared at creation (lomob's `sha256` metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// The size of every part but the last, when the sender declared it (lomob's
    /// `part-size` metadata): each part is then written in place in one data file, so
    /// Complete neither copies nor syncs the object a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part_size: Option<u64>,
}

/// The data file of an upload whose parts are written in place.
const IN_PLACE: &str = "inplace.bin";

/// `pNNNNN.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartRecord {
    /// Data file name inside the upload folder.
    data: String,
    /// Where the part starts in [`IN_PLACE`], for an upload with a part size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    size: u64,
    md5: String,
    sha256: String,
    last_modified_ms: i64,
}

/// Unfinished uploads by (key, upload id).
pub(super) type Uploads = BTreeMap<(String, String), Upload>;

/// An unfinished upload, in memory.
pub(super) struct Upload {
    record: UploadRecord,
    parts: BTreeMap<u32, PartRecord>,
    /// Set while a Complete assembles the parts; other changes wait for it.
    completing: bool,
    /// Parts being written in place right now: Complete waits for them, so no late write
    /// lands in the data file once it is the object's blob.
    writers: u32,
}

impl Upload {
    pub(super) fn bytes(&self) -> u64 {
        self.parts.values().map(|p| p.size).sum()
    }
}

/// One received part, as ListParts reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    /// MD5 hex (the part's ETag without quotes).
    pub etag: String,
    /// SHA-256 hex of the part.
    pub sha256: String,
    pub last_modified_ms: i64,
}

/// A page of ListParts.
#[derive(Clone, Debug, Default)]
pub struct PartsPage {
    pub parts: Vec<PartInfo>,
    pub truncated: bool,
    pub next_marker: Option<u32>,
}

/// One unfinished upload, as ListMultipartUploads reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    pub created_ms: i64,
}

/// A page of ListMultipartUploads.
#[derive(Clone, Debug, Default)]
pub struct UploadsPage {
    pub uploads: Vec<UploadInfo>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// A new upload.
#[derive(Clone, Debug, Default)]
pub struct CreateUpload {
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Ids are ours (32 hex); anything else cannot name an upload, and must not reach a path.
fn valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn part_json(n: u32) -> String {
    format!("p{n:05}.json")
}

fn no_upload(key: &str, upload_id: &str) -> StoreError {
    StoreError::NoSuchUpload {
        key: key.to_owned(),
        upload_id: upload_id.to_owned(),
    }
}

impl ObjectStore {
    /// Starts a multipart upload of `req.key`; returns its id. A `sha256` metadata value
    /// (hex) is the whole-object digest Complete will check.
    pub async fn create_upload(
        &self,
        bucket: &str,
        req: CreateUpload,
    ) -> Result<String, StoreError> {
        let b = self.bucket(bucket)?;
        keys::check_key(&req.key).map_err(|reason| StoreError::InvalidKey {
            key: req.key.clone(),
            reason,
        })?;
        let sha256 = match req.metadata.get("sha256") {
            Some(h) => Some(hex::encode(parse_sha256_hex(h).ok_or_else(|| {
                StoreError::InvalidDigest {
                    key: req.key.clone(),
                    header: "sha256 metadata",
                    declared: h.clone(),
                }
            })?)),
            None => None,
        };
        let part_size = req
            .metadata
            .get("part-size")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|p| (1..=5 << 30).contains(p));
        let id = blob::random_name();
        let record = UploadRecord {
            key: req.key.clone(),
            content_type: req.content_type,
            metadata: req.metadata,
            created_ms: now_ms(),
            sha256,
            part_size,
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| StoreError::io("encoding an upload", io::Error::other(e)))?;
        let (uploads, dir) = (b.uploads(), b.uploads().join(&id));
        blocking(move || {
            std::fs::create_dir(&dir)?;
            write_atomic(&dir, "upload.json", &json)?;
            sync_dir(&uploads)
        })
        .await
        .map_err(|e| StoreError::io(format!("starting an upload of {:?}", req.key), e))?;
        b.state().uploads.insert(
            (req.key, id.clone()),
            Upload {
                record,
                parts: BTreeMap::new(),
                completing: false,
                writers: 0,
            },
        );
        Ok(id)
    }

    /// Receives part `part_number` of an upload, verified against its declared digest and
    /// within the quota; a part with that number already received is replaced.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_part<S, E>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        content_length: Option<u64>,
        declared: &Declared,
        quota: Option<u64>,
        body: S,
    ) -> Result<PartInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let b = self.bucket(bucket)?;
        if !valid_upload_id(upload_id) {
            return Err(no_upload(key, upload_id));
        }
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(StoreError::InvalidPart {
                key: key.to_owned(),
                reason: format!("part number {part_number} is outside 1 to {MAX_PART_NUMBER}"),
            });
        }
        if declared.is_empty() {
            return Err(StoreError::DigestRequired {
                key: key.to_owned(),
            });
        }
        let (credit, part_size) = self.upload_busy_check(&b, key, upload_id, |u| {
            (
                u.parts.get(&part_number).map_or(0, |p| p.size),
                u.record.part_size,
            )
        })?;
        if let Some(size) = part_size {
            return self
                .put_part_in_place(
                    &b,
                    key,
                    upload_id,
                    part_number,
                    size,
                    content_length,
                    declared,
                    quota,
                    body,
                )
                .await;
        }
        let mut inflight = Inflight::new(&b, quota, credit);
        if let Some(len) = content_length {
            inflight.check(len)?;
        }
        let dir = b.uploads().join(upload_id);
        let data = format!("p{part_number:05}-{}.bin", blob::random_name());
        let tmp = dir.join(format!("{data}.tmp"));
        let got: Received = blob::receive(&tmp, body, content_length, &mut inflight, key).await?;
        if let Err(e) = declared.verify(key, &got) {
            remove_quietly(tmp).await;
            return Err(e);
        }
        let record = PartRecord {
            data: data.clone(),
            offset: None,
            size: got.len,
            md5: hex::encode(got.md5),
            sha256: hex::encode(got.sha256),
            last_modified_ms: now_ms(),
        };
        let _guard = b.commit.lock().await;
        // The upload may have been aborted or be completing while the part arrived.
        let old = match self
            .upload_busy_check(&b, key, upload_id, |u| u.parts.get(&part_number).cloned())
        {
            Ok(old) => old,
            Err(e) => {
                remove_quietly(tmp).await;
                return Err(e);
            }
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| StoreError::io("encoding a part", io::Error::other(e)))?;
        let (dir2, tmp2) = (dir.clone(), tmp.clone());
        let final_path = dir.join(&data);
        let committed = blocking(move || {
            std::fs::rename(&tmp2, &final_path)?;
            sync_dir(&dir2)?;
            write_atomic(&dir2, &part_json(part_number), &json)
        })
        .await;
        if let Err(e) = committed {
            remove_quietly(tmp).await;
            remove_quietly(dir.join(&data)).await;
            return Err(StoreError::io(
                format!("storing part {part_number} of {key:?}"),
                e,
            ));
        }
        {
            let mut st = b.state();
            st.inflight = st.inflight.saturating_sub(inflight.written);
            inflight.written = 0;
            st.upload_bytes =
                (st.upload_bytes + record.size).saturating_sub(old.as_ref().map_or(0, |p| p.size));
            if let Some(u) = st.uploads.get_mut(&(key.to_owned(), upload_id.to_owned())) {
                u.parts.insert(part_number, record.clone());
            }
        }
        if let Some(old) = old {
            remove_quietly(dir.join(old.data)).await;
        }
        Ok(PartInfo {
            part_number,
            size: record.size,
            etag: record.md5,
            sha256: record.sha256,
            last_modified_ms: record.last_modified_ms,
        })
    }

    /// [`Self::put_part`] for an upload with a part size: the part goes where it belongs in
    /// the upload's one data file. Its old record goes first, so a part being rewritten (or
    /// cut short by a crash) is never taken for the bytes it replaced.
    #[allow(clippy::too_many_arguments)]
    async fn put_part_in_place<S, E>(
        &self,
        b: &Arc<Bucket>,
        key: &str,
        upload_id: &str,
        part_number: u32,
        part_size: u64,
        content_length: Option<u64>,
        declared: &Declared,
        quota: Option<u64>,
        body: S,
    ) -> Result<PartInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let dir = b.uploads().join(upload_id);
        let _writer;
        {
            let _guard = b.commit.lock().await;
            let old =
                self.upload_busy_check(b, key, upload_id, |u| u.parts.get(&part_number).cloned())?;
            _writer = Writer::enter(b, key, upload_id);
            if let Some(old) = old {
                let record = dir.join(part_json(part_number));
                blocking(move || match std::fs::remove_file(&record) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
                .await
                .map_err(|e| {
                    StoreError::io(format!("replacing part {part_number} of {key:?}"), e)
                })?;
                let mut st = b.state();
                st.upload_bytes = st.upload_bytes.saturating_sub(old.size);
                if let Some(u) = st.uploads.get_mut(&(key.to_owned(), upload_id.to_owned())) {
                    u.parts.remove(&part_number);
                }
            }
        }
        let mut inflight = Inflight::new(b, quota, 0);
        if let Some(len) = content_length {
            inflight.check(len)?;
        }
        let offset = u64::from(part_number - 1) * part_size;
        let got: Received = blob::receive_at(
            &dir.join(IN_PLACE),
            offset,
            part_size,
            body,
            content_length,
            &mut inflight,
            key,
        )
        .await?;
        declared.verify(key, &got)?;
        let record = PartRecord {
            data: IN_PLACE.to_owned(),
            offset: Some(offset),
            size: got.len,
            md5: hex::encode(got.md5),
            sha256: hex::encode(got.sha256),
            last_modified_ms: now_ms(),
        };
        let _guard = b.commit.lock().await;
        self.upload_busy_check(b, key, upload_id, |_| ())?;
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| StoreError::io("encoding a part", io::Error::other(e)))?;
        let dir2 = dir.clone();
        blocking(move || write_atomic(&dir2, &part_json(part_number), &json))
            .await
            .map_err(|e| StoreError::io(format!("storing part {part_number} of {key:?}"), e))?;
        {
            let mut st = b.state();
            st.inflight = st.inflight.saturating_sub(inflight.written);
            inflight.written = 0;
            st.upload_bytes += record.size;
            if let Some(u) = st.uploads.get_mut(&(key.to_owned(), upload_id.to_owned())) {
                u.parts.insert(part_number, record.clone());
            }
        }
        Ok(PartInfo {
            part_number,
            size: record.size,
            etag: record.md5,
            sha256: record.sha256,
            last_modified_ms: record.last_modified_ms,
        })
    }

    /// Looks up an upload that is not being completed and applies `f` to it.
    fn upload_busy_check<T>(
        &self,
        b: &Bucket,
        key: &str,
        upload_id: &str,
        f: impl FnOnce(&Upload) -> T,
    ) -> Result<T, StoreError> {
        let st = b.state();
        let u = st
            .uploads
            .get(&(key.to_owned(), upload_id.to_owned()))
            .ok_or_else(|| no_upload(key, upload_id))?;
        if u.completing {
            return Err(StoreError::UploadBusy {
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
            });
        }
        Ok(f(u))
    }

    /// Assembles the listed parts (ascending, each with the ETag the sender got) into the
    /// object at `key`. `whole_sha256` (hex) is a whole-object digest declared on the
    /// Complete request; with the one declared at creation, every one given must match,
    /// else BadDigest and the upload stays so the sender can retry or abort.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        listed: &[(u32, String)],
        whole_sha256: Option<&str>,
        quota: Option<u64>,
    ) -> Result<ObjectMeta, StoreError> {
        let b = self.bucket(bucket)?;
        if !valid_upload_id(upload_id) {
            return Err(no_upload(key, upload_id));
        }
        if listed.is_empty() {
            return Err(StoreError::InvalidPart {
                key: key.to_owned(),
                reason: "the Complete request lists no parts".into(),
            });
        }
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(StoreError::InvalidPartOrder {
                key: key.to_owned(),
            });
        }
        let whole = match whole_sha256 {
            Some(h) => Some(hex::encode(parse_sha256_hex(h).ok_or_else(|| {
                StoreError::InvalidDigest {
                    key: key.to_owned(),
                    header: "whole-object SHA-256",
                    declared: h.to_owned(),
                }
            })?)),
            None => None,
        };
        // Pick the parts and mark the upload as completing, in one look.
        let (record, parts) = {
            let _guard = b.commit.lock().await;
            let mut st = b.state();
            let u = st
                .uploads
                .get_mut(&(key.to_owned(), upload_id.to_owned()))
                .ok_or_else(|| no_upload(key, upload_id))?;
            if u.completing {
                return Err(StoreError::UploadBusy {
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                });
            }
            let mut parts = Vec::with_capacity(listed.len());
            for (n, etag) in listed {
                let Some(p) = u.parts.get(n) else {
                    return Err(StoreError::InvalidPart {
                        key: key.to_owned(),
                        reason: format!(
                            "part {n} was not received (or was aborted); send it again"
                        ),
                    });
                };
                let etag = etag
                    .trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_ascii_lowercase();
                if etag != p.md5 {
                    return Err(StoreError::InvalidPart {
                        key: key.to_owned(),
                        reason: format!(
                            "part {n} has ETag \"{}\" here, not \"{etag}\"; send it again",
                            p.md5
                        ),
                    });
                }
                parts.push(p.clone());
            }
            u.completing = true;
            (u.record.clone(), parts)
        };
        // A part still being written (a retry the sender gave up on, say) must finish or
        // fail before the data file becomes the object.
        let upload = (key.to_owned(), upload_id.to_owned());
        let since = std::time::Instant::now();
        while b
            .state()
            .uploads
            .get(&upload)
            .is_some_and(|u| u.writers > 0)
        {
            if since.elapsed() > WRITERS_WAIT {
                if let Some(u) = b.state().uploads.get_mut(&upload) {
                    u.completing = false;
                }
                return Err(StoreError::UploadBusy {
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let result = self
            .assemble(&b, key, upload_id, record, parts, whole, quota)
            .await;
        if result.is_err() {
            let mut st = b.state();
            if let Some(u) = st.uploads.get_mut(&(key.to_owned(), upload_id.to_owned())) {
                u.completing = false;
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn assemble(
        &self,
        b: &Arc<Bucket>,
        key: &str,
        upload_id: &str,
        record: UploadRecord,
        parts: Vec<PartRecord>,
        whole: Option<String>,
        quota: Option<u64>,
    ) -> Result<ObjectMeta, StoreError> {
        if append_only(key) {
            let old = b.state().objects.get(key).map(|o| o.sha256.clone());
            let declared = whole.as_ref().or(record.sha256.as_ref());
            if let (Some(old), Some(declared)) = (old, declared) {
                if *declared != old {
                    return Err(StoreError::AppendOnly {
                        key: key.to_owned(),
                    });
                }
            }
        }
        let name = blob::random_name();
        let tmp = b.blobs().join(format!("{name}.tmp"));
        let blob_name = format!("{name}.blob");
        let final_path = b.blobs().join(&blob_name);
        let dir = b.uploads().join(upload_id);
        let count = parts.len();
        let mut etag_md5 = Md5::new();
        for p in &parts {
            let mut bin = [0u8; 16];
            hex::decode_to_slice(&p.md5, &mut bin)
                .map_err(|e| StoreError::io("reading a part record", io::Error::other(e)))?;
            etag_md5.update(bin);
        }
        let etag = format!("{}-{count}", hex::encode(etag_md5.finalize()));
        let (tmp2, blobs) = (tmp.clone(), b.blobs());
        let in_place = in_place_layout(key, record.part_size, &parts)?;
        let sealed_in_place = in_place.is_some();
        let expected = whole.clone().or_else(|| record.sha256.clone());
        let assembled = blocking(move || match in_place {
            Some(total) => seal_in_place(&dir, &parts, total, expected, &final_path, &blobs),
            None => concat(&dir, &parts, &tmp2, &final_path, &blobs),
        })
        .await;
        let (size, sha256) = match assembled {
            Ok(r) => r,
            Err(e) => {
                remove_quietly(tmp).await;
                remove_quietly(b.blobs().join(&blob_name)).await;
                return Err(StoreError::io(
                    format!("assembling the parts of {key:?}"),
                    e,
                ));
            }
        };
        let sha_hex = hex::encode(sha256);
        for (header, d) in [
            ("whole-object SHA-256", &whole),
            ("sha256 metadata", &record.sha256),
        ] {
            if let Some(d) = d.as_ref().filter(|d| **d != sha_hex) {
                remove_quietly(b.blobs().join(&blob_name)).await;
                return Err(StoreError::BadDigest {
                    key: key.to_owned(),
                    header,
                    declared: d.clone(),
                    computed: sha_hex.clone(),
                });
            }
        }
        let meta = ObjectMeta {
            key: key.to_owned(),
            blob: blob_name,
            size,
            sha256: sha_hex,
            etag,
            content_type: record.content_type,
            metadata: record.metadata,
            last_modified_ms: now_ms(),
            parts: Some(u32::try_from(count).unwrap_or(u32::MAX)),
        };
        let mut inflight = Inflight::new(b, quota, 0);
        let committed = self.commit(b, meta, &mut inflight, Some(upload_id)).await;
        if committed.is_err() && sealed_in_place {
            // The refused blob was the upload's data file: its parts are gone with it, and
            // ListParts must say so, so the sender sends them again.
            self.forget_parts(b, key, upload_id).await;
        }
        committed
    }

    /// Drops every part record of an upload (memory and disk).
    async fn forget_parts(&self, b: &Arc<Bucket>, key: &str, upload_id: &str) {
        let numbers: Vec<u32> = {
            let mut st = b.state();
            let Some(u) = st.uploads.get_mut(&(key.to_owned(), upload_id.to_owned())) else {
                return;
            };
            let dropped: u64 = u.parts.values().map(|p| p.size).sum();
            let numbers = u.parts.keys().copied().collect();
            u.parts.clear();
            st.upload_bytes = st.upload_bytes.saturating_sub(dropped);
            numbers
        };
        let dir = b.uploads().join(upload_id);
        for n in numbers {
            remove_quietly(dir.join(part_json(n))).await;
        }
    }

    /// Forgets an upload and removes its folder (after its completion or abort). Called with
    /// the bucket's commit lock held.
    pub(super) async fn finish_upload(&self, b: &Arc<Bucket>, key: &str, upload_id: &str) {
        {
            let mut st = b.state();
            if let Some(u) = st.uploads.remove(&(key.to_owned(), upload_id.to_owned())) {
                st.upload_bytes = st.upload_bytes.saturating_sub(u.bytes());
            }
        }
        // Renamed first so a half-removed folder is never mistaken for an upload; a `.tmp`
        // name is removed at the next start if this removal fails.
        let dir = b.uploads().join(upload_id);
        let gone = b.uploads().join(format!("{upload_id}.tmp-gone"));
        let removed = blocking(move || {
            std::fs::rename(&dir, &gone)?;
            std::fs::remove_dir_all(&gone)
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(upload_id, error = %e, "could not remove a finished upload's folder; the next start will");
        }
    }

    /// Aborts an upload: its parts are removed.
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let b = self.bucket(bucket)?;
        if !valid_upload_id(upload_id) {
            return Err(no_upload(key, upload_id));
        }
        let _guard = b.commit.lock().await;
        self.upload_busy_check(&b, key, upload_id, |_| ())?;
        self.finish_upload(&b, key, upload_id).await;
        Ok(())
    }

    /// Parts received for an upload, after part `marker`, at most `max` (1 to 1000).
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        marker: u32,
        max: usize,
    ) -> Result<PartsPage, StoreError> {
        let b = self.bucket(bucket)?;
        let st = b.state();
        let u = st
            .uploads
            .get(&(key.to_owned(), upload_id.to_owned()))
            .ok_or_else(|| no_upload(key, upload_id))?;
        let max = max.clamp(1, 1000);
        let mut page = PartsPage::default();
        for (&n, p) in u.parts.range(marker.saturating_add(1)..) {
            if page.parts.len() == max {
                page.truncated = true;
                page.next_marker = page.parts.last().map(|p| p.part_number);
                break;
            }
            page.parts.push(PartInfo {
                part_number: n,
                size: p.size,
                etag: p.md5.clone(),
                sha256: p.sha256.clone(),
                last_modified_ms: p.last_modified_ms,
            });
        }
        if !page.truncated {
            page.next_marker = page.parts.last().map(|p| p.part_number);
        }
        Ok(page)
    }

    /// Unfinished uploads under `prefix`, by key then id, after the markers, at most `max`.
    pub fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max: usize,
    ) -> Result<UploadsPage, StoreError> {
        let b = self.bucket(bucket)?;
        let st = b.state();
        let max = max.clamp(1, 1000);
        let mut page = UploadsPage::default();
        let start = key_marker.unwrap_or(prefix).max(prefix).to_owned();
        for ((k, id), u) in st.uploads.range((start, String::new())..) {
            if !k.starts_with(prefix) {
                break;
            }
            if key_marker == Some(k.as_str()) && upload_id_marker.is_none_or(|im| id.as_str() <= im)
            {
                continue;
            }
            if page.uploads.len() == max {
                page.truncated = true;
                if let Some(last) = page.uploads.last() {
                    page.next_key_marker = Some(last.key.clone());
                    page.next_upload_id_marker = Some(last.upload_id.clone());
                }
                break;
            }
            page.uploads.push(UploadInfo {
                key: k.clone(),
                upload_id: id.clone(),
                created_ms: u.record.created_ms,
            });
        }
        Ok(page)
    }
}

/// The whole-object digest a Complete request declares, from lomob's `x-lomob-sha256` (hex)
/// or a full-object `x-amz-checksum-sha256` (base64).
pub fn complete_sha256(lomob_hex: Option<&str>, full_object_b64: Option<&str>) -> Option<String> {
    if let Some(h) = lomob_hex {
        return Some(h.to_owned());
    }
    let d = Declared {
        checksum_sha256: full_object_b64.map(str::to_owned),
        ..Declared::default()
    };
    // Keep a malformed value visible so the store refuses it instead of ignoring it.
    declared_sha256(&d).or_else(|| full_object_b64.map(str::to_owned))
}

/// Writes the parts one after another into `tmp` while hashing, fsyncs, renames it to
/// `final_path`. Returns the size and SHA-256.
fn concat(
    dir: &Path,
    parts: &[PartRecord],
    tmp: &Path,
    final_path: &Path,
    blobs: &Path,
) -> io::Result<(u64, [u8; 32])> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)?;
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for p in parts {
        let mut f = std::fs::File::open(dir.join(&p.data))?;
        let mut part_len = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
            sha.update(&buf[..n]);
            part_len += n as u64;
        }
        if part_len != p.size {
            return Err(io::Error::other(format!(
                "a stored part has {part_len} bytes, its record says {}",
                p.size
            )));
        }
        size += part_len;
    }
    out.sync_all()?;
    drop(out);
    std::fs::rename(tmp, final_path)?;
    sync_dir(blobs)?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&sha.finalize());
    Ok((size, digest))
}

/// One part being written in place, counted on its upload until dropped.
struct Writer {
    bucket: Arc<Bucket>,
    upload: (String, String),
}

impl Writer {
    fn enter(b: &Arc<Bucket>, key: &str, upload_id: &str) -> Writer {
        let upload = (key.to_owned(), upload_id.to_owned());
        if let Some(u) = b.state().uploads.get_mut(&upload) {
            u.writers += 1;
        }
        Writer {
            bucket: b.clone(),
            upload,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(u) = self.bucket.state().uploads.get_mut(&self.upload) {
            u.writers = u.writers.saturating_sub(1);
        }
    }
}

/// The longest a Complete waits for parts still being written.
const WRITERS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// For an upload whose parts were written in place: the object's size when the listed
/// parts are exactly 1 to N at their places, every one but the last of the part size.
/// `None` for parts kept as files of their own.
fn in_place_layout(
    key: &str,
    part_size: Option<u64>,
    parts: &[PartRecord],
) -> Result<Option<u64>, StoreError> {
    let Some(size) = part_size else {
        return Ok(None);
    };
    let bad = |reason: String| StoreError::InvalidPart {
        key: key.to_owned(),
        reason,
    };
    let mut total = 0u64;
    for (i, p) in parts.iter().enumerate() {
        let want = i as u64 * size;
        if p.offset != Some(want) {
            return Err(bad(format!(
                "part {} is not where part {} belongs: list parts 1 to N, each once",
                i + 1,
                i + 1
            )));
        }
        let last = i + 1 == parts.len();
        if (!last && p.size != size) || p.size > size {
            return Err(bad(format!(
                "part {} has {} bytes; every part but the last must have {size}",
                i + 1,
                p.size
            )));
        }
        total += p.size;
    }
    Ok(Some(total))
}

/// Makes an in-place upload's data file the object's blob: cut to `total`, read once to
/// hash the whole object (and, when no whole digest was declared, to check every part
/// against the SHA-256 it had on arrival), synced, renamed into `blobs`. When the whole
/// SHA-256 is not the `expected` one, the file stays where it is (the upload keeps its
/// parts; the caller reports the mismatch).
fn seal_in_place(
    dir: &Path,
    parts: &[PartRecord],
    total: u64,
    expected: Option<String>,
    final_path: &Path,
    blobs: &Path,
) -> io::Result<(u64, [u8; 32])> {
    let check_parts = expected.is_none();
    let path = dir.join(IN_PLACE);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    f.set_len(total)?;
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in parts {
        let mut part = check_parts.then(Sha256::new);
        let mut left = p.size;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = match f.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::other(
                        "the upload's data file is shorter than its parts",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            whole.update(&buf[..n]);
            if let Some(h) = part.as_mut() {
                h.update(&buf[..n]);
            }
            left -= n as u64;
        }
        if let Some(h) = part {
            if hex::encode(h.finalize()) != p.sha256 {
                return Err(io::Error::other(format!(
                    "a part at byte {} no longer holds the bytes it arrived with; send it again",
                    p.offset.unwrap_or(0)
                )));
            }
        }
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&whole.finalize());
    if expected.is_some_and(|e| e != hex::encode(digest)) {
        return Ok((total, digest));
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&path, final_path)?;
    sync_dir(blobs)?;
    sync_dir(dir)?;
    Ok((total, digest))
}

/// Indexes the uploads folder of a bucket and removes crash leftovers: temporary files,
/// part data no record names, folders of finished or never-recorded uploads.
pub(super) fn load_uploads(dir: &Path) -> io::Result<(Uploads, u64)> {
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path: PathBuf = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() {
            if name.contains(".tmp") {
                std::fs::remove_file(&path)?;
            }
            continue;
        }
        let record: Option<UploadRecord> = std::fs::read(path.join("upload.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let record = match record {
            Some(r) if valid_upload_id(&name) && keys::check_key(&r.key).is_ok() => r,
            _ if name.contains(".tmp")
                || (valid_upload_id(&name) && !path.join("upload.json").exists()) =>
            {
                // A finished upload whose removal was cut short, or one whose creation was.
                tracing::info!(folder = %path.display(), "removing what an interrupted upload left");
                std::fs::remove_dir_all(&path)?;
                continue;
            }
            _ => {
                tracing::warn!(folder = %path.display(), "an upload folder of the receiver is unreadable; left as is");
                continue;
            }
        };
        let mut parts = BTreeMap::new();
        let mut files = Vec::new();
        for f in std::fs::read_dir(&path)? {
            let f = f?;
            let fname = f.file_name().to_string_lossy().into_owned();
            if fname.contains(".tmp") {
                std::fs::remove_file(f.path())?;
            } else if let Some(n) = fname
                .strip_prefix('p')
                .and_then(|s| s.strip_suffix(".json"))
                .and_then(|s| s.parse::<u32>().ok())
            {
                match std::fs::read(f.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<PartRecord>(&b).ok())
                {
                    Some(p) if path.join(&p.data).is_file() => {
                        parts.insert(n, p);
                    }
                    _ => {
                        tracing::warn!(file = %f.path().display(), "a part record is unreadable or its data is missing; the part is dropped");
                        std::fs::remove_file(f.path())?;
                    }
                }
            } else if fname.ends_with(".bin") {
                files.push(fname);
            }
        }
        for f in files {
            if !parts.values().any(|p: &PartRecord| p.data == f) {
                std::fs::remove_file(path.join(&f))?;
            }
        }
        let upload = Upload {
            record,
            parts,
            completing: false,
            writers: 0,
        };
        total += upload.bytes();
        out.insert((upload.record.key.clone(), name), upload);
    }
    Ok((out, total))
}
