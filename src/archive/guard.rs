//! Cold storage bills a minimum duration: deleting a Deep Archive object after a month
//! costs the same as keeping it 180 days. This wrapper refuses any delete of an object
//! younger than the backend's minimum, whatever the caller asks.

use std::ops::Range;

use async_trait::async_trait;

use super::{Archive, ArchiveObject, PutOutcome, PutRequest, ThawRequest, ThawTier, UploadJournal};
use crate::store::{BackendInfo, ObjectInfo, StoreError};

pub struct MinStorageGuard<A> {
    inner: A,
}

impl<A: Archive> MinStorageGuard<A> {
    pub fn new(inner: A) -> Self {
        MinStorageGuard { inner }
    }
}

/// True when an object modified at `modified` (unix seconds) may be deleted at `now`
/// without an early-deletion charge.
pub fn old_enough(modified: Option<i64>, min_days: u32, now: i64) -> bool {
    if min_days == 0 {
        return true;
    }
    match modified {
        Some(t) => now - t >= i64::from(min_days) * 86_400,
        None => false,
    }
}

#[async_trait]
impl<A: Archive> Archive for MinStorageGuard<A> {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        self.inner.put(req).await
    }

    async fn put_index(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        self.inner.put_index(key, bytes).await
    }

    async fn stat(&self, key: &str) -> Result<Option<ArchiveObject>, StoreError> {
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn request_thaw(
        &self,
        key: &str,
        days: u32,
        tier: ThawTier,
    ) -> Result<ThawRequest, StoreError> {
        self.inner.request_thaw(key, days, tier).await
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner.read_range(key, range).await
    }

    async fn read_stream(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<super::ByteStream, StoreError> {
        self.inner.read_stream(key, range).await
    }

    async fn read_index(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.read_index(key).await
    }

    async fn verify_in_place(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        self.inner.verify_in_place(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let min = self.info().capabilities.min_storage_days;
        if min > 0 {
            let Some(o) = self.inner.stat(key).await? else {
                return Ok(());
            };
            // The minimum belongs to the object's own class: a hot object in a cold bucket
            // (a catalog, the site mark) has none.
            let min = o
                .storage_class
                .as_deref()
                .and_then(lomob_backends::StorageClass::parse)
                .map_or(min, |c| c.min_storage_days());
            let modified = o.info.modified;
            if !old_enough(modified, min, crate::manifest::now()) {
                return Err(StoreError::refused(
                    self.info(),
                    "delete",
                    key,
                    format!("refused: objects here are billed for at least {min} days, and this one is younger (or its age is unknown)"),
                ));
            }
        }
        self.inner.delete(key).await
    }

    async fn abort_upload(&self, key: &str, journal: &dyn UploadJournal) -> Result<(), StoreError> {
        self.inner.abort_upload(key, journal).await
    }

    async fn abort_orphans(
        &self,
        owned: &(dyn for<'k> Fn(&'k str) -> bool + Sync),
        journal: &dyn UploadJournal,
    ) -> Result<usize, StoreError> {
        self.inner.abort_orphans(owned, journal).await
    }
}

#[cfg(test)]
mod tests {
    use super::old_enough;

    #[test]
    fn the_minimum_duration_is_respected() {
        let day = 86_400;
        assert!(old_enough(Some(0), 0, 5));
        assert!(!old_enough(Some(0), 180, 179 * day));
        assert!(old_enough(Some(0), 180, 180 * day));
        assert!(!old_enough(None, 180, 1_000 * day));
    }
}
