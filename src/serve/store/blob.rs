//! The file-level steps every write and read is built from: receiving a body into a temporary
//! file while hashing it, writing a small file through a temporary name, syncing folders,
//! and streaming a byte range of a file back out.
//!
//! File I/O and hashing run on tokio's blocking pool in steps of about a mebibyte, so a 5 GB
//! body never sits in memory and never holds an async worker thread for more than a moment.

pub use crate::platform::file::sync_dir;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::StoreError;

/// How much of a body is gathered before one blocking write-and-hash step.
const STEP: usize = 1 << 20;
/// How much one read step of a GET sends.
const READ_STEP: usize = 256 << 10;

/// What a received body turned out to be.
#[derive(Clone, Debug)]
pub struct Received {
    pub len: u64,
    pub sha256: [u8; 32],
    pub md5: [u8; 16],
}

/// A temporary file being filled with a body, hashed as it goes.
struct Sink {
    file: std::fs::File,
    sha: Sha256,
    md5: Md5,
    len: u64,
}

impl Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.sha.update(buf);
        self.md5.update(buf);
        self.len += buf.len() as u64;
        Ok(())
    }

    fn finish(self) -> io::Result<Received> {
        self.file.sync_all()?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&self.sha.finalize());
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&self.md5.finalize());
        Ok(Received {
            len: self.len,
            sha256,
            md5,
        })
    }
}

/// Runs `f` on the blocking pool; a panicked task becomes an I/O error rather than a panic
/// of the request.
pub async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(format!(
            "a file task of the receiver failed: {e}"
        ))),
    }
}

/// The longest wait for the next bytes of a body.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// Asked before each step is written: may `more` bytes be added? (The quota check.)
pub trait Admit: Send {
    fn admit(&mut self, more: u64) -> Result<(), StoreError>;
}

/// Streams `body` into a new file at `tmp` (created fresh), hashing it, then fsyncs the file.
/// On any error the file is removed: a refused or broken write leaves nothing behind.
pub async fn receive<S, E>(
    tmp: &Path,
    mut body: S,
    expect_len: Option<u64>,
    admit: &mut dyn Admit,
    key: &str,
) -> Result<Received, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let path = tmp.to_path_buf();
    let result = receive_inner(&path, None, &mut body, expect_len, admit, key).await;
    if result.is_err() {
        remove_quietly(path).await;
    }
    result
}

/// Streams `body` into the file at `path` (created when missing, never truncated) from byte
/// `at`, hashing it, then fsyncs the file: a multipart part written where it belongs in the
/// object. At most `limit` bytes are taken. On an error the range holds garbage; the caller
/// records the part only on success.
#[allow(clippy::too_many_arguments)]
pub async fn receive_at<S, E>(
    path: &Path,
    at: u64,
    limit: u64,
    mut body: S,
    expect_len: Option<u64>,
    admit: &mut dyn Admit,
    key: &str,
) -> Result<Received, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    if expect_len.is_some_and(|l| l > limit) {
        return Err(StoreError::InvalidPart {
            key: key.to_owned(),
            reason: format!("a part may hold at most {limit} bytes (the upload's part-size)"),
        });
    }
    receive_inner(path, Some((at, limit)), &mut body, expect_len, admit, key).await
}

/// `at`: where to write in an existing file, and the most bytes that may go there.
async fn receive_inner<S, E>(
    path: &Path,
    at: Option<(u64, u64)>,
    body: &mut S,
    expect_len: Option<u64>,
    admit: &mut dyn Admit,
    key: &str,
) -> Result<Received, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let open_path = path.to_path_buf();
    let file = blocking(move || match at {
        None => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&open_path),
        Some((at, _)) => {
            use std::io::Seek as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&open_path)?;
            f.seek(std::io::SeekFrom::Start(at))?;
            Ok(f)
        }
    })
    .await
    .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
    let mut sink = Some(Sink {
        file,
        sha: Sha256::new(),
        md5: Md5::new(),
        len: 0,
    });
    let mut buf = BytesMut::with_capacity(STEP);
    let mut done = false;
    let mut taken = 0u64;
    while !done {
        // A sender that stops sending mid-body (a dropped link that never closes) must not
        // hold its temporary file and quota forever.
        let next = tokio::time::timeout(BODY_IDLE, body.next())
            .await
            .map_err(|_| StoreError::Body {
                key: key.to_owned(),
                reason: format!("no byte arrived for {}s", BODY_IDLE.as_secs()),
            })?;
        match next {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(StoreError::Body {
                    key: key.to_owned(),
                    reason: e.to_string(),
                });
            }
            None => done = true,
        }
        if buf.len() >= STEP || (done && !buf.is_empty()) {
            let step = buf.split().freeze();
            taken += step.len() as u64;
            // A part must never spill into the next part's place.
            if let Some((_, limit)) = at.filter(|(_, limit)| taken > *limit) {
                return Err(StoreError::InvalidPart {
                    key: key.to_owned(),
                    reason: format!(
                        "a part may hold at most {limit} bytes (the upload's part-size)"
                    ),
                });
            }
            admit.admit(step.len() as u64)?;
            let mut s = sink
                .take()
                .ok_or_else(|| StoreError::io("writing", io::Error::other("sink lost")))?;
            let s = blocking(move || s.write(&step).map(|()| s))
                .await
                .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
            if expect_len.is_some_and(|expect| s.len > expect) {
                let expect = expect_len.unwrap_or_default();
                return Err(StoreError::IncompleteBody {
                    key: key.to_owned(),
                    declared: expect,
                    got: s.len,
                });
            }
            sink = Some(s);
        }
    }
    let s = sink
        .take()
        .ok_or_else(|| StoreError::io("writing", io::Error::other("sink lost")))?;
    if expect_len.is_some_and(|expect| s.len != expect) {
        let expect = expect_len.unwrap_or_default();
        return Err(StoreError::IncompleteBody {
            key: key.to_owned(),
            declared: expect,
            got: s.len,
        });
    }
    blocking(move || s.finish())
        .await
        .map_err(|e| StoreError::io(format!("syncing {}", path.display()), e))
}

/// Removes a file, ignoring "not found"; other failures are logged (the next start removes
/// leftovers anyway).
pub async fn remove_quietly(path: PathBuf) {
    match tokio::fs::remove_file(&path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a file of the receiver");
        }
        _ => {}
    }
}

/// A fresh random name: 128 bits, hex, so it is URL- and file-name-safe.
pub fn random_name() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A small record (a pointer, an upload's or a part's) replaced in one step.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    crate::platform::file::write_atomic(dir, name, bytes, false)
}

/// True for the errors that mean the disk (or the user's disk quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::StorageFull {
        return true;
    }
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return code == libc::ENOSPC || code == libc::EDQUOT;
    }
    false
}

/// A byte range of a file, read on the blocking pool into a bounded channel. The file is
/// opened before this is returned, so an overwrite or delete that removes the blob while the
/// response streams does not cut it short (on Unix the open file keeps its bytes).
pub struct FileStream {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl FileStream {
    /// Opens `path` now; returns `Ok(None)` when it does not exist.
    pub async fn open(path: PathBuf, start: u64, len: u64) -> io::Result<Option<FileStream>> {
        let file = blocking(move || match std::fs::File::open(&path) {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(start))?;
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        let Some(file) = file else { return Ok(None) };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file.take(len);
            let mut left = len;
            while left > 0 {
                let mut buf = vec![0u8; READ_STEP.min(usize::try_from(left).unwrap_or(READ_STEP))];
                let item = match file.read(&mut buf) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stored file is shorter than its record",
                    )),
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        Ok(Bytes::from(buf))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let stop = item.is_err();
                // A closed channel means the client went away: stop reading.
                if tx.blocking_send(item).is_err() || stop {
                    break;
                }
            }
        });
        Ok(Some(FileStream { rx }))
    }
}

impl Stream for FileStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
