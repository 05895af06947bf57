//! The `Archive` trait: few, large, cold objects (the packed images).
//!
//! A put reads its [`ByteSource`] once, in order (the ISO image reader regenerates any byte
//! range, so there is never a temporary copy on disk, and checks every file as it goes, so a
//! changed file fails the put before the object is complete); where the backend allows, an
//! interrupted put continues where it stopped. Catalogs go through [`Archive::put_index`], hot
//! and readable without a thaw. Nothing
//! in an archive is ever overwritten, and nothing younger than the backend's minimum storage
//! duration is deleted: [`MinStorageGuard`] enforces that for every implementation.
//! [`s3_archive::S3Archive`] serves the `s3` and `glacier` kinds with our own signed
//! requests (resumable multipart, thaw, storage class); [`opendal_archive::OpendalArchive`]
//! serves every other kind.

pub mod guard;
pub mod opendal_archive;
pub mod s3_archive;
pub mod sealed;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use guard::MinStorageGuard;
pub use lomob_backends::journal::{UploadJournal, UploadState};
pub use lomob_backends::source::{read_digests, ByteSource, FileSource};
pub use lomob_backends::ThawTier;

use crate::store::{BackendInfo, ObjectInfo, StoreError};

/// Whether a cold object can be read now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum ThawState {
    /// A hot object: readable.
    NotNeeded,
    /// Frozen; no thaw requested.
    Frozen,
    /// A thaw is running.
    InProgress,
    /// Thawed: readable until `expiry` (an HTTP date), when known.
    Thawed { expiry: Option<String> },
}

/// What HEAD says about an archived object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchiveObject {
    pub info: ObjectInfo,
    /// The storage class, for S3 kinds.
    pub storage_class: Option<String>,
    pub thaw: ThawState,
    /// The content fingerprint stored with the object, where the backend keeps metadata.
    pub fingerprint: Option<String>,
    /// The part size of a multipart upload, from the object's metadata: what its ETag can
    /// be computed again with.
    pub part_size: Option<u64>,
}

/// What a thaw request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThawRequest {
    /// The object is hot: nothing to do.
    NotNeeded,
    Started,
    AlreadyInProgress,
    AlreadyThawed,
}

/// Bytes in memory as a [`ByteSource`] (catalogs, probes).
pub struct MemorySource(pub Vec<u8>);

impl ByteSource for MemorySource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        Ok(Box::new(std::io::Cursor::new(self.0[start..].to_vec())))
    }
}

/// How the bytes of an archived object were shown to be the ones sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "by", content = "reason")]
pub enum Verification {
    /// A checksum the server computed over what it stored (an MD5 ETag, a multipart ETag,
    /// parts checked by Content-MD5) equals the one computed while sending.
    ServerChecksum,
    /// The object was read back and its SHA-256 equals the image's.
    ReadBack,
    /// Written whole by this run to a local disk: the SHA-256 of the bytes as they were
    /// written equals the image's, and the file and its folder were fsynced. (A read-back
    /// there would come from the page cache and prove nothing more; `verify-read-back`
    /// reads the disk itself.)
    Written,
    /// Stored, but nothing the server computed can be compared (an SSE-KMS bucket's ETag,
    /// for one). Such an object is never counted as holding anything.
    Unverified(String),
}

/// What a put stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub object: ArchiveObject,
    /// SHA-256 of the bytes stored, computed while they were read for sending.
    pub sha256: [u8; 32],
    pub verification: Verification,
}

/// What a put did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object now holds the source: sent by this call, continued from an interrupted
    /// upload, or already there and shown by a checksum to hold the same bytes.
    Stored(Stored),
    /// Another object already holds the name, and lomob cannot show that it holds these
    /// bytes. Nothing was sent and nothing overwritten: choose another name, and keep the
    /// occupant on record (it is billed).
    Occupied {
        existing: ArchiveObject,
        reason: String,
    },
}

/// One upload for [`Archive::put`].
pub struct PutRequest<'a> {
    pub key: &'a str,
    pub source: Arc<dyn ByteSource>,
    /// Hex; identifies the content before it is read (see [`Archive::put`]).
    pub fingerprint: &'a str,
    /// Use parts checked one by one (Content-MD5) even where one PUT would do: for a
    /// bucket whose single-PUT ETags are not MD5s.
    pub multipart_only: bool,
    pub journal: &'a dyn UploadJournal,
    pub progress: PutProgress<'a>,
}

/// Bytes arriving from a read, in the pieces the connection gives.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Progress of a put: bytes confirmed by the server so far.
pub type PutProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

#[async_trait]
pub trait Archive: Send + Sync {
    fn info(&self) -> &BackendInfo;

    /// Uploads `req.source` as `req.key`, continuing an upload the journal remembers, and
    /// verifies it (size, the server's checksum of what it received, fingerprint and
    /// storage class where the backend keeps them).
    ///
    /// The source is read once, in order, from its first byte (also when resuming), and its
    /// SHA-256 comes back in [`Stored`]: a source that checks itself while read (the image
    /// reader verifies every file) fails the put before the object is complete, so nothing
    /// wrong is stored and no separate verification pass is needed. The fingerprint (hex)
    /// identifies the content before it is read: it is stored with the object where the
    /// backend keeps metadata, and ties a resumed upload to the same content.
    ///
    /// An object already under the name counts as done only when a checksum the server
    /// computed (or a read-back) shows it holds the source's bytes; otherwise the outcome is
    /// [`PutOutcome::Occupied`] and nothing is sent. Nothing is ever overwritten.
    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, StoreError>;

    /// Writes a small object that must stay readable without a thaw (an image's catalog):
    /// in the backend's hot storage class, verified by the server's checksum. An existing
    /// object with the same bytes is accepted; a different one is never overwritten (the
    /// outcome is then [`PutOutcome::Occupied`]).
    async fn put_index(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError>;

    /// `None` when there is no such object.
    async fn stat(&self, key: &str) -> Result<Option<ArchiveObject>, StoreError>;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Asks for a cold object to be made readable for `days`.
    async fn request_thaw(
        &self,
        key: &str,
        days: u32,
        tier: ThawTier,
    ) -> Result<ThawRequest, StoreError>;

    /// Reads a byte range (fails with a `Frozen` kind on a cold object not yet thawed).
    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError>;

    /// Streams a byte range with one request, in bounded memory; the items fail with
    /// `io::Error` (turn them into a [`StoreError`] with [`StoreError::stream`]).
    async fn read_stream(&self, key: &str, range: Range<u64>) -> Result<ByteStream, StoreError>;

    /// Reads a whole small hot object (a catalog) with one request.
    async fn read_index(&self, key: &str) -> Result<Vec<u8>, StoreError>;

    /// Has the store read the object where it lives and compare it with the digest it took
    /// when it received it, moving no object byte over the network (a lomob receiver,
    /// `lomob serve`). `None` when the store cannot.
    async fn verify_in_place(
        &self,
        _key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        Ok(None)
    }

    /// Deletes an object. Callers go through [`MinStorageGuard`], which refuses objects
    /// younger than the minimum storage duration.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Abandons the upload the journal remembers for `key` (an S3 multipart upload is
    /// aborted, a `.partial` object removed) and forgets it: for an upload no run will
    /// continue, so nothing is left billing.
    async fn abort_upload(&self, key: &str, journal: &dyn UploadJournal) -> Result<(), StoreError>;

    /// Aborts unfinished uploads under `archive/` that the journal does not know (left by a
    /// crash before their state was saved) and that `owned` says are this site's, so
    /// nothing is left billing and nothing of anyone else's is touched. Returns how many.
    async fn abort_orphans(
        &self,
        owned: &(dyn for<'k> Fn(&'k str) -> bool + Sync),
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError>;
}
