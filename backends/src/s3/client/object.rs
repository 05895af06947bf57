//! Whole-object calls: PUT (from memory, or streamed from a reader), HEAD with storage class,
//! restore state and checksums, GET of a range, DELETE, RestoreObject, and bucket creation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::Method;

use super::super::xml;
use super::transport::{md5_base64, paced_body, Call, PaceClock, Reply, UNSIGNED_PAYLOAD};
use super::S3Client;
use crate::error::chain;
use crate::object::{http_date, unquote, ObjectInfo};
use crate::requests::RequestType;
use crate::storage_class::{StorageClass, ThawTier};
use crate::BackendError;

/// What HEAD says about an object, S3's own fields included; [`ObjectHead::to_info`] gives
/// the backend-neutral [`ObjectInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// As the server sent it, quotes included.
    pub etag: String,
    /// The `Last-Modified` header (an HTTP date).
    pub last_modified: Option<String>,
    /// `x-amz-storage-class`; S3 omits it for STANDARD, and so do we not: absent means
    /// `STANDARD`.
    pub storage_class: String,
    pub restore: RestoreState,
    /// User metadata (`x-amz-meta-NAME`), names in lower case without the prefix.
    pub metadata: BTreeMap<String, String>,
    /// `x-amz-checksum-sha256` (base64), from [`S3Client::head_object_with_checksum`] on a
    /// server that keeps it. On AWS a server-verified SHA-256 of the object (or, with a `-N`
    /// suffix, a checksum of its parts' checksums); moto keeps the value the client sent,
    /// unchecked.
    pub checksum_sha256: Option<String>,
    /// `x-lomob-verified` (hex), from [`S3Client::head_object_rehashed`] on a lomob
    /// receiver: the SHA-256 of the object's bytes as the receiver read them from its disk
    /// for this request.
    pub rehashed_sha256: Option<String>,
}

impl ObjectHead {
    /// The neutral description of the object at `key`: ETag unquoted, date in Unix seconds,
    /// the SHA-256 lomob stored in its metadata.
    pub fn to_info(&self, key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: self.size,
            etag: Some(unquote(&self.etag)),
            modified: self.last_modified.as_deref().and_then(http_date),
            sha256: self.metadata.get("sha256").cloned(),
        }
    }

    /// The storage class, when it is one lomob knows.
    pub fn class(&self) -> Option<StorageClass> {
        StorageClass::parse(&self.storage_class)
    }

    /// True when a GET would fail until a restore completes.
    pub fn is_frozen(&self) -> bool {
        self.class().is_some_and(StorageClass::needs_thaw)
            && !matches!(self.restore, RestoreState::Restored { .. })
    }
}

/// The thaw state of a cold object, from `x-amz-restore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreState {
    /// No restore was requested (or the object is not cold).
    None,
    /// `ongoing-request="true"`: a thaw is running.
    InProgress,
    /// `ongoing-request="false"`: a readable copy exists until `expiry` (an HTTP date).
    Restored { expiry: Option<String> },
}

impl RestoreState {
    /// Parses the `x-amz-restore` header value.
    pub fn parse(header: Option<&str>) -> RestoreState {
        let Some(h) = header else {
            return RestoreState::None;
        };
        let field = |name: &str| -> Option<String> {
            let start = h.find(&format!("{name}=\""))? + name.len() + 2;
            let end = h[start..].find('"')? + start;
            Some(h[start..end].to_string())
        };
        match field("ongoing-request").as_deref() {
            Some("true") => RestoreState::InProgress,
            Some(_) => RestoreState::Restored {
                expiry: field("expiry-date"),
            },
            None => RestoreState::None,
        }
    }
}

/// What a RestoreObject request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// 202: the thaw was started.
    Accepted,
    /// 200: a restored copy already exists (its expiry was extended).
    AlreadyRestored,
    /// 409 RestoreAlreadyInProgress: an earlier request is still running.
    InProgress,
}

/// What a streamed PUT returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPut {
    /// As the server sent it, quotes included.
    pub etag: String,
    /// Encrypted with SSE-KMS: the ETag is then not the MD5 of the body.
    pub kms: bool,
    /// `x-amz-checksum-sha256` as the server echoed it (base64), when it did: a server that
    /// supports it (AWS) computed it from the bytes it got and refused a mismatch.
    pub checksum_sha256: Option<String>,
}

impl S3Client {
    /// Creates the bucket (tests and first-time setup). An existing bucket of ours is fine.
    pub async fn create_bucket(&self) -> Result<(), BackendError> {
        let mut call = Call::new("CreateBucket", Method::PUT, None, RequestType::Put);
        if self.inner.region != "us-east-1" {
            call = call.body(format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(&self.inner.region)
            ));
        }
        let r = self.execute(call).await?;
        if r.ok() || r.code() == Some("BucketAlreadyOwnedByYou") {
            Ok(())
        } else {
            Err(self.fail("CreateBucket", "", &r))
        }
    }

    /// Writes a whole object in one request (small objects: manifests, catalogs).
    /// Returns its ETag.
    pub async fn put_object(
        &self,
        key: &str,
        body: impl Into<Bytes>,
        metadata: &[(String, String)],
    ) -> Result<String, BackendError> {
        let body: Bytes = body.into();
        let call = Call::new("PutObject", Method::PUT, Some(key), RequestType::Put)
            .header("content-md5", md5_base64(&body))
            .header("content-type", "application/octet-stream")
            .body(body);
        let call = self.class_and_metadata(call, metadata);
        let r = self.execute(call).await?;
        if !r.ok() {
            return Err(self.fail("PutObject", key, &r));
        }
        Ok(r.header("etag").unwrap_or_default().to_string())
    }

    /// Writes an object of `len` bytes in one request from a stream, never holding it in
    /// memory (images up to S3's 5 GiB limit for one PUT). The body is sent as
    /// `UNSIGNED-PAYLOAD`, its SHA-256 being unknown before its last byte; the caller compares
    /// the returned ETag with the MD5 it computed while streaming. Sent once, not retried: a
    /// stream cannot be replayed, so the caller retries by opening its source again. When the
    /// stream yields an error the request is cut short and the server stores nothing. Fails
    /// when no byte moves for the transfer timeout. With `checksum_sha256` (the body's SHA-256,
    /// known before sending), the request carries `x-amz-checksum-sha256` for the server to
    /// check. Returns the ETag, whether the server encrypted with KMS (whose ETags are not
    /// MD5s), and the SHA-256 checksum the server echoed.
    pub async fn put_object_stream<S>(
        &self,
        key: &str,
        len: u64,
        body: S,
        metadata: &[(String, String)],
        checksum_sha256: Option<[u8; 32]>,
    ) -> Result<StreamPut, BackendError>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        use futures::StreamExt;
        let inner = self.inner.clone();
        let timeout = Duration::from_secs(inner.transfer.timeout_secs.max(1));
        let started = tokio::time::Instant::now();
        // Milliseconds since `started` of the last byte handed to the connection.
        let moved = Arc::new(AtomicU64::new(0));
        // The pacer's hold at that moment: what it held since then is not a stall.
        let held_at_move = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(PaceClock::default());
        let body = {
            let (inner, moved, held_at_move, c) = (
                inner.clone(),
                moved.clone(),
                held_at_move.clone(),
                clock.clone(),
            );
            paced_body(body, self.pacer.clone(), clock.clone()).map(move |chunk| {
                if let Ok(b) = &chunk {
                    inner
                        .counters
                        .bytes_sent
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                held_at_move.store(c.held_ns.load(Ordering::Relaxed), Ordering::Relaxed);
                moved.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                chunk
            })
        };
        let mut call = Call::new("PutObject", Method::PUT, Some(key), RequestType::Put)
            .header("content-type", "application/octet-stream")
            .header("content-length", len.to_string());
        if let Some(sha) = checksum_sha256 {
            // The algorithm header too, as AWS's SDKs send it: moto keeps (and echoes) the
            // checksum only with it.
            call = call
                .header("x-amz-sdk-checksum-algorithm", "SHA256")
                .header(
                    "x-amz-checksum-sha256",
                    base64::engine::general_purpose::STANDARD.encode(sha),
                );
        }
        let call = self.class_and_metadata(call, metadata);
        let req = self
            .signed(&call, UNSIGNED_PAYLOAD)
            .await?
            .body(reqwest::Body::wrap_stream(body));
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        tokio::pin!(exchange);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let sent = loop {
            tokio::select! {
                r = &mut exchange => break r,
                _ = tick.tick() => {
                    // Waiting for the pacer is not a stall.
                    let held = clock.held_ns.load(Ordering::Relaxed)
                        .saturating_sub(held_at_move.load(Ordering::Relaxed));
                    let idle = started
                        .elapsed()
                        .saturating_sub(Duration::from_millis(moved.load(Ordering::Relaxed)))
                        .saturating_sub(Duration::from_nanos(held));
                    if idle > timeout && !clock.pacing.load(Ordering::Relaxed) {
                        return Err(self.error(
                            "PutObject",
                            key,
                            None,
                            None,
                            &format!("no progress for {}s", timeout.as_secs()),
                        ));
                    }
                }
            }
        };
        let (status, headers, body) = sent.map_err(|e| {
            self.error(
                "PutObject",
                key,
                None,
                None,
                &format!("request failed: {}", chain(&e)),
            )
        })?;
        let r = Reply::new(status, headers, body);
        if !r.ok() {
            return Err(self.fail("PutObject", key, &r));
        }
        Ok(StreamPut {
            etag: r.header("etag").unwrap_or_default().to_string(),
            kms: r
                .header("x-amz-server-side-encryption")
                .is_some_and(|v| v.starts_with("aws:kms")),
            checksum_sha256: r.header("x-amz-checksum-sha256").map(str::to_string),
        })
    }

    /// HEAD: size, ETag, storage class, restore state and user metadata.
    pub async fn head_object(&self, key: &str) -> Result<ObjectHead, BackendError> {
        self.head(key, false, false).await
    }

    /// HEAD with `x-amz-checksum-mode: ENABLED`: also the object's SHA-256 checksum, when it
    /// was stored with one ([`ObjectHead::checksum_sha256`]).
    pub async fn head_object_with_checksum(&self, key: &str) -> Result<ObjectHead, BackendError> {
        self.head(key, true, false).await
    }

    /// On a lomob receiver (`lomob serve`): HEAD with the SHA-256 taken on receipt and the
    /// SHA-256 of the bytes the receiver reads from its disk now
    /// ([`ObjectHead::rehashed_sha256`]). No object byte crosses the network.
    pub async fn head_object_rehashed(&self, key: &str) -> Result<ObjectHead, BackendError> {
        self.head(key, true, true).await
    }

    async fn head(
        &self,
        key: &str,
        checksum_mode: bool,
        rehash: bool,
    ) -> Result<ObjectHead, BackendError> {
        let mut call = Call::new("HeadObject", Method::HEAD, Some(key), RequestType::Head);
        if checksum_mode {
            call = call.header("x-amz-checksum-mode", "ENABLED");
        }
        if rehash {
            call = call.header("x-lomob-verify", "sha256");
        }
        let r = self.execute(call).await?;
        if !r.ok() {
            return Err(self.fail("HeadObject", key, &r));
        }
        let metadata = r
            .headers
            .iter()
            .filter_map(|(k, v)| {
                let name = k.as_str().strip_prefix("x-amz-meta-")?;
                Some((name.to_string(), v.to_str().ok()?.to_string()))
            })
            .collect();
        Ok(ObjectHead {
            size: r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: r.header("etag").unwrap_or_default().to_string(),
            last_modified: r.header("last-modified").map(str::to_string),
            storage_class: r
                .header("x-amz-storage-class")
                .unwrap_or("STANDARD")
                .to_string(),
            restore: RestoreState::parse(r.header("x-amz-restore")),
            metadata,
            checksum_sha256: r.header("x-amz-checksum-sha256").map(str::to_string),
            rehashed_sha256: r.header("x-lomob-verified").map(str::to_string),
        })
    }

    /// Reads an object, or the byte range `start..end` of it.
    pub async fn get_object(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, BackendError> {
        let mut call = Call::new("GetObject", Method::GET, Some(key), RequestType::Get);
        if let Some(r) = range {
            if r.end <= r.start {
                return Ok(Bytes::new());
            }
            call = call.header("range", format!("bytes={}-{}", r.start, r.end - 1));
        }
        let r = self.execute(call).await?;
        if !r.ok() {
            return Err(self.fail("GetObject", key, &r));
        }
        Ok(r.body)
    }

    /// Deletes an object. Deleting a missing object succeeds, as in S3.
    pub async fn delete_object(&self, key: &str) -> Result<(), BackendError> {
        let r = self
            .execute(Call::new(
                "DeleteObject",
                Method::DELETE,
                Some(key),
                RequestType::Delete,
            ))
            .await?;
        if r.ok() || r.code() == Some("NoSuchKey") {
            Ok(())
        } else {
            Err(self.fail("DeleteObject", key, &r))
        }
    }

    /// Asks S3 to thaw a Glacier or Deep Archive object for `days` days.
    pub async fn restore_object(
        &self,
        key: &str,
        days: u32,
        tier: ThawTier,
    ) -> Result<RestoreOutcome, BackendError> {
        let tier = match tier {
            ThawTier::Bulk => "Bulk",
            ThawTier::Standard => "Standard",
            ThawTier::Expedited => "Expedited",
        };
        let body = xml::restore_body(days.max(1), tier);
        let call = Call::new("RestoreObject", Method::POST, Some(key), RequestType::Post)
            .query("restore", "")
            .header("content-md5", md5_base64(body.as_bytes()))
            .header("content-type", "application/xml")
            .body(body);
        let r = self.execute(call).await?;
        match r.status.as_u16() {
            202 if r.ok() => Ok(RestoreOutcome::Accepted),
            200 if r.ok() => Ok(RestoreOutcome::AlreadyRestored),
            409 if r.code() == Some("RestoreAlreadyInProgress") => Ok(RestoreOutcome::InProgress),
            _ => Err(self.fail("RestoreObject", key, &r)),
        }
    }
}
