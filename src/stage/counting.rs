//! A [`Stage`] wrapper that counts operations by type, for run records, on backends that do
//! not speak HTTP (a local disk, SFTP). They bill nothing; HTTP backends are counted by
//! their transport instead, request by request as sent.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Stage, Usage};
use crate::store::{BackendInfo, ObjectInfo, RequestCounters, RequestType, StoreError};

pub struct Counting<S> {
    inner: S,
    counter: Arc<RequestCounters>,
}

impl<S: Stage> Counting<S> {
    pub fn new(inner: S, counter: Arc<RequestCounters>) -> Self {
        Counting { inner, counter }
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
        self.counter.add(RequestType::Put, 1);
        self.counter.add(RequestType::Head, 1);
        self.inner.put_file(key, path, size, sha256).await
    }

    async fn put_file_unsettled(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<ObjectInfo, StoreError> {
        self.counter.add(RequestType::Put, 1);
        self.counter.add(RequestType::Head, 1);
        self.inner.put_file_unsettled(key, path, size, sha256).await
    }

    async fn settle(&self) -> Result<(), StoreError> {
        self.inner.settle().await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<ObjectInfo, StoreError> {
        self.counter.add(RequestType::Put, 1);
        self.counter.add(RequestType::Get, 1);
        self.counter.add(RequestType::Head, 1);
        self.inner.put_bytes(key, bytes).await
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.counter.add(RequestType::Head, 1);
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.counter.add(RequestType::List, 1);
        self.inner.list(prefix).await
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.counter.add(RequestType::Get, 1);
        self.inner.read_range(key, range).await
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64), StoreError> {
        self.counter.add(RequestType::Get, 1);
        self.inner.download(key, dest).await
    }

    async fn verify_in_place(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        self.counter.add(RequestType::Head, 1);
        self.inner.verify_in_place(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.counter.add(RequestType::Delete, 1);
        self.inner.delete(key).await
    }

    async fn abort_orphans(&self) -> Result<u64, StoreError> {
        self.inner.abort_orphans().await
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
