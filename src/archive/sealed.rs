//! [`Archive`] for an encrypted site: catalogs come back decrypted, and reads of an
//! encrypted image are served in plaintext coordinates, so restore plans its byte ranges
//! exactly as on a plain site.
//!
//! A plaintext range becomes a ranged read of the whole 64 KiB chunks that cover it
//! ([`crate::crypt::chunk_span`]), each authenticated before a byte of it is handed on: one
//! file comes out of a 5 GB image with its own bytes, at most two chunks more, a 16-byte
//! tag per chunk, and the header (read once per image and kept for the run). Images and
//! catalogs are encrypted by the archive step, which alone can regenerate the same
//! ciphertext to continue an interrupted upload and records what it stored. Objects stored before encryption was
//! turned on are read as they are.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;

use super::{
    Archive, ArchiveObject, ByteStream, PutOutcome, PutRequest, ThawRequest, ThawTier,
    UploadJournal,
};
use crate::crypt::{
    chunk_span, decrypt_bytes, decrypt_chunks, is_age, parse_header, plaintext_len, DecryptError,
    HeaderError, PayloadKey, RangeDecryptor, SiteCrypt, CHUNK,
};
use crate::keys::SITE_MARK;
use crate::store::{BackendInfo, ObjectInfo, StoreError};

/// What lomob knows of one object it reads.
enum Opened {
    Plain,
    Sealed {
        head_len: u64,
        plain_len: u64,
        key: PayloadKey,
    },
}

/// A read of an encrypted object: the chunks to fetch and the plaintext to keep of them.
struct SealedRead {
    span: Range<u64>,
    first: u64,
    skip: usize,
    len: usize,
    plain_len: u64,
    key: PayloadKey,
}

pub struct SealedArchive {
    inner: Box<dyn Archive>,
    crypt: Arc<SiteCrypt>,
    opened: Mutex<HashMap<String, Arc<Opened>>>,
}

impl SealedArchive {
    pub fn new(inner: Box<dyn Archive>, crypt: Arc<SiteCrypt>) -> Self {
        SealedArchive {
            inner,
            crypt,
            opened: Mutex::new(HashMap::new()),
        }
    }

    fn key_error(&self, key: &str, message: String) -> StoreError {
        StoreError::encryption(self.info(), key, message)
    }

    fn bad(&self, key: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::undecryptable(self.info(), key, e)
    }

    /// How to read plaintext `range` of `key`: `None` for a plain object (read as it is),
    /// else the chunks that cover the range and how to cut them.
    async fn plan_read(
        &self,
        key: &str,
        range: &Range<u64>,
    ) -> Result<Option<SealedRead>, StoreError> {
        let Opened::Sealed {
            head_len,
            plain_len,
            key: pkey,
        } = &*self.open(key).await?
        else {
            return Ok(None);
        };
        let end = range.end.min(*plain_len);
        let len = end.saturating_sub(range.start);
        let (span, first, skip) = if len == 0 {
            (0..0, 0, 0)
        } else {
            chunk_span(range.start..end, *plain_len, *head_len)
        };
        Ok(Some(SealedRead {
            span,
            first,
            skip: skip as usize,
            len: len as usize,
            plain_len: *plain_len,
            key: pkey.clone(),
        }))
    }

    /// Reads (once per run) whether `key` is encrypted, and its header.
    async fn open(&self, key: &str) -> Result<Arc<Opened>, StoreError> {
        if let Some(o) = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Ok(o.clone());
        }
        let size = self
            .inner
            .stat(key)
            .await?
            .ok_or_else(|| self.bad(key, "the object is not there"))?
            .info
            .size;
        let mut want = 512u64;
        let opened = loop {
            let head = self.inner.read_range(key, 0..want.min(size)).await?;
            if !is_age(&head) {
                break Opened::Plain;
            }
            match parse_header(&head) {
                Ok((h, _)) => {
                    let ids = self
                        .crypt
                        .identities()
                        .map_err(|e| self.key_error(key, e.to_string()))?;
                    let pkey = h
                        .unwrap_with(ids)
                        .map_err(|e| StoreError::unopened(self.info(), key, e))?;
                    let plain_len = plaintext_len(size, h.len)
                        .ok_or_else(|| self.bad(key, DecryptError::Truncated))?;
                    break Opened::Sealed {
                        head_len: h.len,
                        plain_len,
                        key: pkey,
                    };
                }
                Err(HeaderError::Truncated) if want < size && want < 64 << 10 => want *= 4,
                Err(e) => return Err(self.bad(key, e)),
            }
        };
        let opened = Arc::new(opened);
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), opened.clone());
        Ok(opened)
    }
}

#[async_trait]
impl Archive for SealedArchive {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn put(&self, req: PutRequest<'_>) -> Result<PutOutcome, StoreError> {
        self.inner.put(req).await
    }

    /// Written as given: catalogs arrive sealed by the archive step (which records what it
    /// stored), and the site mark stays plain for machines that hold only public keys.
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
        if key == SITE_MARK {
            return self.inner.read_range(key, range).await;
        }
        let Some(r) = self.plan_read(key, &range).await? else {
            return self.inner.read_range(key, range).await;
        };
        if r.len == 0 {
            return Ok(Vec::new());
        }
        let sealed = self.inner.read_range(key, r.span.clone()).await?;
        // A short read keeps its whole chunks: the caller sees fewer bytes and says so.
        let whole = if sealed.len() as u64 == r.span.end - r.span.start {
            sealed.len()
        } else {
            sealed.len() / (CHUNK + 16) as usize * (CHUNK + 16) as usize
        };
        let plain = decrypt_chunks(&r.key, r.first, r.plain_len, &sealed[..whole])
            .map_err(|e| self.bad(key, e))?;
        let end = (r.skip + r.len).min(plain.len());
        Ok(plain.get(r.skip..end).unwrap_or_default().to_vec())
    }

    async fn read_stream(&self, key: &str, range: Range<u64>) -> Result<ByteStream, StoreError> {
        let Some(r) = self.plan_read(key, &range).await? else {
            return self.inner.read_stream(key, range).await;
        };
        if r.len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let inner = self.inner.read_stream(key, r.span).await?;
        let mut dec = RangeDecryptor::new(r.key, r.first, r.plain_len);
        let (mut skip, mut left) = (r.skip, r.len);
        Ok(inner
            .map(move |item| {
                let b = item?;
                let mut out = Vec::with_capacity(b.len());
                dec.update(&b, &mut out).map_err(std::io::Error::other)?;
                let drop = skip.min(out.len());
                skip -= drop;
                let take = left.min(out.len() - drop);
                left -= take;
                Ok(bytes::Bytes::from(out).slice(drop..drop + take))
            })
            .boxed())
    }

    /// The ciphertext is what the store holds and hashes.
    async fn verify_in_place(
        &self,
        key: &str,
    ) -> Result<Option<crate::store::InPlace>, StoreError> {
        self.inner.verify_in_place(key).await
    }

    async fn read_index(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let bytes = self.inner.read_index(key).await?;
        if !is_age(&bytes) {
            return Ok(bytes);
        }
        let ids = self
            .crypt
            .identities()
            .map_err(|e| self.key_error(key, e.to_string()))?;
        decrypt_bytes(ids, &bytes).map_err(|e| match e {
            DecryptError::Header(h) => StoreError::unopened(self.info(), key, h),
            e => self.bad(key, e),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
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
