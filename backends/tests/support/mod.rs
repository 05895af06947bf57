//! Helpers for tests against the local servers `scripts/services.sh start` runs: which
//! servers are there, a fresh bucket per test, deterministic test data.

#![allow(dead_code)]

pub mod front;
pub mod proxy;

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};

use lomob_backends::s3::{S3Client, S3Config};
use lomob_backends::source::ByteSource;
use lomob_backends::StorageClass;
use lomob_backends::{Secret, TransferConfig};
use sha2::{Digest, Sha256};

/// One S3 implementation to test against.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: &'static str,
    pub endpoint: String,
    pub key: String,
    pub secret: String,
    /// Whether the server keeps storage classes and Glacier semantics (moto does; rclone
    /// serve s3 does not).
    pub has_classes: bool,
}

pub use lomob_backends::testing::service_var;

pub fn moto() -> Option<Server> {
    Some(Server {
        name: "moto",
        endpoint: service_var("LOMOB_TEST_MOTO_ENDPOINT")?,
        // moto accepts any keys.
        key: "motokey".into(),
        secret: "motosecret".into(),
        has_classes: true,
    })
}

pub fn rclone() -> Option<Server> {
    Some(Server {
        name: "rclone",
        endpoint: service_var("LOMOB_TEST_RCLONE_S3_ENDPOINT")?,
        key: service_var("LOMOB_TEST_RCLONE_S3_KEY")?,
        secret: service_var("LOMOB_TEST_RCLONE_S3_SECRET")?,
        has_classes: false,
    })
}

/// Both S3 servers that are available.
pub fn servers() -> Vec<Server> {
    moto().into_iter().chain(rclone()).collect()
}

/// The server's `IP:PORT`, for proxies in front of it.
pub fn server_addr(server: &Server) -> std::net::SocketAddr {
    server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("endpoint is http://IP:PORT")
}

/// A bucket name no other test (or earlier run) uses.
pub fn unique_bucket(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "lomob-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn config(endpoint: &str, bucket: &str, key: &str, secret: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        access_key_id: Some(Secret::Inline(key.into())),
        secret_access_key: Some(Secret::Inline(secret.into())),
        prefix: "/".into(),
        virtual_host_style: false,
        storage_class: None,
        free_quota: None,
        thaw_tier: None,
        thaw_days: None,
        part_size: None,
        single_put_max: None,
        tls_fingerprint: None,
    }
}

/// A client for `bucket` on `server` (not created).
pub fn client_for(
    server: &Server,
    bucket: &str,
    class: StorageClass,
    transfer: &TransferConfig,
) -> S3Client {
    let kind = if class.is_cold() { "glacier" } else { "s3" };
    S3Client::new(
        &config(&server.endpoint, bucket, &server.key, &server.secret),
        kind,
        class,
        transfer,
    )
    .expect("client")
}

/// A fresh bucket on `server` and a client for it.
pub async fn fresh_bucket(server: &Server, tag: &str, class: StorageClass) -> S3Client {
    fresh_bucket_with(server, tag, class, &quick_transfer()).await
}

pub async fn fresh_bucket_with(
    server: &Server,
    tag: &str,
    class: StorageClass,
    transfer: &TransferConfig,
) -> S3Client {
    let bucket = unique_bucket(tag);
    let c = client_for(server, &bucket, class, transfer);
    c.create_bucket().await.expect("create bucket");
    c
}

/// Transfer settings for tests: few retries, short timeout, so failures show quickly.
pub fn quick_transfer() -> TransferConfig {
    TransferConfig {
        retries: 3,
        timeout_secs: 30,
        concurrency: 4,
        bandwidth_limit: None,
        ..Default::default()
    }
}

/// `len` bytes of deterministic, incompressible-looking data.
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A [`ByteSource`] over bytes in memory that fails once a reader gets past `fail_after`:
/// an image reader that broke in the middle of an upload.
pub struct FailingSource {
    pub data: std::sync::Arc<Vec<u8>>,
    pub fail_after: u64,
    /// Fail with `InvalidData`, as the image reader does when a file changed under it.
    pub changed: bool,
}

impl ByteSource for FailingSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        struct R {
            data: std::sync::Arc<Vec<u8>>,
            pos: u64,
            fail_after: u64,
            changed: bool,
        }
        impl Read for R {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.pos >= self.fail_after {
                    let kind = if self.changed {
                        std::io::ErrorKind::InvalidData
                    } else {
                        std::io::ErrorKind::Other
                    };
                    return Err(std::io::Error::new(kind, "injected source failure"));
                }
                let end = (self.pos + buf.len() as u64)
                    .min(self.fail_after)
                    .min(self.data.len() as u64);
                let n = (end - self.pos) as usize;
                buf[..n].copy_from_slice(&self.data[self.pos as usize..end as usize]);
                self.pos = end;
                Ok(n)
            }
        }
        Ok(Box::new(R {
            data: self.data.clone(),
            pos: offset,
            fail_after: self.fail_after,
            changed: self.changed,
        }))
    }
}

/// A [`ByteSource`] over bytes in memory.
pub struct MemSource(pub std::sync::Arc<Vec<u8>>);

impl ByteSource for MemSource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let mut c = std::io::Cursor::new(self.0.clone());
        c.set_position(offset);
        Ok(Box::new(ArcCursor(c)))
    }
}

struct ArcCursor(std::io::Cursor<std::sync::Arc<Vec<u8>>>);

impl Read for ArcCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.0.position() as usize;
        let data = self.0.get_ref();
        let n = buf.len().min(data.len().saturating_sub(pos));
        buf[..n].copy_from_slice(&data[pos..pos + n]);
        self.0.set_position((pos + n) as u64);
        Ok(n)
    }
}
