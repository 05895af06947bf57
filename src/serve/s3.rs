//! The S3 operations a receiver answers, over [`ObjectStore`], each confined to the caller's
//! bucket.
//!
//! `s3s` parses the requests and checks their SigV4 signatures (with the secrets the server
//! gives it); this module decides what an authenticated sender may do: only its own bucket,
//! within its quota, under the store's rules (verified bytes, append-only `archive/`). It
//! implements exactly what lomob's own S3 stage and archive call, plus the few calls generic
//! clients make first (ListBuckets, HeadBucket, GetBucketLocation, CreateBucket of its own
//! bucket); every other operation answers `NotImplemented` (the `s3s::S3` default).
//!
//! Errors name the key and what to do; access secrets are never logged (only access keys
//! reach this module).

use base64::Engine as _;
use bytes::Bytes;
use futures::Stream;
use s3s::dto::*;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::store::{
    complete_sha256, system_time, ByteRange, CreateUpload, Declared, FileStream, ListPage,
    ListQuery, ObjectMeta, ObjectStore, PutRequest, StoreError,
};
use super::{Grant, Senders};

/// Most keys, parts or uploads one listing returns (S3's own limit).
const MAX_LIST: usize = 1000;

/// A HEAD with this header asks the receiver to hash the object from its disk now.
pub const VERIFY_HEADER: &str = "x-lomob-verify";
/// The answer: the SHA-256 (hex) of the object's bytes as they are now.
pub const VERIFIED_HEADER: &str = "x-lomob-verified";

/// The S3 service of `lomob serve`.
pub struct Receiver {
    store: Arc<ObjectStore>,
    senders: Arc<dyn Senders>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// An authenticated sender and what it may touch.
struct Caller {
    access_key: String,
    grant: Grant,
}

impl Receiver {
    pub fn new(store: Arc<ObjectStore>, senders: Arc<dyn Senders>) -> Receiver {
        Receiver { store, senders }
    }

    /// The SHA-256 (hex) of the object's bytes as they are on disk now.
    async fn rehash(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        use futures::StreamExt as _;
        use sha2::Digest as _;
        let mut reader = self.store.get(bucket, key, None).await?;
        let mut h = sha2::Sha256::new();
        while let Some(chunk) = reader.stream.next().await {
            let chunk = chunk.map_err(|e| StoreError::io(format!("reading {key:?}"), e))?;
            h.update(&chunk);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Who is calling, refusing anonymous requests, unknown keys and other buckets.
    fn caller<T>(&self, req: &S3Request<T>, bucket: Option<&str>) -> S3Result<Caller> {
        let Some(cred) = req.credentials.as_ref() else {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "this receiver answers only signed requests from paired senders",
            ));
        };
        let Some(grant) = self.senders.grant(&cred.access_key) else {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "this access key is not paired with this receiver (pair again with `lomob serve pair`)",
            ));
        };
        if let Some(b) = bucket {
            if b != grant.bucket {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    format!("this key may use only bucket {:?}", grant.bucket),
                ));
            }
        }
        // The sender's bucket exists from its first request on, whatever happened at pairing.
        if !self.store.has_bucket(&grant.bucket) {
            self.store.ensure_bucket(&grant.bucket).map_err(|e| {
                internal(format!(
                    "the receiver could not create the folder of bucket {:?}: {e}",
                    grant.bucket
                ))
            })?;
        }
        Ok(Caller {
            access_key: cred.access_key.clone(),
            grant,
        })
    }

    /// The S3 answer for a store failure, with the quota spelt out for the sender's owner.
    fn error(&self, caller: &Caller, e: StoreError) -> S3Error {
        let msg = e.to_string();
        let code = match &e {
            StoreError::InvalidKey { .. } => S3ErrorCode::InvalidArgument,
            StoreError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
            StoreError::NoSuchBucket { .. } => S3ErrorCode::NoSuchBucket,
            StoreError::NoSuchUpload { .. } => S3ErrorCode::NoSuchUpload,
            StoreError::AppendOnly { .. } => S3ErrorCode::AccessDenied,
            StoreError::DigestRequired { .. } => S3ErrorCode::InvalidRequest,
            StoreError::InvalidDigest { .. } => S3ErrorCode::InvalidDigest,
            StoreError::BadDigest { header, .. } if *header == "x-amz-content-sha256" => {
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into())
            }
            StoreError::BadDigest { .. } => S3ErrorCode::BadDigest,
            StoreError::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
            StoreError::Body { reason, .. } if reason.contains("Checksum") => {
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into())
            }
            StoreError::Body { .. } => S3ErrorCode::IncompleteBody,
            StoreError::InvalidPart { .. } => S3ErrorCode::InvalidPart,
            StoreError::InvalidPartOrder { .. } => S3ErrorCode::InvalidPartOrder,
            StoreError::UploadBusy { .. } => S3ErrorCode::OperationAborted,
            StoreError::InvalidRange { .. } => S3ErrorCode::InvalidRange,
            StoreError::QuotaExceeded {
                quota,
                used,
                needed,
            } => {
                let msg = format!(
                    "the quota of {} for sender {:?} is full ({} used, this write needs {} more); \
                     ask the receiver's owner to raise it (`lomob serve quota {:?} SIZE` on the receiver)",
                    gb(*quota),
                    caller.grant.name,
                    gb(*used),
                    gb(*needed),
                    caller.grant.name
                );
                return storage_error("QuotaExceeded", msg);
            }
            StoreError::DiskFull => {
                let free = self
                    .store
                    .free_space()
                    .map(|f| format!(" ({} free)", gb(f)))
                    .unwrap_or_default();
                return storage_error(
                    "InsufficientStorage",
                    format!("the receiver's disk is full{free}; ask the receiver's owner to free space on it"),
                );
            }
            StoreError::Io { .. } => {
                tracing::warn!(sender = %caller.grant.name, error = %msg, "a request failed on the receiver's disk");
                S3ErrorCode::InternalError
            }
        };
        let mut err = S3Error::with_message(code, msg);
        if matches!(err.code(), S3ErrorCode::Custom(_)) {
            // A custom code has no status of its own; these are the client's fault.
            err.set_status_code(http::StatusCode::BAD_REQUEST);
        }
        err
    }

    /// One page of a listing (none asked for: an empty page).
    fn page(&self, c: &Caller, bucket: &str, q: &ListQuery) -> S3Result<ListPage> {
        if q.max == 0 {
            return Ok(ListPage::default());
        }
        self.store.list(bucket, q).map_err(|e| self.error(c, e))
    }

    fn wrote(&self, caller: &Caller) {
        self.senders.wrote(&caller.access_key);
    }
}

fn common_prefixes(prefixes: Vec<String>) -> Vec<CommonPrefix> {
    prefixes
        .into_iter()
        .map(|p| CommonPrefix { prefix: Some(p) })
        .collect()
}

fn internal(msg: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, msg)
}

/// A 507 with a code lomob's sender recognises.
fn storage_error(code: &'static str, msg: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg);
    e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
    e
}

/// Bytes as "199.8 GB", "400.0 KB" (decimal, as disks are sold).
fn gb(bytes: u64) -> String {
    lomob_backends::ByteSize(bytes).to_string()
}

fn etag(meta_etag: &str) -> ETag {
    ETag::Strong(meta_etag.to_owned())
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(system_time(ms))
}

fn to_metadata(m: &BTreeMap<String, String>) -> Option<Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn from_metadata(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

fn header<'a, T>(req: &'a S3Request<T>, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `x-amz-content-sha256` when it is a digest of the payload (not a streaming or unsigned
/// marker).
fn content_sha256<T>(req: &S3Request<T>) -> Option<String> {
    header(req, "x-amz-content-sha256")
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

fn non_negative(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

fn max_count(n: Option<i32>) -> usize {
    n.and_then(|n| usize::try_from(n).ok())
        .unwrap_or(MAX_LIST)
        .min(MAX_LIST)
}

fn empty_body() -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn object_entry(m: &ObjectMeta) -> Object {
    Object {
        key: Some(m.key.clone()),
        size: Some(to_i64(m.size)),
        e_tag: Some(etag(&m.etag)),
        last_modified: Some(timestamp(m.last_modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Object::default()
    }
}

/// Continuation tokens are the last key (or common prefix) returned, base64url: opaque to
/// clients, as S3's are, and any key survives the XML.
fn encode_token(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "the continuation token was not made by this receiver",
            )
        })
}

/// A file range with its exact length, so the response carries a Content-Length.
struct SizedBody {
    inner: FileStream,
    left: u64,
}

impl Stream for SizedBody {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let p = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(b))) = &p {
            self.left = self.left.saturating_sub(b.len() as u64);
        }
        p.map(|o| o.map(|r| r.map_err(s3s::StdError::from)))
    }
}

impl ByteStream for SizedBody {
    fn remaining_length(&self) -> RemainingLength {
        usize::try_from(self.left)
            .map_or_else(|_| RemainingLength::unknown(), RemainingLength::new_exact)
    }
}

#[async_trait::async_trait]
impl S3 for Receiver {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let content_sha256 = content_sha256(&req);
        let input = req.input;
        let metadata = from_metadata(input.metadata);
        let put = PutRequest {
            key: input.key,
            content_type: input.content_type,
            declared: Declared {
                content_md5: input.content_md5,
                checksum_sha256: input.checksum_sha256,
                content_sha256,
                meta_sha256: metadata.get("sha256").cloned(),
            },
            metadata,
            content_length: non_negative(input.content_length),
            quota: c.grant.quota,
        };
        let body = input.body.unwrap_or_else(empty_body);
        let meta = self
            .store
            .put(&input.bucket, put, body)
            .await
            .map_err(|e| self.error(&c, e))?;
        self.wrote(&c);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta.etag)),
            size: Some(to_i64(meta.size)),
            ..PutObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let input = req.input;
        let range = input.range.map(|r| match r {
            Range::Int { first, last } => ByteRange::From { first, last },
            Range::Suffix { length } => ByteRange::Suffix(length),
        });
        let r = self
            .store
            .get(&input.bucket, &input.key, range)
            .await
            .map_err(|e| self.error(&c, e))?;
        let len = r.end - r.start;
        let m = &r.meta;
        Ok(S3Response::new(GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(to_i64(len)),
            content_range: r
                .ranged
                .then(|| format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), m.size)),
            content_type: m.content_type.clone(),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.last_modified_ms)),
            metadata: to_metadata(&m.metadata),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            body: Some(StreamingBlob::new(SizedBody {
                inner: r.stream,
                left: len,
            })),
            ..GetObjectOutput::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let m = self
            .store
            .head(&req.input.bucket, &req.input.key)
            .map_err(|e| self.error(&c, e))?;
        let checksum = req
            .input
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let sha = checksum
            .then(|| {
                super::store::parse_sha256_hex(&m.sha256)
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            })
            .flatten();
        // `check --deep` of a lomob sender: the receiver reads the object from its own disk
        // and says what its bytes hash to now, so nothing crosses the relative's uplink.
        let mut headers = http::HeaderMap::new();
        if req.headers.contains_key(VERIFY_HEADER) {
            let now = self
                .rehash(&req.input.bucket, &req.input.key)
                .await
                .map_err(|e| self.error(&c, e))?;
            if now != m.sha256 {
                tracing::warn!(
                    sender = %c.grant.name,
                    key = %req.input.key,
                    "an object no longer has the bytes it was received with (SHA-256 {now}, received as {}): this disk damaged it",
                    m.sha256
                );
            }
            if let Ok(v) = http::HeaderValue::from_str(&now) {
                headers.insert(VERIFIED_HEADER, v);
            }
        }
        let mut response = S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(to_i64(m.size)),
            content_type: m.content_type.clone(),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.last_modified_ms)),
            metadata: to_metadata(&m.metadata),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_type: sha
                .as_ref()
                .map(|_| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            checksum_sha256: sha,
            ..HeadObjectOutput::default()
        });
        response.headers = headers;
        Ok(response)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let existed = self
            .store
            .delete(&req.input.bucket, &req.input.key)
            .await
            .map_err(|e| self.error(&c, e))?;
        if existed {
            self.wrote(&c);
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors, mut any) = (Vec::new(), Vec::new(), false);
        for o in req.input.delete.objects {
            match self.store.delete(&req.input.bucket, &o.key).await {
                Ok(existed) => {
                    any |= existed;
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..DeletedObject::default()
                        });
                    }
                }
                Err(e) => {
                    let e = self.error(&c, e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_owned()),
                        key: Some(o.key),
                        message: e.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        if any {
            self.wrote(&c);
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let input = req.input;
        let max = max_count(input.max_keys);
        let after = match &input.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => input.start_after.clone(),
        };
        let q = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after,
            max,
        };
        let page = self.page(&c, &input.bucket, &q)?;
        let count = page.objects.len() + page.common_prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(i32::try_from(max).unwrap_or(1000)),
            key_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_after.as_deref().map(encode_token),
            contents: Some(page.objects.iter().map(object_entry).collect()),
            common_prefixes: Some(common_prefixes(page.common_prefixes)),
            encoding_type: input.encoding_type,
            ..ListObjectsV2Output::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let input = req.input;
        let max = max_count(input.max_keys);
        let q = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max,
        };
        let page = self.page(&c, &input.bucket, &q)?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(page.truncated),
            next_marker: page.next_after,
            contents: Some(page.objects.iter().map(object_entry).collect()),
            common_prefixes: Some(common_prefixes(page.common_prefixes)),
            encoding_type: input.encoding_type,
            ..ListObjectsOutput::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let input = req.input;
        let create = CreateUpload {
            key: input.key.clone(),
            content_type: input.content_type,
            metadata: from_metadata(input.metadata),
        };
        let id = self
            .store
            .create_upload(&input.bucket, create)
            .await
            .map_err(|e| self.error(&c, e))?;
        self.wrote(&c);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let content_sha256 = content_sha256(&req);
        let input = req.input;
        let declared = Declared {
            content_md5: input.content_md5,
            checksum_sha256: input.checksum_sha256.clone(),
            content_sha256,
            meta_sha256: None,
        };
        let part_number = u32::try_from(input.part_number).unwrap_or(0);
        let body = input.body.unwrap_or_else(empty_body);
        let part = self
            .store
            .put_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                part_number,
                non_negative(input.content_length),
                &declared,
                c.grant.quota,
                body,
            )
            .await
            .map_err(|e| self.error(&c, e))?;
        self.wrote(&c);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&part.etag)),
            checksum_sha256: input.checksum_sha256,
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let lomob_sha = header(&req, "x-lomob-sha256").map(str::to_owned);
        let input = req.input;
        let full_object = input
            .checksum_type
            .as_ref()
            .is_some_and(|t| t.as_str() == ChecksumType::FULL_OBJECT);
        let whole = complete_sha256(
            lomob_sha.as_deref(),
            input.checksum_sha256.as_deref().filter(|_| full_object),
        );
        let listed: Vec<(u32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let n = p
                    .part_number
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0);
                (n, p.e_tag.map(ETag::into_value).unwrap_or_default())
            })
            .collect();
        let meta = self
            .store
            .complete_upload(
                &input.bucket,
                &input.key,
                &input.upload_id,
                &listed,
                whole.as_deref(),
                c.grant.quota,
            )
            .await
            .map_err(|e| self.error(&c, e))?;
        self.wrote(&c);
        let sha = super::store::parse_sha256_hex(&meta.sha256)
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b));
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&meta.etag)),
            checksum_type: full_object
                .then(|| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            checksum_sha256: sha.filter(|_| full_object),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let i = &req.input;
        self.store
            .abort_upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(|e| self.error(&c, e))?;
        self.wrote(&c);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let input = req.input;
        let marker = input
            .part_number_marker
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let max = max_count(input.max_parts).max(1);
        let page = self
            .store
            .list_parts(&input.bucket, &input.key, &input.upload_id, marker, max)
            .map_err(|e| self.error(&c, e))?;
        let parts = page
            .parts
            .iter()
            .map(|p| Part {
                part_number: i32::try_from(p.part_number).ok(),
                size: Some(to_i64(p.size)),
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(timestamp(p.last_modified_ms)),
                ..Part::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(i32::try_from(max).unwrap_or(1000)),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: page.next_marker.and_then(|n| i32::try_from(n).ok()),
            is_truncated: Some(page.truncated),
            parts: Some(parts),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..ListPartsOutput::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let c = self.caller(&req, Some(&req.input.bucket))?;
        let input = req.input;
        let max = max_count(input.max_uploads).max(1);
        let page = self
            .store
            .list_uploads(
                &input.bucket,
                input.prefix.as_deref().unwrap_or(""),
                input.key_marker.as_deref().filter(|m| !m.is_empty()),
                input.upload_id_marker.as_deref().filter(|m| !m.is_empty()),
                max,
            )
            .map_err(|e| self.error(&c, e))?;
        let uploads = page
            .uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.created_ms)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..MultipartUpload::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(page.truncated),
            next_key_marker: page.next_key_marker,
            next_upload_id_marker: page.next_upload_id_marker,
            uploads: Some(uploads),
            ..ListMultipartUploadsOutput::default()
        }))
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let c = self.caller(&req, None)?;
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(vec![Bucket {
                name: Some(c.grant.bucket),
                ..Bucket::default()
            }]),
            ..ListBucketsOutput::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.caller(&req, Some(&req.input.bucket))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        // Creating one's own bucket succeeds (it exists from the first request on).
        self.caller(&req, Some(&req.input.bucket))?;
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.caller(&req, Some(&req.input.bucket))?;
        // Empty means us-east-1, the region senders sign for.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }
}
