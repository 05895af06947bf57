//! Webhook POSTs and heartbeat pings. The URLs are secrets (they carry tokens): errors
//! never include them.

use std::time::Duration;

use super::Ping;
use lomob_backends::Secret;

const TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.without_url().to_string())
}

/// POSTs `body` to the secret `url`; a non-2xx answer is an error.
pub async fn post(url: &Secret, content_type: &str, body: String) -> Result<(), String> {
    let target = url.reveal().map_err(|e| e.to_string())?;
    send(&target, content_type, body).await
}

async fn send(target: &str, content_type: &str, body: String) -> Result<(), String> {
    let resp = client()?
        .post(target)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the server answered HTTP {status}"))
    }
}

/// The healthchecks.io convention: `URL/start`, `URL`, `URL/fail`.
pub async fn ping(url: &Secret, what: Ping, body: String) -> Result<(), String> {
    let base = url.reveal().map_err(|e| e.to_string())?;
    let base = base.trim_end_matches('/');
    let target = match what {
        Ping::Start => format!("{base}/start"),
        Ping::Success => base.to_string(),
        Ping::Fail => format!("{base}/fail"),
    };
    send(&target, "text/plain; charset=utf-8", body).await
}
