//! Shared helpers for the end-to-end tests: each test gets its own home, data and config
//! folders and a library folder, and runs the real `lomob` binary with nothing leaking in
//! from the developer's environment.

#![allow(dead_code)]

pub mod cloud;
pub mod fakes;
pub mod http_proxy;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The library folder most tests scan.
    pub fn lib(&self) -> PathBuf {
        self.path().join("lib")
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("home/.local/share/lomob/lomob.db")
    }

    /// Writes `content` to `rel` under the library, creating folders.
    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.lib().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// `lomob` with a clean environment rooted in this test's folder.
    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The same as a plain `std::process::Command`, for tests that spawn and kill.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("lomob"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LOMOB_") {
                c.env_remove(k);
            }
        }
        let home = self.path().join("home");
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("NO_COLOR", "1")
            .current_dir(self.path());
        c
    }

    /// Runs `lomob ARGS --json` and parses stdout, asserting the exit code.
    pub fn json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let out = self.cmd().args(args).arg("--json").output().unwrap();
        assert_code(&out, code);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs a command whose `--json` output is JSON Lines (the `list` commands) and returns
    /// its lines as one array.
    pub fn json_lines(&self, args: &[&str], code: i32) -> serde_json::Value {
        let out = self.cmd().args(args).arg("--json").output().unwrap();
        assert_code(&out, code);
        json_lines(&out.stdout)
    }

    /// Writes a profile as `config.toml` in the test folder; returns its path for `--config`.
    pub fn config(&self, text: &str) -> String {
        self.config_named("config.toml", text)
    }

    pub fn config_named(&self, name: &str, text: &str) -> String {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// Scans the library and returns the JSON report.
    pub fn scan(&self) -> serde_json::Value {
        let lib = self.lib();
        self.json(&["scan", lib.to_str().unwrap()], 0)
    }
}

/// JSON Lines as one array; panics naming the line that is not JSON.
pub fn json_lines(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::Value::Array(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}\n{text}"))
            })
            .collect(),
    )
}

/// The lines of a manifest export after its header (which holds the time of the export).
pub fn export_body(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(String::from).collect()
}

pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets a file's mtime (seconds), so tests can make "changed" files without sleeping.
pub fn set_mtime(p: &Path, secs: i64) {
    // A folder can only be opened for reading; that is enough to set its time.
    let f = if p.is_dir() {
        std::fs::File::open(p).unwrap()
    } else {
        std::fs::File::options().write(true).open(p).unwrap()
    };
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
        .unwrap();
}

pub use lomob_backends::testing::service_var;

/// Files under `dir` (recursively), as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A signed S3 client for `bucket` on a test server (for setting up and checking).
pub fn s3_client(
    endpoint: &str,
    key: &str,
    secret: &str,
    bucket: &str,
    class: lomob_backends::StorageClass,
) -> lomob_backends::s3::S3Client {
    let c: lomob_backends::s3::S3Config = toml::from_str(&format!(
        "bucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\naccess-key-id = \"{key}\"\nsecret-access-key = \"{secret}\""
    ))
    .unwrap();
    lomob_backends::s3::S3Client::new(&c, "s3", class, &Default::default()).unwrap()
}

/// Creates a bucket on a test server.
pub fn make_bucket(endpoint: &str, key: &str, secret: &str, bucket: &str) {
    let c = s3_client(
        endpoint,
        key,
        secret,
        bucket,
        lomob_backends::StorageClass::Standard,
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(c.create_bucket())
        .unwrap();
}

/// A name unique to this test, valid as a bucket name.
pub fn unique(env: &Env) -> String {
    env.path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
        .replace(['.', '_'], "-")
}

/// A loopback TCP proxy that breaks the first `faults` connections (it reads the start of
/// the request, then closes), and passes the others through. Runs until the test process
/// ends; for counting retries against a real server.
pub struct BreakingProxy {
    pub addr: std::net::SocketAddr,
}

impl BreakingProxy {
    pub fn start(upstream: &str, faults: usize) -> BreakingProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut left = faults;
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                if left > 0 {
                    left -= 1;
                    let mut buf = [0u8; 512];
                    let _ = client.read(&mut buf);
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c, &mut s);
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.flush();
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        BreakingProxy { addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A fresh bucket on a test S3 server, with a client and a runtime to drive it.
pub struct Bucket {
    pub client: lomob_backends::s3::S3Client,
    pub rt: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn new(ep: &str, name: &str) -> Bucket {
        let client = s3_client(
            ep,
            "k",
            "s",
            name,
            lomob_backends::StorageClass::DeepArchive,
        );
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(client.create_bucket()).unwrap();
        Bucket { client, rt }
    }

    /// Polls (every 20 ms, for at most 60 s, while `child` runs) until the first open
    /// multipart upload under `archive/` has `parts` parts on the server; returns how many
    /// it had when the wait ended.
    pub fn wait_for_parts(&self, child: &mut std::process::Child, parts: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen = 0;
        while std::time::Instant::now() < deadline
            && child.try_wait().unwrap().is_none()
            && seen < parts
        {
            let uploads = self
                .rt
                .block_on(self.client.list_multipart_uploads("archive/"))
                .unwrap();
            if let Some(u) = uploads.first() {
                // Gone between the two calls (completed, or aborted to start anew): look
                // again.
                if let Ok(parts) = self
                    .rt
                    .block_on(self.client.list_parts(&u.key, &u.upload_id))
                {
                    seen = parts.len();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        seen
    }

    pub fn open_uploads(&self) -> Vec<String> {
        self.rt
            .block_on(self.client.list_multipart_uploads(""))
            .unwrap()
            .into_iter()
            .map(|u| u.key)
            .collect()
    }
}

/// Tests that measure time or race a process run one at a time (their own binary, and this
/// lock), so other tests' load does not skew them.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Moves every recorded time of the manifest `secs` into the past, through `manifest
/// export` and `manifest import` (as if the manifest had been made that long ago).
pub fn age_manifest(env: &Env, cfg: &str, secs: i64) {
    let file = env.path().join("aged.jsonl");
    env.cmd()
        .args(["--config", cfg, "manifest", "export"])
        .arg(&file)
        .assert()
        .success();
    let shift = |v: &mut serde_json::Value| {
        if let Some(n) = v.as_i64() {
            *v = (n - secs).into();
        }
    };
    let text = std::fs::read_to_string(&file).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(f) = v.get_mut("file") {
            shift(&mut f["deleted_at"]);
            shift(&mut f["first_seen"]);
            for ver in f["versions"].as_array_mut().unwrap() {
                shift(&mut ver["recorded"]);
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(&file, out).unwrap();
    std::fs::remove_dir_all(env.db()).unwrap();
    env.cmd()
        .args(["--config", cfg, "manifest", "import"])
        .arg(&file)
        .assert()
        .success();
}

pub const NS: i64 = 1_000_000_000;

/// Writes `content` at `rel` under the library with an mtime that has nanoseconds.
pub fn put(env: &Env, rel: &[u8], content: &[u8], mtime_ns: i64) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let p = env.lib().join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns as u64))
        .unwrap();
    p
}

pub fn bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Reads one HTTP/1.1 request from `conn`: its request line and its body (by
/// Content-Length); `None` when the client sent nothing.
pub fn read_request(conn: &std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use std::io::{BufRead, BufReader, Read};
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    Some((line, body))
}

/// A loopback HTTP server that answers every request `200 OK` and keeps `METHOD path` and
/// the body of each: a webhook or heartbeat receiver. Runs until the test process ends.
pub struct HookServer {
    pub addr: std::net::SocketAddr,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl HookServer {
    pub fn start() -> HookServer {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let Some((line, body)) = read_request(&conn) else {
                    continue;
                };
                let mut parts = line.split_whitespace();
                let what = format!(
                    "{} {}",
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("")
                );
                s.lock()
                    .unwrap()
                    .push((what, String::from_utf8_lossy(&body).into_owned()));
                let mut w = conn;
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            }
        });
        HookServer { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests whose `METHOD path` is exactly `what`.
    pub fn bodies(&self, what: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// The mails in a Maildir (aiosmtpd's Mailbox handler) sent to `to`.
pub fn mails_to(maildir: &Path, to: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains(to) {
                out.push(text);
            }
        }
    }
    out
}
