//! `lomob serve`: a receiver a relative runs, so a family backs up to each other's homes.
//!
//! The receiver speaks the part of the S3 API lomob's own `s3` stage and archive use (through
//! `s3s`, which parses requests and checks SigV4), over HTTPS with a self-signed certificate
//! whose fingerprint pairing pins. Each paired sender gets its own access key, bucket and
//! quota. Objects live as files under the root folder:
//! - [`store`]: the objects on disk (written through a temporary name, fsynced, renamed;
//!   verified against the digests the sender declared before they count; `archive/` is
//!   append-only; quotas);
//! - [`s3`]: the S3 operations over the store, each confined to the caller's bucket;
//! - [`senders`]: the paired senders and the one-time pairing codes;
//! - [`tls`]: the certificate made at first start, and the pinning verifier senders use;
//! - [`server`]: the listener, the pairing endpoint in front of the S3 service.

pub mod code;
pub mod s3;
pub mod senders;
pub mod server;
pub mod store;
pub mod tls;

/// What one paired sender may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The name given at pairing (`parents`), for messages and `serve status`.
    pub name: String,
    /// The one bucket this sender reads and writes.
    pub bucket: String,
    /// Most bytes this sender may keep (objects plus unfinished multipart parts).
    pub quota: Option<u64>,
}

/// The paired senders, as the S3 operations ask about them.
pub trait Senders: Send + Sync + 'static {
    /// The grant of the sender holding `access_key`, or `None` when no sender holds it.
    fn grant(&self, access_key: &str) -> Option<Grant>;
    /// Records that the sender holding `access_key` stored or removed something just now
    /// (`serve status` shows when each sender last synced).
    fn wrote(&self, access_key: &str);
}
