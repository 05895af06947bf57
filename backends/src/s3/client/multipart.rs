//! Multipart upload calls: create, upload a part (checked by Content-MD5 and its ETag),
//! list parts, complete, abort, and list the unfinished uploads of a bucket.

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use reqwest::Method;
use serde::Serialize;

use super::super::xml;
use super::transport::{sha256_hex, Call, UNSIGNED_PAYLOAD};
use super::S3Client;
use crate::requests::RequestType;
use crate::BackendError;

/// One part of a multipart upload as the server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// An unfinished multipart upload as ListMultipartUploads reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MultipartUpload {
    /// Relative to the client's prefix.
    pub key: String,
    pub upload_id: String,
    /// When it was started, as the server wrote it.
    pub initiated: String,
}

/// A part's bytes with the digests its request needs. Computing them is CPU work (hundreds of
/// MiB per part), so build it on a blocking thread.
#[derive(Clone)]
pub struct PartBody {
    pub data: Bytes,
    /// Base64 MD5 for `Content-MD5` (the server checks the bytes it got).
    pub md5_base64: String,
    /// Hex MD5, which is what S3 returns as a part's ETag.
    pub md5_hex: String,
    /// Hex SHA-256 for the SigV4 payload hash, or `UNSIGNED-PAYLOAD`.
    pub sha256_hex: String,
}

impl PartBody {
    pub fn new(data: impl Into<Bytes>) -> PartBody {
        let data = data.into();
        let md5 = Md5::digest(&data);
        PartBody {
            md5_base64: base64::engine::general_purpose::STANDARD.encode(md5),
            md5_hex: hex::encode(md5),
            sha256_hex: sha256_hex(&data),
            data,
        }
    }
}

impl PartBody {
    /// A part whose MD5 was computed while it was read: sent with Content-MD5 (which the
    /// server checks) and an unsigned payload, so its bytes are hashed once, not twice.
    pub fn with_md5(data: Bytes, md5: [u8; 16]) -> PartBody {
        PartBody {
            md5_base64: base64::engine::general_purpose::STANDARD.encode(md5),
            md5_hex: hex::encode(md5),
            sha256_hex: UNSIGNED_PAYLOAD.to_string(),
            data,
        }
    }
}

impl fmt::Debug for PartBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartBody")
            .field("len", &self.data.len())
            .field("md5", &self.md5_hex)
            .finish()
    }
}

impl S3Client {
    /// Starts a multipart upload with the client's storage class and the given user
    /// metadata; returns the upload id.
    pub async fn create_multipart_upload(
        &self,
        key: &str,
        metadata: &[(String, String)],
    ) -> Result<String, BackendError> {
        let call = Call::new(
            "CreateMultipartUpload",
            Method::POST,
            Some(key),
            RequestType::Post,
        )
        .query("uploads", "")
        .header("content-type", "application/octet-stream");
        let call = self.class_and_metadata(call, metadata);
        let r = self.execute(call).await?;
        if !r.ok() {
            return Err(self.fail("CreateMultipartUpload", key, &r));
        }
        let res: xml::InitiateMultipartUploadResult = xml::parse(&r.body)
            .map_err(|e| self.error("CreateMultipartUpload", key, None, None, &e))?;
        Ok(res.upload_id)
    }

    /// Sends one part; returns its ETag. The server checks `Content-MD5`.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        part: &PartBody,
    ) -> Result<String, BackendError> {
        let mut call = Call::new("UploadPart", Method::PUT, Some(key), RequestType::Put)
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id)
            .header("content-md5", part.md5_base64.clone())
            .body(part.data.clone());
        call.body_sha256 = Some(part.sha256_hex.clone());
        let r = self.execute(call).await?;
        if !r.ok() {
            return Err(self.fail("UploadPart", key, &r));
        }
        let Some(etag) = r.header("etag") else {
            return Err(self.error(
                "UploadPart",
                key,
                Some(r.status.as_u16()),
                None,
                "the server sent no ETag for the part",
            ));
        };
        // A part's ETag is the MD5 the server computed over what it got, unless the bucket
        // encrypts with KMS (then the server checked Content-MD5 instead).
        let kms = r
            .header("x-amz-server-side-encryption")
            .is_some_and(|v| v.starts_with("aws:kms"));
        let got = etag.trim_matches('"');
        let md5_shaped = got.len() == 32 && got.bytes().all(|b| b.is_ascii_hexdigit());
        if md5_shaped && !kms && !got.eq_ignore_ascii_case(&part.md5_hex) {
            return Err(BackendError::Check {
                key: self.full_key(key),
                message: format!(
                    "the server's ETag {etag} for part {number} is not the MD5 {} of the bytes sent",
                    part.md5_hex
                ),
            });
        }
        Ok(etag.to_string())
    }

    /// Lists the parts the server holds for an upload (all pages).
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>, BackendError> {
        self.list_parts_paged(key, upload_id, None).await
    }

    /// [`S3Client::list_parts`] with a page size (S3's default is 1,000), so tests can
    /// exercise the pagination.
    #[doc(hidden)]
    pub async fn list_parts_paged(
        &self,
        key: &str,
        upload_id: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<PartInfo>, BackendError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut call = Call::new("ListParts", Method::GET, Some(key), RequestType::List)
                .query("uploadId", upload_id);
            if let Some(n) = page_size {
                call = call.query("max-parts", n.to_string());
            }
            if let Some(m) = &marker {
                call = call.query("part-number-marker", m.clone());
            }
            let r = self.execute(call).await?;
            if !r.ok() {
                return Err(self.fail("ListParts", key, &r));
            }
            let page: xml::ListPartsResult =
                xml::parse(&r.body).map_err(|e| self.error("ListParts", key, None, None, &e))?;
            parts.extend(page.part.into_iter().map(|p| PartInfo {
                number: p.part_number,
                etag: p.etag,
                size: p.size,
            }));
            match page.next_part_number_marker {
                Some(m) if page.is_truncated && Some(&m) != marker.as_ref() => marker = Some(m),
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    /// Completes an upload from its parts' numbers and ETags (in order); returns the
    /// object's ETag.
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        whole_sha256: Option<&[u8; 32]>,
    ) -> Result<String, BackendError> {
        let body = xml::complete_body(parts);
        let mut call = Call::new(
            "CompleteMultipartUpload",
            Method::POST,
            Some(key),
            RequestType::Post,
        )
        .query("uploadId", upload_id)
        .header("content-type", "application/xml")
        .body(body);
        // A lomob receiver checks the whole object against it before it commits (S3 has
        // no whole-object SHA-256 for multipart uploads; other servers never see it).
        if let Some(sha) = whole_sha256.filter(|_| self.is_peer()) {
            call = call.header("x-lomob-sha256", hex::encode(sha));
        }
        let r = self.execute(call).await?;
        if !r.ok() {
            return Err(self.fail("CompleteMultipartUpload", key, &r));
        }
        let res: xml::CompleteMultipartUploadResult = xml::parse(&r.body)
            .map_err(|e| self.error("CompleteMultipartUpload", key, None, None, &e))?;
        Ok(res.etag)
    }

    /// Aborts an upload, freeing its parts. An upload that is already gone is fine.
    pub async fn abort_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), BackendError> {
        let call = Call::new(
            "AbortMultipartUpload",
            Method::DELETE,
            Some(key),
            RequestType::Delete,
        )
        .query("uploadId", upload_id);
        let r = self.execute(call).await?;
        if r.ok() || r.code() == Some("NoSuchUpload") {
            Ok(())
        } else {
            Err(self.fail("AbortMultipartUpload", key, &r))
        }
    }

    /// Lists unfinished multipart uploads whose key starts with `prefix` (relative to the
    /// client's prefix), all pages.
    pub async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<MultipartUpload>, BackendError> {
        self.list_multipart_uploads_paged(prefix, None).await
    }

    /// [`S3Client::list_multipart_uploads`] with a page size, for tests.
    #[doc(hidden)]
    pub async fn list_multipart_uploads_paged(
        &self,
        prefix: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<MultipartUpload>, BackendError> {
        let full_prefix = self.full_key(prefix);
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new("ListMultipartUploads", Method::GET, None, RequestType::List)
                .query("uploads", "");
            if !full_prefix.is_empty() {
                call = call.query("prefix", full_prefix.clone());
            }
            if let Some(n) = page_size {
                call = call.query("max-uploads", n.to_string());
            }
            if let Some((k, u)) = &markers {
                call = call.query("key-marker", k.clone());
                if !u.is_empty() {
                    call = call.query("upload-id-marker", u.clone());
                }
            }
            let r = self.execute(call).await?;
            if !r.ok() {
                return Err(self.fail("ListMultipartUploads", prefix, &r));
            }
            let page: xml::ListMultipartUploadsResult = xml::parse(&r.body)
                .map_err(|e| self.error("ListMultipartUploads", prefix, None, None, &e))?;
            for u in page.upload {
                // Some servers ignore `prefix`; filter here too.
                if let Some(rel) = u.key.strip_prefix(&full_prefix) {
                    let rel_key = format!("{}{}", prefix.trim_start_matches('/'), rel);
                    out.push(MultipartUpload {
                        key: rel_key,
                        upload_id: u.upload_id,
                        initiated: u.initiated,
                    });
                }
            }
            let next = (
                page.next_key_marker.unwrap_or_default(),
                page.next_upload_id_marker.unwrap_or_default(),
            );
            if !page.is_truncated || next.0.is_empty() || Some(&next) == markers.as_ref() {
                break;
            }
            markers = Some(next);
        }
        Ok(out)
    }
}
