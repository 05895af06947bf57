//! Profile section for `kind = "s3"` and `kind = "glacier"` (the same connection settings;
//! `glacier` adds a cold storage class and thaw settings).

use serde::{Deserialize, Serialize};

use crate::storage_class::{StorageClass, ThawTier};
use crate::{ByteSize, Secret};

/// An S3-compatible bucket.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name. Required.
    pub bucket: String,
    /// Service URL, e.g. `https://s3.us-west-004.backblazeb2.com` or
    /// `https://<account>.r2.cloudflarestorage.com`. Default: AWS for the region.
    pub endpoint: Option<String>,
    /// Region. Default `us-east-1`; Cloudflare R2 uses `auto`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id. When both keys are absent, the usual AWS environment and
    /// `~/.aws` files are used.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Prefix inside the bucket under which lomob writes. Default `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Address the bucket as `bucket.endpoint` instead of `endpoint/bucket`. Default false
    /// (path style works with MinIO, B2, R2 and AWS alike).
    #[serde(default)]
    pub virtual_host_style: bool,
    /// Storage class for every object written. For `s3` default `STANDARD`; for `glacier`
    /// default `DEEP_ARCHIVE` (`GLACIER` and `GLACIER_IR` are accepted).
    pub storage_class: Option<StorageClass>,
    /// A free allowance staging should stay under (for example 10GB on B2 or R2).
    pub free_quota: Option<ByteSize>,
    /// `glacier` only: retrieval tier used when thawing (bulk, standard, expedited).
    /// Default bulk: the cheapest, 12 to 48 hours on Deep Archive.
    pub thaw_tier: Option<ThawTier>,
    /// `glacier` only: days a thawed copy stays readable. Default 7.
    pub thaw_days: Option<u32>,
    /// Multipart part size for large uploads. Default 256MiB: one request per part is billed,
    /// so parts are as large as still allows resuming after a failure.
    pub part_size: Option<ByteSize>,
    /// Objects up to this size (images, catalogs) go up in one streamed PUT: one request,
    /// the fewest an image can cost, but a failed PUT is sent again from its first byte.
    /// Larger objects use resumable multipart uploads in `part-size` parts (one request per
    /// part plus two), which continue where they stopped. Default 5GiB, S3's limit for one
    /// PUT; set it lower (for example "0") on a slow uplink to make every image resumable.
    pub single_put_max: Option<ByteSize>,
    /// A peer receiver's certificate (`lomob serve`), as `sha256:<64 hex digits>`: only
    /// this certificate is accepted, whoever signed it. `lomob site pair` writes it.
    pub tls_fingerprint: Option<String>,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_prefix() -> String {
    "/".to_string()
}
