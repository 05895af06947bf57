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
//!
//! One file per way of sending: [`single`] (one streamed PUT) and [`parts`] (the parts of a
//! multipart upload, within a memory budget); this one decides between them, continues an
//! interrupted upload from its journal, and adopts an object a crashed run completed only
//! on a server checksum.

mod parts;
mod progress;
mod single;

pub use progress::UploadProgress;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use single::put_streamed;

use super::client::{MultipartUpload, RequestCounts, S3Client};
use super::{MAX_PART, MAX_PARTS, MIN_PART};
use crate::journal::DonePart;
use crate::journal::{UploadJournal, UploadState};
use crate::source::{multipart_etag, read_digests, ByteSource, Digests};
use crate::{BackendError, ErrorKind};
use parts::send_parts;

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    /// The object's ETag as CompleteMultipartUpload (or PutObject) returned it.
    pub etag: String,
    /// Hex SHA-256 of the whole object, computed while it was read for sending.
    pub sha256: String,
    /// Hex MD5 of the whole object, from the same pass, for one PUT (its ETag); a multipart
    /// upload does not compute it (each part has its own).
    pub md5: Option<String>,
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
        Some(d) if at == part_size && d.md5.is_some() => d.clone(),
        // Read once more (nothing is sent), for the digests the outcome reports and the
        // checksums to compare.
        _ => read_digests(source.clone(), key, Some(at)).await?,
    };
    let ours = [
        journaled,
        digests.multipart_etag.clone(),
        digests.md5.map(hex::encode),
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
            digests.md5.map(hex::encode).unwrap_or_default()
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
        client,
        key,
        source,
        part_size,
        metadata,
        journal,
        progress,
        Shape::OnePutWhenItFits,
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
        client,
        key,
        source,
        part_size,
        metadata,
        journal,
        progress,
        Shape::AlwaysParts,
    )
    .await
}

/// How an object that fits in one part goes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// As one PUT ([`upload_resumable`]).
    OnePutWhenItFits,
    /// As parts anyway ([`upload_in_parts`]).
    AlwaysParts,
}

/// [`upload_resumable`] or [`upload_in_parts`], as `shape` says.
#[allow(clippy::too_many_arguments)]
pub async fn upload(
    client: &S3Client,
    key: &str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    metadata: &[(String, String)],
    journal: &dyn UploadJournal,
    progress: &(dyn Fn(&UploadProgress) + Send + Sync),
    shape: Shape,
) -> Result<UploadOutcome, BackendError> {
    let len = source.len();
    let part_size = effective_part_size(part_size, len)?;
    let u = Upload {
        client,
        key,
        source,
        part_size,
        total: u32::try_from(len.div_ceil(part_size)).expect("at most 10,000 parts"),
        metadata,
        fingerprint: fingerprint_of(metadata),
        journal,
        start_counts: client.counters().snapshot(),
    };
    // A lomob receiver wants a digest declared before the body, which a streamed PUT of
    // bytes not yet read cannot give: parts declare theirs, Complete the whole one's.
    let fits = shape == Shape::OnePutWhenItFits && len <= part_size && !client.is_peer();
    if (len == 0 || fits) && journal.load(key)?.is_none() {
        // One part's worth (or an empty object, which multipart cannot make): a single
        // PutObject is one billed request instead of three (create, part, complete).
        let (put, d) =
            put_streamed(client, key, u.source.clone(), metadata, None, progress).await?;
        let md5 = format!("\"{}\"", hex::encode(d.md5.unwrap_or_default()));
        return Ok(u.outcome(put.etag, md5, d, None, 1, 0));
    }
    let (mut state, unjournaled) = match journal.load(key)? {
        Some(old) => match u.resume(old).await? {
            Resumed::Continue(state, unjournaled) => (state, unjournaled),
            Resumed::Done(outcome) => return Ok(outcome),
            Resumed::StartOver => (u.start().await?, BTreeMap::new()),
        },
        None => (u.start().await?, BTreeMap::new()),
    };
    let sent = send_parts(
        client,
        key,
        u.source.clone(),
        part_size,
        u.total,
        &mut state,
        &unjournaled,
        journal,
        progress,
    )
    .await;
    match sent {
        Ok((digests, uploaded, reused)) => {
            let (etag, computed) = u.complete(&state, &digests).await?;
            Ok(u.outcome(
                etag,
                computed,
                digests,
                Some(state.upload_id),
                uploaded,
                reused,
            ))
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

/// One upload's fixed facts, shared by its steps.
struct Upload<'a> {
    client: &'a S3Client,
    key: &'a str,
    source: Arc<dyn ByteSource>,
    part_size: u64,
    total: u32,
    metadata: &'a [(String, String)],
    /// The metadata entry identifying the source (`fingerprint`, else `sha256`).
    fingerprint: Option<(String, String)>,
    journal: &'a dyn UploadJournal,
    start_counts: RequestCounts,
}

/// Where an interrupted upload stands.
enum Resumed {
    /// Continue it: its journal (parts checked against the server) and the parts the server
    /// holds that the journal does not (finished just before a crash).
    Continue(UploadState, BTreeMap<u32, (u64, String)>),
    /// It had completed: the object is shown by a server checksum to be this one.
    Done(UploadOutcome),
    /// Nothing usable is left of it.
    StartOver,
}

impl Upload<'_> {
    fn outcome(
        &self,
        etag: String,
        computed_etag: String,
        digests: Digests,
        upload_id: Option<String>,
        uploaded: u32,
        reused: u32,
    ) -> UploadOutcome {
        UploadOutcome {
            etag,
            computed_etag,
            sha256: hex::encode(digests.sha256),
            md5: digests.md5.map(hex::encode),
            upload_id,
            parts_total: self.total,
            parts_uploaded: uploaded,
            parts_reused: reused,
            requests: self.client.counters().snapshot().since(&self.start_counts),
        }
    }

    fn size_of(&self, n: u32) -> u64 {
        let offset = u64::from(n - 1) * self.part_size;
        self.part_size.min(self.source.len() - offset)
    }

    /// What is left of the interrupted upload `old`: its parts on the server, an object it
    /// completed, or nothing (a changed source, an upload the server forgot or cannot list).
    async fn resume(&self, old: UploadState) -> Result<Resumed, BackendError> {
        let (client, key) = (self.client, self.key);
        let same_source = old.total_size == self.source.len()
            && old.part_size == self.part_size
            && old.source_sha256 == self.fingerprint.as_ref().map(|(_, v)| v.clone())
            && old.key == key;
        if !same_source {
            tracing::info!(
                key,
                "source changed since the interrupted upload: starting over"
            );
            client.abort_multipart_upload(key, &old.upload_id).await?;
            self.journal.clear(key)?;
            return Ok(Resumed::StartOver);
        }
        match client.list_parts(key, &old.upload_id).await {
            Ok(server) => Ok(self.keep_parts(old, server)?),
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
                self.journal.clear(key)?;
                let existing = existing_object(
                    client,
                    key,
                    &self.source,
                    &self.fingerprint,
                    &old.parts,
                    self.total,
                    self.part_size,
                    None,
                )
                .await?;
                if let Some((etag, d)) = existing {
                    // Completed before the crash; nothing is sent.
                    let computed = multipart_etag(old.parts.iter().map(|p| p.md5.as_str()));
                    let total = self.total;
                    return Ok(Resumed::Done(self.outcome(
                        etag,
                        computed,
                        d,
                        Some(old.upload_id),
                        0,
                        total,
                    )));
                }
                tracing::info!(
                    key,
                    "the interrupted upload cannot continue and left no object: starting over"
                );
                Ok(Resumed::StartOver)
            }
            // Network trouble, throttling, credentials: this run fails, the next one
            // resumes.
            Err(e) => Err(e),
        }
    }

    /// Keeps the journaled parts the server still holds (same number, size and ETag), and
    /// notes the parts it holds that the journal does not.
    fn keep_parts(
        &self,
        old: UploadState,
        server: Vec<crate::s3::client::PartInfo>,
    ) -> Result<Resumed, BackendError> {
        let total = self.total;
        let on_server: BTreeMap<u32, (u64, String)> = server
            .into_iter()
            .map(|p| (p.number, (p.size, p.etag)))
            .collect();
        let mut kept = old;
        kept.parts.retain(|p| {
            p.number >= 1
                && p.number <= total
                && p.size == self.size_of(p.number)
                && on_server.get(&p.number).is_some_and(|(size, etag)| {
                    *size == p.size && etag.trim_matches('"') == p.etag.trim_matches('"')
                })
        });
        kept.parts.sort_by_key(|p| p.number);
        kept.parts.dedup_by_key(|p| p.number);
        let journaled: BTreeSet<u32> = kept.parts.iter().map(|p| p.number).collect();
        let unjournaled = on_server
            .into_iter()
            .filter(|(n, _)| (1..=total).contains(n) && !journaled.contains(n))
            .collect();
        self.journal.save(&kept)?;
        Ok(Resumed::Continue(kept, unjournaled))
    }

    /// Creates the multipart upload and journals it before any part is sent, so even a
    /// crash during the first part leaves an upload we know about (to resume or abort).
    async fn start(&self) -> Result<UploadState, BackendError> {
        // The part size goes with the object, so a later run can compute its multipart
        // ETag from the source alone.
        let mut with_part_size: Vec<(String, String)> = self
            .metadata
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("part-size"))
            .cloned()
            .collect();
        with_part_size.push(("part-size".to_string(), self.part_size.to_string()));
        let upload_id = self
            .client
            .create_multipart_upload(self.key, &with_part_size)
            .await?;
        let s = UploadState {
            key: self.key.to_string(),
            upload_id,
            part_size: self.part_size,
            total_size: self.source.len(),
            source_sha256: self.fingerprint.as_ref().map(|(_, v)| v.clone()),
            parts: Vec::new(),
        };
        self.journal.save(&s)?;
        Ok(s)
    }

    /// Completes the upload and checks the object's ETag against the one its parts give.
    /// A retried Complete whose first attempt succeeded finds the upload gone: the object is
    /// then taken only when a server checksum shows it is this one. Returns the ETag and the
    /// computed one.
    async fn complete(
        &self,
        state: &UploadState,
        digests: &Digests,
    ) -> Result<(String, String), BackendError> {
        let (client, key) = (self.client, self.key);
        let list: Vec<(u32, String)> = state
            .parts
            .iter()
            .map(|p| (p.number, p.etag.clone()))
            .collect();
        let etag = match client
            .complete_multipart_upload(key, &state.upload_id, &list, Some(&digests.sha256))
            .await
        {
            Ok(etag) => etag,
            Err(e) if is_no_such_upload(&e) => {
                self.journal.clear(key)?;
                match existing_object(
                    client,
                    key,
                    &self.source,
                    &self.fingerprint,
                    &state.parts,
                    self.total,
                    self.part_size,
                    Some(digests),
                )
                .await?
                {
                    Some((etag, _)) => etag,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.journal.clear(key)?;
        let computed = multipart_etag(state.parts.iter().map(|p| p.md5.as_str()));
        // An AWS-style multipart ETag is the MD5 of the parts' MD5s the server holds; a KMS
        // bucket (its part ETags are not the parts' MD5s) gives another.
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
        Ok((etag, computed))
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
    use crate::journal::JsonFileJournal;
    use crate::source::FileSource;
    use std::io::Read;

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
