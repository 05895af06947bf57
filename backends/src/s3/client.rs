//! A small signed S3 client for the calls OpenDAL 0.59 does not expose: multipart uploads we
//! can resume across restarts (ListParts, the upload id kept by us), ListMultipartUploads to
//! find orphans, RestoreObject for Glacier thaws, and a HEAD that reports the storage class
//! and restore state. Also PUT/GET/DELETE of whole objects so tests and small writes need no
//! second client.
//!
//! Every request is signed with SigV4 by `reqsign`, with the credential chain OpenDAL's S3
//! service uses for the stage on the same bucket (the profile's keys when given, else the AWS
//! environment: `AWS_ACCESS_KEY_ID`..., `~/.aws/credentials` and `~/.aws/config` profiles
//! with `AWS_PROFILE`, SSO, web identity, ECS and EC2 instance metadata), timed out and
//! retried with backoff and jitter per the site's [`TransferConfig`], and counted by type in
//! [`RequestCounters`] because S3 bills per request and the engine records counts per run.
//! Errors name the operation, bucket and key and carry an [`ErrorKind`]; they never contain
//! credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner};
use reqsign_core::{Context, OsEnv, Signer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;

use super::xml;
use super::S3Config;
use crate::error::S3Error;
use crate::glacier::{StorageClass, ThawTier};
use crate::transfer::Pacer;
use crate::{reveal, BackendConfig, BackendError, ErrorKind, TransferConfig};

/// Request types as S3 bills them (PUT, COPY, POST and LIST are the expensive class; GET and
/// HEAD the cheap one; DELETE is free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    Put,
    Post,
    List,
    Get,
    Head,
    Delete,
}

/// Requests sent by one client (every attempt counts: retries are billed too). Shared by the
/// clones of a client; read it with [`RequestCounters::snapshot`].
#[derive(Debug, Default)]
pub struct RequestCounters {
    put: AtomicU64,
    post: AtomicU64,
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    /// UploadPart requests (also counted in `put`), to see what a resume re-sent.
    upload_part: AtomicU64,
    /// Bytes of request bodies sent, retries included.
    bytes_sent: AtomicU64,
}

/// A copy of the counters at one moment. `put`, `post`, `list`, `get`, `head` and `delete`
/// partition every request sent (retries included); `upload_part` is a subset of `put`, not
/// an extra count: do not add it to `put`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// PutObject, UploadPart and CreateBucket.
    pub put: u64,
    /// CreateMultipartUpload, CompleteMultipartUpload and RestoreObject.
    pub post: u64,
    /// ListParts and ListMultipartUploads.
    pub list: u64,
    pub get: u64,
    pub head: u64,
    /// DeleteObject and AbortMultipartUpload (free on S3).
    pub delete: u64,
    /// UploadPart requests: already included in `put`.
    pub upload_part: u64,
    /// Request body bytes sent, retries included.
    pub bytes_sent: u64,
}

impl RequestCounters {
    fn count(&self, t: RequestType) {
        let c = match t {
            RequestType::Put => &self.put,
            RequestType::Post => &self.post,
            RequestType::List => &self.list,
            RequestType::Get => &self.get,
            RequestType::Head => &self.head,
            RequestType::Delete => &self.delete,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            put: r(&self.put),
            post: r(&self.post),
            list: r(&self.list),
            get: r(&self.get),
            head: r(&self.head),
            delete: r(&self.delete),
            upload_part: r(&self.upload_part),
            bytes_sent: r(&self.bytes_sent),
        }
    }
}

impl RequestCounts {
    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.put + self.post + self.list + self.get + self.head + self.delete
    }

    /// PUT, POST and LIST: the requests S3 bills at the higher rate.
    pub fn class_a(&self) -> u64 {
        self.put + self.post + self.list
    }

    /// GET and HEAD: the requests S3 bills at the lower rate.
    pub fn class_b(&self) -> u64 {
        self.get + self.head
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            put: self.put - earlier.put,
            post: self.post - earlier.post,
            list: self.list - earlier.list,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            delete: self.delete - earlier.delete,
            upload_part: self.upload_part - earlier.upload_part,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
        }
    }
}

/// What HEAD says about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
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
}

impl ObjectInfo {
    /// The storage class, when it is one lomob knows.
    pub fn class(&self) -> Option<StorageClass> {
        parse_class(&self.storage_class)
    }

    /// True when a GET would fail until a restore completes.
    pub fn is_frozen(&self) -> bool {
        self.class().is_some_and(StorageClass::needs_thaw)
            && !matches!(self.restore, RestoreState::Restored { .. })
    }
}

/// Parses an `x-amz-storage-class` value.
pub fn parse_class(s: &str) -> Option<StorageClass> {
    Some(match s {
        "STANDARD" => StorageClass::Standard,
        "STANDARD_IA" => StorageClass::StandardIa,
        "ONEZONE_IA" => StorageClass::OnezoneIa,
        "INTELLIGENT_TIERING" => StorageClass::IntelligentTiering,
        "GLACIER_IR" => StorageClass::GlacierIr,
        "GLACIER" => StorageClass::Glacier,
        "DEEP_ARCHIVE" => StorageClass::DeepArchive,
        _ => return None,
    })
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

/// Pieces a paced body is sent in: small (at most 1 MiB), so the achieved rate is smooth
/// whatever the size of the object.
const PACE_CHUNK: usize = 256 << 10;

/// How long the pacer held a body back: request timeouts count only the network's time.
#[derive(Debug, Default)]
struct PaceClock {
    held_ns: AtomicU64,
    /// True while the body waits for the pacer.
    pacing: AtomicBool,
}

/// `body` cut into pieces of at most [`PACE_CHUNK`] bytes, each charged to `pacer` after it
/// was handed to the connection (the next piece follows at the end of its slot), so a body
/// of N bytes takes about N / rate, and concurrent bodies sharing the pacer share the rate.
fn paced_body<S>(
    body: S,
    pacer: Option<Arc<Pacer>>,
    clock: Arc<PaceClock>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    use futures::StreamExt;
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        rest: Bytes,
        /// The piece handed out last, not yet charged.
        sent: u64,
    }
    let state = State {
        body: Box::pin(body),
        rest: Bytes::new(),
        sent: 0,
    };
    futures::stream::unfold(state, move |mut st| {
        let (pacer, clock) = (pacer.clone(), clock.clone());
        async move {
            if let (Some(p), true) = (&pacer, st.sent > 0) {
                clock.pacing.store(true, Ordering::Relaxed);
                let t = tokio::time::Instant::now();
                p.pace(st.sent).await;
                let held = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                clock.held_ns.fetch_add(held, Ordering::Relaxed);
                clock.pacing.store(false, Ordering::Relaxed);
            }
            st.sent = 0;
            while st.rest.is_empty() {
                match st.body.next().await {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), st)),
                    Some(Ok(b)) => st.rest = b,
                }
            }
            let piece = st.rest.split_to(st.rest.len().min(PACE_CHUNK));
            st.sent = piece.len() as u64;
            Some((Ok(piece), st))
        }
    })
}

/// Runs `fut` for at most `limit`, not counting the time the pacer held its body back:
/// `None` when it took longer.
async fn within<F: std::future::Future>(
    limit: Duration,
    clock: &PaceClock,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    let start = tokio::time::Instant::now();
    loop {
        let held = Duration::from_nanos(clock.held_ns.load(Ordering::Relaxed));
        let deadline = start + limit + held;
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = tokio::time::sleep_until(deadline) => {
                let held_now = Duration::from_nanos(clock.held_ns.load(Ordering::Relaxed));
                if clock.pacing.load(Ordering::Relaxed) {
                    // Waiting for the pacer is not the network's time: look again soon.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else if held_now == held {
                    return None;
                }
            }
        }
    }
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

/// The answer to one request (after retries).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The parsed S3 error, for failures and for 200 answers that carry an error document.
    error: Option<xml::ErrorBody>,
}

impl Reply {
    fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Reply {
        let error = if !status.is_success() || xml::is_error_document(&body) {
            Some(xml::parse::<xml::ErrorBody>(&body).unwrap_or_default())
        } else {
            None
        };
        Reply {
            status,
            headers,
            body,
            error,
        }
    }

    fn ok(&self) -> bool {
        self.status.is_success() && self.error.is_none()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> Option<&str> {
        self.error
            .as_ref()
            .map(|e| e.code.as_str())
            .filter(|c| !c.is_empty())
    }
}

/// One request to send.
struct Call<'a> {
    op: &'static str,
    method: Method,
    /// Object key relative to the prefix; `None` for bucket-level requests.
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Hex SHA-256 of `body`, when already computed.
    body_sha256: Option<String>,
    kind: RequestType,
}

impl<'a> Call<'a> {
    fn new(op: &'static str, method: Method, key: Option<&'a str>, kind: RequestType) -> Self {
        Call {
            op,
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            body_sha256: None,
            kind,
        }
    }

    fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }

    fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// Characters S3 leaves as they are in a signed URI: `A-Z a-z 0-9 - _ . ~`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// In a path, `/` separates segments and stays as it is.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// The payload hash of a request whose body is not signed (streamed bodies, parts sent with
/// Content-MD5).
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Percent-encodes a path as S3 signs it (each segment encoded, `/` kept): the request goes
/// out exactly as the signer canonicalises it.
fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// Percent-encodes a query key or value.
fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// Hex SHA-256 of a body.
fn sha256_hex(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

/// Where the signing keys come from. Shown in `Debug` instead of the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CredentialSource {
    /// `access-key-id` and `secret-access-key` in the profile: the profile is the whole
    /// truth, the AWS environment is not consulted.
    Profile,
    /// The AWS credential chain, as OpenDAL's S3 service loads it.
    AwsEnvironment,
}

/// What the AWS credential chain tries, in order, and what to set: the message when it
/// finds nothing.
const NO_CREDENTIALS: &str = "no credentials: the profile has no `access-key-id` and \
`secret-access-key`, and none were found in the AWS environment (tried, in order: \
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; the profile named by \
AWS_PROFILE, else \"default\", in ~/.aws/credentials and ~/.aws/config, or the files named by \
AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, including its SSO settings; web identity \
from AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; ECS container credentials from \
AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI; EC2 instance metadata unless \
AWS_EC2_METADATA_DISABLED=true): set `access-key-id` and `secret-access-key` in the profile \
(e.g. `{ env = \"AWS_ACCESS_KEY_ID\" }`), export AWS_ACCESS_KEY_ID and \
AWS_SECRET_ACCESS_KEY, or set AWS_PROFILE to a profile with keys in ~/.aws/credentials";

/// The profile's keys as a credential provider. Not reqsign's `StaticCredentialProvider`,
/// whose derived `Debug` prints the secret (and reqsign logs providers with `{:?}`).
#[derive(Clone)]
struct ProfileKeys {
    access_key_id: String,
    secret_access_key: String,
}

impl fmt::Debug for ProfileKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProfileKeys(***)")
    }
}

impl reqsign_core::ProvideCredential for ProfileKeys {
    type Credential = Credential;

    async fn provide_credential(
        &self,
        _: &Context,
    ) -> reqsign_core::Result<Option<Self::Credential>> {
        Ok(Some(Credential {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: None,
            expires_in: None,
        }))
    }
}

/// Sends the few HTTP requests the credential chain makes (instance metadata, STS, SSO)
/// with our HTTP client. Neither its `Debug` nor its errors show a request: they can carry
/// tokens.
#[derive(Clone)]
struct CredentialHttp(reqwest::Client);

impl fmt::Debug for CredentialHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHttp")
    }
}

impl reqsign_core::HttpSend for CredentialHttp {
    async fn http_send(
        &self,
        req: http::Request<Bytes>,
    ) -> reqsign_core::Result<http::Response<Bytes>> {
        let fail = |e: reqwest::Error| {
            // Without the URL: an STS query can carry a web identity token.
            let e = e.without_url();
            reqsign_core::Error::unexpected(format!("credential request failed: {}", chain(&e)))
                .set_retryable(true)
        };
        let (parts, body) = req.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(fail)?;
        let mut out = http::Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            *h = resp.headers().clone();
        }
        let body = resp.bytes().await.map_err(fail)?;
        out.body(body)
            .map_err(|e| reqsign_core::Error::unexpected(format!("credential response: {e}")))
    }
}

fn md5_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// Chooses what an S3 error means for the engine.
fn classify(status: Option<u16>, code: Option<&str>) -> ErrorKind {
    match code {
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidToken"
            | "ExpiredToken"
            | "AllAccessDisabled"
            | "AccountProblem"
            | "InvalidSecurity",
        ) => return ErrorKind::Permission,
        Some("InvalidObjectState") => return ErrorKind::Frozen,
        Some("NoSuchBucket" | "NoSuchKey" | "NoSuchUpload") => return ErrorKind::NotFound,
        Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout") => {
            return ErrorKind::Transient
        }
        _ => {}
    }
    match status {
        Some(401 | 403) => ErrorKind::Permission,
        Some(404) => ErrorKind::NotFound,
        Some(408 | 429) => ErrorKind::Transient,
        Some(501) => ErrorKind::Other,
        Some(s) if s >= 500 => ErrorKind::Transient,
        None => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// True when an answer is worth sending the request again for.
fn retryable(status: StatusCode, code: Option<&str>) -> bool {
    // 501 Not Implemented is a permanent answer (rclone serve s3 gives it for replacing a
    // part with different bytes).
    (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || matches!(
            code,
            Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
        )
}

/// The error and its causes on one line (reqwest hides the useful part in the chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Exponential backoff with jitter: 200 ms doubling per attempt, at most 20 s, each delay
/// drawn from its upper half so that parallel parts do not retry in lockstep.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = 200u64.saturating_mul(1 << attempt.min(10)).min(20_000);
    let ms = rand::random_range(ceiling / 2..=ceiling);
    Duration::from_millis(ms)
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
        let http = reqwest::Client::builder()
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
            BackendConfig::Glacier(c) => S3Client::new(
                c,
                "glacier",
                c.effective_class(StorageClass::DeepArchive),
                transfer,
            ),
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

    pub fn transfer(&self) -> &TransferConfig {
        &self.inner.transfer
    }

    /// Requests sent so far by this client and its clones.
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.inner.counters
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.prefix, key.trim_start_matches('/'))
    }

    /// Builds an error for `op` on `key` (relative), with a hint fitting its kind.
    fn error(
        &self,
        op: &'static str,
        key: &str,
        status: Option<u16>,
        code: Option<&str>,
        detail: &str,
    ) -> BackendError {
        let i = &self.inner;
        let kind = classify(status, code);
        let hint = match (kind, code) {
            (ErrorKind::Permission, _) => format!(
                "the server rejected the credentials or denied access to bucket {:?}: check `access-key-id` and `secret-access-key` in the profile and the key's permissions",
                i.bucket
            ),
            (ErrorKind::NotFound, Some("NoSuchBucket")) => format!(
                "bucket {:?} does not exist at {} (region {}): create it, or fix `bucket`, `endpoint` or `region`",
                i.bucket, i.base, i.region
            ),
            (ErrorKind::NotFound, Some("NoSuchUpload")) => {
                "the multipart upload is gone (completed, aborted or expired)".to_string()
            }
            (ErrorKind::NotFound, _) => format!("no such object in bucket {:?}", i.bucket),
            (ErrorKind::Frozen, _) => {
                "the object is in a cold storage class: restore (thaw) it before reading".to_string()
            }
            (ErrorKind::Transient, _) if status.is_none() => format!(
                "cannot reach {} after {} attempts; the site will be retried on the next run",
                i.base,
                i.transfer.retries + 1
            ),
            (ErrorKind::Transient, _) => format!(
                "the server kept failing after {} attempts; the site will be retried on the next run",
                i.transfer.retries + 1
            ),
            _ => String::new(),
        };
        let mut message = detail.trim().to_string();
        if !hint.is_empty() {
            if !message.is_empty() {
                message.push_str(" — ");
            }
            message.push_str(&hint);
        }
        BackendError::S3(Box::new(S3Error {
            backend: i.backend,
            op,
            bucket: i.bucket.clone(),
            key: self.full_key(key),
            status,
            code: code.map(str::to_string),
            message,
            kind,
        }))
    }

    /// Turns a failed reply into an error.
    fn fail(&self, call_op: &'static str, key: &str, r: &Reply) -> BackendError {
        let detail = r
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        self.error(call_op, key, Some(r.status.as_u16()), r.code(), &detail)
    }

    /// Where a request goes: the URL, the host header, and the encoded path that is signed.
    fn target(&self, key: Option<&str>) -> (String, String, String) {
        let i = &self.inner;
        let host = i.base.host_str().unwrap_or_default();
        let host = match i.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let (host, path) = match (i.virtual_host, key) {
            (true, Some(k)) => (
                format!("{}.{host}", i.bucket),
                format!("/{}", self.full_key(k)),
            ),
            (true, None) => (format!("{}.{host}", i.bucket), "/".to_string()),
            (false, Some(k)) => (host, format!("/{}/{}", i.bucket, self.full_key(k))),
            (false, None) => (host, format!("/{}", i.bucket)),
        };
        let encoded = encode_path(&path);
        let origin = format!("{}://{host}", i.base.scheme());
        (format!("{origin}{encoded}"), host, encoded)
    }

    /// Sends a request, retrying transient failures. Returns the last answer when it is not
    /// worth retrying (the caller decides what a status means), or an error when the network
    /// or the server kept failing.
    async fn execute(&self, call: Call<'_>) -> Result<Reply, BackendError> {
        let i = &self.inner;
        let key = call.key.unwrap_or("");
        let payload = call.body_sha256.clone().unwrap_or_else(|| {
            if call.body.is_empty() {
                reqsign_aws_v4::EMPTY_STRING_SHA256.to_string()
            } else {
                sha256_hex(&call.body)
            }
        });
        let timeout = Duration::from_secs(i.transfer.timeout_secs.max(1));
        let mut attempt: u32 = 0;
        loop {
            let req = self.signed(&call, &payload).await?;
            let clock = Arc::new(PaceClock::default());
            // A paced body goes as a stream of small pieces; it is in memory, so each attempt
            // streams it again from its first byte.
            let req = match &self.pacer {
                Some(p) if !call.body.is_empty() => req
                    .header(reqwest::header::CONTENT_LENGTH, call.body.len())
                    .body(reqwest::Body::wrap_stream(paced_body(
                        futures::stream::iter([Ok(call.body.clone())]),
                        Some(p.clone()),
                        clock.clone(),
                    ))),
                _ => req.body(call.body.clone()),
            };
            i.counters
                .bytes_sent
                .fetch_add(call.body.len() as u64, Ordering::Relaxed);
            let sent = within(timeout, &clock, async {
                let resp = req.send().await?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await;
            let failure = match sent {
                None => format!("no complete answer within {}s", timeout.as_secs()),
                Some(Err(e)) => format!("request failed: {}", chain(&e)),
                Some(Ok((status, headers, body))) => {
                    let reply = Reply::new(status, headers, body);
                    if reply.ok() || !retryable(status, reply.code()) {
                        return Ok(reply);
                    }
                    if attempt as usize >= i.transfer.retries {
                        return Err(self.fail(call.op, key, &reply));
                    }
                    format!("HTTP {} {}", status.as_u16(), reply.code().unwrap_or(""))
                }
            };
            if attempt as usize >= i.transfer.retries {
                return Err(self.error(call.op, key, None, None, &failure));
            }
            let delay = backoff(attempt);
            tracing::debug!(
                op = call.op,
                bucket = %i.bucket,
                key,
                attempt,
                ?delay,
                "retrying S3 request: {failure}"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The head of the request for `call` with its payload hash, not yet signed (what the
    /// signer sees), and its URL.
    fn unsigned_head(
        &self,
        call: &Call<'_>,
        payload: &str,
    ) -> Result<(String, http::request::Parts), BackendError> {
        let key = call.key.unwrap_or("");
        let (url, host, _) = self.target(call.key);
        let query_string: String = call
            .query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    encode_query(k)
                } else {
                    format!("{}={}", encode_query(k), encode_query(v))
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let url = if query_string.is_empty() {
            url
        } else {
            format!("{url}?{query_string}")
        };
        let mut map = HeaderMap::new();
        let fixed = [
            ("host".to_string(), host),
            ("x-amz-content-sha256".to_string(), payload.to_string()),
        ];
        for (k, v) in call.headers.iter().chain(fixed.iter()) {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return Err(self.error(
                    call.op,
                    key,
                    None,
                    None,
                    &format!("header {k} has a value HTTP cannot carry"),
                ));
            };
            map.insert(name, value);
        }
        let (mut parts, ()) = http::Request::builder()
            .method(call.method.clone())
            .uri(&url)
            .body(())
            .map_err(|e| self.error(call.op, key, None, None, &format!("bad request URL: {e}")))?
            .into_parts();
        parts.headers = map;
        Ok((url, parts))
    }

    /// The request for `call`, signed for `payload` (a hex SHA-256 or `UNSIGNED-PAYLOAD`),
    /// without its body; counts it. Loads the credentials on first use.
    async fn signed(
        &self,
        call: &Call<'_>,
        payload: &str,
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        let i = &self.inner;
        let key = call.key.unwrap_or("");
        let (url, mut parts) = self.unsigned_head(call, payload)?;
        i.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| self.sign_error(call.op, key, &e))?;
        // The HTTP client writes Host (or :authority) from the URL, as signed.
        parts.headers.remove(http::header::HOST);
        i.counters.count(call.kind);
        if call.op == "UploadPart" {
            i.counters.upload_part.fetch_add(1, Ordering::Relaxed);
        }
        Ok(i.http
            .request(call.method.clone(), &url)
            .headers(parts.headers))
    }

    /// A request that could not be signed: no credentials (say what was tried and what to
    /// set), or a request the signer refused.
    fn sign_error(&self, op: &'static str, key: &str, e: &reqsign_core::Error) -> BackendError {
        let i = &self.inner;
        let (kind, message) = match (e.kind(), i.credentials) {
            (reqsign_core::ErrorKind::CredentialInvalid, CredentialSource::AwsEnvironment) => {
                (ErrorKind::Config, NO_CREDENTIALS.to_string())
            }
            (reqsign_core::ErrorKind::CredentialInvalid, CredentialSource::Profile) => (
                ErrorKind::Config,
                format!("the profile's keys cannot sign requests: {e}"),
            ),
            _ => (ErrorKind::Other, format!("cannot sign the request: {e}")),
        };
        BackendError::S3(Box::new(S3Error {
            backend: i.backend,
            op,
            bucket: i.bucket.clone(),
            key: self.full_key(key),
            status: None,
            code: None,
            message,
            kind,
        }))
    }

    fn class_and_metadata<'a>(
        &self,
        mut call: Call<'a>,
        metadata: &[(String, String)],
    ) -> Call<'a> {
        call = call.header("x-amz-storage-class", self.class.as_str());
        for (k, v) in metadata {
            call = call.header(&format!("x-amz-meta-{}", k.to_ascii_lowercase()), v.clone());
        }
        call
    }

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
    pub async fn head_object(&self, key: &str) -> Result<ObjectInfo, BackendError> {
        self.head(key, false).await
    }

    /// HEAD with `x-amz-checksum-mode: ENABLED`: also the object's SHA-256 checksum, when it
    /// was stored with one ([`ObjectInfo::checksum_sha256`]).
    pub async fn head_object_with_checksum(&self, key: &str) -> Result<ObjectInfo, BackendError> {
        self.head(key, true).await
    }

    async fn head(&self, key: &str, checksum_mode: bool) -> Result<ObjectInfo, BackendError> {
        let mut call = Call::new("HeadObject", Method::HEAD, Some(key), RequestType::Head);
        if checksum_mode {
            call = call.header("x-amz-checksum-mode", "ENABLED");
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
        Ok(ObjectInfo {
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
    ) -> Result<String, BackendError> {
        let body = xml::complete_body(parts);
        let call = Call::new(
            "CompleteMultipartUpload",
            Method::POST,
            Some(key),
            RequestType::Post,
        )
        .query("uploadId", upload_id)
        .header("content-type", "application/xml")
        .body(body);
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

#[cfg(test)]
mod tests {
    use super::*;

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
