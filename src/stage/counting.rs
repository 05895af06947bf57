//! A [`Stage`] wrapper that counts requests by type, for run records and cost reports.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Stage, Usage};
use crate::store::{BackendInfo, ObjectInfo, Request, RequestCounter, StoreError};

pub struct Counting<S> {
    inner: S,
    counter: Arc<RequestCounter>,
}

impl<S: Stage> Counting<S> {
    pub fn new(inner: S, counter: Arc<RequestCounter>) -> Self {
        Counting { inner, counter }
    }
}

/// Requests a put of `size` bytes costs: one PUT, or one per part plus create and
/// complete; then the HEAD that verifies it.
fn put_requests(size: u64) -> (u64, u64) {
    let chunk = super::opendal_stage::CHUNK as u64;
    if size <= chunk {
        (1, 0)
    } else {
        (size.div_ceil(chunk), 2)
    }
}

#[async_trait]
impl<S: Stage> Stage for Counting<S> {
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
        let (puts, posts) = put_requests(size);
        self.counter.add(Request::Put, puts);
        self.counter.add(Request::Post, posts);
        self.counter.add(Request::Head, 1);
        self.inner.put_file(key, path, size, sha256).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectInfo, StoreError> {
        self.counter.add(Request::Put, 1);
        self.counter.add(Request::Get, 1);
        self.counter.add(Request::Head, 1);
        self.inner.put_bytes(key, bytes).await
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.counter.add(Request::Head, 1);
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let r = self.inner.list(prefix).await;
        // S3 lists 1,000 keys per request.
        let pages = r
            .as_ref()
            .map_or(1, |v| (v.len() as u64).div_ceil(1000).max(1));
        self.counter.add(Request::List, pages);
        r
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.counter.add(Request::Get, 1);
        self.inner.read_range(key, range).await
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64), StoreError> {
        self.counter.add(Request::Get, 1);
        self.inner.download(key, dest).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.counter.add(Request::Delete, 1);
        self.inner.delete(key).await
    }

    async fn usage(&self, prefix: &str) -> Result<Usage, StoreError> {
        let objects = self.list(prefix).await?;
        Ok(Usage {
            objects: objects.len() as u64,
            bytes: objects.iter().map(|o| o.size).sum(),
            quota: self.info().capabilities.free_quota.map(|q| q.bytes()),
        })
    }
}
