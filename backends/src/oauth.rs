//! What OpenDAL's gdrive and onedrive services leave out of talking to an OAuth provider,
//! added as an HTTP transport under their operators:
//!
//! - **Throttling.** Drive and Graph answer 429 (and 503) with `Retry-After` when a client
//!   goes too fast; OpenDAL 0.59 classifies neither 429 as retryable nor reads the header.
//!   Here such an answer is retried after the time the provider asks for (capped), or with
//!   a short backoff when it names none.
//! - **Expired access tokens.** OpenDAL refreshes an access token only when its own clock
//!   says it expired; a 401 (a token revoked early, a clock off) fails the request for good.
//!   Here a 401 to a signed request refreshes the token once with the refresh token, and
//!   the request (and every later one carrying the stale token) goes out with the new one.
//! - **A refused refresh token** (`invalid_grant`: revoked, expired, password changed) is
//!   reported as a permission error that says to run `lomob site auth`, not as the
//!   provider's JSON.
//!
//! - **lomob's own calls** (the providers' checksums, which OpenDAL's services never ask
//!   for: see [`crate::gdrive`] and [`crate::onedrive`]) go through the same transport with
//!   [`api_get`]: signed with the access token OpenDAL's service is using (or the one that
//!   replaced it), so they share its refreshes, throttling and request counting.
//!
//! Why a transport and not a fork: the services' signers are private; the transport sees
//! every request and answer, including the signers' own token requests.

use std::sync::Mutex;
use std::time::Duration;

use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter, Operator};

use crate::uri;

/// The longest `Retry-After` honoured; a longer one is waited for this long, then retried.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One provider's token endpoint and the credentials to refresh with.
pub(crate) struct OAuthClient {
    /// "Google" or "Microsoft", for messages.
    pub provider: &'static str,
    pub token_url: &'static str,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub refresh_token: String,
    /// Extra form fields of the refresh grant (Microsoft wants the scope again).
    pub extra: &'static [(&'static str, &'static str)],
}

struct OAuthTransport {
    inner: HttpTransporter,
    client: OAuthClient,
    /// Attempts after the first for a throttled request.
    retries: usize,
    tokens: Mutex<Tokens>,
    /// Held while refreshing, so requests refused at once refresh once between them.
    refreshing: tokio::sync::Mutex<()>,
}

/// Puts the OAuth handling under `op` (after any request observer, so retries are counted).
pub(crate) fn wrap(op: Operator, client: OAuthClient, retries: usize) -> Operator {
    let ctx = op.context().clone();
    let transport = HttpTransporter::new(OAuthTransport {
        inner: ctx.http_transport().clone(),
        client,
        retries,
        tokens: Mutex::new(Tokens::default()),
        refreshing: tokio::sync::Mutex::new(()),
    });
    op.with_context(ctx.with_http_transport(transport))
}

/// The access tokens this transport has seen.
#[derive(Default)]
struct Tokens {
    /// Found expired (refused with 401).
    stale: Vec<String>,
    /// The one that replaced them.
    fresh: Option<String>,
    /// The last one OpenDAL's signer put on a request.
    seen: Option<String>,
}

impl Tokens {
    /// The token a request of lomob's own should carry.
    fn current(&self) -> Option<String> {
        self.fresh.clone().or_else(|| self.seen.clone())
    }
}

/// Marks a request lomob builds itself: the transport signs it with the current token.
#[derive(Clone, Copy, Debug)]
struct SignHere;

fn copy(req: &http::Request<Buffer>) -> http::Request<Buffer> {
    let mut r = http::Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    *r.extensions_mut() = req.extensions().clone();
    r
}

fn bearer(req: &http::Request<Buffer>) -> Option<String> {
    req.headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn set_bearer(req: &mut http::Request<Buffer>, token: &str) {
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.headers_mut().insert(http::header::AUTHORIZATION, v);
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(resp: &http::Response<HttpBody>) -> Option<Duration> {
    let v = resp
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    if let Ok(s) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = crate::object::http_date(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((at - now).max(0) as u64))
}

impl OAuthTransport {
    fn is_token_request(&self, req: &http::Request<Buffer>) -> bool {
        let uri = req.uri().to_string();
        uri.split('?').next() == Some(self.client.token_url)
    }

    /// The message for a refused refresh token.
    fn refused(&self, status: http::StatusCode, body: &[u8]) -> opendal::Error {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let code = v["error"].as_str().unwrap_or("");
        let desc = v["error_description"].as_str().unwrap_or("");
        opendal::Error::new(
            opendal::ErrorKind::PermissionDenied,
            format!(
                "{} refused the refresh token (HTTP {status} {code}: {desc}); it was revoked or has expired: get a new one with `lomob site auth SITE`",
                self.client.provider
            ),
        )
    }

    /// Sends one request, waiting out throttling answers.
    async fn send(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        let mut attempt = 0;
        loop {
            let resp = self.inner.fetch(copy(&req)).await?;
            let s = resp.status();
            let throttled = s == http::StatusCode::TOO_MANY_REQUESTS
                || s == http::StatusCode::SERVICE_UNAVAILABLE;
            if !throttled || attempt >= self.retries {
                return Ok(resp);
            }
            let wait = retry_after(&resp)
                .unwrap_or(Duration::from_millis(500 << attempt.min(6)))
                .min(MAX_RETRY_AFTER);
            tracing::info!(status = %s, wait_secs = wait.as_secs_f64(), uri = %req.uri(), "throttled: retrying after the provider's Retry-After");
            drop(resp);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// A full drive (Drive's 403 `storageQuotaExceeded`, Graph's 507 `quotaLimitReached`)
    /// as an error that says so; any other answer as it came.
    async fn full(
        &self,
        resp: http::Response<HttpBody>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        let s = resp.status();
        if s != http::StatusCode::FORBIDDEN && s != http::StatusCode::INSUFFICIENT_STORAGE {
            return Ok(resp);
        }
        let (parts, mut body) = resp.into_parts();
        let buf = body.to_buffer().await?;
        let text = String::from_utf8_lossy(&buf.to_vec()).into_owned();
        if let Some(code) = ["storageQuotaExceeded", "quotaLimitReached"]
            .into_iter()
            .find(|c| text.contains(c))
        {
            return Err(opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                format!(
                    "the {} drive is full (HTTP {s} {code}): free space on it (deleted files count until its trash or recycle bin is emptied) or lower the site's free-quota; files not staged are staged by a later run",
                    self.client.provider
                ),
            ));
        }
        let size = buf.len() as u64;
        let body = HttpBody::new(futures::stream::iter(vec![Ok(buf)]), Some(size));
        Ok(http::Response::from_parts(parts, body))
    }

    /// A new access token from the refresh token.
    async fn refresh(&self) -> opendal::Result<String> {
        let mut form = url_form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &self.client.refresh_token),
            ("client_id", &self.client.client_id),
        ]);
        if let Some(s) = &self.client.client_secret {
            form.push('&');
            form.push_str(&url_form(&[("client_secret", s)]));
        }
        if !self.client.extra.is_empty() {
            form.push('&');
            form.push_str(&url_form(self.client.extra));
        }
        let req = http::Request::post(self.client.token_url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Buffer::from(form))
            .map_err(|e| opendal::Error::new(opendal::ErrorKind::Unexpected, e.to_string()))?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = read_body(resp).await?;
        if !status.is_success() {
            return Err(self.refused(status, &body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                opendal::Error::new(
                    opendal::ErrorKind::Unexpected,
                    format!(
                        "{} answered a token refresh without an access token",
                        self.client.provider
                    ),
                )
            })
    }
}

impl OAuthTransport {
    /// The token in use; a new one when none was seen yet (lomob's call came first).
    async fn current_token(&self) -> opendal::Result<String> {
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current()
        {
            return Ok(t);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current()
        {
            return Ok(t);
        }
        // Kept as seen, not as the replacement of an expired one: OpenDAL's signer still
        // holds its own, which stays good.
        let t = self.refresh().await?;
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).seen = Some(t.clone());
        Ok(t)
    }
}

/// Sends a GET of lomob's own (a Drive or Graph call OpenDAL's services do not make) through
/// `op`'s transport, signed with the token OpenDAL's service uses, and returns the JSON
/// answer. An answer other than 2xx is an error of the matching kind (`NotFound` for 404).
/// The caller should let OpenDAL make a request first, so no extra token is fetched.
/// Transient failures (a dropped connection, a 5xx) are retried as OpenDAL's own requests
/// are, with the default transfer settings' policy.
pub(crate) async fn api_get(op: &Operator, url: &str) -> opendal::Result<serde_json::Value> {
    use backon::Retryable;
    (|| api_get_once(op, url))
        .retry(crate::TransferConfig::default().retry_policy())
        .when(|e| e.is_temporary())
        .await
}

async fn api_get_once(op: &Operator, url: &str) -> opendal::Result<serde_json::Value> {
    let unexpected = |m: String| opendal::Error::new(opendal::ErrorKind::Unexpected, m);
    let req = http::Request::get(url)
        .extension(SignHere)
        .body(Buffer::new())
        .map_err(|e| unexpected(e.to_string()))?;
    let resp = op.context().http_transport().fetch(req).await?;
    let status = resp.status();
    let body = read_body(resp).await?;
    if !status.is_success() {
        let kind = match status.as_u16() {
            404 => opendal::ErrorKind::NotFound,
            401 | 403 => opendal::ErrorKind::PermissionDenied,
            429 => opendal::ErrorKind::RateLimited,
            _ => opendal::ErrorKind::Unexpected,
        };
        let text = String::from_utf8_lossy(&body);
        let e = opendal::Error::new(
            kind,
            format!(
                "HTTP {status} from {}: {}",
                url.split('?').next().unwrap_or(url),
                text.chars().take(300).collect::<String>()
            ),
        );
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            e.set_temporary()
        } else {
            e
        });
    }
    serde_json::from_slice(&body).map_err(|e| unexpected(format!("{url}: not JSON: {e}")))
}

async fn read_body(resp: http::Response<HttpBody>) -> opendal::Result<Vec<u8>> {
    let mut body = resp.into_body();
    Ok(body.to_buffer().await?.to_vec())
}

fn url_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", uri::encode(k), uri::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl HttpTransport for OAuthTransport {
    async fn fetch(
        &self,
        mut req: http::Request<Buffer>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        if self.is_token_request(&req) {
            // OpenDAL's own refresh: a refused refresh token is said plainly.
            let resp = self.send(req).await?;
            let status = resp.status();
            if status == http::StatusCode::BAD_REQUEST || status == http::StatusCode::UNAUTHORIZED {
                let body = read_body(resp).await?;
                return Err(self.refused(status, &body));
            }
            return Ok(resp);
        }
        if req.extensions().get::<SignHere>().is_some() && bearer(&req).is_none() {
            let t = self.current_token().await?;
            set_bearer(&mut req, &t);
        }
        let sent = bearer(&req);
        if let Some(t) = &sent {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            match (tokens.stale.contains(t), tokens.fresh.clone()) {
                (true, Some(fresh)) => set_bearer(&mut req, &fresh),
                _ => tokens.seen = Some(t.clone()),
            }
        }
        let resp = self.send(copy(&req)).await?;
        if resp.status() != http::StatusCode::UNAUTHORIZED {
            return self.full(resp).await;
        }
        let Some(used) = bearer(&req) else {
            return Ok(resp);
        };
        drop(resp);
        let _one_at_a_time = self.refreshing.lock().await;
        // Refreshed already by another request since this one was signed?
        let current = {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.fresh.clone().filter(|t| *t != used)
        };
        let fresh = match current {
            Some(t) => t,
            None => {
                tracing::info!(
                    provider = self.client.provider,
                    "access token refused (401): refreshing it once"
                );
                let t = self.refresh().await?;
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                tokens.stale.push(used.clone());
                if let Some(s) = sent {
                    if !tokens.stale.contains(&s) {
                        tokens.stale.push(s);
                    }
                }
                tokens.fresh = Some(t.clone());
                t
            }
        };
        set_bearer(&mut req, &fresh);
        let resp = self.send(req).await?;
        self.full(resp).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_values_are_encoded() {
        assert_eq!(
            super::url_form(&[("scope", "offline_access Files.ReadWrite"), ("a", "b/c")]),
            "scope=offline_access%20Files.ReadWrite&a=b%2Fc"
        );
    }
}
