//! A loopback HTTP/1.1 proxy in front of a real test server that can change one answer:
//! refuse a request, or rewrite a response header. Requests and answers are parsed just
//! enough to find their ends (Content-Length, or chunked answers passed through as they
//! come), so keep-alive connections work. For provoking what real providers do and local
//! servers do not (an SSE-KMS ETag, a 403 on one call, a thaw still in progress, a stalled
//! answer) against a real server otherwise. It keeps a log of the requests it saw and counts
//! the response body bytes it passed on: what a client really sent and downloaded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One request as the rule sees it.
pub struct Seen<'a> {
    pub method: &'a str,
    /// Path and query.
    pub target: &'a str,
}

/// What to do with a request.
pub enum Action {
    Forward,
    /// Answer with this status and an S3-style error body, without forwarding.
    Refuse(u16, &'static str),
    /// Answer with this status and an empty body, without forwarding (a RestoreObject's 200
    /// for a copy already thawed).
    Answer(u16),
    /// Forward, then replace (or add) these response headers.
    SetHeaders(Vec<(&'static str, String)>),
    /// Never answer (for two minutes): a server that hangs mid-transfer.
    Stall,
    /// Close the connection once the request head is read: a reset before any answer.
    Reset,
    /// Forward, then pass on only the first half of the response body and close: an answer
    /// cut short.
    Truncate,
    /// Forward, then flip one byte in the middle of a response body of known length: a 200
    /// with the wrong bytes.
    Corrupt,
}

pub type Rule = dyn Fn(&Seen) -> Action + Send + Sync;

pub struct HttpProxy {
    pub addr: SocketAddr,
    pub traffic: Arc<Traffic>,
}

/// What went through the proxy.
#[derive(Default)]
pub struct Traffic {
    /// `METHOD target` of every request, in order.
    pub log: Mutex<Vec<String>>,
    /// Response body bytes passed to clients.
    pub body_bytes: AtomicU64,
}

impl Traffic {
    /// Requests whose method is `method` and whose target contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&format!("{method} ")) && l.contains(part))
            .count()
    }

    pub fn bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }
}

/// Counts what is written through it.
struct Counted<'a, W: Write>(W, &'a AtomicU64);

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl HttpProxy {
    pub fn start(upstream: &str, rule: Arc<Rule>) -> HttpProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let traffic = Arc::new(Traffic::default());
        let t = traffic.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, rule, t) = (upstream.clone(), rule.clone(), t.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &*rule, &t);
                });
            }
        });
        HttpProxy { addr, traffic }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads a head (request or status line and headers) up to the blank line.
fn head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn write_head(w: &mut impl Write, lines: &[String]) -> std::io::Result<()> {
    for l in lines {
        w.write_all(l.as_bytes())?;
        w.write_all(b"\r\n")?;
    }
    w.write_all(b"\r\n")
}

/// Copies a body whose length the head gives (or a chunked body, chunk by chunk).
fn copy_body(
    lines: &[String],
    from: &mut impl BufRead,
    to: &mut impl Write,
    until_close: bool,
) -> std::io::Result<()> {
    if let Some(n) = header(lines, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        std::io::copy(&mut from.take(n), to)?;
        return Ok(());
    }
    if header(lines, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            from.read_line(&mut size)?;
            to.write_all(size.as_bytes())?;
            let n =
                u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            std::io::copy(&mut from.take(n + 2), to)?;
            if n == 0 {
                return Ok(());
            }
        }
    }
    if until_close {
        std::io::copy(from, to)?;
    }
    Ok(())
}

fn serve(client: TcpStream, upstream: &str, rule: &Rule, traffic: &Traffic) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let server = TcpStream::connect(upstream)?;
    let mut from_server = BufReader::new(server.try_clone()?);
    let mut to_server = server;
    while let Some(req) = head(&mut from_client)? {
        let mut parts = req[0].split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        traffic
            .log
            .lock()
            .unwrap()
            .push(format!("{method} {target}"));
        let action = rule(&Seen {
            method: &method,
            target: &target,
        });
        if let Action::Stall = action {
            std::thread::sleep(std::time::Duration::from_secs(120));
            return Ok(());
        }
        if let Action::Reset = action {
            return Ok(());
        }
        if let Action::Answer(status) = action {
            copy_body(&req, &mut from_client, &mut std::io::sink(), false)?;
            write!(
                to_client,
                "HTTP/1.1 {status} OK\r\nContent-Length: 0\r\n\r\n"
            )?;
            to_client.flush()?;
            continue;
        }
        if let Action::Refuse(status, code) = action {
            // Read (and drop) the body, then answer.
            copy_body(&req, &mut from_client, &mut std::io::sink(), false)?;
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>refused by the test proxy</Message></Error>"
            );
            write!(
                to_client,
                "HTTP/1.1 {status} Refused\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            to_client.flush()?;
            continue;
        }
        write_head(&mut to_server, &req)?;
        copy_body(&req, &mut from_client, &mut to_server, false)?;
        to_server.flush()?;
        let Some(mut resp) = head(&mut from_server)? else {
            return Ok(());
        };
        if let Action::SetHeaders(set) = &action {
            for (name, value) in set {
                resp.retain(|l| {
                    !l.split_once(':')
                        .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                });
                resp.push(format!("{name}: {value}"));
            }
        }
        write_head(&mut to_client, &resp)?;
        let bodyless = method == "HEAD" || resp[0].contains(" 204 ") || resp[0].contains(" 304 ");
        let length = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok());
        if let (false, Some(n), Action::Truncate | Action::Corrupt) = (bodyless, length, &action) {
            let mut body = Vec::with_capacity(n as usize);
            (&mut from_server).take(n).read_to_end(&mut body)?;
            if matches!(action, Action::Truncate) {
                body.truncate(body.len() / 2);
                to_client.write_all(&body)?;
                return Ok(());
            }
            let middle = body.len() / 2;
            if let Some(b) = body.get_mut(middle) {
                *b ^= 0x5a;
            }
            to_client.write_all(&body)?;
            traffic.body_bytes.fetch_add(n, Ordering::SeqCst);
        } else if !bodyless {
            let close =
                header(&resp, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let mut counted = Counted(&mut to_client, &traffic.body_bytes);
            copy_body(&resp, &mut from_server, &mut counted, close)?;
        }
        to_client.flush()?;
    }
    Ok(())
}
