//! A loopback HTTP/1.1 front that answers chosen requests itself and forwards the others to a
//! real server, to show how the S3 client copes with answers a real server would rarely give
//! (a permanent error to one operation, an answer sent before the request body was read).
//!
//! One request per connection: every answer carries `Connection: close`, which keeps the
//! forwarding a plain copy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The start of a request, as the rule sees it.
#[derive(Clone, Debug)]
pub struct Head {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
}

/// What to do with a request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Send it to the real server.
    Forward,
    /// Answer with this status and S3 error code, after reading the request.
    Error { status: u16, code: &'static str },
    /// Answer with this status and code at once, without reading the request body, then
    /// keep the connection open and read nothing more (a server that refused early).
    ErrorAndHold { status: u16, code: &'static str },
}

/// A running front; stops accepting when dropped.
pub struct HttpFront {
    pub addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for HttpFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpFront {
    /// Applies `rule` to every request; forwarded ones go to `upstream`.
    pub async fn start(
        upstream: SocketAddr,
        rule: impl Fn(&Head) -> Answer + Send + Sync + 'static,
    ) -> HttpFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let addr = listener.local_addr().expect("front address");
        let rule = Arc::new(rule);
        let answered = Arc::new(AtomicUsize::new(0));
        let counted = answered.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (rule, counted) = (rule.clone(), counted.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream, &*rule, &counted).await;
                });
            }
        });
        HttpFront {
            addr,
            answered,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests the front answered itself.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    rule: &(dyn Fn(&Head) -> Answer + Send + Sync),
    answered: &AtomicUsize,
) -> std::io::Result<()> {
    // The request head, and whatever of the body came with it.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head_text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let head = Head {
        method: first.next().unwrap_or_default().to_string(),
        target: first.next().unwrap_or_default().to_string(),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let answer = rule(&head);
    let error = |status: u16, code: &str| {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test front</Message></Error>"
        );
        format!(
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match answer {
        Answer::ErrorAndHold { status, code } => {
            answered.fetch_add(1, Ordering::SeqCst);
            client.write_all(error(status, code).as_bytes()).await?;
            // Read nothing more: the client's body stays unsent, for as long as it waits.
            tokio::time::sleep(Duration::from_secs(300)).await;
            Ok(())
        }
        Answer::Error { status, code } => {
            let mut have = buf.len() - end;
            while have < length {
                let n = client.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                have += n;
            }
            answered.fetch_add(1, Ordering::SeqCst);
            client.write_all(error(status, code).as_bytes()).await?;
            client.shutdown().await
        }
        Answer::Forward => {
            let mut server = TcpStream::connect(upstream).await?;
            let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
            for (k, v) in headers.iter().filter(|(k, _)| k != "connection") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("connection: close\r\n\r\n");
            server.write_all(out.as_bytes()).await?;
            server.write_all(&buf[end..]).await?;
            let mut left = length.saturating_sub(buf.len() - end);
            while left > 0 {
                let n = client.read(&mut chunk[..left.min(64 * 1024)]).await?;
                if n == 0 {
                    break;
                }
                server.write_all(&chunk[..n]).await?;
                left -= n;
            }
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(60), server.read_to_end(&mut answer))
                .await
                .map_err(|_| std::io::Error::other("the upstream did not close"))??;
            // Pass the answer on with `Connection: close`, whatever the upstream said.
            let split = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len(), |i| i + 4);
            let text = String::from_utf8_lossy(&answer[..split]).to_string();
            let mut head_out = String::new();
            for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    head_out.push_str(line);
                    head_out.push_str("\r\n");
                }
            }
            head_out.push_str("Connection: close\r\n\r\n");
            client.write_all(head_out.as_bytes()).await?;
            client.write_all(&answer[split..]).await?;
            client.shutdown().await
        }
    }
}
