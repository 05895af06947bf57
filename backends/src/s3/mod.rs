//! The `s3` backend: any S3-compatible store (AWS, Backblaze B2, Cloudflare R2, MinIO),
//! through OpenDAL's s3 service. The `glacier` kind reuses this connection code.
//!
//! OpenDAL covers everyday reads, writes and listings. What it lacks for cold archives lives
//! next to it, as signed S3 requests of our own:
//! - [`client`]: [`S3Client`], the calls OpenDAL 0.59 does not expose (multipart with our own
//!   upload id, ListParts, ListMultipartUploads, RestoreObject, HEAD with storage class and
//!   restore state), signed by `reqsign` with the AWS credential chain, with retries,
//!   timeouts, bandwidth pacing and per-type request counters;
//! - [`upload`]: large objects in one streamed PUT, or as a multipart upload that resumes
//!   after a crash from an [`crate::journal::UploadJournal`]; both read the source
//!   ([`crate::source`]) once, in order; and orphan uploads are found so none is left
//!   billing;
//! - `xml`: the request and response bodies.

pub mod client;
mod config;
pub mod upload;
mod xml;

pub use client::{
    MultipartUpload, ObjectHead, PartBody, PartInfo, RestoreOutcome, RestoreState, S3Client,
    StreamPut,
};
pub use config::S3Config;
pub use upload::{
    abort_uploads, effective_part_size, find_orphans, put_streamed, upload_in_parts,
    upload_resumable, UploadOutcome, UploadProgress,
};

use crate::storage_class::StorageClass;
use crate::{build, reveal, BackendError, ByteSize, Capabilities, ChecksumKind};

/// OpenDAL's transport for a pinned receiver: a certificate that is not the pinned one is
/// a permanent refusal, not a connection hiccup for the retry layer to try again.
struct PinnedTransport(opendal_http_transport_reqwest::ReqwestTransport);

impl opendal::HttpTransport for PinnedTransport {
    async fn fetch(
        &self,
        req: http::Request<opendal::Buffer>,
    ) -> opendal::Result<http::Response<opendal::HttpBody>> {
        self.0.fetch(req).await.map_err(|e| {
            let text = format!("{e:?}");
            match text.find(crate::tls::PIN_MISMATCH) {
                Some(at) => opendal::Error::new(
                    opendal::ErrorKind::PermissionDenied,
                    text[at..]
                        .split(['"', '\\'])
                        .next()
                        .unwrap_or(crate::tls::PIN_MISMATCH),
                ),
                None => e,
            }
        })
    }
}

/// S3 allows at most this many parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's smallest part (except the last).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART: u64 = 5 << 30;
/// Our default part: few billed requests per image, still small enough to resume cheaply.
pub const DEFAULT_PART: ByteSize = ByteSize::mib(256);

impl S3Config {
    pub fn validate(&self, kind: &'static str) -> Result<(), BackendError> {
        if self.bucket.trim().is_empty() {
            return Err(BackendError::invalid(kind, "`bucket` is empty"));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(BackendError::invalid(
                kind,
                "give both `access-key-id` and `secret-access-key`, or neither (to use the AWS environment)",
            ));
        }
        if let Some(ep) = &self.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(BackendError::invalid(
                    kind,
                    format!("`endpoint` {ep:?} must start with https:// (or http:// for a local server)"),
                ));
            }
        }
        if let Some(p) = self.part_size {
            if p.bytes() < MIN_PART || p.bytes() > MAX_PART {
                return Err(BackendError::invalid(
                    kind,
                    format!("`part-size` {p} is outside S3's limits (5MiB to 5GiB)"),
                ));
            }
        }
        if let Some(p) = self.single_put_max {
            if p.bytes() > MAX_PART {
                return Err(BackendError::invalid(
                    kind,
                    format!("`single-put-max` {p} is above S3's limit for one PUT (5GiB)"),
                ));
            }
        }
        if let Some(fp) = &self.tls_fingerprint {
            crate::tls::parse_fingerprint(fp)
                .map_err(|e| BackendError::invalid(kind, format!("`tls-fingerprint`: {e}")))?;
            if !self
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("https://"))
            {
                return Err(BackendError::invalid(
                    kind,
                    "`tls-fingerprint` pins an https:// `endpoint`; give the receiver's https:// address",
                ));
            }
        }
        if kind == "s3" {
            if self.thaw_tier.is_some() || self.thaw_days.is_some() {
                return Err(BackendError::invalid(
                    kind,
                    "`thaw-tier` and `thaw-days` apply only to kind = \"glacier\"",
                ));
            }
            if self.storage_class.is_some_and(|c| c.is_cold()) {
                return Err(BackendError::invalid(
                    kind,
                    "a cold `storage-class` needs kind = \"glacier\", which knows how to thaw and never deletes early",
                ));
            }
        }
        Ok(())
    }

    /// The pinned certificate, when the profile names one (checked by [`Self::validate`]).
    pub fn pin(&self) -> Option<crate::tls::Fingerprint> {
        self.tls_fingerprint
            .as_deref()
            .and_then(|f| crate::tls::parse_fingerprint(f).ok())
    }

    /// A reqwest client builder that trusts only the pinned certificate, when there is one.
    pub fn http_builder(
        &self,
        kind: &'static str,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, BackendError> {
        match self.pin() {
            Some(pin) => {
                crate::tls::pin_client(builder, pin).map_err(|e| BackendError::invalid(kind, e))
            }
            None => Ok(builder),
        }
    }

    /// The storage class written, with the kind's default.
    pub fn effective_class(&self, default: StorageClass) -> StorageClass {
        self.storage_class.unwrap_or(default)
    }

    pub fn part_size(&self) -> ByteSize {
        self.part_size.unwrap_or(DEFAULT_PART)
    }

    /// The largest object sent in one PUT (see `single-put-max`).
    pub fn single_put_max(&self) -> ByteSize {
        self.single_put_max.unwrap_or(ByteSize(MAX_PART))
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            free_quota: self.free_quota,
            storage_class: Some(self.effective_class(StorageClass::Standard).as_str().into()),
            ..Capabilities::hot(ChecksumKind::Md5Etag)
        }
    }

    /// Builds the operator; `class` is written as the default storage class of every object.
    pub(crate) fn operator_with_class(
        &self,
        kind: &'static str,
        class: StorageClass,
    ) -> Result<opendal::Operator, BackendError> {
        let mut o = vec![
            ("bucket", self.bucket.clone()),
            ("region", self.region.clone()),
            ("root", self.prefix.clone()),
            ("default_storage_class", class.as_str().to_string()),
        ];
        if let Some(ep) = &self.endpoint {
            o.push(("endpoint", ep.clone()));
        }
        if let (Some(id), Some(key)) = (&self.access_key_id, &self.secret_access_key) {
            o.push(("access_key_id", reveal(kind, id)?));
            o.push(("secret_access_key", reveal(kind, key)?));
            // Explicit keys mean the profile is the whole truth: do not mix in ~/.aws.
            o.push(("disable_config_load", "true".into()));
        }
        if self.virtual_host_style {
            o.push(("enable_virtual_host_style", "true".into()));
        }
        let op = build(kind, "s3", o)?;
        if self.pin().is_none() {
            return Ok(op);
        }
        // OpenDAL's own requests (listings, reads) go through the pinned client too.
        let client = self
            .http_builder(kind, reqwest::Client::builder())?
            .build()
            .map_err(|e| BackendError::invalid(kind, format!("HTTP client: {e}")))?;
        let transport = opendal::HttpTransporter::new(PinnedTransport(
            opendal_http_transport_reqwest::ReqwestTransport::new(client),
        ));
        let ctx = op.context().clone();
        Ok(op.with_context(ctx.with_http_transport(transport)))
    }

    pub fn operator(&self, kind: &'static str) -> Result<opendal::Operator, BackendError> {
        self.operator_with_class(kind, self.effective_class(StorageClass::Standard))
    }
}
