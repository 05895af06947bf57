//! Sending one request: the URL and headers, the SigV4 signature, a timeout that does not
//! count time spent waiting for the bandwidth pacer, retries of transient failures with
//! backoff and jitter, per-type counting, and errors with a kind and a hint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use super::super::xml;
use super::credentials::{CredentialSource, NO_CREDENTIALS};
use super::S3Client;
use crate::error::{chain, S3Error};
use crate::requests::RequestType;
pub(super) use crate::transfer::{paced_body, PaceClock};
use crate::{BackendError, ErrorKind};

/// Runs `fut` for at most `limit`, not counting the time the pacer held its body back:
/// `None` when it took longer.
pub(super) async fn within<F: std::future::Future>(
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

/// The answer to one request (after retries).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// The parsed S3 error, for failures and for 200 answers that carry an error document.
    pub(super) error: Option<xml::ErrorBody>,
}

impl Reply {
    pub(super) fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Reply {
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

    pub(super) fn ok(&self) -> bool {
        self.status.is_success() && self.error.is_none()
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(super) fn code(&self) -> Option<&str> {
        self.error
            .as_ref()
            .map(|e| e.code.as_str())
            .filter(|c| !c.is_empty())
    }
}

/// One request to send.
pub(super) struct Call<'a> {
    pub(super) op: &'static str,
    pub(super) method: Method,
    /// Object key relative to the prefix; `None` for bucket-level requests.
    pub(super) key: Option<&'a str>,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Bytes,
    /// Hex SHA-256 of `body`, when already computed.
    pub(super) body_sha256: Option<String>,
    pub(super) kind: RequestType,
}

impl<'a> Call<'a> {
    pub(super) fn new(
        op: &'static str,
        method: Method,
        key: Option<&'a str>,
        kind: RequestType,
    ) -> Self {
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

    pub(super) fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }

    pub(super) fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }

    pub(super) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// In a signed path, `/` separates segments and stays as it is; otherwise S3 leaves the
/// unreserved characters as they are.
pub(super) const PATH: &AsciiSet = &crate::uri::UNRESERVED.remove(b'/');

/// The payload hash of a request whose body is not signed (streamed bodies, parts sent with
/// Content-MD5).
pub(super) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Percent-encodes a path as S3 signs it (each segment encoded, `/` kept): the request goes
/// out exactly as the signer canonicalises it.
pub(super) fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// Percent-encodes a query key or value.
pub(super) fn encode_query(s: &str) -> String {
    crate::uri::encode(s)
}

/// Hex SHA-256 of a body.
pub(super) fn sha256_hex(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

pub(super) fn md5_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// Chooses what an S3 error means for the engine.
pub(super) fn classify(status: Option<u16>, code: Option<&str>) -> ErrorKind {
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
        // A peer receiver's quota or disk (`lomob serve`): sending again changes nothing.
        Some("QuotaExceeded" | "InsufficientStorage") => return ErrorKind::Space,
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
        Some(507) => ErrorKind::Space,
        Some(s) if s >= 500 => ErrorKind::Transient,
        None => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// True when an answer is worth sending the request again for.
pub(super) fn retryable(status: StatusCode, code: Option<&str>) -> bool {
    // 501 Not Implemented is a permanent answer (rclone serve s3 gives it for replacing a
    // part with different bytes).
    // 507 Insufficient Storage (a peer receiver's quota or disk) stays full until a person acts.
    (status.is_server_error()
        && status != StatusCode::NOT_IMPLEMENTED
        && status != StatusCode::INSUFFICIENT_STORAGE)
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || matches!(
            code,
            Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
        )
}

/// How one attempt of a request ended when it did not give an answer to return.
pub(super) enum Attempt {
    /// Worth another try: what went wrong, and the (transient) answer if there was one.
    Again {
        failure: String,
        reply: Option<Reply>,
    },
    /// Not worth another try (the request could not even be signed).
    Stop(BackendError),
}

impl Attempt {
    fn again(failure: String) -> Attempt {
        Attempt::Again {
            failure,
            reply: None,
        }
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Again { failure, .. } => f.write_str(failure),
            Attempt::Stop(e) => write!(f, "{e}"),
        }
    }
}

impl S3Client {
    pub(super) fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.prefix, key.trim_start_matches('/'))
    }

    /// Builds an error for `op` on `key` (relative), with a hint fitting its kind.
    pub(super) fn error(
        &self,
        op: &'static str,
        key: &str,
        status: Option<u16>,
        code: Option<&str>,
        detail: &str,
    ) -> BackendError {
        let i = &self.inner;
        let kind = if detail.contains(crate::tls::PIN_MISMATCH) {
            ErrorKind::Permission
        } else {
            classify(status, code)
        };
        let hint = match (kind, code) {
            (ErrorKind::Permission, _) if status.is_none() => String::new(),
            // A lomob receiver says what is full and what to do; others only a code.
            (ErrorKind::Space, _) if detail.trim().is_empty() || detail.trim().ends_with(':') => {
                "the server has no room for it: it keeps what it holds; free space or raise the quota there, then run again".to_string()
            }
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
    pub(super) fn fail(&self, call_op: &'static str, key: &str, r: &Reply) -> BackendError {
        let detail = r
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        self.error(call_op, key, Some(r.status.as_u16()), r.code(), &detail)
    }

    /// Where a request goes: the URL, the host header, and the encoded path that is signed.
    pub(super) fn target(&self, key: Option<&str>) -> (String, String, String) {
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
    pub(super) async fn execute(&self, call: Call<'_>) -> Result<Reply, BackendError> {
        use backon::Retryable as _;
        let i = &self.inner;
        let key = call.key.unwrap_or("");
        let payload = call.body_sha256.clone().unwrap_or_else(|| {
            if call.body.is_empty() {
                reqsign_aws_v4::EMPTY_STRING_SHA256.to_string()
            } else {
                sha256_hex(&call.body)
            }
        });
        let sent = (|| self.attempt(&call, &payload))
            .retry(i.transfer.retry_policy())
            .sleep(tokio::time::sleep)
            .when(|a| matches!(a, Attempt::Again { .. }))
            .notify(|a, delay| {
                i.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    op = call.op,
                    bucket = %i.bucket,
                    key,
                    ?delay,
                    "retrying S3 request: {a}"
                )
            })
            .await;
        match sent {
            Ok(reply) => Ok(reply),
            Err(Attempt::Again { reply: Some(r), .. }) => Err(self.fail(call.op, key, &r)),
            Err(Attempt::Again { failure, .. }) => {
                Err(self.error(call.op, key, None, None, &failure))
            }
            Err(Attempt::Stop(e)) => Err(e),
        }
    }

    /// Sends `call` once. An answer not worth sending again for (success, or a permanent
    /// refusal the caller reads) is `Ok`; a timeout, a network error or a transient answer
    /// (5xx, 429, SlowDown) is worth another try.
    async fn attempt(&self, call: &Call<'_>, payload: &str) -> Result<Reply, Attempt> {
        let i = &self.inner;
        let timeout = Duration::from_secs(i.transfer.timeout_secs.max(1));
        let req = self.signed(call, payload).await.map_err(Attempt::Stop)?;
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
        match sent {
            None => Err(Attempt::again(format!(
                "no complete answer within {}s",
                timeout.as_secs()
            ))),
            Some(Err(e)) => {
                let failure = chain(&e);
                // A pinned receiver that shows another certificate will show it again.
                if failure.contains(crate::tls::PIN_MISMATCH) {
                    let key = call.key.unwrap_or("");
                    return Err(Attempt::Stop(
                        self.error(call.op, key, None, None, &failure),
                    ));
                }
                Err(Attempt::again(format!("request failed: {failure}")))
            }
            Some(Ok((status, headers, body))) => {
                let reply = Reply::new(status, headers, body);
                if reply.ok() || !retryable(status, reply.code()) {
                    return Ok(reply);
                }
                Err(Attempt::Again {
                    failure: format!("HTTP {} {}", status.as_u16(), reply.code().unwrap_or("")),
                    reply: Some(reply),
                })
            }
        }
    }

    /// The head of the request for `call` with its payload hash, not yet signed (what the
    /// signer sees), and its URL.
    pub(super) fn unsigned_head(
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
    pub(super) async fn signed(
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
    pub(super) fn sign_error(
        &self,
        op: &'static str,
        key: &str,
        e: &reqsign_core::Error,
    ) -> BackendError {
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

    pub(super) fn class_and_metadata<'a>(
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
}
