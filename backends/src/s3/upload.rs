//! Uploads of large objects (ISO images of several GB): one streamed PUT, or a multipart
//! upload that resumes after a crash.
//!
//! The source is read once, in order, from its first byte, whichever way it is sent: a
//! source that checks itself while read (the engine's ISO image reader verifies each file's
//! SHA-256 before handing out its last byte) then fails the upload before it completes, and
//! the object's SHA-256 and MD5 come out of the same pass, with no separate verification
//! read. The driver knows nothing of the engine: it reads through a [`ByteSource`] (the ISO
//! writer can regenerate any byte range, so there is never a temporary copy on disk) and
//! reports progress through a callback.
//!
//! - [`put_streamed`]: one PutObject whose body streams from the reader (never held in
//!   memory), checked against the server's MD5 ETag. A failure sends it again from byte 0.
//! - [`upload_resumable`]: OpenDAL's multipart writer keeps its upload id private and cannot
//!   continue after a restart, so a crash on a home uplink would re-send gigabytes and leave
//!   an orphan upload billing in the bucket. Here the upload id and every finished part are
//!   written to an [`UploadJournal`] (the engine keeps it in its manifest) before and after
//!   each part, so a rerun asks the server which parts it holds (ListParts) and sends only
//!   the rest. Parts read ahead and parts in flight share one memory budget (the transfer
//!   setting `memory-budget`). An object found where an interrupted upload should have
//!   completed is adopted only when a checksum the server computed (its ETag) proves it.
//!
//! The reader runs on a blocking thread. Every way out of an upload, errors included, stops
//! it wherever it waits (for memory or for a channel slot): a reader left waiting would hold
//! up the runtime's shutdown forever, so the process would never exit.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use base64::Engine as _;

use super::client::{MultipartUpload, PartBody, RequestCounts, S3Client, StreamPut};
use super::{MAX_PART, MAX_PARTS, MIN_PART};
use crate::{BackendError, ErrorKind};

/// The default of the transfer setting `memory-budget`: parts held in memory at once, over
/// all in-flight parts of one upload. With the default 256 MiB parts this allows 4 in flight
/// even when the site's concurrency is higher, so a small home server is not pushed into
/// swap.
pub const MEMORY_BUDGET: u64 = 1 << 30;

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

/// A finished part, as the journal remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonePart {
    pub number: u32,
    pub size: u64,
    /// As the server returned it, quotes included.
    pub etag: String,
    /// Hex MD5 of the part's bytes.
    pub md5: String,
}

/// Everything needed to continue an upload after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub key: String,
    pub upload_id: String,
    pub part_size: u64,
    pub total_size: u64,
    /// The source's SHA-256 when the caller gave one (metadata `sha256`): a changed source
    /// must not be completed from old parts.
    pub source_sha256: Option<String>,
    /// Finished parts, by number.
    pub parts: Vec<DonePart>,
}

/// Where upload states are kept between runs. The engine stores them in its manifest;
/// [`JsonFileJournal`] keeps them in a file.
pub trait UploadJournal: Send + Sync {
    fn load(&self, key: &str) -> Result<Option<UploadState>, BackendError>;
    /// Replaces the state of `state.key`. Must be durable when it returns.
    fn save(&self, state: &UploadState) -> Result<(), BackendError>;
    fn clear(&self, key: &str) -> Result<(), BackendError>;
    /// Every upload in progress, to tell ours from orphans.
    fn list(&self) -> Result<Vec<UploadState>, BackendError>;
}

/// A journal in one JSON file, replaced atomically (write, fsync, rename) on every save so a
/// kill at any moment leaves either the old or the new state.
#[derive(Debug)]
pub struct JsonFileJournal {
    path: PathBuf,
    lock: Mutex<()>,
}

impl JsonFileJournal {
    pub fn new(path: impl Into<PathBuf>) -> JsonFileJournal {
        JsonFileJournal {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, UploadState>, BackendError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                BackendError::Journal(format!("{} is not a journal: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(BackendError::Journal(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(&self, all: &BTreeMap<String, UploadState>) -> Result<(), BackendError> {
        let err = |e: std::io::Error| {
            BackendError::Journal(format!("cannot write {}: {e}", self.path.display()))
        };
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(all)
            .map_err(|e| BackendError::Journal(format!("cannot encode the journal: {e}")))?;
        {
            let mut f = File::create(&tmp).map_err(err)?;
            std::io::Write::write_all(&mut f, &text).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    fn update(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, UploadState>),
    ) -> Result<(), BackendError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.read()?;
        f(&mut all);
        self.write(&all)
    }
}

impl UploadJournal for JsonFileJournal {
    fn load(&self, key: &str) -> Result<Option<UploadState>, BackendError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.read()?.remove(key))
    }

    fn save(&self, state: &UploadState) -> Result<(), BackendError> {
        self.update(|all| {
            all.insert(state.key.clone(), state.clone());
        })
    }

    fn clear(&self, key: &str) -> Result<(), BackendError> {
        self.update(|all| {
            all.remove(key);
        })
    }

    fn list(&self) -> Result<Vec<UploadState>, BackendError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.read()?.into_values().collect())
    }
}

/// Reported after each part (and once per part reused from an earlier run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadProgress {
    pub part_number: u32,
    pub part_size: u64,
    /// True when the part was already on the server from an earlier run.
    pub reused: bool,
    pub parts_done: u32,
    pub parts_total: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    /// The object's ETag as CompleteMultipartUpload (or PutObject) returned it.
    pub etag: String,
    /// Hex SHA-256 of the whole object, computed while it was read for sending.
    pub sha256: String,
    /// Hex MD5 of the whole object, from the same pass: what some servers (rclone serve s3)
    /// report as the ETag of a multipart object on HEAD.
    pub md5: String,
    /// The ETag AWS (and moto) give a multipart object, computed from the parts' MD5s:
    /// `"md5(md5(part 1) ++ md5(part 2) ++ ...)-N"`. Keep it to verify the object later with a
    /// HEAD alone; some servers (rclone serve s3) report another value on HEAD.
    pub computed_etag: String,
    pub upload_id: Option<String>,
    pub parts_total: u32,
    /// Parts sent by this call.
    pub parts_uploaded: u32,
    /// Parts found on the server from an earlier run and not sent again (journaled ones, and
    /// unjournaled ones whose MD5 matched the server's ETag).
    pub parts_reused: u32,
    /// Requests the client sent during this call (includes other work on the same client
    /// running concurrently).
    pub requests: RequestCounts,
}

/// The part size to use: at least `requested` rounded into S3's limits (5 MiB to 5 GiB),
/// and large enough that `len` fits in 10,000 parts.
pub fn effective_part_size(requested: u64, len: u64) -> Result<u64, BackendError> {
    let needed = len.div_ceil(MAX_PARTS);
    let size = requested.max(needed).clamp(MIN_PART, MAX_PART);
    if len.div_ceil(size) > MAX_PARTS {
        return Err(BackendError::invalid(
            "s3",
            format!("an object of {len} bytes does not fit in 10,000 parts of at most 5 GiB"),
        ));
    }
    Ok(size)
}

/// What reading a source once, in order, learned about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha256: [u8; 32],
    /// The whole object's MD5 (the ETag of one PUT, and what some servers, rclone serve s3
    /// among them, report as the ETag of a multipart object).
    pub md5: [u8; 16],
    /// The ETag a multipart upload in parts of the asked size gives this object on S3
    /// (`"md5(md5(part 1) ++ ...)-N"`, quotes included), when a part size was given.
    pub multipart_etag: Option<String>,
}

/// One unit of the source as read, with its MD5 when each unit is a part.
type Unit = (Bytes, Option<[u8; 16]>);

/// Chunks of the streamed single PUT: small, so memory stays low and progress is smooth.
const STREAM_CHUNK: usize = 1 << 20;

/// MD5s of consecutive parts of a fixed size, fed in pieces of any size.
struct PartMd5s {
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
struct StopReader {
    signal: tokio::sync::watch::Sender<bool>,
    budget: Option<Arc<tokio::sync::Semaphore>>,
}

impl StopReader {
    fn stop(&self) {
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
struct Reader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Unit>>,
    handle: tokio::task::JoinHandle<Result<Digests, BackendError>>,
    stop: StopReader,
}

impl Reader {
    /// Stops the reader (a no-op when it already sent everything) and returns its result.
    /// Every wait of the reader also watches the stop signal, so this returns after at most
    /// one read from the source.
    async fn finish(self) -> Result<Digests, BackendError> {
        let Reader { rx, handle, stop } = self;
        drop(rx);
        stop.stop();
        reader_result(handle).await
    }
}

/// Waits for `fut` on a blocking thread, unless the reader is told to stop first (or its
/// stop switch is gone): then `None`.
fn unless_stopped<F: std::future::Future>(
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
fn spawn_reader(
    source: Arc<dyn ByteSource>,
    key: String,
    unit: usize,
    part_size: Option<u64>,
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
                md5.update(&buf);
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
                md5: md5.finalize().into(),
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
    let mut reader = spawn_reader(source, key.to_string(), STREAM_CHUNK, part_size, 8, None);
    while reader.rx.recv().await.is_some() {}
    reader.finish().await
}

/// Waits for the reader; a join failure becomes an error.
async fn reader_result(
    handle: tokio::task::JoinHandle<Result<Digests, BackendError>>,
) -> Result<Digests, BackendError> {
    handle
        .await
        .map_err(|e| BackendError::Journal(format!("source reader failed: {e}")))?
}

/// Sends `source` as one streamed PutObject, read once in order and never held in memory.
/// A transient failure sends it again from its first byte (a PUT is all or nothing: the
/// server keeps no partial object); a failing source is not retried. The server's ETag must
/// equal the MD5 computed while reading, unless the bucket encrypts with KMS (whose ETags
/// are not MD5s).
///
/// With `sha256` (the source's SHA-256, known before sending, e.g. from a scan) the request
/// carries `x-amz-checksum-sha256`, which servers that support it (AWS) check against the
/// bytes they got, refusing the object otherwise; the result says whether the server echoed
/// it. The SHA-256 computed while reading must equal it too.
pub async fn put_streamed(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    metadata: &[(String, String)],
    sha256: Option<[u8; 32]>,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<(StreamPut, Digests), BackendError> {
    use futures::StreamExt;
    let len = source.len();
    let retries = client.transfer().retries;
    let mut attempt = 0usize;
    loop {
        let Reader { rx, handle, stop } =
            spawn_reader(source.clone(), key.to_string(), STREAM_CHUNK, None, 8, None);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = {
            let sent = sent.clone();
            tokio_stream_of(rx).map(move |c| {
                c.map(|(b, _)| {
                    sent.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    b
                })
            })
        };
        // Owns the body, hence the reader's channel: dropped as soon as it is done, so the
        // reader is never left waiting for a channel slot.
        let mut put = Box::pin(client.put_object_stream(key, len, body, metadata, sha256));
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let result = loop {
            tokio::select! {
                r = &mut put => break r,
                _ = tick.tick() => progress(&UploadProgress {
                    part_number: 1,
                    part_size: len,
                    reused: false,
                    parts_done: 0,
                    parts_total: 1,
                    bytes_done: sent.load(std::sync::atomic::Ordering::Relaxed),
                    bytes_total: len,
                }),
            }
        };
        drop(put);
        // The request is over: a reader still waiting (a request that failed before taking
        // the whole body) stops at once. The body may still be held by the HTTP connection,
        // which is why the reader is told to stop and not merely left without a receiver.
        stop.stop();
        // The source's own failure explains a cut-short request better than the network
        // error it caused, and is never worth retrying.
        let digests = reader_result(handle).await;
        match (result, digests) {
            (Ok(put), Ok(d)) => {
                let md5 = hex::encode(d.md5);
                let etag = put.etag.trim_matches('"');
                // An MD5-shaped ETag must be this MD5. Some S3-compatible servers use another
                // scheme (and KMS encryption does): then size and fingerprint, checked by the
                // caller, are what is left to compare.
                let md5_shaped = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
                if !md5_shaped || put.kms {
                    tracing::debug!(key, etag, "the ETag is not an MD5; not compared");
                } else if !etag.eq_ignore_ascii_case(&md5) {
                    return Err(BackendError::Check {
                        key: key.to_string(),
                        message: format!(
                            "the server's ETag {} is not the MD5 {md5} of the bytes sent",
                            put.etag
                        ),
                    });
                }
                if let Some(want) = sha256 {
                    if d.sha256 != want {
                        return Err(BackendError::Check {
                            key: key.to_string(),
                            message: format!(
                                "the bytes sent have SHA-256 {}, not the {} declared for them",
                                hex::encode(d.sha256),
                                hex::encode(want)
                            ),
                        });
                    }
                }
                if let Some(echo) = &put.checksum_sha256 {
                    let ours = base64::engine::general_purpose::STANDARD.encode(d.sha256);
                    if *echo != ours {
                        return Err(BackendError::Check {
                            key: key.to_string(),
                            message: format!(
                                "the server's SHA-256 checksum {echo} is not {ours}, the SHA-256 of the bytes sent"
                            ),
                        });
                    }
                }
                progress(&UploadProgress {
                    part_number: 1,
                    part_size: len,
                    reused: false,
                    parts_done: 1,
                    parts_total: 1,
                    bytes_done: len,
                    bytes_total: len,
                });
                return Ok((put, d));
            }
            (_, Err(e @ BackendError::Source { .. })) => return Err(e),
            (Err(e), _) if e.kind() == ErrorKind::Transient && attempt < retries => {
                tracing::info!(key, attempt, "streamed upload failed, sending again: {e}");
                tokio::time::sleep(super::client::backoff(attempt as u32)).await;
                attempt += 1;
            }
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
        }
    }
}

/// A channel receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// What is at `key` when the interrupted upload can no longer continue (the server forgot
/// it, or a retried Complete found it gone): the object that upload completed, or nothing.
///
/// An object is ours only when a checksum the server computed proves it: its ETag equals
/// the multipart ETag of the journaled parts' MD5s (AWS, moto), or the whole source's MD5
/// or its multipart ETag at the part size recorded in the object's `part-size` metadata
/// (rclone serve s3 reports the whole object's MD5 on HEAD), computed by reading the source
/// (or taken from `known`, the digests of the pass that just sent it). Size and fingerprint
/// must match too. Returns its ETag and the source's digests; `None` when nothing is there.
/// Anything else at `key` is not ours: a [`BackendError::Check`], and it is left alone
/// (never overwritten, never adopted).
#[allow(clippy::too_many_arguments)]
async fn existing_object(
    client: &S3Client,
    key: &str,
    source: &Arc<dyn ByteSource>,
    fingerprint: &Option<(String, String)>,
    parts: &[DonePart],
    total: u32,
    part_size: u64,
    known: Option<&Digests>,
) -> Result<Option<(String, Digests)>, BackendError> {
    let info = match client.head_object(key).await {
        Ok(info) => info,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let not_ours = |why: String| BackendError::Check {
        key: key.to_string(),
        message: format!(
            "an object is already there, and it is not the one this upload completed ({why}); \
             it is left as it is, never adopted nor overwritten"
        ),
    };
    let len = source.len();
    if info.size != len {
        return Err(not_ours(format!("{} bytes, not {len}", info.size)));
    }
    if let Some((name, value)) = fingerprint {
        if info.metadata.get(name) != Some(value) {
            return Err(not_ours(format!("its {name} is not this source's")));
        }
    }
    let bare = |e: &str| e.trim_matches('"').to_ascii_lowercase();
    let etag = bare(&info.etag);
    let journaled = (parts.len() == total as usize)
        .then(|| multipart_etag(parts.iter().map(|p| p.md5.as_str())));
    // The part size the object was uploaded with, when it says so.
    let at = info
        .metadata
        .get("part-size")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&p| p > 0)
        .unwrap_or(part_size);
    let digests = match known {
        Some(d) if at == part_size => d.clone(),
        // Read once more (nothing is sent), for the digests the outcome reports and the
        // checksums to compare.
        _ => read_digests(source.clone(), key, Some(at)).await?,
    };
    let ours = [
        journaled,
        digests.multipart_etag.clone(),
        Some(hex::encode(digests.md5)),
    ]
    .into_iter()
    .flatten()
    .any(|c| bare(&c) == etag);
    if !ours {
        return Err(not_ours(format!(
            "its ETag {} is neither the multipart ETag {} of the parts sent nor the MD5 {} of \
             the source",
            info.etag,
            digests.multipart_etag.as_deref().unwrap_or("-"),
            hex::encode(digests.md5)
        )));
    }
    Ok(Some((info.etag, digests)))
}

/// True when ListParts failed in a way no later run will fix: the server answered, with a
/// permanent error about this upload (400, 501 NotImplemented...). Network trouble,
/// throttling, credentials and a missing bucket are not: the next run tries again.
fn upload_is_unusable(e: &BackendError) -> bool {
    match e.kind() {
        ErrorKind::Other => true,
        ErrorKind::NotFound => e.s3_code() != Some("NoSuchBucket"),
        _ => false,
    }
}

fn is_no_such_upload(e: &BackendError) -> bool {
    e.s3_code() == Some("NoSuchUpload")
}

/// The metadata entry that identifies the source: `fingerprint` (a hash of what the source
/// is made of, known before reading it) or else `sha256`.
fn fingerprint_of(metadata: &[(String, String)]) -> Option<(String, String)> {
    ["fingerprint", "sha256"].iter().find_map(|name| {
        metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| (name.to_string(), v.clone()))
    })
}

/// Uploads `source` to `key` as a multipart upload that survives restarts (or as one
/// streamed PUT when it fits in one part).
///
/// The source is read once, in order, from its first byte, even when resuming: parts the
/// server already holds are read and compared, not sent, and the whole object's SHA-256 and
/// MD5 come out of the same pass ([`UploadOutcome::sha256`]). A source that fails while
/// being read (a file that changed under an image) aborts the upload, so nothing is
/// completed from bad bytes and nothing is left open.
///
/// With a journal entry for `key` (same size, part size and fingerprint), the server's parts
/// are listed and those matching the journal by number, size and ETag are kept; a part on the
/// server but not in the journal (finished just before a crash) is kept when its MD5 equals
/// the server's ETag. Otherwise a new upload is created and journaled before any part is
/// sent. Each finished part is journaled; the journal entry is cleared after completion. If
/// the server no longer knows the upload (aborted, expired, or completed just before a
/// crash), or answers ListParts with a permanent error (the upload is then aborted, best
/// effort), the object at `key` is adopted when a server checksum proves it is the one this
/// upload completed, refused with [`BackendError::Check`] when something else is there, and
/// otherwise the upload starts over; a transient ListParts failure fails this call and keeps
/// the journal for the next. `metadata` becomes `x-amz-meta-*`, plus `part-size` (decimal
/// bytes) so the object's multipart ETag can be computed again later; give a `fingerprint`
/// (or `sha256`) entry so a changed source is never completed from stale parts. `part_size`
/// is usually [`S3Client::part_size`]; it is raised to fit 10,000 parts.
pub async fn upload_resumable(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    metadata: &[(String, String)],
    journal: &dyn UploadJournal,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<UploadOutcome, BackendError> {
    upload(
        client, key, source, part_size, metadata, journal, progress, true,
    )
    .await
}

/// [`upload_resumable`] that always sends parts, even for an object that fits in one: each
/// part is checked by the server against its Content-MD5, which a single PUT to a bucket
/// whose ETags are not MD5s (SSE-KMS) cannot give. An empty object, which multipart cannot
/// make, still goes as one PUT.
pub async fn upload_in_parts(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    metadata: &[(String, String)],
    journal: &dyn UploadJournal,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<UploadOutcome, BackendError> {
    upload(
        client, key, source, part_size, metadata, journal, progress, false,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    metadata: &[(String, String)],
    journal: &dyn UploadJournal,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
    single_when_it_fits: bool,
) -> Result<UploadOutcome, BackendError> {
    let start_counts = client.counters().snapshot();
    let len = source.len();
    let fingerprint = fingerprint_of(metadata);
    let fp_value = fingerprint.as_ref().map(|(_, v)| v.clone());
    let outcome = |etag: String,
                   computed_etag: String,
                   digests: Digests,
                   upload_id: Option<String>,
                   total,
                   uploaded,
                   reused| {
        Ok(UploadOutcome {
            etag,
            computed_etag,
            sha256: hex::encode(digests.sha256),
            md5: hex::encode(digests.md5),
            upload_id,
            parts_total: total,
            parts_uploaded: uploaded,
            parts_reused: reused,
            requests: client.counters().snapshot().since(&start_counts),
        })
    };

    let part_size = effective_part_size(part_size, len)?;
    if (len == 0 || (single_when_it_fits && len <= part_size)) && journal.load(key)?.is_none() {
        // One part's worth (or an empty object, which multipart cannot make): a single
        // PutObject is one billed request instead of three (create, part, complete).
        let (put, d) = put_streamed(client, key, source, metadata, None, progress).await?;
        let md5 = format!("\"{}\"", hex::encode(d.md5));
        return outcome(put.etag, md5, d, None, 1, 1, 0);
    }
    let total = u32::try_from(len.div_ceil(part_size)).expect("at most 10,000 parts");
    let size_of = |n: u32| -> u64 {
        let offset = u64::from(n - 1) * part_size;
        part_size.min(len - offset)
    };

    let mut state: Option<UploadState> = None;
    // Parts the server holds that the journal does not (finished just before a crash): kept
    // when the bytes we read for them have the same MD5 as the server's ETag.
    let mut unjournaled: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    if let Some(old) = journal.load(key)? {
        let same_source = old.total_size == len
            && old.part_size == part_size
            && old.source_sha256 == fp_value
            && old.key == key;
        if !same_source {
            tracing::info!(
                key,
                "source changed since the interrupted upload: starting over"
            );
            client.abort_multipart_upload(key, &old.upload_id).await?;
            journal.clear(key)?;
        } else {
            match client.list_parts(key, &old.upload_id).await {
                Ok(server) => {
                    let on_server: BTreeMap<u32, (u64, String)> = server
                        .into_iter()
                        .map(|p| (p.number, (p.size, p.etag)))
                        .collect();
                    let mut kept = old.clone();
                    kept.parts.retain(|p| {
                        p.number >= 1
                            && p.number <= total
                            && p.size == size_of(p.number)
                            && on_server.get(&p.number).is_some_and(|(size, etag)| {
                                *size == p.size
                                    && etag.trim_matches('"') == p.etag.trim_matches('"')
                            })
                    });
                    kept.parts.sort_by_key(|p| p.number);
                    kept.parts.dedup_by_key(|p| p.number);
                    let journaled: BTreeSet<u32> = kept.parts.iter().map(|p| p.number).collect();
                    unjournaled = on_server
                        .into_iter()
                        .filter(|(n, _)| (1..=total).contains(n) && !journaled.contains(n))
                        .collect();
                    journal.save(&kept)?;
                    state = Some(kept);
                }
                Err(e) if is_no_such_upload(&e) || upload_is_unusable(&e) => {
                    if !is_no_such_upload(&e) {
                        // A permanent answer would block this object on every run: give the
                        // upload up (best effort: it may be gone already).
                        tracing::warn!(
                            key,
                            "cannot list the parts of the interrupted upload ({e}): aborting it and starting over"
                        );
                        if let Err(a) = client.abort_multipart_upload(key, &old.upload_id).await {
                            tracing::warn!(key, "aborting the interrupted upload failed: {a}");
                        }
                    }
                    // The upload id is dead either way.
                    journal.clear(key)?;
                    let existing = existing_object(
                        client,
                        key,
                        &source,
                        &fingerprint,
                        &old.parts,
                        total,
                        part_size,
                        None,
                    )
                    .await?;
                    if let Some((etag, d)) = existing {
                        // Completed before the crash; nothing is sent.
                        let computed = multipart_etag(old.parts.iter().map(|p| p.md5.as_str()));
                        return outcome(etag, computed, d, Some(old.upload_id), total, 0, total);
                    }
                    tracing::info!(
                        key,
                        "the interrupted upload cannot continue and left no object: starting over"
                    );
                }
                // Network trouble, throttling, credentials: this run fails, the next one
                // resumes.
                Err(e) => return Err(e),
            }
        }
    }

    let mut state = match state {
        Some(s) => s,
        None => {
            // The part size goes with the object, so a later run can compute its multipart
            // ETag from the source alone.
            let mut with_part_size: Vec<(String, String)> = metadata
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("part-size"))
                .cloned()
                .collect();
            with_part_size.push(("part-size".to_string(), part_size.to_string()));
            let upload_id = client.create_multipart_upload(key, &with_part_size).await?;
            let s = UploadState {
                key: key.to_string(),
                upload_id,
                part_size,
                total_size: len,
                source_sha256: fp_value.clone(),
                parts: Vec::new(),
            };
            // Journaled before any part is sent, so even a crash during the first part
            // leaves an upload we know about (and can resume or abort).
            journal.save(&s)?;
            s
        }
    };

    let source_again = source.clone();
    match send_parts(
        client,
        key,
        source,
        part_size,
        total,
        &mut state,
        &unjournaled,
        journal,
        progress,
    )
    .await
    {
        Ok((digests, uploaded, reused)) => {
            let list: Vec<(u32, String)> = state
                .parts
                .iter()
                .map(|p| (p.number, p.etag.clone()))
                .collect();
            let etag = match client
                .complete_multipart_upload(key, &state.upload_id, &list)
                .await
            {
                Ok(etag) => etag,
                // A retried Complete whose first attempt succeeded finds the upload gone.
                Err(e) if is_no_such_upload(&e) => {
                    journal.clear(key)?;
                    match existing_object(
                        client,
                        key,
                        &source_again,
                        &fingerprint,
                        &state.parts,
                        total,
                        part_size,
                        Some(&digests),
                    )
                    .await?
                    {
                        Some((etag, _)) => etag,
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            journal.clear(key)?;
            let computed = multipart_etag(state.parts.iter().map(|p| p.md5.as_str()));
            // An AWS-style multipart ETag is the MD5 of the parts' MD5s the server holds; a
            // KMS bucket (its part ETags are not the parts' MD5s) gives another.
            let md5_parts = state
                .parts
                .iter()
                .all(|p| p.etag.trim_matches('"').eq_ignore_ascii_case(&p.md5));
            let shaped = md5_parts
                && etag
                    .trim_matches('"')
                    .split_once('-')
                    .is_some_and(|(h, n)| h.len() == 32 && n.bytes().all(|b| b.is_ascii_digit()));
            if shaped && etag.trim_matches('"') != computed.trim_matches('"') {
                return Err(BackendError::Check {
                    key: key.to_string(),
                    message: format!(
                        "the server's ETag {etag} for the completed upload is not {computed}, the one its parts give"
                    ),
                });
            }
            outcome(
                etag,
                computed,
                digests,
                Some(state.upload_id),
                total,
                uploaded,
                reused,
            )
        }
        Err(e) if source_is_not_what_was_planned(&e) => {
            // The source is not what the upload was started with: its parts can never be
            // completed, so abort now rather than leave them billing. (Other read errors
            // keep the upload, to resume.)
            let _ = client.abort_multipart_upload(key, &state.upload_id).await;
            journal.clear(key)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// True for a source whose bytes differ from the ones the upload was started for: it failed
/// with `InvalidData` (the engine's image reader says so when a file changed under the
/// image), or no longer matches the parts already sent.
fn source_is_not_what_was_planned(e: &BackendError) -> bool {
    match e {
        BackendError::Source { source, .. } => source.kind() == std::io::ErrorKind::InvalidData,
        BackendError::Check { .. } => true,
        _ => false,
    }
}

/// Reads the source once in order, part by part, and sends the parts the server lacks, up to
/// the transfer concurrency (within its `memory-budget`) at once. Returns the source's
/// digests and how many parts were sent and reused.
///
/// Every way out (a part that failed for good, a journal error, a source that differs)
/// drops the reader's [`StopReader`], which stops the reader wherever it waits: nothing is
/// left blocking the runtime's shutdown.
#[allow(clippy::too_many_arguments)]
async fn send_parts(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    total: u32,
    state: &mut UploadState,
    unjournaled: &BTreeMap<u32, (u64, String)>,
    journal: &dyn UploadJournal,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
) -> Result<(Digests, u32, u32), BackendError> {
    let len = source.len();
    // Parts in memory (read ahead, or in flight) stay within the budget, with at least one.
    let budget_bytes = client.transfer().memory_budget.bytes();
    let in_memory = usize::try_from((budget_bytes / part_size).max(1)).unwrap_or(1);
    let in_flight = client.transfer().concurrency.max(1).min(in_memory);
    let unit = usize::try_from(part_size).map_err(|_| {
        BackendError::invalid("s3", "a part does not fit in memory on this platform")
    })?;
    let budget = Arc::new(tokio::sync::Semaphore::new(in_memory));
    let mut reader = spawn_reader(
        source,
        key.to_string(),
        unit,
        Some(part_size),
        1,
        Some(budget.clone()),
    );
    let journaled: BTreeMap<u32, DonePart> =
        state.parts.iter().map(|p| (p.number, p.clone())).collect();
    let (mut uploaded, mut reused) = (0u32, 0u32);
    let mut bytes_done: u64 = 0;
    let mut next: u32 = 1;
    // Dropped on every way out, which aborts the parts still in flight.
    let mut tasks: JoinSet<Result<DonePart, BackendError>> = JoinSet::new();
    let mut finish = |part: DonePart,
                      sent: bool,
                      state: &mut UploadState,
                      bytes_done: &mut u64|
     -> Result<(), BackendError> {
        // Its buffer is gone: the reader may read one more part.
        budget.add_permits(1);
        *bytes_done += part.size;
        let (number, size) = (part.number, part.size);
        if sent {
            uploaded += 1;
            state.parts.push(part);
            state.parts.sort_by_key(|p| p.number);
            journal.save(state)?;
        } else {
            reused += 1;
        }
        progress(&UploadProgress {
            part_number: number,
            part_size: size,
            reused: !sent,
            parts_done: uploaded + reused,
            parts_total: total,
            bytes_done: *bytes_done,
            bytes_total: len,
        });
        Ok(())
    };
    let joined = |j: Result<Result<DonePart, BackendError>, tokio::task::JoinError>| {
        j.map_err(|e| BackendError::Journal(format!("part task failed: {e}")))?
    };
    loop {
        // Take the next part from the reader when a slot is free.
        if next <= total && tasks.len() < in_flight {
            let chunk = tokio::select! {
                c = reader.rx.recv() => c,
                Some(j) = tasks.join_next() => {
                    finish(joined(j)?, true, state, &mut bytes_done)?;
                    continue;
                }
            };
            let (data, md5) = match chunk {
                Some(Ok((b, Some(md5)))) => (b, md5),
                // The reader reports its own error.
                Some(Ok((_, None))) | Some(Err(_)) | None => {
                    tasks.abort_all();
                    return Err(match reader.finish().await {
                        Err(e) => e,
                        Ok(_) => BackendError::Journal("the source ended early".into()),
                    });
                }
            };
            let n = next;
            next += 1;
            let body = PartBody::with_md5(data, md5);
            if let Some(done) = journaled.get(&n) {
                if done.md5 != body.md5_hex {
                    return Err(BackendError::Check {
                        key: key.to_string(),
                        message: format!(
                            "part {n} read now differs from the one sent by the interrupted upload; starting over"
                        ),
                    });
                }
                finish(done.clone(), false, state, &mut bytes_done)?;
                continue;
            }
            if let Some((server_size, server_etag)) = unjournaled.get(&n) {
                if *server_size == body.data.len() as u64
                    && server_etag.trim_matches('"') == body.md5_hex
                {
                    let part = DonePart {
                        number: n,
                        size: *server_size,
                        etag: server_etag.clone(),
                        md5: body.md5_hex.clone(),
                    };
                    state.parts.push(part.clone());
                    state.parts.sort_by_key(|p| p.number);
                    journal.save(state)?;
                    finish(part, false, state, &mut bytes_done)?;
                    continue;
                }
            }
            let (client, key, upload_id) =
                (client.clone(), key.to_string(), state.upload_id.clone());
            tasks.spawn(async move {
                let etag = client.upload_part(&key, &upload_id, n, &body).await?;
                Ok(DonePart {
                    number: n,
                    size: body.data.len() as u64,
                    etag,
                    md5: body.md5_hex,
                })
            });
            continue;
        }
        let Some(j) = tasks.join_next().await else {
            break;
        };
        // An error returns at once: the other parts are aborted and the reader stopped; the
        // journal keeps the parts that finished, for the next run.
        finish(joined(j)?, true, state, &mut bytes_done)?;
    }
    // Every part was taken: the reader has nothing left to wait for.
    let digests = reader.finish().await?;
    Ok((digests, uploaded, reused))
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
fn multipart_etag_of(part_md5s: &[[u8; 16]]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    format!("\"{}-{}\"", hex::encode(h.finalize()), part_md5s.len())
}

/// Unfinished uploads under `prefix` that the journal does not know: left by a crash before
/// the journal was written, or by another tool. They are billed until aborted. Only call this
/// when no other process is uploading to the same prefix (or filter by `initiated`).
pub async fn find_orphans(
    client: &S3Client,
    prefix: &str,
    journal: &dyn UploadJournal,
) -> Result<Vec<MultipartUpload>, BackendError> {
    let known: BTreeSet<(String, String)> = journal
        .list()?
        .into_iter()
        .map(|s| (s.key, s.upload_id))
        .collect();
    Ok(client
        .list_multipart_uploads(prefix)
        .await?
        .into_iter()
        .filter(|u| !known.contains(&(u.key.clone(), u.upload_id.clone())))
        .collect())
}

/// Aborts the given uploads; returns how many were aborted.
pub async fn abort_uploads(
    client: &S3Client,
    uploads: &[MultipartUpload],
) -> Result<usize, BackendError> {
    for u in uploads {
        client.abort_multipart_upload(&u.key, &u.upload_id).await?;
    }
    Ok(uploads.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_respects_s3_limits() {
        let mib = 1 << 20;
        assert_eq!(
            effective_part_size(256 * mib, 5_000_000_000).unwrap(),
            256 * mib
        );
        assert_eq!(effective_part_size(1, 10).unwrap(), MIN_PART);
        assert_eq!(effective_part_size(u64::MAX, 10).unwrap(), MAX_PART);
        // 100 GB in 5 MiB parts would need 19,074 parts: raised to fit 10,000.
        let p = effective_part_size(5 * mib, 100_000_000_000).unwrap();
        assert_eq!(p, 10_000_000);
        assert!(100_000_000_000u64.div_ceil(p) <= MAX_PARTS);
        assert!(effective_part_size(MAX_PART, MAX_PART * MAX_PARTS + 1).is_err());
    }

    #[test]
    fn multipart_etag_follows_the_s3_rule() {
        let parts = [
            "5d41402abc4b2a76b9719d911017c592", // md5("hello")
            "7d793037a0760186574b0282f2f435e7", // md5("world")
        ];
        assert_eq!(
            multipart_etag(parts),
            "\"065947336a2f2a95ba8899f3675c3be6-2\""
        );
    }

    #[test]
    fn json_journal_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let j = JsonFileJournal::new(dir.path().join("j.json"));
        assert_eq!(j.load("k").unwrap(), None);
        let s = UploadState {
            key: "k".into(),
            upload_id: "u".into(),
            part_size: 5,
            total_size: 10,
            source_sha256: None,
            parts: vec![DonePart {
                number: 1,
                size: 5,
                etag: "\"e\"".into(),
                md5: "m".into(),
            }],
        };
        j.save(&s).unwrap();
        let j2 = JsonFileJournal::new(dir.path().join("j.json"));
        assert_eq!(j2.load("k").unwrap(), Some(s.clone()));
        assert_eq!(j2.list().unwrap(), vec![s]);
        j2.clear("k").unwrap();
        assert_eq!(j.load("k").unwrap(), None);
    }

    #[test]
    fn file_source_reads_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let s = FileSource::open(&p).unwrap();
        assert_eq!(s.len(), 10);
        let mut out = String::new();
        s.open_at(7).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "789");
    }
}
