//! The `Archive` trait: few, large, cold objects (the packed images).
//!
//! Puts are resumable from a [`ByteSource`] that can restart at any offset (the ISO image
//! reader regenerates any byte range, so there is never a temporary copy on disk). Nothing
//! in an archive is ever overwritten, and nothing younger than the backend's minimum storage
//! duration is deleted: [`MinStorageGuard`] enforces that for every implementation.
//! [`s3_archive::S3Archive`] serves the `s3` and `glacier` kinds with our own signed
//! requests (resumable multipart, thaw, storage class); [`opendal_archive::OpendalArchive`]
//! serves every other kind.

pub mod guard;
pub mod opendal_archive;
pub mod s3_archive;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use guard::MinStorageGuard;
pub use lomob_backends::glacier::ThawTier;
pub use lomob_backends::s3::upload::{ByteSource, FileSource, UploadJournal, UploadState};

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

/// Progress of a put: bytes confirmed by the server so far.
pub type PutProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

#[async_trait]
pub trait Archive: Send + Sync {
    fn info(&self) -> &BackendInfo;

    /// Uploads `source` as `key`, continuing an upload the journal remembers, and verifies
    /// it (size; stored SHA-256 and storage class where the backend keeps them). An
    /// existing object with the same size and SHA-256 is accepted as already done; a
    /// different one is never overwritten.
    async fn put(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        sha256: &[u8; 32],
        journal: &dyn UploadJournal,
        progress: PutProgress<'_>,
    ) -> Result<ArchiveObject, StoreError>;

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

    /// Deletes an object. Callers go through [`MinStorageGuard`], which refuses objects
    /// younger than the minimum storage duration.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Aborts unfinished uploads under `prefix` that the journal does not know (left by a
    /// crash before their state was saved), so nothing is left billing. Returns how many.
    async fn abort_orphans(
        &self,
        prefix: &str,
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError>;
}
