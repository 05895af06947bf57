//! Reading what is uploaded: a [`ByteSource`] (bytes readable from any offset, such as the
//! engine's ISO image, regenerated on demand so there is never a temporary copy on disk),
//! read once, in order, on a blocking thread, with the digests that come out of that pass.
//!
//! Reading in order is what lets a source check itself as it goes (the image reader
//! verifies each file's SHA-256 before handing out its last byte), so a bad byte fails an
//! upload before it completes, with no separate verification pass. Backend-neutral: the S3
//! upload driver, the OpenDAL archive and the engine all read through it.
//!
//! The reader runs on a blocking thread. Every way out of an upload, errors included, stops
//! it wherever it waits (for memory or for a channel slot): a reader left waiting would hold
//! up the runtime's shutdown forever, so the process would never exit.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::BackendError;

/// The bytes of one object, readable from any offset. The engine's ISO image reader
/// regenerates any byte range, so a resumed upload never needs a temporary copy on disk.
pub trait ByteSource: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader positioned at `offset`; the driver reads one part from it.
    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>>;
}

/// A plain file as a [`ByteSource`].
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    len: u64,
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<FileSource> {
        let path = path.as_ref().to_path_buf();
        let len = std::fs::metadata(&path)?.len();
        Ok(FileSource { path, len })
    }
}

impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn open_at(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(f))
    }
}

/// What reading a source once, in order, learned about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha256: [u8; 32],
    /// The whole object's MD5 (the ETag of one PUT, and what some servers, rclone serve s3
    /// among them, report as the ETag of a multipart object), when it was asked for: the
    /// parts of a multipart upload have their own, and a second MD5 of every byte costs a
    /// core's worth of seconds per gigabyte.
    pub md5: Option<[u8; 16]>,
    /// The ETag a multipart upload in parts of the asked size gives this object on S3
    /// (`"md5(md5(part 1) ++ ...)-N"`, quotes included), when a part size was given.
    pub multipart_etag: Option<String>,
}

/// One unit of the source as read, with its MD5 when each unit is a part.
pub(crate) type Unit = (Bytes, Option<[u8; 16]>);

/// Chunks of the streamed single PUT: small, so memory stays low and progress is smooth.
pub(crate) const STREAM_CHUNK: usize = 1 << 20;

/// MD5s of consecutive parts of a fixed size, fed in pieces of any size.
pub(crate) struct PartMd5s {
    size: u64,
    filled: u64,
    current: md5::Md5,
    done: Vec<[u8; 16]>,
}

impl PartMd5s {
    fn new(size: u64) -> PartMd5s {
        PartMd5s {
            size: size.max(1),
            filled: 0,
            current: md5::Digest::new(),
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        use md5::Digest as _;
        while !data.is_empty() {
            let take = usize::try_from(self.size - self.filled)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.size {
                self.done.push(self.current.finalize_reset().into());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<[u8; 16]> {
        use md5::Digest as _;
        if self.filled > 0 {
            self.done.push(self.current.finalize().into());
        }
        self.done
    }
}

/// Stops a reader when dropped, on every way out of an upload (errors and early returns
/// included): tells the reader to stop at its next wait, and closes its memory budget. A
/// reader left waiting for a permit or a channel slot that never comes would block the
/// runtime's shutdown forever: the process would not exit, and would keep the manifest.
pub(crate) struct StopReader {
    signal: tokio::sync::watch::Sender<bool>,
    budget: Option<Arc<tokio::sync::Semaphore>>,
}

impl StopReader {
    pub(crate) fn stop(&self) {
        self.signal.send_replace(true);
        if let Some(b) = &self.budget {
            b.close();
        }
    }
}

impl Drop for StopReader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A source being read on a blocking thread: the units it sends, its result, and the
/// switch that stops it (thrown when this is dropped).
pub(crate) struct Reader {
    pub(crate) rx: tokio::sync::mpsc::Receiver<std::io::Result<Unit>>,
    pub(crate) handle: tokio::task::JoinHandle<Result<Digests, BackendError>>,
    pub(crate) stop: StopReader,
}

impl Reader {
    /// Stops the reader (a no-op when it already sent everything) and returns its result.
    /// Every wait of the reader also watches the stop signal, so this returns after at most
    /// one read from the source.
    pub(crate) async fn finish(self) -> Result<Digests, BackendError> {
        let Reader { rx, handle, stop } = self;
        drop(rx);
        stop.stop();
        reader_result(handle).await
    }
}

/// Waits for `fut` on a blocking thread, unless the reader is told to stop first (or its
/// stop switch is gone): then `None`.
pub(crate) fn unless_stopped<F: std::future::Future>(
    runtime: &tokio::runtime::Handle,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    runtime.block_on(async {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => None,
            r = fut => Some(r),
        }
    })
}

/// Reads `source` from byte 0 to `len` in order on a blocking thread, sending it in units
/// of `unit` bytes (the last may be shorter) and computing the whole object's SHA-256 and
/// MD5 on the way, and with `part_size` the MD5 of each part of that size (the multipart
/// ETag). When `part_size` equals `unit`, each unit is sent with its MD5. Reading in order
/// is what lets a source check itself as it goes (the ISO image reader verifies each file's
/// SHA-256 before handing out its last byte), so a bad byte fails the upload before it
/// completes, with no separate verification pass. A read error is sent down the channel
/// too, so a streamed body is cut short at once. With a `budget`, each unit first takes a
/// permit, which the consumer gives back when it is done with the unit. Stops quietly when
/// the receiver goes away or the [`Reader`] is dropped (the upload failed): every wait
/// (permit, channel slot) also watches the stop signal.
pub(crate) fn spawn_reader(
    source: Arc<dyn ByteSource>,
    key: String,
    unit: usize,
    part_size: Option<u64>,
    whole_md5: bool,
    depth: usize,
    budget: Option<Arc<tokio::sync::Semaphore>>,
) -> Reader {
    use md5::{Digest as _, Md5};
    use sha2::Sha256;
    let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
    let (signal, mut stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Handle::current();
    let stop = StopReader {
        signal,
        budget: budget.clone(),
    };
    let handle = tokio::task::spawn_blocking(move || {
        let len = source.len();
        let mut offset = 0u64;
        let fail = |offset: u64, e: std::io::Error| BackendError::Source {
            key: key.clone(),
            offset,
            source: e,
        };
        let gone = || BackendError::Journal("the upload stopped before the source was read".into());
        // Each unit is one part: its MD5 goes with it.
        let per_unit = part_size == Some(unit as u64);
        let result = (|| {
            let mut reader = source.open_at(0).map_err(|e| fail(0, e))?;
            let (mut sha, mut md5) = (Sha256::new(), Md5::new());
            let mut unit_md5s: Vec<[u8; 16]> = Vec::new();
            let mut parts = part_size.filter(|_| !per_unit).map(PartMd5s::new);
            while offset < len {
                if *stopped.borrow() {
                    return Err(gone());
                }
                let want = usize::try_from((len - offset).min(unit as u64)).unwrap_or(unit);
                // One permit per unit in memory: bounds the parts read ahead plus the parts
                // in flight.
                if let Some(b) = &budget {
                    match unless_stopped(&runtime, &mut stopped, b.acquire()) {
                        Some(Ok(permit)) => permit.forget(),
                        Some(Err(_)) | None => return Err(gone()),
                    }
                }
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    match reader.read(&mut buf[got..]) {
                        Ok(0) => {
                            return Err(fail(
                                offset + got as u64,
                                std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    format!(
                                        "the source ended at byte {} of {len}",
                                        offset + got as u64
                                    ),
                                ),
                            ))
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(fail(offset + got as u64, e)),
                    }
                }
                sha2::Digest::update(&mut sha, &buf);
                if whole_md5 {
                    md5.update(&buf);
                }
                let unit_md5 = if per_unit {
                    let d: [u8; 16] = Md5::digest(&buf).into();
                    unit_md5s.push(d);
                    Some(d)
                } else {
                    if let Some(p) = &mut parts {
                        p.update(&buf);
                    }
                    None
                };
                offset += want as u64;
                match unless_stopped(
                    &runtime,
                    &mut stopped,
                    tx.send(Ok((Bytes::from(buf), unit_md5))),
                ) {
                    Some(Ok(())) => {}
                    Some(Err(_)) | None => return Err(gone()),
                }
            }
            let part_md5s = match parts {
                Some(p) => Some(p.finish()),
                None => per_unit.then_some(unit_md5s),
            };
            Ok(Digests {
                sha256: sha2::Digest::finalize(sha).into(),
                md5: whole_md5.then(|| md5.finalize().into()),
                multipart_etag: part_md5s.map(|m| multipart_etag_of(&m)),
            })
        })();
        if let Err(BackendError::Source { source, .. }) = &result {
            let e = std::io::Error::new(source.kind(), source.to_string());
            let _ = unless_stopped(&runtime, &mut stopped, tx.send(Err(e)));
        }
        result
    });
    Reader { rx, handle, stop }
}

/// Reads `source` once, in order, sending nothing (a self-checking source checks itself on
/// the way): for an object already stored by an earlier run. Returns its SHA-256 and MD5,
/// and with `part_size` the ETag a multipart upload in parts of that size gives it, so an
/// existing object can be checked against the ETag its server reports.
pub async fn read_digests(
    source: Arc<dyn ByteSource>,
    key: &str,
    part_size: Option<u64>,
) -> Result<Digests, BackendError> {
    let mut reader = spawn_reader(
        source,
        key.to_string(),
        STREAM_CHUNK,
        part_size,
        true,
        8,
        None,
    );
    while reader.rx.recv().await.is_some() {}
    reader.finish().await
}

/// Waits for the reader; a join failure becomes an error.
pub(crate) async fn reader_result(
    handle: tokio::task::JoinHandle<Result<Digests, BackendError>>,
) -> Result<Digests, BackendError> {
    handle
        .await
        .map_err(|e| BackendError::Journal(format!("source reader failed: {e}")))?
}

/// The ETag S3 gives a multipart object, from its parts' hex MD5s in order.
pub fn multipart_etag<'a>(part_md5s: impl IntoIterator<Item = &'a str>) -> String {
    // Our own hex digests; a malformed one would only make the ETag not match.
    let raw: Vec<[u8; 16]> = part_md5s
        .into_iter()
        .map(|m| {
            let mut d = [0u8; 16];
            let _ = hex::decode_to_slice(m, &mut d);
            d
        })
        .collect();
    multipart_etag_of(&raw)
}

/// [`multipart_etag`] from the parts' raw MD5s.
pub(crate) fn multipart_etag_of(part_md5s: &[[u8; 16]]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    format!("\"{}-{}\"", hex::encode(h.finalize()), part_md5s.len())
}
