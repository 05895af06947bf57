//! The `Stage` trait: the daily destination, one object per file.
//!
//! A stage is cheap or free but small (a free tier, a NAS folder, a relative's machine), so
//! the engine keeps under its quota and frees staged copies once they are safely archived.
//! The engine speaks only to this trait; [`opendal_stage::OpendalStage`] implements it for
//! every backend kind. Behaviour such as request counting is added by wrappers implementing
//! the same trait ([`counting::Counting`]).

pub mod checked;
pub mod counting;
pub mod disk;
pub mod opendal_stage;
pub mod s3_stage;
pub mod sealed;

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use serde::Serialize;

use crate::store::{BackendInfo, ObjectInfo, StoreError};

/// Space used on a stage, against its quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub objects: u64,
    pub bytes: u64,
    pub quota: Option<u64>,
}

#[async_trait]
pub trait Stage: Send + Sync {
    fn info(&self) -> &BackendInfo;

    /// Uploads the file at `path` (of `size` bytes, content `sha256`) as `key`, streaming
    /// where the backend allows, and verifies it (size, and checksum where the backend gives
    /// one). Returns what the server now holds.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError>;

    /// [`Stage::put_file`] for a run that stages many files: on a store where durability
    /// costs a sync per object (a local disk: two fsyncs each, which made 10,000 small files
    /// take 13 times as long as `cp`), the object may become durable only at the next
    /// [`Stage::settle`], and the engine records it only after that. Elsewhere the same as
    /// `put_file`.
    async fn put_file_unsettled(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError> {
        self.put_file(key, path, size, sha256).await
    }

    /// Makes every object put by [`Stage::put_file_unsettled`] so far durable.
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes a small object from memory (the site mark) and verifies it by reading it
    /// back.
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectInfo, StoreError>;

    /// `None` when there is no such object.
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// Every object under `prefix`, with sizes, without a request per object.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError>;

    /// Streams the whole object into a new local file at `dest`, in bounded memory, and
    /// returns its SHA-256 and length.
    async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64), StoreError>;

    /// Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Has the store read the object where it lives and compare it with the digest it took
    /// when it received it, moving no object byte over the network (a lomob receiver,
    /// `lomob serve`). `None` when the store cannot: `check --deep` then downloads.
    async fn verify_in_place(
        &self,
        _key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        Ok(None)
    }

    /// Aborts unfinished uploads of stage objects left by a crash (a stage upload is never
    /// continued); returns how many. Only backends with multipart uploads have any.
    async fn abort_orphans(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Objects and bytes under `prefix`, with the configured quota.
    async fn usage(&self, prefix: &str) -> Result<Usage, StoreError> {
        let objects = self.list(prefix).await?;
        Ok(Usage {
            objects: objects.len() as u64,
            bytes: objects.iter().map(|o| o.size).sum(),
            quota: self.info().capabilities.free_quota.map(|q| q.bytes()),
        })
    }
}
