//! What a backend kind can and cannot do, so the engine plans around it instead of failing.
//!
//! Examples: Deep Archive needs a thaw before reads and bills 180 days whatever happens;
//! Google Drive's writer holds a whole object in memory, so big videos skip such a stage and
//! go straight into the next image; a free tier has a quota that staging must stay under.

use serde::Serialize;

use crate::size::ByteSize;

/// How the server lets us check an upload without downloading it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumKind {
    /// No server-side checksum: verify size only (and read back where reads are free).
    None,
    /// An MD5 ETag for single-part objects (S3-compatible servers).
    Md5Etag,
    /// The local file system: we can read the bytes back for free.
    ReadBack,
    /// The provider's own checksum of every stored file, read by lomob's own calls since
    /// OpenDAL's service drops it: Drive's SHA-256, OneDrive's QuickXorHash.
    ProviderHash,
}

/// The facts the engine needs about one configured backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Capabilities {
    /// Reads fail until a restore (thaw) request has completed.
    pub needs_thaw: bool,
    /// Deleting or overwriting an object younger than this is billed as if it were kept.
    pub min_storage_days: u32,
    /// The writer buffers the whole object in memory; larger files must not be staged here.
    pub one_shot_limit: Option<ByteSize>,
    /// Whether writes stream from a reader (true) or need the whole object first (false).
    pub streaming_write: bool,
    pub checksum: ChecksumKind,
    /// A free allowance that staging should stay under (the profile may override it).
    pub free_quota: Option<ByteSize>,
    /// The storage class written (S3 kinds), for display and verification.
    pub storage_class: Option<String>,
}

impl Capabilities {
    /// A plain, hot store with streaming writes: the common case.
    pub fn hot(checksum: ChecksumKind) -> Self {
        Capabilities {
            needs_thaw: false,
            min_storage_days: 0,
            one_shot_limit: None,
            streaming_write: true,
            checksum,
            free_quota: None,
            storage_class: None,
        }
    }
}
