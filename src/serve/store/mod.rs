//! The objects a receiver keeps for its senders, as plain files under its root folder.
//!
//! Why not a database or one file per key: an object must be committed by one atomic step
//! that survives a power cut, checked against the digests its sender declared before it
//! counts, and readable while it is being replaced. So each object is a data file (a "blob",
//! random name) plus a small JSON pointer naming it; a write fills a new blob, fsyncs it,
//! and then renames a new pointer over the old one. That rename is the commit: a crash at
//! any moment leaves the old object or the new one, never a mix, and [`ObjectStore::open`]
//! removes what a crash left half-done (temporary files, blobs no pointer names).
//!
//! Layout (`root/.lomob-serve/` belongs to the server and is never touched here):
//! ```text
//! root/buckets/<bucket>/blobs/<random>.blob        object bytes (<random>.tmp while written)
//! root/buckets/<bucket>/keys/<seg>.d/…/<seg>.o     pointers, see keys.rs for the encoding
//! root/buckets/<bucket>/uploads/<id>/upload.json   an unfinished multipart upload
//! root/buckets/<bucket>/uploads/<id>/pNNNNN.json   one received part (names its data file)
//! ```
//!
//! Rules the store enforces, because the receiver's owner cannot watch its senders:
//! - every byte is verified while it arrives against every digest the sender declared
//!   (Content-MD5, `x-amz-checksum-sha256`, a hex `x-amz-content-sha256`, lomob's `sha256`
//!   metadata); under `archive/` and `stage/` a write with no digest at all is refused;
//! - `archive/` is append-only: no delete, no overwrite with other bytes (the same bytes again
//!   succeed, so a sender retrying after a lost response is not stuck);
//! - a sender's quota counts its objects, its unfinished parts and its writes in flight;
//!   a write that would pass it, or that meets a full disk, is refused and leaves nothing.
//!
//! An in-memory index of every bucket (loaded at open) answers HEAD, listings and usage
//! without walking the disk.

mod blob;
mod keys;
mod multipart;
#[cfg(test)]
mod tests;

pub use blob::FileStream;
pub use multipart::{complete_sha256, CreateUpload, PartInfo, PartsPage, UploadInfo, UploadsPage};

use base64::Engine as _;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blob::{blocking, remove_quietly, sync_dir, write_atomic, Admit};
use multipart::Upload;

/// A failure of a store operation, with what the S3 layer needs to answer it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} is not accepted by this receiver: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("no object {key:?}")]
    NoSuchKey { key: String },
    #[error("no bucket {bucket:?} on this receiver")]
    NoSuchBucket { bucket: String },
    #[error("no unfinished multipart upload {upload_id:?} for key {key:?}")]
    NoSuchUpload { key: String, upload_id: String },
    #[error("archive/ is append-only on this receiver: {key:?} already holds other bytes, and archive objects are never deleted or replaced")]
    AppendOnly { key: String },
    #[error("{key:?}: a digest is required under archive/ and stage/ (send Content-MD5, x-amz-checksum-sha256 or a signed x-amz-content-sha256)")]
    DigestRequired { key: String },
    #[error("{key:?}: the declared {header} {declared} is not well formed")]
    InvalidDigest {
        key: String,
        header: &'static str,
        declared: String,
    },
    #[error("{key:?}: the bytes received do not match the declared {header} (declared {declared}, received bytes hash to {computed}); nothing was stored, send it again")]
    BadDigest {
        key: String,
        header: &'static str,
        declared: String,
        computed: String,
    },
    #[error("{key:?}: the body ended after {got} bytes but {declared} were declared; nothing was stored")]
    IncompleteBody {
        key: String,
        declared: u64,
        got: u64,
    },
    #[error("{key:?}: the request body could not be read ({reason}); nothing was stored")]
    Body { key: String, reason: String },
    #[error(
        "the quota of {quota} bytes is full ({used} bytes used, this write needs {needed} more)"
    )]
    QuotaExceeded { quota: u64, used: u64, needed: u64 },
    #[error("{key:?}: the range asked for is outside the object's {size} bytes")]
    InvalidRange { key: String, size: u64 },
    #[error("the receiver's disk is full")]
    DiskFull,
    #[error("{key:?}: {reason}")]
    InvalidPart { key: String, reason: String },
    #[error("{key:?}: the parts must be listed in ascending part-number order")]
    InvalidPartOrder { key: String },
    #[error(
        "{key:?}: upload {upload_id:?} is being completed by another request; try again shortly"
    )]
    UploadBusy { key: String, upload_id: String },
    #[error("the receiver could not finish {context}: {source}")]
    Io { context: String, source: io::Error },
}

impl StoreError {
    /// An I/O failure; a full disk becomes [`StoreError::DiskFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> StoreError {
        if blob::is_disk_full(&source) {
            StoreError::DiskFull
        } else {
            StoreError::Io {
                context: context.into(),
                source,
            }
        }
    }
}

/// What a bucket holds, for quotas and `serve status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of committed objects.
    pub bytes: u64,
    /// Number of committed objects.
    pub objects: u64,
    /// Bytes of the parts of unfinished multipart uploads.
    pub upload_bytes: u64,
}

/// One committed object, as its pointer file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    /// File name of the blob under `blobs/`.
    pub blob: String,
    pub size: u64,
    /// SHA-256 of the whole object, hex, computed by the receiver.
    pub sha256: String,
    /// The S3 ETag value without quotes: MD5 hex, or `md5-of-md5s-N` for a multipart object.
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// Number of parts when the object came from a multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

impl ObjectMeta {
    /// The last-modified time as a `SystemTime`.
    pub fn last_modified(&self) -> SystemTime {
        system_time(self.last_modified_ms)
    }
}

pub(crate) fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The digests a sender declared for a body, as they arrived (the store checks their form).
#[derive(Clone, Debug, Default)]
pub struct Declared {
    /// `Content-MD5`, base64.
    pub content_md5: Option<String>,
    /// `x-amz-checksum-sha256`, base64.
    pub checksum_sha256: Option<String>,
    /// `x-amz-content-sha256` when it is a 64-hex digest (not `UNSIGNED-PAYLOAD`/`STREAMING-*`).
    pub content_sha256: Option<String>,
    /// lomob's own `sha256` user metadata, hex.
    pub meta_sha256: Option<String>,
}

impl Declared {
    fn is_empty(&self) -> bool {
        self.content_md5.is_none()
            && self.checksum_sha256.is_none()
            && self.content_sha256.is_none()
            && self.meta_sha256.is_none()
    }

    /// Compares the received bytes' digests with every declared one.
    fn verify(&self, key: &str, got: &blob::Received) -> Result<(), StoreError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let bad = |header: &'static str, declared: &str, computed: String| StoreError::BadDigest {
            key: key.to_owned(),
            header,
            declared: declared.to_owned(),
            computed,
        };
        let invalid = |header: &'static str, declared: &str| StoreError::InvalidDigest {
            key: key.to_owned(),
            header,
            declared: declared.to_owned(),
        };
        if let Some(d) = &self.content_md5 {
            let want = b64
                .decode(d.trim())
                .map_err(|_| invalid("Content-MD5", d))?;
            if want.len() != 16 {
                return Err(invalid("Content-MD5", d));
            }
            if want != got.md5 {
                return Err(bad("Content-MD5", d, b64.encode(got.md5)));
            }
        }
        if let Some(d) = &self.checksum_sha256 {
            let want = b64
                .decode(d.trim())
                .map_err(|_| invalid("x-amz-checksum-sha256", d))?;
            if want.len() != 32 {
                return Err(invalid("x-amz-checksum-sha256", d));
            }
            if want != got.sha256 {
                return Err(bad("x-amz-checksum-sha256", d, b64.encode(got.sha256)));
            }
        }
        for (header, d) in [
            ("x-amz-content-sha256", &self.content_sha256),
            ("sha256 metadata", &self.meta_sha256),
        ] {
            if let Some(d) = d {
                let want = parse_sha256_hex(d).ok_or_else(|| invalid(header, d))?;
                if want != got.sha256 {
                    return Err(bad(header, d, hex::encode(got.sha256)));
                }
            }
        }
        Ok(())
    }
}

/// A 64-hex SHA-256 (either case), or `None`.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

/// Under these prefixes every write must declare a digest: they hold what lomob counts as
/// backed up, so an unverified byte there would be a silent hole.
fn digest_required(key: &str) -> bool {
    key.starts_with("archive/") || key.starts_with("stage/")
}

fn append_only(key: &str) -> bool {
    key.starts_with("archive/")
}

/// A single PUT.
#[derive(Clone, Debug, Default)]
pub struct PutRequest {
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// `Content-Length` when the sender gave it (checked up front against the quota).
    pub content_length: Option<u64>,
    pub declared: Declared,
    /// The sender's quota, from its grant.
    pub quota: Option<u64>,
}

/// Which bytes of an object a GET asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last` (inclusive) or `bytes=first-` when `last` is `None`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// An object being read: its record, the bytes chosen and their stream.
pub struct ObjectReader {
    pub meta: ObjectMeta,
    /// First byte sent, and one past the last (equal to `meta.size` for a whole GET).
    pub start: u64,
    pub end: u64,
    /// True when a range was asked for (the answer is then a 206 with Content-Range).
    pub ranged: bool,
    pub stream: FileStream,
}

/// A listing request (ListObjects v1 and v2).
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// List only keys (and common prefixes) after this one: `start-after`, `marker`, or the
    /// decoded continuation token.
    pub after: Option<String>,
    /// At most this many entries (objects plus common prefixes), 1 to 1000.
    pub max: usize,
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts (the last key or common prefix of this one) when truncated.
    pub next_after: Option<String>,
}

/// The in-memory state of one bucket.
struct BucketState {
    objects: BTreeMap<String, ObjectMeta>,
    bytes: u64,
    /// Unfinished uploads by (key, upload id).
    uploads: multipart::Uploads,
    upload_bytes: u64,
    /// Bytes written so far by writes not yet committed.
    inflight: u64,
}

impl BucketState {
    fn used(&self) -> u64 {
        self.bytes + self.upload_bytes + self.inflight
    }
}

struct Bucket {
    dir: PathBuf,
    state: Mutex<BucketState>,
    /// Held while pointers (and upload records) change, so the append-only check, the final
    /// quota check, the rename and the removal of the replaced blob happen as one step.
    commit: tokio::sync::Mutex<()>,
}

impl Bucket {
    fn state(&self) -> MutexGuard<'_, BucketState> {
        // A panic while holding the lock leaves counters that are at worst slightly off;
        // refusing every later request would be worse.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }
    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }
    fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }
}

/// Counts the bytes of one write in flight against its bucket's quota, and gives them back
/// when the write ends (committed bytes are then counted as objects or parts instead).
struct Inflight {
    bucket: Arc<Bucket>,
    quota: Option<u64>,
    /// Bytes this write frees when it commits (the object it replaces), so an overwrite
    /// counts only its growth.
    credit: u64,
    written: u64,
}

impl Inflight {
    fn new(bucket: &Arc<Bucket>, quota: Option<u64>, credit: u64) -> Inflight {
        Inflight {
            bucket: bucket.clone(),
            quota,
            credit,
            written: 0,
        }
    }

    /// Up-front check with a declared length.
    fn check(&self, more: u64) -> Result<(), StoreError> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let used = self.bucket.state().used();
        let after = used.saturating_add(more).saturating_sub(self.credit);
        if after > quota {
            return Err(StoreError::QuotaExceeded {
                quota,
                used,
                needed: more.saturating_sub(self.credit),
            });
        }
        Ok(())
    }
}

impl Admit for Inflight {
    fn admit(&mut self, more: u64) -> Result<(), StoreError> {
        let mut st = self.bucket.state();
        if let Some(quota) = self.quota {
            let used = st.used();
            if used.saturating_add(more).saturating_sub(self.credit) > quota {
                return Err(StoreError::QuotaExceeded {
                    quota,
                    used: used - self.written,
                    needed: (self.written + more).saturating_sub(self.credit),
                });
            }
        }
        st.inflight += more;
        self.written += more;
        Ok(())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut st = self.bucket.state();
        st.inflight = st.inflight.saturating_sub(self.written);
    }
}

/// The objects of every bucket under one root folder.
pub struct ObjectStore {
    root: PathBuf,
    buckets: RwLock<HashMap<String, Arc<Bucket>>>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Bucket names become folder names: keep them to S3's own rules (lower-case letters,
/// digits, `-`, `.`; 3 to 63 characters; no `..`), which no path trick survives.
fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.contains("..")
}

impl ObjectStore {
    /// Opens the store under `root` (created if missing): indexes every bucket, removes
    /// temporary files and blobs no pointer names (what a crash leaves behind).
    /// Reads every pointer, so it is slow on a huge store; call it once at start.
    pub fn open(root: &Path) -> io::Result<ObjectStore> {
        let buckets_dir = root.join("buckets");
        std::fs::create_dir_all(&buckets_dir)?;
        let mut buckets = HashMap::new();
        for entry in std::fs::read_dir(&buckets_dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type()?.is_dir() || !valid_bucket_name(&name) {
                continue;
            }
            let bucket = load_bucket(entry.path())?;
            buckets.insert(name, Arc::new(bucket));
        }
        Ok(ObjectStore {
            root: root.to_path_buf(),
            buckets: RwLock::new(buckets),
        })
    }

    /// The folder this store was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `bucket`'s folders if they do not exist yet (at pairing, or on CreateBucket).
    pub fn ensure_bucket(&self, bucket: &str) -> io::Result<()> {
        if !valid_bucket_name(bucket) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{bucket:?} is not a valid bucket name (3-63 of a-z, 0-9, '-', '.')"),
            ));
        }
        let mut map = self
            .buckets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.contains_key(bucket) {
            return Ok(());
        }
        let dir = self.root.join("buckets").join(bucket);
        for sub in ["blobs", "keys", "uploads"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        sync_dir(&self.root.join("buckets"))?;
        map.insert(bucket.to_owned(), Arc::new(empty_bucket(dir)));
        Ok(())
    }

    /// True when `bucket` exists.
    pub fn has_bucket(&self, bucket: &str) -> bool {
        self.buckets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(bucket)
    }

    /// What `bucket` holds (zero for a bucket that does not exist).
    pub fn usage(&self, bucket: &str) -> Usage {
        let Ok(b) = self.bucket(bucket) else {
            return Usage::default();
        };
        let st = b.state();
        Usage {
            bytes: st.bytes,
            objects: st.objects.len() as u64,
            upload_bytes: st.upload_bytes,
        }
    }

    /// Bytes free for this store on its disk (for an unprivileged writer), when known.
    pub fn free_space(&self) -> Option<u64> {
        free_space_at(&self.root)
    }

    fn bucket(&self, bucket: &str) -> Result<Arc<Bucket>, StoreError> {
        self.buckets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(bucket)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            })
    }

    /// The record of `key`.
    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        let b = self.bucket(bucket)?;
        let st = b.state();
        st.objects
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchKey {
                key: key.to_owned(),
            })
    }

    /// Stores one object from `body`, verified and within the quota, replacing any object
    /// at the key (except under `archive/`). Returns the record now at the key (for an
    /// identical re-send under `archive/`, the existing one).
    pub async fn put<S, E>(
        &self,
        bucket: &str,
        req: PutRequest,
        body: S,
    ) -> Result<ObjectMeta, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let b = self.bucket(bucket)?;
        let key = req.key.as_str();
        keys::check_key(key).map_err(|reason| StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })?;
        if digest_required(key) && req.declared.is_empty() {
            return Err(StoreError::DigestRequired {
                key: key.to_owned(),
            });
        }
        let existing = b.state().objects.get(key).cloned();
        // Refuse a doomed archive overwrite before receiving gigabytes: only the same bytes
        // can succeed, and a declared SHA-256 tells whether they are.
        let doomed = append_only(key)
            && existing
                .as_ref()
                .zip(declared_sha256(&req.declared))
                .is_some_and(|(old, declared)| declared != old.sha256);
        if doomed {
            return Err(StoreError::AppendOnly {
                key: key.to_owned(),
            });
        }
        let credit = existing.as_ref().map_or(0, |o| o.size);
        let mut inflight = Inflight::new(&b, req.quota, credit);
        if let Some(len) = req.content_length {
            inflight.check(len)?;
        }
        let name = blob::random_name();
        let tmp = b.blobs().join(format!("{name}.tmp"));
        let got = blob::receive(&tmp, body, req.content_length, &mut inflight, key).await?;
        if let Err(e) = req.declared.verify(key, &got) {
            remove_quietly(tmp).await;
            return Err(e);
        }
        let blob_name = format!("{name}.blob");
        let meta = ObjectMeta {
            key: key.to_owned(),
            blob: blob_name.clone(),
            size: got.len,
            sha256: hex::encode(got.sha256),
            etag: hex::encode(got.md5),
            content_type: req.content_type.clone(),
            metadata: req.metadata.clone(),
            last_modified_ms: now_ms(),
            parts: None,
        };
        let (blobs, final_path) = (b.blobs(), b.blobs().join(&blob_name));
        let tmp2 = tmp.clone();
        let renamed = blocking(move || {
            std::fs::rename(&tmp2, &final_path)?;
            sync_dir(&blobs)
        })
        .await;
        if let Err(e) = renamed {
            remove_quietly(tmp).await;
            remove_quietly(b.blobs().join(&blob_name)).await;
            return Err(StoreError::io(format!("storing {key:?}"), e));
        }
        let result = self.commit(&b, meta, &mut inflight, None).await;
        drop(inflight);
        result
    }

    /// Makes `meta` (whose blob is already in place) the object at its key: the append-only
    /// rule, the final quota check, the pointer rename, then the old blob's removal. With
    /// `upload`, the multipart upload the blob was assembled from is finished in the same
    /// step (its parts stop counting, its folder goes). On refusal or failure the new blob is
    /// removed and the upload, if any, stays.
    async fn commit(
        &self,
        b: &Arc<Bucket>,
        meta: ObjectMeta,
        inflight: &mut Inflight,
        upload: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        let _guard = b.commit.lock().await;
        let new_blob = b.blobs().join(&meta.blob);
        let upload_key = upload.map(|id| (meta.key.clone(), id.to_owned()));
        let (existing, parts_total) = {
            let st = b.state();
            let parts = upload_key
                .as_ref()
                .and_then(|k| st.uploads.get(k))
                .map_or(0, Upload::bytes);
            (st.objects.get(&meta.key).cloned(), parts)
        };
        if let Some(old) = existing.as_ref().filter(|_| append_only(&meta.key)) {
            remove_quietly(new_blob).await;
            if old.sha256 == meta.sha256 {
                if let Some(id) = upload {
                    self.finish_upload(b, &meta.key, id).await;
                }
                return Ok(old.clone());
            }
            return Err(StoreError::AppendOnly { key: meta.key });
        }
        // Another write may have committed since this one started: count against what is
        // there now. `inflight` holds a single PUT's bytes; an assembled upload's bytes
        // replace its parts.
        let freed = existing.as_ref().map_or(0, |o| o.size) + parts_total;
        let added = if upload.is_some() { meta.size } else { 0 };
        if let Some(quota) = inflight.quota {
            let used = b.state().used();
            if used.saturating_add(added).saturating_sub(freed) > quota {
                remove_quietly(new_blob).await;
                return Err(StoreError::QuotaExceeded {
                    quota,
                    used: used - inflight.written,
                    needed: (inflight.written + added).saturating_sub(freed),
                });
            }
        }
        let rel = keys::pointer_path(&meta.key);
        let ptr_path = b.keys().join(&rel);
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| StoreError::io("encoding a pointer", io::Error::other(e)))?;
        let keys_root = b.keys();
        let written = blocking(move || write_pointer(&keys_root, &ptr_path, &json)).await;
        if let Err(e) = written {
            remove_quietly(new_blob).await;
            return Err(StoreError::io(format!("committing {:?}", meta.key), e));
        }
        {
            let mut st = b.state();
            st.bytes =
                (st.bytes + meta.size).saturating_sub(existing.as_ref().map_or(0, |o| o.size));
            // The bytes now count as an object; stop counting them in flight.
            st.inflight = st.inflight.saturating_sub(inflight.written);
            inflight.written = 0;
            st.objects.insert(meta.key.clone(), meta.clone());
        }
        if let Some(old) = existing.filter(|o| o.blob != meta.blob) {
            remove_quietly(b.blobs().join(&old.blob)).await;
        }
        if let Some(id) = upload {
            self.finish_upload(b, &meta.key, id).await;
        }
        Ok(meta)
    }

    /// Reads `key`, whole or a range.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectReader, StoreError> {
        let b = self.bucket(bucket)?;
        // The pointer may be replaced between reading the index and opening the blob; the
        // old blob is then gone, so look again (a few times, then give up honestly).
        for _ in 0..4 {
            let meta = self.head(bucket, key)?;
            let (start, end) =
                resolve_range(range, meta.size).ok_or_else(|| StoreError::InvalidRange {
                    key: key.to_owned(),
                    size: meta.size,
                })?;
            let path = b.blobs().join(&meta.blob);
            match FileStream::open(path, start, end - start).await {
                Ok(Some(stream)) => {
                    return Ok(ObjectReader {
                        meta,
                        start,
                        end,
                        ranged: range.is_some(),
                        stream,
                    })
                }
                Ok(None) => continue,
                Err(e) => return Err(StoreError::io(format!("reading {key:?}"), e)),
            }
        }
        Err(StoreError::io(
            format!("reading {key:?}"),
            io::Error::other("the object kept changing while being opened"),
        ))
    }

    /// Deletes `key`. Returns whether there was an object. `archive/` keys are refused.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let b = self.bucket(bucket)?;
        if append_only(key) {
            return Err(StoreError::AppendOnly {
                key: key.to_owned(),
            });
        }
        if keys::check_key(key).is_err() {
            // No such key can exist.
            return Ok(false);
        }
        let _guard = b.commit.lock().await;
        let Some(old) = b.state().objects.get(key).cloned() else {
            return Ok(false);
        };
        let keys_root = b.keys();
        let ptr = keys_root.join(keys::pointer_path(key));
        blocking(move || remove_pointer(&keys_root, &ptr))
            .await
            .map_err(|e| StoreError::io(format!("deleting {key:?}"), e))?;
        {
            let mut st = b.state();
            st.objects.remove(key);
            st.bytes = st.bytes.saturating_sub(old.size);
        }
        remove_quietly(b.blobs().join(&old.blob)).await;
        Ok(true)
    }

    /// One page of keys in `bucket`, in byte order, grouped by `delimiter` as S3 does.
    pub fn list(&self, bucket: &str, q: &ListQuery) -> Result<ListPage, StoreError> {
        let b = self.bucket(bucket)?;
        let st = b.state();
        Ok(list_index(&st.objects, q))
    }
}

/// The bytes `[start, end)` a range selects in an object of `size` bytes, or `None` when
/// it selects nothing (answered with 416 InvalidRange).
pub fn resolve_range(range: Option<ByteRange>, size: u64) -> Option<(u64, u64)> {
    match range {
        None => Some((0, size)),
        Some(ByteRange::From { first, last }) => {
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            (first < end).then_some((first, end))
        }
        Some(ByteRange::Suffix(n)) => (n > 0 && size > 0).then(|| (size - n.min(size), size)),
    }
}

/// The whole-object SHA-256 (hex, lower case) a sender declared, when it declared one.
fn declared_sha256(d: &Declared) -> Option<String> {
    if let Some(h) = d.meta_sha256.as_deref().or(d.content_sha256.as_deref()) {
        return parse_sha256_hex(h).map(hex::encode);
    }
    let b = base64::engine::general_purpose::STANDARD
        .decode(d.checksum_sha256.as_deref()?.trim())
        .ok()?;
    (b.len() == 32).then(|| hex::encode(b))
}

fn list_index(objects: &BTreeMap<String, ObjectMeta>, q: &ListQuery) -> ListPage {
    use std::ops::Bound;
    let mut page = ListPage::default();
    let max = q.max.clamp(1, 1000);
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty());
    let start = match &q.after {
        Some(a) if a.as_str() >= q.prefix.as_str() => Bound::Excluded(a.clone()),
        _ => Bound::Included(q.prefix.clone()),
    };
    // When resuming after a common prefix, every key under it was already summarised.
    let skip_under = q.after.as_ref().filter(|a| {
        delim.is_some_and(|d| {
            a.starts_with(q.prefix.as_str())
                && a.ends_with(d)
                && a[q.prefix.len()..].find(d) == Some(a.len() - q.prefix.len() - d.len())
        })
    });
    let mut count = 0usize;
    let mut last: Option<String> = None;
    for (key, meta) in objects.range((start, Bound::Unbounded)) {
        if !key.starts_with(q.prefix.as_str()) {
            break;
        }
        if skip_under.is_some_and(|s| key.starts_with(s.as_str())) {
            continue;
        }
        let entry = match delim.and_then(|d| key[q.prefix.len()..].find(d).map(|i| (d, i))) {
            Some((d, i)) => {
                let cp = &key[..q.prefix.len() + i + d.len()];
                if page.common_prefixes.last().is_some_and(|p| p == cp) {
                    continue;
                }
                Err(cp.to_owned())
            }
            None => Ok(meta),
        };
        if count == max {
            page.truncated = true;
            page.next_after = last;
            return page;
        }
        count += 1;
        match entry {
            Ok(meta) => {
                last = Some(meta.key.clone());
                page.objects.push(meta.clone());
            }
            Err(cp) => {
                last = Some(cp.clone());
                page.common_prefixes.push(cp);
            }
        }
    }
    page
}

/// Writes a pointer file, creating its folders; the rename inside is the commit.
fn write_pointer(keys_root: &Path, ptr: &Path, json: &[u8]) -> io::Result<()> {
    let dir = ptr.parent().unwrap_or(keys_root);
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        // Make the new folders themselves durable, up to the keys root.
        let mut d = dir;
        while d != keys_root {
            let Some(parent) = d.parent() else { break };
            sync_dir(parent)?;
            d = parent;
        }
    }
    let name = ptr
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("pointer path has no name"))?;
    write_atomic(dir, name, json)
}

/// Removes a pointer file and the folders it leaves empty.
fn remove_pointer(keys_root: &Path, ptr: &Path) -> io::Result<()> {
    match std::fs::remove_file(ptr) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut dir = ptr.parent();
    while let Some(d) = dir {
        if d == keys_root {
            sync_dir(d)?;
            break;
        }
        // Fails when not empty: that is the stop condition.
        if std::fs::remove_dir(d).is_err() {
            sync_dir(d)?;
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

fn empty_bucket(dir: PathBuf) -> Bucket {
    Bucket {
        dir,
        state: Mutex::new(BucketState {
            objects: BTreeMap::new(),
            bytes: 0,
            uploads: BTreeMap::new(),
            upload_bytes: 0,
            inflight: 0,
        }),
        commit: tokio::sync::Mutex::new(()),
    }
}

fn is_temp_name(name: &str) -> bool {
    name.contains(".tmp")
}

/// Indexes one bucket folder and removes crash leftovers.
fn load_bucket(dir: PathBuf) -> io::Result<Bucket> {
    let b = empty_bucket(dir);
    for sub in ["blobs", "keys", "uploads"] {
        std::fs::create_dir_all(b.dir.join(sub))?;
    }
    let mut objects = BTreeMap::new();
    let mut unreadable = 0usize;
    load_pointers(&b.keys(), &b.keys(), &mut objects, &mut unreadable)?;
    let referenced: std::collections::HashSet<String> = objects
        .values()
        .map(|m: &ObjectMeta| m.blob.clone())
        .collect();
    for entry in std::fs::read_dir(b.blobs())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = !referenced.contains(&name) && name.ends_with(".blob");
        if is_temp_name(&name) || (orphan && unreadable == 0) {
            tracing::info!(file = %entry.path().display(), "removing what an interrupted write left");
            std::fs::remove_file(entry.path())?;
        }
    }
    if unreadable > 0 {
        tracing::warn!(bucket = %b.dir.display(), unreadable, "some pointer files could not be read; unreferenced blobs are kept");
    }
    let (uploads, upload_bytes) = multipart::load_uploads(&b.uploads())?;
    {
        let mut st = b.state();
        st.bytes = objects.values().map(|m| m.size).sum();
        st.objects = objects;
        st.uploads = uploads;
        st.upload_bytes = upload_bytes;
    }
    Ok(b)
}

fn load_pointers(
    keys_root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, ObjectMeta>,
    unreadable: &mut usize,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            std::fs::remove_file(&path)?;
            continue;
        }
        if entry.file_type()?.is_dir() {
            load_pointers(keys_root, &path, out, unreadable)?;
            continue;
        }
        if !name.ends_with(".o") {
            continue;
        }
        let meta: Option<ObjectMeta> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match meta {
            Some(m)
                if keys::check_key(&m.key).is_ok()
                    && keys_root.join(keys::pointer_path(&m.key)) == path =>
            {
                out.insert(m.key.clone(), m);
            }
            _ => {
                tracing::warn!(file = %path.display(), "a pointer file of the receiver is unreadable; its object is not listed");
                *unreadable += 1;
            }
        }
    }
    Ok(())
}

/// Bytes free for an unprivileged writer on the disk holding `path` (statvfs), when known.
#[cfg(unix)]
pub fn free_space_at(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Bytes free on the disk holding `path`; not measured on this platform.
#[cfg(not(unix))]
pub fn free_space_at(_path: &Path) -> Option<u64> {
    None
}
