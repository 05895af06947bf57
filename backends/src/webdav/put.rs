//! A streamed PUT for WebDAV archives.
//!
//! OpenDAL's webdav writer is one-shot: it takes an object in a single write, whole in
//! memory, and refuses a second write, so an image of gigabytes could not go up at all (an
//! image over one 8 MiB block failed with "OneShotWriter doesn't support multiple write").
//! An image goes instead as one PUT whose body streams from the image reader, its length
//! declared (servers behind nginx refuse chunked uploads), paced like every upload of the
//! site, and given up when no byte has moved for the transfer timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::HeaderValue;

use super::WebdavConfig;
use crate::error::chain;
use crate::requests::{RequestCounters, RequestType};
use crate::transfer::{paced_body, PaceClock, Pacer, TransferConfig};
use crate::{reveal, BackendError, ErrorKind};

/// Characters kept as they are in a path: unreserved ones and the separator.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One WebDAV share's streamed uploads.
pub struct WebdavPut {
    http: reqwest::Client,
    /// Endpoint and root, percent-encoded, ending in `/`.
    base: String,
    auth: Option<HeaderValue>,
    timeout: Duration,
    pacer: Option<Arc<Pacer>>,
    /// The site's request counts: this PUT bypasses OpenDAL's observed operator.
    counters: Option<Arc<RequestCounters>>,
}

impl WebdavConfig {
    /// The streamed uploader for this share, with the site's timeout and bandwidth limit.
    pub fn streamed_put(
        &self,
        transfer: &TransferConfig,
        pacer: Option<Arc<Pacer>>,
    ) -> Result<WebdavPut, BackendError> {
        let k = "webdav";
        let timeout = Duration::from_secs(transfer.timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BackendError::invalid(k, format!("HTTP client: {}", chain(&e))))?;
        let auth = match (&self.username, &self.password, &self.token) {
            (_, _, Some(t)) => Some(format!("Bearer {}", reveal(k, t)?)),
            (Some(u), p, None) => {
                let p = p.as_ref().map(|p| reveal(k, p)).transpose()?;
                let pair = format!("{u}:{}", p.unwrap_or_default());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, _, None) => None,
        };
        let auth = auth
            .map(|a| {
                let mut v = HeaderValue::from_str(&a).map_err(|_| {
                    BackendError::invalid(k, "`username`, `password` or `token` holds characters an HTTP header cannot carry")
                })?;
                v.set_sensitive(true);
                Ok::<_, BackendError>(v)
            })
            .transpose()?;
        let root = format!("/{}/", self.root.trim_matches('/')).replace("//", "/");
        Ok(WebdavPut {
            http,
            base: format!(
                "{}{}",
                self.endpoint.trim_end_matches('/'),
                utf8_percent_encode(&root, PATH)
            ),
            auth,
            timeout,
            pacer,
            counters: None,
        })
    }
}

impl WebdavPut {
    /// Counts each PUT in `counters` (the site's archive requests).
    pub fn counted(mut self, counters: Arc<RequestCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// The URL of `path` (relative to the profile's root).
    fn url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.base,
            utf8_percent_encode(path.trim_start_matches('/'), PATH)
        )
    }

    /// PUTs the `len` bytes of `body` as `path`, whose folder must exist. A body that fails
    /// (its reader's error) aborts the request, so the server never completes a short object.
    pub async fn put<S>(&self, path: &str, len: u64, body: S) -> Result<(), BackendError>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let clock = Arc::new(PaceClock::default());
        let started = Instant::now();
        // Milliseconds after `started` at which the connection last took a piece.
        let moved = Arc::new(AtomicU64::new(0));
        let m = moved.clone();
        let body = paced_body(body, self.pacer.clone(), clock.clone()).map(move |piece| {
            m.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            piece
        });
        let mut req = self
            .http
            .put(self.url(path))
            .header("content-type", "application/octet-stream")
            .header("content-length", len.to_string())
            .body(reqwest::Body::wrap_stream(body));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a.clone());
        }
        if let Some(c) = &self.counters {
            c.add(RequestType::Put, 1);
        }
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, text))
        };
        tokio::pin!(exchange);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let answer = loop {
            tokio::select! {
                r = &mut exchange => break r,
                _ = tick.tick() => {
                    let idle = started
                        .elapsed()
                        .saturating_sub(Duration::from_millis(moved.load(Ordering::Relaxed)));
                    if idle > self.timeout && !clock.pacing.load(Ordering::Relaxed) {
                        return Err(http_error(path, None, ErrorKind::Transient, format!(
                            "no progress for {}s; the next run sends the image again",
                            self.timeout.as_secs()
                        )));
                    }
                }
            }
        };
        let (status, text) =
            answer.map_err(|e| http_error(path, None, ErrorKind::Transient, chain(&e)))?;
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        let (kind, hint) = match code {
            401 | 403 => (ErrorKind::Permission, "check `username`, `password` or `token`"),
            404 | 409 => (ErrorKind::NotFound, "the folder is missing on the server"),
            413 => (ErrorKind::Config, "the server refuses objects this large: raise its upload limit, or lower the site's iso-size"),
            507 => (ErrorKind::Space, "the share is full"),
            408 | 429 | 500..=599 => (ErrorKind::Transient, "the next run sends the image again"),
            _ => (ErrorKind::Other, "the server refused the upload"),
        };
        let said: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        Err(http_error(
            path,
            Some(code),
            kind,
            if said.trim().is_empty() {
                hint.to_string()
            } else {
                format!("{hint} (the server said: {})", said.trim())
            },
        ))
    }
}

fn http_error(path: &str, status: Option<u16>, kind: ErrorKind, message: String) -> BackendError {
    BackendError::Http {
        backend: "webdav",
        op: "PUT",
        path: path.to_string(),
        status,
        message,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str, root: &str) -> WebdavConfig {
        WebdavConfig {
            endpoint: endpoint.into(),
            root: root.into(),
            username: None,
            password: None,
            token: None,
            one_shot_limit: None,
        }
    }

    #[test]
    fn urls_join_endpoint_root_and_key_encoded() {
        let t = TransferConfig::default();
        let p = cfg("https://nas.local:5006/", "/lomob")
            .streamed_put(&t, None)
            .unwrap();
        assert_eq!(
            p.url("archive/a-2020.iso.partial"),
            "https://nas.local:5006/lomob/archive/a-2020.iso.partial"
        );
        let p = cfg("http://h", "/").streamed_put(&t, None).unwrap();
        assert_eq!(
            p.url("archive/x y#?.iso"),
            "http://h/archive/x%20y%23%3F.iso"
        );
        let p = cfg("http://h/dav", "photos backup/")
            .streamed_put(&t, None)
            .unwrap();
        assert_eq!(p.url("meta/x"), "http://h/dav/photos%20backup/meta/x");
    }
}
