//! A small signed S3 client for the calls OpenDAL 0.59 does not expose: multipart uploads we
//! can resume across restarts (ListParts, the upload id kept by us), ListMultipartUploads to
//! find orphans, RestoreObject for Glacier thaws, and a HEAD that reports the storage class
//! and restore state. Also PUT/GET/DELETE of whole objects so tests and small writes need no
//! second client.
//!
//! Split as OpenDAL splits a service: [`transport`] signs, sends, times out, retries and
//! counts every request (with [`credentials`], the AWS credential chain OpenDAL's S3 service
//! uses: the profile's keys when given, else `AWS_ACCESS_KEY_ID`..., `~/.aws` profiles with
//! `AWS_PROFILE`, SSO, web identity, ECS and EC2 instance metadata); [`object`] and
//! [`multipart`] are the calls; `super::xml` the bodies. Requests are counted by type in
//! [`RequestCounters`] because S3 bills per request and the engine records counts per run.
//! Errors name the operation, bucket and key and carry an [`ErrorKind`]; they never contain
//! credentials.

mod credentials;
mod multipart;
mod object;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner};
use reqsign_core::{Context, OsEnv, Signer};
use reqwest::Url;

use super::S3Config;
use crate::storage_class::StorageClass;
use crate::transfer::Pacer;
use crate::{reveal, BackendConfig, BackendError, TransferConfig};

pub use crate::requests::{RequestCounters, RequestCounts, RequestType};

use crate::error::chain;
use credentials::{CredentialHttp, CredentialSource, ProfileKeys};
pub use multipart::{MultipartUpload, PartBody, PartInfo};
pub use object::{ObjectHead, RestoreOutcome, RestoreState, StreamPut};

/// A signed S3 client for one bucket (and prefix) of one site.
#[derive(Clone)]
pub struct S3Client {
    inner: Arc<Inner>,
    class: StorageClass,
    /// Paces request bodies under the site's bandwidth limit; shared with the engine's
    /// other uploads to the same site ([`S3Client::with_pacer`]).
    pacer: Option<Arc<Pacer>>,
}

struct Inner {
    http: reqwest::Client,
    /// `scheme://host[:port]`, no path.
    base: Url,
    bucket: String,
    region: String,
    virtual_host: bool,
    /// Object key prefix: empty or ending in `/`.
    prefix: String,
    /// Signs requests; loads (and refreshes) the credentials on first use.
    signer: Signer<Credential>,
    /// Where the credentials come from, for messages (never the keys themselves).
    credentials: CredentialSource,
    backend: &'static str,
    transfer: TransferConfig,
    part_size: u64,
    single_put_max: u64,
    /// A lomob receiver (`lomob serve`, its certificate pinned): it accepts an object only
    /// with a digest declared before it commits, so uploads take the forms that declare one.
    peer: bool,
    counters: Arc<RequestCounters>,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("S3Client")
            .field("endpoint", &i.base.as_str())
            .field("bucket", &i.bucket)
            .field("region", &i.region)
            .field("prefix", &i.prefix)
            .field("virtual_host", &i.virtual_host)
            .field("class", &self.class.as_str())
            .field("credentials", &i.credentials)
            .field(
                "bandwidth_limit",
                &self.pacer.as_ref().map(|p| p.bytes_per_sec()),
            )
            .finish()
    }
}

impl S3Client {
    /// Builds a client for an `s3` or `glacier` section of a profile, writing `class`.
    /// Reads the profile's secrets; with no keys in the profile, the AWS credential chain
    /// (the same as OpenDAL's S3 service) is used, loaded on the first request. Makes no
    /// request.
    pub fn new(
        config: &S3Config,
        backend: &'static str,
        class: StorageClass,
        transfer: &TransferConfig,
    ) -> Result<S3Client, BackendError> {
        config.validate(backend)?;
        let keys = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(key)) => Some((reveal(backend, id)?, reveal(backend, key)?)),
            _ => None,
        };
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));
        let mut base = Url::parse(endpoint.trim_end_matches('/')).map_err(|e| {
            BackendError::invalid(
                backend,
                format!("`endpoint` {endpoint:?} is not a URL: {e}"),
            )
        })?;
        if base.host_str().is_none() {
            return Err(BackendError::invalid(
                backend,
                format!("`endpoint` {endpoint:?} has no host"),
            ));
        }
        base.set_path("");
        base.set_query(None);
        let timeout = Duration::from_secs(transfer.timeout_secs.max(1));
        let http = config
            .http_builder(backend, reqwest::Client::builder())?
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BackendError::invalid(backend, format!("HTTP client: {}", chain(&e))))?;
        // The credential chain's own requests: instance metadata answers at once or not at
        // all, so a machine outside AWS does not wait long for it.
        let credential_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BackendError::invalid(backend, format!("HTTP client: {}", chain(&e))))?;
        let context = Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_env(OsEnv)
            .with_http_send(CredentialHttp(credential_http));
        let request_signer = RequestSigner::new("s3", &config.region);
        let (signer, credentials) = match keys {
            Some((id, key)) => (
                Signer::new(
                    context,
                    ProfileKeys {
                        access_key_id: id,
                        secret_access_key: key,
                    },
                    request_signer,
                ),
                CredentialSource::Profile,
            ),
            None => (
                Signer::new(context, DefaultCredentialProvider::new(), request_signer),
                CredentialSource::AwsEnvironment,
            ),
        };
        let prefix = config.prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Client {
            inner: Arc::new(Inner {
                http,
                base,
                bucket: config.bucket.clone(),
                region: config.region.clone(),
                virtual_host: config.virtual_host_style,
                prefix,
                signer,
                credentials,
                backend,
                transfer: transfer.clone(),
                part_size: config.part_size().bytes(),
                single_put_max: config.single_put_max().bytes(),
                peer: config.pin().is_some(),
                counters: Arc::new(RequestCounters::default()),
            }),
            class,
            pacer: transfer.pacer(),
        })
    }

    /// Builds a client for a site's backend section: `s3` writes its storage class
    /// (STANDARD by default), `glacier` its cold class (DEEP_ARCHIVE by default).
    pub fn for_backend(
        config: &BackendConfig,
        transfer: &TransferConfig,
    ) -> Result<S3Client, BackendError> {
        match config {
            BackendConfig::S3(c) => {
                S3Client::new(c, "s3", c.effective_class(StorageClass::Standard), transfer)
            }
            BackendConfig::Glacier(g) => S3Client::new(g.s3(), "glacier", g.class(), transfer),
            other => Err(BackendError::invalid(
                other.kind(),
                "native S3 calls need kind = \"s3\" or \"glacier\"",
            )),
        }
    }

    /// The same connection and counters, writing another storage class.
    #[must_use]
    pub fn with_storage_class(&self, class: StorageClass) -> S3Client {
        S3Client {
            inner: self.inner.clone(),
            class,
            pacer: self.pacer.clone(),
        }
    }

    /// The same client paced by `pacer` instead of the one it made from its transfer
    /// settings (`None`: not paced). The engine gives every uploader of a site the same
    /// pacer, so the site's bandwidth limit holds over all of them.
    #[must_use]
    pub fn with_pacer(self, pacer: Option<Arc<Pacer>>) -> S3Client {
        S3Client { pacer, ..self }
    }

    /// The pacer request bodies go through, if any.
    pub fn pacer(&self) -> Option<&Arc<Pacer>> {
        self.pacer.as_ref()
    }

    pub fn storage_class(&self) -> StorageClass {
        self.class
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The profile's part size (default 256 MiB).
    pub fn part_size(&self) -> u64 {
        self.inner.part_size
    }

    /// The profile's largest single PUT (default 5 GiB).
    pub fn single_put_max(&self) -> u64 {
        self.inner.single_put_max
    }

    /// True for a lomob receiver (`lomob serve`): see the field.
    pub fn is_peer(&self) -> bool {
        self.inner.peer
    }

    pub fn transfer(&self) -> &TransferConfig {
        &self.inner.transfer
    }

    /// Requests sent so far by this client and its clones.
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.inner.counters
    }
}

#[cfg(test)]
mod tests {
    use super::credentials::*;
    use super::transport::*;
    use super::*;
    use crate::ErrorKind;
    use reqwest::{Method, StatusCode};

    fn config(endpoint: &str) -> S3Config {
        let toml = format!(
            "bucket = \"b\"\nendpoint = \"{endpoint}\"\naccess-key-id = \"AKIDEXAMPLE\"\nsecret-access-key = \"topsecretvalue\"\nprefix = \"/lomob/\""
        );
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn parses_restore_header() {
        assert_eq!(RestoreState::parse(None), RestoreState::None);
        assert_eq!(
            RestoreState::parse(Some("ongoing-request=\"true\"")),
            RestoreState::InProgress
        );
        assert_eq!(
            RestoreState::parse(Some(
                "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""
            )),
            RestoreState::Restored {
                expiry: Some("Fri, 21 Dec 2012 00:00:00 GMT".into())
            }
        );
    }

    #[test]
    fn classifies_s3_errors() {
        assert_eq!(
            classify(Some(403), Some("InvalidAccessKeyId")),
            ErrorKind::Permission
        );
        assert_eq!(
            classify(Some(403), Some("SignatureDoesNotMatch")),
            ErrorKind::Permission
        );
        assert_eq!(
            classify(Some(403), Some("InvalidObjectState")),
            ErrorKind::Frozen
        );
        assert_eq!(
            classify(Some(404), Some("NoSuchBucket")),
            ErrorKind::NotFound
        );
        assert_eq!(classify(Some(503), Some("SlowDown")), ErrorKind::Transient);
        assert_eq!(classify(None, None), ErrorKind::Transient);
        assert_eq!(classify(Some(400), Some("BadDigest")), ErrorKind::Other);
        assert_eq!(
            classify(Some(501), Some("NotImplemented")),
            ErrorKind::Other
        );
        assert!(!retryable(
            StatusCode::NOT_IMPLEMENTED,
            Some("NotImplemented")
        ));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE, None));
    }

    #[test]
    fn addresses_path_and_virtual_host_style() {
        let t = TransferConfig::default();
        let c = S3Client::new(
            &config("http://127.0.0.1:9000"),
            "s3",
            StorageClass::Standard,
            &t,
        )
        .unwrap();
        let (url, host, path) = c.target(Some("archive/a b.iso"));
        assert_eq!(url, "http://127.0.0.1:9000/b/lomob/archive/a%20b.iso");
        assert_eq!(host, "127.0.0.1:9000");
        assert_eq!(path, "/b/lomob/archive/a%20b.iso");
        assert_eq!(c.target(None).0, "http://127.0.0.1:9000/b");

        let mut cfg = config("https://s3.example.com");
        cfg.virtual_host_style = true;
        let c = S3Client::new(&cfg, "s3", StorageClass::Standard, &t).unwrap();
        let (url, host, _) = c.target(Some("x"));
        assert_eq!(url, "https://b.s3.example.com/lomob/x");
        assert_eq!(host, "b.s3.example.com");
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let c = S3Client::new(
            &config("http://127.0.0.1:9000"),
            "glacier",
            StorageClass::DeepArchive,
            &TransferConfig::default(),
        )
        .unwrap();
        let d = format!("{c:?} {:?}", c.inner.signer);
        assert!(!d.contains("topsecretvalue"), "{d}");
        assert!(!d.contains("AKIDEXAMPLE"), "{d}");
        let keys = ProfileKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "topsecretvalue".into(),
        };
        let d = format!("{keys:?}");
        assert!(
            !d.contains("topsecretvalue") && !d.contains("AKIDEXAMPLE"),
            "{d}"
        );
        let e = c.error(
            "HeadObject",
            "k",
            Some(403),
            Some("SignatureDoesNotMatch"),
            "no",
        );
        let text = e.to_string();
        assert!(text.contains("s3://b/lomob/k"), "{text}");
        assert!(!text.contains("topsecretvalue"), "{text}");
        assert_eq!(e.kind(), ErrorKind::Permission);
    }

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// A client for AWS's SigV4 examples: bucket `examplebucket`, virtual-host style, the
    /// example keys.
    fn aws_example_client() -> S3Client {
        let cfg: S3Config = toml::from_str(
            "bucket = \"examplebucket\"\nendpoint = \"https://s3.amazonaws.com\"\nvirtual-host-style = true\naccess-key-id = \"AKIAIOSFODNN7EXAMPLE\"\nsecret-access-key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
        )
        .unwrap();
        S3Client::new(
            &cfg,
            "s3",
            StorageClass::Standard,
            &TransferConfig::default(),
        )
        .unwrap()
    }

    /// Signs `call` as reqsign does, at AWS's example time (2013-05-24T00:00:00Z): reqsign's
    /// signer always signs with the current time, so this uses its canonicalisation and
    /// hashing directly. Returns the canonical request and the signature.
    fn sign_at_example_time(c: &S3Client, call: &Call<'_>, payload: &str) -> (String, String) {
        use reqsign_aws_core::signing::{
            canonical_request_string, canonicalize_headers, canonicalize_query,
        };
        use reqsign_core::hash::{hex_hmac_sha256, hex_sha256, hmac_sha256};
        let (_, mut parts) = c.unsigned_head(call, payload).unwrap();
        let mut req = reqsign_core::SigningRequest::build(&mut parts).unwrap();
        let time = reqsign_core::time::Timestamp::from_second(1_369_353_600).unwrap();
        let cred = Credential {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires_in: None,
        };
        canonicalize_headers(&mut req, &cred, None, time).unwrap();
        let query = canonicalize_query(&req, &[]);
        let creq = canonical_request_string(&req, &query).unwrap();
        let scope = "20130524/us-east-1/s3/aws4_request";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20130524T000000Z\n{scope}\n{}",
            hex_sha256(creq.as_bytes())
        );
        let mut k = format!("AWS4{}", cred.secret_access_key).into_bytes();
        for part in ["20130524", "us-east-1", "s3", "aws4_request"] {
            k = hmac_sha256(&k, part.as_bytes());
        }
        (creq, hex_hmac_sha256(&k, to_sign.as_bytes()))
    }

    /// AWS's published "GET Object" example (S3 API reference, header-based auth): our
    /// request, canonicalised by reqsign, is exactly AWS's canonical request.
    #[test]
    fn matches_aws_get_object_example() {
        let c = aws_example_client();
        let call = Call::new("GetObject", Method::GET, Some("test.txt"), RequestType::Get)
            .header("range", "bytes=0-9");
        let (creq, signature) = sign_at_example_time(&c, &call, EMPTY_SHA256);
        assert_eq!(
            creq,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's published "GET Bucket (List Objects)" example: exercises the query string.
    #[test]
    fn matches_aws_list_objects_example() {
        let c = aws_example_client();
        let call = Call::new("ListObjects", Method::GET, None, RequestType::List)
            .query("max-keys", "2")
            .query("prefix", "J");
        let (_, signature) = sign_at_example_time(&c, &call, EMPTY_SHA256);
        assert_eq!(
            signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    /// The real signer: an Authorization header for the profile's key id, every header
    /// signed, the payload left unsigned for streamed bodies; no key in `Debug`.
    #[tokio::test]
    async fn signs_with_the_profile_keys() {
        let c = aws_example_client();
        let call = Call::new("PutObject", Method::PUT, Some("a b.iso"), RequestType::Put)
            .header("content-length", "10")
            .header("x-amz-meta-fingerprint", "f");
        let req = c
            .signed(&call, UNSIGNED_PAYLOAD)
            .await
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            req.url().as_str(),
            "https://examplebucket.s3.amazonaws.com/a%20b.iso"
        );
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/us-east-1/s3/aws4_request, SignedHeaders=content-length;host;x-amz-content-sha256;x-amz-date;x-amz-meta-fingerprint, Signature="),
            "{auth}"
        );
        assert_eq!(req.headers()["x-amz-content-sha256"], UNSIGNED_PAYLOAD);
        assert!(req.headers().get("host").is_none(), "written from the URL");
        let d = format!("{c:?} {req:?}");
        assert!(!d.contains("wJalrXUtnFEMI"), "{d}");
    }

    #[test]
    fn encodes_like_s3() {
        assert_eq!(encode_path("/a b/ü+$.iso"), "/a%20b/%C3%BC%2B%24.iso");
        assert_eq!(encode_query("a/b=c"), "a%2Fb%3Dc");
    }

    #[test]
    fn part_body_digests() {
        let p = PartBody::new(&b"hello"[..]);
        assert_eq!(p.md5_hex, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(p.md5_base64, "XUFAKrxLKna5cZ2REBfFkg==");
    }
}
